"""Full evaluation of a 5-condition segment with an event-count-in-window condition (issue 4 target: ≤ 2 s at
1,000,000 contacts / 10,000,000 events, and ≤ 1.5× a hand-written SQL query for the same segment).

Creates a fresh SQLite file (or a fresh PostgreSQL database with ``--postgres URL``) with N contacts (default
200,000; country, lifecycle stage, job title), tags, and E events per contact on average (default 10) over 120 days,
then ANALYZE. The segment:

    country in (FI, SE, NO)  AND  stage in (interest, consideration)  AND  job title is set
    AND  tagged "newsletter"  AND  "Page Viewed" at least 3 times in the last 30 days

figure   = seconds for ``segments.service.matching_ids`` (the compiled SQL, what a refresh runs), best of --runs;
baseline = seconds for a hand-written SQL query selecting the same contacts, best of --runs, interleaved;
ratio    = figure / baseline (target ≤ 1.5). Both must return the same contacts (checked).

    .venv/bin/python bench/segments_full.py [--contacts 200000] [--events-per-contact 10] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.engine.filters import parse_filter
from suppilo.segments import service
from suppilo.segments.compiler import contacts
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

COUNTRIES = ["FI", "SE", "NO", "DK", "DE", "EE", "US"]
STAGES = ["awareness", "interest", "consideration", "customer"]
TITLES = [None, "Buyer", "CEO", "Head of Growth", "Engineer"]
TAGS = ["newsletter", "vip", "webinar", "trial"]
NAMES = ["Page Viewed", "Product Viewed", "Order Completed", "email_opened"]
FILTER = {
    "and": [
        {"type": "contact", "field": "country", "op": "in", "value": ["FI", "SE", "NO"]},
        {"type": "stage", "op": "in", "value": ["interest", "consideration"]},
        {"type": "contact", "field": "job_title", "op": "is_set"},
        {"type": "tag", "op": "has_tag", "value": "newsletter"},
        {"type": "event", "name": "Page Viewed", "op": "at_least", "value": 3, "window": {"last_days": 30}},
    ]
}
HAND_WRITTEN = """
SELECT c.id FROM contacts c
WHERE c.workspace_id = :ws
  AND c.country IN ('FI', 'SE', 'NO')
  AND c.lifecycle_stage IN ('interest', 'consideration')
  AND c.job_title IS NOT NULL
  AND EXISTS (SELECT 1 FROM contact_tags t WHERE t.workspace_id = :ws AND t.contact_id = c.id AND t.tag = 'newsletter')
  AND c.id IN (SELECT e.contact_id FROM events e
               WHERE e.workspace_id = :ws AND e.name = 'Page Viewed' AND e.occurred_at >= :since
               GROUP BY e.contact_id HAVING count(*) >= 3)
