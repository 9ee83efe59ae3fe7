"""Contact list and search at scale: service-layer server time against the equivalent hand-written SQL.

Bulk-loads N contacts (default 1,000,000) into a fresh SQLite file (and a fresh PostgreSQL database with
``--postgres URL``), then times the first page, a deep page through a cursor, filtered pages and searches through
``suppilo.contacts.service.list_contacts``. The baseline of each figure is the same query written by hand in SQL,
timed in the same run. Prints one JSON line per measurement; query plans go to stderr with ``--plans``.

    .venv/bin/python bench/contacts_list.py --contacts 1000000 [--postgres postgresql+psycopg://...] [--plans]
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
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from suppilo.contacts import service
from suppilo.contacts.models import Contact
from suppilo.contacts.schemas import ContactFilter, encode_cursor
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

FIRST = [
    "anna",
    "aino",
    "aleksi",
    "antti",
    "eero",
    "elina",
    "emma",
    "helmi",
    "ilkka",
    "jani",
    "johanna",
    "juha",
    "kaisa",
    "kalle",
    "laura",
    "leena",
    "liisa",
    "maria",
    "markku",
    "matti",
    "mikko",
    "minna",
    "niko",
    "noora",
    "olli",
    "outi",
    "pekka",
    "petri",
    "riikka",
    "sami",
    "sanna",
    "sari",
    "teemu",
    "tiina",
    "timo",
    "tuomas",
    "ville",
    "anders",
    "astrid",
    "bjorn",
    "elsa",
    "erik",
    "freja",
    "gustav",
    "ingrid",
    "johan",
    "karin",
    "lars",
    "maja",
    "nils",
    "sofia",
    "sven",
    "ulla",
    "james",
    "john",
    "mary",
    "linda",
    "michael",
    "sarah",
    "david",
    "emily",
    "daniel",
    "olivia",
    "lucas",
    "mia",
    "noah",
    "ella",
    "leo",
    "lily",
    "oscar",
    "alice",
    "hugo",
]
LAST = [
    "korhonen",
    "virtanen",
    "makinen",
    "nieminen",
    "makela",
    "hamalainen",
    "laine",
    "heikkinen",
    "koskinen",
    "jarvinen",
    "lehtonen",
    "lehtinen",
    "saarinen",
    "salminen",
    "heinonen",
    "niemi",
    "heikkila",
    "kinnunen",
    "salonen",
    "turunen",
    "salo",
    "laitinen",
    "tuominen",
    "rantanen",
    "karjalainen",
    "jokinen",
    "mattila",
    "savolainen",
    "lahtinen",
    "ahonen",
    "andersson",
    "johansson",
    "karlsson",
    "nilsson",
    "eriksson",
    "larsson",
    "olsson",
    "persson",
    "svensson",
    "gustafsson",
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "miller",
    "davis",
    "wilson",
    "anderson",
    "taylor",
    "thomas",
    "moore",
    "martin",
    "jackson",
    "thompson",
    "white",
    "harris",
    "clark",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "green",
]
FREE = ["gmail.com", "outlook.com", "hotmail.com", "yahoo.com", "icloud.com"]
STAGES = ["awareness"] * 40 + ["interest"] * 30 + ["consideration"] * 10 + ["decision"] * 5 + ["customer"] * 10
STAGES += ["loyal"] * 3 + ["advocate", "inactive"]
COUNTRIES = ["FI"] * 50 + ["SE"] * 20 + ["DE"] * 10 + ["US"] * 10 + ["EE", "NO", "DK", "GB", "FR", "NL"] * 2


def _rows(workspace_id: int, start: int, count: int, rng: random.Random, t0: datetime) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + count):
        anonymous = rng.random() < 0.05
        first = rng.choice(FIRST)
        last = rng.choice(LAST)
        domain = rng.choice(FREE) if rng.random() < 0.6 else f"company{rng.randrange(20_000)}.example"
        created = t0 + timedelta(seconds=i * 30)
        out.append(
            {
                "workspace_id": workspace_id,
                "email": None if anonymous else f"{first}.{last}{i}@{domain}",
                "is_anonymous": anonymous,
                "first_name": None if anonymous else first.capitalize(),
                "last_name": None if anonymous else last.capitalize(),
                "first_name_lower": None if anonymous else first,
                "last_name_lower": None if anonymous else last,
                "country": rng.choice(COUNTRIES),
                "lifecycle_stage": "awareness" if anonymous else rng.choice(STAGES),
                "properties": {},
                "version": 1,
                "created_at": created,
                "updated_at": created,
            }
        )
    return out


def load(engine: Engine, n: int, *, seed: int = 7) -> int:
    """A fresh schema with one workspace of ``n`` contacts; returns the workspace id."""
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as s:
        ws = workspaces_service.create_workspace(
            s, WorkspaceCreate(slug=f"bench-{uuid.uuid4().hex[:8]}", name="Bench", country="FI")
        )
        s.commit()
        workspace_id = ws.id
    rng = random.Random(seed)
    t0 = datetime(2020, 1, 1, tzinfo=UTC)
    batch = 20_000
    started = time.perf_counter()
    with engine.begin() as conn:
        for start in range(0, n, batch):
            conn.execute(insert(Contact), _rows(workspace_id, start, min(batch, n - start), rng, t0))
    with engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    print(f"[{engine.dialect.name}] loaded {n} contacts in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return workspace_id


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``fn`` in milliseconds after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def run(engine: Engine, workspace_id: int, label: str, repeat: int, plans: bool) -> None:
    """Time each scenario through the service and as hand-written SQL."""
    factory = make_session_factory(engine, read_only=True)
    false = "false" if engine.dialect.name == "postgresql" else "0"
    with factory() as s:
        ids = [
            r[0]
            for r in s.execute(
                text(f"SELECT id FROM contacts WHERE workspace_id = :w AND is_anonymous = {false} ORDER BY id DESC"),
                {"w": workspace_id},
            )
        ]
    middle = ids[len(ids) // 2]
    base = f"SELECT * FROM contacts WHERE workspace_id = :w AND is_anonymous = {false}"
    order = " ORDER BY id DESC LIMIT 51"
    scenarios: list[tuple[str, ContactFilter, str | None, str, dict[str, Any]]] = [
        ("list_first_page", ContactFilter(), None, base + order, {}),
        (
            "list_deep_page",
            ContactFilter(),
            encode_cursor(middle),
            base + " AND id < :before" + order,
            {"before": middle},
        ),
        (
            "list_stage_deep_page",
            ContactFilter(lifecycle_stage="decision"),
            encode_cursor(middle),
            base + " AND lifecycle_stage = :st AND id < :before" + order,
            {"st": "decision", "before": middle},
        ),
        (
            "list_country",
            ContactFilter(country="EE"),
            None,
            base + " AND country = :c" + order,
            {"c": "EE"},
        ),
        (
            "search_prefix_short",
            ContactFilter(q="ma"),
            None,
            base + " AND ((email >= 'ma' AND email < 'mb') OR (first_name_lower >= 'ma' AND first_name_lower < 'mb')"
            " OR (last_name_lower >= 'ma' AND last_name_lower < 'mb'))" + order,
            {},
        ),
        (
            "search_prefix_selective",
            ContactFilter(q="gustafs"),
            None,
            base + " AND ((email >= 'gustafs' AND email < 'gustaft')"
            " OR (first_name_lower >= 'gustafs' AND first_name_lower < 'gustaft')"
            " OR (last_name_lower >= 'gustafs' AND last_name_lower < 'gustaft'))" + order,
            {},
        ),
        (
            "search_full_name",
            ContactFilter(q="Anna Kor"),
            None,
            base + " AND first_name_lower = 'anna' AND last_name_lower >= 'kor' AND last_name_lower < 'kos'" + order,
            {},
        ),
        (
            "search_email_exactish",
            ContactFilter(q="emma.smith12"),
            None,
            base + " AND ((email >= 'emma.smith12' AND email < 'emma.smith13')"
            " OR (first_name_lower >= 'emma.smith12' AND first_name_lower < 'emma.smith13')"
            " OR (last_name_lower >= 'emma.smith12' AND last_name_lower < 'emma.smith13'))" + order,
            {},
        ),
    ]
    for name, flt, cursor, sql, params in scenarios:
        bind = {"w": workspace_id, **params}

        def via_service(session: Session, flt: ContactFilter = flt, cursor: str | None = cursor) -> None:
            service.list_contacts(session, workspace_id, flt, cursor=cursor, limit=50)

        def via_sql(session: Session, sql: str = sql, bind: dict[str, Any] = bind) -> None:
            session.execute(text(sql), bind).all()

        with factory() as s:
            figure = timed(lambda: via_service(s), repeat)
            baseline = timed(lambda: via_sql(s), repeat)
            if plans:
                explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
                plan = [" ".join(str(c) for c in r) for r in s.execute(text(explain + sql), bind)]
                print(f"[{label}] {name}:\n  " + "\n  ".join(plan), file=sys.stderr)
        print(
            json.dumps(
                {
                    "bench": f"contacts_list.{label}.{name}",
                    "figure": round(figure, 3),
                    "unit": "ms",
                    "baseline": round(baseline, 3),
                    "ratio": round(figure / baseline, 3) if baseline else None,
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="a PostgreSQL server URL; a fresh database is created and dropped")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--plans", action="store_true", help="print the query plans of the baselines to stderr")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()

    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'bench.sqlite3'}")
            ws = load(engine, args.contacts)
            run(engine, ws, "sqlite", args.repeat, args.plans)
            engine.dispose()
    if args.postgres:
        name = f"suppilo_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        try:
            ws = load(engine, args.contacts)
            run(engine, ws, "postgresql", args.repeat, args.plans)
        finally:
            engine.dispose()
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
