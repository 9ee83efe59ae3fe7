"""Analytics use cases: rates and spend (rows, CSV), and the reports over contacts, stage changes, touches and orders.

Every report is in the workspace currency: amounts are converted row by row with the rate of their own day
(``rates.RateBook``) before anything is summed. A period is ``[from 00:00 UTC, to + 1 day 00:00 UTC)``; without
bounds it is the 90 days up to today. Reports over no or too little data set ``insufficient_data`` with a reason and
leave undefined ratios ``None``. Services flush, never commit.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, cast

import numpy as np
from pydantic import ValidationError
from sqlalchemy import ColumnElement, Table, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from suppilo.analytics import columnar
from suppilo.analytics.models import ClvFit, ExchangeRate, MarketingSpend
from suppilo.analytics.rates import RateBook, minor_exponent, rate_book, workspace_currency
from suppilo.analytics.schemas import RateCreate, SpendCreate
from suppilo.commerce.models import Order
from suppilo.contacts.models import Contact, LifecycleStage, StageChange
from suppilo.db.base import utcnow
from suppilo.engine import attribution, clv, experiments, funnel
from suppilo.errors import DomainError, NotFound
from suppilo.events.models import Event, Touch

REVENUE_STATUSES = ("completed", "partially_refunded")
BUYING_STATUSES = ("completed", "partially_refunded", "refunded")  # an order that happened (cancelled did not)
NO_CAMPAIGN = attribution.NO_CAMPAIGN
UNKNOWN = "(unknown)"
DEFAULT_DAYS = 90
IN_CHUNK = 5_000


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None, dataclasses and tuples to dicts and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: clean(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean(v) for v in value.tolist()]
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, Decimal):
        return str(value)
    return value


def _clean_dict(value: Any) -> dict[str, Any]:
    out: dict[str, Any] = clean(value)
    return out


def period(date_from: date | None, date_to: date | None) -> tuple[date, date, datetime, datetime]:
    """Inclusive dates and the half-open UTC interval they cover."""
    to = date_to or utcnow().date()
    frm = date_from or (to - timedelta(days=DEFAULT_DAYS - 1))
    if frm > to:
        raise DomainError(
            "from",
            f"'from' ({frm}) is after 'to' ({to})",
            code="period_reversed",
            params={"from": frm.isoformat(), "to": to.isoformat()},
        )
    start = datetime(frm.year, frm.month, frm.day, tzinfo=UTC)
    end = datetime(to.year, to.month, to.day, tzinfo=UTC) + timedelta(days=1)
    return frm, to, start, end


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _money_ratio(num: int, den: int) -> int | None:
    return round(num / den) if den else None


def _chunks(ids: Sequence[int], size: int = IN_CHUNK) -> Iterable[Sequence[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _funnel_stages(session: Session, workspace_id: int) -> list[str]:
    return list(
        session.scalars(
            select(LifecycleStage.key)
            .where(LifecycleStage.workspace_id == workspace_id, LifecycleStage.kind == "funnel")
            .order_by(LifecycleStage.position)
        )
    )


def _stages_from(stages: list[str], first: str) -> list[str]:
    if first not in stages:
        return []
    return stages[stages.index(first) :]


def _order_value(total: int, refunded: int) -> int:
    return max(int(total) - int(refunded or 0), 0)


# --------------------------------------------------------------------------------------------------------------------
# Exchange rates
# --------------------------------------------------------------------------------------------------------------------


def upsert_rates(session: Session, workspace_id: int, rates: Sequence[RateCreate]) -> int:
    """Store rates (a second rate for the same pair and day replaces the first); returns how many rows."""
    if not rates:
        return 0
    ins = _insert(session)
    rows = [
        {"workspace_id": workspace_id, "rate_date": r.date, "base": r.base, "quote": r.quote, "rate": r.rate}
        for r in rates
    ]
    for i in range(0, len(rows), 1000):
        stmt = ins(ExchangeRate).values(rows[i : i + 1000])
        stmt = stmt.on_conflict_do_update(
            index_elements=["workspace_id", "base", "quote", "rate_date"], set_={"rate": stmt.excluded.rate}
        )
        session.execute(stmt)
    session.flush()
    return len(rows)


def list_rates(session: Session, workspace_id: int) -> list[ExchangeRate]:
    return list(
        session.scalars(
            select(ExchangeRate)
            .where(ExchangeRate.workspace_id == workspace_id)
            .order_by(ExchangeRate.base, ExchangeRate.quote, ExchangeRate.rate_date)
        )
    )


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _parse_date(text: str) -> date:
    return date.fromisoformat(text.strip())


def import_rates_csv(session: Session, workspace_id: int, text: str) -> tuple[int, list[dict[str, Any]]]:
    """``date,currency,rate_to_<WORKSPACE CURRENCY>``: one unit of ``currency`` in the workspace currency.

    Bad rows are reported by line and skipped; the header must name the workspace currency.
    """
    home = workspace_currency(session, workspace_id)
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    expected = ["date", "currency", f"rate_to_{home.lower()}"]
    if header != expected:
        raise DomainError("file", f"the header must be {','.join(expected)} (rates into the workspace currency)")
    good: list[RateCreate] = []
    errors: list[dict[str, Any]] = []
    for line, row in enumerate(reader, start=2):
        if not any(c.strip() for c in row):
            continue
        try:
            if len(row) != 3:
                raise ValueError(f"expected 3 columns, got {len(row)}")
            good.append(RateCreate(date=_parse_date(row[0]), base=row[1], quote=home, rate=Decimal(row[2].strip())))
        except (ValueError, InvalidOperation) as exc:
            errors.append({"line": line, "message": str(exc).splitlines()[0]})
    return upsert_rates(session, workspace_id, good), errors


# --------------------------------------------------------------------------------------------------------------------
# Spend
# --------------------------------------------------------------------------------------------------------------------


def add_spend(session: Session, workspace_id: int, data: SpendCreate) -> MarketingSpend:
    row = MarketingSpend(
        workspace_id=workspace_id,
        spend_date=data.date,
        channel=data.channel.strip(),
        campaign=(data.campaign or "").strip() or None,
        amount_minor=data.amount_minor,
        currency=data.currency,
        country=data.country,
        region=(data.region or "").strip() or None,
    )
    session.add(row)
    session.flush()
    return row


def import_spend_csv(session: Session, workspace_id: int, text: str) -> tuple[int, list[dict[str, Any]]]:
    """``date,channel,campaign,amount,currency[,country,region]`` (amount in major units, e.g. ``12.50``; country an
    ISO 3166 code); bad rows reported by line."""
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    missing = [c for c in ("date", "channel", "amount", "currency") if c not in fields]
    if missing:
        raise DomainError("file", f"missing columns: {', '.join(missing)} (date,channel,campaign,amount,currency)")
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for line, raw in enumerate(reader, start=2):
        rec = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        if not any(rec.values()):
            continue
        try:
            ccy = rec["currency"].upper()
            amount = Decimal(rec["amount"]).scaleb(minor_exponent(ccy))
            if amount != amount.to_integral_value():
                raise ValueError(f"amount {rec['amount']} has more decimals than {ccy} allows")
            data = SpendCreate(
                date=_parse_date(rec["date"]),
                channel=rec["channel"],
                campaign=rec.get("campaign") or None,
                amount_minor=int(amount),
                currency=ccy,
                country=rec.get("country") or None,
                region=rec.get("region") or None,
            )
        except ValidationError as exc:
            errors.append({"line": line, "message": _validation_message(exc)})
            continue
        except (ValueError, InvalidOperation) as exc:
            errors.append({"line": line, "message": str(exc).splitlines()[0]})
            continue
        rows.append(
            {
                "workspace_id": workspace_id,
                "spend_date": data.date,
                "channel": data.channel,
                "campaign": data.campaign,
                "amount_minor": data.amount_minor,
                "currency": data.currency,
                "country": data.country,
                "region": (data.region or "").strip() or None,
                "created_at": utcnow(),
            }
        )
    if rows:
        session.execute(insert(MarketingSpend), rows)
        session.flush()
    return len(rows), errors


# --------------------------------------------------------------------------------------------------------------------
# Spend report: CPL, cost per qualified lead, CAC, ROI, ROAS
# --------------------------------------------------------------------------------------------------------------------


def _first_reach(session: Session, workspace_id: int, stages: list[str], start: datetime, end: datetime) -> Any:
    """Contacts whose first change into any of ``stages`` falls in the period, with their first touch."""
    sub = (
        select(StageChange.contact_id.label("cid"), func.min(StageChange.changed_at).label("at"))
        .where(StageChange.workspace_id == workspace_id, StageChange.to_stage.in_(stages))
        .group_by(StageChange.contact_id)
        .subquery()
    )
    return session.execute(
        select(
            sub.c.cid,
            sub.c.at,
            Contact.first_touch_channel,
            Contact.first_touch_campaign,
            Contact.country,
            Contact.region,
        )
        .join(Contact, and_(Contact.id == sub.c.cid, Contact.workspace_id == workspace_id))
        .where(sub.c.at >= start, sub.c.at < end)
    ).all()


def _first_orders_subquery(workspace_id: int) -> Any:
    return (
        select(Order.contact_id.label("cid"), func.min(Order.placed_at).label("first_at"))
        .where(Order.workspace_id == workspace_id, Order.contact_id.is_not(None), Order.status.in_(BUYING_STATUSES))
        .group_by(Order.contact_id)
        .subquery()
    )


def _as_dt(value: Any) -> datetime:
    """An aggregate's datetime (SQLite returns text for min(), without the column type's processing)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    dt = cast(datetime, value)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


