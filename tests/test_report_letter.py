"""The letter to the préfet as a person reads it (issue 16): the addressee of every
département, the place and date, the figures as sentences, the signature, a letter for a
service with no data, the months of the chart, delays of any length, and a PDF an archive
keeps (PDF/A-2b, every font embedded). Rendered from `Report` values, no server needed."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, date, datetime

import pikepdf
import pytest
from pypdf import PdfReader

from services.reporting.statistics.addressees import (
    COLLECTIVITES,
    DEPARTEMENTS,
    GENERIC,
    addressee,
    territory_label,
)
from services.reporting.statistics.consumer import DELAY_MAX_MINUTES, delay_bucket
from services.reporting.statistics.endpoints import PrefectureTable
from services.reporting.statistics.french import count, day_fr, duration_fr, letter_day
from services.reporting.statistics.pdf import prefecture_table_pdf, report_letter
from services.reporting.statistics.report import (
    Month,
    OrganisationInfo,
    Period,
    Report,
    Signatory,
    _median,
)

BASE14 = {"Courier", "Helvetica", "Times", "Symbol", "ZapfDingbats"}
YEAR = 365 * 24 * 60


def _report(**changes: object) -> Report:
    """The figures of the 2018 letter of L'Haÿ-les-Roses."""
    values: dict[str, object] = {
        "organisation": OrganisationInfo(
            id=uuid.uuid4(),
            name="Police municipale de L'Haÿ-les-Roses",
            departement="94",
            place="L'Haÿ-les-Roses",
        ),
        "period": Period(start=date(2018, 1, 1), end=date(2018, 12, 31)),
        "cameras_used": 8,
        "agents_habilites": 14,
        "procedures": {"judiciaire": 2, "administrative": 2, "disciplinaire": 0},
        "recordings": 26,
        "recordings_used": {
            "judiciaire": 4,
            "administrative": 22,
            "formation": 0,
            "disciplinaire": 0,
        },  # fmt: skip
        "consultations": 31,
        "extractions": 26,
        "erasures": 3,
        "median_upload_delay_minutes": 184.0,
        "monthly": [
            Month(month=f"2018-0{m}", recordings=r, consultations=0, extractions=0)
            for m, r in ((1, 6), (2, 5), (3, 5), (4, 5), (5, 5))
        ],  # fmt: skip
        "evaluation": "Les caméras ont apaisé la plupart des interventions.",
        "signatory": Signatory(
            name="Nicolas Langlin", title="Chef de service de la police municipale"
        ),  # fmt: skip
        "has_data": True,
        "generated_at": datetime(2018, 5, 30, 9, 0, tzinfo=UTC),
    }
    values.update(changes)
    return Report.model_validate(values)


def _pages(pdf: bytes) -> list[str]:
    return [" ".join(page.extract_text().split()) for page in PdfReader(io.BytesIO(pdf)).pages]


def _text(pdf: bytes) -> str:
    return " ".join(_pages(pdf))


# --- the addressee ---------------------------------------------------------------------------


def test_every_departement_and_collectivite_has_its_prefet_by_name() -> None:
    metropole = {f"{n:02d}" for n in range(1, 96) if n != 20} | {"2A", "2B"}
    outre_mer = {"971", "972", "973", "974", "976"}
    assert set(DEPARTEMENTS) == metropole | outre_mer and len(DEPARTEMENTS) == 101
    for code in [*DEPARTEMENTS, *COLLECTIVITES]:
        to = addressee(code)
        assert to.heading.startswith("Monsieur le "), code
        assert "département" not in to.heading and not re.search(r"\d", to.heading), code
        assert to.territory and to.territory in to.heading or code == "75", code
        assert to.heading.startswith(to.salutation), code
    for code, (name, after) in DEPARTEMENTS.items():
        # The article and preposition agree with the name: elision before a vowel only.
        article = after[: len(after) - len(name)]
        assert after.endswith(name) and article in {"du ", "de la ", "de l'", "des ", "de ", "d'"}
        if article in {"de l'", "d'"}:
            assert name[0] in "AEIOUYÉÈH", code
        if article == "des ":
            assert name.split("-")[0].endswith(("s", "x")), code
        assert addressee(code.lower()).heading == addressee(code).heading


