"""Scoring use cases: ICPs, fit and engagement scores (stored with explanations and history), the scoring run.

Scores live in ``contact_scores`` (one row per contact and kind) and ``company_scores`` (fit). A changed score
re-evaluates, for the contacts concerned, the segments whose filters read that kind of score
(``segments.service.update_for_contacts`` with ``score:<kind>``).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from suppilo.analytics import service as analytics_service
from suppilo.companies.models import Company
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact, ContactTag
from suppilo.db.base import utcnow
from suppilo.db.tables import table_of
from suppilo.engine.filters import decay_key, parse_filter
from suppilo.engine.scoring import (
    DEFAULT_ENGAGEMENT,
    Convert,
    EngagementConfig,
    FitFacts,
    IcpDefinition,
    ScoredEvent,
    ScoringError,
    apply_event,
    best_fit,
    decay_factor,
    decayed,
    engagement,
    engagement_to_json,
    horizon_start,
    icp_to_json,
    parse_engagement,
    parse_icp,
)
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.events.models import Event
from suppilo.scoring.models import (
    CompanyScore,
    ContactScore,
    IdealCustomerProfile,
    ScoreChange,
    ScoreExplanation,
    ScoringSettings,
)
from suppilo.scoring.schemas import IcpCreate, IcpUpdate
from suppilo.segments import service as segments_service

CHUNK = 1000
# How far back the scoring run looks again for rows committed late (ids and timestamps are taken before commit).
LOOKBACK = timedelta(minutes=5)
# ... and how many ids below the cursor it looks among (late commits are that close to the cursor).
LOOKBACK_IDS = 100_000
# An event dated up to this far in the future (a client clock ahead) counts as of now; later ones are ignored.
FUTURE_SKEW = timedelta(days=1)
# Engagement history is written when the score moves by at least this much.
ENGAGEMENT_HISTORY_STEP = 1.0
ENGAGEMENT_BANDS = (("high", 40.0), ("medium", 15.0), ("low", 0.0))


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _chunks(ids: Sequence[int], size: int = CHUNK) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


# --- ICPs ------------------------------------------------------------------------------------------------------------


def _definition(raw: object, path: str = "definition") -> IcpDefinition:
    try:
        return parse_icp(raw)
    except ScoringError as exc:
        raise DomainError(f"{path}.{exc.path}" if exc.path else path, exc.reason, code="invalid_icp") from None


def list_icps(session: Session, workspace_id: int) -> list[IdealCustomerProfile]:
    """The workspace's ICPs in id order."""
    return list(
        session.scalars(
            select(IdealCustomerProfile)
            .where(IdealCustomerProfile.workspace_id == workspace_id)
            .order_by(IdealCustomerProfile.id)
        )
    )


def get_icp(session: Session, workspace_id: int, icp_id: int) -> IdealCustomerProfile:
    """One ICP of the workspace (NotFound for another workspace's id)."""
    icp = session.scalar(
        select(IdealCustomerProfile).where(
            IdealCustomerProfile.workspace_id == workspace_id, IdealCustomerProfile.id == icp_id
        )
    )
    if icp is None:
        raise NotFound("icp_id", f"ICP {icp_id} not found")
    return icp


def _check_name(session: Session, workspace_id: int, name: str, icp_id: int | None) -> None:
    other = session.scalar(
        select(IdealCustomerProfile.id).where(
            IdealCustomerProfile.workspace_id == workspace_id, IdealCustomerProfile.name == name
        )
    )
    if other is not None and other != icp_id:
        raise Conflict("name", f"an ICP named {name!r} exists", code="duplicate_name")


def _icp_state(icp: IdealCustomerProfile) -> dict[str, Any]:
    return {"name": icp.name, "description": icp.description, "definition": icp.definition, "active": icp.active}


