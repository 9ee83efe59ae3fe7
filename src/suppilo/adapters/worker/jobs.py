"""The registry of periodic jobs: (name, interval in seconds, function of a session factory)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from suppilo.commerce.tasks import run_abandoned_carts
from suppilo.segments.tasks import run_time_refresh

JobEntry = tuple[str, float, Any]


def run_outbox_sender(factory: sessionmaker[Session]) -> Any:
    """Drain the outbox (and queue due broadcasts) for up to 50 s; the next period continues."""
    import asyncio

    from suppilo.adapters.cli.outbox import run_sender
    from suppilo.config import get_settings
    from suppilo.messaging.broadcasts import run_due_broadcasts

    run_due_broadcasts(factory)
    return asyncio.run(run_sender(factory, get_settings(), until_empty=True, max_seconds=50.0))


JOBS: list[JobEntry] = [
    ("abandoned_carts", 60.0, run_abandoned_carts),
    ("send_outbox", 5.0, run_outbox_sender),
    ("segments_refresh", 300.0, run_time_refresh),
]


def run_job_in_unit_of_work(factory: sessionmaker[Session], fn: Any) -> Any:
    """Run ``fn(session)`` in one transaction."""
    with factory() as session:
        result = fn(session)
        session.commit()
        return result
