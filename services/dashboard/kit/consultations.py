"""Consultations opened in this session, for the player's page: it is a GET, so reloading it
opens no second consultation, and once the link has expired the page says so instead. Used for
recordings and for training copies alike, each under its own session key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from services.dashboard.kit.templating import parse_instant

KEPT = 10  # the latest ones; older ones have expired long since


def remember(
    request: Request, key: str, consultation: dict[str, Any], motif: str, **owner: str
) -> None:
    """Keep the consultation (its media URL, expiry, motif) and what it is of (``owner``: the
    recording's or the copy's id)."""
    kept = dict(request.session.get(key) or {})
    kept[str(consultation["id"])] = {
        **owner,
        "media_url": consultation["media_url"],
        "expires_at": consultation["expires_at"],
        "motif": motif.strip(),
    }
    recent = sorted(kept.items(), key=lambda kv: str(kv[1]["expires_at"]))[-KEPT:]
    request.session[key] = dict(recent)


def recall(
    request: Request, key: str, consultation_id: object, **owner: str
) -> tuple[dict[str, Any] | None, bool]:
    """The session's consultation of that owner, or None; and whether its link has expired."""
    consultation = (request.session.get(key) or {}).get(str(consultation_id))
    if consultation is not None and any(consultation.get(k) != v for k, v in owner.items()):
        consultation = None
    expires_at = parse_instant(consultation["expires_at"]) if consultation else None
    return consultation, expires_at is None or expires_at <= datetime.now(UTC)
