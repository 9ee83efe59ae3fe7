"""``suppilo report``: funnel, spend, attribution, CLV and cohort reports as Rich tables, JSON or CSV."""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.analytics import charts, event_cohorts, service
from suppilo.analytics.columnar import ColumnarStore
from suppilo.config import get_settings
from suppilo.errors import DomainError

report_app = typer.Typer(help="Analytics reports in the workspace currency.", no_args_is_help=True)

FromOpt = typer.Option(None, "--from", help="First day (YYYY-MM-DD); default 90 days before --to.")
ToOpt = typer.Option(None, "--to", help="Last day (YYYY-MM-DD); default today.")
CsvOpt = typer.Option(None, "--csv", help="Also write the table as CSV to this file.")
SvgOpt = typer.Option(None, "--chart", help="Also write the chart to this file (.svg, or .png).")
EngineOpt = typer.Option("auto", "--engine", help="auto, sql or columnar (DuckDB copy of the event log).")


def _store() -> ColumnarStore:
    return ColumnarStore(get_settings().data_dir / "columnar")


def _chart(path: Path | None, data: dict[str, Any], draw: Callable[[dict[str, Any]], str]) -> None:
    if path is None:
        return
    svg = draw(data)
    if path.suffix.lower() == ".png":
        path.write_bytes(charts.svg_to_png(svg))
    else:
        path.write_text(svg, encoding="utf-8")


def register(app: typer.Typer) -> None:
    """Add ``suppilo report`` to the root app."""
    app.add_typer(report_app, name="report")


def _day(text: str | None, name: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{name} must be a date YYYY-MM-DD, got {text!r}")
    return None


def _run(workspace: str | None, fn: Callable[[Any, int], dict[str, Any]]) -> dict[str, Any]:
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        try:
            return fn(session, ws.id)
        except DomainError as exc:
            fail(f"{exc.field + ': ' if exc.field else ''}{exc.message}")
            raise AssertionError from exc  # unreachable


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return " ".join(_fmt(x) for x in v)
    return str(v)


def _output(
    data: dict[str, Any],
    as_json: bool,
    csv_file: Path | None,
    title: str,
    columns: Sequence[str],
    rows: list[dict[str, Any]],
) -> None:
    if csv_file is not None:
        with csv_file.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(columns)
            for r in rows:
                w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    if as_json:
        emit_json(data)
        return
    table = Table(title=title)
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(_fmt(r.get(c)) for c in columns))
    # Wide tables: no truncation when the output is piped or captured.
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    if data.get("insufficient_data"):
        console.print(f"[yellow]insufficient data:[/yellow] {data.get('reason')}")


@report_app.command("spend")
def spend(
    workspace: str | None = WorkspaceOpt,
    date_from: str | None = FromOpt,
    date_to: str | None = ToOpt,
    group_by: str = typer.Option("channel", "--group-by", help="channel, campaign, month, country or region"),
    as_json: bool = JsonOpt,
    csv_file: Path | None = CsvOpt,
) -> None:
    """Spend, leads, CPL, cost per qualified lead, CAC, ROI and ROAS."""
    frm, to = _day(date_from, "--from"), _day(date_to, "--to")
    data = _run(workspace, lambda s, ws: service.spend_report(s, ws, frm, to, group_by))
    head = service.GROUPS.get(group_by, [])
    cols = [*head, "spend_minor", "leads", "qualified_leads", "new_customers", "revenue_minor"]
    cols += ["cost_per_lead_minor", "cost_per_qualified_lead_minor", "cac_minor", "roi", "roas", "ltv_cac"]
    _output(
        data,
        as_json,
        csv_file,
        f"Spend ({data['currency']}, minor units) {data['from']} – {data['to']}",
        cols,
        data["rows"],
    )


@report_app.command("funnel")
def funnel(
    workspace: str | None = WorkspaceOpt,
    date_from: str | None = FromOpt,
    date_to: str | None = ToOpt,
    group_by: str | None = typer.Option(None, "--group-by", help="channel, country or region"),
    as_json: bool = JsonOpt,
    csv_file: Path | None = CsvOpt,
    chart: Path | None = SvgOpt,
) -> None:
    """The lifecycle-stage funnel: reached, conversion to the next stage, drop-off, median time in stage."""
    frm, to = _day(date_from, "--from"), _day(date_to, "--to")
    data = _run(workspace, lambda s, ws: service.funnel_report(s, ws, frm, to, group_by))
    _chart(chart, data, charts.lifecycle_funnel_chart)
    rows = [{"group": "all", **st} for st in data["all"]["stages"]]
    for g, res in data.get("groups", {}).items():
        rows += [{"group": g, **st} for st in res["stages"]]
    cols = ["group", "stage", "reached", "current", "conversion_to_next", "drop_off", "median_seconds_in_stage"]
    shown = {**data, "insufficient_data": data["all"]["insufficient_data"], "reason": data["all"]["reason"]}
    _output(shown, as_json, csv_file, f"Lifecycle funnel {data['from']} – {data['to']}", cols, rows)


