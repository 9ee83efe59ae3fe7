"""The segment filter language: a typed tree of conditions stored as JSON.

A filter is ``{"and": [...]}``, ``{"or": [...]}``, ``{"not": {...}}`` or a condition leaf. Every leaf has a
``type`` and most an ``op`` and a ``value``::

    {"and": [
        {"type": "contact", "field": "country", "op": "in", "value": ["FI", "SE"]},
        {"type": "contact", "field": "properties.plan", "op": "eq", "value": "pro"},
        {"type": "company", "field": "employees", "op": "between", "value": [10, 200]},
        {"or": [
            {"type": "event", "name": "Demo Requested", "op": "at_least", "value": 2,
             "where": [{"path": "form.source", "op": "eq", "value": "pricing"}], "window": {"last_days": 30}},
            {"type": "order_total", "currency": "EUR", "op": "gte", "value": 10000},
        ]},
        {"not": {"type": "tag", "op": "has_tag", "value": "do-not-contact"}},
    ]}

Leaf types: ``contact`` / ``company`` (a built-in field or ``properties.<name>``), ``stage`` (current stage
in / not in), ``stage_history`` (``was_ever_in`` a stage, or ``entered`` it within an optional window),
``tag``, ``order_count``, ``order_total`` (in one ``currency``), ``first_order`` / ``last_order`` (the date of
the first / last order), ``bought_product`` (a line with one of the SKUs), ``event``, ``segment`` and ``score``
(``{"type": "score", "kind": "fit", "op": "gte", "value": 60}``, ``{"type": "score", "kind": "fit", "op":
"grade_in", "value": ["A", "B"]}``; kinds ``fit``, ``engagement``, ``predictive``) and ``consent``
(``{"type": "consent", "topic": "marketing", "op": "granted"}``; ops ``granted``, ``withdrawn``, ``no_record``,
``objected``).
A ``window`` is ``{"last_days": N}`` (now − N days ≤ t ≤ now) or ``{"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}``
(whole UTC days, both ends included); without one, all time counts. Orders with status ``cancelled`` are not
orders for any condition.

Semantics (the SQL compiler in ``suppilo.segments.compiler`` and ``filter_eval.evaluate`` implement them
identically; hypothesis tests compare the two):

- **Unset values.** A built-in field is unset when NULL; a custom property when the key is missing, JSON null, or
  of another JSON type than its declared type (a date property must be a string starting ``YYYY-MM-DD``; a
  multi_enum property a JSON array). A contact without a company has every company field unset.
  On an unset value every operator is **false**, except the negative ones — ``neq``, ``not_in``,
  ``not_contains``, ``contains_none`` — and ``is_not_set``, which are **true**: "not equal to X" holds for a
  contact that has no value at all. Hence ``{"not": {"op": "eq", ...}}`` and ``{"op": "neq", ...}`` agree.
- **Text** comparisons (eq, in, contains, starts_with, ends_with, enum and multi_enum values, event property
  strings) ignore the case of ASCII letters (A–Z); other characters compare exactly, so the result is the same
  on every database whatever its locale. Tags, stage keys, event names, SKUs and currencies compare exactly.
- **Numbers** compare as double precision floats; a boolean is not a number.
- **Instants** (built-in ``*_at`` fields, order and event times) are UTC. ``before D`` is t < D 00:00,
  ``after D`` is t ≥ D+1 00:00, ``on D`` and ``between [D1, D2]`` cover whole UTC days. ``within_last_days N``
  is now − N days ≤ t ≤ now, ``more_than_days_ago N`` is t < now − N days, ``within_next_days N`` is
  now ≤ t ≤ now + N days (days are exactly 24 hours: there is no DST in UTC).
- **Calendar dates** (custom ``date`` properties) compare as dates: before/after are strict, on/between
  inclusive, and the relative operators use today = now's UTC date (``within_last_days N``: today − N ≤ d ≤ today).
- **Counts and sums** over no rows are 0 (``order_count lt 1`` matches a contact without orders); the date of
  the first / last order is unset when there is none (in the window).
- **Events**: ``did`` = at least once, ``did_not`` = never, ``at_least`` / ``at_most`` / ``exactly`` N times,
  counting the contact's events of that name in the window whose properties pass every ``where`` filter.
  A ``where`` filter's ``neq`` holds on an event without the property, like ``neq`` on an unset field.
- **Segments**: ``in_segment`` / ``not_in_segment`` ask a membership lookup the caller provides.
- **Scores** (``suppilo.scoring``): ``fit`` and ``predictive`` compare the stored score (gt, gte, lt, lte,
  between; unset without a score row, so every operator but ``is_not_set`` is false there) or its grade
  (``grade_in``). ``engagement`` compares the score **decayed to now**; a contact without an engagement row has
  0. The decayed comparison is made on ``decay_key`` (see ``decayed_compare``) so SQL needs no exponentials.
- **Consent** reads the consent ledger (``suppilo.consent``): the latest ``granted`` / ``withdrawn`` record of the
  topic (by recorded time, then id) decides ``granted`` (and no objection on record) and ``withdrawn``;
  ``no_record``: the topic has neither; ``objected``: the contact objected to marketing (GDPR Art. 21). This is the
  ledger's state, not the sending decision (country rules, double opt-in confirmation and CASL expiry are the
  sender's).

Dependencies (``dependencies``) name the data a filter reads, so the incremental updater re-evaluates only
the segments that something changed could affect.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_DAYS = 36_500
MAX_DEPTH = 12
MAX_LEAVES = 200
MAX_LIST = 1_000

FieldType = Literal["string", "number", "boolean", "date", "datetime", "enum", "multi_enum", "id"]
PropertyType = Literal["string", "number", "boolean", "date", "enum", "multi_enum"]

CONTACT_FIELDS: dict[str, FieldType] = {
    "email": "string",
    "external_id": "string",
    "first_name": "string",
    "last_name": "string",
    "phone": "string",
    "language": "string",
    "country": "string",
    "region": "string",
    "city": "string",
    "timezone": "string",
    "job_title": "string",
    "lifecycle_stage": "string",
    "first_touch_channel": "string",
    "first_touch_source": "string",
    "first_touch_campaign": "string",
    "latest_touch_channel": "string",
    "latest_touch_source": "string",
    "latest_touch_campaign": "string",
    "is_anonymous": "boolean",
    "owner_id": "id",
    "company_id": "id",
    "created_at": "datetime",
    "updated_at": "datetime",
    "lifecycle_stage_at": "datetime",
    "first_touch_at": "datetime",
    "latest_touch_at": "datetime",
    "first_seen_at": "datetime",
    "last_seen_at": "datetime",
}

COMPANY_FIELDS: dict[str, FieldType] = {
    "name": "string",
    "domain": "string",
    "industry": "string",
    "country": "string",
    "city": "string",
    "employees": "number",
    "annual_revenue_minor": "number",
    "owner_id": "id",
    "created_at": "datetime",
}

DATE_OPS = frozenset({"before", "after", "on", "between", "within_last_days", "more_than_days_ago", "within_next_days"})
SET_OPS = frozenset({"is_set", "is_not_set"})
OPS_BY_TYPE: dict[str, frozenset[str]] = {
    "string": frozenset(
        {"eq", "neq", "contains", "not_contains", "starts_with", "ends_with", "in", "not_in", "is_set", "is_not_set"}
    ),
    "number": frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "between", "is_set", "is_not_set"}),
    "boolean": frozenset({"is_true", "is_false", "is_set", "is_not_set"}),
    "date": DATE_OPS | SET_OPS,
    "datetime": DATE_OPS | SET_OPS,
    "enum": frozenset({"eq", "neq", "in", "not_in", "is_set", "is_not_set"}),
    "multi_enum": frozenset({"contains_any", "contains_all", "contains_none", "is_set", "is_not_set"}),
    "id": frozenset({"eq", "neq", "in", "not_in", "is_set", "is_not_set"}),
}
# Operators that are true on an unset value (see the module docstring).
TRUE_WHEN_UNSET = frozenset({"is_not_set", "neq", "not_in", "not_contains", "contains_none"})
NUMBER_OPS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "between"})
EVENT_COUNT_OPS = frozenset({"did", "did_not", "at_least", "at_most", "exactly"})
EVENT_WHERE_OPS = frozenset({"eq", "neq", "contains", "gt", "lt", "in"})
TAG_OPS = frozenset({"has_tag", "has_no_tag", "has_any_tags", "has_all_tags"})
SCORE_KINDS = ("fit", "engagement", "predictive")
SCORE_RANGE_OPS = frozenset({"gt", "gte", "lt", "lte", "between"})
SCORE_GRADES = ("A", "B", "C", "D")
CONSENT_STATEMENTS = ("granted", "withdrawn")
CONSENT_OBJECTION = "objection"

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$")
_PATH_SEGMENT_RE = re.compile(r'^[^".\\\x00-\x1f]{1,100}$')
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
DATE_PREFIX_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}")

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """``text`` with A–Z lowered and everything else unchanged (what both databases do identically)."""
    return text.translate(_ASCII_LOWER)


class FilterError(ValueError):
    """An invalid filter: ``path`` names the bad node (``and[2].or[0].value``), ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or '<root>'}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PropertyDef:
    """A workspace's declaration of one custom property (what the validator needs of it)."""

    type: PropertyType
    options: tuple[str, ...] = ()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Window(_Frozen):
    """A time window: the last N days up to now, or whole UTC days from ``from`` to ``to``."""

    last_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    from_: date | None = Field(default=None, alias="from")
    to: date | None = None


