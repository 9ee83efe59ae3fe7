"""The dashboard: lifecycle funnel with conversion, leads and customers per month, cost and return by channel,
the funnel by country. The page reads the figures' snapshot (``analytics.dashboard``), which the worker's
``dashboard`` job keeps current (``suppilo demo`` computes them before serving); a snapshot that new rows have
overtaken is shown at once (with its time) while one background thread recomputes it, and a period with no snapshot
yet shows a "being computed" state that polls while that thread computes it: no request computes the figures."""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker

from suppilo.adapters.http.deps import ReadSession
from suppilo.adapters.web import charts
from suppilo.adapters.web.auth import Workspace_
from suppilo.adapters.web.background import Refreshes
from suppilo.adapters.web.errors import coded_text
from suppilo.adapters.web.templating import render
from suppilo.analytics import dashboard as snapshots
from suppilo.db.base import utcnow

router = APIRouter()

PERIODS = snapshots.PERIODS
compute = snapshots.compute  # the from-scratch computation (kept importable here for the tests and the bench)
_refreshing = Refreshes("dashboard")


def _refresh(factory: sessionmaker[Session], key: tuple[int, int]) -> None:
    # Computed in a read-only transaction, written in a short one: SQLite's write lock is not held while computing.
    snapshots.refresh_apart(factory, key[0], key[1])


def figures(session: Session, factory: sessionmaker[Session], workspace_id: int, days: int) -> dict[str, Any] | None:
    """The dashboard's numbers from the period's snapshot, or None while its first computation runs.

    A snapshot that new rows, the clock or a new day overtook is shown at once (marked as updating) while one
    background thread recomputes it; a period with no snapshot at all is computed by that thread too (the page polls
    until it is there). A page view never computes the figures itself."""
    key = (workspace_id, days)
    row = snapshots.snapshot(session, workspace_id, days)
    if row is None:
        _refreshing.start(key, lambda: _refresh(factory, key))
        return None
    data = snapshots.figures_of(row)
    data["stale"] = not snapshots.is_current(session, row, utcnow().date())
    if data["stale"]:
        _refreshing.start(key, lambda: _refresh(factory, key))
    return data


def clear_cache() -> None:
    """Forget background refreshes in flight (the figures themselves live in ``dashboard_snapshots``)."""
    _refreshing.clear()


@router.get("/w/{slug}/")
def dashboard(request: Request, ctx: Workspace_, session: ReadSession, days: int = 90) -> Response:
    ctx.require("view")
    days = days if days in PERIODS else 90
    data = figures(session, request.app.state.session_factory, ctx.workspace_id, days)
    page = partial(
        render,
        request,
        "dashboard.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        days=days,
        periods=PERIODS,
    )
    if data is None:
        return page(data=None)
    labels = {s.key: s.label for s in data["stages"]}
    funnel_all = data["funnel"]["all"]
    funnel_rows = funnel_all.get("stages", [])
    bars, funnel_height = charts.horizontal_bars(
        [(labels.get(r["stage"], r["stage"]), r["reached"]) for r in funnel_rows]
    )
    months: dict[str, dict[str, int]] = defaultdict(lambda: {"leads": 0, "qualified_leads": 0, "new_customers": 0})
    for row in data["month"]["rows"]:
        for metric in ("leads", "qualified_leads", "new_customers"):
            months[row["month"]][metric] += int(row[metric] or 0)
    month_keys = sorted(months)
    series: list[list[float]] = [
        [float(months[m][metric]) for m in month_keys] for metric in ("leads", "qualified_leads", "new_customers")
    ]
    columns, col_labels, ticks, _ = charts.grouped_columns(month_keys, series)
    countries = sorted(data["funnel"].get("groups", {}).items(), key=lambda kv: kv[1].get("contacts", 0), reverse=True)[
        :10
    ]
    # A card that could not be computed says why in the user's language (snapshots stored before refusals carried
    # their code keep the English message).
    refusals = data.get("refusals") or {}
    errors = {
        name: coded_text(refusals[name]["code"], refusals[name]["params"], ctx.language, message)
        if name in refusals
        else message
        for name, message in data["errors"].items()
    }
    return page(
        data=data,
        errors=errors,
        labels=labels,
        funnel_rows=funnel_rows,
        funnel_bars=bars,
        funnel_height=funnel_height,
        month_keys=month_keys,
        months=months,
        columns=columns,
        col_labels=col_labels,
        ticks=ticks,
        countries=countries,
        known_contacts=sum(s.contacts for s in data["stages"]),
    )
