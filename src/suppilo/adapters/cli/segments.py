"""``suppilo segments``: list segments, refresh their membership, count a filter."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.db.base import utcnow
from suppilo.errors import DomainError
from suppilo.segments import service

segments_app = typer.Typer(help="Segments: list, refresh membership, count a filter.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``suppilo segments`` to the root app."""
    app.add_typer(segments_app, name="segments")


@segments_app.command("list")
def list_(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """The workspace's segments with their member counts."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        rows = [
            {
                "id": s.id,
                "name": s.name,
                "kind": s.kind,
                "member_count": s.member_count,
                "dependencies": s.dependencies,
                "last_evaluated_at": s.last_evaluated_at.isoformat() if s.last_evaluated_at else None,
            }
            for s in service.list_segments(session, ws.id)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "name", "kind", "members", "last evaluated")
    for r in rows:
        table.add_row(str(r["id"]), str(r["name"]), str(r["kind"]), str(r["member_count"]), str(r["last_evaluated_at"]))
    console.print(table)


@segments_app.command("refresh")
def refresh(
    segment_id: int | None = typer.Argument(None, help="Segment id (or --all)."),
    all_: bool = typer.Option(False, "--all", help="Every dynamic segment, in dependency order."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Evaluate segments in full and store who entered and exited."""
    if (segment_id is None) == (not all_):
        fail("give a segment ID or --all")
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            now = utcnow()
            if all_:
                result = service.refresh_all(session, ws.id, now, reason="manual")
            else:
                assert segment_id is not None
                result = service.refresh_segment(session, ws.id, segment_id, now, reason="manual")
            rows = [
                {
                    "segment_id": sid,
                    "entered": len(result.entered.get(sid, [])),
                    "exited": len(result.exited.get(sid, [])),
                    "member_count": service.get_segment(session, ws.id, sid).member_count,
                }
                for sid in result.evaluated
            ]
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json(rows)
    else:
        for r in rows:
            console.print(f"segment {r['segment_id']}: +{r['entered']} −{r['exited']}, {r['member_count']} members")


@segments_app.command("count")
def count(
    filter_json: str = typer.Option(..., "--filter", help="The filter as JSON."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """How many contacts a filter matches now."""
    try:
        raw = json.loads(filter_json)
    except json.JSONDecodeError as exc:
        fail(f"--filter is not JSON: {exc}")
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            n = service.preview_count(session, ws.id, raw)
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json({"count": n})
    else:
        console.print(f"{n} contacts")
