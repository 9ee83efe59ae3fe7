"""Loading what the in-memory filter evaluator reads, for a batch of contacts, in a few queries (on PostgreSQL in
one round trip)."""

from __future__ import annotations

from collections import defaultdict, namedtuple
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import BigInteger, BindParameter, ColumnElement, Dialect, Select, Text, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from suppilo.engine.filter_eval import (
    ConsentSnapshot,
    ContactSnapshot,
    EventSnapshot,
    OrderLineSnapshot,
    OrderSnapshot,
    ScoreSnapshot,
    StageChangeSnapshot,
)
from suppilo.engine.filters import COMPANY_FIELDS, CONTACT_FIELDS
from suppilo.segments.compiler import (
    companies,
    consent_records,
    contact_scores,
    contact_tags,
    contacts,
    events,
    order_lines,
    orders,
    stage_changes,
)

CHUNK = 500
PARTS = frozenset({"company", "tags", "scores", "consents", "stages", "orders", "events"})

# A read: a Core select with named parameters, or raw SQL with ``?`` placeholders and positional parameters.
Read = tuple[Select[Any] | str, Any]


def _ids(column: ColumnElement[Any], name: str, pg: bool) -> ColumnElement[bool]:
    """``column`` among the ids in parameter ``name``: an array parameter on PostgreSQL (one statement text for any
    number of ids, so the driver's prepared statement is reused), an expanding IN list elsewhere."""
    if pg:
        return column == any_(bindparam(name, type_=ARRAY(BigInteger if name == "ids" else Text)))
    return column.in_(bindparam(name, expanding=True))


@lru_cache(maxsize=2)
def _statements(pg: bool) -> dict[str, Select[Any]]:
    """The snapshot reads of a batch of contacts (parameters ``ws``, ``ids``, ``names``), built once per dialect:
    building a statement cost more than running it."""
    ws: BindParameter[int] = bindparam("ws")
    events_all = (
        select(events.c.contact_id, events.c.name, events.c.occurred_at, events.c.properties)
        .where(events.c.workspace_id == ws, _ids(events.c.contact_id, "ids", pg))
        .order_by(events.c.occurred_at, events.c.id)
    )
    return {
        "contacts": select(contacts.c.id, contacts.c.properties, *(contacts.c[f] for f in CONTACT_FIELDS)).where(
            contacts.c.workspace_id == ws, _ids(contacts.c.id, "ids", pg)
        ),
        "tags": select(contact_tags.c.contact_id, contact_tags.c.tag).where(
            contact_tags.c.workspace_id == ws, _ids(contact_tags.c.contact_id, "ids", pg)
        ),
        "scores": select(
            contact_scores.c.contact_id,
            contact_scores.c.kind,
            contact_scores.c.score,
            contact_scores.c.grade,
            contact_scores.c.decay_key,
            contact_scores.c.half_life_seconds,
        ).where(contact_scores.c.workspace_id == ws, _ids(contact_scores.c.contact_id, "ids", pg)),
        "consents": select(
            consent_records.c.contact_id,
            consent_records.c.topic,
            consent_records.c.action,
            consent_records.c.recorded_at,
            consent_records.c.id,
        ).where(consent_records.c.workspace_id == ws, _ids(consent_records.c.contact_id, "ids", pg)),
        "stages": select(
            stage_changes.c.contact_id, stage_changes.c.from_stage, stage_changes.c.to_stage, stage_changes.c.changed_at
        )
        .where(stage_changes.c.workspace_id == ws, _ids(stage_changes.c.contact_id, "ids", pg))
        .order_by(stage_changes.c.changed_at, stage_changes.c.id),
        "orders": select(
            orders.c.id,
            orders.c.contact_id,
            orders.c.placed_at,
            orders.c.currency,
            orders.c.total_minor,
            orders.c.status,
        )
        .where(orders.c.workspace_id == ws, _ids(orders.c.contact_id, "ids", pg))
        .order_by(orders.c.placed_at, orders.c.id),
        # the lines of those orders and the contacts' companies by subquery: no second round for their ids
        "order_lines": select(order_lines.c.order_id, order_lines.c.sku, order_lines.c.quantity)
        .where(
            order_lines.c.workspace_id == ws,
            order_lines.c.order_id.in_(
                select(orders.c.id).where(orders.c.workspace_id == ws, _ids(orders.c.contact_id, "ids", pg))
            ),
        )
        .order_by(order_lines.c.id),
        "company": select(companies.c.id, companies.c.properties, *(companies.c[f] for f in COMPANY_FIELDS)).where(
            companies.c.workspace_id == ws,
            companies.c.id.in_(
                select(contacts.c.company_id).where(contacts.c.workspace_id == ws, _ids(contacts.c.id, "ids", pg))
            ),
        ),
        "events": events_all,
        "events_named": events_all.where(_ids(events.c.name, "names", pg)),
    }


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


