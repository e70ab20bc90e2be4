"""Who may do what (R241-12): the roles a caller really holds, and the route guards.

A token's roles come from the identity provider; for police agents the vault's directory must
agree, so that the responsable's decisions in Témoin take effect at once:
- ``responsable`` and ``agent`` need an active agent record holding that role;
- ``habilite`` needs, in addition, an active habilitation;
- ``maire``, ``dpo`` and ``prefecture`` are not police agents: their token is enough.

The directory is read through the vault's read-only view ``vault.people``, so every service
applies the same rule.

A refusal names its actual cause and what to do about it (a role the directory withholds and
why, a token naming no organisation or département): the caller, or whoever helps them, should
not have to guess.
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
from shared.auth import ClaimNames, Principal, Role, TokenVerifier, bearer_token
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


DIRECTORY_ROLES = (Role.responsable, Role.agent, Role.habilite)  # the directory must agree


def withheld_reason(
    role: Role, person: PersonRecord | None, organisation_id: uuid.UUID, subject: str
) -> str | None:
    """Why the directory keeps a role the token claims from taking effect, and what to do
    about it; None when the role is in force (or is not the directory's to check)."""
    if role not in DIRECTORY_ROLES:
        return None
    agents = f"/v1/organisations/{organisation_id}/agents"
    # Agents are registered by the managers; the first responsable, by the maire.
    who = "a maire or responsable"
    if role is Role.responsable:
        who = "the maire (or another responsable)"
    if person is None:
        then = (
            f", then the responsable must designate them (POST {agents}/{{agent_id}}/habilitations)"
            if role is Role.habilite
            else ""
        )
        granted = "" if role is Role.habilite else f" with the role {role.value}"
        return (
            f"this token's subject {subject!r} has no agent record in organisation "
            f"{organisation_id}: {who} must register them as an agent{granted} "
            f"(POST {agents}, with subject {subject!r}){then}"
        )
    if not person.active:
        return (
            f"the agent record of {subject!r} in organisation {organisation_id} is "
            f"deactivated: {who} must reactivate it (PATCH {agents}/{person.agent_id}, "
            '"active": true)'
        )
    if role is Role.habilite:
        if person.habilitation_active:
            return None
        return (
            f"{subject!r} holds no active habilitation in organisation {organisation_id}: "
            "the responsable must designate them (R241-12) "
            f"(POST {agents}/{person.agent_id}/habilitations)"
        )
    if role.value not in person.roles:
        return (
            f"the agent record of {subject!r} in organisation {organisation_id} does not hold "
            f"the role {role.value}: {who} must add it to its roles "
            f"(PATCH {agents}/{person.agent_id})"
        )
    return None


def withheld_roles(
    claimed: frozenset[Role], person: PersonRecord | None, organisation_id: uuid.UUID, subject: str
) -> dict[Role, str]:
    """The roles the token claims that the directory does not let take effect, each with why."""
    reasons = {role: withheld_reason(role, person, organisation_id, subject) for role in claimed}
    return {role: reason for role, reason in reasons.items() if reason is not None}


_bearer = HTTPBearer(auto_error=False, description="OIDC access token")


async def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # The header as sent (``credentials`` declares the scheme in OpenAPI, and is None for
    # another scheme, which deserves its own message).
    authorization = request.headers.get("authorization")
    verifier: TokenVerifier = request.state.verifier
    principal = await verifier.verify(bearer_token(authorization))
    if principal.organisation_id is None:
        unplaced = principal.roles & frozenset(DIRECTORY_ROLES)
        reason = (
            f"this token names no organisation (claim {verifier.claims.organisation!r}): the "
            "roles responsable, agent and habilite act inside one; the identity provider's "
            "administrator must add the claim"
        )
        return replace(
            principal,
            roles=principal.roles - unplaced,
            withheld=dict.fromkeys(unplaced, reason),
        )
    person = await fetch_person(session, principal.organisation_id, principal.subject)
    withheld = withheld_roles(principal.roles, person, principal.organisation_id, principal.subject)
    return replace(
        principal,
        roles=principal.roles - withheld.keys(),
        agent_id=person.agent_id if person is not None and person.active else None,
        withheld=withheld,
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


def missing_role(principal: Principal, roles: tuple[Role, ...], claims: ClaimNames) -> str:
    """Why the caller holds none of ``roles``, in words that say what to do."""
    needed = f"this action needs one of the roles {', '.join(r.value for r in roles)}"
    reasons = [principal.withheld[role] for role in roles if role in principal.withheld]
    if reasons:
        return f"{needed}; " + "; ".join(dict.fromkeys(reasons))
    held = ", ".join(sorted(r.value for r in principal.roles)) or "none"
    return (
        f"{needed}; this token's roles are: {held}. If you should hold one of them, the "
        f"identity provider's administrator must add it to the token (claim {claims.roles!r})"
    )


def require(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold one of ``roles`` (else 403, logged)."""

    @raises(403)
    async def guard(request: Request, session: SessionDep, principal: PrincipalDep) -> Principal:
        if not principal.has(*roles):
            verifier: TokenVerifier = request.state.verifier
            error = Forbidden(missing_role(principal, roles, verifier.claims))
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
    organisation that does not exist, so ids reveal nothing across organisations (a token
    naming no organisation at all: 403, saying so)."""

    guard = require(*roles)

    @raises(404)
    async def scoped(
        request: Request,
        session: SessionDep,
        org_id: uuid.UUID,
        principal: Annotated[Principal, Depends(guard)],
    ) -> OrgAccess:
        if principal.organisation_id is None:
            verifier: TokenVerifier = request.state.verifier
            error: Forbidden | NotFound = Forbidden(
                f"this token names no organisation (claim {verifier.claims.organisation!r}): "
                "the identity provider's administrator must add it, with the organisation's id"
            )
            await refuse(request, session, principal, error, org_id)
        if principal.organisation_id != org_id:
            # Worded from the caller's own organisation only: the same for any other one,
            # existing or not.
            error = NotFound(
                f"organisation not found: this token acts for organisation "
                f"{principal.organisation_id}"
            )
            await refuse(request, session, principal, error, org_id)
        acting = next(role for role in roles if role in principal.roles)
        return OrgAccess(principal=principal, organisation_id=org_id, role=acting)

    return scoped


def departement_access() -> Callable[..., Awaitable[Principal]]:
    """A dependency for routes under ``/prefectures/{departement}``: a préfecture (403), whose
    token names that département: another one answers 404, as one with no organisation would,
    and a token naming none answers 403, saying so."""

    guard = require(Role.prefecture)

    @raises(404)
    async def scoped(
        request: Request,
        session: SessionDep,
        principal: Annotated[Principal, Depends(guard)],
    ) -> Principal:
        departement = request.path_params["departement"]
        if principal.departement is None:
            verifier: TokenVerifier = request.state.verifier
            error: Forbidden | NotFound = Forbidden(
                f"this préfecture token names no département (claim "
                f"{verifier.claims.departement!r}): the identity provider's administrator must "
                "add it (94, 2A...); the claim's name is the setting AUTH_DEPARTEMENT_CLAIM"
            )
            await refuse(request, session, principal, error, None)
        if principal.departement != departement:
            error = NotFound(
                f"no such département table: this token is for département {principal.departement}"
            )
            await refuse(request, session, principal, error, None)
        return principal

    return scoped


__all__ = [
    "OrgAccess",
    "PersonRecord",
    "DIRECTORY_ROLES",
    "PrincipalDep",
    "departement_access",
    "fetch_person",
    "get_principal",
    "missing_role",
    "organisation_access",
    "refuse",
    "require",
    "withheld_reason",
    "withheld_roles",
]
