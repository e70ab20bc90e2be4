"""The development OpenID provider: the built-in issuer (temoin/dev_issuer.py) made into a real
OpenID Connect provider for the dashboard's sign-in (authorization code + PKCE S256), so that
`make run` and the tests sign people in as production does with Keycloak or ProConnect.

The protocol is Authlib's (its authorization server, code grant, OpenID Connect extension,
PKCE, RP-initiated logout and userinfo endpoint); this module only adapts it to Starlette,
keeps codes and tokens in memory, and renders the sign-in page, which lists the people of the
directory instead of asking for a password. It signs with the development issuer's key, so
its access tokens are exactly those of `temoin token`. Development only: `temoin run` starts
it, production never does (services/config.py refuses the development issuer).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import uuid
import warnings
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from html import escape
from pathlib import Path
from typing import Any

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    ResourceProtector,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode, UserInfo, UserInfoEndpoint
from authlib.oidc.core.models import AuthorizationCodeMixin
from authlib.oidc.rpinitiated import EndSessionEndpoint, EndSessionRequest
from joserfc.errors import SecurityWarning
from joserfc.jwk import KeySet, OKPKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from temoin.dev_issuer import DevIssuer

CLIENT_ID = "temoin-dashboard"
CLIENTS_FILE = "clients.json"
CODE_TTL_S = 60
ACCESS_TOKEN_TTL = timedelta(hours=8)
ID_TOKEN_TTL_S = 3600
ALGORITHM = "EdDSA"
ACR_VALUES = ("eidas1",)
SCOPES = ("openid", "profile")
# Dev only: the dashboard on the developer's machine, on whatever port it runs.
LOOPBACK = r"http://(127\.0\.0\.1|localhost):\d{1,5}"
REDIRECT_URI = re.compile(LOOPBACK + r"/auth/callback")
POST_LOGOUT_URI = re.compile(LOOPBACK + r"(/[^?#]*)?")
NEW_MAIRE = "nouveau-maire"


@contextmanager
def _eddsa_allowed() -> Iterator[None]:
    """joserfc warns that "EdDSA" is superseded by "Ed25519" (RFC 9864); the services' tokens
    and the issuer's JWKS say EdDSA (PyJWT, shared/auth.py), so this provider does too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        yield


# ---------------------------------------------------------------------------------------------
# Who can sign in: the directory, as the sign-in page lists it.


@dataclass(frozen=True)
class Identity:
    key: str  # what the sign-in form posts
    subject: str
    name: str
    roles: tuple[str, ...]
    organisation_id: uuid.UUID | None = None
    organisation_name: str | None = None
    departement: str | None = None

    def claims(self) -> dict[str, Any]:
        """The claims the services read (shared/auth.py), as `temoin token` sets them."""
        claims: dict[str, Any] = {"sub": self.subject, "name": self.name, "roles": list(self.roles)}
        if self.organisation_id is not None:
            claims["org"] = str(self.organisation_id)
        if self.departement is not None:
            claims["departement"] = self.departement
        return claims


Directory = Callable[[], Awaitable[list[Identity]]]

PEOPLE_SQL = """
SELECT o.id AS organisation_id, o.name AS organisation_name, o.departement,
       a.id AS agent_id, a.first_name, a.last_name, a.subject, a.roles,
       p.habilitation_active
  FROM vault.organisations o
  LEFT JOIN vault.agents a ON a.organisation_id = o.id AND a.subject IS NOT NULL AND a.active
  LEFT JOIN vault.people p ON p.agent_id = a.id
 ORDER BY o.departement, o.name, a.last_name, a.first_name
"""