@report_app.command("attribution")
def attribution_cmd(
    workspace: str | None = WorkspaceOpt,
    date_from: str | None = FromOpt,
    date_to: str | None = ToOpt,
    level: str = typer.Option("channel", "--level", help="channel or campaign"),
    as_json: bool = JsonOpt,
    csv_file: Path | None = CsvOpt,
    chart: Path | None = SvgOpt,
) -> None:
    """Conversions per channel (or campaign) under the six attribution models."""
    frm, to = _day(date_from, "--from"), _day(date_to, "--to")
    data = _run(workspace, lambda s, ws: service.attribution_report(s, ws, frm, to, level))
    _chart(chart, data, charts.attribution_chart)
    models = list(data["models"])
    rows = [
        {"key": r["key"], **{m: (r.get(m) or {}).get("conversions", 0.0) for m in models}} for r in data["side_by_side"]
    ]
    _output(data, as_json, csv_file, f"Attributed conversions {data['from']} – {data['to']}", ["key", *models], rows)


@report_app.command("clv")
def clv_cmd(
    workspace: str | None = WorkspaceOpt,
    fit: bool = typer.Option(
        False, "--fit", help="Fit now (writes the contact properties) instead of showing the last fit."
    ),
    holdout_days: int = typer.Option(90, "--holdout-days"),
    as_json: bool = JsonOpt,
    csv_file: Path | None = CsvOpt,
) -> None:
    """BG/NBD + Gamma-Gamma parameters, holdout check and CLV tiers."""
    if fit:
        data = _run(workspace, lambda s, ws: service.fit_clv(s, ws, holdout_days=holdout_days))
    else:
        data = _run(workspace, lambda s, ws: service.last_clv_fit(s, ws))
    rows = [{"model": "bg_nbd", **{k: data["bg_nbd"].get(k) for k in ("r", "alpha", "a", "b", "converged", "reason")}}]
    rows.append(
        {"model": "gamma_gamma", **{k: data["gamma_gamma"].get(k) for k in ("p", "q", "v", "converged", "reason")}}
    )
    for seg, seg_fit in (data.get("segments") or {}).items():
        if seg_fit.get("bg_nbd"):
            rows.append({"model": f"{seg} bg_nbd", **{k: seg_fit["bg_nbd"].get(k) for k in ("r", "alpha", "a", "b")}})
            gg = seg_fit["gamma_gamma"]
            rows.append({"model": f"{seg} gamma_gamma", **{k: gg.get(k) for k in ("p", "q", "v")}})
            rows[-2].update(converged=seg_fit["converged"], reason=seg_fit["reason"])
    cols = ["model", "r", "alpha", "a", "b", "p", "q", "v", "converged", "reason"]
    _output(data, as_json, csv_file, f"CLV fit: {data['customers']} customers ({data['currency']})", cols, rows)


@report_app.command("cohorts")
def cohorts(
    workspace: str | None = WorkspaceOpt,
    channel: str | None = typer.Option(None, "--channel"),
    date_to: str | None = ToOpt,
    as_json: bool = JsonOpt,
    csv_file: Path | None = CsvOpt,
) -> None:
    """Retention by acquisition month × months since the first order."""
    to = _day(date_to, "--to")
    data = _run(workspace, lambda s, ws: service.cohort_report(s, ws, channel=channel, date_to=to))
    width = max((len(r["retention"]) for r in data["cohorts"]), default=0)
    rows = [
        {"cohort": r["cohort"], "customers": r["customers"], **{f"m{k}": v for k, v in enumerate(r["retention"])}}
        for r in data["cohorts"]
    ]
    _output(
        data,
        as_json,
        csv_file,
        "Retention by acquisition month",
        ["cohort", "customers", *(f"m{k}" for k in range(width))],
        rows,
    )


@report_app.command("funnel-trends")
def funnel_trends_cmd(
    workspace: str | None = WorkspaceOpt,
    date_from: str | None = FromOpt,
    date_to: str | None = ToOpt,
    interval: str = typer.Option("month", "--interval", help="week or month"),
    as_json: bool = JsonOpt,
    csv_file: Path | None = CsvOpt,
    chart: Path | None = SvgOpt,
) -> None:
    """Stage-to-stage conversion per week or month of funnel entry."""
    frm, to = _day(date_from, "--from"), _day(date_to, "--to")
    data = _run(workspace, lambda s, ws: service.funnel_trends(s, ws, frm, to, interval))
    _chart(chart, data, charts.funnel_trend_chart)
    names = list(data["series"])
    rows = [
        {"period": p["period"], "contacts": p["contacts"], **{n: data["series"][n][i] for n in names}}
        for i, p in enumerate(data["periods"])
    ]
    _output(data, as_json, csv_file, f"Stage conversion per {interval}", ["period", "contacts", *names], rows)


