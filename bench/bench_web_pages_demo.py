"""Server time of the main web pages on the demo business with 1,000,000 known contacts, each against the login
page (a template render with no query) of the same app in the same run.

The data comes from the demo generator (``suppilo.demo``, seed 7): its companies, its chunks of known contacts
with their anonymous visitors (3 contact rows per known contact), identities, merges, stage history, tags, orders
with lines, refunds and carts, the demo sales pipeline, company fit scores, the four demo segments and the seven
playbook journeys. To keep the build near 20 minutes, page views, touches and form submissions (the event log, ~70 %
of the demo's rows) are loaded only for the first chunk of 1,000 contacts — the contact page is timed on one of
them, with its full timeline. The built database is kept (``--db``, a SQLite file; or ``--postgres URL`` plus
``--pg-database NAME``) and reused by later runs, so the timing can be repeated without rebuilding.

Pages are requested in-process (Starlette's TestClient, no network) with a signed-in admin session; each figure is
the median (and the range) of ``--repeat`` requests after one warm-up.

    .venv/bin/python bench/bench_web_pages_demo.py --contacts 1000000 --db /tmp/suppilo-web-1m.sqlite3
    .venv/bin/python bench/bench_web_pages_demo.py --contacts 1000000 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, func, select, text

from suppilo.accounts import service as accounts
from suppilo.adapters.web import background
from suppilo.companies.models import Company
from suppilo.config import Settings
from suppilo.contacts.models import Contact
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.demo import loader as demo_loader
from suppilo.demo import snapshots as demo_snapshots
from suppilo.demo.generator import CompanyInfo, Context, DemoParams, IdCounter, generate_chunk, generate_companies
from suppilo.events.models import Event
from suppilo.workspaces.models import Workspace

PASSWORD = "bench password 123"
SLUG = "demo"
EVENT_LOG = ("events", "touches", "form_submissions")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build(engine: Engine, contacts: int, seed: int) -> dict[str, Any]:
    """Create the schema and load the demo into it; returns what the timing needs (slug, ids)."""
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    params = DemoParams(seed=seed, contacts=contacts)
    with factory() as session:
        setup = demo_loader.setup_workspace(session, params, SLUG)
        session.commit()
    workspace_id = setup.workspace_id
    with factory() as session:
        user_rows = session.execute(
            text("SELECT m.role, m.user_id FROM memberships m WHERE m.workspace_id = :ws"), {"ws": workspace_id}
        ).all()
        user_ids = {role: int(uid) for role, uid in user_rows}
        from suppilo.capture.models import Form
        from suppilo.commerce.models import Product

        product_ids = dict(
            session.execute(select(Product.sku, Product.id).where(Product.workspace_id == workspace_id)).all()
        )
        form_ids = dict(session.execute(select(Form.slug, Form.id).where(Form.workspace_id == workspace_id)).all())
    companies_table = Company.__table__
    with engine.begin() as conn:
        companies = generate_companies(
            params, workspace_id=workspace_id, id_base=0, owners=[user_ids["sales"], user_ids["admin"]]
        )
        conn.execute(companies_table.insert(), companies)
        ids = IdCounter(1, 1)
    ctx = Context(
        workspace_id=workspace_id,
        contact_id_base=0,
        companies=[CompanyInfo(c["id"], c["country"], c["domain"], c["owner_id"]) for c in companies],
        product_ids=product_ids,
        form_ids=form_ids,
        user_ids=user_ids,
    )
    log(f"{len(companies):,} companies")
    started = time.perf_counter()
    for chunk in range(params.n_chunks):
        rows = generate_chunk(params, ctx, ids, chunk)
        with engine.begin() as conn:
            for name, table in demo_loader.TABLES.items():
                batch = getattr(rows, name)
                if chunk > 0 and name in EVENT_LOG:
                    continue
                if batch:
                    conn.execute(table.insert(), batch)
            demo_loader._bump_sequences(conn)
        if chunk % 50 == 49:
            done = (chunk + 1) * 1000
            rate = done / (time.perf_counter() - started)
            log(f"{done:,} known contacts ({rate:,.0f}/s)")
    with engine.begin() as conn:
        demo_loader._bump_sequences(conn)
    from suppilo.deals.demo import load_demo_pipeline
    from suppilo.scoring import service as scoring_service

    with factory() as session:
        load_demo_pipeline(session, workspace_id, params.anchor, params.seed)
        session.commit()
    log("pipeline")
    with factory() as session:
        company_ids = list(session.scalars(select(Company.id).where(Company.workspace_id == workspace_id)))
        scoring_service.recompute_company_fit(session, workspace_id, company_ids)
        session.commit()
    log("company fit scores")
    from suppilo.demo import journeys as demo_journeys

    with factory() as session:
        demo_journeys.create_segments(session, workspace_id)
        session.commit()
    log("segments")
    with factory() as session:
        demo_journeys.enable_journeys(session, workspace_id)
        session.commit()
    log("journeys")
    return describe(engine, workspace_id, contacts)


def describe(engine: Engine, workspace_id: int, contacts: int) -> dict[str, Any]:
    """ANALYZE, the bench user, and the ids the timing needs."""
    factory = make_session_factory(engine)
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    with factory() as session:
        if session.scalar(text("SELECT 1 FROM users WHERE email = 'bench@example.com'")) is None:
            user = accounts.create_user(session, email="bench@example.com", password=PASSWORD)
            accounts.grant(session, workspace_id, user.id, "admin")
        # The contact with the longest timeline, and the company with the most contacts.
        contact_id = session.execute(
            select(Event.contact_id)
            .where(Event.workspace_id == workspace_id, Event.contact_id.is_not(None))
            .group_by(Event.contact_id)
            .order_by(func.count().desc())
            .limit(1)
        ).scalar_one()
        company_id = session.execute(
            select(Contact.company_id)
            .where(Contact.workspace_id == workspace_id, Contact.company_id.is_not(None))
            .group_by(Contact.company_id)
            .order_by(func.count().desc())
            .limit(1)
        ).scalar_one()
        n_contacts = session.scalar(
            select(func.count()).select_from(Contact).where(Contact.workspace_id == workspace_id)
        )
        session.commit()
    return {
        "slug": SLUG,
        "workspace_id": workspace_id,
        "contact_id": int(contact_id),
        "company_id": int(company_id),
        "known_contacts": contacts,
        "contact_rows": int(n_contacts or 0),
    }


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, float]:
    fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), min(samples), max(samples)


def measure(url: str, meta: dict[str, Any], repeat: int, label: str, data_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from suppilo.adapters.http.app import create_app

    slug = meta["slug"]
    app = create_app(Settings(database_url=url, data_dir=data_dir, secret_key="b" * 40))
    with TestClient(app) as client:
        page = client.get("/app/login")
        token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        res = client.post(
            "/app/login",
            data={"email": "bench@example.com", "password": PASSWORD, "csrf_token": token},
            follow_redirects=False,
        )
        assert res.status_code == 303, res.status_code
        client.cookies.delete("suppilo_login", path="/app/login")

        def get(path: str) -> Callable[[], None]:
            def fetch() -> None:
                r = client.get(path)
                assert r.status_code == 200, (path, r.status_code)

            return fetch

        anonymous = TestClient(app)
        base = f"/app/w/{slug}"
        # As `suppilo demo` does before serving: the dashboard, attribution and forecast snapshots are computed ahead.
        started = time.perf_counter()
        computed = demo_snapshots.precompute(app.state.session_factory, meta["workspace_id"])
        print(
            json.dumps(
                {
                    "bench": "web_pages_demo",
                    "figure": f"snapshots computed before serving ({computed}), demo {meta['known_contacts']:,} "
                    f"known contacts, {label}",
                    "value": round(time.perf_counter() - started, 1),
                    "unit": "s",
                }
            ),
            flush=True,
        )
        # Views with other parameters are computed behind on their first view ("being computed", polled); the
        # timed views read the kept result (the spend report, explicit dates) or the grouping's own snapshot.
        today = datetime.now(UTC).date()
        dated = f"from={today - timedelta(days=179)}&to={today}"
        behind = {
            "dashboard (30 days)": f"{base}/?days=30",
            "forecast, by country": f"{base}/forecast?group_by=country",
            "spend and ROI (kept result)": f"{base}/reports/spend",
            "attribution, explicit dates (kept result)": f"{base}/reports/attribution?{dated}",
        }
        for path in behind.values():
            if not args_pages or any(a in path for a in args_pages):
                client.get(path)
        assert background.wait_idle(3600)
        pages = {
            "contacts, first page": f"{base}/contacts",
            "contacts, search 'anna'": f"{base}/contacts?q=anna",
            "contacts, search 'mik vir'": f"{base}/contacts?q=mik+vir",
            "contacts, stage filter": f"{base}/contacts?stage=customer",
            "contact page with timeline": f"{base}/contacts/{meta['contact_id']}",
            "companies, first page": f"{base}/companies",
            "companies, search 'nor'": f"{base}/companies?q=nor",
            "companies, industry + country": f"{base}/companies?industry=Hotels+%26+hospitality&country=FI",
            "company page": f"{base}/companies/{meta['company_id']}",
            "merge preview": f"{base}/contacts/{meta['contact_id']}/merge?q=anna",
            "pipeline board": f"{base}/pipeline",
            "segments list": f"{base}/segments",
            "journeys list": f"{base}/journeys",
            "reports (attribution, 90 days)": f"{base}/reports/attribution",
            "import (upload form)": f"{base}/imports",
            "dashboard (90 days)": f"{base}/",
            "forecast (default view)": f"{base}/forecast",
            **behind,
        }
        only = [p for p in pages if not args_pages or any(a in p for a in args_pages)]
        for name in only:
            login_ms, _, _ = timed(lambda: anonymous.get("/app/login").raise_for_status(), repeat)
            ms, lo, hi = timed(get(pages[name]), repeat)
            print(
                json.dumps(
                    {
                        "bench": "web_pages_demo",
                        "figure": f"{name}, demo {meta['known_contacts']:,} known contacts "
                        f"({meta['contact_rows']:,} contact rows), {label}",
                        "value": round(ms, 1),
                        "range": [round(lo, 1), round(hi, 1)],
                        "unit": "ms",
                        "baseline": round(login_ms, 1),
                        "ratio": round(ms / login_ms, 1) if login_ms else None,
                    }
                ),
                flush=True,
            )


args_pages: list[str] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db", default="/tmp/suppilo-web-demo.sqlite3", help="SQLite file (built when missing)")
    parser.add_argument("--postgres", default=None, help="server URL; the database --pg-database is built there")
    parser.add_argument("--pg-database", default="suppilo_bench_web_demo")
    parser.add_argument("--rebuild", action="store_true", help="drop the stored database and build it again")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument(
        "--adopt", action="store_true", help="use a database whose build was stopped after the contacts were loaded"
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--page", action="append", default=[], help="time only pages whose name contains this")
    args = parser.parse_args()
    args_pages.extend(args.page)
    if args.postgres:
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": args.pg_database})
            if exists and args.rebuild:
                conn.execute(text(f'DROP DATABASE "{args.pg_database}" WITH (FORCE)'))
                exists = False
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{args.pg_database}"'))
        url = sa.engine.make_url(args.postgres).set(database=args.pg_database).render_as_string(hide_password=False)
        meta_path = Path(f"/tmp/{args.pg_database}.json")
        fresh = not exists
    else:
        db = Path(args.db)
        meta_path = db.with_suffix(".json")
        if args.rebuild and db.exists():
            db.unlink()
            meta_path.unlink(missing_ok=True)
        fresh = not db.exists() or not meta_path.exists()
        if fresh and db.exists() and not args.adopt:
            db.unlink()
        url = f"sqlite:///{db}"
    engine = make_engine(url)
    if args.adopt and not meta_path.exists():
        with make_session_factory(engine)() as s:
            ws_id = s.scalar(select(Workspace.id).where(Workspace.slug == SLUG))
        meta = describe(engine, int(ws_id), args.contacts)
        meta["adopted"] = True
        meta_path.write_text(json.dumps(meta))
        fresh = False
    if fresh:
        started = time.perf_counter()
        meta = build(engine, args.contacts, args.seed)
        meta["build_seconds"] = round(time.perf_counter() - started, 1)
        meta_path.write_text(json.dumps(meta))
        log(f"built in {meta['build_seconds']} s: {meta}")
    meta = json.loads(meta_path.read_text())
    Base.metadata.create_all(engine)  # tables added to the code since the database was built
    with make_session_factory(engine)() as s:
        assert s.scalar(select(Workspace.id).where(Workspace.slug == meta["slug"])) == meta["workspace_id"]
    engine.dispose()
    if args.build_only:
        return
    label = "PostgreSQL" if args.postgres else "SQLite"
    measure(url, meta, args.repeat, label, meta_path.parent)


if __name__ == "__main__":
    main()
