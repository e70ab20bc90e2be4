from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.dashboard.api.client import ApiClient, Backends
from services.dashboard.auth.sessions import access_token, require_person


def _backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


async def vault_for(request: Request) -> ApiClient:
    await require_person(request)
    return ApiClient(_backends(request).vault, access_token(request))


async def reporting_for(request: Request) -> ApiClient:
    await require_person(request)
    return ApiClient(_backends(request).reporting, access_token(request))


VaultDep = Annotated[ApiClient, Depends(vault_for)]
ReportingDep = Annotated[ApiClient, Depends(reporting_for)]
