"""Forecast and board grouped by owner, team, country (company, else contact) and region."""

from __future__ import annotations

import secrets

from suppilo.workspaces import service as workspaces_service

API = "/api/v1"


def _member(session_factory, ws) -> int:
    with session_factory() as s:
        user = workspaces_service.create_user(
            s, email=f"rep-{secrets.token_hex(4)}@example.fi", name="Rep", password_hash=None
        )
        workspaces_service.add_member(s, ws.id, user.id, "sales")
        s.commit()
        return user.id


def _ok(res, code=200):
    assert res.status_code == code, res.text
    return res.json()


def _setup(client, ws, session_factory):
    north, south, lone = (_member(session_factory, ws) for _ in range(3))
    for name, members in (("North", [north]), ("South", [south])):
        _ok(client.post(f"{API}/sales/teams", json={"name": name, "members": members}, headers=ws.auth("admin")), 201)
    co_se = _ok(
        client.post(f"{API}/companies", json={"name": "Sverige AB", "country": "SE"}, headers=ws.auth("write")), 201
    )
    fi = _ok(
        client.post(
            f"{API}/contacts",
            json={"email": f"a{secrets.token_hex(3)}@x.org", "country": "FI", "region": "Uusimaa"},
            headers=ws.auth("write"),
        ),
        201,
    )
    se_person = _ok(
        client.post(
            f"{API}/contacts",
            json={
                "email": f"b{secrets.token_hex(3)}@x.org",
                "country": "FI",
                "region": "Lappi",
                "company_id": co_se["id"],
            },
            headers=ws.auth("write"),
        ),
        201,
    )
    pipeline = _ok(client.get(f"{API}/pipelines", headers=ws.auth("read")))[0]
    demo = next(s for s in pipeline["stages"] if s["key"] == "demo")  # 40 %
    deals = [
        {"name": "a", "owner_id": north, "contact_id": fi["id"], "amount_minor": 100_000},
        {"name": "b", "owner_id": north, "contact_id": se_person["id"], "amount_minor": 50_000},
        # The deal's own company wins over the contact's.
        {"name": "c", "owner_id": south, "contact_id": fi["id"], "company_id": co_se["id"], "amount_minor": 20_000},
        {"name": "d", "owner_id": lone, "amount_minor": 10_000},
    ]
    for d in deals:
        _ok(
            client.post(
                f"{API}/deals", json={**d, "currency": "EUR", "stage_id": demo["id"]}, headers=ws.auth("write")
            ),
            201,
        )
    return pipeline, demo, north, south, lone


def _totals(forecast):
    return {
        g["key"]: (g["totals"][0]["count"], g["totals"][0]["best_case_minor"], g["totals"][0]["weighted_minor"])
        for g in forecast["groups"]
    }


def test_forecast_by_team_country_and_region(client, workspace, session_factory):
    _setup(client, workspace, session_factory)
    by_team = _totals(_ok(client.get(f"{API}/forecast?group_by=team&currency=EUR", headers=workspace.auth("read"))))
    assert by_team == {"North": (2, 150_000, 60_000), "South": (1, 20_000, 8_000), None: (1, 10_000, 4_000)}
    by_country = _totals(
        _ok(client.get(f"{API}/forecast?group_by=country&currency=EUR", headers=workspace.auth("read")))
    )
    assert by_country == {"FI": (1, 100_000, 40_000), "SE": (2, 70_000, 28_000), None: (1, 10_000, 4_000)}
    by_region = _totals(_ok(client.get(f"{API}/forecast?group_by=region&currency=EUR", headers=workspace.auth("read"))))
    assert by_region == {"Lappi": (1, 50_000, 20_000), "Uusimaa": (2, 120_000, 48_000), None: (1, 10_000, 4_000)}
    res = client.get(f"{API}/forecast?group_by=galaxy", headers=workspace.auth("read"))
    assert res.status_code == 422


