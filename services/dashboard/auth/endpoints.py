"""/connexion, /auth/callback, /deconnexion: the protocol is Authlib's; these routes keep the
session's contents and tell the person, in French, what went wrong when something does."""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

from authlib.integrations.base_client import OAuthError
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from joserfc.errors import SecurityWarning

from services.dashboard.api.client import ApiClient, ApiProblem
from services.dashboard.auth.oidc import Provider, SignInFailed
from services.dashboard.auth.sessions import CSRF, PERSON, TOKENS, CsrfChecked, person_of
from services.dashboard.kit.templating import pages_of

router = APIRouter(include_in_schema=False)
_logger = logging.getLogger("temoin.dashboard.auth")
NEXT = "next"


def _provider(request: Request) -> Provider:
    provider: Provider = request.app.state.provider
    return provider


def _local_path(value: str | None) -> str:
    """Only a path of the dashboard itself: never an open redirect elsewhere."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _public(request: Request, path: str) -> str:
    base: str = request.app.state.settings.public_url.rstrip("/")
    return base + path


def _failure(request: Request, message: str, status_code: int = 400) -> Response:
    return pages_of(request).render(
        request, "auth/echec.html", status_code=status_code, message=message
    )


@router.get("/connexion", name="sign_in")
async def sign_in(request: Request, suite: str | None = None) -> Response:
    """Send the person to the provider (code + PKCE S256, state and nonce, acr_values)."""
    provider = _provider(request)
    request.session[NEXT] = _local_path(suite)
    try:
        redirect: Response = await provider.client.authorize_redirect(
            request, _public(request, "/auth/callback"), **provider.authorize_parameters()
        )
        return redirect
    except Exception as error:  # discovery unreachable or malformed: the person can retry later
        _logger.warning("provider discovery failed: %s", error)
        return _failure(
            request,
            "Le fournisseur d'identité ne répond pas pour le moment : réessayez dans un instant.",
            503,
        )


@router.get("/auth/callback", name="callback")
async def callback(request: Request) -> Response:
    provider = _provider(request)
    try:
        with warnings.catch_warnings():
            # joserfc warns that "EdDSA" is superseded by "Ed25519" (RFC 9864): the development
            # provider signs its ID tokens with EdDSA; the signature is checked all the same.
            warnings.simplefilter("ignore", SecurityWarning)
            token: dict[str, Any] = await provider.client.authorize_access_token(request)
        id_claims = dict(token.get("userinfo") or {})
        if not id_claims:
            raise SignInFailed("Le fournisseur d'identité n'a pas donné de jeton d'identité.")
        provider.check_acr(id_claims)
        info = await provider.userinfo(token, id_claims)
        api_token = await provider.api_token(token)
    except SignInFailed as failure:
        _logger.warning("sign-in refused: %s", failure)
        return _failure(request, failure.message, 403)
    except (OAuthError, ValueError, KeyError) as error:
        # A refusal at the provider, a replayed or foreign state, a bad ID token (signature,
        # iss, aud, exp, nonce): Authlib raises, the person starts again.
        _logger.warning("sign-in failed: %s", error)
        return _failure(request, "La connexion n'a pas abouti. Vous pouvez recommencer.")
    claims = {**id_claims, **info}
    vault = ApiClient(request.app.state.backends.vault, str(api_token["access_token"]))
    try:
        me = await vault.get("/v1/me", "votre profil")
    except ApiProblem as problem:
        _logger.warning("vault refused the new session's token: %s", problem)
        return _failure(request, problem.message, 403 if problem.status in (401, 403) else 503)
    next_path = _local_path(request.session.get(NEXT))
    expires_at = api_token.get("expires_at") or time.time() + int(
        api_token.get("expires_in") or 300
    )
    # A new session id from here on: one known before sign-in is worth nothing (fixation).
    request.session.clear()
    request.scope["session_rotate"] = True
    request.session[PERSON] = {
        "subject": str(claims["sub"]),
        "name": _display_name(claims),
        "organisation_id": me.get("organisation_id"),
        "departement": me.get("departement"),
        "roles": list(me.get("roles") or []),
        "withheld": dict(me.get("withheld") or {}),
    }
    # The refresh token is not kept: when the access token runs out, the person signs in again.
    request.session[TOKENS] = {
        "access_token": api_token["access_token"],
        "id_token": token.get("id_token"),
        "expires_at": int(expires_at),
    }
    return RedirectResponse(next_path, status_code=303)


def _display_name(claims: dict[str, Any]) -> str:
    if claims.get("name"):
        return str(claims["name"])
    # ProConnect: given_name and usual_name.
    parts = [claims.get("given_name"), claims.get("usual_name") or claims.get("family_name")]
    return " ".join(str(p) for p in parts if p) or str(claims["sub"])


@router.get("/deconnexion", name="sign_out_page")
async def sign_out_page(request: Request) -> Response:
    if person_of(request) is None:
        return RedirectResponse("/", status_code=303)
    return pages_of(request).render(request, "auth/deconnexion.html")


@router.post("/deconnexion", name="sign_out", dependencies=[CsrfChecked])
async def sign_out(request: Request) -> Response:
    """End the session here, then at the provider (RP-initiated logout) when it offers it."""
    id_token = (request.session.get(TOKENS) or {}).get("id_token")
    request.session.clear()
    request.scope["session_end"] = True
    provider = _provider(request)
    try:
        metadata = await provider.metadata()
    except Exception:  # the provider is away: the session here is ended all the same
        metadata = {}
    if metadata.get("end_session_endpoint") and id_token:
        logout = await provider.client.create_logout_url(
            post_logout_redirect_uri=_public(request, "/au-revoir"),
            id_token_hint=id_token,
            client_id=provider.client.client_id,
        )
        return RedirectResponse(logout["url"], status_code=303)
    return RedirectResponse("/au-revoir", status_code=303)


@router.get("/au-revoir", name="signed_out")
async def signed_out(request: Request) -> Response:
    return pages_of(request).render(request, "auth/au-revoir.html")


__all__ = ["router", "CSRF"]
