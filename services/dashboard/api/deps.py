from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.dashboard.api.client import ApiClient, ApiProblem, Backends
from services.dashboard.auth.sessions import (
    PERSON,
    Person,
    RolesWithdrawn,
    access_token,
    require_person,
)


def _backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


async def vault_for(request: Request) -> ApiClient:
    """The vault, with the person's token; first, the roles in force now, as the vault says
    them: a habilitation withdrawn (or an agent deactivated) since sign-in takes effect on the
    very next page, which explains it, and the session keeps only the roles still in force."""
    person = await require_person(request)
    vault = ApiClient(_backends(request).vault, access_token(request))
    me = await vault.get("/v1/me", "votre profil")
    now = set(me.get("roles") or [])
    lost = [role for role in person.roles if role not in now]
    if lost:
        stored = dict(request.session[PERSON])
        stored["roles"] = [role for role in person.roles if role in now]
        stored["withheld"] = dict(me.get("withheld") or {})
        request.session[PERSON] = stored
        raise RolesWithdrawn(tuple(lost))
    return vault


async def reporting_for(request: Request) -> ApiClient:
    await require_person(request)
    return ApiClient(_backends(request).reporting, access_token(request))


VaultDep = Annotated[ApiClient, Depends(vault_for)]
ReportingDep = Annotated[ApiClient, Depends(reporting_for)]


def organisation_path(person: Person, nothing: str) -> str:
    """The vault's path of the person's organisation; a token that names none (a préfecture)
    has nothing to ask for there: ``nothing`` says what the page then cannot show."""
    if not person.organisation_id:
        raise ApiProblem(403, f"Votre compte ne désigne aucune organisation : {nothing}.")
    return f"/v1/organisations/{person.organisation_id}"
