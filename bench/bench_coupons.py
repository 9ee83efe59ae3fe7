"""Coupon redemptions under 200 concurrent requests on PostgreSQL (no double spend, ops/s).

Stores one offer and ``--ops`` single-use codes for anyone (``offers.service.generate_codes``) in a fresh PostgreSQL
database (``--postgres URL``; ``--sqlite`` runs the same on a SQLite file). Then ``--threads`` threads (default 200:
200 requests in flight) share a pool of ``--pool`` connections, the way the API's workers would, and redeem every
code once, each redemption its own session and transaction (``offers.service.redeem`` + commit: checksum, coupon and
offer lookups, the conditional ``UPDATE … WHERE status = 'issued'``, the redemption row).

figure   = redemptions per second;
baseline = a trivial transaction per request with the same threads and pool: ``UPDATE bench_rows SET n = n + 1
           WHERE id = :id`` on distinct rows through a session + commit, same run;
ratio    = figure / baseline. Target (issue 9): ≥ 1,000 redemptions/s on PostgreSQL. The run also checks that every
code was redeemed exactly once.

``--points`` measures loyalty point redemptions instead (``loyalty.service.redeem_points`` of 1 point, 1,000 members
with a balance, requests spread over them): the run checks that every cached balance still equals its ledger.
``--procs N`` splits the threads, connections and codes over N processes (as N API worker processes would).

    .venv/bin/python bench/bench_coupons.py [--ops 20000] [--threads 200] [--pool 40] [--procs 1] [--points]
                                            [--postgres URL | --sqlite]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from suppilo.contacts.models import Contact
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.loyalty import service as loyalty
from suppilo.loyalty.models import LoyaltyBalance, LoyaltyEntry
from suppilo.offers import service as offers
from suppilo.offers.models import Coupon, Redemption
from suppilo.offers.schemas import OfferCreate
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def run_concurrently(items: list[object], threads: int, work: Callable[[object], None]) -> tuple[float, float]:
    """(start, end) wall-clock times of processing every item with ``threads`` threads pulling from one queue."""
    todo: queue.SimpleQueue[object] = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def worker() -> None:
        start.wait()
        while True:
            try:
                item = todo.get_nowait()
            except queue.Empty:
                return
            try:
                work(item)
            except BaseException as exc:
                errors.append(exc)
                return

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.time()
    for t in pool:
        t.join()
    t1 = time.time()
    if errors:
        raise errors[0]
    return t0, t1


def child(url: str, kind: str, ws_id: int, items: list[object], threads: int, pool: int, ready: Any, out: Any) -> None:
    """One server process: its own engine and pool, ``threads`` requests in flight."""
    engine = make_engine(url, pool_size=max(pool // 2, 1))
    factory = make_session_factory(engine)

    def redeem(code: object) -> None:
        with factory() as s:
            offers.redeem(s, ws_id, str(code), contact_id=None, order_total_minor=5000, currency="EUR")
            s.commit()

    def spend(item: object) -> None:
        contact_id, i = cast(tuple[int, int], item)
        with factory() as s:
            loyalty.redeem_points(s, ws_id, contact_id, points=1, idempotency_key=f"bench:{i}")
            s.commit()

    def trivial(row: object) -> None:
        with factory() as s:
            s.execute(text("UPDATE bench_rows SET n = n + 1 WHERE id = :i"), {"i": row})
            s.commit()

    with factory() as s:  # open the connections before the clock starts
        s.execute(text("SELECT 1"))
    ready.wait()
    work = {"redeem": redeem, "points": spend, "trivial": trivial}[kind]
    out.put(run_concurrently(items, threads, work))
    engine.dispose()


def measure(url: str, kind: str, ws_id: int, items: list[object], args: argparse.Namespace) -> float:
    """Seconds for ``--procs`` processes sharing ``--threads`` threads and ``--pool`` connections to do ``items``."""
    ctx = multiprocessing.get_context("spawn")
    ready, out = ctx.Barrier(args.procs), ctx.Queue()
    parts = [items[i :: args.procs] for i in range(args.procs)]
    procs = [
        ctx.Process(
            target=child,
            args=(url, kind, ws_id, part, args.threads // args.procs, args.pool // args.procs, ready, out),
        )
        for part in parts
    ]
    for p in procs:
        p.start()
    spans = [out.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a {kind} process failed")
    return max(end for _, end in spans) - min(start for start, _ in spans)


MEMBERS = 1_000
START_POINTS = 1_000_000


def setup_members(engine: Engine, ws_id: int, n: int) -> list[int]:
    """``n`` contacts with START_POINTS each (one bonus entry and its cached balance), in bulk."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(Contact.__table__),
            [
                {
                    "workspace_id": ws_id,
                    "email": f"m{i}@bench.example",
                    "lifecycle_stage": "customer",
                    "properties": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n)
            ],
        )
        ids = list(conn.scalars(select(Contact.id).where(Contact.workspace_id == ws_id).order_by(Contact.id)))
        conn.execute(
            insert(LoyaltyEntry.__table__),
            [
                {
                    "workspace_id": ws_id,
                    "contact_id": c,
                    "kind": "bonus",
                    "points": START_POINTS,
                    "reason": "bench",
                    "idempotency_key": f"seed:{c}",
                    "occurred_at": now,
                }
                for c in ids
            ],
        )
        conn.execute(
            insert(LoyaltyBalance.__table__),
            [
                {"workspace_id": ws_id, "contact_id": c, "points": START_POINTS, "tier": "member", "updated_at": now}
                for c in ids
            ],
        )
    return ids


