"""The signed media URL of a consultation, and HTTP Range (RFC 9110 14) for the player.

A browser's <video> element cannot send an Authorization header, so the URL itself is the
credential: short-lived, bound to one consultation, one recording and one person, signed with
the vault's media key (HMAC-SHA256). Anything altered, or past its expiry, is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.clips import DEFAULT_CONTENT_TYPE, clip_content_type
from shared.errors import Forbidden
from shared.inputs import END_OF_INSTANTS, INT64_MAX, storable


@dataclass(frozen=True)
class MediaGrant:
    consultation_id: uuid.UUID
    recording_id: uuid.UUID
    subject: str
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_grant(grant: MediaGrant, key: bytes) -> str:
    payload = json.dumps(
        {
            "c": str(grant.consultation_id),
            "r": str(grant.recording_id),
            "s": grant.subject,
            "e": int(grant.expires_at.timestamp()),
        },
        separators=(",", ":"),
    ).encode()
    mac = hmac.new(key, b"temoin-media-v1\n" + payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


# What a viewer does about any refused media URL: the consultation's answer gives a new one.
NEW_URL = (
    "open a new consultation for a new one "
    "(POST /v1/organisations/{org_id}/recordings/{recording_id}/consultations)"
)


def verify_grant(token: str, key: bytes, now: datetime | None = None) -> MediaGrant:
    """The grant, or Forbidden (403) for an altered, malformed or expired URL."""
    try:
        payload_part, mac_part = token.split(".")
        payload = _unb64(payload_part)
        mac = _unb64(mac_part)
    except ValueError as exc:
        raise Forbidden(f"this media URL is not valid (malformed): {NEW_URL}") from exc
    expected = hmac.new(key, b"temoin-media-v1\n" + payload, hashlib.sha256).digest()
    if not hmac.compare_digest(mac, expected):
        raise Forbidden(f"this media URL is not valid (altered): {NEW_URL}")
    grant = _grant(payload)
    if grant is None:
        raise Forbidden(f"this media URL is not valid: {NEW_URL}")
    if grant.expires_at <= (now or datetime.now(UTC)):
        raise Forbidden(f"this media URL has expired: {NEW_URL}")
    return grant


_LAST_EXPIRY = int(END_OF_INSTANTS.timestamp())


def _grant(payload: bytes) -> MediaGrant | None:
    """The grant a correctly signed payload holds, or None when it holds none: the HMAC
    vouches for who made it (the vault, or whoever has its key), not for its shape."""
    try:
        fields = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(fields, dict):
        return None
    consultation, recording, subject, expiry = (fields.get(name) for name in "crse")
    if not (
        isinstance(consultation, str)
        and isinstance(recording, str)
        and isinstance(subject, str)
        and storable(subject)
        and type(expiry) is int
        and 0 <= expiry < _LAST_EXPIRY
    ):
        return None
    try:
        return MediaGrant(
            consultation_id=uuid.UUID(consultation),
            recording_id=uuid.UUID(recording),
            subject=subject,
            expires_at=datetime.fromtimestamp(expiry, UTC),
        )
    except ValueError:
        return None


def served_content_type(stored: str) -> str:
    """The Content-Type a clip is served with: the one its dock declared, unless it is not a
    clip's (a row kept from before ingest checked it): then opaque bytes."""
    try:
        return clip_content_type(stored)
    except ValueError:
        return DEFAULT_CONTENT_TYPE


_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


class Unsatisfiable(Exception):
    """No byte of the requested range is in the clip (416)."""


def _position(digits: str) -> int:
    # Beyond any clip, however many digits (int() refuses more than 4300).
    return int(digits) if len(digits) <= 18 else INT64_MAX


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The single byte range [start, stop) asked for, or None for the whole clip. A header
    this server does not handle (several ranges, another unit, bad syntax) is ignored, as
    RFC 9110 allows; a range wholly outside the clip is Unsatisfiable."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if first == "" and last == "":
        return None
    if first == "":  # the last N bytes
        length = _position(last)
        if length == 0:
            raise Unsatisfiable
        return max(size - length, 0), size
    start = _position(first)
    if start >= size:
        raise Unsatisfiable
    stop = size if last == "" else min(_position(last) + 1, size)
    if stop <= start:
        return None  # last < first: syntactically invalid, ignored
    return start, stop
