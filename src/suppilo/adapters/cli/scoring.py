"""``suppilo scoring``: define ICPs and engagement rules from files, recompute scores, explain a contact's scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.analytics.columnar import ColumnarStore
from suppilo.config import get_settings
from suppilo.db.base import utcnow
from suppilo.engine.scoring import engagement_to_json
from suppilo.errors import DomainError
from suppilo.scoring import bulk, predictive, service
from suppilo.scoring.schemas import IcpCreate, IcpUpdate

scoring_app = typer.Typer(help="Scoring: ICP fit, engagement rules, recompute and explain.", no_args_is_help=True)
icp_app = typer.Typer(help="Ideal customer profiles.", no_args_is_help=True)
rules_app = typer.Typer(help="Engagement rules.", no_args_is_help=True)
scoring_app.add_typer(icp_app, name="icp")
scoring_app.add_typer(rules_app, name="rules")

BATCH = 1000


def register(app: typer.Typer) -> None:
    """Add ``suppilo scoring`` to the root app."""
    app.add_typer(scoring_app, name="scoring")


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: {exc.strerror}")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        fail(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'}: {exc}")


@icp_app.command("define")
def define_icp(
    file: Path = typer.Argument(..., help="JSON or YAML: the definition, or {name, description, definition}."),
    name: str | None = typer.Option(None, "--name", help="ICP name (default: the file's 'name')."),
    inactive: bool = typer.Option(False, "--inactive", help="Store it without scoring with it."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create an ICP from a file, or replace the definition of the ICP with that name."""
    raw = _read(file)
    if not isinstance(raw, dict):
        fail(f"{file}: an object is expected")
    definition = raw.get("definition", raw) if "definition" in raw else {k: v for k, v in raw.items() if k != "name"}
    icp_name = name or raw.get("name")
    if not icp_name or not isinstance(icp_name, str):
        fail("give --name or a 'name' in the file")
    description = str(raw.get("description", "")) if "definition" in raw else ""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            existing = next((i for i in service.list_icps(session, ws.id) if i.name == icp_name), None)
            if existing is None:
                icp = service.create_icp(
                    session,
                    ws.id,
                    IcpCreate(name=icp_name, description=description, definition=definition, active=not inactive),
                    actor="cli",
                )
                action = "created"
            else:
                icp = service.update_icp(
                    session, ws.id, existing.id, IcpUpdate(definition=definition, active=not inactive), actor="cli"
                )
                action = "updated"
            out = {"id": icp.id, "name": icp.name, "active": icp.active, "action": action}
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json(out)
    else:
        console.print(f"ICP {out['id']} {out['name']!r} {action}; run `suppilo scoring recompute` to score now.")


@icp_app.command("list")
def list_icps(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """The workspace's ICPs."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        rows: list[dict[str, Any]] = [
            {"id": i.id, "name": i.name, "active": i.active, "definition": i.definition}
            for i in service.list_icps(session, ws.id)
        ]
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "name", "active", "criteria")
    for r in rows:
        crit = ", ".join(k for k in r["definition"] if k != "grades")
        table.add_row(str(r["id"]), r["name"], "yes" if r["active"] else "no", crit)
    console.print(table)


@rules_app.command("set")
def set_rules(
    file: Path = typer.Argument(..., help="JSON or YAML: {half_life_days, rules: [...], stage_thresholds: [...]}"),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Replace the engagement rules (engagement is recomputed on the next scoring run)."""
    raw = _read(file)
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            config = service.set_engagement_config(session, ws.id, raw, actor="cli")
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    console.print(f"{len(config.rules)} rules, half-life {config.half_life_days:g} days.")


@rules_app.command("show")
def show_rules(workspace: str | None = WorkspaceOpt) -> None:
    """The engagement rules in force, as JSON."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        emit_json(engagement_to_json(service.engagement_config(session, ws.id)))


@scoring_app.command("recompute")
def recompute(
    kind: list[str] = typer.Option(["fit", "engagement"], "--kind", help="fit and/or engagement."),
    contact: list[int] = typer.Option([], "--contact", help="Only these contact ids (default: all)."),
    processes: int | None = typer.Option(
        None,
        "--processes",
        min=1,
        help="Worker processes for every contact, each scoring and writing contact-id ranges (1: one transaction; "
        "default: the CPU count on PostgreSQL, 1 on SQLite).",
    ),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Rescore contacts now: every contact set-based (split by contact-id ranges over --processes worker processes,
    each range written in a transaction of its own; with --processes 1 all in one transaction), or the given ones
    committing every 1,000 (safe to interrupt and run again)."""
    bad = [k for k in kind if k not in ("fit", "engagement")]
    if bad:
        fail(f"--kind: {bad[0]!r} is not fit or engagement")
    totals = {k: {"scored": 0, "changed": 0} for k in kind}
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            ids = list(contact) or service.all_contact_ids(session, ws.id)
            now = utcnow()
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                disable=as_json,
            ) as progress:
                if not contact:  # every contact: the set-based path
                    whole = progress.add_task("scoring", total=len(ids) * len(kind))

                    def advance(n: int) -> None:
                        progress.advance(whole, n)

                    url = get_settings().resolved_database_url()
                    # events read from the columnar copy of the event log once the reports have built it (synced
                    # first); building it here would cost more than reading the row store once
                    store = ColumnarStore(get_settings().data_dir / "columnar")
                    copy = store if store.exists(session) else None
                    if (processes or bulk.default_processes()) > 1:
                        session.commit()
                        done = bulk.rescore_parallel(url, ws.id, kind, now, processes, progress=advance, store=copy)
                    else:
                        done = bulk.rescore_all(session, ws.id, kind, now, progress=advance, store=copy)
                    for k, r in done.items():
                        totals[k] = {"scored": r.scored, "changed": len(r.changed)}
                    ids = []
                task = progress.add_task("scoring", total=len(ids), visible=bool(ids))
                for i in range(0, len(ids), BATCH):
                    chunk = ids[i : i + BATCH]
                    for k, r in service.recompute(session, ws.id, chunk, kind, now).items():
                        totals[k]["scored"] += r.scored
                        totals[k]["changed"] += len(r.changed)
                    session.commit()
                    progress.advance(task, len(chunk))
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    except bulk.RangesFailed as exc:
        fail(f"{exc}; the other ranges are stored — run the command again to complete it")
    if as_json:
        emit_json(totals)
        return
    for k, t in totals.items():
        console.print(f"{k}: {t['scored']} scored, {t['changed']} changed")