def identities_of(rows: list[dict[str, Any]]) -> list[Identity]:
    """Each organisation's maire and DPO, its agents with a subject (a responsable signs in as
    responsable; an agent with an active habilitation as habilite, and also as agent if they
    wear a camera), then each département's préfecture."""
    people: list[Identity] = []
    seen_organisations: set[uuid.UUID] = set()
    departements: list[str] = []
    for row in rows:
        org_id: uuid.UUID = row["organisation_id"]
        org_name: str = row["organisation_name"]
        if org_id not in seen_organisations:
            seen_organisations.add(org_id)
            short = org_id.hex[:8]
            for role, title in (("maire", "Maire"), ("dpo", "Délégué à la protection des données")):
                people.append(
                    Identity(
                        key=f"{role}:{org_id}",
                        subject=f"{role}-{short}",
                        name=f"{title} ({org_name})",
                        roles=(role,),
                        organisation_id=org_id,
                        organisation_name=org_name,
                    )
                )
            if row["departement"] not in departements:
                departements.append(row["departement"])
        if row["agent_id"] is None:
            continue
        agent_roles = set(row["roles"] or ())
        roles = []
        if "responsable" in agent_roles:
            roles.append("responsable")
        if row["habilitation_active"]:
            roles.append("habilite")
        if "agent" in agent_roles:
            roles.append("agent")
        if not roles:
            continue
        people.append(
            Identity(
                key=f"agent:{row['agent_id']}",
                subject=row["subject"],
                name=f"{row['first_name']} {row['last_name']}",
                roles=tuple(roles),
                organisation_id=org_id,
                organisation_name=org_name,
            )
        )
    for departement in sorted(departements):
        people.append(
            Identity(
                key=f"prefecture:{departement}",
                subject=f"prefecture-{departement}",
                name=f"Préfecture ({departement})",
                roles=("prefecture",),
                departement=departement,
            )
        )
    return people


def database_directory(database_url: str) -> tuple[Directory, Callable[[], Awaitable[None]]]:
    """Read the directory with plain SQL (the provider is no service: no models, no audit);
    returns the reader and what closes its engine."""
    from sqlalchemy import text

    from shared.db import create_engine

    engine = create_engine(database_url, application_name="temoin-dev-provider", pool_size=2)

    async def read() -> list[Identity]:
        async with engine.connect() as connection:
            result = await connection.execute(text(PEOPLE_SQL))
            return identities_of([dict(row) for row in result.mappings()])

    return read, engine.dispose


def new_maire() -> Identity:
    """The maire of an organisation that does not exist yet: a fresh id to create it with."""
    org_id = uuid.uuid4()
    return Identity(
        key=NEW_MAIRE,
        subject=f"maire-{org_id.hex[:8]}",
        name="Maire d'une nouvelle organisation",
        roles=("maire",),
        organisation_id=org_id,
    )


# ---------------------------------------------------------------------------------------------
# The client, codes and tokens (in memory: dev only).


class _LoopbackURIs:
    """Registered post-logout URIs: any loopback address (`in` is all Authlib asks of it)."""

    def __contains__(self, uri: object) -> bool:
        return isinstance(uri, str) and POST_LOGOUT_URI.fullmatch(uri) is not None


@dataclass
class DevClient(ClientMixin):  # type: ignore[misc]
    """The dashboard: confidential (its secret in var/dev-issuer/clients.json) and PKCE S256,
    as ProConnect registers a service provider."""

    client_id: str
    client_secret: str
    userinfo_jwt: bool = False

    @property
    def client_metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"post_logout_redirect_uris": _LoopbackURIs()}
        if self.userinfo_jwt:
            metadata["userinfo_signed_response_alg"] = ALGORITHM
        return metadata

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # the request must say where: there is no single registered URI

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in (scope or "").split() if s in SCOPES)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return REDIRECT_URI.fullmatch(redirect_uri) is not None

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self.client_secret, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


def load_client(directory: Path) -> DevClient:
    """The dashboard's registration, its secret generated once (mode 600) and kept."""
    path = directory / CLIENTS_FILE
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        registration = {
            CLIENT_ID: {
                "client_secret": secrets.token_urlsafe(32),
                "redirect_uris": "http://127.0.0.1:<port>/auth/callback, "
                "http://localhost:<port>/auth/callback",
                "token_endpoint_auth_method": "client_secret_basic or client_secret_post",
                "code_challenge_method": "S256 (required)",
            }
        }
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            json.dump(registration, handle, indent=2)
    secret = json.loads(path.read_text())[CLIENT_ID]["client_secret"]
    return DevClient(CLIENT_ID, str(secret))


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    identity: Identity
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    acr: str | None
    auth_time: int
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> str | None:
        return self.acr


