"""Benchmark: from outbox rows to messages accepted by a local aiosmtpd server.

    .venv/bin/python bench/outbox_send.py [--messages 100000] [--connections 8] [--render-workers N] [--postgres URL]

The SMTP server runs in its own process (aiosmtpd, accepts and counts). The database is a fresh SQLite file
(or a fresh database on the PostgreSQL server of ``--postgres``) with one workspace, N contacts and N queued
marketing messages (pre-rendered HTML with a link, so consent, suppression, unsubscribe headers, link tracking and
MIME building all run). The sender builds the messages in ``--render-workers`` processes (default: the CPU count
when there is more than one core, else 0: built in the sender process; ``SUPPILO_SENDER_RENDER_WORKERS``).

figure   = outbox -> accepted, messages/s, through ``Sender.run`` (claim chunks, consent and suppression re-check,
           build, mark sending + commit, send over the pooled transport, record sent + email_sent event);
baseline = a bare aiosmtplib loop with the same number of connections sending the same number of pre-built
           messages of the same size to the same server, same run, messages/s;
ratio    = figure / baseline.
Also reported: transport_baseline = the same message through suppilo's SmtpTransport alone (no database), at most
20,000 messages, and transport_ratio = figure / transport_baseline (the sender's cost beyond its SMTP side); RSS
after 10% and at the end of the send (flat memory: streaming claims in chunks), and the 1-minute load average at
the start and the end of the run.
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
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import aiosmtplib
import sqlalchemy as sa
from sqlalchemy import insert, select

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.messaging import outbox
from suppilo.messaging.sender import Sender, SenderConfig
from suppilo.messaging.transport import SmtpConfig, SmtpTransport
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

HTML = (
    "<html><body><p>Hello {i}, our spring collection is here.</p>"
    '<p><a href="https://shop.example.fi/spring?c={i}">See the collection</a></p>'
    + "<p>"
    + "Tents, stoves and sleeping bags for the season. " * 20
    + "</p></body></html>"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(port: int, count: mp.Value, ready: mp.Event) -> None:  # type: ignore[type-arg]
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with count.get_lock():
                count.value += 1
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    while True:
        time.sleep(3600)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _messages(message: bytes | Sequence[bytes]) -> list[bytes]:
    return [message] if isinstance(message, bytes) else list(message)


async def _baseline(port: int, connections: int, n: int, message: bytes | Sequence[bytes]) -> float:
    """A bare aiosmtplib loop: ``n`` messages over ``connections`` connections, messages/s (with several pre-built
    messages, each connection goes through them in turn)."""
    messages = _messages(message)
    per = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]

    async def one(k: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for i in range(k):
            await smtp.sendmail("bounces@shop.example.fi", ["someone@example.com"], messages[i % len(messages)])
        await smtp.quit()

    started = time.perf_counter()
    await asyncio.gather(*(one(k) for k in per))
    return n / (time.perf_counter() - started)


TRANSPORT_BASELINE_MAX = 20_000


async def _baseline_transport(port: int, connections: int, n: int, message: bytes | Sequence[bytes]) -> float:
    """The same pre-built message(s) through suppilo's own SmtpTransport alone (no database, no rendering), with as
    many concurrent senders as connections, over at most TRANSPORT_BASELINE_MAX messages: what the SMTP side of the
    sender costs by itself (it drives MAIL/RCPT/DATA directly, cheaper per message than aiosmtplib's sendmail)."""
    n = min(n, TRANSPORT_BASELINE_MAX)
    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=port, start_tls=False, pool_size=connections))
    per = [n // connections + (1 if i < n % connections else 0) for i in range(connections)]

    messages = _messages(message)

    async def one(k: int) -> None:
        for i in range(k):
            await transport.send("bounces@shop.example.fi", ["someone@example.com"], messages[i % len(messages)])

    started = time.perf_counter()
    await asyncio.gather(*(one(k) for k in per))
    rate = n / (time.perf_counter() - started)
    await transport.close()
    return rate


def _setup(url: str, n: int) -> tuple[sa.Engine, int]:
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
        s.commit()
        ws_id = ws.id
    now = utcnow()
    for start in range(0, n, 10_000):
        with factory() as s:
            rows = [
                {
                    "workspace_id": ws_id,
                    "email": f"c{i}@ex{i % 50}.example.com",
                    "country": "US",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(start, min(n, start + 10_000))
            ]
            s.execute(insert(Contact), rows)
            ids = list(
                s.scalars(
                    select(Contact.id)
                    .where(Contact.workspace_id == ws_id, Contact.id > 0)
                    .order_by(Contact.id.desc())
                    .limit(len(rows))
                )
            )
            outbox.enqueue_many(
                s,
                ws_id,
                [
                    {
                        "dedupe_key": f"broadcast:1:contact:{cid}",
                        "contact_id": cid,
                        "rendered": {"subject": "Spring is here", "html": HTML.format(i=cid), "text": f"Hello {cid}"},
                    }
                    for cid in ids
                ],
            )
            s.commit()
    return engine, ws_id


async def _send(
    engine: sa.Engine, ws_id: int, port: int, connections: int, n: int, count: mp.Value, render_workers: int = 0
) -> dict[str, float]:  # type: ignore[type-arg]
    config = SenderConfig(
        secret="bench-secret-" + "x" * 32,
        public_url="https://mail.example.fi",
        from_address="news@shop.example.fi",
        envelope_from="bounces@shop.example.fi",
        concurrency=connections,
        chunk_size=500,
        flush_every=250,
        poll_interval=0.05,
        workspace_ids=(ws_id,),
        render_workers=render_workers,
    )
    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=port, start_tls=False, pool_size=connections))
    sender = Sender(make_session_factory(engine), transport, config)
    sender.warm_up()  # the workers import suppilo before the clock starts, as in a running sender
    start_count = count.value
    samples: dict[str, float] = {}

    async def watch() -> None:
        while True:
            done = count.value - start_count
            if "rss_10pct_mb" not in samples and done >= n // 10:
                samples["rss_10pct_mb"] = _rss_mb()
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    stats = await sender.run(until_empty=True)
    elapsed = time.perf_counter() - started
    samples["rss_end_mb"] = _rss_mb()
    watcher.cancel()
    await transport.close()
    sender.close()
    assert stats.sent == n, f"sent {stats.sent} of {n}"
    assert count.value - start_count == n
    samples["rate"] = n / elapsed
    return samples


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=8)
    cpus = os.cpu_count() or 1
    ap.add_argument("--render-workers", type=int, default=cpus if cpus > 1 else 0)
    ap.add_argument("--postgres", default=None, help="PostgreSQL server URL (a fresh database is created)")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]

    port = _free_port()
    count = mp.Value("q", 0)
    ready = mp.Event()
    server = mp.Process(target=_server, args=(port, count, ready), daemon=True)
    server.start()
    ready.wait(10)
    tmp = tempfile.TemporaryDirectory()
    dbname = None
    if args.postgres:
        dbname = f"bench_outbox_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
        url = sa.engine.make_url(args.postgres).set(database=dbname).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{Path(tmp.name) / 'bench.sqlite3'}"
    try:
        engine, ws_id = _setup(url, args.messages)
        # The baseline sends one pre-built message of the same shape and size as the sender's.
        from suppilo.messaging import mime

        message = mime.message_bytes(
            mime.build_message(
                outbox_id=12345,
                workspace_slug="bench",
                domain="shop.example.fi",
                from_email="news@shop.example.fi",
                to_email="someone@example.com",
                subject="Spring is here",
                text="Hello 12345",
                html=HTML.format(i=12345),
                headers={"List-Unsubscribe": "<https://mail.example.fi/u/" + "x" * 60 + ">"},
            )
        )
        baseline = asyncio.run(_baseline(port, args.connections, args.messages, message))
        transport_baseline = asyncio.run(_baseline_transport(port, args.connections, args.messages, message))
        result = asyncio.run(_send(engine, ws_id, port, args.connections, args.messages, count, args.render_workers))
        engine.dispose()
    finally:
        server.terminate()
        if dbname:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        tmp.cleanup()
    print(
        json.dumps(
            {
                "bench": "outbox_send" + ("_postgres" if args.postgres else ""),
                "figure": round(result["rate"], 1),
                "unit": "messages/s",
                "baseline": round(baseline, 1),
                "ratio": round(result["rate"] / baseline, 3),
                "transport_baseline": round(transport_baseline, 1),
                "transport_ratio": round(result["rate"] / transport_baseline, 3),
                "messages": args.messages,
                "connections": args.connections,
                "render_workers": args.render_workers,
                "rss_10pct_mb": round(result.get("rss_10pct_mb", 0.0), 1),
                "rss_end_mb": round(result["rss_end_mb"], 1),
                "load": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
