"""The sales forecast of a workspace: loads deals and stage histories and hands them to ``engine.forecast``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, select
from sqlalchemy.orm import Session

from suppilo.analytics import rates as analytics_rates
from suppilo.commerce.money import exponent
from suppilo.companies.models import Company
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.deals.models import Deal, DealStageChange, PipelineStage
from suppilo.deals.schemas import (
    ConversionRead,
    ForecastGroupRead,
    ForecastRead,
    ForecastTotals,
    StallGroupRead,
    StallRead,
    VelocityRead,
)
from suppilo.engine import forecast as fc
from suppilo.errors import DomainError
from suppilo.workspaces.service import get_workspace

GROUPS = ("month", "owner", "stage", "team", "country", "region")


def group_column(group_by: str) -> Any:
    """The SQL key of a deal's country (its company's, else its contact's) or region (its contact's); needs the
    outer joins of ``with_subject_joins``."""
    if group_by == "country":
        return func.coalesce(Company.country, Contact.country)
    if group_by == "region":
        return Contact.region
    return None


def with_subject_joins(query: Any) -> Any:
    """Outer-join a deal's company (the deal's own, else its contact's) and contact (workspace-scoped)."""
    return query.outerjoin(
        Contact, (Contact.workspace_id == Deal.workspace_id) & (Contact.id == Deal.contact_id)
    ).outerjoin(
        Company,
        (Company.workspace_id == Deal.workspace_id)
        & (Company.id == func.coalesce(Deal.company_id, Contact.company_id)),
    )


def team_of(session: Session, workspace_id: int) -> dict[int, str]:
    """Each user's team for grouping: the first of their teams by name (a user in several teams counts once)."""
    from suppilo.deals.assignment import user_teams

    return {user: names[0] for user, names in user_teams(session, workspace_id).items()}


