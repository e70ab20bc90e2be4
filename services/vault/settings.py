from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from nacl.signing import SigningKey
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.config import (
    ServiceSettings,
    audit_entry_key_field,
    dev_default,
    dev_writer_keys,
    key_of_32_bytes,
)
from shared.audit import WriterKeys
from shared.notes import COSIGNATURE_V1, NoteError, VerifierKey, parse_keys, valid_name
from shared.signatures import b64decode

# Fixed development keys, so that a development stack stays readable and verifiable across
# restarts; production refuses them.
DEV_AUDIT_SIGNING_KEY = "dGVtb2luLWRldi1hdWRpdC1sb2cta2V5LTMyYnl0ZXM="
DEV_KEK = "dGVtb2luLWRldi1rZXktZW5jcnlwdGlvbi1rZXktMzI="
DEV_MEDIA_KEY = "dGVtb2luLWRldi1tZWRpYS11cmwtc2lnbmluZy1rZXk="
DEV_AUDIT_ORIGIN = "temoin.invalid/dev/audit"

if TYPE_CHECKING:
    from services.vault.audit.service import LogKeys

DEFAULT_PORT = 8720


class VaultSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_")

    port: int = Field(DEFAULT_PORT, description="port the service listens on")
    audit_signing_key: str = dev_default(
        DEV_AUDIT_SIGNING_KEY,
        description="Ed25519 seed (base64, 32 bytes) that signs the audit log's tree heads",
    )
    _log_keys: LogKeys | None = PrivateAttr(None)
    audit_entry_key: str = audit_entry_key_field("vault")
    audit_writer_keys: str = dev_default(
        dev_writer_keys(),
        description="public keys of the services that write audit entries: signed-note "
        "verifier keys named ingest, vault and reporting (`temoin audit writer-key`)",
    )
    audit_origin: str = dev_default(
        DEV_AUDIT_ORIGIN,
        description="the log's name in its checkpoints, unique to this deployment "
        "(a schema-less URL: temoin.example-commune.fr/audit)",
    )
    audit_witnesses: str = Field(
        "",
        description="verifier keys (name+hash+base64) of the witnesses whose cosignatures of "
        "the log's checkpoints the vault accepts",
    )
    audit_head_interval_s: float = Field(
        300.0, gt=0, description="how often a new tree head is signed (when the log grew)"
    )
    audit_sequence_interval_s: float = Field(
        1.0, gt=0, description="how often new audit entries are sequenced into the log"
    )

    kek: str = dev_default(
        DEV_KEK, description="key-encryption key (base64, 32 bytes) wrapping each clip's key"
    )
    kek_id: str = Field("dev-kek-1", max_length=64, description="name of that key (rotation)")
    chunk_size: int = Field(256 << 10, ge=4096, le=16 << 20, description="sealed chunk size")
    # The S3 minimum: parts in flight are most of a streaming upload's memory, and 10,000
    # parts of 5 MiB still allow 48 GiB, far beyond a body-camera clip.
    part_size: int = Field(5 << 20, ge=5 << 20, description="S3 multipart part size")

    media_key: str = dev_default(
        DEV_MEDIA_KEY, description="HMAC key (base64, 32 bytes) that signs consultation media URLs"
    )
    public_url: str = Field(
        "",
        max_length=500,
        description="the vault's address as browsers reach it (https://temoin.commune.fr/vault, "
        "behind a proxy): consultations' media_url starts with it; empty: the address of "
        "the request",
    )
    media_url_ttl_s: int = Field(
        900, ge=30, le=4 * 3600, description="how long a consultation's media URL is valid"
    )
    # S3 refuses a retention date in the past: an old clip is locked at least this long, and
    # the erasure job deletes it as soon as the lock allows (its key is destroyed on time).
    minimum_lock_s: int = Field(
        24 * 3600, ge=1, description="shortest object lock given to a clip, at upload"
    )
    hold_lock_days: int = Field(
        90,
        ge=1,
        le=3650,
        description="while a procedure holds a recording, its COMPLIANCE lock is kept at least "
        "this far ahead (renewed by the erasure job), so that removing the legal hold alone "
        "does not make it deletable",
    )
    hold_renew_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="the lock of a held recording is renewed this long before it ends",
    )
    erasure_interval_s: float = Field(
        3600.0, gt=0, description="how often the erasure job runs (R241-13)"
    )
    scrub_interval_s: float = Field(
        24 * 3600.0, gt=0, description="how often the fixity scrub re-reads every sealed object"
    )
    upload_expiry_s: int = Field(
        3 * 24 * 3600,
        ge=60,
        description="how long an unfinished resumable upload is kept before it is discarded",
    )
    single_upload_expiry_s: int = Field(
        900,
        ge=1,
        description="how long the session of a single POST that died (nothing resumes it) "
        "keeps its parts before they are discarded",
    )
    upload_claim_s: float = Field(
        15.0,
        ge=1,
        description="how long a PATCH's claim on its upload lasts unless renewed (renewed "
        "while bytes flow): how soon a dock may resume through another process after the "
        "one carrying its PATCH died",
    )
    upload_sweep_interval_s: float = Field(
        60.0,
        gt=0,
        description="how often unfinished uploads are expired, interrupted completions rolled "
        "forward and the store's stray multipart uploads aborted",
    )
    derivative_interval_s: float = Field(
        5.0,
        gt=0,
        description="how often the anonymisation runner looks for a waiting job (issue 18)",
    )
    derivative_heartbeat_s: float = Field(
        5.0, gt=0, description="how often a running anonymisation job says it is alive"
    )
    derivative_stale_s: float = Field(
        60.0,
        gt=0,
        description="an anonymisation job silent this long is taken as dead (its worker died or "
        "the vault restarted) and started again from zero",
    )
    stray_multipart_after_s: int = Field(
        3600,
        ge=1,
        description="age after which a multipart upload in the store that no upload session "
        "owns is aborted",
    )

    store_check_interval_s: float = Field(
        24 * 3600.0,
        ge=300,
        description="how often the vault checks that its store keeps locked objects locked "
        "(and at start; docs/storage.md)",
    )
    # Short, in production too: each check leaves one canary locked this long.
    store_check_lock_s: int = Field(
        60,
        ge=15,
        le=3600,
        description="COMPLIANCE retention of the canary object each check locks and then "
        "tries to delete, overwrite or unlock",
    )

    @field_validator("kek", "audit_signing_key", "media_key")
    @classmethod
    def _keys(cls, value: str, info: ValidationInfo) -> str:
        return key_of_32_bytes(value, f"VAULT_{str(info.field_name).upper()}")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if (
            parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ValueError("VAULT_PUBLIC_URL: an http(s) URL with no query nor fragment")
        return value.rstrip("/")

    @field_validator("audit_writer_keys")
    @classmethod
    def _writer_keys(cls, value: str) -> str:
        try:
            keys = WriterKeys.parse(value).keys
        except NoteError as exc:
            raise ValueError(f"VAULT_AUDIT_WRITER_KEYS: {exc}") from exc
        if not {"vault"} <= {key.name for key in keys}:
            raise ValueError("VAULT_AUDIT_WRITER_KEYS must hold at least the vault's key")
        return value

    @field_validator("audit_witnesses")
    @classmethod
    def _witnesses(cls, value: str) -> str:
        try:
            keys = parse_keys(value)
        except NoteError as exc:
            raise ValueError(f"VAULT_AUDIT_WITNESSES: {exc}") from exc
        if any(key.key_type != COSIGNATURE_V1 for key in keys):
            raise ValueError("VAULT_AUDIT_WITNESSES: cosignature/v1 keys (type 0x04)")
        return value

    @field_validator("audit_origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        if not valid_name(value) or len(value) > 255:
            raise ValueError("VAULT_AUDIT_ORIGIN: no space nor plus sign, 255 bytes at most")
        return value

    @model_validator(mode="after")
    def _whole_chunks(self) -> VaultSettings:
        # A part is sealed as soon as it is full: it must end where a chunk ends.
        if self.part_size % self.chunk_size:
            raise ValueError("VAULT_PART_SIZE must be a whole number of VAULT_CHUNK_SIZE chunks")
        return self

    def key_encryption_key(self) -> bytes:
        return b64decode(self.kek)

    def media_signing_key(self) -> bytes:
        return b64decode(self.media_key)

    def audit_key(self) -> SigningKey:
        return SigningKey(b64decode(self.audit_signing_key))

    def log_keys(self) -> LogKeys:
        """The audit log's keys, built once per settings: the app's job, its routes and the
        extractions share one memory of the last head signed."""
        if self._log_keys is None:
            from services.vault.audit.service import LogKeys

            self._log_keys = LogKeys.from_settings(self)
        return self._log_keys

    def writer_keys(self) -> WriterKeys:
        return WriterKeys.parse(self.audit_writer_keys)

    def witness_keys(self) -> tuple[VerifierKey, ...]:
        return parse_keys(self.audit_witnesses)
