"""``suppilo privacy``: data-subject requests (export, erase, object), each written to the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from sqlalchemy.orm import Session

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.errors import DomainError
from suppilo.messaging import gdpr

privacy_app = typer.Typer(help="Data-subject rights: export, erasure, objection.", no_args_is_help=True)
ContactOpt = typer.Option(None, "--contact", help="Contact id.")
EmailOpt = typer.Option(None, "--email", help="Email address of the contact.")


def register(app: typer.Typer) -> None:
    """Add ``suppilo privacy`` to the root app."""
    app.add_typer(privacy_app, name="privacy")


def _contact_id(session: Session, workspace_id: int, contact: int | None, email: str | None) -> int:
    if contact is None and not email:
        fail("give --contact ID or --email ADDRESS")
    return gdpr.find_contact(session, workspace_id, contact_id=contact, email=email).id


@privacy_app.command("export")
def export(
    contact: int | None = ContactOpt,
    email: str | None = EmailOpt,
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the JSON here instead of stdout."),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Everything stored about a person, as JSON (GDPR Art. 15 and 20)."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            data = gdpr.export_contact(session, ws.id, _contact_id(session, ws.id, contact, email), actor="cli")
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if output:
        output.write_text(json.dumps(data, default=str, ensure_ascii=False, indent=2), encoding="utf-8")
        console.print(f"exported to {output}")
    else:
        emit_json(data)


@privacy_app.command("erase")
def erase(
    contact: int | None = ContactOpt,
    email: str | None = EmailOpt,
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Remove a person's personal data (GDPR Art. 17); suppression entries (hashed) stay."""
    if not yes and not typer.confirm("Erase this person's personal data? This cannot be undone"):
        raise typer.Exit(1)
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            cid = _contact_id(session, ws.id, contact, email)
            counts = gdpr.erase_contact(session, ws.id, cid, actor="cli")
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json({"contact_id": cid, "counts": counts})
    else:
        console.print(f"contact {cid} erased: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@privacy_app.command("object")
def object_(
    contact: int | None = ContactOpt,
    email: str | None = EmailOpt,
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Record an objection to direct marketing (GDPR Art. 21): no marketing mail, no marketing scoring."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            cid = _contact_id(session, ws.id, contact, email)
            record_id = gdpr.object_to_marketing(session, ws.id, cid, actor="cli")
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json({"contact_id": cid, "consent_record_id": record_id})
    else:
        console.print(f"objection recorded for contact {cid}")
