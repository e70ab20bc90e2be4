"""The embedded SeaweedFS answers to outsiders only through its S3 gateway (temoin/embedded.py).

Before, an HTTP DELETE on the filer's port, with no credential at all, removed a
COMPLIANCE-locked object with its versions; the volume server overwrote and deleted its bytes
by file id, and the master deleted a whole bucket (/col/delete). Here each of those, and the
gRPC ports behind them, is tried with no credential against the test session's own SeaweedFS,
on a locked object: each is refused, and the object is whole afterwards."""

from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from shared.storage import ObjectStore
from temoin.embedded import CERT_NAME, write_security
from tests.fixtures.servers import Servers

MiB = 1 << 20


def _lock_an_object(store: ObjectStore) -> tuple[str, str, bytes]:
    """A 3 MiB object (big enough to live on the volume server, not inline in the filer)
    under COMPLIANCE retention, as the vault stores a clip."""
    import anyio

    key = f"tests/around-s3/{uuid.uuid4()}.sealed"
    data = os.urandom(3 * MiB)

    async def upload() -> str:
        until = datetime.now(UTC) + timedelta(minutes=30)
        upload_id = await store.start_multipart(key, retain_until=until)
        etag = await store.upload_part(key, upload_id, 1, bytearray(data))
        version = await store.complete_multipart(key, upload_id, [etag])
        assert version is not None
        return version

    return key, anyio.run(upload), data


def _whole(store: ObjectStore, key: str, version: str, data: bytes) -> bool:
    got = store.client.get_object(store.bucket, key, version_id=version)
    try:
        body = got.read()
    finally:
        got.close()
        got.release_conn()
    retention = store.client.get_object_retention(store.bucket, key, version_id=version)
    return body == data and retention is not None and retention.mode == "COMPLIANCE"


