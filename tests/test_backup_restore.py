"""The restore drill (issue 19, docs/backup.md): a PostgreSQL of its own with WAL archiving,
real vault and ingest processes, clips uploaded before and after a base backup; a point in time
T; more clips; the database lost (its server killed, its data directory deleted); `temoin
restore` to T into a fresh directory; the vault started on it. Every recording registered
before T opens and matches its SHA-256; those after T are absent and their sealed objects are
orphans; one whose retention ended after T (erased by the lost vault) is erased again by the
restore before anything could read it; `temoin audit verify --registry` passes. It prints the
recovery point (commits lost) and the recovery time it measured."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from services.vault.recordings.erasure import ErasureService
from services.vault.settings import VaultSettings
from shared.db import create_engine, create_sessionmaker, session_scope
from shared.sealing import SealError
from shared.storage import ObjectStore, StorageConfig
from temoin import migrate
from temoin.backup import (
    DAMAGED,
    BackupError,
    BaseBackup,
    Repository,
    Server,
    load_key,
    main,
    psql,
    write_sealed,
)
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import LiveService, run_temoin, vault_and_ingest
from tests.fixtures.replication import kill_server
from tests.fixtures.servers import Servers

pytestmark = pytest.mark.scale

LOG_KEYS = VaultSettings().log_keys()  # the development keys the vault runs with here
ARCHIVE_TIMEOUT_S = 2  # the drill's bound on unarchived work (production: 60 s)


@dataclass
class Clip:
    id: str
    sha256: str


async def _upload(ingest: httpx.AsyncClient, kit: OrgKit, **changes: object) -> Clip:
    data, metadata = make_clip(kit, size=96 * 1024 + 7, **changes)
    response = await ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
    )
    assert response.status_code == 201, response.text
    return Clip(response.json()["recording_id"], hashlib.sha256(data).hexdigest())


def _services(env: dict[str, str], logs: Path) -> tuple[LiveService, LiveService]:
    return vault_and_ingest({**env, "VAULT_ERASURE_INTERVAL_S": "1"}, logs)


def _wait(condition: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {condition}"
        time.sleep(0.2)


async def test_restore_to_a_point_in_time(servers: Servers, tmp_path: Path) -> None:
    # Its own bucket: the restored vault sweeps orphans, and the session's other objects are
    # orphans to this database.
    storage = StorageConfig(
        servers.storage.endpoint,
        servers.storage.access_key,
        servers.storage.secret_key,
        f"temoin-drill-{uuid.uuid4().hex[:8]}",
    )
    ObjectStore(storage).ensure_bucket()
    primary = Server(tmp_path / "primary")
    primary.initdb()
    primary.start()
    restored = Server(tmp_path / "restored")
    env = {
        **servers.env(),
        "S3_BUCKET": storage.bucket,
        "DATABASE_URL": primary.url,
        "BACKUP_REPOSITORY": str(tmp_path / "repository"),
        "BACKUP_KEY_FILE": str(tmp_path / "backup.key"),
    }
    vault, ingest = _services(env, tmp_path)
    try:
        await asyncio.to_thread(migrate.upgrade, primary.url)
        init = run_temoin("backup", "init", "--archive-timeout", str(ARCHIVE_TIMEOUT_S), env=env)
        assert init.returncode == 0, init.stderr
        assert "restart PostgreSQL" in init.stdout
        primary.stop()
        primary.start()
        vault.start()
        ingest.start()
        async with (
            httpx.AsyncClient(base_url=vault.url, timeout=60) as vault_client,
            httpx.AsyncClient(base_url=ingest.url, timeout=60) as ingest_client,
        ):
            kit = await build_org(vault_client, ingest_client, servers, insee=fresh_insee())
            before_backup = [await _upload(ingest_client, kit) for _ in range(3)]
            backup = run_temoin("backup", env=env)
            assert backup.returncode == 0, backup.stderr
            after_backup = [await _upload(ingest_client, kit) for _ in range(3)]
            # Its retention (30 days after it ended) ends seconds after T: the lost vault
            # erases it, the database restored to T still holds its key.
            ended = datetime.now(UTC) - timedelta(days=30) + timedelta(seconds=6)
            expiring = await _upload(
                ingest_client, kit, started_at=ended - timedelta(minutes=2), ended_at=ended
            )
            time.sleep(0.3)
            target = datetime.now(UTC)
            time.sleep(0.3)
            after_target = [await _upload(ingest_client, kit) for _ in range(3)]
        status = f"SELECT status FROM vault.recordings WHERE id = '{expiring.id}'"
        _wait("the lost vault erases it", lambda: psql(primary.url, status) == "erased", 20)
        keys = dict(
            line.split("|")
            for line in psql(primary.url, "SELECT id, object_key FROM vault.recordings").split()
        )
        # Enough WAL archived that the archive holds commits after T (else no restore to T).
        last_upload = datetime.now(UTC)
        archived = "SELECT coalesce(last_archived_time > now() - interval '1 hour', false) AND "
        archived += f"last_archived_time > '{last_upload.isoformat()}' FROM pg_stat_archiver"
        _wait("WAL archived past the last upload", lambda: psql(primary.url, archived) == "t", 30)

        ingest.stop(signal.SIGKILL)
        vault.stop(signal.SIGKILL)
        kill_server(primary)
        lost_at = datetime.now(UTC)
        shutil.rmtree(primary.data_dir)

        repository = Repository(tmp_path / "repository", load_key(tmp_path / "backup.key"))
        last_commit = repository.latest_commit()
        assert last_commit is not None
        recovery_point = (lost_at - last_commit).total_seconds()

        started = time.monotonic()
        restore = run_temoin(
            "restore", "--data-dir", str(restored.data_dir), "--target-time",
            target.isoformat(), env=env,
        )  # fmt: skip
        restore_s = time.monotonic() - started
        assert restore.returncode == 0, restore.stdout + restore.stderr
        assert f"erased {expiring.id}" in restore.stdout
        restored.start()
        # Erased again before any service ran: its key is gone from the restored registry.
        row = f"SELECT status, wrapped_key IS NULL FROM vault.recordings WHERE id = '{expiring.id}'"
        assert psql(restored.url, row) == "erased|t"
        restored_env = {**env, "DATABASE_URL": restored.url}
        vault, _ = _services(restored_env, tmp_path)
        vault.start()
        recovery_time = time.monotonic() - started

        async with httpx.AsyncClient(base_url=vault.url, timeout=60) as client:
            for clip in before_backup + after_backup:
                consulted = await client.post(
                    f"{kit.path}/recordings/{clip.id}/consultations",
                    headers=kit.headers("habilite"),
                    json={"motif": "exercice de restauration"},
                )
                assert consulted.status_code == 201, consulted.text
                media = await client.get(consulted.json()["url"])
                assert media.status_code == 200
                assert hashlib.sha256(media.content).hexdigest() == clip.sha256
            refused = await client.post(
                f"{kit.path}/recordings/{expiring.id}/consultations",
                headers=kit.headers("habilite"),
                json={"motif": "exercice de restauration"},
            )
            assert refused.status_code == 410, refused.text
            for clip in after_target:
                missing = await client.get(
                    f"{kit.path}/recordings/{clip.id}", headers=kit.headers("habilite")
                )
                assert missing.status_code == 404, missing.text

        # The orphan sweep's view (what `temoin erase` deletes once their locks run out).
        engine = create_engine(restored.url, application_name="drill")
        try:
            async with session_scope(create_sessionmaker(engine)) as session:
                found = await ErasureService(session, ObjectStore(storage), LOG_KEYS).orphans()
        finally:
            await engine.dispose()
        assert {key for key, _ in found} == {keys[clip.id] for clip in after_target}
        verify = run_temoin("audit", "verify", "--registry", env=restored_env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "OK: the log is intact" in verify.stdout
        print(
            f"\nrestore drill: recovery point {recovery_point:.1f} s of commits lost "
            f"(archive_timeout {ARCHIVE_TIMEOUT_S} s; last archived commit "
            f"{last_commit.isoformat()}, database lost {lost_at.isoformat()}); recovery time "
            f"{restore_s:.1f} s for `temoin restore`, {recovery_time:.1f} s until the vault "
            f"on the restored database is ready ({restore.stdout.splitlines()[-1]})"
        )
    finally:
        vault.stop()
        ingest.stop()
        for server in (primary, restored):
            if server.running():
                server.stop()


def _base(repository: Repository, label: str, ended: datetime, start_wal: str) -> None:
    base = BaseBackup(label, ended - timedelta(minutes=1), ended, start_wal)
    directory = repository.base_dir / label
    write_sealed(directory / "base.tar", f"base/{label}/base.tar", repository.key, [b"tar"])
    write_sealed(directory / "backup.json", f"base/{label}/backup.json", repository.key,
                 [base.to_json()])  # fmt: skip


def test_backups_expire_with_the_retention(tmp_path: Path) -> None:
    """No base backup outlives the retention, nor any WAL file only it could use; the newest
    goes too when it is that old (the law's limit wins over having a backup)."""
    repository = Repository(tmp_path, os.urandom(32))
    now = datetime(2026, 6, 30, 12, tzinfo=UTC)
    _base(repository, "old", now - timedelta(days=30, seconds=1), "000000010000000000000003")
    _base(repository, "recent", now - timedelta(days=29), "000000010000000000000007")
    wal = tmp_path / "segment"
    wal.write_bytes(os.urandom(1000))
    names = [f"00000001000000000000000{n}" for n in (3, 6, 7, 8)]
    for name in [*names, "000000020000000000000006", "00000002.history"]:
        repository.archive_wal(wal, name)
    expired = repository.expire(now, timedelta(days=30))
    assert expired.bases == ["old"]
    assert sorted(expired.wal_files) == [*names[:2], "000000020000000000000006"]
    assert [b.label for b in repository.bases()] == ["recent"]
    assert repository.wal_names() == [*names[2:], "00000002.history"]
    later = repository.expire(now + timedelta(days=2), timedelta(days=30))
    assert (later.bases, repository.bases(), repository.wal_names()) == (
        ["recent"], [], ["00000002.history"]
    )  # fmt: skip


def test_a_sealed_file_opens_only_as_itself(tmp_path: Path) -> None:
    key = os.urandom(32)
    key_file = tmp_path / "backup.key"
    key_file.write_text(base64.b64encode(key).decode())
    data = os.urandom(3 << 20)  # several chunks, even compressed
    repository = Repository(tmp_path, key)
    source = tmp_path / "source"
    source.write_bytes(data)
    repository.archive_wal(source, "000000010000000000000001")
    repository.archive_wal(source, "000000010000000000000001")  # again: harmless
    source.write_bytes(data[:-1] + b"x")
    with pytest.raises(BackupError):  # other content under an archived name
        repository.archive_wal(source, "000000010000000000000001")
    sealed = tmp_path / "wal" / "000000010000000000000001"
    assert repository.fetch_wal("000000010000000000000001", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    shutil.copy(sealed, tmp_path / "wal" / "000000010000000000000002")
    with pytest.raises(SealError):  # renamed: sealed under its own name
        repository.fetch_wal("000000010000000000000002", tmp_path / "out")
    content = sealed.read_bytes()
    for damaged in (content[:-100], content[:200] + bytes([content[200] ^ 1]) + content[201:]):
        sealed.write_bytes(damaged)
        with pytest.raises(SealError):
            repository.fetch_wal("000000010000000000000001", tmp_path / "out")
        # As restore_command: recovery stops, rather than taking it for the archive's end.
        arguments = ["fetch-wal", "--repository", str(tmp_path), "--key-file", str(key_file)]
        assert main([*arguments, "000000010000000000000001", str(tmp_path / "out")]) == DAMAGED
        assert main([*arguments, "000000010000000000000009", str(tmp_path / "out")]) == 1
    source.write_bytes(data)
    repository.archive_wal(source, "000000010000000000000003")
    with pytest.raises(SealError):  # another key
        Repository(tmp_path, os.urandom(32)).fetch_wal("000000010000000000000003", tmp_path / "o")