class PropertyCondition(_Frozen):
    """A built-in field or ``properties.<name>`` of the contact (``contact``) or its company (``company``)."""

    type: Literal["contact", "company"]
    field: str
    op: str
    value: Any = None
    field_type: FieldType | None = None


class StageCondition(_Frozen):
    """The contact's current lifecycle stage is (not) one of ``value``."""

    type: Literal["stage"]
    op: Literal["in", "not_in"]
    value: tuple[str, ...]


class StageHistoryCondition(_Frozen):
    """The contact was ever in stage ``value`` (now or before), or entered it (within ``window``)."""

    type: Literal["stage_history"]
    op: Literal["was_ever_in", "entered"]
    value: str
    window: Window | None = None


class TagCondition(_Frozen):
    """Tags: ``has_tag`` / ``has_no_tag`` one tag, ``has_any_tags`` / ``has_all_tags`` of a list."""

    type: Literal["tag"]
    op: str
    value: Any


class OrderCountCondition(_Frozen):
    """The number of orders (in ``window``) compared with ``value``."""

    type: Literal["order_count"]
    op: str
    value: Any
    window: Window | None = None


class OrderTotalCondition(_Frozen):
    """The sum of order totals in ``currency`` (minor units, in ``window``) compared with ``value``."""

    type: Literal["order_total"]
    currency: str
    op: str
    value: Any
    window: Window | None = None


