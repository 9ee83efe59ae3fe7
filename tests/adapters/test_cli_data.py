"""``suppilo import`` / ``suppilo export`` from the command line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_import_and_export_contacts(cli_env: CliRunner, workspace, tmp_path: Path) -> None:
    src = tmp_path / "leads.csv"
    src.write_text(
        "E-mail;Etunimi;Company Name;Extra\nanna@firma.fi;Anna;Firma Oy;1\nbroken;X;;2\n=1+1@x;Y;;3\n",
        encoding="utf-8-sig",
    )
    res = cli_env.invoke(
        cli_app,
        ["import", "contacts", str(src), "--workspace", workspace.slug, "--map", "Etunimi=first_name", "--json"],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert (summary["created"], summary["failed"]) == (1, 2)
    assert summary["ignored_columns"] == ["Extra"]
    assert summary["error_file"] == str(tmp_path / "leads.errors.csv")
    with open(summary["error_file"], encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    assert [r["_line"] for r in rows] == ["3", "4"] and rows[0]["E-mail"] == "broken"

    res = cli_env.invoke(cli_app, ["export", "contacts", "--workspace", workspace.slug])
    assert res.exit_code == 0, res.output
    (row,) = list(csv.DictReader(io.StringIO(res.stdout)))
    assert (row["email"], row["first_name"], row["company_name"]) == ("anna@firma.fi", "Anna", "Firma Oy")

    out = tmp_path / "c.jsonl"
    res = cli_env.invoke(cli_app, ["export", "contacts", "--format", "json", "-o", str(out), "-w", workspace.slug])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text(encoding="utf-8").strip())["email"] == "anna@firma.fi"


def test_unreadable_file_exits_non_zero(cli_env: CliRunner, workspace, tmp_path: Path) -> None:
    res = cli_env.invoke(cli_app, ["import", "contacts", str(tmp_path / "nope.csv"), "-w", workspace.slug])
    assert res.exit_code == 1
    (tmp_path / "nokey.csv").write_text("Name,City\nA,B\n", encoding="utf-8")
    res = cli_env.invoke(cli_app, ["import", "contacts", str(tmp_path / "nokey.csv"), "-w", workspace.slug])
    assert res.exit_code == 1 and "email" in res.output
    res = cli_env.invoke(
        cli_app, ["import", "contacts", str(tmp_path / "nokey.csv"), "-w", workspace.slug, "--channel", "tv"]
    )
    assert res.exit_code == 1
