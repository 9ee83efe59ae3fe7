"""Server time of the web interface's main pages on a large workspace, against the login page (a template render
with no query) of the same app in the same run.

Bulk-loads N contacts (``bench/contacts_list.py``'s loader) plus lifecycle stage changes in the last 90 days for
a third of them, and a timeline of 200 events for one contact, into a fresh SQLite file (or a fresh PostgreSQL
database with ``--postgres URL``). Pages are requested in-process (Starlette's TestClient, so no network) with a
signed-in session; each figure is the median of ``--repeat`` requests after one warm-up. The dashboard page reads
its snapshot (its first view only starts the computation in the background and says so; the bench waits for it);
its from-scratch computation (what the worker's ``dashboard`` job runs) is timed separately.

    .venv/bin/python bench/bench_web_pages.py --contacts 200000 [--postgres postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import json
import random
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
from sqlalchemy import Engine, insert, select, text

sys.path.insert(0, str(Path(__file__).parent))
import contacts_list

from suppilo.accounts import service as accounts
from suppilo.adapters.web import background
from suppilo.adapters.web.routes import dashboard as dashboard_route
from suppilo.config import Settings
from suppilo.contacts.models import Contact, StageChange
from suppilo.db.session import make_engine, make_session_factory
from suppilo.events.models import Event
from suppilo.workspaces.models import Workspace

PASSWORD = "bench password 123"
FUNNEL = ["awareness", "interest", "consideration", "decision", "customer", "loyal"]


def add_history(engine: Engine, workspace_id: int, seed: int = 11) -> int:
    """Stage changes for a third of the contacts (a forward path ending at their stage) within the last 90 days,
    and 200 page events for the newest contact; returns that contact's id."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    factory = make_session_factory(engine)
    with factory() as s:
        rows = s.execute(
            select(Contact.id, Contact.lifecycle_stage).where(
                Contact.workspace_id == workspace_id, Contact.is_anonymous.is_(False)
            )
        ).all()
    changes: list[dict[str, Any]] = []
    for cid, stage in rows:
        if rng.random() > 1 / 3 or stage not in FUNNEL:
            continue
        at = now - timedelta(days=rng.uniform(1, 89))
        previous = None
        for key in FUNNEL[: FUNNEL.index(stage) + 1]:
            changes.append(
                {
                    "workspace_id": workspace_id,
                    "contact_id": cid,
                    "from_stage": previous,
                    "to_stage": key,
                    "changed_at": at,
                    "reason": "bench",
                    "source": "rule",
                }
            )
            previous = key
            at += timedelta(hours=rng.uniform(1, 200))
    with engine.begin() as conn:
        for start in range(0, len(changes), 20_000):
            conn.execute(insert(StageChange), changes[start : start + 20_000])
        target = rows[-1][0]
        conn.execute(
            insert(Event),
            [
                {
                    "workspace_id": workspace_id,
                    "contact_id": target,
                    "kind": "page",
                    "name": "Product",
                    "occurred_at": now - timedelta(minutes=i),
                    "received_at": now - timedelta(minutes=i),
                    "message_id": f"bench-{uuid.uuid4()}",
                    "properties": {"url": f"https://shop.example/p/{i}", "title": f"Product {i}"},
                    "context": {},
                }
                for i in range(200)
            ],
        )
    print(f"stage changes: {len(changes)}", file=sys.stderr)
    return int(target)


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
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--postgres", default=None, help="server URL; a fresh database is created and dropped")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="suppilo-bench-web-"))
    drop: Callable[[], None] | None = None
    if args.postgres:
        name = f"suppilo_bench_web_{uuid.uuid4().hex[:8]}"
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
        workspace_id = contacts_list.load(engine, args.contacts)
        contact_id = add_history(engine, workspace_id)
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

            # The first view finds no snapshot: it answers "being computed" and starts the computation behind (as
            # `suppilo demo` or the worker would have done ahead); the timed views read the stored snapshot.
            deadline = time.monotonic() + 3600
            while "dashboard-computing" in client.get(f"/app/w/{slug}/").text and time.monotonic() < deadline:
                background.wait_idle(60)
                time.sleep(0.1)

            def cold_dashboard() -> None:
                dashboard_route.clear_cache()
                get(f"/app/w/{slug}/")()

            # Baseline: the login page of the same app without a session (a template render, no query).
            anonymous = TestClient(app)
            base = timed(lambda: anonymous.get("/app/login").raise_for_status(), args.repeat)
            pages = {
                "dashboard, snapshot read (90 days)": cold_dashboard,
                "contacts, first page": get(f"/app/w/{slug}/contacts"),
                "contacts, search 'ma'": get(f"/app/w/{slug}/contacts?q=ma"),
                "contacts, search 'anna kor'": get(f"/app/w/{slug}/contacts?q=anna+kor"),
                "contacts, stage filter": get(f"/app/w/{slug}/contacts?stage=customer"),
                "contact page with timeline": get(f"/app/w/{slug}/contacts/{contact_id}"),
                "mail catcher (empty)": get(f"/app/w/{slug}/mail"),
            }
            label = engine.dialect.name
            for name, fn in pages.items():
                ms = timed(fn, args.repeat)
                print(
                    json.dumps(
                        {
                            "bench": "web_pages",
                            "figure": f"{name}, {args.contacts:,} contacts, {label}",
                            "value": round(ms, 1),
                            "unit": "ms",
                            "baseline": round(base, 1),
                            "ratio": round(ms / base, 1) if base else None,
                        }
                    )
                )
            # The dashboard's from-scratch computation, as the worker's job runs it (the page reads its result).
            from suppilo.analytics import dashboard as snapshots

            def scratch() -> None:
                with make_session_factory(make_engine(url))() as s:
                    snapshots.refresh(s, workspace_id, 90)
                    s.commit()

            ms = timed(scratch, 2)
            print(
                json.dumps(
                    {
                        "bench": "web_pages",
                        "figure": f"dashboard from scratch (worker job, 90 days), {args.contacts:,} contacts, {label}",
                        "value": round(ms, 1),
                        "unit": "ms",
                        "baseline": round(base, 1),
                        "ratio": round(ms / base, 1) if base else None,
                    }
                )
            )
    finally:
        engine.dispose()
        if drop is not None:
            drop()


if __name__ == "__main__":
    main()