@dataclass(frozen=True)
class SnapshotPlan:
    """The reads that load snapshots of a batch of contacts; ``reads`` go to ``run_reads`` (with other reads if
    wanted) and ``build`` turns their results, in the same order, into the snapshots."""

    keys: tuple[str, ...]
    reads: tuple[Read, ...]

    def build(self, results: Sequence[Sequence[Any]]) -> dict[int, ContactSnapshot]:
        return _build(self.keys, results)


def snapshot_plan(
    dialect: str,
    workspace_id: int,
    contact_ids: Iterable[int],
    *,
    event_names: Collection[str] | None = None,
    parts: Collection[str] | None = None,
) -> SnapshotPlan:
    """The reads for ``load_snapshots`` (same arguments) without running them."""
    pg = dialect == "postgresql"
    stmts = _statements(pg)
    want = PARTS if parts is None else frozenset(parts)
    ids = sorted(set(contact_ids))
    keys: list[str] = []
    reads: list[Read] = []
    for chunk in [ids] if pg else _chunks(ids):  # PostgreSQL: one array parameter holds the whole batch
        params: dict[str, Any] = {"ws": workspace_id, "ids": list(chunk)}
        wanted = ["contacts", *(k for k in ("tags", "scores", "consents", "stages", "company") if k in want)]
        if "orders" in want:
            wanted += ["orders", "order_lines"]
        if "events" in want and (event_names is None or event_names):
            wanted.append("events" if event_names is None else "events_named")
        for key in wanted:
            keys.append(key)
            if key == "events_named":
                reads.append((stmts[key], {**params, "names": sorted(cast(Collection[str], event_names))}))
            else:
                reads.append((stmts[key], params))
    return SnapshotPlan(tuple(keys), tuple(reads))


def load_snapshots(
    session: Session,
    workspace_id: int,
    contact_ids: Iterable[int],
    *,
    event_names: Collection[str] | None = None,
    parts: Collection[str] | None = None,
) -> dict[int, ContactSnapshot]:
    """Snapshots of the workspace's contacts among ``contact_ids`` (ids of other workspaces are skipped).

    ``event_names`` limits the events loaded to those names (None: all events), e.g. to the ``events:<name>``
    dependencies of the filters about to be evaluated. ``parts`` limits what is loaded besides the contact's own
    row to some of ``PARTS`` (None: everything); what is left out is empty in the snapshots. On PostgreSQL all
    the reads go in one round trip (``run_reads``).
    """
    dialect = session.get_bind().dialect.name
    plan = snapshot_plan(dialect, workspace_id, contact_ids, event_names=event_names, parts=parts)
    return plan.build(run_reads(session, plan.reads))


class _Compiled:
    """A select compiled once for PostgreSQL, with its result columns' processors (UTC times and the like; chosen
    by the driver's column types, as SQLAlchemy does, on the first result)."""

    def __init__(self, stmt: Select[Any], dialect: Dialect) -> None:
        self.stmt = stmt
        self.dialect = dialect
        self.sql = str(stmt.compile(dialect=dialect))
        self.columns = list(stmt.selected_columns)
        self.row_type: Any = namedtuple("Row", [c.key for c in self.columns])  # type: ignore[misc]
        self.processors: dict[tuple[Any, ...], list[Any]] = {}

    def rows(self, description: Sequence[Any], values: Sequence[Sequence[Any]]) -> list[Any]:
        codes = tuple(d[1] for d in description)
        processors = self.processors.get(codes)
        if processors is None:
            processors = self.processors[codes] = [
                c.type.dialect_impl(self.dialect).result_processor(self.dialect, code)
                for c, code in zip(self.columns, codes, strict=True)
            ]
        if all(p is None for p in processors):
            return [self.row_type(*v) for v in values]
        return [self.row_type(*(x if p is None else p(x) for p, x in zip(processors, v, strict=True))) for v in values]


_COMPILED: dict[int, _Compiled] = {}