class OrderDateCondition(_Frozen):
    """The time of the first / last order (in ``window``) with a date operator."""

    type: Literal["first_order", "last_order"]
    op: str
    value: Any = None
    window: Window | None = None


class BoughtProductCondition(_Frozen):
    """An order (in ``window``) has a line with one of the SKUs in ``value``."""

    type: Literal["bought_product"]
    value: tuple[str, ...]
    window: Window | None = None


class EventPropertyFilter(_Frozen):
    """A test of one (dotted) path in an event's properties."""

    path: str
    op: str
    value: Any


class EventCondition(_Frozen):
    """The contact did event ``name`` (passing every ``where`` filter, in ``window``) some number of times."""

    type: Literal["event"]
    name: str
    op: str
    value: int | None = None
    where: tuple[EventPropertyFilter, ...] = ()
    window: Window | None = None


class SegmentCondition(_Frozen):
    """The contact is (not) a member of segment ``value``."""

    type: Literal["segment"]
    op: Literal["in_segment", "not_in_segment"]
    value: int


class ScoreCondition(_Frozen):
    """The contact's ``kind`` score compared with ``value`` (engagement: decayed to now), or its grade in ``value``."""

    type: Literal["score"]
    kind: Literal["fit", "engagement", "predictive"]
    op: str
    value: Any = None


class ConsentCondition(_Frozen):
    """The consent ledger's state of ``topic`` for the contact (see the module docstring)."""

    type: Literal["consent"]
    op: Literal["granted", "withdrawn", "no_record", "objected"]
    topic: str = Field(default="marketing", min_length=1, max_length=64)


Leaf = (
    PropertyCondition
    | StageCondition
    | StageHistoryCondition
    | TagCondition
    | OrderCountCondition
    | OrderTotalCondition
    | OrderDateCondition
    | BoughtProductCondition
    | EventCondition
    | SegmentCondition
    | ScoreCondition
    | ConsentCondition
)


class And(_Frozen):
    """All children hold (an empty ``and`` matches every contact)."""

    and_: tuple[Filter, ...] = Field(alias="and")


class Or(_Frozen):
    """At least one child holds (an empty ``or`` matches nobody)."""

    or_: tuple[Filter, ...] = Field(alias="or")


class Not(_Frozen):
    """The child does not hold."""

    not_: Filter = Field(alias="not")


Filter = And | Or | Not | Leaf

And.model_rebuild()
Or.model_rebuild()
Not.model_rebuild()

_LEAF_CLASSES: dict[str, type[BaseModel]] = {
    "contact": PropertyCondition,
    "company": PropertyCondition,
    "stage": StageCondition,
    "stage_history": StageHistoryCondition,
    "tag": TagCondition,
    "order_count": OrderCountCondition,
    "order_total": OrderTotalCondition,
    "first_order": OrderDateCondition,
    "last_order": OrderDateCondition,
    "bought_product": BoughtProductCondition,
    "event": EventCondition,
    "segment": SegmentCondition,
    "score": ScoreCondition,
    "consent": ConsentCondition,
}


# --- ranges shared by the compiler and the evaluator --------------------------------------------------------------

T = TypeVar("T", datetime, str, float)


@dataclass(frozen=True, slots=True)
class Range(Generic[T]):
    """lo ≤ / < x ≤ / < hi; a missing bound is open."""

    lo: T | None = None
    lo_inclusive: bool = True
    hi: T | None = None
    hi_inclusive: bool = True

    def contains(self, x: T) -> bool:
        """Whether ``x`` lies in the range."""
        if self.lo is not None and (x < self.lo if self.lo_inclusive else x <= self.lo):
            return False
        return not (self.hi is not None and (x > self.hi if self.hi_inclusive else x >= self.hi))


def day_start(d: date) -> datetime:
    """Midnight UTC at the start of ``d``."""
    return datetime.combine(d, time(0), tzinfo=UTC)


