"""Benchmark: from an incoming event to its triggered email accepted by a local SMTP server.

    .venv/bin/python bench/journeys_latency.py [--events 200] [--postgres URL]

The worker runs as it does in production (``Worker`` with every default job, each in its own thread: trigger
scanners and the journey runner every 0.25 s, the outbox sender every 1 s). A journey "Signed Up" -> welcome mail is
on. Events are recorded one at a time (``events_service.record_event`` + commit, what the ingest API does), 40 ms
apart; an aiosmtpd server in another process stamps each message's arrival.

figure   = p95 of (accepted by the SMTP server - event committed), seconds (target <= 2 s);
baseline = p95 of a bare aiosmtplib send of a message of the same size to the same server, same run, seconds;
also printed: p50 and max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import aiosmtplib
import sqlalchemy as sa
from sqlalchemy import insert, select

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(port: int, arrivals: mp.Queue, ready: mp.Event) -> None:  # type: ignore[type-arg]
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            arrivals.put((envelope.rcpt_tos[0], time.time()))
            return "250 OK"

    Controller(Handler(), hostname="127.0.0.1", port=port).start()
    ready.set()
    while True:
        time.sleep(3600)


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _baseline(port: int, n: int) -> list[float]:
    body = b"Subject: hi\r\nFrom: a@shop.example.fi\r\nTo: b@example.com\r\n\r\n" + (b"x" * 70 + b"\r\n") * 85
    out = []
    for _ in range(n):
        t = time.time()
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        await smtp.sendmail("a@shop.example.fi", ["b@example.com"], body)
        await smtp.quit()
        out.append(time.time() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--postgres", default=None)
    args = ap.parse_args()
    port = _free_port()
    ctx = mp.get_context("spawn")
    arrivals: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    ready = ctx.Event()
    server = ctx.Process(target=_server, args=(port, arrivals, ready), daemon=True)
    server.start()
    ready.wait(10)
    os.environ.update(
        SUPPILO_SMTP_HOST="127.0.0.1",
        SUPPILO_SMTP_PORT=str(port),
        SUPPILO_SMTP_STARTTLS="false",
        SUPPILO_SECRET_KEY="bench-secret-" + "z" * 32,
        SUPPILO_MAIL_FROM="news@shop.example.fi",
    )
    if args.postgres:
        name = f"bench_latency_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}"
    os.environ["SUPPILO_DATABASE_URL"] = url
    from suppilo.adapters.worker.runner import Worker, default_jobs
    from suppilo.events import service as events_service
    from suppilo.journeys import service
    from suppilo.messaging import service as messaging_service
    from suppilo.workspaces import service as workspaces_service
    from suppilo.workspaces.schemas import WorkspaceCreate

    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    n = args.events
    with factory() as s:
        ws = workspaces_service.create_workspace(
            s,
            WorkspaceCreate(
                slug=f"bench-{uuid.uuid4().hex[:6]}", name="Pohjola Outdoor", address_line1="Mannerheimintie 1",
                postal_code="00100", city="Helsinki", address_country="FI",
            ),
        )  # fmt: skip
        messaging_service.install_default_templates(s, ws.id)
        now = utcnow()
        s.execute(
            insert(Contact),
            [{"workspace_id": ws.id, "email": f"l{i}@example.com", "country": "US", "first_name": "Lee",
              "created_at": now, "updated_at": now} for i in range(n)],
        )  # fmt: skip
        ids = list(s.scalars(select(Contact.id).where(Contact.workspace_id == ws.id).order_by(Contact.id)))
        j = service.create_journey(
            s,
            ws.id,
            {
                "name": "Latency",
                "trigger": {"type": "event", "event": "Signed Up"},
                "start": "hello",
                "steps": {"hello": {"type": "send_email", "template": "welcome"}},
            },
        )
        service.set_status(s, ws.id, j.id, "active")
        s.commit()
        ws_id = ws.id
    worker = Worker(factory, default_jobs())
    worker.start()
    sent_at: dict[str, float] = {}
    try:
        time.sleep(1.0)
        for i, cid in enumerate(ids):
            with factory() as s:
                events_service.record_event(s, ws_id, cid, "Signed Up", {"i": i}, utcnow())
                s.commit()
            sent_at[f"l{i}@example.com"] = time.time()
            time.sleep(0.04)
        got: dict[str, float] = {}
        deadline = time.time() + 60
        while len(got) < n and time.time() < deadline:
            try:
                rcpt, at = arrivals.get(timeout=1)
                got[rcpt] = at
            except Exception:
                continue
    finally:
        worker.stop()
    latencies = [got[a] - sent_at[a] for a in sent_at if a in got]
    base = asyncio.run(_baseline(port, 50))
    db = "postgres" if args.postgres else "sqlite"
    print(
        json.dumps(
            {
                "bench": f"journeys_event_to_smtp_{db}",
                "figure": round(_p(latencies, 0.95), 3),
                "unit": "s (p95)",
                "baseline": round(_p(base, 0.95), 4),
                "ratio": round(_p(latencies, 0.95) / _p(base, 0.95), 1),
                "p50": round(_p(latencies, 0.5), 3),
                "max": round(max(latencies), 3),
                "delivered": len(latencies),
                "events": n,
            }
        )
    )
    engine.dispose()
    server.terminate()
    if args.postgres:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
