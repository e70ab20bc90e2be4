"""`python -m benchmarks.store_cluster`: the embedded SeaweedFS cluster (EmbeddedS3Cluster:
one master, three volume servers keeping every volume on two, a filer, the S3 gateway) losing
one volume server, seen from an S3 client, in the two ways a server goes:

- killed (SIGKILL): its sockets close with it, so the master and the gateway learn at once;
- frozen (SIGSTOP): as a machine whose power or network went, its connections left open
  and silent: nobody learns anything until a timeout.

For each: objects written before the loss (3 MiB each), then the volume server that holds the
most bytes lost; every object read back (time of each read, SHA-256 checked), new objects
written (time of each write), and how long the master took to drop the server. The test suite
covers the kill under the real services (tests/test_store_cluster.py); the freeze takes
minutes, so it is measured here. Figures in docs/storage.md.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.config import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY
from shared.storage import ObjectStore, StorageConfig
from temoin.embedded import ClusterPorts, EmbeddedS3Cluster

MIB = 1 << 20
BUCKET = "temoin-bench-cluster"
HOW = {"killed": signal.SIGKILL, "frozen": signal.SIGSTOP}


def _put(store: ObjectStore, key: str, data: bytes) -> None:
    store.client.put_object(store.bucket, key, io.BytesIO(data), len(data))


def _get(store: ObjectStore, key: str) -> bytes:
    response = store.client.get_object(store.bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _timed(action: Callable[[], object]) -> tuple[float, str]:
    """How long the action took, and what it gave (or how it failed: that is the figure)."""
    started = time.monotonic()
    try:
        outcome = action()
    except Exception as exc:  # noqa: BLE001
        return time.monotonic() - started, f"failed: {type(exc).__name__}"
    return time.monotonic() - started, str(outcome)


def lose_one(how: str, objects: int, writes: int, root: Path, console: Console) -> list[str]:
    cluster = EmbeddedS3Cluster(
        data_dir=root / how,
        ports=ClusterPorts.free(volumes=3),
        access_key=DEV_S3_ACCESS_KEY,
        secret_key=DEV_S3_SECRET_KEY,
    )
    rows: list[str] = []
    try:
        cluster.start()
        store = ObjectStore(
            StorageConfig(cluster.endpoint, DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, BUCKET)
        )
        store.ensure_bucket()
        digests = {}
        for n in range(objects):
            data = os.urandom(3 * MIB)
            _put(store, f"before/{n}", data)
            digests[f"before/{n}"] = hashlib.sha256(data).hexdigest()
        victim = max(
            cluster.volume_names,
            key=lambda name: sum(f.stat().st_size for f in (root / how / name).glob("*.dat")),
        )
        address = cluster.volume_address(victim)
        dropped: list[float] = []
        lost_at = time.monotonic()
        cluster.signal(victim, HOW[how])

        def watch() -> None:  # until the master no longer lists the server (at most 3 min)
            while time.monotonic() - lost_at < 180:
                if address not in cluster.placement_by_server():
                    dropped.append(time.monotonic() - lost_at)
                    return
                time.sleep(0.5)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()

        def read(key: str) -> bool:
            return hashlib.sha256(_get(store, key)).hexdigest() == digests[key]

        def write(key: str) -> str:
            _put(store, key, os.urandom(3 * MIB))
            return "ok"

        reads = [_timed(functools.partial(read, key)) for key in digests]
        puts = [_timed(functools.partial(write, f"after/{n}")) for n in range(writes)]
        watcher.join()
        slowest_read = max(reads)
        slowest_put = max(puts)
        rows = [
            how,
            f"{sum(1 for _, ok in reads if ok == 'True')}/{len(reads)}",
            f"{slowest_read[0]:.2f} s",
            f"{sum(1 for _, ok in puts if ok == 'ok')}/{len(puts)}",
            f"{slowest_put[0]:.2f} s",
            f"{dropped[0]:.1f} s" if dropped else "not within 180 s",
        ]
        console.print(
            f"{how} ({victim}): reads, s: {' '.join(f'{t:.2f}' for t, _ in reads)}; "
            f"writes, s: {' '.join(f'{t:.2f}' for t, _ in puts)}"
        )
    finally:
        cluster.stop(1.0)
    return rows


def main(objects: int, writes: int) -> None:
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="temoin-bench-cluster-"))
    table = Table(title="one volume server of three lost (replication 001), 3 MiB objects")
    for column in (
        "lost",
        "reads ok",
        "slowest read",
        "writes ok",
        "slowest write",
        "master drops it after",
    ):
        table.add_column(column)
    try:
        for how in HOW:
            table.add_row(*lose_one(how, objects, writes, root, console))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=8, help="objects written before")
    parser.add_argument("--writes", type=int, default=4, help="objects written after")
    arguments = parser.parse_args()
    main(arguments.objects, arguments.writes)
