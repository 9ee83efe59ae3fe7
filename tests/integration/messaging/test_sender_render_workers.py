"""The sender with render worker processes (``SenderConfig.render_workers``) sends exactly the bytes it sends when it
renders in its own process, each message once, and a message that cannot be built fails alone."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from datetime import timedelta

from sqlalchemy import update

from suppilo.db.base import utcnow
from suppilo.messaging import outbox
from suppilo.messaging import service as messaging_service
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.messaging.sender import Sender
from tests.integration.messaging.outbox_support import (
    RENDERED,
    SmtpSink,
    add_contact,
    assert_processes_gone,
    drain,
    make_sender,
    process_alive,
)

# The MIME boundary is a per-process random prefix plus a counter: the only part that differs between processes.
_BOUNDARY = re.compile(rb"=_suppilo_[0-9a-f]{16}_\d+_\d+")
LANGUAGES = ("en", "fi", "sv", "da", "lv")


def _send(factory, ws_id, at, **overrides):
    """Drain the workspace's outbox with the clock fixed at ``at``; the received messages by Message-ID."""
    with SmtpSink() as sink:
        sender, transport = make_sender(factory, sink, ws_id, chunk_size=120, **overrides)
        sender.close()
        sender = Sender(factory, transport, sender.config, clock=lambda: at)
        # The claim process (when asked for) really runs: the test database is one other processes can open.
        assert (sender._claim_pool is not None) == bool(overrides.get("claim_process"))
        try:
            stats = asyncio.run(drain(sender, transport))
        finally:
            sender.close()
        received = {m.message["Message-ID"]: _BOUNDARY.sub(b"BOUNDARY", m.data) for m in sink.received}
    assert len(received) == len(sink.received)  # each message once
    return stats, received


def test_render_workers_send_the_same_bytes_as_the_sender_process(session_factory, workspace):
    ws = workspace.id
    with session_factory() as s:
        messaging_service.install_default_templates(s, ws)
        s.commit()
    ids = [
        add_contact(
            session_factory, ws, f"r{i}@ex{i % 7}.example.com", country="US", first_name=f"Åsa \"{i}\" & Co",
            language=LANGUAGES[i % 5],
        )
        for i in range(300)
    ]  # fmt: skip
    with session_factory() as s:
        rows = [{"dedupe_key": f"w:{cid}", "contact_id": cid, "template_key": "welcome"} for cid in ids[:290]]
        rows += [{"dedupe_key": f"r:{cid}", "contact_id": cid, "rendered": RENDERED} for cid in ids[290:]]
        outbox.enqueue_many(s, ws, rows)
        bad = outbox.enqueue(
            s, ws, dedupe_key="bad", contact_id=ids[0], kind="transactional", topic="transactional",
            rendered={**RENDERED, "subject": "Hello\r\nBcc: everyone@example.com"},
        )  # fmt: skip
        missing = outbox.enqueue(s, ws, dedupe_key="missing", contact_id=ids[1], template_key="no_such_template")
        s.commit()
        bad_id, missing_id = bad.id, missing.id
    at = utcnow() + timedelta(minutes=1)

    stats, with_workers = _send(session_factory, ws, at, render_workers=2)
    assert stats.sent == 300 and stats.failed == 2
    with session_factory() as s:
        assert outbox.counts(s, ws) == {"sent": 300, "failed": 2}
        failed = {r.id: r.last_error for r in s.query(OutboxMessage).filter_by(workspace_id=ws, status="failed")}
    assert "cannot contain CR, LF or NUL" in failed[bad_id]  # failed in a worker process
    assert "no_such_template" in failed[missing_id]  # failed in the claim
    # The same rows again, rendered in the sender process at the same moment: byte-identical messages.
    _requeue(session_factory, ws, at)
    stats, in_process = _send(session_factory, ws, at, render_workers=0)
    assert stats.sent == 300
    assert in_process.keys() == with_workers.keys()
    assert all(in_process[k] == with_workers[k] for k in in_process)
    sample = next(v for v in with_workers.values() if b"Subject: Welcome" in v or b"welcome" in v.lower())
    assert b"/u/" in sample and b"List-Unsubscribe" in sample
    # And claimed in a process of its own (at the sender's moment, which the sender process passes along), the
    # render workers being that process's: the same bytes again, and the claim's counts reach the sender's.
    _requeue(session_factory, ws, at, statuses=("sent", "failed"))
    stats, claimed_apart = _send(session_factory, ws, at, render_workers=2, claim_process=True)
    assert (stats.claimed, stats.sent, stats.failed) == (300, 300, 2)
    assert claimed_apart.keys() == in_process.keys()
    assert all(claimed_apart[k] == in_process[k] for k in in_process)
    with session_factory() as s:
        assert outbox.counts(s, ws) == {"sent": 300, "failed": 2}


