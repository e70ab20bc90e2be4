"""Schemathesis holds the three running services to the contract they publish (their OpenAPI,
shared/openapi.py): no server error, only documented statuses and media types, bodies and
headers that match their schemas, invalid input refused.

Dedicated processes of the three services (`temoin serve`, as tests/fixtures/live.py runs
them) on a database cloned from the migrated template, so that what the fuzzing writes
(organisations, revoked stations, closed procedures...) never reaches another test; they share
the session's S3. Every operation is called with a token of every role (and none), with the
real ids of an organisation built through the API (tests/fixtures/directory.py) in its path:
the roles the authorization matrix allows get many examples, the others a few. An operation
that writes gets an organisation of its own for each role it allows, so that one run never
spoils another's ids. Each operation and role has a fixed seed: a run is reproducible.

Failures are collected rather than raised at the first, and reported once per operation, role
and kind of failure, each with the request that reproduces it (and, for a server error, the
exception the service logged). `pytest tests/test_schemathesis.py -s` also prints what each
operation answered.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup, ServerError
from schemathesis.generation import GenerationMode
from schemathesis.openapi.checks import UndefinedStatusCode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from temoin.embedded import free_port
from tests.fixtures.databases import clone_template, database_url, drop_database
from tests.fixtures.directory import OrgKit, build_org
from tests.fixtures.live import LiveService
from tests.fixtures.servers import Servers
from tests.test_authorization_matrix import (
    DEFAULT_IDS,
    MATRIX,
    ROLES,
    Rule,
    prepare_recordings,
    prepare_training,
)

pytestmark = pytest.mark.contract

SERVICES = ("vault", "ingest", "reporting")
# Examples per operation and role: many for the roles that may call it (their requests reach
# the route's logic), a few for the others (refused before it). Sized so that the three
# services take a few minutes together on a 2-core machine.
ALLOWED_EXAMPLES = 40
REFUSED_EXAMPLES = 2
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
# Invalid input is refused with any 4xx: a tus request without Tus-Resumable gets its 412,
# an Upload-Offset that is not the upload's its 409, before anything else is looked at.
# Reproductions show the request whole (tokens are replaced by the role's name).
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {"negative_data_rejection": {"expected-statuses": ["4XX"]}},
        "output": {"sanitization": {"enabled": False}},
    }
)
READ_ONLY = {"GET", "HEAD", "OPTIONS"}
# Headers sent as a client of the protocol sends them, not generated. Tus-Resumable: the
# OpenAPI documents it as an optional string and every other value gets the 412 (documented);
# generated, it would keep the fuzzing away from every tus route's logic. To be documented
# with its one value in services/ingest/uploads/tus.py (changing on another branch now).
# Clips are bytes: what the upload routes take (random bytes with fuzzed metadata, refused).
for clip_type in ("application/offset+octet-stream", "video/mp4"):
    schemathesis.openapi.media_type(clip_type, st.binary(max_size=4096))
REQUEST_TIMEOUT_S = 30
# A bound on each service's run whatever happens (it takes 10 to 90 s here): past it, the
# remaining operations are not fuzzed and the test fails saying so.
BUDGET_S = 400


def _logged_cause(log: Path, offset: int) -> str:
    """The last exception of the traceback the service logged since ``offset`` (requests are
    made one at a time). Found by position, not by request id: the unexpected error's handler
    runs outside the middleware that tags log entries and answers with the id."""
    with log.open("rb") as file:
        file.seek(offset)
        written = file.read().decode(errors="replace")
    for line in reversed(written.splitlines()):
        if '"exception"' in line:
            raised = _RAISED.findall(str(json.loads(line)["exception"]))
            return raised[-1].strip() if raised else ""
    return ""


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit)\b.*$", re.MULTILINE)


@dataclass
class Stack:
    urls: dict[str, str]
    schemas: dict[str, Any]
    logs: dict[str, Path]
    servers: Servers
    insee: Iterator[int] = field(default_factory=lambda: iter(range(100, 1000)))

    async def kit(self) -> OrgKit:
        """An organisation with a person of each role, a camera, a station, a recording held
        by a procedure, an upload, a consultation's media URL and a finalised report."""
        async with (
            httpx.AsyncClient(base_url=self.urls["vault"], timeout=60) as vault,
            httpx.AsyncClient(base_url=self.urls["ingest"], timeout=60) as ingest,
            httpx.AsyncClient(base_url=self.urls["reporting"], timeout=60) as reporting,
        ):
            kit = await build_org(vault, ingest, self.servers, insee=f"94{next(self.insee)}")
            await prepare_recordings(vault, ingest, kit)
            await prepare_training(vault, kit)  # a training copy asked for
            finalised = await reporting.post(
                f"{kit.path}/report/finalise",
                headers=kit.headers("maire"),
                json={
                    "start": "2026-01-01",
                    "end": "2026-12-31",
                    "signatory": {"name": "Claire Martin", "title": "Maire"},
                },
            )
            assert finalised.status_code == 201, finalised.text
            kit.report_id = uuid.UUID(finalised.json()["id"])
            # A signed tree head, so that inclusion proofs of the kit's entries exist.
            signed = await vault.post("/v1/audit/heads", headers=kit.headers("dpo"))
            assert signed.status_code == 200, signed.text
        return kit