@scoring_app.command("explain")
def explain(contact_id: int, workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """A contact's scores now, each with the reasons behind it."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            data = service.explain(session, ws.id, contact_id)
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json(data)
        return
    scores = data["scores"]
    if not scores:
        console.print(f"contact {contact_id} has no scores yet (define an ICP; run `suppilo scoring recompute`)")
        return
    if "fit" in scores:
        fit = scores["fit"]
        table = Table(
            "criterion",
            "matched",
            "points",
            "detail",
            title=f"fit {fit['score']:g} ({fit['grade']}) — ICP {fit['icp_name']!r}",
        )
        for c in fit["criteria"]:
            table.add_row(
                c["criterion"], "yes" if c["matched"] else "no", f"{c['points']:g}/{c['max_points']:g}", c["detail"]
            )
        console.print(table)
    if "engagement" in scores:
        eng = scores["engagement"]
        table = Table(
            "rule",
            "events",
            "points",
            "now",
            title=f"engagement {eng['score']:.1f} (half-life {eng['half_life_days']:g} days)",
        )
        for c in eng["contributions"]:
            table.add_row(c["rule"], str(c["events"]), f"{c['points']:g}", f"{c['points_now']:.1f}")
        console.print(table)
    if "predictive" in scores:
        pred = scores["predictive"]
        reasons = "; ".join(str(r["detail"]) for r in pred["reasons"])
        console.print(f"predictive {pred['score']:.1f} ({pred['grade']}): {reasons}")
    if data["priority"]:
        console.print(f"priority: {data['priority']}")


@scoring_app.command("run")
def run(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Run the periodic scoring job once for the workspace (what changed since its last run)."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        r = service.run_workspace(session, ws.id)
        out = {
            "fit": len(r.fit.changed),
            "companies": len(r.companies.changed),
            "engagement": len(r.engagement.changed),
        }
    if as_json:
        emit_json(out)
    else:
        console.print(", ".join(f"{k}: {v} changed" for k, v in out.items()))


@scoring_app.command("matrix")
def matrix(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Contacts by fit grade × engagement band."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        data = service.priority_matrix(session, ws.id)
    if as_json:
        emit_json(data)
        return
    table = Table("fit \\ engagement", *data["engagement_bands"])
    for grade, row in data["rows"].items():
        table.add_row(grade, *(str(row[b]) for b in data["engagement_bands"]))
    console.print(table)


@scoring_app.command("train")
def train(
    target: str = typer.Option("customer", "--target", help="The lifecycle stage to predict."),
    days: int = typer.Option(90, "--days", help="Within how many days (7–365)."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train the predictive score on the workspace's history, score its contacts, print the validation report."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            report = predictive.train(session, ws.id, target, days)
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json(report)
        return
    m = report["metrics"]
    console.print(
        f"trained on {m['train_contacts']} contacts ({m['train_positives']} reached {target} within {days} days); "
        f"validated on {m['validation_contacts']} later ones: AUC {m['auc']:.3f}, Brier {m['brier']:.3f}, "
        f"base rate {m['base_rate']:.1%}"
    )
    table = Table("predicted", "observed", "contacts", title="calibration")
    for b in m["calibration"]:
        table.add_row(f"{b['predicted']:.1%}", f"{b['observed']:.1%}", str(b["contacts"]))
    console.print(table)
    console.print(f"{report['scored']} contacts scored.")
