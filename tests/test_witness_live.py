"""`temoin witness` against live services: it cosigns the log's checkpoints, the vault keeps and
shows the cosignatures, and a log rewritten behind the witness's back is refused, never cosigned,
and found by `temoin audit verify` from the cosignature alone."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.vault.audit.verify import _Levels
from shared import merkle
from shared.audit import canonical_bytes
from shared.db import create_engine
from shared.notes import Checkpoint, Note, VerifierKey, cosigned_message
from temoin.embedded import free_port
from temoin.witness import WitnessState
from tests.fixtures.databases import clone_template, database_url, drop_database
from tests.fixtures.directory import OrgKit
from tests.fixtures.live import LIVE_WITNESS, Live, LiveService, run_temoin
from tests.fixtures.servers import Servers


def _state(path: Path, log_key: str) -> None:
    """The live witness's state file, as `temoin witness init` writes it, with its known key."""
    WitnessState(
        name=LIVE_WITNESS.name, key=LIVE_WITNESS.key, log_key=VerifierKey.parse(log_key)
    ).save(path)


async def _activity(vault: httpx.AsyncClient, kit: OrgKit, requests: int) -> int:
    """Entries (refused attempts are logged), then a signed head; its size."""
    for _ in range(requests):
        await vault.get(f"{kit.path}/agents", headers=kit.headers("agent"))
    head = await vault.post("/v1/audit/heads", headers=kit.headers("dpo"))
    assert head.status_code == 200, head.text
    size: int = head.json()["tree_size"]
    return size


def _cosign(state: Path, kit: OrgKit, vault_url: str) -> tuple[int, str]:
    done = run_temoin(
        "witness",
        "cosign",
        "--state",
        str(state),
        "--token",
        kit.tokens["dpo"],
        "--vault-url",
        vault_url,
        env={},
    )
    return done.returncode, done.stdout + done.stderr


