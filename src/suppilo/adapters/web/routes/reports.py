"""Reports: attribution (six models side by side), spend and ROI by channel, campaign or month (and the funnel by
region), cohorts, CLV and experiments with their statistics. Each page has an inline SVG chart, the same figures as a
table and a CSV download made on the server (cells that would run as a spreadsheet formula are neutralised).

The figures come from ``analytics.service`` — the same functions the API's /api/v1/reports endpoints call. Every
role reads reports; fitting the CLV model (a write) is for admins and marketers."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session, sessionmaker

from suppilo.adapters.http.deps import DbSession, ReadSession
from suppilo.adapters.web import charts, csrf
from suppilo.adapters.web.auth import Ctx, WebError, Workspace_
from suppilo.adapters.web.background import Refreshes, Results
from suppilo.adapters.web.errors import error_text
from suppilo.adapters.web.i18n import translations
from suppilo.adapters.web.templating import render
from suppilo.analytics import attribution_snapshots as attribution_snaps
from suppilo.analytics import dashboard as dashboard_snaps
from suppilo.analytics import event_cohorts
from suppilo.analytics import service as analytics
from suppilo.analytics.columnar import ColumnarStore
from suppilo.db.base import utcnow
from suppilo.errors import DomainError, NotFound
from suppilo.journeys import service as journeys_service
from suppilo.transfer.exporter import neutralise

router = APIRouter()
REPORTS = ("attribution", "spend", "cohorts", "clv", "experiments")
MODELS = ("first_touch", "last_touch", "linear", "position_based", "time_decay", "markov")
# Series colours of the charts (SVG presentation attributes, which the style-src policy does not govern).
PALETTE = ("#2f6fdb", "#e07b39", "#3a9d5d", "#8a5cc7", "#c94f6d", "#4aa3b5")
FIT_ROLES = frozenset({"admin", "marketer"})
MAX_ARMS = 4
JOURNEY_LIMIT = 50


def _dates(date_from: str, date_to: str, language: str = "en") -> tuple[date | None, date | None, dict[str, str]]:
    """Parsed ``from``/``to`` (empty: the service's default period) and any error per field (in ``language``): a
    date that does not parse, or a period the reports refuse (``from`` after ``to``), so a page answers at once
    instead of starting a computation that would only refuse."""
    errors: dict[str, str] = {}
    parsed: list[date | None] = []
    for name, text in (("from", date_from), ("to", date_to)):
        try:
            parsed.append(date.fromisoformat(text) if text.strip() else None)
        except ValueError:
            errors[name] = translations(language).gettext("Give a date as YYYY-MM-DD.")
            parsed.append(None)
    if not errors and (parsed[0] is not None or parsed[1] is not None):
        try:
            analytics.period(parsed[0], parsed[1])
        except DomainError as exc:
            _refusal(exc, language, errors)
    return parsed[0], parsed[1], errors


def _refusal(exc: DomainError, language: str, errors: dict[str, str]) -> str:
    """A report's refusal in ``language``: put beside its field when the form has it (the period's dates, into
    ``errors``; then ''), else returned for the page's message."""
    text = error_text(exc, language)
    if exc.field in ("from", "to"):
        errors[exc.field] = text
        return ""
    return text


def _page(request: Request, ctx: Ctx, template: str, report: str, **context: Any) -> Response:
    return render(
        request,
        template,
        language=ctx.language,
        timezone=ctx.timezone,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        active="reports",
        report=report,
        reports=REPORTS,
        palette=PALETTE,
        **context,
    )