def _audit(
    session: Session,
    workspace_id: int,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: int | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    from suppilo.workspaces import service as workspaces_service

    workspaces_service.record_audit(
        session, workspace_id, actor=actor, action=action, subject_type=subject_type, subject_id=subject_id,
        details={"before": before, "after": after},
    )  # fmt: skip


def create_icp(session: Session, workspace_id: int, data: IcpCreate, *, actor: str = "system") -> IdealCustomerProfile:
    """Store a validated ICP; fit scores are recomputed for every contact on the next scoring run. The audit log
    records who did it."""
    definition = _definition(data.definition)
    _check_name(session, workspace_id, data.name, None)
    icp = IdealCustomerProfile(
        workspace_id=workspace_id,
        name=data.name,
        description=data.description,
        definition=icp_to_json(definition),
        active=data.active,
    )
    session.add(icp)
    session.flush()
    _settings(session, workspace_id).fit_full_pending = True
    _audit(session, workspace_id, actor, "icp.created", "icp", icp.id, None, _icp_state(icp))
    session.flush()
    return icp


def update_icp(
    session: Session, workspace_id: int, icp_id: int, data: IcpUpdate, *, actor: str = "system"
) -> IdealCustomerProfile:
    """Change an ICP; fit scores are recomputed for every contact on the next scoring run. The audit log records
    who did it, with the ICP before and after."""
    icp = get_icp(session, workspace_id, icp_id)
    before = _icp_state(icp)
    if data.definition is not None:
        icp.definition = icp_to_json(_definition(data.definition))
    if data.name is not None:
        _check_name(session, workspace_id, data.name, icp.id)
        icp.name = data.name
    if data.description is not None:
        icp.description = data.description
    if data.active is not None:
        icp.active = data.active
    _settings(session, workspace_id).fit_full_pending = True
    _audit(session, workspace_id, actor, "icp.updated", "icp", icp.id, before, _icp_state(icp))
    session.flush()
    return icp


def delete_icp(session: Session, workspace_id: int, icp_id: int, *, actor: str = "system") -> None:
    """Remove an ICP; fit scores are recomputed on the next scoring run. The audit log keeps what it was."""
    icp = get_icp(session, workspace_id, icp_id)
    _audit(session, workspace_id, actor, "icp.deleted", "icp", icp.id, _icp_state(icp), None)
    session.delete(icp)
    _settings(session, workspace_id).fit_full_pending = True
    session.flush()


def active_icps(session: Session, workspace_id: int) -> list[tuple[int, IcpDefinition]]:
    """The active ICPs, parsed, in id order."""
    return [(icp.id, parse_icp(icp.definition)) for icp in list_icps(session, workspace_id) if icp.active]


# --- settings --------------------------------------------------------------------------------------------------------


def _settings(session: Session, workspace_id: int) -> ScoringSettings:
    row = session.get(ScoringSettings, workspace_id)
    if row is None:
        session.execute(
            _insert(session)(ScoringSettings)
            .values(workspace_id=workspace_id, event_cursor=0, fit_full_pending=True, engagement_full_pending=True)
            .on_conflict_do_nothing(index_elements=["workspace_id"])
        )
        row = session.get(ScoringSettings, workspace_id)
        assert row is not None
    return row


def engagement_config(session: Session, workspace_id: int) -> EngagementConfig:
    """The workspace's engagement rules (the defaults until it sets its own)."""
    row = session.get(ScoringSettings, workspace_id)
    return parse_engagement(row.engagement if row is not None and row.engagement is not None else DEFAULT_ENGAGEMENT)


def set_engagement_config(
    session: Session, workspace_id: int, raw: object, *, actor: str = "system"
) -> EngagementConfig:
    """Replace the engagement rules (validated; unknown stages refused); scores are recomputed on the next run.
    The audit log records who did it, with the rules before (null: the defaults) and after."""
    try:
        config = parse_engagement(raw)
    except ScoringError as exc:
        raise DomainError(exc.path or "engagement", exc.reason, code="invalid_scoring_rules") from None
    known = {s.key for s in contacts_service.stage_specs(session, workspace_id)}
    for i, t in enumerate(config.stage_thresholds):
        for j, stage in enumerate(t.from_stages):
            if stage not in known:
                raise DomainError(f"stage_thresholds[{i}].from_stages[{j}]", f"unknown lifecycle stage {stage!r}")
        if t.to_stage not in known:
            raise DomainError(f"stage_thresholds[{i}].to_stage", f"unknown lifecycle stage {t.to_stage!r}")
    row = _settings(session, workspace_id)
    before = row.engagement
    row.engagement = engagement_to_json(config)
    row.engagement_full_pending = True
    _audit(session, workspace_id, actor, "scoring_rules.updated", "scoring_rules", None, before, row.engagement)
    row.updated_at = utcnow()
    session.flush()
    return config


# --- facts -----------------------------------------------------------------------------------------------------------


def latest_rates(session: Session, workspace_id: int) -> dict[tuple[str, str], Decimal]:
    """The workspace's latest exchange rate of each (base, quote) pair."""
    latest: dict[tuple[str, str], Decimal] = {}
    for rate in analytics_service.list_rates(session, workspace_id):  # by pair, then date: the latest wins
        latest[(rate.base, rate.quote)] = Decimal(rate.rate)
    return latest


def _converter(session: Session, workspace_id: int, latest: dict[tuple[str, str], Decimal] | None = None) -> Convert:
    """Money conversion with the workspace's latest exchange rate of each pair (either direction)."""
    if latest is None:
        latest = latest_rates(session, workspace_id)

    def convert(amount: int, src: str, dst: str) -> int | None:
        if (src, dst) in latest:
            return int((Decimal(amount) * latest[(src, dst)]).to_integral_value())
        if (dst, src) in latest and latest[(dst, src)] != 0:
            return int((Decimal(amount) / latest[(dst, src)]).to_integral_value())
        return None

    return convert


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _budget(icps: list[tuple[int, IcpDefinition]]) -> list[str]:
    return sorted({icp.budget.property for _, icp in icps if icp.budget is not None})


def _budget_of(props: dict[str, Any], company_props: dict[str, Any], names: list[str]) -> tuple[int | None, str | None]:
    for name in names:
        for source in (props, company_props):
            amount = _int(source.get(name))
            if amount is not None:
                return amount, _str(source.get(f"{name}_currency"))
    return None, None


def _company_fields(row: Any) -> dict[str, Any]:
    return {
        "industry": row.industry,
        "employees": row.employees,
        "revenue_minor": row.annual_revenue_minor,
        "revenue_currency": row.revenue_currency,
    }


def contact_facts(
    session: Session, workspace_id: int, contact_ids: Sequence[int], budget_properties: list[str] | None = None
) -> dict[int, FitFacts]:
    """What fit scoring reads about these contacts of the workspace: their fields, tags and their company's."""
    names = budget_properties or ["budget_minor"]
    out: dict[int, FitFacts] = {}
    for chunk in _chunks(sorted(set(contact_ids))):
        rows = session.execute(
            select(
                Contact.id,
                Contact.country,
                Contact.job_title,
                Contact.properties,
                Company.industry,
                Company.employees,
                Company.annual_revenue_minor,
                Company.revenue_currency,
                Company.country.label("company_country"),
                Company.properties.label("company_properties"),
            )
            .outerjoin(Company, (Company.id == Contact.company_id) & (Company.workspace_id == workspace_id))
            .where(Contact.workspace_id == workspace_id, Contact.id.in_(chunk))
        ).all()
        tags: dict[int, set[str]] = defaultdict(set)
        for cid, tag in session.execute(
            select(ContactTag.contact_id, ContactTag.tag).where(
                ContactTag.workspace_id == workspace_id, ContactTag.contact_id.in_(chunk)
            )
        ):
            tags[cid].add(tag)
        for r in rows:
            budget, currency = _budget_of(r.properties or {}, r.company_properties or {}, names)
            out[r.id] = FitFacts(
                **_company_fields(r),
                country=r.country or r.company_country,
                job_title=r.job_title,
                tags=frozenset(tags[r.id]),
                budget_minor=budget,
                budget_currency=currency,
            )
    return out


def company_facts(
    session: Session, workspace_id: int, company_ids: Sequence[int], budget_properties: list[str] | None = None
) -> dict[int, FitFacts]:
    """What fit scoring reads about these companies of the workspace (no job title or tags: those are a contact's)."""
    names = budget_properties or ["budget_minor"]
    out: dict[int, FitFacts] = {}
    for chunk in _chunks(sorted(set(company_ids))):
        for r in session.execute(
            select(
                Company.id,
                Company.industry,
                Company.employees,
                Company.annual_revenue_minor,
                Company.revenue_currency,
                Company.country,
                Company.properties,
            ).where(Company.workspace_id == workspace_id, Company.id.in_(chunk))
        ):
            budget, currency = _budget_of({}, r.properties or {}, names)
            out[r.id] = FitFacts(**_company_fields(r), country=r.country, budget_minor=budget, budget_currency=currency)
    return out


# --- writing scores --------------------------------------------------------------------------------------------------


@dataclass
class ScoreWrite:
    """What a recomputation did: contacts scored, and those whose score or grade changed."""

    scored: int = 0
    changed: list[int] = field(default_factory=list)
    # CPU seconds the worker processes of a parallel rescoring spent on this kind (their share of each range)
    worker_cpu_s: float = 0.0


SCORES = table_of(ContactScore)


def _existing(session: Session, workspace_id: int, kind: str, ids: Sequence[int]) -> dict[int, Any]:
    """Stored score rows (Core rows, never stale ORM objects: scores are written with Core upserts)."""
    return {
        r.contact_id: r
        for r in session.execute(
            select(SCORES).where(
                SCORES.c.workspace_id == workspace_id, SCORES.c.kind == kind, SCORES.c.contact_id.in_(list(ids))
            )
        )
    }


_SCORE_COLUMNS = (
    "workspace_id",
    "contact_id",
    "kind",
    "score",
    "grade",
    "icp_id",
    "explanation",
    "explanation_id",
    "state",
    "decay_key",
    "half_life_seconds",
    "as_of",
    "computed_at",
)
_HISTORY_COLUMNS = ("workspace_id", "contact_id", "kind", "score", "previous", "grade", "at", "reason")
_JSON_COLUMNS = frozenset({"explanation", "state"})
_TIME_COLUMNS = frozenset({"as_of", "computed_at", "at"})


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, default=str)


