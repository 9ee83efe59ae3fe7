"""Report pages never compute in the request: ``suppilo demo`` computes the snapshots before serving (so the first
views read them), a view with no snapshot or kept result shows a "being computed" state that polls while one
background thread computes it, and what is shown then equals a direct computation — for the default views and for
other parameters (another forecast grouping, explicit attribution dates, the spend report). SQLite and PostgreSQL."""

from __future__ import annotations

import html
import re
import secrets
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from suppilo.adapters.web import background
from suppilo.adapters.web.i18n import Formatter
from suppilo.adapters.web.routes import dashboard as dashboard_route
from suppilo.adapters.web.routes import deals as deals_route
from suppilo.adapters.web.routes import reports as reports_route
from suppilo.analytics import service as analytics
from suppilo.db.base import utcnow
from suppilo.db.session import unit_of_work
from suppilo.deals import forecast as deals_forecast
from suppilo.demo import loader
from suppilo.demo import snapshots as demo_snapshots
from suppilo.demo.generator import DemoParams
from suppilo.errors import DomainError
from tests.adapters.test_web_shell import login, make_user
from tests.adapters.web_settle import COMPUTING, settled


@pytest.fixture(scope="module")
def demo_ws(db_engine: Engine, session_factory: sessionmaker[Session]) -> tuple[int, str]:
    params = DemoParams(seed=5, contacts=200, today=utcnow().date())
    slug = f"comp-{secrets.token_hex(4)}"
    with unit_of_work(session_factory) as s:
        setup = loader.setup_workspace(s, params, slug)
    result = loader.load_data(db_engine, setup.workspace_id, params)
    with unit_of_work(session_factory) as s:
        loader.mark_complete(s, setup.workspace_id, params, result)
    return setup.workspace_id, slug


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    assert background.wait_idle(120)
    dashboard_route.clear_cache()
    reports_route.clear_attribution_refreshes()
    deals_route.clear_forecast_refreshes()
    yield
    assert background.wait_idle(120)
    client.cookies.clear()


def test_demo_precomputes_every_first_view(client, session_factory, demo_ws) -> None:
    ws, slug = demo_ws
    assert demo_snapshots.precompute(session_factory, ws) == 6  # 3 dashboard periods, 2 attribution levels, forecast
    assert demo_snapshots.precompute(session_factory, ws) == 0  # all current: a restart recomputes nothing
    login(client, make_user(session_factory, ws, "admin"))
    base = f"/app/w/{slug}"
    for url in (
        f"{base}/",
        f"{base}/?days=30",
        f"{base}/?days=365",
        f"{base}/reports/attribution",
        f"{base}/reports/attribution?level=campaign",
        f"{base}/forecast",
    ):
        page = client.get(url)
        assert page.status_code == 200 and COMPUTING not in page.text, url
        assert "figures as of" in page.text and "updating" not in page.text, url
    # Nothing had to be computed for those views, not even in the background.
    assert not dashboard_route._refreshing and not reports_route._refreshing and not deals_route._refreshing


def cells(text: str, table_id: str) -> dict[str, list[str]]:
    """A table's cells per row heading, as shown."""
    table = text.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1].split("</tbody>")[0]
    out = {}
    for key, row in re.findall(r'<th scope="row"[^>]*>(.*?)</th>(.*?)</tr>', table, re.S):
        out[html.unescape(key)] = [html.unescape(c) for c in re.findall(r'<td class="num">(.*?)</td>', row)]
    return out


