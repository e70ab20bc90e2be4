"""The log's own tables (created by migration 0003). Entries are in ``shared.audit``."""

from sqlalchemy import BigInteger, Column, DateTime, LargeBinary, SmallInteger, Table, Text
from sqlalchemy.dialects.postgresql import UUID

from shared.audit import audit_metadata

leaves = Table(
    "leaves",
    audit_metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("entry_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("entry_pk", BigInteger, nullable=False),
    Column("txid", Text, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("sequenced_at", DateTime(timezone=True), nullable=False),
)

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
)