@dataclass
class Token(TokenMixin):  # type: ignore[misc]
    access_token: str
    client: DevClient
    identity: Identity
    scope: str
    expires_at: float

    def check_client(self, client: DevClient) -> bool:
        return client.client_id == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - time.time())

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return False

    def get_user(self) -> Identity:
        return self.identity

    def get_client(self) -> DevClient:
        return self.client


@dataclass
class Memory:
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    nonces: set[tuple[str, str]] = field(default_factory=set)

    def forget_expired(self) -> None:
        now = time.time()
        for code in [c for c, v in self.codes.items() if v.expires_at <= now]:
            del self.codes[code]
        for token in [t for t, v in self.tokens.items() if v.expires_at <= now]:
            del self.tokens[token]


# ---------------------------------------------------------------------------------------------
# Authlib's server, adapted to Starlette (Authlib ships Flask and Django adapters only).


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._data: dict[str, str] = {}
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in pairs:
            self._data.setdefault(name, value)
            self._datalist[name].append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class StarletteOAuth2Request(OAuth2Request):  # type: ignore[misc]
    """What Authlib reads of a request: method, URL, headers, query and form (read before,
    since Authlib is synchronous and Starlette reads a body asynchronously)."""

    def __init__(
        self, request: Request, form: list[tuple[str, str]], *, drop: tuple[str, ...] = ()
    ) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        query = list(request.query_params.multi_items())
        self._args = dict(query)
        self._form = {k: v for k, v in form if k not in drop}
        self.payload = _Payload([(k, v) for k, v in query + form if k not in drop])

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @classmethod
    async def read(cls, request: Request, *, drop: tuple[str, ...] = ()) -> StarletteOAuth2Request:
        form: list[tuple[str, str]] = []
        if request.method == "POST":
            data = await request.form()
            form = [(k, v) for k, v in data.multi_items() if isinstance(v, str)]
        return cls(request, form, drop=drop)


def _response(status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
    if isinstance(body, dict):
        content = json.dumps(body).encode()
        headers = [*headers]
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
    else:
        content = (body or "").encode() if isinstance(body, str) else body
    response = Response(content, status_code=status)
    for name, value in headers:
        response.headers[name] = value
    return response


@dataclass
class ProviderConfig:
    issuer: DevIssuer  # the key, the JWKS, the issuer identifier and the audience
    client: DevClient
    directory: Directory


class DevAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, config: ProviderConfig, memory: Memory) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self.config = config
        self.memory = memory
        self.register_token_generator("default", self._generate_token)

    def query_client(self, client_id: str) -> DevClient | None:
        return self.config.client if client_id == self.config.client.client_id else None

    def _generate_token(
        self,
        grant_type: str,
        client: DevClient,
        user: Identity | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        assert user is not None
        access_token = self.config.issuer.mint(
            user.subject,
            user.roles,
            organisation_id=user.organisation_id,
            departement=user.departement,
            name=user.name,
            ttl=ACCESS_TOKEN_TTL,
        )
        return {
            "token_type": "Bearer",
            "access_token": access_token,
            "expires_in": int(ACCESS_TOKEN_TTL.total_seconds()),
            "scope": scope or "",
        }

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.memory.tokens[token["access_token"]] = Token(
            access_token=token["access_token"],
            client=request.client,
            identity=request.user,
            scope=token.get("scope", ""),
            expires_at=time.time() + token["expires_in"],
        )

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        raise TypeError("read the request with StarletteOAuth2Request.read first")

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        return _response(status, body, headers)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    server: DevAuthorizationServer

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        acr_values = (data.get("acr_values") or "").split()
        acr = next((value for value in acr_values if value in ACR_VALUES), None)
        self.server.memory.codes[code] = Code(
            code=code,
            client_id=request.client.get_client_id(),
            redirect_uri=request.payload.redirect_uri,
            scope=request.scope,
            identity=request.user,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            acr=acr,
            auth_time=int(time.time()),
            expires_at=time.time() + CODE_TTL_S,
        )
        if data.get("nonce"):
            self.server.memory.nonces.add((request.client.get_client_id(), data["nonce"]))

    def query_authorization_code(self, code: str, client: DevClient) -> Code | None:
        self.server.memory.forget_expired()
        found = self.server.memory.codes.get(code)
        if found is None or found.client_id != client.get_client_id():
            return None
        return found

    def delete_authorization_code(self, authorization_code: Code) -> None:
        self.server.memory.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: Code) -> Identity:
        return authorization_code.identity