GROUPS: dict[str, list[str]] = {
    "channel": ["channel"],
    "campaign": ["channel", "campaign"],
    "month": ["month", "channel"],
    "country": ["country", "channel"],
    "region": ["region", "channel"],
}


def spend_report(
    session: Session, workspace_id: int, date_from: date | None, date_to: date | None, group_by: str = "channel"
) -> dict[str, Any]:
    """Spend, leads, qualified leads, new customers and their revenue per channel, campaign, month × channel,
    country × channel or region × channel (spend rows carry their market; contacts are keyed by their own country
    and region; ``(unknown)`` where either is missing)."""
    return spend_reports(session, workspace_id, date_from, date_to, [group_by])[group_by]


def spend_reports(
    session: Session, workspace_id: int, date_from: date | None, date_to: date | None, group_bys: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """:func:`spend_report` for several groupings at once: the spend, leads, customers and revenue are read once and
    added into every grouping."""
    for group_by in group_bys:
        if group_by not in GROUPS:
            raise DomainError("group_by", "group_by must be channel, campaign, month, country or region")
    frm, to, start, end = period(date_from, date_to)
    book = rate_book(session, workspace_id)
    home = book.home
    stages = _funnel_stages(session, workspace_id)

    def key(
        group_by: str, channel: str | None, campaign: str | None, when: date, country: str | None, region: str | None
    ) -> tuple[str, ...]:
        ch = channel or UNKNOWN
        if group_by == "channel":
            return (ch,)
        if group_by == "campaign":
            return (ch, campaign or NO_CAMPAIGN)
        if group_by == "country":
            return ((country or "").upper() or UNKNOWN, ch)
        if group_by == "region":
            return (region or UNKNOWN, ch)
        return (f"{when.year:04d}-{when.month:02d}", ch)

    def fresh() -> dict[str, int]:
        return {
            "spend_minor": 0,
            "leads": 0,
            "qualified_leads": 0,
            "new_customers": 0,
            "revenue_minor": 0,
            "clv_sum_minor": 0,
            "clv_customers": 0,
        }

    accs: dict[str, dict[tuple[str, ...], dict[str, int]]] = {g: defaultdict(fresh) for g in group_bys}

    def add(args: tuple[Any, ...], metric: str, value: int) -> None:
        for g, acc in accs.items():
            acc[key(g, *args)][metric] += value

    for d, ch, camp, amount, ccy, country, region in session.execute(
        select(
            MarketingSpend.spend_date,
            MarketingSpend.channel,
            MarketingSpend.campaign,
            MarketingSpend.amount_minor,
            MarketingSpend.currency,
            MarketingSpend.country,
            MarketingSpend.region,
        ).where(
            MarketingSpend.workspace_id == workspace_id,
            MarketingSpend.spend_date >= frm,
            MarketingSpend.spend_date <= to,
        )
    ):
        add((ch, camp, d, country, region), "spend_minor", book.convert(amount, ccy, home, d))
    for metric, first in (("leads", "interest"), ("qualified_leads", "consideration")):
        reach = _stages_from(stages, first)
        if not reach:
            continue
        for _cid, at, ch, camp, country, region in _first_reach(session, workspace_id, reach, start, end):
            add((ch, camp, _as_dt(at).date(), country, region), metric, 1)
    fo = _first_orders_subquery(workspace_id)
    customers = session.execute(
        select(
            fo.c.cid,
            fo.c.first_at,
            Contact.first_touch_channel,
            Contact.first_touch_campaign,
            Contact.country,
            Contact.region,
        )
        .join(Contact, and_(Contact.id == fo.c.cid, Contact.workspace_id == workspace_id))
        .where(fo.c.first_at >= start, fo.c.first_at < end)
    ).all()
    args_by_contact: dict[int, tuple[Any, ...]] = {}
    for cid, first_at, ch, camp, country, region in customers:
        args = (ch, camp, _as_dt(first_at).date(), country, region)
        args_by_contact[cid] = args
        add(args, "new_customers", 1)
    ids = list(args_by_contact)
    # LTV:CAC from the last CLV fit's contact property (minor units of the workspace currency).
    clv_prop = Contact.properties["predicted_clv_12m"].as_float()
    for chunk in _chunks(ids):
        for cid, value in session.execute(
            select(Contact.id, clv_prop).where(
                Contact.workspace_id == workspace_id, Contact.id.in_(chunk), clv_prop.is_not(None)
            )
        ):
            add(args_by_contact[cid], "clv_sum_minor", round(value))
            add(args_by_contact[cid], "clv_customers", 1)
    for chunk in _chunks(ids):
        for cid, placed, ccy, total, refunded in session.execute(
            select(Order.contact_id, Order.placed_at, Order.currency, Order.total_minor, Order.refunded_minor).where(
                Order.workspace_id == workspace_id,
                Order.contact_id.in_(chunk),
                Order.status.in_(REVENUE_STATUSES),
                Order.placed_at >= start,
                Order.placed_at < end,
            )
        ):
            add(
                args_by_contact[cast(int, cid)],
                "revenue_minor",
                book.convert(_order_value(total, refunded), ccy, home, placed.date()),
            )

    out: dict[str, dict[str, Any]] = {}
    for group_by, acc in accs.items():
        names = GROUPS[group_by]
        rows = [_spend_metrics(dict(zip(names, k, strict=True)), v) for k, v in sorted(acc.items())]
        totals = {m: sum(v[m] for v in acc.values()) for m in fresh()}
        empty = not acc
        out[group_by] = _clean_dict(
            {
                "currency": home,
                "from": frm.isoformat(),
                "to": to.isoformat(),
                "group_by": group_by,
                "rows": rows,
                "totals": _spend_metrics({}, totals),
                "insufficient_data": empty,
                "reason": "no spend, leads or new customers in the period" if empty else "",
            }
        )
    return out


def _spend_metrics(head: dict[str, Any], metrics: dict[str, int]) -> dict[str, Any]:
    v = dict(metrics)
    clv_sum, clv_n = v.pop("clv_sum_minor"), v.pop("clv_customers")
    spend, revenue = v["spend_minor"], v["revenue_minor"]
    cac = _money_ratio(spend, v["new_customers"]) if spend else None
    avg_clv = _money_ratio(clv_sum, clv_n)
    notes = []
    if not spend:
        notes.append("no spend recorded: cost ratios, ROI and ROAS undefined")
    if not v["leads"]:
        notes.append("no leads: cost per lead undefined")
    if not v["new_customers"]:
        notes.append("no new customers: CAC undefined")
    return {
        **head,
        **v,
        "cost_per_lead_minor": _money_ratio(spend, v["leads"]),
        "cost_per_qualified_lead_minor": _money_ratio(spend, v["qualified_leads"]),
        "cac_minor": cac,
        "roi": _ratio(revenue - spend, spend),
        "roas": _ratio(revenue, spend),
        # Mean predicted 12-month CLV of the new customers (last CLV fit) over CAC; None without a fit or a CAC.
        "avg_predicted_clv_12m_minor": avg_clv,
        "ltv_cac": _ratio(avg_clv, cac) if avg_clv is not None and cac else None,
        "notes": notes,
    }


# --------------------------------------------------------------------------------------------------------------------
# Funnels
# --------------------------------------------------------------------------------------------------------------------


def funnel_report(
    session: Session,
    workspace_id: int,
    date_from: date | None,
    date_to: date | None,
    group_by: str | None = None,
    *,
    min_contacts: int = funnel.MIN_CONTACTS,
) -> dict[str, Any]:
    """The lifecycle-stage funnel of contacts with a stage change in the period (their history up to its end)."""
    if group_by not in (None, "channel", "country", "region"):
        raise DomainError("group_by", "group_by must be channel, country or region")
    frm, to, start, end = period(date_from, date_to)
    stages = _funnel_stages(session, workspace_id)
    active = (
        select(StageChange.contact_id)
        .where(StageChange.workspace_id == workspace_id, StageChange.changed_at >= start, StageChange.changed_at < end)
        .distinct()
        .subquery()
    )
    group_col = {"channel": Contact.first_touch_channel, "region": Contact.region}.get(group_by or "", Contact.country)
    # Times travel as microseconds (PostgreSQL) or the stored text (SQLite), parsed in one numpy call: no datetime
    # object per row.
    rows = session.execute(
        select(
            StageChange.contact_id,
            StageChange.to_stage,
            columnar.epoch_us_expr(session, StageChange.changed_at),
            group_col,
        )
        .join(Contact, and_(Contact.id == StageChange.contact_id, Contact.workspace_id == workspace_id))
        .where(
            StageChange.workspace_id == workspace_id,
            StageChange.contact_id.in_(select(active.c.contact_id)),
            StageChange.changed_at < end,
        )
        .order_by(StageChange.contact_id, StageChange.changed_at, StageChange.id)
    ).all()
    cids, to_stages, times, group_of = zip(*rows, strict=True) if rows else ((), (), (), ())
    ids = np.fromiter(cids, dtype=np.int64, count=len(cids))
    stage_arr = np.array(to_stages, dtype=object)
    seconds = columnar.epoch_us_array(session, times) / 1e6

    def run(sel: Any = slice(None)) -> dict[str, Any]:
        res = funnel.stage_funnel(ids[sel], stage_arr[sel], seconds[sel], stages, min_contacts=min_contacts)
        return _clean_dict(res)

    out: dict[str, Any] = {"from": frm.isoformat(), "to": to.isoformat(), "stages": stages, "all": run()}
    if group_by:
        groups = np.array([g or UNKNOWN for g in group_of], dtype=object)
        out["group_by"] = group_by
        out["groups"] = {str(g): run(groups == g) for g in sorted(set(groups.tolist()))}
    return out


def _period_key(interval: str, d: date) -> tuple[int, str, date]:
    """The period number, label and first day of a day: ISO week (Monday) or calendar month."""
    if interval == "month":
        return d.year * 12 + d.month - 1, f"{d.year:04d}-{d.month:02d}", date(d.year, d.month, 1)
    monday = d - timedelta(days=d.weekday())
    iso = monday.isocalendar()
    return monday.toordinal(), f"{iso.year:04d}-W{iso.week:02d}", monday


def funnel_trends(
    session: Session,
    workspace_id: int,
    date_from: date | None,
    date_to: date | None,
    interval: str = "month",
    *,
    min_contacts: int = funnel.MIN_CONTACTS,
) -> dict[str, Any]:
    """Stage conversion per week or month: the contacts whose first funnel stage change falls in each period, their
    lifecycle funnel with their history up to the end of the report (so a late period has had less time to
    convert). ``series[stage]`` is that stage's conversion to the next one per period (``None`` where undefined)."""
    if interval not in ("week", "month"):
        raise DomainError("interval", "interval must be week or month")
    frm, to, start, end = period(date_from, date_to)
    stages = _funnel_stages(session, workspace_id)
    first = (
        select(StageChange.contact_id.label("cid"), func.min(StageChange.changed_at).label("at"))
        .where(StageChange.workspace_id == workspace_id, StageChange.to_stage.in_(stages))
        .group_by(StageChange.contact_id)
        .subquery()
    )
    entered = {
        cid: _as_dt(at)
        for cid, at in session.execute(select(first.c.cid, first.c.at).where(first.c.at >= start, first.c.at < end))
    }
    by_contact: dict[int, list[Any]] = defaultdict(list)
    for chunk in _chunks(sorted(entered)):
        for row in session.execute(
            select(StageChange.contact_id, StageChange.to_stage, StageChange.changed_at)
            .where(
                StageChange.workspace_id == workspace_id,
                StageChange.contact_id.in_(chunk),
                StageChange.changed_at < end,
            )
            .order_by(StageChange.contact_id, StageChange.changed_at, StageChange.id)
        ):
            by_contact[row[0]].append(row)
    groups: dict[int, list[Any]] = defaultdict(list)
    labels: dict[int, tuple[str, date]] = {}
    for cid, at in entered.items():
        key, label, first_day = _period_key(interval, at.date())
        labels[key] = (label, first_day)
        groups[key] += by_contact.get(cid, [])
    # Every period of the range appears, empty ones too, so the series line up with the calendar.
    k1, _l, _f = _period_key(interval, to)
    keys: list[int] = []
    d = frm
    while True:
        key, label, first_day = _period_key(interval, d)
        if key not in keys:
            keys.append(key)
            labels.setdefault(key, (label, first_day))
        if key == k1:
            break
        d = (
            first_day + timedelta(days=7)
            if interval == "week"
            else date(first_day.year + first_day.month // 12, first_day.month % 12 + 1, 1)
        )
    periods = []
    series: dict[str, list[float | None]] = {f"{a} → {b}": [] for a, b in itertools.pairwise(stages)}
    for key in keys:
        sel = groups.get(key, [])
        res = funnel.stage_funnel(
            np.array([r[0] for r in sel], dtype=np.int64),
            np.array([r[1] for r in sel], dtype=object),
            np.array([r[2].timestamp() for r in sel], dtype=np.float64),
            stages,
            min_contacts=min_contacts,
        )
        label, first_day = labels[key]
        periods.append(
            {
                "period": label,
                "start": first_day.isoformat(),
                "contacts": res.contacts,
                "stages": [
                    {"stage": st.stage, "reached": st.reached, "conversion_to_next": st.conversion_to_next}
                    for st in res.stages
                ],
                "insufficient_data": res.insufficient_data,
                "reason": res.reason,
            }
        )
        for a, b, st in zip(stages, stages[1:], res.stages, strict=False):
            series[f"{a} → {b}"].append(st.conversion_to_next)
    empty = not entered
    return _clean_dict(
        {
            "from": frm.isoformat(),
            "to": to.isoformat(),
            "interval": interval,
            "stages": stages,
            "periods": periods,
            "series": series,
            "insufficient_data": empty,
            "reason": "no contact entered the funnel in the period" if empty else "",
        }
    )


PAGE_PREFIX = "page:"


def event_funnel_report(
    session: Session,
    workspace_id: int,
    steps: Sequence[str],
    window_days: float,
    date_from: date | None,
    date_to: date | None,
    *,
    min_contacts: int = funnel.MIN_CONTACTS,
    engine: str = "sql",
    store: columnar.ColumnarStore | None = None,
) -> dict[str, Any]:
    """An ordered funnel over events of the period: a step is an event name or ``page:/path`` (a page view).

    ``engine``: ``sql`` reads the matching events from the operational database into ``engine.funnel``;
    ``columnar`` answers from the DuckDB copy (``store``, synced first); ``auto`` picks by size.
    """
    steps = [s.strip() for s in steps]
    for i, s in enumerate(steps):
        if not s or s == PAGE_PREFIX:
            raise DomainError(f"steps.{i}", "a step is an event name or page:/path")
    if not steps:
        raise DomainError("steps", "a funnel needs at least one step")
    frm, to, start, end = period(date_from, date_to)
    engine = columnar.resolve_engine(session, engine, store)
    if engine == "columnar":
        if store is None:
            raise DomainError("engine", "the columnar engine needs a data directory")
        with store.connect(session) as con:
            columnar.sync(session, con, workspace_id)
            res = columnar.ordered_funnel(
                con, workspace_id, steps, window_days * 86_400.0, start, end, min_contacts=min_contacts
            )
        return {
            "from": frm.isoformat(),
            "to": to.isoformat(),
            "window_days": window_days,
            "engine": engine,
            **_clean_dict(res),
        }
    names = sorted({s for s in steps if not s.startswith(PAGE_PREFIX)})
    paths = sorted({s[len(PAGE_PREFIX) :] for s in steps if s.startswith(PAGE_PREFIX)})
    path_expr = Event.properties["path"].as_string()
    match: list[ColumnElement[bool]] = []
    if names:
        match.append(Event.name.in_(names))
    if paths:
        match.append(and_(Event.kind == "page", path_expr.in_(paths)))
    rows = session.execute(
        select(Event.contact_id, Event.occurred_at, Event.kind, Event.name, path_expr)
        .where(
            Event.workspace_id == workspace_id,
            Event.contact_id.is_not(None),
            Event.occurred_at >= start,
            Event.occurred_at < end,
            or_(*match),
        )
        .order_by(Event.contact_id, Event.occurred_at, Event.id)
    ).all()
    ids: list[int] = []
    times: list[float] = []
    labels: list[str] = []
    name_set, path_set = set(names), set(paths)
    for cid, at, kind, name, path in rows:
        if name in name_set:
            ids.append(cid)
            times.append(at.timestamp())
            labels.append(name)
        if kind == "page" and path in path_set:
            ids.append(cid)
            times.append(at.timestamp())
            labels.append(PAGE_PREFIX + path)
    res = funnel.ordered_funnel(
        np.array(ids, dtype=np.int64),
        np.array(times, dtype=np.float64),
        np.array(labels, dtype=object),
        steps,
        window_days * 86_400.0,
        min_contacts=min_contacts,
    )
    return {
        "from": frm.isoformat(),
        "to": to.isoformat(),
        "window_days": window_days,
        "engine": engine,
        **_clean_dict(res),
    }


# --------------------------------------------------------------------------------------------------------------------
# Attribution
# --------------------------------------------------------------------------------------------------------------------


def attribution_report(
    session: Session,
    workspace_id: int,
    date_from: date | None,
    date_to: date | None,
    level: str = "channel",
    *,
    half_life_days: float = 7.0,
) -> dict[str, Any]:
    """Six models side by side over the period's paths.

    A contact whose first order is in the period is a converting path: its touches up to that order, valued at the
    order's net value in the workspace currency. A contact with touches in the period and no order before its end is
    a non-converting path (its touches in the period). Customers who first bought before the period are left out.
    """
    by: attribution.Level
    if level == "channel":
        by = "channel"
    elif level == "campaign":
        by = "campaign"
    else:
        raise DomainError("level", "level must be channel or campaign")
    frm, to, start, end = period(date_from, date_to)
    book = rate_book(session, workspace_id)
    home = book.home
    buying = and_(Order.workspace_id == workspace_id, Order.contact_id.is_not(None), Order.status.in_(BUYING_STATUSES))
    # Set-based: the contacts whose first order is in the period (one grouped query), each with that order's row
    # (the earliest, the lowest id among orders placed at the same moment).
    first = (
        select(Order.contact_id.label("cid"), func.min(Order.placed_at).label("first_at"))
        .where(buying)
        .group_by(Order.contact_id)
        .having(and_(func.min(Order.placed_at) >= start, func.min(Order.placed_at) < end))
        .cte("first_orders")
    )
    converted: dict[int, datetime] = {}
    values: dict[int, int] = {}
    for cid, placed, ccy, total, refunded in session.execute(
        select(Order.contact_id, Order.placed_at, Order.currency, Order.total_minor, Order.refunded_minor)
        .join(first, and_(Order.contact_id == first.c.cid, Order.placed_at == first.c.first_at))
        .where(buying)
        .order_by(Order.contact_id, Order.id)
    ):
        c = cast(int, cid)
        if c in converted:
            continue
        converted[c] = placed
        values[c] = book.convert(_order_value(total, refunded), ccy, home, placed.date())
    # Every path's touches in one query: the contacts touched in the period and the converted ones.
    in_period = select(Touch.contact_id).where(
        Touch.workspace_id == workspace_id, Touch.occurred_at >= start, Touch.occurred_at < end
    )
    wanted = in_period.union(select(first.c.cid))
    touches: dict[int, list[attribution.Touch]] = defaultdict(list)
    for cid, at, ch, camp in session.execute(
        select(Touch.contact_id, Touch.occurred_at, Touch.channel, Touch.campaign)
        .where(Touch.workspace_id == workspace_id, Touch.occurred_at < end, Touch.contact_id.in_(wanted))
        .order_by(Touch.contact_id, Touch.occurred_at, Touch.id)
    ):
        touches[cid].append(attribution.Touch(ch, at, camp))
    # Customers who first bought before the period are left out (and the converted ones are paths of their own).
    bought = set(
        session.scalars(
            select(Order.contact_id)
            .where(buying, Order.placed_at < end, Order.contact_id.in_(in_period.distinct()))
            .distinct()
        )
    )
    paths: list[attribution.ConversionPath] = []
    for cid, conv_at in converted.items():
        ts = tuple(t for t in touches.get(cid, ()) if t.at <= conv_at)
        paths.append(attribution.ConversionPath(ts, True, float(values[cid]), conv_at))
    for cid, ts_list in touches.items():
        if cid in converted or cid in bought:
            continue
        ts = tuple(t for t in ts_list if t.at >= start)
        if ts:
            paths.append(attribution.ConversionPath(ts, False))
    results = attribution.attribute_all(paths, level=by, half_life_days=half_life_days)
    models: dict[str, Any] = {}
    table: dict[str, dict[str, Any]] = defaultdict(dict)
    for model, res in results.items():
        models[model] = clean(res)
        for cr in res.credits:
            table[cr.key][model] = {"conversions": cr.conversions, "revenue_minor": round(cr.revenue)}
    n_conv = sum(1 for p in paths if p.converted)
    insufficient = n_conv == 0
    return _clean_dict(
        {
            "currency": home,
            "from": frm.isoformat(),
            "to": to.isoformat(),
            "level": level,
            "paths": len(paths),
            "conversions": n_conv,
            "revenue_minor": sum(values.values()),
            "models": models,
            "side_by_side": [{"key": k, **v} for k, v in sorted(table.items())],
            "insufficient_data": insufficient,
            "reason": "no first orders in the period: nothing to attribute" if insufficient else "",
        }
    )


# --------------------------------------------------------------------------------------------------------------------
# Customer lifetime value
# --------------------------------------------------------------------------------------------------------------------

CLV_PROPERTIES = ("p_alive", "predicted_purchases_90d", "predicted_clv_12m", "clv_tier")
UNIT_DAYS = 7.0


def _order_arrays(
    session: Session, workspace_id: int, book: RateBook, end: datetime, channel: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contact ids, order times (days since the epoch) and net values in the workspace currency."""
    q = select(Order.contact_id, Order.placed_at, Order.currency, Order.total_minor, Order.refunded_minor).where(
        Order.workspace_id == workspace_id,
        Order.contact_id.is_not(None),
        Order.status.in_(REVENUE_STATUSES),
        Order.placed_at < end,
    )
    if channel:
        q = q.join(Contact, and_(Contact.id == Order.contact_id, Contact.workspace_id == workspace_id)).where(
            Contact.first_touch_channel == channel
        )
    ids: list[int] = []
    times: list[float] = []
    vals: list[float] = []
    for cid, placed, ccy, total, refunded in session.execute(q):
        ids.append(cast(int, cid))
        times.append(placed.timestamp() / 86_400.0)
        vals.append(float(book.convert(_order_value(total, refunded), ccy, book.home, placed.date())))
    return np.array(ids, dtype=np.int64), np.array(times, dtype=np.float64), np.array(vals, dtype=np.float64)


def _tiers(values: np.ndarray) -> list[str | None]:
    """A/B/C/D by quartile of the predicted value (A: the top quarter); None where there is no value."""
    finite = np.isfinite(values)
    if not finite.any():
        return [None] * len(values)
    q25, q50, q75 = np.quantile(values[finite], [0.25, 0.5, 0.75])
    out: list[str | None] = []
    for v in values:
        if not math.isfinite(v):
            out.append(None)
        elif v >= q75:
            out.append("A")
        elif v >= q50:
            out.append("B")
        elif v >= q25:
            out.append("C")
        else:
            out.append("D")
    return out


def fit_clv(
    session: Session,
    workspace_id: int,
    *,
    holdout_days: int = 90,
    as_of: date | None = None,
    min_repeat_customers: int = clv.MIN_REPEAT_CUSTOMERS,
) -> dict[str, Any]:
    """Fit BG/NBD + Gamma-Gamma on the workspace's orders, check a holdout, store the fit and write the contact
    properties ``p_alive``, ``predicted_purchases_90d``, ``predicted_clv_12m`` (minor units of the workspace currency)
    and ``clv_tier``."""
    now = utcnow()
    end = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC) + timedelta(days=1) if as_of is not None else now
    book = rate_book(session, workspace_id)
    ids, t, v = _order_arrays(session, workspace_id, book, end)
    obs_end = end.timestamp() / 86_400.0
    summary = clv.summarize_transactions(ids, t, v, obs_end, unit_days=UNIT_DAYS)
    model = clv.fit_clv(summary, min_repeat_customers=min_repeat_customers)
    result: dict[str, Any] = {
        "currency": book.home,
        "as_of": end.isoformat(),
        "unit_days": UNIT_DAYS,
        "customers": len(summary),
        "orders": int(ids.size),
        "repeat_customers": int((summary.frequency > 0).sum()),
        "bg_nbd": clean(model.bg_nbd),
        "gamma_gamma": clean(model.gamma_gamma),
        "converged": model.converged,
        "reasons": model.reasons,
        "method": model.bg_nbd.method,
        "fallback": model.bg_nbd.fallback or model.gamma_gamma.fallback,
        "written_contacts": 0,
    }
    if len(summary) == 0:
        result.update(insufficient_data=True, reason="no completed orders with a contact: nothing to fit", holdout=None)
    else:
        preds = model.predict(summary, months=12)
        p90 = clv.expected_purchases(model.bg_nbd, 90.0 / UNIT_DAYS, summary.frequency, summary.recency, summary.age)
        tiers = _tiers(preds.clv)
        per_contact = {
            int(cid): {
                "p_alive": clean(round(float(pa), 6)),
                "predicted_purchases_90d": clean(round(float(pp), 6)),
                "predicted_clv_12m": round(float(cv)) if math.isfinite(float(cv)) else None,
                "clv_tier": tier,
            }
            for cid, pa, pp, cv, tier in zip(summary.customer_ids, preds.p_alive, p90, preds.clv, tiers, strict=True)
        }
        result["written_contacts"] = _write_properties(session, workspace_id, per_contact, now)
        result["insufficient_data"] = not model.converged
        result["reason"] = "; ".join(model.reasons) + (
            f"; predictions use the fallback {result['fallback']}" if result["fallback"] else ""
        )
        result["holdout"] = _holdout(ids, t, v, obs_end, holdout_days, min_repeat_customers)
        result["predicted_clv_12m_total_minor"] = int(np.nansum(preds.clv))
        result["tiers"] = {k: tiers.count(k) for k in "ABCD"}
        result["segments"] = _segment_split(session, workspace_id, summary, preds, ids, min_repeat_customers)
    session.add(
        ClvFit(
            workspace_id=workspace_id,
            fitted_at=now,
            currency=book.home,
            customers=len(summary),
            method=str(result["method"]),
            result=clean(result),
        )
    )
    session.flush()
    return _clean_dict(result)


SEGMENTS = ("B2B", "B2C")


def customer_segments(session: Session, workspace_id: int, contact_ids: Sequence[int]) -> dict[int, str]:
    """``B2B`` for a contact linked to a company or whose ``customer_type`` property is B2B; else ``B2C``."""
    kind = Contact.properties["customer_type"].as_string()
    out: dict[int, str] = {}
    for chunk in _chunks(list(contact_ids)):
        for cid, company_id, ctype in session.execute(
            select(Contact.id, Contact.company_id, kind).where(
                Contact.workspace_id == workspace_id, Contact.id.in_(chunk)
            )
        ):
            out[int(cid)] = "B2B" if company_id is not None or (ctype or "").upper() == "B2B" else "B2C"
    return out


def _finite_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _segment_split(
    session: Session,
    workspace_id: int,
    summary: clv.CustomerSummary,
    preds: clv.ClvPredictions,
    ids: np.ndarray,
    min_repeat: int,
) -> dict[str, Any]:
    """Per B2B/B2C: its own BG/NBD + Gamma-Gamma fit (parameters differ between companies and individuals) and the
    segment's share of the workspace fit's predictions."""
    seg_of = customer_segments(session, workspace_id, [int(c) for c in summary.customer_ids])
    labels = np.array([seg_of.get(int(c), "B2C") for c in summary.customer_ids], dtype=object)
    out: dict[str, Any] = {}
    for seg in SEGMENTS:
        mask = labels == seg
        n = int(mask.sum())
        if n == 0:
            out[seg] = {"customers": 0, "insufficient_data": True, "reason": f"no {seg} customers with orders"}
            continue
        sub = clv.CustomerSummary(
            summary.customer_ids[mask],
            summary.frequency[mask],
            summary.recency[mask],
            summary.age[mask],
            summary.monetary[mask],
            summary.unit_days,
        )
        model = clv.fit_clv(sub, min_repeat_customers=min_repeat)
        seg_preds = model.predict(sub, months=12)
        member = np.isin(ids, summary.customer_ids[mask])
        out[seg] = _clean_dict(
            {
                "customers": n,
                "orders": int(member.sum()),
                "repeat_customers": int((sub.frequency > 0).sum()),
                "bg_nbd": model.bg_nbd,
                "gamma_gamma": model.gamma_gamma,
                "converged": model.converged,
                "method": model.bg_nbd.method,
                "fallback": model.bg_nbd.fallback or model.gamma_gamma.fallback,
                "mean_p_alive": _finite_mean(seg_preds.p_alive) if model.bg_nbd.converged else None,
                "mean_predicted_clv_12m_minor": _finite_mean(seg_preds.clv),
                "predicted_clv_12m_total_minor": int(np.nansum(seg_preds.clv)),
                # The workspace-wide fit's predictions (those written to the contacts) summed over the segment.
                "workspace_fit_clv_12m_total_minor": int(np.nansum(preds.clv[mask])),
                "insufficient_data": not model.converged,
                "reason": "; ".join(model.reasons),
            }
        )
    return out


def _holdout(
    ids: np.ndarray, t: np.ndarray, v: np.ndarray, obs_end: float, holdout_days: int, min_repeat: int
) -> dict[str, Any]:
    cutoff = obs_end - holdout_days
    if t.size == 0 or float(t.min()) >= cutoff:
        return {"insufficient_data": True, "reason": f"no orders before the {holdout_days}-day holdout period"}
    rep = clv.calibration_holdout(ids, t, v, cutoff, obs_end, unit_days=UNIT_DAYS, min_repeat_customers=min_repeat)
    return _clean_dict(
        {
            "holdout_days": holdout_days,
            "customers": rep.customers,
            "predicted_repeat_purchases": rep.predicted_total,
            "actual_repeat_purchases": rep.actual_total,
            "relative_error": rep.relative_error,
            "buckets": rep.buckets,
            "calibration_fit": {"bg_nbd": rep.model.bg_nbd, "converged": rep.model.converged},
            "insufficient_data": rep.insufficient_data,
            "reason": rep.reason,
        }
    )


def _write_properties(
    session: Session, workspace_id: int, per_contact: dict[int, dict[str, Any]], now: datetime
) -> int:
    """Merge the CLV values into ``contacts.properties`` with one executemany per chunk."""
    table = cast(Table, Contact.__table__)
    stmt = (
        update(table)
        .where(table.c.workspace_id == workspace_id, table.c.id == bindparam("b_id"))
        .values(properties=bindparam("b_props"), version=table.c.version + 1, updated_at=bindparam("b_now"))
    )
    written = 0
    ids = sorted(per_contact)
    for chunk in _chunks(ids):
        current = session.execute(
            select(Contact.id, Contact.properties).where(Contact.workspace_id == workspace_id, Contact.id.in_(chunk))
        ).all()
        params = [
            {"b_id": cid, "b_props": {**(props or {}), **per_contact[cid]}, "b_now": now} for cid, props in current
        ]
        if params:
            session.execute(stmt, params)
            written += len(params)
    session.flush()
    return written


def last_clv_fit(session: Session, workspace_id: int) -> dict[str, Any]:
    fit = session.scalar(
        select(ClvFit).where(ClvFit.workspace_id == workspace_id).order_by(ClvFit.fitted_at.desc(), ClvFit.id.desc())
    )
    if fit is None:
        raise NotFound("", "no CLV fit yet: POST /api/v1/reports/clv/fit")
    return {"id": fit.id, "fitted_at": fit.fitted_at.isoformat(), **fit.result}


# --------------------------------------------------------------------------------------------------------------------
# Cohorts
# --------------------------------------------------------------------------------------------------------------------


def cohort_report(
    session: Session,
    workspace_id: int,
    *,
    channel: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    max_months: int = 24,
) -> dict[str, Any]:
    """Retention and repeat purchase by acquisition month (first order) × months since.

    ``retention[k]``: share of the cohort with an order in month k after acquisition; ``repeat[k]``: share with a
    second order by the end of month k. Months not yet observed (after ``to``) are ``None``.
    """
    to = date_to or utcnow().date()
    end = datetime(to.year, to.month, to.day, tzinfo=UTC) + timedelta(days=1)
    book = rate_book(session, workspace_id)
    ids, t, _v = _order_arrays(session, workspace_id, book, end, channel)
    last_month = to.year * 12 + to.month - 1
    months: dict[int, list[int]] = defaultdict(list)
    for cid, day in zip(ids.tolist(), t.tolist(), strict=True):
        d = datetime.fromtimestamp(day * 86_400.0, UTC)
        months[cid].append(d.year * 12 + d.month - 1)
    cohorts: dict[int, list[list[int]]] = defaultdict(list)
    for ms in months.values():
        ms.sort()
        if date_from is not None and ms[0] < date_from.year * 12 + date_from.month - 1:
            continue
        cohorts[ms[0]].append(ms)
    rows = []
    for m0 in sorted(cohorts):
        members = cohorts[m0]
        size = len(members)
        span = min(last_month - m0, max_months)
        retention: list[float | None] = []
        repeat: list[float | None] = []
        for k in range(span + 1):
            active = sum(1 for ms in members if (m0 + k) in ms)
            rep = sum(1 for ms in members if len(ms) > 1 and ms[1] <= m0 + k)
            retention.append(active / size)
            repeat.append(rep / size)
        rows.append(
            {
                "cohort": f"{m0 // 12:04d}-{m0 % 12 + 1:02d}",
                "customers": size,
                "retention": retention,
                "repeat": repeat,
            }
        )
    empty = not rows
    return {
        "by": "month",
        "channel": channel,
        "to": to.isoformat(),
        "cohorts": rows,
        "insufficient_data": empty,
        "reason": "no customers with orders" + (f" from channel {channel}" if channel else "") if empty else "",
    }


# --------------------------------------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------------------------------------


def experiment_report(
    arms: Sequence[tuple[str, int, int]],
    control: str,
    *,
    alpha: float = 0.05,
    tau: float = 0.05,
    seed: int = 0,
    history: dict[str, Sequence[tuple[int, int]]] | None = None,
) -> dict[str, Any]:
    """Per variant against the control: two-proportion test and sequential (mSPRT) test; Bayesian over all arms.

    ``history`` gives each arm's cumulative (conversions, trials) at earlier looks, oldest first; the sequential test
    runs over those looks and the current counts, so looking early does not inflate its error rate.
    """
    history = history or {}
    lengths = {len(history.get(a[0], ())) for a in arms}
    if len(lengths) > 1:
        raise DomainError("arms", "every arm needs the same number of earlier looks in its history")
    names = [a[0] for a in arms]
    if len(set(names)) != len(names):
        twice = next(n for i, n in enumerate(names) if n in names[:i])
        raise DomainError("arms", "arm names must be unique", code="duplicate_arm", params={"name": twice})
    if control not in names:
        raise DomainError(
            "control",
            f"control {control!r} is not one of the arms",
            code="unknown_control",
            params={"control": control},
        )
    for i, (name, conv, trials) in enumerate(arms):
        if conv > trials:
            raise DomainError(
                f"arms.{i}.conversions",
                "conversions cannot exceed trials",
                code="conversions_exceed_trials",
                params={"arm": name, "conversions": str(conv), "trials": str(trials)},
            )
    ctrl = next(a for a in arms if a[0] == control)
    comparisons = []
    for name, conv, trials in arms:
        if name == control:
            continue
        looks = [
            experiments.Look(c[0], c[1], v[0], v[1])
            for c, v in zip(history.get(control, ()), history.get(name, ()), strict=True)
        ]
        looks.append(experiments.Look(ctrl[1], ctrl[2], conv, trials))
        for k, lk in enumerate(looks[:-1]):
            if lk.conversions_a > lk.trials_a or lk.conversions_b > lk.trials_b:
                bad = (
                    (control, lk.conversions_a, lk.trials_a)
                    if lk.conversions_a > lk.trials_a
                    else (name, lk.conversions_b, lk.trials_b)
                )
                raise DomainError(
                    f"arms.{names.index(name)}.history.{k}",
                    "conversions cannot exceed trials",
                    code="conversions_exceed_trials",
                    params={"arm": bad[0], "conversions": str(bad[1]), "trials": str(bad[2])},
                )
        comparisons.append(
            {
                "arm": name,
                "two_proportion": clean(experiments.two_proportion_test(ctrl[1], ctrl[2], conv, trials, alpha=alpha)),
                "sequential": clean(experiments.sequential_test(looks, alpha=alpha, tau=tau)),
            }
        )
    bayes = experiments.bayesian_ab(list(arms), rng=np.random.default_rng(seed), control=control)
    return {"control": control, "alpha": alpha, "comparisons": comparisons, "bayesian": clean(bayes)}


def sample_size(
    baseline: float, mde: float, *, relative: bool = False, alpha: float = 0.05, power: float = 0.8
) -> dict[str, Any]:
    """Trials per arm to detect ``baseline -> baseline + mde``; a refusal names its field with a code (the baseline
    or the rate it would move to outside (0, 1), or no change at all)."""
    if not 0 < baseline < 1:
        raise DomainError("baseline", "baseline must be a rate in (0, 1)", code="rate_out_of_range")
    target = baseline * (1 + mde) if relative else baseline + mde
    if not 0 < target < 1 or target == baseline:
        raise DomainError(
            "mde",
            f"baseline + effect must be a different rate in (0, 1), not {target:g}",
            code="effect_out_of_range",
            params={"rate": f"{target:g}"},
        )
    for name, value in (("alpha", alpha), ("power", power)):
        if not 0 < value < 1:
            raise DomainError(name, f"{name} must be in (0, 1)", code="rate_out_of_range")
    n = experiments.sample_size_two_proportions(baseline, mde, relative=relative, alpha=alpha, power=power)
    return {
        "baseline": baseline,
        "mde": mde,
        "relative": relative,
        "alpha": alpha,
        "power": power,
        "per_arm": n,
        "total_two_arms": 2 * n,
    }


def journey_holdouts(session: Session, workspace_id: int) -> dict[str, Any]:
    """Journeys with a holdout group: treatment against holdout conversion to the journey's goal and the incremental
    lift with its interval and p-value, read from each journey's own report."""
    from suppilo.journeys import service as journeys_service

    rows = []
    for journey in journeys_service.list_journeys(session, workspace_id):
        rep = journeys_service.report(session, workspace_id, journey.id)
        conv = rep["conversion"]
        if not conv["holdout"]["contacts"]:
            continue
        rows.append(
            {
                "journey_id": rep["journey_id"],
                "name": rep["name"],
                "status": rep["status"],
                "treatment": conv["treatment"],
                "holdout": conv["holdout"],
                "lift": clean(conv["lift"]),
            }
        )
    return {
        "journeys": rows,
        "insufficient_data": not rows,
        "reason": "" if rows else "no journey has a holdout group with contacts",
    }
