"""Docking-station identity: its Ed25519 key file, registration with the vault, and the token
exchange with ingest that every dock command starts with."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from nacl.signing import SigningKey

from shared.signatures import StationAssertion, b64decode, b64encode, public_key_of


class StationError(Exception):
    """A station command failed; the message says why."""


@dataclass(frozen=True)
class StationKeyFile:
    """What a docking station keeps: its id, its organisation and its private key (mode 600)."""

    station_id: uuid.UUID
    organisation_id: uuid.UUID
    signing_key: SigningKey

    def save(self, path: Path) -> None:
        data = {
            "station_id": str(self.station_id),
            "organisation_id": str(self.organisation_id),
            "private_key": b64encode(bytes(self.signing_key)),
            "public_key": public_key_of(self.signing_key),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)

    @classmethod
    def load(cls, path: Path) -> StationKeyFile:
        try:
            data = json.loads(path.read_text())
            return cls(
                station_id=uuid.UUID(data["station_id"]),
                organisation_id=uuid.UUID(data["organisation_id"]),
                signing_key=SigningKey(b64decode(data["private_key"])),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise StationError(f"cannot read station key file {path}: {exc}") from exc


def problem(response: httpx.Response) -> str:
    """A refusal as one line: status, title and detail of its problem+json."""
    try:
        body = response.json()
        return f"{response.status_code} {body.get('title')}: {body.get('detail')}"
    except ValueError:
        return f"{response.status_code} {response.text[:200]}"


def register(
    *, vault_url: str, token: str, organisation_id: uuid.UUID, name: str, key_path: Path
) -> StationKeyFile:
    """Create a key pair, register its public key with the vault, save the key file."""
    if key_path.exists():
        raise StationError(f"{key_path} exists: a station key is never overwritten")
    key = SigningKey.generate()
    response = httpx.post(
        f"{vault_url}/v1/organisations/{organisation_id}/stations",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": name, "public_key": public_key_of(key)},
        timeout=30,
    )
    if response.status_code != 201:
        raise StationError(f"registration refused: {problem(response)}")
    station = StationKeyFile(
        station_id=uuid.UUID(response.json()["id"]),
        organisation_id=organisation_id,
        signing_key=key,
    )
    station.save(key_path)
    return station


def generate(key_path: Path) -> str:
    """A key pair for a station to be registered by someone else (the dashboard's Annuaire):
    the key file, mode 600, without a station id yet; returns the public key to register."""
    if key_path.exists():
        raise StationError(f"{key_path} exists: a station key is never overwritten")
    key = SigningKey.generate()
    data = {"private_key": b64encode(bytes(key)), "public_key": public_key_of(key)}
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    return public_key_of(key)


def adopt(key_path: Path, station_id: uuid.UUID, organisation_id: uuid.UUID) -> StationKeyFile:
    """Give a key file from ``generate`` the id its public key was registered under; the file
    is replaced whole (a new file, mode 600, renamed over it), never half written."""
    try:
        data = json.loads(key_path.read_text())
        key = SigningKey(b64decode(data["private_key"]))
    except (OSError, ValueError, KeyError) as exc:
        raise StationError(f"cannot read station key file {key_path}: {exc}") from exc
    if data.get("station_id") not in (None, str(station_id)):
        raise StationError(f"{key_path} already belongs to station {data['station_id']}")
    station = StationKeyFile(station_id, organisation_id, key)
    pending = key_path.with_name(key_path.name + ".new")
    pending.unlink(missing_ok=True)
    station.save(pending)
    os.replace(pending, key_path)
    return station


def upload_token(client: httpx.Client, station: StationKeyFile) -> str:
    """Trade a fresh signed assertion for a short-lived upload token."""
    assertion = StationAssertion.sign(
        str(station.station_id), station.signing_key, datetime.now(UTC)
    )
    response = client.post("/v1/stations/token", json=assertion.__dict__)
    if response.status_code != 200:
        raise StationError(f"ingest refused the station: {problem(response)}")
    token: str = response.json()["access_token"]
    return token


def whoami(ingest_url: str, station: StationKeyFile) -> dict[str, str]:
    with httpx.Client(base_url=ingest_url, timeout=30) as client:
        token = upload_token(client, station)
        response = client.get("/v1/stations/me", headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 200:
            raise StationError(problem(response))
        body: dict[str, str] = response.json()
        return body
