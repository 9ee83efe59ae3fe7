"""Server time of the sales pages — deal page, my tasks, forecast (page and CSV) and the board — on a workspace of N
open deals (default 100,000, ``deals_board.py``'s loader) with 20,000 tasks (a fifth overdue) spread over the ten
owners, against the login page (a template render with no query) of the same app in the same run.

Pages are requested in-process (Starlette's TestClient, no network) by a signed-in admin; each figure is the median
of ``--repeat`` requests after one warm-up. Issue 8 asks for ≤ 300 ms server time per page. The forecast page reads
its snapshot (``deals.forecast_snapshots``; the warm-up stores it); the first view of a grouping, which computes and
stores the snapshot during the request, is timed once on its own.

    .venv/bin/python bench/bench_web_deals.py [--deals 100000] [--postgres postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import insert, select, text

sys.path.insert(0, str(Path(__file__).parent))
import deals_board

from suppilo.accounts import service as accounts
from suppilo.config import Settings
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.deals.models import Deal, DealObjection, Task
from suppilo.workspaces.models import Membership, Workspace

PASSWORD = "bench password 123"


def timed(fn: Callable[[], Any], repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deals", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--postgres", default=None, help="server URL; a fresh database is created and dropped")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="suppilo-bench-deals-"))
    drop: Callable[[], None] | None = None
    if args.postgres:
        name = f"suppilo_bench_deals_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    else:
        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(url)
    try:
        Base.metadata.create_all(engine)
        workspace_id, _ = deals_board.load(engine, args.deals, 7)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            deal_ids = conn.scalars(select(Deal.id).where(Deal.workspace_id == workspace_id).order_by(Deal.id)).all()
            owners = sorted(conn.scalars(select(Membership.user_id).where(Membership.workspace_id == workspace_id)))
            tasks = [
                {
                    "workspace_id": workspace_id,
                    "deal_id": deal_ids[i * 5 % len(deal_ids)],
                    "owner_id": owners[i % len(owners)],
                    "kind": "call",
                    "title": f"Follow up {i}",
                    "due_at": now + timedelta(hours=(i % 5 - 1) * 24 + 1),
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(args.tasks)
            ]
            for start in range(0, len(tasks), 10_000):
                conn.execute(insert(Task), tasks[start : start + 10_000])
            conn.execute(
                insert(DealObjection),
                [{"workspace_id": workspace_id, "deal_id": deal_ids[0], "text": "Too dear", "raised_at": now}] * 3,
            )
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
        factory = make_session_factory(engine)
        with factory() as s:
            user = accounts.create_user(s, email="bench@example.com", password=PASSWORD)
            accounts.grant(s, workspace_id, user.id, "admin")
            slug = s.scalar(select(Workspace.slug).where(Workspace.id == workspace_id))
            s.commit()
        engine.dispose()

        from fastapi.testclient import TestClient

        from suppilo.adapters.http.app import create_app

        app = create_app(Settings(database_url=url, data_dir=tmp, secret_key="b" * 40))
        with TestClient(app) as client:
            page = client.get("/app/login")
            token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
            res = client.post(
                "/app/login", data={"email": "bench@example.com", "password": PASSWORD, "csrf_token": token}
            )
            assert res.status_code == 200, res.status_code
            client.cookies.delete("suppilo_login", path="/app/login")

            def get(path: str) -> Callable[[], None]:
                def fetch() -> None:
                    r = client.get(path)
                    assert r.status_code == 200, (path, r.status_code)

                return fetch

            anonymous = TestClient(app)
            base = timed(lambda: anonymous.get("/app/login").raise_for_status(), args.repeat)
            w = f"/app/w/{slug}"
            pages = {
                "deal page (tasks, objections, history)": get(f"{w}/deals/{deal_ids[0]}"),
                f"my tasks of an owner ({args.tasks // len(owners):,} open)": get(f"{w}/tasks?user={owners[0]}"),
                "overdue tasks of an owner": get(f"{w}/tasks?user={owners[0]}&show=overdue"),
                "forecast page (by month, stalls by team; from its snapshot)": get(f"{w}/forecast"),
                "forecast CSV (by owner)": get(f"{w}/forecast.csv?group_by=owner"),
                "pipeline board": get(f"{w}/pipeline"),
            }

            def report(label: str, ms: float) -> None:
                print(
                    json.dumps(
                        {
                            "bench": "web_deals",
                            "figure": f"{label}, {args.deals:,} deals, {engine.dialect.name}",
                            "value": round(ms, 1),
                            "unit": "ms",
                            "baseline": round(base, 1),
                            "ratio": round(ms / base, 1) if base else None,
                        }
                    ),
                    flush=True,
                )

            cold = get(f"{w}/forecast?group_by=owner&stalls_by=region")
            started = time.perf_counter()
            cold()
            report(
                "forecast page, first view (by owner; computed and stored, 1 request)",
                (time.perf_counter() - started) * 1000,
            )
            for label, fn in pages.items():
                report(label, timed(fn, args.repeat))
    finally:
        engine.dispose()
        if drop is not None:
            drop()


if __name__ == "__main__":
    main()
