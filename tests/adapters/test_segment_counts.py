"""A segment's member count as every reader shows it (service, API list and detail, CLI, web list and detail page)
stays exact while events move contacts in and out, before and after the count deltas are folded."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings
from suppilo.events.service import record_event
from suppilo.segments import service, tasks
from suppilo.segments.models import SegmentCountDelta
from suppilo.segments.schemas import SegmentCreate
from tests.adapters.test_web_shell import login, make_user

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
ONCE = {"type": "event", "name": "Order Completed", "op": "exactly", "value": 1}
BOUGHT = {"type": "event", "name": "Order Completed", "op": "did"}


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _readers(client, cli, session_factory, workspace, sid: int) -> dict[str, int]:
    """The count of segment ``sid`` as each reader shows it."""
    with session_factory() as s:
        by_service = service.get_segment(s, workspace.id, sid).member_count
        in_list = {g.id: g.member_count for g in service.list_segments(s, workspace.id)}[sid]
    h = workspace.auth("read")
    api_item = client.get(f"/api/v1/segments/{sid}", headers=h).json()["member_count"]
    api_list = {g["id"]: g["member_count"] for g in client.get("/api/v1/segments", headers=h).json()["items"]}[sid]
    res = cli.invoke(cli_app, ["segments", "list", "--workspace", workspace.slug, "--json"])
    assert res.exit_code == 0, res.output
    by_cli = {g["id"]: g["member_count"] for g in json.loads(res.stdout)}[sid]
    page = client.get(f"/app/w/{workspace.slug}/segments").text
    row = re.search(rf'<tr id="segment-{sid}">.*?<td class="num">([\d,]+)</td>', page, re.S)
    detail = re.search(r'id="member-count">([\d,]+)<', client.get(f"/app/w/{workspace.slug}/segments/{sid}").text)
    assert row and detail
    return {
        "service": by_service,
        "service list": in_list,
        "api": api_item,
        "api list": api_list,
        "cli": by_cli,
        "web list": int(row.group(1).replace(",", "")),
        "web detail": int(detail.group(1).replace(",", "")),
    }


def _order(session_factory, ws: int, cid: int, at: datetime, n: int) -> None:
    with session_factory() as s:
        record_event(s, ws, cid, "Order Completed", {"total": 10}, at, message_id=f"count-{cid}-{n}")
        service.update_for_contacts(s, ws, [cid], {"events:Order Completed"}, at)
        s.commit()


def _pending(session_factory) -> int:
    with session_factory() as s:
        return int(s.scalar(select(func.count()).select_from(SegmentCountDelta)) or 0)


def test_every_reader_shows_the_exact_count_as_events_move_contacts(client, cli, session_factory, workspace):
    ids = [
        client.post("/api/v1/contacts", json={"email": f"c{i}@example.fi"}, headers=workspace.auth()).json()["id"]
        for i in range(4)
    ]
    with session_factory() as s:
        once = service.create_segment(s, workspace.id, SegmentCreate(name="Once", filter=ONCE), NOW).id
        bought = service.create_segment(s, workspace.id, SegmentCreate(name="Bought", filter=BOUGHT), NOW).id
        s.commit()
    login(client, make_user(session_factory, workspace.id, "analyst"))

    def counts() -> tuple[set[int], set[int]]:
        return set(_readers(client, cli, session_factory, workspace, once).values()), set(
            _readers(client, cli, session_factory, workspace, bought).values()
        )

    assert counts() == ({0}, {0})
    for n, cid in enumerate(ids[:3]):  # three contacts order once: they enter both segments
        _order(session_factory, workspace.id, cid, NOW + timedelta(minutes=n), n)
    assert counts() == ({3}, {3})
    _order(session_factory, workspace.id, ids[0], NOW + timedelta(minutes=5), 5)  # a second order: exits "Once"
    assert counts() == ({2}, {3})
    assert _pending(session_factory) > 0

    tasks.run_time_refresh(session_factory)  # the refresh task folds the deltas into the segments
    assert _pending(session_factory) == 0
    assert counts() == ({2}, {3})

    _order(session_factory, workspace.id, ids[1], NOW + timedelta(minutes=6), 6)  # after the fold: moves again
    _order(session_factory, workspace.id, ids[3], NOW + timedelta(minutes=7), 7)
    assert counts() == ({2}, {4})
    with session_factory() as s:  # a full refresh agrees and leaves no delta behind for the refreshed segment
        service.refresh_segment(s, workspace.id, once, NOW + timedelta(minutes=8))
        s.commit()
    assert counts() == ({2}, {4})
