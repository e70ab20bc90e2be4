"""The audit API on committed data (a fresh database, the real session dependency): queries and
CSV export for the DPO, refused attempts logged, proofs that a witness can check alone."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.vault.app import create_app
from shared import merkle
from shared.audit import canonical_bytes
from shared.witness import head_problems
from tests.fixtures.apps import serve_in_process, settings_for
from tests.fixtures.servers import Servers


@dataclass
class Committed:
    vault: httpx.AsyncClient
    org: uuid.UUID
    tokens: dict[str, str]

    def h(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
async def committed(servers: Servers, fresh_engine: AsyncEngine) -> AsyncIterator[Committed]:
    url = fresh_engine.url.render_as_string(hide_password=False)
    app = create_app(settings_for("vault", servers, database_url=url))  # type: ignore[arg-type]
    org = uuid.uuid4()
    mint = servers.issuer.mint
    tokens = {
        "maire": mint("maire-1", ["maire"], organisation_id=org),
        "dpo": mint("dpo-1", ["dpo"], organisation_id=org),
        "agent": mint("agent-1", ["agent"], organisation_id=org),
        "prefecture": mint("pref-94", ["prefecture"], departement="94"),
        "outsider": mint("dpo-2", ["dpo"], organisation_id=uuid.uuid4()),
    }
    async with serve_in_process(app) as vault:
        created = await vault.put(
            f"/v1/organisations/{org}",
            headers={"Authorization": f"Bearer {tokens['maire']}"},
            json={
                "name": "PM",
                "departement": "94",
                "communes": [{"insee_code": "94038", "name": "L'Haÿ-les-Roses"}],
            },
        )
        assert created.status_code == 201
        yield Committed(vault=vault, org=org, tokens=tokens)


async def test_refused_attempts_are_logged_and_queryable(committed: Committed) -> None:
    base = f"/v1/organisations/{committed.org}"
    wrong_role = await committed.vault.get(f"{base}/agents", headers=committed.h("agent"))
    assert wrong_role.status_code == 403
    other_org = await committed.vault.get(f"{base}/agents", headers=committed.h("outsider"))
    assert other_org.status_code == 404
    page = await committed.vault.get(
        f"{base}/audit/entries", headers=committed.h("dpo"), params={"action": "access_refused"}
    )
    assert page.status_code == 200
    refused = page.json()["items"]
    assert [(e["actor_subject"], e["details"]["status"]) for e in refused] == [
        ("agent-1", 403),
        ("dpo-2", 404),
    ]
    assert all(e["outcome"] == "refused" for e in refused)
    assert refused[0]["details"]["path"] == f"{base}/agents"

    exported = await committed.vault.get(
        f"{base}/audit/entries", headers=committed.h("dpo"), params={"format": "csv"}
    )
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["action"] for r in rows] == ["directory_change", "access_refused", "access_refused"]

    bad = await committed.vault.get(
        f"{base}/audit/entries",
        headers=committed.h("dpo"),
        params={"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.until"
    naive = await committed.vault.get(
        f"{base}/audit/entries", headers=committed.h("dpo"), params={"since": "2026-02-01"}
    )
    assert naive.status_code == 422


async def test_proofs_check_out_with_nothing_but_the_public_key(committed: Committed) -> None:
    vault, base = committed.vault, f"/v1/organisations/{committed.org}"
    key = (await vault.get("/v1/audit/public-key")).json()["public_key"]
    first = await vault.post("/v1/audit/heads", headers=committed.h("dpo"))
    assert first.status_code == 200, first.text
    for _ in range(5):  # more entries, then a second head
        await vault.get(f"{base}/agents", headers=committed.h("agent"))
    second = (await vault.post("/v1/audit/heads", headers=committed.h("dpo"))).json()
    first_head = first.json()
    assert second["tree_size"] == first_head["tree_size"] + 5

    heads = (await vault.get("/v1/audit/heads", headers=committed.h("prefecture"))).json()
    assert [h["tree_size"] for h in heads] == [first_head["tree_size"], second["tree_size"]]
    for head in heads:
        assert head_problems(head, key) == []
    assert heads[1]["previous_size"] == heads[0]["tree_size"]  # chained
    assert heads[1]["previous_root"] == heads[0]["root_hash"]

    entries = (await vault.get(f"{base}/audit/entries", headers=committed.h("dpo"))).json()
    for entry in entries["items"]:
        proof = await vault.get(
            f"{base}/audit/entries/{entry['entry_id']}/proof",
            headers=committed.h("dpo"),
            params={"tree_size": second["tree_size"]},
        )
        assert proof.status_code == 200, proof.text
        body = proof.json()
        leaf = merkle.leaf_hash(canonical_bytes(body["entry"]))
        assert leaf.hex() == body["leaf_hash"]
        assert merkle.verify_inclusion(
            leaf,
            body["leaf_index"],
            body["tree_size"],
            [bytes.fromhex(h) for h in body["audit_path"]],
            bytes.fromhex(second["root_hash"]),
        )

    consistency = await vault.get(
        "/v1/audit/consistency",
        headers=committed.h("maire"),
        params={"first": first_head["tree_size"], "second": second["tree_size"]},
    )
    assert consistency.status_code == 200
    assert merkle.verify_consistency(
        first_head["tree_size"],
        second["tree_size"],
        bytes.fromhex(first_head["root_hash"]),
        bytes.fromhex(second["root_hash"]),
        [bytes.fromhex(h) for h in consistency.json()["proof"]],
    )

    unknown = await vault.get(
        f"{base}/audit/entries/{uuid.uuid4()}/proof", headers=committed.h("dpo")
    )
    assert unknown.status_code == 404
    no_head = await vault.get(
        "/v1/audit/consistency", headers=committed.h("dpo"), params={"first": 1, "second": 2}
    )
    assert no_head.status_code == 404
    inverted = await vault.get(
        "/v1/audit/consistency", headers=committed.h("dpo"), params={"first": 3, "second": 2}
    )
    assert inverted.status_code == 422


def _temoin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "temoin.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_witness_checks_offline_and_verify_cli(
    committed: Committed, fresh_engine: AsyncEngine, admin_engine: AsyncEngine, tmp_path: Path
) -> None:
    vault, base = committed.vault, f"/v1/organisations/{committed.org}"
    key = (await vault.get("/v1/audit/public-key")).json()["public_key"]
    head = (await vault.post("/v1/audit/heads", headers=committed.h("dpo"))).json()
    heads_file = tmp_path / "heads.json"
    heads_file.write_text(json.dumps([head]))
    entry = (await vault.get(f"{base}/audit/entries", headers=committed.h("dpo"))).json()
    proof = (
        await vault.get(
            f"{base}/audit/entries/{entry['items'][0]['entry_id']}/proof",
            headers=committed.h("dpo"),
        )
    ).json()
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(proof))

    ok = _temoin("audit", "check", str(proof_file), "--heads", str(heads_file), "--public-key", key)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    excerpt = tmp_path / "excerpt.json"
    excerpt.write_text(json.dumps([proof, proof]))
    both = _temoin("audit", "check", str(excerpt), "--heads", str(heads_file), "--public-key", key)
    assert both.returncode == 0 and "OK: 2 entries" in both.stdout
    proof["entry"]["motif"] = "rewritten"
    proof_file.write_text(json.dumps(proof))
    altered = _temoin(
        "audit", "check", str(proof_file), "--heads", str(heads_file), "--public-key", key
    )
    assert altered.returncode == 1
    assert "entry altered" in altered.stdout
    other_key = _temoin(
        "audit", "check", str(proof_file), "--heads", str(heads_file),
        "--public-key", "A" * 43 + "=",
    )  # fmt: skip
    assert "signature does not verify" in other_key.stdout

    url = fresh_engine.url.render_as_string(hide_password=False)
    intact = _temoin("audit", "verify", "--database-url", url, "--public-key", key)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "OK: the log is intact" in intact.stdout
    async with admin_engine.begin() as connection:
        await connection.execute(text("ALTER TABLE audit.entries DISABLE TRIGGER ALL"))
        await connection.execute(text("UPDATE audit.entries SET motif = 'x' WHERE id = 1"))
    broken = _temoin("audit", "verify", "--database-url", url, "--public-key", key)
    assert broken.returncode == 1
    assert "TAMPERED modified at seq 0" in broken.stdout


async def test_the_vault_sequences_entries_by_itself(committed: Committed) -> None:
    """No one asks: the vault's background task puts new entries in the log within seconds."""
    base = f"/v1/organisations/{committed.org}"
    for _ in range(50):  # 50 x 0.1 s, bounded
        page = (
            await committed.vault.get(f"{base}/audit/entries", headers=committed.h("dpo"))
        ).json()
        if all(item["seq"] is not None for item in page["items"]):
            break
        await asyncio.sleep(0.1)
    assert page["items"] and all(item["seq"] is not None for item in page["items"])


