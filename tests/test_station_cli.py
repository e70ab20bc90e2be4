"""`temoin station register` and `temoin station whoami` against real service processes: a real
Ed25519 key pair from registration to an authenticated request, and its revocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.fixtures.directory import fresh_insee
from tests.fixtures.live import Live
from tests.fixtures.servers import Servers


def _temoin(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "temoin.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_register_authenticate_revoke(live: Live, servers: Servers, tmp_path: Path) -> None:
    org = uuid.uuid4()
    maire = servers.issuer.mint(f"maire-{org.hex[:6]}", ["maire"], organisation_id=org)
    headers = {"Authorization": f"Bearer {maire}"}
    created = httpx.put(
        f"{live.vault.url}/v1/organisations/{org}",
        headers=headers,
        json={
            "name": "Police municipale de Fresnes",
            "departement": "94",
            "communes": [{"insee_code": fresh_insee(), "name": "Fresnes"}],
        },
    )
    assert created.status_code == 201, created.text

    key_file = tmp_path / "dock-1.json"
    registered = _temoin(
        "station", "register", "--name", "Poste central, dock 1", "--org", str(org),
        "--key-file", str(key_file), env={**live.env, "TEMOIN_TOKEN": maire},
    )  # fmt: skip
    assert registered.returncode == 0, registered.stderr
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    station_id = json.loads(key_file.read_text())["station_id"]

    whoami = _temoin("station", "whoami", "--key-file", str(key_file), env=live.env)
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout) == {
        "station_id": station_id,
        "organisation_id": str(org),
        "name": "Poste central, dock 1",
    }

    again = _temoin(
        "station", "register", "--name", "x", "--org", str(org), "--key-file", str(key_file),
        env={**live.env, "TEMOIN_TOKEN": maire},
    )  # fmt: skip
    assert again.returncode == 1
    assert "never overwritten" in again.stderr

    revoked = httpx.post(
        f"{live.vault.url}/v1/organisations/{org}/stations/{station_id}/revoke",
        headers=headers,
        json={"reason": "dock remplacé"},
    )
    assert revoked.status_code == 200
    refused = _temoin("station", "whoami", "--key-file", str(key_file), env=live.env)
    assert refused.returncode == 1
    assert "revoked" in refused.stderr


def test_register_with_a_token_of_the_wrong_role(
    live: Live, servers: Servers, tmp_path: Path
) -> None:
    org = uuid.uuid4()
    dpo = servers.issuer.mint("dpo-x", ["dpo"], organisation_id=org)
    result = _temoin(
        "station", "register", "--name", "x", "--org", str(org),
        "--key-file", str(tmp_path / "k.json"), env={**live.env, "TEMOIN_TOKEN": dpo},
    )  # fmt: skip
    assert result.returncode == 1
    assert "403" in result.stderr
    assert not (tmp_path / "k.json").exists()


def test_keygen_then_adopt_what_the_dashboard_registered(
    live: Live, servers: Servers, tmp_path: Path
) -> None:
    """The dashboard's path: the dock makes its key, a person registers the public key (here
    through the API the Annuaire calls), the dock adopts the id the page shows."""
    org = uuid.uuid4()
    maire = servers.issuer.mint(f"maire-{org.hex[:6]}", ["maire"], organisation_id=org)
    headers = {"Authorization": f"Bearer {maire}"}
    created = httpx.put(
        f"{live.vault.url}/v1/organisations/{org}",
        headers=headers,
        json={
            "name": "Police municipale de Cachan",
            "departement": "94",
            "communes": [{"insee_code": fresh_insee(), "name": "Cachan"}],
        },
    )
    assert created.status_code == 201, created.text

    key_file = tmp_path / "dock.json"
    made = _temoin("station", "keygen", "--key-file", str(key_file), env=live.env)
    assert made.returncode == 0, made.stderr
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    public_key = made.stdout.strip()
    assert public_key == json.loads(key_file.read_text())["public_key"]
    assert "temoin station adopt" in made.stderr
    again = _temoin("station", "keygen", "--key-file", str(key_file), env=live.env)
    assert again.returncode == 1 and "never overwritten" in again.stderr

    # Before its id is known the key file is no station's: dock commands say so.
    early = _temoin("station", "whoami", "--key-file", str(key_file), env=live.env)
    assert early.returncode == 1 and "station_id" in early.stderr

    station = httpx.post(
        f"{live.vault.url}/v1/organisations/{org}/stations",
        headers=headers,
        json={"name": "Poste de Cachan", "public_key": public_key},
    )
    assert station.status_code == 201, station.text
    station_id = station.json()["id"]
    adopted = _temoin(
        "station", "adopt", "--station-id", station_id, "--org", str(org),
        "--key-file", str(key_file), env=live.env,
    )  # fmt: skip
    assert adopted.returncode == 0, adopted.stderr
    assert json.loads(adopted.stdout) == {
        "station_id": station_id,
        "organisation_id": str(org),
        "name": "Poste de Cachan",
    }
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"

    other = _temoin(
        "station", "adopt", "--station-id", str(uuid.uuid4()), "--org", str(org),
        "--key-file", str(key_file), env=live.env,
    )  # fmt: skip
    assert other.returncode == 1 and f"already belongs to station {station_id}" in other.stderr