def _compiled(stmt: Select[Any], dialect: Dialect) -> _Compiled:
    c = _COMPILED.get(id(stmt))
    if c is None or c.stmt is not stmt:
        c = _COMPILED[id(stmt)] = _Compiled(stmt, dialect)
    return c


def run_reads(session: Session, reads: Sequence[Read]) -> list[list[Any]]:
    """The rows of each read, in order. PostgreSQL: all of them in one round trip (psycopg's pipeline mode; the
    server still runs them one after the other, each statement on its own snapshot); SQLite: one after the other.
    Core selects come back as rows with attribute access and their columns' result processing; raw SQL as tuples.
    """
    session.flush()
    conn = session.connection()
    dbapi = conn.connection
    if conn.dialect.name != "postgresql":
        out: list[list[Any]] = []
        for q, params in reads:
            if isinstance(q, str):
                cur = dbapi.cursor()
                cur.execute(q, params)
                out.append(list(cur.fetchall()))
            else:
                out.append(list(session.execute(q, params)))
        return out
    driver = cast(Any, dbapi.driver_connection)
    pending: list[tuple[Any, _Compiled | None]] = []
    with driver.pipeline():
        for q, params in reads:
            cur = driver.cursor()
            if isinstance(q, str):
                cur.execute(q.replace("?", "%s"), params)
                pending.append((cur, None))
            else:
                compiled = _compiled(q, conn.dialect)
                cur.execute(compiled.sql, params)
                pending.append((cur, compiled))
        out = []
        for cur, c in pending:
            values = cur.fetchall()  # (the first fetch sends the queued statements; the column types come after)
            out.append(list(values) if c is None else c.rows(cur.description, values))
        return out


def _build(keys: Sequence[str], results: Sequence[Sequence[Any]]) -> dict[int, ContactSnapshot]:
    rows: dict[int, Any] = {}
    tags: dict[int, set[str]] = defaultdict(set)
    changes: dict[int, list[StageChangeSnapshot]] = defaultdict(list)
    order_rows: list[Any] = []
    lines: dict[int, list[OrderLineSnapshot]] = defaultdict(list)
    event_rows: dict[int, list[EventSnapshot]] = defaultdict(list)
    scores: dict[int, dict[str, ScoreSnapshot]] = defaultdict(dict)
    consents: dict[int, list[ConsentSnapshot]] = defaultdict(list)
    company_rows: dict[int, Any] = {}
    for key, key_rows in zip(keys, results, strict=True):
        for r in key_rows:
            if key == "contacts":
                rows[r.id] = r
            elif key == "tags":
                tags[r.contact_id].add(r.tag)
            elif key == "scores":
                scores[r.contact_id][r.kind] = ScoreSnapshot(r.score, r.grade, r.decay_key, r.half_life_seconds)
            elif key == "consents":
                consents[r.contact_id].append(ConsentSnapshot(r.topic, r.action, r.recorded_at, r.id))
            elif key == "stages":
                changes[r.contact_id].append(StageChangeSnapshot(r.from_stage, r.to_stage, r.changed_at))
            elif key == "orders":
                order_rows.append(r)
            elif key == "order_lines":
                lines[r.order_id].append(OrderLineSnapshot(r.sku, r.quantity))
            elif key == "company":
                company_rows[r.id] = r
            else:
                event_rows[r.contact_id].append(EventSnapshot(r.name, r.occurred_at, r.properties or {}))
    contact_orders: dict[int, list[OrderSnapshot]] = defaultdict(list)
    for r in order_rows:
        contact_orders[r.contact_id].append(
            OrderSnapshot(r.placed_at, r.currency, r.total_minor, r.status, tuple(lines[r.id]))
        )

    result: dict[int, ContactSnapshot] = {}
    for cid, r in rows.items():
        company = company_rows.get(r.company_id) if r.company_id is not None else None
        result[cid] = ContactSnapshot(
            id=cid,
            fields={f: getattr(r, f) for f in CONTACT_FIELDS},
            properties=r.properties or {},
            company=None if company is None else {f: getattr(company, f) for f in COMPANY_FIELDS},
            company_properties={} if company is None else (company.properties or {}),
            tags=frozenset(tags[cid]),
            stage_changes=tuple(changes[cid]),
            orders=tuple(contact_orders[cid]),
            events=tuple(event_rows[cid]),
            scores=scores.get(cid, {}),
            consents=tuple(consents[cid]),
        )
    return result
