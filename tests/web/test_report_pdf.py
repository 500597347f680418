"""The regulator's PDF report draws the page's bar charts (runs per user, runs per
dataset) from the same series, with their labels in the report's CJK font."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pypdf import PdfReader
from pypdf.generic import ContentStream

from sandbox.web import charts, report_pdf

ENGLISH = report_pdf.Words(title="Quarterly report 2026Q4", period="Runs", count="Runs",
                           runs_per_user="Runs per user", runs_per_dataset="Runs per dataset",
                           none="No run in this quarter.")
CHINESE = report_pdf.Words(title="季度报告 2026Q4", period="运行", count="运行次数",
                           runs_per_user="每个用户的运行次数",
                           runs_per_dataset="每个数据集的运行次数", none="本季度没有运行。")
BY_USER = [("张敏 (保险公司)", 6), ("analyst@insurer.example", 3)]
BY_DATASET = [("门诊记录 v2", 5), ("claims", 4), ("pharmacy", 2)]
BAR = [c / 255 for c in report_pdf.BAR]


def _drawn(pdf: bytes) -> tuple[list[float], list[str], str]:
    """(heights of the rectangles filled in the bars' colour, texts drawn turned, all
    text) on the first page."""
    reader = PdfReader(io.BytesIO(pdf))
    page = reader.pages[0]
    heights: list[float] = []
    fill: list[float] = []
    saved: list[list[float]] = []
    for operands, op in ContentStream(page.get_contents(), reader).operations:
        if op == b"q":
            saved.append(fill)
        elif op == b"Q":
            fill = saved.pop()
        elif op == b"rg":
            fill = [float(x) for x in operands]
        elif op == b"re" and fill == pytest.approx(BAR, abs=1e-3):
            heights.append(abs(float(operands[3])))
    turned: list[str] = []

    def visit(text: str, cm: Any, tm: Any, font: Any, size: Any) -> None:
        if text.strip() and abs(cm[1]) > 0.1:  # a rotation in the current matrix
            turned.append(text.strip())

    text = page.extract_text(visitor_text=visit)
    return heights, turned, text


@pytest.mark.parametrize("words", [ENGLISH, CHINESE], ids=["en", "zh"])
def test_the_report_draws_both_charts_with_their_labels(words: report_pdf.Words) -> None:
    pdf = report_pdf.render(words, ["index", "user"], [{"index": 1, "user": "张敏"}],
                            BY_USER, BY_DATASET)
    heights, turned, text = _drawn(pdf)
    # One bar per user and per dataset, as tall as the page's chart draws them.
    page = [b.h for data in (BY_USER, BY_DATASET) for b in charts.bars(data, "x").bars]
    assert len(heights) == len(page) == 5
    scale = report_pdf.CHART_WIDTH / charts.WIDTH * 72 / 25.4  # pixels to points
    assert heights == pytest.approx([h * scale for h in page], rel=1e-3)
    # Every bar's label, CJK ones included, drawn turned under it in an embedded font.
    assert turned == [label[:16] for label, _ in (*BY_USER, *BY_DATASET)]
    assert words.runs_per_user in text and words.runs_per_dataset in text