def _driver_rows(session: Session, columns: Sequence[str], rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows as the driver takes them (JSON as text, SQLite times as naive UTC text as SQLAlchemy stores them):
    SQLAlchemy's per-row type processing costs more than the statement on the bulk paths."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    out = []
    for r in rows:
        values = []
        for c in columns:
            v = r.get(c)
            if c in _JSON_COLUMNS:
                v = _dumps(v)
            elif c in _TIME_COLUMNS and v is not None:
                if v.tzinfo is None:
                    raise ValueError("naive datetime given where a timezone-aware one is required")
                if sqlite:
                    v = v.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
            values.append(v)
        out.append(tuple(values))
    return out


_PG_TYPES = {
    "workspace_id": "bigint",
    "contact_id": "bigint",
    "icp_id": "bigint",
    "explanation_id": "bigint",
    "score": "float8",
    "previous": "float8",
    "decay_key": "float8",
    "half_life_seconds": "float8",
    "as_of": "timestamptz",
    "computed_at": "timestamptz",
    "at": "timestamptz",
}


def _bulk(session: Session, table: str, columns: Sequence[str], rows: list[dict[str, Any]], tail: str = "") -> None:
    """INSERT many rows: ``executemany`` on SQLite; on PostgreSQL one statement per 5,000 rows over ``unnest`` of
    typed arrays (psycopg's executemany sends a statement per row, and a long VALUES list costs its parser more)."""
    session.flush()
    conn = session.connection()
    cols = ", ".join(columns)
    if session.get_bind().dialect.name == "sqlite":
        sql = f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' for _ in columns)}){tail}"
        for i in range(0, len(rows), 2000):
            conn.exec_driver_sql(sql, _driver_rows(session, columns, rows[i : i + 2000]))
        return
    arrays = ", ".join(f"%s::{_PG_TYPES.get(c, 'text')}[]" for c in columns)
    picks = ", ".join(f"{c}::jsonb" if c in _JSON_COLUMNS else c for c in columns)
    sql = f"INSERT INTO {table} ({cols}) SELECT {picks} FROM unnest({arrays}) AS u({cols}){tail}"
    driver: Any = conn.connection.driver_connection
    with driver.cursor(binary=True) as cur:  # binary arrays: dumped in C, not parsed as text
        for i in range(0, len(rows), 5000):
            values = _driver_rows(session, columns, rows[i : i + 5000])
            cur.execute(sql, tuple(list(col) for col in zip(*values, strict=True)))


def _upsert(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert or replace score rows (unique per workspace, contact and kind)."""
    if rows:
        keep = ("workspace_id", "contact_id", "kind")
        sets = ", ".join(f"{c} = excluded.{c}" for c in _SCORE_COLUMNS if c not in keep)
        _bulk(
            session,
            "contact_scores",
            _SCORE_COLUMNS,
            rows,
            f" ON CONFLICT (workspace_id, contact_id, kind) DO UPDATE SET {sets}",
        )


def _history(session: Session, workspace_id: int, entries: list[dict[str, Any]]) -> None:
    if entries:
        _bulk(session, "score_changes", _HISTORY_COLUMNS, [{"workspace_id": workspace_id, **e} for e in entries])


EXPLANATIONS = table_of(ScoreExplanation)


def explanation_digest(text: str) -> str:
    """The key a fit explanation is stored under: BLAKE2b-128 hex of its JSON text."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def explanation_ids(session: Session, workspace_id: int, texts: Iterable[str], *, add: bool = True) -> dict[str, int]:
    """The ``score_explanations`` id of each JSON text (stored once per workspace; missing ones are added, or with
    ``add=False`` left out of the answer: only read)."""
    by_digest = {explanation_digest(t): t for t in set(texts)}
    out: dict[str, int] = {}
    if not by_digest:
        return out

    def found(digests: Sequence[str]) -> None:
        for i in range(0, len(digests), CHUNK):
            chunk = digests[i : i + CHUNK]
            for digest, eid in session.execute(
                select(EXPLANATIONS.c.digest, EXPLANATIONS.c.id).where(
                    EXPLANATIONS.c.workspace_id == workspace_id, EXPLANATIONS.c.digest.in_(chunk)
                )
            ):
                out[by_digest[digest]] = int(eid)

    session.flush()
    found(list(by_digest))
    missing = sorted(d for d, t in by_digest.items() if t not in out)
    if missing and add:
        # a concurrent writer of the same text wins harmlessly (same digest, same text); inserting in digest order
        # makes concurrent writers (parallel rescoring ranges) wait for each other instead of deadlocking
        session.execute(
            _insert(session)(EXPLANATIONS).on_conflict_do_nothing(index_elements=["workspace_id", "digest"]),
            [{"workspace_id": workspace_id, "digest": d, "explanation": orjson.loads(by_digest[d])} for d in missing],
        )
        found(missing)
    return out


def fit_explanation(session: Session, row: Any) -> list[Any]:
    """A stored fit row's explanation (shared by id, or inline on rows written before explanations were shared)."""
    if row.explanation_id is None:
        return list(row.explanation or [])
    value = session.scalar(select(EXPLANATIONS.c.explanation).where(EXPLANATIONS.c.id == row.explanation_id))
    return list(value or [])


def _segments(session: Session, workspace_id: int, ids: list[int], kind: str, now: datetime) -> None:
    if ids:
        segments_service.update_for_contacts(session, workspace_id, ids, {f"score:{kind}"}, now, reason=f"score:{kind}")


def recompute_fit(
    session: Session, workspace_id: int, contact_ids: Iterable[int], now: datetime | None = None
) -> ScoreWrite:
    """Score these contacts against the workspace's active ICPs (the best one counts) and store what changed.

    Without an active ICP their fit scores are removed. Segments reading fit scores follow.
    """
    now = now or utcnow()
    ids = sorted(set(contact_ids))
    icps = active_icps(session, workspace_id)
    result = ScoreWrite()
    if not icps:
        gone: list[int] = []
        for chunk in _chunks(ids):
            gone.extend(
                session.scalars(
                    delete(ContactScore)
                    .where(
                        ContactScore.workspace_id == workspace_id,
                        ContactScore.kind == "fit",
                        ContactScore.contact_id.in_(chunk),
                    )
                    .returning(ContactScore.contact_id)
                )
            )
        session.flush()
        result.changed = sorted(gone)
        _segments(session, workspace_id, result.changed, "fit", now)
        return result
    convert = _converter(session, workspace_id)
    budgets = _budget(icps)
    for chunk in _chunks(ids):
        facts = contact_facts(session, workspace_id, chunk, budgets)
        old = _existing(session, workspace_id, "fit", chunk)
        rows: list[dict[str, Any]] = []
        history: list[dict[str, Any]] = []
        scored = []
        for cid, f in facts.items():
            best = best_fit(icps, f, convert)
            assert best is not None
            scored.append((cid, *best, orjson.dumps(fit_explanation_json(best[1])).decode()))
        ids_of = explanation_ids(session, workspace_id, (text for *_, text in scored))
        for cid, icp_id, r, text in scored:
            eid = ids_of[text]
            prev = old.get(cid)
            result.scored += 1
            if (
                prev is not None
                and prev.score == r.score
                and prev.grade == r.grade
                and prev.icp_id == icp_id
                and prev.explanation_id == eid
            ):
                continue
            rows.append(_row(workspace_id, cid, "fit", r.score, r.grade, icp_id, [], now, explanation_id=eid))
            if prev is None or prev.score != r.score or prev.grade != r.grade:
                result.changed.append(cid)
                history.append(
                    {
                        "contact_id": cid,
                        "kind": "fit",
                        "score": r.score,
                        "previous": None if prev is None else prev.score,
                        "grade": r.grade,
                        "at": now,
                        "reason": "profile or ICP changed",
                    }
                )
        _upsert(session, rows)
        _history(session, workspace_id, history)
    session.flush()
    config = engagement_config(session, workspace_id)
    if any(t.min_fit_grade is not None for t in config.stage_thresholds):  # a better fit can complete an MQL rule
        _stage_thresholds(session, workspace_id, result.changed, config, now)
    _segments(session, workspace_id, result.changed, "fit", now)
    return result


def fit_explanation_json(result: Any) -> list[dict[str, Any]]:
    """A fit result's explanation lines as stored."""
    return [
        {
            "criterion": c.criterion,
            "matched": c.matched,
            "points": c.points,
            "max_points": c.max_points,
            "detail": c.detail,
        }
        for c in result.explanation
    ]


def _row(
    workspace_id: int,
    contact_id: int,
    kind: str,
    score: float,
    grade: str | None,
    icp_id: int | None,
    explanation: list[Any],
    now: datetime,
    *,
    state: dict[str, Any] | None = None,
    key: float | None = None,
    half_life_seconds: float | None = None,
    as_of: datetime | None = None,
    explanation_id: int | None = None,
) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "contact_id": contact_id,
        "kind": kind,
        "score": score,
        "grade": grade,
        "icp_id": icp_id,
        "explanation": explanation,
        "explanation_id": explanation_id,
        "state": state or {},
        "decay_key": key,
        "half_life_seconds": half_life_seconds,
        "as_of": as_of or now,
        "computed_at": now,
    }


def recompute_company_fit(
    session: Session, workspace_id: int, company_ids: Iterable[int], now: datetime | None = None
) -> ScoreWrite:
    """Score these companies against the active ICPs (company criteria only match; the rest is explained)."""
    now = now or utcnow()
    ids = sorted(set(company_ids))
    icps = active_icps(session, workspace_id)
    result = ScoreWrite()
    table = table_of(CompanyScore)
    if not icps:
        for chunk in _chunks(ids):
            session.execute(delete(table).where(table.c.workspace_id == workspace_id, table.c.company_id.in_(chunk)))
        return result
    convert = _converter(session, workspace_id)
    budgets = _budget(icps)
    for chunk in _chunks(ids):
        old = {
            r.company_id: (r.score, r.grade)
            for r in session.execute(
                select(table.c.company_id, table.c.score, table.c.grade).where(
                    table.c.workspace_id == workspace_id, table.c.kind == "fit", table.c.company_id.in_(chunk)
                )
            )
        }
        rows = []
        for company_id, f in company_facts(session, workspace_id, chunk, budgets).items():
            best = best_fit(icps, f, convert)
            assert best is not None
            icp_id, r = best
            result.scored += 1
            if old.get(company_id) != (r.score, r.grade):
                result.changed.append(company_id)
            rows.append(
                {
                    "workspace_id": workspace_id,
                    "company_id": company_id,
                    "kind": "fit",
                    "score": r.score,
                    "grade": r.grade,
                    "icp_id": icp_id,
                    "explanation": fit_explanation_json(r),
                    "computed_at": now,
                }
            )
        if rows:
            ins = _insert(session)(table)
            cols = ("score", "grade", "icp_id", "explanation", "computed_at")
            session.execute(
                ins.on_conflict_do_update(
                    index_elements=["workspace_id", "company_id", "kind"], set_={c: ins.excluded[c] for c in cols}
                ),
                rows,
            )
    session.flush()
    return result


# --- engagement ------------------------------------------------------------------------------------------------------


def _event_filter(config: EngagementConfig) -> Any:
    names = sorted({r.event for r in config.rules if r.event is not None})
    kinds = sorted({r.kind for r in config.rules if r.event is None and r.kind is not None})
    parts = []
    if names:
        parts.append(Event.name.in_(names))
    if kinds:
        parts.append(Event.kind.in_(kinds))
    return or_(*parts) if parts else None


def _contributions(items: Iterable[Any]) -> list[dict[str, Any]]:
    return [
        {"rule": c.rule, "events": c.events, "points": c.points, "points_now": round(c.points_now, 4)} for c in items
    ]


def _engagement_row(
    workspace_id: int,
    contact_id: int,
    score: float,
    as_of: datetime,
    explanation: list[Any],
    state: dict[str, Any],
    config: EngagementConfig,
    now: datetime,
) -> dict[str, Any]:
    hl = config.half_life.total_seconds()
    return _row(
        workspace_id,
        contact_id,
        "engagement",
        score,
        None,
        None,
        explanation,
        now,
        state=state,
        key=decay_key(score, as_of, hl),
        half_life_seconds=hl,
        as_of=as_of,
    )


def engagement_kept(
    stored_half_life: float | None,
    half_life: float,
    stored_explanation: Any,
    stored_state: Any,
    contributions: Sequence[tuple[Any, Any, Any, Any]],
    state: dict[str, Any],
) -> bool:
    """Whether a stored engagement row already says what a recomputation found: the same half-life (seconds), the
    same rules with the same events and points (in the same order) and the same cap state. Its score,
    ``points_now`` and ``as_of`` may be of an earlier moment: decay alone changes neither the events nor the points,
    and the stored row brought forward (``decayed``; filters by ``decay_key``, which decay leaves as it is) gives the
    recomputed score, so a rescoring keeps such a row instead of rewriting it (the caller checks the score)."""
    if stored_half_life != half_life or (stored_state or {}) != state:
        return False
    stored = stored_explanation or []
    if len(stored) != len(contributions):
        return False
    for e, c in zip(stored, contributions, strict=True):
        if e.get("rule") != c[0] or e.get("events") != c[1] or e.get("points") != c[2]:
            return False
    return True


def _now_value(row: Any, now: datetime) -> float:
    if row is None:
        return 0.0
    if row.half_life_seconds is None:
        return float(row.score)
    return decayed(row.score, row.as_of, now, timedelta(seconds=row.half_life_seconds))


def recompute_engagement(
    session: Session, workspace_id: int, contact_ids: Iterable[int], now: datetime | None = None
) -> ScoreWrite:
    """Recompute these contacts' engagement from their events within the horizon (10 half-lives) and store it.

    Idempotent: the same events give the same score whenever it runs. Stage thresholds and segments follow.
    """
    now = now or utcnow()
    config = engagement_config(session, workspace_id)
    flt = _event_filter(config)
    start = horizon_start(now, config)
    result = ScoreWrite()
    for chunk in _chunks(sorted(set(contact_ids))):
        events: dict[int, list[ScoredEvent]] = defaultdict(list)
        if flt is not None:
            for r in session.execute(
                select(Event.id, Event.contact_id, Event.name, Event.kind, Event.properties, Event.occurred_at).where(
                    Event.workspace_id == workspace_id,
                    Event.contact_id.in_(chunk),
                    Event.occurred_at >= start,
                    Event.occurred_at <= now + FUTURE_SKEW,
                    flt,
                )
            ):
                at = min(r.occurred_at, now)
                events[r.contact_id].append(ScoredEvent(r.name, r.kind, at, r.properties or {}, r.id))
        known = set(
            session.scalars(select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.id.in_(chunk)))
        )
        old = _existing(session, workspace_id, "engagement", chunk)
        rows, history = [], []
        for cid in sorted(known):
            res = engagement(events.get(cid, []), config, now)
            prev = old.get(cid)
            if prev is None and res.score == 0 and not res.contributions:
                continue
            result.scored += 1
            before = _now_value(prev, now)
            unchanged = abs(res.score - before) <= 1e-9 * max(1.0, abs(before))
            if (
                unchanged
                and prev is not None
                and engagement_kept(
                    prev.half_life_seconds,
                    config.half_life.total_seconds(),
                    prev.explanation,
                    prev.state,
                    [(c.rule, c.events, c.points, c.points_now) for c in res.contributions],
                    res.state,
                )
            ):
                continue  # the stored row, decayed to now, is this recomputation: kept as it is
            rows.append(
                _engagement_row(
                    workspace_id, cid, res.score, now, _contributions(res.contributions), res.state, config, now
                )
            )
            if not unchanged:
                result.changed.append(cid)
            if prev is None or abs(res.score - before) >= ENGAGEMENT_HISTORY_STEP:
                history.append(
                    {
                        "contact_id": cid,
                        "kind": "engagement",
                        "score": round(res.score, 4),
                        "previous": None if prev is None else round(before, 4),
                        "grade": None,
                        "at": now,
                        "reason": "recomputed from events",
                    }
                )
        _upsert(session, rows)
        _history(session, workspace_id, history)
    session.flush()
    _stage_thresholds(session, workspace_id, result.changed, config, now)
    _segments(session, workspace_id, result.changed, "engagement", now)
    return result


