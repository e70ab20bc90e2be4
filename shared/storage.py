"""The S3 client every service uses (MinIO in production, SeaweedFS embedded).

The minio SDK is synchronous: every call goes through ``anyio.to_thread`` here, so no service
blocks its event loop on storage and no other module imports minio.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from urllib.parse import urlsplit

import anyio.to_thread
import crc32c
from minio import Minio
from minio.commonconfig import COMPLIANCE
from minio.credentials.credentials import Credentials
from minio.datatypes import Part
from minio.error import S3Error
from minio.helpers import DictType, genheaders
from minio.retention import Retention


@dataclass(frozen=True)
class StorageConfig:
    endpoint: str  # http(s)://host:port
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"


class StorageError(Exception):
    """The object store refused or failed an operation."""


class ObjectMissing(StorageError):
    """The object (or that version of it) is not in the store."""


class MultipartGone(StorageError):
    """The multipart upload no longer exists (aborted, or completed by a request whose
    outcome was never recorded)."""


def _gone_if_no_such_upload(exc: S3Error) -> Exception:
    return MultipartGone(str(exc)) if exc.code == "NoSuchUpload" else exc


_PART_CHECKSUM = "x-amz-checksum-crc32c"


class _Client(Minio):
    """The minio SDK's client, but a request that carries its own CRC32C of the body is sent
    with UNSIGNED-PAYLOAD: the store checks the body against that CRC32C (S3's "additional
    checksums"; SeaweedFS and MinIO both refuse a part that differs, BadDigest) instead of a
    SHA-256 of the payload over plain HTTP (MD5 over HTTPS) that the SDK would compute. The
    CRC32C costs 1/40 of the CPU. It guards against damage in transit, not against someone on
    the link who forges a body with the same CRC32C: such a part's chunks fail their
    authentication tags when read, so it is never served as the clip (docs/architecture.md).
    The headers, the CRC32C among them, are signed as before."""

    def _build_headers(
        self,
        host: str,
        headers: DictType | None = None,
        body: bytes | None = None,
        creds: Credentials | None = None,
    ) -> tuple[DictType, datetime]:
        if body is None or headers is None or _PART_CHECKSUM not in headers:
            return super()._build_headers(host, headers, body, creds)
        built, date = super()._build_headers(host, headers, None, creds)
        built["Content-Length"] = str(len(body))
        built["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        built.pop("Content-MD5", None)
        return built, date


def part_checksum(data: bytes | bytearray) -> str:
    """The x-amz-checksum-crc32c of a part: its CRC32C, big-endian, in base64."""
    return base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()


def _client(config: StorageConfig) -> Minio:
    parts = urlsplit(config.endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"S3 endpoint must be an http(s) URL, got {config.endpoint!r}")
    return _Client(
        parts.netloc,
        access_key=config.access_key,
        secret_key=config.secret_key,
        secure=parts.scheme == "https",
        region=config.region,
    )


class ObjectStore:
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.bucket = config.bucket
        self.client = _client(config)

    async def ping(self) -> None:
        """Raise StorageError unless the bucket is reachable."""
        try:
            exists = await anyio.to_thread.run_sync(self.client.bucket_exists, self.bucket)
        except (S3Error, OSError) as exc:
            raise StorageError(f"object store unreachable: {exc}") from exc
        if not exists:
            raise StorageError(f"bucket {self.bucket!r} does not exist")

    def ensure_bucket(self) -> None:
        """Create the bucket with object lock (it can only be enabled at creation)."""
        if not self.client.bucket_exists(self.bucket):
            self.client.make_bucket(self.bucket, object_lock=True)
        try:
            self.client.get_object_lock_config(self.bucket)
        except S3Error as exc:
            raise StorageError(f"bucket {self.bucket!r} exists without object lock") from exc

    # --- multipart uploads, step by step ------------------------------------------------------
    # The minio SDK drives multipart uploads itself inside put_object, with an unbounded queue
    # of parts; the vault needs the steps one by one (parts sealed as they arrive, at most a
    # few in memory; a resumable upload's id and etags kept in the database between
    # requests), so these call the SDK's own (underscored) S3 operations. minio is pinned.

    async def start_multipart(self, key: str, *, retain_until: datetime) -> str:
        """A new multipart upload whose object will be under COMPLIANCE retention."""
        headers = genheaders(None, None, None, Retention(COMPLIANCE, retain_until), False)

        def start() -> str:
            upload_id: str = self.client._create_multipart_upload(self.bucket, key, headers)
            return upload_id

        return await anyio.to_thread.run_sync(start)

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes | bytearray
    ) -> str:
        """Store part ``number`` (from 1; sent again, it replaces the earlier one): its etag.
        The store refuses it (S3Error, BadDigest) unless it received exactly these bytes."""

        def upload() -> str:
            headers: DictType = {_PART_CHECKSUM: part_checksum(data)}
            try:
                # Any bytes-like object will do (it is sent as is): no copy.
                etag: str = self.client._upload_part(
                    self.bucket, key, cast(bytes, data), headers, upload_id, number
                )
            except S3Error as exc:
                raise _gone_if_no_such_upload(exc) from exc
            return etag

        return await anyio.to_thread.run_sync(upload)

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> str | None:
        """Assemble the parts into the object: its version id."""
        parts = [Part(number, etag) for number, etag in enumerate(etags, start=1)]

        def complete() -> str | None:
            try:
                result = self.client._complete_multipart_upload(self.bucket, key, upload_id, parts)
            except S3Error as exc:
                raise _gone_if_no_such_upload(exc) from exc
            version: str | None = result.version_id
            return version

        return await anyio.to_thread.run_sync(complete)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard a multipart upload and its parts (already gone is fine)."""

        def abort() -> None:
            try:
                self.client._abort_multipart_upload(self.bucket, key, upload_id)
            except S3Error as exc:
                if exc.code != "NoSuchUpload":
                    raise

        await anyio.to_thread.run_sync(abort)

    # --- reading and the life of a locked object --------------------------------------------

    def get_range(self, key: str, version: str | None, offset: int, length: int) -> Any:
        """Blocking, for a worker thread that goes on to read the answer: a streaming response
        for bytes [offset, offset + length) of the object (close and release it after)."""
        try:
            return self.client.get_object(
                self.bucket, key, offset=offset, length=length, version_id=version
            )
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchVersion"):
                raise ObjectMissing(f"{key}: {exc.code}") from exc
            raise

    async def open_range(self, key: str, version: str | None, offset: int, length: int) -> Any:
        """get_range from the event loop (read the answer in a worker thread too)."""
        return await anyio.to_thread.run_sync(self.get_range, key, version, offset, length)

    async def read_head(self, key: str, version: str | None, length: int) -> bytes:
        """The first ``length`` bytes of an object version (ObjectMissing if absent)."""
        response = await self.open_range(key, version, 0, length)
        try:
            data: bytes = await anyio.to_thread.run_sync(response.read)
        finally:
            response.close()
            response.release_conn()
        return data

    async def set_legal_hold(self, key: str, version: str | None, on: bool) -> None:
        def apply() -> None:
            if on:
                self.client.enable_object_legal_hold(self.bucket, key, version_id=version)
            else:
                self.client.disable_object_legal_hold(self.bucket, key, version_id=version)

        await anyio.to_thread.run_sync(apply)

    async def list_versions(self, prefix: str) -> list[tuple[str, str | None]]:
        """Every version of every object under ``prefix``, as (key, version id)."""

        def listed() -> list[tuple[str, str | None]]:
            found = self.client.list_objects(
                self.bucket, prefix=prefix, recursive=True, include_version=True
            )
            return [
                (o.object_name, o.version_id)
                for o in found
                if o.object_name and not o.is_delete_marker
            ]

        return await anyio.to_thread.run_sync(listed)

    async def delete_version(self, key: str, version: str | None) -> bool:
        """Delete one version of an object: whether it is gone (False while a retention
        period or a legal hold still protects it; the store refuses)."""

        def delete() -> bool:
            try:
                self.client.remove_object(self.bucket, key, version_id=version)
            except S3Error as exc:
                if exc.code in ("AccessDenied", "InvalidRequest", "ObjectLocked"):
                    return False
                raise
            return True

        return await anyio.to_thread.run_sync(delete)
