"""Journey holdouts in the analytics experiments report: treatment against holdout and the incremental lift."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from suppilo.analytics import service
from suppilo.db.base import utcnow
from suppilo.journeys import service as journeys_service
from suppilo.journeys.models import Enrollment

from .builders import contact

DEFINITION = {
    "name": "Win-back",
    "trigger": {"type": "manual"},
    "goal": {"event": "Order Completed", "window_days": 14},
    "start": "wait",
    "steps": {"wait": {"type": "wait", "duration": {"days": 1}}},
}


def _enrol(session, ws: int, jid: int, group: str, n: int, converted: int) -> None:
    now = utcnow()
    rows = []
    for i in range(n):
        cid = contact(session, ws, "email")
        rows.append(
            {
                "workspace_id": ws,
                "journey_id": jid,
                "version": 1,
                "contact_id": cid,
                "entry_key": f"k{cid}",
                "group": group,
                "step": "wait",
                "step_since": now,
                "entered_at": now,
                "converted_at": now if i < converted else None,
            }
        )
    session.execute(insert(Enrollment), rows)
    session.flush()


def test_journeys_with_a_holdout_are_listed_with_their_lift(client, session, workspace, other_workspace) -> None:
    ws = workspace.id
    held = journeys_service.create_journey(session, ws, DEFINITION, actor="test")
    plain = journeys_service.create_journey(session, ws, {**DEFINITION, "name": "No holdout"}, actor="test")
    _enrol(session, ws, held.id, "treatment", 200, 40)
    _enrol(session, ws, held.id, "holdout", 100, 10)
    _enrol(session, ws, plain.id, "treatment", 20, 5)
    session.commit()
    rep = service.journey_holdouts(session, ws)
    assert [j["name"] for j in rep["journeys"]] == ["Win-back"]
    j = rep["journeys"][0]
    assert j["treatment"] == {"contacts": 200, "converted": 40} and j["holdout"] == {"contacts": 100, "converted": 10}
    assert j["lift"]["absolute"] == pytest.approx(0.20 - 0.10)
    assert j["lift"]["relative"] == pytest.approx(1.0)
    assert j["lift"]["incremental_conversions"] == pytest.approx(200 * 0.10)
    assert 0 < j["lift"]["p_value"] < 0.05
    r = client.get("/api/v1/reports/experiments/journeys", headers=workspace.auth("read"))
    assert r.status_code == 200 and r.json() == rep
    other = client.get("/api/v1/reports/experiments/journeys", headers=other_workspace.auth("read")).json()
    assert other["journeys"] == [] and other["insufficient_data"]


def test_cli_journey_lift(monkeypatch, database_url, db_engine, tmp_path, session, workspace) -> None:
    import json

    from typer.testing import CliRunner

    from suppilo.adapters.cli.main import app as cli_app
    from suppilo.config import get_settings

    ws = workspace.id
    held = journeys_service.create_journey(session, ws, DEFINITION, actor="test")
    _enrol(session, ws, held.id, "treatment", 50, 10)
    _enrol(session, ws, held.id, "holdout", 50, 5)
    session.commit()
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(cli_app, ["report", "journey-lift", "-w", workspace.slug])
        assert res.exit_code == 0, res.output
        assert "Win-back" in res.output and "10/50" in res.output and "5/50" in res.output
        res = CliRunner().invoke(cli_app, ["report", "journey-lift", "-w", workspace.slug, "--json"])
        assert json.loads(res.output)["journeys"][0]["lift"]["absolute"] == pytest.approx(0.1)
    finally:
        get_settings.cache_clear()
