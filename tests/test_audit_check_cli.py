"""`temoin audit check` handed a file that is not a proof (or heads that are not heads): one
line saying why, exit 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from temoin.cli import app

HASH = "ab" * 32
KEY = "A" * 43 + "="
ENTRY = dict.fromkeys(
    ("entry_id", "occurred_at", "service", "action", "outcome", "organisation_id",
     "actor_subject", "actor_role", "motif", "destinataires", "recording_ids",
     "procedure_ref", "request_id", "details"),
    None,
)  # fmt: skip
HEAD = {"tree_size": 1, "root_hash": HASH, "signature": "c2ln", "signed_at": "2026-01-01"}
PROOF = {"entry": ENTRY, "leaf_index": 0, "leaf_hash": HASH, "tree_size": 1,
         "audit_path": [], "head": HEAD}  # fmt: skip


def _check(tmp_path: Path, proof: bytes | None, heads: bytes | None, key: str = KEY) -> str:
    """Runs the command on those bytes (None: no file); asserts the refusal's form."""
    proof_file, heads_file = tmp_path / "proof.json", tmp_path / "heads.json"
    for path, content in ((proof_file, proof), (heads_file, heads)):
        if content is not None:
            path.write_bytes(content)
    result = CliRunner().invoke(
        app,
        ["audit", "check", str(proof_file), "--heads", str(heads_file), "--public-key", key],
    )
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


HEADS = _json([HEAD])


@pytest.mark.parametrize(
    ("proof", "expected"),
    [
        (None, "proof.json: no such file"),
        (b"", "proof.json is empty"),
        (b"  \n", "proof.json is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "proof.json is not a text file"),
        (b"entry_id: 42", "proof.json is not JSON (line 1, column 1"),
        (b'{"entry": ', "proof.json is not JSON"),
        (b"[" * 100_000, "proof.json"),
        (_json(42), "not an inclusion proof: not a JSON object"),
        (_json("a proof"), "not an inclusion proof: not a JSON object"),
        (_json({}), "not an inclusion proof: no entry"),
        (_json({**PROOF, "entry": {"entry_id": "x"}}), "its entry lacks occurred_at"),
        (_json({**PROOF, "leaf_index": "0"}), "no leaf_index (a whole number)"),
        (_json({**PROOF, "tree_size": True}), "no tree_size (a whole number)"),
        (_json({**PROOF, "leaf_hash": "zz"}), "no leaf_hash (64 hex digits)"),
        (_json({**PROOF, "audit_path": ["00"]}), "no audit_path"),
        (_json({**PROOF, "head": []}), "a tree head is not a JSON object"),
        (_json({**PROOF, "head": {**HEAD, "root_hash": None}}), "a tree head has no root_hash"),
        (_json([]), "an empty list holds no proof"),
        (_json([PROOF, {"entry": 1}]), "item 2 is not an inclusion proof: no entry"),
        (HEADS, "item 1 is not an inclusion proof: no entry"),  # the heads given as the proof
    ],
)
def test_a_file_that_is_not_a_proof_is_refused_in_one_line(
    tmp_path: Path, proof: bytes | None, expected: str
) -> None:
    line = _check(tmp_path, proof, HEADS)
    assert expected in line
    assert "inclusion proof" in line  # what the file should have been


@pytest.mark.parametrize(
    ("heads", "expected"),
    [
        (None, "heads.json: no such file"),
        (b"", "heads.json is empty"),
        (b"\xff\xfe\x00", "heads.json is not a text file"),
        (b"[1,", "heads.json is not JSON"),
        (_json(HEAD), "heads.json: not a list of tree heads"),
        (_json([HEAD, 3]), "heads.json: item 2: a tree head is not a JSON object"),
        (_json([PROOF]), "heads.json: item 1: a tree head has no root_hash"),
    ],
)
def test_heads_that_are_not_heads_are_refused_in_one_line(
    tmp_path: Path, heads: bytes | None, expected: str
) -> None:
    line = _check(tmp_path, _json(PROOF), heads)
    assert expected in line
    assert "temoin audit heads" in line


@pytest.mark.parametrize("key", ["", "not base64!", "c2hvcnQ="])
def test_a_malformed_public_key_is_refused_in_one_line(tmp_path: Path, key: str) -> None:
    assert "--public-key" in _check(tmp_path, _json(PROOF), HEADS, key)


def test_a_directory_is_not_a_proof(tmp_path: Path) -> None:
    (tmp_path / "proof.json").mkdir()
    assert "proof.json is a directory" in _check(tmp_path, None, HEADS)
