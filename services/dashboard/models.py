"""The dashboard's one table, in its own schema (``dashboard``, migration 0016): the people's
sessions, shared by every replica (docs/architecture.md, "Dashboard sessions").

Nothing in a row is of use without the dashboard's session secret: the row is found by the
SHA-256 of the session's id (the cookie holds the id, signed; the table never does), and its
contents, the person and their tokens, are sealed with a key derived from that secret."""

from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import TYPE_ANNOTATION_MAP, metadata_for


class Base(DeclarativeBase):
    metadata = metadata_for("dashboard")
    type_annotation_map: dict[Any, Any] = TYPE_ANNOTATION_MAP


class StoredSession(Base):
    __tablename__ = "sessions"

    key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)  # SHA-256 of the id
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # nonce || XChaCha20-Poly1305(JSON)
    created_at: Mapped[datetime]  # the absolute lifetime counts from here
    # The idle lifetime from here. Not indexed: every request renews it, which then stays a
    # heap-only update; the sweep reads the whole table (the sessions of the last hours).
    seen_at: Mapped[datetime]
