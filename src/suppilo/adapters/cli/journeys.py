"""``suppilo journeys``: create and edit journeys from JSON/YAML files, switch them on, enrol, report, playbooks."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.table import Table

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.errors import DomainError
from suppilo.journeys import playbooks, runner, service, triggers

journeys_app = typer.Typer(help="Journeys: definitions, states, enrolment, reports, playbooks.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``suppilo journeys`` to the root app."""
    app.add_typer(journeys_app, name="journeys")


def _read(path: Path) -> object:
    try:
        return service.load_document(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
        raise


_T = TypeVar("_T")


def _run(fn: Callable[[], _T]) -> _T:
    """``fn()``, with a domain error printed as ``field: message`` and exit code 1."""
    try:
        return fn()
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")


@journeys_app.command("list")
def list_(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """The workspace's journeys."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        rows = [
            {"id": j.id, "name": j.name, "status": j.status, "version": j.current_version, "trigger": j.trigger_type}
            for j in service.list_journeys(session, ws.id)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "name", "status", "version", "trigger")
    for r in rows:
        table.add_row(str(r["id"]), str(r["name"]), str(r["status"]), str(r["version"]), str(r["trigger"]))
    console.print(table)


@journeys_app.command("create")
def create(
    file: Path = typer.Argument(..., help="A JSON or YAML definition."),
    activate: bool = typer.Option(False, "--activate", help="Switch it on at once."),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Save a new journey from a definition file."""
    raw = _read(file)

    def go() -> int:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            journey = service.create_journey(session, ws.id, raw, actor="cli")
            if activate:
                service.set_status(session, ws.id, journey.id, "active")
            return journey.id

    jid = _run(go)
    console.print(f"journey {jid} saved{' and active' if activate else ' (draft)'}")


@journeys_app.command("update")
def update(
    journey_id: int,
    file: Path = typer.Argument(..., help="A JSON or YAML definition."),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Save a new version of a journey."""
    raw = _read(file)

    def go() -> int:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            return service.update_definition(session, ws.id, journey_id, raw, actor="cli").current_version

    console.print(f"journey {journey_id} is now at version {_run(go)}")


def _status(journey_id: int, status: str, workspace: str | None) -> None:
    def go() -> None:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            service.set_status(session, ws.id, journey_id, status)

    _run(go)
    console.print(f"journey {journey_id}: {status}")


@journeys_app.command("activate")
def activate(journey_id: int, workspace: str | None = WorkspaceOpt) -> None:
    """Switch a journey on."""
    _status(journey_id, "active", workspace)


@journeys_app.command("pause")
def pause(journey_id: int, workspace: str | None = WorkspaceOpt) -> None:
    """Pause a journey (contacts inside wait; nothing new enters)."""
    _status(journey_id, "paused", workspace)


@journeys_app.command("archive")
def archive(journey_id: int, workspace: str | None = WorkspaceOpt) -> None:
    """Archive a journey (every enrollment ends)."""
    _status(journey_id, "archived", workspace)


@journeys_app.command("diagram")
def diagram(journey_id: int, workspace: str | None = WorkspaceOpt) -> None:
    """Print the journey as a Mermaid flowchart with the contacts waiting at each step."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        text = _run(lambda: service.diagram(session, ws.id, journey_id))
    typer.echo(text, nl=False)


@journeys_app.command("report")
def report(journey_id: int, workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Entered, waiting, ended and goal; per step waiting, passed, sent, opened, clicked."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        data = _run(lambda: service.report(session, ws.id, journey_id))
    if as_json:
        emit_json(data)
        return
    console.print(
        f"[bold]{data['name']}[/bold] ({data['status']}, v{data['version']}): entered {data['entered']}, "
        f"waiting {data['waiting']}, goal {data['goal']}, ended {data['ended']}"
    )
    table = Table("step", "type", "waiting", "passed", "sent", "opened", "clicked")
    for s in data["steps"]:
        table.add_row(
            s["step"], s["type"], str(s["waiting"]), str(s["passed"]),
            *(str(s.get(k, "")) for k in ("sent", "opened", "clicked")),
        )  # fmt: skip
    console.print(table)


@journeys_app.command("enrol")
def enrol(
    journey_id: int,
    contact_ids: list[int] = typer.Option(None, "--contact", help="A contact id (repeatable)."),
    segment_id: int | None = typer.Option(None, "--segment", help="Every member of this segment."),
    key: str | None = typer.Option(None, help="A key that makes a repeated command enrol nobody twice."),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Enrol contacts or a segment's members by hand."""
    if not contact_ids and segment_id is None:
        fail("give --contact or --segment")
    k = key or uuid.uuid4().hex

    def go() -> int:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            if segment_id is not None:
                return service.enrol_segment(session, ws.id, journey_id, segment_id, key=k)
            return len(service.enrol_contacts(session, ws.id, journey_id, contact_ids, key=k))

    console.print(f"{_run(go)} contacts entered")


@journeys_app.command("playbooks")
def list_playbooks() -> None:
    """The ready-made journeys."""
    table = Table("key", "name", "description", "settings")
    for p in playbooks.PLAYBOOKS.values():
        table.add_row(p.key, p.name, p.description, ", ".join(p.needs))
    console.print(table)


@journeys_app.command("enable")
def enable(
    key: str,
    setting: list[str] = typer.Option(None, "--set", help="name=value (numbers are read as numbers)."),
    draft: bool = typer.Option(False, "--draft", help="Save without switching on."),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Enable a playbook."""
    settings: dict[str, object] = {}
    for item in setting or []:
        name, sep, value = item.partition("=")
        if not sep:
            fail(f"--set wants name=value, got {item!r}")
        settings[name.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value

    def go() -> int:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            return playbooks.enable(session, ws.id, key, settings, activate=not draft, actor="cli").id

    console.print(f"playbook {key} enabled as journey {_run(go)}")


@journeys_app.command("run")
def run(as_json: bool = JsonOpt) -> None:
    """Scan triggers and advance every due enrollment once (the worker does this continuously)."""
    from suppilo.config import get_settings
    from suppilo.db.session import make_engine, make_session_factory

    engine = make_engine(get_settings().resolved_database_url())
    factory = make_session_factory(engine)
    try:
        scanned = triggers.run_scanners(factory)
        advanced = runner.run_due(factory)
    finally:
        engine.dispose()
    out = {"scanned": scanned, "advanced": advanced}
    if as_json:
        emit_json(out)
    else:
        console.print(f"scanned {scanned} rows, advanced {advanced} enrollments")


@journeys_app.command("stuck")
def stuck(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Enrollments overdue by more than 10 minutes or ended as stuck."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        rows = [
            {"id": e.id, "journey_id": e.journey_id, "contact_id": e.contact_id, "step": e.step,
             "due_at": e.due_at.isoformat() if e.due_at else None, "status": e.status, "error": e.last_error}
            for e in service.stuck(session, ws.id)
        ]  # fmt: skip
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "journey", "contact", "step", "due", "status", "error")
    for r in rows:
        table.add_row(*(str(r[k]) for k in ("id", "journey_id", "contact_id", "step", "due_at", "status", "error")))
    console.print(table)
