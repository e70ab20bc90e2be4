"""Server-side sessions, in PostgreSQL (the ``dashboard`` schema), so that every replica of the
dashboard serves every signed-in person: the callback of a sign-in may land on another replica
than the one that sent the person to the provider, and a sign-out on one ends the session on
all (issue 19). The browser holds only an opaque, signed id in an HttpOnly cookie; the person,
their access token and ID token stay on the server (issue 17).

A reader of the table alone learns nothing it can use: a row is found by the SHA-256 of the
session's id, never the id itself (a cookie cannot be rebuilt from it), and its contents are
sealed (XChaCha20-Poly1305) with a key derived from the session secret, bound to that row (a
writer who copies another person's row into their own gets no session). Changing the secret
ends every session, as a restart used to.

Both lifetimes are checked by the database's clock when a session is read, the same for every
replica; `sweep` deletes the rows past them."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from http.cookies import SimpleCookie
from typing import Any

from itsdangerous import BadSignature, Signer
from sqlalchemy import delete, func, insert, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.dashboard.models import StoredSession
from shared.sealing import SealError, open_blob, seal_blob

COOKIE = "temoin_session"
_DATA_KEY_CONTEXT = b"temoin-dashboard-session-data"
_ROW_CONTEXT = b"temoin-dashboard-session/"


def row_key(session_id: str) -> bytes:
    """What the table holds of a session's id: its SHA-256 (the id is 256 random bits)."""
    return hashlib.sha256(session_id.encode()).digest()


def data_key(secret: str) -> bytes:
    """The key that seals the sessions' contents: derived from the session secret (HMAC-SHA256,
    its own context), so that it is never the key that signs the cookie."""
    return hmac.new(secret.encode(), _DATA_KEY_CONTEXT, hashlib.sha256).digest()


class SessionStore:
    """Sessions by id, each ended by inactivity (``idle_s``) or age (``max_age_s``)."""

    def __init__(
        self, engine: AsyncEngine, *, secret: str, idle_s: float, max_age_s: float
    ) -> None:
        self.engine = engine
        self._signer = Signer(secret, salt="temoin-dashboard-session")
        self._key = data_key(secret)
        self.idle = timedelta(seconds=idle_s)
        self.max_age = timedelta(seconds=max_age_s)

    def signed(self, session_id: str) -> str:
        """What the cookie holds: the id and its signature."""
        return self._signer.sign(session_id).decode()

    def unsigned(self, cookie: str) -> str | None:
        """The id a cookie holds, if its signature is ours."""
        try:
            return self._signer.unsign(cookie).decode()
        except BadSignature:
            return None

    def _seal(self, key: bytes, data: dict[str, Any]) -> bytes:
        return seal_blob(self._key, _ROW_CONTEXT + key, json.dumps(data).encode())

    def _expired(self) -> Any:
        return or_(
            StoredSession.seen_at <= func.now() - self.idle,
            StoredSession.created_at <= func.now() - self.max_age,
        )

    async def get(self, session_id: str) -> dict[str, Any] | None:
        """The session's contents, its idle time started again; None when there is none (never
        made, ended, expired, or sealed under another secret), whose row is then deleted."""
        key = row_key(session_id)
        async with self.engine.begin() as connection:
            sealed = await connection.scalar(
                update(StoredSession)
                .where(StoredSession.key == key, ~self._expired())
                .values(seen_at=func.now())
                .returning(StoredSession.sealed)
            )
            if sealed is not None:
                try:
                    data: dict[str, Any] = json.loads(
                        open_blob(self._key, _ROW_CONTEXT + key, sealed)
                    )
                    return data
                except SealError:
                    pass  # another secret's, or altered: no session
            await connection.execute(delete(StoredSession).where(StoredSession.key == key))
        return None

    async def create(self, data: dict[str, Any]) -> str:
        session_id = secrets.token_urlsafe(32)
        key = row_key(session_id)
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(StoredSession).values(
                    key=key, sealed=self._seal(key, data), created_at=func.now(), seen_at=func.now()
                )
            )
        return session_id

    async def save(self, session_id: str, data: dict[str, Any]) -> None:
        """The session's new contents (a session ended meanwhile, elsewhere, stays ended)."""
        key = row_key(session_id)
        async with self.engine.begin() as connection:
            await connection.execute(
                update(StoredSession)
                .where(StoredSession.key == key)
                .values(sealed=self._seal(key, data))
            )

    async def drop(self, session_id: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(StoredSession).where(StoredSession.key == row_key(session_id))
            )

    async def sweep(self) -> int:
        """Delete the sessions past either lifetime (any replica may: the delete is the same)."""
        async with self.engine.begin() as connection:
            result = await connection.execute(delete(StoredSession).where(self._expired()))
        return int(result.rowcount)


class SessionMiddleware:
    """``scope["session"]``: the session's dict (what Authlib and the pages read and write).

    A page that sets ``scope["session_rotate"]`` (sign-in, sign-out) gets a new id, so that an
    id known before sign-in is worth nothing after it (session fixation); one that sets
    ``scope["session_end"]`` ends it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: SessionStore,
        secure: bool,
        sessionless: tuple[str, ...] = (),
    ) -> None:
        """``sessionless``: path prefixes served without reading the session (a style sheet,
        the probes): no database round trip for them."""
        self.app = app
        self.store = store
        self.secure = secure
        self.sessionless = sessionless

    def session_id(self, scope: Scope) -> str | None:
        """The id the request's cookie carries, if its signature is ours."""
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie: SimpleCookie = SimpleCookie()
                try:
                    cookie.load(value.decode("latin-1"))
                except Exception:  # a malformed cookie header is no session, not an error
                    continue
                if COOKIE in cookie:
                    return self.store.unsigned(cookie[COOKIE].value)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"].startswith(self.sessionless):
            scope["session"] = {}  # an error page there renders as for no one; nothing kept
            await self.app(scope, receive, send)
            return
        session_id = self.session_id(scope)
        data: dict[str, Any] = {}
        scope["session"] = data  # before reading: a database away still renders its French page
        existing = await self.store.get(session_id) if session_id else None
        if existing is not None:
            # A copy to write on, nested dicts too: what is stored again is what changed.
            data.update(copy.deepcopy(existing))

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                cookie = await self._settle(
                    scope, session_id if existing is not None else None, existing, data
                )
                if cookie is not None:
                    headers.append("Set-Cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    async def _settle(
        self,
        scope: Scope,
        session_id: str | None,
        before: dict[str, Any] | None,
        data: dict[str, Any],
    ) -> str | None:
        """Store the session as the page left it; the Set-Cookie header it needs, if any."""
        if scope.get("session_end"):
            if session_id:
                await self.store.drop(session_id)
            return self._cookie("", max_age=0)
        if session_id and scope.get("session_rotate"):
            await self.store.drop(session_id)
            session_id = None
        if session_id:
            if data != before:  # most pages only read it: no write then
                await self.store.save(session_id, data)
            return None
        if not data:
            return None
        new_id = await self.store.create(data)
        return self._cookie(self.store.signed(new_id))

    def _cookie(self, value: str, max_age: int | None = None) -> str:
        parts = [f"{COOKIE}={value}", "Path=/", "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)
