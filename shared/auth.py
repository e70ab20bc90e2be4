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

from shared.errors import ServiceUnavailable, Unauthenticated
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
    # Roles the token claims that are not in force (shared/access.py), each with why: what a
    # refusal tells the caller to do.
    withheld: Mapping[Role, str] = field(default_factory=dict, compare=False)

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


PERSON_RENEW = "sign in again to get a new token from the identity provider"
NOT_A_JWT = (
    "not a token (a JWT): send the access token the identity provider issued, as "
    "'Authorization: Bearer <access token>'"
)


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
    renew: str = PERSON_RENEW,
) -> dict[str, Any]:
    """The claims of a JWT, people's and stations' alike, or 401: a signature by ``key``,
    the issuer and audience expected, an expiry not past and an issue time (``iat``) not in
    the future, each against our clock give or take ``leeway_s``, and text the database can
    hold (claims name people and organisations in queries). Each refusal names the cause and
    what to do; ``renew`` says how to get a new token."""
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
    except jwt.PyJWTError as exc:
        raise Unauthenticated(
            _refused_token(exc, kind=kind, audience=audience, issuer=issuer, renew=renew)
        ) from exc
    issued_at = claims["iat"]
    if type(issued_at) not in (int, float):
        raise Unauthenticated(f"invalid {kind}: iat is not a number; {renew}")
    if issued_at > time.time() + leeway_s:
        raise Unauthenticated(
            f"{kind} issued in the future: the issuer's clock or this server's is wrong "
            "(the operator must set them right)"
        )
    if unstorable_at(claims, "claims") is not None:
        raise Unauthenticated(f"invalid {kind}: a claim holds NUL or a lone surrogate")
    return claims


def _refused_token(
    exc: jwt.PyJWTError, *, kind: str, audience: str, issuer: str, renew: str
) -> str:
    """Why PyJWT refused a token, in words that say what to do."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return f"{kind} expired: {renew}"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return f"{kind} not valid yet (nbf): check the clocks, then {renew}"
    if isinstance(exc, jwt.InvalidAudienceError):
        return (
            f"{kind} is for another audience: this service takes tokens whose aud is "
            f"{audience!r}; {renew}, for this service"
        )
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"{kind} is from another issuer: this service takes those of {issuer!r}"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"{kind} lacks the claim {exc.claim!r}: its issuer must set it"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return f"{kind} is signed with an algorithm this service does not take"
    if isinstance(exc, jwt.InvalidSignatureError):
        return f"{kind} signature does not verify: it was altered or signed by another key"
    if isinstance(exc, jwt.DecodeError):
        return f"not a {kind} (a JWT): {renew}"
    return f"invalid {kind}: {exc}; {renew}"


def principal_from_claims(claims: Mapping[str, Any], names: ClaimNames) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("token has no subject (claim 'sub'): its issuer must set it")
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
            raise Unauthenticated(
                f"the token's organisation (claim {names.organisation!r}) is not a UUID: the "
                "identity provider must give the organisation's id in Témoin"
            ) from exc
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
        self._same_issuer(token)
        try:
            signing_key = await anyio.to_thread.run_sync(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWKClientConnectionError as exc:
            # Our outage, not the caller's fault: a new token would not help.
            raise ServiceUnavailable(
                "the identity provider's keys cannot be fetched (AUTH_JWKS_URL): retry later"
            ) from exc
        except jwt.DecodeError as exc:
            raise Unauthenticated(NOT_A_JWT) from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(
                f"the token's signing key is not among the identity provider's ({exc}): "
                f"{PERSON_RENEW}"
            ) from exc
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

    def _same_issuer(self, token: str) -> None:
        """A token of another issuer (a docking station's, another application's) is refused
        before its keys are looked for, with a message naming both issuers."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            return  # not a JWT at all: verify() says so
        if isinstance(issuer, str) and issuer != self.issuer:
            raise Unauthenticated(
                f"this token was issued by {issuer!r}; this service takes people's tokens "
                f"from the identity provider {self.issuer!r}: sign in there"
            )


PERSON_TOKEN = "the access token the identity provider issued"


def bearer_token(authorization: str | None, token: str = PERSON_TOKEN) -> str:
    """The token of an ``Authorization: Bearer`` header, or 401 saying what to send:
    ``token`` names it (a person's, a station's)."""
    if not authorization:
        raise Unauthenticated(f"no token: send 'Authorization: Bearer <access token>', {token}")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthenticated(f"expected 'Authorization: Bearer <access token>', {token}")
    return value.strip()
