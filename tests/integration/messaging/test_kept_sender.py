"""The worker's ``send_outbox`` job runs every second: its sender is kept between periods, so a configured claim
process and its render workers are spawned once and reused (not once per period), each period sends what is due
exactly once and reports its own figures, a changed setting replaces the processes, and stopping the worker ends
them."""

from __future__ import annotations

import pytest

from suppilo.adapters.worker import jobs as worker_jobs
from suppilo.adapters.worker.runner import Worker
from suppilo.config import Settings
from suppilo.messaging import outbox
from suppilo.messaging.sender import _claim_process_pids
from suppilo.messaging.settings import KeptSender
from tests.integration.messaging.outbox_support import (
    RENDERED,
    SmtpSink,
    add_contact,
    assert_processes_gone,
    process_alive,
)


def _queue(factory, ws: int, prefix: str, n: int) -> None:
    ids = [add_contact(factory, ws, f"{prefix}{i}@kept.example.com", country="US") for i in range(n)]
    with factory() as s:
        outbox.enqueue_many(
            s, ws, [{"dedupe_key": f"{prefix}:{cid}", "contact_id": cid, "rendered": RENDERED} for cid in ids]
        )
        s.commit()


def _pids(kept: KeptSender) -> list[int]:
    sender = kept._sender
    assert sender is not None and sender._claim_pool is not None
    return list(sender._claim_pool.submit(_claim_process_pids).result(timeout=60))


@pytest.fixture
def claiming(monkeypatch, tmp_path):
    """Settings for a sender with a claim process and one render worker, sending to a real SMTP server."""
    monkeypatch.setenv("SUPPILO_SENDER_CLAIM_PROCESS", "true")
    monkeypatch.setenv("SUPPILO_SENDER_RENDER_WORKERS", "1")
    with SmtpSink() as sink:
        settings = Settings(
            data_dir=tmp_path,
            secret_key="k" * 40,
            public_url="https://mail.example.fi",
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
            smtp_starttls=False,
        )
        yield settings, sink


def test_the_kept_sender_reuses_its_processes_and_sends_each_message_once(
    session_factory, workspace, claiming, monkeypatch
) -> None:
    settings, sink = claiming
    ws = workspace.id
    kept = KeptSender()
    try:
        _queue(session_factory, ws, "first", 20)
        stats = kept.run(session_factory, settings, until_empty=True, max_seconds=60, workspace_ids=(ws,))
        assert (stats.claimed, stats.sent) == (20, 20)
        pids = _pids(kept)
        assert len(pids) == 2  # the claim process and its render worker
        # A period with nothing due claims nothing, reports nothing and spawns nothing.
        stats = kept.run(session_factory, settings, until_empty=True, max_seconds=60, workspace_ids=(ws,))
        assert (stats.claimed, stats.sent) == (0, 0)
        _queue(session_factory, ws, "second", 5)
        stats = kept.run(session_factory, settings, until_empty=True, max_seconds=60, workspace_ids=(ws,))
        assert (stats.claimed, stats.sent) == (5, 5)  # this period's figures, not the sender's total
        assert _pids(kept) == pids and all(process_alive(pid) for pid in pids)
        assert len(sink.received) == 25 and set(sink.by_message_id().values()) == {1}
        with session_factory() as s:
            assert outbox.counts(s, ws) == {"sent": 25}
        # Another setting (two render workers now): the old processes end, new ones send.
        monkeypatch.setenv("SUPPILO_SENDER_RENDER_WORKERS", "2")
        _queue(session_factory, ws, "third", 3)
        stats = kept.run(session_factory, settings, until_empty=True, max_seconds=60, workspace_ids=(ws,))
        assert stats.sent == 3
        assert_processes_gone(pids)
        replaced = _pids(kept)
        assert len(replaced) == 3 and not set(replaced) & set(pids)
    finally:
        kept.close()
    assert_processes_gone(replaced)
    assert len(sink.received) == 28 and set(sink.by_message_id().values()) == {1}


def test_stopping_the_worker_ends_the_kept_senders_processes(session_factory, workspace, claiming) -> None:
    settings, _sink = claiming
    ws = workspace.id
    kept = worker_jobs._OUTBOX_SENDER
    try:
        kept.run(session_factory, settings, until_empty=True, max_seconds=60, workspace_ids=(ws,))
        pids = _pids(kept)
        worker = Worker(session_factory, [])
        worker.start()
        worker.stop()
        assert_processes_gone(pids)
        assert kept._sender is None
    finally:
        kept.close()
