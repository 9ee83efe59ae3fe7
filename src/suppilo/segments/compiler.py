"""Compiling a filter (``suppilo.engine.filters``) into a SQLAlchemy boolean expression over ``contacts``.

The expression agrees with ``suppilo.engine.filter_eval.evaluate`` on SQLite and PostgreSQL (hypothesis tests
compare them). How it stays two-valued: ``not`` is pushed down to the leaves (De Morgan), every leaf guards its
NULLs (``x IS NOT NULL AND x = v``), and a negated set membership becomes ``NOT EXISTS``.

Conditions on other tables are set memberships. A plain one (a tag, an order, a product, a score row, a consent
statement, at least one event) is a correlated ``EXISTS (SELECT 1 FROM t WHERE t.workspace_id = :ws AND … AND
t.contact_id = contacts.id)``, negated as ``NOT EXISTS``: an index probe per contact the contact-column conditions
leave. An event count is a correlated ``(SELECT count(*) FROM events WHERE workspace_id = :ws AND contact_id =
contacts.id AND name = :name AND occurred_at >= :t) >= :n`` over the (workspace_id, contact_id, occurred_at) index
(never NULL, so it negates as it is); on 200k contacts it is a third of the time of grouping every matching event of
the workspace (docs/benchmarks.md). Other aggregates (order counts and totals, first/last order) stay ``IN (SELECT …
GROUP BY … HAVING …)``; one that 0 would satisfy (``at_most``, ``lt``) is compiled as NOT EXISTS of the contacts
whose aggregate fails it, so contacts without rows need no scan. Every subquery is scoped by ``workspace_id``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    String,
    and_,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import Text

from suppilo.commerce.models import Order, OrderLine
from suppilo.companies.models import Company
from suppilo.consent.models import ConsentRecord
from suppilo.contacts.models import Contact, ContactTag, StageChange
from suppilo.db.types import UTCDateTime
from suppilo.engine.filter_eval import CANCELLED
from suppilo.engine.filters import (
    CONSENT_OBJECTION,
    CONSENT_STATEMENTS,
    And,
    BoughtProductCondition,
    ConsentCondition,
    EventCondition,
    EventPropertyFilter,
    Filter,
    Not,
    Or,
    OrderCountCondition,
    OrderDateCondition,
    OrderTotalCondition,
    PropertyCondition,
    Range,
    ScoreCondition,
    SegmentCondition,
    StageCondition,
    StageHistoryCondition,
    TagCondition,
    ascii_lower,
    calendar_range,
    epoch_seconds,
    event_count_range,
    instant_range,
    number_matches,
    number_range,
    score_matches_zero,
    window_range,
)
from suppilo.events.models import Event
from suppilo.scoring.models import ContactScore

contacts = Contact.__table__
companies = Company.__table__
contact_tags = ContactTag.__table__
stage_changes = StageChange.__table__
orders = Order.__table__
order_lines = OrderLine.__table__
events = Event.__table__
contact_scores = ContactScore.__table__
consent_records = ConsentRecord.__table__

SegmentSelect = Callable[[int], Select[Any]]

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
# Negative operators are the negation of a positive one (that is what makes them true on unset values).
_POSITIVE_OF = {
    "neq": "eq",
    "not_in": "in",
    "not_contains": "contains",
    "contains_none": "contains_any",
    "is_not_set": "is_set",
}


class FilterCompileError(ValueError):
    """The filter needs something the caller did not provide (a segment membership lookup)."""


def _range_sql(x: ColumnElement[Any], r: Range[Any], type_: Any = None) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []

    def lit(v: Any) -> ColumnElement[Any]:
        return literal(v, type_) if type_ is not None else literal(v)

    if r.lo is not None:
        parts.append(x >= lit(r.lo) if r.lo_inclusive else x > lit(r.lo))
    if r.hi is not None:
        parts.append(x <= lit(r.hi) if r.hi_inclusive else x < lit(r.hi))
    return and_(*parts) if parts else true()


class _Compiler:
    def __init__(self, dialect: str, workspace_id: int, now: datetime, segment_select: SegmentSelect | None):
        if dialect not in ("sqlite", "postgresql"):
            raise FilterCompileError(f"unsupported database {dialect!r}")
        self.pg = dialect == "postgresql"
        self.ws = workspace_id
        self.now = now
        self.segment_select = segment_select

    # -- dialect helpers ------------------------------------------------------------------------------------------

    def lower(self, x: ColumnElement[Any]) -> ColumnElement[Any]:
        # SQLite's lower() folds ASCII only; translate() does exactly that on PostgreSQL whatever the locale.
        return func.translate(x, _UPPER, _LOWER) if self.pg else func.lower(x)

    def contains(self, x: ColumnElement[Any], needle: str) -> ColumnElement[bool]:
        fn = func.strpos if self.pg else func.instr
        return fn(x, literal(needle, String())) > 0

    def ends_with(self, x: ColumnElement[Any], suffix: str) -> ColumnElement[bool]:
        n = len(suffix)
        tail = func.right(x, n) if self.pg else func.substr(x, -n)
        return tail == literal(suffix, String())

    def jtype(self, col: ColumnElement[Any], path: Sequence[str]) -> ColumnElement[Any]:
        if self.pg:
            return func.jsonb_typeof(self.jget(col, path))
        return func.json_type(col, literal(self._sqlite_path(path), String()))

    def jget(self, col: ColumnElement[Any], path: Sequence[str]) -> ColumnElement[Any]:
        return col.op("#>", return_type=JSONB)(cast(literal(list(path), ARRAY(Text)), ARRAY(Text)))

    def jtext(self, col: ColumnElement[Any], path: Sequence[str]) -> ColumnElement[Any]:
        if self.pg:
            return col.op("#>>", return_type=String)(cast(literal(list(path), ARRAY(Text)), ARRAY(Text)))
        return func.json_extract(col, literal(self._sqlite_path(path), String()))

    @staticmethod
    def _sqlite_path(path: Sequence[str]) -> str:
        return "$" + "".join(f'."{p}"' for p in path)

    def jstr(self, col: ColumnElement[Any], path: Sequence[str]) -> ColumnElement[Any]:
        kind = "string" if self.pg else "text"
        return case((self.jtype(col, path) == kind, self.jtext(col, path)), else_=None)

    def jnum(self, col: ColumnElement[Any], path: Sequence[str]) -> ColumnElement[Any]:
        t = self.jtype(col, path)
        if self.pg:
            return case((t == "number", cast(self.jtext(col, path), Float)), else_=None)
        return case((t.in_(("integer", "real")), self.jtext(col, path)), else_=None)

    def jbool(self, col: ColumnElement[Any], path: Sequence[str]) -> ColumnElement[Any]:
        """'true' / 'false' / NULL."""
        t = self.jtype(col, path)
        if self.pg:
            return case((t == "boolean", self.jtext(col, path)), else_=None)
        return case((t == "true", literal("true")), (t == "false", literal("false")), else_=None)

    def jdate(self, col: ColumnElement[Any], path: Sequence[str]) -> ColumnElement[Any]:
        s = self.jtext(col, path)
        if self.pg:
            ok = and_(self.jtype(col, path) == "string", s.op("~")(literal("^[0-9]{4}-[0-9]{2}-[0-9]{2}")))
        else:
            ok = and_(
                self.jtype(col, path) == "text", s.op("GLOB")(literal("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"))
            )
        return case((ok, func.substr(s, 1, 10)), else_=None)

    def jarray_has_any(
        self, col: ColumnElement[Any], path: Sequence[str], values: Sequence[str]
    ) -> ColumnElement[bool]:
        """The JSON array at ``path`` has a string element equal (ASCII case-insensitively) to one of ``values``."""
        wanted = sorted({ascii_lower(v) for v in values})
        if self.pg:
            arr = case((self.jtype(col, path) == "array", self.jget(col, path)), else_=literal_column("'[]'::jsonb"))
            elems = func.jsonb_array_elements(arr).table_valued("value").alias("je")
            text = elems.c.value.op("#>>", return_type=String)(literal_column("'{}'::text[]"))
            return exists(
                select(literal(1))
                .select_from(elems)
                .where(func.jsonb_typeof(elems.c.value) == "string", self.lower(text).in_(wanted))
            )
        elems = (
            func.json_each(col, literal(self._sqlite_path(path), String())).table_valued("value", "type").alias("je")
        )
        return and_(
            self.jtype(col, path) == "array",
            exists(
                select(literal(1))
                .select_from(elems)
                .where(elems.c.type == "text", self.lower(elems.c.value).in_(wanted))
            ),
        )

    # -- membership -----------------------------------------------------------------------------------------------

    @staticmethod
    def member(col: ColumnElement[Any], sel: Select[Any], neg: bool) -> ColumnElement[bool]:
        """``col`` is among the ids ``sel`` selects, two-valued.

        A plain SELECT becomes a correlated ``[NOT] EXISTS (SELECT 1 … AND key = col)``, which both databases run
        as an index probe per candidate row (or a semi-/anti-join on PostgreSQL) after the cheaper contact
        columns have narrowed the rows; an aggregated one (GROUP BY … HAVING) stays ``col IN (sel)``, negated as
        ``NOT EXISTS`` over it.
        """
        if not sel._group_by_clauses and not sel._having_criteria and contacts not in sel.get_final_froms():
            key_col = sel.selected_columns[0]
            probe = exists(sel.with_only_columns(literal(1), maintain_column_froms=True).where(key_col == col))
            return not_(probe) if neg else and_(col.isnot(None), probe)
        if not neg:
            return and_(col.isnot(None), col.in_(sel))
        sub = sel.subquery()
        key = next(iter(sub.c))
        return not_(exists(select(literal(1)).select_from(sub).where(key == col)))

    def aggregate_member(
        self,
        base: Select[Any],
        key: ColumnElement[Any],
        agg: ColumnElement[Any],
        holds: Callable[[ColumnElement[Any]], ColumnElement[bool]],
        zero_ok: bool,
        neg: bool,
        *,
        exists_only: bool = False,
    ) -> ColumnElement[bool]:
        """Contacts whose aggregate over their rows ``holds``; contacts without rows have the aggregate 0."""
        if exists_only:
            return self.member(contacts.c.id, base, neg)
        if not zero_ok:
            return self.member(contacts.c.id, base.group_by(key).having(holds(agg)), neg)
        return self.member(contacts.c.id, base.group_by(key).having(not_(holds(agg))), not neg)

    # -- nodes ----------------------------------------------------------------------------------------------------

    def node(self, n: Filter, neg: bool) -> ColumnElement[bool]:
        if isinstance(n, And | Or):
            children = [self.node(c, neg) for c in (n.and_ if isinstance(n, And) else n.or_)]
            conjunction = isinstance(n, And) != neg
            if not children:
                return true() if conjunction else false()
            return and_(*children) if conjunction else or_(*children)
        if isinstance(n, Not):
            return self.node(n.not_, not neg)
        if isinstance(n, PropertyCondition):
            return self.property(n, neg)
        if isinstance(n, StageCondition):
            e = contacts.c.lifecycle_stage.in_(list(n.value))
            return not_(e) if neg != (n.op == "not_in") else e
        if isinstance(n, StageHistoryCondition):
            return self.stage_history(n, neg)
        if isinstance(n, TagCondition):
            return self.tags(n, neg)
        if isinstance(n, OrderCountCondition | OrderTotalCondition):
            return self.order_aggregate(n, neg)
        if isinstance(n, OrderDateCondition):
            return self.order_date(n, neg)
        if isinstance(n, BoughtProductCondition):
            sel = (
                self.orders_base(n.window)
                .join(order_lines, order_lines.c.order_id == orders.c.id)
                .where(order_lines.c.workspace_id == self.ws, order_lines.c.sku.in_(list(n.value)))
            )
            return self.member(contacts.c.id, sel, neg)
        if isinstance(n, EventCondition):
            return self.event(n, neg)
        if isinstance(n, SegmentCondition):
            if self.segment_select is None:
                raise FilterCompileError(f"the filter uses segment {n.value}: a membership lookup is required")
            return self.member(contacts.c.id, self.segment_select(n.value), neg != (n.op == "not_in_segment"))
        if isinstance(n, ScoreCondition):
            return self.score(n, neg)
        if isinstance(n, ConsentCondition):
            return self.consent(n, neg)
        raise TypeError(f"not a filter node: {n!r}")

    def property(self, n: PropertyCondition, neg: bool) -> ColumnElement[bool]:
        op = _POSITIVE_OF.get(n.op, n.op)
        flip = op != n.op
        table = contacts if n.type == "contact" else companies
        expr = self.value_test(table, n.field, n.field_type or "string", op, n.value)
        final_neg = neg != flip
        if n.type == "contact":
            return not_(expr) if final_neg else expr
        sel = select(companies.c.id).where(companies.c.workspace_id == self.ws, expr)
        return self.member(contacts.c.company_id, sel, final_neg)

    def value_test(self, table: Any, field: str, ftype: str, op: str, value: Any) -> ColumnElement[bool]:
        """The positive test ``op`` (never a negative operator) of a field; FALSE on an unset value."""
        x: ColumnElement[Any]
        if field.startswith("properties."):
            path = [field.removeprefix("properties.")]
            col = table.c.properties
            if ftype == "multi_enum":
                is_array = and_(self.jtype(col, path).isnot(None), self.jtype(col, path) == "array")
                if op == "is_set":
                    return is_array
                if op == "contains_any":
                    return self.jarray_has_any(col, path, value)
                return and_(*(self.jarray_has_any(col, path, [v]) for v in value))
            x = {
                "string": self.jstr,
                "enum": self.jstr,
                "number": self.jnum,
                "boolean": self.jbool,
                "date": self.jdate,
            }[ftype](col, path)
            custom = True
        else:
            x = table.c[field]
            custom = False
        is_set = x.isnot(None)
        if op == "is_set":
            return is_set
        if ftype in ("string", "enum"):
            lx = self.lower(x)
            if op == "eq":
                test = lx == literal(ascii_lower(value), String())
            elif op == "in":
                test = lx.in_(sorted({ascii_lower(v) for v in value}))
            elif op == "contains":
                test = self.contains(lx, ascii_lower(value))
            elif op == "starts_with":
                v = ascii_lower(value)
                test = func.substr(lx, 1, len(v)) == literal(v, String())
            elif op == "ends_with":
                test = self.ends_with(lx, ascii_lower(value))
            else:
                raise ValueError(op)
        elif ftype == "number":
            test = (
                x == literal(float(value), Float()) if op == "eq" else _range_sql(x, number_range(op, value), Float())
            )
        elif ftype == "id":
            test = x == value if op == "eq" else x.in_(list(value))
        elif ftype == "boolean":
            want = op == "is_true"
            expected: Any = literal("true" if want else "false") if custom else (true() if want else false())
            test = x == expected
        elif ftype == "date":
            test = _range_sql(x, calendar_range(op, value, self.now), String())
        elif ftype == "datetime":
            test = _range_sql(x, instant_range(op, value, self.now), UTCDateTime())
        else:
            raise ValueError(ftype)
        return and_(is_set, test)

    def stage_history(self, n: StageHistoryCondition, neg: bool) -> ColumnElement[bool]:
        stage = contacts.c.lifecycle_stage
        base = select(stage_changes.c.contact_id).where(stage_changes.c.workspace_id == self.ws)
        if n.op == "was_ever_in":
            now_in = stage == n.value
            sel = base.where(or_(stage_changes.c.to_stage == n.value, stage_changes.c.from_stage == n.value))
        else:
            r = window_range(n.window, self.now)
            at = contacts.c.lifecycle_stage_at
            now_in = and_(stage == n.value, at.isnot(None))
            sel = base.where(stage_changes.c.to_stage == n.value)
            if r is not None:
                now_in = and_(now_in, _range_sql(at, r, UTCDateTime()))
                sel = sel.where(_range_sql(stage_changes.c.changed_at, r, UTCDateTime()))
        if neg:
            return and_(not_(now_in), self.member(contacts.c.id, sel, True))
        return or_(now_in, self.member(contacts.c.id, sel, False))

    def tags(self, n: TagCondition, neg: bool) -> ColumnElement[bool]:
        base = select(contact_tags.c.contact_id).where(contact_tags.c.workspace_id == self.ws)
        if n.op in ("has_tag", "has_no_tag"):
            return self.member(contacts.c.id, base.where(contact_tags.c.tag == n.value), neg != (n.op == "has_no_tag"))
        values = sorted(set(n.value))
        sel = base.where(contact_tags.c.tag.in_(values))
        if n.op == "has_all_tags" and len(values) > 1:
            sel = sel.group_by(contact_tags.c.contact_id).having(func.count(contact_tags.c.tag) == len(values))
        return self.member(contacts.c.id, sel, neg)

    def orders_base(self, window: Any) -> Select[Any]:
        sel = select(orders.c.contact_id).where(
            orders.c.workspace_id == self.ws, orders.c.contact_id.isnot(None), orders.c.status != CANCELLED
        )
        r = window_range(window, self.now)
        if r is not None:
            sel = sel.where(_range_sql(orders.c.placed_at, r, UTCDateTime()))
        return sel

    def order_aggregate(self, n: OrderCountCondition | OrderTotalCondition, neg: bool) -> ColumnElement[bool]:
        base = self.orders_base(n.window)
        agg: ColumnElement[Any]
        if isinstance(n, OrderTotalCondition):
            base = base.where(orders.c.currency == n.currency)
            agg = func.sum(orders.c.total_minor)
        else:
            agg = func.count()
        op, value = n.op, n.value

        def holds(a: ColumnElement[Any]) -> ColumnElement[bool]:
            if op == "eq":
                return a == literal(float(value), Float())
            if op == "neq":
                return a != literal(float(value), Float())
            return _range_sql(a, number_range(op, value), Float())

        zero_ok = number_matches(op, value, 0.0)
        exists_only = isinstance(n, OrderCountCondition) and _means_at_least_one(op, value)
        return self.aggregate_member(base, orders.c.contact_id, agg, holds, zero_ok, neg, exists_only=exists_only)

    def order_date(self, n: OrderDateCondition, neg: bool) -> ColumnElement[bool]:
        base = self.orders_base(n.window)
        if n.op in ("is_set", "is_not_set"):
            return self.member(contacts.c.id, base, neg != (n.op == "is_not_set"))
        agg = func.min(orders.c.placed_at) if n.type == "first_order" else func.max(orders.c.placed_at)
        r = instant_range(n.op, n.value, self.now)
        sel = base.group_by(orders.c.contact_id).having(_range_sql(agg, r, UTCDateTime()))
        return self.member(contacts.c.id, sel, neg)

    def event_where(self, f: EventPropertyFilter) -> ColumnElement[bool]:
        path = f.path.split(".")
        col = events.c.properties

        def eq(v: Any) -> ColumnElement[bool]:
            if isinstance(v, bool):
                b = self.jbool(col, path)
                return and_(b.isnot(None), b == literal("true" if v else "false"))
            if isinstance(v, str):
                s = self.jstr(col, path)
                return and_(s.isnot(None), self.lower(s) == literal(ascii_lower(v), String()))
            x = self.jnum(col, path)
            return and_(x.isnot(None), x == literal(float(v), Float()))

        if f.op == "eq":
            return eq(f.value)
        if f.op == "neq":
            return not_(eq(f.value))
        if f.op == "in":
            return or_(*(eq(v) for v in f.value))
        if f.op == "contains":
            s = self.jstr(col, path)
            return and_(s.isnot(None), self.contains(self.lower(s), ascii_lower(f.value)))
        x = self.jnum(col, path)
        cmp = x > literal(float(f.value), Float()) if f.op == "gt" else x < literal(float(f.value), Float())
        return and_(x.isnot(None), cmp)

    def event(self, n: EventCondition, neg: bool) -> ColumnElement[bool]:
        base = select(events.c.contact_id).where(
            events.c.workspace_id == self.ws, events.c.name == n.name, events.c.contact_id.isnot(None)
        )
        r = window_range(n.window, self.now)
        if r is not None:
            base = base.where(_range_sql(events.c.occurred_at, r, UTCDateTime()))
        for f in n.where:
            base = base.where(self.event_where(f))
        cr = event_count_range(n.op, n.value)
        exists_only = cr.hi is None and cr.lo == 1.0
        if cr.hi == 0.0:  # did_not / at_most 0 / exactly 0: no such event at all
            return self.member(contacts.c.id, base, not neg)
        if exists_only:
            return self.member(contacts.c.id, base, neg)
        # A correlated count per candidate contact: an index range over (workspace_id, contact_id, occurred_at)
        # for the few contacts the other conditions leave, instead of grouping every matching event of the
        # workspace. count(*) is never NULL, so the test and its negation are two-valued.
        count = (
            base.with_only_columns(func.count(), maintain_column_froms=True)
            .where(events.c.contact_id == contacts.c.id)
            .scalar_subquery()
        )
        test = _range_sql(count, cr)
        return not_(test) if neg else test

    def score(self, n: ScoreCondition, neg: bool) -> ColumnElement[bool]:
        t = contact_scores
        base = select(t.c.contact_id).where(t.c.workspace_id == self.ws, t.c.kind == n.kind)
        if n.op in ("is_set", "is_not_set"):
            return self.member(contacts.c.id, base, neg != (n.op == "is_not_set"))
        if n.op == "grade_in":
            return self.member(contacts.c.id, base.where(t.c.grade.isnot(None), t.c.grade.in_(list(n.value))), neg)
        if n.kind != "engagement":
            test = _range_sql(t.c.score, number_range(n.op, n.value), Float())
            return self.member(contacts.c.id, base.where(test), neg)
        # A contact without an engagement row has 0: when 0 passes, keep everyone but the rows that fail.
        decayed = self.decayed(n.op, n.value)
        if score_matches_zero(n.op, n.value):
            return self.member(contacts.c.id, base.where(not_(decayed)), not neg)
        return self.member(contacts.c.id, base.where(decayed), neg)

    def consent(self, n: ConsentCondition, neg: bool) -> ColumnElement[bool]:
        cr = consent_records.alias("cr")
        objected = select(cr.c.contact_id).where(cr.c.workspace_id == self.ws, cr.c.action == CONSENT_OBJECTION)
        if n.op == "objected":
            return self.member(contacts.c.id, objected, neg)
        stated = select(cr.c.contact_id).where(
            cr.c.workspace_id == self.ws, cr.c.topic == n.topic, cr.c.action.in_(CONSENT_STATEMENTS)
        )
        if n.op == "no_record":
            return self.member(contacts.c.id, stated, not neg)
        later = consent_records.alias("later")
        newer = exists(
            select(literal(1))
            .select_from(later)
            .where(
                later.c.workspace_id == self.ws,
                later.c.contact_id == cr.c.contact_id,
                later.c.topic == n.topic,
                later.c.action.in_(CONSENT_STATEMENTS),
                or_(
                    later.c.recorded_at > cr.c.recorded_at,
                    and_(later.c.recorded_at == cr.c.recorded_at, later.c.id > cr.c.id),
                ),
            )
        )
        latest = stated.where(cr.c.action == ("withdrawn" if n.op == "withdrawn" else "granted"), not_(newer))
        if n.op == "withdrawn":
            return self.member(contacts.c.id, latest, neg)
        objection = select(consent_records.c.contact_id).where(
            consent_records.c.workspace_id == self.ws, consent_records.c.action == CONSENT_OBJECTION
        )
        if neg:
            return or_(self.member(contacts.c.id, latest, True), self.member(contacts.c.id, objection, False))
        return and_(self.member(contacts.c.id, latest, False), self.member(contacts.c.id, objection, True))

    def decayed(self, op: str, value: Any) -> ColumnElement[bool]:
        """``engine.filters.decayed_compare`` over a score row, two-valued, with the same float arithmetic."""
        t = contact_scores
        if op == "between":
            return and_(self.decayed("gte", value[0]), self.decayed("lte", value[1]))
        if op in ("lt", "lte"):
            return not_(self.decayed("gte" if op == "lt" else "gt", value))
        strict = op == "gt"
        if value == 0:
            return t.c.score > 0 if strict else t.c.score >= 0
        has = and_(t.c.decay_key.isnot(None), t.c.half_life_seconds.isnot(None))
        threshold = literal(math.log2(abs(value)), Float()) + (
            literal(epoch_seconds(self.now), Float()) / t.c.half_life_seconds
        )
        key = t.c.decay_key
        if value > 0:
            return and_(t.c.score > 0, has, key > threshold if strict else key >= threshold)
        return or_(t.c.score >= 0, and_(has, key < threshold if strict else key <= threshold))


def _means_at_least_one(op: str, value: Any) -> bool:
    return (op == "gte" and value == 1) or (op == "gt" and value == 0)


def compile_filter(
    node: Filter,
    *,
    workspace_id: int,
    now: datetime,
    dialect: str,
    segment_select: SegmentSelect | None = None,
) -> ColumnElement[bool]:
    """A boolean expression over ``contacts`` (add ``contacts.workspace_id = :ws`` yourself, or use the service).

    ``segment_select(id)`` gives a SELECT of the contact ids in a segment (needed when the filter uses one).
    """
    return _Compiler(dialect, workspace_id, now, segment_select).node(node, False)


__all__ = ["FilterCompileError", "SegmentSelect", "compile_filter", "consent_records", "contact_scores", "contacts"]