def _tls_probe(address: tuple[str, int] | str, cert: tuple[Path, Path] | None) -> str:
    """Open TLS to a gRPC endpoint (a TCP port or a Unix socket), with or without a client
    certificate, and send HTTP/2's preface: "accepted" if the server answers with frames."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    if cert is not None:
        context.load_cert_chain(*cert)
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family) as raw:
        raw.settimeout(5)
        try:
            raw.connect(address)
        except OSError as exc:
            return f"refused ({exc})"
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")
                )
                return "accepted" if tls.recv(9) else "refused (closed)"
        except (ssl.SSLError, OSError) as exc:
            return f"refused ({type(exc).__name__}: {exc})"


def test_a_locked_object_cannot_be_reached_around_s3(servers: Servers, tmp_path: Path) -> None:
    store = ObjectStore(servers.storage)
    key, version, data = _lock_an_object(store)
    s3 = servers.s3
    bucket = store.bucket
    # The administrator (with the store's certificate) finds where the bytes are: the file id
    # an attacker would aim at on the volume server. The path is SeaweedFS's own layout.
    meta = s3.admin_shell(f"fs.meta.cat /buckets/{bucket}/{key}.versions/v_{version}\n")
    found = re.search(r'"fileId":\s*"([^"]+)"', meta)
    assert found, meta
    fid = found.group(1)

    filer = f"http://127.0.0.1:{s3.ports.filer}"
    volume = f"http://127.0.0.1:{s3.ports.volume}"
    master = f"http://127.0.0.1:{s3.ports.master}"
    versions = f"/buckets/{bucket}/{key}.versions"
    attempts: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        # The filer's HTTP API: read, overwrite and delete by path.
        "filer GET the object": lambda c: c.get(f"{filer}/buckets/{bucket}/{key}"),
        "filer GET the version": lambda c: c.get(f"{filer}{versions}/v_{version}"),
        "filer GET its metadata": lambda c: c.get(f"{filer}{versions}/v_{version}?metadata=true"),
        "filer PUT over the version": lambda c: c.put(
            f"{filer}{versions}/v_{version}", content=b"forged"
        ),
        "filer POST over the version": lambda c: c.post(
            f"{filer}{versions}/v_{version}", files={"file": ("x", b"forged")}
        ),
        "filer DELETE the version": lambda c: c.delete(f"{filer}{versions}/v_{version}"),
        "filer DELETE the versions, recursively": lambda c: c.delete(
            f"{filer}{versions}?recursive=true&ignoreRecursiveError=true"
        ),
        "filer DELETE the bucket, recursively": lambda c: c.delete(
            f"{filer}/buckets/{bucket}?recursive=true&ignoreRecursiveError=true"
        ),
        # The volume server's HTTP API: needles by file id.
        "volume GET the bytes": lambda c: c.get(f"{volume}/{fid}"),
        "volume POST over the bytes": lambda c: c.post(
            f"{volume}/{fid}", files={"file": ("x", b"forged")}
        ),
        "volume PUT over the bytes": lambda c: c.put(f"{volume}/{fid}", content=b"forged"),
        "volume DELETE the bytes": lambda c: c.delete(f"{volume}/{fid}"),
        # The master's HTTP API: file ids (with a write JWT), lookups, whole collections.
        "master assign a file id": lambda c: c.get(f"{master}/dir/assign"),
        "master look up the volume": lambda c: c.get(f"{master}/dir/lookup?volumeId={fid}"),
        "master read by file id": lambda c: c.get(f"{master}/{fid}", follow_redirects=True),
        "master submit a file": lambda c: c.post(
            f"{master}/submit", files={"file": ("x", b"forged")}
        ),
        "master vacuum": lambda c: c.get(f"{master}/vol/vacuum"),
        "master delete the bucket's collection": lambda c: c.get(
            f"{master}/col/delete?collection={bucket}"
        ),
        # The S3 gateway itself, unsigned.
        "S3 GET without credentials": lambda c: c.get(f"{s3.endpoint}/{bucket}/{key}"),
        "S3 DELETE without credentials": lambda c: c.delete(
            f"{s3.endpoint}/{bucket}/{key}?versionId={version}"
        ),
    }
    answers: dict[str, str] = {}
    with httpx.Client(timeout=10) as client:
        for name, attempt in attempts.items():
            response = attempt(client)
            answers[name] = f"{response.status_code} {response.text[:60]!r}"
    # The filer's HTTP over its Unix socket (SeaweedFS opens it under /tmp in any case).
    filer_socket = f"/tmp/seaweedfs-filer-{s3.ports.filer}.sock"
    if os.path.exists(filer_socket):
        transport = httpx.HTTPTransport(uds=filer_socket)
        with httpx.Client(transport=transport, timeout=10) as client:
            for method in ("GET", "DELETE"):
                response = client.request(method, f"http://filer{versions}/v_{version}")
                answers[f"filer socket {method} the version"] = str(response.status_code)
    print("\n".join(f"{name}: {answer}" for name, answer in answers.items()))
    let_through = {n: a for n, a in answers.items() if a.startswith(("2", "3"))}
    assert not let_through
    assert all(a.split()[0] in ("401", "403", "404", "405") for a in answers.values()), answers
    assert _whole(store, key, version, data)


def test_every_grpc_port_wants_the_stores_own_certificate(servers: Servers, tmp_path: Path) -> None:
    s3 = servers.s3
    own = (s3.security_dir / "node.pem", s3.security_dir / "node.key")
    # A certificate an attacker can make: same name, another CA.
    forged_dir = write_security(tmp_path / "forged")
    forged = (forged_dir / "node.pem", forged_dir / "node.key")
    endpoints: list[tuple[str, tuple[str, int] | str]] = []
    for name, port in s3.ports.grpc.items():
        endpoints.append((f"{name} gRPC :{port}", ("127.0.0.1", port)))
        unix = f"/tmp/seaweedfs-{name}-grpc-{port}.sock"
        if os.path.exists(unix):
            endpoints.append((f"{name} gRPC {unix}", unix))
    assert len(endpoints) >= 4
    for label, address in endpoints:
        without = _tls_probe(address, None)
        with_forged = _tls_probe(address, forged)
        print(f"{label}: no certificate {without}; forged {with_forged}")
        assert without.startswith("refused"), label
        assert with_forged.startswith("refused"), label
        # The probe can tell: with the store's own certificate the same endpoint answers.
        assert _tls_probe(address, own) == "accepted", label
    assert CERT_NAME in (s3.security_dir / "security.toml").read_text()
    assert (s3.security_dir / "node.key").stat().st_mode & 0o077 == 0


def test_the_weed_shell_without_the_certificate_gets_nowhere(
    servers: Servers, tmp_path: Path
) -> None:
    """SeaweedFS's own admin tool, pointed at the store with no certificate: it cannot
    connect, so it neither lists nor deletes (it would otherwise delete by path, bypassing
    every lock)."""
    store = ObjectStore(servers.storage)
    key, version, data = _lock_an_object(store)
    s3 = servers.s3
    p = s3.ports
    commands = (
        f"fs.rm -r /buckets/{store.bucket}/{key}.versions\n"
        f"collection.delete -collection {store.bucket} -apply\n"
    )
    weed = s3.command()[0]
    try:
        done = subprocess.run(
            [
                weed,
                f"-config_dir={tmp_path}",  # no security.toml: no certificate
                "shell",
                f"-master=127.0.0.1:{p.master}.{p.grpc['master']}",
                f"-filer=127.0.0.1:{p.filer}.{p.grpc['filer']}",
            ],
            input=commands,
            capture_output=True,
            text=True,
            timeout=10,
            cwd=tmp_path,
            env={**os.environ, "HOME": str(tmp_path)},
        )
        outcome = f"exited {done.returncode}: {(done.stdout + done.stderr)[-300:]}"
    except subprocess.TimeoutExpired:
        outcome = "still trying to connect after 10 s"
    print(outcome)
    assert _whole(store, key, version, data)
    assert store.client.bucket_exists(store.bucket)


@pytest.mark.parametrize("flag", ["-disableHttp", "-master.telemetry=false"])
def test_the_command_keeps_its_hardening(servers: Servers, flag: str) -> None:
    command = servers.s3.command()
    assert flag in command
    assert command[1] == f"-config_dir={servers.s3.security_dir}"
