"""Benchmark: CSV import of contacts (upsert on email) against a bare executemany insert of the same rows.

    .venv/bin/python bench/import_csv.py --rows 200000 [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/x]

Generates a deterministic HubSpot-shaped CSV, imports it into a fresh SQLite database (and a fresh PostgreSQL
database on the given server), prints rows/s overall and for the first and last 10% of rows, the resident memory at
10%/50%/100% of the import and its peak, the CPU time of this process per row (both import threads; on a loaded
machine a steadier comparison than rows/s), the 1-minute load average before and after, the baseline (a bare
executemany insert of the same rows into an empty table with the same columns, same run) and one JSON line per
database: {"bench", "figure", "unit", "baseline", "ratio", "cpu_us_per_row", "load_avg_1min"}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.transfer.importer import import_file
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

HEADER = [
    "First Name",
    "Last Name",
    "Email",
    "Phone Number",
    "Job Title",
    "Company Name",
    "Country/Region",
    "City",
    "Lifecycle Stage",
    "Original Source",
    "Create Date",
]
FIRST = ["Aino", "Eino", "Liisa", "Mikko", "Sara", "Jonas", "Emma", "Lars", "Ieva", "Janis", "Olga", "Peter"]
LAST = ["Virtanen", "Korhonen", "Svensson", "Hansen", "Berzins", "Kask", "Nielsen", "Smith", "Meyer", "Ozols"]
PLACES = [("FI", "Helsinki"), ("SE", "Stockholm"), ("NO", "Oslo"), ("DK", "Aarhus"), ("LV", "Riga"), ("EE", "Tartu")]
TITLES = ["CEO", "CTO", "Buyer", "Marketing Manager", "Engineer", ""]
STAGES = ["", "", "", "subscriber", "lead", "customer", "marketingqualifiedlead"]
SOURCES = ["ORGANIC_SEARCH", "PAID_SEARCH", "SOCIAL_MEDIA", "EMAIL_MARKETING", "DIRECT_TRAFFIC", "OFFLINE", ""]
FREE = ["gmail.com", "outlook.com", "yahoo.com"]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """A deterministic contacts file: unique addresses, 40% free mail, 5,000 company domains, 25% with a phone."""
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for i in range(rows):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            company = rnd.randrange(5000)
            domain = rnd.choice(FREE) if rnd.random() < 0.4 else f"company{company}.example.com"
            country, city = rnd.choice(PLACES)
            phone = f"+358 40 {1000000 + i % 8999999}" if i % 4 == 0 else ""
            w.writerow(
                [
                    first,
                    last,
                    f"{first}.{last}.{i}@{domain}",
                    phone,
                    rnd.choice(TITLES),
                    f"Company {company} Oy" if "example" in domain else "",
                    country,
                    city,
                    rnd.choice(STAGES),
                    rnd.choice(SOURCES),
                    f"2023-{1 + i % 12:02d}-{1 + i % 28:02d} 10:{i % 60:02d}",
                ]
            )


def baseline(engine: sa.Engine, path: Path, batch: int = 2000) -> float:
    """Rows/s of a bare executemany insert of the file's rows into an empty table with the same columns."""
    meta = sa.MetaData()
    cols = [sa.Column(f"c{i}", sa.String(320)) for i in range(len(HEADER))]
    table = sa.Table("bench_baseline", meta, sa.Column("id", sa.Integer, primary_key=True), *cols)
    meta.drop_all(engine)
    meta.create_all(engine)
    start = time.perf_counter()
    n = 0
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        rows: list[dict[str, str]] = []
        for cells in reader:
            rows.append({f"c{i}": v for i, v in enumerate(cells)})
            if len(rows) >= batch:
                with engine.begin() as conn:
                    conn.execute(table.insert(), rows)
                n += len(rows)
                rows = []
        if rows:
            with engine.begin() as conn:
                conn.execute(table.insert(), rows)
            n += len(rows)
    rate = n / (time.perf_counter() - start)
    meta.drop_all(engine)
    return rate


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc; 0 elsewhere), to show that memory stays flat through the file."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return 0.0


def run(label: str, url: str, path: Path, rows: int, rerun: bool) -> dict[str, object]:
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as s:
        ws = workspaces_service.create_workspace(s, WorkspaceCreate(slug=f"bench-{uuid.uuid4().hex[:8]}", name="Bench"))
        s.commit()
        ws_id = ws.id
    marks: list[tuple[int, float]] = []
    rss: list[tuple[int, float]] = []

    def progress(n: int, _read: int, _total: int) -> None:
        marks.append((n, time.perf_counter()))
        rss.append((n, current_rss_mb()))

    load_before = os.getloadavg()[0]
    cpu_start = time.process_time()
    start = time.perf_counter()
    summary = import_file(factory, ws_id, "contacts", path, progress=progress)
    total = time.perf_counter() - start
    cpu_us = 1e6 * (time.process_time() - cpu_start) / max(summary.rows, 1)
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    rate = summary.rows / total

    def window(lo: int, hi: int) -> float:
        points = [(0, start), *marks]
        before = max((p for p in points if p[0] <= lo), key=lambda p: p[0])
        after = min((p for p in points if p[0] >= hi), key=lambda p: p[0], default=points[-1])
        return (after[0] - before[0]) / (after[1] - before[1])

    def rss_at(share: float) -> float:
        return min(rss, key=lambda p: abs(p[0] - share * rows))[1] if rss else 0.0

    first = window(0, rows // 10)
    last = window(rows - rows // 10, rows)
    rerun_rate = None
    if rerun:
        t0 = time.perf_counter()
        again = import_file(factory, ws_id, "contacts", path)
        rerun_rate = again.rows / (time.perf_counter() - t0)
        assert again.created == 0 and again.failed == summary.failed
    base = baseline(engine, path)
    engine.dispose()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"[{label}] {summary.rows} rows: created {summary.created}, updated {summary.updated}, failed {summary.failed}; "  # noqa: E501
        f"{rate:,.0f} rows/s overall, first 10% {first:,.0f}/s, last 10% {last:,.0f}/s "
        f"(change {100 * (last - first) / first:+.1f}%), "
        + (f"re-run (all updates) {rerun_rate:,.0f} rows/s, " if rerun_rate else "")
        + f"RSS at 10%/50%/100% of the import {rss_at(0.1):,.0f}/{rss_at(0.5):,.0f}/{rss_at(1.0):,.0f} MB, "
        + f"peak RSS {rss_mb:,.0f} MB; client CPU {cpu_us:.1f} us/row; load {load[0]} -> {load[1]}; "
        + f"baseline bare executemany {base:,.0f} rows/s",
        file=sys.stderr,
    )
    return {
        "bench": f"import_csv_contacts_{label}_{rows}",
        "figure": round(rate),
        "unit": "rows/s",
        "baseline": round(base),
        "ratio": round(rate / base, 3),
        "cpu_us_per_row": round(cpu_us, 1),
        "load_avg_1min": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", help="server URL; a fresh database is created and dropped on it")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--rerun", action="store_true", help="also time a second run of the same file (all updates)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="suppilo-bench-") as tmp:
        path = Path(tmp) / "contacts.csv"
        generate(path, args.rows)
        results = []
        if not args.no_sqlite:
            results.append(run("sqlite", f"sqlite:///{tmp}/bench.sqlite3", path, args.rows, args.rerun))
        if args.postgres:
            name = f"suppilo_bench_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
            try:
                results.append(run("postgresql", url, path, args.rows, args.rerun))
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    for result in results:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
