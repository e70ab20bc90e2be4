"""An anonymised copy is packaged for training only as the log has it (issue 18,
services/vault/derivatives/attested.py): a copy made by the vault's own job runner, approved
through the API and extracted at once, before the log has sequenced its approval, is packaged;
each alteration an insider with the database superuser's account would make to its row (a
rejected or unreviewed copy set to `approuve`, with or without a made-up review entry; its
SHA-256, its object, the tools it states or its original changed) is refused with a 409
problem, alerted once as a `registry_divergence` entry, and nothing is packaged or logged as
extracted. Each alteration is made in a savepoint rolled back after it, as in
tests/test_registry_derivatives.py."""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dashboard.api.french import in_french
from shared.audit import entries
from tests.test_derivatives import _problem, _upload
from tests.test_registry_derivatives import Copy, _review, copy  # noqa: F401  (the fixture)

REFUSED = "this anonymised copy's registry row differs from what the log attests"


async def _extract(made: Copy, recording: str | None = None) -> httpx.Response:
    return await made.world.vault.post(
        f"{made.procedure}/extractions",
        headers=made.kit.headers("habilite"),
        json={
            "recording_id": recording or made.recording,
            "derivative_id": made.id,
            "motif": "session de formation",
            "destinataires": ["Formateur du CNFPT"],
        },
    )


async def _count(made: Copy, action: str) -> int:
    """Entries of ``action`` naming the made."""
    statement = select(func.count()).where(
        entries.c.action == action, entries.c.details["derivative"].astext == made.id
    )
    return int((await made.connection.execute(statement)).scalar_one())


@asynccontextmanager
async def as_superuser(
    connection: AsyncConnection, statement: str, **values: Any
) -> AsyncIterator[None]:
    """``statement`` (several joined by « ; ») run as the database superuser, then the vault
    acting with its own role (as in production); all of it undone after the block."""
    savepoint = await connection.begin_nested()
    try:
        await connection.execute(text("RESET ROLE"))
        for one in statement.split("; "):
            await connection.execute(text(one), values)
        await connection.execute(text("SET LOCAL ROLE temoin_service"))
        yield
    finally:
        await savepoint.rollback()


def _as_superuser(made: Copy, statement: str, **values: Any) -> AbstractAsyncContextManager[None]:
    return as_superuser(made.connection, statement, id=uuid.UUID(made.id), **values)


def _conflict(answer: httpx.Response, words: str) -> None:
    """A 409 problem saying ``words`` (a package is not printed: it is binary)."""
    assert answer.status_code == 409, f"not refused: {answer.headers['content-type']}"
    _problem(answer, 409, words)


async def _refused(made: Copy, words: str, recording: str | None = None) -> None:
    """The extraction refused with ``words`` among its problems, said in French, alerted once
    (a second attempt adds no alert), and nothing logged as extracted."""
    extractions = await _count(made, "extraction")
    answer = await _extract(made, recording)
    _conflict(answer, REFUSED)
    detail = answer.json()["detail"]
    assert words in detail, detail
    assert (in_french(detail) or "").startswith("La fiche de cette copie anonymisée"), detail
    assert await _count(made, "registry_divergence") == 1
    _conflict(await _extract(made, recording), REFUSED)
    assert await _count(made, "registry_divergence") == 1
    assert await _count(made, "extraction") == extractions


async def test_only_the_copy_the_log_approved_is_packaged(copy: Copy) -> None:  # noqa: F811
    """One copy made (the engine's run is the slow part), altered in turn."""
    approve_by_sql = (
        "UPDATE vault.derivatives SET status = 'approuve', reviewed_by = 'sql', "
        "reviewed_at = now() WHERE id = :id"
    )
    # Never reviewed, approved by SQL.
    async with _as_superuser(copy, approve_by_sql):
        await _refused(copy, "status 'approuve' in the row, 0 derivation_reviewed entries")
    # Rejected through the API, then approved by SQL.
    savepoint = await copy.connection.begin_nested()
    try:
        await _review(copy, "rejete")
        _conflict(await _extract(copy), "only an approved anonymised copy")
        async with _as_superuser(
            copy, "UPDATE vault.derivatives SET status = 'approuve' WHERE id = :id"
        ):
            await _refused(copy, "status 'approuve' in the row, another decision in the log")
    finally:
        await savepoint.rollback()
    # Approved by SQL with a review entry made up in the vault's name: not the vault's.
    forged_review = (
        "INSERT INTO audit.entries (entry_id, occurred_at, service, action, outcome, "
        "organisation_id, actor_subject, actor_role, recording_ids, details) "
        "SELECT gen_random_uuid(), now(), 'vault', 'derivation_reviewed', 'success', "
        "organisation_id, 'sql', 'habilite', ARRAY[recording_id], jsonb_build_object("
        "'derivative', id::text, 'decision', 'approuve', 'sha256', sha256) "
        "FROM vault.derivatives WHERE id = :id"
    )
    async with _as_superuser(copy, f"{approve_by_sql}; {forged_review}"):
        await _refused(copy, "(derivation_reviewed) was not written by the vault (missing)")

    # Approved through the API and extracted at once: the approval is not in the log yet.
    await _review(copy, "approuve")
    extracted = await _extract(copy)
    assert extracted.status_code == 200, extracted.text
    with zipfile.ZipFile(io.BytesIO(extracted.content)) as archive:
        bag = archive.namelist()[0].split("/", 1)[0]
        record = json.loads(archive.read(f"{bag}/data/derivation.json"))["record"]
    assert record["derivative"]["id"] == copy.id
    assert record["original"]["recording_id"] == copy.recording
    assert await _count(copy, "extraction") == 1
    assert await _count(copy, "registry_divergence") == 0

    # The approved copy's SHA-256, object, or original changed.
    async with _as_superuser(
        copy, "UPDATE vault.derivatives SET sha256 = :other WHERE id = :id", other="0" * 64
    ):
        await _refused(copy, "sha256 or size differs from the copy the log says was made")
    async with _as_superuser(
        copy, "UPDATE vault.derivatives SET object_key = object_key || '-x' WHERE id = :id"
    ):
        await _refused(copy, "object differs from the one the log says was made")
    async with _as_superuser(
        copy,
        "UPDATE vault.derivatives SET result = jsonb_set(result, '{tools,model_sha256}', "
        "to_jsonb(CAST(:other AS text))) WHERE id = :id",
        other="0" * 64,
    ):
        await _refused(copy, "tools or frames differ from the log's account of the job")
    # The original's row changed: the record would state its day and SHA-256.
    async with _as_superuser(
        copy,
        "UPDATE vault.recordings SET started_at = started_at - interval '1 day' "
        "WHERE id = (SELECT recording_id FROM vault.derivatives WHERE id = :id)",
    ):
        _conflict(await _extract(copy), "this recording's registry row differs")
    other = await _upload(copy.world, copy.kit)
    attached = await copy.world.vault.post(
        f"{copy.procedure}/recordings",
        headers=copy.kit.headers("responsable"),
        json={"recording_id": other, "qualification": "exemple"},
    )
    assert attached.status_code == 201, attached.text
    async with _as_superuser(
        copy,
        "UPDATE vault.derivatives SET recording_id = :other WHERE id = :id",
        other=uuid.UUID(other),
    ):
        await _refused(copy, "0 derivation_requested entries in the log, not one", other)
    assert await _count(copy, "extraction") == 1