class S256Required(CodeChallenge):  # type: ignore[misc]
    """PKCE on every request, S256 only (Authlib's default also allows plain, and no PKCE at
    all for a confidential client)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        from authlib.oauth2.rfc6749 import InvalidRequestError

        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE is required: code_challenge with method S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        from authlib.oauth2.rfc6749 import InvalidRequestError

        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


def _user_info(identity: Identity) -> UserInfo:
    return UserInfo(identity.claims())


class DevOpenIDCode(OpenIDCode):  # type: ignore[misc]
    def __init__(self, config: ProviderConfig, memory: Memory) -> None:
        super().__init__(require_nonce=False)
        self.config = config
        self.memory = memory

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return (request.payload.client_id, nonce) in self.memory.nonces

    def resolve_client_private_key(self, client: DevClient) -> OKPKey:
        return _private_jwk(self.config.issuer)

    def get_client_algorithm(self, client: DevClient) -> str:
        return ALGORITHM

    def get_encode_header(self, client: DevClient) -> dict[str, str]:
        return {"alg": ALGORITHM, "kid": _kid(self.config.issuer)}

    def get_client_claims(self, client: DevClient) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.config.issuer.issuer,
            "aud": client.get_client_id(),
            "iat": now,
            "exp": now + ID_TOKEN_TTL_S,
        }

    def generate_user_info(self, user: Identity, scope: str) -> UserInfo:
        return _user_info(user)

    def encode_id_token(self, token: dict[str, Any], request: OAuth2Request) -> str:
        with _eddsa_allowed():
            encoded: str = super().encode_id_token(token, request)
        return encoded


class DevTokenValidator(BearerTokenValidator):  # type: ignore[misc]
    def __init__(self, memory: Memory) -> None:
        super().__init__()
        self.memory = memory

    def authenticate_token(self, token_string: str) -> Token | None:
        return self.memory.tokens.get(token_string)


class DevUserInfoEndpoint(UserInfoEndpoint):  # type: ignore[misc]
    def __init__(self, config: ProviderConfig, protector: ResourceProtector) -> None:
        super().__init__(resource_protector=protector)
        self.config = config

    def __call__(self, request: OAuth2Request) -> tuple[int, Any, list[tuple[str, str]]]:
        # Authlib's own __call__ reads the token through Flask's request; the same, with ours.
        token = self.resource_protector.validate_request(["openid"], request)
        client: DevClient = token.get_client()
        user_info = self.generate_user_info(token.get_user(), token.scope)
        if client.client_metadata.get("userinfo_signed_response_alg"):
            from joserfc import jwt

            user_info["iss"] = self.get_issuer()
            user_info["aud"] = client.client_id
            now = int(time.time())
            user_info["iat"], user_info["exp"] = now, now + ID_TOKEN_TTL_S
            header = {"alg": ALGORITHM, "kid": _kid(self.config.issuer)}
            with _eddsa_allowed():
                data = jwt.encode(header, dict(user_info), self.resolve_private_key(), [ALGORITHM])
            return 200, data, [("Content-Type", "application/jwt")]
        return 200, dict(user_info), [("Content-Type", "application/json")]

    def generate_user_info(self, user: Identity, scope: str) -> UserInfo:
        return _user_info(user)

    def get_issuer(self) -> str:
        return self.config.issuer.issuer

    def resolve_private_key(self) -> OKPKey:
        return _private_jwk(self.config.issuer)


class DevEndSessionEndpoint(EndSessionEndpoint):  # type: ignore[misc]
    def __init__(self, config: ProviderConfig) -> None:
        super().__init__()
        self.config = config

    def get_server_jwks(self) -> KeySet:
        return KeySet.import_key_set(_jwks(self.config.issuer))  # type: ignore[arg-type]

    def get_algorithms(self) -> list[str]:
        return [ALGORITHM]

    def end_session(self, end_session_request: EndSessionRequest) -> None:
        pass  # no session is kept here: each sign-in asks whom to sign in as


def _jwks(issuer: DevIssuer) -> dict[str, Any]:
    jwks: dict[str, Any] = json.loads(issuer.jwks_path.read_text())
    return jwks


def _kid(issuer: DevIssuer) -> str:
    return str(_jwks(issuer)["keys"][0]["kid"])


def _private_jwk(issuer: DevIssuer) -> OKPKey:
    return OKPKey.import_key(issuer.key_path.read_bytes(), {"kid": _kid(issuer), "alg": ALGORITHM})


# ---------------------------------------------------------------------------------------------
# The sign-in page.

ROLE_LABELS = {
    "maire": "maire",
    "dpo": "DPO",
    "responsable": "responsable",
    "habilite": "agent habilité",
    "agent": "agent (porteur de caméra)",
    "prefecture": "préfecture",
}

PAGE = """<!doctype html>
<html lang="fr">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – Témoin (développement)</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 44rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.5; color: #1b1b1b; }}
fieldset {{ border: 0; padding: 0; margin: 0 0 1.5rem; }}
legend {{ font-weight: bold; font-size: 1.2rem; margin-top: 1rem; }}
.choice {{ margin: .4rem 0; }}
.hint {{ color: #555; display: block; margin-left: 1.6rem; }}
button {{ font-size: 1rem; padding: .5rem 1rem; }}
:focus {{ outline: 3px solid #fd0; outline-offset: 2px; }}
.notice {{ background: #eef; padding: .5rem 1rem; }}
</style>
</head>
<body>
<main>
{body}
</main>
</body>
</html>
"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(PAGE.format(title=escape(title), body=body), status_code=status)


def sign_in_page(people: list[Identity], hidden: list[tuple[str, str]], action: str) -> str:
    groups: dict[str, list[Identity]] = {}
    for person in people:
        if person.organisation_name is not None:
            group = person.organisation_name
        else:
            group = "Préfectures"
        groups.setdefault(group, []).append(person)
    parts = [
        "<h1>Se connecter à Témoin</h1>",
        '<p class="notice">Fournisseur d\'identité de développement : choisissez la personne '
        "que vous êtes. En production, la connexion passe par ProConnect ou Keycloak.</p>",
        f'<form method="post" action="{escape(action)}">',
    ]
    parts += [f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in hidden]
    number = 0
    for group, members in [*groups.items(), ("Nouvelle organisation", [new_maire()])]:
        parts.append(f"<fieldset><legend>{escape(group)}</legend>")
        for person in members:
            number += 1
            roles = ", ".join(ROLE_LABELS.get(role, role) for role in person.roles)
            checked = " checked" if number == 1 else ""
            parts.append(
                f'<div class="choice"><input type="radio" id="p{number}" name="person" '
                f'value="{escape(person.key)}" aria-describedby="p{number}-hint"{checked}> '
                f'<label for="p{number}">{escape(person.name)}</label>'
                f'<span class="hint" id="p{number}-hint">rôles : {escape(roles)} '
                f"– identifiant {escape(person.subject)}</span></div>"
            )
        parts.append("</fieldset>")
    parts.append('<button type="submit">Se connecter en tant que cette personne</button>')
    parts.append("</form>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# The app.


def create_app(
    config: ProviderConfig, *, on_shutdown: Callable[[], Awaitable[None]] | None = None
) -> Starlette:
    memory = Memory()
    server = DevAuthorizationServer(config, memory)
    server.register_grant(
        AuthorizationCodeGrant, [S256Required(required=True), DevOpenIDCode(config, memory)]
    )
    protector = ResourceProtector()
    protector.register_token_validator(DevTokenValidator(memory))
    server.register_endpoint(DevUserInfoEndpoint(config, protector))
    server.register_endpoint(DevEndSessionEndpoint(config))
    issuer_url = config.issuer.issuer.rstrip("/")

    def discovery(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "issuer": config.issuer.issuer,
                "authorization_endpoint": f"{issuer_url}/authorize",
                "token_endpoint": f"{issuer_url}/token",
                "userinfo_endpoint": f"{issuer_url}/userinfo",
                "jwks_uri": f"{issuer_url}/jwks",
                "end_session_endpoint": f"{issuer_url}/logout",
                "scopes_supported": list(SCOPES),
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [ALGORITHM],
                "userinfo_signing_alg_values_supported": [ALGORITHM],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
                "acr_values_supported": list(ACR_VALUES),
                "prompt_values_supported": ["none", "login"],
                "claims_supported": [
                    "sub",
                    "name",
                    "org",
                    "roles",
                    "departement",
                    "iss",
                    "aud",
                    "iat",
                    "exp",
                    "auth_time",
                    "nonce",
                    "acr",
                ],
                "claims_parameter_supported": False,
                "request_parameter_supported": False,
            }  # fmt: skip
        )

    def jwks(request: Request) -> JSONResponse:
        return JSONResponse(_jwks(config.issuer))

    def error_page(error: OAuth2Error) -> HTMLResponse:
        body = (
            "<h1>La demande de connexion est refusée</h1>"
            f"<p>{escape(error.error)} : {escape(error.get_error_description() or '')}</p>"
        )
        return _page("Demande refusée", body, status=400)

    async def authorize(request: Request) -> Response:
        oauth_request = await StarletteOAuth2Request.read(request, drop=("person",))
        try:
            grant = server.get_consent_grant(oauth_request)
        except OAuth2Error as error:
            if error.redirect_uri:  # a known client and an allowed URI: tell the client
                return server.handle_error_response(oauth_request, error)  # type: ignore[no-any-return]
            return error_page(error)
        if request.method == "GET":
            hidden = list(request.query_params.multi_items())
            people = await config.directory()
            return _page("Se connecter", sign_in_page(people, hidden, str(request.url.path)))
        form = await request.form()
        choice = form.get("person")
        person: Identity | None = None
        if choice == NEW_MAIRE:
            person = new_maire()
        elif isinstance(choice, str):
            person = next((p for p in await config.directory() if p.key == choice), None)
        if person is None:
            return _page("Se connecter", "<h1>Personne inconnue</h1>", status=400)
        return server.create_authorization_response(  # type: ignore[no-any-return]
            oauth_request, grant_user=person, grant=grant
        )

    async def token(request: Request) -> Response:
        return server.create_token_response(  # type: ignore[no-any-return]
            await StarletteOAuth2Request.read(request)
        )

    async def userinfo(request: Request) -> Response:
        oauth_request = await StarletteOAuth2Request.read(request)
        try:
            return server.create_endpoint_response("userinfo", oauth_request)  # type: ignore[no-any-return]
        except OAuth2Error as error:
            status, body, headers = error()
            return _response(status, body, headers)

    async def logout(request: Request) -> Response:
        oauth_request = await StarletteOAuth2Request.read(request)
        try:
            with _eddsa_allowed():
                validated = server.validate_endpoint_request("end_session", oauth_request)
        except OAuth2Error as error:
            return error_page(error)
        response = server.create_endpoint_response("end_session", validated)
        if response is not None:
            return response  # type: ignore[no-any-return]
        return _page("Déconnecté", "<h1>Vous êtes déconnecté</h1>")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        if on_shutdown is not None:
            await on_shutdown()

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks", jwks),
            Route("/authorize", authorize, methods=["GET", "POST"]),
            Route("/token", token, methods=["POST"]),
            Route("/userinfo", userinfo, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["GET", "POST"]),
            Route("/readyz", healthz),
        ],
        lifespan=lifespan,
    )


def issuer_app(
    var_dir: Path, issuer: str, database_url: str, *, userinfo_jwt: bool = False
) -> Starlette:
    """The provider `temoin run` starts: the development issuer's key under VAR_DIR, the
    directory of that stack's database."""
    dev_issuer = DevIssuer(var_dir / "dev-issuer", issuer=issuer).ensure_keys()
    client = load_client(dev_issuer.directory)
    client.userinfo_jwt = userinfo_jwt
    directory, close = database_directory(database_url)
    return create_app(ProviderConfig(dev_issuer, client, directory), on_shutdown=close)
