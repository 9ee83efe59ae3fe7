"""Sales pipeline at scale: board data and the forecast over N open deals (default 100,000).

Bulk-loads N deals spread over the default pipeline's open stages, three currencies, twelve close months and ten
owners, each with an opening and one move in its stage history, into a fresh SQLite file (or a fresh PostgreSQL
database with ``--postgres URL``). Then:

figure   = median wall time of ``deals.service.board`` (per stage: count, sums per currency, first 20 deals) /
           of ``deals.forecast.workspace_forecast`` (group by month, velocity, conversion, stalls; and again with
           the stalled deals split by region, which joins each deal's contact and company), milliseconds;
baseline = the same board as two hand-written SQL statements / the weighted sums per month and currency as one
           hand-written SQL ``GROUP BY`` (no velocity or conversion), same run, milliseconds;
ratio    = figure / baseline. Targets (issue 7): board ≤ 200 ms, forecast ≤ 1 s.

    .venv/bin/python bench/deals_board.py [--deals 100000] [--postgres postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, insert, text

from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.deals import forecast as deals_forecast
from suppilo.deals import service
from suppilo.deals.models import Deal, DealStageChange
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

CURRENCIES = ("EUR", "EUR", "EUR", "USD", "SEK")


def timed(fn: Callable[[], Any], runs: int = 7) -> float:
    fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def load(engine: Engine, n: int, seed: int) -> tuple[int, int]:
    factory = make_session_factory(engine)
    with factory() as s:
        ws = workspaces_service.create_workspace(
            s, WorkspaceCreate(slug=f"bench-{uuid.uuid4().hex[:6]}", name="Bench", currency="EUR")
        )
        owners = []
        for i in range(10):
            user = workspaces_service.create_user(s, email=f"rep{i}-{ws.id}@example.fi", name="Rep", password_hash=None)
            workspaces_service.add_member(s, ws.id, user.id, "sales")
            owners.append(user.id)
        pipeline = service.ensure_default_pipeline(s, ws.id)
        stages = service.pipeline_stages(s, ws.id, [pipeline.id])[pipeline.id]
        s.commit()
        ws_id, pipeline_id = ws.id, pipeline.id
    open_stages = [st for st in stages if st.kind == "open"]
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    deals: list[dict[str, Any]] = []
    for i in range(n):
        stage = open_stages[rng.randrange(len(open_stages))]
        deals.append(
            {
                "workspace_id": ws_id,
                "pipeline_id": pipeline_id,
                "stage_id": stage.id,
                "status": "open",
                "name": f"Deal {i}",
                "owner_id": owners[i % len(owners)],
                "amount_minor": rng.randrange(1_000, 10_000_000),
                "currency": CURRENCIES[i % len(CURRENCIES)],
                "expected_close_date": date(2026, 1 + rng.randrange(12), 1 + rng.randrange(28)),
                "qualification_status": "qualified",
                "stage_entered_at": t0 + timedelta(days=rng.randrange(30)),
                "version": 1,
                "created_at": t0,
                "updated_at": t0,
            }
        )
    with engine.begin() as conn:
        for start in range(0, n, 10_000):
            conn.execute(insert(Deal), deals[start : start + 10_000])
        rows = conn.execute(sa.select(Deal.id, Deal.stage_id).where(Deal.workspace_id == ws_id)).all()
        history: list[dict[str, Any]] = []
        for deal_id, stage_id in rows:
            history.append(
                {
                    "workspace_id": ws_id,
                    "deal_id": deal_id,
                    "from_stage_id": None,
                    "to_stage_id": open_stages[0].id,
                    "changed_at": t0,
                    "reason": "opened",
                }
            )
            if stage_id != open_stages[0].id:
                history.append(
                    {
                        "workspace_id": ws_id,
                        "deal_id": deal_id,
                        "from_stage_id": open_stages[0].id,
                        "to_stage_id": stage_id,
                        "changed_at": t0 + timedelta(days=1 + deal_id % 20),
                        "reason": "",
                    }
                )
        for start in range(0, len(history), 10_000):
            conn.execute(insert(DealStageChange), history[start : start + 10_000])
    assert len(rows) == n
    return ws_id, pipeline_id


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deals", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--postgres", default="")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    pg_name = ""
    if args.postgres:
        pg_name = f"suppilo_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
        url = sa.engine.make_url(args.postgres).set(database=pg_name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
    engine = make_engine(url)
    try:
        Base.metadata.create_all(engine)
        ws_id, pipeline_id = load(engine, args.deals, args.seed)
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE"))
            else:
                conn.exec_driver_sql("ANALYZE")
            conn.commit()
        factory = make_session_factory(engine)
        dialect = engine.dialect.name

        def board() -> None:
            with factory() as s:
                service.board(s, ws_id, pipeline_id, per_stage=20)

        def board_sql() -> None:
            with engine.connect() as conn:
                conn.execute(
                    text(
                        "SELECT stage_id, currency, count(*), sum(amount_minor) FROM deals "
                        "WHERE workspace_id = :w AND pipeline_id = :p GROUP BY stage_id, currency"
                    ),
                    {"w": ws_id, "p": pipeline_id},
                ).all()
                stage_ids = conn.scalars(
                    text("SELECT id FROM pipeline_stages WHERE workspace_id = :w AND pipeline_id = :p"),
                    {"w": ws_id, "p": pipeline_id},
                ).all()
                for stage_id in stage_ids:
                    conn.execute(
                        text("SELECT * FROM deals WHERE workspace_id = :w AND stage_id = :s ORDER BY id DESC LIMIT 20"),
                        {"w": ws_id, "s": stage_id},
                    ).all()

        def forecast() -> None:
            with factory() as s:
                deals_forecast.workspace_forecast(s, ws_id, group_by="month")

        def forecast_stalls() -> None:
            with factory() as s:
                deals_forecast.workspace_forecast(s, ws_id, group_by="month", stalls_by="region")

        month = (
            "to_char(d.expected_close_date, 'YYYY-MM')"
            if dialect == "postgresql"
            else "strftime('%Y-%m', d.expected_close_date)"
        )

        def forecast_sql() -> None:
            with engine.connect() as conn:
                conn.execute(
                    text(
                        f"SELECT {month}, d.currency, count(*), sum(d.amount_minor), "
                        "sum(d.amount_minor * st.probability / 100.0) FROM deals d "
                        "JOIN pipeline_stages st ON st.id = d.stage_id "
                        "WHERE d.workspace_id = :w AND d.status = 'open' GROUP BY 1, 2"
                    ),
                    {"w": ws_id},
                ).all()

        for name, fn, base in (
            ("board", board, board_sql),
            ("forecast", forecast, forecast_sql),
            ("forecast_stalls_by_region", forecast_stalls, forecast_sql),
        ):
            figure = timed(fn)
            baseline = timed(base)
            print(
                json.dumps(
                    {
                        "bench": f"deals_{name}_{dialect}_{args.deals}",
                        "figure": round(figure, 1),
                        "unit": "ms",
                        "baseline": round(baseline, 1),
                        "ratio": round(figure / baseline, 2),
                    }
                ),
                flush=True,
            )
    finally:
        engine.dispose()
        if pg_name:
            admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
