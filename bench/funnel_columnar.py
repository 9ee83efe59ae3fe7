"""Benchmark: the columnar (DuckDB) route for an ordered 4-step funnel and monthly cohort retention over events.

    .venv/bin/python bench/funnel_columnar.py [--sizes 1000000,10000000] [--sqlite-max 1000000] [--seed 7] [--repeat 3]

Events are generated with numpy (one event per row: a contact among size/10, a time uniform over 2025, the name
Visit 45 %, Form Submitted 20 %, Demo Booked 10 %, Order Completed 5 %, else a page view of one of three paths) and
written straight into the columnar store's table. Up to ``--sqlite-max`` events they are also written into a fresh
SQLite database with the application's schema (all indexes in place), so the row-store route and the first sync of
the columnar copy can be timed; 10,000,000 rows are not loaded into SQLite (about a minute and a half of inserts on
this machine), only into the columnar store.

Cases (one JSON line each, the last line is the 4-step funnel at the largest size):
* ``funnel_4step_w7`` / ``funnel_4step_w30``: figure = ``columnar.ordered_funnel`` (every step-1 event tried as a
  start, exact equal of the row-store answer), s; baseline = a hand-written DuckDB funnel over the same table (first
  start per contact, one join per step — what one would write by hand), s.
* ``funnel_engine_numpy``: the same funnel through ``engine.funnel.ordered_funnel`` over in-memory numpy arrays of
  the matching events (the row-store route's computation without its fetch), s.
* ``cohorts_month_12``: figure = ``columnar.cohort_counts`` (12x12 monthly grid), s; baseline = numpy groupby over the
  same arrays (np.unique of contact x month), s.
* at sizes loaded into SQLite: ``sqlite_route_funnel`` (``service.event_funnel_report`` with engine=sql: query,
  fetch and numpy), ``sqlite_route_cohorts`` (``event_cohort_report`` engine=sql), ``columnar_first_sync`` (copying
  the event log into DuckDB) and ``columnar_route_funnel`` (the full columnar report: sync check + query).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np

from suppilo.analytics import columnar, event_cohorts, service
from suppilo.engine import funnel as funnel_engine

STEPS = ["Visit", "Form Submitted", "Demo Booked", "Order Completed"]
NAMES = np.array([*STEPS, "Page"], dtype=object)
PATHS = np.array(["/", "/pricing", "/blog"], dtype=object)
START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 1, tzinfo=UTC)
WS = 1


def generate(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    contacts = max(n // 10, 1)
    code = rng.choice(5, n, p=[0.45, 0.20, 0.10, 0.05, 0.20])
    page = code == 4
    path = np.full(n, None, dtype=object)
    path[page] = PATHS[rng.integers(0, 3, int(page.sum()))]
    start_us = int(START.timestamp()) * 1_000_000
    span = int((END - START).total_seconds()) * 1_000_000
    contact = rng.integers(1, contacts + 1, n).astype(np.int64)
    # Each contact is active from its own first day on; its events follow at exponential gaps (mean 20 days).
    first = rng.integers(0, span, contacts + 1)
    offset = rng.exponential(20 * 86_400e6, n).astype(np.int64)
    ts = start_us + np.minimum(first[contact] + offset, span - 1)
    return {
        "id": np.arange(1, n + 1, dtype=np.int64),
        "contact_id": contact,
        "ts": ts.astype(np.int64),
        "kind": np.where(page, "page", "track").astype(object),
        "name": NAMES[code],
        "path": path,
    }


REPEAT = 3


def timed(fn, repeat: int | None = None):  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat or REPEAT):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def hand_written_funnel(con: duckdb.DuckDBPyConnection, window_us: int) -> tuple[int, ...]:
    sql = """
    WITH e AS (SELECT contact_id c, ts, name FROM events WHERE workspace_id = 1 AND ts >= $s AND ts < $e),
    s1 AS (SELECT c, min(ts) t1 FROM e WHERE name = 'Visit' GROUP BY c),
    s2 AS (SELECT s1.c, t1, min(e.ts) t2 FROM s1 JOIN e ON e.c = s1.c AND e.name = 'Form Submitted'
           AND e.ts > t1 AND e.ts <= t1 + $w GROUP BY ALL),
    s3 AS (SELECT s2.c, t1, min(e.ts) t3 FROM s2 JOIN e ON e.c = s2.c AND e.name = 'Demo Booked'
           AND e.ts > t2 AND e.ts <= t1 + $w GROUP BY ALL),
    s4 AS (SELECT s3.c FROM s3 JOIN e ON e.c = s3.c AND e.name = 'Order Completed'
           AND e.ts > t3 AND e.ts <= t1 + $w GROUP BY ALL)
    SELECT (SELECT count(*) FROM s1), (SELECT count(*) FROM s2), (SELECT count(*) FROM s3), (SELECT count(*) FROM s4)
    """
    params = {"s": int(START.timestamp()) * 1_000_000, "e": int(END.timestamp()) * 1_000_000, "w": window_us}
    row = con.execute(sql, params).fetchone()
    assert row is not None
    return tuple(int(x) for x in row)


def numpy_cohorts(ev: dict[str, np.ndarray]) -> int:
    month = ev["ts"].astype("datetime64[us]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
    c = ev["contact_id"]
    pairs = np.unique(c * 100_000 + month)
    pc, pm = pairs // 100_000, pairs % 100_000
    first = np.full(int(c.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, pc, pm)
    off = pm - first[pc]
    keep = off <= 12
    grid = np.unique(first[pc][keep] * 100 + off[keep], return_counts=True)
    return int(grid[1].sum())


LINES: list[dict[str, object]] = []


def emit(bench: str, size: int, figure: float, baseline: float | None, **extra: object) -> None:
    line = {
        "bench": f"funnel_columnar.{bench}",
        "events": size,
        "figure": round(figure, 4),
        "unit": "s",
        "baseline": round(baseline, 4) if baseline is not None else None,
        "ratio": round(figure / baseline, 3) if baseline else None,
        **extra,
    }
    LINES.append(line)
    print(json.dumps(line), flush=True)


def load_sqlite(tmp: Path, ev: dict[str, np.ndarray]) -> str:
    from sqlalchemy import create_engine

    from suppilo.db.registry import Base

    url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    occurred = np.char.replace(ev["ts"].astype("datetime64[us]").astype(str), "T", " ")
    props = np.where(ev["path"] == None, "{}", '{"path": "' + ev["path"].astype(str) + '"}')  # noqa: E711
    con = sqlite3.connect(tmp / "bench.sqlite3")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA foreign_keys=OFF")
    rows = zip(
        ev["id"].tolist(),
        ev["contact_id"].tolist(),
        ev["kind"].tolist(),
        ev["name"].tolist(),
        props.tolist(),
        occurred.tolist(),
        strict=True,
    )
    con.executemany(
        "INSERT INTO events (id, workspace_id, contact_id, kind, name, properties, context, occurred_at, received_at,"
        " message_id) VALUES (?, 1, ?, ?, ?, ?, '{}', ?, ?, ?)",
        ((i, c, k, nm, p, o, o, str(i)) for i, c, k, nm, p, o in rows),
    )
    con.commit()
    con.close()
    return url


def run(size: int, rng: np.random.Generator, sqlite_max: int) -> None:
    ev = generate(rng, size)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        con = duckdb.connect(str(tmp / "store.duckdb"))
        for ddl in columnar._SCHEMA:
            con.execute(ddl)
        batch = {"ws": np.full(size, WS, dtype=np.int32), **ev}  # noqa: F841 - scanned by DuckDB
        t0 = time.perf_counter()
        con.execute("INSERT INTO events SELECT ws, id, contact_id, ts, kind, name, path FROM batch")
        load_s = time.perf_counter() - t0
        print(f"# {size:,} events into the columnar store in {load_s:.2f} s", file=sys.stderr)

        for window_days in (7, 30):
            w = window_days * 86_400.0
            fig, res = timed(lambda w=w: columnar.ordered_funnel(con, WS, STEPS, w, START, END))
            base, hand = timed(lambda w=w: hand_written_funnel(con, int(w * 1_000_000)))
            emit(
                f"funnel_4step_w{window_days}",
                size,
                fig,
                base,
                counts=[s.count for s in res.steps],
                hand_written_counts=list(hand),
            )
        if size <= 2_000_000:
            sel = np.isin(ev["name"], STEPS)
            ids, ts, names = ev["contact_id"][sel], ev["ts"][sel] / 1e6, ev["name"][sel].astype(str)
            np_s, np_res = timed(lambda: funnel_engine.ordered_funnel(ids, ts, names, STEPS, 7 * 86_400.0), repeat=1)
            emit("funnel_engine_numpy_w7", size, np_s, None, counts=[s.count for s in np_res.steps])

        last = columnar.month_bucket(date(2025, 12, 31))
        fig, (sizes, _active) = timed(lambda: columnar.cohort_counts(con, WS, "month", END, None, None, None, last, 12))
        base, _ = timed(lambda: numpy_cohorts(ev), repeat=1)
        emit("cohorts_month_12", size, fig, base, cohorts=len(sizes))
        con.close()

        if size <= sqlite_max:
            t0 = time.perf_counter()
            url = load_sqlite(tmp, ev)
            print(f"# {size:,} events into SQLite in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            from suppilo.db.session import make_engine, make_session_factory

            engine = make_engine(url)
            session = make_session_factory(engine)()
            store = columnar.ColumnarStore(tmp / "columnar")
            d0, d1 = START.date(), date(2025, 12, 31)
            sql_s, sql_res = timed(
                lambda: service.event_funnel_report(session, WS, STEPS, 7, d0, d1, engine="sql"), repeat=1
            )
            t0 = time.perf_counter()
            with store.connect(session) as scon:
                columnar.sync(session, scon, WS)
            sync_s = time.perf_counter() - t0
            emit("columnar_first_sync", size, sync_s, None)
            col_s, col_res = timed(
                lambda: service.event_funnel_report(session, WS, STEPS, 7, d0, d1, engine="columnar", store=store)
            )
            assert [s["count"] for s in col_res["steps"]] == [s["count"] for s in sql_res["steps"]]
            emit("sqlite_route_funnel_w7", size, sql_s, None)
            emit("columnar_route_funnel_w7", size, col_s, sql_s, counts=[s["count"] for s in col_res["steps"]])
            coh_sql, a = timed(
                lambda: event_cohorts.event_cohort_report(session, WS, by="month", date_to=d1, engine="sql"), repeat=1
            )
            coh_col, b = timed(
                lambda: event_cohorts.event_cohort_report(
                    session, WS, by="month", date_to=d1, engine="columnar", store=store
                )
            )
            assert a["cohorts"] == b["cohorts"]
            emit("sqlite_route_cohorts_month", size, coh_sql, None)
            emit("columnar_route_cohorts_month", size, coh_col, coh_sql)
            session.close()
            engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--sqlite-max", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs per figure")
    args = ap.parse_args()
    global REPEAT
    REPEAT = args.repeat
    rng = np.random.default_rng(args.seed)
    for size in (int(s) for s in args.sizes.split(",")):
        run(size, rng, args.sqlite_max)
    # The headline (last line): the case, a 4-step funnel with a 30-day window at the largest size.
    head = [x for x in LINES if x["bench"] == "funnel_columnar.funnel_4step_w30"][-1]
    print(json.dumps({**head, "bench": "funnel_columnar"}), flush=True)


if __name__ == "__main__":
    main()
