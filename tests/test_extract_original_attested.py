"""An original recording is packaged, and passes the scrub's row check, only as the entries the
vault wrote have it (services/vault/audit/registry.py, ``Authenticated``): an insider with the
database superuser's account who changes a recording's row AND its `collecte` entry the same
way, or changes the row and inserts a `collecte` entry saying the same, gets a 409 problem, one
`registry_divergence` alert, and nothing packaged or logged as extracted; a detach made by SQL
with a made-up `detached` entry is reported by the scrub. A recording extracted right after its
upload, its entries not sequenced yet, is packaged. Each alteration is made in a savepoint
rolled back after it (tests/test_extract_copy_attested.py)."""

from __future__ import annotations

import io
import uuid
import zipfile
from typing import Any

import httpx
from nacl.signing import SigningKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.dashboard.api.french import in_french
from services.vault.audit.registry import authenticated, verify_registry
from services.vault.recordings.holds import HoldService
from services.vault.recordings.models import Recording
from services.vault.settings import VaultSettings
from shared import merkle
from shared.audit import AuditWriter, WriterKeys, canonical_bytes, entries, naming, writer_info
from shared.storage import ObjectStore
from tests.fixtures.apps import VAULT_WRITER, settings_for
from tests.fixtures.directory import OrgKit, World
from tests.fixtures.servers import Servers
from tests.test_derivatives import _problem, _procedure, _upload
from tests.test_extract_copy_attested import as_superuser

REFUSED = "this recording's registry row differs from what the log attests"
OTHER = "0" * 64

# Entries change only with their triggers off, which the superuser may do.
_TRIGGERS_OFF = "SET LOCAL session_replication_role = replica"
_TRIGGERS_ON = "SET LOCAL session_replication_role = origin"
# The row and its collecte entry changed alike: a fact of the row, and the same in the entry.
_BOTH = (
    "UPDATE vault.recordings SET {column} = CAST(CAST(:value AS text) AS {kind}) WHERE id = :id; "
    f"{_TRIGGERS_OFF}; "
    "UPDATE audit.entries SET details = jsonb_set(details, '{{{column}}}', to_jsonb("
    "CAST(:value AS text))) WHERE action = 'collecte' "
    "AND recording_ids @> ARRAY[CAST(:id AS uuid)]; "
    f"{_TRIGGERS_ON}"
)
# The row changed, and a collecte entry saying the same inserted (no authenticator, or one
# copied from the true entry).
_INSERTED = (
    "UPDATE vault.recordings SET sha256 = :value WHERE id = :id; "
    "INSERT INTO audit.entries (entry_id, occurred_at, service, action, outcome, "
    "organisation_id, actor_subject, actor_role, recording_ids, details, authenticator) "
    "SELECT gen_random_uuid(), occurred_at, service, action, outcome, organisation_id, "
    "actor_subject, actor_role, recording_ids, jsonb_set(details, '{sha256}', "
    "to_jsonb(CAST(:value AS text))), {authenticator} FROM audit.entries "
    "WHERE action = 'collecte' AND recording_ids @> ARRAY[CAST(:id AS uuid)]"
)


async def _extract(world: World, kit: OrgKit, procedure: str, recording: str) -> httpx.Response:
    return await world.vault.post(
        f"{procedure}/extractions",
        headers=kit.headers("responsable"),
        json={"recording_id": recording, "motif": "réquisition", "destinataires": ["OPJ"]},
    )


async def _count(connection: AsyncConnection, recording: str, action: str) -> int:
    statement = select(func.count()).where(naming(uuid.UUID(recording)), entries.c.action == action)
    return int((await connection.execute(statement)).scalar_one())


