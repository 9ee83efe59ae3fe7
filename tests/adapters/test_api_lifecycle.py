"""Lifecycle over HTTP: manual moves recorded with from/to/time/reason/actor, and editing the stage set."""

from __future__ import annotations

from datetime import UTC, datetime

DEFAULT_KEYS = ["awareness", "interest", "consideration", "decision", "customer", "loyal", "advocate", "inactive"]


def _contact(client, workspace, **body):
    res = client.post("/api/v1/contacts", json=body, headers=workspace.auth("write"))
    assert res.status_code == 201, res.text
    return res.json()


def test_manual_move_is_recorded(client, workspace) -> None:
    c = _contact(client, workspace, email="m@example.com")
    before = datetime.now(UTC)
    res = client.post(
        f"/api/v1/contacts/{c['id']}/stage",
        json={"stage": "decision", "reason": "demo booked"},
        headers=workspace.auth("write"),
    )
    assert res.status_code == 200 and res.json()["lifecycle_stage"] == "decision"
    history = client.get(f"/api/v1/contacts/{c['id']}/stage-history", headers=workspace.auth("read")).json()
    assert [(h["from_stage"], h["to_stage"]) for h in history] == [("awareness", "decision"), (None, "awareness")]
    latest = history[0]
    assert latest["reason"] == "demo booked" and latest["source"] == "api"
    assert latest["actor"].startswith("api_key:")
    assert datetime.fromisoformat(latest["changed_at"]) >= before.replace(microsecond=0)
    res = client.post(f"/api/v1/contacts/{c['id']}/stage", json={"stage": "unicorn"}, headers=workspace.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "lifecycle_stage"
    res = client.post(f"/api/v1/contacts/{c['id']}/stage", json={"stage": "customer"}, headers=workspace.auth("read"))
    assert res.status_code == 403


def test_stage_list_counts_contacts(client, workspace) -> None:
    _contact(client, workspace, email="a@example.com", lifecycle_stage="customer")
    _contact(client, workspace, email="b@example.com")
    stages = client.get("/api/v1/lifecycle-stages", headers=workspace.auth("read")).json()
    assert [s["key"] for s in stages] == DEFAULT_KEYS
    counts = {s["key"]: s["contacts"] for s in stages}
    assert counts["customer"] == 1 and counts["awareness"] == 1 and counts["loyal"] == 0


def test_replacing_stage_set_moves_contacts_only_with_move_to(client, workspace) -> None:
    a = _contact(client, workspace, email="a@example.com", lifecycle_stage="consideration")
    stages = client.get("/api/v1/lifecycle-stages", headers=workspace.auth("read")).json()
    kept = [
        {k: s[k] for k in ("key", "label", "position", "kind", "description")}
        for s in stages
        if s["key"] != "consideration"
    ]
    kept.append({"key": "trial", "label": "Trial", "position": 35, "kind": "funnel"})
    admin = workspace.auth("admin")
    res = client.put("/api/v1/lifecycle-stages", json={"stages": kept}, headers=admin)
    assert res.status_code == 409 and res.json()["error"]["path"] == "move_to"
    assert client.get(f"/api/v1/contacts/{a['id']}", headers=admin).json()["lifecycle_stage"] == "consideration"
    res = client.put("/api/v1/lifecycle-stages", json={"stages": kept, "move_to": "nowhere"}, headers=admin)
    assert res.status_code == 422 and res.json()["error"]["path"] == "move_to"
    assert (
        client.put("/api/v1/lifecycle-stages", json={"stages": kept}, headers=workspace.auth("write")).status_code
        == 403
    )
    res = client.put(
        "/api/v1/lifecycle-stages", json={"stages": kept, "move_to": "trial", "reason": "renamed"}, headers=admin
    )
    assert res.status_code == 200
    body = res.json()
    assert [s["key"] for s in body] == [
        "awareness",
        "interest",
        "trial",
        "decision",
        "customer",
        "loyal",
        "advocate",
        "inactive",
    ]
    assert {s["key"]: s["contacts"] for s in body}["trial"] == 1
    moved = client.get(f"/api/v1/contacts/{a['id']}", headers=admin).json()
    assert moved["lifecycle_stage"] == "trial" and moved["version"] == 2
    latest = client.get(f"/api/v1/contacts/{a['id']}/stage-history", headers=admin).json()[0]
    assert (latest["from_stage"], latest["to_stage"], latest["reason"]) == ("consideration", "trial", "renamed")


def test_invalid_stage_sets_are_refused(client, workspace) -> None:
    admin = workspace.auth("admin")
    dup = [
        {"key": "lead", "label": "Lead", "position": 10},
        {"key": "lead", "label": "Lead again", "position": 20},
    ]
    res = client.put("/api/v1/lifecycle-stages", json={"stages": dup}, headers=admin)
    assert res.status_code == 422 and res.json()["error"]["path"] == "stages"
    only_side = [{"key": "gone", "label": "Gone", "position": 1, "kind": "side"}]
    assert client.put("/api/v1/lifecycle-stages", json={"stages": only_side}, headers=admin).status_code == 422
    bad_key = [{"key": "Big Stage", "label": "X", "position": 1}]
    assert client.put("/api/v1/lifecycle-stages", json={"stages": bad_key}, headers=admin).status_code == 422
    keys = [s["key"] for s in client.get("/api/v1/lifecycle-stages", headers=admin).json()]
    assert keys == DEFAULT_KEYS
