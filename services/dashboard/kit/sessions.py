"""Server-side sessions: the browser holds only an opaque, signed id in an HttpOnly cookie; the
person, their access token and ID token stay in this process's memory, so no token ever reaches
the browser (issue 17). A restart signs everyone out, which is the safe failure.

One process holds the sessions: the dashboard runs as a single worker (temoin serve)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from itsdangerous import BadSignature, Signer
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "temoin_session"


@dataclass
class Session:
    data: dict[str, Any]
    created: float
    seen: float


class SessionStore:
    """Sessions by id, each ended by inactivity (``idle_s``) or age (``max_age_s``)."""

    def __init__(self, *, idle_s: float, max_age_s: float) -> None:
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self._sessions: dict[str, Session] = {}

    def get(self, session_id: str) -> Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > self.idle_s or now - session.created > self.max_age_s:
            del self._sessions[session_id]
            return None
        session.seen = now
        return session

    def create(self, data: dict[str, Any]) -> str:
        self._sweep()
        session_id = secrets.token_urlsafe(32)
        now = time.monotonic()
        self._sessions[session_id] = Session(data=data, created=now, seen=now)
        return session_id

    def all(self) -> list[Session]:
        return list(self._sessions.values())

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for key, session in list(self._sessions.items()):
            if now - session.seen > self.idle_s or now - session.created > self.max_age_s:
                del self._sessions[key]


class SessionMiddleware:
    """``scope["session"]``: the session's dict (what Authlib and the pages read and write).

    A page that sets ``scope["session_rotate"]`` (sign-in, sign-out) gets a new id, so that an
    id known before sign-in is worth nothing after it (session fixation)."""

    def __init__(self, app: ASGIApp, *, store: SessionStore, secret: str, secure: bool) -> None:
        self.app = app
        self.store = store
        self.signer = Signer(secret, salt="temoin-dashboard-session")
        self.secure = secure

    def _session_id(self, scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie: SimpleCookie = SimpleCookie()
                try:
                    cookie.load(value.decode("latin-1"))
                except Exception:  # a malformed cookie header is no session, not an error
                    continue
                if COOKIE in cookie:
                    try:
                        return self.signer.unsign(cookie[COOKIE].value).decode()
                    except BadSignature:
                        return None
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session_id = self._session_id(scope)
        existing = self.store.get(session_id) if session_id else None
        data: dict[str, Any] = dict(existing.data) if existing else {}
        scope["session"] = data

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                cookie = self._settle(scope, session_id if existing else None, data)
                if cookie is not None:
                    headers.append("Set-Cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _settle(self, scope: Scope, session_id: str | None, data: dict[str, Any]) -> str | None:
        """Store the session as the page left it; the Set-Cookie header it needs, if any."""
        if scope.get("session_end"):
            if session_id:
                self.store.drop(session_id)
            return self._cookie("", max_age=0)
        if session_id and scope.get("session_rotate"):
            self.store.drop(session_id)
            session_id = None
        if session_id:
            current = self.store.get(session_id)
            if current is not None:
                current.data = data
            return None
        if not data:
            return None
        new_id = self.store.create(data)
        return self._cookie(self.signer.sign(new_id).decode())

    def _cookie(self, value: str, max_age: int | None = None) -> str:
        parts = [f"{COOKIE}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)