@pytest.mark.parametrize(
    ("code", "heading"),
    [
        ("94", "Monsieur le Préfet du Val-de-Marne"),
        ("91", "Monsieur le Préfet de l'Essonne"),
        ("93", "Monsieur le Préfet de la Seine-Saint-Denis"),
        ("92", "Monsieur le Préfet des Hauts-de-Seine"),
        ("75", "Monsieur le Préfet de police"),
        ("13", "Monsieur le Préfet des Bouches-du-Rhône"),
        ("2A", "Monsieur le Préfet de la Corse-du-Sud"),
        ("28", "Monsieur le Préfet d'Eure-et-Loir"),
        ("84", "Monsieur le Préfet de Vaucluse"),
        ("90", "Monsieur le Préfet du Territoire de Belfort"),
        ("974", "Monsieur le Préfet de La Réunion"),
        ("976", "Monsieur le Préfet de Mayotte"),
        ("975", "Monsieur le Préfet de Saint-Pierre-et-Miquelon"),
        ("978", "Monsieur le Préfet délégué de Saint-Barthélemy et de Saint-Martin"),
        ("988", "Monsieur le Haut-Commissaire de la République en Nouvelle-Calédonie"),
    ],
)
def test_known_addressees_are_exact(code: str, heading: str) -> None:
    assert addressee(code).heading == heading


@pytest.mark.parametrize("code", ["20", "00", "96", "986", "984", "999", "", "ZZ"])
def test_an_unknown_code_gets_the_generic_form(code: str) -> None:
    assert addressee(code) == GENERIC
    assert GENERIC.heading == "Monsieur le Préfet"
    letter = _text(report_letter(_report(organisation=OrganisationInfo(
        id=uuid.uuid4(), name="Police municipale de Nulle-Part", departement=code or "0",
    ))))  # fmt: skip
    assert "Monsieur le Préfet," in letter and "département" not in letter
    assert territory_label("94") == "Val-de-Marne (94)" and territory_label(code) == code


# --- words, dates, delays --------------------------------------------------------------------


def test_dates_counts_and_durations_in_french() -> None:
    assert day_fr(date(2018, 5, 30)) == "30 mai 2018"
    assert day_fr(date(2018, 3, 1)) == "1er mars 2018"
    # The letter is dated in Paris: 23:30 UTC on 29 May is already 30 May there.
    assert letter_day(datetime(2018, 5, 29, 23, 30, tzinfo=UTC)) == date(2018, 5, 30)
    assert letter_day(datetime(2018, 12, 31, 23, 30, tzinfo=UTC)) == date(2019, 1, 1)
    assert [count(n, "enregistrement") for n in (0, 1, 2)] == [
        "0 enregistrement", "1 enregistrement", "2 enregistrements"]  # fmt: skip
    assert count(2, "procédure judiciaire") == "2 procédures judiciaires"
    assert count(4, "enregistrement pour procédure judiciaire") == (
        "4 enregistrements pour procédure judiciaire"
    )
    assert duration_fr(None) == "—"
    assert duration_fr(0.4) == "moins d'une minute"
    assert duration_fr(1) == "environ 1 minute"
    assert duration_fr(42) == "environ 42 minutes"
    assert duration_fr(184) == "environ 3 heures"
    assert duration_fr(3 * 24 * 60) == "environ 3 jours"
    assert duration_fr(YEAR) == "environ 365 jours"


