"""Files people hand to the `temoin` command: read them or say, in one line, why not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class FileProblem(ValueError):
    """A file that cannot be used: the message names the file, the cause and what was expected."""


def read_json(path: Path, expected: str) -> Any:
    """The JSON document in ``path``; ``expected`` says what it should hold, for the message."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise FileProblem(f"{path}: no such file (expected {expected})") from exc
    except IsADirectoryError as exc:
        raise FileProblem(f"{path} is a directory (expected {expected})") from exc
    except OSError as exc:
        raise FileProblem(f"{path} cannot be read: {exc.strerror}") from exc
    if not data.strip():
        raise FileProblem(f"{path} is empty (expected {expected})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{path} is not a text file (expected {expected}, in JSON)") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileProblem(
            f"{path} is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"expected {expected}"
        ) from exc
    except RecursionError as exc:
        raise FileProblem(f"{path} nests too deep to be {expected}") from exc
