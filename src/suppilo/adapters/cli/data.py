"""CLI commands: ``suppilo import`` and ``suppilo export`` (CSV in; CSV or JSON lines out)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.config import get_settings
from suppilo.db.session import make_engine, make_session_factory
from suppilo.errors import DomainError
from suppilo.transfer import exporter, importer
from suppilo.transfer.mapping import parse_overrides


class Kind(StrEnum):
    contacts = "contacts"
    companies = "companies"
    products = "products"
    orders = "orders"


class Format(StrEnum):
    csv = "csv"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add these commands to the root app."""
    app.command("import")(import_command)
    app.command("export")(export_command)


def import_command(
    kind: Kind = typer.Argument(..., help="What the file holds."),
    file: Path = typer.Argument(..., help="The CSV file (UTF-8 with or without BOM, or cp1252; , ; or tab)."),
    workspace: str | None = WorkspaceOpt,
    mapping: list[str] = typer.Option([], "--map", help="'Column=field' (repeatable); 'Column=' ignores a column."),
    errors: Path | None = typer.Option(None, "--errors", help="Where to write refused rows (default FILE.errors.csv)."),
    channel: str = typer.Option("offline", "--channel", help="Channel of the import touch when no source column."),
    as_json: bool = JsonOpt,
) -> None:
    """Import contacts, companies, products or orders from a CSV file (safe to run again)."""
    error_path = errors or file.with_name(file.stem + ".errors.csv")
    engine = make_engine(get_settings().resolved_database_url())
    try:
        factory = make_session_factory(engine)
        with cli_session() as session:
            ws_id = resolve_workspace(session, workspace).id
        overrides = parse_overrides(mapping)
        with Progress(
            TextColumn(f"importing {kind.value}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rows]} rows"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=as_json or not console.is_terminal,
        ) as bar:
            task = bar.add_task("import", total=None, rows=0)

            def progress(rows: int, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, rows=rows)

            summary = importer.import_file(
                factory,
                ws_id,
                kind.value,
                file,
                overrides=overrides,
                channel=channel,
                error_path=error_path,
                progress=progress,
            )
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}" if exc.field else exc.message)
        return
    finally:
        engine.dispose()
    if as_json:
        emit_json(summary.to_dict(max_errors=100))
        return
    console.print(
        f"{summary.rows} rows: [green]{summary.created} created[/green], {summary.updated} updated, "
        f"[{'red' if summary.failed else 'green'}]{summary.failed} failed[/] ({summary.seconds:.1f}s)"
    )
    if summary.ignored_columns:
        console.print(f"ignored columns: {', '.join(summary.ignored_columns)}")
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if summary.error_file:
        console.print(f"refused rows written to {summary.error_file}")
        for err in summary.errors[:5]:
            console.print(f"  line {err.line}: {err.error}")


def export_command(
    kind: Kind = typer.Argument(..., help="What to export."),
    fmt: Format = typer.Option(Format.csv, "--format", help="csv, or json (one object per line)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File to write (default standard output)."),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Export contacts, companies, products or orders (tags and custom properties included)."""
    with cli_session() as session:
        ws_id = resolve_workspace(session, workspace).id
        out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        try:
            for chunk in exporter.export_stream(session, ws_id, kind.value, fmt.value):
                out.write(chunk)
        finally:
            if output:
                out.close()
    if output:
        console.print(f"{kind.value} written to {output}")
