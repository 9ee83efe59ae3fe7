"""The registry of periodic jobs: (name, interval in seconds, function of a session factory)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from suppilo.commerce.tasks import run_abandoned_carts

JobEntry = tuple[str, float, Any]

JOBS: list[JobEntry] = [
    ("abandoned_carts", 60.0, run_abandoned_carts),
]


def run_job_in_unit_of_work(factory: sessionmaker[Session], fn: Any) -> Any:
    """Run ``fn(session)`` in one transaction."""
    with factory() as session:
        result = fn(session)
        session.commit()
        return result
