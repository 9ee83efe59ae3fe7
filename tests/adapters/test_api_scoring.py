"""Scoring over HTTP and the CLI: ICP CRUD with field-path errors, recompute, explanations, rules, isolation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings

API = "/api/v1"
ICP = {
    "industries": {"values": ["Software"], "weight": 40},
    "location": {"regions": ["nordics"], "weight": 30},
    "seniority": {"keywords": ["head", "director"], "weight": 30},
}


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def _contact(client, ws, email, **body):
    res = client.post(f"{API}/contacts", json={"email": email, **body}, headers=ws.auth("write"))
    assert res.status_code == 201, res.text
    return res.json()["id"]


def test_icp_crud_recompute_and_explanation(client, workspace, other_workspace):
    w, r = workspace.auth("write"), workspace.auth("read")
    res = client.post(f"{API}/scoring/icps", json={"name": "Core", "definition": ICP}, headers=w)
    assert res.status_code == 201, res.text
    icp = res.json()
    assert icp["active"] is True and icp["definition"]["location"]["regions"] == ["nordics"]

    bad = client.post(f"{API}/scoring/icps", json={"name": "Bad", "definition": {"employees": {"min": -1}}}, headers=w)
    assert bad.status_code == 422
    assert bad.json()["error"]["path"] == "definition.employees.min"
    dup = client.post(f"{API}/scoring/icps", json={"name": "Core", "definition": ICP}, headers=w)
    assert dup.status_code == 409
    assert client.post(f"{API}/scoring/icps", json={"name": "x", "definition": ICP}, headers=r).status_code == 403

    person = _contact(client, workspace, "head@acme.example", job_title="Head of Growth", country="FI")
    res = client.post(f"{API}/scoring/recompute", json={"contact_ids": [person]}, headers=w)
    assert res.status_code == 200, res.text
    assert res.json() == {"scored": {"fit": 1, "engagement": 0}, "changed": {"fit": 1, "engagement": 0}}

    scores = client.get(f"{API}/contacts/{person}/scores", headers=r).json()
    fit = scores["scores"]["fit"]
    assert (fit["score"], fit["grade"], fit["icp_name"]) == (60.0, "B", "Core")
    assert [(c["criterion"], c["matched"]) for c in fit["criteria"]] == [
        ("industries", False),
        ("location", True),
        ("seniority", True),
    ]
    assert fit["criteria"][0]["detail"] == "industry unknown"
    assert scores["priority"] == "nurture"
    history = client.get(f"{API}/contacts/{person}/scores/history", headers=r).json()
    assert [(h["kind"], h["score"], h["grade"]) for h in history] == [("fit", 60.0, "B")]

    # the definition changes: recompute picks it up
    res = client.patch(
        f"{API}/scoring/icps/{icp['id']}",
        json={"definition": {**ICP, "industries": {"values": ["Software"], "weight": 0}}},
        headers=w,
    )
    assert res.status_code == 200, res.text
    client.post(f"{API}/scoring/recompute", json={"kinds": ["fit"]}, headers=w)
    assert client.get(f"{API}/contacts/{person}/scores", headers=r).json()["scores"]["fit"]["score"] == 100.0

    # another workspace sees none of it
    o = other_workspace.auth("write")
    assert client.get(f"{API}/scoring/icps/{icp['id']}", headers=o).status_code == 404
    assert client.get(f"{API}/contacts/{person}/scores", headers=o).status_code == 404
    res = client.post(f"{API}/scoring/recompute", json={"contact_ids": [person]}, headers=o)
    assert res.status_code == 404 and res.json()["error"]["path"] == "contact_ids[0]"
    assert client.get(f"{API}/scoring/icps", headers=other_workspace.auth("read")).json()["items"] == []

    assert client.delete(f"{API}/scoring/icps/{icp['id']}", headers=w).status_code == 204
    assert client.get(f"{API}/scoring/icps/{icp['id']}", headers=w).status_code == 404


def test_engagement_rules_over_http(client, workspace):
    admin = workspace.auth("admin")
    rules = client.get(f"{API}/scoring/engagement", headers=workspace.auth("read")).json()
    assert rules["half_life_days"] == 30 and {r["key"] for r in rules["rules"]} >= {"page_view", "email_open"}
    bad = {"rules": [{"key": "x", "event": "Demo", "points": 1e300}]}
    res = client.put(f"{API}/scoring/engagement", json=bad, headers=admin)
    assert res.status_code == 422 and res.json()["error"]["path"] == "rules[0].points"
    assert client.put(f"{API}/scoring/engagement", json=rules, headers=workspace.auth("write")).status_code == 403
    new = {"half_life_days": 14, "rules": [{"key": "demo", "event": "Demo Requested", "points": 30}]}
    res = client.put(f"{API}/scoring/engagement", json=new, headers=admin)
    assert res.status_code == 200, res.text
    assert res.json()["half_life_days"] == 14

    person = _contact(client, workspace, "d@acme.example")
    body = {"anonymousId": "visitor-1", "event": "Demo Requested", "writeKey": workspace.track_key}
    assert client.post("/v1/track", json=body).status_code == 200
    res = client.post(f"{API}/scoring/recompute", json={"kinds": ["engagement"]}, headers=workspace.auth("write"))
    assert res.status_code == 200 and res.json()["changed"] == {"engagement": 1}
    # 30 points, no fit score: the medium band of the "none" row
    matrix = client.get(f"{API}/scoring/matrix", headers=workspace.auth("read")).json()
    assert matrix["engagement_bands"] == ["high", "medium", "low", "none"]
    assert matrix["rows"]["none"] == {"high": 0, "medium": 1, "low": 0, "none": 1}
    assert client.get(f"{API}/contacts/{person}/scores", headers=workspace.auth("read")).json()["scores"] == {}


def test_score_conditions_in_segments_over_http(client, workspace):
    w = workspace.auth("write")
    client.post(f"{API}/scoring/icps", json={"name": "Core", "definition": ICP}, headers=w)
    good = _contact(client, workspace, "a@acme.example", job_title="Director", country="SE")
    _contact(client, workspace, "b@acme.example", job_title="Intern", country="BR")
    client.post(f"{API}/scoring/recompute", json={}, headers=w)
    res = client.post(
        f"{API}/segments",
        json={"name": "Good fit", "filter": {"type": "score", "kind": "fit", "op": "gte", "value": 50}},
        headers=w,
    )
    assert res.status_code == 201, res.text
    seg = res.json()
    assert seg["member_count"] == 1 and seg["dependencies"] == ["score:fit"]
    members = client.get(f"{API}/segments/{seg['id']}/members", headers=w).json()["items"]
    assert [m["contact_id"] for m in members] == [good]
    bad = client.post(
        f"{API}/segments/preview",
        json={"filter": {"type": "score", "kind": "engagement", "op": "grade_in", "value": ["A"]}},
        headers=w,
    )
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "filter.op"


def test_cli_define_recompute_explain(cli_env: CliRunner, client, workspace, tmp_path):
    person = _contact(client, workspace, "h@acme.example", job_title="Head of Sales", country="NO")
    wopt = ["--workspace", workspace.slug]
    yml = tmp_path / "icp.yaml"
    yml.write_text(
        "name: Nordic heads\ndescription: test\ndefinition:\n"
        "  location: {regions: [nordics], weight: 50}\n  seniority: {keywords: [head], weight: 50}\n",
        encoding="utf-8",
    )
    res = cli_env.invoke(cli_app, ["scoring", "icp", "define", str(yml), *wopt, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["action"] == "created"
    res = cli_env.invoke(cli_app, ["scoring", "icp", "define", str(yml), *wopt, "--json"])
    assert json.loads(res.stdout)["action"] == "updated"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "Bad", "location": {"regions": ["atlantis"]}}), encoding="utf-8")
    res = cli_env.invoke(cli_app, ["scoring", "icp", "define", str(bad), *wopt])
    assert res.exit_code == 1 and "definition.location" in res.output and "atlantis" in res.output

    res = cli_env.invoke(cli_app, ["scoring", "recompute", *wopt, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["fit"] == {"scored": 1, "changed": 1}
    res = cli_env.invoke(cli_app, ["scoring", "explain", str(person), *wopt, "--json"])
    data = json.loads(res.stdout)
    assert data["scores"]["fit"]["score"] == 100.0 and data["scores"]["fit"]["grade"] == "A"
    res = cli_env.invoke(cli_app, ["scoring", "explain", str(person), *wopt])
    assert res.exit_code == 0 and "fit 100 (A)" in res.output and "seniority" in res.output
    res = cli_env.invoke(cli_app, ["scoring", "icp", "list", *wopt])
    assert "Nordic heads" in res.output
    res = cli_env.invoke(cli_app, ["scoring", "run", *wopt, "--json"])
    assert res.exit_code == 0 and set(json.loads(res.stdout)) == {"fit", "companies", "engagement"}
    # the run scored the contact's company (linked by its email domain): location is a company criterion too
    company_id = client.get(f"{API}/contacts/{person}", headers=workspace.auth("read")).json()["company_id"]
    res = client.get(f"{API}/companies/{company_id}/score", headers=workspace.auth("read"))
    assert res.status_code == 200, res.text
    company = res.json()
    assert company["grade"] == "D" and [c["detail"] for c in company["criteria"]] == [
        "country unknown",
        "job title unknown",
    ]
    assert client.get(f"{API}/companies/999999999/score", headers=workspace.auth("read")).status_code == 404


def test_predictive_over_http_refuses_without_history(client, workspace, cli_env: CliRunner):
    _contact(client, workspace, "x@acme.example")
    res = client.post(f"{API}/scoring/predictive/train", json={"days": 30}, headers=workspace.auth("admin"))
    assert res.status_code == 422
    err = res.json()["error"]
    assert err["code"] == "insufficient_history" and err["path"] == "target_stage"
    assert "0 contacts that reached customer within 30 days" in err["message"]
    res = client.post(f"{API}/scoring/predictive/train", json={"days": 3}, headers=workspace.auth("admin"))
    assert res.status_code == 422 and res.json()["error"]["path"] == "body.days"
    assert client.post(f"{API}/scoring/predictive/train", json={}, headers=workspace.auth("write")).status_code == 403
    status = client.get(f"{API}/scoring/predictive", headers=workspace.auth("read")).json()
    assert status["trained"] is False and status["metrics"] is None
    res = cli_env.invoke(cli_app, ["scoring", "train", "--target", "awareness", "--workspace", workspace.slug])
    assert res.exit_code == 1 and "target_stage" in res.output


def test_icp_and_rule_edits_are_in_the_audit_log(client, workspace, session_factory):
    from sqlalchemy import select

    from suppilo.workspaces.models import AuditLog

    w, admin = workspace.auth("write"), workspace.auth("admin")
    icp_id = client.post(f"{API}/scoring/icps", json={"name": "Core", "definition": ICP}, headers=w).json()["id"]
    changed = {**ICP, "location": {"countries": ["SE"], "weight": 30}}
    assert client.patch(f"{API}/scoring/icps/{icp_id}", json={"definition": changed}, headers=w).status_code == 200
    rules = {"half_life_days": 14, "rules": [{"key": "form", "event": "Form Submitted", "points": 7}]}
    assert client.put(f"{API}/scoring/engagement", json=rules, headers=admin).status_code == 200
    assert client.delete(f"{API}/scoring/icps/{icp_id}", headers=w).status_code == 204
    with session_factory() as s:
        rows = list(
            s.scalars(
                select(AuditLog)
                .where(AuditLog.workspace_id == workspace.id, AuditLog.subject_type.in_(["icp", "scoring_rules"]))
                .order_by(AuditLog.id)
            )
        )
    assert [r.action for r in rows] == ["icp.created", "icp.updated", "scoring_rules.updated", "icp.deleted"]
    assert all(r.actor.startswith("key:") for r in rows)
    created, updated, rules_row, deleted = rows
    assert created.details["before"] is None and created.details["after"]["name"] == "Core"
    assert updated.details["before"]["definition"]["location"]["regions"] == ["nordics"]
    assert updated.details["after"]["definition"]["location"]["countries"] == ["SE"]
    assert updated.details["after"]["definition"]["location"]["regions"] == []
    assert rules_row.details["before"] is None  # the defaults were in force
    assert rules_row.details["after"]["half_life_days"] == 14 and rules_row.details["after"]["rules"][0]["points"] == 7
    assert deleted.subject_id == icp_id and deleted.details["after"] is None
    assert deleted.details["before"]["definition"]["location"]["countries"] == ["SE"]


@pytest.mark.parametrize("processes", ["1", "2"])
def test_cli_recompute_reads_the_columnar_copy_only_once_it_exists(
    cli_env: CliRunner, client, workspace, tmp_path, processes
):
    """`scoring recompute` does not build the event log's columnar copy (the event reports do; building it first
    would cost more than reading the row store once); once it exists the rescoring syncs it and reads from it, with
    the same scores — in one process or split over worker processes."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from suppilo.analytics import columnar
    from suppilo.db.session import make_engine, make_session_factory
    from suppilo.segments.compiler import events

    person = _contact(client, workspace, "reader@acme.example")
    engine = make_engine(get_settings().resolved_database_url())
    factory = make_session_factory(engine)
    now = datetime.now(UTC)

    def page_view(n: int) -> None:
        with factory() as s:
            s.execute(
                insert(events),
                [
                    {"workspace_id": workspace.id, "contact_id": person, "kind": "page", "name": "Pricing",
                     "properties": {"path": "/pricing"}, "context": {}, "occurred_at": now - timedelta(hours=n),
                     "received_at": now, "message_id": f"pv-{n}"}
                ],
            )  # fmt: skip
            s.commit()

    def engagement() -> float:
        res = client.get(f"{API}/contacts/{person}/scores", headers=workspace.auth("read"))
        return float(res.json()["scores"]["engagement"]["score"])

    wopt = ["--workspace", workspace.slug, "--processes", processes, "--json"]
    page_view(1)
    res = cli_env.invoke(cli_app, ["scoring", "recompute", *wopt])
    assert res.exit_code == 0, res.output
    first = engagement()
    assert first > 0
    store = columnar.ColumnarStore(tmp_path / "columnar")
    with factory() as s:
        assert not store.exists(s)  # the rescoring read the row store and built no copy
        with store.connect(s) as con:  # what an event report does
            columnar.sync(s, con, workspace.id)
    page_view(2)  # not in the copy yet: the rescoring syncs it first
    res = cli_env.invoke(cli_app, ["scoring", "recompute", *wopt])
    assert res.exit_code == 0, res.output
    assert engagement() > first
    with factory() as s, store.connect(s) as con:
        copied = con.execute(
            f"SELECT count(*) FROM (SELECT id FROM {columnar.main_table(workspace.id)}"
            f" UNION ALL SELECT id FROM {columnar.tail_table(workspace.id)})"
        ).fetchone()
    assert copied == (2,)
    engine.dispose()
