"""What needs attention on Accueil (issue 17): clips received today and by which station,
recordings erased in the next days (to qualify for a procedure before they go), objects the
fixity scrub found damaged, open procedures, stations silent for days.

Each list is read from the vault with the person's token. The dashboard asks only for the lists
the vault lets the person's roles read (``READERS`` mirrors the vault's rules, as the navigation
does): every refusal is written to the audit log (R241-14), and asking for a list the vault will
refuse would log one at each visit to Accueil. A refusal nonetheless (a role withdrawn since)
hides the list and says why; the vault stays the only one deciding."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from services.dashboard.api.client import ApiClient, ApiProblem
from services.dashboard.auth.sessions import Person
from services.dashboard.kit.templating import MONTHS, PARIS, parse_instant

SHOWN = 5  # items shown per list; « voir tout » leads to the whole selection

# Who may read what, as the vault's guards say it (services/vault/recordings/endpoints.py
# FINDERS, procedures/endpoints.py Read, directory/endpoints.py Read for stations). The wearer
# finds only their own recordings: today's are theirs to see; the rest is the service's work.
READERS: dict[str, tuple[str, ...]] = {
    "recus": ("maire", "responsable", "habilite", "dpo", "agent"),
    "stations": ("maire", "responsable", "dpo"),
    "effacement": ("maire", "responsable", "habilite", "dpo"),
    "endommages": ("maire", "responsable", "habilite", "dpo"),
    "procedures": ("maire", "responsable", "habilite", "dpo"),
    "silencieuses": ("maire", "responsable", "dpo"),
}
# Those who attach a recording to a procedure (the vault's procedures ACTORS): « qualifier ».
QUALIFIERS = ("maire", "responsable", "habilite")


@dataclass
class Listing:
    """One list of Accueil: the first items, how many in all, where to see them all; or the
    vault's refusal, said in French."""

    items: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0
    more: str | None = None
    refused: str | None = None


@dataclass
class StationDay:
    station: dict[str, Any]
    received: int
    more: str


@dataclass
class Attention:
    today: date
    erasure_until: date
    stale_since: datetime
    stale_days: int
    lists: dict[str, Listing] = field(default_factory=dict)
    by_station: list[StationDay] | None = None
    may_qualify: bool = False
    own_only: bool = False  # a wearer: the vault answers with their own recordings only

    @property
    def anything(self) -> bool:
        return bool(self.lists)

    @property
    def erasure_label(self) -> str:
        """« 7 décembre »: the last day of the erasure list."""
        return f"{self.erasure_until.day} {MONTHS[self.erasure_until.month - 1]}"


def day_start(day: date) -> str:
    """Midnight in Paris that day, as the API's instant."""
    return datetime.combine(day, time(0), tzinfo=PARIS).isoformat()


def search_link(**filters: str) -> str:
    return "/enregistrements?" + urlencode(filters)


async def _listing(
    vault: ApiClient, path: str, what: str, params: dict[str, Any], more: str | None
) -> Listing:
    try:
        found = await vault.get(path, what, params={"limit": SHOWN, **params})
    except ApiProblem as problem:
        if problem.status != 403:
            raise
        return Listing(refused=problem.message)
    return Listing(items=found["items"], total=int(found["total"]), more=more)


async def gather(
    vault: ApiClient,
    person: Person,
    org: str,
    *,
    now: datetime,
    erasure_days: int,
    stale_days: int,
) -> Attention:
    """Every list the person's roles read, asked for together."""
    today = now.astimezone(PARIS).date()
    erasure_until = today + timedelta(days=erasure_days)
    found = Attention(
        today=today,
        erasure_until=erasure_until,
        stale_since=now - timedelta(days=stale_days),
        stale_days=stale_days,
        may_qualify=person.has(*QUALIFIERS),
        own_only=person.has("agent") and not person.has(*READERS["effacement"]),
    )
    recordings = f"{org}/recordings"
    asked: dict[str, Any] = {}
    if person.has(*READERS["recus"]):
        asked["recus"] = _listing(
            vault,
            recordings,
            "les enregistrements reçus aujourd'hui",
            {"received_since": day_start(today)},
            search_link(recus_depuis=today.isoformat()),
        )
    if person.has(*READERS["effacement"]):
        asked["effacement"] = _listing(
            vault,
            recordings,
            "les enregistrements bientôt effacés",
            # Erased by the end of that day (Paris): the search page's « effacés d'ici le ».
            {"erasure_before": day_start(erasure_until + timedelta(days=1))},
            search_link(effacement_avant=erasure_until.isoformat()),
        )
    if person.has(*READERS["endommages"]):
        asked["endommages"] = _listing(
            vault,
            recordings,
            "les enregistrements endommagés",
            {"status": "damaged"},
            search_link(statut="damaged"),
        )
    if person.has(*READERS["procedures"]):
        asked["procedures"] = _listing(
            vault, f"{org}/procedures", "les procédures", {"open_only": "true"}, "/procedures"
        )
    if person.has(*READERS["silencieuses"]):
        asked["silencieuses"] = _listing(
            vault,
            f"{org}/stations",
            "les stations d'accueil",
            {"silent_since": found.stale_since.isoformat(), "limit": 50},
            None,
        )
    if person.has(*READERS["stations"]):
        asked["stations"] = _stations(vault, org)
    results = dict(zip(asked, await asyncio.gather(*asked.values()), strict=True))
    stations: dict[str, dict[str, Any]] | None = results.pop("stations", None)
    found.lists = results
    if stations is not None:
        found.by_station = await _by_station(vault, recordings, stations, today)
    return found


async def _stations(vault: ApiClient, org: str) -> dict[str, dict[str, Any]] | None:
    try:
        listed = await vault.get(f"{org}/stations", "les stations d'accueil", params={"limit": 500})
    except ApiProblem as problem:
        if problem.status != 403:
            raise
        return None
    return {station["id"]: station for station in listed["items"]}


async def _by_station(
    vault: ApiClient, recordings: str, stations: dict[str, dict[str, Any]], today: date
) -> list[StationDay]:
    """Today's clips of each station that uploaded today (its last upload says which did):
    one count each, asked for together."""
    since = day_start(today)
    start = datetime.fromisoformat(since)
    active = [
        station
        for station in stations.values()
        if (last := parse_instant(station.get("last_upload_at"))) is not None and last >= start
    ]

    async def count(station: dict[str, Any]) -> StationDay:
        found = await vault.get(
            recordings,
            "les enregistrements reçus aujourd'hui",
            params={"received_since": since, "station_id": station["id"], "limit": 1},
        )
        link = search_link(recus_depuis=today.isoformat(), station=station["id"])
        return StationDay(station=station, received=int(found["total"]), more=link)

    days = await asyncio.gather(*(count(station) for station in active))
    return sorted((d for d in days if d.received), key=lambda d: (-d.received, d.station["name"]))
