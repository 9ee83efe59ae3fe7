"""HTTP routes: analytics — exchange rates, marketing spend and the reports (all in the workspace currency)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, UploadFile
from fastapi import status as http

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer
from suppilo.analytics import service
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
    )


@router.post("/spend/import", response_model=ImportResult)
def import_spend(principal: Writer, session: DbSession, file: UploadFile = File(...)) -> ImportResult:
    """CSV ``date,channel,campaign,amount,currency`` (amount in major units); bad lines are reported and skipped."""
    n, errors = service.import_spend_csv(session, principal.workspace_id, _csv_text(file))
    return ImportResult(imported=n, errors=errors)


# --- reports --------------------------------------------------------------------------------------------------------


@router.get("/reports/spend")
def spend_report(
    principal: Reader,
    session: ReadSession,
    date_from: From = None,
    date_to: To = None,
    group_by: Literal["channel", "campaign", "month"] = "channel",
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
) -> dict[str, Any]:
    """The lifecycle-stage funnel (overall and per first-touch channel, country or region)."""
    return service.funnel_report(session, principal.workspace_id, date_from, date_to, group_by)


@router.post("/reports/event-funnel")
def event_funnel(data: EventFunnelRequest, principal: Reader, session: ReadSession) -> dict[str, Any]:
    """An ordered event funnel; steps are event names or ``page:/path``."""
    return service.event_funnel_report(
        session, principal.workspace_id, data.steps, data.window_days, data.date_from, data.date_to
    )


@router.get("/reports/attribution")
def attribution_report(
    principal: Reader,
    session: ReadSession,
    date_from: From = None,
    date_to: To = None,
    level: Literal["channel", "campaign"] = "channel",
) -> dict[str, Any]:
    """First/last touch, linear, position-based, time-decay and Markov attribution side by side."""
    return service.attribution_report(session, principal.workspace_id, date_from, date_to, level)


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
