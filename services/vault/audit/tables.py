"""The log's own tables (migrations 0003 and 0010). Entries and leaves, which every service
reads, are in ``shared.audit``; the subtree hashes, heads, refusals and cosignatures are the
vault's business."""

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.types import UserDefinedType

from shared.audit import audit_metadata, leaves

__all__ = ["authentication", "cosignatures", "leaves", "nodes", "refusals", "tree_heads"]


class Xid8(UserDefinedType[Any]):
    """PostgreSQL's 64-bit transaction id: read as text (``txid::text``) and compared in SQL."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


nodes = Table(
    "nodes",
    audit_metadata,
    Column("level", SmallInteger, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("hash", LargeBinary, nullable=False),
)

tree_heads = Table(
    "tree_heads",
    audit_metadata,
    Column("tree_size", BigInteger, primary_key=True),
    Column("root_hash", LargeBinary, nullable=False),
    Column("signed_at", DateTime(timezone=True), nullable=False),
    Column("key_id", Text, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    # Since migration 0010: the signed checkpoint (a C2SP note) and the head it chains to.
    Column("previous_size", BigInteger, nullable=True),
    Column("previous_root", LargeBinary, nullable=True),
    Column("checkpoint", Text, nullable=True),
)

# Entries the sequencer set aside (no valid authenticator from a known writer).
refusals = Table(
    "refusals",
    audit_metadata,
    Column("entry_pk", BigInteger, primary_key=True),
    Column("entry_id", UUID(as_uuid=True), nullable=False),
    Column("txid", Xid8, nullable=False),
    Column("reason", Text, nullable=False),
    Column("refused_at", DateTime(timezone=True), nullable=False),
    Index("ix_audit_refusals_txid_entry_pk", "txid", "entry_pk"),
)

# Entries of transactions before ``since_txid`` were written before authenticators existed.
authentication = Table(
    "authentication",
    audit_metadata,
    Column("since_txid", Xid8, nullable=False),
)

cosignatures = Table(
    "cosignatures",
    audit_metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("witness", Text, nullable=False),
    Column("key_hash", LargeBinary, nullable=False),
    Column("cosigned_at", DateTime(timezone=True), nullable=False),
    Column("signature", LargeBinary, nullable=False),  # timestamp (8 bytes) || Ed25519
    Column("checkpoint", Text, nullable=False),  # the vault's signed checkpoint, as cosigned
    Column("received_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint(
        "witness", "key_hash", "tree_size", "cosigned_at", name="uq_cosignatures_once"
    ),
    Index("ix_audit_cosignatures_witness_cosigned_at", "witness", "cosigned_at"),
)
