"""Each recording's data key, wrapped by the vault's key-encryption key (docs/sealed-format.md).

A wrapped key that fails authentication is damage like a failing chunk (the recording cannot
be opened); a key wrapped by a key-encryption key this vault does not hold is a matter of
configuration, and says nothing about the recording."""

from __future__ import annotations

import uuid

from services.vault.recordings.reading import Damaged
from services.vault.settings import VaultSettings
from shared import sealing
from shared.errors import ServiceUnavailable


class KeyUnavailable(ServiceUnavailable):
    """The data key was wrapped by a key-encryption key this vault is not configured with."""


def wrap_data_key(settings: VaultSettings, data_key: bytes, recording_id: uuid.UUID) -> bytes:
    return sealing.wrap_key(data_key, settings.key_encryption_key(), settings.kek_id, recording_id)


def unwrap_data_key(
    settings: VaultSettings, wrapped: bytes, kek_id: str, recording_id: uuid.UUID
) -> bytes:
    if kek_id != settings.kek_id:
        raise KeyUnavailable(
            f"this data key was wrapped by the key-encryption key {kek_id!r}, which this vault "
            "is not configured with"
        )
    try:
        return sealing.unwrap_key(wrapped, settings.key_encryption_key(), kek_id, recording_id)
    except sealing.SealError as exc:
        raise Damaged("its wrapped data key fails authentication") from exc