async def _refused(
    world: World, kit: OrgKit, connection: AsyncConnection, procedure: str, recording: str,
    words: str,
) -> None:  # fmt: skip
    """Refused with ``words`` among its problems, said in French, alerted once (a second
    attempt adds no alert), nothing logged as extracted."""
    extractions = await _count(connection, recording, "extraction")
    answer = await _extract(world, kit, procedure, recording)
    # A package is not printed: it is binary.
    assert answer.status_code == 409, f"not refused: {answer.headers['content-type']}"
    _problem(answer, 409, REFUSED)
    detail = answer.json()["detail"]
    assert words in detail, detail
    assert (in_french(detail) or "").startswith("La fiche de cet enregistrement"), detail
    assert await _count(connection, recording, "registry_divergence") == 1
    _problem(await _extract(world, kit, procedure, recording), 409, REFUSED)
    assert await _count(connection, recording, "registry_divergence") == 1
    assert await _count(connection, recording, "extraction") == extractions


async def _scrubbed(
    servers: Servers, connection: AsyncConnection, recording: str
) -> list[dict[str, Any]]:
    """The scrub's row check of ``recording`` (fixity.py's last step): the alerts raised."""
    settings = settings_for("vault", servers)
    assert isinstance(settings, VaultSettings)
    async with AsyncSession(
        bind=connection, join_transaction_mode="create_savepoint", info=writer_info(VAULT_WRITER)
    ) as session:
        row = await session.get(Recording, uuid.UUID(recording))
        assert row is not None
        store = ObjectStore(servers.storage)
        await HoldService(session, store, settings).check([row], by="test")
        await session.commit()
    alerts = await connection.execute(
        select(entries.c.details).where(
            naming(uuid.UUID(recording)), entries.c.action == "registry_divergence"
        )
    )
    return [dict(details) for (details,) in alerts]


async def _registry(servers: Servers, connection: AsyncConnection, recording: str) -> list[str]:
    """What `temoin audit verify --registry` says of ``recording``."""
    settings = settings_for("vault", servers)
    assert isinstance(settings, VaultSettings)
    found = await verify_registry(connection, settings.writer_keys())
    return [finding.detail for finding in found if finding.where == f"recording {recording}"]


async def test_an_original_is_packaged_only_as_the_vault_logged_it(
    world: World, connection: AsyncConnection, servers: Servers
) -> None:
    kit = world.own
    recording = await _upload(world, kit)
    procedure = await _procedure(world, kit, "judiciaire", recording)
    values = {"id": uuid.UUID(recording)}

    # The row and its collecte entry changed alike: the entry no longer verifies.
    for column, kind, value in (
        ("started_at", "timestamptz", "2020-01-01T00:00:00+00:00"),
        ("sha256", "text", OTHER),
        ("object_key", "text", "recordings/elsewhere"),
    ):
        statement = _BOTH.format(column=column, kind=kind)
        async with as_superuser(connection, statement, value=value, **values):
            await _refused(
                world, kit, connection, procedure, recording,
                "(collecte) was not written by the vault (invalid)",
            )  # fmt: skip
    statement = _BOTH.format(column="sha256", kind="text")
    async with as_superuser(connection, statement, value=OTHER, **values):
        alerts = await _scrubbed(servers, connection, recording)
        assert [alert["decision"] for alert in alerts] == ["reported"], alerts
        assert "no collecte entry in the log" in alerts[0]["problem"]
    # The row changed and a collecte entry saying the same inserted beside the true one.
    for authenticator, reason in (("NULL", "missing"), ("authenticator", "invalid")):
        statement = _INSERTED.replace("{authenticator}", authenticator)
        async with as_superuser(connection, statement, value=OTHER, **values):
            await _refused(
                world, kit, connection, procedure, recording,
                f"(collecte) was not written by the vault ({reason})",
            )  # fmt: skip
            # `temoin audit verify --registry` counts the same entries (Authenticated).
            found = await _registry(servers, connection, recording)
            assert any(f"not written by the vault ({reason})" in one for one in found), found
    # Detached by SQL, with a made-up `detached` entry: the scrub says so, and that it is held.
    detach = (
        "DELETE FROM vault.procedure_recordings WHERE recording_id = :id; "
        "INSERT INTO audit.entries (entry_id, occurred_at, service, action, outcome, "
        "organisation_id, actor_subject, actor_role, recording_ids, details) "
        "SELECT gen_random_uuid(), now(), 'vault', 'modification', 'success', "
        "organisation_id, 'sql', 'responsable', recording_ids, jsonb_build_object("
        "'procedure', details->>'procedure', 'type', details->>'type', 'event', 'detached') "
        "FROM audit.entries WHERE action = 'modification' "
        "AND recording_ids @> ARRAY[CAST(:id AS uuid)] "
        "AND details->>'event' = 'attached'"
    )
    async with as_superuser(connection, detach, **values):
        alerts = await _scrubbed(servers, connection, recording)
        assert len(alerts) == 1, alerts
        assert "(modification) was not written by the vault (missing)" in alerts[0]["problem"]
        assert "held: row False" in alerts[0]["problem"], alerts

    # Untouched, extracted at once: its entries are not in the log yet (no sequencer here).
    extracted = await _extract(world, kit, procedure, recording)
    assert extracted.status_code == 200, extracted.text
    with zipfile.ZipFile(io.BytesIO(extracted.content)) as archive:
        assert any(name.endswith("/metadata.json") for name in archive.namelist())
    assert await _count(connection, recording, "extraction") == 1
    assert await _count(connection, recording, "registry_divergence") == 0
    assert await _scrubbed(servers, connection, recording) == []


