"""The vault's declarative base: every vault table lives in the ``vault`` schema."""

from typing import Any

from sqlalchemy.orm import DeclarativeBase

from shared.db import TYPE_ANNOTATION_MAP, metadata_for


class Base(DeclarativeBase):
    metadata = metadata_for("vault")
    type_annotation_map: dict[Any, Any] = TYPE_ANNOTATION_MAP
