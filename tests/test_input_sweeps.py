"""Bad input, swept by class over every route of the three apps (their OpenAPI schemas): each
value the APIs take, in the query, the path, a header or a JSON body, gets the values that
once ended in a 500, and must be refused as the client's error, naming the field.

- every integer has a minimum and a maximum, and 2^63 or 2^64 is refused (422);
- text PostgreSQL cannot store (NUL, a lone UTF-16 surrogate) is refused (422), anywhere;
- an instant at the calendar's ends, with an offset, or without a time zone is refused (422),
  and so is a report's day in year 9999;
- an integer header written other than as digits is refused (422).

A new route or field that forgets the rule fails here. Each request is the authorization
matrix's own example for that route (tests/test_authorization_matrix.py), by a role allowed
there, with one value replaced."""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.clips import METADATA_HEADER, ClipMetadata
from shared.inputs import INT64_MAX
from shared.web import JSON_BODY_LIMIT
from tests.fixtures.clips import make_clip
from tests.fixtures.directory import OrgKit, World
from tests.test_authorization_matrix import _PARAM, DEFAULT_IDS, MATRIX

SERVICES = ("ingest", "vault", "reporting")
NUL = "a\x00b"
SURROGATE = "a\ud800b"


@dataclass(frozen=True)
class Place:
    """One value a route takes: where (query, header, path, body) and its JSON schema."""

    service: str
    method: str
    path: str
    location: str
    name: str  # "offset", "content-length", "communes.0.name"
    schema: dict[str, Any]

    @property
    def field(self) -> str:
        return f"{self.location}.{self.name}"

    def __str__(self) -> str:
        return f"{self.service} {self.method} {self.path} {self.field}"


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _leaves(schema: dict[str, Any], root: dict[str, Any], name: str) -> Iterator[tuple[str, Any]]:
    """(dotted name, schema) of each value a schema takes: objects by property, lists by
    their first item, unions by each arm but null."""
    schema = _resolve(schema, root)
    arms = [
        arm
        for key in ("anyOf", "oneOf", "allOf")
        for arm in schema.get(key, [])
        if _resolve(arm, root).get("type") != "null"
    ]
    if arms:
        for arm in arms:
            yield from _leaves(arm, root, name)
    elif "properties" in schema:
        for prop, sub in schema["properties"].items():
            yield from _leaves(sub, root, f"{name}.{prop}" if name else prop)
    elif schema.get("type") == "array":
        yield from _leaves(schema["items"], root, f"{name}.0")
    else:
        yield name, schema


