"""Export: formula cells neutralised, numbers kept, tags and custom properties included, round trip."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from suppilo.contacts.models import PropertyDefinition
from suppilo.transfer.exporter import export_stream, neutralise
from suppilo.transfer.importer import import_file


def _csv(session_factory, workspace_id: int, kind: str) -> list[dict[str, str]]:
    with session_factory() as s:
        text = "".join(export_stream(s, workspace_id, kind, "csv"))
    return list(csv.DictReader(io.StringIO(text)))


def test_neutralise() -> None:
    assert neutralise('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert [neutralise(v) for v in ("+1+1", "@SUM(A1)", "-2", "\tx", "\rx", "plain")] == [
        "'+1+1",
        "'@SUM(A1)",
        "'-2",
        "'\tx",
        "'\rx",
        "plain",
    ]


def test_contacts_export_neutralises_formulas_and_keeps_tags_and_properties(
    session_factory, workspace, tmp_path: Path
) -> None:
    with session_factory() as s:
        s.add(PropertyDefinition(workspace_id=workspace.id, object_type="contact", name="score", type="number"))
        s.commit()
    src = tmp_path / "in.csv"
    src.write_text(
        "Email,First Name,Last Name,Job Title,Phone Number,Tags,score\n"
        'a@firma.fi,"=HYPERLINK(""http://evil"",""x"")",+1+1,@SUM(A1),+358 40 1234567,vip;b2b,-3\n',
        encoding="utf-8",
    )
    assert import_file(session_factory, workspace.id, "contacts", src).failed == 0
    (row,) = _csv(session_factory, workspace.id, "contacts")
    assert row["first_name"] == '\'=HYPERLINK("http://evil","x")'
    assert row["last_name"] == "'+1+1" and row["job_title"] == "'@SUM(A1)"
    assert row["phone"] == "+358401234567"  # a validated E.164 number is not a formula
    assert row["tags"] == "b2b;vip" and row["score"] == "'-3"  # a custom property is text in a CSV cell
    assert row["lifecycle_stage"] == "interest" and row["company_domain"] == "firma.fi"
    with session_factory() as s:
        (obj,) = [json.loads(line) for line in "".join(export_stream(s, workspace.id, "contacts", "json")).splitlines()]
    assert obj["first_name"] == '=HYPERLINK("http://evil","x")'  # JSON is data, not a spreadsheet
    assert obj["tags"] == ["b2b", "vip"] and obj["properties"] == {"score": -3}


def test_negative_amounts_stay_numbers(session_factory, workspace, tmp_path: Path) -> None:
    src = tmp_path / "orders.csv"
    src.write_text(
        "order_id,email,placed_at,sku,name,quantity,unit_price,discount,total\n"
        "A1,x@firma.fi,2024-01-01,=CMD,Thing,1,10.00,2.50,-1.25\n",
        encoding="utf-8",
    )
    assert import_file(session_factory, workspace.id, "orders", src).failed == 0
    (row,) = _csv(session_factory, workspace.id, "orders")
    assert row["total"] == "-1.25" and row["discount"] == "2.50" and row["unit_price"] == "10.00"
    assert row["sku"] == "'=CMD" and row["quantity"] == "1"


def test_export_then_import_round_trips(session_factory, workspace, other_workspace, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(
        "Email,First Name,City,Country,Lifecycle Stage,Tags\n"
        "a@firma.fi,Anna,Turku,FI,customer,x\n"
        "b@gmail.com,Ben,Oslo,NO,lead,\n",
        encoding="utf-8",
    )
    import_file(session_factory, workspace.id, "contacts", src)
    out = tmp_path / "export.csv"
    with session_factory() as s:
        out.write_text("".join(export_stream(s, workspace.id, "contacts", "csv")), encoding="utf-8")
    summary = import_file(session_factory, other_workspace.id, "contacts", out)
    assert (summary.created, summary.failed) == (2, 0)
    mine = {r["email"]: r for r in _csv(session_factory, workspace.id, "contacts")}
    theirs = {r["email"]: r for r in _csv(session_factory, other_workspace.id, "contacts")}
    for email in mine:
        for col in ("first_name", "city", "country", "lifecycle_stage", "tags", "company_domain", "timezone"):
            assert theirs[email][col] == mine[email][col], col
    assert _csv(session_factory, workspace.id, "products") == []
