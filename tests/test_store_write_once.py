"""The vault proves, at start and daily, that its store keeps locked versions locked
(services/vault/storage/worm.py): every request that could delete, overwrite or unlock a
COMPLIANCE-locked canary is sent, and what is left of it read back. Production refuses to start
on a store that fails; development warns."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.vault.app import create_app
from services.vault.storage import worm
from services.vault.storage.worm import (
    CANARY_PREFIX,
    PROBES,
    Report,
    StoreNotWriteOnce,
    StoreWriteOnce,
    Verdict,
    check_write_once,
    ready,
    refuses_to_start,
    sweep_canaries,
    write_canary,
)
from shared.storage import Answer, ObjectMissing, ObjectStore, StorageConfig
from temoin.embedded import free_port
from tests.fixtures.apps import serve_in_process, settings_for
from tests.fixtures.servers import Servers
from tests.test_configuration import ENTRY_KEYS, WRITER_KEYS

# Production settings that are not development defaults (the keys are test values).
PRODUCTION: dict[str, Any] = {
    "env": "production",
    "auth_issuer": "https://sso.example-commune.fr/realms/police",
    "auth_jwks_url": "https://sso.example-commune.fr/realms/police/protocol/openid-connect/certs",
    "service_token": "a-production-service-token-of-40-characters",
    "audit_signing_key": "cHJvZHVjdGlvbi1hdWRpdC1zaWduaW5nLWtleS0zMmI=",
    "kek": "cHJvZHVjdGlvbi1rZXktZW5jcnlwdGlvbi1rZXktMzI=",
    "media_key": "cHJvZHVjdGlvbi1tZWRpYS11cmwtc2lnbmluZy1rZXk=",
    "audit_entry_key": ENTRY_KEYS["vault"],
    "audit_writer_keys": WRITER_KEYS,
    "audit_origin": "police.example-commune.fr/audit",
}


def _store(servers: Servers, bucket: str | None = None) -> ObjectStore:
    config = servers.storage
    if bucket is None:
        return ObjectStore(config)
    return ObjectStore(
        StorageConfig(config.endpoint, config.access_key, config.secret_key, bucket, config.region)
    )


@pytest.fixture
def unlocked_bucket(servers: Servers) -> str:
    """A bucket made the ordinary way: no versioning, no object lock."""
    name = f"temoin-test-plain-{uuid.uuid4().hex[:12]}"
    _store(servers, name).client.make_bucket(name)
    return name


async def test_the_embedded_store_is_write_once(servers: Servers) -> None:
    store = _store(servers)
    report = await check_write_once(store, lock_s=30)
    for attempt in report.attempts:  # shown with -s: what SeaweedFS answered to each request
        print(f"{attempt.request}: {attempt.answer}")
    assert report.verdict is Verdict.PASSED, report.problems
    assert [a.request for a in report.attempts] == [p.request for p in PROBES]
    assert all(a.harm is None for a in report.attempts)
    # What a COMPLIANCE lock must refuse, SeaweedFS refused; new versions over the key and a
    # delete marker it accepted, and the locked version survived them.
    answers = {a.request: a.answer for a in report.attempts}
    for probe in PROBES:
        assert answers[probe.request].startswith("refused") == probe.must_refuse, probe.request


async def test_a_bucket_without_object_lock_fails(servers: Servers, unlocked_bucket: str) -> None:
    report = await check_write_once(_store(servers, unlocked_bucket), lock_s=30)
    assert report.verdict is Verdict.FAILED
    assert any("no object lock configuration" in problem for problem in report.problems)
    assert any("versioning is off" in problem for problem in report.problems)
    assert refuses_to_start(report, production=True)
    assert not refuses_to_start(report, production=False)


async def test_a_versioned_bucket_without_object_lock_fails(
    servers: Servers, unlocked_bucket: str
) -> None:
    """Versioning alone keeps old versions, but anyone may delete them."""
    from minio.versioningconfig import ENABLED, VersioningConfig

    store = _store(servers, unlocked_bucket)
    store.client.set_bucket_versioning(unlocked_bucket, VersioningConfig(ENABLED))
    report = await check_write_once(store, lock_s=30)
    assert report.verdict is Verdict.FAILED
    assert report.problems == (
        f"bucket {unlocked_bucket!r} has no object lock configuration "
        "(it can only be turned on when the bucket is created)",
    )


def test_what_follows_from_a_verdict() -> None:
    at = datetime.now(UTC)
    passed, failed = Report(Verdict.PASSED, at), Report(Verdict.FAILED, at, problems=("x",))
    unchecked = Report(Verdict.NOT_CHECKED, at, problems=("the store did not answer",))
    # Production starts only if the store was not shown to fail (an unreachable store is not
    # shown to fail: it starts, not ready, and asks again), and is ready only after a pass.
    assert [refuses_to_start(r, production=True) for r in (passed, failed, unchecked)] == [
        False,
        True,
        False,
    ]
    assert [ready(r, production=True) for r in (None, passed, failed, unchecked)] == [
        False,
        True,
        False,
        False,
    ]
    # Development never refuses and is always ready: it warns.
    for report in (None, passed, failed, unchecked):
        assert ready(report, production=False)
        if report is not None:
            assert not refuses_to_start(report, production=False)
    # A later failed check makes production not ready, shown in /readyz.
    check = StoreWriteOnce(production=True, interval_s=3600, lock_s=60)
    check.record(passed)
    assert check.readiness() == ("ok", True)
    check.record(failed)
    assert check.readiness() == ("failed: x", False)


# --- the check's logic, against a store with one flaw each -----------------------------------


class FlawedStore:
    """An in-memory bucket with S3 object lock, but for one ``flaw``: what a faulty store (or
    a store whose lock a setting turned off) would let through."""

    bucket = "flawed"

    def __init__(self, flaw: str) -> None:
        self.flaw = flaw
        self.versions: dict[tuple[str, str], list[Any]] = {}  # [content, mode, until]
        self.uploads: dict[str, tuple[str, datetime | None, list[bytes]]] = {}

    async def versioning(self) -> str:
        return "Enabled"

    async def object_lock_configured(self) -> bool:
        return True

    async def start_multipart(self, key: str, *, retain_until: datetime) -> str:
        upload = uuid.uuid4().hex
        until = None if self.flaw == "retention ignored" else retain_until
        self.uploads[upload] = (key, until, [])
        return upload

    async def upload_part(self, key: str, upload: str, number: int, data: bytes) -> str:
        self.uploads[upload][2].append(bytes(data))
        return f"etag-{number}"

    async def complete_multipart(self, key: str, upload: str, etags: list[str]) -> str:
        _, until, parts = self.uploads.pop(upload)
        return self._new_version(key, b"".join(parts), until)

    async def abort_multipart(self, key: str, upload: str) -> None:
        self.uploads.pop(upload, None)

    def _new_version(self, key: str, content: bytes, until: datetime | None) -> str:
        version = uuid.uuid4().hex
        self.versions[(key, version)] = [content, "COMPLIANCE" if until else None, until]
        return version

    def _locked(self, key: str, version: str) -> bool:
        entry = self.versions.get((key, version))
        return entry is not None and entry[2] is not None and entry[2] > datetime.now(UTC)

    async def read_head(self, key: str, version: str, length: int) -> bytes:
        if (key, version) not in self.versions:
            raise ObjectMissing(key)
        content: bytes = self.versions[(key, version)][0]
        return content[:length]

    async def retention(self, key: str, version: str) -> tuple[str, datetime] | None:
        content, mode, until = self.versions[(key, version)]
        return (mode, until) if mode else None

    def _delete(self, key: str, version: str, flaw: str) -> Answer:
        if self._locked(key, version) and self.flaw != flaw:
            return Answer(False, "AccessDenied")
        self.versions.pop((key, version), None)
        return Answer(True)

    async def try_delete_version(self, key: str, version: str, *, bypass: bool) -> Answer:
        return self._delete(key, version, "bypass deletes" if bypass else "delete by version")

    async def try_delete_versions(self, key: str, version: str, *, bypass: bool) -> Answer:
        return self._delete(key, version, "multi-delete deletes")

    async def try_set_retention(
        self, key: str, version: str, mode: str, until: datetime, *, bypass: bool
    ) -> Answer:
        entry = self.versions[(key, version)]
        if self.flaw == "retention accepted but kept":
            return Answer(True)
        if self.flaw == "retention shortened" and mode == "COMPLIANCE":
            entry[2] = until
            return Answer(True)
        if until >= entry[2] and mode == entry[1]:
            entry[2] = until
            return Answer(True)
        return Answer(False, "AccessDenied")

    async def try_remove_retention(self, key: str, version: str, *, bypass: bool) -> Answer:
        return Answer(False, "AccessDenied")

    async def try_put(self, key: str, data: bytes) -> Answer:
        if self.flaw == "overwrite replaces":  # an unversioned store: the key has one object
            for found in [v for (k, v) in self.versions if k == key]:
                self.versions[(key, found)][0] = data
            return Answer(True)
        self._new_version(key, data, None)
        return Answer(True)

    async def try_copy(self, key: str, source_version: str) -> Answer:
        self._new_version(key, self.versions[(key, source_version)][0], None)
        return Answer(True)

    async def try_multipart(self, key: str, data: bytes) -> Answer:
        self._new_version(key, data, None)
        return Answer(True)

    async def try_delete(self, key: str) -> Answer:
        return Answer(True)


@pytest.mark.parametrize(
    ("flaw", "caught_by"),
    [
        ("delete by version", ["DeleteObject of the locked version"]),
        ("bypass deletes", ["DeleteObject of the locked version, bypassing governance"]),
        (
            "multi-delete deletes",
            [
                "DeleteObjects (multi-object delete) of the locked version",
                "DeleteObjects of the locked version, bypassing governance",
            ],
        ),
        (
            "retention shortened",
            [
                "PutObjectRetention to an earlier date",
                "PutObjectRetention to an earlier date, bypassing governance",
            ],
        ),
        (
            "retention accepted but kept",
            [
                "PutObjectRetention to an earlier date",
                "PutObjectRetention to an earlier date, bypassing governance",
                "PutObjectRetention from COMPLIANCE to GOVERNANCE",
            ],
        ),
        ("overwrite replaces", ["PutObject over the key"]),
    ],
)
async def test_each_way_a_lock_can_give_is_caught(flaw: str, caught_by: list[str]) -> None:
    report = await check_write_once(FlawedStore(flaw), lock_s=60)  # type: ignore[arg-type]
    assert report.verdict is Verdict.FAILED
    assert [a.request for a in report.attempts if a.harm] == caught_by
    # Every request was still tried, each on a whole locked canary.
    assert [a.request for a in report.attempts] == [p.request for p in PROBES]
    assert all(problem.split(":")[0] in caught_by for problem in report.problems)


async def test_a_store_that_ignores_the_retention_asked_fails() -> None:
    report = await check_write_once(FlawedStore("retention ignored"), lock_s=60)  # type: ignore[arg-type]
    assert report.verdict is Verdict.FAILED
    assert report.problems == (
        "a canary uploaded under COMPLIANCE retention: the locked version lost its retention",
    )


async def test_a_store_that_does_not_answer_is_not_checked(servers: Servers) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    # One retry of each refused connection, not five (about 6 s of backoff).
    dead = ObjectStore(StorageConfig(nowhere, "k", "s", servers.storage.bucket, retries=1))
    report = await check_write_once(dead, lock_s=30)
    assert report.verdict is Verdict.NOT_CHECKED
    assert not refuses_to_start(report, production=True)
    assert not ready(report, production=True)


# --- canaries do not pile up -------------------------------------------------------------------


async def test_canaries_are_deleted_once_their_lock_ends(servers: Servers) -> None:
    store = _store(servers)
    canary = await write_canary(store, lock_s=2)
    assert await store.try_put(canary.key, b"a second version") == Answer(True)
    assert await store.try_delete(canary.key) == Answer(True)  # and a delete marker
    await sweep_canaries(store)
    # Still locked: nothing of it goes (the unlocked versions wait for the locked one).
    assert len(await store.list_versions(canary.key, delete_markers=True)) == 3
    await asyncio.sleep(max(0.0, (canary.retain_until - datetime.now(UTC)).total_seconds()) + 1.5)
    assert await sweep_canaries(store) >= 3
    assert await store.list_versions(canary.key, delete_markers=True) == []


async def test_a_multipart_canary_left_by_a_check_cut_short_is_aborted(servers: Servers) -> None:
    store = _store(servers)
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y%m%dT%H%M%SZ")
    key = f"{CANARY_PREFIX}{past}-{uuid.uuid4().hex}"
    upload = await store.start_multipart(key, retain_until=datetime.now(UTC) + timedelta(minutes=1))
    await sweep_canaries(store)
    assert upload not in {u for _, u, _ in await store.list_multipart_uploads(key)}


# --- the vault: production refuses to start, development warns ------------------------------


@pytest.fixture
async def running_checks() -> AsyncIterator[None]:
    yield
    worm.FAILED.set(0)


async def test_production_refuses_to_start_on_a_bucket_without_object_lock(
    servers: Servers, unlocked_bucket: str, running_checks: None
) -> None:
    app = create_app(settings_for("vault", servers, s3_bucket=unlocked_bucket, **PRODUCTION))  # type: ignore[arg-type]
    with pytest.raises(StoreNotWriteOnce, match="no object lock configuration"):
        async with serve_in_process(app):
            pass


async def test_production_starts_on_the_embedded_store_and_says_so(servers: Servers) -> None:
    app = create_app(settings_for("vault", servers, **PRODUCTION))  # type: ignore[arg-type]
    async with serve_in_process(app) as client:
        ready_now = await client.get("/readyz")
        assert ready_now.status_code == 200, ready_now.text
        assert ready_now.json()["checks"]["store_write_once"] == "ok"
        metrics = (await client.get("/metrics")).text
        assert "temoin_store_write_once_failed 0.0" in metrics
        assert 'temoin_store_write_once_checks_total{verdict="passed"}' in metrics


async def test_development_warns_and_serves(
    servers: Servers, unlocked_bucket: str, running_checks: None, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings_for("vault", servers, s3_bucket=unlocked_bucket))  # type: ignore[arg-type]
    async with serve_in_process(app) as client:
        deadline = time.monotonic() + 30
        while app.state.store_check.report is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        response = await client.get("/readyz")
        assert response.status_code == 200  # development carries on
        assert response.json()["checks"]["store_write_once"].startswith("failed: ")
        assert "temoin_store_write_once_failed 1.0" in (await client.get("/metrics")).text
    warned = [r for r in caplog.records if r.name == "temoin.vault.store"]
    assert any("NOT WRITE-ONCE" in r.getMessage() for r in warned)


def test_temoin_serve_vault_in_production_exits_on_a_bucket_without_object_lock(
    servers: Servers, unlocked_bucket: str
) -> None:
    env = {
        **os.environ,
        **servers.env(),
        "TEMOIN_ENV": "production",
        "S3_BUCKET": unlocked_bucket,
        "AUTH_ISSUER": PRODUCTION["auth_issuer"],
        "AUTH_JWKS_URL": PRODUCTION["auth_jwks_url"],
        "SERVICE_TOKEN": PRODUCTION["service_token"],
        "VAULT_AUDIT_SIGNING_KEY": PRODUCTION["audit_signing_key"],
        "VAULT_KEK": PRODUCTION["kek"],
        "VAULT_MEDIA_KEY": PRODUCTION["media_key"],
        "VAULT_AUDIT_ENTRY_KEY": PRODUCTION["audit_entry_key"],
        "VAULT_AUDIT_WRITER_KEYS": PRODUCTION["audit_writer_keys"],
        "VAULT_AUDIT_ORIGIN": PRODUCTION["audit_origin"],
        "VAULT_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "temoin.cli", "serve", "vault"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "not write-once, refusing to start" in done.stderr
    assert "no object lock configuration" in done.stderr
    # It never answered: nothing listened on its port.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{env['VAULT_PORT']}/healthz", timeout=1)
