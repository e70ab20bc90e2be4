"""How the CLI finds the stack `make run` started (var/stack.json): the environment always
wins, an explicit DATABASE_URL keeps the development stack out entirely, and without either
the commands stop with a sentence that says what to do. The whole path, against a real
`temoin run`, is in tests/test_readme.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from temoin.stackfile import StackFile, StackFileError, service_url, use_running_stack

STACK = StackFile(
    urls={"vault": "http://127.0.0.1:18720", "ingest": "http://127.0.0.1:18710"},
    vault_environment={
        "DATABASE_URL": "postgresql://postgres@/postgres?host=/somewhere/var/postgres",
        "S3_ENDPOINT": "http://127.0.0.1:18333",
        "VAULT_KEK": "the stack's",
    },
)


@pytest.fixture
def var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # use_running_stack writes into os.environ: a copy, so that nothing leaks to other tests.
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for name in ("DATABASE_URL", "S3_ENDPOINT", "VAULT_KEK", "TEMOIN_ENV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMOIN_VAR_DIR", str(tmp_path))
    return tmp_path


def test_written_for_its_owner_only_and_read_back(var: Path) -> None:
    path = STACK.write(var)
    assert path.stat().st_mode & 0o777 == 0o600
    assert StackFile.load(var) == STACK
    StackFile.remove(var)
    assert StackFile.load(var) is None


def test_the_running_stack_fills_what_the_environment_leaves_unset(
    var: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    STACK.write(var)
    monkeypatch.setenv("VAULT_KEK", "the operator's")
    monkeypatch.setenv("S3_ENDPOINT", "")  # empty is unset, as for the settings
    use_running_stack()
    assert os.environ["DATABASE_URL"] == STACK.vault_environment["DATABASE_URL"]
    assert os.environ["S3_ENDPOINT"] == "http://127.0.0.1:18333"
    assert os.environ["VAULT_KEK"] == "the operator's"


@pytest.mark.parametrize(
    "setting", [("DATABASE_URL", "postgresql://elsewhere/db"), ("TEMOIN_ENV", "production")]
)
def test_another_database_or_production_keeps_the_stack_out(
    var: Path, monkeypatch: pytest.MonkeyPatch, setting: tuple[str, str]
) -> None:
    STACK.write(var)
    monkeypatch.setenv(*setting)
    use_running_stack()
    assert "S3_ENDPOINT" not in os.environ and "VAULT_KEK" not in os.environ


def test_without_a_stack_nor_a_database_url_it_says_what_to_do(var: Path) -> None:
    with pytest.raises(StackFileError, match=r"start `make run`.*or set DATABASE_URL"):
        use_running_stack()


def test_unreadable_stack_file_is_named(var: Path) -> None:
    (var / "stack.json").write_text("{")
    with pytest.raises(StackFileError, match="stack.json is unreadable"):
        use_running_stack()


def test_service_urls_the_option_then_the_stack_then_the_default_port(var: Path) -> None:
    assert service_url("vault") == "http://127.0.0.1:8720"
    STACK.write(var)
    assert service_url("vault") == "http://127.0.0.1:18720"
    assert service_url("reporting") == "http://127.0.0.1:8730"  # not in this stack file
    assert service_url("vault", "https://vault.example") == "https://vault.example"