def _entry(writer: AuditWriter | None, txid: int, leaf: int | None) -> dict[str, Any]:
    """An entry as histories() reads it: authenticated by ``writer`` (or by none), of the
    transaction ``txid``, its leaf in the log as it is at position ``leaf``, or none."""
    row: dict[str, Any] = {
        "entry_id": uuid.uuid4(), "occurred_at": None, "service": "vault",
        "action": "collecte", "outcome": "success", "organisation_id": None,
        "actor_subject": "ingest", "actor_role": None, "motif": None, "destinataires": [],
        "recording_ids": [uuid.uuid4()], "procedure_ref": None, "request_id": None,
        "details": {"sha256": OTHER}, "txid_text": str(txid),
    }  # fmt: skip
    canonical = canonical_bytes(row)
    row["authenticator"] = writer.authenticate(canonical) if writer else None
    row["leaf_hash"] = None if leaf is None else merkle.leaf_hash(canonical)
    row["seq"] = leaf
    return row


async def test_entries_older_than_authenticators_count_as_the_sequencer_counts_them() -> None:
    """The sequencer's allowance (no authenticator, a transaction before migration 0010's, a
    position before the log's first authenticated entry), and only for an entry the log holds
    as it is."""
    vault, stranger = (AuditWriter("vault", SigningKey.generate()) for _ in range(2))
    writers = WriterKeys([vault.verifier])
    since, first = 1000, 40
    kept = [_entry(vault, 5000, None), _entry(None, 10, 3)]
    refused = {
        "missing": [
            _entry(None, 5000, 41),
            _entry(None, 10, None),
            # Logged after the first authenticated entry: audit.authentication raised by
            # hand before a sequencer (older than this rule) took it, or its leaf slipped in.
            _entry(None, 10, 42),
        ],
        "unknown_writer": [_entry(stranger, 5000, None)],
    }
    altered = _entry(vault, 5000, 40)
    altered["details"] = {"sha256": "1" * 64}
    legacy_altered = _entry(None, 10, 4)
    legacy_altered["actor_subject"] = "sql"
    refused["invalid"] = [altered]
    refused["missing"].append(legacy_altered)
    rows: list[Any] = kept + [row for rows in refused.values() for row in rows]
    vouched, forged = authenticated(rows, writers, since, first)
    assert [row["entry_id"] for row in vouched] == [row["entry_id"] for row in kept]
    for reason, wrong in refused.items():
        for row in wrong:
            assert forged[row["entry_id"]].endswith(f"not written by the vault ({reason})")
