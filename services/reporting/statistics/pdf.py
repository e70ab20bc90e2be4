"""The report as the letter a chef de service signs, written like the 2018 report of
L'Haÿ-les-Roses to the préfet du Val-de-Marne (shared/seeds): addressee, place and date,
objet, the figures as sentences, the évaluation, the signature; then a short annex with the
other figures, each defined, and the recordings per month. And the préfecture's table.

Both are PDF/A-2b, with their fonts embedded, so that an archive keeps them as sent."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import escape

import pikepdf
from PIL import ImageCms
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from services.reporting.statistics.addressees import addressee, territory_label
from services.reporting.statistics.french import (
    SHORT_MONTHS,
    count,
    day_fr,
    duration_fr,
    letter_day,
    of_place,
    period_fr,
    period_in,
    period_label,
)
from services.reporting.statistics.report import Report

if TYPE_CHECKING:
    from services.reporting.statistics.endpoints import PrefectureTable

FONTS = Path(__file__).parent / "fonts"
FONT, BOLD, ITALIC = "LiberationSans", "LiberationSans-Bold", "LiberationSans-Italic"
INK = colors.HexColor("#1f3b5a")
GREY = colors.HexColor("#666666")
DRAFT = "Projet — non finalisé"
SIGNATORY_TITLE = "Le chef de service de la police municipale"
# The sentences put a no-break space (\u00a0) before « : » and a narrow one (\u202f) before
# « ; », as French typography does, so that no line starts with the sign.
FOOTER_CHARS = 120


def _register_fonts() -> None:
    # A TrueType font is embedded (subset) in every PDF that uses it; the base-14 fonts never
    # are, and an archive (PDF/A) refuses them.
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    for name, file in ((FONT, "Regular"), (BOLD, "Bold"), (ITALIC, "Italic")):
        pdfmetrics.registerFont(TTFont(name, FONTS / f"LiberationSans-{file}.ttf"))
    pdfmetrics.registerFontFamily(FONT, normal=FONT, bold=BOLD, italic=ITALIC, boldItalic=BOLD)


def _styles() -> dict[str, ParagraphStyle]:
    _register_fonts()
    body = ParagraphStyle("body", fontName=FONT, bulletFontName=FONT, fontSize=10.5,
                          leading=14.5, spaceAfter=7)  # fmt: skip
    return {
        "body": body,
        "sender": ParagraphStyle("sender", parent=body, fontName=BOLD, spaceAfter=0),
        "to": ParagraphStyle("to", parent=body, leftIndent=8.6 * cm, spaceAfter=0),
        "item": ParagraphStyle(
            "item", parent=body, leftIndent=0.9 * cm, bulletIndent=0.35 * cm, spaceAfter=1.5
        ),  # fmt: skip
        "note": ParagraphStyle("note", parent=body, fontSize=9, leading=12, textColor=GREY),
        "heading": ParagraphStyle(
            "heading", parent=body, fontName=BOLD, spaceBefore=6, spaceAfter=4, keepWithNext=1
        ),  # fmt: skip
        "title": ParagraphStyle(
            "title",
            parent=body,
            fontName=BOLD,
            fontSize=13,
            leading=17,
            spaceAfter=10,
            keepWithNext=1,
        ),  # fmt: skip
        "cell": ParagraphStyle("cell", parent=body, fontSize=9, leading=11.5, spaceAfter=0),
        "cell_bold": ParagraphStyle(
            "cell_bold", parent=body, fontName=BOLD, fontSize=9, leading=11.5, spaceAfter=0
        ),  # fmt: skip
        "sign": ParagraphStyle("sign", parent=body, leftIndent=8.6 * cm, spaceAfter=0),
    }


def _months(start: date, end: date) -> list[str]:
    """Every month the period touches, as YYYY-MM, those without recordings included."""
    months, year, month = [], start.year, start.month
    while (year, month) <= (end.year, end.month):
        months.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _chart(report: Report) -> Drawing:
    start, end = report.period.start, report.period.end
    months = _months(start, end)
    counts = {m.month: m.recordings for m in report.monthly}
    values = [counts.get(m, 0) for m in months]
    one_year = start.year == end.year
    drawing = Drawing(16.5 * cm, 5.6 * cm)
    drawing.initialFontName = FONT  # else the renderer starts in Helvetica, never embedded
    chart = VerticalBarChart()
    chart.x, chart.y = 1.0 * cm, 0.9 * cm
    chart.width, chart.height = 15.2 * cm, 4.3 * cm
    chart.data = [values]
    chart.categoryAxis.categoryNames = [
        SHORT_MONTHS[int(m[5:]) - 1] + ("" if one_year else f" {m[2:4]}") for m in months
    ]
    top = max(values)
    step = max(1, -(-top // 5))
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = step * (top // step + 1)  # room above the tallest bar's label
    chart.valueAxis.valueStep = step
    for labels in (chart.categoryAxis.labels, chart.valueAxis.labels, chart.barLabels):
        labels.fontName, labels.fontSize = FONT, 7.5 if len(months) <= 12 else 6
    chart.categoryAxis.labels.angle = 0 if len(months) <= 12 else 60
    chart.categoryAxis.labels.boxAnchor = "n" if len(months) <= 12 else "ne"
    chart.barLabelFormat = lambda v: str(int(v)) if v else ""
    chart.barLabels.nudge = 6
    chart.bars[0].fillColor = INK
    chart.bars[0].strokeColor = None
    chart.valueAxis.visibleGrid = True
    chart.valueAxis.gridStrokeColor = colors.HexColor("#dddddd")
    drawing.add(chart)
    return drawing


def _service(report: Report) -> str:
    """The service as the letter's sentences name it: « la police municipale de … »."""
    name = report.organisation.name.strip()
    if name.lower().startswith(("police municipale", "police intercommunale")):
        return "la " + name[0].lower() + name[1:]
    if report.organisation.place:
        return "la police municipale " + of_place(report.organisation.place)
    return f"la police municipale ({name})"