async def test_csv_export_streams_the_whole_selection_batch_by_batch(
    committed: Committed, fresh_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More entries than a JSON page (100) and than several export batches, many sharing one
    instant: the CSV holds each once, in order, read a batch at a time."""
    from nacl.signing import SigningKey
    from sqlalchemy.ext.asyncio import AsyncSession

    from services.vault.audit import endpoints
    from services.vault.audit.repository import AuditRepository
    from shared import audit
    from shared.audit import AuditAction, AuditEntry, AuditWriter, writer_info

    monkeypatch.setattr(endpoints, "CSV_BATCH", 40)
    batches: list[int] = []
    search_after = AuditRepository.search_after

    async def counted(self: AuditRepository, *args: object) -> list[object]:
        rows = await search_after(self, *args)  # type: ignore[arg-type]
        batches.append(len(rows))
        return rows  # type: ignore[return-value]

    monkeypatch.setattr(AuditRepository, "search_after", counted)
    same_instant = datetime.now(UTC)
    writer = AuditWriter("vault", SigningKey(b"v" * 32))
    async with AsyncSession(fresh_engine, info=writer_info(writer)) as session, session.begin():
        for i in range(250):
            await audit.append(
                session,
                AuditEntry(
                    action=AuditAction.consultation,
                    service="vault",
                    actor_subject="habilite-1",
                    organisation_id=committed.org,
                    motif=f"vérification {i}",
                    occurred_at=same_instant if i % 2 else same_instant + timedelta(seconds=i),
                    details={"n": i, "mot": "é"},
                ),
            )
    base = f"/v1/organisations/{committed.org}"
    page = await committed.vault.get(
        f"{base}/audit/entries", headers=committed.h("dpo"), params={"action": "consultation"}
    )
    assert page.json()["total"] == 250 and len(page.json()["items"]) == 100
    exported = await committed.vault.get(
        f"{base}/audit/entries",
        headers=committed.h("dpo"),
        params={"action": "consultation", "format": "csv", "limit": 10, "offset": 5},
    )
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    # Oldest first; entries of one instant in the order they were written.
    expected = sorted(range(250), key=lambda i: (0 if i % 2 else i, i))
    assert [json.loads(r["details"])["n"] for r in rows] == expected
    assert len({r["entry_id"] for r in rows}) == 250
    assert batches == [40] * 6 + [10]
