"""Owner assignment over HTTP: teams, territory rules with field-path errors, round-robin (also concurrent),
load-balanced, the stage trigger, deals created without an owner, hand-off tasks due in working hours, overdue
hand-offs and measured response times."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from suppilo.deals import assignment
from suppilo.deals.models import SalesTeam, Task
from suppilo.engine.working_hours import due_in_working_hours, parse_working_hours
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.models import AuditLog

API = "/api/v1"


def _member(session_factory, ws, timezone: str = "UTC") -> int:
    with session_factory() as s:
        user = workspaces_service.create_user(
            s, email=f"rep-{secrets.token_hex(4)}@example.fi", name="Rep", password_hash=None
        )
        user.timezone = timezone
        workspaces_service.add_member(s, ws.id, user.id, "sales")
        s.commit()
        return user.id


def _ok(res, code=200):
    assert res.status_code == code, res.text
    return res.json()


def _team(client, ws, name, members, inactive=()):
    body = {"name": name, "members": members, "inactive": list(inactive)}
    return _ok(client.post(f"{API}/sales/teams", json=body, headers=ws.auth("admin")), 201)


def _rules(client, ws, rules):
    return client.put(f"{API}/sales/assignment-rules", json={"rules": rules}, headers=ws.auth("admin"))


def _contact(client, ws, **fields):
    body = {"email": f"lead-{secrets.token_hex(4)}@example.org", **fields}
    return _ok(client.post(f"{API}/contacts", json=body, headers=ws.auth("write")), 201)


def _company(client, ws, **fields):
    body = {"name": f"Co {secrets.token_hex(3)}", **fields}
    return _ok(client.post(f"{API}/companies", json=body, headers=ws.auth("write")), 201)


def _assign(client, ws, **body):
    return client.post(f"{API}/sales/assign", json=body, headers=ws.auth("write"))


def test_territory_rules_pick_user_or_team_and_record_the_rule(client, workspace, session_factory):
    nordic, baltic, big = (_member(session_factory, workspace) for _ in range(3))
    team = _team(client, workspace, "Baltics", [baltic])
    _ok(
        _rules(
            client,
            workspace,
            [
                {"name": "Enterprise", "conditions": {"company_size_min": 1000}, "user_id": big},
                {"name": "Nordics", "conditions": {"country": ["fi", "SE"]}, "user_id": nordic},
                {
                    "name": "Baltic retail",
                    "conditions": {"country": ["LV"], "industry": ["Retail"]},
                    "team_id": team["id"],
                },
            ],
        )
    )
    fi = _contact(client, workspace, country="FI")
    got = _ok(_assign(client, workspace, contact_id=fi["id"]))
    assert (got["user_id"], got["rule_name"], got["distribution"]) == (nordic, "Nordics", "user")
    assert _ok(client.get(f"{API}/contacts/{fi['id']}", headers=workspace.auth("read")))["owner_id"] == nordic

    shop = _company(client, workspace, industry="retail", country="LV", employees=40)
    lv = _contact(client, workspace, country="LV", company_id=shop["id"])
    got = _ok(_assign(client, workspace, contact_id=lv["id"]))
    assert (got["user_id"], got["team_id"], got["distribution"]) == (baltic, team["id"], "round_robin")

    corp = _company(client, workspace, industry="Retail", country="LV", employees=5000)
    lv_big = _contact(client, workspace, country="LV", company_id=corp["id"])
    assert _ok(_assign(client, workspace, contact_id=lv_big["id"], dry_run=True))["user_id"] == big

    nowhere = _contact(client, workspace, country="DE")
    res = _assign(client, workspace, contact_id=nowhere["id"])
    assert res.status_code == 404 and res.json()["error"]["code"] == "no_rule"
    # An owned contact is not reassigned unless asked to.
    assert _assign(client, workspace, contact_id=fi["id"]).status_code == 409

    log = _ok(client.get(f"{API}/sales/assignments?subject_type=contact", headers=workspace.auth("read")))
    assert [(r["subject_id"], r["rule_name"]) for r in log] == [(lv["id"], "Baltic retail"), (fi["id"], "Nordics")]
    with session_factory() as s:
        audit = s.scalars(
            select(AuditLog).where(AuditLog.workspace_id == workspace.id, AuditLog.action == "owner_assigned")
        ).all()
    assert {a.subject_id for a in audit} == {fi["id"], lv["id"]}
    activities = _ok(client.get(f"{API}/activities?contact_id={fi['id']}", headers=workspace.auth("read")))
    assert any(a["kind"] == "system" and "Nordics" in a["body"] for a in activities)


def test_invalid_rules_and_teams_name_the_field(client, workspace, other_workspace, session_factory):
    user = _member(session_factory, workspace)
    stranger = _member(session_factory, other_workspace)
    cases = [
        ([{"name": "x", "conditions": {"country": ["FIN"]}, "user_id": user}], "rules.0.conditions.country.0"),
        ([{"name": "x", "conditions": {"colour": ["red"]}, "user_id": user}], "rules.0.conditions.colour"),
        (
            [
                {"name": "ok", "conditions": {}, "user_id": user},
                {"name": "x", "conditions": {"company_size_min": 10, "company_size_max": 5}, "user_id": user},
            ],
            "rules.1.conditions.company_size_max",
        ),
        ([{"name": "x", "conditions": {}}], "rules.0.user_id"),
        ([{"name": "x", "conditions": {}, "user_id": stranger}], "rules.0.user_id"),
        ([{"name": "x", "conditions": {}, "team_id": 999999999}], "rules.0.team_id"),
    ]
    for rules, path in cases:
        res = _rules(client, workspace, rules)
        assert res.status_code in (404, 422), res.text
        assert res.json()["error"]["path"] == path, res.text
    res = client.post(
        f"{API}/sales/teams", json={"name": "T", "members": [user, stranger]}, headers=workspace.auth("admin")
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "members.1"
    # Rules and teams need the admin scope.
    res = client.put(f"{API}/sales/assignment-rules", json={"rules": []}, headers=workspace.auth("write"))
    assert res.status_code == 403
    # A team named by a rule cannot be deleted.
    team = _team(client, workspace, "Solo", [user])
    _ok(_rules(client, workspace, [{"name": "all", "conditions": {}, "team_id": team["id"]}]))
    res = client.delete(f"{API}/sales/teams/{team['id']}", headers=workspace.auth("admin"))
    assert res.status_code == 409
    # Other workspaces see none of it.
    assert _ok(client.get(f"{API}/sales/teams", headers=other_workspace.auth("read"))) == []
    assert _ok(client.get(f"{API}/sales/assignment-rules", headers=other_workspace.auth("read"))) == []


def test_round_robin_cycles_over_active_members(client, workspace, session_factory):
    a, b, c = sorted(_member(session_factory, workspace) for _ in range(3))
    team = _team(client, workspace, "Inbound", [a, b, c], inactive=[b])
    _ok(_rules(client, workspace, [{"name": "All", "conditions": {}, "team_id": team["id"]}]))
    owners = [
        _ok(_assign(client, workspace, contact_id=_contact(client, workspace)["id"]))["user_id"] for _ in range(4)
    ]
    assert owners == [a, c, a, c]
    # b back from holiday: joins the rotation.
    _ok(
        client.put(
            f"{API}/sales/teams/{team['id']}",
            json={"name": "Inbound", "members": [a, b, c]},
            headers=workspace.auth("admin"),
        )
    )
    owners = [
        _ok(_assign(client, workspace, contact_id=_contact(client, workspace)["id"]))["user_id"] for _ in range(3)
    ]
    assert sorted(owners) == [a, b, c]


def test_round_robin_pointer_is_safe_under_concurrency(session_factory, workspace):
    members = sorted(_member(session_factory, workspace) for _ in range(3))
    with session_factory() as s:
        team = SalesTeam(workspace_id=workspace.id, name="Pool", rr_counter=0)
        s.add(team)
        s.commit()
        team_id = team.id
    picks: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(10):
                with session_factory() as s:
                    t = s.get(SalesTeam, team_id)
                    got = assignment._next_round_robin(s, t, members)
                    s.commit()
                with lock:
                    picks.append(got)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # 40 picks over 3 members: every counter value was handed out once, so the split is as even as it can be.
    assert sorted(picks.count(m) for m in members) == [13, 13, 14]
    with session_factory() as s:
        assert s.get(SalesTeam, team_id).rr_counter == 40


def test_load_balanced_picks_the_member_with_the_fewest_open_deals_and_tasks(client, workspace, session_factory):
    busy, free = _member(session_factory, workspace), _member(session_factory, workspace)
    team = _team(client, workspace, "Field", [busy, free])
    _ok(
        _rules(
            client,
            workspace,
            [{"name": "Field", "conditions": {}, "team_id": team["id"], "distribution": "load_balanced"}],
        )
    )
    for i in range(2):
        _ok(client.post(f"{API}/deals", json={"name": f"d{i}", "owner_id": busy}, headers=workspace.auth("write")), 201)
    first = _ok(_assign(client, workspace, contact_id=_contact(client, workspace)["id"]))["user_id"]
    assert first == free  # busy has 2 open deals, free 0
    # The hand-off task counts towards free's load (1) — still below busy's 2.
    second = _ok(_assign(client, workspace, contact_id=_contact(client, workspace)["id"]))["user_id"]
    assert second == free
    third = _ok(_assign(client, workspace, contact_id=_contact(client, workspace)["id"]))["user_id"]
    assert third == busy  # 2 each: the tie goes to the lower user id... busy was created first
    assert busy < free


def test_deal_without_owner_is_assigned_with_a_handoff_task_due_in_working_hours(client, workspace, session_factory):
    rep = _member(session_factory, workspace, timezone="Europe/Helsinki")
    _ok(_rules(client, workspace, [{"name": "Everyone", "conditions": {}, "user_id": rep}]))
    _ok(
        client.put(
            f"{API}/sales/settings",
            json={
                "response_hours": 4,
                "handoff_task_title": "Call back",
                "working_hours": {"weekdays": [1, 2, 3, 4, 5], "start": "08:00", "end": "16:00"},
            },
            headers=workspace.auth("admin"),
        )
    )
    before = datetime.now(UTC)
    deal = _ok(client.post(f"{API}/deals", json={"name": "Tents for 40"}, headers=workspace.auth("write")), 201)
    assert deal["owner_id"] == rep
    tasks = _ok(client.get(f"{API}/tasks?handoff=true&deal_id={deal['id']}", headers=workspace.auth("read")))
    assert len(tasks) == 1
    task = tasks[0]
    assert task["owner_id"] == rep and task["title"] == "Call back: Tents for 40" and task["kind"] == "call"
    handoff_at = datetime.fromisoformat(task["handoff_at"])
    assert handoff_at >= before - timedelta(seconds=1)
    schedule = parse_working_hours(
        {"timezone": "Europe/Helsinki", "weekdays": [1, 2, 3, 4, 5], "start": "08:00", "end": "16:00"}
    )
    assert datetime.fromisoformat(task["due_at"]) == due_in_working_hours(handoff_at, 4, schedule)
    # A deal with an owned contact takes the contact's owner, without a hand-off.
    other = _member(session_factory, workspace)
    c = _contact(client, workspace, owner_id=other)
    deal2 = _ok(
        client.post(f"{API}/deals", json={"name": "Repeat", "contact_id": c["id"]}, headers=workspace.auth("write")),
        201,
    )
    assert deal2["owner_id"] == other
    assert _ok(client.get(f"{API}/tasks?handoff=true&deal_id={deal2['id']}", headers=workspace.auth("read"))) == []


def test_user_working_hours_override_and_validation(client, workspace, session_factory):
    rep = _member(session_factory, workspace, timezone="America/New_York")
    res = client.put(
        f"{API}/sales/working-hours/{rep}",
        json={"working_hours": {"days": {"mon": [["09:00", "13:00"], ["12:00", "17:00"]]}}},
        headers=workspace.auth("admin"),
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "working_hours.days.mon.1.0"
    got = _ok(
        client.put(
            f"{API}/sales/working-hours/{rep}",
            json={"working_hours": {"weekdays": [2, 3, 4], "start": "10:00", "end": "14:00"}},
            headers=workspace.auth("admin"),
        )
    )
    assert got["timezone"] == "America/New_York"  # the user's own zone
    assert set(got["days"]) == {"tue", "wed", "thu"}
    res = client.put(f"{API}/sales/settings", json={"assign_on_stage": "nowhere"}, headers=workspace.auth("admin"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "assign_on_stage"


def test_stage_trigger_assigns_and_overdue_handoffs_are_reported(client, workspace, session_factory):
    rep = _member(session_factory, workspace)
    _ok(_rules(client, workspace, [{"name": "All", "conditions": {}, "user_id": rep}]))
    _ok(
        client.put(
            f"{API}/sales/settings",
            json={"assign_on_stage": "decision", "response_hours": 4},
            headers=workspace.auth("admin"),
        )
    )
    early, late, quick, untouched = (_contact(client, workspace) for _ in range(4))
    owned = _contact(client, workspace, owner_id=rep)
    for c in (early, late, quick, owned):
        _ok(client.post(f"{API}/contacts/{c['id']}/stage", json={"stage": "decision"}, headers=workspace.auth("write")))

    def scan_all() -> int:
        # The stage-change stream is shared by every workspace of the database: read it to its end.
        total = 0
        while True:
            with session_factory() as s:
                read, assigned = assignment.scan_batch(s, limit=2000)
                s.commit()
            total += assigned
            if read < 2000:
                return total

    assert scan_all() >= 3
    scan_all()  # seeing the changes again assigns nothing twice
    log = _ok(client.get(f"{API}/sales/assignments", headers=workspace.auth("read")))
    assert sorted(r["subject_id"] for r in log) == sorted([early["id"], late["id"], quick["id"]])
    assert {r["trigger"] for r in log} == {"stage:decision"}
    for c in (early, late, quick):
        assert _ok(client.get(f"{API}/contacts/{c['id']}", headers=workspace.auth("read")))["owner_id"] == rep
    assert _ok(client.get(f"{API}/contacts/{untouched['id']}", headers=workspace.auth("read")))["owner_id"] is None
    handoffs = _ok(client.get(f"{API}/sales/handoffs", headers=workspace.auth("read")))
    assert {h["task"]["contact_id"] for h in handoffs} == {early["id"], late["id"], quick["id"]}
    assert {h["status"] for h in handoffs} == {"open"}

    # Move the hand-offs back in time: early and late are now past due.
    with session_factory() as s:
        past = datetime.now(UTC) - timedelta(days=3)
        s.execute(
            update(Task)
            .where(Task.workspace_id == workspace.id, Task.contact_id.in_([early["id"], late["id"]]))
            .values(handoff_at=past - timedelta(days=1), due_at=past)
        )
        s.commit()
    overdue = _ok(client.get(f"{API}/sales/handoffs?status=overdue", headers=workspace.auth("read")))
    assert {h["task"]["contact_id"] for h in overdue} == {early["id"], late["id"]}
    listed = _ok(client.get(f"{API}/tasks?overdue=true&handoff=true", headers=workspace.auth("read")))
    assert {t["contact_id"] for t in listed} == {early["id"], late["id"]}

    # A logged call answers the hand-off (late); completing the task answers it too (met).
    _ok(
        client.post(
            f"{API}/activities",
            json={"kind": "call", "contact_id": late["id"], "body": "talked"},
            headers=workspace.auth("write"),
        ),
        201,
    )
    quick_task = next(h["task"] for h in handoffs if h["task"]["contact_id"] == quick["id"])
    _ok(client.post(f"{API}/tasks/{quick_task['id']}/complete", headers=workspace.auth("write")))
    by_contact = {
        h["task"]["contact_id"]: h for h in _ok(client.get(f"{API}/sales/handoffs", headers=workspace.auth("read")))
    }
    assert by_contact[late["id"]]["status"] == "late"
    assert by_contact[late["id"]]["response_seconds"] >= 4 * 86400 - 60
    assert by_contact[quick["id"]]["status"] == "met"
    assert 0 <= by_contact[quick["id"]]["response_seconds"] < 600
    assert by_contact[early["id"]]["status"] == "overdue"
    assert by_contact[early["id"]]["response_seconds"] is None
    assert [
        h["task"]["contact_id"]
        for h in _ok(client.get(f"{API}/sales/handoffs?status=late", headers=workspace.auth("read")))
    ] == [late["id"]]


def test_task_due_in_working_hours_of_its_owner(client, workspace, session_factory):
    rep = _member(session_factory, workspace, timezone="Europe/Riga")
    hours = {"weekdays": [1, 2, 3, 4, 5], "start": "10:00", "end": "14:00"}
    _ok(client.put(f"{API}/sales/working-hours/{rep}", json={"working_hours": hours}, headers=workspace.auth("admin")))
    before = datetime.now(UTC)
    task = _ok(
        client.post(
            f"{API}/tasks",
            json={"title": "Call back", "due_in_working_hours": 6, "owner_id": rep},
            headers=workspace.auth("write"),
        ),
        201,
    )
    schedule = parse_working_hours({**hours, "timezone": "Europe/Riga"})
    due = datetime.fromisoformat(task["due_at"])
    # 6 working hours of a 4-hour day: at least one full working day later, inside the owner's hours.
    low = due_in_working_hours(before - timedelta(seconds=5), 6, schedule)
    high = due_in_working_hours(datetime.now(UTC), 6, schedule)
    assert low <= due <= high
    for body in ({"title": "x"}, {"title": "x", "due_in_working_hours": 2, "due_at": "2030-01-01T00:00:00Z"}):
        res = client.post(f"{API}/tasks", json=body, headers=workspace.auth("write"))
        assert res.status_code == 422 and res.json()["error"]["code"] == "due_missing"


def test_users_who_left_the_workspace_get_no_leads(client, workspace, session_factory):
    from sqlalchemy import delete

    from suppilo.workspaces.models import Membership

    gone, stays = sorted(_member(session_factory, workspace) for _ in range(2))
    team = _team(client, workspace, "Pair", [gone, stays])
    _ok(
        _rules(
            client,
            workspace,
            [
                {"name": "Named", "conditions": {"country": ["EE"]}, "user_id": gone},
                {"name": "Team", "conditions": {}, "team_id": team["id"]},
            ],
        )
    )
    with session_factory() as s:
        s.execute(delete(Membership).where(Membership.workspace_id == workspace.id, Membership.user_id == gone))
        s.commit()
    for _ in range(3):
        got = _ok(_assign(client, workspace, contact_id=_contact(client, workspace, country="EE")["id"]))
        assert (got["user_id"], got["rule_name"]) == (stays, "Team")


def test_rules_on_segment_membership(client, workspace, other_workspace, session_factory):
    """A rule can name stored segments: contacts in any of them (now) match; unknown or foreign segments are refused
    at their path."""
    vip_rep, rest = _member(session_factory, workspace), _member(session_factory, workspace)
    seg = _ok(
        client.post(
            f"{API}/segments", json={"name": "Key accounts", "kind": "static"}, headers=workspace.auth("write")
        ),
        201,
    )
    theirs = _ok(
        client.post(
            f"{API}/segments", json={"name": "Theirs", "kind": "static"}, headers=other_workspace.auth("write")
        ),
        201,
    )
    vip, plain = _contact(client, workspace, country="FI"), _contact(client, workspace, country="FI")
    _ok(
        client.post(
            f"{API}/segments/{seg['id']}/members", json={"contact_ids": [vip["id"]]}, headers=workspace.auth("write")
        )
    )
    rules = [
        {"name": "Key accounts", "conditions": {"segment": [seg["id"]], "country": ["FI"]}, "user_id": vip_rep},
        {"name": "Everyone else", "conditions": {}, "user_id": rest},
    ]
    _ok(_rules(client, workspace, rules))
    assert _ok(_assign(client, workspace, contact_id=vip["id"]))["user_id"] == vip_rep
    assert _ok(_assign(client, workspace, contact_id=plain["id"]))["user_id"] == rest
    # A deal opened for an unowned segment member gets the segment's rep (the contact too).
    member = _contact(client, workspace, country="FI")
    _ok(
        client.post(
            f"{API}/segments/{seg['id']}/members", json={"contact_ids": [member["id"]]}, headers=workspace.auth("write")
        )
    )
    deal = _ok(
        client.post(
            f"{API}/deals", json={"name": "Renewal", "contact_id": member["id"]}, headers=workspace.auth("write")
        ),
        201,
    )
    assert deal["owner_id"] == vip_rep
    assert _ok(client.get(f"{API}/contacts/{member['id']}", headers=workspace.auth("read")))["owner_id"] == vip_rep
    for bad, path in (
        ({"segment": [theirs["id"]]}, "rules.0.conditions.segment.0"),
        ({"segment": ["x"]}, "rules.0.conditions.segment.0"),
        ({"segment": []}, "rules.0.conditions.segment"),
    ):
        res = _rules(client, workspace, [{"name": "r", "conditions": bad, "user_id": rest}])
        assert res.status_code == 422 and res.json()["error"]["path"] == path, res.text
