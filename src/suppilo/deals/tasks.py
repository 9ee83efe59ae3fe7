"""The sales worker job: owner assignment on the trigger stage, task reminders, proposal expiry."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from suppilo.deals import assignment, proposals, reminders


def run_sales(factory: sessionmaker[Session]) -> dict[str, int]:
    """One pass; each part in its own transaction, so a failing part does not hold back the others."""
    out: dict[str, int] = {}
    for name, fn in (
        ("assigned", assignment.run_assignment_scan),
        ("reminders", reminders.queue_due_reminders),
        ("expired", proposals.expire_proposals),
    ):
        with factory() as session:
            out[name] = fn(session)
            session.commit()
    return out
