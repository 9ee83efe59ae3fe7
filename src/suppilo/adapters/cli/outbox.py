"""``suppilo outbox``: run the sender, see the queue, report and resend uncertain messages, run the DSN endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import datetime
from typing import TypedDict

import typer
from rich.table import Table

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.config import get_settings
from suppilo.db.session import make_engine, make_session_factory
from suppilo.errors import DomainError
from suppilo.messaging import outbox as outbox_service
from suppilo.messaging.settings import SenderSettings, run_sender, sender_config

# The sender's settings and runner live in suppilo.messaging.settings (shared with the worker and the web);
# the names stay importable from here.
__all__ = ["SenderSettings", "outbox_app", "register", "run_sender", "sender_config"]


class _UncertainRow(TypedDict):
    """One uncertain message as ``outbox uncertain`` prints it (table or JSON)."""

    id: int
    workspace_id: int
    dedupe_key: str
    to: str | None
    message_id: str | None
    sending_at: datetime | None
    reason: str | None


outbox_app = typer.Typer(help="The outbox: send, inspect, resend uncertain messages.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``suppilo outbox`` to the root app."""
    app.add_typer(outbox_app, name="outbox")


@outbox_app.command("send")
def send(
    until_empty: bool = typer.Option(False, "--until-empty", help="Stop when nothing is due and nothing is in flight."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Concurrent SMTP connections."),
    chunk_size: int | None = typer.Option(None, "--chunk-size", help="Rows claimed per transaction."),
    lease_seconds: float | None = typer.Option(None, "--lease-seconds", help="Claim lease."),
    max_seconds: float | None = typer.Option(None, "--max-seconds", help="Stop after this long."),
    workspace_id: list[int] | None = typer.Option(None, "--workspace-id", help="Only this workspace (repeatable)."),
    as_json: bool = JsonOpt,
) -> None:
    """Drain the outbox over the configured SMTP server (or the built-in mail catcher)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url())
    factory = make_session_factory(engine)
    try:
        stats = asyncio.run(
            run_sender(
                factory,
                settings,
                until_empty=until_empty,
                max_seconds=max_seconds,
                concurrency=concurrency,
                chunk_size=chunk_size,
                lease_seconds=lease_seconds,
                workspace_ids=tuple(workspace_id) if workspace_id else None,
            )
        )
    finally:
        engine.dispose()
    out = {k: v for k, v in vars(stats).items() if k != "started"}
    if as_json:
        emit_json(out)
    else:
        console.print(" ".join(f"{k}={v}" for k, v in out.items()))


@outbox_app.command("status")
def status(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Messages per status."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        counts = outbox_service.counts(session, ws.id)
    if as_json:
        emit_json(counts)
        return
    table = Table("status", "messages")
    for key, value in sorted(counts.items()):
        table.add_row(key, str(value))
    console.print(table)


@outbox_app.command("uncertain")
def uncertain(
    all_workspaces: bool = typer.Option(False, "--all", help="Every workspace."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Messages whose fate is unknown after a crash: check the server's logs, then resend or leave them."""
    with cli_session() as session:
        ws_id = None if all_workspaces else resolve_workspace(session, workspace).id
        rows: list[_UncertainRow] = [
            {
                "id": r.id,
                "workspace_id": r.workspace_id,
                "dedupe_key": r.dedupe_key,
                "to": r.to_address,
                "message_id": r.message_id,
                "sending_at": r.sending_at,
                "reason": r.last_error,
            }
            for r in outbox_service.list_uncertain(session, ws_id)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "dedupe key", "to", "message id", "claimed at")
    for r in rows:
        table.add_row(str(r["id"]), r["dedupe_key"], r["to"] or "", r["message_id"] or "", str(r["sending_at"]))
    console.print(table)
    console.print(
        f"{len(rows)} uncertain message(s); `suppilo outbox resend ID` queues one again (it may arrive twice)."
    )


@outbox_app.command("resend")
def resend(
    message_id: int = typer.Argument(..., help="Outbox id of an uncertain or failed message."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Queue an uncertain or failed message again (an explicit decision, recorded in the audit log)."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            row = outbox_service.resend(session, ws.id, message_id, actor="cli")
            out = {"id": row.id, "status": row.status}
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json(out)
    else:
        console.print(f"message {out['id']} queued again")


@outbox_app.command("dsn-server")
def dsn_server(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(2526, "--port", help="Where bounces (DSNs) and complaints (ARF) are received."),
) -> None:
    """Receive delivery status notifications and complaints over SMTP and apply them."""
    from aiosmtpd.controller import Controller

    from suppilo.messaging.dsn import DsnHandler

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url())
    controller = Controller(DsnHandler(make_session_factory(engine)), hostname=host, port=port)
    controller.start()
    console.print(f"DSN endpoint on {host}:{port}; Ctrl-C stops it")
    stop = asyncio.Event()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    try:
        asyncio.run(wait())
    finally:
        controller.stop()
        engine.dispose()