ORDER BY c.id
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=200_000)
    ap.add_argument("--events-per-contact", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--postgres", default="")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--explain", action="store_true", help="print both queries' plans (EXPLAIN ANALYZE) at the end")
    args = ap.parse_args()
    if args.postgres:
        name = f"bench_segfull_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    else:
        folder = Path(tempfile.mkdtemp())
        url = f"sqlite:///{folder / 'bench.sqlite3'}"
    engine = make_engine(url)
    try:
        Base.metadata.create_all(engine)
        factory = make_session_factory(engine)
        now = datetime.now(UTC).replace(microsecond=0)
        t_load = time.perf_counter()
        with factory() as s:
            ws = workspaces_service.create_workspace(
                s,
                WorkspaceCreate(
                    slug="bench", name="bench", currency="EUR", timezone="UTC", country="FI",
                    address_line1="Street 1", postal_code="00100", city="Helsinki", address_country="FI",
                ),
            ).id  # fmt: skip
            s.commit()
        ids, n_events = build(engine, ws, args.contacts, args.events_per_contact, now, args.seed)
        load_s = time.perf_counter() - t_load

        load_start = round(os.getloadavg()[0], 2)
        node = parse_filter(FILTER)
        since = now - timedelta(days=30)
        ours: list[float] = []
        hand: list[float] = []
        got: list[int] = []
        want: list[int] = []
        for _ in range(args.runs):
            with factory() as s:
                t0 = time.perf_counter()
                got = service.matching_ids(s, ws, node, now)
                ours.append(time.perf_counter() - t0)
            with factory() as s:
                t0 = time.perf_counter()
                want = [int(i) for i in s.scalars(sa.text(HAND_WRITTEN), {"ws": ws, "since": _param(engine, since)})]
                hand.append(time.perf_counter() - t0)
        # the compiled window starts at now − 30 days like the hand-written one
        assert got == want, (len(got), len(want))
        with factory() as s:  # the statement matching_ids runs, with its parameters written in
            stmt = sa.select(contacts.c.id).where(service.matching_clause(s, ws, node, now)).order_by(contacts.c.id)
            compiled = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
        figure, baseline = min(ours), min(hand)
        plans: dict[str, str] = {}
        if args.explain:
            sql = compiled
            prefix = "EXPLAIN (ANALYZE, BUFFERS) " if args.postgres else "EXPLAIN QUERY PLAN "
            with engine.connect() as conn:
                if args.postgres:
                    conn.exec_driver_sql("SET TIME ZONE 'UTC'")  # (the literal times above are UTC)
                for key, q, params in (
                    ("compiled", sql, {}),
                    ("hand_written", HAND_WRITTEN, {"ws": ws, "since": _param(engine, since)}),
                ):
                    if args.postgres:  # as matching_ids runs it (no JIT); the hand-written query as it comes
                        conn.exec_driver_sql(f"SET jit = {'off' if key == 'compiled' else 'DEFAULT'}")
                    rows = conn.execute(sa.text(prefix + q), params).all()
                    plans[key] = "\n".join(" | ".join(str(v) for v in r) for r in rows)
        print(
            json.dumps(
                {
                    "bench": f"segments_full_{engine.dialect.name}",
                    "figure": round(figure, 3),
                    "unit": "s best of runs, compiled 5-condition segment (matching_ids)",
                    "baseline": round(baseline, 3),
                    "ratio": round(figure / baseline, 2),
                    "median_s": round(statistics.median(ours), 3),
                    "baseline_median_s": round(statistics.median(hand), 3),
                    "members": len(got),
                    "contacts": len(ids),
                    "events": n_events,
                    "load_s": round(load_s, 1),
                    "loadavg_1m_before_after": [load_start, round(os.getloadavg()[0], 2)],
                    "projected_1m_10m_s": round(figure * 1_000_000 / len(ids), 2),
                    "compiled_sql": " ".join(compiled.split())[:1500],
                    **({"plans": plans} if plans else {}),
                }
            )
        )
    finally:
        engine.dispose()
        if args.postgres:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        else:
            shutil.rmtree(folder, ignore_errors=True)


# Event names with their shares of the log (page views dominate, orders are rare).
NAME_SHARES = [0.5, 0.25, 0.1, 0.15]
DAYS = 120


