"""A snapshot refresh (the dashboard's and the forecast's, by a web page's background thread or by the worker's job)
computes in a read-only transaction and writes its row in a short one: on SQLite, where a write transaction holds
the database's write lock from its start, a write (tracking, an import) made while a slow refresh computes finishes at
once instead of waiting for the computation. The page then shows the figures the refresh stored."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from suppilo.adapters.web import background
from suppilo.analytics import dashboard as dashboard_snaps
from suppilo.contacts.models import Contact
from suppilo.deals import forecast_snapshots
from suppilo.deals import service as deals_service
from suppilo.deals.schemas import DealCreate
from tests.adapters.test_web_shell import login, make_user
from tests.adapters.web_settle import COMPUTING, settled

SLOW_SECONDS = 5.0


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    yield
    client.cookies.clear()


def slowed(monkeypatch: pytest.MonkeyPatch, module: Any) -> threading.Event:
    """Make ``module.compute`` (the real computation) take ``SLOW_SECONDS`` longer; the event is set once it has
    computed and starts waiting."""
    computing = threading.Event()
    compute = module.compute

    def slow(*args: Any, **kwargs: Any) -> Any:
        result = compute(*args, **kwargs)
        computing.set()
        time.sleep(SLOW_SECONDS)
        return result

    monkeypatch.setattr(module, "compute", slow)
    return computing


def timed_write(session_factory, workspace_id: int) -> float:
    """Seconds to add and commit one contact (a write transaction like any tracking call's)."""
    started = time.perf_counter()
    with session_factory() as s:
        s.add(Contact(workspace_id=workspace_id, email=f"w-{secrets.token_hex(4)}@example.com"))
        s.commit()
    return time.perf_counter() - started


def write_during(computing: threading.Event, session_factory, workspace_id: int) -> float:
    assert computing.wait(60), "the refresh did not start computing"
    return timed_write(session_factory, workspace_id)


PAGES: dict[str, tuple[Any, str, str, Callable[[Any, int], Any]]] = {
    "dashboard": (dashboard_snaps, "/?days=30", 'id="funnel"', lambda s, ws: dashboard_snaps.snapshot(s, ws, 30)),
    "forecast": (
        forecast_snapshots,
        "/forecast",
        'id="forecast-table"',
        lambda s, ws: forecast_snapshots.snapshot(s, ws, "month", None, "team"),
    ),
}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_a_write_during_a_pages_background_refresh_is_not_held_up(
    client, session_factory, workspace, monkeypatch, page
) -> None:
    module, path, shown_mark, stored = PAGES[page]
    computing = slowed(monkeypatch, module)
    login(client, make_user(session_factory, workspace.id, "admin"))
    url = f"/app/w/{workspace.slug}{path}"
    first = client.get(url)
    assert first.status_code == 200 and COMPUTING in first.text  # no snapshot yet: computed behind
    seconds = write_during(computing, session_factory, workspace.id)
    assert seconds < SLOW_SECONDS / 2, f"a write waited {seconds:.2f} s for the {page} refresh"
    assert background.wait_idle(120)
    with session_factory() as s:
        assert stored(s, workspace.id) is not None
    assert shown_mark in settled(client, url).text


@pytest.mark.parametrize("job", ["dashboard", "forecast"])
def test_a_write_during_the_workers_refresh_is_not_held_up(session_factory, workspace, monkeypatch, job) -> None:
    module = dashboard_snaps if job == "dashboard" else forecast_snapshots
    # Work for the job: a dashboard snapshot that a new contact overtook; an open deal (the forecast job computes the
    # page's default view ahead for every workspace with open deals).
    with session_factory() as s:
        if job == "dashboard":
            dashboard_snaps.refresh(s, workspace.id, 30)
        else:
            contact = Contact(workspace_id=workspace.id, email=f"buyer-{secrets.token_hex(4)}@example.com")
            s.add(contact)
            s.flush()
            deals_service.create_deal(s, workspace.id, DealCreate(name="Tents", contact_id=contact.id))
        s.commit()
    timed_write(session_factory, workspace.id)
    computing = slowed(monkeypatch, module)
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(module.run_refresh(session_factory)))
    worker.start()
    try:
        seconds = write_during(computing, session_factory, workspace.id)
    finally:
        worker.join(120)
    assert done and done[0] >= 1
    assert seconds < SLOW_SECONDS / 2, f"a write waited {seconds:.2f} s for the worker's {job} refresh"
