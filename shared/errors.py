"""Errors as RFC 9457 problem details.

    TemoinError                 any refusal the client can act on (carries its HTTP status)
    ├── BadRequest              400
    ├── Unauthenticated         401
    ├── Forbidden               403
    ├── NotFound                404
    ├── Conflict                409
    ├── Gone                    410
    ├── PreconditionFailed      412
    ├── PayloadTooLarge         413
    ├── UnsupportedMediaType    415
    ├── RangeNotSatisfiable     416 (with Content-Range: bytes */size)
    ├── UnprocessableEntity     422 (names the offending field)
    ├── Locked                  423
    ├── ChecksumMismatch        460 (tus)
    ├── BadGateway              502 (a service this one called failed on the request)
    └── ServiceUnavailable      503 (with Retry-After: a passing outage)

Services raise these, never ``HTTPException``; one handler turns them into
``application/problem+json``. Anything else is a bug: it is logged with its traceback and the
client gets a bare 500 problem without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://temoin.fr/problems/"

_logger = logging.getLogger("temoin.errors")
RETRY_AFTER_S = 5  # what a 503 tells the client to wait: a restart, a failover


class TemoinError(Exception):
    status_code = 500
    title = "Internal error"
    slug = "internal"

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extensions = extensions


class BadRequest(TemoinError):
    status_code = 400
    title = "Bad request"
    slug = "bad-request"


class Unauthenticated(TemoinError):
    status_code = 401
    title = "Authentication required"
    slug = "unauthenticated"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extensions)


class Forbidden(TemoinError):
    status_code = 403
    title = "Forbidden"
    slug = "forbidden"


class NotFound(TemoinError):
    status_code = 404
    title = "Not found"
    slug = "not-found"


class Conflict(TemoinError):
    status_code = 409
    title = "Conflict"
    slug = "conflict"


class Gone(TemoinError):
    status_code = 410
    title = "Gone"
    slug = "gone"


class PreconditionFailed(TemoinError):
    status_code = 412
    title = "Precondition failed"
    slug = "precondition-failed"


class PayloadTooLarge(TemoinError):
    status_code = 413
    title = "Payload too large"
    slug = "payload-too-large"


class UnsupportedMediaType(TemoinError):
    status_code = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class RangeNotSatisfiable(TemoinError):
    """No byte of the requested range is in the representation (RFC 9110 15.5.17)."""

    status_code = 416
    title = "Range not satisfiable"
    slug = "range-not-satisfiable"

    def __init__(self, detail: str, *, size: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail, headers={**(headers or {}), "Content-Range": f"bytes */{size}"})


class UnprocessableEntity(TemoinError):
    status_code = 422
    title = "Invalid input"
    slug = "invalid-input"

    def __init__(
        self,
        detail: str,
        *,
        field: str,
        errors: list[dict[str, str]] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(
            detail, errors=errors or [{"field": field, "message": detail}], **extensions
        )


class Locked(TemoinError):
    status_code = 423
    title = "Locked"
    slug = "locked"


class ChecksumMismatch(TemoinError):
    """tus's checksum extension: the PATCH body differs from its Upload-Checksum."""

    status_code = 460
    title = "Checksum mismatch"
    slug = "checksum-mismatch"


class BadGateway(TemoinError):
    status_code = 502
    title = "Bad gateway"
    slug = "bad-gateway"


class ServiceUnavailable(TemoinError):
    status_code = 503
    title = "Service unavailable"
    slug = "unavailable"

    def __init__(
        self, detail: str, *, headers: Mapping[str, str] | None = None, **extensions: Any
    ) -> None:
        super().__init__(
            detail, headers={"Retry-After": str(RETRY_AFTER_S), **(headers or {})}, **extensions
        )


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    body.update(extensions or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _field_name(loc: Sequence[Any]) -> str:
    # FastAPI locations start with where the value came from: body, query, path, header.
    return ".".join(str(part) for part in loc)


async def _temoin_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TemoinError)
    return problem_response(
        exc.status_code,
        exc.title,
        exc.detail,
        slug=exc.slug,
        instance=request.url.path,
        headers=exc.headers,
        extensions=exc.extensions,
    )


def _field_error(err: Mapping[str, Any]) -> dict[str, Any]:
    """One field's error: where, pydantic's message, and its error ``type`` with the scalar
    values of its ``ctx`` (``string_too_short``, ``{"min_length": 1}``), for a client to say
    it in its own language (the dashboard says it in French)."""
    error: dict[str, Any] = {
        "field": _field_name(err.get("loc", ())),
        "message": str(err.get("msg", "")),
        "type": str(err.get("type", "")),
    }
    ctx = {
        name: value
        for name, value in (err.get("ctx") or {}).items()
        if isinstance(value, str | int | float | bool)
    }
    if ctx:
        error["ctx"] = ctx
    return error


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(err) for err in exc.errors()]
    names = ", ".join(e["field"] for e in errors) or "request"
    return problem_response(
        422,
        "Invalid input",
        f"Invalid value for: {names}",
        slug="invalid-input",
        instance=request.url.path,
        extensions={"errors": errors},
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed", 401: "Authentication required"}
    title = titles.get(exc.status_code, "HTTP error")
    return problem_response(
        exc.status_code,
        title,
        str(exc.detail),
        slug=title.lower().replace(" ", "-"),
        instance=request.url.path,
        headers=exc.headers,
    )


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    # The client went away mid-request: nobody reads this answer, and it is not a bug.
    _logger.info("client disconnected: %s %s", request.method, request.url.path)
    return problem_response(
        400, "Bad request", "the request was cut short", slug="bad-request",
        instance=request.url.path,
    )  # fmt: skip


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    _logger.exception("unhandled error", exc_info=exc)
    return problem_response(
        500,
        "Internal error",
        "The server met an unexpected error; it has been logged.",
        slug="internal",
        instance=request.url.path,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(TemoinError, _temoin_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, unexpected_error)