def workspace_forecast(
    session: Session,
    workspace_id: int,
    *,
    group_by: str = "month",
    currency: str | None = None,
    rates: Mapping[str, Decimal] | None = None,
    pipeline_id: int | None = None,
    stalls_by: str | None = None,
) -> ForecastRead:
    """Weighted pipeline, commit and best case of open deals grouped by close month, owner or stage, in
    ``currency`` (default: the workspace's). ``rates[c]`` converts one major unit of ``c`` into ``currency``;
    without ``rates`` the workspace's exchange-rate table (analytics) gives today's rates. Deals in currencies
    without a rate are reported per currency. Velocity and conversion per stage come from the stage histories;
    ``stalls_by`` (owner, team, country or region) splits the stalled deals per group."""
    if group_by not in GROUPS:
        raise DomainError("group_by", f"group_by must be one of {', '.join(GROUPS)}", code="invalid_group_by")
    if stalls_by is not None and stalls_by not in STALL_GROUPS:
        raise DomainError("stalls_by", f"stalls_by must be one of {', '.join(STALL_GROUPS)}", code="invalid_stalls_by")
    target = currency or get_workspace(session, workspace_id).currency
    given = dict(rates or {})
    stage_rows = list(
        session.scalars(
            select(PipelineStage)
            .where(PipelineStage.workspace_id == workspace_id)
            .order_by(PipelineStage.pipeline_id, PipelineStage.position)
        )
    )
    stages = {s.id: s for s in stage_rows}
    dialect = session.get_bind().dialect.name
    month: ColumnElement[Any]
    epoch: ColumnElement[Any]
    if dialect == "postgresql":
        month = func.to_char(Deal.expected_close_date, "YYYY-MM")
        epoch = func.extract("epoch", DealStageChange.changed_at)
    else:
        month = func.strftime("%Y-%m", Deal.expected_close_date)
        epoch = (func.julianday(DealStageChange.changed_at) - 2440587.5) * 86400.0
    # Open deals summed per stage, currency, close month and owner (and country or region when grouped by it): the
    # forecast adds these sums.
    place = group_column(group_by)
    extra = place if place is not None else literal(None)
    query = (
        select(Deal.stage_id, Deal.currency, month, Deal.owner_id, extra, func.count(), func.sum(Deal.amount_minor))
        .where(Deal.workspace_id == workspace_id, Deal.status == "open", Deal.amount_minor.is_not(None))
        .group_by(Deal.stage_id, Deal.currency, month, Deal.owner_id, *([place] if place is not None else []))
    )
    if place is not None:
        query = with_subject_joins(query)
    teams = team_of(session, workspace_id) if group_by == "team" else {}
    if pipeline_id is not None:
        query = query.where(Deal.pipeline_id == pipeline_id)
    open_deals = []
    currencies = {target}
    for stage_id, code, close_month, owner_id, place_key, count, total in session.connection().execute(query):
        stage = stages[stage_id]
        currencies.add(code)
        key: str | None = stage.key
        if group_by == "team":
            key = teams.get(owner_id) if owner_id is not None else None
        elif place is not None:
            key = place_key
        open_deals.append(
            fc.ForecastDeal(
                amount_minor=int(total),
                currency=code,
                probability=stage.probability,
                close_month=close_month,
                owner_id=owner_id,
                # The engine groups by month, owner or stage key; team, country and region groups travel in the
                # stage key (the stage's probability is already applied per deal).
                stage_key=key,
                count=int(count),
            )
        )
    exponents = {c: exponent(c) for c in currencies}
    if given:
        rates, rates_source = given, "request"
    else:
        rates = table_rates(session, workspace_id, target, currencies - {target}, utcnow().date())
        rates_source = "exchange_rates" if rates else "none"
    engine_group = group_by if group_by in ("month", "owner", "stage") else "stage"
    groups = fc.forecast(open_deals, engine_group, target, rates, exponents)

    # PostgreSQL reduces the stage histories with window functions (half the time of carrying every move into
    # Python); SQLite's window functions are no faster than the walk in Python, so it keeps the walk.
    reduce = _velocity_and_conversion if dialect == "postgresql" else _velocity_and_conversion_walk
    velocity, conversion = reduce(session, workspace_id, stage_rows, pipeline_id, epoch)
    stalls, stall_totals = _stalls(session, workspace_id, stage_rows, velocity, stalls_by)
    return ForecastRead(
        group_by=group_by,
        currency=target,
        rates_source=rates_source,
        groups=[
            ForecastGroupRead(
                key=g.key,
                totals=[
                    ForecastTotals(
                        currency=t.currency,
                        converted=t.converted,
                        count=t.count,
                        best_case_minor=t.best_case_minor,
                        weighted_minor=t.weighted_minor,
                        commit_minor=t.commit_minor,
                    )
                    for t in sorted(g.totals.values(), key=lambda t: (t.currency != target, t.currency))
                ],
            )
            for g in groups
        ],
        velocity=velocity,
        conversion=conversion,
        stalls=stalls,
        stalls_by=stalls_by,
        stall_totals=stall_totals,
    )


STALL_GROUPS = ("owner", "team", "country", "region")


