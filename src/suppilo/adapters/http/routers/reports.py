"""HTTP routes: analytics — exchange rates, marketing spend and the reports (all in the workspace currency)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi import status as http

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer
from suppilo.analytics import charts, event_cohorts, service
from suppilo.analytics.columnar import ColumnarStore
from suppilo.analytics.schemas import (
    ClvFitRequest,
    EventFunnelRequest,
    ExperimentRequest,
    ImportResult,
    RateCreate,
    RateRead,
    SpendCreate,
    SpendRead,
)
from suppilo.errors import DomainError

router = APIRouter(prefix="/api/v1", tags=["analytics"])

From = Annotated[date | None, Query(alias="from")]
To = Annotated[date | None, Query(alias="to")]
Format = Literal["json", "svg", "png"]
Engine = Literal["auto", "sql", "columnar"]


def _store(request: Request) -> ColumnarStore:
    """The columnar copies of the event log live under the data directory."""
    return ColumnarStore(request.app.state.settings.data_dir / "columnar")


def _render(data: dict[str, Any], fmt: str, chart: Any) -> Any:
    """JSON as is, or the report's chart as SVG or PNG."""
    if fmt == "json":
        return data
    svg = chart(data)
    if fmt == "png":
        return Response(charts.svg_to_png(svg), media_type="image/png")
    return Response(svg, media_type="image/svg+xml")


def _csv_text(file: UploadFile) -> str:
    try:
        return file.file.read().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DomainError("file", "the file must be UTF-8 CSV") from exc


# --- exchange rates -------------------------------------------------------------------------------------------------


@router.post("/rates", response_model=ImportResult, status_code=http.HTTP_201_CREATED)
def add_rates(data: list[RateCreate], principal: Writer, session: DbSession) -> ImportResult:
    """Store date-effective rates (one unit of ``base`` is ``rate`` ``quote`` from ``date`` on)."""
    return ImportResult(imported=service.upsert_rates(session, principal.workspace_id, data))


@router.get("/rates", response_model=list[RateRead])
def list_rates(principal: Reader, session: ReadSession) -> list[RateRead]:
    return [
        RateRead(date=r.rate_date, base=r.base, quote=r.quote, rate=r.rate)
        for r in service.list_rates(session, principal.workspace_id)
    ]


@router.post("/rates/import", response_model=ImportResult)
def import_rates(principal: Writer, session: DbSession, file: UploadFile = File(...)) -> ImportResult:
    """CSV ``date,currency,rate_to_<workspace currency>``; bad lines are reported and skipped."""
    n, errors = service.import_rates_csv(session, principal.workspace_id, _csv_text(file))
    return ImportResult(imported=n, errors=errors)


# --- spend ----------------------------------------------------------------------------------------------------------


@router.post("/spend", response_model=SpendRead, status_code=http.HTTP_201_CREATED)
def add_spend(data: SpendCreate, principal: Writer, session: DbSession) -> SpendRead:
    row = service.add_spend(session, principal.workspace_id, data)
    return SpendRead(
        id=row.id,
        date=row.spend_date,
        channel=row.channel,
        campaign=row.campaign,
        amount_minor=row.amount_minor,
        currency=row.currency,
        country=row.country,
        region=row.region,
    )


@router.post("/spend/import", response_model=ImportResult)
def import_spend(principal: Writer, session: DbSession, file: UploadFile = File(...)) -> ImportResult:
    """CSV ``date,channel,campaign,amount,currency[,country,region]`` (amount in major units); bad lines are reported
    and skipped."""
    n, errors = service.import_spend_csv(session, principal.workspace_id, _csv_text(file))
    return ImportResult(imported=n, errors=errors)


# --- reports --------------------------------------------------------------------------------------------------------


@router.get("/reports/spend")
def spend_report(
    principal: Reader,
    session: ReadSession,
    date_from: From = None,
    date_to: To = None,
    group_by: Literal["channel", "campaign", "month", "country", "region"] = "channel",
) -> dict[str, Any]:
    """Spend, leads, qualified leads, new customers, revenue, CPL, CPQL, CAC, ROI and ROAS."""
    return service.spend_report(session, principal.workspace_id, date_from, date_to, group_by)


@router.get("/reports/funnel")
def funnel_report(
    principal: Reader,
    session: ReadSession,
    date_from: From = None,
    date_to: To = None,
    group_by: Literal["channel", "country", "region"] | None = None,
    format: Format = "json",
) -> Any:
    """The lifecycle-stage funnel (overall and per first-touch channel, country or region); ``format=svg|png``
    draws its bars."""
    data = service.funnel_report(session, principal.workspace_id, date_from, date_to, group_by)
    return _render(data, format, charts.lifecycle_funnel_chart)


