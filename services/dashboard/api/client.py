"""The APIs, called server-side with the person's bearer token. The dashboard decides nothing
about access: an API's refusal becomes an ``ApiProblem`` whose French message the page shows."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.dashboard.api import french

_logger = logging.getLogger("temoin.dashboard.api")
TIMEOUT_S = 15.0


@dataclass
class ApiProblem(Exception):
    """A refusal or a failure of an API, said in French for the page.

    ``detail`` is the API's detail in French (services/dashboard/api/french.py), never its
    English words. ``fields`` maps a form field's name (the problem's ``field`` after its location:
    ``body.motif`` is ``motif``) to what is wrong with it, so that the form shows the error
    beside the field."""

    status: int
    message: str
    detail: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


def _field_of(name: str) -> str:
    """The form field a problem names: ``body.communes.0.name`` is ``communes``,
    ``query.place`` is ``place``."""
    parts = name.split(".")
    if len(parts) > 1 and parts[0] in ("body", "query", "path"):
        return parts[1]
    return parts[0]


def _contracted(text: str) -> str:
    """French contracts « à le » and « à les »."""
    return text.replace(" à le ", " au ").replace(" à les ", " aux ")


def problem_of(response: httpx.Response, what: str) -> ApiProblem:
    """``what``: the thing asked for, in French (« cet enregistrement »)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = french.said(str(body.get("detail") or ""))
    status = response.status_code
    if status == 401:
        return ApiProblem(401, "Votre session a expiré : reconnectez-vous.", detail)
    if status == 403:
        return ApiProblem(403, _contracted(f"Vous n'avez pas accès à {what}."), detail)
    if status == 404:
        return ApiProblem(404, f"Introuvable : {what} n'existe pas ou plus.", detail)
    if status == 409:
        return ApiProblem(409, f"Ce n'est pas possible pour {what} dans son état actuel.", detail)
    if status == 410:
        return ApiProblem(410, f"{what[:1].upper()}{what[1:]} n'est plus disponible.", detail)
    if status in (400, 422):
        fields: dict[str, str] = {}
        errors = body.get("errors")
        if isinstance(errors, list):
            for error in errors:
                if isinstance(error, dict):
                    fields[_field_of(str(error.get("field", "")))] = french.field_message(error)
        elif body.get("field"):
            fields[_field_of(str(body["field"]))] = detail
        return ApiProblem(
            422, "Certaines valeurs ne conviennent pas : corrigez-les.", detail, fields
        )
    if status in (502, 503, 504):
        return ApiProblem(
            503, "Le service est momentanément indisponible : réessayez dans un instant.", detail
        )
    return ApiProblem(status, "Une erreur inattendue est survenue.", detail)


class ApiClient:
    """One API (vault or reporting) for one person: every call carries their token."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self.token = token

    async def request(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(
                method, path, headers={"Authorization": f"Bearer {self.token}"}, **kwargs
            )
        except httpx.HTTPError as error:
            _logger.warning("%s %s failed: %s", method, path, type(error).__name__)
            raise ApiProblem(
                503, "Le service est momentanément indisponible : réessayez dans un instant."
            ) from error
        if response.is_error:
            raise problem_of(response, what)
        return response

    async def get(self, path: str, what: str, **kwargs: Any) -> Any:
        return (await self.request("GET", path, what, **kwargs)).json()

    async def post(self, path: str, what: str, **kwargs: Any) -> Any:
        return (await self.request("POST", path, what, **kwargs)).json()

    async def put(self, path: str, what: str, **kwargs: Any) -> Any:
        return (await self.request("PUT", path, what, **kwargs)).json()


@dataclass
class Backends:
    """The app's long-lived HTTP clients to the APIs (one connection pool each)."""

    vault: httpx.AsyncClient
    reporting: httpx.AsyncClient

    async def aclose(self) -> None:
        await self.vault.aclose()
        await self.reporting.aclose()


def create_backends(
    vault_url: str,
    reporting_url: str,
    *,
    vault_transport: httpx.AsyncBaseTransport | None = None,
    reporting_transport: httpx.AsyncBaseTransport | None = None,
) -> Backends:
    return Backends(
        vault=httpx.AsyncClient(base_url=vault_url, timeout=TIMEOUT_S, transport=vault_transport),
        reporting=httpx.AsyncClient(
            base_url=reporting_url, timeout=TIMEOUT_S, transport=reporting_transport
        ),
    )
