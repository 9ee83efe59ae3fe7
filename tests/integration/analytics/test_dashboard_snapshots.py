"""The dashboard's snapshot equals a from-scratch computation, and stops counting as current when new rows arrive."""

from __future__ import annotations

import json
import secrets
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from suppilo.analytics import dashboard, service
from suppilo.analytics.schemas import SpendCreate
from suppilo.db.session import unit_of_work
from suppilo.demo import loader
from suppilo.demo.catalog import FX_PER_EUR
from suppilo.demo.generator import DemoParams

PARAMS = DemoParams(seed=9, contacts=200, today=date(2025, 6, 1))


@pytest.fixture(scope="module")
def demo(db_engine: Engine, session_factory: sessionmaker[Session]) -> int:
    with unit_of_work(session_factory) as s:
        setup = loader.setup_workspace(s, PARAMS, f"dash-{secrets.token_hex(4)}")
    result = loader.load_data(db_engine, setup.workspace_id, PARAMS)
    with unit_of_work(session_factory) as s:
        loader.mark_complete(s, setup.workspace_id, PARAMS, result)
        rates = "date,currency,rate_to_eur\n" + "".join(
            f"2020-01-01,{c},{1 / fx:.12f}\n" for c, fx in FX_PER_EUR.items() if c != "EUR"
        )
        service.import_rates_csv(s, setup.workspace_id, rates)
    return setup.workspace_id


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(data, default=str))
    out.pop("computed_at")
    return out


def test_snapshot_equals_from_scratch_and_follows_new_rows(demo, session_factory) -> None:
    ws, today = demo, PARAMS.today
    with session_factory() as s:
        dashboard.refresh(s, ws, 365, today)
        s.commit()
    with session_factory() as s:
        row = dashboard.snapshot(s, ws, 365)
        assert row is not None and row.as_of == today and dashboard.is_current(s, row, today)
        fresh = dashboard.compute(s, ws, 365, today)
        assert fresh["funnel"]["all"]["stages"] and fresh["month"]["rows"] and not fresh["errors"]
        assert _plain(row.data) == _plain(dashboard._to_json(fresh))
        shown = dashboard.figures_of(row)
        assert shown["stages"] == fresh["stages"] and shown["from"] == today - timedelta(days=364)
        spend_before = fresh["channel"]["totals"]["spend_minor"]
        assert not dashboard.is_current(s, row, today + timedelta(days=1))  # a new day: the period moved

    with session_factory() as s:
        service.add_spend(s, ws, SpendCreate(date=today, channel="search", amount_minor=123_45, currency="EUR"))
        s.commit()
    with session_factory() as s:
        row = dashboard.snapshot(s, ws, 365)
        assert row is not None and not dashboard.is_current(s, row, today)  # a new row overtook it
        dashboard.refresh(s, ws, 365, today)
        s.commit()
    with session_factory() as s:
        row = dashboard.snapshot(s, ws, 365)
        fresh = dashboard.compute(s, ws, 365, today)
        assert _plain(row.data) == _plain(dashboard._to_json(fresh))
        assert fresh["channel"]["totals"]["spend_minor"] == spend_before + 123_45
        assert row.data["channel"]["totals"]["spend_minor"] == spend_before + 123_45


def test_rebuild_covers_every_period(demo, session_factory) -> None:
    assert dashboard.rebuild(session_factory, demo) == len(dashboard.PERIODS)
    with session_factory() as s:
        for days in dashboard.PERIODS:
            row = dashboard.snapshot(s, demo, days)
            assert row is not None and row.days == days and row.seconds >= 0


def test_spend_reports_at_once_equal_one_at_a_time(demo, session_factory) -> None:
    groups = ["channel", "month", "campaign", "country"]
    with session_factory() as s:
        together = service.spend_reports(s, demo, date(2024, 6, 1), PARAMS.today, groups)
        for g in groups:
            alone = service.spend_report(s, demo, date(2024, 6, 1), PARAMS.today, g)
            assert alone["rows"] and together[g] == alone, g


def test_rebuild_command(monkeypatch, database_url, db_engine, tmp_path, session_factory, workspace) -> None:
    from typer.testing import CliRunner

    from suppilo.adapters.cli.main import app as cli_app
    from suppilo.config import get_settings

    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(cli_app, ["report", "dashboard-rebuild", "-w", workspace.slug])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    assert f"recomputed {len(dashboard.PERIODS)} dashboard snapshots" in res.output
    with session_factory() as s:
        assert all(dashboard.snapshot(s, workspace.id, d) is not None for d in dashboard.PERIODS)