def _csv(name: str, header: list[str], rows: list[list[Any]]) -> Response:
    """A CSV file; text cells that a spreadsheet would run as a formula get a leading apostrophe."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else neutralise(v) if isinstance(v, str) else v for v in row])
    return Response(
        buf.getvalue().encode("utf-8-sig"),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}.csv"', "cache-control": "no-store"},
    )


def _columns_chart(groups: list[str], series: list[list[float]], names: list[str]) -> dict[str, Any]:
    bars, labels, ticks, top = charts.grouped_columns(groups, series)
    return {"bars": bars, "labels": labels, "ticks": ticks, "top": top, "names": names}


@router.get("/w/{slug}/reports")
def reports_home(ctx: Workspace_) -> Response:
    ctx.require("view")
    return RedirectResponse(f"{ctx.base}/reports/attribution", status_code=303)


# --- attribution -----------------------------------------------------------------------------------------------------


def _attribution(session: Session, ctx: Ctx, frm: date | None, to: date | None, level: str) -> dict[str, Any]:
    return analytics.attribution_report(
        session, ctx.workspace_id, frm, to, "campaign" if level == "campaign" else "channel"
    )


_refreshing = Refreshes("attribution")


def _attribution_key(ctx: Ctx, frm: date | None, to: date | None, level: str) -> tuple[Any, ...]:
    level = "campaign" if level == "campaign" else "channel"
    return ("attribution", ctx.workspace_id, frm, to, level, utcnow().date())


def attribution_figures(
    session: Session, factory: sessionmaker[Session], workspace_id: int, level: str
) -> dict[str, Any] | None:
    """The report of the default period (the 90 days up to today) from its snapshot, or None while its first
    computation runs (in one background thread of this process; the page polls until it is there).

    A snapshot that new rows or a new day overtook is shown with its time and marked as updating: the worker's
    ``attribution`` job recomputes it within ``REFRESH_SECONDS`` in its own process. Only when no worker has kept it (it
    is older than ``ORPHAN_SECONDS``) does this process recompute it, in one background thread — which, sharing the
    interpreter, slows this process's other requests while it runs (a 14 ms view took up to 0.75 s at 1M contacts)."""
    level = "campaign" if level == "campaign" else "channel"
    key = (workspace_id, level)
    row = attribution_snaps.snapshot(session, workspace_id, level, attribution_snaps.DEFAULT_DAYS)
    if row is None:
        _refreshing.start(key, lambda: attribution_snaps.refresh_apart(factory, workspace_id, level))
        return None
    data = attribution_snaps.figures_of(row)
    data["stale"] = not attribution_snaps.is_current(session, row, utcnow().date())
    if data["stale"] and (row.as_of != utcnow().date() or attribution_snaps.is_orphaned(row)):
        _refreshing.start(key, lambda: attribution_snaps.refresh_apart(factory, workspace_id, level))
    return data


# Reports asked for with explicit dates or (spend) any parameters: kept in this process's memory (see ``Results``).
_results = Results("report")


@dataclass(frozen=True)
class Kept:
    """A kept report as its page shows it: being computed (nothing yet), refused (the page's message, or '' when the
    refusal went beside its field), or its figures with their time and whether they are being updated."""

    computing: bool = False
    error: str = ""
    value: Any = None
    computed_at: datetime | None = None
    stale: bool = False

    def shown(self, figures: dict[str, Any]) -> dict[str, Any]:
        """``figures`` (the value or a part of it) with the time they were computed and whether they are updating."""
        return {**figures, "computed_at": self.computed_at, "stale": self.stale}


def kept_report(
    request: Request,
    session: Session,
    ctx: Ctx,
    errors: dict[str, str],
    key: tuple[Any, ...],
    watermark: Callable[[Session], str],
    compute: Callable[[Session], Any],
) -> Kept:
    """The kept result of ``key`` for the page: a missing or overtaken result is computed by one background thread in
    a read session, never in the request (meanwhile the page shows it computing, or the overtaken one as updating). A
    refusal is worded in the user's language, beside its field (into ``errors``) when the form has one."""
    factory = request.app.state.read_session_factory
    result = _results.get(key)
    if result is None:
        _results.start(key, factory, watermark, compute)
        return Kept(computing=True)
    stale = not _results.is_current(result, watermark(session))
    if stale:
        _results.start(key, factory, watermark, compute)
    if result.error is not None:
        return Kept(error=_refusal(result.error, ctx.language, errors))
    return Kept(value=result.value, computed_at=result.computed_at, stale=stale)