def test_delay_buckets_hold_any_delay_within_ten_percent() -> None:
    minutes = 1.0
    while minutes < DELAY_MAX_MINUTES:
        bucket = delay_bucket(minutes)
        # 10% of the delay, plus under a minute where bounds are rounded to whole minutes.
        assert abs(bucket - minutes) <= 0.1 * minutes + 1, (minutes, bucket)
        minutes *= 1.037
    assert delay_bucket(0.5) == 0
    # A year late is a year, not the old cap of 9,412 minutes.
    assert delay_bucket(YEAR) > 9412 * 50
    median = _median([(delay_bucket(YEAR), 3), (delay_bucket(5), 1)])
    assert median is not None and abs(median - YEAR) / YEAR < 0.05
    assert _median([(delay_bucket(0.2), 1)]) == 0
    assert _median([]) is None
    # A clock a century off stays in a bucket the column holds.
    assert delay_bucket(10**12) == delay_bucket(DELAY_MAX_MINUTES) < 2**31


# --- the letter --------------------------------------------------------------------------


def test_the_letter_reads_like_the_2018_report() -> None:
    pdf = report_letter(_report())
    first, annex = _pages(pdf)
    for line in (
        "Monsieur le Préfet du Val-de-Marne",
        "L'Haÿ-les-Roses, le 30 mai 2018",
        "Monsieur le Préfet,",
        "R. 241-17",
        "8 caméras individuelles",
        "14 agents étaient habilités",
        "26 enregistrements sur interventions ;",
        "4 enregistrements pour procédure judiciaire ;",
        "22 enregistrements pour procédure administrative ;",
        "0 enregistrement pour procédure disciplinaire ;",
        "0 enregistrement pour formation.",
        "2 procédures judiciaires, de 2 procédures administratives et de 0 procédure disciplinaire",
        "Les caméras ont apaisé la plupart des interventions.",
        "Je vous prie d'agréer, Monsieur le Préfet, l'expression de ma haute considération.",
        "Nicolas Langlin Chef de service de la police municipale",
    ):
        assert line in first, (line, first)
    assert "Projet" not in first + annex
    # Consultations and extractions of the period are not set beside its recordings: the
    # annex has them, each with its definition.
    assert "Consultations" not in first and "Extractions" not in first
    for line in ("Annexe", "Consultations 31", "Extractions 26", "Effacements 3",
                 "Délai médian de transfert environ 3 heures",
                 "quelle que soit la date de l'enregistrement"):  # fmt: skip
        assert line in annex, (line, annex)


def test_a_preview_is_a_proper_letter_marked_as_a_draft() -> None:
    text = _text(report_letter(_report(signatory=None, generated_at=datetime(
        2019, 2, 28, 23, 30, tzinfo=UTC))))  # fmt: skip
    assert "Projet — non finalisé" in text
    assert "L'Haÿ-les-Roses, le 1er mars 2019" in text
    assert "Le chef de service de la police municipale" in text
    assert "Nicolas Langlin" not in text


def test_a_service_with_no_data_says_so_once() -> None:
    athis = _report(
        organisation=OrganisationInfo(id=uuid.uuid4(), name="Police municipale d'Athis-Mons",
                                      departement="91", place=None),  # fmt: skip
        cameras_used=0, agents_habilites=0,
        procedures={"judiciaire": 0, "administrative": 0, "disciplinaire": 0}, recordings=0,
        recordings_used={"judiciaire": 0, "administrative": 0, "formation": 0,
                         "disciplinaire": 0},
        consultations=0, extractions=0, erasures=0, median_upload_delay_minutes=None,
        monthly=[], evaluation=None, signatory=None, has_data=False,
        generated_at=datetime(2018, 4, 14, 16, 11, tzinfo=UTC),
    )  # fmt: skip
    pdf = report_letter(athis)
    pages = _pages(pdf)
    assert len(pages) == 1
    text = pages[0]
    assert "Monsieur le Préfet de l'Essonne" in text
    assert "Athis-Mons, le 14 avril 2018" in text  # the place, from the service's name
    assert "par la police municipale d'Athis-Mons pour l'année 2018" in text
    assert text.count("n'est donc pas en mesure de présenter de chiffres") == 1
    for stray in ("Annexe", "par mois", "enregistrements sur interventions", "Évaluation",
                  "procédure judiciaire", "None"):  # fmt: skip
        assert stray not in text, stray
    # No chart, no table: nothing drawn but text.
    with pikepdf.open(io.BytesIO(pdf)) as document:
        drawn = {str(i.operator) for i in pikepdf.parse_content_stream(document.pages[0])} - {
            "BT", "ET", "Tf", "Td", "Tm", "TJ", "Tj", "TL", "T*", "q", "Q", "cm", "rg", "RG",
            "g", "G", "Tc", "Tw", "Tz", "Ts", "Tr", "'", '"', "gs"}  # fmt: skip
        assert drawn == set(), drawn


