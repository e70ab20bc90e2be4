"""`temoin run` (what `make run` calls) as a real process tree: it brings the three services
to ready on the embedded servers, Ctrl-C stops every process it started, and a second run finds
the data of the first."""

from __future__ import annotations

import asyncio
import html
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx
import jwt
import psutil
import pytest

from shared.storage import ObjectStore, StorageConfig
from temoin.stack import BUCKET
from tests.fixtures.stack import Stack

pytestmark = pytest.mark.slow

from services.config import DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY  # noqa: E402


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _storage(stack: Stack) -> ObjectStore:
    config = StorageConfig(
        f"http://127.0.0.1:{stack.s3_port}", DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, BUCKET
    )
    return ObjectStore(config)


async def _sql(stack: Stack, *statements: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(
        f"postgresql://postgres@/postgres?host={stack.var_dir / 'postgres'}"
    )
    try:
        rows: list[asyncpg.Record] = []
        for sql in statements:
            rows = list(await connection.fetch(sql))
        return rows
    finally:
        await connection.close()


def test_run_stop_and_run_again(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "var")
    try:
        first_start = stack.start()
        print(f"first start: ready in {first_start:.1f} s")
        for name, port in stack.ports.items():
            checks = httpx.get(f"http://127.0.0.1:{port}/readyz").json()["checks"]
            if name == "dashboard":  # the provider, the vault it reads, its sessions' database
                assert checks == {"oidc_provider": "ok", "vault": "ok", "database": "ok"}
                continue
            if name == "vault":
                assert checks.pop("store_write_once") in ("ok", "not checked yet")
            assert checks == {"database": "ok", "storage": "ok"}, name
        # The development issuer: `temoin token` mints what the services accept.
        org = "0b6a3c1e-2f4d-4e8a-9c7b-5d1e2f3a4b5c"
        minted = subprocess.run(
            [sys.executable, "-m", "temoin.cli", "token", "--user", "maire-dev", "--role",
             "maire", "--org", org, "--var-dir", str(stack.var_dir)],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        me = httpx.get(
            f"http://127.0.0.1:{stack.ports['vault']}/v1/me",
            headers={"Authorization": f"Bearer {minted.stdout.strip()}"},
        )
        assert me.status_code == 200, me.text
        assert me.json()["roles"] == ["maire"]
        assert me.json()["organisation_id"] == org
        # The development OpenID provider runs too; its URL is the issuer the services accept
        # (the one `temoin token` used above), and the stack file says where it is.
        issuer = f"http://127.0.0.1:{stack.issuer_port}"
        discovery = httpx.get(f"{issuer}/.well-known/openid-configuration").json()
        assert discovery["issuer"] == issuer
        assert json.loads((stack.var_dir / "stack.json").read_text())["urls"]["issuer"] == issuer
        claims = jwt.decode(minted.stdout.strip(), options={"verify_signature": False})
        assert claims["iss"] == issuer
        page = httpx.get(
            f"{issuer}/authorize",
            params={"response_type": "code", "client_id": "temoin-dashboard", "scope": "openid",
                    "redirect_uri": "http://127.0.0.1:8740/auth/callback", "state": "s" * 32,
                    "code_challenge": "c" * 43, "code_challenge_method": "S256"},
        )  # fmt: skip
        assert page.status_code == 200 and "nouvelle organisation" in page.text
        _sign_in_to_the_dashboard(stack)
        # Leave data in both stores.
        asyncio.run(
            _sql(
                stack,
                "CREATE TABLE public.probe (note text)",
                "INSERT INTO public.probe VALUES ('kept')",
            )
        )
        _storage(stack).client.put_object(BUCKET, "probe/kept", io.BytesIO(b"kept"), 4)

        processes = stack.processes()
        assert len(processes) >= 6  # temoin, weed, 3 services, postmaster (+ its workers)
        assert stack.interrupt() == 0
        time.sleep(0.5)
        left = [p for p in processes if _alive(p)]
        assert not left, f"left behind: {[p.cmdline() for p in left]}"
        # What it started is described only while it runs: no command reaches for a stopped one.
        assert not (stack.var_dir / "stack.json").exists()

        second_start = stack.start()
        print(f"second start: ready in {second_start:.1f} s")
        assert asyncio.run(_sql(stack, "SELECT note FROM public.probe"))[0]["note"] == "kept"
        body = _storage(stack).client.get_object(BUCKET, "probe/kept").read()
        assert body == b"kept"
        processes = stack.processes()
        assert stack.interrupt() == 0
        time.sleep(0.5)
        assert not [p for p in processes if _alive(p)]
    finally:
        stack.kill_everything()


def _sign_in_to_the_dashboard(stack: Stack) -> None:
    """The dashboard runs too: a newcomer maire signs in at the development provider (code,
    PKCE, acr eidas1 asked and checked) and is offered to create the organisation."""
    dashboard = f"http://127.0.0.1:{stack.ports['dashboard']}"
    urls = json.loads((stack.var_dir / "stack.json").read_text())["urls"]
    assert urls["dashboard"] == dashboard
    with httpx.Client(base_url=dashboard, follow_redirects=True, timeout=30) as browser:
        page = browser.get("/connexion")
        assert page.url.path == "/authorize", page.text
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        fields = {name: html.unescape(value) for name, value in fields.items()}
        home = browser.post(
            str(page.url.copy_with(query=None)), data={**fields, "person": "nouveau-maire"}
        )
        assert home.status_code == 200, home.text
        assert str(home.url) == f"{dashboard}/"
        assert "Créer l'organisation" in home.text
