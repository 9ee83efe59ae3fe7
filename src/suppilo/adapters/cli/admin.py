"""Operator commands: migrate, serve, workspaces and API keys."""

from __future__ import annotations

from typing import TypedDict

import typer
from rich.table import Table

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.config import get_settings
from suppilo.db import migrate as db_migrate
from suppilo.db.session import make_engine
from suppilo.errors import DomainError
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate, WorkspaceRead


class _ApiKeyRow(TypedDict):
    """One API key as ``keys list`` prints it (table or JSON); never the secret."""

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: str
    revoked: bool


keys_app = typer.Typer(help="API keys (stored hashed; a new key is shown once).", no_args_is_help=True)
workspace_app = typer.Typer(help="Workspaces (tenants).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add these commands to the root app."""
    app.command("migrate")(migrate)
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
    app.add_typer(workspace_app, name="workspace")


def migrate() -> None:
    """Bring the database to the newest schema."""
    url = get_settings().resolved_database_url()
    engine = make_engine(url)
    db_migrate.upgrade(engine)
    engine.dispose()
    console.print(f"database at head: {engine.url.render_as_string(hide_password=True)}")


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Run the background worker in this process."),
    mail_catcher: bool | None = typer.Option(
        None,
        "--mail-catcher/--no-mail-catcher",
        help="Start the built-in mail catcher (default: on unless SUPPILO_SMTP_HOST is set).",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        help="API server processes. One process uses one core; with more than one, the background worker and the "
        "mail catcher run once, in this parent process, and the API processes serve every request.",
    ),
) -> None:
    """Run the API (and by default the background worker and the mail catcher) in one process, or in several."""
    from suppilo.adapters.worker.runner import run_server

    migrate()
    if workers == 1:
        run_server(host=host, port=port, with_worker=worker, with_mail_catcher=mail_catcher)
    else:
        _serve_processes(host=host, port=port, workers=workers, with_worker=worker, with_mail_catcher=mail_catcher)


def _serve_processes(host: str, port: int, workers: int, with_worker: bool, with_mail_catcher: bool | None) -> None:
    """``workers`` uvicorn API processes; the periodic jobs and the mail catcher once, in this process.

    The API processes are uvicorn's own supervisor in a child process (``python -m uvicorn``): spawned from here
    they would re-import this whole command line first and miss the supervisor's start-up health check on a busy
    machine.
    """
    import signal
    import subprocess
    import sys

    from suppilo.adapters.worker.runner import Worker, default_jobs
    from suppilo.db.session import make_session_factory
    from suppilo.messaging.catcher import MailCatcher

    settings = get_settings()
    if with_mail_catcher is None:
        with_mail_catcher = not settings.smtp_host
    engine = make_engine(settings.resolved_database_url())
    catcher: MailCatcher | None = None
    background: Worker | None = None
    api: subprocess.Popen[bytes] | None = None

    def _stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _stop)
    try:
        if with_mail_catcher:
            catcher = MailCatcher(settings.data_dir, host=settings.mail_catcher_host, port=settings.mail_catcher_port)
            try:
                catcher.start()
            except (OSError, RuntimeError) as exc:
                console.print(f"mail catcher not started on {catcher.host}:{catcher.port}: {exc}")
                catcher = None
        if with_worker:
            background = Worker(make_session_factory(engine), default_jobs())
            background.start()
        command = [sys.executable, "-m", "uvicorn", "suppilo.adapters.http.serving:create_served_app", "--factory"]
        command += ["--host", host, "--port", str(port), "--workers", str(workers), "--proxy-headers"]
        api = subprocess.Popen(command)  # noqa: S603 - our own interpreter and module, options typed by typer
        code = api.wait()
        if code:
            raise SystemExit(code)
    except KeyboardInterrupt:
        pass
    finally:
        if api is not None and api.poll() is None:
            api.terminate()
            api.wait(timeout=60)
        if background is not None:
            background.stop()
        if catcher is not None:
            catcher.stop()
        engine.dispose()


@workspace_app.command("create")
def workspace_create(
    slug: str = typer.Option(..., help="Short unique name, e.g. 'nordshop'."),
    name: str = typer.Option(..., help="Display name."),
    language: str = typer.Option("en", help="Default language."),
    currency: str = typer.Option("EUR", help="Reporting currency (ISO 4217)."),
    timezone: str = typer.Option("UTC", help="IANA time zone."),
    country: str = typer.Option("FI", help="Home country (ISO 3166-1 alpha-2)."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a workspace with the default lifecycle stages and channel rules."""
    try:
        data = WorkspaceCreate(
            slug=slug, name=name, default_language=language, currency=currency, timezone=timezone, country=country
        )
        with cli_session() as session:
            ws = workspaces_service.create_workspace(session, data)
            out = WorkspaceRead.model_validate(ws).model_dump()
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        emit_json(out)
    else:
        console.print(f"workspace {out['slug']} created (id {out['id']})")


@workspace_app.command("list")
def workspace_list(as_json: bool = JsonOpt) -> None:
    """List workspaces."""
    from sqlalchemy import select

    from suppilo.workspaces.models import Workspace

    with cli_session() as session:
        rows = [
            WorkspaceRead.model_validate(w).model_dump()
            for w in session.scalars(select(Workspace).order_by(Workspace.id))
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "slug", "name", "currency", "timezone")
    for r in rows:
        table.add_row(str(r["id"]), r["slug"], r["name"], r["currency"], r["timezone"])
    console.print(table)


@keys_app.command("create")
def keys_create(
    scope: list[str] = typer.Option(..., "--scope", help="track, read, write or admin (repeatable)."),
    name: str = typer.Option("", "--name", help="What the key is for."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create an API key and print only the key."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            key, raw = workspaces_service.create_api_key(session, ws.id, scopes=scope, name=name)
            key_id = key.id
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json({"id": key_id, "key": raw, "scopes": sorted(set(scope))})
    else:
        typer.echo(raw)


@keys_app.command("list")
def keys_list(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """List a workspace's keys (never their secrets)."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        rows: list[_ApiKeyRow] = [
            {
                "id": k.id,
                "name": k.name,
                "prefix": k.prefix,
                "scopes": k.scopes,
                "created_at": k.created_at.isoformat(),
                "revoked": k.revoked_at is not None,
            }
            for k in workspaces_service.list_api_keys(session, ws.id)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "name", "prefix", "scopes", "created", "revoked")
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["name"],
            r["prefix"] + "…",
            ",".join(r["scopes"]),
            r["created_at"][:19],
            "yes" if r["revoked"] else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: int = typer.Argument(..., help="The key's id."), workspace: str | None = WorkspaceOpt) -> None:
    """Revoke a key."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            workspaces_service.revoke_api_key(session, ws.id, key_id)
    except DomainError as exc:
        fail(exc.message)
    console.print(f"key {key_id} revoked")
