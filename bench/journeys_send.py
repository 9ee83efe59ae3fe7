"""Benchmark: a journey's send step for N contacts, from due enrollments to messages accepted by a local SMTP server.

    .venv/bin/python bench/journeys_send.py [--contacts 100000] [--connections 8] [--render-workers N] [--postgres URL]
        [--render-nice N] [--runner-first] [--claim-in-sender] [--first-names 2000]

N contacts are enrolled in a journey whose first step sends the default ``welcome`` template (rendered per contact
in the contact's language and with the contact's first name, CSS inlined, links tracked, unsubscribe headers); the
contacts have ``--first-names`` distinct first names, Zipf-distributed as in a real list. The runner (one process,
started, imported and connected before the clock, as a long-running worker is) advances the enrollments into outbox
rows while the sender (this process) drains them to an aiosmtpd server in its own process; the clock starts when the
runner is told to go. The sender renders in ``--render-workers`` processes (default: the CPU count; 0 renders in the
sender process). Claims run in a process of their own (``SenderConfig.claim_process``), which owns the render
workers; ``--claim-in-sender`` claims in a thread of the sender process instead, as before the ninth session.
``--runner-first`` (a diagnostic) lets the runner finish before the clock starts: the figure is then the sender's
alone. With BENCH_MARKS=path the bench appends when the baseline and the drain start and end (for a process monitor).

figure   = N / seconds until the server accepted the N-th message, messages/s (target >= 0.70 of the baseline);
baseline = a bare aiosmtplib loop with the same connections sending N pre-built messages to the same server, same
           run, messages/s: the messages are 50 the send step itself builds (``_sample_messages``: the same template
           for contacts set up alike, in a throwaway database), sent in turn;
ratio    = figure / baseline.
Also reported: synthetic_baseline / synthetic_ratio, the same loop sending the one synthetic message the baseline
sent up to the eighth session (as many bytes, 57 lines instead of ~70: aiosmtpd reads the DATA line by line, so
that message cost the server less than the real ones); transport_baseline / transport_ratio, the sampled messages
through suppilo's SmtpTransport alone (see outbox_send.py); message_lines, the sampled messages' line counts;
runner_seconds / runner_cpu_seconds, the runner's wall and CPU time from the start to its last batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sqlalchemy as sa
from outbox_send import _baseline, _baseline_transport, _free_port, _server
from sqlalchemy import insert, select

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.journeys import runner, service
from suppilo.messaging import service as messaging_service
from suppilo.messaging.sender import Sender, SenderConfig
from suppilo.messaging.transport import SmtpConfig, SmtpTransport
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

# Real first names (Nordic and Baltic); ``_first_names`` combines them into as many distinct ones as asked for.
_NAMES = [
    "Aino", "Eino", "Liisa", "Mikko", "Anna", "Juha", "Maria", "Antti", "Sanna", "Pekka", "Elsa", "Oskar", "Ingrid",
    "Lars", "Karin", "Sven", "Freja", "Mads", "Ida", "Rasmus", "Sofie", "Emil", "Laura", "Jānis", "Elīna", "Kristīne",
    "Andris", "Ilze", "Mārtiņš", "Līga", "Lee", "Helmi", "Väinö", "Onni", "Astrid", "Nils", "Maja", "Henrik", "Signe",
    "Pauls",
]  # fmt: skip


def _first_names(n: int, distinct: int) -> list[str]:
    """First names for ``n`` contacts: one ("Lee") when ``distinct`` is 1, else drawn from ``distinct`` names with
    Zipf weights (the r-th most common name 1/r as often as the first, as in a real list), seeded."""
    if distinct <= 1:
        return ["Lee"] * n
    base = len(_NAMES)
    names = [_NAMES[j % base] for j in range(min(distinct, base))]
    names += [f"{_NAMES[j % base]}-{_NAMES[j // base % base]}" for j in range(base, min(distinct, base * base))]
    names += [
        f"{_NAMES[j % base]}-{_NAMES[j // base % base]}-{_NAMES[j // base**2 % base]}"
        for j in range(base * base, distinct)
    ]  # beyond the pairs: triples
    return random.Random(7).choices(names, weights=[1 / (r + 1) for r in range(distinct)], k=n)


def _setup(url: str, n: int, first_names: int = 1) -> tuple[int, int]:
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as s:
        ws = workspaces_service.create_workspace(
            s,
            WorkspaceCreate(
                slug=f"bench-{uuid.uuid4().hex[:6]}", name="Pohjola Outdoor", address_line1="Mannerheimintie 1",
                postal_code="00100", city="Helsinki", address_country="FI", site_domains=["shop.example.fi"],
            ),
        )  # fmt: skip
        messaging_service.install_default_templates(s, ws.id)
        s.commit()
        ws_id = ws.id
    now = utcnow()
    langs = ["en", "fi", "sv", "da", "lv"]
    names = _first_names(n, first_names)
    for start in range(0, n, 10_000):
        with factory() as s:
            s.execute(
                insert(Contact),
                [{"workspace_id": ws_id, "email": f"c{i}@ex{i % 50}.example.com", "country": "US",
                  "first_name": names[i], "language": langs[i % 5], "created_at": now, "updated_at": now}
                 for i in range(start, min(n, start + 10_000))],
            )  # fmt: skip
            s.commit()
    with factory() as s:
        jid = service.create_journey(
            s,
            ws_id,
            {"name": "Send", "trigger": {"type": "manual"}, "start": "hello",
             "steps": {"hello": {"type": "send_email", "template": "welcome"}}},
        ).id  # fmt: skip
        service.set_status(s, ws_id, jid, "active")
        ids = list(s.scalars(select(Contact.id).where(Contact.workspace_id == ws_id)))
        for start in range(0, len(ids), 10_000):
            service.enrol_contacts(s, ws_id, jid, ids[start : start + 10_000], key="bench")
        s.commit()
    engine.dispose()
    return ws_id, jid


def _advance(url: str, ready: Any, go: Any, out: Any) -> None:
    """The runner process: imports and connects before the clock starts (as a long-running worker has), then
    advances every due enrollment and reports its wall and CPU seconds."""
    engine = make_engine(url)
    factory = make_session_factory(engine)
    with factory() as s:
        s.execute(sa.text("SELECT 1"))
        s.rollback()
    ready.set()
    go.wait()
    started, cpu = time.perf_counter(), time.process_time()
    runner.run_due(factory, max_batches=1_000_000)
    out.put((time.perf_counter() - started, time.process_time() - cpu))
    engine.dispose()


def _config(
    ws_id: int, connections: int, render_workers: int, render_nice: int | None = None, claim_process: bool = True
) -> SenderConfig:
    config = SenderConfig(
        secret="bench-secret-" + "x" * 32, public_url="https://mail.example.fi", from_address="news@shop.example.fi",
        envelope_from="bounces@shop.example.fi", concurrency=connections, chunk_size=500, flush_every=250,
        poll_interval=0.05, workspace_ids=(ws_id,), render_workers=render_workers, claim_process=claim_process,
    )  # fmt: skip
    if render_nice is not None:
        config.render_nice = render_nice
    return config


def _sample_messages(k: int = 50, first_names: int = 1) -> list[bytes]:
    """The bytes the send step itself sends, for the baselines: ``k`` contacts set up as the bench's (in a throwaway
    SQLite file), advanced by the runner and claimed by a sender (rendered, not sent). They cover the five
    languages; a message of this template has ~70 lines, and the SMTP server's work per message follows its lines."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'sample.sqlite3'}"
        ws_id, _ = _setup(url, k, first_names)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        runner.run_due(factory, max_batches=1_000)
        sender = Sender(
            factory, SmtpTransport(SmtpConfig(host="127.0.0.1", port=1)), _config(ws_id, 1, 0, claim_process=False)
        )
        messages = [p.message_bytes for p in sender.claim(k)]
        sender.close()
        engine.dispose()
    assert len(messages) == k, f"sampled {len(messages)} of {k} messages"
    return messages


