"""Service-to-service calls (ingest to vault) carry the services' own credential, never a
user's token: a shared secret (SERVICE_TOKEN) sent as a bearer token, on loopback or the
deployment's private network only."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.errors import Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="service token")


async def require_service(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected: str = request.app.state.settings.service_token
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthenticated(
            "this route is for Témoin's own services, with the SERVICE_TOKEN they share: "
            "check that ingest, vault and reporting are given the same one"
        )


ServiceCaller = Annotated[None, Depends(require_service)]
