"""Benchmark: journey contact-steps advanced per second, and enrolling a segment's members.

    .venv/bin/python bench/journeys_advance.py [--contacts 20000] [--workers 2] [--postgres URL]

A fresh SQLite file (or a fresh database on the PostgreSQL server of ``--postgres``) with one workspace, N contacts
in a static list, and a journey: send an email -> tag the contact -> send another email -> end (4 contact-steps per
enrollment: two outbox rows, a tag, the end; each logged on the enrollment's timeline).

figure 1 = enrolling the list's N members (entry rules checked, enrollments and their first timeline line written),
           contacts/s (target: 1,000,000 in <= 5 min = 3,333/s);
figure 2 = contact-steps/s advanced by ``--workers`` runner processes racing over the due work (PostgreSQL: FOR UPDATE
           SKIP LOCKED; SQLite: one writer at a time), until none is due (target >= 3,000/s on PostgreSQL, 2 workers);
           the clock starts when the workers have imported suppilo and connected, as long-running workers have
           (``figure_with_start`` counts from their process start, as this bench did before 2026-11-24);
baseline = the database's own floor for the same writes: the same number of outbox rows inserted with
           ``outbox.enqueue_many`` and the enrollments updated with one bulk UPDATE per 500, in one process, same run;
ratio    = figure 2 / baseline.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import sqlalchemy as sa
from sqlalchemy import func, insert, select, update

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.journeys import runner, service
from suppilo.journeys.models import Enrollment
from suppilo.messaging import outbox
from suppilo.messaging import service as messaging_service
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.segments import service as segments_service
from suppilo.segments.schemas import SegmentCreate
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

DEFINITION = {
    "name": "Bench",
    "trigger": {"type": "manual"},
    "start": "hello",
    "steps": {
        "hello": {"type": "send_email", "template": "welcome", "next": "tag"},
        "tag": {"type": "update_contact", "add_tags": ["benched"], "next": "bye"},
        "bye": {"type": "send_email", "template": "welcome", "next": "done"},
        "done": {"type": "end"},
    },
}
STEPS = 4


def _setup(url: str, n: int) -> tuple[int, int, int]:
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as s:
        ws = workspaces_service.create_workspace(
            s,
            WorkspaceCreate(
                slug=f"bench-{uuid.uuid4().hex[:8]}",
                name="Pohjola Outdoor",
                address_line1="Mannerheimintie 1",
                postal_code="00100",
                city="Helsinki",
                address_country="FI",
            ),
        )
        messaging_service.install_default_templates(s, ws.id)
        seg = segments_service.create_segment(s, ws.id, SegmentCreate(name="everyone", kind="static"))
        s.commit()
        ws_id, seg_id = ws.id, seg.id
    now = utcnow()
    for start in range(0, n, 10_000):
        with factory() as s:
            s.execute(
                insert(Contact),
                [
                    {"workspace_id": ws_id, "email": f"c{i}@example.com", "country": "US", "created_at": now,
                     "updated_at": now}
                    for i in range(start, min(n, start + 10_000))
                ],
            )  # fmt: skip
            s.commit()
    with factory() as s:
        ids = list(s.scalars(select(Contact.id).where(Contact.workspace_id == ws_id)))
        from suppilo.segments.models import SegmentMembership

        for start in range(0, len(ids), 10_000):
            rows = [
                {"segment_id": seg_id, "contact_id": c, "workspace_id": ws_id, "entered_at": now}
                for c in ids[start : start + 10_000]
            ]
            s.execute(insert(SegmentMembership), rows)
        jid = service.create_journey(s, ws_id, DEFINITION).id
        service.set_status(s, ws_id, jid, "active")
        s.commit()
    engine.dispose()
    return ws_id, seg_id, jid


def _worker(url: str, out: mp.Queue, ready: Any, go: Any) -> None:  # type: ignore[type-arg]
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as s:
        s.execute(sa.text("SELECT 1"))
        s.rollback()
    ready.release()
    go.wait()
    out.put(runner.run_due(factory, max_batches=100_000))
    engine.dispose()


def _baseline(url: str, ws_id: int, n: int) -> float:
    engine = make_engine(url)
    factory = make_session_factory(engine)
    started = time.perf_counter()
    for start in range(0, n, 500):
        with factory() as s:
            outbox.enqueue_many(
                s,
                ws_id,
                [
                    item
                    for i in range(start, min(n, start + 500))
                    for item in (
                        {"dedupe_key": f"base:{i}:a", "contact_id": None, "template_key": "welcome"},
                        {"dedupe_key": f"base:{i}:b", "contact_id": None, "template_key": "welcome"},
                    )
                ],
            )
            s.execute(
                update(Enrollment)
                .where(Enrollment.workspace_id == ws_id, Enrollment.id.in_(list(range(start + 1, start + 501))))
                .values(attempts=Enrollment.attempts)
            )
            s.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return n * STEPS / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--postgres", default=None)
    ap.add_argument("--enrol-only", action="store_true", help="measure enrolment only (e.g. with 1,000,000)")
    args = ap.parse_args()
    if args.postgres:
        name = f"bench_journeys_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    else:
        import tempfile

        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}"
    try:
        n = args.contacts
        ws_id, seg_id, jid = _setup(url, n)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        started = time.perf_counter()
        with factory() as s:
            entered = service.enrol_segment(s, ws_id, jid, seg_id, key="bench")
            s.commit()
        enrol_rate = entered / (time.perf_counter() - started)
        assert entered == n, entered
        if args.enrol_only:
            db = "postgres" if args.postgres else "sqlite"
            print(json.dumps({"bench": f"journeys_enrol_{db}", "figure": round(enrol_rate), "unit": "contacts/s",
                              "contacts": n, "seconds": round(n / enrol_rate, 1)}))  # fmt: skip
            return
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
        ready, go = ctx.Semaphore(0), ctx.Event()
        procs = [ctx.Process(target=_worker, args=(url, q, ready, go)) for _ in range(args.workers)]
        cold = time.perf_counter()
        for p in procs:
            p.start()
        for _ in procs:
            ready.acquire()  # imported and connected, as long-running workers are
        started = time.perf_counter()
        go.set()
        advanced = sum(q.get() for _ in procs)
        for p in procs:
            p.join()
        finished = time.perf_counter()
        elapsed = finished - started
        with factory() as s:
            done = s.scalar(select(func.count()).select_from(Enrollment).where(Enrollment.end_reason == "completed"))
            mails = s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.workspace_id == ws_id))
        assert done == n and mails == 2 * n and advanced == n, (done, mails, advanced)
        figure = n * STEPS / elapsed
        engine.dispose()
        baseline = _baseline(url, ws_id, n)
        db = "postgres" if args.postgres else "sqlite"
        print(json.dumps({"bench": f"journeys_enrol_{db}", "figure": round(enrol_rate), "unit": "contacts/s",
                          "contacts": n}))  # fmt: skip
        print(
            json.dumps(
                {
                    "bench": f"journeys_advance_{db}",
                    "figure": round(figure),
                    "unit": "contact-steps/s",
                    "baseline": round(baseline),
                    "ratio": round(figure / baseline, 2),
                    "figure_with_start": round(n * STEPS / (finished - cold)),
                    "workers": args.workers,
                    "contacts": n,
                }
            )
        )
    finally:
        if args.postgres:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