def instant_range(op: str, value: Any, now: datetime) -> Range[datetime]:
    """The instants a date operator accepts (``op`` in DATE_OPS, ``value`` normalised)."""
    if op == "before":
        return Range(hi=day_start(value), hi_inclusive=False)
    if op == "after":
        return Range(lo=day_start(value + timedelta(days=1)))
    if op == "on":
        return Range(lo=day_start(value), hi=day_start(value + timedelta(days=1)), hi_inclusive=False)
    if op == "between":
        return Range(lo=day_start(value[0]), hi=day_start(value[1] + timedelta(days=1)), hi_inclusive=False)
    if op == "within_last_days":
        return Range(lo=now - timedelta(days=value), hi=now)
    if op == "more_than_days_ago":
        return Range(hi=now - timedelta(days=value), hi_inclusive=False)
    if op == "within_next_days":
        return Range(lo=now, hi=now + timedelta(days=value))
    raise ValueError(f"not a date operator: {op}")


def calendar_range(op: str, value: Any, now: datetime) -> Range[str]:
    """The ISO dates (``YYYY-MM-DD`` strings) a date operator accepts on a calendar-date property."""
    today = now.astimezone(UTC).date()
    if op == "before":
        return Range(hi=value.isoformat(), hi_inclusive=False)
    if op == "after":
        return Range(lo=value.isoformat(), lo_inclusive=False)
    if op == "on":
        return Range(lo=value.isoformat(), hi=value.isoformat())
    if op == "between":
        return Range(lo=value[0].isoformat(), hi=value[1].isoformat())
    if op == "within_last_days":
        return Range(lo=(today - timedelta(days=value)).isoformat(), hi=today.isoformat())
    if op == "more_than_days_ago":
        return Range(hi=(today - timedelta(days=value)).isoformat(), hi_inclusive=False)
    if op == "within_next_days":
        return Range(lo=today.isoformat(), hi=(today + timedelta(days=value)).isoformat())
    raise ValueError(f"not a date operator: {op}")


def window_range(window: Window | None, now: datetime) -> Range[datetime] | None:
    """The instants of a window (None: all time)."""
    if window is None:
        return None
    if window.last_days is not None:
        return instant_range("within_last_days", window.last_days, now)
    assert window.from_ is not None and window.to is not None
    return instant_range("between", (window.from_, window.to), now)


def number_range(op: str, value: Any) -> Range[float]:
    """The numbers gt/gte/lt/lte/between accept."""
    if op == "gt":
        return Range(lo=float(value), lo_inclusive=False)
    if op == "gte":
        return Range(lo=float(value))
    if op == "lt":
        return Range(hi=float(value), hi_inclusive=False)
    if op == "lte":
        return Range(hi=float(value))
    if op == "between":
        return Range(lo=float(value[0]), hi=float(value[1]))
    raise ValueError(f"not a range operator: {op}")


def number_matches(op: str, value: Any, x: float) -> bool:
    """Whether number ``x`` passes a number operator (eq/neq/gt/gte/lt/lte/between)."""
    if op == "eq":
        return x == float(value)
    if op == "neq":
        return x != float(value)
    return number_range(op, value).contains(x)


def event_count_range(op: str, value: int | None) -> Range[float]:
    """The event counts an event operator accepts."""
    if op == "did":
        return Range(lo=1.0)
    if op == "did_not":
        return Range(hi=0.0)
    assert value is not None
    if op == "at_least":
        return Range(lo=float(value))
    if op == "at_most":
        return Range(hi=float(value))
    return Range(lo=float(value), hi=float(value))


