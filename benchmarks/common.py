"""What every benchmark needs: its own real servers in a temporary directory (PostgreSQL
alone, or the whole stack on its embedded default)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from services.config import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY
from shared.storage import ObjectStore, StorageConfig
from temoin import migrate
from temoin.embedded import EmbeddedPostgres, S3Ports, free_port
from temoin.stack import BUCKET, RunningService, StackConfig, running_stack


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A migrated PostgreSQL in a temporary directory; its URL."""
    root = Path(tempfile.mkdtemp(prefix="temoin-bench-"))
    server = EmbeddedPostgres(root / "postgres")
    try:
        url = server.start()
        migrate.upgrade(url)
        yield url
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s"


@dataclass
class BenchStack:
    root: Path
    services: dict[str, RunningService]
    store: ObjectStore  # the S3 store itself, for the peer measurements

    def url(self, name: str) -> str:
        return self.services[name].url


@contextlib.contextmanager
def bench_stack(console: Console, prefix: str, *, dashboard: bool = False) -> Iterator[BenchStack]:
    """``dashboard``: the dashboard too. Every port is a free one, the provider's included."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    names = ("ingest", "vault", "reporting", *(("dashboard",) if dashboard else ()))
    ports = {name: free_port() for name in names}
    weed = S3Ports.free()
    config = StackConfig(
        var_dir=root / "var", s3_ports=weed, service_ports=ports, issuer_port=free_port()
    )
    try:
        with running_stack(config, console) as services:
            store = ObjectStore(
                StorageConfig(
                    f"http://127.0.0.1:{weed.s3}", DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, BUCKET
                )
            )
            yield BenchStack(root, {s.name: s for s in services}, store)
    finally:
        shutil.rmtree(root, ignore_errors=True)
