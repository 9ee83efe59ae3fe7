"""Evaluating a filter on one contact's data in memory (the reference the SQL compiler must agree with).

The semantics are stated in ``suppilo.engine.filters``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from suppilo.engine.filters import (
    CONSENT_OBJECTION,
    CONSENT_STATEMENTS,
    DATE_OPS,
    DATE_PREFIX_RE,
    TRUE_WHEN_UNSET,
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
    decayed_compare,
    epoch_seconds,
    event_count_range,
    instant_range,
    number_matches,
    window_range,
)

CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class OrderLineSnapshot:
    """One order line."""

    sku: str
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    """One order of the contact."""

    placed_at: datetime
    currency: str
    total_minor: int
    status: str = "completed"
    lines: tuple[OrderLineSnapshot, ...] = ()


@dataclass(frozen=True, slots=True)
class EventSnapshot:
    """One event of the contact."""

    name: str
    occurred_at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StageChangeSnapshot:
    """One recorded stage change."""

    from_stage: str | None
    to_stage: str
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class ScoreSnapshot:
    """One stored score of the contact (``suppilo.scoring``): value at ``as_of``; engagement also its decay key."""

    score: float
    grade: str | None = None
    decay_key: float | None = None
    half_life_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ConsentSnapshot:
    """One consent ledger record of the contact."""

    topic: str
    action: str
    recorded_at: datetime
    id: int = 0


@dataclass(frozen=True, slots=True)
class ContactSnapshot:
    """What a filter can read about one contact.

    ``fields`` holds the built-in contact columns (a missing key is unset), ``company`` the built-in company
    columns (None: no company), the ``*properties`` the custom properties as stored (JSON values), ``scores``
    the stored scores by kind (``fit``, ``engagement``, ``predictive``).
    """

    id: int
    fields: Mapping[str, Any] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    company: Mapping[str, Any] | None = None
    company_properties: Mapping[str, Any] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()
    stage_changes: tuple[StageChangeSnapshot, ...] = ()
    orders: tuple[OrderSnapshot, ...] = ()
    events: tuple[EventSnapshot, ...] = ()
    scores: Mapping[str, ScoreSnapshot] = field(default_factory=dict)
    consents: tuple[ConsentSnapshot, ...] = ()


def _in(r: Range[datetime] | None, t: datetime) -> bool:
    return r is None or r.contains(t)


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _typed(ftype: str, raw: object) -> object:
    """The value as the filter sees it, or None when unset (missing, null or of another type)."""
    if raw is None:
        return None
    if ftype in ("string", "enum"):
        return raw if isinstance(raw, str) else None
    if ftype == "number":
        return float(raw) if _is_number(raw) else None  # type: ignore[arg-type]
    if ftype == "boolean":
        return raw if isinstance(raw, bool) else None
    if ftype == "id":
        return raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    if ftype == "multi_enum":
        if not isinstance(raw, list):
            return None
        return frozenset(ascii_lower(x) for x in raw if isinstance(x, str))
    if ftype == "date":
        return raw[:10] if isinstance(raw, str) and DATE_PREFIX_RE.match(raw) else None
    if ftype == "datetime":
        return raw if isinstance(raw, datetime) else None
    raise ValueError(f"unknown field type {ftype}")


def _property_matches(leaf: PropertyCondition, snap: ContactSnapshot, now: datetime) -> bool:
    custom = leaf.field.startswith("properties.")
    name = leaf.field.removeprefix("properties.")
    if leaf.type == "contact":
        raw = (snap.properties if custom else snap.fields).get(name)
    elif snap.company is None:
        raw = None
    else:
        raw = (snap.company_properties if custom else snap.company).get(name)
    ftype = leaf.field_type or "string"
    return value_matches(ftype, leaf.op, leaf.value, _typed(ftype, raw), now)


def value_matches(ftype: str, op: str, expected: Any, value: Any, now: datetime) -> bool:
    """Whether a typed ``value`` (None when unset) passes ``op`` with ``expected``."""
    if value is None:
        return op in TRUE_WHEN_UNSET
    if op == "is_set":
        return True
    if op == "is_not_set":
        return False
    if ftype in ("string", "enum"):
        v = ascii_lower(value)
        if op == "eq":
            return v == ascii_lower(expected)
        if op == "neq":
            return v != ascii_lower(expected)
        if op == "contains":
            return ascii_lower(expected) in v
        if op == "not_contains":
            return ascii_lower(expected) not in v
        if op == "starts_with":
            return v.startswith(ascii_lower(expected))
        if op == "ends_with":
            return v.endswith(ascii_lower(expected))
        if op == "in":
            return v in {ascii_lower(x) for x in expected}
        if op == "not_in":
            return v not in {ascii_lower(x) for x in expected}
    elif ftype == "number":
        return number_matches(op, expected, value)
    elif ftype == "id":
        if op == "eq":
            return bool(value == expected)
        if op == "neq":
            return bool(value != expected)
        if op == "in":
            return value in expected
        if op == "not_in":
            return value not in expected
    elif ftype == "boolean":
        return bool(value) if op == "is_true" else not value
    elif ftype == "multi_enum":
        wanted = {ascii_lower(x) for x in expected}
        if op == "contains_any":
            return bool(value & wanted)
        if op == "contains_all":
            return bool(wanted <= value)
        if op == "contains_none":
            return not value & wanted
    elif ftype in ("date", "datetime") and op in DATE_OPS:
        if ftype == "date":
            return calendar_range(op, expected, now).contains(value)
        return instant_range(op, expected, now).contains(value)
    raise ValueError(f"operator {op} does not apply to {ftype}")


def _path_value(properties: Mapping[str, Any], path: str) -> object:
    current: object = properties
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    return current


def _scalar_eq(raw: object, expected: object) -> bool:
    if isinstance(expected, bool):
        return isinstance(raw, bool) and raw == expected
    if isinstance(expected, str):
        return isinstance(raw, str) and ascii_lower(raw) == ascii_lower(expected)
    return _is_number(raw) and float(raw) == float(expected)  # type: ignore[arg-type]


def event_property_matches(flt: EventPropertyFilter, properties: Mapping[str, Any]) -> bool:
    """Whether an event's properties pass one ``where`` filter."""
    raw = _path_value(properties, flt.path)
    if flt.op == "eq":
        return _scalar_eq(raw, flt.value)
    if flt.op == "neq":
        return not _scalar_eq(raw, flt.value)
    if flt.op == "in":
        return any(_scalar_eq(raw, v) for v in flt.value)
    if flt.op == "contains":
        return isinstance(raw, str) and ascii_lower(flt.value) in ascii_lower(raw)
    if not _is_number(raw):
        return False
    if flt.op == "gt":
        return float(raw) > float(flt.value)  # type: ignore[arg-type]
    return float(raw) < float(flt.value)  # type: ignore[arg-type]