def epoch_seconds(t: datetime) -> float:
    """Seconds since 1970-01-01 UTC."""
    return (t.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()


def decay_key(score: float, as_of: datetime, half_life_seconds: float) -> float | None:
    """``log2|score| + as_of / half_life``: constant while a score decays (None for a score of 0).

    A score decaying by half every ``half_life`` has ``|score(now)| = 2^(key − now / half_life)``.
    """
    if score == 0 or not math.isfinite(score):
        return None
    return math.log2(abs(score)) + epoch_seconds(as_of) / half_life_seconds


def decayed_threshold(value: float, now_seconds: float, half_life_seconds: float) -> float:
    """The key of a score of magnitude ``|value|`` at ``now`` (value ≠ 0); the SQL compiler computes the same."""
    return math.log2(abs(value)) + now_seconds / half_life_seconds


def decayed_compare(
    sign: int, key: float | None, half_life_seconds: float | None, op: str, value: float, now_seconds: float
) -> bool:
    """Whether a decaying score (``sign`` −1/0/1 and ``key``) at ``now`` passes ``op`` (gt/gte/lt/lte) ``value``.

    A row without a key or half-life fails every magnitude test (the scoring service always stores both).
    """
    if op in ("lt", "lte"):  # x < v  ⟺  not (x ≥ v)
        return not decayed_compare(sign, key, half_life_seconds, "gte" if op == "lt" else "gt", value, now_seconds)
    strict = op == "gt"
    if value == 0:
        return sign > 0 if strict else sign >= 0
    if key is None or half_life_seconds is None:
        return sign >= 0 if value < 0 else False
    t = decayed_threshold(value, now_seconds, half_life_seconds)
    if value > 0:  # x ≥ v > 0: positive and |x| ≥ |v|
        return sign > 0 and (key > t if strict else key >= t)
    # x ≥ v with v < 0: x ≥ 0, or negative with |x| ≤ |v|
    return sign >= 0 or (key < t if strict else key <= t)


def score_matches_zero(op: str, value: Any) -> bool:
    """Whether a score of 0 passes a range operator (what a contact without an engagement row has)."""
    return number_matches(op, value, 0.0)


# --- parsing and validation -----------------------------------------------------------------------------------------


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _is_str_list(v: object, *, min_len: int = 1) -> bool:
    return (
        isinstance(v, list | tuple)
        and 1 <= len(v) <= MAX_LIST
        and all(isinstance(x, str) and len(x) >= min_len for x in v)
    )


def _as_date(v: object) -> date | None:
    if isinstance(v, date) and not isinstance(v, datetime):
        return v
    if isinstance(v, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", v):
        try:
            return date.fromisoformat(v)
        except ValueError:
            return None
    return None


def _days(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_DAYS


class _Parser:
    def __init__(self, contact_properties: Mapping[str, PropertyDef], company_properties: Mapping[str, PropertyDef]):
        self.contact_properties = contact_properties
        self.company_properties = company_properties
        self.leaves = 0

    def node(self, raw: object, path: str, depth: int) -> Filter:
        if depth > MAX_DEPTH:
            raise FilterError(path, f"filters nest at most {MAX_DEPTH} levels deep")
        if isinstance(raw, BaseModel):
            raw = raw.model_dump(by_alias=True, mode="json", exclude_none=True)
        if not isinstance(raw, Mapping):
            raise FilterError(path, "a filter node must be an object")
        for key in ("and", "or"):
            if key in raw:
                if len(raw) != 1:
                    raise FilterError(path, f"an {key!r} node has no other keys")
                children = raw[key]
                if not isinstance(children, list | tuple):
                    raise FilterError(_join(path, key), "must be a list of filters")
                parsed = tuple(
                    self.node(child, _join(_join(path, key), i), depth + 1) for i, child in enumerate(children)
                )
                return And.model_validate({"and": parsed}) if key == "and" else Or.model_validate({"or": parsed})
        if "not" in raw:
            if len(raw) != 1:
                raise FilterError(path, "a 'not' node has no other keys")
            return Not.model_validate({"not": self.node(raw["not"], _join(path, "not"), depth + 1)})
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            raise FilterError(path, f"a filter has at most {MAX_LEAVES} conditions")
        kind = raw.get("type")
        if kind is None:
            raise FilterError(path, "expected 'and', 'or', 'not' or a condition with a 'type'")
        if not isinstance(kind, str) or kind not in _LEAF_CLASSES:
            raise FilterError(_join(path, "type"), f"unknown condition type; one of {', '.join(_LEAF_CLASSES)}")
        try:
            leaf = _LEAF_CLASSES[kind].model_validate(dict(raw))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = path
            for part in err["loc"]:
                where = _join(where, part if isinstance(part, int) else str(part))
            raise FilterError(where, err["msg"]) from None
        return self.leaf(leaf, path)  # type: ignore[arg-type]

    # -- leaves ---------------------------------------------------------------------------------------------------

    def leaf(self, leaf: Leaf, path: str) -> Filter:
        if isinstance(leaf, PropertyCondition):
            return self.property(leaf, path)
        if isinstance(leaf, StageCondition):
            if not leaf.value or len(leaf.value) > MAX_LIST:
                raise FilterError(_join(path, "value"), "a non-empty list of stage keys is required")
            return leaf
        if isinstance(leaf, StageHistoryCondition):
            if not leaf.value:
                raise FilterError(_join(path, "value"), "a stage key is required")
            if leaf.op == "was_ever_in" and leaf.window is not None:
                raise FilterError(_join(path, "window"), "was_ever_in takes no window")
            self.window(leaf.window, _join(path, "window"))
            return leaf
        if isinstance(leaf, TagCondition):
            return leaf.model_copy(update={"value": self.tags(leaf.op, leaf.value, path)})
        if isinstance(leaf, OrderCountCondition):
            self.window(leaf.window, _join(path, "window"))
            return leaf.model_copy(update={"value": self.number_value(leaf.op, leaf.value, path, NUMBER_OPS)})
        if isinstance(leaf, OrderTotalCondition):
            if not _CURRENCY_RE.match(leaf.currency):
                raise FilterError(_join(path, "currency"), "an ISO 4217 code such as EUR is required")
            self.window(leaf.window, _join(path, "window"))
            return leaf.model_copy(update={"value": self.number_value(leaf.op, leaf.value, path, NUMBER_OPS)})
        if isinstance(leaf, OrderDateCondition):
            self.window(leaf.window, _join(path, "window"))
            return leaf.model_copy(update={"value": self.date_value(leaf.op, leaf.value, path)})
        if isinstance(leaf, BoughtProductCondition):
            if not leaf.value or len(leaf.value) > MAX_LIST or not all(leaf.value):
                raise FilterError(_join(path, "value"), "a non-empty list of SKUs is required")
            self.window(leaf.window, _join(path, "window"))
            return leaf
        if isinstance(leaf, EventCondition):
            return self.event(leaf, path)
        if isinstance(leaf, SegmentCondition):
            if leaf.value < 1:
                raise FilterError(_join(path, "value"), "a segment id is required")
            return leaf
        if isinstance(leaf, ScoreCondition):
            return self.score(leaf, path)
        if isinstance(leaf, ConsentCondition):
            if leaf.topic == "*":
                raise FilterError(_join(path, "topic"), "'*' is the objection record; use op objected")
            return leaf
        raise FilterError(path, "unknown condition")  # pragma: no cover - the union is closed

    def score(self, leaf: ScoreCondition, path: str) -> ScoreCondition:
        graded = leaf.kind != "engagement"
        allowed = SCORE_RANGE_OPS | ({"grade_in", "is_set", "is_not_set"} if graded else set())
        if leaf.op not in allowed:
            raise FilterError(_join(path, "op"), f"a {leaf.kind} score takes one of {', '.join(sorted(allowed))}")
        vpath = _join(path, "value")
        if leaf.op in SET_OPS:
            if leaf.value is not None:
                raise FilterError(vpath, f"{leaf.op} takes no value")
            return leaf
        if leaf.op == "grade_in":
            v = leaf.value
            if not (isinstance(v, list | tuple) and 1 <= len(v) <= 4 and all(g in SCORE_GRADES for g in v)):
                raise FilterError(vpath, "a non-empty list of grades A, B, C, D is required")
            return leaf.model_copy(update={"value": tuple(sorted(set(v)))})
        value = self.number_value(leaf.op, leaf.value, path, frozenset(SCORE_RANGE_OPS))
        if leaf.kind != "engagement":
            return leaf.model_copy(update={"value": value})
        # engagement values go through log2: keep them where floats stay exact enough
        for v in value if isinstance(value, tuple) else (value,):
            if abs(v) > 1e12 or (v != 0 and abs(v) < 1e-6):
                raise FilterError(vpath, "an engagement threshold is 0 or between 0.000001 and 10^12 in size")
        return leaf.model_copy(update={"value": value})

    def window(self, window: Window | None, path: str) -> None:
        if window is None:
            return
        if window.last_days is not None:
            if window.from_ is not None or window.to is not None:
                raise FilterError(path, "give either last_days or from and to")
            return
        if window.from_ is None or window.to is None:
            raise FilterError(path, "give last_days, or both from and to")
        if window.from_ > window.to:
            raise FilterError(_join(path, "to"), "must not be before from")

    def tags(self, op: str, value: object, path: str) -> object:
        if op not in TAG_OPS:
            raise FilterError(_join(path, "op"), f"one of {', '.join(sorted(TAG_OPS))}")
        if op in ("has_tag", "has_no_tag"):
            if not isinstance(value, str) or not value:
                raise FilterError(_join(path, "value"), "a tag is required")
            return value
        if not _is_str_list(value):
            raise FilterError(_join(path, "value"), "a non-empty list of tags is required")
        assert isinstance(value, list | tuple)
        return tuple(value)

    def number_value(self, op: str, value: object, path: str, allowed: frozenset[str]) -> object:
        if op not in allowed:
            raise FilterError(_join(path, "op"), f"one of {', '.join(sorted(allowed))}")
        if op in SET_OPS:
            if value is not None:
                raise FilterError(_join(path, "value"), f"{op} takes no value")
            return None
        if op == "between":
            if not (isinstance(value, list | tuple) and len(value) == 2 and all(_is_number(v) for v in value)):
                raise FilterError(_join(path, "value"), "between takes [low, high] numbers")
            assert isinstance(value, list | tuple)
            if value[0] > value[1]:
                raise FilterError(_join(path, "value"), "low must not be above high")
            return (value[0], value[1])
        if not _is_number(value):
            raise FilterError(_join(path, "value"), "a finite number is required")
        return value

    def date_value(self, op: str, value: object, path: str, *, allow_set: bool = True) -> object:
        allowed = DATE_OPS | SET_OPS if allow_set else DATE_OPS
        if op not in allowed:
            raise FilterError(_join(path, "op"), f"one of {', '.join(sorted(allowed))}")
        vpath = _join(path, "value")
        if op in SET_OPS:
            if value is not None:
                raise FilterError(vpath, f"{op} takes no value")
            return None
        if op in ("before", "after", "on"):
            d = _as_date(value)
            if d is None:
                raise FilterError(vpath, "a date YYYY-MM-DD is required")
            return d
        if op == "between":
            if not (isinstance(value, list | tuple) and len(value) == 2):
                raise FilterError(vpath, "between takes [from, to] dates")
            d1, d2 = _as_date(value[0]), _as_date(value[1])
            if d1 is None or d2 is None:
                raise FilterError(vpath, "between takes [from, to] dates YYYY-MM-DD")
            if d1 > d2:
                raise FilterError(vpath, "from must not be after to")
            return (d1, d2)
        if not _days(value):
            raise FilterError(vpath, f"a whole number of days from 1 to {MAX_DAYS} is required")
        return value

    def property(self, leaf: PropertyCondition, path: str) -> PropertyCondition:
        fpath = _join(path, "field")
        builtins = CONTACT_FIELDS if leaf.type == "contact" else COMPANY_FIELDS
        defs = self.contact_properties if leaf.type == "contact" else self.company_properties
        options: tuple[str, ...] = ()
        if leaf.field.startswith("properties."):
            name = leaf.field.removeprefix("properties.")
            if not _NAME_RE.match(name):
                raise FilterError(fpath, "a property name is letters, digits, '_' and '-'")
            definition = defs.get(name)
            if definition is None:
                raise FilterError(fpath, f"no {leaf.type} property {name!r} is defined")
            ftype: FieldType = definition.type
            options = definition.options
        elif leaf.field in builtins:
            ftype = builtins[leaf.field]
        else:
            raise FilterError(fpath, f"unknown {leaf.type} field; one of {', '.join(builtins)} or properties.<name>")
        if leaf.field_type is not None and leaf.field_type != ftype:
            raise FilterError(_join(path, "field_type"), f"{leaf.field} is a {ftype} field")
        allowed = OPS_BY_TYPE[ftype]
        if leaf.op not in allowed:
            raise FilterError(_join(path, "op"), f"a {ftype} field takes one of {', '.join(sorted(allowed))}")
        value = self.typed_value(ftype, leaf.op, leaf.value, options, path)
        return leaf.model_copy(update={"value": value, "field_type": ftype})

    def typed_value(self, ftype: FieldType, op: str, value: object, options: tuple[str, ...], path: str) -> object:
        vpath = _join(path, "value")
        if op in SET_OPS or op in ("is_true", "is_false"):
            if value is not None:
                raise FilterError(vpath, f"{op} takes no value")
            return None
        if ftype in ("date", "datetime"):
            return self.date_value(op, value, path)
        if ftype == "number":
            return self.number_value(op, value, path, NUMBER_OPS)
        if ftype == "id":
            if op in ("in", "not_in"):
                if not (
                    isinstance(value, list | tuple)
                    and 1 <= len(value) <= MAX_LIST
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                ):
                    raise FilterError(vpath, "a non-empty list of ids is required")
                return tuple(value)
            if not isinstance(value, int) or isinstance(value, bool):
                raise FilterError(vpath, "an id is required")
            return value
        # string, enum, multi_enum
        if op in ("in", "not_in", "contains_any", "contains_all", "contains_none"):
            if not _is_str_list(value, min_len=0):
                raise FilterError(vpath, "a non-empty list of strings is required")
            assert isinstance(value, list | tuple)
            values = tuple(value)
            self.check_options(values, options, vpath, listed=True)
            return values
        min_len = 1 if op in ("contains", "not_contains", "starts_with", "ends_with") else 0
        if not isinstance(value, str) or len(value) < min_len:
            raise FilterError(vpath, "a non-empty string is required" if min_len else "a string is required")
        self.check_options((value,), options, vpath, listed=False)
        return value

    @staticmethod
    def check_options(values: tuple[str, ...], options: tuple[str, ...], path: str, *, listed: bool) -> None:
        if not options:
            return
        known = {ascii_lower(o) for o in options}
        for i, v in enumerate(values):
            if ascii_lower(v) not in known:
                where = _join(path, i) if listed else path
                raise FilterError(where, f"{v!r} is not one of the options {', '.join(options)}")

    def event(self, leaf: EventCondition, path: str) -> EventCondition:
        if not leaf.name or len(leaf.name) > 200:
            raise FilterError(_join(path, "name"), "an event name is required")
        if leaf.op not in EVENT_COUNT_OPS:
            raise FilterError(_join(path, "op"), f"one of {', '.join(sorted(EVENT_COUNT_OPS))}")
        vpath = _join(path, "value")
        if leaf.op in ("did", "did_not"):
            if leaf.value is not None:
                raise FilterError(vpath, f"{leaf.op} takes no value")
        elif leaf.value is None or leaf.value < (1 if leaf.op == "at_least" else 0) or leaf.value > 1_000_000:
            raise FilterError(vpath, "a count (at_least: 1 or more; others: 0 or more) is required")
        where = tuple(self.event_where(flt, _join(_join(path, "where"), i)) for i, flt in enumerate(leaf.where))
        self.window(leaf.window, _join(path, "window"))
        return leaf.model_copy(update={"where": where})

    def event_where(self, flt: EventPropertyFilter, path: str) -> EventPropertyFilter:
        segments = flt.path.split(".")
        if len(segments) > 8 or not all(_PATH_SEGMENT_RE.match(s) for s in segments):
            raise FilterError(_join(path, "path"), "a dotted property path (no quotes or backslashes)")
        if flt.op not in EVENT_WHERE_OPS:
            raise FilterError(_join(path, "op"), f"one of {', '.join(sorted(EVENT_WHERE_OPS))}")
        vpath = _join(path, "value")
        v = flt.value
        if flt.op in ("eq", "neq"):
            if not (isinstance(v, str | bool) or _is_number(v)):
                raise FilterError(vpath, "a string, number or boolean is required")
        elif flt.op == "contains":
            if not isinstance(v, str) or not v:
                raise FilterError(vpath, "a non-empty string is required")
        elif flt.op in ("gt", "lt"):
            if not _is_number(v):
                raise FilterError(vpath, "a finite number is required")
        elif not (
            isinstance(v, list | tuple)
            and 1 <= len(v) <= MAX_LIST
            and all(isinstance(x, str | bool) or _is_number(x) for x in v)
        ):
            raise FilterError(vpath, "a non-empty list of strings, numbers or booleans is required")
        return flt.model_copy(update={"value": tuple(v)}) if isinstance(v, list) else flt


def parse_filter(
    data: object,
    *,
    contact_properties: Mapping[str, PropertyDef] | None = None,
    company_properties: Mapping[str, PropertyDef] | None = None,
) -> Filter:
    """Validate filter JSON against the workspace's property definitions; FilterError names the bad node."""
    return _Parser(contact_properties or {}, company_properties or {}).node(data, "", 0)


def to_json(node: Filter) -> dict[str, Any]:
    """The JSON form of a filter (what is stored; ``parse_filter`` reads it back equal)."""
    return node.model_dump(by_alias=True, mode="json", exclude_none=True, exclude_defaults=False)


# --- walking --------------------------------------------------------------------------------------------------------


def leaves(node: Filter) -> Iterable[tuple[str, Leaf]]:
    """Every leaf with its path."""

    def walk(n: Filter, path: str) -> Iterable[tuple[str, Leaf]]:
        if isinstance(n, And):
            for i, c in enumerate(n.and_):
                yield from walk(c, _join(_join(path, "and"), i))
        elif isinstance(n, Or):
            for i, c in enumerate(n.or_):
                yield from walk(c, _join(_join(path, "or"), i))
        elif isinstance(n, Not):
            yield from walk(n.not_, _join(path, "not"))
        else:
            yield path, n

    return list(walk(node, ""))


def _is_relative(leaf: Leaf) -> bool:
    window = getattr(leaf, "window", None)
    if isinstance(window, Window) and window.last_days is not None:
        return True
    op = getattr(leaf, "op", "")
    return op in ("within_last_days", "more_than_days_ago", "within_next_days")


def dependencies(node: Filter) -> set[str]:
    """The data a filter reads: contact, company, tags, stages, orders, events:<name>, segment:<id>, score:<kind>,
    consent.

    Also "time": the result can change with nothing but the clock (relative dates, windows, engagement decay).
    """
    deps: set[str] = set()
    for _, leaf in leaves(node):
        if isinstance(leaf, PropertyCondition):
            deps.add("contact")
            if leaf.type == "company":
                deps.add("company")
        elif isinstance(leaf, StageCondition):
            deps.add("contact")
        elif isinstance(leaf, StageHistoryCondition):
            deps.update(("contact", "stages"))
        elif isinstance(leaf, TagCondition):
            deps.add("tags")
        elif isinstance(leaf, OrderCountCondition | OrderTotalCondition | OrderDateCondition | BoughtProductCondition):
            deps.add("orders")
        elif isinstance(leaf, EventCondition):
            deps.add(f"events:{leaf.name}")
        elif isinstance(leaf, SegmentCondition):
            deps.add(f"segment:{leaf.value}")
        elif isinstance(leaf, ConsentCondition):
            deps.add("consent")
        elif isinstance(leaf, ScoreCondition):
            deps.add(f"score:{leaf.kind}")
            if leaf.kind == "engagement":  # the score decays with the clock
                deps.add("time")
        if _is_relative(leaf):
            deps.add("time")
    return deps


def segment_refs(node: Filter) -> list[tuple[str, int]]:
    """The segments a filter uses, with the paths of the conditions that use them."""
    return [(path, leaf.value) for path, leaf in leaves(node) if isinstance(leaf, SegmentCondition)]


def check_segment_refs(node: Filter, segment_id: int | None, get_filter: Callable[[int], Filter | None]) -> None:
    """Refuse a filter (of segment ``segment_id``; None for a new one) that would use itself, even indirectly.

    ``get_filter(id)`` gives another segment's filter (None for a static list) and raises KeyError for an
    unknown segment.
    """
    seen: dict[int, Filter | None] = {}

    def load(sid: int, path: str) -> Filter | None:
        if sid not in seen:
            try:
                seen[sid] = get_filter(sid)
            except KeyError:
                raise FilterError(path, f"segment {sid} does not exist") from None
        return seen[sid]

    def visit(sid: int, chain: tuple[int, ...], path: str) -> None:
        if segment_id is not None and sid == segment_id:
            route = " → ".join(str(s) for s in (segment_id, *chain))
            raise FilterError(path, f"segment {segment_id} would use itself ({route})")
        if sid in chain[:-1]:
            route = " → ".join(str(s) for s in chain)
            raise FilterError(path, f"segments use each other in a cycle ({route})")
        target = load(sid, path)
        if target is None:
            return
        for _, ref in segment_refs(target):
            visit(ref, (*chain, ref), path)

    for path, ref in segment_refs(node):
        visit(ref, (ref,), _join(path, "value"))
