"""The forecast snapshot (what the web forecast page reads) equals a from-scratch computation for every grouping,
stops counting as current when deals or stage histories change or when it gets old, and the worker's ``forecast``
job recomputes it to equal a fresh computation again. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from datetime import date, timedelta

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from suppilo.adapters.worker.jobs import JOBS
from suppilo.db.base import utcnow
from suppilo.db.session import unit_of_work
from suppilo.deals import forecast_snapshots as snaps
from suppilo.deals.models import Deal, DealStageChange, ForecastSnapshot, Pipeline
from suppilo.demo import loader
from suppilo.demo.generator import DemoParams

PARAMS = DemoParams(seed=9, contacts=400, today=date(2025, 6, 1))


@pytest.fixture(scope="module")
def demo_ws(db_engine: Engine, session_factory: sessionmaker[Session]) -> int:
    with unit_of_work(session_factory) as s:
        setup = loader.setup_workspace(s, PARAMS, f"fc-{secrets.token_hex(4)}")
    result = loader.load_data(db_engine, setup.workspace_id, PARAMS)
    with unit_of_work(session_factory) as s:
        loader.mark_complete(s, setup.workspace_id, PARAMS, result)
    return setup.workspace_id


def _pipeline(factory: sessionmaker[Session], ws: int) -> int:
    with factory() as s:
        return s.scalars(select(Pipeline.id).where(Pipeline.workspace_id == ws).order_by(Pipeline.id)).first()


@pytest.mark.parametrize(
    ("group_by", "stalls_by", "one_pipeline"),
    [("month", "team", False), ("owner", "region", True), ("team", "owner", False), ("country", "country", False)],
)
def test_the_snapshot_equals_a_fresh_computation(
    demo_ws: int, session_factory: sessionmaker[Session], group_by: str, stalls_by: str, one_pipeline: bool
) -> None:
    pipeline_id = _pipeline(session_factory, demo_ws) if one_pipeline else None
    key = (demo_ws, group_by, pipeline_id, stalls_by)
    with unit_of_work(session_factory) as s:
        snaps.refresh(s, *key)
    with session_factory() as s:
        row = snaps.snapshot(s, *key)
        assert row is not None and snaps.is_current(s, row)
        stored = snaps.figures_of(row)
        fresh = snaps.compute(s, *key)
    assert stored == fresh
    assert stored.groups and any(t.count for g in stored.groups for t in g.totals)
    assert stored.velocity and stored.stall_totals is not None


def test_changes_overtake_the_snapshot_and_the_worker_job_recomputes_it(
    demo_ws: int, session_factory: sessionmaker[Session]
) -> None:
    assert ("forecast", snaps.REFRESH_SECONDS, snaps.run_refresh) in JOBS
    key = (demo_ws, "stage", None, "owner")
    with unit_of_work(session_factory) as s:
        snaps.refresh(s, *key)

    def current() -> bool:
        with session_factory() as s:
            row = snaps.snapshot(s, *key)
            assert row is not None
            return snaps.is_current(s, row)

    def recomputed_equals_fresh() -> None:
        assert snaps.run_refresh(session_factory) >= 1
        assert current()
        with session_factory() as s:
            row = snaps.snapshot(s, *key)
            assert row is not None and snaps.figures_of(row) == snaps.compute(s, *key)

    assert current()
    # An open deal's amount is edited in place: the figures change, and so does the snapshot's standing.
    with unit_of_work(session_factory) as s:
        deal = s.scalars(
            select(Deal).where(Deal.workspace_id == demo_ws, Deal.status == "open", Deal.amount_minor.is_not(None))
        ).first()
        assert deal is not None
        before = snaps.snapshot(s, *key)
        assert before is not None
        old_figures = snaps.figures_of(before)
        deal.amount_minor = (deal.amount_minor or 0) + 123_456
        deal_id, stage_id = deal.id, deal.stage_id
    assert not current()
    recomputed_equals_fresh()
    with session_factory() as s:
        row = snaps.snapshot(s, *key)
        assert row is not None and snaps.figures_of(row) != old_figures
    # A stage move (a new stage change row).
    with unit_of_work(session_factory) as s:
        s.add(DealStageChange(workspace_id=demo_ws, deal_id=deal_id, to_stage_id=stage_id, changed_at=utcnow()))
    assert not current()
    recomputed_equals_fresh()
    # A deal deleted.
    with unit_of_work(session_factory) as s:
        s.delete(s.get(Deal, deal_id))
    assert not current()
    recomputed_equals_fresh()
    # Time passes (stalled deals, team membership): an old snapshot is recomputed too.
    with unit_of_work(session_factory) as s:
        s.execute(
            update(ForecastSnapshot)
            .where(ForecastSnapshot.workspace_id == demo_ws)
            .values(computed_at=utcnow() - timedelta(seconds=snaps.MAX_AGE_SECONDS + 1))
        )
    assert not current()
    recomputed_equals_fresh()


def test_the_worker_job_computes_the_default_view_ahead(demo_ws: int, session_factory: sessionmaker[Session]) -> None:
    """A workspace with open deals gets the page's default view (by month, all pipelines, stalls by team) before
    anyone opens the page, equal to a fresh computation."""
    key = (demo_ws, *snaps.DEFAULT_VIEW)
    with unit_of_work(session_factory) as s:
        s.execute(
            ForecastSnapshot.__table__.delete().where(ForecastSnapshot.workspace_id == demo_ws)  # type: ignore[attr-defined]
        )
    with session_factory() as s:
        assert snaps.snapshot(s, *key) is None
    assert snaps.run_refresh(session_factory) >= 1
    with session_factory() as s:
        row = snaps.snapshot(s, *key)
        assert row is not None and snaps.is_current(s, row)
        assert snaps.figures_of(row) == snaps.compute(s, demo_ws, "month", None, "team")