def _places(service: str, api: dict[str, Any]) -> Iterator[Place]:
    for path, operations in api["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                for name, leaf in _leaves(parameter["schema"], api, parameter["name"]):
                    yield Place(service, method.upper(), path, parameter["in"], name, leaf)
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                for name, leaf in _leaves(content["application/json"]["schema"], api, ""):
                    yield Place(service, method.upper(), path, "body", name, leaf)


def _client(world: World, service: str) -> httpx.AsyncClient:
    clients = {"ingest": world.ingest, "vault": world.vault, "reporting": world.reporting}
    return clients[service]


async def _all_places(world: World) -> list[Place]:
    places = []
    for service in SERVICES:
        api = (await _client(world, service).get("/openapi.json")).json()
        places.extend(_places(service, api))
    return places


def _set(node: Any, parts: list[str], value: Any) -> None:
    head, rest = parts[0], parts[1:]
    key: Any = int(head) if isinstance(node, list) else head
    if isinstance(node, list) and len(node) <= key:
        node.append(None)
    if not rest:
        node[key] = value
        return
    if not isinstance(node[key] if isinstance(node, list) else node.get(key), dict | list):
        node[key] = [] if rest[0].isdigit() else {}
    _set(node[key], rest, value)


@dataclass
class Call:
    """The matrix's example request for a route, which a test then spoils in one place."""

    client: httpx.AsyncClient
    method: str
    path_values: dict[str, str]
    template: str
    headers: dict[str, str]
    params: dict[str, Any]
    body: Any
    content: bytes | None

    @classmethod
    def example(cls, world: World, service: str, method: str, template: str) -> Call:
        rule = MATRIX[(service, method, template)]
        kit: OrgKit = world.own
        values: dict[str, str] = {}
        for name in _PARAM.findall(template):
            found = kit.id if name == "org_id" else rule.ids.get(name, DEFAULT_IDS[name])(kit)
            values[name] = str(found if found is not None else uuid.uuid4())
        headers = {} if rule.public else kit.headers(sorted(rule.allowed)[0])
        content = None
        if rule.raw is not None:
            content, extra = rule.raw(kit)
            headers = {**extra, **headers}
        body = rule.body(kit) if rule.body is not None else None
        return cls(
            _client(world, service), method, values, template, headers, dict(rule.query),
            body, content,
        )  # fmt: skip

    def spoil(self, place: Place, value: Any) -> Call:
        spoiled = replace(
            self,
            path_values=dict(self.path_values),
            headers=dict(self.headers),
            params=dict(self.params),
            body=copy.deepcopy(self.body),
        )
        if place.location == "query":
            spoiled.params[place.name] = value
        elif place.location == "header":
            spoiled.headers = {
                k: v for k, v in spoiled.headers.items() if k.lower() != place.name.lower()
            }
            spoiled.headers[place.name] = value
        elif place.location == "path":
            spoiled.path_values[place.name] = value
        else:
            spoiled.body = {} if spoiled.body is None else spoiled.body
            _set(spoiled.body, place.name.split("."), value)
        return spoiled

    async def send(self, connection: AsyncConnection) -> httpx.Response:
        path = self.template.format(**{k: quote(v, safe="") for k, v in self.path_values.items()})
        headers = dict(self.headers)
        content = self.content
        if self.body is not None:
            # json.dumps escapes what UTF-8 cannot carry: "\ud800" travels as JSON text.
            content = json.dumps(self.body).encode()
            headers["Content-Type"] = "application/json"
        savepoint = await connection.begin_nested()
        try:
            return await self.client.request(
                self.method, path, headers=headers, params=self.params, content=content
            )
        finally:
            await savepoint.rollback()


def _named(response: httpx.Response, place: Place) -> bool:
    """A problem naming the place's field (header names compare without case)."""
    if response.headers.get("content-type") != "application/problem+json":
        return False
    if place.method == "HEAD":
        return True  # no body to read the field from
    fields = [e["field"] for e in response.json().get("errors", [])]
    if place.location == "header":
        return place.field.lower() in {f.lower() for f in fields}
    return place.field in fields


async def _refused(
    world: World, connection: AsyncConnection, places: list[Place], values: list[Any]
) -> list[str]:
    """Send each value at each place; what was not a 422 naming the field."""
    failures = []
    for place in places:
        call = Call.example(world, place.service, place.method, place.path)
        for value in values:
            response = await call.spoil(place, value).send(connection)
            if response.status_code != 422 or not _named(response, place):
                failures.append(
                    f"{place} = {value!r}: {response.status_code} {response.text[:200]}"
                )
    return failures


def _is_integer(place: Place) -> bool:
    return place.schema.get("type") == "integer"


async def test_every_integer_has_bounds_a_column_holds(world: World) -> None:
    unbounded = []
    for place in filter(_is_integer, await _all_places(world)):
        low = place.schema.get("minimum", place.schema.get("exclusiveMinimum"))
        high = place.schema.get("maximum", place.schema.get("exclusiveMaximum"))
        if low is None or high is None or low < -INT64_MAX - 1 or high > INT64_MAX:
            unbounded.append(f"{place}: [{low}, {high}]")
    assert not unbounded, "integers the API takes without bounds:\n" + "\n".join(unbounded)


async def test_integers_beyond_bigint_are_refused(
    world: World, connection: AsyncConnection
) -> None:
    places = [p for p in await _all_places(world) if _is_integer(p)]
    assert len(places) > 20
    values: list[Any] = [2**63, 2**64]
    headers = [p for p in places if p.location == "header"]
    others = [p for p in places if p.location != "header"]
    failures = await _refused(world, connection, others, values)
    failures += await _refused(world, connection, headers, [str(v) for v in values])
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("value", [NUL, SURROGATE], ids=["NUL", "surrogate"])
async def test_unstorable_text_is_refused_in_every_body_field(
    world: World, connection: AsyncConnection, value: str
) -> None:
    """Every JSON body field, whatever its type (the rest of the body need not be valid: the
    text is refused before any route runs)."""
    places = [p for p in await _all_places(world) if p.location == "body"]
    assert {p.service for p in places} == set(SERVICES)
    failures = []
    for place in places:
        call = Call.example(world, place.service, place.method, place.path)
        call.body = {}
        response = await call.spoil(place, value).send(connection)
        if response.status_code != 422 or not _named(response, place):
            failures.append(f"{place}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)


async def test_nul_is_refused_in_every_parameter(world: World, connection: AsyncConnection) -> None:
    """Query, path and header parameters of every route, and a header no route reads. (A
    lone surrogate cannot travel there: URLs and headers carry bytes, read as UTF-8 with
    replacement or as latin-1.)"""
    places = [p for p in await _all_places(world) if p.location in ("query", "path", "header")]
    routes = {(s, m, p) for (s, m, p) in MATRIX}
    places += [Place(s, m, p, "header", "x-probe", {}) for (s, m, p) in sorted(routes)]
    assert {p.location for p in places} == {"query", "path", "header"}
    failures = await _refused(world, connection, places, [NUL])
    assert not failures, "\n".join(failures)


async def test_undecodable_text_in_parameters_is_never_a_server_error(
    world: World, connection: AsyncConnection
) -> None:
    """The UTF-8 form of a surrogate (invalid UTF-8) in every query parameter: replaced on
    decoding, so whatever the answer, it is not a 500."""
    places = [p for p in await _all_places(world) if p.location == "query"]
    failures = []
    for place in places:
        call = Call.example(world, place.service, place.method, place.path)
        call.params = {k: v for k, v in call.params.items() if k != place.name}
        query = "&".join([str(httpx.QueryParams(call.params)), f"{place.name}=%ED%A0%80"])
        call.template = f"{call.template}?{query.lstrip('&')}"
        call.params = {}
        response = await call.send(connection)
        if response.status_code >= 500:
            failures.append(f"{place}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)


INSTANTS = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00"]
DAYS = ["9999-12-31", "0001-01-01"]


async def test_instants_at_the_calendars_ends_or_naive_are_refused(
    world: World, connection: AsyncConnection
) -> None:
    places = await _all_places(world)
    instants = [p for p in places if p.schema.get("format") == "date-time"]
    days = [p for p in places if p.schema.get("format") == "date"]
    assert {p.location for p in instants} == {"query", "body"}
    assert {p.service for p in days} == {"reporting"}
    failures = await _refused(world, connection, instants, INSTANTS)
    failures += await _refused(world, connection, days, DAYS)
    assert not failures, "\n".join(failures)


async def test_integer_headers_are_digits_only(world: World, connection: AsyncConnection) -> None:
    places = [p for p in await _all_places(world) if p.location == "header" and _is_integer(p)]
    # Content-Length is not published (HTTP sets it from the body, shared/openapi.py); the
    # routes that read it take it as the same HeaderCount, and servers refuse a bad one.
    assert {p.name for p in places} >= {"upload-length", "upload-offset"}
    failures = await _refused(world, connection, places, ["+1000", "1_000", " 12", "1e3", "-1"])
    assert not failures, "\n".join(failures)


# Clip metadata travels inside a header (the single POST's Temoin-Metadata, base64url JSON;
# tus's Upload-Metadata, base64 JSON): the same classes, decoded by ClipMetadata.parse.


def _metadata_leaves() -> list[str]:
    schema = ClipMetadata.model_json_schema(ref_template="#/components/schemas/{model}")
    root = {"components": {"schemas": schema.get("$defs", {})}}
    return [name for name, _ in _leaves(schema, root, "")]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _send_metadata(
    world: World, protocol: str, metadata: dict[str, Any], filetype: str = "video/mp4"
) -> httpx.Response:
    kit = world.own
    text = json.dumps(metadata).encode()
    auth = kit.headers("station")
    if protocol == "post":
        encoded = base64.urlsafe_b64encode(text).decode()
        headers = {**auth, METADATA_HEADER: encoded, "Content-Type": filetype}
        return await world.ingest.post("/v1/recordings", content=b"x" * 16, headers=headers)
    headers = {
        **auth,
        "Tus-Resumable": "1.0.0",
        "Upload-Length": "4096",
        "Upload-Metadata": f"metadata {_b64(text)},filetype {_b64(filetype.encode())}",
    }
    return await world.ingest.post("/v1/uploads", headers=headers)


PROTOCOLS = ["post", "tus"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_clip_metadata_refuses_each_class_in_every_field(world: World, protocol: str) -> None:
    _, clip = make_clip(world.own)
    valid = clip.model_dump(mode="json")
    leaves = _metadata_leaves()
    assert {"camera_serial", "place.address", "started_at", "size"} <= set(leaves)
    spoiled: list[tuple[str, Any]] = [(leaf, v) for leaf in leaves for v in (NUL, SURROGATE)]
    spoiled += [(leaf, v) for leaf in ("started_at", "ended_at") for v in INSTANTS]
    spoiled += [("size", 2**63), ("size", 2**64), ("clock_offset_ms", 2**63)]
    failures = []
    for leaf, value in spoiled:
        metadata = copy.deepcopy(valid)
        _set(metadata, leaf.split("."), value)
        response = await _send_metadata(world, protocol, metadata)
        fields = [e["field"] for e in response.json().get("errors", [])]
        if response.status_code != 422 or f"metadata.{leaf}" not in fields:
            failures.append(f"{leaf} = {value!r}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)


async def test_tus_metadata_values_refuse_unstorable_text(world: World) -> None:
    _, clip = make_clip(world.own)
    response = await _send_metadata(world, "tus", clip.model_dump(mode="json"), filetype=NUL)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "header.upload-metadata.filetype"


async def test_json_bodies_are_read_up_to_a_limit(world: World) -> None:
    own = world.own
    big = json.dumps({"name": "x" * JSON_BODY_LIMIT}).encode()
    headers = {**own.headers("maire"), "Content-Type": "application/json"}
    response = await world.vault.put(own.path, content=big, headers=headers)
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
