"""One incoming event updating membership across 100 defined segments (issue 4 target: ≤ 5 ms p95).

Creates a fresh SQLite file (or a fresh PostgreSQL database with ``--postgres URL``) with N contacts (default
100,000) carrying tags and a few events each, and 100 dynamic segments: 40 that read "Order Completed" events
(counts in windows, property filters, combined with contact fields and tags), 40 on contact fields and tags only,
20 that use other segments. Then, per sample, records one "Order Completed" event for a random contact and calls
``segments.service.update_for_contacts(..., {"events:Order Completed"})`` (the segments that depend on it, and
the segments using those, re-evaluated for that contact, membership diff stored with history and events).

figure   = p95 of update_for_contacts per event, milliseconds (record_event excluded);
baseline = p95 of record_event alone for the same events (storing the event itself), same run, milliseconds;
ratio    = figure / baseline. Also printed: the median per event, the p95 and median of the membership write alone
(``service._apply_diffs``: memberships, history, counts, events) and the 1-minute load average at the end.

    .venv/bin/python bench/segments_incremental.py [--contacts 100000] [--samples 300] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import insert

from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.events.service import record_event
from suppilo.segments import service
from suppilo.segments.compiler import contact_tags, contacts, events
from suppilo.segments.schemas import SegmentCreate
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

COUNTRIES = ["FI", "SE", "NO", "DK", "DE", "EE"]
TAGS = ["vip", "b2b", "newsletter", "webinar", "trial", "partner"]


def _segments(rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(40):
        ev: dict[str, Any] = {"type": "event", "name": "Order Completed", "op": "at_least", "value": 1 + i % 3}
        if i % 2:
            ev["window"] = {"last_days": 30 + i}
        if i % 4 == 0:
            ev["where"] = [{"path": "total", "op": "gt", "value": 50 + i}]
        out.append(
            {"and": [ev, {"type": "contact", "field": "country", "op": "in", "value": rng.sample(COUNTRIES, 3)}]}
        )
    for i in range(40):
        out.append(
            {
                "or": [
                    {"type": "tag", "op": "has_tag", "value": TAGS[i % len(TAGS)]},
                    {"type": "contact", "field": "country", "op": "eq", "value": COUNTRIES[i % len(COUNTRIES)]},
                ]
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--postgres", default="")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)

    if args.postgres:
        name = f"bench_segments_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    else:
        tmp = Path(tempfile.mkdtemp())
        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    now = datetime.now(UTC)

    with factory() as s:
        ws = workspaces_service.create_workspace(
            s,
            WorkspaceCreate(
                slug="bench",
                name="bench",
                currency="EUR",
                timezone="UTC",
                country="FI",
                address_line1="Street 1",
                postal_code="00100",
                city="Helsinki",
                address_country="FI",
            ),
        ).id
        rows = [
            {
                "workspace_id": ws,
                "country": rng.choice(COUNTRIES),
                "lifecycle_stage": "interest",
                "properties": {},
                "created_at": now,
                "updated_at": now,
            }
            for _ in range(args.contacts)
        ]
        s.execute(insert(contacts), rows)
        ids = list(s.scalars(sa.select(contacts.c.id).where(contacts.c.workspace_id == ws)))
        s.execute(
            insert(contact_tags),
            [{"workspace_id": ws, "contact_id": c, "tag": t} for c in ids for t in rng.sample(TAGS, rng.randint(0, 2))],
        )
        evs = []
        for k, c in enumerate(ids):
            for j in range(rng.randint(0, 3)):
                evs.append(
                    {
                        "workspace_id": ws,
                        "contact_id": c,
                        "kind": "track",
                        "name": rng.choice(["Order Completed", "Page Viewed", "Product Viewed"]),
                        "properties": {"total": rng.randint(10, 300)},
                        "context": {},
                        "occurred_at": now - timedelta(days=rng.randint(0, 90)),
                        "received_at": now,
                        "message_id": f"seed-{k}-{j}",
                    }
                )
        s.execute(insert(events), evs)
        if args.postgres:  # planner statistics for the bulk-loaded tables (autovacuum would get there later)
            s.commit()
            for table in ("contacts", "contact_tags", "events"):
                s.execute(sa.text(f"ANALYZE {table}"))
        base = [
            service.create_segment(s, ws, SegmentCreate(name=f"S{i}", filter=f), now)
            for i, f in enumerate(_segments(rng))
        ]
        for i in range(20):
            a, b = base[i].id, base[40 + i].id
            flt = {
                "and": [
                    {"type": "segment", "op": "in_segment", "value": a},
                    {"not": {"type": "segment", "op": "in_segment", "value": b}},
                ]
            }
            service.create_segment(s, ws, SegmentCreate(name=f"U{i}", filter=flt), now)
        s.commit()

    figure: list[float] = []
    baseline: list[float] = []
    writes: list[float] = []  # the membership write part of figure (service._apply_diffs), to tell it apart
    apply_diffs = service._apply_diffs

    def timed_apply(*a: Any, **kw: Any) -> None:
        t = time.perf_counter()
        apply_diffs(*a, **kw)
        writes.append((time.perf_counter() - t) * 1000)

    service._apply_diffs = timed_apply  # type: ignore[assignment]
    evaluated = 0
    for k in range(args.samples):
        cid = rng.choice(ids)
        at = now + timedelta(seconds=k)
        with factory() as s:
            t0 = time.perf_counter()
            record_event(s, ws, cid, "Order Completed", {"total": rng.randint(10, 300)}, at, message_id=f"b-{k}")
            t1 = time.perf_counter()
            r = service.update_for_contacts(s, ws, [cid], {"events:Order Completed"}, at)
            t2 = time.perf_counter()
            s.commit()
        evaluated = len(r.evaluated)
        baseline.append((t1 - t0) * 1000)
        figure.append((t2 - t1) * 1000)

    def p95(xs: list[float]) -> float:
        return statistics.quantiles(xs, n=20)[18]

    print(
        json.dumps(
            {
                "bench": f"segments_incremental_{engine.dialect.name}",
                "figure": round(p95(figure), 3),
                "unit": "ms p95 per event (100 segments defined)",
                "baseline": round(p95(baseline), 3),
                "ratio": round(p95(figure) / p95(baseline), 2),
                "segments_evaluated_per_event": evaluated,
                "contacts": args.contacts,
                "median_ms": round(statistics.median(figure), 3),
                "write_p95_ms": round(p95(writes), 3),
                "write_median_ms": round(statistics.median(writes), 3),
                "load_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    engine.dispose()
    if args.postgres:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
