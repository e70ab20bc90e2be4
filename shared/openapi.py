"""The contract each service publishes: every status a route can answer, as RFC 9457 problem
details, and every media type it returns.

The generic statuses are derived here, once for every route, from what the route depends on
(its whole dependency tree, as FastAPI resolves it):

    a security scheme (a bearer credential)              401, with WWW-Authenticate
    a dependency marked ``raises(...)``                  those statuses: 403 for the role
                                                         guards (shared/access.py), 503 for
                                                         the database session and the store
                                                         (shared/web.py)
    a path parameter (an id that may not exist, or be    404
    another organisation's)
    any parameter or body                                422, naming each field in ``errors``
    a body                                               400 as well, when it cannot be parsed

A route adds what only it can answer, once, in its decorator: ``responses=problems(409)``.
Every 4xx and 5xx is then documented as ``application/problem+json`` (the ``Problem`` schema;
``ValidationProblem`` for 422). A route that builds its own ``Response`` documents its media
types in ``responses=`` too: FastAPI's placeholder (``application/json`` with an empty schema)
is dropped, since it promises a body the route may not send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security.base import SecurityBase
from starlette.routing import BaseRoute

from shared.errors import PROBLEM_JSON

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__temoin_problems__"

DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: a body that cannot be parsed, or a protocol header missing.",
    401: "No valid credential of the kind this route takes (missing, expired, revoked).",
    403: "The caller may not do this (R241-12); the refusal is logged.",
    404: "Not found, or not the caller's: an id of another organisation answers the same.",
    409: "Conflicts with the current state of the resource.",
    410: "Gone: erased, expired or ended; it will not come back.",
    412: "A precondition header is missing or not one this server speaks.",
    413: "More bytes than declared.",
    415: "The body's media type is not one this route takes.",
    416: "No byte of the requested range is in the clip (`Content-Range: bytes */size`).",
    422: "Invalid input: `errors` names each offending field.",
    423: "Another request is writing to this resource: retry in a moment.",
    460: "Checksum mismatch (tus): the body differs from its Upload-Checksum; nothing was kept.",
    502: "The vault failed on this very request (logged there): retrying it will not help.",
    503: "A dependency (database, object store, the vault) does not answer: retry later.",
}

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; extension members may follow.",
    "type": "object",
    "properties": {
        "type": {"type": "string", "format": "uri-reference", "description": "the problem type"},
        "title": {"type": "string", "description": "short summary of the problem type"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "what went wrong, for this occurrence"},
        "instance": {"type": "string", "description": "the path of the request"},
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}

VALIDATION_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "ValidationProblem",
    "description": "A 422 problem: each offending field, and what is wrong with it.",
    "allOf": [
        {"$ref": "#/components/schemas/Problem"},
        {
            "type": "object",
            "properties": {
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {
                                "type": "string",
                                "description": "where: body.x, query.x, header.x, path.x",
                            },
                            "message": {"type": "string"},
                            "type": {
                                "type": "string",
                                "description": "pydantic's error type (string_too_short, "
                                "missing...), for a client to word the error itself; absent "
                                "for the service's own checks",
                            },
                            "ctx": {
                                "type": "object",
                                "description": "the values of that error (min_length...)",
                            },
                        },
                        "required": ["field", "message"],
                    },
                }
            },
            "required": ["errors"],
        },
    ],
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "the scheme to authenticate with: `Bearer`",
            "schema": {"type": "string"},
        }
    },
    503: {
        "Retry-After": {
            "description": "seconds to wait before retrying (RFC 9110 10.2.3)",
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def raises(*statuses: int) -> Callable[[F], F]:
    """Mark a dependency with the statuses it answers, for every route that depends on it."""

    def mark(call: F) -> F:
        setattr(call, _MARK, frozenset(getattr(call, _MARK, frozenset())) | set(statuses))
        return call

    return mark


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for statuses only this route answers, with their usual descriptions."""
    return {status: {"description": DESCRIPTIONS[status]} for status in statuses}


