"""Jinja2 for the pages: each domain package keeps its templates beside its routes
(``recordings/templates/…`` is ``recordings/…``), the layout and macros live in templates/.
Dates are shown in Europe/Paris; the APIs speak UTC."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader, select_autoescape

from services.dashboard.api.french import in_french
from services.dashboard.kit import words

PARIS = ZoneInfo("Europe/Paris")
ROOT = Path(__file__).resolve().parent.parent
DOMAINS = ("auth", "home", "recordings", "directory", "procedures", "reports", "journal", "copies")
MONTHS = (
    "janvier", "février", "mars", "avril", "mai", "juin",
    "juillet", "août", "septembre", "octobre", "novembre", "décembre",
)  # fmt: skip


def parse_instant(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def paris(value: str | datetime | None, with_seconds: bool = False) -> str:
    """« 3 mars 2026 à 14 h 05 », the way French administrations write a time; the hour, its
    minutes and seconds held together by no-break spaces (a heading never ends on « 14 h »)."""
    instant = parse_instant(value)
    if instant is None:
        return "—"
    local = instant.astimezone(PARIS)
    time = f"{local.hour}\u00a0h\u00a0{local.minute:02d}"
    if with_seconds:
        time += f"\u00a0{local.second:02d}\u00a0s"
    return f"{local.day} {MONTHS[local.month - 1]} {local.year} à {time}"


def day_start(day: date) -> datetime:
    """Midnight in Paris that day: a day the person means, as the APIs' instant."""
    return datetime.combine(day, time(0), tzinfo=PARIS)


def typed_day(value: str, end: bool = False) -> datetime | None:
    """A day typed in a form (YYYY-MM-DD, Paris): its start, or with ``end`` the next day's
    (a period « au 3 mars » includes the 3rd); None when it is not a date."""
    try:
        day = date.fromisoformat(value.strip())
    except ValueError:
        return None
    return day_start(day + timedelta(days=1) if end else day)


def paris_day_and_time(value: str | datetime | None) -> tuple[str, str]:
    """« 3 mars 2026 », « 14 h 05 07 s »: for a table's narrow column, one per line."""
    day, _, time = paris(value, with_seconds=True).partition(" à ")
    return day, time


def machine_time(value: str | datetime | None) -> str:
    """The datetime attribute of <time>: ISO 8601 with the Paris offset."""
    instant = parse_instant(value)
    return instant.astimezone(PARIS).isoformat() if instant else ""


def duration(start: str | None, end: str | None) -> str:
    first, last = parse_instant(start), parse_instant(end)
    if first is None or last is None:
        return "—"
    seconds = int((last - first).total_seconds())
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def size(value: int | None) -> str:
    if value is None:
        return "—"
    for unit in ("octets", "Ko", "Mo", "Go"):
        if value < 1024 or unit == "Go":
            return (
                f"{value:,.0f} {unit}".replace(",", "\u202f")
                if unit == "octets"
                else (f"{value:.1f} {unit}".replace(".", ","))
            )
        value /= 1024  # type: ignore[assignment]
    return str(value)


def create_environment() -> Environment:
    loader = ChoiceLoader(
        [
            FileSystemLoader(ROOT / "templates"),
            PrefixLoader({name: FileSystemLoader(ROOT / name / "templates") for name in DOMAINS}),
        ]
    )
    environment = Environment(
        loader=loader,
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        paris=paris,
        paris_day_and_time=paris_day_and_time,
        machine_time=machine_time,
        duration=duration,
        size=size,
        # What an API said (a refusal's reason kept in the journal): in French when known,
        # else as it was logged (the journal shows the record, it does not hide it).
        api_said=lambda text: in_french(str(text)) or text,
    )
    environment.filters.update(words.FILTERS)
    return environment


class Pages:
    """Renders a template with what every page needs (the person, the CSRF token, the nav)."""

    def __init__(self, environment: Environment, service_name: str) -> None:
        self.environment = environment
        self.service_name = service_name

    def render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        from services.dashboard.auth.sessions import csrf_token, person_of

        person = person_of(request)
        page = self.environment.get_template(template).render(
            request=request,
            service_name=self.service_name,
            person=person,
            csrf_token=csrf_token(request),
            current_path=request.url.path,
            **context,
        )
        return HTMLResponse(page, status_code=status_code)


def pages_of(request: Request) -> Pages:
    """The app's page renderer (made once at start, kept on the app's state)."""
    pages: Pages = request.app.state.pages
    return pages
