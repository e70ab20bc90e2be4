"""The S3 client every service uses (MinIO in production, SeaweedFS embedded).

The minio SDK is synchronous: every call goes through ``anyio.to_thread`` here, so no service
blocks its event loop on storage and no other module imports minio.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import anyio.to_thread
import certifi
import crc32c
import urllib3
from minio import Minio
from minio.commonconfig import COMPLIANCE, REPLACE, CopySource
from minio.credentials.credentials import Credentials
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.helpers import DictType, genheaders, md5sum_hash
from minio.retention import Retention


@dataclass(frozen=True)
class StorageConfig:
    endpoint: str  # http(s)://host:port
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"
    retries: int = 5  # of a request the store failed or did not take (see _http_client)


class StorageError(Exception):
    """The object store refused an operation (the base of what this module raises)."""


class StorageUnavailable(StorageError):
    """The store did not answer, or failed (connection refused or cut, timeout, a 5xx): a
    passing fault that says nothing about the objects. Callers answer 503 and try later."""


class ObjectMissing(StorageError):
    """The object (or that version of it) is not in the store, or is shorter than asked."""


class MultipartGone(StorageError):
    """The multipart upload no longer exists (aborted, or completed by a request whose
    outcome was never recorded)."""


# S3 error codes that mean "try again later", not "this request is wrong".
_PASSING = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "Busy"}
_MISSING = {"NoSuchKey", "NoSuchVersion", "NoSuchObject", "InvalidRange"}


@contextmanager
def _translated() -> Iterator[None]:
    """Every failure of the SDK or of the connection under it, as one of this module's
    errors: no caller needs to know minio's or urllib3's exception classes."""
    try:
        yield
    except StorageError:
        raise
    except S3Error as exc:
        if exc.code == "NoSuchUpload":
            raise MultipartGone(str(exc)) from exc
        if exc.code in _MISSING:
            raise ObjectMissing(f"{exc.code}: {exc.message}") from exc
        if exc.code in _PASSING:
            raise StorageUnavailable(f"the object store failed: {exc.code}") from exc
        raise StorageError(f"the object store refused: {exc.code}: {exc.message}") from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise StorageUnavailable(f"the object store cannot be reached: {exc}") from exc
    except MinioException as exc:  # ServerError (a 5xx without an S3 body) and the like
        raise StorageUnavailable(f"the object store failed: {exc}") from exc


Result = TypeVar("Result")


def _call(function: Callable[[], Result]) -> Result:
    with _translated():
        return function()


@dataclass(frozen=True)
class Answer:
    """The store's answer to a request sent to see whether it is refused (the vault's check
    that locked objects stay locked): accepted, or refused with its S3 error code."""

    accepted: bool
    code: str = ""

    def __str__(self) -> str:
        return "accepted" if self.accepted else f"refused ({self.code})"


def _answer(function: Callable[[], object]) -> Answer:
    """Run one request whose refusal is an answer, not a failure (in a worker thread, under
    _call). A store that is away or failing still raises: that answers nothing."""
    try:
        result = function()
    except S3Error as exc:
        if exc.code in _PASSING:
            raise
        return Answer(accepted=False, code=exc.code or "refused")
    return result if isinstance(result, Answer) else Answer(accepted=True)


_BYPASS_GOVERNANCE = {"x-amz-bypass-governance-retention": "true"}


class Body:
    """A streaming GET's answer: ``read`` raises only this module's errors (a connection cut
    mid-body is StorageUnavailable: urllib3 checks the length it was promised)."""

    def __init__(self, response: Any) -> None:
        self._response = response

    def read(self, size: int) -> bytes:
        with _translated():
            data: bytes = self._response.read(size)
            return data

    def close(self) -> None:
        # A connection cut mid-body can fail again on close: nothing more to learn from it.
        try:
            self._response.close()
            self._response.release_conn()
        except Exception:  # noqa: BLE001
            pass


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


def _http_client(retries: int) -> urllib3.PoolManager:
    """minio's own defaults but for the time limits: it waits 5 minutes to connect and 5 for
    each read, so an unreachable store held a request (or the fixity scrub) for minutes before
    anyone learnt of it. Its 5 retries stay by default (about 6 s of backoff): a store that is
    just restarting is ridden out rather than reported."""
    return urllib3.PoolManager(
        timeout=urllib3.util.Timeout(connect=5.0, read=60.0),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(
            total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )


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
        http_client=_http_client(config.retries),
    )


class ObjectStore:
    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.bucket = config.bucket
        self.client = _client(config)

    async def _run(self, function: Callable[[], Result]) -> Result:
        """A blocking SDK call in a worker thread, its failures translated."""
        return await anyio.to_thread.run_sync(_call, function)

    async def ping(self) -> None:
        """Raise StorageError unless the bucket is reachable."""
        if not await self._run(lambda: self.client.bucket_exists(self.bucket)):
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

        return await self._run(start)

    async def upload_part(
        self, key: str, upload_id: str, number: int, data: bytes | bytearray
    ) -> str:
        """Store part ``number`` (from 1; sent again, it replaces the earlier one): its etag.
        The store refuses it (StorageError, BadDigest) unless it received exactly these
        bytes."""
        return await self._run(lambda: self.send_part(key, upload_id, number, data))

    def send_part(self, key: str, upload_id: str, number: int, data: bytes | bytearray) -> str:
        """``upload_part`` in the calling thread, its failures untranslated (the SDK's own):
        the part with its CRC32C and an unsigned payload (``_Client``). Also what
        `make bench-scale`'s raw PUT sends, so that its ceiling sends parts as the vault does."""
        headers: DictType = {_PART_CHECKSUM: part_checksum(data)}
        # Any bytes-like object will do (it is sent as is): no copy.
        etag: str = self.client._upload_part(
            self.bucket, key, cast(bytes, data), headers, upload_id, number
        )
        return etag

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> str | None:
        """Assemble the parts into the object: its version id (MultipartGone once the upload
        is no more: aborted, or completed earlier, which some stores answer so)."""
        parts = [Part(number, etag) for number, etag in enumerate(etags, start=1)]

        def complete() -> str | None:
            result = self.client._complete_multipart_upload(self.bucket, key, upload_id, parts)
            version: str | None = result.version_id
            return version

        return await self._run(complete)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard a multipart upload and its parts (already gone is fine)."""
        try:
            await self._run(
                lambda: self.client._abort_multipart_upload(self.bucket, key, upload_id)
            )
        except MultipartGone:
            pass

    async def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str, datetime | None]]:
        """The store's own list of multipart uploads not completed nor aborted under
        ``prefix``, as (key, upload id, when it was started)."""

        def listed() -> list[tuple[str, str, datetime | None]]:
            found: list[tuple[str, str, datetime | None]] = []
            key_marker: str | None = None
            upload_marker: str | None = None
            while True:
                page = self.client._list_multipart_uploads(
                    self.bucket, prefix=prefix, key_marker=key_marker,
                    upload_id_marker=upload_marker,
                )  # fmt: skip
                found += [
                    (u.object_name, u.upload_id, u.initiated_time)
                    for u in page.uploads
                    if u.upload_id is not None
                ]
                if not page.is_truncated or not page.uploads:
                    return found
                key_marker, upload_marker = page.uploads[-1].object_name, page.uploads[-1].upload_id

        return await self._run(listed)

    # --- reading and the life of a locked object --------------------------------------------

    def get_range(self, key: str, version: str | None, offset: int, length: int) -> Body:
        """Blocking, for a worker thread that goes on to read the answer: a streaming answer
        for bytes [offset, offset + length) of the object (close it after)."""
        return Body(
            _call(
                lambda: self.client.get_object(
                    self.bucket, key, offset=offset, length=length, version_id=version
                )
            )
        )

    async def open_range(self, key: str, version: str | None, offset: int, length: int) -> Body:
        """get_range from the event loop (read the answer in a worker thread too)."""
        return await anyio.to_thread.run_sync(self.get_range, key, version, offset, length)

    async def read_head(self, key: str, version: str | None, length: int) -> bytes:
        """The first ``length`` bytes of an object version (ObjectMissing if absent)."""
        response = await self.open_range(key, version, 0, length)
        try:
            return await anyio.to_thread.run_sync(response.read, length)
        finally:
            response.close()

    async def stat(self, key: str) -> tuple[str | None, int] | None:
        """The current version of an object and its size, or None if there is none."""
        try:
            found = await self._run(lambda: self.client.stat_object(self.bucket, key))
        except ObjectMissing:
            return None
        return found.version_id, int(found.size or 0)

    async def set_legal_hold(self, key: str, version: str | None, on: bool) -> None:
        def apply() -> None:
            if on:
                self.client.enable_object_legal_hold(self.bucket, key, version_id=version)
            else:
                self.client.disable_object_legal_hold(self.bucket, key, version_id=version)

        await self._run(apply)

    async def extend_retention(self, key: str, version: str | None, until: datetime) -> None:
        """Lengthen an object version's COMPLIANCE retention to ``until`` (the store refuses
        to shorten it, whoever asks)."""
        retention = Retention(COMPLIANCE, until)
        await self._run(
            lambda: self.client.set_object_retention(
                self.bucket, key, retention, version_id=version
            )
        )

    async def protection(self, key: str, version: str | None) -> tuple[datetime | None, bool]:
        """What protects an object version in the store: its retention date (None without
        one) and whether a legal hold is on."""
        retention = await self.retention(key, version)

        def legal_hold() -> bool:
            try:
                return bool(self.client.is_object_legal_hold_enabled(self.bucket, key, version))
            except S3Error as exc:
                # A version that never had a legal hold: the SDK knows AWS's answer for it
                # (NoSuchObjectLockConfiguration), SeaweedFS gives this one.
                if exc.code == "NoSuchObjectLegalHold":
                    return False
                raise

        held = await self._run(legal_hold)
        return (retention[1] if retention is not None else None), held

    async def list_versions(
        self, prefix: str, *, delete_markers: bool = False
    ) -> list[tuple[str, str | None]]:
        """Every version of every object under ``prefix``, as (key, version id); with
        ``delete_markers``, the delete markers' versions too."""

        def listed() -> list[tuple[str, str | None]]:
            found = self.client.list_objects(
                self.bucket, prefix=prefix, recursive=True, include_version=True
            )
            return [
                (o.object_name, o.version_id)
                for o in found
                if o.object_name and (delete_markers or not o.is_delete_marker)
            ]

        return await self._run(listed)

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

        return await self._run(delete)

    # --- what the bucket promises, and whether it keeps it ----------------------------------
    # The vault's write-once check (services/vault/storage/worm.py) reads the bucket's
    # settings, then sends, on a canary object of its own, each request that could destroy or
    # shorten a locked version, and reads back what is left. Each such request is one method
    # here, answering accepted or refused (Answer): the check, not this client, decides what
    # an answer means.

    async def versioning(self) -> str | None:
        """The bucket's versioning status: "Enabled", "Suspended", or None (never enabled)."""

        def status() -> str | None:
            found: str | None = self.client.get_bucket_versioning(self.bucket).status
            return found if found in ("Enabled", "Suspended") else None

        return await self._run(status)

    async def object_lock_configured(self) -> bool:
        """Whether the bucket has an object lock configuration (it exists only on a bucket
        created with object lock)."""

        def configured() -> bool:
            try:
                self.client.get_object_lock_config(self.bucket)
            except S3Error as exc:
                if exc.code in ("ObjectLockConfigurationNotFoundError", "InvalidRequest"):
                    return False
                raise
            return True

        return await self._run(configured)

    async def retention(self, key: str, version: str | None) -> tuple[str, datetime] | None:
        """An object version's retention (mode, retain-until date), or None if it has none."""

        def read() -> tuple[str, datetime] | None:
            found = self.client.get_object_retention(self.bucket, key, version_id=version)
            if found is None or found.mode is None or found.retain_until_date is None:
                return None
            return found.mode, found.retain_until_date

        return await self._run(read)

    async def try_delete_version(self, key: str, version: str, *, bypass: bool) -> Answer:
        """DeleteObject of one version, with x-amz-bypass-governance-retention if ``bypass``."""
        headers: DictType = dict(_BYPASS_GOVERNANCE) if bypass else {}
        return await self._run(
            lambda: _answer(
                lambda: self.client._execute(
                    "DELETE", self.bucket, key, headers=headers, query_params={"versionId": version}
                )
            )
        )

    async def try_delete_versions(self, key: str, version: str, *, bypass: bool) -> Answer:
        """DeleteObjects (the multi-object delete) naming one version: accepted unless the
        store answers an error for it, in the request or in the result."""

        def delete() -> Answer:
            errors = list(
                self.client.remove_objects(
                    self.bucket, [DeleteObject(key, version)], bypass_governance_mode=bypass
                )
            )
            return Answer(accepted=False, code=errors[0].code) if errors else Answer(True)

        return await self._run(lambda: _answer(delete))

    async def try_set_retention(
        self, key: str, version: str, mode: str, until: datetime, *, bypass: bool
    ) -> Answer:
        """PutObjectRetention: ``mode`` ("COMPLIANCE" or "GOVERNANCE") until ``until``."""
        body = (
            '<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Mode>{mode}</Mode>"
            f"<RetainUntilDate>{until.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</RetainUntilDate>"
            "</Retention>"
        ).encode()
        return await self._put_retention(key, version, body, bypass=bypass)

    async def try_remove_retention(self, key: str, version: str, *, bypass: bool) -> Answer:
        """PutObjectRetention with neither mode nor date: the way to remove a GOVERNANCE
        retention (with the bypass), which a COMPLIANCE one must refuse."""
        body = b'<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></Retention>'
        return await self._put_retention(key, version, body, bypass=bypass)

    async def _put_retention(self, key: str, version: str, body: bytes, *, bypass: bool) -> Answer:
        headers: DictType = {"Content-MD5": md5sum_hash(body) or ""}
        if bypass:
            headers.update(_BYPASS_GOVERNANCE)
        return await self._run(
            lambda: _answer(
                lambda: self.client._execute(
                    "PUT",
                    self.bucket,
                    key,
                    body=body,
                    headers=headers,
                    query_params={"retention": "", "versionId": version},
                )
            )
        )

    async def try_put(self, key: str, data: bytes) -> Answer:
        """PutObject over ``key``, with no retention (a new version, on a versioned bucket)."""
        return await self._run(
            lambda: _answer(
                lambda: self.client.put_object(self.bucket, key, io.BytesIO(data), len(data))
            )
        )

    async def try_copy(self, key: str, source_version: str) -> Answer:
        """CopyObject of one version of ``key`` over ``key`` itself, its metadata replaced."""
        return await self._run(
            lambda: _answer(
                lambda: self.client.copy_object(
                    self.bucket,
                    key,
                    CopySource(self.bucket, key, version_id=source_version),
                    metadata={"x-amz-meta-temoin-check": "copy"},
                    metadata_directive=REPLACE,
                )
            )
        )

    async def try_multipart(self, key: str, data: bytes) -> Answer:
        """A multipart upload of ``data`` completed over ``key``, with no retention."""

        def upload() -> None:
            upload_id = self.client._create_multipart_upload(self.bucket, key, {})
            try:
                etag = self.send_part(key, upload_id, 1, data)
                self.client._complete_multipart_upload(self.bucket, key, upload_id, [Part(1, etag)])
            except BaseException:
                with contextlib.suppress(Exception):
                    self.client._abort_multipart_upload(self.bucket, key, upload_id)
                raise

        return await self._run(lambda: _answer(upload))

    async def try_delete(self, key: str) -> Answer:
        """DeleteObject of ``key`` with no version (a delete marker, on a versioned bucket)."""
        return await self._run(lambda: _answer(lambda: self.client.remove_object(self.bucket, key)))
