"""How a training copy's state and the job's reasons are said on the pages."""

from __future__ import annotations

from typing import Any

from services.dashboard.api import french

STATUSES = {
    "en_attente": "en attente",
    "en_cours": "en cours",
    "a_verifier": "à vérifier",
    "approuve": "approuvée",
    "rejete": "rejetée",
    "echec": "échec",
    "annule": "annulée",
    "efface": "effacée avec l'enregistrement",
}
# Still being made: « Annuler » is offered, and the page is worth refreshing.
ACTIVE = ("en_attente", "en_cours")
# Made and sealed: it can be viewed.
VIEWABLE = ("a_verifier", "approuve", "rejete")


def status(derivative: dict[str, Any]) -> str:
    """« en cours (12 / 250 images) », « rejetée : plaque lisible »…; a cancellation's
    reason is on the copy's own page (« Raison »), not repeated here."""
    code = str(derivative.get("status", ""))
    said = STATUSES.get(code, code)
    if code == "en_cours":
        done, total = derivative.get("frames_done") or 0, derivative.get("frames_total")
        said += f" ({done} / {total} images)" if total else f" ({done} images)"
    elif code == "rejete" and derivative.get("review_reason"):
        said += f" : {derivative['review_reason']}"
    elif code == "echec" and derivative.get("reason"):
        said += f" : {_clause(reason(str(derivative['reason'])))}"
    return said


def reason(text: str) -> str:
    """The job's reason in French. The vault writes them in French (its jobs.py); the English
    ones of earlier copies, and a damaged original's, are translated (api/french.py)."""
    return french.in_french(text) or text


def _clause(text: str) -> str:
    """A sentence as the clause after « : » (no capital, no full stop); an acronym stays."""
    text = text.strip().removesuffix(".")
    if len(text) > 1 and text[1].isupper():
        return text
    return text[:1].lower() + text[1:]