def body(*media_types: str, description: str | None = None) -> dict[str, Any]:
    """A response whose body is bytes of one of ``media_types`` (not JSON)."""
    response: dict[str, Any] = {
        "content": {
            media_type: {"schema": {"type": "string", "format": "binary"}}
            for media_type in media_types
        }
    }
    if description is not None:
        response["description"] = description
    return response


def raw_body(*media_types: str, required: bool = True) -> dict[str, Any]:
    """``openapi_extra=`` for a route that reads its body as bytes (a clip): FastAPI cannot
    see such a body in the signature."""
    return {
        "requestBody": {
            "required": required,
            "content": {
                media_type: {"schema": {"type": "string", "format": "binary"}}
                for media_type in media_types
            },
        }
    }


def headers_doc(*names: str) -> dict[str, Any]:
    """Response headers a route sends (their meaning is in the route's protocol)."""
    return {name: {"schema": {"type": "string"}} for name in names}


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    yield dependant
    for sub in dependant.dependencies:
        yield from _dependants(sub)


def derived_statuses(dependant: Dependant) -> set[int]:
    """The statuses a route can answer because of what it depends on (its dependant)."""
    statuses: set[int] = set()
    for each in _dependants(dependant):
        if isinstance(each.call, SecurityBase):
            statuses.add(401)
        statuses |= getattr(each.call, _MARK, frozenset())
        if each.path_params:
            statuses |= {404, 422}
        if each.query_params or each.header_params or each.cookie_params or each.body_params:
            statuses.add(422)
        if each.body_params:  # a body that cannot be parsed (not UTF-8 JSON)
            statuses.add(400)
    return statuses


def _problem_content(status: int) -> dict[str, Any]:
    name = "ValidationProblem" if status == 422 else "Problem"
    return {PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _is_placeholder(content: dict[str, Any]) -> bool:
    return content.get("application/json") == {"schema": {}}


# Headers that describe the request's body, not parameters: HTTP sets them from the body (a
# client choosing its own Content-Length breaks the message's framing), and OpenAPI ignores a
# Content-Type parameter. Routes that stream a raw body read them to check what came.
BODY_HEADERS = frozenset({"content-length", "content-type"})


def _complete_operation(operation: dict[str, Any], statuses: set[int]) -> None:
    if "parameters" in operation:
        operation["parameters"] = [
            parameter
            for parameter in operation["parameters"]
            if not (parameter["in"] == "header" and parameter["name"].lower() in BODY_HEADERS)
        ]
        if not operation["parameters"]:
            del operation["parameters"]
    if "requestBody" in operation:  # a raw body too (raw_body): cut short, it is a 400
        statuses = statuses | {400, 422}
    responses: dict[str, Any] = operation["responses"]
    for status in statuses:
        responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
    for code, response in responses.items():
        if not code.isdigit():
            continue
        status = int(code)
        if status >= 400:
            response["content"] = _problem_content(status)
            if status == 422 and response.get("description") == "Validation Error":
                response["description"] = DESCRIPTIONS[422]
            for name, header in _HEADERS.get(status, {}).items():
                response.setdefault("headers", {}).setdefault(name, header)
        elif _is_placeholder(response.get("content", {})):
            del response["content"]["application/json"]
            if not response["content"]:
                del response["content"]
    operation["responses"] = dict(sorted(responses.items()))


def complete_schema(schema: dict[str, Any], routes: Sequence[BaseRoute]) -> None:
    """Add to FastAPI's schema the statuses each route can answer, as problem details."""
    # As FastAPI's get_openapi walks them: each route as included (prefix, dependencies).
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        statuses = derived_statuses(route.dependant)
        path = schema["paths"][route.path_format]
        for method in route.methods or ():
            _complete_operation(path[method.lower()], statuses)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    components["ValidationProblem"] = VALIDATION_PROBLEM_SCHEMA
    # FastAPI's own validation error shapes: no route answers them (shared/errors.py).
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def document_contract(app: FastAPI) -> None:
    """Make ``app.openapi()`` publish the whole contract (computed once, on first use)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete_schema(generate(), app.routes)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


__all__ = [
    "DESCRIPTIONS",
    "body",
    "complete_schema",
    "derived_statuses",
    "document_contract",
    "headers_doc",
    "problems",
    "raises",
]
