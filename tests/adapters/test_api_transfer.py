"""POST /api/v1/imports/{kind} and GET /api/v1/exports/{kind}."""

from __future__ import annotations

import csv
import io
import json


def test_upload_import_then_export(client, workspace, other_workspace) -> None:
    body = b"Email,First Name,Original Source\nAnna@Firma.fi,Anna,EMAIL_MARKETING\nbad,B,\n"
    res = client.post(
        "/api/v1/imports/contacts",
        headers=workspace.auth("write"),
        files={"file": ("crm.csv", body, "text/csv")},
        data={"map": ["First Name=first_name"]},
    )
    assert res.status_code == 200, res.text
    summary = res.json()
    assert (summary["created"], summary["failed"], summary["file"]) == (1, 1, "crm.csv")
    assert summary["errors"][0]["line"] == 3 and "email" in summary["errors"][0]["error"]
    # English message plus the code and its parameters.
    assert summary["errors"][0]["code"] == "invalid_email"
    assert summary["errors"][0]["params"] == {"column": "email", "value": "bad"}

    res = client.get("/api/v1/exports/contacts?format=csv", headers=workspace.auth("read"))
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    (row,) = list(csv.DictReader(io.StringIO(res.text)))
    assert (row["email"], row["first_name"], row["first_touch_channel"]) == ("anna@firma.fi", "Anna", "email")

    res = client.get("/api/v1/exports/contacts?format=json", headers=other_workspace.auth("read"))
    assert res.status_code == 200 and res.text == ""  # another workspace sees nothing

    res = client.get("/api/v1/exports/contacts?format=json", headers=workspace.auth("read"))
    assert [json.loads(line)["email"] for line in res.text.splitlines()] == ["anna@firma.fi"]


def test_scopes_and_bad_input(client, workspace) -> None:
    files = {"file": ("x.csv", b"Email\na@firma.fi\n", "text/csv")}
    assert client.post("/api/v1/imports/contacts", headers=workspace.auth("read"), files=files).status_code == 403
    assert client.get("/api/v1/exports/contacts", headers=workspace.auth("track")).status_code == 403
    assert client.post("/api/v1/imports/planets", headers=workspace.auth("write"), files=files).status_code == 422
    res = client.post(
        "/api/v1/imports/contacts",
        headers=workspace.auth("write"),
        files={"file": ("x.csv", b"Name\nAnna\n", "text/csv")},
    )
    assert res.status_code == 422 and res.json()["error"]["code"] == "missing_column"
    res = client.post(
        "/api/v1/imports/contacts", headers=workspace.auth("write"), files={"file": ("e.csv", b"", "text/csv")}
    )
    assert res.status_code == 422 and res.json()["error"]["code"] == "unreadable_file"