@router.get("/reports/funnel-trends")
def funnel_trends(
    principal: Reader,
    session: ReadSession,
    date_from: From = None,
    date_to: To = None,
    interval: Literal["week", "month"] = "month",
    format: Format = "json",
) -> Any:
    """Stage-to-stage conversion per week or month of funnel entry; ``format=svg|png`` draws the trend lines."""
    data = service.funnel_trends(session, principal.workspace_id, date_from, date_to, interval)
    return _render(data, format, charts.funnel_trend_chart)


@router.post("/reports/event-funnel")
def event_funnel(
    data: EventFunnelRequest,
    principal: Reader,
    session: ReadSession,
    request: Request,
    format: Format = "json",
) -> Any:
    """An ordered event funnel; steps are event names or ``page:/path``; ``engine`` auto, sql or columnar."""
    out = service.event_funnel_report(
        session,
        principal.workspace_id,
        data.steps,
        data.window_days,
        data.date_from,
        data.date_to,
        engine=data.engine,
        store=_store(request),
    )
    return _render(out, format, charts.event_funnel_chart)


@router.get("/reports/event-cohorts")
def event_cohort_report(
    principal: Reader,
    session: ReadSession,
    request: Request,
    by: Literal["week", "month"] = "month",
    start_event: str | None = None,
    return_event: str | None = None,
    date_from: From = None,
    date_to: To = None,
    max_periods: Annotated[int, Query(ge=1, le=520)] = event_cohorts.MAX_PERIODS,
    engine: Engine = "auto",
) -> dict[str, Any]:
    """Retention of acquisition cohorts (first event, or first ``start_event``) by week or month since."""
    return event_cohorts.event_cohort_report(
        session,
        principal.workspace_id,
        by=by,
        start_event=start_event,
        return_event=return_event,
        date_from=date_from,
        date_to=date_to,
        max_periods=max_periods,
        engine=engine,
        store=_store(request),
    )


@router.get("/reports/attribution")
def attribution_report(
    principal: Reader,
    session: ReadSession,
    date_from: From = None,
    date_to: To = None,
    level: Literal["channel", "campaign"] = "channel",
    format: Format = "json",
    metric: Literal["conversions", "revenue_minor"] = "conversions",
) -> Any:
    """First/last touch, linear, position-based, time-decay and Markov attribution side by side; ``format=svg|png``
    compares the models' ``metric`` per channel or campaign."""
    data = service.attribution_report(session, principal.workspace_id, date_from, date_to, level)
    return _render(data, format, lambda d: charts.attribution_chart(d, metric))


@router.post("/reports/clv/fit")
def clv_fit(principal: Writer, session: DbSession, data: ClvFitRequest | None = None) -> dict[str, Any]:
    """Fit BG/NBD + Gamma-Gamma, check a holdout, write the CLV contact properties and store the fit."""
    data = data or ClvFitRequest()
    return service.fit_clv(session, principal.workspace_id, holdout_days=data.holdout_days, as_of=data.as_of)


@router.get("/reports/clv")
def clv_last(principal: Reader, session: ReadSession) -> dict[str, Any]:
    """The last fit's parameters and diagnostics."""
    return service.last_clv_fit(session, principal.workspace_id)


@router.get("/reports/cohorts")
def cohorts(
    principal: Reader,
    session: ReadSession,
    by: Literal["month"] = "month",
    channel: str | None = None,
    date_from: From = None,
    date_to: To = None,
) -> dict[str, Any]:
    """Retention and repeat purchase by acquisition month × months since."""
    return service.cohort_report(
        session, principal.workspace_id, channel=channel or None, date_from=date_from, date_to=date_to
    )


@router.post("/reports/experiment")
def experiment(data: ExperimentRequest, principal: Reader) -> dict[str, Any]:
    """Two-proportion test, Bayesian chance to beat control and expected loss, sequential (mSPRT) test."""
    return service.experiment_report(
        [(a.name, a.conversions, a.trials) for a in data.arms],
        data.control,
        alpha=data.alpha,
        tau=data.tau,
        history={a.name: [(h.conversions, h.trials) for h in a.history] for a in data.arms},
    )


@router.get("/reports/experiments/journeys")
def journey_holdouts(principal: Reader, session: ReadSession) -> dict[str, Any]:
    """Journeys with a holdout: treatment vs holdout conversion and the incremental lift."""
    return service.journey_holdouts(session, principal.workspace_id)


@router.get("/reports/sample-size")
def sample_size(
    principal: Reader,
    baseline: Annotated[float, Query(gt=0, lt=1)],
    mde: Annotated[float, Query(gt=-1, lt=1)],
    relative: bool = False,
    alpha: Annotated[float, Query(gt=0, lt=1)] = 0.05,
    power: Annotated[float, Query(gt=0, lt=1)] = 0.8,
) -> dict[str, Any]:
    """Trials per arm to detect ``baseline -> baseline + mde`` (``relative``: mde as a fraction of the baseline)."""
    return service.sample_size(baseline, mde, relative=relative, alpha=alpha, power=power)
