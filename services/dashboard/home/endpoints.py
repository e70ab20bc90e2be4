from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.dashboard.api.client import ApiProblem
from services.dashboard.api.deps import VaultDep
from services.dashboard.auth.sessions import CsrfChecked, PersonDep, person_of
from services.dashboard.home.attention import gather
from services.dashboard.kit.templating import pages_of
from services.dashboard.recordings.endpoints import PROCEDURE_TYPES
from services.dashboard.settings import DashboardSettings

router = APIRouter(include_in_schema=False)


@router.get("/", name="home")
async def home(request: Request) -> Response:
    if person_of(request) is None:
        return pages_of(request).render(request, "home/bienvenue.html", title="Bienvenue")
    return await _signed_in_home(request)


async def _signed_in_home(request: Request) -> Response:
    from services.dashboard.api.deps import vault_for

    vault = await vault_for(request)
    person = person_of(request)
    assert person is not None
    organisation: dict[str, Any] | None = None
    missing = False
    if person.organisation_id:
        try:
            organisation = await vault.get(
                f"/v1/organisations/{person.organisation_id}", "votre organisation"
            )
        except ApiProblem as problem:
            if problem.status != 404:
                raise
            missing = True
    attention = None
    if organisation is not None:
        settings: DashboardSettings = request.app.state.settings
        attention = await gather(
            vault,
            person,
            f"/v1/organisations/{person.organisation_id}",
            now=datetime.now(UTC),
            erasure_days=settings.erasure_notice_days,
            stale_days=settings.stale_station_days,
        )
    return pages_of(request).render(
        request,
        "home/accueil.html",
        title="Accueil",
        organisation=organisation,
        attention=attention,
        procedure_types=PROCEDURE_TYPES,
        missing=missing,
        errors={},
        form={},
    )


@router.post("/organisation", name="create_organisation", dependencies=[CsrfChecked])
async def create_organisation(
    request: Request,
    person: PersonDep,
    vault: VaultDep,
    name: Annotated[str, Form()] = "",
    departement: Annotated[str, Form()] = "",
    communes: Annotated[str, Form()] = "",
) -> Response:
    """The maire creates the organisation their token names (PUT): the vault decides."""
    form = {"name": name, "departement": departement, "communes": communes}
    parsed, errors = _communes(communes)
    if not errors:
        try:
            await vault.put(
                f"/v1/organisations/{person.organisation_id}",
                "la création de l'organisation",
                json={"name": name.strip(), "departement": departement.strip(), "communes": parsed},
            )
            return RedirectResponse("/", status_code=303)
        except ApiProblem as problem:
            if problem.status != 422:
                raise
            errors = {key: _french(key, text) for key, text in problem.fields.items()}
    return pages_of(request).render(
        request,
        "home/accueil.html",
        status_code=422,
        title="Erreur : accueil",
        organisation=None,
        missing=True,
        errors=errors,
        form=form,
    )


FIELD_HELP = {
    "name": "Indiquez le nom du service, par exemple « Police municipale de Créteil ».",
    "departement": "Indiquez le numéro du département : 2 ou 3 caractères, par exemple 94 ou 2A.",
    "communes": "Indiquez chaque commune sur une ligne : son code INSEE (5 caractères) puis son "
    "nom, par exemple « 94028 Créteil ».",
}


def _french(field: str, message: str) -> str:
    # The API's messages are English (its clients are programs): the page says it in French.
    return FIELD_HELP.get(field, f"Valeur refusée : {message}")


def _communes(text: str) -> tuple[list[dict[str, str]], dict[str, str]]:
    communes = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        code, _, name = line.partition(" ")
        communes.append({"insee_code": code.strip(), "name": name.strip()})
    if not communes or any(not commune["name"] for commune in communes):
        return [], {"communes": FIELD_HELP["communes"]}
    return communes, {}