@report_app.command("event-funnel")
def event_funnel_cmd(
    steps: list[str] = typer.Argument(..., help="Event names or page:/path, in order (at least two)."),
    workspace: str | None = WorkspaceOpt,
    window_days: float = typer.Option(30.0, "--window-days"),
    date_from: str | None = FromOpt,
    date_to: str | None = ToOpt,
    engine: str = EngineOpt,
    as_json: bool = JsonOpt,
    csv_file: Path | None = CsvOpt,
    chart: Path | None = SvgOpt,
) -> None:
    """An ordered event funnel with a conversion window."""
    if len(steps) < 2:
        fail("a funnel needs at least two steps")
    frm, to = _day(date_from, "--from"), _day(date_to, "--to")
    data = _run(
        workspace,
        lambda s, ws: service.event_funnel_report(s, ws, steps, window_days, frm, to, engine=engine, store=_store()),
    )
    _chart(chart, data, charts.event_funnel_chart)
    cols = ["step", "count", "drop_off", "conversion_from_previous", "conversion_from_start"]
    cols += ["median_seconds_from_previous"]
    _output(
        data, as_json, csv_file, f"Ordered funnel ({data['engine']}) {data['from']} – {data['to']}", cols, data["steps"]
    )


@report_app.command("event-cohorts")
def event_cohorts_cmd(
    workspace: str | None = WorkspaceOpt,
    by: str = typer.Option("month", "--by", help="week or month"),
    start_event: str | None = typer.Option(None, "--start-event", help="Acquisition event (default: any event)."),
    return_event: str | None = typer.Option(None, "--return-event", help="Activity event (default: any event)."),
    date_from: str | None = typer.Option(None, "--from", help="First acquisition day (default: all)."),
    date_to: str | None = ToOpt,
    max_periods: int = typer.Option(12, "--max-periods"),
    engine: str = EngineOpt,
    as_json: bool = JsonOpt,
    csv_file: Path | None = CsvOpt,
) -> None:
    """Retention of acquisition cohorts over events, by week or month since the first event."""
    frm, to = _day(date_from, "--from"), _day(date_to, "--to")
    data = _run(
        workspace,
        lambda s, ws: event_cohorts.event_cohort_report(
            s,
            ws,
            by=by,
            start_event=start_event,
            return_event=return_event,
            date_from=frm,
            date_to=to,
            max_periods=max_periods,
            engine=engine,
            store=_store(),
        ),
    )
    width = max((len(r["retention"]) for r in data["cohorts"]), default=0)
    rows = [
        {"cohort": r["cohort"], "contacts": r["contacts"], **{f"p{k}": v for k, v in enumerate(r["retention"])}}
        for r in data["cohorts"]
    ]
    _output(
        data,
        as_json,
        csv_file,
        f"Retention by acquisition {by} ({data['engine']})",
        ["cohort", "contacts", *(f"p{k}" for k in range(width))],
        rows,
    )


@report_app.command("dashboard-rebuild")
def dashboard_rebuild_cmd(
    workspace: str | None = WorkspaceOpt,
    all_workspaces: bool = typer.Option(False, "--all", help="Every workspace instead of one."),
) -> None:
    """Recompute the web dashboard's snapshots (every period) from scratch; the worker keeps them current after."""
    from suppilo.analytics import dashboard
    from suppilo.workspaces.models import Workspace

    done = 0
    with cli_session() as session:
        if all_workspaces:
            ids = list(session.scalars(select(Workspace.id).order_by(Workspace.id)))
        else:
            ids = [resolve_workspace(session, workspace).id]
        for ws in ids:
            for days in dashboard.PERIODS:
                dashboard.refresh(session, ws, days)
                done += 1
    console.print(f"recomputed {done} dashboard snapshots")


@report_app.command("journey-lift")
def journey_lift_cmd(
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
    csv_file: Path | None = CsvOpt,
) -> None:
    """Journeys with a holdout: treatment against holdout conversion and the incremental lift."""
    data = _run(workspace, lambda s, ws: service.journey_holdouts(s, ws))
    rows = []
    for j in data["journeys"]:
        lift = j["lift"] or {}
        rows.append(
            {
                "journey": j["name"],
                "treatment": f"{j['treatment']['converted']}/{j['treatment']['contacts']}",
                "holdout": f"{j['holdout']['converted']}/{j['holdout']['contacts']}",
                "absolute_lift": lift.get("absolute"),
                "relative_lift": lift.get("relative"),
                "p_value": lift.get("p_value"),
            }
        )
    cols = ["journey", "treatment", "holdout", "absolute_lift", "relative_lift", "p_value"]
    _output(data, as_json, csv_file, "Journey holdout lift", cols, rows)
