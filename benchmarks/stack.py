"""The whole stack on its embedded default, on free ports under a temporary directory, for a
benchmark run; removed afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from services.config import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY
from shared.storage import ObjectStore, StorageConfig
from temoin.embedded import S3Ports, free_port
from temoin.stack import BUCKET, RunningService, StackConfig, running_stack


@dataclass
class BenchStack:
    root: Path
    services: dict[str, RunningService]
    store: ObjectStore  # the S3 store itself, for the peer measurements

    def url(self, name: str) -> str:
        return self.services[name].url


@contextmanager
def bench_stack(console: Console, prefix: str) -> Iterator[BenchStack]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    ports = {name: free_port() for name in ("ingest", "vault", "reporting")}
    weed = S3Ports.free()
    config = StackConfig(var_dir=root / "var", s3_ports=weed, service_ports=ports)
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