def apply_engagement(
    session: Session,
    workspace_id: int,
    contact_id: int,
    event_name: str,
    at: datetime,
    *,
    kind: str = "track",
    properties: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> float:
    """Add one event's points to the contact's stored engagement (decayed forward, caps kept); the score at ``now``.

    The live path for an event that was just stored in the events table (after a half-life change the row is rebuilt
    from the stored events, this one included); the scoring run recomputes from events and agrees with it.
    """
    now = now or utcnow()
    contacts_service.get_contact(session, workspace_id, contact_id)
    config = engagement_config(session, workspace_id)
    hl = config.half_life
    prev = _existing(session, workspace_id, "engagement", [contact_id]).get(contact_id)
    if prev is not None and prev.half_life_seconds != hl.total_seconds():
        # the half-life changed since this row was written: rebuild it from the stored events, this one included
        recompute_engagement(session, workspace_id, [contact_id], now)
        return _now_value(_existing(session, workspace_id, "engagement", [contact_id]).get(contact_id), now)
    before = _now_value(prev, now)
    old_as_of = prev.as_of if prev is not None else None
    score, as_of, state, applied = apply_event(
        prev.score if prev is not None else 0.0,
        old_as_of,
        dict(prev.state or {}) if prev is not None else {},
        ScoredEvent(event_name, kind, at, properties or {}),
        config,
    )
    if not applied or as_of is None:
        return before
    # contributions are kept as of the row's time: bring the old ones forward, add the new points
    rules: dict[str, dict[str, Any]] = {}
    for e in prev.explanation or [] if prev is not None else []:
        if isinstance(e, dict) and "rule" in e:
            moved = decayed(float(e.get("points_now", 0.0)), old_as_of, as_of, hl) if old_as_of else 0.0
            rules[str(e["rule"])] = {**e, "points_now": moved}
    for rule, points in applied:
        entry = rules.setdefault(rule, {"rule": rule, "events": 0, "points": 0.0, "points_now": 0.0})
        entry["events"] += 1
        entry["points"] += points
        entry["points_now"] += points * decay_factor(as_of - at, hl) if at < as_of else points
    explanation = sorted(rules.values(), key=lambda e: (-abs(float(e["points_now"])), str(e["rule"])))
    for e in explanation:
        e["points_now"] = round(float(e["points_now"]), 4)
    _upsert(session, [_engagement_row(workspace_id, contact_id, score, as_of, explanation, state, config, now)])
    after = decayed(score, as_of, now, hl)
    _history(
        session,
        workspace_id,
        [
            {
                "contact_id": contact_id,
                "kind": "engagement",
                "score": round(after, 4),
                "previous": round(before, 4),
                "grade": None,
                "at": now,
                "reason": f"{event_name}: " + ", ".join(f"{r} {p:+g}" for r, p in applied),
            }
        ],
    )
    session.flush()
    _stage_thresholds(session, workspace_id, [contact_id], config, now)
    _segments(session, workspace_id, [contact_id], "engagement", now)
    return after


def _stage_thresholds(
    session: Session, workspace_id: int, contact_ids: list[int], config: EngagementConfig, now: datetime
) -> None:
    """Move contacts whose engagement reached a threshold, recording the score in the reason."""
    if not config.stage_thresholds or not contact_ids:
        return
    moved: list[int] = []
    stages = contacts_service.stage_specs(session, workspace_id)
    from_stages = sorted({s for t in config.stage_thresholds for s in t.from_stages})
    for chunk in _chunks(sorted(set(contact_ids))):
        # only contacts in a stage some threshold moves from are looked at, and only those that move are loaded
        staged = dict(
            session.execute(
                select(Contact.id, Contact.lifecycle_stage).where(
                    Contact.workspace_id == workspace_id,
                    Contact.id.in_(chunk),
                    Contact.lifecycle_stage.in_(from_stages),
                )
            ).all()
        )
        if not staged:
            continue
        scores = _existing(session, workspace_id, "engagement", list(staged))
        grades = {cid: r.grade for cid, r in _existing(session, workspace_id, "fit", list(scores)).items()}
        moves: dict[int, tuple[Any, float, str | None]] = {}
        for cid, row in scores.items():
            value = _now_value(row, now)
            grade = grades.get(cid)
            for t in config.stage_thresholds:
                if staged[cid] in t.from_stages and t.holds(value, grade):
                    moves[cid] = (t, value, grade)
                    break
        if not moves:
            continue
        for contact in session.scalars(
            select(Contact).where(Contact.workspace_id == workspace_id, Contact.id.in_(list(moves)))
        ):
            t, value, grade = moves[contact.id]
            fit_note = f" with fit grade {grade}" if t.min_fit_grade is not None else ""
            change = contacts_service.change_stage(
                session,
                contact,
                t.to_stage,
                reason=f"engagement score {value:.1f} reached {t.min_score:g}{fit_note}",
                source="score",
                at=now,
                stages=stages,
            )
            if change is not None:
                moved.append(contact.id)
    if moved:
        session.flush()
        segments_service.update_for_contacts(
            session, workspace_id, moved, {"contact", "stages"}, now, reason="score:stage"
        )


# --- reading ---------------------------------------------------------------------------------------------------------


def _priority(fit_grade: str | None, engagement_now: float) -> str | None:
    if fit_grade is None:
        return None
    good = fit_grade in ("A", "B")
    engaged = engagement_now >= ENGAGEMENT_BANDS[1][1]
    if good and engaged:
        return "sales_now"
    if good:
        return "nurture"
    if engaged:
        return "check_fit"
    return "low"


def explain(session: Session, workspace_id: int, contact_id: int, now: datetime | None = None) -> dict[str, Any]:
    """The contact's scores now, each with its explanation, and the fit × engagement priority."""
    now = now or utcnow()
    contacts_service.get_contact(session, workspace_id, contact_id)
    rows = session.execute(
        select(SCORES).where(SCORES.c.workspace_id == workspace_id, SCORES.c.contact_id == contact_id)
    ).all()
    names = dict(
        session.execute(
            select(IdealCustomerProfile.id, IdealCustomerProfile.name).where(
                IdealCustomerProfile.workspace_id == workspace_id
            )
        ).all()
    )
    scores: dict[str, Any] = {}
    for r in rows:
        value = _now_value(r, now)
        item: dict[str, Any] = {
            "kind": r.kind,
            "score": round(value, 4),
            "grade": r.grade,
            "stored_score": r.score,
            "as_of": r.as_of,
            "computed_at": r.computed_at,
            "icp_id": r.icp_id,
            "icp_name": names.get(r.icp_id) if r.icp_id is not None else None,
            "half_life_days": None if r.half_life_seconds is None else r.half_life_seconds / 86_400,
        }
        if r.kind == "fit":
            item["criteria"] = fit_explanation(session, r)
        elif r.kind == "engagement":
            hl = timedelta(seconds=r.half_life_seconds or 1.0)
            factor = decay_factor(now - r.as_of, hl) if now > r.as_of else 1.0
            item["contributions"] = [
                {**c, "points_now": round(float(c.get("points_now", 0.0)) * factor, 4)} for c in (r.explanation or [])
            ]
        else:
            item["reasons"] = list(r.explanation or [])
        scores[r.kind] = item
    fit_grade = scores["fit"]["grade"] if "fit" in scores else None
    engaged = scores["engagement"]["score"] if "engagement" in scores else 0.0
    return {"contact_id": contact_id, "scores": scores, "priority": _priority(fit_grade, engaged)}


def score_history(
    session: Session, workspace_id: int, contact_id: int, kind: str | None = None, limit: int = 100
) -> list[ScoreChange]:
    """The contact's score changes, newest first."""
    contacts_service.get_contact(session, workspace_id, contact_id)
    stmt = select(ScoreChange).where(ScoreChange.workspace_id == workspace_id, ScoreChange.contact_id == contact_id)
    if kind is not None:
        stmt = stmt.where(ScoreChange.kind == kind)
    return list(session.scalars(stmt.order_by(ScoreChange.at.desc(), ScoreChange.id.desc()).limit(limit)))


def company_score(session: Session, workspace_id: int, company_id: int) -> CompanyScore | None:
    """The company's fit score, if it has one."""
    return session.scalar(
        select(CompanyScore).where(
            CompanyScore.workspace_id == workspace_id, CompanyScore.company_id == company_id, CompanyScore.kind == "fit"
        )
    )


def priority_matrix(session: Session, workspace_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Contacts counted by fit grade × engagement band now (the same filters segments use)."""
    now = now or utcnow()
    bands: list[tuple[str, dict[str, Any]]] = [
        ("high", {"type": "score", "kind": "engagement", "op": "gte", "value": 40}),
        ("medium", {"type": "score", "kind": "engagement", "op": "between", "value": [15, 40]}),
        ("low", {"type": "score", "kind": "engagement", "op": "between", "value": [0.000001, 15]}),
        ("none", {"type": "score", "kind": "engagement", "op": "lte", "value": 0}),
    ]
    # between is inclusive: take the upper neighbour out so that the bands do not overlap
    exclusive = {
        "medium": {"not": bands[0][1]},
        "low": {"not": {"type": "score", "kind": "engagement", "op": "gte", "value": 15}},
    }
    grades: list[tuple[str, dict[str, Any]]] = [
        *((g, {"type": "score", "kind": "fit", "op": "grade_in", "value": [g]}) for g in ("A", "B", "C", "D")),
        ("none", {"type": "score", "kind": "fit", "op": "is_not_set"}),
    ]
    rows: dict[str, dict[str, int]] = {}
    for grade, gf in grades:
        rows[grade] = {}
        for band, bf in bands:
            parts = [gf, bf, *([exclusive[band]] if band in exclusive else [])]
            node = parse_filter({"and": parts})
            rows[grade][band] = segments_service.count_matching(session, workspace_id, node, now)
    return {"engagement_bands": [b for b, _ in bands], "rows": rows}


# --- the scoring run -------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One workspace's scoring run."""

    fit: ScoreWrite
    companies: ScoreWrite
    engagement: ScoreWrite


def all_contact_ids(session: Session, workspace_id: int) -> list[int]:
    """Every contact id of the workspace, ascending."""
    return list(session.scalars(select(Contact.id).where(Contact.workspace_id == workspace_id).order_by(Contact.id)))


def _set_based() -> Any:
    from suppilo.scoring import bulk  # bulk builds on this module

    return bulk


def run_workspace(session: Session, workspace_id: int, now: datetime | None = None) -> RunResult:
    """Rescore what changed since the last run: fit for contacts/companies updated since then (all after an ICP
    change), engagement for contacts with new events (by id, plus a look-back by arrival time for events whose
    transaction committed late) or updated profiles (merges move events). Everything it does is idempotent.
    """
    now = now or utcnow()
    settings = _settings(session, workspace_id)
    if session.get_bind().dialect.name == "postgresql":
        session.refresh(settings, with_for_update=True)  # one run per workspace at a time
    since = settings.fit_cursor_at - LOOKBACK if settings.fit_cursor_at is not None else None
    updated: set[int] = set()
    changed_companies: list[int] = []
    if since is not None:
        updated.update(
            session.scalars(select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.updated_at >= since))
        )
        changed_companies = list(
            session.scalars(select(Company.id).where(Company.workspace_id == workspace_id, Company.updated_at >= since))
        )
        for chunk in _chunks(changed_companies):
            updated.update(
                session.scalars(
                    select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.company_id.in_(chunk))
                )
            )
    full_fit = settings.fit_full_pending or since is None
    if full_fit:
        changed_companies = list(
            session.scalars(select(Company.id).where(Company.workspace_id == workspace_id).order_by(Company.id))
        )
        fit = _set_based().bulk_fit(session, workspace_id, None, now)  # every contact: set-based
    else:
        fit = recompute_fit(session, workspace_id, sorted(updated), now)
    companies = recompute_company_fit(session, workspace_id, changed_companies, now)

    top = session.scalar(select(func.max(Event.id)).where(Event.workspace_id == workspace_id)) or 0
    if settings.engagement_full_pending:
        # every contact with events in the horizon or a stored engagement score (the others score nothing)
        eng = _set_based().bulk_engagement(session, workspace_id, None, now)
    else:
        late = (settings.events_scanned_at or now) - LOOKBACK
        touched = set(
            session.scalars(
                select(Event.contact_id)
                .where(
                    Event.workspace_id == workspace_id,
                    Event.contact_id.isnot(None),
                    # a primary-key range: the new ids, and recent ids below the cursor that arrived lately
                    Event.id > settings.event_cursor - LOOKBACK_IDS,
                    or_(Event.id > settings.event_cursor, Event.received_at >= late),
                )
                .distinct()
            )
        )
        touched.update(updated)
        eng = recompute_engagement(session, workspace_id, sorted(int(c) for c in touched if c is not None), now)

    settings.fit_cursor_at = now
    settings.events_scanned_at = now
    settings.event_cursor = max(int(top), settings.event_cursor)
    settings.fit_full_pending = False
    settings.engagement_full_pending = False
    settings.updated_at = now
    session.flush()
    return RunResult(fit, companies, eng)