def build(engine: sa.Engine, ws: int, n: int, per_contact: float, now: datetime, seed: int) -> tuple[list[int], int]:
    """Contacts, tags and events generated with numpy (seeded: the same data for the same arguments) and written
    with the driver's bulk path (PostgreSQL COPY, SQLite executemany), the events' secondary indexes dropped
    during the load and created again after it (the schema ends as ``create_all`` made it), then ANALYZE.

    Distributions: country, stage and job title uniform over their lists (a fifth without a title); 0–2 of the four
    tags; events per contact ⌊exponential⌋ with mean ``per_contact`` (many with a few, a long tail with many);
    names by ``NAME_SHARES``; times uniform over the last 120 days, stored in time order like a live log.
    """
    rng = np.random.default_rng(seed)
    pg = engine.dialect.name == "postgresql"
    country = rng.integers(0, len(COUNTRIES), n)
    stage = rng.integers(0, len(STAGES), n)
    title = rng.integers(0, len(TITLES), n)
    # mean of ⌊X⌋ for X exponential with scale s is 1 / (e^(1/s) − 1): pick s so that it is ``per_contact``
    scale = 1 / math.log1p(1 / per_contact)
    counts = np.floor(rng.exponential(scale, n)).astype(np.int64)
    n_tags = rng.integers(0, 3, n)
    tag_order = np.argsort(rng.random((n, len(TAGS))), axis=1)
    stamp = _stamp(np.array([np.datetime64(now.replace(tzinfo=None), "us")]))[0]
    table = Base.metadata.tables
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if pg:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute("SET synchronous_commit = off")
            cur.execute("SET maintenance_work_mem = '512MB'")
        else:
            cur.execute("PRAGMA foreign_keys = OFF")
            cur.execute("PRAGMA synchronous = OFF")
            cur.execute("BEGIN")
        _bulk(
            cur,
            pg,
            "contacts",
            ["workspace_id", "country", "lifecycle_stage", "job_title", "is_anonymous", "properties", "version",
             "created_at", "updated_at"],
            [
                (ws, COUNTRIES[c], STAGES[g], TITLES[t], False, "{}", 1, stamp, stamp)
                for c, g, t in zip(country.tolist(), stage.tolist(), title.tolist(), strict=True)
            ],
        )  # fmt: skip
        cur.execute(f"SELECT id FROM contacts WHERE workspace_id = {ws} ORDER BY id")
        ids = np.array([int(r[0]) for r in cur.fetchall()], dtype=np.int64)
        _bulk(
            cur,
            pg,
            "contact_tags",
            ["workspace_id", "contact_id", "tag"],
            [
                (ws, cid, TAGS[tag_order[i, j]])
                for i, (cid, k) in enumerate(zip(ids.tolist(), n_tags.tolist(), strict=True))
                for j in range(k)
            ],
        )
        indexes = list(table["events"].indexes)
        for idx in indexes:
            cur.execute(f"DROP INDEX {idx.name}")
        total = int(counts.sum())
        owner = np.repeat(ids, counts)
        name = rng.choice(len(NAMES), total, p=NAME_SHARES)
        ago = rng.integers(0, DAYS * 86_400, total)
        order = np.argsort(-ago, kind="stable")  # oldest first: the log's insertion order
        owner, name, ago = owner[order], name[order], ago[order]
        when = np.datetime64(now.replace(tzinfo=None), "us") - ago.astype("timedelta64[s]")
        cols = ["workspace_id", "contact_id", "kind", "name", "properties", "context", "occurred_at", "received_at",
                "message_id"]  # fmt: skip
        step = 1_000_000
        for start in range(0, total, step):
            times = _stamp(when[start : start + step]).tolist()
            _bulk(
                cur,
                pg,
                "events",
                cols,
                [
                    (ws, cid, "track", NAMES[nm], "{}", "{}", t, t, f"e{start + k:09d}")
                    for k, (cid, nm, t) in enumerate(
                        zip(
                            owner[start : start + step].tolist(),
                            name[start : start + step].tolist(),
                            times,
                            strict=True,
                        )
                    )
                ],
            )
        for idx in indexes:
            cur.execute(str(sa.schema.CreateIndex(idx).compile(engine)))
        if pg:
            raw.commit()
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
            raw.driver_connection.execute("VACUUM ANALYZE")  # type: ignore[union-attr]
            raw.driver_connection.autocommit = False  # type: ignore[union-attr]
        else:
            cur.execute("COMMIT")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.execute("ANALYZE")
    finally:
        raw.close()
    return [int(i) for i in ids], total


def _stamp(times: np.ndarray) -> np.ndarray:
    """Times as both databases read them from text: ``YYYY-MM-DD HH:MM:SS.ffffff`` (naive UTC, SQLAlchemy's
    SQLite storage format; PostgreSQL reads it in the session's UTC time zone)."""
    return np.char.replace(np.datetime_as_string(times, unit="us"), "T", " ")


def _bulk(cur: Any, pg: bool, table: str, cols: list[str], rows: list[tuple[Any, ...]]) -> None:
    if pg:
        with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            for i in range(0, len(rows), 100_000):
                copy.write("".join("\t".join(_copy_text(v) for v in r) + "\n" for r in rows[i : i + 100_000]))
    else:
        cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", rows)


def _copy_text(v: Any) -> str:
    if v is None:
        return "\\N"
    if v is True or v is False:
        return "t" if v else "f"
    return str(v)


def _param(engine: sa.Engine, t: datetime) -> object:
    """A time as stored (SQLite: naive UTC text as SQLAlchemy writes it)."""
    if engine.dialect.name == "sqlite":
        return t.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return t


if __name__ == "__main__":
    main()
