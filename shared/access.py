"""Who may do what (R241-12): the roles a caller really holds, and the route guards.

A token's roles come from the identity provider; for police agents the vault's directory must
agree, so that the responsable's decisions in Témoin take effect at once:
- ``responsable`` and ``agent`` need an active agent record holding that role;
- ``habilite`` needs, in addition, an active habilitation;
- ``maire``, ``dpo`` and ``prefecture`` are not police agents: their token is enough.

The directory is read through the vault's read-only view ``vault.people``, so every service
applies the same rule.
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, NoReturn

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Boolean, Column, MetaData, Table, Text, select
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncSession

from shared import audit
from shared.audit import AuditAction, AuditEntry, Outcome
from shared.auth import Principal, Role, TokenVerifier, bearer_token
from shared.errors import Forbidden, NotFound
from shared.openapi import raises
from shared.web import SessionDep

people_view = Table(
    "people",
    MetaData(schema="vault"),
    Column("organisation_id", UUID(as_uuid=True)),
    Column("subject", Text),
    Column("agent_id", UUID(as_uuid=True)),
    Column("active", Boolean),
    Column("roles", ARRAY(Text)),
    Column("habilitation_active", Boolean),
)


@dataclass(frozen=True)
class PersonRecord:
    agent_id: uuid.UUID
    active: bool
    roles: frozenset[str]
    habilitation_active: bool


async def fetch_person(
    session: AsyncSession, organisation_id: uuid.UUID, subject: str
) -> PersonRecord | None:
    row = (
        await session.execute(
            select(people_view).where(
                people_view.c.organisation_id == organisation_id,
                people_view.c.subject == subject,
            )
        )
    ).one_or_none()
    if row is None:
        return None
    return PersonRecord(
        agent_id=row.agent_id,
        active=row.active,
        roles=frozenset(row.roles),
        habilitation_active=row.habilitation_active,
    )


def effective_roles(claimed: frozenset[Role], person: PersonRecord | None) -> frozenset[Role]:
    roles = set(claimed)
    active = person is not None and person.active
    for role in (Role.responsable, Role.agent):
        if role in roles and not (active and person is not None and role.value in person.roles):
            roles.discard(role)
    if Role.habilite in roles and not (
        active and person is not None and person.habilitation_active
    ):
        roles.discard(Role.habilite)
    return frozenset(roles)


_bearer = HTTPBearer(auto_error=False, description="OIDC access token")


async def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    authorization = (
        f"{credentials.scheme} {credentials.credentials}" if credentials is not None else None
    )
    verifier: TokenVerifier = request.state.verifier
    principal = await verifier.verify(bearer_token(authorization))
    if principal.organisation_id is None:
        return replace(
            principal, roles=principal.roles - {Role.responsable, Role.agent, Role.habilite}
        )
    person = await fetch_person(session, principal.organisation_id, principal.subject)
    return replace(
        principal,
        roles=effective_roles(principal.roles, person),
        agent_id=person.agent_id if person is not None and person.active else None,
    )


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def refuse(
    request: Request,
    session: AsyncSession,
    principal: Principal,
    error: Forbidden | NotFound,
    organisation_id: uuid.UUID | None,
) -> NoReturn:
    """Log a refused attempt (R241-14), then refuse.

    The entry must outlive the refusal, so it is committed here, before the error rolls the
    request back: guards run before any handler, so the session holds nothing else yet.
    Unauthenticated requests (401) are not logged: anyone could flood the trail with them;
    they are counted in the metrics instead."""
    await audit.append(
        session,
        AuditEntry(
            action=AuditAction.access_refused,
            service=str(request.app.state.service),
            actor_subject=principal.subject,
            actor_role=",".join(sorted(r.value for r in principal.roles)) or None,
            organisation_id=organisation_id or principal.organisation_id,
            outcome=Outcome.refused,
            details={
                "method": request.method,
                "path": request.url.path,
                "status": error.status_code,
                "reason": error.detail,
            },
        ),
    )
    await session.commit()
    raise error


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold one of ``roles`` (else 403, logged)."""

    @raises(403)
    async def guard(request: Request, session: SessionDep, principal: PrincipalDep) -> Principal:
        if not principal.has(*roles):
            error = Forbidden(
                "this action needs one of the roles: " + ", ".join(r.value for r in roles)
            )
            await refuse(request, session, principal, error, None)
        return principal

    return guard


@dataclass(frozen=True)
class OrgAccess:
    """A caller acting inside one organisation, with one of the roles the route allows."""

    principal: Principal
    organisation_id: uuid.UUID
    role: Role  # the allowed role the caller acts under, for the audit trail

    @property
    def subject(self) -> str:
        return self.principal.subject


def organisation_access(*roles: Role) -> Callable[..., Awaitable[OrgAccess]]:
    """A dependency for routes under ``/organisations/{org_id}``: the role first (403), then
    the organisation, which must be the caller's own: another one answers 404, exactly as an
    organisation that does not exist, so ids reveal nothing across organisations."""

    guard = require(*roles)

    @raises(404)
    async def scoped(
        request: Request,
        session: SessionDep,
        org_id: uuid.UUID,
        principal: Annotated[Principal, Depends(guard)],
    ) -> OrgAccess:
        if principal.organisation_id != org_id:
            await refuse(request, session, principal, NotFound("organisation not found"), org_id)
        acting = next(role for role in roles if role in principal.roles)
        return OrgAccess(principal=principal, organisation_id=org_id, role=acting)

    return scoped


__all__ = [
    "OrgAccess",
    "PersonRecord",
    "PrincipalDep",
    "effective_roles",
    "fetch_person",
    "get_principal",
    "organisation_access",
    "refuse",
    "require",
]
