"""Helpers for the journey tests: a workspace with the default templates, contacts, events and a clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.events import service as events_service
from suppilo.journeys import runner, service, triggers
from suppilo.journeys.models import Enrollment, EnrollmentStep
from suppilo.messaging import service as messaging_service
from suppilo.messaging.outbox_models import OutboxMessage


def install_templates(factory: sessionmaker[Session], workspace_id: int) -> None:
    with factory() as s:
        messaging_service.install_default_templates(s, workspace_id)
        s.commit()


def contact(factory: sessionmaker[Session], workspace_id: int, email: str, **attrs: Any) -> int:
    with factory() as s:
        now = utcnow()
        c = Contact(workspace_id=workspace_id, email=email, created_at=now, updated_at=now, **attrs)
        s.add(c)
        s.commit()
        return c.id


def journey(
    factory: sessionmaker[Session], workspace_id: int, definition: dict[str, Any], *, activate: bool = True
) -> int:
    with factory() as s:
        j = service.create_journey(s, workspace_id, definition, actor="test")
        if activate:
            service.set_status(s, workspace_id, j.id, "active")
        s.commit()
        return j.id


def event(factory: sessionmaker[Session], workspace_id: int, contact_id: int, name: str, **props: Any) -> int | None:
    with factory() as s:
        eid = events_service.record_event(s, workspace_id, contact_id, name, props, utcnow())
        s.commit()
        return eid


def scan(factory: sessionmaker[Session]) -> None:
    triggers.run_scanners(factory)


def tick(factory: sessionmaker[Session], at: datetime | None = None) -> int:
    """Scan triggers and advance everything due at ``at`` (default now)."""
    scan(factory)
    when = at or utcnow()
    return runner.run_due(factory, now=lambda: when)


def later(**kw: float) -> datetime:
    return utcnow() + timedelta(**kw)


def enrollments(factory: sessionmaker[Session], journey_id: int) -> list[Enrollment]:
    with factory() as s:
        rows = list(s.scalars(select(Enrollment).where(Enrollment.journey_id == journey_id).order_by(Enrollment.id)))
        s.expunge_all()
        return rows


def messages(factory: sessionmaker[Session], workspace_id: int, contact_id: int | None = None) -> list[OutboxMessage]:
    with factory() as s:
        q = select(OutboxMessage).where(OutboxMessage.workspace_id == workspace_id)
        if contact_id is not None:
            q = q.where(OutboxMessage.contact_id == contact_id)
        rows = list(s.scalars(q.order_by(OutboxMessage.id)))
        s.expunge_all()
        return rows


def timeline(factory: sessionmaker[Session], enrollment_id: int) -> list[tuple[str, str]]:
    with factory() as s:
        return [
            (r.step_id, r.outcome)
            for r in s.scalars(
                select(EnrollmentStep).where(EnrollmentStep.enrollment_id == enrollment_id).order_by(EnrollmentStep.id)
            )
        ]
