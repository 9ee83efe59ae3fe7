"""CLI commands: demo (fill a workspace with the deterministic demo business and serve it)."""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from suppilo.adapters.cli.common import JsonOpt, console, emit_json, fail
from suppilo.config import get_settings
from suppilo.db import migrate as db_migrate
from suppilo.db.session import make_engine, make_session_factory, unit_of_work
from suppilo.demo import loader
from suppilo.demo import snapshots as demo_snapshots
from suppilo.demo.generator import DemoParams
from suppilo.workspaces import service as workspaces_service

CREDENTIALS_FILE = "demo-credentials.json"


def register(app: typer.Typer) -> None:
    """Add these commands to the root app."""
    app.command("demo")(demo)


def _read_credentials(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_credentials(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _parse_day(value: str | None) -> date:
    if not value:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"--today must be YYYY-MM-DD, got {value!r}")
        raise


def demo(
    contacts: int = typer.Option(
        20000, "--contacts", min=1, help="Known contacts (anonymous visitors: twice as many)."
    ),
    seed: int = typer.Option(1, "--seed", help="Random seed; same seed, size and day give identical data."),
    today: str | None = typer.Option(None, "--today", help="Anchor day YYYY-MM-DD (default: today UTC)."),
    workspace_slug: str = typer.Option("demo", "--workspace-slug", help="Slug of the demo workspace."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve the API (and worker) afterwards."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    force: bool = typer.Option(False, "--force", help="Delete and rebuild the demo workspace."),
    as_json: bool = JsonOpt,
) -> None:
    """Fill a workspace with the Pohjola Outdoor demo business (12 months of history) and serve it."""
    params = DemoParams(seed=seed, contacts=contacts, today=_parse_day(today))
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url())
    db_migrate.upgrade(engine)
    factory = make_session_factory(engine)
    cred_path = settings.data_dir / CREDENTIALS_FILE
    credentials = _read_credentials(cred_path)
    url = f"http://{host}:{port}/"

    with unit_of_work(factory) as session:
        existing = workspaces_service.get_workspace_by_slug(session, workspace_slug)
        existing_id = existing.id if existing is not None else None
        reusable = existing is not None and loader.is_reusable(existing, params)
        state = loader.demo_state(existing) if existing is not None else None
    if existing_id is not None and not reusable and not force:
        if state is None:
            fail(f"workspace {workspace_slug!r} exists and is not a demo workspace; choose another --workspace-slug")
        if state.get("complete"):
            fail(
                f"demo workspace {workspace_slug!r} was built with {state.get('params')}; "
                "use --force to rebuild it with these parameters"
            )
    stored = credentials.get(workspace_slug)
    reused = bool(reusable and not force and isinstance(stored, dict) and stored.get("workspace_id") == existing_id)

    if reused:
        assert existing_id is not None and isinstance(stored, dict)
        with unit_of_work(factory) as session:
            ws = workspaces_service.get_workspace(session, existing_id)
            counts = dict((loader.demo_state(ws) or {}).get("counts", {}))
        entry = stored
        seconds = 0.0
    else:
        if existing_id is not None and (force or not reusable):
            if not as_json:
                console.print(f"deleting workspace {workspace_slug!r} (id {existing_id}) …")
            loader.delete_workspace(engine, existing_id)
        with unit_of_work(factory) as session:
            setup = loader.setup_workspace(session, params, workspace_slug)
        with Progress(
            TextColumn("[bold]loading demo[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("contacts"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=as_json,
        ) as bar:
            task = bar.add_task("load", total=params.contacts)

            def advance(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = loader.load_data(engine, setup.workspace_id, params, progress=advance)
        with unit_of_work(factory) as session:
            loader.mark_complete(session, setup.workspace_id, params, result)
        from suppilo.demo import journeys as demo_journeys

        with unit_of_work(factory) as session:
            demo_journeys.create_segments(session, setup.workspace_id)
        with unit_of_work(factory) as session:
            demo_journeys.enable_journeys(session, setup.workspace_id)
        with unit_of_work(factory) as session:
            demo_journeys.live_activity(session, setup.workspace_id)
        from suppilo.demo import retention as demo_retention

        with unit_of_work(factory) as session:
            demo_retention.load_retention(session, setup.workspace_id, seed=params.seed)
        counts = result.counts
        seconds = result.seconds
        entry = {
            "workspace_id": setup.workspace_id,
            "workspace": workspace_slug,
            "params": params.as_dict(),
            "admin_key": setup.admin_key,
            "write_key": setup.write_key,
            "users": [{k: u[k] for k in ("email", "password", "role")} for u in setup.users],
        }
        credentials[workspace_slug] = entry
        _write_credentials(cred_path, credentials)
    # The report snapshots are computed before serving, so that even the first view of the dashboard, attribution
    # and forecast reads precomputed figures (on reuse only the ones a new day or new rows overtook).
    with console.status("computing report snapshots …") if not as_json else nullcontext():
        started = time.perf_counter()
        computed = demo_snapshots.precompute(factory, int(entry["workspace_id"]))
        snapshot_seconds = time.perf_counter() - started
    engine.dispose()

    rows = sum(counts.values())
    out = {
        "workspace": workspace_slug,
        "workspace_id": entry["workspace_id"],
        "reused": reused,
        "params": params.as_dict(),
        "counts": counts,
        "rows": rows,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds) if seconds else None,
        "snapshots": computed,
        "snapshot_seconds": round(snapshot_seconds, 2),
        "url": url,
        "admin_key": entry["admin_key"],
        "write_key": entry["write_key"],
        "users": entry["users"],
        "credentials_file": str(cred_path),
    }
    if as_json:
        emit_json(out)
    else:
        verb = "reusing" if reused else f"loaded {rows:,} rows in {seconds:.1f} s into"
        console.print(f"{verb} workspace [bold]{workspace_slug}[/bold] (Pohjola Outdoor, id {entry['workspace_id']})")
        table = Table("table", "rows")
        for name, n in counts.items():
            table.add_row(name, f"{n:,}")
        console.print(table)
        console.print(f"computed {computed} report snapshots in {snapshot_seconds:.1f} s")
        console.print(f"URL:            {url}")
        console.print(f"admin API key:  {entry['admin_key']}")
        console.print(f"tracking key:   {entry['write_key']}")
        for user in entry["users"]:
            console.print(f"login ({user['role']}): {user['email']} / {user['password']}")
        console.print(f"(saved in {cred_path}, mode 600)")
    if serve:
        from suppilo.adapters.worker.runner import run_server

        run_server(host=host, port=port, with_worker=True)
