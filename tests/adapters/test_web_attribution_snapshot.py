"""The attribution page of the default period reads a snapshot: its figures (page table and CSV) are exactly the
API's attribution report for the same period and level, before and after new rows overtake it; explicit dates are
computed on the spot and equal the API's report too."""

from __future__ import annotations

import csv
import html
import io
import re
import time
from datetime import timedelta
from typing import Any

import pytest

from suppilo.adapters.web.i18n import Formatter
from suppilo.adapters.web.routes import reports as reports_route
from suppilo.analytics import attribution_snapshots as snaps
from suppilo.commerce.models import Order
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.events.models import Touch
from tests.adapters.test_web_reports import seed
from tests.adapters.test_web_shell import login, make_user
from tests.adapters.web_settle import settled

MODELS = reports_route.MODELS


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    reports_route.clear_attribution_refreshes()
    yield
    client.cookies.clear()


def add_customer(session_factory, workspace_id: int, email: str, touches: list[tuple[str, int]], value: int) -> None:
    """A contact with touches (channel, days ago) and a first order one day ago."""
    now = utcnow()
    with session_factory() as s:
        c = Contact(workspace_id=workspace_id, email=email)
        s.add(c)
        s.flush()
        for channel, days in touches:
            s.add(
                Touch(
                    workspace_id=workspace_id,
                    contact_id=c.id,
                    occurred_at=now - timedelta(days=days),
                    channel=channel,
                    campaign=f"{channel}-camp",
                )
            )
        s.add(
            Order(
                workspace_id=workspace_id,
                contact_id=c.id,
                external_id=f"o-{email}",
                status="completed",
                currency="EUR",
                total_minor=value,
                placed_at=now - timedelta(days=1),
            )
        )
        s.commit()


def add_visitor(session_factory, workspace_id: int, email: str, touches: list[tuple[str, int]]) -> None:
    """A contact with touches and no order (a non-converting path)."""
    now = utcnow()
    with session_factory() as s:
        c = Contact(workspace_id=workspace_id, email=email)
        s.add(c)
        s.flush()
        for channel, days in touches:
            s.add(
                Touch(
                    workspace_id=workspace_id, contact_id=c.id, occurred_at=now - timedelta(days=days), channel=channel
                )
            )
        s.commit()


def page_rows(text: str) -> dict[str, list[str]]:
    """The attribution table's cells per key, as shown."""
    table = text.split('id="attribution-table"', 1)[1].split("</table>", 1)[0]
    out = {}
    for key, cells in re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', table):
        out[html.unescape(key)] = [html.unescape(c) for c in re.findall(r'<td class="num">(.*?)</td>', cells)]
    return out


def expected_rows(report: dict[str, Any]) -> dict[str, list[str]]:
    fmt = Formatter("en", "Europe/Helsinki")
    out = {}
    for row in report["side_by_side"]:
        cells = []
        for m in MODELS:
            c = row.get(m) or {}
            cells += [fmt.number(c.get("conversions"), 2), fmt.money(c.get("revenue_minor"), report["currency"])]
        out[row["key"]] = cells
    return out


def csv_table(res) -> dict[str, list[str]]:
    assert res.status_code == 200
    rows = list(csv.reader(io.StringIO(res.content.decode("utf-8-sig"))))
    return {r[0]: r[1:] for r in rows[1:]}


def api_csv_cells(report: dict[str, Any]) -> dict[str, list[str]]:
    out = {}
    for row in report["side_by_side"]:
        cells = []
        for m in MODELS:
            c = row.get(m) or {}
            cells += [
                "" if c.get("conversions") is None else str(c["conversions"]),
                "" if c.get("revenue_minor") is None else str(c["revenue_minor"]),
            ]
        key = row["key"]
        out["'" + key if key.startswith("=") else key] = cells
    return out


