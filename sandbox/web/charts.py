"""Bar charts drawn on the server as SVG: no script, no inline style (the page policy
allows neither), the same numbers as the table beside each chart for screen readers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

DAYS_LABEL = "day"
REQUESTER_LABEL = "requester"
WIDTH, HEIGHT = 640, 220
LEFT, BOTTOM, TOP = 40, 48, 12
MAX_BARS = 30


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class Chart:
    kind: str
    width: int
    height: int
    bars: list[Bar]
    ticks: list[tuple[int, float]]  # (value, y)
    baseline: float


def per_day(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Jobs per submission day (UTC), the latest MAX_BARS days that had any."""
    days = Counter(str(r["submitted_at"])[:10] for r in rows)
    return sorted(days.items())[-MAX_BARS:]


def per_requester(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    who = Counter(str(r["requester_name"] or r["requester_id"]) for r in rows)
    return who.most_common(MAX_BARS)


def bars(data: list[tuple[str, int]], kind: str) -> Chart:
    top = max([v for _, v in data] + [1])
    plot_w, plot_h = WIDTH - LEFT - 8, HEIGHT - BOTTOM - TOP
    step = plot_w / max(len(data), 1)
    out = []
    for i, (label, value) in enumerate(data):
        h = plot_h * value / top
        out.append(Bar(label, value, LEFT + i * step + step * 0.15, TOP + plot_h - h,
                       step * 0.7, h))
    ticks = sorted({0, top // 2, top})
    return Chart(kind, WIDTH, HEIGHT, out,
                 [(t, TOP + plot_h - plot_h * t / top) for t in ticks], TOP + plot_h)