@pytest.fixture(scope="module")
async def stack(
    servers: Servers, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    database = await clone_template(servers, template_database, prefix="fuzz")
    logs = tmp_path_factory.mktemp("fuzz")
    base = {**servers.env(), "DATABASE_URL": database_url(servers, database)}
    services: dict[str, LiveService] = {}
    for name in SERVICES:
        port = free_port()
        env = {**base, f"{name.upper()}_PORT": str(port), f"{name.upper()}_HOST": "127.0.0.1"}
        if name == "ingest":
            env["INGEST_VAULT_URL"] = services["vault"].url
        services[name] = LiveService(name, f"http://127.0.0.1:{port}", env, logs / f"{name}.log")
    try:
        for service in services.values():  # side by side: each takes seconds to import
            service.launch()
        for service in services.values():
            service.wait_ready()
        schemas = {
            name: schemathesis.openapi.from_url(f"{service.url}/openapi.json", config=CONFIG)
            for name, service in services.items()
        }
        yield Stack(
            urls={name: service.url for name, service in services.items()},
            schemas=schemas,
            logs={name: service.log for name, service in services.items()},
            servers=servers,
        )
    finally:
        for service in services.values():
            service.stop()
        await drop_database(servers, database)


@dataclass(frozen=True)
class Finding:
    operation: str
    role: str
    kind: str
    message: str
    request: str


def _roles(rule: Rule) -> list[tuple[str | None, int]]:
    """Each credential to call the operation with, and how many examples it gets."""
    if rule.public:
        return [(None, ALLOWED_EXAMPLES)]
    return [(None, REFUSED_EXAMPLES)] + [
        (role, ALLOWED_EXAMPLES if role in rule.allowed else REFUSED_EXAMPLES) for role in ROLES
    ]


def _real_ids(path: str, rule: Rule, kit: OrgKit) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in re.findall(r"\{(\w+)\}", path):
        value = kit.id if name == "org_id" else rule.ids.get(name, DEFAULT_IDS[name])(kit)
        values[name] = str(value)
    return values


def _strategy(operation: Any, headers: dict[str, str], real: dict[str, str]) -> Any:
    """Valid requests with the kit's ids; invalid ones (negative data); and valid ones with
    ids that are not the kit's. The credential is a fixed header: never mutated, so that an
    invalid request is one whose data, not whose credential, is wrong."""
    fixed = {**headers}
    positive, negative = GenerationMode.POSITIVE, GenerationMode.NEGATIVE
    strategies = [operation.as_strategy(positive, path_parameters=real, headers=fixed)]
    if list(operation.iter_parameters()) or operation.body:
        strategies.append(operation.as_strategy(negative, path_parameters=real, headers=fixed))
    if real:
        strategies.append(operation.as_strategy(positive, headers=fixed))
    return st.one_of(strategies)


def _fuzz(
    operation: Any,
    rule: Rule,
    kit: OrgKit,
    base_url: str,
    log: Path,
    role: str | None,
    examples: int,
    seen: Counter[tuple[str, int]],
) -> list[Finding]:
    findings: list[Finding] = []
    label = operation.label
    token = kit.tokens[role] if role is not None else None
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    session = requests.Session()

    # A seed of its own for each operation and role: reproducible, and each role gets other
    # requests than the next.
    @seed(zlib.crc32(f"{label} {role}".encode()))
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=_strategy(operation, headers, _real_ids(operation.path, rule, kit)))
    def run(case: Any) -> None:
        def found(kind: str, message: str, response: Any = None) -> None:
            request = case.as_curl_command()
            if token is not None and role is not None:
                request = request.replace(token, f"${role.upper()}_TOKEN")
            status = None if response is None else response.status_code
            cause = ""
            if status is not None and status >= 500:
                cause = _logged_cause(log, logged)
                message = f"{message}\nthe service logged: {cause or '(nothing)'}".strip()
            findings.append(Finding(label, role or "anonymous", kind, message, request))

        logged = log.stat().st_size
        try:
            response = case.call(base_url=base_url, session=session, timeout=REQUEST_TIMEOUT_S)
        except requests.RequestException as exc:
            found("No answer", f"{type(exc).__name__}: {exc}")
            return
        seen[(label, response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            failures: list[Failure] = list(group.exceptions)
        except Failure as failure:
            failures = [failure]
        else:
            return
        server_error = any(isinstance(f, ServerError) for f in failures)
        for failure in failures:
            if server_error and isinstance(failure, UndefinedStatusCode):
                continue  # the same 5xx, said twice
            found(failure.title, failure.message, response)

    try:
        run()
    finally:
        session.close()
    return findings


def _report(findings: list[Finding]) -> str:
    """Each operation, role and kind of failure once, with a request that reproduces it."""
    first: dict[tuple[str, str, str], Finding] = {}
    counts: Counter[tuple[str, str, str]] = Counter()
    for finding in findings:
        key = (finding.operation, finding.role, finding.kind)
        first.setdefault(key, finding)
        counts[key] += 1
    blocks = []
    for key, finding in sorted(first.items()):
        message = "\n    ".join(finding.message.strip().splitlines()[:12])
        blocks.append(
            f"{finding.operation} as {finding.role}: {finding.kind} ({counts[key]}x)\n"
            f"    {message}\n    reproduce: {finding.request}"
        )
    return f"{len(first)} distinct failures:\n\n" + "\n\n".join(blocks)


@pytest.mark.parametrize("service", SERVICES)
async def test_service_keeps_its_contract(stack: Stack, service: str) -> None:
    schema = stack.schemas[service]
    operations = [result.ok() for result in schema.get_all_operations()]
    plans: list[tuple[Any, Rule, str | None, int]] = []
    for operation in operations:
        rule = MATRIX[(service, operation.method.upper(), operation.path)]
        plans += [(operation, rule, role, n) for role, n in _roles(rule)]
    # One organisation for all the reading and the refused calls; one for each writing
    # operation and role that may call it, built three at a time.
    writers = [
        index
        for index, (operation, rule, role, _) in enumerate(plans)
        if operation.method.upper() not in READ_ONLY and (rule.public or role in rule.allowed)
    ]
    started = time.monotonic()
    shared = await stack.kit()
    kits: dict[int, OrgKit] = {}
    limit = asyncio.Semaphore(3)

    async def own_kit(index: int) -> None:
        async with limit:
            kits[index] = await stack.kit()

    await asyncio.gather(*(own_kit(index) for index in writers))
    built = time.monotonic() - started
    findings: list[Finding] = []
    seen: Counter[tuple[str, int]] = Counter()
    for index, (operation, rule, role, examples) in enumerate(plans):
        if time.monotonic() - started > BUDGET_S:
            message = f"{BUDGET_S} s spent: this and the remaining operations were not fuzzed"
            findings.append(Finding(operation.label, role or "-", "Time budget", message, ""))
            break
        kit = kits.get(index, shared)
        findings += _fuzz(
            operation, rule, kit, stack.urls[service], stack.logs[service], role, examples, seen
        )
    print(
        f"\n{service}: {len(operations)} operations, {len(writers) + 1} organisations built in "
        f"{built:.0f} s, {sum(seen.values())} requests in "
        f"{time.monotonic() - started - built:.0f} s"
    )
    for operation in operations:
        answers = {code: n for (label, code), n in sorted(seen.items()) if label == operation.label}
        print(f"  {operation.label}: {answers}")
    assert not findings, _report(findings)
