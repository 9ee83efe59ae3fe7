"""Two runners race over the same due work: every step is carried out once (PostgreSQL: FOR UPDATE SKIP LOCKED;
SQLite: writers take turns)."""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import func, insert, select

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.journeys import runner, service
from suppilo.journeys.models import Enrollment, EnrollmentStep
from suppilo.messaging.outbox_models import OutboxMessage

from .support import install_templates, journey

DEFINITION = {
    "name": "Race",
    "trigger": {"type": "manual"},
    "start": "hello",
    "steps": {
        "hello": {"type": "send_email", "template": "welcome", "next": "tag"},
        "tag": {"type": "update_contact", "add_tags": ["raced"], "next": "bye"},
        "bye": {"type": "send_email", "template": "welcome"},
    },
}


def test_two_runners_never_advance_the_same_enrollment_twice(session_factory, workspace):
    install_templates(session_factory, workspace.id)
    jid = journey(session_factory, workspace.id, DEFINITION)
    now = utcnow()
    with session_factory() as s:
        s.execute(
            insert(Contact),
            [
                {"workspace_id": workspace.id, "email": f"r{i}@example.com", "created_at": now, "updated_at": now}
                for i in range(400)
            ],
        )
        ids = list(s.scalars(select(Contact.id).where(Contact.workspace_id == workspace.id)))
        assert len(service.enrol_contacts(s, workspace.id, jid, ids, key="race")) == 400
        s.commit()

    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def work() -> None:
        try:
            barrier.wait()
            runner.run_due(session_factory, limit=25)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors

    with session_factory() as s:
        statuses = Counter(s.scalars(select(Enrollment.end_reason).where(Enrollment.journey_id == jid)))
        assert statuses == {"completed": 400}
        keys = list(s.scalars(select(OutboxMessage.dedupe_key).where(OutboxMessage.workspace_id == workspace.id)))
        assert len(keys) == 800 == len(set(keys))
        per_enrollment = Counter(
            s.scalars(
                select(EnrollmentStep.enrollment_id).where(
                    EnrollmentStep.journey_id == jid, EnrollmentStep.outcome == "send_email"
                )
            )
        )
        assert set(per_enrollment.values()) == {2}
        tags = s.scalar(
            select(func.count())
            .select_from(EnrollmentStep)
            .where(EnrollmentStep.outcome == "update_contact", EnrollmentStep.journey_id == jid)
        )
        assert tags == 400