def _place(report: Report) -> str | None:
    """The commune the letter is written from; else the one the service's name gives."""
    if report.organisation.place:
        return report.organisation.place
    name = report.organisation.name.strip()
    for prefix in ("Police municipale de ", "Police municipale d'", "Police municipale du ",
                   "Police municipale des "):  # fmt: skip
        if name.lower().startswith(prefix.lower()) and len(name) > len(prefix):
            rest = name[len(prefix) :]
            return {"du ": "Le ", "des ": "Les "}.get(prefix[-4:].lstrip(), "") + rest
    return None


def _paragraphs(text: str, style: ParagraphStyle) -> list[Flowable]:
    blocks = [b.strip() for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    return [Paragraph(escape(b).replace("\n", "<br/>"), style) for b in blocks]


def _on_page(draft: bool, footer: str) -> Callable[[Canvas, SimpleDocTemplate], None]:
    if len(footer) > FOOTER_CHARS:  # a long name must not run into the page number
        footer = footer[: FOOTER_CHARS - 1] + "…"

    def draw(canvas: Canvas, document: SimpleDocTemplate) -> None:
        canvas.saveState()
        width, height = document.pagesize
        canvas.setFillColor(GREY)
        if draft:
            canvas.setFont(ITALIC, 8.5)
            canvas.drawRightString(width - document.rightMargin, height - 1.1 * cm, DRAFT)
        canvas.setFont(FONT, 7.5)
        canvas.drawString(document.leftMargin, 1.1 * cm, footer)
        canvas.drawRightString(width - document.rightMargin, 1.1 * cm, f"{document.page}")
        canvas.restoreState()

    return draw


def _document(
    out: io.BytesIO, report_title: str, author: str, **layout: object
) -> SimpleDocTemplate:
    _register_fonts()
    return SimpleDocTemplate(
        out, title=report_title, author=author, creator="Témoin", producer="Témoin (reportlab)",
        subject="Rapport sur l'emploi des caméras individuelles (police municipale)",
        lang="fr-FR", initialFontName=FONT, **layout,
    )  # fmt: skip


def report_letter(report: Report) -> bytes:
    styles = _styles()
    body = styles["body"]
    org = report.organisation
    to = addressee(org.departement)
    start, end = report.period.start, report.period.end
    period = period_fr(start, end)
    during = "Au cours de " + period
    out = io.BytesIO()
    margin = 2.4 * cm
    document = _document(
        out, f"Rapport sur l'emploi des caméras individuelles — {org.name} — {period}", org.name,
        pagesize=A4, leftMargin=margin, rightMargin=margin, topMargin=2 * cm,
        bottomMargin=2 * cm,
    )  # fmt: skip
    place = _place(report)
    dated = f"le {day_fr(letter_day(report.generated_at))}"
    story: list[Flowable] = [
        Paragraph(escape(org.name), styles["sender"]),
        Spacer(1, 1.2 * cm),
        Paragraph(f"{escape(to.heading)}", styles["to"]),
        Spacer(1, 0.8 * cm),
        Paragraph(f"{escape(place)}, {dated}" if place else dated.capitalize(), styles["to"]),
        Spacer(1, 1.0 * cm),
        Paragraph(
            "<b>Objet\u00a0:</b> rapport sur l'emploi des caméras individuelles par la police "
            f"municipale {period_in(start, end)}",
            body,
        ),
        Spacer(1, 0.4 * cm),
        Paragraph(f"{to.salutation},", body),
        Paragraph(
            "En application de l'article R. 241-17 du code de la sécurité intérieure, j'ai "
            "l'honneur de vous adresser le rapport sur l'emploi des caméras individuelles par "
            f"{escape(_service(report))} pour {period}.",
            body,
        ),
    ]
    if not report.has_data:
        # One place says it, and nothing else pretends to be a figure (the Athis-Mons case).
        story.append(
            Paragraph(
                f"{during}, le service n'a effectué aucun enregistrement, aucun agent n'était "
                "habilité à accéder aux enregistrements et aucune donnée n'a été consultée ni "
                "extraite\u00a0: il n'est donc pas en mesure de présenter de chiffres pour cette "
                "période.",
                body,
            )
        )
    else:
        story += _figures(report, styles, during)
    if report.evaluation:
        story.append(
            Paragraph(
                "Évaluation de l'impact de l'emploi des caméras individuelles dans les rapports "
                "des agents avec la population",
                styles["heading"],
            )
        )
        story += _paragraphs(report.evaluation, body)
    elif report.has_data:
        story.append(
            Paragraph(
                "L'évaluation de l'impact de l'emploi des caméras individuelles dans les "
                "rapports des agents avec la population n'a pas été rédigée pour cette période.",
                body,
            )
        )
    story.append(
        Paragraph(
            f"Je vous prie d'agréer, {to.salutation}, l'expression de ma haute considération.",
            body,
        )
    )
    signature: list[Flowable] = [Spacer(1, 1.3 * cm)]
    if report.signatory is not None:
        signature += [
            Paragraph(f"<b>{escape(report.signatory.name)}</b>", styles["sign"]),
            Paragraph(escape(report.signatory.title), styles["sign"]),
        ]
    else:
        signature.append(Paragraph(SIGNATORY_TITLE, styles["sign"]))
    story.append(KeepTogether(signature))
    if report.has_data:
        story += [PageBreak(), *_annex(report, styles)]
    footer = f"{org.name} — rapport sur l'emploi des caméras individuelles {period_in(start, end)}"
    on_page = _on_page(report.signatory is None, footer)
    document.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return _pdfa(out.getvalue())


def _bold_number(text: str) -> str:
    number, _, words = text.partition(" ")
    return f"<b>{number}</b> {words}"


def _figures(report: Report, styles: dict[str, ParagraphStyle], during: str) -> list[Flowable]:
    body, item = styles["body"], styles["item"]
    used = report.recordings_used
    cameras = (
        "la police municipale a utilisé "
        + _bold_number(count(report.cameras_used, "caméra individuelle"))
        if report.cameras_used
        else "la police municipale n'a utilisé aucune caméra individuelle"
    )
    agents = (
        f"<b>{report.agents_habilites}</b> "
        + ("agent était habilité" if report.agents_habilites == 1 else "agents étaient habilités")
        if report.agents_habilites
        else "aucun agent n'était habilité"
    )
    lines = [
        (
            report.recordings,
            "enregistrement sur interventions",
            "enregistrements sur interventions",
        ),
        (used["judiciaire"], "enregistrement pour procédure judiciaire", None),
        (used["administrative"], "enregistrement pour procédure administrative", None),
        (used["disciplinaire"], "enregistrement pour procédure disciplinaire", None),
        (used["formation"], "enregistrement pour formation", None),
    ]
    items = []
    for n, (value, singular, plural) in enumerate(lines):
        end = "." if n == len(lines) - 1 else "\u202f;"
        items.append(
            Paragraph(_bold_number(count(value, singular, plural)) + end, item, bulletText="–")
        )
    procedures = report.procedures
    kinds = [
        count(procedures["judiciaire"], "procédure judiciaire"),
        count(procedures["administrative"], "procédure administrative"),
        count(procedures["disciplinaire"], "procédure disciplinaire"),
    ]
    if any(procedures.values()):
        procedure_sentence = (
            "Les enregistrements de la période ont été consultés et extraits pour les besoins "
            f"de {kinds[0]}, de {kinds[1]} et de {kinds[2]}."
        )
    else:
        procedure_sentence = (
            "Aucune procédure judiciaire, administrative ou disciplinaire n'a donné lieu à la "
            "consultation et à l'extraction d'enregistrements de la période."
        )
    return [
        Paragraph(
            f"{during}, {cameras}\u202f; {agents} à accéder à leurs enregistrements.",
            body,
        ),
        Paragraph("Le service de la police municipale a procédé à\u00a0:", body),
        *items,
        Spacer(1, 0.15 * cm),
        Paragraph(
            "Un enregistrement compte pour une procédure ou pour la formation lorsqu'il a été "
            "extrait à cette fin, même après la fin de la période.",
            styles["note"],
        ),
        Paragraph(procedure_sentence, body),
    ]


def _annex(report: Report, styles: dict[str, ParagraphStyle]) -> list[Flowable]:
    cell, bold = styles["cell"], styles["cell_bold"]
    start, end = report.period.start, report.period.end
    rows = [
        ("Consultations", str(report.consultations),
         "Consultations d'enregistrements faites pendant la période, quelle que soit la date "
         "de l'enregistrement consulté."),
        ("Extractions", str(report.extractions),
         "Copies d'enregistrements remises pour une procédure ou pour la formation pendant la "
         "période, quelle que soit la date de l'enregistrement."),
        ("Effacements", str(report.erasures),
         "Enregistrements effacés pendant la période, leur durée de conservation écoulée."),
        ("Délai médian de transfert", duration_fr(report.median_upload_delay_minutes),
         "Du moment où un enregistrement s'achève à son arrivée dans le coffre sécurisé, "
         "médiane sur les enregistrements de la période."),
    ]  # fmt: skip
    grid = Table(
        [[Paragraph("Chiffre", bold), Paragraph("Valeur", bold), Paragraph("Définition", bold)]]
        + [[Paragraph(a, cell), Paragraph(b, cell), Paragraph(c, cell)] for a, b, c in rows],
        colWidths=[4.2 * cm, 3.4 * cm, 8.6 * cm],
        repeatRows=1,
    )
    grid.setStyle(
        TableStyle(
            [
                # Cells are paragraphs, but a table sets its cells' font all the same.
                ("FONT", (0, 0), (-1, -1), FONT, 9),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.4, colors.HexColor("#bbbbbb")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
                ("TOPPADDING", (0, 0), (-1, -1), 4),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    annex: list[Flowable] = [
        Paragraph(f"Annexe — autres chiffres {period_in(start, end)}", styles["title"]),
        Paragraph(
            "Ces chiffres complètent le rapport. Les consultations et les extractions sont "
            "comptées quand elles ont lieu\u00a0: elles peuvent porter sur des enregistrements "
            "d'une période antérieure.",
            styles["body"],
        ),
        grid,
    ]
    if report.recordings:
        annex.append(
            KeepTogether(
                [
                    Spacer(1, 0.6 * cm),
                    Paragraph(
                        f"Enregistrements par mois {period_in(start, end)}", styles["heading"]
                    ),
                    _chart(report),
                ]
            )
        )
    return annex


def _srgb_profile() -> bytes:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    data: bytes = profile.tobytes()
    return data


def _pdfa(raw: bytes) -> bytes:
    """PDF/A-2b: the XMP metadata that says so (in step with the document information), an
    output intent with the sRGB profile the colours are meant in, and a document ID."""
    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(raw)) as pdf:
        icc = pdf.make_stream(_srgb_profile())
        icc.N = 3
        pdf.Root.OutputIntents = pikepdf.Array(
            [
                pikepdf.Dictionary(
                    Type=pikepdf.Name.OutputIntent,
                    S=pikepdf.Name.GTS_PDFA1,
                    OutputConditionIdentifier="sRGB IEC61966-2.1",
                    Info="sRGB IEC61966-2.1",
                    DestOutputProfile=icc,
                )
            ]
        )
        # XMP has no /Trapped, and PDF/A wants the two to say the same.
        if "/Trapped" in pdf.docinfo:
            del pdf.docinfo["/Trapped"]
        with pdf.open_metadata(set_pikepdf_as_editor=False) as meta:
            meta.load_from_docinfo(pdf.docinfo)
            meta["pdfaid:part"] = "2"
            meta["pdfaid:conformance"] = "B"
        pdf.save(out)
    return out.getvalue()


def prefecture_table_pdf(table: PrefectureTable) -> bytes:
    styles = _styles()
    cell = ParagraphStyle("t", parent=styles["cell"], fontSize=8.5, leading=10.5)
    head = ParagraphStyle("th", parent=cell, fontName=BOLD, fontSize=8, leading=10)
    number = ParagraphStyle("tn", parent=cell, alignment=2)
    number_head = ParagraphStyle("tnh", parent=head, alignment=2)
    total = ParagraphStyle("tt", parent=number, fontName=BOLD)
    out = io.BytesIO()
    margin = 1.5 * cm
    start, end = table.period["start"], table.period["end"]
    period = period_label(start, end)
    where = territory_label(table.departement)
    document = _document(
        out, f"Caméras individuelles des polices municipales — {where} — {period}",
        "Témoin", pagesize=landscape(A4), leftMargin=margin, rightMargin=margin,
        topMargin=margin, bottomMargin=margin,
    )  # fmt: skip
    header = ["Caméras utilisées", "Agents habilités", "Enregistrements",
              "Pour procédure judiciaire", "Pour procédure administrative",
              "Pour procédure disciplinaire", "Pour formation", "Consultations", "Extractions",
              "Effacements"]  # fmt: skip
    rows: list[list[Flowable]] = [
        [Paragraph("Commune ou service", head), *(Paragraph(h, number_head) for h in header)]
    ]
    for report in table.rows:
        used = report.recordings_used
        name = escape(report.organisation.name)
        if not report.has_data:
            name += " <i>(aucune donnée)</i>"
        values = [report.cameras_used, report.agents_habilites, report.recordings,
                  used["judiciaire"], used["administrative"], used["disciplinaire"],
                  used["formation"], report.consultations, report.extractions,
                  report.erasures]  # fmt: skip
        rows.append([Paragraph(name, cell), *(Paragraph(str(v), number) for v in values)])
    t = table.totals
    totals = [t["cameras_utilisees"], t["agents_habilites"], t["enregistrements"],
              t["enregistrements_procedure_judiciaire"],
              t["enregistrements_procedure_administrative"],
              t["enregistrements_procedure_disciplinaire"], t["enregistrements_formation"],
              t["consultations"], t["extractions"], t["effacements"]]  # fmt: skip
    rows.append([Paragraph("Total", head), *(Paragraph(str(v), total) for v in totals)])
    # Each figure's column as wide as its header's longest word; the names take the rest and
    # wrap, however long.
    widths = [
        max(pdfmetrics.stringWidth(word, BOLD, head.fontSize) for word in label.split()) + 14
        for label in header
    ]
    name_width = landscape(A4)[0] - 2 * margin - sum(widths)
    grid = Table(rows, colWidths=[name_width, *widths], repeatRows=1)
    grid.setStyle(
        TableStyle(
            [
                # Cells are paragraphs, but a table sets its cells' font all the same.
                ("FONT", (0, 0), (-1, -1), FONT, 9),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#aaaaaa")),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
                ("BACKGROUND", (0, -1), (-1, -1), colors.HexColor("#f3f3f3")),
            ]
        )
    )
    document.build(
        [
            Paragraph(
                f"Caméras individuelles des polices municipales — {escape(where)} — {period}",
                styles["title"],
            ),
            Paragraph(
                "Une ligne par commune ou service du territoire, y compris ceux qui n'ont "
                "aucune donnée pour la période. Les enregistrements pour procédure comptent "
                "ceux de la période extraits à cette fin, même plus tard\u202f; les consultations, "
                "extractions et effacements sont comptés quand ils ont lieu.",
                styles["note"],
            ),
            grid,
        ],
        onFirstPage=_on_page(False, f"{where} — {period}"),
        onLaterPages=_on_page(False, f"{where} — {period}"),
    )
    return _pdfa(out.getvalue())