def score_all_fit(session: Session, workspace_id: int, now: datetime | None = None) -> ScoreWrite:
    """Fit for every contact and company of the workspace now; the next scoring run continues from here."""
    now = now or utcnow()
    result: ScoreWrite = _set_based().bulk_fit(session, workspace_id, None, now)
    company_ids = list(session.scalars(select(Company.id).where(Company.workspace_id == workspace_id)))
    recompute_company_fit(session, workspace_id, company_ids, now)
    settings = _settings(session, workspace_id)
    settings.fit_cursor_at = now
    settings.fit_full_pending = False
    session.flush()
    return result


def recompute(
    session: Session,
    workspace_id: int,
    contact_ids: Sequence[int] | None,
    kinds: Sequence[str] = ("fit", "engagement"),
    now: datetime | None = None,
) -> dict[str, ScoreWrite]:
    """Rescore these contacts (None: all of the workspace) now; unknown ids are refused by path."""
    now = now or utcnow()
    if contact_ids is None:
        done: dict[str, ScoreWrite] = _set_based().rescore_all(session, workspace_id, kinds, now)
        return done
    else:
        ids = list(contact_ids)
        known: set[int] = set()
        for chunk in _chunks(sorted(set(ids))):
            known.update(
                session.scalars(select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.id.in_(chunk)))
            )
        for i, cid in enumerate(ids):
            if cid not in known:
                raise NotFound(f"contact_ids[{i}]", f"contact {cid} not found")
    out: dict[str, ScoreWrite] = {}
    if "fit" in kinds:
        out["fit"] = recompute_fit(session, workspace_id, ids, now)
    if "engagement" in kinds:
        out["engagement"] = recompute_engagement(session, workspace_id, ids, now)
    return out
