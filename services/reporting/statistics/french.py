"""How the letter writes dates, periods, counts and durations in French, as the 2018 letter
of L'Haÿ-les-Roses does (« L'Haÿ-les-Roses, le 30 mai 2018 », « 0 enregistrement »)."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
          "septembre", "octobre", "novembre", "décembre")  # fmt: skip
SHORT_MONTHS = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.",
                "oct.", "nov.", "déc.")  # fmt: skip
_VOWELS = set("AEIOUYÀÂÄÉÈÊËÎÏÔÖÙÛÜŸaeiouyàâäéèêëîïôöùûüÿ")


def day_fr(day: date, *, year: bool = True) -> str:
    """« 30 mai 2018 », « 1er mars 2018 »: the first of the month is an ordinal."""
    number = "1er" if day.day == 1 else str(day.day)
    return f"{number} {MONTHS[day.month - 1]}" + (f" {day.year}" if year else "")


def letter_day(moment: datetime) -> date:
    """The day a letter is dated: the day it was made, in France."""
    return moment.astimezone(PARIS).date()


def is_calendar_year(start: date, end: date) -> bool:
    return start == date(start.year, 1, 1) and end == date(start.year, 12, 31)


def period_fr(start: date, end: date) -> str:
    """« l'année 2018 », « la période du 1er février au 30 juin 2026 »."""
    if is_calendar_year(start, end):
        return f"l'année {start.year}"
    return f"la période du {day_fr(start, year=start.year != end.year)} au {day_fr(end)}"


def period_in(start: date, end: date) -> str:
    """« en 2018 », « du 1er février au 30 juin 2026 »: after a noun (« rapport … en 2018 »)."""
    if is_calendar_year(start, end):
        return f"en {start.year}"
    return f"du {day_fr(start, year=start.year != end.year)} au {day_fr(end)}"


def period_label(start: date, end: date) -> str:
    """« année 2018 », « du 1er février au 30 juin 2026 »: a title's or a footer's."""
    return f"année {start.year}" if is_calendar_year(start, end) else period_in(start, end)


def count(n: int, singular: str, plural: str | None = None) -> str:
    """« 0 enregistrement », « 1 enregistrement », « 26 enregistrements »: in French, 0 and 1
    take the singular. `singular` may hold several words (« procédure judiciaire »)."""
    if abs(n) <= 1:
        return f"{n} {singular}"
    return f"{n} {plural if plural is not None else _plural(singular)}"


_PREPOSITIONS = {"à", "au", "aux", "avec", "d'", "de", "des", "du", "en", "par", "pour", "sur"}


def _plural(words: str) -> str:
    """The noun and its adjectives take the plural, not what follows a preposition:
    « caméras individuelles », « enregistrements pour procédure judiciaire »."""
    out, plural = [], True
    for word in words.split(" "):
        plural = plural and word not in _PREPOSITIONS
        out.append(word + "s" if plural and not word.endswith(("s", "x", "z")) else word)
    return " ".join(out)


def of_place(place: str) -> str:
    """« de Créteil », « d'Athis-Mons », « du Havre », « des Lilas », « de L'Haÿ-les-Roses »."""
    if place.startswith("Le "):
        return f"du {place[3:]}"
    if place.startswith("Les "):
        return f"des {place[4:]}"
    if place[:1] in _VOWELS:
        return f"d'{place}"
    return f"de {place}"


def duration_fr(minutes: float | None) -> str:
    """A delay in the unit a person reads: minutes, hours or days (the figure is a bucket's
    middle, within 5%, hence « environ »)."""
    if minutes is None:
        return "—"
    if minutes < 1:
        return "moins d'une minute"
    if minutes < 90:
        return "environ " + count(round(minutes), "minute")
    if minutes < 36 * 60:
        return "environ " + count(round(minutes / 60), "heure")
    return "environ " + count(round(minutes / (24 * 60)), "jour")