def test_other_parameters_are_computed_behind_and_equal_a_direct_computation(client, session_factory, demo_ws) -> None:
    ws, slug = demo_ws
    login(client, make_user(session_factory, ws, "admin"))
    base = f"/app/w/{slug}"
    fmt = Formatter("en", "UTC")
    today = utcnow().date()
    frm, to = today - timedelta(days=200), today - timedelta(days=10)

    # The spend report (any parameters) and attribution with explicit dates: kept in memory by their parameters.
    url = f"{base}/reports/spend?from={frm}&to={to}"
    first = client.get(url)
    assert first.status_code == 200 and 'id="spend-computing"' in first.text and 'id="spend-table"' not in first.text
    shown = settled(client, url).text
    with session_factory() as s:
        direct = analytics.spend_report(s, ws, frm, to, "channel")
    cur = direct["currency"]
    assert direct["rows"] and cells(shown, "spend-table") == {
        r["channel"]: [
            fmt.money(r["spend_minor"], cur),
            fmt.number(r["leads"]),
            fmt.number(r["qualified_leads"]),
            fmt.number(r["new_customers"]),
            fmt.money(r["revenue_minor"], cur),
            fmt.money(r["cost_per_lead_minor"], cur),
            fmt.money(r["cac_minor"], cur),
            fmt.percent(r["roi"]),
            fmt.ratio(r["roas"]),
            fmt.ratio(r["ltv_cac"]),
        ]
        for r in direct["rows"]
    }
    assert 'id="spend-updating"' not in shown and COMPUTING not in client.get(url).text  # kept: served at once

    url = f"{base}/reports/attribution?from={frm}&to={to}&level=campaign"
    assert 'id="attribution-computing"' in client.get(url).text
    shown = settled(client, url).text
    with session_factory() as s:
        direct = analytics.attribution_report(s, ws, frm, to, "campaign")
    models = reports_route.MODELS
    assert direct["side_by_side"] and cells(shown, "attribution-table") == {
        r["key"]: [
            v
            for m in models
            for v in (
                fmt.number((r.get(m) or {}).get("conversions"), 2),
                fmt.money((r.get(m) or {}).get("revenue_minor"), direct["currency"]),
            )
        ]
        for r in direct["side_by_side"]
    }

    # Another forecast grouping: its own snapshot, computed behind on its first view.
    url = f"{base}/forecast?group_by=country&stalls_by=region"
    assert 'id="forecast-computing"' in client.get(url).text
    shown = settled(client, url).text
    with session_factory() as s:
        direct_fc = deals_forecast.workspace_forecast(s, ws, group_by="country", pipeline_id=None, stalls_by="region")
    table = cells(shown, "forecast-table")
    assert direct_fc.groups and len(table) == len(direct_fc.groups)
    for g in direct_fc.groups:
        t = g.totals[0]
        expected = [
            fmt.number(t.count),
            *(fmt.money(v, t.currency) for v in (t.weighted_minor, t.commit_minor, t.best_case_minor)),
        ]
        assert table[g.key or "None"] == expected


def test_a_refused_computation_is_shown_as_its_error(client, session_factory, demo_ws, monkeypatch) -> None:
    ws, slug = demo_ws
    login(client, make_user(session_factory, ws, "analyst", language="da"))
    # A period the reports refuse is answered at once beside its field: nothing is started in the background.
    url = f"/app/w/{slug}/reports/spend?from=2025-05-01&to=2025-01-01"  # the period ends before it starts
    shown = client.get(url)
    assert shown.status_code == 200 and COMPUTING not in shown.text and 'id="spend-table"' not in shown.text
    assert '<span class="error" id="from-error">Startdatoen 2025-05-01 ligger efter slutdatoen 2025-01-01.</span>' in (
        shown.text
    )
    assert background.wait_idle(0.1)

    # A refusal met by the background computation itself (forced here into the region funnel) is shown once it is
    # there: beside its field when the form has one (in the user's language), else as the page's error.
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise DomainError("from", "x", code="period_reversed", params={"from": "2025-02-02", "to": "2025-02-01"})

    monkeypatch.setattr(analytics, "funnel_report", refuse)
    url = f"/app/w/{slug}/reports/spend?from=2025-01-03&to=2025-02-03"
    assert COMPUTING in client.get(url).text
    shown = settled(client, url)
    assert (
        "Startdatoen 2025-02-02 ligger efter slutdatoen 2025-02-01." in shown.text and 'id="from-error"' in shown.text
    )
    assert 'id="spend-table"' not in shown.text and 'value="2025-01-03"' in shown.text

    def refuse_other(*_args: object, **_kwargs: object) -> None:
        raise DomainError("group_by", "group_by must be channel, country or region")  # no code: English

    monkeypatch.setattr(analytics, "funnel_report", refuse_other)
    url = f"/app/w/{slug}/reports/spend?from=2025-01-04&to=2025-02-04"
    shown = settled(client, url)
    assert (
        'role="alert">group_by must be channel, country or region<' in shown.text
        and 'id="from-error"' not in shown.text
    )