def wait_for_refreshes(seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while reports_route._refreshing and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not reports_route._refreshing


def test_attribution_page_shows_exactly_the_api_report(client, session_factory, workspace) -> None:
    seed(session_factory, workspace.id)
    add_customer(session_factory, workspace.id, "c1@example.com", [("social", 9), ("email", 6), ("search", 3)], 12345)
    add_customer(session_factory, workspace.id, "c2@example.com", [("search", 20), ("social", 2)], 7001)
    add_visitor(session_factory, workspace.id, "v1@example.com", [("social", 8), ("display", 4)])
    add_visitor(session_factory, workspace.id, "v2@example.com", [("email", 30)])
    login(client, make_user(session_factory, workspace.id, "analyst"))
    base = f"/app/w/{workspace.slug}/reports"
    today = utcnow().date()
    frm = (today - timedelta(days=snaps.DEFAULT_DAYS - 1)).isoformat()
    for level in ("channel", "campaign"):
        api = client.get("/api/v1/reports/attribution", params={"level": level}, headers=workspace.auth("read")).json()
        assert api["conversions"] == 4 and api["paths"] == 6 and api["to"] == today.isoformat()
        first = client.get(f"{base}/attribution", params={"level": level})  # no snapshot yet: computed behind
        assert 'id="attribution-computing"' in first.text and 'id="attribution-table"' not in first.text
        page = settled(client, f"{base}/attribution", params={"level": level})
        assert page.status_code == 200 and "figures as of" in page.text and "updating" not in page.text
        assert page_rows(page.text) == expected_rows(api)
        assert csv_table(client.get(f"{base}/attribution.csv", params={"level": level})) == api_csv_cells(api)
        with session_factory() as s:
            row = snaps.snapshot(s, workspace.id, level, snaps.DEFAULT_DAYS)
            assert row is not None and row.as_of == today and snaps.is_current(s, row, today)
            assert {k: v for k, v in row.data.items()} == api
        again = client.get(f"{base}/attribution", params={"level": level})  # read from the snapshot
        assert page_rows(again.text) == expected_rows(api) and "4 conversions" in again.text
        # Explicit dates are computed in the background too (kept in memory), and equal the API's report for them.
        dated = {"from": frm, "to": today.isoformat(), "level": level}
        api_dated = client.get("/api/v1/reports/attribution", params=dated, headers=workspace.auth("read")).json()
        assert api_dated == api
        assert 'id="attribution-computing"' in client.get(f"{base}/attribution", params=dated).text
        shown = settled(client, f"{base}/attribution", params=dated)
        assert page_rows(shown.text) == expected_rows(api_dated) and "figures as of" in shown.text

    # A new customer overtakes the snapshots: the page says so; the worker job recomputes them.
    add_customer(session_factory, workspace.id, "c3@example.com", [("display", 5), ("email", 2)], 50000)
    stale = client.get(f"{base}/attribution")
    assert stale.status_code == 200 and 'id="attribution-updating"' in stale.text and "4 conversions" in stale.text
    assert not reports_route._refreshing  # a worker keeps it: no refresh in the web process
    assert snaps.run_refresh(session_factory) >= 2
    for level in ("channel", "campaign"):
        api = client.get("/api/v1/reports/attribution", params={"level": level}, headers=workspace.auth("read")).json()
        assert api["conversions"] == 5
        fresh = client.get(f"{base}/attribution", params={"level": level})
        assert "attribution-updating" not in fresh.text and "5 conversions" in fresh.text
        assert page_rows(fresh.text) == expected_rows(api)

    # Without a worker (the snapshot is older than ORPHAN_SECONDS) the web process recomputes it in the background.
    add_visitor(session_factory, workspace.id, "v3@example.com", [("display", 3)])
    with session_factory() as s:
        row = snaps.snapshot(s, workspace.id, "channel", snaps.DEFAULT_DAYS)
        row.computed_at = utcnow() - timedelta(seconds=snaps.ORPHAN_SECONDS + 1)
        s.commit()
    stale = client.get(f"{base}/attribution")
    assert 'id="attribution-updating"' in stale.text and "7 paths" in stale.text
    wait_for_refreshes()
    api = client.get("/api/v1/reports/attribution", headers=workspace.auth("read")).json()
    fresh = client.get(f"{base}/attribution")
    assert api["paths"] == 8 and "8 paths" in fresh.text and "attribution-updating" not in fresh.text
    assert page_rows(fresh.text) == expected_rows(api)
