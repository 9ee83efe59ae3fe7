"""Rescoring every contact of a workspace: fit against an ICP and engagement with decay (issue 4 target: 1,000,000
contacts in ≤ 20 s).

Creates a fresh SQLite file (or a fresh PostgreSQL database with ``--postgres URL``) with N contacts (default
50,000), one company per 5 contacts, job titles, tags and E events per contact on average (``--events-per-contact``,
default 10: 0 to 2E each) over 120 days, and a 6-criterion ICP, and builds the columnar copy of the event log
(``analytics.columnar``; ``--no-columnar``: none, events read from the row store). Then times:

1. the **first scoring** set-based in one process (``scoring.bulk.bulk_fit`` + ``bulk_engagement`` over every
   contact in one transaction: every row and history line written; the copy synced again, events read from it), and
   the same again split over ``--processes`` worker processes (``bulk.rescore_parallel``, the stored scores removed
   first; workers read the synced copy at once);
2. a re-run at the same moment (nothing written);
3. the **periodic rescoring**: six hours later, after new events of 10 % of the contacts (1–3 each, within the last
   five hours) and a new job title for 2 % of them — every contact's fit and engagement recomputed (the copy synced
   with the new events first), the rows that changed written with their history lines; rows that only decayed are
   kept (``service.engagement_kept``).

figure   = contacts rescored per second set-based, the periodic rescoring (3), with the processes;
baseline = contacts per second of the per-contact path (``service.recompute_fit`` + ``recompute_engagement`` in
           chunks of 1,000, as the CLI did) for that same rescoring over the first ``--per-contact-sample``
           contacts, rolled back;
ratio    = figure / baseline (the speed-up). The first scoring's time and its per-contact rate are reported too.

    .venv/bin/python bench/bench_scoring.py [--contacts 50000] [--postgres URL] [--per-contact-sample 20000]
        [--events-per-contact 10] [--no-columnar]
        [--processes N (default: as the CLI's, ``bulk.default_processes``)]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import select

from suppilo.analytics import columnar
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.scoring import bulk, service
from suppilo.scoring.schemas import IcpCreate
from suppilo.segments.compiler import companies, contacts
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

COUNTRIES = ["FI", "SE", "NO", "DK", "DE", "EE", "US"]
INDUSTRIES = ["Software", "Retail", "Outdoor retail", "Hotels", "Manufacturing"]
TITLES = ["Head of Marketing", "CEO", "Buyer", "Intern", "Marketing Manager", "Engineer", None]
TAGS = ["pain:attribution", "pain:churn", "newsletter", "webinar"]
ICP = {
    "industries": {"values": ["Software", "Outdoor retail"], "weight": 20},
    "employees": {"min": 10, "max": 500, "weight": 20},
    "revenue": {"currency": "EUR", "min_minor": 50_000_000, "weight": 10},
    "location": {"regions": ["nordics"], "weight": 20},
    "seniority": {"keywords": ["head", "ceo", "manager"], "weight": 20},
    "pain_points": {"tags": ["pain:attribution", "pain:churn"], "weight": 10},
}
CHUNK = 1000
EVENT_KINDS = [("page", "Pricing"), ("track", "Form Submitted"), ("track", "email_opened"), ("track", "Other")]


def _insert_rows(s: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """Rows straight to the driver (SQLite ``executemany``, PostgreSQL ``COPY``) with values as stored."""
    if s.get_bind().dialect.name == "sqlite":
        marks = ", ".join("?" for _ in columns)
        s.connection().connection.cursor().executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
        )
    else:
        bulk._copy(s, table, columns, rows)


def _generate(s: Any, ws: int, n: int, rng: random.Random, now: datetime, per_contact: int = 10) -> int:
    """N contacts (80 % with one of N/5 companies), 0–2 tags each and 0–2E events each over 120 days (E per contact
    on average), inserted in blocks of 100,000 rows through the driver; returns the number of events."""
    t = bulk._time_text(s, now)
    no = 0 if s.get_bind().dialect.name == "sqlite" else "f"
    n_companies = max(1, n // 5)
    _insert_rows(
        s,
        "companies",
        ("workspace_id", "name", "name_lower", "industry", "employees", "annual_revenue_minor", "revenue_currency",
         "country", "properties", "created_at", "updated_at"),
        [
            (ws, f"C{i}", f"c{i}", rng.choice(INDUSTRIES), rng.choice([None, 3, 20, 120, 900]),
             rng.choice([None, 10_000_000, 90_000_000]), "EUR", rng.choice(COUNTRIES), "{}", t, t)
            for i in range(n_companies)
        ],
    )  # fmt: skip
    company_ids = list(s.scalars(select(companies.c.id).where(companies.c.workspace_id == ws)))
    columns = ("workspace_id", "country", "job_title", "company_id", "lifecycle_stage", "is_anonymous", "version",
               "properties", "created_at", "updated_at")  # fmt: skip
    for lo in range(0, n, 100_000):
        rows = [
            (ws, rng.choice(COUNTRIES), rng.choice(TITLES), rng.choice(company_ids) if rng.random() < 0.8 else None,
             "interest", no, 1, "{}", t, t)
            for _ in range(min(100_000, n - lo))
        ]  # fmt: skip
        _insert_rows(s, "contacts", columns, rows)
    ids = list(s.scalars(select(contacts.c.id).where(contacts.c.workspace_id == ws).order_by(contacts.c.id)))
    tags = [(ws, c, tag) for c in ids for tag in rng.sample(TAGS, rng.randint(0, 2))]
    for i in range(0, len(tags), 100_000):
        _insert_rows(s, "contact_tags", ("workspace_id", "contact_id", "tag"), tags[i : i + 100_000])
    props = '{"machine": false, "path": "/pricing"}'
    columns = ("workspace_id", "contact_id", "kind", "name", "properties", "context", "occurred_at", "received_at",
               "message_id")  # fmt: skip
    block: list[tuple[Any, ...]] = []
    total = 0
    for c in ids:
        for j in range(rng.randint(0, 2 * per_contact)):
            kind, name = rng.choice(EVENT_KINDS)
            at = bulk._time_text(
                s, now - timedelta(seconds=rng.randrange(120 * 86_400), microseconds=rng.randrange(10**6))
            )
            block.append((ws, c, kind, name, props, "{}", at, at, f"e-{c}-{j}"))
        if len(block) >= 100_000:
            _insert_rows(s, "events", columns, block)
            total += len(block)
            block = []
    _insert_rows(s, "events", columns, block)
    return total + len(block)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=50_000)
    ap.add_argument("--postgres", default="")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--processes", type=int, default=0, help="worker processes (1: one transaction; default as the CLI's)"
    )
    ap.add_argument("--events-per-contact", type=int, default=10, help="events per contact on average (0 to 2E)")
    ap.add_argument(
        "--no-columnar",
        action="store_true",
        help="read events from the row store (default: a columnar copy of the event log, synced before the timing)",
    )
    ap.add_argument("--per-contact-sample", type=int, default=20_000, help="contacts timed on the per-contact path")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    if args.postgres:
        name = f"bench_scoring_{uuid.uuid4().hex[:8]}"
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

    t_build = time.perf_counter()
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
        n_events = _generate(s, ws, args.contacts, rng, now, args.events_per_contact)
        ids = list(s.scalars(select(contacts.c.id).where(contacts.c.workspace_id == ws).order_by(contacts.c.id)))
        service.create_icp(s, ws, IcpCreate(name="bench", definition=ICP))
        s.commit()
    build_s = time.perf_counter() - t_build
    # the columnar copy of the event log the analytics reports keep (``analytics.columnar``), built once here; the
    # timed rescorings sync it again (nothing new: a check) and read their events from it
    store = None
    sync_s = 0.0
    if not args.no_columnar:
        store = columnar.ColumnarStore(Path(tempfile.mkdtemp(prefix="bench-columnar-")))
        t0 = time.perf_counter()
        with factory() as s, store.connect(s) as con:
            columnar.sync(s, con, ws)
        sync_s = time.perf_counter() - t0

    # baseline: the per-contact path (chunks of 1,000 as the CLI did), on the first N contacts (scaled to all)
    sample = ids[: min(len(ids), args.per_contact_sample)]

    def per_contact(at: datetime) -> float:
        """Contacts per second of the per-contact path over the sample at ``at``, rolled back (so the set-based run
        after it writes every row it would have)."""
        t0 = time.perf_counter()
        for i in range(0, len(sample), CHUNK):
            chunk = sample[i : i + CHUNK]
            with factory() as s:
                service.recompute_fit(s, ws, chunk, at)
                service.recompute_engagement(s, ws, chunk, at)
                s.rollback()
        return len(sample) / (time.perf_counter() - t0)

    per_contact_rate = per_contact(now)

    # one process: every contact rescored set-based in one transaction (first scoring: every row written)
    load = [os.getloadavg()[0]]
    c0 = time.process_time()
    t0 = time.perf_counter()
    with factory() as s:
        fit = bulk.bulk_fit(s, ws, None, now)
        fit_s = time.perf_counter() - t0
        eng = bulk.bulk_engagement(s, ws, None, now, store=store)
        s.commit()
    one_s = time.perf_counter() - t0
    one_cpu = time.process_time() - c0
    eng_s = one_s - fit_s
    load.append(os.getloadavg()[0])
    total_s, total_cpu = one_s, one_cpu
    processes = args.processes or bulk.default_processes()

    def run(at: datetime) -> dict[str, Any]:
        if processes > 1:
            return bulk.rescore_parallel(url, ws, now=at, processes=processes, store=store)
        with factory() as s:
            out = bulk.rescore_all(s, ws, now=at, store=store)
            s.commit()
        return out

    def cpu() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def workers(out: dict[str, Any]) -> float:
        # the workers are forked by a forkserver, not by this process: their CPU is reported in the result
        return sum(getattr(r, "worker_cpu_s", 0.0) for r in out.values())  # 0 before it was reported

    if processes > 1:
        # the same first scoring split over worker processes (the stored scores removed first)
        with factory() as s:
            for table in ("score_changes", "contact_scores", "score_explanations"):
                s.execute(sa.text(f"DELETE FROM {table} WHERE workspace_id = :ws"), {"ws": ws})
            s.commit()
        c0 = cpu()
        t0 = time.perf_counter()
        parallel = run(now)
        total_s = time.perf_counter() - t0
        total_cpu = cpu() - c0 + workers(parallel)
        fit, eng = parallel["fit"], parallel["engagement"]
        load.append(os.getloadavg()[0])
    # the same moment again: nothing changed, nothing is written
    c0 = cpu()
    t0 = time.perf_counter()
    same = run(now)
    unchanged_s = time.perf_counter() - t0
    unchanged_cpu = cpu() - c0 + workers(same)
    # the periodic rescoring: six hours later, after new events of 10 % of the contacts (1–3 each, in the last five
    # hours) and a new job title for 2 % — decay alone rewrites nothing (``service.engagement_kept``)
    later_at = now + timedelta(hours=6)
    with factory() as s:
        touched = sorted(rng.sample(ids, len(ids) // 10))
        new_events = [
            (ws, c, kind, name, '{"machine": false, "path": "/pricing"}', "{}", at, at, f"n-{c}-{j}")
            for c in touched
            for j in range(rng.randint(1, 3))
            for kind, name in [rng.choice(EVENT_KINDS)]
            for at in [bulk._time_text(s, later_at - timedelta(seconds=rng.randrange(5 * 3600)))]
        ]
        columns = ("workspace_id", "contact_id", "kind", "name", "properties", "context", "occurred_at",
                   "received_at", "message_id")  # fmt: skip
        for i in range(0, len(new_events), 100_000):
            _insert_rows(s, "events", columns, new_events[i : i + 100_000])
        retitled = rng.sample(ids, len(ids) // 50)
        s.execute(
            sa.text("UPDATE contacts SET job_title = :t WHERE id = :id"),
            [{"t": rng.choice(TITLES), "id": c} for c in retitled],
        )
        s.commit()
    # its baseline: the per-contact path over the sample at the same moment, rolled back
    per_contact_rescore_rate = per_contact(later_at)
    c0 = cpu()
    t0 = time.perf_counter()
    later = run(later_at)
    rerun_s = time.perf_counter() - t0
    rerun_cpu = cpu() - c0 + workers(later)
    load.append(os.getloadavg()[0])
    with factory() as s:
        scored = s.scalar(
            sa.text("SELECT count(*) FROM contact_scores WHERE workspace_id = :ws AND kind IN ('fit', 'engagement')"),
            {"ws": ws},
        )
        explanations = s.scalar(sa.text("SELECT count(*) FROM score_explanations WHERE workspace_id = :ws"), {"ws": ws})
    figure = len(ids) / rerun_s
    print(
        json.dumps(
            {
                "bench": f"scoring_rescore_{engine.dialect.name}",
                "figure": round(figure),
                "unit": f"contacts/s rescored set-based (fit + engagement), the periodic rescoring six hours later "
                f"(10 % with new events, 2 % retitled), {processes} process(es)",
                "baseline": round(per_contact_rescore_rate),
                "baseline_unit": f"contacts/s per-contact path, the same rescoring (first {len(sample)} contacts)",
                "ratio": round(figure / per_contact_rescore_rate, 2),
                "projected_1m_s": round(1_000_000 / figure, 1),
                "first_scoring_s": round(total_s, 2),
                "first_scoring_projected_1m_s": round(1_000_000 * total_s / len(ids), 1),
                "first_scoring_per_contact_rate": round(per_contact_rate),
                "new_events": len(new_events),
                "retitled": len(retitled),
                "rescoring_changed": {k: len(r.changed) for k, r in later.items()},
                "load_1min": [round(x, 2) for x in load],
                "contacts": len(ids),
                "events": n_events,
                "build_s": round(build_s, 1),
                "columnar": store is not None,
                "columnar_first_sync_s": round(sync_s, 1),
                "rows_written": scored,
                "fit_explanations_stored": explanations,
                "fit_changed": len(fit.changed),
                "engagement_scored": eng.scored,
                "processes": processes,
                "one_process_s": round(one_s, 2),
                "one_process_cpu_s": round(one_cpu, 2),
                "one_process_fit_s": round(fit_s, 2),
                "one_process_engagement_s": round(eng_s, 2),
                "total_s": round(total_s, 2),
                "parallel_speedup": round(one_s / total_s, 2),
                # CPU seconds of this process and its workers (on SQLite the database work too; PostgreSQL's is in
                # its server)
                "total_cpu_s": round(total_cpu, 2),
                "unchanged_rerun_cpu_s": round(unchanged_cpu, 2),
                "rescoring_cpu_s": round(rerun_cpu, 2),
                "unchanged_rerun_s": round(unchanged_s, 2),
                "unchanged_rerun_changed": sum(len(r.changed) for r in same.values()),
                "rescoring_s": round(rerun_s, 2),
                "per_contact_projected_1m_s": round(1_000_000 / per_contact_rescore_rate, 1),
            }
        )
    )
    engine.dispose()
    if args.postgres:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    else:
        shutil.rmtree(Path(url.split("///", 1)[1]).parent, ignore_errors=True)  # the SQLite scratch directory
    if store is not None:
        shutil.rmtree(store.directory, ignore_errors=True)


if __name__ == "__main__":
    main()