def test_board_groups_per_stage(client, workspace, session_factory):
    pipeline, demo, north, south, lone = _setup(client, workspace, session_factory)
    board = _ok(client.get(f"{API}/pipelines/{pipeline['id']}/board?group_by=owner", headers=workspace.auth("read")))
    assert board["group_by"] == "owner"
    column = next(c for c in board["columns"] if c["stage"]["id"] == demo["id"])
    assert {g["key"]: (g["count"], g["sums"][0]["amount_minor"]) for g in column["groups"]} == {
        str(north): (2, 150_000),
        str(south): (1, 20_000),
        str(lone): (1, 10_000),
    }
    empty = next(c for c in board["columns"] if c["stage"]["key"] == "won")
    assert empty["groups"] == []
    board = _ok(client.get(f"{API}/pipelines/{pipeline['id']}/board?group_by=country", headers=workspace.auth("read")))
    column = next(c for c in board["columns"] if c["stage"]["id"] == demo["id"])
    assert [(g["key"], g["count"]) for g in column["groups"]] == [("FI", 1), ("SE", 2), (None, 1)]
    board = _ok(client.get(f"{API}/pipelines/{pipeline['id']}/board?group_by=team", headers=workspace.auth("read")))
    column = next(c for c in board["columns"] if c["stage"]["id"] == demo["id"])
    assert [(g["key"], g["count"]) for g in column["groups"]] == [("North", 2), ("South", 1), (None, 1)]
    plain = _ok(client.get(f"{API}/pipelines/{pipeline['id']}/board", headers=workspace.auth("read")))
    assert all(c["groups"] is None for c in plain["columns"])


def test_board_counts_overdue_tasks_and_filters_on_them(client, workspace, session_factory):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from suppilo.deals.models import Task

    pipeline = _ok(client.get(f"{API}/pipelines", headers=workspace.auth("read")))[0]
    first = pipeline["stages"][0]
    late = _ok(
        client.post(
            f"{API}/deals",
            json={"name": "late", "amount_minor": 500, "currency": "EUR"},
            headers=workspace.auth("write"),
        ),
        201,
    )
    fine = _ok(
        client.post(
            f"{API}/deals",
            json={"name": "fine", "amount_minor": 700, "currency": "EUR"},
            headers=workspace.auth("write"),
        ),
        201,
    )
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for deal in (late, fine):
        _ok(
            client.post(
                f"{API}/tasks",
                json={"title": "call", "due_at": soon, "deal_id": deal["id"]},
                headers=workspace.auth("write"),
            ),
            201,
        )
    with session_factory() as s:  # a day passes for the late deal's task
        s.execute(update(Task).where(Task.deal_id == late["id"]).values(due_at=datetime.now(UTC) - timedelta(hours=2)))
        s.commit()
    board = _ok(client.get(f"{API}/pipelines/{pipeline['id']}/board", headers=workspace.auth("read")))
    column = next(c for c in board["columns"] if c["stage"]["id"] == first["id"])
    assert column["count"] == 2 and column["overdue_tasks"] == 1
    board = _ok(client.get(f"{API}/pipelines/{pipeline['id']}/board?overdue=true", headers=workspace.auth("read")))
    column = next(c for c in board["columns"] if c["stage"]["id"] == first["id"])
    assert column["count"] == 1 and [d["id"] for d in column["deals"]] == [late["id"]]
    assert column["sums"] == [{"currency": "EUR", "amount_minor": 500}]


def _backdate(session_factory, deal_id: int, days: float) -> None:
    """The deal entered its current stage ``days`` ago."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from suppilo.deals.models import Deal

    with session_factory() as s:
        s.execute(
            update(Deal).where(Deal.id == deal_id).values(stage_entered_at=datetime.now(UTC) - timedelta(days=days))
        )
        s.commit()


def _stall_setup(client, ws, session_factory):
    """Four open deals in demo (a, b: North; c: South; d: no team); demo's average completed stay is 2 days (a
    fifth deal went demo → proposal), so a deal in demo for more than 4 days is stalled: a (North, Uusimaa, FI) and
    c (South, Uusimaa, SE)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update

    from suppilo.deals.models import DealStageChange

    pipeline, demo, north, south, _lone = _setup(client, ws, session_factory)
    stages = {s["key"]: s["id"] for s in pipeline["stages"]}
    fast = _ok(
        client.post(
            f"{API}/deals",
            json={"name": "fast", "amount_minor": 1, "currency": "EUR", "stage_id": demo["id"]},
            headers=ws.auth("write"),
        ),
        201,
    )
    _ok(client.post(f"{API}/deals/{fast['id']}/move", json={"stage_id": stages["proposal"]}, headers=ws.auth("write")))
    now = datetime.now(UTC)
    with session_factory() as s:
        ids = s.scalars(
            select(DealStageChange.id).where(DealStageChange.deal_id == fast["id"]).order_by(DealStageChange.id)
        ).all()
        s.execute(update(DealStageChange).where(DealStageChange.id == ids[0]).values(changed_at=now - timedelta(3)))
        s.execute(update(DealStageChange).where(DealStageChange.id == ids[1]).values(changed_at=now - timedelta(1)))
        s.commit()
    deals = _ok(client.get(f"{API}/deals?limit=50", headers=ws.auth("read")))["items"]
    by_name = {d["name"]: d["id"] for d in deals}
    _backdate(session_factory, by_name["a"], 10)
    _backdate(session_factory, by_name["c"], 6)
    _backdate(session_factory, by_name["b"], 3)  # under the 4-day threshold
    return north, south


