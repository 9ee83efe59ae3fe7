"""Rescoring every contact of a workspace: fit against an ICP and engagement with decay (issue 4 target: 1,000,000
contacts in ≤ 20 s).

Creates a fresh SQLite file (or a fresh PostgreSQL database with ``--postgres URL``) with N contacts (default
50,000), one company per 5 contacts, job titles, tags and about 3 events per contact over 120 days, and a 6-criterion
ICP. Then times the set-based path (``scoring.bulk.bulk_fit`` + ``bulk_engagement`` over every contact in one
transaction, first scoring: every row and history line written), and a re-run six hours later (fit unchanged,
engagement rows rewritten as they decay).

figure   = contacts rescored per second set-based (fit and engagement together);
baseline = contacts per second of the per-contact path (``service.recompute_fit`` + ``recompute_engagement`` in
           chunks of 1,000, as the CLI did) over the first ``--per-contact-sample`` contacts, rolled back;
ratio    = figure / baseline (the speed-up).

    .venv/bin/python bench/bench_scoring.py [--contacts 50000] [--postgres URL] [--per-contact-sample 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import insert, select

from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.scoring import bulk, service
from suppilo.scoring.schemas import IcpCreate
from suppilo.segments.compiler import companies, contact_tags, contacts, events
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=50_000)
    ap.add_argument("--postgres", default="")
    ap.add_argument("--seed", type=int, default=7)
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
        n_companies = max(1, args.contacts // 5)
        s.execute(
            insert(companies),
            [
                {
                    "workspace_id": ws,
                    "name": f"C{i}",
                    "name_lower": f"c{i}",
                    "industry": rng.choice(INDUSTRIES),
                    "employees": rng.choice([None, 3, 20, 120, 900]),
                    "annual_revenue_minor": rng.choice([None, 10_000_000, 90_000_000]),
                    "revenue_currency": "EUR",
                    "country": rng.choice(COUNTRIES),
                    "properties": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(n_companies)
            ],
        )
        company_ids = list(s.scalars(select(companies.c.id).where(companies.c.workspace_id == ws)))
        s.execute(
            insert(contacts),
            [
                {
                    "workspace_id": ws,
                    "country": rng.choice(COUNTRIES),
                    "job_title": rng.choice(TITLES),
                    "company_id": rng.choice(company_ids) if rng.random() < 0.8 else None,
                    "lifecycle_stage": "interest",
                    "properties": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for _ in range(args.contacts)
            ],
        )
        ids = list(s.scalars(select(contacts.c.id).where(contacts.c.workspace_id == ws).order_by(contacts.c.id)))
        s.execute(
            insert(contact_tags),
            [{"workspace_id": ws, "contact_id": c, "tag": t} for c in ids for t in rng.sample(TAGS, rng.randint(0, 2))],
        )
        names = [("page", "Pricing"), ("track", "Form Submitted"), ("track", "email_opened"), ("track", "Other")]
        evs = []
        for c in ids:
            for j in range(rng.randint(0, 6)):
                kind, ev = rng.choice(names)
                at = now - timedelta(days=rng.uniform(0, 120))
                evs.append(
                    {
                        "workspace_id": ws,
                        "contact_id": c,
                        "kind": kind,
                        "name": ev,
                        "properties": {"machine": False, "path": "/pricing"},
                        "context": {},
                        "occurred_at": at,
                        "received_at": at,
                        "message_id": f"e-{c}-{j}",
                    }
                )
        for i in range(0, len(evs), 50_000):
            s.execute(insert(events), evs[i : i + 50_000])
        service.create_icp(s, ws, IcpCreate(name="bench", definition=ICP))
        s.commit()

    # baseline: the per-contact path (chunks of 1,000 as the CLI did), on the first N contacts (scaled to all)
    sample = ids[: min(len(ids), args.per_contact_sample)]
    t0 = time.perf_counter()
    for i in range(0, len(sample), CHUNK):
        chunk = sample[i : i + CHUNK]
        with factory() as s:
            service.recompute_fit(s, ws, chunk, now)
            service.recompute_engagement(s, ws, chunk, now)
            s.rollback()  # leave the rows unwritten so the set-based run writes every row too
    per_contact_rate = len(sample) / (time.perf_counter() - t0)

    # the figure: every contact rescored set-based in one transaction (first scoring: every row written)
    t0 = time.perf_counter()
    with factory() as s:
        fit = bulk.bulk_fit(s, ws, None, now)
        fit_s = time.perf_counter() - t0
        eng = bulk.bulk_engagement(s, ws, None, now)
        s.commit()
    total_s = time.perf_counter() - t0
    eng_s = total_s - fit_s
    # again later: nothing changed for fit (nothing written), every engagement row decays and is rewritten
    later = now + timedelta(hours=6)
    t0 = time.perf_counter()
    with factory() as s:
        bulk.rescore_all(s, ws, now=later)
        s.commit()
    rerun_s = time.perf_counter() - t0
    with factory() as s:
        scored = s.scalar(
            sa.text("SELECT count(*) FROM contact_scores WHERE workspace_id = :ws AND kind IN ('fit', 'engagement')"),
            {"ws": ws},
        )
    figure = len(ids) / total_s
    print(
        json.dumps(
            {
                "bench": f"scoring_rescore_{engine.dialect.name}",
                "figure": round(figure),
                "unit": "contacts/s rescored set-based (fit + engagement), first scoring",
                "baseline": round(per_contact_rate),
                "baseline_unit": f"contacts/s per-contact path (first {len(sample)} contacts)",
                "ratio": round(figure / per_contact_rate, 2),
                "contacts": len(ids),
                "events": len(evs),
                "rows_written": scored,
                "fit_changed": len(fit.changed),
                "engagement_scored": eng.scored,
                "fit_s": round(fit_s, 2),
                "engagement_s": round(eng_s, 2),
                "total_s": round(total_s, 2),
                "rerun_6h_later_s": round(rerun_s, 2),
                "projected_1m_s": round(1_000_000 / figure, 1),
                "per_contact_projected_1m_s": round(1_000_000 / per_contact_rate, 1),
            }
        )
    )
    engine.dispose()
    if args.postgres:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
