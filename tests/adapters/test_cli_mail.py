"""`suppilo mail list/show` read what the built-in mail catcher received."""

from __future__ import annotations

import asyncio
import json
import socket

from typer.testing import CliRunner

from suppilo.adapters.cli.main import app
from suppilo.config import get_settings
from suppilo.messaging.catcher import MailCatcher
from suppilo.messaging.mime import build_message, message_bytes
from suppilo.messaging.transport import SmtpConfig, SmtpTransport


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mail_list_and_show(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    catcher = MailCatcher(tmp_path, port=_free_port())
    catcher.start()
    msg = build_message(
        outbox_id=42,
        workspace_slug="nordshop",
        domain="nordshop.fi",
        from_email="news@nordshop.fi",
        to_email="aino@example.fi",
        subject="Kevät on täällä",
        text="Hei Aino!\n",
        html="<p>Hei <b>Aino</b>!</p>",
    )

    async def send() -> None:
        transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=catcher.port, start_tls=False))
        try:
            await transport.send("bounces@nordshop.fi", ["aino@example.fi"], message_bytes(msg))
        finally:
            await transport.close()

    try:
        asyncio.run(send())
    finally:
        catcher.stop()
    runner = CliRunner()
    try:
        r = runner.invoke(app, ["mail", "list", "--json"])
        assert r.exit_code == 0, r.output
        rows = json.loads(r.stdout)
        assert [(m["id"], m["subject"], m["to"]) for m in rows] == [(1, "Kevät on täällä", ["aino@example.fi"])]
        assert rows[0]["message_id"] == "<outbox-42.nordshop@nordshop.fi>"
        r = runner.invoke(app, ["mail", "show", "1"])
        assert r.exit_code == 0, r.output
        assert "Subject: Kevät on täällä" in r.stdout
        assert "Hei Aino!" in r.stdout and "<b>" not in r.stdout
        r = runner.invoke(app, ["mail", "show", "1", "--html"])
        assert "<b>Aino</b>" in r.stdout
        r = runner.invoke(app, ["mail", "show", "2"])
        assert r.exit_code == 1
    finally:
        get_settings.cache_clear()


def test_the_lifespan_hook_runs_the_catcher_with_the_app(test_settings, db_engine, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from suppilo.adapters.http.app import create_app
    from suppilo.adapters.worker.runner import MailCatcherHook

    port = _free_port()
    hook = MailCatcherHook(data_dir=tmp_path, port=port)
    app = create_app(test_settings, lifespan_hooks=[hook])
    msg = build_message(
        outbox_id=1,
        workspace_slug="w",
        domain="example.fi",
        from_email="a@example.fi",
        to_email="b@example.fi",
        subject="Hello",
        text="Hi\n",
    )

    async def send() -> None:
        transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=port, start_tls=False))
        try:
            await transport.send("a@example.fi", ["b@example.fi"], message_bytes(msg))
        finally:
            await transport.close()

    with TestClient(app):
        assert app.state.mail_catcher.running
        asyncio.run(send())
    assert hook.catcher is None  # stopped with the app
    assert [m.subject for m in MailCatcher(tmp_path).list()] == ["Hello"]