def _requeue(session_factory, ws, at, statuses=("sent",)):
    with session_factory() as s:
        s.execute(
            update(OutboxMessage)
            .where(OutboxMessage.workspace_id == ws, OutboxMessage.status.in_(statuses))
            .values(status="queued", attempts=0, next_attempt_at=at - timedelta(seconds=1))
        )
        s.commit()


_KILLED_SENDER = """
import sys
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from suppilo.messaging.sender import Sender, SenderConfig

config = SenderConfig(secret="s" * 40, public_url="https://mail.example.fi", from_address="a@example.fi",
                      render_workers=2)
sender = Sender(sessionmaker(bind=create_engine("sqlite://")), None, config)
sender.warm_up()
print(" ".join(str(pid) for pid in sender._render_pool._processes), flush=True)
sys.stdin.read()
"""


def test_render_workers_exit_when_the_sender_is_killed():
    """A SIGKILLed sender leaves no render processes behind (they hold no claim: its rows become uncertain as
    before, through the lease)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SENDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
    finally:
        _kill(proc)
    assert_processes_gone(pids)


_KILLED_CLAIMING_SENDER = """
import sys
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker
from suppilo.messaging.sender import Sender, SenderConfig, _claim_process_pids

config = SenderConfig(secret="s" * 40, public_url="https://mail.example.fi", from_address="a@example.fi",
                      render_workers=2, claim_process=True)
sender = Sender(sessionmaker(bind=create_engine("sqlite:///" + sys.argv[1])), None, config)
sender.warm_up()
print(" ".join(str(pid) for pid in sender._claim_pool.submit(_claim_process_pids).result()), flush=True)
sys.stdin.read()
"""


def test_the_claim_process_and_its_render_workers_exit_when_the_sender_is_killed(tmp_path):
    """With ``claim_process``, the claim process runs at the sender's priority (it takes the database's write
    lock), its render workers below it; a SIGKILLed sender leaves none of them behind."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CLAIMING_SENDER, str(tmp_path / "claims.sqlite3")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3 and all(process_alive(pid) for pid in pids)
        sender_nice = _nice(proc.pid)
        expected = [sender_nice, *[min(19, sender_nice + 10)] * 2]
        deadline = time.monotonic() + 30  # a worker lowers its priority as it starts, before it takes any work
        while [_nice(pid) for pid in pids] != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [_nice(pid) for pid in pids] == expected
    finally:
        _kill(proc)
    assert_processes_gone(pids)


def test_an_in_memory_database_keeps_the_claim_in_the_sender_process():
    """Another process cannot open an in-memory SQLite database: the claim stays in a thread."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from suppilo.messaging.sender import SenderConfig

    config = SenderConfig(
        secret="s" * 40, public_url="https://mail.example.fi", from_address="a@example.fi", claim_process=True
    )
    sender = Sender(sessionmaker(bind=create_engine("sqlite://")), None, config)
    try:
        assert sender._claim_pool is None
    finally:
        sender.close()


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def _nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(") ", 1)[1].split()[16])


def test_render_workers_run_below_the_senders_cpu_priority():
    """Rendering yields the CPU to the sender's event loop (and a relay on the same cores) when both want it."""
    import os

    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from suppilo.messaging.sender import SenderConfig

    for nice in (7, 0):
        config = SenderConfig(
            secret="s" * 40, public_url="https://mail.example.fi", from_address="a@example.fi", render_workers=1,
            render_nice=nice,
        )  # fmt: skip
        sender = Sender(sessionmaker(bind=create_engine("sqlite://")), None, config)
        try:
            sender.warm_up()
            assert sender._render_pool.submit(os.nice, 0).result(timeout=60) == min(19, os.nice(0) + nice)
        finally:
            sender.close()
