"""The digest a training copy's derivation record names the original's receipt by
(shared/receipts.py ``receipt_digest``, docs/training-copies.md): one receipt's, over what
ingest signed and the signature, so that it names the receipt without letting anyone who
knows some of its fields guess the others."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from nacl.signing import SigningKey

from shared.clips import StoredClip
from shared.receipts import (
    RECEIPT_DIGEST_CONTEXT,
    SIGNED_FIELDS,
    receipt_digest,
    receipt_message,
    sign_receipt,
)


def _receipt(key: SigningKey, **changes: Any) -> dict[str, Any]:
    clip = StoredClip(
        recording_id=uuid.UUID(int=1),
        organisation_id=uuid.UUID(int=2),
        station_id=uuid.UUID(int=3),
        camera_serial="CAM-0001",
        sha256="ab" * 32,
        size=4096,
        received_at=datetime(2026, 11, 30, 8, 15, 2, 123456, tzinfo=UTC),
        created=True,
        retain_until=datetime(2026, 12, 30, tzinfo=UTC),
        **changes,
    )
    return sign_receipt(clip, key).model_dump()


def test_the_digest_names_one_signed_receipt() -> None:
    key = SigningKey.generate()
    receipt = _receipt(key)
    digest = receipt_digest(receipt)
    assert len(digest) == 64 and digest == receipt_digest(dict(receipt))
    # What ingest does not sign does not count.
    assert receipt_digest({**receipt, "notice": "autre", "retain_until": None}) == digest
    # Each field ingest signs does.
    for name in SIGNED_FIELDS:
        changed = {**receipt, name: f"{receipt[name]}0"}
        assert receipt_digest(changed) != digest, name
    # The same fields signed by another key: another receipt, another digest.
    assert receipt_digest(_receipt(SigningKey.generate())) != digest
    # Not the hash of the signed fields alone, which anyone knowing them could recompute.
    assert digest != hashlib.sha256(RECEIPT_DIGEST_CONTEXT + receipt_message(receipt)).hexdigest()
    assert digest != hashlib.sha256(receipt_message(receipt)).hexdigest()


@pytest.mark.parametrize(
    "broken",
    [
        {"signature": "AAAA"},  # base64, but not 64 bytes
        {"signature": "not base64!"},
        {"signature": None},
    ],
)
def test_what_is_not_a_receipt_has_no_digest(broken: dict[str, Any]) -> None:
    receipt = {**_receipt(SigningKey.generate()), **broken}
    with pytest.raises(ValueError, match="not"):
        receipt_digest(receipt)


def test_a_receipt_missing_a_signed_field_has_no_digest() -> None:
    receipt = _receipt(SigningKey.generate())
    del receipt["camera_serial"]
    with pytest.raises(ValueError, match="camera_serial"):
        receipt_digest(receipt)