@pytest.mark.parametrize(
    ("start", "end", "labels"),
    [
        (date(2018, 1, 1), date(2018, 12, 31),
         ["janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.",
          "nov.", "déc."]),
        (date(2017, 11, 15), date(2018, 2, 3), ["nov. 17", "déc. 17", "janv. 18", "févr. 18"]),
    ],
)  # fmt: skip
def test_the_chart_has_every_month_of_the_period(start: date, end: date, labels: list[str]) -> None:
    annex = _pages(report_letter(_report(period=Period(start=start, end=end))))[-1]
    chart = annex[annex.index("Enregistrements par mois") :]
    positions = [chart.find(label) for label in labels]
    assert -1 not in positions and positions == sorted(positions), (labels, chart)


def test_a_year_long_delay_reads_as_a_year() -> None:
    median = _median([(delay_bucket(YEAR), 1)])
    annex = _pages(report_letter(_report(median_upload_delay_minutes=median)))[-1]
    shown = re.search(r"Délai médian de transfert environ (\d+) jours", annex)
    assert shown is not None, annex
    assert abs(int(shown.group(1)) - 365) <= 365 * 0.05


def test_user_text_is_printed_as_written() -> None:
    text = _text(report_letter(_report(
        evaluation="Moins de tensions <b>& plus</b> de calme.\n\nDeuxième paragraphe.",
        signatory=Signatory(name="Anne <Dupont> & Fils", title="Cheffe de service"),
    )))  # fmt: skip
    assert "Moins de tensions <b>& plus</b> de calme. Deuxième paragraphe." in text
    assert "Anne <Dupont> & Fils Cheffe de service" in text


# --- what an archive keeps -------------------------------------------------------------------


def _fonts(pdf: pikepdf.Pdf) -> list[pikepdf.Dictionary]:
    found = []
    for page in pdf.pages:
        fonts = page.Resources.get("/Font", pikepdf.Dictionary())
        found += [fonts[name] for name in fonts.keys()]
    return found


def _documents() -> dict[str, bytes]:
    table = PrefectureTable(
        departement="94", period={"start": date(2018, 1, 1), "end": date(2018, 12, 31)},
        rows=[_report()], totals=dict.fromkeys(
            ["cameras_utilisees", "agents_habilites", "enregistrements",
             "enregistrements_procedure_judiciaire", "enregistrements_procedure_administrative",
             "enregistrements_procedure_disciplinaire", "enregistrements_formation",
             "consultations", "extractions", "effacements"], 1),
    )  # fmt: skip
    return {
        "letter": report_letter(_report()),
        "draft": report_letter(_report(signatory=None)),
        "table": prefecture_table_pdf(table),
    }


def test_every_font_is_embedded_and_none_is_base14() -> None:
    for kind, data in _documents().items():
        with pikepdf.open(io.BytesIO(data)) as pdf:
            fonts = _fonts(pdf)
            assert fonts, kind
            for font in fonts:
                base = str(font.BaseFont).lstrip("/").split("+")[-1]
                assert base.split("-")[0] not in BASE14, (kind, base)
                descriptor = font.get("/FontDescriptor")
                assert descriptor is not None, (kind, base)
                assert any(f in descriptor for f in ("/FontFile", "/FontFile2", "/FontFile3"))
                assert "/ToUnicode" in font, (kind, base)


