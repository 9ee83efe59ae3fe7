"""The journeys API: YAML and JSON definitions, errors with paths, versions, enrolment, report, diagram, playbooks."""

from __future__ import annotations

from suppilo.journeys import runner, triggers
from suppilo.messaging import service as messaging_service

YAML = """
name: Onboarding
trigger: {type: manual}
start: hello
steps:
  hello: {type: send_email, template: welcome, next: wait}
  wait: {type: wait, duration: {days: 1}, next: tag}
  tag: {type: update_contact, add_tags: [onboarded]}
"""


def _setup(client, session_factory, workspace):
    with session_factory() as s:
        messaging_service.install_default_templates(s, workspace.id)
        s.commit()
    r = client.post(
        "/api/v1/contacts", json={"email": "liisa@example.fi", "first_name": "Liisa"}, headers=workspace.auth("write")
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_yaml_journey_enrol_report_and_timeline(client, session_factory, workspace):
    cid = _setup(client, session_factory, workspace)
    h = workspace.auth("write")
    r = client.post("/api/v1/journeys", content=YAML, headers={**h, "content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    jid = r.json()["id"]
    assert r.json()["status"] == "draft" and r.json()["definition"]["steps"]["hello"]["template"] == "welcome"

    r = client.post(f"/api/v1/journeys/{jid}/enrollments", json={"contact_ids": [cid], "key": "k1"}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "not_active"
    assert client.post(f"/api/v1/journeys/{jid}/status", json={"status": "active"}, headers=h).status_code == 200
    r = client.post(f"/api/v1/journeys/{jid}/enrollments", json={"contact_ids": [cid], "key": "k1"}, headers=h)
    assert r.json() == {"entered": 1}
    r = client.post(f"/api/v1/journeys/{jid}/enrollments", json={"contact_ids": [cid], "key": "k1"}, headers=h)
    assert r.json() == {"entered": 0}  # a retried request enrols nobody twice

    triggers.run_scanners(session_factory)
    runner.run_due(session_factory)
    report = client.get(f"/api/v1/journeys/{jid}/report", headers=workspace.auth("read")).json()
    assert report["entered"] == 1 and report["waiting"] == 1
    hello = next(s for s in report["steps"] if s["step"] == "hello")
    assert hello["queued"] == 1 and hello["passed"] == 1
    wait = next(s for s in report["steps"] if s["step"] == "wait")
    assert wait["waiting"] == 1

    diagram = client.get(f"/api/v1/journeys/{jid}/diagram", headers=workspace.auth("read")).text
    assert diagram.startswith("flowchart TD") and "Email: welcome" in diagram and "Wait 1d · 1" in diagram

    page = client.get(f"/api/v1/journeys/{jid}/enrollments", headers=workspace.auth("read")).json()
    eid = page["items"][0]["id"]
    detail = client.get(f"/api/v1/enrollments/{eid}", headers=workspace.auth("read")).json()
    assert [(t["step_id"], t["outcome"]) for t in detail["timeline"]] == [("hello", "entered"), ("hello", "send_email")]
    assert detail["timeline"][1]["outbox_id"] is not None


def test_bad_definition_answers_with_path(client, session_factory, workspace):
    _setup(client, session_factory, workspace)
    h = {**workspace.auth("write"), "content-type": "application/yaml"}
    bad = YAML.replace("next: tag", "next: nowhere")
    r = client.post("/api/v1/journeys", content=bad, headers=h)
    assert r.status_code == 422
    assert r.json()["error"]["path"] == "definition.steps.wait.next"
    r = client.post("/api/v1/journeys", content="name: [unclosed", headers=h)
    assert r.status_code == 422 and "line 1" in r.json()["error"]["message"]


def test_new_version_keeps_contacts_on_theirs_until_migrated(client, session_factory, workspace):
    cid = _setup(client, session_factory, workspace)
    h = workspace.auth("write")
    jid = client.post("/api/v1/journeys", content=YAML, headers={**h, "content-type": "application/yaml"}).json()["id"]
    client.post(f"/api/v1/journeys/{jid}/status", json={"status": "active"}, headers=h)
    client.post(f"/api/v1/journeys/{jid}/enrollments", json={"contact_ids": [cid], "key": "a"}, headers=h)
    runner.run_due(session_factory)
    v2 = YAML.replace("wait: {type: wait", "pause: {type: wait").replace("next: wait", "next: pause")
    r = client.put(f"/api/v1/journeys/{jid}", content=v2, headers={**h, "content-type": "application/yaml"})
    assert r.status_code == 200 and r.json()["current_version"] == 2
    page = client.get(f"/api/v1/journeys/{jid}/enrollments", headers=workspace.auth("read")).json()
    assert page["items"][0]["version"] == 1 and page["items"][0]["step"] == "wait"
    r = client.post(f"/api/v1/journeys/{jid}/migrate", json={"from_version": 1}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["path"] == "step_map.wait"
    r = client.post(
        f"/api/v1/journeys/{jid}/migrate", json={"from_version": 1, "step_map": {"wait": "pause"}}, headers=h
    )
    assert r.json() == {"moved": 1}
    item = client.get(f"/api/v1/journeys/{jid}/enrollments", headers=workspace.auth("read")).json()["items"][0]
    assert item["version"] == 2 and item["step"] == "pause"
    assert [
        v["version"] for v in client.get(f"/api/v1/journeys/{jid}/versions", headers=workspace.auth("read")).json()
    ] == [1, 2]


def test_other_workspace_cannot_see_a_journey(client, session_factory, workspace, other_workspace):
    _setup(client, session_factory, workspace)
    h = workspace.auth("write")
    jid = client.post("/api/v1/journeys", content=YAML, headers={**h, "content-type": "application/yaml"}).json()["id"]
    assert client.get(f"/api/v1/journeys/{jid}", headers=other_workspace.auth("read")).status_code == 404
    assert client.get(f"/api/v1/journeys/{jid}/report", headers=other_workspace.auth("read")).status_code == 404


def test_playbook_gallery_and_enable(client, session_factory, workspace):
    _setup(client, session_factory, workspace)
    books = client.get("/api/v1/playbooks", headers=workspace.auth("read")).json()
    assert {"welcome_series", "abandoned_cart", "win_back", "sales_handoff"} <= {b["key"] for b in books}
    r = client.post(
        "/api/v1/playbooks/abandoned_cart", json={"settings": {"first_after_hours": 2}}, headers=workspace.auth("write")
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "active" and r.json()["playbook"] == "abandoned_cart"
    assert r.json()["definition"]["steps"]["hour"]["duration"]["hours"] == 2
    r = client.post(
        "/api/v1/playbooks/abandoned_cart", json={"settings": {"first_after_hours": 0}}, headers=workspace.auth("write")
    )
    assert r.status_code == 422 and r.json()["error"]["path"] == "settings.first_after_hours"


def test_stuck_enrollments_are_reported(client, session_factory, workspace):
    from datetime import timedelta

    from sqlalchemy import update

    from suppilo.db.base import utcnow
    from suppilo.journeys.models import Enrollment

    cid = _setup(client, session_factory, workspace)
    h = workspace.auth("write")
    jid = client.post("/api/v1/journeys", content=YAML, headers={**h, "content-type": "application/yaml"}).json()["id"]
    client.post(f"/api/v1/journeys/{jid}/status", json={"status": "active"}, headers=h)
    client.post(f"/api/v1/journeys/{jid}/enrollments", json={"contact_ids": [cid], "key": "s"}, headers=h)
    assert client.get("/api/v1/journeys/stuck", headers=workspace.auth("read")).json() == []
    with session_factory() as s:  # as if no runner had looked at it for an hour
        s.execute(update(Enrollment).where(Enrollment.journey_id == jid).values(due_at=utcnow() - timedelta(hours=1)))
        s.commit()
    stuck = client.get("/api/v1/journeys/stuck", headers=workspace.auth("read")).json()
    assert [e["contact_id"] for e in stuck] == [cid]
    runner.run_due(session_factory)
    assert client.get("/api/v1/journeys/stuck", headers=workspace.auth("read")).json() == []
