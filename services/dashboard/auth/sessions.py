"""What the session holds once signed in, and the checks every page makes on it."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Form, Request

from services.dashboard.kit.words import ROLE_LABELS

PERSON = "person"
TOKENS = "tokens"
CSRF = "csrf"


@dataclass(frozen=True)
class Person:
    subject: str
    name: str
    organisation_id: str | None
    departement: str | None
    roles: tuple[str, ...]  # the roles in force, as the vault's /v1/me answers them
    withheld: dict[str, str]

    @property
    def role_label(self) -> str:
        return ", ".join(ROLE_LABELS.get(role, role) for role in self.roles) or "aucun rôle"

    def has(self, *roles: str) -> bool:
        return any(role in self.roles for role in roles)


class SignInRequired(Exception):
    """No session, or one whose access token has run out: the person signs in again."""

    def __init__(self, next_path: str, expired: bool = False) -> None:
        self.next_path = next_path
        self.expired = expired


class RolesWithdrawn(Exception):
    """Roles the person signed in with and no longer holds (a habilitation withdrawn by the
    responsable, an agent deactivated): the page says so, once; the session keeps the rest."""

    def __init__(self, roles: tuple[str, ...]) -> None:
        self.roles = roles

    @property
    def message(self) -> str:
        if "habilite" in self.roles:
            return (
                "Votre habilitation à visionner les enregistrements a été retirée par le "
                "responsable du service depuis votre connexion (article R241-12 du code de la "
                "sécurité intérieure). Vous ne pouvez plus consulter les enregistrements ; "
                "si vous pensez que c'est une erreur, adressez-vous au responsable du service."
            )
        labels = ", ".join(ROLE_LABELS.get(role, role) for role in self.roles)
        return (
            f"Depuis votre connexion, vous n'avez plus ce rôle : {labels}. Les pages qui en "
            "dépendent ne vous sont plus accessibles ; adressez-vous au responsable du service."
        )


class CsrfRefused(Exception):
    pass


def person_of(request: Request) -> Person | None:
    stored: dict[str, Any] | None = request.session.get(PERSON)
    if not stored:
        return None
    return Person(
        subject=stored["subject"],
        name=stored["name"],
        organisation_id=stored.get("organisation_id"),
        departement=stored.get("departement"),
        roles=tuple(stored.get("roles", ())),
        withheld=dict(stored.get("withheld", {})),
    )


def csrf_token(request: Request) -> str | None:
    """The session's CSRF token, made with the session (only a signed-in page has forms)."""
    if PERSON not in request.session:
        return None
    token: str | None = request.session.get(CSRF)
    if token is None:
        token = secrets.token_urlsafe(32)
        request.session[CSRF] = token
    return token


def access_token(request: Request) -> str:
    tokens: dict[str, Any] = request.session.get(TOKENS) or {}
    token = tokens.get("access_token")
    if not isinstance(token, str):
        raise SignInRequired(request.url.path)
    return token


def login_url(next_path: str) -> str:
    return "/connexion?suite=" + quote(next_path, safe="/")


async def require_person(request: Request) -> Person:
    """The signed-in person; an expired access token ends the session first."""
    person = person_of(request)
    if person is None:
        raise SignInRequired(request.url.path)
    expires_at = (request.session.get(TOKENS) or {}).get("expires_at")
    if isinstance(expires_at, int | float) and expires_at <= time.time():
        request.session.clear()
        request.scope["session_end"] = True
        raise SignInRequired(request.url.path, expired=True)
    return person


async def check_csrf(request: Request, csrf_token: Annotated[str, Form()] = "") -> None:
    """Every POST carries the session's token in a hidden field (CSRF)."""
    expected = request.session.get(CSRF)
    if not expected or not secrets.compare_digest(str(expected), csrf_token):
        raise CsrfRefused()


PersonDep = Annotated[Person, Depends(require_person)]
CsrfChecked = Depends(check_csrf)
