"""Geometry of the server-rendered SVG charts (templates draw them; no chart library, no script)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    x: float
    y: float
    width: float
    height: float
    series: int = 0


def nice_max(value: float) -> float:
    """A round upper bound for an axis (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def horizontal_bars(
    items: list[tuple[str, float]], *, width: float = 560, label_width: float = 150, row: float = 34
) -> tuple[list[Bar], float]:
    """Funnel-style bars, one row each, scaled to the largest value; returns (bars, chart height)."""
    top = max((v for _, v in items), default=0) or 1
    usable = width - label_width - 70
    bars = [
        Bar(label, value, label_width, i * row + 4, max(usable * value / top, 1.0 if value else 0.0), row - 10)
        for i, (label, value) in enumerate(items)
    ]
    return bars, len(items) * row + 8


def grouped_columns(
    groups: list[str], series: list[list[float]], *, width: float = 560, height: float = 220, pad: float = 36
) -> tuple[list[Bar], list[tuple[str, float]], list[tuple[float, float]], float]:
    """Columns per group and series; returns (bars, x labels with their centre, y ticks (value, y), y max)."""
    top = nice_max(max((v for s in series for v in s), default=0))
    plot_h = height - 2 * pad
    plot_w = width - pad - 10
    n = max(len(groups), 1)
    slot = plot_w / n
    bar_w = max(min(slot * 0.8 / max(len(series), 1), 28), 2)
    bars: list[Bar] = []
    labels: list[tuple[str, float]] = []
    every = max(1, -(-n // 7))  # at most about seven axis labels, so they never overlap
    for gi, group in enumerate(groups):
        left = pad + gi * slot + (slot - bar_w * len(series)) / 2
        if gi % every == 0:
            labels.append((group, pad + gi * slot + slot / 2))
        for si, values in enumerate(series):
            v = values[gi] if gi < len(values) else 0
            h = plot_h * v / top
            bars.append(Bar(group, v, left + si * bar_w, pad + plot_h - h, bar_w - 1, h, si))
    ticks = [(top * k / 4, pad + plot_h - plot_h * k / 4) for k in range(5)]
    return bars, labels, ticks, top
