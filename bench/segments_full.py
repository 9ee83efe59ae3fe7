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
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import insert

from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.engine.filters import parse_filter
from suppilo.segments import service
from suppilo.segments.compiler import contact_tags, contacts, events
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
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if args.postgres:
        name = f"bench_segfull_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    now = datetime.now(UTC)
    t_load = time.perf_counter()
    n_events = 0
    with factory() as s:
        ws = workspaces_service.create_workspace(
            s,
            WorkspaceCreate(
                slug="bench", name="bench", currency="EUR", timezone="UTC", country="FI",
                address_line1="Street 1", postal_code="00100", city="Helsinki", address_country="FI",
            ),
        ).id  # fmt: skip
        step = 50_000
        for start in range(0, args.contacts, step):
            rows = [
                {
                    "workspace_id": ws,
                    "country": rng.choice(COUNTRIES),
                    "lifecycle_stage": rng.choice(STAGES),
                    "job_title": rng.choice(TITLES),
                    "properties": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for _ in range(min(step, args.contacts - start))
            ]
            s.execute(insert(contacts), rows)
        ids = list(s.scalars(sa.select(contacts.c.id).where(contacts.c.workspace_id == ws).order_by(contacts.c.id)))
        s.execute(
            insert(contact_tags),
            [{"workspace_id": ws, "contact_id": c, "tag": t} for c in ids for t in rng.sample(TAGS, rng.randint(0, 2))],
        )
        batch: list[dict[str, object]] = []
        for c in ids:
            for _ in range(int(rng.expovariate(1 / args.events_per_contact))):
                at = now - timedelta(seconds=rng.randint(0, 120 * 86_400))
                batch.append(
                    {
                        "workspace_id": ws,
                        "contact_id": c,
                        "kind": "track",
                        "name": rng.choice(NAMES),
                        "properties": {},
                        "context": {},
                        "occurred_at": at,
                        "received_at": at,
                        "message_id": f"e{n_events}",
                    }
                )
                n_events += 1
            if len(batch) >= 100_000:
                s.execute(insert(events), batch)
                batch = []
        if batch:
            s.execute(insert(events), batch)
        s.commit()
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    load_s = time.perf_counter() - t_load

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
    with factory() as s:
        compiled = str(
            service.matching_clause(s, ws, node, now).compile(engine, compile_kwargs={"literal_binds": True})
        )
    figure, baseline = min(ours), min(hand)
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
                "projected_1m_10m_s": round(figure * 1_000_000 / len(ids), 2),
                "compiled_sql": " ".join(compiled.split())[:1500],
            }
        )
    )
    engine.dispose()
    if args.postgres:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _param(engine: sa.Engine, t: datetime) -> object:
    """A time as stored (SQLite: naive UTC text as SQLAlchemy writes it)."""
    if engine.dialect.name == "sqlite":
        return t.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return t


if __name__ == "__main__":
    main()
