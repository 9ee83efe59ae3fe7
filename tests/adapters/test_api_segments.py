"""Segments over HTTP and the CLI: CRUD, preview, refresh, members, history, static lists, errors, isolation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings

FI = {"type": "contact", "field": "country", "op": "eq", "value": "FI"}


def _contact(client, ws, email, country):
    res = client.post("/api/v1/contacts", json={"email": email, "country": country}, headers=ws.auth("write"))
    assert res.status_code == 201, res.text
    return res.json()["id"]


def test_segment_lifecycle_over_http(client, workspace, other_workspace):
    a = _contact(client, workspace, "a@example.fi", "FI")
    b = _contact(client, workspace, "b@example.se", "SE")
    c = _contact(client, workspace, "c@example.fi", "FI")
    h = workspace.auth("write")

    res = client.post("/api/v1/segments/preview", json={"filter": FI}, headers=workspace.auth("read"))
    assert res.json() == {"count": 2}
    assert client.get("/api/v1/segments", headers=h).json()["items"] == []

    res = client.post("/api/v1/segments", json={"name": "Finns", "filter": FI}, headers=h)
    assert res.status_code == 201, res.text
    seg = res.json()
    assert seg["member_count"] == 2 and seg["dependencies"] == ["contact"] and seg["kind"] == "dynamic"
    sid = seg["id"]

    page = client.get(f"/api/v1/segments/{sid}/members?limit=1", headers=h).json()
    assert [m["contact_id"] for m in page["items"]] == [a]
    rest = client.get(f"/api/v1/segments/{sid}/members?limit=1&cursor={page['next_cursor']}", headers=h).json()
    assert [m["contact_id"] for m in rest["items"]] == [c] and rest["next_cursor"] is None

    res = client.patch(f"/api/v1/segments/{sid}", json={"filter": {"not": FI}}, headers=h)
    assert res.status_code == 200, res.text
    assert res.json()["member_count"] == 1
    hist = client.get(f"/api/v1/segments/{sid}/history", headers=h).json()["items"]
    assert [(x["contact_id"], x["change"]) for x in hist[:3]] == [(c, "exited"), (a, "exited"), (b, "entered")]
    assert len(hist) == 5
    assert client.get(f"/api/v1/contacts/{b}/segments", headers=h).json()[0]["segment_id"] == sid
    timeline = client.get(f"/api/v1/contacts/{a}/timeline", headers=h).json()["items"]
    assert {"segment.entered", "segment.exited"} <= {i["title"] for i in timeline}

    res = client.post(f"/api/v1/segments/{sid}/refresh", headers=h)
    assert res.json() == {"segment_id": sid, "entered": 0, "exited": 0, "member_count": 1}

    # A bad filter: 422 with the path of the bad node.
    bad = {"and": [FI, FI, {"type": "tag", "op": "has_tag", "value": ""}]}
    res = client.post("/api/v1/segments", json={"name": "Bad", "filter": bad}, headers=h)
    assert res.status_code == 422 and res.json()["error"]["path"] == "filter.and[2].value"
    res = client.patch(
        f"/api/v1/segments/{sid}", json={"filter": {"type": "segment", "op": "in_segment", "value": sid}}, headers=h
    )
    assert res.status_code == 422 and res.json()["error"]["path"] == "filter.value"

    # Static list.
    res = client.post("/api/v1/segments", json={"name": "Guests", "kind": "static"}, headers=h)
    lst = res.json()["id"]
    res = client.post(f"/api/v1/segments/{lst}/members", json={"contact_ids": [a, b]}, headers=h)
    assert res.json() == {"changed": 2, "member_count": 2}
    res = client.request("DELETE", f"/api/v1/segments/{lst}/members", json={"contact_ids": [a]}, headers=h)
    assert res.json() == {"changed": 1, "member_count": 1}
    res = client.post(f"/api/v1/segments/{sid}/members", json={"contact_ids": [a]}, headers=h)
    assert res.status_code == 422

    # Another workspace sees none of it.
    o = other_workspace.auth("write")
    for method, path in (
        ("GET", f"/api/v1/segments/{sid}"),
        ("PATCH", f"/api/v1/segments/{sid}"),
        ("DELETE", f"/api/v1/segments/{sid}"),
        ("POST", f"/api/v1/segments/{sid}/refresh"),
        ("GET", f"/api/v1/segments/{sid}/members"),
        ("GET", f"/api/v1/segments/{sid}/history"),
        ("POST", f"/api/v1/segments/{lst}/members"),
        ("GET", f"/api/v1/contacts/{a}/segments"),
    ):
        body = {"contact_ids": [a]} if path.endswith("members") and method == "POST" else {}
        res = client.request(method, path, headers=o, json=body if method in ("POST", "PATCH") else None)
        assert res.status_code == 404, (method, path, res.text)
    res = client.post(f"/api/v1/segments/{lst}/members", json={"contact_ids": [a]}, headers=o)
    assert res.status_code == 404
    assert client.get("/api/v1/segments", headers=o).json()["items"] == []
    # Writing needs the write scope.
    assert (
        client.post("/api/v1/segments", json={"name": "x", "filter": FI}, headers=workspace.auth("read")).status_code
        == 403
    )

    assert client.delete(f"/api/v1/segments/{lst}", headers=h).status_code == 204
    assert client.get(f"/api/v1/segments/{lst}", headers=h).status_code == 404


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_segments_cli(cli_env: CliRunner, client, workspace):
    _contact(client, workspace, "a@example.fi", "FI")
    _contact(client, workspace, "b@example.se", "SE")
    sid = client.post("/api/v1/segments", json={"name": "Finns", "filter": FI}, headers=workspace.auth()).json()["id"]
    ws = ["--workspace", workspace.slug, "--json"]

    res = cli_env.invoke(cli_app, ["segments", "count", "--filter", json.dumps({"not": FI}), *ws])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"count": 1}
    res = cli_env.invoke(cli_app, ["segments", "list", *ws])
    assert [(s["id"], s["member_count"]) for s in json.loads(res.stdout)] == [(sid, 1)]
    _contact(client, workspace, "c@example.fi", "FI")  # contact created without an incremental hook
    res = cli_env.invoke(cli_app, ["segments", "refresh", str(sid), *ws])
    assert json.loads(res.stdout) == [{"segment_id": sid, "entered": 1, "exited": 0, "member_count": 2}]
    res = cli_env.invoke(cli_app, ["segments", "refresh", "--all", *ws])
    assert json.loads(res.stdout) == [{"segment_id": sid, "entered": 0, "exited": 0, "member_count": 2}]
    res = cli_env.invoke(cli_app, ["segments", "count", "--filter", '{"type": "tag", "op": "nope", "value": "x"}', *ws])
    assert res.exit_code == 1 and "filter.op" in res.output


def test_segment_edits_are_in_the_audit_log(client, workspace, session_factory):
    from sqlalchemy import select

    from suppilo.workspaces.models import AuditLog

    h = workspace.auth("write")
    flt = {"type": "tag", "op": "has_tag", "value": "vip"}
    sid = client.post("/api/v1/segments", json={"name": "VIPs", "filter": flt}, headers=h).json()["id"]
    client.patch(f"/api/v1/segments/{sid}", json={"name": "Top VIPs"}, headers=h)
    client.delete(f"/api/v1/segments/{sid}", headers=h)
    with session_factory() as s:
        rows = list(
            s.scalars(
                select(AuditLog)
                .where(AuditLog.workspace_id == workspace.id, AuditLog.subject_type == "segment")
                .order_by(AuditLog.id)
            )
        )
    assert [r.action for r in rows] == ["segment.created", "segment.updated", "segment.deleted"]
    assert all(r.actor.startswith("key:") and r.subject_id == sid for r in rows)
    assert rows[1].details["before"]["name"] == "VIPs" and rows[1].details["name"] == "Top VIPs"
