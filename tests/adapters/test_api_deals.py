"""Sales pipeline over HTTP: pipelines and boards, deal moves with history, refused moves, optimistic locking,
lifecycle effects, tasks, objections, activities, the forecast and tenant isolation."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from suppilo.commerce.models import Order
from suppilo.contacts.models import StageChange
from suppilo.deals import service as deals_service
from suppilo.deals.models import Deal, DealStageChange, Task
from suppilo.deals.schemas import TaskCreate
from suppilo.workspaces import service as workspaces_service

API = "/api/v1"


class _db:
    """One read in a short-lived session, so the app's requests never wait on a test's open transaction."""

    def __init__(self, factory):
        self.factory = factory

    def _run(self, name, *args):
        with self.factory() as s:
            out = getattr(s, name)(*args)
            if name == "scalars":
                out = out.all()
            s.expunge_all()
            return out

    def get(self, *args):
        return self._run("get", *args)

    def scalar(self, *args):
        return self._run("scalar", *args)

    def scalars(self, *args):
        return self._run("scalars", *args)


def _member(session_factory, ws) -> int:
    with session_factory() as s:
        user = workspaces_service.create_user(
            s, email=f"rep-{secrets.token_hex(4)}@example.fi", name="Rep", password_hash=None
        )
        workspaces_service.add_member(s, ws.id, user.id, "sales")
        s.commit()
        return user.id


def _pipeline(client, ws):
    res = client.get(f"{API}/pipelines", headers=ws.auth("read"))
    assert res.status_code == 200, res.text
    return res.json()[0]


def _stage(pipeline, key):
    return next(s for s in pipeline["stages"] if s["key"] == key)["id"]


def _contact(client, ws, email="buyer@example.fi"):
    res = client.post(f"{API}/contacts", json={"email": email}, headers=ws.auth("write"))
    assert res.status_code == 201, res.text
    return res.json()


def _deal(client, ws, **body):
    res = client.post(f"{API}/deals", json={"name": "Acme rollout", **body}, headers=ws.auth("write"))
    assert res.status_code == 201, res.text
    return res.json()


def _move(client, ws, deal_id, stage_id, **extra):
    return client.post(f"{API}/deals/{deal_id}/move", json={"stage_id": stage_id, **extra}, headers=ws.auth("write"))


def test_default_pipeline_has_the_standard_stages_once(client, workspace):
    first = _pipeline(client, workspace)
    again = client.get(f"{API}/pipelines", headers=workspace.auth("read")).json()
    assert len(again) == 1 and again[0]["id"] == first["id"] and first["is_default"] is True
    assert [(s["key"], s["probability"], s["kind"]) for s in first["stages"]] == [
        ("qualification", 10, "open"),
        ("discovery_call", 20, "open"),
        ("demo", 40, "open"),
        ("proposal", 60, "open"),
        ("negotiation", 80, "open"),
        ("won", 100, "won"),
        ("lost", 0, "lost"),
    ]


def test_pipeline_crud_and_invalid_stage_sets(client, workspace):
    body = {
        "name": "Partners",
        "requires_amount_to_win": False,
        "stages": [
            {"key": "intro", "label": "Intro", "probability": 30},
            {"key": "signed", "label": "Signed", "probability": 100, "kind": "won"},
            {"key": "dropped", "label": "Dropped", "probability": 0, "kind": "lost"},
        ],
    }
    res = client.post(f"{API}/pipelines", json=body, headers=workspace.auth("write"))
    assert res.status_code == 201, res.text
    pid = res.json()["id"]
    assert client.post(f"{API}/pipelines", json=body, headers=workspace.auth("write")).status_code == 409
    no_won = {
        **body,
        "name": "Broken",
        "stages": [body["stages"][0], body["stages"][2], body["stages"][0] | {"key": "x"}],
    }
    res = client.post(f"{API}/pipelines", json=no_won, headers=workspace.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "stages"
    stages = [*body["stages"][:1], {"key": "trial", "label": "Trial", "probability": 50}, *body["stages"][1:]]
    res = client.patch(f"{API}/pipelines/{pid}", json={"stages": stages}, headers=workspace.auth("write"))
    assert res.status_code == 200, res.text
    assert [s["key"] for s in res.json()["stages"]] == ["intro", "trial", "signed", "dropped"]
    # An unused stage can be dropped.
    res = client.patch(
        f"{API}/pipelines/{pid}", json={"stages": [stages[0], *stages[2:]]}, headers=workspace.auth("write")
    )
    assert res.status_code == 200 and [s["key"] for s in res.json()["stages"]] == ["intro", "signed", "dropped"]
    res = client.patch(f"{API}/pipelines/{pid}", json={"stages": stages}, headers=workspace.auth("write"))
    deal = _deal(client, workspace, pipeline_id=pid)
    res = client.patch(f"{API}/pipelines/{pid}", json={"stages": stages[1:]}, headers=workspace.auth("write"))
    assert res.status_code == 409 and res.json()["error"]["code"] == "stage_in_use"
    # Once the deal moved on, its history still holds the stage: it stays.
    current = client.get(f"{API}/pipelines/{pid}", headers=workspace.auth("read")).json()
    assert _move(client, workspace, deal["id"], _stage(current, "trial")).status_code == 200
    res = client.patch(f"{API}/pipelines/{pid}", json={"stages": stages[1:]}, headers=workspace.auth("write"))
    assert res.status_code == 409 and "history" in res.json()["error"]["message"]
    assert len(client.get(f"{API}/deals/{deal['id']}/history", headers=workspace.auth("read")).json()) == 2
    res = client.patch(f"{API}/deals/{deal['id']}", json={"version": 2, "stage_id": 1}, headers=workspace.auth("write"))
    assert res.status_code == 422
    assert client.delete(f"{API}/pipelines/{pid}", headers=workspace.auth("write")).status_code == 409


def test_moves_record_history_and_board_counts(client, workspace):
    pipeline = _pipeline(client, workspace)
    deal = _deal(client, workspace, amount_minor=500_000, currency="EUR")
    assert deal["stage_id"] == _stage(pipeline, "qualification") and deal["status"] == "open"
    _deal(client, workspace, name="Small", amount_minor=1_000)
    _deal(client, workspace, name="US", amount_minor=2_000, currency="USD")
    res = _move(client, workspace, deal["id"], _stage(pipeline, "demo"))
    assert res.status_code == 200, res.text
    res = _move(client, workspace, deal["id"], _stage(pipeline, "proposal"))
    assert res.json()["version"] == 3
    history = client.get(f"{API}/deals/{deal['id']}/history", headers=workspace.auth("read")).json()
    assert [(h["from_stage_id"], h["to_stage_id"]) for h in history] == [
        (None, _stage(pipeline, "qualification")),
        (_stage(pipeline, "qualification"), _stage(pipeline, "demo")),
        (_stage(pipeline, "demo"), _stage(pipeline, "proposal")),
    ]
    board = client.get(f"{API}/pipelines/{pipeline['id']}/board?per_stage=1", headers=workspace.auth("read")).json()
    cols = {c["stage"]["key"]: c for c in board["columns"]}
    assert cols["qualification"]["count"] == 2 and len(cols["qualification"]["deals"]) == 1
    assert cols["qualification"]["sums"] == [
        {"currency": "EUR", "amount_minor": 1_000},
        {"currency": "USD", "amount_minor": 2_000},
    ]
    assert cols["proposal"]["count"] == 1 and cols["proposal"]["sums"] == [{"currency": "EUR", "amount_minor": 500_000}]
    assert cols["demo"]["count"] == 0 and cols["demo"]["sums"] == []
    page = client.get(f"{API}/deals?limit=2&status=open", headers=workspace.auth("read")).json()
    rest = client.get(f"{API}/deals?limit=2&cursor={page['next_cursor']}", headers=workspace.auth("read")).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    staged = client.get(f"{API}/deals?stage_id={_stage(pipeline, 'proposal')}", headers=workspace.auth("read")).json()
    assert [d["id"] for d in staged["items"]] == [deal["id"]]


def test_impossible_moves_are_refused_with_reason_and_path(client, workspace, session_factory):
    pipeline = _pipeline(client, workspace)
    other = client.post(
        f"{API}/pipelines",
        json={
            "name": "Other",
            "stages": [
                {"key": "a", "label": "A", "probability": 50},
                {"key": "w", "label": "W", "probability": 100, "kind": "won"},
                {"key": "l", "label": "L", "probability": 0, "kind": "lost"},
            ],
        },
        headers=workspace.auth("write"),
    ).json()
    deal = _deal(client, workspace)
    res = _move(client, workspace, deal["id"], _stage(other, "a"))
    assert res.status_code == 422
    assert res.json()["error"]["code"] == "stage_not_in_pipeline" and res.json()["error"]["path"] == "stage_id"
    res = _move(client, workspace, deal["id"], _stage(pipeline, "won"))
    assert res.status_code == 422
    assert res.json()["error"]["code"] == "amount_required" and res.json()["error"]["path"] == "amount_minor"
    res = _move(client, workspace, deal["id"], _stage(pipeline, "lost"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "lost_reason"
    res = _move(client, workspace, deal["id"], _stage(pipeline, "lost"), lost_reason="   ")
    assert res.status_code == 422 and res.json()["error"]["code"] == "lost_reason_required"
    stored = _db(session_factory).get(Deal, deal["id"])
    assert stored.stage_id == deal["stage_id"] and stored.version == 1 and stored.status == "open"
    changes = _db(session_factory).scalars(select(DealStageChange).where(DealStageChange.deal_id == deal["id"]))
    assert len(changes) == 1
    assert _db(session_factory).scalar(select(Order).where(Order.workspace_id == workspace.id)) is None
    # A pipeline that does not require an amount lets a deal without one be won.
    free = _deal(client, workspace, pipeline_id=other["id"])
    client.patch(
        f"{API}/pipelines/{other['id']}", json={"requires_amount_to_win": False}, headers=workspace.auth("write")
    )
    res = _move(client, workspace, free["id"], _stage(other, "w"))
    assert res.status_code == 200 and res.json()["status"] == "won"
    res = _move(client, workspace, free["id"], _stage(other, "a"))
    assert res.status_code == 422 and res.json()["error"]["code"] == "deal_closed"


def test_version_conflict_changes_nothing(client, workspace, session_factory):
    deal = _deal(client, workspace, amount_minor=1_000)
    res = client.patch(
        f"{API}/deals/{deal['id']}", json={"version": 1, "amount_minor": 2_000}, headers=workspace.auth("write")
    )
    assert res.status_code == 200 and res.json()["version"] == 2 and res.json()["amount_minor"] == 2_000
    stale = client.patch(
        f"{API}/deals/{deal['id']}",
        json={"version": 1, "amount_minor": 9_999, "name": "Stale"},
        headers=workspace.auth("write"),
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "version_conflict" and stale.json()["error"]["path"] == "version"
    stored = client.get(f"{API}/deals/{deal['id']}", headers=workspace.auth("read")).json()
    assert (stored["amount_minor"], stored["name"], stored["version"]) == (2_000, "Acme rollout", 2)
    pipeline = _pipeline(client, workspace)
    res = _move(client, workspace, deal["id"], _stage(pipeline, "demo"), version=1)
    assert res.status_code == 409 and res.json()["error"]["code"] == "version_conflict"
    assert (
        client.get(f"{API}/deals/{deal['id']}", headers=workspace.auth("read")).json()["stage_id"] == deal["stage_id"]
    )


def test_lifecycle_opening_winning_and_losing(client, workspace, session_factory):
    pipeline = _pipeline(client, workspace)
    buyer = _contact(client, workspace, "won@example.fi")
    deal = _deal(client, workspace, contact_id=buyer["id"], amount_minor=120_000, currency="EUR")
    assert (
        client.get(f"{API}/contacts/{buyer['id']}", headers=workspace.auth("read")).json()["lifecycle_stage"]
        == "decision"
    )
    res = _move(client, workspace, deal["id"], _stage(pipeline, "won"))
    assert res.status_code == 200 and res.json()["won_at"] is not None
    assert (
        client.get(f"{API}/contacts/{buyer['id']}", headers=workspace.auth("read")).json()["lifecycle_stage"]
        == "customer"
    )
    order = _db(session_factory).scalar(
        select(Order).where(Order.workspace_id == workspace.id, Order.external_id == f"deal:{deal['id']}")
    )
    assert (order.contact_id, order.total_minor, order.currency) == (buyer["id"], 120_000, "EUR")
    reason = _db(session_factory).scalar(
        select(StageChange.reason).where(StageChange.contact_id == buyer["id"], StageChange.to_stage == "customer")
    )
    assert "first_order" in reason

    prospect = _contact(client, workspace, "lost@example.fi")
    lost = _deal(client, workspace, contact_id=prospect["id"])
    res = _move(client, workspace, lost["id"], _stage(pipeline, "lost"), lost_reason="chose a competitor")
    assert res.status_code == 200 and res.json()["lost_reason"] == "chose a competitor"
    contact = client.get(f"{API}/contacts/{prospect['id']}", headers=workspace.auth("read")).json()
    assert contact["lifecycle_stage"] == "consideration"
    change = _db(session_factory).scalars(
        select(StageChange).where(StageChange.contact_id == prospect["id"]).order_by(StageChange.id.desc())
    )[0]
    assert (change.from_stage, change.to_stage, change.source) == ("decision", "consideration", "rule")
    assert "chose a competitor" in change.reason
    history = client.get(f"{API}/deals/{lost['id']}/history", headers=workspace.auth("read")).json()
    assert history[-1]["reason"] == "chose a competitor"
    # Reopening the lost deal brings the contact back to decision; its tasks default to the deal's contact.
    res = _move(client, workspace, lost["id"], _stage(pipeline, "demo"))
    assert res.status_code == 200 and (res.json()["status"], res.json()["lost_reason"]) == ("open", None)
    contact = client.get(f"{API}/contacts/{prospect['id']}", headers=workspace.auth("read")).json()
    assert contact["lifecycle_stage"] == "decision"
    due = (datetime.now(UTC) + timedelta(hours=4)).isoformat()
    task = client.post(
        f"{API}/tasks",
        json={"title": "Call back", "due_at": due, "deal_id": lost["id"]},
        headers=workspace.auth("write"),
    )
    assert task.status_code == 201 and task.json()["contact_id"] == prospect["id"]


def test_tasks_due_times_completion_and_overdue_list(client, workspace, session_factory):
    owner = _member(session_factory, workspace)
    deal = _deal(client, workspace, owner_id=owner)
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    res = client.post(
        f"{API}/tasks", json={"title": "Call", "due_at": past, "owner_id": owner}, headers=workspace.auth("write")
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "due_at"
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    res = client.post(
        f"{API}/tasks",
        json={"title": "Send proposal", "kind": "email", "due_at": future, "deal_id": deal["id"], "owner_id": owner},
        headers=workspace.auth("write"),
    )
    assert res.status_code == 201, res.text
    upcoming = res.json()
    with session_factory() as s:
        # A task created yesterday for this morning is overdue now.
        yesterday = datetime.now(UTC) - timedelta(days=1)
        due = datetime.now(UTC) - timedelta(hours=2)
        late = deals_service.create_task(
            s,
            workspace.id,
            TaskCreate(title="Follow up", due_at=due, owner_id=owner, deal_id=deal["id"]),
            now=yesterday,
        )
        done = deals_service.create_task(
            s, workspace.id, TaskCreate(title="Done", due_at=due, owner_id=owner), now=yesterday
        )
        s.commit()
        late_id, done_id = late.id, done.id
    assert client.post(f"{API}/tasks/{done_id}/complete", headers=workspace.auth("write")).json()["done_at"] is not None
    overdue = client.get(f"{API}/tasks?owner_id={owner}&overdue=true", headers=workspace.auth("read")).json()
    assert [t["id"] for t in overdue] == [late_id]
    all_tasks = client.get(f"{API}/tasks?owner_id={owner}", headers=workspace.auth("read")).json()
    assert {t["id"] for t in all_tasks} == {late_id, done_id, upcoming["id"]}
    res = client.patch(f"{API}/tasks/{upcoming['id']}", json={"due_at": past}, headers=workspace.auth("write"))
    assert res.status_code == 422
    bad_owner = client.post(
        f"{API}/tasks",
        json={"title": "X", "due_at": future, "owner_id": owner + 10_000},
        headers=workspace.auth("write"),
    )
    assert bad_owner.status_code == 422 and bad_owner.json()["error"]["path"] == "owner_id"


def test_objections_and_activities(client, workspace):
    buyer = _contact(client, workspace)
    deal = _deal(client, workspace, contact_id=buyer["id"])
    res = client.post(
        f"{API}/deals/{deal['id']}/objections",
        json={"text": "Too expensive", "response": "ROI in 6 months"},
        headers=workspace.auth("write"),
    )
    assert res.status_code == 201
    objections = client.get(f"{API}/deals/{deal['id']}/objections", headers=workspace.auth("read")).json()
    assert [(o["text"], o["response"]) for o in objections] == [("Too expensive", "ROI in 6 months")]
    res = client.post(
        f"{API}/activities",
        json={"kind": "call", "body": "Intro call", "deal_id": deal["id"]},
        headers=workspace.auth("write"),
    )
    assert res.status_code == 201
    client.post(
        f"{API}/activities",
        json={"kind": "note", "body": "Met at fair", "contact_id": buyer["id"]},
        headers=workspace.auth("write"),
    )
    assert client.post(f"{API}/activities", json={"kind": "note"}, headers=workspace.auth("write")).status_code == 422
    on_deal = client.get(f"{API}/activities?deal_id={deal['id']}", headers=workspace.auth("read")).json()
    assert [a["body"] for a in on_deal] == ["Intro call"]
    on_contact = client.get(f"{API}/activities?contact_id={buyer['id']}", headers=workspace.auth("read")).json()
    # An activity on a deal also shows on the deal's contact.
    assert {a["body"] for a in on_contact} == {"Met at fair", "Intro call"}


def test_forecast_on_a_hand_built_pipeline(client, workspace, session_factory):
    a = _member(session_factory, workspace)
    b = _member(session_factory, workspace)
    p = _pipeline(client, workspace)
    d1 = _deal(client, workspace, owner_id=a, amount_minor=100_000, expected_close_date="2026-03-15")  # demo 40%
    d2 = _deal(client, workspace, owner_id=b, amount_minor=50_000, expected_close_date="2026-03-20")  # negotiation 80%
    d3 = _deal(client, workspace, owner_id=a, amount_minor=20_000, currency="USD", expected_close_date="2026-04-01")
    d4 = _deal(client, workspace, owner_id=a, amount_minor=30_000)  # won, not in the forecast
    _move(client, workspace, d1["id"], _stage(p, "demo"))
    _move(client, workspace, d2["id"], _stage(p, "demo"))
    _move(client, workspace, d2["id"], _stage(p, "negotiation"))
    _move(client, workspace, d3["id"], _stage(p, "proposal"))  # 60%
    _move(client, workspace, d4["id"], _stage(p, "won"))
    # Backdate the histories: every deal opened on day 0; d1 entered demo on day 2; d2 demo day 4, negotiation
    # day 10; d3 proposal day 6; d4 won day 1.
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    days = {
        (d1["id"], "demo"): 2,
        (d2["id"], "demo"): 4,
        (d2["id"], "negotiation"): 10,
        (d3["id"], "proposal"): 6,
        (d4["id"], "won"): 1,
    }
    stage_key = {s["id"]: s["key"] for s in p["stages"]}
    with session_factory() as s:
        for change in s.scalars(select(DealStageChange).where(DealStageChange.workspace_id == workspace.id)):
            offset = days.get((change.deal_id, stage_key[change.to_stage_id]), 0)
            change.changed_at = t0 + timedelta(days=offset)
        # d1 has sat in demo for 20 days, d3 in proposal for 30.
        s.execute(
            update(Deal).where(Deal.id == d1["id"]).values(stage_entered_at=datetime.now(UTC) - timedelta(days=20))
        )
        s.execute(
            update(Deal).where(Deal.id == d3["id"]).values(stage_entered_at=datetime.now(UTC) - timedelta(days=30))
        )
        s.commit()

    res = client.get(f"{API}/forecast?group_by=month", headers=workspace.auth("read"))
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["currency"] == "EUR" and body["rates_source"] == "none"
    groups = {g["key"]: g["totals"] for g in body["groups"]}
    assert groups["2026-03"] == [
        {
            "currency": "EUR",
            "converted": False,
            "count": 2,
            "best_case_minor": 150_000,
            "weighted_minor": 80_000,
            "commit_minor": 50_000,
        }
    ]
    # No rate for USD: reported on its own, never added to euros.
    assert groups["2026-04"] == [
        {
            "currency": "USD",
            "converted": False,
            "count": 1,
            "best_case_minor": 20_000,
            "weighted_minor": 12_000,
            "commit_minor": 0,
        }
    ]
    with_rate = client.get(f"{API}/forecast?group_by=owner&rate=USD:0.9", headers=workspace.auth("read")).json()
    owners = {g["key"]: g["totals"] for g in with_rate["groups"]}
    assert owners[str(a)] == [
        {
            "currency": "EUR",
            "converted": True,
            "count": 2,
            "best_case_minor": 118_000,
            "weighted_minor": 50_800,
            "commit_minor": 0,
        }
    ]
    assert owners[str(b)][0]["weighted_minor"] == 40_000 and owners[str(b)][0]["commit_minor"] == 50_000
    velocity = {v["stage_key"]: v for v in body["velocity"]}
    # qualification stays: 2, 4, 6 and 1 days → 3.25; demo: d2 6 days (d1 still there).
    assert (velocity["qualification"]["stays"], velocity["qualification"]["average_days"]) == (4, 3.25)
    assert (velocity["demo"]["stays"], velocity["demo"]["average_days"]) == (1, 6.0)
    # Where deals stall: d1 is in demo for 20 days, over twice demo's 6-day average; proposal has no completed
    # stay to compare with, so d3 is not judged.
    stalls = {x["stage_key"]: x for x in body["stalls"]}
    assert (stalls["demo"]["open_deals"], stalls["demo"]["stalled"], stalls["demo"]["threshold_days"]) == (1, 1, 12.0)
    assert (stalls["proposal"]["open_deals"], stalls["proposal"]["stalled"]) == (1, 0)
    assert stalls["proposal"]["threshold_days"] is None
    assert (stalls["qualification"]["open_deals"], stalls["qualification"]["threshold_days"]) == (0, 6.5)
    conversion = {c["stage_key"]: c for c in body["conversion"]}
    assert (conversion["qualification"]["entered"], conversion["qualification"]["advanced"]) == (4, 4)
    assert (conversion["demo"]["entered"], conversion["demo"]["advanced"], conversion["demo"]["rate"]) == (2, 1, 0.5)
    # Once the workspace has an exchange rate, dollars are converted through it (a request's rate still wins).
    res = client.post(
        f"{API}/rates",
        json=[{"date": "2020-01-01", "base": "USD", "quote": "EUR", "rate": "0.8"}],
        headers=workspace.auth("write"),
    )
    assert res.status_code == 201, res.text
    tabled = client.get(f"{API}/forecast?group_by=month", headers=workspace.auth("read")).json()
    assert tabled["rates_source"] == "exchange_rates"
    april = {g["key"]: g["totals"] for g in tabled["groups"]}["2026-04"]
    assert [(t["currency"], t["converted"], t["best_case_minor"], t["weighted_minor"]) for t in april] == [
        ("EUR", True, 16_000, 9_600)
    ]
    override = client.get(f"{API}/forecast?group_by=month&rate=USD:0.9", headers=workspace.auth("read")).json()
    assert override["rates_source"] == "request"
    assert {g["key"]: g["totals"] for g in override["groups"]}["2026-04"][0]["best_case_minor"] == 18_000
    bad = client.get(f"{API}/forecast?rate=USD:abc", headers=workspace.auth("read"))
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "rate.0"


def test_tenant_isolation(client, workspace, other_workspace, session_factory):
    pipeline = _pipeline(client, workspace)
    deal = _deal(client, workspace, amount_minor=1_000)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    task = client.post(f"{API}/tasks", json={"title": "T", "due_at": future}, headers=workspace.auth("write")).json()
    o = other_workspace.auth("admin")
    assert client.get(f"{API}/deals/{deal['id']}", headers=o).status_code == 404
    assert (
        client.patch(f"{API}/deals/{deal['id']}", json={"version": 1, "name": "Hijack"}, headers=o).status_code == 404
    )
    assert (
        client.post(
            f"{API}/deals/{deal['id']}/move", json={"stage_id": _stage(pipeline, "demo")}, headers=o
        ).status_code
        == 404
    )
    assert client.delete(f"{API}/deals/{deal['id']}", headers=o).status_code == 404
    assert client.get(f"{API}/deals/{deal['id']}/history", headers=o).status_code == 404
    assert client.post(f"{API}/deals/{deal['id']}/objections", json={"text": "x"}, headers=o).status_code == 404
    assert client.get(f"{API}/pipelines/{pipeline['id']}", headers=o).status_code == 404
    assert client.get(f"{API}/pipelines/{pipeline['id']}/board", headers=o).status_code == 404
    assert client.patch(f"{API}/pipelines/{pipeline['id']}", json={"name": "Mine"}, headers=o).status_code == 404
    assert client.delete(f"{API}/pipelines/{pipeline['id']}", headers=o).status_code == 404
    assert client.get(f"{API}/tasks/{task['id']}", headers=o).status_code == 404
    assert client.post(f"{API}/tasks/{task['id']}/complete", headers=o).status_code == 404
    assert client.delete(f"{API}/tasks/{task['id']}", headers=o).status_code == 404
    # Their own deal may not use our pipeline, stage or deal either.
    res = client.post(f"{API}/deals", json={"name": "X", "pipeline_id": pipeline["id"]}, headers=o)
    assert res.status_code == 404 and res.json()["error"]["path"] == "pipeline_id"
    theirs = client.post(f"{API}/deals", json={"name": "Theirs"}, headers=o).json()
    res = client.post(f"{API}/deals/{theirs['id']}/move", json={"stage_id": _stage(pipeline, "demo")}, headers=o)
    assert res.status_code == 404 and res.json()["error"]["path"] == "stage_id"
    res = client.post(f"{API}/tasks", json={"title": "T", "due_at": future, "deal_id": deal["id"]}, headers=o)
    assert res.status_code == 404
    assert client.get(f"{API}/deals", headers=o).json()["items"] == [theirs]
    assert client.get(f"{API}/tasks", headers=o).json() == []
    assert [g["key"] for g in client.get(f"{API}/forecast", headers=o).json()["groups"]] == []
    stored = _db(session_factory).get(Deal, deal["id"])
    assert (stored.name, stored.stage_id, stored.version) == ("Acme rollout", deal["stage_id"], 1)
    assert _db(session_factory).get(Task, task["id"]).done_at is None
    assert client.get(f"{API}/pipelines/{pipeline['id']}", headers=workspace.auth("read")).json()["name"] == "Sales"


def test_a_deal_has_a_buying_group(client, workspace, other_workspace, session_factory):
    """Several contacts per deal: the primary one plus others with roles; foreign contacts and deals are 404, the
    primary contact cannot be added twice, adding again changes the role, a merge moves the place."""
    w = workspace.auth("write")

    def person(email, **extra):
        res = client.post(f"{API}/contacts", json={"email": email, **extra}, headers=w)
        assert res.status_code == 201, res.text
        return res.json()["id"]

    buyer, boss, user = person("buyer@bg.example", first_name="Bea"), person("boss@bg.example"), person("u@bg.example")
    deal = client.post(f"{API}/deals", json={"name": "Group", "contact_id": buyer}, headers=w).json()
    url = f"{API}/deals/{deal['id']}/contacts"
    got = client.post(url, json={"contact_id": boss, "role": "decision maker"}, headers=w)
    assert got.status_code == 201
    assert [(c["contact_id"], c["role"], c["primary"]) for c in got.json()] == [
        (buyer, None, True),
        (boss, "decision maker", False),
    ]
    assert got.json()[0]["name"] == "Bea"
    client.post(url, json={"contact_id": user, "role": "user"}, headers=w)
    again = client.post(url, json={"contact_id": user, "role": "champion"}, headers=w).json()
    assert [(c["contact_id"], c["role"]) for c in again][1:] == [(boss, "decision maker"), (user, "champion")]
    res = client.post(url, json={"contact_id": buyer}, headers=w)
    assert res.status_code == 422 and res.json()["error"]["code"] == "primary_contact"
    theirs = client.post(f"{API}/contacts", json={"email": "x@bg.example"}, headers=other_workspace.auth("write"))
    res = client.post(url, json={"contact_id": theirs.json()["id"]}, headers=w)
    assert res.status_code == 404 and res.json()["error"]["path"] == "contact_id"
    their_deal = client.post(f"{API}/deals", json={"name": "Theirs"}, headers=other_workspace.auth("write")).json()
    assert client.get(f"{API}/deals/{their_deal['id']}/contacts", headers=w).status_code == 404
    assert (
        client.post(f"{API}/deals/{their_deal['id']}/contacts", json={"contact_id": boss}, headers=w).status_code == 404
    )
    assert client.delete(f"{url}/{user}", headers=w).status_code == 204
    assert client.delete(f"{url}/{user}", headers=w).status_code == 404
    # A merge of the boss into another contact moves the boss's place in the group.
    from suppilo.deals import service as deals_service

    other = person("boss2@bg.example")
    with session_factory() as s:
        deals_service.move_contact(s, workspace.id, other, boss)
        s.commit()
    group = client.get(url, headers=workspace.auth("read")).json()
    assert [(c["contact_id"], c["role"]) for c in group] == [(buyer, None), (other, "decision maker")]
    # Through the API's contact merge: merging the group member away keeps its place under the kept contact, and a
    # member merged into the primary contact is not listed twice.
    kept = person("kept@bg.example")
    assert client.post(f"{API}/contacts/{kept}/merge", json={"other_id": other}, headers=w).status_code == 200
    group = client.get(url, headers=workspace.auth("read")).json()
    assert [(c["contact_id"], c["role"], c["primary"]) for c in group] == [
        (buyer, None, True),
        (kept, "decision maker", False),
    ]
    assert client.post(f"{API}/contacts/{buyer}/merge", json={"other_id": kept}, headers=w).status_code == 200
    assert [c["contact_id"] for c in client.get(url, headers=workspace.auth("read")).json()] == [buyer]