def _orders(snap: ContactSnapshot, r: Range[datetime] | None) -> list[OrderSnapshot]:
    return [o for o in snap.orders if o.status != CANCELLED and _in(r, o.placed_at)]


def evaluate(node: Filter, snapshot: ContactSnapshot, now: datetime, in_segment: Callable[[int], bool]) -> bool:
    """Whether the contact of ``snapshot`` matches ``node`` at ``now``; ``in_segment(id)`` answers memberships."""
    if isinstance(node, And):
        return all(evaluate(c, snapshot, now, in_segment) for c in node.and_)
    if isinstance(node, Or):
        return any(evaluate(c, snapshot, now, in_segment) for c in node.or_)
    if isinstance(node, Not):
        return not evaluate(node.not_, snapshot, now, in_segment)
    if isinstance(node, PropertyCondition):
        return _property_matches(node, snapshot, now)
    if isinstance(node, StageCondition):
        current = snapshot.fields.get("lifecycle_stage")
        return (current in node.value) == (node.op == "in")
    if isinstance(node, StageHistoryCondition):
        current = snapshot.fields.get("lifecycle_stage")
        if node.op == "was_ever_in":
            return current == node.value or any(
                node.value in (c.from_stage, c.to_stage) for c in snapshot.stage_changes
            )
        r = window_range(node.window, now)
        stage_at = snapshot.fields.get("lifecycle_stage_at")
        if current == node.value and isinstance(stage_at, datetime) and _in(r, stage_at):
            return True
        return any(c.to_stage == node.value and _in(r, c.changed_at) for c in snapshot.stage_changes)
    if isinstance(node, TagCondition):
        if node.op == "has_tag":
            return node.value in snapshot.tags
        if node.op == "has_no_tag":
            return node.value not in snapshot.tags
        if node.op == "has_any_tags":
            return bool(snapshot.tags & set(node.value))
        return set(node.value) <= snapshot.tags
    if isinstance(node, OrderCountCondition):
        count = len(_orders(snapshot, window_range(node.window, now)))
        return number_matches(node.op, node.value, float(count))
    if isinstance(node, OrderTotalCondition):
        orders = _orders(snapshot, window_range(node.window, now))
        total = sum(o.total_minor for o in orders if o.currency == node.currency)
        return number_matches(node.op, node.value, float(total))
    if isinstance(node, OrderDateCondition):
        times = [o.placed_at for o in _orders(snapshot, window_range(node.window, now))]
        at = (min(times) if node.type == "first_order" else max(times)) if times else None
        return value_matches("datetime", node.op, node.value, at, now)
    if isinstance(node, BoughtProductCondition):
        skus = set(node.value)
        return any(line.sku in skus for o in _orders(snapshot, window_range(node.window, now)) for line in o.lines)
    if isinstance(node, EventCondition):
        r = window_range(node.window, now)
        count = sum(
            1
            for e in snapshot.events
            if e.name == node.name
            and _in(r, e.occurred_at)
            and all(event_property_matches(f, e.properties) for f in node.where)
        )
        return event_count_range(node.op, node.value).contains(float(count))
    if isinstance(node, SegmentCondition):
        return in_segment(node.value) == (node.op == "in_segment")
    if isinstance(node, ScoreCondition):
        return score_matches(node, snapshot.scores.get(node.kind), now)
    if isinstance(node, ConsentCondition):
        return consent_matches(node, snapshot.consents)
    raise TypeError(f"not a filter node: {node!r}")


