"""The declarative base of ingest: every ingest table lives in the ``ingest`` schema."""

from typing import Any

from sqlalchemy.orm import DeclarativeBase

from shared.db import TYPE_ANNOTATION_MAP, metadata_for


class Base(DeclarativeBase):
    metadata = metadata_for("ingest")
    type_annotation_map: dict[Any, Any] = TYPE_ANNOTATION_MAP
