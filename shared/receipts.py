"""Upload receipts: what ingest signs once a clip is sealed and registered, and what a camera
(through its dock) waits for before freeing its memory. Anyone with ingest's public key can
check one (`temoin receipt verify`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nacl.signing import SigningKey
from pydantic import BaseModel, Field

from shared.clips import StoredClip, erasure_notice
from shared.signatures import b64decode, b64encode, key_id, public_key_of, verify

RECEIPT_CONTEXT = "temoin-receipt-v1"
RECEIPT_DIGEST_CONTEXT = b"temoin-receipt-digest-v1\n"
SIGNED_FIELDS = (
    "recording_id",
    "organisation_id",
    "station_id",
    "camera_serial",
    "sha256",
    "size",
    "received_at",
)


class Receipt(BaseModel):
    recording_id: str
    organisation_id: str
    station_id: str
    camera_serial: str
    sha256: str
    size: int
    received_at: str = Field(description="ISO 8601 UTC with microseconds")
    key_id: str
    signature: str = Field(description="base64 Ed25519 over the message in docs/ingest.md")
    # Not signed (verification covers SIGNED_FIELDS only, so receipts signed before these
    # existed still verify): what the dock tells people; the vault's registry and its collecte
    # entry are the record.
    retain_until: str | None = Field(
        None, description="not signed: when the recording's retention ends (R241-13)"
    )
    erasure_due: bool = Field(
        False,
        description="not signed: the clip arrived past its retention, so the next erasure "
        "pass erases it unless a procedure holds it",
    )
    notice: str | None = Field(
        None, description="not signed: what the dock shows (French, then English)"
    )


def receipt_message(fields: Mapping[str, Any]) -> bytes:
    body = json.dumps(
        {name: fields[name] for name in SIGNED_FIELDS}, sort_keys=True, separators=(",", ":")
    )
    return f"{RECEIPT_CONTEXT}\n{body}".encode()


def sign_receipt(stored: StoredClip, key: SigningKey) -> Receipt:
    fields: dict[str, Any] = {
        "recording_id": str(stored.recording_id),
        "organisation_id": str(stored.organisation_id),
        "station_id": str(stored.station_id),
        "camera_serial": stored.camera_serial,
        "sha256": stored.sha256,
        "size": stored.size,
        "received_at": _instant(stored.received_at),
    }
    signature = key.sign(receipt_message(fields)).signature
    retain_until = stored.retain_until
    return Receipt(
        **fields,
        key_id=key_id(public_key_of(key)),
        signature=b64encode(signature),
        retain_until=None if retain_until is None else _instant(retain_until),
        erasure_due=stored.erasure_due,
        notice=erasure_notice(retain_until) if stored.erasure_due and retain_until else None,
    )


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def receipt_is_valid(receipt: dict[str, Any], public_key: str) -> bool:
    try:
        message = receipt_message(receipt)
    except KeyError:
        return False
    return verify(public_key, message, str(receipt.get("signature", "")))


def receipt_digest(receipt: Mapping[str, Any]) -> str:
    """The SHA-256 that names one signed receipt without stating what it says: over
    "temoin-receipt-digest-v1\\n", the message ingest signed and the signature's 64 bytes. A
    training copy's derivation record carries it (docs/training-copies.md). The signature is in
    it because the signed fields alone could be guessed: knowing the original's id and SHA-256,
    one could try each camera, station and arrival time of an organisation until the digest
    matched, and so learn the camera that names the wearer; nobody can guess a signature.
    Fields ingest does not sign (retain_until, notice) do not count. Raises ValueError for a
    receipt that lacks a signed field or whose signature is not 64 bytes of base64."""
    try:
        message = receipt_message(receipt)
    except KeyError as exc:
        raise ValueError(f"not a receipt: no {exc.args[0]}") from exc
    signature = b64decode(str(receipt.get("signature", "")))
    if len(signature) != 64:
        raise ValueError("not a receipt: its signature is not 64 bytes")
    return hashlib.sha256(RECEIPT_DIGEST_CONTEXT + message + signature).hexdigest()