def _velocity_and_conversion_walk(
    session: Session,
    workspace_id: int,
    stage_rows: list[PipelineStage],
    pipeline_id: int | None,
    epoch: ColumnElement[Any],
) -> tuple[list[VelocityRead], list[ConversionRead]]:
    """Average days per stage and conversion per stage by walking every deal's moves in Python (SQLite: its window
    functions over the whole history are no faster). One pass over the moves, fetched in bulk through the driver's
    cursor, sums each completed stay into its stage (in the order ``engine.forecast.velocity`` would, so the floats
    are identical) and collects each deal's path of stage keys for ``engine.forecast.conversion``."""
    changes = select(DealStageChange.deal_id, DealStageChange.to_stage_id, epoch).where(
        DealStageChange.workspace_id == workspace_id
    )
    if pipeline_id is not None:
        changes = changes.where(
            DealStageChange.to_stage_id.in_([s.id for s in stage_rows if s.pipeline_id == pipeline_id])
        )
    changes = changes.order_by(DealStageChange.deal_id, DealStageChange.changed_at, DealStageChange.id)
    stage_info = {s.id: (s.pipeline_id, s.key) for s in stage_rows}
    # Per pipeline (of a deal's first visit): completed stays per stage key, and every deal's path of stage keys.
    stays: dict[int, dict[str, tuple[int, float]]] = {}
    paths: dict[int, list[list[str]]] = {}
    current_deal: int | None = None
    deal_keys: list[str] = []
    deal_stays: dict[str, tuple[int, float]] = {}
    prev_key = ""
    prev_at = 0.0
    for deal_id, stage_id, at in _fetch_all(session, changes):
        info = stage_info.get(stage_id)
        if info is None:
            continue
        key = info[1]
        at = float(at)
        if deal_id != current_deal:
            current_deal = deal_id
            deal_keys = []
            paths.setdefault(info[0], []).append(deal_keys)
            deal_stays = stays.setdefault(info[0], {})
        else:
            n, seconds = deal_stays.get(prev_key, (0, 0.0))
            deal_stays[prev_key] = (n + 1, seconds + (at - prev_at))
        deal_keys.append(key)
        prev_key, prev_at = key, at
    velocity: list[VelocityRead] = []
    conversion: list[ConversionRead] = []
    for pid in sorted({s.pipeline_id for s in stage_rows}):
        if pipeline_id is not None and pid != pipeline_id:
            continue
        order = [fc.StageOrder(s.key, s.position, s.kind) for s in stage_rows if s.pipeline_id == pid]
        velocity += [
            VelocityRead(pipeline_id=pid, stage_key=v.stage_key, stays=v.stays, average_days=v.average_days)
            for v in fc.velocity_from_totals(stays.get(pid, {}), order)
        ]
        conversion += [
            ConversionRead(pipeline_id=pid, stage_key=c.stage_key, entered=c.entered, advanced=c.advanced, rate=c.rate)
            for c in fc.conversion(paths.get(pid, []), order)
        ]
    return velocity, conversion