async def _drain(
    url: str,
    ws_id: int,
    port: int,
    connections: int,
    n: int,
    count: mp.Value,  # type: ignore[type-arg]
    render_workers: int,
    runner_first: bool = False,
    render_nice: int | None = None,
    claim_process: bool = True,
) -> tuple[float, float, float]:
    """Messages/s from the runner's start to the N-th accepted message, and the runner's wall and CPU seconds."""
    engine = make_engine(url)
    config = _config(ws_id, connections, render_workers, render_nice, claim_process)
    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=port, start_tls=False, pool_size=connections))
    sender = Sender(make_session_factory(engine), transport, config)
    # The claim and render processes start (spawn, import suppilo) before the clock does, as in a long-running sender.
    await asyncio.to_thread(sender.warm_up)
    start_count = count.value
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ready, go = ctx.Event(), ctx.Event()
    adv = ctx.Process(target=_advance, args=(url, ready, go, out))
    adv.start()
    ready.wait()
    runner_times = None
    if runner_first:
        go.set()
        runner_times = out.get()
        adv.join()
    started = time.perf_counter()
    _mark("drain-start")
    go.set()
    while count.value - start_count < n:
        before = count.value
        runner_done = not adv.is_alive()
        await sender.run(until_empty=True, max_seconds=30)
        if runner_done and count.value == before:
            break  # nothing left to send
    elapsed = time.perf_counter() - started
    _mark("drain-end")
    runner_wall, runner_cpu = runner_times or out.get()
    adv.join()
    sender.close()
    await transport.close()
    engine.dispose()
    assert count.value - start_count == n, f"accepted {count.value - start_count} of {n}"
    return n / elapsed, runner_wall, runner_cpu