def check_points(s: Session, ws_id: int, ops: int) -> None:
    """Every redemption was written once and every cached balance equals its ledger."""
    spent = s.scalar(
        select(func.count())
        .select_from(LoyaltyEntry)
        .where(LoyaltyEntry.workspace_id == ws_id, LoyaltyEntry.kind == "redeem")
    )
    ledger = dict(
        s.execute(
            select(LoyaltyEntry.contact_id, func.sum(LoyaltyEntry.points))
            .where(LoyaltyEntry.workspace_id == ws_id)
            .group_by(LoyaltyEntry.contact_id)
        ).all()
    )
    cached = dict(
        s.execute(
            select(LoyaltyBalance.contact_id, LoyaltyBalance.points).where(LoyaltyBalance.workspace_id == ws_id)
        ).all()
    )
    if spent != ops or ledger != cached or sum(cached.values()) != START_POINTS * len(cached) - ops:
        raise SystemExit(f"points: {spent} redemptions for {ops}, ledger and balances agree: {ledger == cached}")


def check_coupons(s: Session, ws_id: int, ops: int) -> None:
    """Every code was redeemed exactly once."""
    redeemed = s.scalar(select(func.count()).select_from(Redemption).where(Redemption.workspace_id == ws_id))
    distinct = s.scalar(select(func.count(func.distinct(Redemption.coupon_id))).where(Redemption.workspace_id == ws_id))
    if redeemed != ops or distinct != ops:
        raise SystemExit(f"expected {ops} redemptions of distinct coupons, got {redeemed} ({distinct} distinct)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=200)
    ap.add_argument("--pool", type=int, default=40, help="database connections shared by the threads")
    ap.add_argument("--postgres", default=DEFAULT_PG)
    ap.add_argument("--procs", type=int, default=1, help="server processes sharing the threads and connections")
    ap.add_argument("--sqlite", action="store_true")
    ap.add_argument("--points", action="store_true", help="measure loyalty point redemptions instead of coupons")
    args = ap.parse_args()
    pg_name = ""
    if args.sqlite:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}"
    else:
        pg_name = f"suppilo_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{pg_name}"'))
        admin.dispose()
        url = sa.engine.make_url(args.postgres).set(database=pg_name).render_as_string(hide_password=False)
    engine = make_engine(url, pool_size=args.pool // 2)
    try:
        Base.metadata.create_all(engine)
        factory: sessionmaker[Session] = make_session_factory(engine)
        with factory() as s:
            ws = workspaces_service.create_workspace(
                s, WorkspaceCreate(slug=f"bench-{uuid.uuid4().hex[:6]}", name="Bench", currency="EUR")
            )
            s.commit()
            ws_id = ws.id
        if args.points:
            members = setup_members(engine, ws_id, MEMBERS)
            items: list[object] = [(members[i % MEMBERS], i) for i in range(args.ops)]
        else:
            with factory() as s:
                offers.create_offer(s, ws_id, OfferCreate(key="bench", name="Bench 10 %", kind="percent", percent=10))
                batch, _n = offers.generate_codes(s, ws_id, offer_key="bench", count=args.ops)
                s.commit()
                items = list(s.scalars(select(Coupon.code).where(Coupon.workspace_id == ws_id, Coupon.batch == batch)))
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"))
            conn.execute(text("INSERT INTO bench_rows (id, n) VALUES (:i, 0)"), [{"i": i} for i in range(args.ops)])
            conn.execute(text("ANALYZE"))

        baseline_s = measure(url, "trivial", ws_id, list(range(args.ops)), args)
        figure_s = measure(url, "points" if args.points else "redeem", ws_id, items, args)
        with factory() as s:
            if args.points:
                check_points(s, ws_id, args.ops)
            else:
                check_coupons(s, ws_id, args.ops)
        figure, baseline = args.ops / figure_s, args.ops / baseline_s
        what = "points_redeem" if args.points else "coupon_redeem"
        name = f"{what}_{engine.dialect.name}_{args.threads}req_{args.pool}conn_{args.procs}proc"
        print(
            json.dumps(
                {
                    "bench": name,
                    "figure": round(figure, 1),
                    "unit": "redemptions/s",
                    "baseline": round(baseline, 1),
                    "ratio": round(figure / baseline, 3),
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
            admin.dispose()


if __name__ == "__main__":
    main()
