"""The regulator's quarterly report as PDF (fpdf2), with the same rows as the page and the
CSV export, and the runs per user and per dataset as bar charts and tables.

The charts are the page's (``sandbox.web.charts``: the same series, the same geometry),
drawn with fpdf2's own lines, rectangles and text rather than by embedding the page's SVG:
fpdf2's SVG import renders text in its own default font, which has no CJK glyphs, so a
label in 简体中文 would vanish; drawn here, every label is in the report's CJK font.

Text in the report (purposes, business systems, the page's own words in 简体中文) needs a
font with CJK glyphs: Debian's WenQuanYi Micro Hei (``fonts-wqy-microhei``, installed by
scripts/ensure-system.sh) or Noto Sans CJK. fpdf2 embeds only the glyphs used. Without
either font the export answers 503 rather than a PDF with missing text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import TableCellFillMode
from fpdf.fonts import FontFace

from compute.errors import SandboxError
from sandbox.web import charts

#: CJK fonts looked for, in order (Debian's paths).
FONTS = (Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
         Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"))
FAMILY = "cjk"
#: Header rows: shaded, not bold (the CJK font has one weight; no fake bold).
HEADINGS = FontFace(emphasis="", fill_color=(214, 226, 238))
#: The charts' colours: the page's (web/provider/_chart.html).
BAR, GRID, INK = (31, 95, 153), (200, 200, 200), (51, 51, 51)
#: Two charts side by side across landscape A4, with a gap between them (mm).
CHART_WIDTH, CHART_GAP = 134.0, 9.0
#: Relative widths of the report's columns (landscape A4 spreads them over the page).
WIDTHS = {"index": 5, "time": 13, "job": 13, "state": 7, "user": 12,
          "authorizing_operator": 12, "datasets": 13, "purpose": 22, "business_system": 11,
          "rows": 6, "code_sha256": 18, "released_outputs": 13}


class FontMissing(SandboxError):
    http_status = 503
    code = "font_missing"


@dataclass(frozen=True)
class Words:
    """The report's own words, already in the reader's language."""

    title: str
    period: str
    runs_per_user: str
    runs_per_dataset: str
    count: str
    none: str


def font_path() -> Path:
    for path in FONTS:
        if path.is_file():
            return path
    raise FontMissing("the PDF export needs a CJK font (Debian's fonts-wqy-microhei); "
                      "the CSV export works without it")


def render(words: Words, columns: Sequence[str], rows: Sequence[dict[str, Any]],
           by_user: Sequence[tuple[str, int]], by_dataset: Sequence[tuple[str, int]]) -> bytes:
    pdf = FPDF(orientation="landscape", format="A4")
    pdf.set_creator("data-sandbox")
    pdf.set_title(words.title)
    pdf.add_font(FAMILY, fname=font_path())
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    pdf.set_font(FAMILY, size=14)
    pdf.cell(text=words.title, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(FAMILY, size=9)
    pdf.multi_cell(0, text=words.period, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    _charts(pdf, [(words.runs_per_user, charts.bars(by_user, "user")),
                  (words.runs_per_dataset, charts.bars(by_dataset, "dataset"))])
    for heading, counts in ((words.runs_per_user, by_user),
                            (words.runs_per_dataset, by_dataset)):
        _table(pdf, (heading, words.count), [(k, str(n)) for k, n in counts] or
               [(words.none, "")], (4, 1), width=120)
        pdf.ln(3)
    pdf.set_font(FAMILY, size=6)
    body = [tuple(str(r[c]) for c in columns) for r in rows] or [
        (words.none,) + ("",) * (len(columns) - 1)]
    _table(pdf, tuple(columns), body, tuple(WIDTHS.get(c, 10) for c in columns))
    return bytes(pdf.output())


def _table(pdf: FPDF, header: Sequence[str], body: Sequence[Sequence[str]],
           widths: Sequence[int], width: float | None = None) -> None:
    # The header row repeats on every page the table runs over.
    with pdf.table(col_widths=tuple(widths), width=width, align="LEFT", text_align="LEFT",
                   cell_fill_color=(243, 245, 247), cell_fill_mode=TableCellFillMode.ROWS,
                   line_height=pdf.font_size * 1.6, first_row_as_headings=True,
                   headings_style=HEADINGS) as table:
        for values in (header, *body):
            row = table.row()
            for v in values:
                row.cell(v)


def _charts(pdf: FPDF, titled: Sequence[tuple[str, charts.Chart]]) -> None:
    """Bar charts side by side below the cursor, each under its title; the cursor ends
    below them."""
    top = pdf.get_y()
    bottom = top
    # The charts' colours and fonts stay in their own graphics state: the tables after
    # them keep theirs.
    with pdf.local_context():
        for i, (title, chart) in enumerate(titled):
            left = pdf.l_margin + i * (CHART_WIDTH + CHART_GAP)
            pdf.set_font(FAMILY, size=9)
            pdf.set_text_color(*INK)
            pdf.text(left, top + 4, title)
            bottom = max(bottom, _chart(pdf, chart, left, top + 6, CHART_WIDTH / chart.width))
    pdf.set_y(bottom + 4)


def _chart(pdf: FPDF, chart: charts.Chart, left: float, top: float, scale: float) -> float:
    """One chart, its pixel geometry scaled to ``scale`` mm per pixel; the bottom (mm)."""
    def x(px: float) -> float:
        return left + px * scale

    def y(px: float) -> float:
        return top + px * scale

    def size(px: float) -> float:  # a font size given in pixels on the page, in points
        return px * scale * 72 / 25.4

    pdf.set_line_width(0.2)
    pdf.set_draw_color(*GRID)
    pdf.set_font(FAMILY, size=size(11))
    for value, at in chart.ticks:
        pdf.line(x(60), y(at), x(chart.width - 8), y(at))
        label = charts.tick(value)
        pdf.text(x(56) - pdf.get_string_width(label), y(at + 4), label)
    pdf.set_fill_color(*BAR)
    pdf.set_font(FAMILY, size=size(10))
    for bar in chart.bars:
        pdf.rect(x(bar.x), y(bar.y), bar.w * scale, bar.h * scale, style="F")
        # Anchored at its end under the bar and turned 30° up, as on the page.
        label = bar.label[:16]
        cx, cy = x(bar.x + bar.w / 2), y(chart.baseline + 14)
        with pdf.rotation(30, cx, cy):
            pdf.text(cx - pdf.get_string_width(label), cy, label)
    return y(chart.height)
