"""Ed25519 signatures (pynacl): station assertions now, receipts and tree heads later.

Every signed message starts with a context line naming what it is, so a signature made for
one purpose can never be replayed as another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

STATION_ASSERTION_CONTEXT = "temoin-station-assertion-v1"
TREE_HEAD_CONTEXT = "temoin-tree-head-v1"


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise ValueError("not valid base64") from exc


def public_key_of(signing_key: SigningKey) -> str:
    return b64encode(bytes(signing_key.verify_key))


def verify_key(public_key_b64: str) -> VerifyKey:
    raw = b64decode(public_key_b64)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return VerifyKey(raw)


def key_id(public_key_b64: str) -> str:
    """A short, stable name for a public key: the first 8 bytes of its SHA-256, in hex."""
    return hashlib.sha256(b64decode(public_key_b64)).hexdigest()[:16]


def tree_head_message(tree_size: int, root_hash: bytes, signed_at: str) -> bytes:
    """What a signed tree head of the audit log signs (docs/audit.md)."""
    return "\n".join((TREE_HEAD_CONTEXT, str(tree_size), root_hash.hex(), signed_at)).encode()


def verify(public_key_b64: str, message: bytes, signature_b64: str) -> bool:
    try:
        verify_key(public_key_b64).verify(message, b64decode(signature_b64))
    except (BadSignatureError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class StationAssertion:
    """What a docking station signs to obtain a short-lived upload token."""

    station_id: str
    timestamp: str  # RFC 3339, UTC
    nonce: str
    signature: str = ""

    def message(self) -> bytes:
        return "\n".join(
            (STATION_ASSERTION_CONTEXT, self.station_id, self.timestamp, self.nonce)
        ).encode()

    @classmethod
    def sign(cls, station_id: str, key: SigningKey, now: datetime) -> StationAssertion:
        unsigned = cls(
            station_id=station_id,
            timestamp=now.isoformat().replace("+00:00", "Z"),
            nonce=secrets.token_hex(16),
        )
        signature = key.sign(unsigned.message()).signature
        return cls(**{**unsigned.__dict__, "signature": b64encode(signature)})
