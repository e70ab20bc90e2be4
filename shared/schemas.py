"""Request bodies that take exactly what their published schema says.

FastAPI validates a JSON body after parsing it, in pydantic's lax mode, which converts between
JSON types: ``0.0`` passes for ``false``, ``"5"`` for ``5``, ``0`` for 1970-01-01. The
OpenAPI schema promises otherwise, and a client relying on such a conversion works by luck.
Models of request bodies derive from ``JsonBody``: each field takes a value of the JSON type
its schema names (or a Python object of the field's own type, from code), nothing else.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator

_NAMES = {
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


def _json_type(value: Any) -> set[str] | None:
    """The JSON types a parsed value is; None for other Python objects (code, not JSON)."""
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "number"}
    if isinstance(value, float):
        return {"number", "integer"} if value.is_integer() else {"number"}
    if isinstance(value, str):
        return {"string"}
    if isinstance(value, list):
        return {"array"}
    if isinstance(value, dict):
        return {"object"}
    return None


def _schema_types(schema: dict[str, Any]) -> set[str] | None:
    if "type" in schema:
        kind = schema["type"]
        return set(kind) if isinstance(kind, list) else {kind}
    if "anyOf" in schema:
        types: set[str] = set()
        for option in schema["anyOf"]:
            option_types = _schema_types(option)
            if option_types is None:
                return None  # a nested model: it checks itself
            types |= option_types
        return types
    return None


@cache
def _field_types(model: type[BaseModel]) -> dict[str, set[str]]:
    properties = model.model_json_schema(mode="validation").get("properties", {})
    types = {}
    for field_name, field in model.model_fields.items():
        schema = properties.get(field.alias or field_name)
        found = None if schema is None else _schema_types(schema)
        if found is not None:
            types[field_name] = found
    return types


class JsonBody(BaseModel):
    @field_validator("*", mode="before")
    @classmethod
    def _of_its_json_type(cls, value: Any, info: ValidationInfo) -> Any:
        expected = _field_types(cls).get(info.field_name or "")
        given = _json_type(value)
        if expected is None or given is None or expected & given:
            return value
        names = " or ".join(_NAMES.get(kind, kind) for kind in sorted(expected))
        raise ValueError(f"Input should be {names}")


__all__ = ["JsonBody"]