def _fetch_all(session: Session, query: Any) -> list[Any]:
    """All rows of ``query`` as plain tuples through the driver's cursor (no per-row result processing: the walk
    reads ~2 moves per deal, and SQLAlchemy's row handling cost as much as the walk itself)."""
    conn = session.connection()
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    args: Any = tuple(params[name] for name in compiled.positiontup) if compiled.positiontup is not None else params
    dbapi = conn.connection.dbapi_connection
    if dbapi is None:  # only after the connection was invalidated, which would have raised before here
        raise RuntimeError("the database connection is closed")
    cursor = dbapi.cursor()
    try:
        cursor.execute(str(compiled), args)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _velocity_and_conversion(
    session: Session,
    workspace_id: int,
    stage_rows: list[PipelineStage],
    pipeline_id: int | None,
    epoch: ColumnElement[Any],
) -> tuple[list[VelocityRead], list[ConversionRead]]:
    """Average days per stage and conversion per stage from the stage histories, reduced in the database: window
    functions over each deal's moves (in time order) give every visit's next move (a completed stay) and the furthest
    not-lost stage the deal entered after it; one GROUP BY per stage sums the stays and counts the distinct deals
    that entered it and that advanced from it. The engine turns the sums into averages and rates
    (``velocity_from_totals``, ``conversion_from_counts``: the same figures ``engine.forecast.velocity`` /
    ``conversion`` give from the histories, without carrying every move into Python)."""
    change = DealStageChange
    order = (change.changed_at, change.id)
    by_deal: dict[str, Any] = {"partition_by": change.deal_id, "order_by": order}
    not_lost_position = case((PipelineStage.kind != "lost", PipelineStage.position), else_=None)
    visits = (
        select(
            change.to_stage_id.label("stage_id"),
            PipelineStage.position.label("position"),
            change.deal_id.label("deal_id"),
            (func.lead(epoch).over(**by_deal) - epoch).label("stay"),
            func.max(not_lost_position).over(**by_deal, rows=(1, None)).label("later_best"),
        )
        .join(
            PipelineStage,
            (PipelineStage.workspace_id == change.workspace_id) & (PipelineStage.id == change.to_stage_id),
        )
        .where(change.workspace_id == workspace_id)
    )
    if pipeline_id is not None:
        visits = visits.where(PipelineStage.pipeline_id == pipeline_id)
    v = visits.subquery()
    # A deal advanced from a stage when any of its visits there has a later not-lost stage further on (the first
    # visit has the longest suffix, so "its first visit advanced" is "some visit advanced"): distinct deals per stage
    # give entered and advanced without a second window (and its sort) to find each deal's first visit.
    rows = session.execute(
        select(
            v.c.stage_id,
            func.count(v.c.stay),
            func.coalesce(func.sum(v.c.stay), 0),
            func.count(v.c.deal_id.distinct()),
            func.count(case((v.c.later_best > v.c.position, v.c.deal_id), else_=None).distinct()),
        ).group_by(v.c.stage_id)
    )
    stage_key = {s.id: (s.pipeline_id, s.key) for s in stage_rows}
    stays: dict[int, dict[str, tuple[int, float]]] = {}
    counts: dict[int, dict[str, tuple[int, int]]] = {}
    for stage_id, n_stays, seconds, entered, advanced in rows:
        pid, key = stage_key[stage_id]
        stays.setdefault(pid, {})[key] = (int(n_stays), float(seconds))
        counts.setdefault(pid, {})[key] = (int(entered or 0), int(advanced or 0))
    velocity: list[VelocityRead] = []
    conversion: list[ConversionRead] = []
    for pid in sorted({s.pipeline_id for s in stage_rows}):
        if pipeline_id is not None and pid != pipeline_id:
            continue
        order_of = [fc.StageOrder(s.key, s.position, s.kind) for s in stage_rows if s.pipeline_id == pid]
        velocity += [
            VelocityRead(pipeline_id=pid, stage_key=x.stage_key, stays=x.stays, average_days=x.average_days)
            for x in fc.velocity_from_totals(stays.get(pid, {}), order_of)
        ]
        conversion += [
            ConversionRead(pipeline_id=pid, stage_key=c.stage_key, entered=c.entered, advanced=c.advanced, rate=c.rate)
            for c in fc.conversion_from_counts(counts.get(pid, {}), order_of)
        ]
    return velocity, conversion


def _stalls(
    session: Session,
    workspace_id: int,
    stage_rows: list[PipelineStage],
    velocity: list[VelocityRead],
    stalls_by: str | None = None,
) -> tuple[list[StallRead], list[StallGroupRead] | None]:
    """Per open stage: open deals, and those in it for longer than twice the stage's average stay; with
    ``stalls_by`` (owner, team, country or region) also per group, and the groups' totals over all stages."""
    stage_ids = {(s.pipeline_id, s.key): s.id for s in stage_rows}
    now = utcnow()
    thresholds = {stage_ids[(v.pipeline_id, v.stage_key)]: fc.stall_threshold(v.average_days) for v in velocity}
    # One grouped read: per stage (and group) the open deals and those that entered the stage before its cutoff.
    cutoffs = [
        (and_(Deal.stage_id == stage_id, Deal.stage_entered_at < now - timedelta(days=t)), 1)
        for stage_id, t in thresholds.items()
        if t is not None
    ]
    stalled_expr: Any = func.sum(case(*cutoffs, else_=0)) if cutoffs else literal(0)
    place = group_column(stalls_by) if stalls_by else None
    key_col: Any = place if place is not None else (Deal.owner_id if stalls_by else literal(None))
    per: dict[int, dict[str | None, tuple[int, int]]] = {}
    if thresholds:
        query = (
            select(Deal.stage_id, key_col, func.count(), stalled_expr)
            .where(Deal.workspace_id == workspace_id, Deal.status == "open", Deal.stage_id.in_(list(thresholds)))
            .group_by(Deal.stage_id, *([key_col] if stalls_by else []))
        )
        if place is not None:
            query = with_subject_joins(query)
        teams = team_of(session, workspace_id) if stalls_by == "team" else {}
        for stage_id, raw_key, count, stalled in session.execute(query):
            if stalls_by == "team":
                key = teams.get(raw_key) if raw_key is not None else None
            else:
                key = None if raw_key is None else str(raw_key)
            groups = per.setdefault(stage_id, {})
            n, k = groups.get(key, (0, 0))
            groups[key] = (n + int(count), k + int(stalled or 0))
    out = []
    totals: dict[str | None, tuple[int, int]] = {}
    for v in velocity:
        stage_id = stage_ids[(v.pipeline_id, v.stage_key)]
        threshold = thresholds[stage_id]
        groups = per.get(stage_id, {})
        for key, (n, k) in groups.items():
            t_n, t_k = totals.get(key, (0, 0))
            totals[key] = (t_n + n, t_k + k)
        out.append(
            StallRead(
                pipeline_id=v.pipeline_id,
                stage_key=v.stage_key,
                open_deals=sum(n for n, _ in groups.values()),
                stalled=sum(k for _, k in groups.values()),
                threshold_days=None if threshold is None else round(threshold, 2),
                groups=_stall_groups(groups) if stalls_by else None,
            )
        )
    return out, (_stall_groups(totals) if stalls_by else None)


