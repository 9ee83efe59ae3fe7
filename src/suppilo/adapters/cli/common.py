"""Shared CLI plumbing: settings, sessions, workspace selection, JSON output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.config import get_settings
from suppilo.db.session import make_engine, make_session_factory
from suppilo.workspaces.models import Workspace

console = Console(stderr=True)
WorkspaceOpt = typer.Option(None, "--workspace", "-w", envvar="SUPPILO_WORKSPACE", help="Workspace slug.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON on standard output.")


@contextmanager
def cli_session() -> Iterator[Session]:
    """One unit of work for a command: commit on success."""
    engine = make_engine(get_settings().resolved_database_url())
    factory = make_session_factory(engine)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
        engine.dispose()


def resolve_workspace(session: Session, slug: str | None) -> Workspace:
    """The workspace named by ``slug``, or the only one when there is exactly one."""
    if slug:
        ws = session.scalar(select(Workspace).where(Workspace.slug == slug))
        if ws is None:
            fail(f"no workspace with slug {slug!r}")
        return ws
    rows = list(session.scalars(select(Workspace).order_by(Workspace.id).limit(2)))
    if len(rows) == 1:
        return rows[0]
    fail("several workspaces exist (or none): choose one with --workspace SLUG" if rows else "no workspace exists yet")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error to standard error and exit."""
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def emit_json(data: Any) -> None:
    """Write JSON to standard output."""
    sys.stdout.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