def test_stalled_deals_by_team_and_territory(client, workspace, session_factory):
    _stall_setup(client, workspace, session_factory)

    def stalls(by):
        res = _ok(client.get(f"{API}/forecast?stalls_by={by}", headers=workspace.auth("read")))
        assert res["stalls_by"] == by
        demo = next(s for s in res["stalls"] if s["stage_key"] == "demo")
        assert (demo["open_deals"], demo["stalled"], demo["threshold_days"]) == (4, 2, 4.0)
        return [(g["key"], g["open_deals"], g["stalled"]) for g in demo["groups"]], [
            (g["key"], g["open_deals"], g["stalled"]) for g in res["stall_totals"]
        ]

    by_team, team_totals = stalls("team")
    assert by_team == [("North", 2, 1), ("South", 1, 1), (None, 1, 0)]
    # Over all stages the fast deal (proposal, no team, no completed stay there) is open and not stalled.
    assert team_totals == [("North", 2, 1), ("South", 1, 1), (None, 2, 0)]
    by_region, _ = stalls("region")
    assert by_region == [("Uusimaa", 2, 2), ("Lappi", 1, 0), (None, 1, 0)]
    by_country, _ = stalls("country")
    assert by_country == [("FI", 1, 1), ("SE", 2, 1), (None, 1, 0)]
    # Without stalls_by the per-stage counts stay as they were, without groups.
    plain = _ok(client.get(f"{API}/forecast", headers=workspace.auth("read")))
    demo = next(s for s in plain["stalls"] if s["stage_key"] == "demo")
    assert (demo["stalled"], demo["groups"], plain["stall_totals"]) == (2, None, None)
    # Limited to the pipeline (the stage history is then read for its stages only): the same figures.
    pid = _ok(client.get(f"{API}/pipelines", headers=workspace.auth("read")))[0]["id"]
    one = _ok(client.get(f"{API}/forecast?stalls_by=team&pipeline_id={pid}", headers=workspace.auth("read")))
    demo = next(s for s in one["stalls"] if s["stage_key"] == "demo")
    assert (demo["open_deals"], demo["stalled"], demo["threshold_days"]) == (4, 2, 4.0)
    assert next(v for v in one["velocity"] if v["stage_key"] == "demo")["average_days"] == 2.0
    res = client.get(f"{API}/forecast?stalls_by=planet", headers=workspace.auth("read"))
    assert res.status_code == 422 and "stalls_by" in res.text


def test_cli_forecast_stalls_by_team(client, workspace, session_factory, monkeypatch, database_url, tmp_path):
    import json

    from typer.testing import CliRunner

    from suppilo.adapters.cli.main import app as cli_app
    from suppilo.config import get_settings

    _stall_setup(client, workspace, session_factory)
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        w = ["--workspace", workspace.slug]
        res = runner.invoke(cli_app, ["forecast", "--stalls-by", "team", *w, "--json"])
        assert res.exit_code == 0, res.output
        totals = json.loads(res.stdout)["stall_totals"]
        assert [(g["key"], g["stalled"]) for g in totals] == [("North", 1), ("South", 1), (None, 0)]
        res = runner.invoke(cli_app, ["forecast", "--stalls-by", "region", *w])
        assert res.exit_code == 0, res.output
        assert "Stalled deals by region" in res.stdout and "Uusimaa" in res.stdout
        res = runner.invoke(cli_app, ["forecast", "--stalls-by", "planet", *w])
        assert res.exit_code == 1 and "stalls_by must be one of" in res.output
    finally:
        get_settings.cache_clear()
