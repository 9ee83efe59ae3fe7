"""Server-rendered charts: pure functions from report data to an SVG string (PNG through cairosvg).

Every chart is an accessible image: ``role="img"`` with ``<title>`` and ``<desc>`` referenced by
``aria-labelledby``, and each bar or point carries an ``aria-label`` with its value, so a screen reader reads the
numbers. Every text (titles, labels, series names) is XML-escaped; nothing from the data is written unescaped.
Colours come from a fixed palette with enough contrast on white.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any

PALETTE = ("#1f5fa8", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#4d7c0f", "#be185d")
FONT = 'font-family="system-ui, sans-serif" font-size="12"'


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _num(v: float | None, fmt: Callable[[float], str]) -> str:
    return "no data" if v is None else fmt(v)


def _pct(v: float) -> str:
    return f"{v * 100:.1f} %"


def _plain(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.2f}"


def _frame(width: int, height: int, title: str, desc: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="chart-title chart-desc" {FONT}>'
        f'<title id="chart-title">{_e(title)}</title><desc id="chart-desc">{_e(desc)}</desc>'
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>'
        f'<text x="12" y="20" font-size="14" font-weight="bold" fill="#111827">{_e(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def _nice_max(v: float) -> float:
    if v <= 0 or not math.isfinite(v):
        return 1.0
    exp = 10.0 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def bar_chart(
    title: str,
    desc: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    *,
    notes: Sequence[str] | None = None,
    value_format: Callable[[float], str] = _plain,
    width: int = 640,
) -> str:
    """Horizontal bars (e.g. a funnel): one row per label, the value and an optional note at its end."""
    if len(labels) != len(values):
        raise ValueError("labels and values must have the same length")
    row_h, top, left = 28, 36, 170
    height = top + row_h * max(len(labels), 1) + 16
    top_v = _nice_max(max((v for v in values if v is not None), default=0.0))
    span = width - left - 150
    body: list[str] = []
    if not labels:
        body.append(f'<text x="12" y="{top + 16}" fill="#374151">No data</text>')
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = top + i * row_h
        w = 0.0 if v is None else max(v, 0.0) / top_v * span
        shown = _num(v, value_format)
        note = f" ({notes[i]})" if notes and i < len(notes) and notes[i] else ""
        body.append(
            f'<text x="{left - 8}" y="{y + 17}" text-anchor="end" fill="#111827">{_e(label)}</text>'
            f'<rect x="{left}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{PALETTE[0]}" '
            f'aria-label="{_e(f"{label}: {shown}{note}")}"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + 17}" fill="#111827">{_e(shown + note)}</text>'
        )
    return _frame(width, height, title, desc, body)


def line_chart(
    title: str,
    desc: str,
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    value_format: Callable[[float], str] = _pct,
    y_max: float | None = None,
    width: int = 720,
    height: int = 320,
) -> str:
    """Lines over periods (e.g. stage conversion per week); ``None`` leaves a gap."""
    for name, vals in series.items():
        if len(vals) != len(x_labels):
            raise ValueError(f"series {name!r} has {len(vals)} values for {len(x_labels)} periods")
    left, right, top, bottom = 56, 170, 36, 48
    pw, ph = width - left - right, height - top - bottom
    finite = [v for vals in series.values() for v in vals if v is not None]
    top_v = y_max if y_max is not None else _nice_max(max(finite, default=0.0))
    n = len(x_labels)

    def x(i: int) -> float:
        return left + (pw * i / (n - 1) if n > 1 else pw / 2)

    def y(v: float) -> float:
        return top + ph - (v / top_v) * ph if top_v else top + ph

    body = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#9ca3af"/>']
    for t in range(5):
        tick = top_v * t / 4
        body.append(
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="#4b5563">'
            f"{_e(value_format(tick))}</text>"
            f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + pw}" y2="{y(tick):.1f}" stroke="#e5e7eb"/>'
        )
    step = max(1, math.ceil(n / 12))
    for i, lab in enumerate(x_labels):
        if i % step == 0:
            body.append(
                f'<text x="{x(i):.1f}" y="{top + ph + 18}" text-anchor="middle" fill="#4b5563">{_e(lab)}</text>'
            )
    if not finite:
        body.append(f'<text x="{left + 8}" y="{top + 20}" fill="#374151">No data</text>')
    for s, (name, vals) in enumerate(series.items()):
        colour = PALETTE[s % len(PALETTE)]
        segments: list[list[str]] = [[]]
        points: list[str] = []
        for i, v in enumerate(vals):
            if v is None:
                segments.append([])
                continue
            segments[-1].append(f"{x(i):.1f},{y(v):.1f}")
            label = f"{name}, {x_labels[i]}: {value_format(v)}"
            points.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}" aria-label="{_e(label)}"/>')
        for seg in segments:
            if len(seg) > 1:
                body.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        body += points
        ly = top + 14 + s * 18
        body.append(
            f'<rect x="{left + pw + 12}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + pw + 28}" y="{ly}" fill="#111827">{_e(name)}</text>'
        )
    return _frame(width, height, title, desc, body)


def grouped_bar_chart(
    title: str,
    desc: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    value_format: Callable[[float], str] = _plain,
    width: int = 760,
) -> str:
    """Vertical bars grouped by category, one colour per series (e.g. conversions per channel under each model)."""
    for name, vals in series.items():
        if len(vals) != len(categories):
            raise ValueError(f"series {name!r} has {len(vals)} values for {len(categories)} categories")
    left, right, top, bottom, height = 56, 170, 36, 64, 360
    pw, ph = width - left - right, height - top - bottom
    finite = [v for vals in series.values() for v in vals if v is not None]
    top_v = _nice_max(max(finite, default=0.0))
    n_cat, n_ser = max(len(categories), 1), max(len(series), 1)
    group_w = pw / n_cat
    bar_w = max(group_w * 0.8 / n_ser, 1.0)
    body = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#9ca3af"/>']
    for t in range(5):
        tick = top_v * t / 4
        yy = top + ph - ph * t / 4
        body.append(
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" fill="#4b5563">{_e(value_format(tick))}</text>'
            f'<line x1="{left}" y1="{yy:.1f}" x2="{left + pw}" y2="{yy:.1f}" stroke="#e5e7eb"/>'
        )
    if not categories:
        body.append(f'<text x="{left + 8}" y="{top + 20}" fill="#374151">No data</text>')
    for c, cat in enumerate(categories):
        gx = left + c * group_w + group_w * 0.1
        body.append(
            f'<text x="{left + (c + 0.5) * group_w:.1f}" y="{top + ph + 16}" text-anchor="middle" '
            f'fill="#111827">{_e(cat)}</text>'
        )
        for s, (name, vals) in enumerate(series.items()):
            v = vals[c]
            h = 0.0 if v is None else max(v, 0.0) / top_v * ph
            body.append(
                f'<rect x="{gx + s * bar_w:.1f}" y="{top + ph - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[s % len(PALETTE)]}" aria-label="{_e(f"{cat}, {name}: {_num(v, value_format)}")}"/>'
            )
    for s, name in enumerate(series):
        ly = top + 14 + s * 18
        body.append(
            f'<rect x="{left + pw + 12}" y="{ly - 9}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
            f'<text x="{left + pw + 28}" y="{ly}" fill="#111827">{_e(name)}</text>'
        )
    return _frame(width, height, title, desc, body)


def svg_to_png(svg: str) -> bytes:
    """The chart as PNG (cairosvg renders the same SVG)."""
    import cairosvg

    out: bytes = cairosvg.svg2png(bytestring=svg.encode("utf-8"))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Report -> chart
# --------------------------------------------------------------------------------------------------------------------


def lifecycle_funnel_chart(report: Mapping[str, Any]) -> str:
    stages = report["all"]["stages"]
    return bar_chart(
        f"Lifecycle funnel {report['from']} – {report['to']}",
        "Contacts that reached each funnel stage; the note is the conversion to the next stage.",
        [s["stage"] for s in stages],
        [s["reached"] for s in stages],
        notes=[
            f"{_pct(s['conversion_to_next'])} to next" if s["conversion_to_next"] is not None else "" for s in stages
        ],
    )


def event_funnel_chart(report: Mapping[str, Any]) -> str:
    steps = report["steps"]
    return bar_chart(
        f"Ordered funnel, {report['window_days']:g}-day window, {report['from']} – {report['to']}",
        "Contacts reaching each step in order within the window; the note is the conversion from the first step.",
        [s["step"] for s in steps],
        [s["count"] for s in steps],
        notes=[_pct(s["conversion_from_start"]) if s["conversion_from_start"] is not None else "" for s in steps],
    )


def funnel_trend_chart(report: Mapping[str, Any]) -> str:
    return line_chart(
        f"Stage conversion per {report['interval']}, {report['from']} – {report['to']}",
        "Share of the contacts entering the funnel in each period that reached the next stage, per stage.",
        [p["period"] for p in report["periods"]],
        report["series"],
        y_max=1.0,
    )


def attribution_chart(report: Mapping[str, Any], metric: str = "conversions") -> str:
    rows = report["side_by_side"]
    models = list(report["models"])
    return grouped_bar_chart(
        f"Attributed {metric} by {report['level']}, {report['from']} – {report['to']}",
        f"Attributed {metric} per {report['level']} under each attribution model, side by side.",
        [r["key"] for r in rows],
        {m: [(r.get(m) or {}).get(metric) for r in rows] for m in models},
    )
