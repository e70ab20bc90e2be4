"""The declarative base of reporting: every reporting table lives in the ``reporting`` schema.
Reporting owns only derived tables, advanced from the audit feed (docs/reporting.md)."""

from typing import Any

from sqlalchemy.orm import DeclarativeBase

from shared.db import TYPE_ANNOTATION_MAP, metadata_for


class Base(DeclarativeBase):
    metadata = metadata_for("reporting")
    type_annotation_map: dict[Any, Any] = TYPE_ANNOTATION_MAP
