"""The S3 client every service uses (MinIO in production, SeaweedFS embedded).

The minio SDK is synchronous: every call goes through ``anyio.to_thread`` here, so no service
blocks its event loop on storage and no other module imports minio.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO
from urllib.parse import urlsplit

import anyio.to_thread
from minio import Minio
from minio.commonconfig import COMPLIANCE
from minio.error import S3Error
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


def _client(config: StorageConfig) -> Minio:
    parts = urlsplit(config.endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"S3 endpoint must be an http(s) URL, got {config.endpoint!r}")
    return Minio(
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

    async def put_locked(
        self, key: str, reader: BinaryIO, *, retain_until: datetime, part_size: int
    ) -> str | None:
        """Stream ``reader`` into a new object under COMPLIANCE retention until ``retain_until``
        (multipart, a few parts in memory at most). If ``reader`` raises, the multipart upload
        is aborted and nothing is stored. Returns the object's version id."""

        def put() -> str | None:
            result = self.client.put_object(
                self.bucket,
                key,
                reader,
                length=-1,
                part_size=part_size,
                num_parallel_uploads=2,
                retention=Retention(COMPLIANCE, retain_until),
            )
            version: str | None = result.version_id
            return version

        return await anyio.to_thread.run_sync(put)
