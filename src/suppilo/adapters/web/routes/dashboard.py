"""The dashboard: lifecycle funnel with conversion, leads and customers per month, cost and return by channel,
the funnel by country. Figures come from the analytics services; they are cached per workspace for a minute."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from suppilo.adapters.http.deps import ReadSession
from suppilo.adapters.web import charts
from suppilo.adapters.web.auth import Workspace_
from suppilo.adapters.web.templating import render
from suppilo.analytics import service as analytics
from suppilo.contacts import service as contacts_service
from suppilo.db.base import utcnow
from suppilo.errors import DomainError

router = APIRouter()

PERIODS = (30, 90, 365)
CACHE_SECONDS = 60.0
_cache: dict[tuple[int, int, date], tuple[float, dict[str, Any]]] = {}
_lock = threading.Lock()


def figures(session: Any, workspace_id: int, days: int) -> dict[str, Any]:
    """The dashboard's numbers for the ``days`` up to today (served from a per-process cache for a minute)."""
    today = utcnow().date()
    key = (workspace_id, days, today)
    now = time.monotonic()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    start = today - timedelta(days=days - 1)
    errors: dict[str, str] = {}

    def report(name: str, compute: Callable[[], dict[str, Any]], empty: dict[str, Any]) -> dict[str, Any]:
        # A report that cannot be computed (e.g. an order currency without exchange rates) is explained on its
        # card; the rest of the dashboard still shows.
        try:
            return compute()
        except DomainError as exc:
            errors[name] = exc.message
            return empty

    no_money = {"currency": None, "rows": [], "totals": {}}
    funnel = report(
        "funnel",
        lambda: analytics.funnel_report(session, workspace_id, start, today, "country"),
        {"stages": [], "all": {"stages": [], "insufficient_data": True}, "groups": {}},
    )
    by_channel = report(
        "money", lambda: analytics.spend_report(session, workspace_id, start, today, "channel"), no_money
    )
    by_month = report("money", lambda: analytics.spend_report(session, workspace_id, start, today, "month"), no_money)
    stages = contacts_service.list_stages(session, workspace_id)
    data = {
        "funnel": funnel,
        "channel": by_channel,
        "month": by_month,
        "stages": stages,
        "from": start,
        "to": today,
        "errors": errors,
    }
    with _lock:
        if len(_cache) > 1000:
            _cache.clear()
        _cache[key] = (now, data)
    return data


def clear_cache() -> None:
    with _lock:
        _cache.clear()


@router.get("/w/{slug}/")
def dashboard(request: Request, ctx: Workspace_, session: ReadSession, days: int = 90) -> Response:
    ctx.require("view")
    days = days if days in PERIODS else 90
    data = figures(session, ctx.workspace_id, days)
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
    series = [[months[m][metric] for m in month_keys] for metric in ("leads", "qualified_leads", "new_customers")]
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
