"""The sales worker job: owner assignment on the trigger stage, task reminders, proposal expiry."""

from __future__ import annotations

import time

from sqlalchemy.orm import Session, sessionmaker

from suppilo.deals import assignment, proposals, reminders

SCAN_BATCH = 2000
MAX_SECONDS = 20.0


def run_sales(factory: sessionmaker[Session]) -> dict[str, int]:
    """One pass; each part in its own transaction(s), so a failing part does not hold back the others. The stage
    scan reads batches (one transaction each) until it has caught up or ``MAX_SECONDS`` have passed."""
    out = {"assigned": 0}
    started = time.monotonic()
    while True:
        with factory() as session:
            read, assigned = assignment.scan_batch(session, limit=SCAN_BATCH)
            session.commit()
        out["assigned"] += assigned
        if read < SCAN_BATCH or time.monotonic() - started > MAX_SECONDS:
            break
    for name, fn in (("reminders", reminders.queue_due_reminders), ("expired", proposals.expire_proposals)):
        with factory() as session:
            out[name] = fn(session)
            session.commit()
    return out
