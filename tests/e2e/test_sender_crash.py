"""Crash test: SIGKILL the sender process at random moments during a real 5,000-message SMTP send, restart it,
and count per Message-ID what the server received: at most once each, and every row ends final."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

from sqlalchemy import insert, select

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.messaging import outbox
from suppilo.messaging.outbox_models import OutboxMessage
from tests.integration.messaging.outbox_support import RENDERED, SmtpSink

N = 5000


def _sender_env(database_url: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SUPPILO_DATABASE_URL=database_url,
        SUPPILO_SMTP_HOST="127.0.0.1",
        SUPPILO_SMTP_PORT=str(port),
        SUPPILO_SMTP_STARTTLS="false",
        SUPPILO_SECRET_KEY="crash-test-secret-" + "y" * 32,
        SUPPILO_SENDER_LEASE_SECONDS="1",
        SUPPILO_SENDER_CONCURRENCY="8",
        SUPPILO_SENDER_CHUNK_SIZE="100",
        SUPPILO_MAIL_FROM="news@shop.example.fi",
    )
    return env


def _start(env: dict[str, str], ws: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "suppilo.adapters.cli.main",
            "outbox",
            "send",
            "--until-empty",
            "--json",
            "--workspace-id",
            str(ws),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )


def test_sigkill_during_send_never_duplicates_and_leaves_every_row_final(session_factory, workspace, database_url):
    ws = workspace.id
    now = utcnow()
    with session_factory() as s:
        s.execute(
            insert(Contact),
            [
                {
                    "workspace_id": ws,
                    "email": f"c{i}@example.com",
                    "country": "US",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(N)
            ],
        )
        ids = list(s.scalars(select(Contact.id).where(Contact.workspace_id == ws).order_by(Contact.id)))
        outbox.enqueue_many(
            s,
            ws,
            [
                {
                    "dedupe_key": f"broadcast:1:contact:{cid}",
                    "contact_id": cid,
                    "rendered": RENDERED,
                    "kind": "transactional",
                }
                for cid in ids
            ],
        )
        s.commit()
    rng = random.Random(20240601)
    with SmtpSink() as sink:
        env = _sender_env(database_url, sink.port)
        kills = 0
        for _ in range(5):
            proc = _start(env, ws)
            # Wait until it is really sending (or done), then kill at a random moment.
            mark = len(sink.received)
            deadline = time.monotonic() + 20
            while len(sink.received) == mark and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.8))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait(timeout=30)
        final = _start(env, ws)
        out, _ = final.communicate(timeout=60)
        assert final.returncode == 0, out
    assert kills >= 3, "the sender finished before it could be killed often enough"

    received = Counter()
    for r in sink.received:
        received[str(r.message["Message-ID"]).strip()] += 1
    assert received and max(received.values()) == 1, "a message reached the server twice"

    with session_factory() as s:
        rows = s.execute(
            select(OutboxMessage.status, OutboxMessage.message_id).where(OutboxMessage.workspace_id == ws)
        ).all()
        uncertain_reported = outbox.list_uncertain(s, ws, limit=N)
    statuses = Counter(status for status, _ in rows)
    if not set(statuses) <= {"sent", "uncertain"}:
        with session_factory() as s:
            errors = Counter(
                s.scalars(
                    select(OutboxMessage.last_error).where(
                        OutboxMessage.workspace_id == ws, OutboxMessage.status.not_in(("sent", "uncertain"))
                    )
                )
            )
        raise AssertionError(f"rows not final as sent/uncertain: {statuses}; their errors: {errors.most_common(5)}")
    assert sum(statuses.values()) == N
    # Every row marked sent was received exactly once; nothing unknown to the outbox was received.
    sent_ids = {mid for status, mid in rows if status == "sent"}
    assert all(received[mid] == 1 for mid in sent_ids)
    assert set(received) <= {mid for _, mid in rows}
    # Uncertain rows are reported, and none was resent blindly (each at most once, checked above).
    assert len(uncertain_reported) == statuses.get("uncertain", 0)
    lost = [mid for status, mid in rows if status == "uncertain" and received[mid] == 0]
    assert len(sent_ids) + (statuses.get("uncertain", 0) - len(lost)) == len(received)
