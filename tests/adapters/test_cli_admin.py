"""The operator CLI: create a workspace, create a key that authenticates, list and revoke keys."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings
from suppilo.workspaces import service as workspaces_service


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_workspace_and_key_lifecycle(cli_env: CliRunner, session_factory) -> None:
    import secrets

    slug = f"cli-{secrets.token_hex(4)}"
    res = cli_env.invoke(
        cli_app,
        [
            "workspace",
            "create",
            "--slug",
            slug,
            "--name",
            "CLI shop",
            "--currency",
            "SEK",
            "--timezone",
            "Europe/Stockholm",
            "--country",
            "SE",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    created = json.loads(res.stdout)
    assert created["slug"] == slug and created["currency"] == "SEK"

    res = cli_env.invoke(cli_app, ["keys", "create", "--scope", "read", "--workspace", slug])
    assert res.exit_code == 0, res.output
    raw = res.stdout.strip()
    assert raw.startswith("sk_") and "\n" not in raw
    with session_factory() as s:
        principal = workspaces_service.authenticate_key(s, raw)
    assert principal is not None and principal.workspace_id == created["id"] and principal.allows("read")
    assert not principal.allows("write")

    res = cli_env.invoke(cli_app, ["keys", "list", "--workspace", slug, "--json"])
    keys = json.loads(res.stdout)
    assert len(keys) == 1 and "key" not in keys[0] and keys[0]["scopes"] == ["read"]

    res = cli_env.invoke(cli_app, ["keys", "revoke", str(keys[0]["id"]), "--workspace", slug])
    assert res.exit_code == 0
    with session_factory() as s:
        assert workspaces_service.authenticate_key(s, raw) is None


def test_bad_input_is_reported(cli_env: CliRunner) -> None:
    res = cli_env.invoke(cli_app, ["workspace", "create", "--slug", "x1", "--name", "X", "--timezone", "Mars/Base"])
    assert res.exit_code == 1
    res = cli_env.invoke(cli_app, ["keys", "create", "--scope", "root", "--workspace", "does-not-exist"])
    assert res.exit_code == 1
