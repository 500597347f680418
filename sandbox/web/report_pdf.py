"""The regulator's quarterly report as PDF (fpdf2), with the same rows as the page and the
CSV export, and the runs per user and per dataset as tables.

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

#: CJK fonts looked for, in order (Debian's paths).
FONTS = (Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
         Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"))
FAMILY = "cjk"
#: Header rows: shaded, not bold (the CJK font has one weight; no fake bold).
HEADINGS = FontFace(emphasis="", fill_color=(214, 226, 238))
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
