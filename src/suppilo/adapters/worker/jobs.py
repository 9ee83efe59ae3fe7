"""The registry of periodic jobs: (name, interval in seconds, function of a session factory)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from suppilo.advocacy.tasks import run_advocacy
from suppilo.analytics.attribution_snapshots import REFRESH_SECONDS as ATTRIBUTION_REFRESH_SECONDS
from suppilo.analytics.attribution_snapshots import run_refresh as run_attribution_refresh
from suppilo.analytics.dashboard import REFRESH_SECONDS as DASHBOARD_REFRESH_SECONDS
from suppilo.analytics.dashboard import run_refresh as run_dashboard_refresh
from suppilo.commerce.tasks import run_abandoned_carts
from suppilo.deals.forecast_snapshots import REFRESH_SECONDS as FORECAST_REFRESH_SECONDS
from suppilo.deals.forecast_snapshots import run_refresh as run_forecast_refresh
from suppilo.deals.tasks import run_sales
from suppilo.journeys.lapse import run_lapse_refresh
from suppilo.loyalty.tasks import run_loyalty
from suppilo.messaging.settings import KeptSender
from suppilo.recommendations.tasks import run_recommendations
from suppilo.scoring.rfm import run_rfm
from suppilo.scoring.tasks import run_scoring
from suppilo.segments.tasks import run_live_updates, run_time_refresh

JobEntry = tuple[str, float, Any]


def run_outbox_sender(factory: sessionmaker[Session]) -> Any:
    """Drain the outbox (and queue due broadcasts) for up to 50 s; the next period continues. The sender is kept
    between periods (its claim process and render workers, when configured, are spawned once)."""
    from suppilo.config import get_settings
    from suppilo.messaging.broadcasts import run_due_broadcasts

    run_due_broadcasts(factory)
    return _OUTBOX_SENDER.run(factory, get_settings(), until_empty=True, max_seconds=50.0)


_OUTBOX_SENDER = KeptSender()


def close_jobs() -> None:
    """Release what the jobs keep between periods (the outbox sender's processes); the worker calls it as it stops."""
    _OUTBOX_SENDER.close()


def run_journeys(factory: sessionmaker[Session]) -> Any:
    """Start journeys from new events, stage changes and the clock, then advance every due enrollment."""
    from suppilo.journeys import runner, triggers

    triggers.run_scanners(factory)
    advanced = runner.run_due(factory)
    runner.run_webhooks(factory)
    return advanced


def run_journey_goals(factory: sessionmaker[Session]) -> Any:
    """End enrollments whose journey's goal filter has become true; report stuck enrollments in the log."""
    import logging

    from suppilo.journeys import runner, service

    marked = run_job_in_unit_of_work(factory, runner.check_goals)
    with factory() as session:
        late = service.stuck(session)
    if late:
        logging.getLogger("suppilo.journeys").warning(
            "%d journey enrollments are stuck (overdue > 10 min or ended as stuck); see `suppilo journeys stuck`",
            len(late),
        )
    return marked


JOBS: list[JobEntry] = [
    ("abandoned_carts", 60.0, run_abandoned_carts),
    ("send_outbox", 1.0, run_outbox_sender),
    ("segments_refresh", 300.0, run_time_refresh),
    ("segments_live", 1.0, run_live_updates),
    ("scoring", 60.0, run_scoring),
    ("journeys", 0.25, run_journeys),
    ("journey_goals", 60.0, run_journey_goals),
    ("journey_lapse_dates", 3600.0, run_lapse_refresh),
    ("loyalty", 3600.0, run_loyalty),
    ("rfm", 86400.0, run_rfm),
    ("sales", 30.0, run_sales),
    ("recommendations", 3600.0, run_recommendations),
    ("advocacy", 5.0, run_advocacy),
    ("dashboard", DASHBOARD_REFRESH_SECONDS, run_dashboard_refresh),
    ("attribution", ATTRIBUTION_REFRESH_SECONDS, run_attribution_refresh),
    ("forecast", FORECAST_REFRESH_SECONDS, run_forecast_refresh),
]


def run_job_in_unit_of_work(factory: sessionmaker[Session], fn: Any) -> Any:
    """Run ``fn(session)`` in one transaction."""
    with factory() as session:
        result = fn(session)
        session.commit()
        return result
