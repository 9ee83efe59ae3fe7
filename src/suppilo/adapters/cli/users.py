"""CLI commands: users of the web interface (create with a role in a workspace, grant, set a password, list)."""

from __future__ import annotations

import secrets

import typer
from rich.table import Table

from suppilo.accounts import service as accounts
from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.errors import DomainError
from suppilo.workspaces import service as workspaces_service

users_app = typer.Typer(help="Users who log in to the web interface (passwords stored as argon2 hashes).")


def register(app: typer.Typer) -> None:
    """Add these commands to the root app."""
    app.add_typer(users_app, name="users")


def _password(given: str | None, generate: bool) -> str:
    if given:
        return given
    if generate:
        return secrets.token_urlsafe(12)
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("create")
def create(
    email: str = typer.Argument(..., help="Login email."),
    role: str = typer.Option("marketer", "--role", help="admin, marketer, sales or analyst."),
    name: str = typer.Option("", "--name", help="Display name."),
    language: str = typer.Option("en", "--language", help="Interface language: en, sv, fi, da or lv."),
    password: str | None = typer.Option(None, "--password", envvar="SUPPILO_NEW_PASSWORD", help="The password."),
    generate: bool = typer.Option(False, "--generate-password", help="Generate a password and print it once."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a user with a password and give them a role in a workspace."""
    secret = _password(password, generate)
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        try:
            user = accounts.create_user(session, email=email, password=secret, name=name, language=language)
            accounts.grant(session, ws.id, user.id, role)
        except DomainError as exc:
            fail(f"{exc.field}: {exc.message}")
            return
        out = {"id": user.id, "email": user.email, "workspace": ws.slug, "role": role}
    if generate:
        out["password"] = secret
    if as_json:
        emit_json(out)
    else:
        console.print(f"user {out['email']} (id {out['id']}) is {role} in workspace {out['workspace']}")
        if generate:
            console.print(f"password: {secret}")


@users_app.command("grant")
def grant(
    email: str = typer.Argument(..., help="Login email of an existing user."),
    role: str = typer.Option(..., "--role", help="admin, marketer, sales or analyst."),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Give an existing user a role in a workspace (or change it)."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        user = accounts.get_user_by_email(session, email)
        if user is None:
            fail(f"no user with email {email!r}")
            return
        try:
            accounts.grant(session, ws.id, user.id, role)
        except DomainError as exc:
            fail(f"{exc.field}: {exc.message}")
    console.print(f"{email} is {role} in workspace {ws.slug}")


@users_app.command("set-password")
def set_password(
    email: str = typer.Argument(..., help="Login email."),
    password: str | None = typer.Option(None, "--password", envvar="SUPPILO_NEW_PASSWORD", help="The new password."),
    generate: bool = typer.Option(False, "--generate-password", help="Generate a password and print it once."),
) -> None:
    """Replace a user's password (their open sessions end)."""
    secret = _password(password, generate)
    with cli_session() as session:
        user = accounts.get_user_by_email(session, email)
        if user is None:
            fail(f"no user with email {email!r}")
            return
        try:
            accounts.set_password(session, user.id, secret)
        except DomainError as exc:
            fail(f"{exc.field}: {exc.message}")
    console.print(f"password of {email} changed" + (f": {secret}" if generate else ""))


@users_app.command("list")
def list_users(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """The users of a workspace with their roles."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        rows = [
            {"id": u.id, "email": u.email, "name": u.name, "role": role, "language": u.language, "active": u.is_active}
            for u, role in workspaces_service.list_members(session, ws.id)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "email", "name", "role", "language")
    for r in rows:
        table.add_row(str(r["id"]), str(r["email"]), str(r["name"]), str(r["role"]), str(r["language"]))
    console.print(table)
