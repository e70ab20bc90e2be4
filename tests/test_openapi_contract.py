"""The contract each service publishes (shared/openapi.py): every status a route can answer is
documented, every error as an RFC 9457 problem, every media type a route returns is named.
tests/test_schemathesis.py then holds the running services to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, get_args

import pytest
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ValidationError

from shared.errors import PROBLEM_JSON
from shared.openapi import document_contract, problems, raises
from tests.fixtures.apps import FACTORIES, settings_for
from tests.fixtures.servers import Servers

SERVICES = tuple(FACTORIES)
# Routes that touch neither the database nor the object store: they cannot answer 503.
NO_DEPENDENCY = {
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/audit/public-key"),
    ("GET", "/v1/receipts/public-key"),
    ("GET", "/v1/reports/public-key"),
    ("OPTIONS", "/v1/uploads"),
}


def _schema(service: str, servers: Servers) -> dict[str, Any]:
    _, create = FACTORIES[service]
    app = create(settings_for(service, servers))
    schema: dict[str, Any] = app.openapi()
    return schema


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    ]


@pytest.fixture(scope="module")
def schemas(servers: Servers) -> dict[str, dict[str, Any]]:
    return {service: _schema(service, servers) for service in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_every_error_is_a_problem(schemas: dict[str, dict[str, Any]], service: str) -> None:
    schema = schemas[service]
    wrong = []
    for method, path, operation in _operations(schema):
        for code, response in operation["responses"].items():
            if int(code) < 400:
                continue
            name = "ValidationProblem" if code == "422" else "Problem"
            expected = {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{name}"}}}
            if response.get("content") != expected:
                wrong.append(f"{method} {path} {code}: {response.get('content')}")
    assert not wrong, "errors not documented as problem details:\n" + "\n".join(wrong)

    components = schema["components"]["schemas"]
    problem = components["Problem"]
    assert set(problem["properties"]) == {"type", "title", "status", "detail", "instance"}
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    errors = components["ValidationProblem"]["allOf"][1]["properties"]["errors"]
    assert set(errors["items"]["properties"]) == {"field", "message", "type", "ctx"}
    assert set(errors["items"]["required"]) == {"field", "message"}
    assert "HTTPValidationError" not in components  # FastAPI's shape, which no route answers


@pytest.mark.parametrize("service", SERVICES)
def test_generic_statuses_follow_from_each_route(
    schemas: dict[str, dict[str, Any]], service: str
) -> None:
    missing = []
    for method, path, operation in _operations(schemas[service]):
        responses = operation["responses"]
        expected = set()
        if operation.get("security"):
            expected.add("401")
        if "{" in path:
            expected |= {"404", "422"}
        if operation.get("parameters") or operation.get("requestBody"):
            expected.add("422")
        if operation.get("requestBody"):
            expected.add("400")
        if (method, path) not in NO_DEPENDENCY:
            expected.add("503")
        if path.startswith("/v1/organisations/"):
            expected.add("403")  # every route in an organisation is guarded by role
        if absent := expected - set(responses):
            missing.append(f"{method} {path}: {sorted(absent)}")
        if (method, path) in NO_DEPENDENCY and "503" in responses:
            missing.append(f"{method} {path}: documents a 503 it cannot answer")
        if "503" in responses and path != "/readyz":
            assert "Retry-After" in responses["503"]["headers"], (method, path)
        if "401" in responses:
            assert "WWW-Authenticate" in responses["401"]["headers"], (method, path)
    assert not missing, "\n".join(missing)


def _media_types(schema: dict[str, Any], method: str, path: str, code: str) -> set[str]:
    response = schema["paths"][path][method.lower()]["responses"][code]
    return set(response.get("content", {}))


def test_media_types_are_those_returned(schemas: dict[str, dict[str, Any]]) -> None:
    vault, ingest, reporting = schemas["vault"], schemas["ingest"], schemas["reporting"]
    clip = {"video/*", "application/octet-stream"}
    for method in ("GET", "HEAD"):
        for code in ("200", "206"):
            assert _media_types(vault, method, "/v1/media/{token}", code) == clip
    extraction = "/v1/organisations/{org_id}/procedures/{procedure_id}/extractions"
    assert _media_types(vault, "POST", extraction, "200") == {"application/zip"}
    audit = "/v1/organisations/{org_id}/audit/entries"
    assert _media_types(vault, "GET", audit, "200") == {"application/json", "text/csv"}
    formats = {"application/json", "text/csv", "application/pdf"}
    for path in ("/v1/organisations/{org_id}/report", "/v1/prefectures/{departement}/table"):
        assert _media_types(reporting, "GET", path, "200") == formats
    # tus answers headers, never a body.
    assert _media_types(ingest, "POST", "/v1/uploads", "201") == set()
    assert _media_types(ingest, "HEAD", "/v1/uploads/{upload_id}", "200") == set()
    for service, schema in schemas.items():
        for method, path, operation in _operations(schema):
            for code, response in operation["responses"].items():
                # FastAPI's placeholder for a route that builds its own Response: it promises
                # a JSON body the route may not send.
                placeholder = response.get("content", {}).get("application/json") == {"schema": {}}
                assert not placeholder, f"{service} {method} {path} {code}"


_bearer = HTTPBearer(auto_error=False)


@raises(403)
async def _guard(credentials: Annotated[Any, Depends(_bearer)]) -> None: ...


@raises(503)
async def _database() -> None: ...


def test_statuses_are_derived_from_dependencies() -> None:
    """The rules, on a small app: a credential gives 401, a marked dependency its statuses, a
    path parameter 404, any parameter 422, and a route adds its own in `responses=`."""
    app = FastAPI()
    document_contract(app)

    @app.get("/things/{thing_id}", dependencies=[Depends(_guard), Depends(_database)])
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @app.post("/plain", responses=problems(409))
    async def plain() -> None: ...

    paths = app.openapi()["paths"]
    assert set(paths["/things/{thing_id}"]["get"]["responses"]) == {
        "200",
        "401",
        "403",
        "404",
        "422",
        "503",
    }
    assert set(paths["/plain"]["post"]["responses"]) == {"200", "409"}


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation holds (a model, a list of them, an optional one)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        for field in annotation.model_fields.values():
            yield from _models(field.annotation)
    for argument in get_args(annotation):
        yield from _models(argument)


# A value of each JSON type, to offer where the schema names another.
WRONG_TYPES: dict[str, Any] = {"boolean": True, "integer": 7, "number": 0.5, "string": "1"}


def _json_types(schema: dict[str, Any]) -> set[str]:
    if "type" in schema:
        return {schema["type"]}
    return {kind for option in schema.get("anyOf", []) for kind in _json_types(option)}


@pytest.mark.parametrize("service", SERVICES)
def test_request_bodies_take_only_their_json_types(servers: Servers, service: str) -> None:
    """Every scalar of every request body refuses a value of another JSON type (no 0.5 for
    a string, no "1" for an integer, no 7 for a boolean): what the schema says, no more."""
    _, create = FACTORIES[service]
    app = create(settings_for(service, servers))
    models: set[type[BaseModel]] = set()
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute) and route.body_field is not None:
            models.update(_models(route.body_field.field_info.annotation))
    lenient = []
    for model in models:
        properties = model.model_json_schema()["properties"]
        for name, field in model.model_fields.items():
            expected = _json_types(properties[field.alias or name])
            if not expected:
                continue  # a nested model or a list: checked on its own
            if "number" in expected:
                expected.add("integer")
            for kind, value in WRONG_TYPES.items():
                if kind in expected:
                    continue
                try:
                    model.model_validate({name: value})
                except ValidationError as error:
                    if any(e["loc"][:1] == (name,) for e in error.errors()):
                        continue
                lenient.append(f"{model.__name__}.{name} ({'/'.join(expected)}) took {value!r}")
    assert models
    assert not lenient, "\n".join(lenient)
