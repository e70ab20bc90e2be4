"""What every benchmark needs: its own real servers in a temporary directory."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from temoin import migrate
from temoin.embedded import EmbeddedPostgres


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
