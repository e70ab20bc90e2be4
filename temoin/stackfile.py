"""What `temoin run` started, kept in ``VAR/stack.json`` while it runs.

The embedded PostgreSQL listens on a socket under ``var/postgres`` and the services get their
settings from `temoin run`, not from the operator's shell; the CLI's other commands
(`temoin audit verify`, `erase`, `scrub`, and those that call a service) read this file so
that they reach the same stack without anyone copying a ``DATABASE_URL``. What the
environment sets still wins. The file exists only while the stack runs, mode 600: it holds the
development stack's settings, secrets included, as the environment of its processes does.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

VAR_DIR_ENV = "TEMOIN_VAR_DIR"
DEFAULT_VAR_DIR = Path("var")
FILE_NAME = "stack.json"
# The services' ports when nothing says otherwise (services/*/settings.py, `temoin run`).
DEFAULT_URLS = {
    "ingest": "http://127.0.0.1:8710",
    "vault": "http://127.0.0.1:8720",
    "reporting": "http://127.0.0.1:8730",
    "issuer": "http://127.0.0.1:8700",  # the development OpenID provider
    "dashboard": "http://127.0.0.1:8740",
}


def var_dir() -> Path:
    """Where the development stack keeps its data and the CLI its files: ``var/`` under the
    current directory (the repository, for `make run`), or ``$TEMOIN_VAR_DIR``."""
    return Path(os.environ.get(VAR_DIR_ENV) or DEFAULT_VAR_DIR)


class StackFileError(Exception):
    """No running stack, and nothing in the environment to replace it."""


@dataclass(frozen=True)
class StackFile:
    # ingest, vault, reporting, dashboard, issuer (the development OpenID provider)
    urls: dict[str, str]
    # The vault's settings as `temoin run` gave them (DATABASE_URL, S3_*, VAULT_*...): the CLI
    # commands that act as the vault need exactly these.
    vault_environment: dict[str, str]

    def write(self, var: Path) -> Path:
        path = var / FILE_NAME
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self), handle, indent=2)
        os.replace(temporary, path)  # a reader sees the whole file or none
        return path

    @classmethod
    def load(cls, var: Path) -> StackFile | None:
        try:
            data = json.loads((var / FILE_NAME).read_text())
            return cls(urls=dict(data["urls"]), vault_environment=dict(data["vault_environment"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StackFileError(f"{var / FILE_NAME} is unreadable: {exc}") from exc

    @staticmethod
    def remove(var: Path) -> None:
        (var / FILE_NAME).unlink(missing_ok=True)


def service_url(name: str, given: str | None = None) -> str:
    """A service's URL: the one given (option or environment), else the one the running stack
    uses, else its default port."""
    if given:
        return given
    stack = StackFile.load(var_dir())
    return stack.urls[name] if stack is not None and name in stack.urls else DEFAULT_URLS[name]


def use_running_stack() -> None:
    """Give the vault's settings the running stack's values for what the environment leaves
    unset. An explicit ``DATABASE_URL`` means another database: then the stack file is not
    read at all, so that nothing of the development stack mixes with it."""
    if os.environ.get("DATABASE_URL") or os.environ.get("TEMOIN_ENV") == "production":
        return
    var = var_dir()
    stack = StackFile.load(var)
    if stack is None:
        raise StackFileError(
            f"no DATABASE_URL, and no running stack ({var / FILE_NAME} is written by "
            "`make run` while it runs): start `make run` in another terminal, from this "
            "directory, or set DATABASE_URL (and the S3_* and VAULT_* settings of the vault)"
        )
    for name, value in stack.vault_environment.items():
        if not os.environ.get(name):  # the settings ignore an empty variable: so does this
            os.environ[name] = value


# Where the CLI keeps what it writes, unless told otherwise: under var/ beside the stack's own
# data (git ignores it), never in the directory it is run from.
def station_key_path() -> Path:
    """The docking station's key file (`temoin station register`, `dock upload`)."""
    return var_dir() / "dock" / "station.json"


def clips_dir() -> Path:
    """Clips from `temoin dock simulate`; the dock keeps each one's receipt beside it."""
    return var_dir() / "dock" / "clips"


def heads_path() -> Path:
    """The signed tree heads `temoin audit heads` exports."""
    return var_dir() / "audit" / "heads.json"
