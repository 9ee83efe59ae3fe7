"""Funnel trends, charts on the report endpoints, the engine option and event cohorts through the API and the CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.analytics import service
from suppilo.config import get_settings

from .builders import contact, event

SVG = "{http://www.w3.org/2000/svg}"


def _funnel_data(session, ws: int) -> None:
    # March entrants: 2 of 3 reach consideration; April entrants: 1 of 2.
    contact(session, ws, "email", stages=[("interest", "2025-03-01"), ("consideration", "2025-03-05")])
    contact(session, ws, "email", stages=[("interest", "2025-03-10"), ("consideration", "2025-04-02")])
    contact(session, ws, "paid_search", stages=[("interest", "2025-03-20")])
    contact(session, ws, "paid_search", stages=[("interest", "2025-04-03"), ("consideration", "2025-04-04")])
    contact(session, ws, "<b>odd & channel</b>", stages=[("interest", "2025-04-09")])
    session.commit()


def test_funnel_trends_by_month_and_week(session, workspace) -> None:
    ws = workspace.id
    _funnel_data(session, ws)
    rep = service.funnel_trends(session, ws, date(2025, 3, 1), date(2025, 4, 30), "month", min_contacts=1)
    assert [p["period"] for p in rep["periods"]] == ["2025-03", "2025-04"]
    assert [p["contacts"] for p in rep["periods"]] == [3, 2]
    first = rep["stages"][rep["stages"].index("interest")]
    key = f"{first} → {rep['stages'][rep['stages'].index('interest') + 1]}"
    assert rep["series"][key] == [pytest.approx(2 / 3), pytest.approx(1 / 2)]
    weeks = service.funnel_trends(session, ws, date(2025, 3, 3), date(2025, 3, 23), "week", min_contacts=1)
    # Every ISO week of the range is listed, empty ones too.
    assert [p["period"] for p in weeks["periods"]] == ["2025-W10", "2025-W11", "2025-W12"]
    assert [p["contacts"] for p in weeks["periods"]] == [0, 1, 1]
    assert weeks["series"][key][0] is None  # no contacts: conversion undefined, not zero
    empty = service.funnel_trends(session, ws, date(2024, 1, 1), date(2024, 1, 31), "month")
    assert empty["insufficient_data"] and empty["reason"]


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert root.get("aria-labelledby") == "chart-title chart-desc"
    assert root.find(f"{SVG}title").text and root.find(f"{SVG}desc").text
    return root


def test_report_endpoints_draw_svg_and_png(client, session, workspace) -> None:
    ws = workspace.id
    _funnel_data(session, ws)
    h = workspace.auth("read")
    q = {"from": "2025-03-01", "to": "2025-04-30"}
    r = client.get("/api/v1/reports/funnel", params={**q, "format": "svg"}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    root = _parse(r.text)
    bars = [e.get("aria-label") for e in root.iter(f"{SVG}rect") if e.get("aria-label")]
    assert any(b.startswith("interest: 5") for b in bars)
    r = client.get("/api/v1/reports/funnel-trends", params={**q, "format": "svg", "interval": "month"}, headers=h)
    points = [e.get("aria-label") for e in _parse(r.text).iter(f"{SVG}circle")]
    assert any("2025-03: 66.7 %" in p for p in points)
    r = client.get("/api/v1/reports/funnel-trends", params=q, headers=h)
    assert r.json()["interval"] == "month" and len(r.json()["periods"]) == 2
    r = client.get("/api/v1/reports/attribution", params={**q, "format": "svg"}, headers=h)
    assert r.status_code == 200
    _parse(r.text)
    r = client.get("/api/v1/reports/funnel", params={**q, "format": "png"}, headers=h)
    assert r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG\r\n\x1a\n")
    r = client.get("/api/v1/reports/funnel", params={**q, "format": "gif"}, headers=h)
    assert r.status_code == 422


def test_event_funnel_engines_and_cohorts_over_the_api(client, session, workspace, other_workspace) -> None:
    ws = workspace.id
    ids = [contact(session, ws, "email") for _ in range(4)]
    for i, cid in enumerate(ids):
        event(session, ws, cid, "2025-03-02", 9, "Page", path="/pricing")
        if i < 3:
            event(session, ws, cid, "2025-03-04", 10, "Form Submitted")
        if i < 1:
            event(session, ws, cid, "2025-03-20", 10, "Order Completed")
    other = contact(session, other_workspace.id, "email")
    event(session, other_workspace.id, other, "2025-03-02", 9, "Page", path="/pricing")
    session.commit()
    h = workspace.auth("read")
    body = {"steps": ["page:/pricing", "Form Submitted", "Order Completed"], "window_days": 30}
    body |= {"from": "2025-03-01", "to": "2025-03-31"}
    answers = {}
    for engine in ("sql", "columnar"):
        r = client.post("/api/v1/reports/event-funnel", json={**body, "engine": engine}, headers=h)
        assert r.status_code == 200, r.text
        answers[engine] = r.json()
        assert r.json()["engine"] == engine
        assert [s["count"] for s in r.json()["steps"]] == [4, 3, 1]
    assert answers["sql"]["steps"] == answers["columnar"]["steps"]
    r = client.post("/api/v1/reports/event-funnel?format=svg", json=body, headers=h)
    labels = [e.get("aria-label") for e in _parse(r.text).iter(f"{SVG}rect") if e.get("aria-label")]
    assert labels == ["page:/pricing: 4 (100.0 %)", "Form Submitted: 3 (75.0 %)", "Order Completed: 1 (25.0 %)"]
    r = client.post("/api/v1/reports/event-funnel", json={**body, "engine": "fast"}, headers=h)
    assert r.status_code == 422
    for engine in ("sql", "columnar"):
        r = client.get(
            "/api/v1/reports/event-cohorts",
            params={"by": "week", "to": "2025-03-23", "engine": engine},
            headers=h,
        )
        assert r.status_code == 200, r.text
        assert [(c["cohort"], c["contacts"], c["retained"]) for c in r.json()["cohorts"]] == [
            ("2025-W09", 4, [4, 3, 0, 1])
        ]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_trends_event_funnel_cohorts_and_charts(cli: CliRunner, session, workspace, tmp_path: Path) -> None:
    ws = workspace.id
    _funnel_data(session, ws)
    for i, cid in enumerate([contact(session, ws, "email") for _ in range(3)]):
        event(session, ws, cid, "2025-03-02", 9, "Visit")
        if i:
            event(session, ws, cid, "2025-03-03", 9, "Signup")
    session.commit()
    args = ["-w", workspace.slug, "--from", "2025-03-01", "--to", "2025-04-30"]
    chart = tmp_path / "trend.svg"
    res = cli.invoke(cli_app, ["report", "funnel-trends", *args, "--chart", str(chart), "--json"])
    assert res.exit_code == 0, res.output
    assert [p["period"] for p in json.loads(res.output)["periods"]] == ["2025-03", "2025-04"]
    _parse(chart.read_text())
    png = tmp_path / "funnel.png"
    res = cli.invoke(cli_app, ["report", "funnel", *args, "--chart", str(png)])
    assert res.exit_code == 0 and png.read_bytes().startswith(b"\x89PNG")
    for engine in ("sql", "columnar"):
        res = cli.invoke(cli_app, ["report", "event-funnel", "Visit", "Signup", *args, "--engine", engine, "--json"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.output)
        assert out["engine"] == engine and [s["count"] for s in out["steps"]] == [3, 2]
    res = cli.invoke(
        cli_app, ["report", "event-cohorts", "-w", workspace.slug, "--to", "2025-04-30", "--engine", "columnar"]
    )
    assert res.exit_code == 0, res.output
    assert "2025-03" in res.output and "columnar" in res.output
    res = cli.invoke(cli_app, ["report", "event-funnel", "Visit", *args])
    assert res.exit_code != 0 and "two steps" in res.output
