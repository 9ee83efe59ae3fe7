"""Hypothesis state machine over a real journey, the real outbox sender and a real SMTP server.

Rules: contacts sign up (the trigger event), time passes, contacts click (the awaited event), buy (the goal),
unsubscribe, bounce, and the journey is edited (a new version; those inside stay on theirs). After every rule:
at most one message per (enrollment, step visit) exists and arrives; nothing reaches a suppressed contact after it
was suppressed; every enrollment either waits (active with a due time) or has ended with a reason.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import select

from suppilo.db.base import utcnow
from suppilo.journeys import runner, service, triggers
from suppilo.journeys.models import Enrollment
from suppilo.messaging import suppression
from suppilo.messaging.outbox_models import OutboxMessage
from tests.conftest import make_workspace
from tests.integration.messaging.outbox_support import SmtpSink, drain, make_sender

from .support import contact, event, install_templates

DEFINITION = {
    "name": "Invariants",
    "trigger": {"type": "event", "event": "Signed Up"},
    "entry": {"reentry": "always"},
    "goal": {"event": "Order Completed"},
    "start": "hello",
    "steps": {
        "hello": {"type": "send_email", "template": "welcome", "next": "click"},
        "click": {
            "type": "wait_for_event",
            "event": "Clicked",
            "timeout": {"days": 2},
            "next": "thanks",
            "timeout_next": "nudge",
        },
        "thanks": {"type": "update_contact", "add_tags": ["clicked"], "next": "later"},
        "nudge": {"type": "send_email", "template": "welcome", "next": "later"},
        "later": {"type": "wait", "duration": {"days": 1}, "next": "last"},
        "last": {"type": "send_email", "template": "welcome"},
    },
}


def test_journey_invariants_hold_after_every_step(session_factory):
    with SmtpSink() as sink:

        class Machine(RuleBasedStateMachine):
            @initialize()
            def setup(self) -> None:
                self.ws = make_workspace(session_factory).id
                install_templates(session_factory, self.ws)
                with session_factory() as s:
                    self.jid = service.create_journey(s, self.ws, DEFINITION).id
                    service.set_status(s, self.ws, self.jid, "active")
                    s.commit()
                self.contacts = [
                    contact(session_factory, self.ws, f"p{i}-{self.ws}@example.com", country="US") for i in range(3)
                ]
                self.now = utcnow()
                self.suppressed_at: dict[str, int] = {}  # address -> messages received before suppression
                # Every example starts with one contact inside, so mail really goes through the SMTP server whatever
                # rules hypothesis draws (with some seeds no example drew a sign-up and nothing was sent).
                self.sign_up(0)

            def _tick(self) -> None:
                triggers.run_scanners(session_factory)
                self.now = max(self.now, utcnow())  # the simulated clock never lags the real one
                when = self.now
                runner.run_due(session_factory, now=lambda: when)
                sender, transport = make_sender(session_factory, sink, self.ws)
                asyncio.run(drain(sender, transport))

            @rule(i=st.integers(0, 2))
            def sign_up(self, i: int) -> None:
                event(session_factory, self.ws, self.contacts[i], "Signed Up", n=utcnow().isoformat())
                self._tick()

            @rule(hours=st.sampled_from([1, 12, 25, 49]))
            def time_passes(self, hours: int) -> None:
                self.now += timedelta(hours=hours)
                self._tick()

            @rule(i=st.integers(0, 2))
            def click(self, i: int) -> None:
                event(session_factory, self.ws, self.contacts[i], "Clicked", n=utcnow().isoformat())
                self._tick()

            @rule(i=st.integers(0, 2))
            def buy(self, i: int) -> None:
                event(session_factory, self.ws, self.contacts[i], "Order Completed", n=utcnow().isoformat())
                self._tick()

            @rule(i=st.integers(0, 2), reason=st.sampled_from(["unsubscribe", "hard_bounce"]))
            def suppress(self, i: int, reason: str) -> None:
                address = f"p{i}-{self.ws}@example.com"
                with session_factory() as s:
                    suppression.suppress(s, self.ws, address, reason)
                    s.commit()
                self.suppressed_at.setdefault(address, self._received(address))
                self._tick()

            @rule()
            def edit(self) -> None:
                with session_factory() as s:
                    changed = {
                        **DEFINITION,
                        "steps": {
                            **DEFINITION["steps"],
                            "later": {"type": "wait", "duration": {"hours": 30}, "next": "last"},
                        },
                    }
                    service.update_definition(s, self.ws, self.jid, changed)
                    s.commit()
                self._tick()

            def _received(self, address: str) -> int:
                return sum(1 for r in sink.received if address in r.rcpt_tos)

            @invariant()
            def one_message_per_step_visit(self) -> None:
                if not hasattr(self, "ws"):
                    return
                with session_factory() as s:
                    keys = list(
                        s.scalars(select(OutboxMessage.dedupe_key).where(OutboxMessage.workspace_id == self.ws))
                    )
                    visits = {
                        e.id: e.visits for e in s.scalars(select(Enrollment).where(Enrollment.journey_id == self.jid))
                    }
                per_step = Counter(k.rsplit(":", 1)[0] for k in keys)
                for key, n in per_step.items():
                    _, eid, step = key.split(":")
                    assert n <= visits[int(eid)].get(step, 0), (key, n)
                ids = Counter(str(r.message["Message-ID"]) for r in sink.received)
                assert all(n == 1 for n in ids.values())

            @invariant()
            def nothing_reaches_the_suppressed(self) -> None:
                if not hasattr(self, "ws"):
                    return
                for address, before in self.suppressed_at.items():
                    assert self._received(address) == before, address

            @invariant()
            def every_enrollment_waits_or_has_ended(self) -> None:
                if not hasattr(self, "ws"):
                    return
                with session_factory() as s:
                    for e in s.scalars(select(Enrollment).where(Enrollment.journey_id == self.jid)):
                        if e.status == "active":
                            assert e.due_at is not None and e.end_reason is None
                        else:
                            assert e.status == "ended" and e.end_reason in (
                                "completed",
                                "goal",
                                "failed",
                                "archived",
                                "merged",
                                "erased",
                            )
                            assert e.due_at is None and e.ended_at is not None

        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=8, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck)
            ),
        )
        assert sink.received  # the journeys really sent mail through the SMTP server
