"""Structured JSON logs with a request id, and Prometheus metrics, for every service."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_NOSNIFF = (b"x-content-type-options", b"nosniff")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

HTTP_REQUESTS = Counter(
    "temoin_http_requests_total",
    "HTTP requests answered",
    ["service", "method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "temoin_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts)",
    ["service", "method", "route"],
)


UNAVAILABLE = Counter(
    "temoin_dependency_unavailable_total",
    "Requests or background passes that met the database or the object store unavailable",
    ["dependency"],
)


class OutageLog:
    """One log line per outage of a dependency, not one per request or per pass: an outage is
    over once nothing has met it for ``quiet_s`` seconds. Every occurrence is still counted
    (temoin_dependency_unavailable_total)."""

    def __init__(self, quiet_s: float = 30.0) -> None:
        self.quiet_s = quiet_s
        self._last_seen: dict[str, float] = {}
        self._logger = logging.getLogger("temoin.outage")

    def noticed(self, dependency: str, exc: BaseException) -> None:
        UNAVAILABLE.labels(dependency).inc()
        now = time.monotonic()
        last = self._last_seen.get(dependency)
        self._last_seen[dependency] = now
        if last is None or now - last > self.quiet_s:
            self._logger.error(
                "%s unavailable (%s: %s): answering 503 until it is back",
                dependency,
                type(exc).__name__,
                str(exc).splitlines()[0][:300] if str(exc) else "",
            )


outages = OutageLog()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access log would duplicate ours, unstructured.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class RequestContextMiddleware:
    """Give every request an id (the caller's X-Request-ID when sane), log it, count it. Every
    answer also says ``X-Content-Type-Options: nosniff``: a browser takes each Content-Type as
    given (a clip's, declared by a dock, is never sniffed into HTML)."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service
        self.logger = logging.getLogger(f"temoin.{service}.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Request(scope).headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                headers.append(_NOSNIFF)
                message["headers"] = headers
                route = _route_template(scope)
                HTTP_LATENCY.labels(self.service, scope["method"], route).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = _route_template(scope)
            HTTP_REQUESTS.labels(self.service, scope["method"], route, str(status)).inc()
            self.logger.info(
                "request",
                extra={
                    "fields": {
                        "method": scope["method"],
                        "path": scope["path"],
                        "route": route,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    }
                },
            )
            request_id_var.reset(token)


def _route_template(scope: Scope) -> str:
    # The template, not the raw path, keeps the metric's label set bounded.
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def metrics_response() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
