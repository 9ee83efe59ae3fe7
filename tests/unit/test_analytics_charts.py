"""SVG charts: well-formed, accessible, every text escaped, values in the labels, PNG through cairosvg."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from suppilo.analytics import charts

SVG = "{http://www.w3.org/2000/svg}"
EVIL = '<script>alert("x")</script> & "quotes"'


def _root(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.get("role") == "img" and root.get("aria-labelledby") == "chart-title chart-desc"
    return root


def test_bar_chart_escapes_and_labels_every_bar() -> None:
    svg = charts.bar_chart(EVIL, EVIL, [EVIL, "b"], [10, None], notes=["50 %", ""])
    assert "<script>" not in svg
    root = _root(svg)
    assert root.find(f"{SVG}title").text == EVIL  # escaped in the markup, the same text once parsed
    labels = [r.get("aria-label") for r in root.iter(f"{SVG}rect") if r.get("aria-label")]
    assert labels == [f"{EVIL}: 10 (50 %)", "b: no data"]
    widths = [float(r.get("width")) for r in root.iter(f"{SVG}rect") if r.get("aria-label")]
    assert widths[0] > 0 and widths[1] == 0
    with pytest.raises(ValueError, match="same length"):
        charts.bar_chart("t", "d", ["a"], [1, 2])


def test_line_chart_gaps_and_points() -> None:
    svg = charts.line_chart("t", "d", ["W1", "W2", "W3"], {EVIL: [0.5, None, 0.25]}, y_max=1.0)
    root = _root(svg)
    points = [c.get("aria-label") for c in root.iter(f"{SVG}circle")]
    assert points == [f"{EVIL}, W1: 50.0 %", f"{EVIL}, W3: 25.0 %"]
    assert not list(root.iter(f"{SVG}polyline"))  # the gap leaves no segment of two points
    ys = [float(c.get("cy")) for c in root.iter(f"{SVG}circle")]
    assert ys[0] < ys[1]  # 50 % is drawn higher than 25 %
    with pytest.raises(ValueError, match="2 values for 3 periods"):
        charts.line_chart("t", "d", ["a", "b", "c"], {"s": [1, 2]})


def test_grouped_bars_and_empty_chart_and_png() -> None:
    svg = charts.grouped_bar_chart("t", "d", ["email", "paid"], {"linear": [3, 1], "markov": [2.5, 1.5]})
    labels = [r.get("aria-label") for r in _root(svg).iter(f"{SVG}rect") if r.get("aria-label")]
    assert labels == ["email, linear: 3", "email, markov: 2.50", "paid, linear: 1", "paid, markov: 1.50"]
    empty = charts.bar_chart("t", "d", [], [])
    assert "No data" in empty
    _root(empty)
    assert charts.svg_to_png(svg).startswith(b"\x89PNG\r\n\x1a\n")
