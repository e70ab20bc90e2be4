"""The OpenID Connect client: Authlib's Starlette integration does the protocol (discovery,
PKCE S256, state, the code exchange, the ID token's signature and claims, nonce included); this
module adds what ProConnect asks beyond it: long state and nonce, acr_values and the acr
checked on return, a userinfo answer that may be a signed JWT."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from services.dashboard.settings import MINIMUM_STATE_LENGTH, DashboardSettings

PROVIDER = "provider"


class SignInFailed(Exception):
    """The provider's answer cannot be trusted or was a refusal: the person is told, in
    French, and may try again; the detail goes to the log."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(detail or message)
        self.message = message


@dataclass(frozen=True)
class Provider:
    client: StarletteOAuth2App
    acr_values: str | None
    required_acr: frozenset[str]
    api_resource: str | None

    async def metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = await self.client.load_server_metadata()
        return metadata

    def authorize_parameters(self) -> dict[str, str]:
        # 32 random bytes each: 43 characters, above ProConnect's 32.
        parameters = {
            "state": secrets.token_urlsafe(32),
            "nonce": secrets.token_urlsafe(32),
        }
        assert all(len(value) >= MINIMUM_STATE_LENGTH for value in parameters.values())
        if self.acr_values:
            parameters["acr_values"] = self.acr_values
        if self.api_resource:
            parameters["resource"] = self.api_resource
        return parameters

    def check_acr(self, claims: dict[str, Any]) -> None:
        if self.required_acr and claims.get("acr") not in self.required_acr:
            raise SignInFailed(
                "Votre connexion n'a pas le niveau d'authentification exigé "
                "(double authentification). Reconnectez-vous avec un second facteur.",
                f"acr {claims.get('acr')!r} not in {sorted(self.required_acr)}",
            )

    async def api_token(self, token: dict[str, Any]) -> dict[str, Any]:
        """The token the APIs accept: the code's own, or, with a resource indicator, one asked
        for that resource with the refresh token (RFC 8707 section 2.2)."""
        if not self.api_resource:
            return token
        if not token.get("refresh_token"):
            raise SignInFailed(
                "Le fournisseur d'identité n'a pas donné d'accès aux services de Témoin.",
                "no refresh token to ask for the API's resource",
            )
        api: dict[str, Any] = await self.client.fetch_access_token(
            grant_type="refresh_token",
            refresh_token=token["refresh_token"],
            resource=self.api_resource,
        )
        return api

    async def userinfo(self, token: dict[str, Any], id_claims: dict[str, Any]) -> dict[str, Any]:
        """The userinfo endpoint's answer: JSON, or a JWT (application/jwt) signed with a key of
        the provider's JWKS, whose iss and aud are checked; its sub must be the ID token's."""
        metadata = await self.metadata()
        endpoint = metadata.get("userinfo_endpoint")
        if not endpoint:
            return {}
        response = await self.client.get(endpoint, token=token)
        if response.status_code != 200:
            raise SignInFailed(
                "Le fournisseur d'identité n'a pas donné vos informations.",
                f"userinfo answered {response.status_code}",
            )
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/jwt":
            claims = await self._signed_userinfo(response.text, metadata)
        else:
            claims = response.json()
        if not isinstance(claims, dict) or claims.get("sub") != id_claims.get("sub"):
            raise SignInFailed(
                "Les informations du fournisseur d'identité ne concordent pas.",
                "userinfo sub differs from the ID token's",
            )
        return claims

    async def _signed_userinfo(self, value: str, metadata: dict[str, Any]) -> dict[str, Any]:
        algorithms = (
            metadata.get("userinfo_signing_alg_values_supported")
            or metadata.get("id_token_signing_alg_values_supported")
            or ["RS256"]
        )
        registry = JWSRegistry(algorithms=list(algorithms), strict_check_header=False)
        try:
            keys = KeySet.import_key_set(await self.client.fetch_jwk_set())
            try:
                decoded = jwt.decode(value, keys, registry=registry)
            except JoseError:
                # The provider may have rotated its keys since they were fetched.
                keys = KeySet.import_key_set(await self.client.fetch_jwk_set(force=True))
                decoded = jwt.decode(value, keys, registry=registry)
        except (JoseError, ValueError) as error:
            raise SignInFailed(
                "La réponse signée du fournisseur d'identité n'a pas pu être vérifiée.",
                f"userinfo JWT: {error}",
            ) from error
        claims = dict(decoded.claims)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if claims.get("iss") != metadata.get("issuer") or (
            audience is not None and self.client.client_id not in audiences
        ):
            raise SignInFailed(
                "La réponse signée du fournisseur d'identité ne vous est pas destinée.",
                "userinfo JWT: wrong iss or aud",
            )
        return claims


def create_provider(settings: DashboardSettings, **client_kwargs: Any) -> Provider:
    """``client_kwargs`` reach the httpx client Authlib uses (tests pass ``verify``)."""
    oauth = OAuth()
    client = oauth.register(
        PROVIDER,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        server_metadata_url=settings.oidc_discovery_url,
        client_kwargs={
            "scope": settings.oidc_scopes,
            "code_challenge_method": "S256",
            **client_kwargs,
        },
    )
    assert isinstance(client, StarletteOAuth2App)
    return Provider(
        client=client,
        acr_values=settings.oidc_acr_values,
        required_acr=settings.required_acr,
        api_resource=settings.oidc_api_resource,
    )
