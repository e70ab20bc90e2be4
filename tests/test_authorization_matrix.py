"""The authorization matrix (R241-12): one declarative table of who may call what.

For every route in the OpenAPI schemas of the three apps, and for every role (and no token at
all), the request is made against the running app:
- in the caller's own organisation: 2xx when the role is allowed, else 403;
- in another organisation, or with an id from another organisation: 404 when the role is
  allowed (nothing leaks about other organisations), else 403;
- with no token, or a token of the wrong kind (a station's on a person's route and the other
  way round): 401.
A route missing from the table fails the suite, so a new endpoint must say who may call it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.clips import METADATA_HEADER
from tests.fixtures.clips import make_clip
from tests.fixtures.directory import OrgKit, World
from tests.test_tus import creation_headers

ROLES = ("maire", "responsable", "habilite", "agent", "dpo", "prefecture", "station", "service")
PEOPLE = frozenset(ROLES) - {"station", "service"}
# Token kinds: people's (OIDC), stations' (issued by ingest), services' (SERVICE_TOKEN). A
# route takes one kind; any other kind is not a credential there (401).
KIND = dict.fromkeys(PEOPLE, "person") | {"station": "station", "service": "service"}

Body = Callable[[OrgKit], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    allowed: frozenset[str] = frozenset()
    public: bool = False
    body: Body | None = None
    # A raw body and headers (uploads) instead of JSON.
    raw: Callable[[OrgKit], tuple[bytes, dict[str, str]]] | None = None
    query: dict[str, Any] = field(default_factory=dict)
    # What "allowed, own organisation" may answer besides 2xx: 404 where success needs data
    # a rolled-back test transaction cannot hold (sequenced audit entries, signed heads);
    # tests/test_audit_api.py checks those routes on committed data.
    also_own: frozenset[int] = frozenset()
    # Path parameters that name objects other than the organisation, and which object of the
    # kit each takes when the route needs a particular one.
    ids: dict[str, Callable[[OrgKit], uuid.UUID | None]] = field(default_factory=dict)


def allow(
    *roles: str,
    body: Body | None = None,
    raw: Callable[[OrgKit], tuple[bytes, dict[str, str]]] | None = None,
    query: dict[str, Any] | None = None,
    also_own: frozenset[int] = frozenset(),
    **ids: Callable[[OrgKit], Any],
) -> Rule:
    return Rule(
        allowed=frozenset(roles),
        body=body,
        raw=raw,
        query=query or {},
        also_own=also_own,
        ids=ids,
    )


def _clip(kit: OrgKit) -> tuple[bytes, dict[str, str]]:
    data, metadata = make_clip(kit)
    return data, {METADATA_HEADER: metadata.encode(), "Content-Type": "video/mp4"}


TUS = {"Tus-Resumable": "1.0.0"}


def _tus_creation(kit: OrgKit) -> tuple[bytes, dict[str, str]]:
    _, metadata = make_clip(kit)
    headers = creation_headers(kit, metadata)
    del headers["Authorization"]
    return b"", headers


def _tus(kit: OrgKit) -> tuple[bytes, dict[str, str]]:
    return b"", TUS


def _tus_patch(kit: OrgKit) -> tuple[bytes, dict[str, str]]:
    return b"", {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}


def _as_station(kit: OrgKit) -> tuple[bytes, dict[str, str]]:
    return b"", {"Temoin-Station": str(kit.station_id)}


def _upload_in(kit: OrgKit) -> dict[str, Any]:
    return {**_check(kit), "content_type": "video/mp4"}


async def prepare_recordings(
    vault: httpx.AsyncClient, ingest: httpx.AsyncClient, kit: OrgKit
) -> None:
    """What routes on recordings need, in the kit's organisation: a clip uploaded with tus
    (the upload and the recording), a procedure holding it, a consultation's media token;
    and wearers allowed to view their own recordings, so that the matrix covers them."""
    organisation = (await vault.get(kit.path, headers=kit.headers("maire"))).json()
    updated = await vault.put(
        kit.path,
        headers=kit.headers("maire"),
        json={
            "name": organisation["name"],
            "departement": organisation["departement"],
            "communes": organisation["communes"],
            "wearer_access": True,
        },
    )
    assert updated.status_code == 200, updated.text
    data, metadata = make_clip(kit)
    response = await ingest.post(
        "/v1/uploads",
        content=data,
        headers=creation_headers(
            kit, metadata, **{"Content-Type": "application/offset+octet-stream"}
        ),
    )
    assert response.status_code == 201, response.text
    kit.upload_id = uuid.UUID(response.headers["Location"].rsplit("/", 1)[1])
    receipt = await ingest.get(
        f"/v1/uploads/{kit.upload_id}/receipt", headers={**kit.headers("station"), **TUS}
    )
    kit.recording_id = uuid.UUID(receipt.json()["recording_id"])
    procedure = await vault.post(
        f"{kit.path}/procedures",
        headers=kit.headers("responsable"),
        json={"type": "judiciaire", "reference": f"PV-{kit.id.hex[:6]}"},
    )
    kit.procedure_id = uuid.UUID(procedure.json()["id"])
    spare = await vault.post(
        f"{kit.path}/procedures", headers=kit.headers("responsable"), json=_procedure(kit)
    )
    kit.spare_procedure_id = uuid.UUID(spare.json()["id"])
    attached = await vault.post(
        f"{kit.path}/procedures/{kit.procedure_id}/recordings",
        headers=kit.headers("responsable"),
        json={"recording_id": str(kit.recording_id), "qualification": "pour le test"},
    )
    assert attached.status_code == 201, attached.text
    consulted = await vault.post(
        f"{kit.path}/recordings/{kit.recording_id}/consultations",
        headers=kit.headers("habilite"),
        json={"motif": "matrice des droits"},
    )
    assert consulted.status_code == 201, consulted.text
    kit.media_token = consulted.json()["url"].rsplit("/", 1)[1]
    kit.consultation_id = uuid.UUID(consulted.json()["id"])


async def prepare_training(vault: httpx.AsyncClient, kit: OrgKit) -> None:
    """What routes on training copies need: a formation procedure holding the kit's recording
    and a copy of it asked for (waiting: no runner sees a rolled-back transaction)."""
    training = await vault.post(
        f"{kit.path}/procedures",
        headers=kit.headers("responsable"),
        json={"type": "formation", "reference": f"FORM-{kit.id.hex[:6]}"},
    )
    kit.training_procedure_id = uuid.UUID(training.json()["id"])
    attached = await vault.post(
        f"{kit.path}/procedures/{kit.training_procedure_id}/recordings",
        headers=kit.headers("responsable"),
        json={"recording_id": str(kit.recording_id), "qualification": "formation"},
    )
    assert attached.status_code == 201, attached.text
    asked = await vault.post(
        f"{kit.path}/procedures/{kit.training_procedure_id}/derivatives",
        headers=kit.headers("habilite"),
        json={"recording_id": str(kit.recording_id), "motif": "formation des agents"},
    )
    assert asked.status_code == 202, asked.text
    kit.derivative_id = uuid.UUID(asked.json()["id"])


def _attach(kit: OrgKit) -> dict[str, Any]:
    return {"recording_id": str(kit.recording_id), "qualification": "qualification"}


def _consult(kit: OrgKit) -> dict[str, Any]:
    return {"motif": "vérification", "purpose": "compte_rendu"}  # purpose: for the wearer


def _extraction(kit: OrgKit) -> dict[str, Any]:
    return {"recording_id": str(kit.recording_id), "motif": "réquisition", "destinataires": ["OPJ"]}


def _derivative(kit: OrgKit) -> dict[str, Any]:
    return {"recording_id": str(kit.recording_id), "motif": "formation des agents"}


def _period(kit: OrgKit) -> dict[str, Any]:
    return {"start": "2026-01-01", "end": "2026-12-31"}


def _finalise(kit: OrgKit) -> dict[str, Any]:
    # The maire has no agent record: the letter's signatory is named.
    return {**_period(kit), "signatory": {"name": "Claire Martin", "title": "Maire"}}


def _evaluation(kit: OrgKit) -> dict[str, Any]:
    return {**_period(kit), "text": "Les interventions sont plus calmes."}


def _procedure(kit: OrgKit) -> dict[str, Any]:
    return {"type": "administrative", "reference": f"ADM-{uuid.uuid4().hex[:6]}"}


def _check(kit: OrgKit) -> dict[str, Any]:
    _, metadata = make_clip(kit)
    return {"station_id": str(kit.station_id), "metadata": metadata.model_dump(mode="json")}


PUBLIC = Rule(public=True)
MANAGERS = ("maire", "responsable")
READERS = (*MANAGERS, "dpo")
FINDERS = (*READERS, "habilite")
TRAINERS = ("responsable", "habilite")  # who ask for and review training copies
AUDITORS = ("dpo", "responsable")
VIEWERS = ("maire", "responsable", "habilite")
WITNESSES = (*AUDITORS, "maire", "prefecture")


def _agent(kit: OrgKit) -> dict[str, Any]:
    return {"matricule": f"N-{uuid.uuid4().hex[:6]}", "first_name": "Nouvel", "last_name": "Agent"}


def _organisation(kit: OrgKit) -> dict[str, Any]:
    return {
        "name": "Police municipale",
        "departement": kit.departement,
        "communes": [{"insee_code": "94038" if kit.departement == "94" else "91027", "name": "C"}],
    }


def _station(kit: OrgKit) -> dict[str, Any]:
    from nacl.signing import SigningKey

    from shared.signatures import public_key_of

    return {"name": "Nouvelle station", "public_key": public_key_of(SigningKey.generate())}


def _assertion(kit: OrgKit) -> dict[str, Any]:
    from datetime import UTC, datetime

    from shared.signatures import StationAssertion

    assert kit.station_key is not None
    return StationAssertion.sign(str(kit.station_id), kit.station_key, datetime.now(UTC)).__dict__


ORG = "/v1/organisations/{org_id}"
MATRIX: dict[tuple[str, str, str], Rule] = {
    **{
        (service, "GET", path): PUBLIC
        for service in ("ingest", "vault", "reporting")
        for path in ("/healthz", "/readyz", "/metrics")
    },
    # ingest
    # Authenticated by the signed assertion in the body, whatever the Authorization header.
    ("ingest", "POST", "/v1/stations/token"): Rule(public=True, body=_assertion),
    ("ingest", "GET", "/v1/stations/me"): allow("station"),
    ("ingest", "POST", "/v1/recordings"): allow("station", raw=_clip),
    ("ingest", "GET", "/v1/receipts/public-key"): PUBLIC,
    # tus: OPTIONS tells capabilities only; every upload is its station's alone.
    ("ingest", "OPTIONS", "/v1/uploads"): PUBLIC,
    ("ingest", "POST", "/v1/uploads"): allow("station", raw=_tus_creation),
    ("ingest", "HEAD", "/v1/uploads/{upload_id}"): allow("station", raw=_tus),
    ("ingest", "PATCH", "/v1/uploads/{upload_id}"): allow("station", raw=_tus_patch),
    ("ingest", "DELETE", "/v1/uploads/{upload_id}"): allow("station", raw=_tus),
    ("ingest", "GET", "/v1/uploads/{upload_id}/receipt"): allow("station"),
    # vault: internal routes, for ingest's service token only
    # The station is named by ingest; another station's upload is not found.
    ("vault", "POST", "/internal/v1/uploads"): allow("service", body=_upload_in),
    ("vault", "GET", "/internal/v1/uploads/{upload_id}"): allow("service", raw=_as_station),
    ("vault", "PATCH", "/internal/v1/uploads/{upload_id}"): allow(
        "service", raw=_as_station, query={"offset": 0}
    ),
    ("vault", "DELETE", "/internal/v1/uploads/{upload_id}"): allow("service", raw=_as_station),
    # vault: the directory
    ("vault", "GET", "/v1/me"): Rule(allowed=PEOPLE),
    ("vault", "PUT", ORG): allow(*MANAGERS, body=_organisation),
    ("vault", "GET", ORG): allow(*FINDERS, "agent"),
    ("vault", "GET", f"{ORG}/agents"): allow(*FINDERS),
    ("vault", "POST", f"{ORG}/agents"): allow(*MANAGERS, body=_agent),
    ("vault", "GET", f"{ORG}/agents/{{agent_id}}"): allow(*FINDERS),
    ("vault", "PATCH", f"{ORG}/agents/{{agent_id}}"): allow(
        *MANAGERS, body=lambda kit: {"first_name": "Renommé"}
    ),
    ("vault", "GET", f"{ORG}/habilitations"): allow(*READERS),
    ("vault", "POST", f"{ORG}/agents/{{agent_id}}/habilitations"): allow(
        "responsable", body=lambda kit: {}, agent_id=lambda kit: kit.agents["wearer"]
    ),
    ("vault", "POST", f"{ORG}/habilitations/{{habilitation_id}}/withdraw"): allow(
        "responsable", body=lambda kit: {"reason": "fin de mission"}
    ),
    ("vault", "GET", f"{ORG}/cameras"): allow(*FINDERS),
    ("vault", "POST", f"{ORG}/cameras"): allow(
        *MANAGERS, body=lambda kit: {"serial": f"NEW-{uuid.uuid4().hex[:6]}", "model": "X"}
    ),
    ("vault", "GET", f"{ORG}/cameras/{{camera_id}}"): allow(*FINDERS),
    ("vault", "PATCH", f"{ORG}/cameras/{{camera_id}}"): allow(
        *MANAGERS, body=lambda kit: {"model": "Reveal D7"}
    ),
    ("vault", "GET", f"{ORG}/cameras/{{camera_id}}/assignments"): allow(*FINDERS),
    ("vault", "POST", f"{ORG}/cameras/{{camera_id}}/assignments"): allow(
        *MANAGERS,
        body=lambda kit: {
            "agent_id": str(kit.agents["habilite"]),
            "starts_at": "2020-01-01T00:00:00Z",
            "ends_at": "2020-02-01T00:00:00Z",
        },
    ),
    ("vault", "POST", f"{ORG}/assignments/{{assignment_id}}/end"): allow(
        *MANAGERS, body=lambda kit: {"ends_at": "2026-06-01T00:00:00Z"}
    ),
    ("vault", "GET", f"{ORG}/stations"): allow(*READERS),
    ("vault", "POST", f"{ORG}/stations"): allow(*MANAGERS, body=_station),
    ("vault", "GET", f"{ORG}/stations/{{station_id}}"): allow(*READERS),
    ("vault", "POST", f"{ORG}/stations/{{station_id}}/revoke"): allow(
        *MANAGERS, body=lambda kit: {"reason": "remplacée"}
    ),
    # vault: the audit trail
    ("vault", "GET", f"{ORG}/audit/entries"): allow(*AUDITORS),
    ("vault", "GET", f"{ORG}/audit/entries/{{entry_id}}/proof"): allow(
        *AUDITORS, also_own=frozenset({404})
    ),
    ("vault", "GET", "/v1/audit/heads"): allow(*WITNESSES),
    ("vault", "POST", "/v1/audit/heads"): allow(*AUDITORS),
    ("vault", "GET", "/v1/audit/consistency"): allow(
        *WITNESSES, query={"first": 1, "second": 1}, also_own=frozenset({404})
    ),
    ("vault", "GET", "/v1/audit/public-key"): PUBLIC,
    # Witnessing: checkpoints and cosignatures carry hashes only, like heads. A cosignature of
    # a checkpoint the rolled-back transaction cannot hold is 404, a malformed one 422;
    # tests/test_witness_live.py sends real ones.
    ("vault", "GET", "/v1/audit/checkpoint"): allow(*WITNESSES, also_own=frozenset({404})),
    ("vault", "POST", "/v1/audit/cosignatures"): allow(
        *WITNESSES,
        body=lambda kit: {"tree_size": 1, "cosignature": "— witness.invalid/w AAAA"},
        also_own=frozenset({404, 422}),
    ),
    ("vault", "GET", "/v1/audit/witnesses"): allow(*WITNESSES),
    # vault: recordings. R241-12: the DPO finds (metadata) but does not view; the wearer
    # only their own, where the service allows it (these organisations do, see prepare_recordings).
    ("vault", "GET", f"{ORG}/recordings"): allow(*FINDERS, "agent"),
    ("vault", "GET", f"{ORG}/recordings/{{recording_id}}"): allow(*FINDERS, "agent"),
    ("vault", "POST", f"{ORG}/recordings/{{recording_id}}/consultations"): allow(
        *VIEWERS, "agent", body=_consult
    ),
    # One closes one's own consultation only (the kit's is the habilité's): 404 for others.
    ("vault", "DELETE", f"{ORG}/recordings/{{recording_id}}/consultations/{{consultation_id}}"): (
        allow(*VIEWERS, "agent", also_own=frozenset({404}))
    ),
    # The media URL is its own credential (a <video> element sends no Authorization).
    ("vault", "GET", "/v1/media/{token}"): PUBLIC,
    ("vault", "HEAD", "/v1/media/{token}"): PUBLIC,
    ("vault", "GET", f"{ORG}/procedures"): allow(*VIEWERS, "dpo"),
    ("vault", "POST", f"{ORG}/procedures"): allow(*VIEWERS, body=_procedure),
    ("vault", "GET", f"{ORG}/procedures/{{procedure_id}}"): allow(*VIEWERS, "dpo"),
    ("vault", "POST", f"{ORG}/procedures/{{procedure_id}}/recordings"): allow(
        *VIEWERS, body=_attach, procedure_id=lambda kit: kit.spare_procedure_id
    ),
    ("vault", "POST", f"{ORG}/procedures/{{procedure_id}}/recordings/{{recording_id}}/detach"): (
        allow(*VIEWERS, body=lambda kit: {"motif": "rattaché par erreur"})
    ),
    ("vault", "POST", f"{ORG}/procedures/{{procedure_id}}/close"): allow(*VIEWERS),
    ("vault", "POST", f"{ORG}/procedures/{{procedure_id}}/extractions"): allow(
        *VIEWERS, body=_extraction
    ),
    # vault: anonymised copies for training (issue 18). The kit's copy is waiting: asking for
    # a second one is 409, and viewing or reviewing it 409 until it is made
    # (tests/test_derivatives_live.py makes one).
    ("vault", "POST", f"{ORG}/procedures/{{procedure_id}}/derivatives"): allow(
        *TRAINERS,
        body=_derivative,
        also_own=frozenset({409}),
        procedure_id=lambda kit: kit.training_procedure_id,
    ),
    ("vault", "GET", f"{ORG}/derivatives"): allow(*TRAINERS, "maire", "dpo"),
    ("vault", "GET", f"{ORG}/derivatives/{{derivative_id}}"): allow(*TRAINERS, "maire", "dpo"),
    ("vault", "POST", f"{ORG}/derivatives/{{derivative_id}}/cancel"): allow(*TRAINERS),
    ("vault", "POST", f"{ORG}/derivatives/{{derivative_id}}/consultations"): allow(
        *TRAINERS, body=lambda kit: {"motif": "vérification"}, also_own=frozenset({409})
    ),
    ("vault", "POST", f"{ORG}/derivatives/{{derivative_id}}/review"): allow(
        *TRAINERS,
        body=lambda kit: {"decision": "approuve", "reason": "aucun visage visible"},
        also_own=frozenset({409}),
    ),
    # reporting: the report is the service's; the préfecture sees its département's table.
    ("reporting", "GET", f"{ORG}/report"): allow(*MANAGERS),
    ("reporting", "PUT", f"{ORG}/report/evaluation"): allow("responsable", body=_evaluation),
    ("reporting", "POST", f"{ORG}/report/finalise"): allow(*MANAGERS, body=_finalise),
    ("reporting", "GET", f"{ORG}/report/finalised/{{report_id}}"): allow(*MANAGERS),
    ("reporting", "GET", "/v1/prefectures/{departement}/table"): allow("prefecture"),
    ("reporting", "GET", "/v1/reports/public-key"): PUBLIC,
}

DEFAULT_IDS: dict[str, Callable[[OrgKit], uuid.UUID | None]] = {
    "agent_id": lambda kit: kit.agents["responsable"],
    "camera_id": lambda kit: kit.camera_id,
    "station_id": lambda kit: kit.station_id,
    "habilitation_id": lambda kit: kit.habilitation_id,
    "assignment_id": lambda kit: kit.assignment_id,
    "entry_id": lambda kit: kit.entry_id,
    "upload_id": lambda kit: kit.upload_id,
    "recording_id": lambda kit: kit.recording_id,
    "procedure_id": lambda kit: kit.procedure_id,
    "token": lambda kit: kit.media_token,
    "consultation_id": lambda kit: kit.consultation_id,
    "derivative_id": lambda kit: kit.derivative_id,
    "report_id": lambda kit: kit.report_id,
    "departement": lambda kit: kit.departement,
}
_PARAM = re.compile(r"\{(\w+)\}")


def _client(world: World, service: str) -> Any:
    return {"ingest": world.ingest, "vault": world.vault, "reporting": world.reporting}[service]


async def test_every_route_has_an_entry(world: World) -> None:
    routes: set[tuple[str, str, str]] = set()
    for service in ("ingest", "vault", "reporting"):
        schema = (await _client(world, service).get("/openapi.json")).json()
        for path, operations in schema["paths"].items():
            routes.update((service, method.upper(), path) for method in operations)
    missing = sorted(routes - set(MATRIX))
    stale = sorted(set(MATRIX) - routes)
    assert not missing, f"routes with no entry in the authorization matrix: {missing}"
    assert not stale, f"entries for routes that no longer exist: {stale}"


def _route_kind(rule: Rule) -> str:
    kinds = {KIND[role] for role in rule.allowed}
    assert len(kinds) == 1, "a route takes one kind of credential"
    return kinds.pop()


def _expected(rule: Rule, service: str, role: str | None, variant: str) -> int | None:
    """The status class expected: 200 means any 2xx."""
    if role is None or KIND[role] != _route_kind(rule):
        return 401  # no credential of the kind this route takes
    if role not in rule.allowed:
        return 403
    return 200 if variant == "own" else 404


# What a refusal must name so that the caller knows what to do: the credential the route
# takes (401), or the roles it needs and those the caller holds (403).
CREDENTIAL_WORDS = {
    "person": ("Bearer", "identity provider"),
    "station": ("station",),
    "service": ("SERVICE_TOKEN",),
}


def _unhelpful(rule: Rule, role: str | None, status: int, detail: str | None) -> str | None:
    """Why a 401 or 403 does not say what to do, or None (HEAD answers have no body)."""
    if rule.public or detail is None:
        return None
    if status == 401:
        words = CREDENTIAL_WORDS[_route_kind(rule)]
        if not any(word in detail for word in words):
            return f"a 401 that names none of {words}: {detail!r}"
    if status == 403 and role is not None and KIND[role] == "person":
        needed = [r for r in rule.allowed if r not in detail]
        if "needs one of the roles" not in detail or needed:
            return f"a 403 that does not name the roles needed ({needed} missing): {detail!r}"
        if f"this token's roles are: {role}" not in detail:
            return f"a 403 that does not name the caller's roles: {detail!r}"
    return None


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[0]} {r[1]} {r[2]}")
async def test_decisions(
    world: World, connection: AsyncConnection, route: tuple[str, str, str]
) -> None:
    service, method, template = route
    rule = MATRIX[route]
    client = _client(world, service)
    params = _PARAM.findall(template)
    variants = ["own"]
    if "org_id" in params:
        variants.append("other_org")
    if set(params) - {"org_id"}:
        variants.append("foreign_id")

    # Recordings and what hangs on them are made per test (they need the object store).
    if set(params) & {"upload_id", "recording_id", "procedure_id", "token", "derivative_id"}:
        for kit in (world.own, world.other):
            await prepare_recordings(world.vault, world.ingest, kit)
            if "derivatives" in template:
                await prepare_training(world.vault, kit)
    if "report_id" in params:
        for kit in (world.own, world.other):
            finalised = await world.reporting.post(
                f"{kit.path}/report/finalise", headers=kit.headers("maire"), json=_finalise(kit)
            )
            assert finalised.status_code == 201, finalised.text
            kit.report_id = uuid.UUID(finalised.json()["id"])

    mismatches: list[str] = []
    for role in (None, *ROLES):
        for variant in variants if role is not None else ["own"]:
            org_kit = world.own if variant != "other_org" else world.other
            id_kit = world.own if variant == "own" else world.other
            values: dict[str, Any] = {"org_id": org_kit.id}
            for name in params:
                if name != "org_id":
                    values[name] = rule.ids.get(name, DEFAULT_IDS[name])(id_kit)
            path = template.format(**values)
            headers = world.own.headers(role) if role is not None else {}
            body = rule.body(id_kit) if rule.body is not None else None
            content = None
            if rule.raw is not None:
                # The caller's own headers: with a foreign id, the id alone is another's.
                content, extra = rule.raw(org_kit)
                headers = {**extra, **headers}
            savepoint = await connection.begin_nested()
            try:
                response = await client.request(
                    method, path, headers=headers, json=body, content=content, params=rule.query
                )
            finally:
                await savepoint.rollback()
            expected = 200 if rule.public else _expected(rule, service, role, variant)
            got = response.status_code
            if expected == 200:
                ok = 200 <= got < 300 or (variant == "own" and got in rule.also_own)
            else:
                ok = got == expected
            if not ok:
                mismatches.append(
                    f"{role or 'anonymous'} [{variant}]: expected {expected}, got {got} "
                    f"{response.text[:160]}"
                )
            elif got >= 400:
                assert response.headers["content-type"] == "application/problem+json"
                detail = response.json()["detail"] if method != "HEAD" else None
                unhelpful = _unhelpful(rule, role, got, detail)
                if unhelpful is not None:
                    mismatches.append(f"{role or 'anonymous'} [{variant}]: {unhelpful}")
    assert not mismatches, f"{method} {template}:\n" + "\n".join(mismatches)
