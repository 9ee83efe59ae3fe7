"""The dashboard: lifecycle funnel with conversion, leads and customers per month, cost and return by channel,
the funnel by country. Figures come from the analytics services; they are cached per process (see FRESH_SECONDS)."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session, sessionmaker

from suppilo.adapters.http.deps import ReadSession
from suppilo.adapters.web import charts
from suppilo.adapters.web.auth import Workspace_
from suppilo.adapters.web.templating import render
from suppilo.analytics import service as analytics
from suppilo.contacts import service as contacts_service
from suppilo.db.base import utcnow
from suppilo.errors import DomainError

router = APIRouter()
log = logging.getLogger("suppilo.web")

PERIODS = (30, 90, 365)
# Figures younger than FRESH_SECONDS are served as they are; older ones up to STALE_SECONDS are served at once
# while one background thread recomputes them (the page says how old they are); older ones are recomputed inline.
FRESH_SECONDS = 60.0
STALE_SECONDS = 600.0
_cache: dict[tuple[int, int, date], tuple[float, dict[str, Any]]] = {}
_refreshing: set[tuple[int, int, date]] = set()
_lock = threading.Lock()


def compute(session: Session, workspace_id: int, days: int, today: date) -> dict[str, Any]:
    """The dashboard's numbers for the ``days`` up to ``today``, from the analytics and contacts services."""
    start = today - timedelta(days=days - 1)
    errors: dict[str, str] = {}

    def report(name: str, run: Callable[[], dict[str, Any]], empty: dict[str, Any]) -> dict[str, Any]:
        # A report that cannot be computed (e.g. an order currency without exchange rates) is explained on its
        # card; the rest of the dashboard still shows.
        try:
            return run()
        except DomainError as exc:
            errors[name] = exc.message
            return empty

    no_money: dict[str, Any] = {"currency": None, "rows": [], "totals": {}}
    funnel = report(
        "funnel",
        lambda: analytics.funnel_report(session, workspace_id, start, today, "country"),
        {"stages": [], "all": {"stages": [], "insufficient_data": True}, "groups": {}},
    )
    by_channel = report(
        "money", lambda: analytics.spend_report(session, workspace_id, start, today, "channel"), no_money
    )
    by_month = report("money", lambda: analytics.spend_report(session, workspace_id, start, today, "month"), no_money)
    return {
        "funnel": funnel,
        "channel": by_channel,
        "month": by_month,
        "stages": contacts_service.list_stages(session, workspace_id),
        "from": start,
        "to": today,
        "errors": errors,
        "computed_at": utcnow(),
    }


def _store(key: tuple[int, int, date], data: dict[str, Any]) -> None:
    with _lock:
        if len(_cache) > 1000:
            _cache.clear()
        _cache[key] = (time.monotonic(), data)


def _refresh(factory: sessionmaker[Session], key: tuple[int, int, date]) -> None:
    try:
        with factory() as session:
            _store(key, compute(session, key[0], key[1], key[2]))
    except Exception:
        log.exception("dashboard refresh failed for workspace %s", key[0])
    finally:
        with _lock:
            _refreshing.discard(key)


def figures(session: Session, factory: sessionmaker[Session], workspace_id: int, days: int) -> dict[str, Any]:
    """The dashboard's numbers, from the per-process cache when recent enough (see FRESH_SECONDS)."""
    today = utcnow().date()
    key = (workspace_id, days, today)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
        age = now - hit[0] if hit is not None else None
        start_refresh = age is not None and FRESH_SECONDS <= age < STALE_SECONDS and key not in _refreshing
        if start_refresh:
            _refreshing.add(key)
    if hit is not None and age is not None and age < STALE_SECONDS:
        if start_refresh:
            threading.Thread(target=_refresh, args=(factory, key), daemon=True).start()
        return hit[1]
    data = compute(session, workspace_id, days, today)
    _store(key, data)
    return data


def clear_cache() -> None:
    with _lock:
        _cache.clear()
        _refreshing.clear()


@router.get("/w/{slug}/")
def dashboard(request: Request, ctx: Workspace_, session: ReadSession, days: int = 90) -> Response:
    ctx.require("view")
    days = days if days in PERIODS else 90
    data = figures(session, request.app.state.read_session_factory, ctx.workspace_id, days)
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
    return render(
        request,
        "dashboard.html",
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        days=days,
        periods=PERIODS,
        data=data,
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
