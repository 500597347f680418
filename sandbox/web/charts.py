"""Bar charts drawn on the server as SVG: no script, no inline style (the page policy
allows neither), the same numbers as the table beside each chart for screen readers.
A chart is a value (hashable): its SVG can be kept (sandbox.web.fragments)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DAYS_LABEL = "day"
REQUESTER_LABEL = "requester"
WIDTH, HEIGHT = 640, 220
LEFT, BOTTOM, TOP = 64, 48, 12
MAX_BARS = 30


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Chart:
    kind: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, float], ...]  # (value, y)
    baseline: float


def bars(data: Sequence[tuple[str, float]], kind: str) -> Chart:
    """Bars from zero (a negative value is drawn as zero: the charts show counts and
    magnitudes; the table beside each chart has the exact figures)."""
    top = max([float(v) for _, v in data] + [1.0])
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(data), 1)
    out = []
    for i, (label, value) in enumerate(data):
        h = plot_h * max(0.0, float(value)) / top
        out.append(Bar(label, value, LEFT + i * step + step * 0.15, TOP + plot_h - h,
                       step * 0.7, h))
    ticks = tuple((v, TOP + plot_h - plot_h * v / top) for v in (0.0, top / 2, top))
    return Chart(kind, WIDTH, HEIGHT, tuple(out), ticks, TOP + plot_h)


def table_chart(header: list[str], rows: list[list[str]]) -> tuple[str, Chart] | None:
    """A released table's last numeric column by its first column, when it has one."""
    if len(header) < 2 or not rows or len(rows) > MAX_BARS:
        return None
    for col in range(len(header) - 1, 0, -1):
        try:
            values = [float(r[col]) for r in rows if len(r) > col]
        except ValueError:
            continue
        if len(values) == len(rows):
            return header[col], bars([(r[0], v) for r, v in zip(rows, values, strict=True)],
                                     "result")
    return None


def tick(value: float) -> str:
    """An axis label: whole numbers as such, with thousands separated; else 3 digits."""
    if value == int(value) or abs(value) >= 100:
        return f"{round(value):,}"
    return f"{value:.3g}"
