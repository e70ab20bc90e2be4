"""The log's own tables (created by migration 0003). Entries and leaves, which every service
reads, are in ``shared.audit``; the subtree hashes and heads are the vault's business."""

from sqlalchemy import BigInteger, Column, DateTime, LargeBinary, SmallInteger, Table, Text

from shared.audit import audit_metadata, leaves

__all__ = ["leaves", "nodes", "tree_heads"]

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
