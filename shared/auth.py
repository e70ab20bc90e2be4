"""Who is calling: people with OIDC bearer tokens, checked against the issuer's JWKS.

Roles (R241-12, see docs/roles.md):
    maire, responsable   manage their organisation
    habilite             agent individually designated and authorised (only while active)
    agent                the wearer: their own recordings
    dpo                  audit trail and registry, never content
    prefecture           statistics of their département
    station              docking station (tokens issued by ingest, not by the OIDC issuer)

Keycloak, ProConnect or the built-in development issuer can sign the tokens; the claim names
that carry the organisation, the roles and the département are configurable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import anyio.to_thread
import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from shared.errors import Unauthenticated
from shared.inputs import unstorable_at


class Role(StrEnum):
    maire = "maire"
    responsable = "responsable"
    habilite = "habilite"
    agent = "agent"
    dpo = "dpo"
    prefecture = "prefecture"
    station = "station"


PERSON_ROLES = frozenset(Role) - {Role.station}
# How far the clocks of those who issue tokens and of those who check them may disagree.
CLOCK_TOLERANCE_S = 30.0


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``organisation_id`` is None for a préfecture."""

    subject: str
    roles: frozenset[Role]
    organisation_id: uuid.UUID | None = None
    departement: str | None = None
    # Set by the vault once it has looked the subject up in the directory.
    agent_id: uuid.UUID | None = None
    name: str = field(default="", compare=False)

    def has(self, *roles: Role) -> bool:
        return bool(self.roles.intersection(roles))


@dataclass(frozen=True)
class ClaimNames:
    organisation: str = "org"
    roles: str = "roles"  # a dotted path works too: "realm_access.roles" for Keycloak
    departement: str = "departement"


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def decode_token(
    token: str,
    key: Any,
    *,
    algorithms: Sequence[str],
    audience: str,
    issuer: str,
    required: Sequence[str] = (),
    leeway_s: float = CLOCK_TOLERANCE_S,
    kind: str = "token",
) -> dict[str, Any]:
    """The claims of a JWT, people's and stations' alike, or 401: a signature by ``key``,
    the issuer and audience expected, an expiry not past and an issue time (``iat``) not in
    the future, each against our clock give or take ``leeway_s``, and text the database can
    hold (claims name people and organisations in queries)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            audience=audience,
            issuer=issuer,
            leeway=leeway_s,
            # The issue time is checked below, by our rule rather than the library's default.
            options={"require": ["exp", "iat", *required], "verify_iat": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated(f"{kind} expired") from exc
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid {kind}: {exc}") from exc
    issued_at = claims["iat"]
    if type(issued_at) not in (int, float):
        raise Unauthenticated(f"invalid {kind}: iat is not a number")
    if issued_at > time.time() + leeway_s:
        raise Unauthenticated(f"{kind} issued in the future: check the issuer's clock")
    if unstorable_at(claims, "claims") is not None:
        raise Unauthenticated(f"invalid {kind}: a claim holds NUL or a lone surrogate")
    return claims


def principal_from_claims(claims: Mapping[str, Any], names: ClaimNames) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("token has no subject")
    raw_roles = _claim(claims, names.roles) or []
    if isinstance(raw_roles, str):
        raw_roles = raw_roles.split()
    # Roles the IdP knows but Témoin does not are ignored; a person never gets `station`.
    roles = frozenset(Role(r) for r in raw_roles if r in Role.__members__) & PERSON_ROLES
    organisation_id: uuid.UUID | None = None
    raw_org = _claim(claims, names.organisation)
    if raw_org is not None:
        try:
            organisation_id = uuid.UUID(str(raw_org))
        except ValueError as exc:
            raise Unauthenticated("token organisation claim is not a UUID") from exc
    departement = _claim(claims, names.departement)
    return Principal(
        subject=subject,
        roles=roles,
        organisation_id=organisation_id,
        departement=str(departement) if departement is not None else None,
        name=str(claims.get("name", "")),
    )


class KeySource(Protocol):
    def get_signing_key_from_jwt(self, token: str) -> PyJWK: ...


class FileKeySource:
    """A JWKS on local disk (the development issuer's); read on each use, it is tiny."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get_signing_key_from_jwt(self, token: str) -> PyJWK:
        kid = jwt.get_unverified_header(token).get("kid")
        for key in PyJWKSet.from_json(self.path.read_text()).keys:
            if key.key_id == kid:
                return key
        raise jwt.PyJWKClientError(f"no key {kid!r} in {self.path}")


def key_source(jwks_url: str) -> KeySource:
    if jwks_url.startswith("file://"):
        return FileKeySource(Path(unquote(urlsplit(jwks_url).path)))
    # Keys are cached for 5 minutes; an unknown kid triggers one refetch (key rotation).
    return PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=300, timeout=5)


class TokenVerifier:
    """Verifies people's access tokens: signature (JWKS), issuer, audience, expiry."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        jwks_url: str,
        algorithms: Sequence[str] = ("EdDSA", "RS256", "ES256"),
        claims: ClaimNames | None = None,
        leeway_s: float = CLOCK_TOLERANCE_S,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.claims = claims or ClaimNames()
        self.leeway_s = leeway_s
        self._jwks = key_source(jwks_url)

    async def verify(self, token: str) -> Principal:
        try:
            signing_key = await anyio.to_thread.run_sync(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            raise Unauthenticated("the identity provider's keys cannot be fetched") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        claims = decode_token(
            token,
            signing_key.key,
            algorithms=self.algorithms,
            audience=self.audience,
            issuer=self.issuer,
            required=["sub", "iss", "aud"],
            leeway_s=self.leeway_s,
        )
        return principal_from_claims(claims, self.claims)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("missing bearer token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("expected 'Authorization: Bearer <token>'")
    return token.strip()
