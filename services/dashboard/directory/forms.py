"""What the Annuaire's forms send to the vault: typed text turned into the API's bodies, and
the API's field errors (English, for programs) said in French beside the field they name.

The vault checks everything again; these helpers only spare a round trip where the page can
say at once what is missing (an empty date, a key that is no key), never decide access."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from services.dashboard.api.client import ApiProblem
from services.dashboard.kit.templating import PARIS

AGENT_ROLES = {"agent": "porteur de caméra", "responsable": "responsable du service"}
CAMERA_STATUSES = {"active": "en service", "retired": "retirée", "lost": "perdue"}
STATION_STATUSES = {"active": "en service", "revoked": "révoquée"}

FIELD_HELP = {
    "matricule": "Indiquez le matricule : 1 à 32 caractères, lettres sans accent, chiffres, "
    "point, tiret ou tiret bas.",
    "first_name": "Indiquez le prénom (200 caractères au plus).",
    "last_name": "Indiquez le nom (200 caractères au plus).",
    "subject": "L'identifiant de connexion fait au plus 255 caractères.",
    "roles": "Choisissez parmi les rôles proposés : porteur de caméra, responsable du service.",
    "active": "Choisissez si l'agent est en service.",
    "serial": "Indiquez le numéro de série de la caméra (64 caractères au plus).",
    "model": "Indiquez le modèle de la caméra, par exemple « Reveal D5 ».",
    "status": "Choisissez l'état de la caméra parmi ceux proposés.",
    "name": "Indiquez un nom qui désigne la station, par exemple « Poste central, dock 1 ».",
    "public_key": "Ce texte n'est pas une clé publique Ed25519 : collez les 44 caractères que "
    "« temoin station keygen » affiche, ou un bloc « BEGIN PUBLIC KEY ».",
    "agent_id": "Choisissez un agent en service de l'organisation.",
    "starts_at": "Indiquez la date et l'heure du début (heure de Paris).",
    "ends_at": "Indiquez une date et une heure de fin postérieures au début (heure de Paris).",
    "reason": "Indiquez le motif (au moins 3 caractères).",
}

# The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): what `openssl pkey -pubout`
# writes before the key's 32 bytes.
_ED25519_SPKI = bytes.fromhex("302a300506032b6570032100")


def said_in_french(problem: ApiProblem, names: dict[str, str] | None = None) -> dict[str, str]:
    """The API's field errors, each under the form's name of the field (``names`` maps the
    API's name to the form's where they differ), in French."""
    names = names or {}
    return {
        names.get(field, field): FIELD_HELP.get(field, f"Valeur refusée : {message}")
        for field, message in problem.fields.items()
    }


def said(problem: ApiProblem) -> str:
    """A refusal (403, 404, 409) as one sentence, with the vault's precision when it gave one."""
    return problem.message + (f" Précision du service : {problem.detail}" if problem.detail else "")


def agent_body(form: dict[str, Any], roles: list[str]) -> dict[str, Any]:
    """POST /agents: an empty identifiant de connexion is none (the agent cannot sign in)."""
    return {
        "matricule": str(form.get("matricule", "")).strip(),
        "first_name": str(form.get("first_name", "")).strip(),
        "last_name": str(form.get("last_name", "")).strip(),
        "subject": str(form.get("subject", "")).strip() or None,
        "roles": roles,
    }


def agent_changes(agent: dict[str, Any], form: dict[str, Any], roles: list[str]) -> dict[str, Any]:
    """PATCH /agents/{id}: only what the form changes (the vault logs each change)."""
    wanted: dict[str, Any] = {
        "first_name": str(form.get("first_name", "")).strip(),
        "last_name": str(form.get("last_name", "")).strip(),
        "subject": str(form.get("subject", "")).strip() or None,
        "roles": sorted(set(roles)),
    }
    # Deactivation is asked for, never inferred from a missing answer.
    if form.get("active") in ("oui", "non"):
        wanted["active"] = form.get("active") == "oui"
    current = {**agent, "roles": sorted(agent.get("roles") or [])}
    return {name: value for name, value in wanted.items() if current.get(name) != value}


def assignment_body(form: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """POST /cameras/{id}/assignments, or what the form lacks: an agent, a start; an end only
    when one is typed (none: worn until further notice)."""
    body: dict[str, Any] = {"agent_id": form["agent_id"], "starts_at": None}
    errors = {}
    if not form["agent_id"]:
        errors["agent_id"] = FIELD_HELP["agent_id"]
    body["starts_at"] = paris_instant(form["starts_at"])
    if body["starts_at"] is None:
        errors["starts_at"] = FIELD_HELP["starts_at"]
    if form["ends_at"].strip():
        body["ends_at"] = paris_instant(form["ends_at"])
        if body["ends_at"] is None:
            errors["ends_at"] = FIELD_HELP["ends_at"]
    return body, errors


def paris_instant(text: str) -> str | None:
    """A ``datetime-local`` field (Paris time, as the page shows times) as the API's UTC
    instant; None when empty or not a date and time."""
    text = text.strip()
    if not text:
        return None
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        return None
    if local.tzinfo is None:
        local = local.replace(tzinfo=PARIS)
    return local.astimezone(PARIS).isoformat()


def paris_local(value: datetime) -> str:
    """The value of a ``datetime-local`` field for an instant: Paris time, to the minute."""
    return value.astimezone(PARIS).strftime("%Y-%m-%dT%H:%M")


def public_key_text(text: str) -> str:
    """The key as the vault takes it (base64 of 32 bytes): pasted as is, or as a PEM block,
    whose DER the page unwraps. Anything else goes to the vault unchanged: it says why not."""
    stripped = text.strip()
    if "BEGIN PUBLIC KEY" not in stripped:
        return "".join(stripped.split())
    body = "".join(
        line.strip() for line in stripped.splitlines() if line.strip() and "-----" not in line
    )
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return body
    if len(der) == len(_ED25519_SPKI) + 32 and der.startswith(_ED25519_SPKI):
        return base64.b64encode(der[len(_ED25519_SPKI) :]).decode("ascii")
    return body
