"""The attribution snapshot equals a from-scratch computation and the CLI's report for the same period and level,
stops counting as current when new rows arrive or the day passes, and the worker job recomputes it."""

from __future__ import annotations

import json
import secrets
from datetime import date, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from suppilo.adapters.worker.jobs import JOBS
from suppilo.analytics import attribution_snapshots as snaps
from suppilo.analytics import service
from suppilo.commerce.models import Order
from suppilo.contacts.models import Contact
from suppilo.db.session import unit_of_work
from suppilo.demo import loader
from suppilo.demo.catalog import FX_PER_EUR
from suppilo.demo.generator import DemoParams
from suppilo.events.models import Touch

PARAMS = DemoParams(seed=11, contacts=200, today=date(2025, 6, 1))


@pytest.fixture(scope="module")
def demo(db_engine: Engine, session_factory: sessionmaker[Session]) -> tuple[int, str]:
    slug = f"attr-{secrets.token_hex(4)}"
    with unit_of_work(session_factory) as s:
        setup = loader.setup_workspace(s, PARAMS, slug)
    result = loader.load_data(db_engine, setup.workspace_id, PARAMS)
    with unit_of_work(session_factory) as s:
        loader.mark_complete(s, setup.workspace_id, PARAMS, result)
        rates = "date,currency,rate_to_eur\n" + "".join(
            f"2020-01-01,{c},{1 / fx:.12f}\n" for c, fx in FX_PER_EUR.items() if c != "EUR"
        )
        service.import_rates_csv(s, setup.workspace_id, rates)
    return setup.workspace_id, slug


def cli_report(monkeypatch, database_url: str, tmp_path, slug: str, frm: date, to: date, level: str) -> dict:
    from typer.testing import CliRunner

    from suppilo.adapters.cli.main import app as cli_app
    from suppilo.config import get_settings

    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        args = ["report", "attribution", "-w", slug, "--from", frm.isoformat(), "--to", to.isoformat()]
        res = CliRunner().invoke(cli_app, [*args, "--level", level, "--json"])
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


@pytest.mark.parametrize("level", ["channel", "campaign"])
def test_snapshot_equals_from_scratch_and_the_cli(demo, session_factory, monkeypatch, database_url, tmp_path, level):
    ws, slug = demo
    today = PARAMS.today
    days = 365
    with session_factory() as s:
        shown = snaps.refresh(s, ws, level, days, today)
        s.commit()
    frm, to = snaps.period_of(days, today)
    with session_factory() as s:
        row = snaps.snapshot(s, ws, level, days)
        assert row is not None and row.as_of == today and snaps.is_current(s, row, today)
        fresh = service.attribution_report(s, ws, frm, to, level)
        assert fresh["conversions"] > 10 and len(fresh["side_by_side"]) > 2 and fresh["paths"] > fresh["conversions"]
        assert row.data == fresh and snaps.figures_of(row)["computed_at"] == shown["computed_at"]
        assert not snaps.is_current(s, row, today + timedelta(days=1))  # a new day: the period moved
    assert cli_report(monkeypatch, database_url, tmp_path, slug, frm, to, level) == fresh


def test_new_rows_overtake_the_snapshot_and_the_worker_recomputes_it(demo, session_factory) -> None:
    ws, _slug = demo
    today = PARAMS.today
    assert ("attribution", snaps.REFRESH_SECONDS, snaps.run_refresh) in JOBS
    with session_factory() as s:
        snaps.refresh(s, ws, "channel", 30, today)
        s.commit()
        before = snaps.snapshot(s, ws, "channel", 30).data
    at = date(2025, 5, 30)
    with session_factory() as s:
        c = Contact(workspace_id=ws, email=f"late-{secrets.token_hex(3)}@example.com")
        s.add(c)
        s.flush()
        for i, channel in enumerate(("podcast", "email")):
            s.add(Touch(workspace_id=ws, contact_id=c.id, occurred_at=_at(at, i), channel=channel))
        s.add(
            Order(
                workspace_id=ws,
                contact_id=c.id,
                external_id=f"late-{c.id}",
                status="completed",
                currency="EUR",
                total_minor=99_00,
                placed_at=_at(at, 3),
            )
        )
        s.commit()
    with session_factory() as s:
        row = snaps.snapshot(s, ws, "channel", 30)
        assert not snaps.is_current(s, row, today)  # new rows overtook it
    # The worker job (which uses the real clock) recomputes every snapshot no longer current.
    assert snaps.run_refresh(session_factory) >= 1
    with session_factory() as s:
        row = snaps.snapshot(s, ws, "channel", 30)
        # run_refresh recomputed it for the real today; the figures are those of its own period.
        frm, to = snaps.period_of(30, row.as_of)
        assert row.data == service.attribution_report(s, ws, frm, to, "channel")
        snaps.refresh(s, ws, "channel", 30, today)
        s.commit()
        after = snaps.snapshot(s, ws, "channel", 30).data
    assert after["conversions"] == before["conversions"] + 1
    assert "podcast" in {r["key"] for r in after["side_by_side"]} - {r["key"] for r in before["side_by_side"]}


def _at(day: date, hour: int):
    from datetime import UTC, datetime

    return datetime(day.year, day.month, day.day, 8 + hour, tzinfo=UTC)
