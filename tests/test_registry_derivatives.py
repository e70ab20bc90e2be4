"""Training copies' rows bound to the log (`temoin audit verify --registry`,
services/vault/derivatives/registry.py): a copy made by the vault's own job runner and reviewed
through the API agrees with its entries; each alteration an insider with the database
superuser's account would make to its row (a status approved with no review, a reviewer or a
SHA-256 changed, a row made up, deleted, or said erased) is reported, naming the copy. Each
alteration is made in a savepoint rolled back after it, so the next starts from the real row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.vault.audit.registry import verify_registry
from services.vault.settings import VaultSettings
from shared.audit import WriterKeys
from tests.fixtures.apps import settings_for
from tests.fixtures.directory import OrgKit, World
from tests.fixtures.servers import Servers
from tests.test_dashboard_derivatives import MADE_S, _upload_real_clip, job_runner
from tests.test_derivatives import _procedure


@dataclass
class Copy:
    world: World
    kit: OrgKit
    connection: AsyncConnection
    id: str
    recording: str
    procedure: str
    writers: WriterKeys

    @property
    def path(self) -> str:
        return f"{self.kit.path}/derivatives/{self.id}"

    async def findings(self, where: str | None = None) -> list[str]:
        """What `temoin audit verify --registry` says of this copy (or of ``where``)."""
        found = await verify_registry(self.connection, self.writers)
        where = where or f"derivative {self.id}"
        return [finding.detail for finding in found if finding.where == where]

    async def tampered(
        self, statement: str, where: str | None = None, **values: object
    ) -> list[str]:
        """The findings once ``statement`` ran as the database superuser; undone after."""
        savepoint = await self.connection.begin_nested()
        try:
            await self.connection.execute(text("RESET ROLE"))
            for one in statement.split("; "):
                await self.connection.execute(text(one), {"id": uuid.UUID(self.id), **values})
            return await self.findings(where)
        finally:
            await savepoint.rollback()


@pytest.fixture
async def copy(
    world: World, connection: AsyncConnection, servers: Servers, tmp_path: Path
) -> AsyncIterator[Copy]:
    """A copy made (« à vérifier ») by the vault's runner, on the test's connection (the
    demande was made in the test's transaction, which a runner of its own could not see)."""
    kit = world.own
    recording = await _upload_real_clip(world.vault, world.ingest, kit, tmp_path)
    procedure = await _procedure(world, kit, "formation", recording)
    asked = await world.vault.post(
        f"{procedure}/derivatives",
        headers=kit.headers("habilite"),
        json={"recording_id": recording, "motif": "formation aux interpellations"},
    )
    assert asked.status_code == 202, asked.text
    runner = job_runner(connection, servers)
    made = await asyncio.wait_for(runner.run_once(), MADE_S)
    assert str(made) == asked.json()["id"]
    settings = settings_for("vault", servers)
    assert isinstance(settings, VaultSettings)
    yield Copy(
        world, kit, connection, asked.json()["id"], recording, procedure, settings.writer_keys()
    )


async def _review(copy: Copy, decision: str) -> None:
    viewed = await copy.world.vault.post(
        f"{copy.path}/consultations", headers=copy.kit.headers("habilite"), json={"motif": "voir"}
    )
    assert viewed.status_code == 201, viewed.text
    reviewed = await copy.world.vault.post(
        f"{copy.path}/review",
        headers=copy.kit.headers("habilite"),
        json={"decision": decision, "reason": "aucun visage reconnaissable"},
    )
    assert reviewed.status_code == 200, reviewed.text


async def test_a_copy_agrees_with_its_entries_and_each_alteration_is_reported(
    copy: Copy,
) -> None:
    """One copy made (the engine's run is the slow part), altered in turn."""
    status = await copy.world.vault.get(copy.path, headers=copy.kit.headers("dpo"))
    assert status.json()["status"] == "a_verifier", status.text
    assert await copy.findings() == []

    # Approved by SQL, with no review in the log: the extraction would take it.
    found = await copy.tampered(
        "UPDATE vault.derivatives SET status = 'approuve', reviewed_by = 'sql', "
        "reviewed_at = now() WHERE id = :id"
    )
    assert found == ["status 'approuve' in the row, 0 derivation_reviewed entries"], found
    # Another copy's SHA-256 put on the row.
    found = await copy.tampered(
        "UPDATE vault.derivatives SET sha256 = :other WHERE id = :id", other="0" * 64
    )
    assert len(found) == 1 and "sha256 or size differs" in found[0], found
    # Put back to running, or said erased when its original was not.
    found = await copy.tampered("UPDATE vault.derivatives SET status = 'en_cours' WHERE id = :id")
    assert len(found) == 1 and "the job ended in the log" in found[0], found
    found = await copy.tampered("UPDATE vault.derivatives SET erased_at = now() WHERE id = :id")
    assert found == ["erased in the row, no effacement entry lists it"], found
    # The demande rewritten: someone else asked, for another motif.
    found = await copy.tampered(
        "UPDATE vault.derivatives SET requested_by = 'sql', motif = 'autre' WHERE id = :id"
    )
    assert len(found) == 2 and all("differs from the log" in f for f in found), found

    # Reviewed through the API: it agrees again; then its review rewritten.
    await _review(copy, "approuve")
    assert await copy.findings() == []
    found = await copy.tampered("UPDATE vault.derivatives SET status = 'rejete' WHERE id = :id")
    assert len(found) == 1 and "another decision in the log" in found[0], found
    found = await copy.tampered("UPDATE vault.derivatives SET reviewed_by = 'sql' WHERE id = :id")
    assert len(found) == 1 and "reviewer or review date differs" in found[0], found

    # A copy made up, approved, with the real copy's object and key: no demande logged.
    made_up = uuid.uuid4()
    found = await copy.tampered(
        "INSERT INTO vault.derivatives (id, organisation_id, recording_id, procedure_id, "
        "requested_by, requested_role, motif, parameters, status, attempt, cancel_requested, "
        "frames_done, chunk_size, size, sealed_size, sha256, content_type, wrapped_key, kek_id, "
        "object_key, object_version, reviewed_by, reviewed_at, created_at) "
        "SELECT :new, organisation_id, recording_id, procedure_id, requested_by, "
        "requested_role, motif, parameters, 'approuve', 1, false, frames_done, chunk_size, "
        "size, sealed_size, sha256, content_type, wrapped_key, kek_id, object_key || '-x', "
        "object_version, requested_by, now(), now() FROM vault.derivatives WHERE id = :id",
        new=made_up,
        where=f"derivative {made_up}",
    )
    assert found == ["0 derivation_requested entries in the log, not one"], found

    # Deleted: its entries remain, and say it was asked for.
    found = await copy.tampered(
        "DELETE FROM vault.consultations WHERE derivative_id = :id; "
        "DELETE FROM vault.derivatives WHERE id = :id"
    )
    assert len(found) == 1 and "its row is gone" in found[0], found