def _mark(what: str) -> None:
    """With BENCH_MARKS=path, append when a phase starts or ends (``<unix time> baseline-start`` ...): lets a process
    monitor sampling /proc tell the baseline's CPU from the drain's."""
    if os.environ.get("BENCH_MARKS"):
        with open(os.environ["BENCH_MARKS"], "a") as fh:
            fh.write(f"{time.time()} {what}\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contacts", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--render-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--postgres", default=None)
    ap.add_argument(
        "--runner-first",
        action="store_true",
        help="diagnostic: the runner advances every enrollment before the clock starts (figure = the sender alone)",
    )
    ap.add_argument(
        "--render-nice", type=int, default=None, help="the render workers' nice (default: SenderConfig.render_nice)"
    )
    ap.add_argument(
        "--claim-in-sender",
        action="store_true",
        help="claims run in a thread of the sender process (SenderConfig.claim_process=False), as before the ninth "
        "session",
    )
    ap.add_argument(
        "--first-names",
        type=int,
        default=2000,
        help="distinct first names among the contacts, drawn with Zipf weights as in a real list (default 2,000; 1: "
        "every contact is Lee, as up to the ninth session, and messages differ only in their links and language)",
    )
    args = ap.parse_args()
    port = _free_port()
    count = mp.Value("q", 0)
    ready = mp.Event()
    server = mp.Process(target=_server, args=(port, count, ready), daemon=True)
    server.start()
    ready.wait(10)
    if args.postgres:
        name = f"bench_jsend_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    else:
        tmp = tempfile.mkdtemp()
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
    try:
        ws_id, _ = _setup(url, args.contacts, args.first_names)
        from suppilo.messaging import mime

        messages = _sample_messages(first_names=args.first_names)
        # the message the baselines sent up to the eighth session: about as many bytes, fewer lines (57 vs ~70)
        synthetic = mime.message_bytes(
            mime.build_message(
                outbox_id=12345, workspace_slug="bench", domain="shop.example.fi", from_email="news@shop.example.fi",
                to_email="someone@example.com", subject="Welcome to Pohjola Outdoor", text="Hello Lee " * 60,
                html="<html><body>" + "<p>Welcome to the shop, Lee.</p>" * 60 + "</body></html>",
                headers={"List-Unsubscribe": "<https://mail.example.fi/u/" + "x" * 60 + ">"},
            )
        )  # fmt: skip
        _mark("baseline-start")
        baseline = asyncio.run(_baseline(port, args.connections, args.contacts, messages))
        _mark("baseline-end")
        synthetic_baseline = asyncio.run(_baseline(port, args.connections, args.contacts, synthetic))
        transport_baseline = asyncio.run(_baseline_transport(port, args.connections, args.contacts, messages))
        figure, runner_wall, runner_cpu = asyncio.run(
            _drain(
                url,
                ws_id,
                port,
                args.connections,
                args.contacts,
                count,
                args.render_workers,
                args.runner_first,
                args.render_nice,
                not args.claim_in_sender,
            )
        )
    finally:
        server.terminate()
        if args.postgres:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            shutil.rmtree(tmp, ignore_errors=True)  # the database of N contacts (~170 MB at 100,000)
    db = "postgres" if args.postgres else "sqlite"
    print(json.dumps({"bench": f"journeys_send_{db}", "figure": round(figure, 1), "unit": "messages/s",
                      "baseline": round(baseline, 1), "ratio": round(figure / baseline, 3),
                      "synthetic_baseline": round(synthetic_baseline, 1),
                      "synthetic_ratio": round(figure / synthetic_baseline, 3),
                      "message_lines": sorted({m.count(b"\n") for m in messages}),
                      "transport_baseline": round(transport_baseline, 1),
                      "transport_ratio": round(figure / transport_baseline, 3),
                      "contacts": args.contacts, "first_names": args.first_names, "connections": args.connections,
                      "render_workers": args.render_workers, "runner_first": args.runner_first,
                      "claim_process": not args.claim_in_sender,
                      "render_nice": SenderConfig.render_nice if args.render_nice is None else args.render_nice,
                      "runner_seconds": round(runner_wall, 2), "runner_cpu_seconds": round(runner_cpu, 2),
                      "load": os.getloadavg()[0]}))  # fmt: skip


if __name__ == "__main__":
    main()