async def test_witness_init_writes_a_private_state(tmp_path: Path, live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.vault.url) as vault:
        log_key = (await vault.get("/v1/audit/public-key")).json()["verifier_key"]
    state = tmp_path / "witness.json"
    done = run_temoin(
        "witness", "init", "--state", str(state), "--name", "prefecture.test.invalid/w",
        "--log-key", log_key, env={},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = VerifierKey.parse(done.stdout.strip())
    assert (printed.name, printed.key_type) == ("prefecture.test.invalid/w", 0x04)
    assert os.stat(state).st_mode & 0o777 == 0o600
    again = run_temoin(
        "witness", "init", "--state", str(state), "--name", "x", "--log-key", log_key, env={}
    )
    assert again.returncode == 2 and "exists" in again.stderr


async def test_the_witness_cosigns_and_the_vault_shows_it(
    live: Live, live_org: tuple[OrgKit, httpx.AsyncClient], tmp_path: Path
) -> None:
    kit, _ = live_org
    async with httpx.AsyncClient(base_url=live.vault.url, timeout=30) as vault:
        public = (await vault.get("/v1/audit/public-key")).json()
        state = tmp_path / "witness.json"
        _state(state, public["verifier_key"])
        size = await _activity(vault, kit, 3)
        code, output = _cosign(state, kit, live.vault.url)
        assert code == 0, output
        assert f"at size {size}" in output or "OK: cosigned" in output

        # The cosigned checkpoint, read back: the vault's signature and the witness's, the
        # latter checked with OpenSSL's Ed25519 over the message the specification writes.
        note_text = (await vault.get("/v1/audit/checkpoint", headers=kit.headers("maire"))).text
        note = Note.parse(note_text)
        checkpoint = Checkpoint.parse(note.text)
        assert checkpoint.origin == public["origin"]
        cosignature = next(s for s in note.signatures if s.is_by(LIVE_WITNESS.verifier))
        Ed25519PublicKey.from_public_bytes(bytes(LIVE_WITNESS.key.verify_key)).verify(
            cosignature.signature[8:], cosigned_message(note.text, cosignature.timestamp)
        )
        assert note.verified_by([VerifierKey.parse(public["verifier_key"])])

        status = (await vault.get("/v1/audit/witnesses", headers=kit.headers("prefecture"))).json()
        (witness,) = status["witnesses"]
        assert witness["name"] == LIVE_WITNESS.name
        assert witness["tree_size"] >= size and witness["age_s"] < 120
        metrics = (await vault.get("/metrics")).text
        assert f'temoin_audit_cosigned_timestamp_seconds{{witness="{LIVE_WITNESS.name}"}}' in (
            metrics
        )

        # The log grows: the next checkpoint is checked against the one held, and cosigned.
        await _activity(vault, kit, 4)
        code, output = _cosign(state, kit, live.vault.url)
        assert code == 0, output
        held = json.loads(state.read_text())["checkpoint"]
        assert Checkpoint.parse(Note.parse(held).text).size > checkpoint.size

        refused = await vault.post(
            "/v1/audit/cosignatures",
            headers=kit.headers("dpo"),
            json={"tree_size": checkpoint.size, "cosignature": cosignature.line()[:-10]},
        )
        assert refused.status_code == 422


async def _rewrite(connection: AsyncConnection) -> None:
    """Entry 1 rewritten, every leaf and subtree recomputed to match, the heads deleted."""
    for table in ("entries", "leaves", "nodes", "tree_heads"):
        await connection.execute(text(f"ALTER TABLE audit.{table} DISABLE TRIGGER ALL"))
    await connection.execute(
        text(
            "UPDATE audit.entries SET actor_subject = 'quelqu''un d''autre' "
            "WHERE entry_id = (SELECT entry_id FROM audit.leaves WHERE seq = 1)"
        )
    )
    rows = (
        await connection.execute(
            text(
                "SELECT l.seq, e.* FROM audit.leaves l JOIN audit.entries e USING (entry_id) "
                "ORDER BY l.seq"
            )
        )
    ).mappings()
    leaves = [merkle.leaf_hash(canonical_bytes(row)) for row in rows]
    for seq, leaf in enumerate(leaves):
        await connection.execute(
            text("UPDATE audit.leaves SET leaf_hash = :leaf WHERE seq = :seq"),
            {"leaf": leaf, "seq": seq},
        )
    await connection.execute(text("DELETE FROM audit.nodes"))
    for (level, index), digest in _Levels(leaves).items():
        await connection.execute(
            text("INSERT INTO audit.nodes (level, idx, hash) VALUES (:level, :idx, :hash)"),
            {"level": level, "idx": index, "hash": digest},
        )
    await connection.execute(text("DELETE FROM audit.tree_heads"))
    for table in ("entries", "leaves", "nodes", "tree_heads"):
        await connection.execute(text(f"ALTER TABLE audit.{table} ENABLE TRIGGER ALL"))


@pytest.fixture
async def own_vault(
    live: Live, servers: Servers, template_database: str, tmp_path: Path
) -> AsyncIterator[tuple[LiveService, str]]:
    """A vault of its own on a fresh database, whose log a test may rewrite."""
    name = await clone_template(servers, template_database, prefix="w")
    url = database_url(servers, name)
    port = free_port()
    service = LiveService(
        "vault",
        f"http://127.0.0.1:{port}",
        {**live.vault.env, "DATABASE_URL": url, "VAULT_PORT": str(port)},
        tmp_path / "vault.log",
    )
    service.start()
    try:
        yield service, url
    finally:
        service.stop()
        await drop_database(servers, name)


async def test_a_rewritten_log_is_refused_and_found_from_the_cosignature(
    own_vault: tuple[LiveService, str],
    live_org: tuple[OrgKit, httpx.AsyncClient],
    tmp_path: Path,
) -> None:
    service, url = own_vault
    kit, _ = live_org  # its people's tokens; this database has only their refused attempts
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as vault:
        public = (await vault.get("/v1/audit/public-key")).json()
        state = tmp_path / "witness.json"
        _state(state, public["verifier_key"])
        # The DPO's token names an organisation this database does not know: every request
        # of the agent is refused, and logged.
        cosigned = await _activity(vault, kit, 6)
        code, output = _cosign(state, kit, service.url)
        assert code == 0, output

    # With the vault stopped (running, it would put its last head back within a second), the
    # superuser rewrites an entry with its leaf and subtrees and deletes the heads; the vault
    # restarts, having forgotten the last head it signed.
    service.stop()
    engine = create_engine(url, application_name="tamper")
    async with engine.begin() as connection:
        await _rewrite(connection)
    await engine.dispose()
    service.start()
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as vault:
        gauge = f'temoin_audit_cosigned_timestamp_seconds{{witness="{LIVE_WITNESS.name}"}}'
        for _ in range(50):  # the restarted vault reads the witnesses' freshness (50 x 0.1 s)
            if gauge in (await vault.get("/metrics")).text:
                break
            await asyncio.sleep(0.1)
        assert gauge in (await vault.get("/metrics")).text
        await _activity(vault, kit, 2)  # signed anew over the rewritten log
        before = json.loads(state.read_text())["checkpoint"]
        code, output = _cosign(state, kit, service.url)
        assert code == 1, output
        assert "REFUSED" in output
        kept = json.loads(state.read_text())
        assert kept["checkpoint"] == before  # the held checkpoint is unchanged
        assert kept["refused"] and "rewritten" in kept["refused"][-1]["reason"]

    verified = run_temoin(
        "audit", "verify", "--database-url", url, "--witnesses", str(LIVE_WITNESS.verifier),
        env={},
    )  # fmt: skip
    assert verified.returncode == 1
    assert f"TAMPERED root at cosigned head {cosigned}" in verified.stdout, verified.stdout
    assert f"TAMPERED witnessed at cosigned head {cosigned}" in verified.stdout


async def test_the_running_vault_puts_back_a_deleted_head(
    own_vault: tuple[LiveService, str], live_org: tuple[OrgKit, httpx.AsyncClient]
) -> None:
    """The head it signed last, deleted by the superuser, is back within a pass or two."""
    service, url = own_vault
    kit, _ = live_org
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as vault:
        size = await _activity(vault, kit, 3)
        await asyncio.sleep(1.5)  # a pass of the log job: it remembers that head
        engine = create_engine(url, application_name="tamper")
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE audit.tree_heads DISABLE TRIGGER ALL"))
            await connection.execute(text("DELETE FROM audit.tree_heads"))
            await connection.execute(text("ALTER TABLE audit.tree_heads ENABLE TRIGGER ALL"))
        for _ in range(50):  # 50 x 0.1 s, bounded
            async with engine.connect() as connection:
                back = (
                    await connection.execute(
                        text("SELECT array_agg(tree_size) FROM audit.tree_heads")
                    )
                ).scalar()
            if back:
                break
            await asyncio.sleep(0.1)
        await engine.dispose()
        assert back == [size]
        metrics = (await vault.get("/metrics")).text
        assert "temoin_audit_heads_restored_total 1.0" in metrics