def current_report(
    session: Session, key: tuple[Any, ...], watermark: Callable[[Session], str], compute: Callable[[Session], Any]
) -> Any:
    """For a download: the kept result of ``key`` when it is current, else computed now (raising its refusal)."""
    result = _results.get(key)
    if result is None or not _results.is_current(result, watermark(session)):
        return compute(session)
    if result.error is not None:
        raise result.error
    return result.value


def clear_attribution_refreshes() -> None:
    """Forget background refreshes in flight and the reports kept in memory (the default period's figures live in
    ``attribution_snapshots``)."""
    _refreshing.clear()
    _results.clear()


def _attribution_rows(data: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for row in data["side_by_side"]:
        cells: list[Any] = [row["key"]]
        for m in MODELS:
            credit = row.get(m) or {}
            cells += [credit.get("conversions"), credit.get("revenue_minor")]
        rows.append(cells)
    return rows


@router.get("/w/{slug}/reports/attribution")
def attribution(request: Request, ctx: Workspace_, session: ReadSession, level: str = "channel") -> Response:
    ctx.require("view")
    frm, to, errors = _dates(request.query_params.get("from", ""), request.query_params.get("to", ""), ctx.language)
    data: dict[str, Any] | None = None
    error = ""
    computing = False
    if not errors:
        if frm is None and to is None:  # the default period: read from its snapshot
            data = attribution_figures(session, request.app.state.session_factory, ctx.workspace_id, level)
            computing = data is None
        else:
            kept = kept_report(
                request,
                session,
                ctx,
                errors,
                _attribution_key(ctx, frm, to, level),
                attribution_snaps.watermark,
                lambda s: _attribution(s, ctx, frm, to, level),
            )
            computing, error = kept.computing, kept.error
            data = kept.shown(kept.value) if kept.value is not None else None
    chart = None
    if data and data["side_by_side"]:
        keys = [r["key"] for r in data["side_by_side"]][:12]
        series = [[float((r.get(m) or {}).get("conversions") or 0) for r in data["side_by_side"][:12]] for m in MODELS]
        chart = _columns_chart(keys, series, list(MODELS))
    return _page(
        request,
        ctx,
        "reports_attribution.html",
        "attribution",
        data=data,
        computing=computing,
        error=error,
        errors=errors,
        level=level,
        models=MODELS,
        chart=chart,
        query=request.url.query,
        params={"from": request.query_params.get("from", ""), "to": request.query_params.get("to", "")},
    )


@router.get("/w/{slug}/reports/attribution.csv")
def attribution_csv(request: Request, ctx: Workspace_, session: ReadSession, level: str = "channel") -> Response:
    ctx.require("view")
    frm, to, errors = _dates(request.query_params.get("from", ""), request.query_params.get("to", ""), ctx.language)
    if errors:
        raise WebError(422, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    try:
        shown = None
        if frm is None and to is None:  # the same figures as the page shows, once they are there
            shown = attribution_figures(session, request.app.state.session_factory, ctx.workspace_id, level)
        if shown is not None:
            data = shown
        else:
            data = current_report(
                session,
                _attribution_key(ctx, frm, to, level),
                attribution_snaps.watermark,
                lambda s: _attribution(s, ctx, frm, to, level),
            )
    except DomainError as exc:
        raise WebError(422, error_text(exc, ctx.language)) from exc
    header = [data["level"]] + [f"{m}_{x}" for m in MODELS for x in ("conversions", "revenue_minor")]
    return _csv("attribution", header, _attribution_rows(data))


# --- spend and ROI ---------------------------------------------------------------------------------------------------


def _spend(session: Session, ctx: Ctx, frm: date | None, to: date | None, group_by: str) -> dict[str, Any]:
    group = group_by if group_by in ("channel", "campaign", "month") else "channel"
    return analytics.spend_report(session, ctx.workspace_id, frm, to, group)


def _spend_page(session: Session, ctx: Ctx, frm: date | None, to: date | None, group_by: str) -> dict[str, Any]:
    """The spend page's figures: the report and the funnel by region."""
    return {
        "spend": _spend(session, ctx, frm, to, group_by),
        "regions": analytics.funnel_report(session, ctx.workspace_id, frm, to, "region"),
    }


def _spend_key(ctx: Ctx, frm: date | None, to: date | None, group_by: str) -> tuple[Any, ...]:
    group = group_by if group_by in ("channel", "campaign", "month") else "channel"
    return ("spend", ctx.workspace_id, frm, to, group, utcnow().date())


SPEND_COLUMNS = (
    "spend_minor",
    "leads",
    "qualified_leads",
    "new_customers",
    "revenue_minor",
    "cost_per_lead_minor",
    "cost_per_qualified_lead_minor",
    "cac_minor",
    "roi",
    "roas",
    "avg_predicted_clv_12m_minor",
    "ltv_cac",
)


def _spend_heads(group_by: str) -> list[str]:
    return {"channel": ["channel"], "campaign": ["channel", "campaign"], "month": ["month", "channel"]}.get(
        group_by, ["channel"]
    )


@router.get("/w/{slug}/reports/spend")
def spend(request: Request, ctx: Workspace_, session: ReadSession, group_by: str = "channel") -> Response:
    ctx.require("view")
    frm, to, errors = _dates(request.query_params.get("from", ""), request.query_params.get("to", ""), ctx.language)
    data: dict[str, Any] | None = None
    regions: dict[str, Any] | None = None
    error = ""
    computing = False
    if not errors:
        kept = kept_report(
            request,
            session,
            ctx,
            errors,
            _spend_key(ctx, frm, to, group_by),
            dashboard_snaps.watermark,
            lambda s: _spend_page(s, ctx, frm, to, group_by),
        )
        computing, error = kept.computing, kept.error
        if kept.value is not None:
            data, regions = kept.shown(kept.value["spend"]), kept.value["regions"]
    chart = None
    heads = _spend_heads(data["group_by"] if data else group_by)
    if data and data["rows"] and data["group_by"] == "channel":
        rows = data["rows"][:12]
        chart = _columns_chart(
            [r["channel"] for r in rows],
            [[r["spend_minor"] / 100 for r in rows], [r["revenue_minor"] / 100 for r in rows]],
            ["spend", "revenue"],
        )
    region_rows = []
    if regions:
        for name, res in sorted((regions.get("groups") or {}).items()):
            region_rows.append((name, {r["stage"]: r["reached"] for r in res["stages"]}))
    return _page(
        request,
        ctx,
        "reports_spend.html",
        "spend",
        data=data,
        computing=computing,
        error=error,
        errors=errors,
        group_by=data["group_by"] if data else group_by,
        heads=heads,
        chart=chart,
        region_stages=(regions or {}).get("stages", []),
        region_rows=region_rows,
        query=request.url.query,
        params={"from": request.query_params.get("from", ""), "to": request.query_params.get("to", "")},
    )


@router.get("/w/{slug}/reports/spend.csv")
def spend_csv(request: Request, ctx: Workspace_, session: ReadSession, group_by: str = "channel") -> Response:
    ctx.require("view")
    frm, to, errors = _dates(request.query_params.get("from", ""), request.query_params.get("to", ""), ctx.language)
    if errors:
        raise WebError(422, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    try:
        data = current_report(
            session,
            _spend_key(ctx, frm, to, group_by),
            dashboard_snaps.watermark,
            lambda s: _spend_page(s, ctx, frm, to, group_by),
        )["spend"]
    except DomainError as exc:
        raise WebError(422, error_text(exc, ctx.language)) from exc
    heads = _spend_heads(data["group_by"])
    rows = [[r.get(h) for h in heads] + [r.get(c) for c in SPEND_COLUMNS] for r in data["rows"]]
    return _csv("spend", [*heads, *SPEND_COLUMNS, "currency"], [[*row, data["currency"]] for row in rows])


# --- cohorts ---------------------------------------------------------------------------------------------------------


def heat(rows: list[list[float | None]]) -> list[list[dict[str, Any]]]:
    """Heat-map cells of a cohort grid: each value with its colour strength (0..1) and whether its label needs light
    text. Period 0 is 100 % for every cohort by definition, so the scale is set by the largest later value (else
    every later cell would look empty next to it); values above it (period 0) are shown at full strength."""
    later = [v for r in rows for v in r[1:] if v is not None]
    top = max(later, default=0.0) or max((v for r in rows for v in r if v is not None), default=0.0) or 1.0
    out = []
    for r in rows:
        cells = []
        for v in r:
            strength = min((v or 0.0) / top, 1.0)
            cells.append({"value": v, "strength": round(0.06 + 0.94 * strength, 3), "light_text": strength > 0.55})
        out.append(cells)
    return out


@router.get("/w/{slug}/reports/cohorts")
def cohorts(request: Request, ctx: Workspace_, session: ReadSession, channel: str = "", events: str = "") -> Response:
    ctx.require("view")
    frm, to, errors = _dates(request.query_params.get("from", ""), request.query_params.get("to", ""), ctx.language)
    data: dict[str, Any] | None = None
    by_event: dict[str, Any] | None = None
    error = ""
    if not errors:
        try:
            data = analytics.cohort_report(
                session, ctx.workspace_id, channel=channel.strip() or None, date_from=frm, date_to=to, max_months=12
            )
            if events:
                # Retention by first event: the columnar copy answers once the event log is large.
                by_event = event_cohorts.event_cohort_report(
                    session,
                    ctx.workspace_id,
                    by="month",
                    date_from=frm,
                    date_to=to,
                    max_periods=12,
                    engine="auto",
                    store=ColumnarStore(request.app.state.settings.data_dir / "columnar"),
                )
        except DomainError as exc:
            error = _refusal(exc, ctx.language, errors)
    width = max((len(c["retention"]) for c in (data or {}).get("cohorts", [])), default=0)
    event_width = max((len(c["retention"]) for c in (by_event or {}).get("cohorts", [])), default=0)
    return _page(
        request,
        ctx,
        "reports_cohorts.html",
        "cohorts",
        data=data,
        error=error,
        errors=errors,
        channel=channel,
        months=list(range(width)),
        retention_heat=heat([c["retention"] for c in (data or {}).get("cohorts", [])]),
        repeat_heat=heat([c["repeat"] for c in (data or {}).get("cohorts", [])]),
        by_event=by_event,
        events=bool(events),
        event_months=list(range(event_width)),
        event_heat=heat([c["retention"] for c in (by_event or {}).get("cohorts", [])]),
        query=request.url.query,
        params={"from": request.query_params.get("from", ""), "to": request.query_params.get("to", "")},
    )


@router.get("/w/{slug}/reports/cohorts.csv")
def cohorts_csv(request: Request, ctx: Workspace_, session: ReadSession, channel: str = "") -> Response:
    ctx.require("view")
    frm, to, errors = _dates(request.query_params.get("from", ""), request.query_params.get("to", ""), ctx.language)
    if errors:
        raise WebError(422, "; ".join(f"{k}: {v}" for k, v in errors.items()))
    data = analytics.cohort_report(
        session, ctx.workspace_id, channel=channel.strip() or None, date_from=frm, date_to=to, max_months=24
    )
    width = max((len(c["retention"]) for c in data["cohorts"]), default=0)
    header = (
        ["cohort", "customers"] + [f"retention_m{k}" for k in range(width)] + [f"repeat_m{k}" for k in range(width)]
    )
    rows = []
    for c in data["cohorts"]:
        pad = [None] * (width - len(c["retention"]))
        rows.append([c["cohort"], c["customers"], *c["retention"], *pad, *c["repeat"], *pad])
    return _csv("cohorts", header, rows)


# --- CLV -------------------------------------------------------------------------------------------------------------


def _last_fit(session: Session, ctx: Ctx) -> dict[str, Any] | None:
    try:
        return analytics.last_clv_fit(session, ctx.workspace_id)
    except NotFound:
        return None


def _flat(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """Nested parameters as (dotted name, value) pairs for the table and the CSV."""
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += _flat(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    if isinstance(value, list):
        return [(prefix, ", ".join(str(v) for v in value))]
    return [(prefix, value)]


CLV_DETAILS = ("bg_nbd", "gamma_gamma", "holdout")


@router.get("/w/{slug}/reports/clv")
def clv(request: Request, ctx: Workspace_, session: ReadSession, done: str = "") -> Response:
    ctx.require("view")
    fit = _last_fit(session, ctx)
    chart = None
    if fit and fit.get("tiers"):
        bars, height = charts.horizontal_bars([(k, float(fit["tiers"].get(k, 0))) for k in "ABCD"])
        chart = {"bars": bars, "height": height}
    details = [(name, _flat("", fit.get(name))) for name in CLV_DETAILS if fit and isinstance(fit.get(name), dict)]
    return _page(
        request,
        ctx,
        "reports_clv.html",
        "clv",
        fit=fit,
        chart=chart,
        details=details,
        can_fit=ctx.role in FIT_ROLES,
        done=done,
        query="",
    )


@router.post("/w/{slug}/reports/clv/fit")
async def clv_fit(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    """Fit the CLV model now (as ``POST /api/v1/reports/clv/fit``): writes the CLV properties of every customer."""
    await csrf.check(request, ctx.user.info.csrf_token)
    if ctx.role not in FIT_ROLES:
        raise WebError(403, "forbidden")
    try:
        analytics.fit_clv(session, ctx.workspace_id)
    except DomainError as exc:
        raise WebError(422, error_text(exc, ctx.language)) from exc
    return RedirectResponse(f"{ctx.base}/reports/clv?done=fitted", status_code=303)


@router.get("/w/{slug}/reports/clv.csv")
def clv_csv(ctx: Workspace_, session: ReadSession) -> Response:
    ctx.require("view")
    fit = _last_fit(session, ctx)
    if fit is None:
        raise WebError(404, "not_found")
    rows: list[list[Any]] = [[name, value] for name, value in _flat("", fit) if name != "reasons"]
    return _csv("clv", ["parameter", "value"], rows)


# --- experiments -----------------------------------------------------------------------------------------------------


def _journey_experiments(session: Session, ctx: Ctx) -> list[dict[str, Any]]:
    """Journeys with a holdout group: treatment against holdout, with the full statistics."""
    out = []
    for journey in journeys_service.list_journeys(session, ctx.workspace_id)[:JOURNEY_LIMIT]:
        conv = journeys_service.report(session, ctx.workspace_id, journey.id)["conversion"]
        hold, treat = conv["holdout"], conv["treatment"]
        if not hold["contacts"] or not treat["contacts"]:
            continue
        arms = [("holdout", hold["converted"], hold["contacts"]), ("treatment", treat["converted"], treat["contacts"])]
        out.append(
            {
                "name": journey.name,
                "journey_id": journey.id,
                "arms": arms,
                "result": analytics.experiment_report(arms, "holdout"),
            }
        )
    return out


def _arms_from(
    query: Any, language: str
) -> tuple[list[dict[str, str]], list[tuple[str, int, int]], list[int], str, dict[str, str]]:
    """The calculator's arms as typed, as parsed (with the form row of each), the control and errors by field."""
    tr = translations(language)
    typed: list[dict[str, str]] = []
    arms: list[tuple[str, int, int]] = []
    rows: list[int] = []
    errors: dict[str, str] = {}
    for i in range(MAX_ARMS):
        row = {k: (query.get(f"{k}{i}") or "").strip() for k in ("name", "conversions", "trials")}
        typed.append(row)
        if not any(row.values()):
            continue
        name = row["name"] or f"arm {i + 1}"
        try:
            conv, trials = int(row["conversions"]), int(row["trials"])
        except ValueError:
            errors[f"arm{i}"] = tr.gettext("Conversions and trials are whole numbers.")
            continue
        if conv < 0 or trials <= 0:
            errors[f"arm{i}"] = tr.gettext("Trials must be positive and conversions not negative.")
            continue
        arms.append((name[:100], conv, trials))
        rows.append(i)
    control = (query.get("control") or "").strip() or (arms[0][0] if arms else "")
    return typed, arms, rows, control, errors


def _experiment_rows(name: str, arms: list[tuple[str, int, int]], result: dict[str, Any]) -> list[list[Any]]:
    by_arm = {c["arm"]: c for c in result["comparisons"]}
    bayes = {a["name"]: a for a in (result["bayesian"].get("arms") or [])}
    rows = []
    for arm, conv, trials in arms:
        comp = by_arm.get(arm, {})
        two = comp.get("two_proportion") or {}
        seq = comp.get("sequential") or {}
        b = bayes.get(arm, {})
        rows.append(
            [
                name,
                arm,
                conv,
                trials,
                conv / trials if trials else None,
                two.get("difference"),
                two.get("relative_lift"),
                two.get("p_value"),
                two.get("ci_low"),
                two.get("ci_high"),
                two.get("significant"),
                seq.get("p_value"),
                b.get("chance_to_beat_control"),
                b.get("chance_to_be_best"),
                b.get("expected_loss"),
            ]
        )
    return rows


EXPERIMENT_HEADER = [
    "experiment",
    "arm",
    "conversions",
    "trials",
    "rate",
    "difference",
    "relative_lift",
    "p_value",
    "ci_low",
    "ci_high",
    "significant",
    "sequential_p_value",
    "chance_to_beat_control",
    "chance_to_be_best",
    "expected_loss",
]


def _calculator(
    query: Any, language: str
) -> tuple[list[dict[str, str]], dict[str, Any] | None, list[tuple[str, int, int]], str, dict[str, str]]:
    typed, arms, rows, control, errors = _arms_from(query, language)
    result = None
    if arms and not errors:
        if len(arms) < 2:
            errors["arms"] = translations(language).gettext("Give at least two arms.")
        else:
            try:
                result = analytics.experiment_report(arms, control)
            except DomainError as exc:
                # Beside the arm's row (``arms.<i>.…`` names the i-th parsed arm) or the control field; else the form's.
                path = exc.field.split(".")
                if path[0] == "arms" and len(path) > 1:
                    errors[f"arm{rows[int(path[1])]}"] = error_text(exc, language)
                else:
                    errors["control" if path[0] == "control" else "arms"] = error_text(exc, language)
    return typed, result, arms, control, errors


@router.get("/w/{slug}/reports/experiments")
def experiments(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    ctx.require("view")
    journeys = _journey_experiments(session, ctx)
    typed, result, arms, control, errors = _calculator(request.query_params, ctx.language)
    blocks = [(j["name"], j["result"], _experiment_rows(j["name"], j["arms"], j["result"])) for j in journeys]
    if result is not None:
        blocks.append(("", result, _experiment_rows("calculator", arms, result)))
    experiments_shown = []
    for name, res, rows in blocks:
        bars, height = charts.horizontal_bars([(str(r[1]), float(r[4] or 0) * 100) for r in rows])
        experiments_shown.append(
            {"name": name, "rows": rows, "bars": bars, "height": height, "control": res["control"]}
        )
    return _page(
        request,
        ctx,
        "reports_experiments.html",
        "experiments",
        experiments=experiments_shown,
        typed=typed,
        control=control,
        errors=errors,
        calculated=result is not None,
        query=request.url.query,
    )


@router.get("/w/{slug}/reports/experiments.csv")
def experiments_csv(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    ctx.require("view")
    rows: list[list[Any]] = []
    for j in _journey_experiments(session, ctx):
        rows += _experiment_rows(j["name"], j["arms"], j["result"])
    _typed, result, arms, _control, errors = _calculator(request.query_params, ctx.language)
    if errors:
        raise WebError(422, "; ".join(errors.values()))
    if result is not None:
        rows += _experiment_rows("calculator", arms, result)
    return _csv("experiments", EXPERIMENT_HEADER, rows)
