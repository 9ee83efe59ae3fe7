"""The sales CLI: list deals by stage, move a deal (a lost move without a reason is refused), tasks, forecast JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings
from suppilo.deals import service as deals_service
from suppilo.deals.models import Deal
from suppilo.deals.schemas import TaskCreate

API = "/api/v1"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _deal(client, ws, **body):
    res = client.post(f"{API}/deals", json=body, headers=ws.auth("write"))
    assert res.status_code == 201, res.text
    return res.json()


def test_list_move_and_forecast(cli_env: CliRunner, client, workspace, other_workspace, session_factory) -> None:
    ws = workspace
    close = (datetime.now(UTC).date() + timedelta(days=40)).isoformat()
    a = _deal(client, ws, name="Acme rollout", amount_minor=120000, currency="EUR", expected_close_date=close)
    b = _deal(client, ws, name="Beta pilot", amount_minor=30000, currency="EUR", expected_close_date=close)
    theirs = _deal(client, other_workspace, name="Theirs", amount_minor=5000, currency="EUR")
    w = ["--workspace", ws.slug]

    res = cli_env.invoke(cli_app, ["deals", "list", *w, "--json"])
    assert res.exit_code == 0, res.output
    assert [d["id"] for d in json.loads(res.stdout)] == [b["id"], a["id"]]

    res = cli_env.invoke(cli_app, ["deals", "move", str(a["id"]), "demo", *w])
    assert res.exit_code == 0, res.output
    res = cli_env.invoke(cli_app, ["deals", "list", "--stage", "demo", *w, "--json"])
    assert [d["name"] for d in json.loads(res.stdout)] == ["Acme rollout"]
    res = cli_env.invoke(cli_app, ["deals", "list", *w])
    # Rich may wrap the name in a narrow terminal.
    assert res.exit_code == 0 and "Acme" in res.stdout and "rollout" in res.stdout and "demo" in res.stdout

    res = cli_env.invoke(cli_app, ["deals", "move", str(b["id"]), "lost", *w])
    assert res.exit_code == 1 and "lost_reason" in res.output
    with session_factory() as s:
        assert s.get(Deal, b["id"]).status == "open"
    res = cli_env.invoke(cli_app, ["deals", "move", str(b["id"]), "lost", "--lost-reason", "no budget", *w, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["status"] == "lost"
    with session_factory() as s:
        assert s.get(Deal, b["id"]).lost_reason == "no budget"

    res = cli_env.invoke(cli_app, ["deals", "move", str(theirs["id"]), "demo", *w])
    assert res.exit_code == 1 and "not found" in res.output

    res = cli_env.invoke(cli_app, ["forecast", "--group-by", "month", *w, "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    totals = [t for g in data["groups"] for t in g["totals"]]
    assert data["group_by"] == "month" and sum(t["count"] for t in totals) == 1
    assert sum(t["best_case_minor"] for t in totals) == 120000
    res = cli_env.invoke(cli_app, ["forecast", "--group-by", "galaxy", *w])
    assert res.exit_code == 1 and "group_by" in res.output


def test_tasks_list_overdue(cli_env: CliRunner, client, workspace, session_factory) -> None:
    deal = _deal(client, workspace, name="Acme", amount_minor=1000, currency="EUR")
    now = datetime.now(UTC)
    with session_factory() as s:
        late = deals_service.create_task(
            s,
            workspace.id,
            TaskCreate(title="Call back", deal_id=deal["id"], due_at=now + timedelta(hours=1)),
            now=now,
        )
        deals_service.create_task(
            s, workspace.id, TaskCreate(title="Send deck", deal_id=deal["id"], due_at=now + timedelta(days=3)), now=now
        )
        late.due_at = now - timedelta(hours=2)
        s.commit()
    w = ["--workspace", workspace.slug]
    res = cli_env.invoke(cli_app, ["tasks", "list", *w, "--json"])
    assert res.exit_code == 0, res.output
    assert [t["title"] for t in json.loads(res.stdout)] == ["Call back", "Send deck"]
    res = cli_env.invoke(cli_app, ["tasks", "list", "--overdue", *w, "--json"])
    assert [t["title"] for t in json.loads(res.stdout)] == ["Call back"]
    res = cli_env.invoke(cli_app, ["tasks", "list", "--overdue", *w])
    assert res.exit_code == 0 and "Call back" in res.stdout and "Send deck" not in res.stdout


def test_assign_and_handoffs(cli_env: CliRunner, client, workspace, session_factory) -> None:
    import secrets

    from suppilo.workspaces import service as workspaces_service

    with session_factory() as s:
        user = workspaces_service.create_user(
            s, email=f"r-{secrets.token_hex(4)}@example.fi", name="R", password_hash=None
        )
        workspaces_service.add_member(s, workspace.id, user.id, "sales")
        s.commit()
        rep = user.id
    w = ["--workspace", workspace.slug]
    deal = _deal(client, workspace, name="Unowned")  # no rules yet: stays unowned
    assert deal["owner_id"] is None
    res = cli_env.invoke(cli_app, ["deals", "assign", "--deal", str(deal["id"]), *w])
    assert res.exit_code == 1 and "no assignment rule" in res.output
    res = client.put(
        "/api/v1/sales/assignment-rules",
        json={"rules": [{"name": "All", "conditions": {}, "user_id": rep}]},
        headers=workspace.auth("admin"),
    )
    assert res.status_code == 200, res.text
    res = cli_env.invoke(cli_app, ["deals", "assign", "--deal", str(deal["id"]), *w, "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["user_id"] == rep and got["rule_name"] == "All" and got["task_id"]
    res = cli_env.invoke(cli_app, ["tasks", "handoffs", "--status", "open", *w, "--json"])
    assert res.exit_code == 0, res.output
    assert [h["task"]["id"] for h in json.loads(res.stdout)] == [got["task_id"]]
    res = cli_env.invoke(cli_app, ["tasks", "handoffs", "--status", "overdue", *w, "--json"])
    assert json.loads(res.stdout) == []
    res = cli_env.invoke(cli_app, ["tasks", "handoffs", "--status", "sideways", *w])
    assert res.exit_code == 1 and "status" in res.output


def test_sales_settings_teams_and_rules(cli_env: CliRunner, client, workspace, session_factory, tmp_path) -> None:
    import secrets

    from suppilo.workspaces import service as workspaces_service

    with session_factory() as s:
        users = []
        for _ in range(2):
            u = workspaces_service.create_user(
                s, email=f"r-{secrets.token_hex(4)}@example.fi", name="R", password_hash=None
            )
            workspaces_service.add_member(s, workspace.id, u.id, "sales")
            users.append(u.id)
        s.commit()
    w = ["--workspace", workspace.slug]
    res = cli_env.invoke(
        cli_app,
        [
            "sales",
            "settings",
            "--stage",
            "decision",
            "--response-hours",
            "2",
            "--working-hours",
            '{"weekdays": [1, 2, 3]}',
            *w,
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert got["assign_on_stage"] == "decision" and got["response_hours"] == 2
    assert set(got["working_hours"]["days"]) == {"mon", "tue", "wed"}
    res = cli_env.invoke(cli_app, ["sales", "settings", "--working-hours", '{"weekdays": [9]}', *w])
    assert res.exit_code == 1 and "weekdays.0" in res.output
    res = cli_env.invoke(
        cli_app, ["sales", "team", "Inbound", "--member", str(users[0]), "--member", str(users[1]), *w, "--json"]
    )
    assert res.exit_code == 0, res.output
    team = json.loads(res.stdout)
    assert [m["user_id"] for m in team["members"]] == sorted(users)
    res = cli_env.invoke(cli_app, ["sales", "team", "Inbound", "--member", str(users[0]), *w, "--json"])
    assert json.loads(res.stdout)["id"] == team["id"] and len(json.loads(res.stdout)["members"]) == 1
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"name": "All", "conditions": {"country": ["FI"]}, "team_id": team["id"]}]}))
    res = cli_env.invoke(cli_app, ["sales", "rules", "--file", str(rules), *w, "--json"])
    assert res.exit_code == 0, res.output
    assert [r["name"] for r in json.loads(res.stdout)] == ["All"]
    res = cli_env.invoke(cli_app, ["sales", "rules", *w])
    assert res.exit_code == 0 and "All" in res.stdout and "round_robin" in res.stdout
    rules.write_text(
        json.dumps({"rules": [{"name": "Bad", "conditions": {"country": ["Finland"]}, "team_id": team["id"]}]})
    )
    res = cli_env.invoke(cli_app, ["sales", "rules", "--file", str(rules), *w])
    assert res.exit_code == 1 and "rules.0.conditions.country.0" in res.output


def test_the_whole_deal_from_the_cli(cli_env: CliRunner, client, workspace, other_workspace) -> None:
    """Create, qualify, log objections and activities, add and complete a task, propose and accept — then read it
    all back with ``deals show``; bad input is refused with the field named."""
    ws = workspace
    w = ["--workspace", ws.slug]

    def run(*args: str, code: int = 0) -> str:
        res = cli_env.invoke(cli_app, [*args, *w])
        assert res.exit_code == code, res.output
        return res.stdout if code == 0 else res.output

    pipelines = json.loads(run("deals", "pipelines", "--json"))
    assert [s["key"] for s in pipelines[0]["stages"]][:2] == ["qualification", "discovery_call"]
    contact = client.post(f"{API}/contacts", json={"email": "cli-buyer@example.fi"}, headers=ws.auth("write")).json()
    sku = "CLI-TENT-" + str(contact["id"])
    client.post(
        f"{API}/products",
        json={"sku": sku, "name": "Tent", "price_minor": 20000, "currency": "EUR"},
        headers=ws.auth("write"),
    )
    assert "currency" in run("deals", "create", "Bad", "--currency", "EURO", code=1)
    deal = json.loads(
        run(
            "deals",
            "create",
            "Club tents",
            "--contact",
            str(contact["id"]),
            "--stage",
            "demo",
            "--currency",
            "EUR",
            "--json",
        )
    )
    assert deal["contact_id"] == contact["id"]
    assert "budget_currency" in run("deals", "qualify", str(deal["id"]), "--budget", "500000", code=1)
    q = json.loads(
        run(
            "deals",
            "qualify",
            str(deal["id"]),
            "--budget",
            "500000",
            "--budget-currency",
            "eur",
            "--authority",
            "Board",
            "--decision-maker",
            "--need",
            "40 tents",
            "--status",
            "qualified",
            "--json",
        )
    )
    assert (q["budget_minor"], q["budget_currency"], q["decision_maker"], q["qualification_status"]) == (
        500000,
        "EUR",
        True,
        "qualified",
    )
    stale = run("deals", "qualify", str(deal["id"]), "--version", "1", "--timeline", "May", code=1)
    assert "changed meanwhile" in stale
    boss = client.post(f"{API}/contacts", json={"email": "cli-boss@example.fi"}, headers=ws.auth("write")).json()
    group = json.loads(run("deals", "contact", str(deal["id"]), str(boss["id"]), "--role", "decision maker", "--json"))
    assert [(c["contact_id"], c["primary"], c["role"]) for c in group] == [
        (contact["id"], True, None),
        (boss["id"], False, "decision maker"),
    ]
    assert "primary contact" in run("deals", "contact", str(deal["id"]), str(contact["id"]), code=1)
    run("deals", "objection", str(deal["id"]), "Too expensive", "--response", "Volume discount")
    run("deals", "activity", str(deal["id"]), "call", "Talked to the board")
    assert "in the past" in run(
        "tasks", "add", "Late", "--due", "2020-01-01T10:00:00+00:00", "--deal", str(deal["id"]), code=1
    )
    due = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    task = json.loads(
        run("tasks", "add", "Send the offer", "--due", due, "--deal", str(deal["id"]), "--kind", "email", "--json")
    )
    assert task["contact_id"] == contact["id"]
    assert json.loads(run("tasks", "complete", str(task["id"]), "--json"))["done_at"] is not None
    valid = (datetime.now(UTC).date() + timedelta(days=20)).isoformat()
    assert "line.0" in run(
        "deals", "propose", str(deal["id"]), "--title", "Offer", "--valid-until", valid, "--line", "nope", code=1
    )
    assert "no product with sku" in run(
        "deals", "propose", str(deal["id"]), "--title", "Offer", "--valid-until", valid, "--line", "NOPE:1", code=1
    )
    proposal = json.loads(
        run(
            "deals",
            "propose",
            str(deal["id"]),
            "--title",
            "Offer",
            "--valid-until",
            valid,
            "--line",
            f"{sku}:3",
            "--discount-bp",
            "1000",
            "--json",
        )
    )
    assert (proposal["subtotal_minor"], proposal["discount_minor"], proposal["total_minor"]) == (60000, 6000, 54000)
    assert json.loads(run("deals", "proposal", str(proposal["id"]), "accept", "--json"))["status"] == "accepted"
    shown = json.loads(run("deals", "show", str(deal["id"]), "--json"))
    assert shown["amount_minor"] == 54000 and shown["stage_key"] == "demo"
    assert [c["contact_id"] for c in shown["contacts"]] == [contact["id"], boss["id"]]
    assert [h["to"] for h in shown["history"]] == ["demo"]
    assert [o["text"] for o in shown["objections"]] == ["Too expensive"]
    assert [a["body"] for a in shown["activities"] if a["kind"] == "call"] == ["Talked to the board"]
    assert [t["title"] for t in shown["tasks"]] == ["Send the offer"]
    assert [p["status"] for p in shown["proposals"]] == ["accepted"]
    text = run("deals", "show", str(deal["id"]))
    assert "Club tents" in text and "Too expensive" in text
    # Another workspace's deal is not found from this one.
    theirs = client.post(f"{API}/deals", json={"name": "Theirs"}, headers=other_workspace.auth("write")).json()
    assert "not found" in run("deals", "show", str(theirs["id"]), code=1)
    assert "not found" in run("deals", "objection", str(theirs["id"]), "x", code=1)
