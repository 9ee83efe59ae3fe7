"""Crash test: SIGKILL the journey runner at random moments while it advances 1,500 enrollments, restart it, then
send through a real SMTP server and count deliveries per cause: every step happened exactly once (no duplicate, no
lost step), and every enrollment ended."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

from sqlalchemy import func, insert, select

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.journeys import runner, service
from suppilo.journeys.models import Enrollment, EnrollmentStep
from suppilo.messaging import service as messaging_service
from suppilo.messaging.outbox_models import OutboxMessage
from tests.integration.messaging.outbox_support import SmtpSink, drain, make_sender

N = 1500
DEFINITION = {
    "name": "Crash",
    "trigger": {"type": "manual"},
    "start": "hello",
    "steps": {
        "hello": {"type": "send_email", "template": "welcome", "next": "tag"},
        "tag": {"type": "update_contact", "add_tags": ["crashed"], "next": "bye"},
        "bye": {"type": "send_email", "template": "welcome"},
    },
}
LOOP = (
    "import sys\n"
    "from suppilo.config import get_settings\n"
    "from suppilo.db.session import make_engine, make_session_factory\n"
    "from suppilo.journeys import runner\n"
    "f = make_session_factory(make_engine(get_settings().resolved_database_url()))\n"
    "while runner.run_due(f, limit=100): pass\n"
)


def test_sigkill_during_advance_neither_duplicates_nor_loses_a_step(session_factory, workspace, database_url):
    ws = workspace.id
    with session_factory() as s:
        messaging_service.install_default_templates(s, ws)
        jid = service.create_journey(s, ws, DEFINITION).id
        service.set_status(s, ws, jid, "active")
        now = utcnow()
        s.execute(
            insert(Contact),
            [
                {
                    "workspace_id": ws,
                    "email": f"k{i}@example.com",
                    "country": "US",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(N)
            ],
        )
        ids = list(s.scalars(select(Contact.id).where(Contact.workspace_id == ws)))
        assert len(service.enrol_contacts(s, ws, jid, ids, key="crash")) == N
        s.commit()

    def done_steps() -> int:
        with session_factory() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(EnrollmentStep)
                    .where(EnrollmentStep.journey_id == jid, EnrollmentStep.outcome != "entered")
                )
                or 0
            )

    env = {**os.environ, "SUPPILO_DATABASE_URL": database_url}
    rng = random.Random(20261123)
    midway = 0  # kills that found the runner with part of the work done (and part still to do)
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", LOOP], env=env, stderr=subprocess.DEVNULL)
        # Kill once the runner has started working (it imports first), after a random share of a batch or more.
        before = done_steps()
        deadline = time.monotonic() + 30
        while proc.poll() is None and done_steps() == before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))  # the runner does thousands of steps a second: kill early
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            if 0 < done_steps() < 3 * N:
                midway += 1
        proc.wait(timeout=30)
        if done_steps() == 3 * N:
            break
    assert midway >= 2, "the runner finished before it could be killed in the middle often enough"
    runner.run_due(session_factory)  # a last, clean run finishes what is left

    with session_factory() as s:
        ended = Counter(s.scalars(select(Enrollment.end_reason).where(Enrollment.journey_id == jid)))
        assert ended == {"completed": N}
        steps = Counter(
            (eid, outcome)
            for eid, outcome in s.execute(
                select(EnrollmentStep.enrollment_id, EnrollmentStep.outcome).where(EnrollmentStep.journey_id == jid)
            )
        )
        assert set(steps.values()) == {1, 2}  # 'entered' once, send_email twice, update_contact once
        assert all(steps[(eid, "send_email")] == 2 and steps[(eid, "update_contact")] == 1 for eid, _ in steps)

    with SmtpSink() as sink:
        for _ in range(5):  # drain() stops after 60 s on a busy machine; the next round goes on
            sender, transport = make_sender(session_factory, sink, ws, concurrency=8)
            asyncio.run(drain(sender, transport))
            with session_factory() as s:
                waiting = s.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.workspace_id == ws, OutboxMessage.status.in_(("queued", "deferred")))
                )
            if not waiting:
                break
        received = Counter(r.rcpt_tos[0] for r in sink.received)
    assert len(received) == N and set(received.values()) == {2}
    with session_factory() as s:
        keys = Counter(
            k.rsplit(":", 2)[1]
            for k in s.scalars(select(OutboxMessage.dedupe_key).where(OutboxMessage.workspace_id == ws))
        )
    assert keys == {"hello": N, "bye": N}