def _stall_groups(groups: dict[str | None, tuple[int, int]]) -> list[StallGroupRead]:
    """Groups with the most stalled deals first (then by key, the group without a key last)."""
    return [
        StallGroupRead(key=key, open_deals=n, stalled=k)
        for key, (n, k) in sorted(groups.items(), key=lambda kv: (-kv[1][1], kv[0] is None, kv[0] or ""))
    ]


def table_rates(session: Session, workspace_id: int, target: str, currencies: set[str], on: date) -> dict[str, Decimal]:
    """Rates into ``target`` on ``on`` from the workspace's exchange-rate table, for the currencies that have one."""
    if not currencies:
        return {}
    book = analytics_rates.rate_book(session, workspace_id)
    out: dict[str, Decimal] = {}
    for code in sorted(currencies):
        try:
            out[code] = book.rate(code, target, on)
        except analytics_rates.MissingRate:
            continue
    return out


def board_groups(
    session: Session, workspace_id: int, pipeline_id: int, group_by: str
) -> dict[int, list[tuple[str | None, int, list[tuple[str, int]]]]]:
    """Per stage of a pipeline: deal counts and amount sums per currency for each owner, team, country or region
    (groups sorted by key, the group without a key last)."""
    if group_by not in ("owner", "team", "country", "region"):
        raise DomainError("group_by", "group_by must be owner, team, country or region", code="invalid_group_by")
    place = group_column(group_by)
    key_col: Any = place if place is not None else Deal.owner_id
    query = (
        select(Deal.stage_id, key_col, Deal.currency, func.count(), func.coalesce(func.sum(Deal.amount_minor), 0))
        .where(Deal.workspace_id == workspace_id, Deal.pipeline_id == pipeline_id)
        .group_by(Deal.stage_id, key_col, Deal.currency)
    )
    if place is not None:
        query = with_subject_joins(query)
    teams = team_of(session, workspace_id) if group_by == "team" else {}
    acc: dict[int, dict[str | None, tuple[int, dict[str, int]]]] = {}
    for stage_id, raw_key, currency, count, total in session.execute(query):
        if group_by == "team":
            key = teams.get(raw_key) if raw_key is not None else None
        else:
            key = None if raw_key is None else str(raw_key)
        groups = acc.setdefault(stage_id, {})
        n, sums = groups.get(key, (0, {}))
        sums[currency] = sums.get(currency, 0) + int(total or 0)
        groups[key] = (n + int(count), sums)
    return {
        stage_id: [
            (key, n, sorted(sums.items()))
            for key, (n, sums) in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
        ]
        for stage_id, groups in acc.items()
    }