def score_matches(node: ScoreCondition, row: ScoreSnapshot | None, now: datetime) -> bool:
    """Whether a stored score (None: the contact has none of that kind) passes a ``score`` condition at ``now``."""
    if node.op == "is_set":
        return row is not None
    if node.op == "is_not_set":
        return row is None
    if node.op == "grade_in":
        return row is not None and row.grade in node.value
    if node.kind != "engagement":
        return row is not None and number_matches(node.op, node.value, float(row.score))
    sign = 0 if row is None else (row.score > 0) - (row.score < 0)
    key = None if row is None else row.decay_key
    half_life = None if row is None else row.half_life_seconds
    now_s = epoch_seconds(now)
    if node.op == "between":
        lo, hi = node.value
        return decayed_compare(sign, key, half_life, "gte", lo, now_s) and decayed_compare(
            sign, key, half_life, "lte", hi, now_s
        )
    return decayed_compare(sign, key, half_life, node.op, node.value, now_s)


def consent_matches(node: ConsentCondition, records: tuple[ConsentSnapshot, ...]) -> bool:
    """Whether the contact's consent records pass a ``consent`` condition."""
    objected = any(r.action == CONSENT_OBJECTION for r in records)
    if node.op == "objected":
        return objected
    latest = max(
        (r for r in records if r.topic == node.topic and r.action in CONSENT_STATEMENTS),
        key=lambda r: (r.recorded_at, r.id),
        default=None,
    )
    if node.op == "no_record":
        return latest is None
    if node.op == "withdrawn":
        return latest is not None and latest.action == "withdrawn"
    return latest is not None and latest.action == "granted" and not objected
