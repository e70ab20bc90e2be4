"""The report as a French letter to the préfet, laid out like the 2018 report of L'Haÿ-les-Roses
(shared/seeds): the service as sender, the préfet as addressee, the objet, the legal
references, the figures, a monthly chart and a signature block. And the préfecture's table."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from services.reporting.statistics.report import Report

if TYPE_CHECKING:
    from services.reporting.statistics.endpoints import PrefectureTable

MONTHS = ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.",
          "nov.", "déc.")  # fmt: skip
LONG_MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
               "septembre", "octobre", "novembre", "décembre")  # fmt: skip


def _styles() -> dict[str, ParagraphStyle]:
    base = getSampleStyleSheet()
    body = ParagraphStyle("body", parent=base["Normal"], fontName="Helvetica", fontSize=10.5,
                          leading=14)  # fmt: skip
    return {
        "body": body,
        "right": ParagraphStyle("right", parent=body, alignment=TA_RIGHT),
        "bold": ParagraphStyle("bold", parent=body, fontName="Helvetica-Bold"),
        "title": ParagraphStyle("title", parent=body, fontName="Helvetica-Bold", fontSize=13),
    }


def _date_fr(report: Report) -> str:
    day = report.generated_at.date()
    return f"{day.day} {LONG_MONTHS[day.month - 1]} {day.year}"


def _chart(report: Report) -> Drawing:
    drawing = Drawing(16 * cm, 5.5 * cm)
    chart = VerticalBarChart()
    chart.x, chart.y = 1.2 * cm, 0.8 * cm
    chart.width, chart.height = 14 * cm, 4.2 * cm
    months = report.monthly or []
    chart.data = [[m.recordings for m in months] or [0]]
    chart.categoryAxis.categoryNames = [
        f"{MONTHS[int(m.month[5:]) - 1]} {m.month[2:4]}" for m in months
    ] or ["—"]
    chart.categoryAxis.labels.fontSize = 7
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labels.fontSize = 7
    chart.bars[0].fillColor = colors.HexColor("#1f4e79")
    drawing.add(chart)
    return drawing


def report_letter(report: Report) -> bytes:
    styles = _styles()
    out = io.BytesIO()
    document = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=2.2 * cm, rightMargin=2.2 * cm, topMargin=2 * cm,
        bottomMargin=2 * cm, title=f"Rapport caméras individuelles {report.organisation.name}",
    )  # fmt: skip
    start, end = report.period.start, report.period.end
    period = (
        f"l'année {start.year}"
        if (start.month, start.day, end.month, end.day, start.year) == (1, 1, 12, 31, end.year)
        else f"la période du {start:%d/%m/%Y} au {end:%d/%m/%Y}"
    )
    used = report.recordings_used
    figures = [
        ["Nombre de caméras utilisées", report.cameras_used],
        ["Nombre d'agents habilités", report.agents_habilites],
        ["Enregistrements sur interventions", report.recordings],
        ["Enregistrements pour procédure judiciaire", used["judiciaire"]],
        ["Enregistrements pour procédure administrative", used["administrative"]],
        ["Enregistrements pour procédure disciplinaire", used["disciplinaire"]],
        ["Enregistrements pour formation", used["formation"]],
        ["Procédures judiciaires (consultation et extraction)", report.procedures["judiciaire"]],
        ["Procédures administratives (consultation et extraction)",
         report.procedures["administrative"]],
        ["Procédures disciplinaires (consultation et extraction)",
         report.procedures["disciplinaire"]],
        ["Consultations", report.consultations],
        ["Extractions", report.extractions],
        ["Effacements", report.erasures],
    ]  # fmt: skip
    if report.median_upload_delay_minutes is not None:
        figures.append(
            ["Délai médian entre l'enregistrement et son transfert",
             f"{report.median_upload_delay_minutes:.0f} min"]
        )  # fmt: skip
    table = Table([[label, str(value)] for label, value in figures], colWidths=[12 * cm, 3 * cm])
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Helvetica", 10),
                ("FONT", (1, 0), (1, -1), "Helvetica-Bold", 10),
                ("ALIGN", (1, 0), (1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.grey),
            ]
        )
    )
    story = [
        Paragraph(f"<b>{report.organisation.name}</b>", styles["body"]),
        Paragraph("Service de police municipale", styles["body"]),
        Spacer(1, 0.8 * cm),
        Paragraph(
            f"Monsieur le Préfet du département {report.organisation.departement}", styles["right"]
        ),  # fmt: skip
        Spacer(1, 0.6 * cm),
        Paragraph(f"Le {_date_fr(report)}", styles["right"]),
        Spacer(1, 0.6 * cm),
        Paragraph(
            "<b>Objet :</b> Rapport sur l'emploi des caméras individuelles pour la police "
            f"municipale, {period}",
            styles["body"],
        ),
        Spacer(1, 0.5 * cm),
        Paragraph("Monsieur le Préfet,", styles["body"]),
        Spacer(1, 0.3 * cm),
        Paragraph(
            "Dans les conditions prévues aux articles L. 241-2 et R. 241-17 du Code de la "
            "sécurité intérieure, j'ai l'honneur de vous adresser le rapport sur l'emploi des "
            f"caméras individuelles par la police municipale pour {period}. Les enregistrements "
            "ne peuvent être ni modifiés ni effacés par les agents ; ils sont chiffrés, conservés "
            "un mois au plus sauf procédure, et chaque consultation et extraction est tracée "
            "(articles R. 241-12 à R. 241-14).",
            styles["body"],
        ),
        Spacer(1, 0.4 * cm),
        Paragraph("Sur cette période, le service a procédé :", styles["body"]),
        Spacer(1, 0.2 * cm),
        table,
        Spacer(1, 0.4 * cm),
        Paragraph("Enregistrements par mois", styles["bold"]),
        _chart(report),
        Spacer(1, 0.3 * cm),
        Paragraph(
            "<b>Évaluation de l'impact de l'emploi des caméras individuelles</b>", styles["body"]
        ),  # fmt: skip
        Paragraph(report.evaluation or "(non renseignée)", styles["body"]),
        Spacer(1, 0.6 * cm),
        Paragraph(
            "Je vous prie d'agréer, Monsieur le Préfet, l'expression de ma haute considération.",
            styles["body"],
        ),
        Spacer(1, 1.0 * cm),
        Paragraph("Le chef de service de la police municipale", styles["right"]),
    ]
    if not report.has_data:
        story.insert(
            10,
            Paragraph(
                "<i>Aucune donnée n'est enregistrée pour cette période.</i>", styles["body"]
            ),  # fmt: skip
        )
    document.build(story)
    return out.getvalue()


def prefecture_table_pdf(table: PrefectureTable) -> bytes:
    styles = _styles()
    out = io.BytesIO()
    margin = 1.5 * cm
    document = SimpleDocTemplate(
        out, pagesize=landscape(A4), leftMargin=margin, rightMargin=margin, topMargin=margin,
        bottomMargin=margin,
    )  # fmt: skip
    header = ["Commune / service", "Caméras", "Agents habilités", "Enregistrements", "Judiciaire",
              "Administrative", "Disciplinaire", "Formation", "Consultations", "Extractions",
              "Effacements"]  # fmt: skip
    rows: list[list[str]] = [header]
    for report in table.rows:
        used = report.recordings_used
        rows.append(
            [report.organisation.name + ("" if report.has_data else " (aucune donnée)"),
             *map(str, [report.cameras_used, report.agents_habilites, report.recordings,
                        used["judiciaire"], used["administrative"], used["disciplinaire"],
                        used["formation"], report.consultations, report.extractions,
                        report.erasures])]
        )  # fmt: skip
    t = table.totals
    rows.append(
        ["Total", *map(str, [t["cameras_utilisees"], t["agents_habilites"], t["enregistrements"],
                             t["enregistrements_procedure_judiciaire"],
                             t["enregistrements_procedure_administrative"],
                             t["enregistrements_procedure_disciplinaire"],
                             t["enregistrements_formation"], t["consultations"],
                             t["extractions"], t["effacements"]])]
    )  # fmt: skip
    grid = Table(rows, repeatRows=1)
    grid.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8.5),
                ("FONT", (0, 1), (-1, -1), "Helvetica", 8.5),
                ("FONT", (0, -1), (-1, -1), "Helvetica-Bold", 8.5),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#dde6f0")),
            ]
        )
    )
    period = table.period
    document.build(
        [
            Paragraph(
                f"Caméras individuelles des polices municipales — département {table.departement}"
                f" — du {period['start']:%d/%m/%Y} au {period['end']:%d/%m/%Y}",
                styles["title"],
            ),
            Spacer(1, 0.5 * cm),
            grid,
        ]
    )
    return out.getvalue()