def test_the_pdfs_are_pdf_a_2b() -> None:
    for kind, data in _documents().items():
        assert data.startswith(b"%PDF-1.")
        with pikepdf.open(io.BytesIO(data)) as pdf:
            meta = pdf.open_metadata()
            assert (meta.get("pdfaid:part"), meta.get("pdfaid:conformance")) == ("2", "B"), kind
            assert meta.get("dc:title") == str(pdf.docinfo.Title), kind
            assert not pdf.is_encrypted
            [intent] = pdf.Root.OutputIntents
            assert intent.S == pikepdf.Name.GTS_PDFA1
            profile = intent.DestOutputProfile
            assert int(profile.N) == 3
            icc = profile.read_bytes()
            assert icc[36:40] == b"acsp" and icc[16:20] == b"RGB "
            # PDF/A-2 takes display (and a few other) profiles of ICC major version 4 or less.
            assert icc[12:16] in {b"mntr", b"prtr", b"scnr", b"spac"} and icc[8] <= 4
            assert int.from_bytes(icc[0:4], "big") == len(icc)
            identifiers = pdf.trailer.ID
            assert len(identifiers) == 2 and all(len(bytes(i)) >= 16 for i in identifiers)


def test_the_prefecture_table_wraps_long_names_inside_the_page() -> None:
    name = ("Police intercommunale des communes de Chevilly-Larue, Villejuif, Vitry-sur-Seine, "
            "Thiais et Orly (syndicat intercommunal à vocation unique de sécurité)")  # fmt: skip
    long = _report(organisation=OrganisationInfo(id=uuid.uuid4(), name=name, departement="94"))
    table = PrefectureTable(
        departement="94", period={"start": date(2018, 1, 1), "end": date(2018, 12, 31)},
        rows=[long, _report()], totals=dict.fromkeys(
            ["cameras_utilisees", "agents_habilites", "enregistrements",
             "enregistrements_procedure_judiciaire", "enregistrements_procedure_administrative",
             "enregistrements_procedure_disciplinaire", "enregistrements_formation",
             "consultations", "extractions", "effacements"], 0),
    )  # fmt: skip
    reader = PdfReader(io.BytesIO(prefecture_table_pdf(table)))
    page = reader.pages[0]
    width = float(page.mediabox.width)
    ends: list[float] = []

    def visit(text: str, cm: list[float], tm: list[float], *_: object) -> None:
        if text.strip():
            ends.append(tm[4] + cm[4])

    text = " ".join(page.extract_text(visitor_text=visit).split())
    assert "Val-de-Marne (94)" in text and "département" not in text
    for word in name.split():
        assert word in text, word
    assert ends and max(ends) < width - 30
    # Wrapped: the name's words start lines at the name column's left edge, several times.
    assert sum(1 for line in page.extract_text().splitlines() if line.startswith(
        ("Police intercommunale", "Thiais", "Vitry", "(syndicat", "vocation", "Villejuif",
         "Orly", "intercommunal", "unique")
    )) >= 2  # fmt: skip


def test_no_heading_is_left_alone_at_the_foot_of_a_page() -> None:
    # An évaluation long enough to push its heading near the foot of the first page: the
    # heading moves with its first paragraph.
    for filler in range(0, 120, 3):
        report = _report(evaluation="Texte de l'évaluation. " * 40,
                         consultations=filler)  # fmt: skip
        report = report.model_copy(
            update={"organisation": report.organisation.model_copy(
                update={"name": "Police municipale " + "très longue " * filler})}
        )  # fmt: skip
        for page in _pages(report_letter(report)):
            heading = "Évaluation de l'impact de l'emploi des caméras individuelles dans les "
            if heading in page:
                after = page[page.index(heading) :]
                assert "Texte de l'évaluation" in after, (filler, page)
