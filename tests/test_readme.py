"""The README's walkthrough, run as written against a `make run` of its own.

The blocks marked ``<!-- walkthrough -->`` are read from README.md (never copied here) and
run in order in one bash session, from a directory laid out as the repository is for a reader
(``.venv`` and the stack's ``var/``), with only what a reader has after `make run`: the
services' URLs (the README reads them from variables with the default ports as fallback) and
no ``DATABASE_URL``. So the README cannot drift from the code, the CLI finds the running stack
by itself, and everything it writes lands under ``var/``."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import temoin
from tests.fixtures.stack import Stack

pytestmark = pytest.mark.slow

REPOSITORY = Path(temoin.__file__).resolve().parent.parent
README = REPOSITORY / "README.md"
WALKTHROUGH_WITHIN_S = 150
MARKED_BLOCK = re.compile(r"^<!-- walkthrough -->\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# What the reader's shell must not carry in: the test session's own settings.
SESSION_ONLY = re.compile(r"^(DATABASE_|S3_|AUTH_|TEMOIN_|VAULT_|INGEST_|REPORTING_|SERVICE_)")


# Run after the walkthrough, in its session: a refused call through the README's helpers must
# fail the command that uses its answer, or a broken step would pass unseen.
HELPERS_FAIL = """
if ANSWER=$(get not-a-token "$VAULT/v1/organisations/$ORG" 2>/dev/null | jq -r .id); then
  echo "the README's helpers hid a refusal: $ANSWER" >&2
  exit 99
fi
"""


def walkthrough(readme: str) -> list[tuple[int, str]]:
    """The marked blocks, each with its line in README.md."""
    return [
        (readme.count("\n", 0, match.start()) + 1, match.group(1))
        for match in MARKED_BLOCK.finditer(readme)
    ]


def script_of(blocks: list[tuple[int, str]]) -> str:
    """One script; a banner before each block says which one a failure belongs to."""
    return "".join(
        f"echo {shlex.quote(f'>>> README.md line {line}: {block.splitlines()[0]}')}\n{block}"
        for line, block in blocks
    )


def test_blocks_are_numbered_in_order() -> None:
    """A reader follows the numbers: they must be the order the test runs them in."""
    blocks = walkthrough(README.read_text())
    assert len(blocks) >= 9, "the walkthrough lost blocks"
    numbers = [re.match(r"# (\d+)\. ", block) for _, block in blocks]
    assert all(numbers), [block.splitlines()[0] for _, block in blocks]
    assert [int(n.group(1)) for n in numbers if n] == list(range(1, len(blocks) + 1))


def test_readme_walkthrough_runs(tmp_path: Path) -> None:
    for tool in ("bash", "curl", "jq", "python3"):
        if shutil.which(tool) is None:
            pytest.skip(f"the walkthrough needs {tool}")
    blocks = walkthrough(README.read_text())
    reader = tmp_path / "repository"  # what a reader's clone looks like after `make run`
    reader.mkdir()
    (reader / ".venv").symlink_to(Path(sys.executable).parent.parent)
    if not (reader / ".venv" / "bin" / "temoin").exists():
        pytest.skip("the test does not run from a virtualenv with the `temoin` command")
    stack = Stack(reader / "var", log=tmp_path / "run.log")
    env = {name: value for name, value in os.environ.items() if not SESSION_ONLY.match(name)}
    env |= {
        "VAULT": f"http://127.0.0.1:{stack.ports['vault']}",
        "INGEST": f"http://127.0.0.1:{stack.ports['ingest']}",
        "REPORTING": f"http://127.0.0.1:{stack.ports['reporting']}",
        # The code under test, whichever checkout the venv was installed from.
        "PYTHONPATH": str(REPOSITORY),
        "COLUMNS": "200",
    }
    try:
        print(f"stack ready in {stack.start():.1f} s")
        assert (reader / "var" / "stack.json").exists()
        started = time.monotonic()
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script_of(blocks) + HELPERS_FAIL],
            cwd=reader,
            env=env,
            capture_output=True,
            text=True,
            timeout=WALKTHROUGH_WITHIN_S,
        )
        print(f"walkthrough ({len(blocks)} blocks) in {time.monotonic() - started:.1f} s")
        transcript = f"{run.stdout}\n--- stderr ---\n{run.stderr}"
        print(transcript)  # shown with -s, or on failure
        assert run.returncode == 0, transcript[-6000:]
        assert "OK: package valid and authentic" in run.stdout, transcript[-6000:]
        assert "OK: the log is intact" in run.stdout, transcript[-6000:]
        assert "206: 1024 bytes" in run.stdout, transcript[-6000:]
        # Nothing went wrong quietly: the scrub checked every protection, for instance.
        assert run.stderr == "", transcript[-6000:]

        # Everything the commands wrote is under var/, where the README says.
        assert sorted(p.name for p in reader.iterdir()) == [".venv", "var"]
        var = reader / "var"
        assert (var / "dock" / "station.json").stat().st_mode & 0o077 == 0
        assert len(list((var / "dock" / "clips").glob("*.mp4.receipt.json"))) == 3
        assert len(list((var / "extractions").glob("*.zip"))) == 1
        (pdf,) = (var / "reports").glob("rapport-*.pdf")
        assert pdf.read_bytes().startswith(b"%PDF")
        assert (var / "audit" / "heads.json").exists()
    finally:
        if stack.process is not None and stack.process.poll() is None:
            stack.interrupt()
        stack.kill_everything()

    # Once the stack has stopped, a command that needs it says what to do.
    verify = subprocess.run(
        [str(reader / ".venv" / "bin" / "temoin"), "audit", "verify"],
        cwd=reader,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 2, verify.stdout + verify.stderr
    assert "start `make run`" in verify.stderr and "DATABASE_URL" in verify.stderr
    assert not (reader / "var" / "stack.json").exists()
