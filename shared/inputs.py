"""What the services take from outside, defined once: every route and decoder uses these
rather than its own check, so that a value PostgreSQL or Python cannot hold is refused as the
client's error (422 naming the field), never met as a server's (500).

- integers: within what their column holds (``integer`` 2^31-1, ``bigint`` 2^63-1), or
  tighter where the domain says so;
- integer headers: digits only, as RFC 9110 writes them (no sign, no ``_``, no exponent);
- text: PostgreSQL stores no NUL, and a lone UTF-16 surrogate (JSON ``"\\ud800"``) has no
  UTF-8 form; ``unstorable_at`` finds either in any decoded value, and the middleware of
  shared/web.py applies it to every request's path, query, headers and JSON body;
- instants: RFC 3339 text with a time zone, converted to UTC, between 1900 and 2999.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, TypeAdapter

from shared.errors import UnprocessableEntity

INT32_MAX = 2**31 - 1  # PostgreSQL integer
INT64_MAX = 2**63 - 1  # PostgreSQL bigint

Offset = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""A position: rows to skip in a listing, bytes of an upload already acknowledged."""

_DIGITS = re.compile(r"[0-9]+")


def _digits_only(value: object) -> object:
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("an integer header holds digits only (RFC 9110)")
    return value


# The constraints come before the validator: pydantic then writes them as minimum and maximum
# in the OpenAPI schema.
HeaderCount = Annotated[int, Field(ge=0, le=INT64_MAX), BeforeValidator(_digits_only)]
"""An integer header (Content-Length, Upload-Length, Upload-Offset...)."""

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> bool:
    """Whether PostgreSQL can store ``text``: no NUL, no lone surrogate."""
    return _UNSTORABLE.search(text) is None


def unstorable_at(value: object, where: str) -> str | None:
    """Where, in ``value`` (decoded JSON: objects, lists, strings...), the first string
    PostgreSQL cannot store is (``where.communes.0.name``), or None. A key that cannot be
    stored names its object. Iterative: JSON nested as deep as the parser allows is fine."""
    pending: list[tuple[object, str]] = [(value, where)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            if not storable(item):
                return path
        elif isinstance(item, dict):
            if not all(storable(str(key)) for key in item):
                return path
            pending.extend((item[key], f"{path}.{key}") for key in reversed(list(item)))
        elif isinstance(item, list):
            pending.extend((item[i], f"{path}.{i}") for i in reversed(range(len(item))))
    return None


UNSTORABLE = "text may not contain NUL or a lone UTF-16 surrogate"


def refuse_unstorable(value: object, where: str) -> None:
    """Raise a 422 naming the field when ``value`` holds text PostgreSQL cannot store."""
    field = unstorable_at(value, where)
    if field is not None:
        raise UnprocessableEntity(
            f"{field}: {UNSTORABLE}", field=field, errors=[{"field": field, "message": UNSTORABLE}]
        )


# Far wider than any recording, assignment or search needs, and far enough from Python's
# limits (years 1 and 9999) that no time zone or added retention can take an instant past them.
FIRST_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
END_OF_INSTANTS = datetime(3000, 1, 1, tzinfo=UTC)


def _in_utc_within_bounds(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise ValueError("the instant is out of range") from exc
    if not FIRST_INSTANT <= utc < END_OF_INSTANTS:
        raise ValueError("the instant must lie between the years 1900 and 2999 (UTC)")
    return utc


_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _written_as_a_date(value: object) -> object:
    # pydantic would take a number, or digits ("-792"), as seconds since 1970: the contract
    # says RFC 3339 text.
    if isinstance(value, str | int | float) and not (
        isinstance(value, str) and _RFC3339.match(value)
    ):
        raise ValueError("an instant is written as RFC 3339 text: 2026-05-30T08:00:00+02:00")
    return value


Instant = Annotated[
    AwareDatetime, BeforeValidator(_written_as_a_date), AfterValidator(_in_utc_within_bounds)
]
"""A moment in time, written as RFC 3339 text with its time zone (a naive date-time or a
number is refused), in UTC once parsed."""


_INSTANT: TypeAdapter[datetime] = TypeAdapter(Instant)


def parse_instant(text: str) -> datetime:
    """An instant given as text outside a model (a signed assertion's timestamp), refused as
    ``Instant`` refuses it: ValueError."""
    return _INSTANT.validate_python(text)


__all__ = [
    "END_OF_INSTANTS",
    "FIRST_INSTANT",
    "INT32_MAX",
    "INT64_MAX",
    "HeaderCount",
    "Instant",
    "Offset",
    "parse_instant",
    "refuse_unstorable",
    "storable",
    "unstorable_at",
    "UNSTORABLE",
]
