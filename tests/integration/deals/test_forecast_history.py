"""Velocity and conversion reduced in SQL (window functions; PostgreSQL's path) give exactly what the engine's walk over
every deal's moves gives (SQLite's path) — on random histories with revisits, lost and reopened deals, two
pipelines and moves at the same instant; run on both databases."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, insert, select

from suppilo.deals import forecast as deals_forecast
from suppilo.deals import service
from suppilo.deals.models import Deal, DealStageChange, PipelineStage
from suppilo.deals.schemas import PipelineCreate, StageIn


def _epoch(session):
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", DealStageChange.changed_at)
    return (func.julianday(DealStageChange.changed_at) - 2440587.5) * 86400.0


def test_sql_reduction_equals_the_engine_walk(session_factory, workspace) -> None:
    rng = random.Random(3)
    with session_factory() as s:
        main = service.ensure_default_pipeline(s, workspace.id)
        other = service.create_pipeline(
            s,
            workspace.id,
            PipelineCreate(
                name="Partners",
                stages=[
                    StageIn(key="talk", label="Talk", probability=30),
                    StageIn(key="sign", label="Sign", probability=70),
                    StageIn(key="won", label="Won", probability=100, kind="won"),
                    StageIn(key="lost", label="Lost", probability=0, kind="lost"),
                ],
            ),
        )
        s.flush()
        stages = service.pipeline_stages(s, workspace.id, [main.id, other.id])
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        changes = []
        for i in range(300):
            pipeline = main if i % 3 else other
            path = [rng.choice(stages[pipeline.id]) for _ in range(rng.randrange(1, 7))]
            deal = Deal(
                workspace_id=workspace.id,
                pipeline_id=pipeline.id,
                stage_id=path[-1].id,
                status=path[-1].kind,
                name=f"d{i}",
                currency="EUR",
                stage_entered_at=t0,
            )
            s.add(deal)
            s.flush()
            at = t0 + timedelta(hours=rng.randrange(100))
            for stage in path:
                changes.append(
                    {"workspace_id": workspace.id, "deal_id": deal.id, "to_stage_id": stage.id, "changed_at": at}
                )
                # Some moves share their instant with the next one (the id orders them).
                at += timedelta(hours=rng.choice((0, 1, 5, 30)), minutes=rng.randrange(60))
        s.execute(insert(DealStageChange), changes)
        s.flush()
        rows = list(
            s.scalars(
                select(PipelineStage)
                .where(PipelineStage.workspace_id == workspace.id)
                .order_by(PipelineStage.pipeline_id, PipelineStage.position)
            )
        )
        for pipeline_id in (None, other.id):
            walked = deals_forecast._velocity_and_conversion_walk(s, workspace.id, rows, pipeline_id, _epoch(s))
            reduced = deals_forecast._velocity_and_conversion(s, workspace.id, rows, pipeline_id, _epoch(s))
            assert reduced[1] == walked[1]
            assert [(v.pipeline_id, v.stage_key, v.stays) for v in reduced[0]] == [
                (v.pipeline_id, v.stage_key, v.stays) for v in walked[0]
            ]
            for r, w in zip(reduced[0], walked[0], strict=True):
                assert (r.average_days is None) == (w.average_days is None)
                if r.average_days is not None:
                    assert abs(r.average_days - w.average_days) <= 0.01  # float sums in another order
            assert any(c.entered for c in walked[1]) and any(v.stays for v in walked[0])
        s.rollback()


def test_the_bulk_walk_equals_the_engine_over_each_deals_moves(session_factory, workspace) -> None:
    """SQLite's walk (moves fetched in bulk, stays summed in one pass) gives exactly the figures
    ``engine.forecast.velocity`` / ``conversion`` give from every deal's moves read one by one through the ORM."""
    from suppilo.engine import forecast as fc

    rng = random.Random(11)
    with session_factory() as s:
        main = service.ensure_default_pipeline(s, workspace.id)
        s.flush()
        stages = service.pipeline_stages(s, workspace.id, [main.id])[main.id]
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        changes = []
        for i in range(200):
            path = [rng.choice(stages) for _ in range(rng.randrange(1, 8))]
            deal = Deal(
                workspace_id=workspace.id,
                pipeline_id=main.id,
                stage_id=path[-1].id,
                status=path[-1].kind,
                name=f"d{i}",
                currency="EUR",
                stage_entered_at=t0,
            )
            s.add(deal)
            s.flush()
            at = t0 + timedelta(hours=rng.randrange(100), seconds=rng.randrange(3600))
            for stage in path:
                changes.append(
                    {"workspace_id": workspace.id, "deal_id": deal.id, "to_stage_id": stage.id, "changed_at": at}
                )
                at += timedelta(hours=rng.choice((0, 1, 7, 50)), seconds=rng.randrange(3600))
        s.execute(insert(DealStageChange), changes)
        s.flush()
        rows = list(
            s.scalars(
                select(PipelineStage)
                .where(PipelineStage.workspace_id == workspace.id)
                .order_by(PipelineStage.pipeline_id, PipelineStage.position)
            )
        )
        key_of = {st.id: st.key for st in rows}
        histories: dict[int, list[tuple[str, float]]] = {}
        for change in s.scalars(
            select(DealStageChange)
            .where(DealStageChange.workspace_id == workspace.id)
            .order_by(DealStageChange.deal_id, DealStageChange.changed_at, DealStageChange.id)
        ):
            histories.setdefault(change.deal_id, []).append(
                (key_of[change.to_stage_id], change.changed_at.replace(tzinfo=UTC).timestamp())
            )
        order = [fc.StageOrder(st.key, st.position, st.kind) for st in rows]
        expected_velocity = fc.velocity(list(histories.values()), order)
        expected_conversion = fc.conversion([[k for k, _ in h] for h in histories.values()], order)
        velocity, conversion = deals_forecast._velocity_and_conversion_walk(s, workspace.id, rows, None, _epoch(s))
        assert [(v.stage_key, v.stays, v.average_days) for v in velocity] == [
            (v.stage_key, v.stays, v.average_days) for v in expected_velocity
        ]
        assert [(c.stage_key, c.entered, c.advanced, c.rate) for c in conversion] == [
            (c.stage_key, c.entered, c.advanced, c.rate) for c in expected_conversion
        ]
        assert sum(v.stays for v in velocity) > 100 and any(c.advanced for c in conversion)
        s.rollback()
