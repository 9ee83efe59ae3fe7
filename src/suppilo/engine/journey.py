"""Journeys: the definition document, its validation, a Mermaid diagram, and the step machine.

A journey is a graph of steps keyed by id, entered at ``start``. The step machine (``advance``) is a pure function:
given the definition, where an enrollment stands (``Position``), what the caller already knows (``Facts``: filter
results, whether an awaited event arrived, a webhook's outcome) and ``now``, it walks steps until the enrollment has to
wait, ends, or needs a fact it does not have yet, and returns the effects to carry out. The caller (the journeys
service) carries out the effects and stores the new position in one transaction, so a step's effects and the
enrollment's advance commit together.

Nothing here reads a clock, a database or a random source: time comes in as ``now``, randomness as a hash of the
journey, step and contact ids (so a split assignment is sticky and reproducible), time zones as IANA names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from suppilo.engine.filters import EventPropertyFilter

MAX_STEPS = 200
MAX_DAYS = 3650
_STEP_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HHMM_RE = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class JourneyError(ValueError):
    """An invalid journey definition: ``path`` names the bad part (``steps.welcome.next``), ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or '<root>'}: {reason}")
        self.path = path
        self.reason = reason


class _M(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Duration(_M):
    """A span of days, hours and minutes (each ≥ 0)."""

    days: int = Field(default=0, ge=0, le=MAX_DAYS)
    hours: int = Field(default=0, ge=0, le=MAX_DAYS * 24)
    minutes: int = Field(default=0, ge=0, le=MAX_DAYS * 24 * 60)

    def delta(self) -> timedelta:
        return timedelta(days=self.days, hours=self.hours, minutes=self.minutes)


def _hhmm(value: str) -> str:
    if not _HHMM_RE.match(value):
        raise ValueError("a time of day HH:MM (00:00-23:59) is required")
    return value


# --- triggers -------------------------------------------------------------------------------------------------------


class EventTrigger(_M):
    """Enrol when the contact does ``event`` (every ``where`` filter passing)."""

    type: Literal["event"]
    event: str = Field(min_length=1, max_length=200)
    where: tuple[EventPropertyFilter, ...] = ()


class SegmentTrigger(_M):
    """Enrol when the contact enters (or exits) segment ``segment_id``."""

    type: Literal["segment_entered", "segment_exited"]
    segment_id: int = Field(ge=1)


class StageTrigger(_M):
    """Enrol when the contact's lifecycle stage changes (to ``to``, from ``from``, when given)."""

    type: Literal["stage_changed"]
    to: str | None = None
    from_: str | None = Field(default=None, alias="from")


class DateTrigger(_M):
    """Enrol ``offset_days`` after (negative: before) a date property, or on its anniversary, at ``at`` local time."""

    type: Literal["date_property"]
    property: str = Field(min_length=1, max_length=100)
    offset_days: int = Field(default=0, ge=-366, le=366)
    anniversary: bool = False
    at: str = "09:00"

    _check_at = field_validator("at")(_hhmm)


class ScheduleTrigger(_M):
    """Enrol a segment's members (or nobody but the API's) every day / week / month at ``at`` in the workspace zone."""

    type: Literal["schedule"]
    every: Literal["day", "week", "month"]
    at: str = "09:00"
    weekday: int | None = Field(default=None, ge=1, le=7)
    day_of_month: int | None = Field(default=None, ge=1, le=28)
    segment_id: int = Field(ge=1)

    _check_at = field_validator("at")(_hhmm)

    @model_validator(mode="after")
    def _fields_for_every(self) -> ScheduleTrigger:
        if self.every == "week" and self.weekday is None:
            raise ValueError("a weekly schedule needs weekday (1 = Monday ... 7 = Sunday)")
        if self.every == "month" and self.day_of_month is None:
            raise ValueError("a monthly schedule needs day_of_month (1-28)")
        return self


class ManualTrigger(_M):
    """Contacts are enrolled through the API, the CLI or another journey only."""

    type: Literal["manual"]


Trigger = Annotated[
    EventTrigger | SegmentTrigger | StageTrigger | DateTrigger | ScheduleTrigger | ManualTrigger,
    Field(discriminator="type"),
]


class Entry(_M):
    """Who may enter: re-entry policy, an exclusion segment and limits."""

    reentry: Literal["never", "always", "after"] = "never"
    reentry_days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    exclusion_segment_id: int | None = Field(default=None, ge=1)
    max_entries: int | None = Field(default=None, ge=1)
    max_entries_per_day: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _days_for_after(self) -> Entry:
        if self.reentry == "after" and self.reentry_days is None:
            raise ValueError("reentry 'after' needs reentry_days")
        return self


class Goal(_M):
    """The conversion: a filter that becomes true, or an event; reaching it ends the enrollment as converted.

    Holdout contacts are watched for the goal for ``window_days`` so the journey's lift can be measured.
    """

    filter: dict[str, Any] | None = None
    event: str | None = Field(default=None, min_length=1, max_length=200)
    where: tuple[EventPropertyFilter, ...] = ()
    window_days: int = Field(default=30, ge=1, le=365)

    @model_validator(mode="after")
    def _one_condition(self) -> Goal:
        if self.filter is None and self.event is None:
            raise ValueError("a goal needs a filter or an event")
        return self


# --- steps ----------------------------------------------------------------------------------------------------------


class SendEmail(_M):
    """Send template ``template`` (in the contact's language) through the outbox.

    ``kind`` defaults to the template's kind (a transactional mail skips marketing consent; the template must agree).
    ``include`` puts the contact's latest order or cart into the template's context (``owner``: the contact owner's
    name as ``message.owner_name``; ``referral``: the contact's referral code and link; ``recommendations``:
    products for the contact); ``message`` adds fixed values
    the template reads as ``message.<name>`` (e.g. the interest a nurture mail is about).
    """

    type: Literal["send_email"]
    template: str = Field(min_length=1, max_length=100)
    kind: Literal["marketing", "transactional"] | None = None
    topic: str = Field(default="marketing", min_length=1, max_length=64)
    priority: int = Field(default=0, ge=-100, le=100)
    include: tuple[Literal["order", "cart", "owner", "referral", "recommendations"], ...] = ()
    message: dict[str, str | int | float | bool] = Field(default_factory=dict)
    next: str | None = None


class Wait(_M):
    """Wait a fixed duration."""

    type: Literal["wait"]
    duration: Duration
    next: str | None = None

    @model_validator(mode="after")
    def _positive(self) -> Wait:
        if self.duration.delta() <= timedelta(0):
            raise ValueError("a wait needs a positive duration")
        return self


class WaitUntil(_M):
    """Wait until the next ``time`` of day (on one of ``weekdays``, ISO 1 = Monday) in the contact's time zone."""

    type: Literal["wait_until"]
    time: str
    weekdays: tuple[int, ...] | None = None
    next: str | None = None

    _check_time = field_validator("time")(_hhmm)

    @field_validator("weekdays")
    @classmethod
    def _days(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or any(d < 1 or d > 7 for d in v)):
            raise ValueError("weekdays are ISO numbers 1 (Monday) ... 7 (Sunday), at least one")
        return v


class WaitForEvent(_M):
    """Wait until the contact does ``event``; after ``timeout`` go to ``timeout_next`` instead."""

    type: Literal["wait_for_event"]
    event: str = Field(min_length=1, max_length=200)
    where: tuple[EventPropertyFilter, ...] = ()
    timeout: Duration
    next: str | None = None
    timeout_next: str | None = None

    @model_validator(mode="after")
    def _positive(self) -> WaitForEvent:
        if self.timeout.delta() <= timedelta(0):
            raise ValueError("wait_for_event needs a positive timeout")
        return self


class BranchArm(_M):
    filter: dict[str, Any]
    next: str | None = None


class Branch(_M):
    """Go to the first arm whose filter the contact matches, else to ``else``."""

    type: Literal["branch"]
    arms: tuple[BranchArm, ...] = Field(min_length=1, max_length=20)
    else_: str | None = Field(alias="else")


class Variant(_M):
    name: str = Field(min_length=1, max_length=40)
    weight: float = Field(gt=0)
    next: str | None = None


class Split(_M):
    """A random (weighted) split, sticky per contact; ``holdout_percent`` of contacts get nothing and are watched."""

    type: Literal["split"]
    variants: tuple[Variant, ...] = Field(min_length=1, max_length=10)
    holdout_percent: float = Field(default=0, ge=0, lt=100)

    @model_validator(mode="after")
    def _unique(self) -> Split:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names) or "holdout" in names:
            raise ValueError("variant names must be unique and not 'holdout'")
        return self


class UpdateContact(_M):
    """Set properties (``name`` or ``properties.name``), add or remove tags, move the lifecycle stage, and add
    ``score_points`` to the contact's ``journey_points`` number property (negative points subtract)."""

    type: Literal["update_contact"]
    set: dict[str, Any] = Field(default_factory=dict)
    add_tags: tuple[str, ...] = ()
    remove_tags: tuple[str, ...] = ()
    stage: str | None = None
    score_points: int | None = Field(default=None, ge=-1000, le=1000)
    next: str | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateContact:
        if not (self.set or self.add_tags or self.remove_tags or self.stage or self.score_points):
            raise ValueError("update_contact needs set, add_tags, remove_tags, stage or score_points")
        return self


class CreateTask(_M):
    """A follow-up task for the contact's owner (the hand-off to sales), due after ``due_in`` — counted in the
    owner's working hours when ``working_hours`` (a 4-hour target set on Friday at 16:00 is due Monday at 12:00)."""

    type: Literal["create_task"]
    title: str = Field(min_length=1, max_length=300)
    kind: Literal["call", "meeting", "email", "todo"] = "call"
    due_in: Duration = Field(default_factory=lambda: Duration(hours=4))
    working_hours: bool = False
    next: str | None = None


class CallWebhook(_M):
    """POST a signed JSON payload to ``url``; after the retries are used up go to ``on_error`` (or end as failed)."""

    type: Literal["webhook"]
    url: str = Field(min_length=8, max_length=2000)
    next: str | None = None
    on_error: str | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not (v.startswith("https://") or v.startswith("http://")):
            raise ValueError("a webhook url starts with https:// or http://")
        return v


class ListChange(_M):
    """Add the contact to, or remove it from, a static list."""

    type: Literal["list"]
    action: Literal["add", "remove"]
    list_id: int = Field(ge=1)
    next: str | None = None


class IssueCoupon(_M):
    """Issue a single-use coupon of offer ``offer`` (its value rule decides the value); templates see it."""

    type: Literal["coupon"]
    offer: str = Field(min_length=1, max_length=100)
    next: str | None = None


class End(_M):
    """The end of the journey."""

    type: Literal["end"]


Step = Annotated[
    SendEmail
    | Wait
    | WaitUntil
    | WaitForEvent
    | Branch
    | Split
    | UpdateContact
    | CreateTask
    | CallWebhook
    | ListChange
    | IssueCoupon
    | End,
    Field(discriminator="type"),
]
WAIT_TYPES = ("wait", "wait_until", "wait_for_event")


class Definition(_M):
    """A journey definition document (stored as JSON; YAML accepted by the adapters)."""

    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    trigger: Trigger
    entry: Entry = Field(default_factory=Entry)
    goal: Goal | None = None
    start: str
    steps: dict[str, Step] = Field(min_length=1, max_length=MAX_STEPS)


_DEFINITION = TypeAdapter(Definition)


def _loc_path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def successors(step: Any) -> list[tuple[str, str | None]]:
    """(path inside the step, next step id or None for the end) for every way out of ``step``."""
    if isinstance(step, Branch):
        return [*((f"arms[{i}].next", a.next) for i, a in enumerate(step.arms)), ("else", step.else_)]
    if isinstance(step, Split):
        return [(f"variants[{i}].next", v.next) for i, v in enumerate(step.variants)]
    if isinstance(step, WaitForEvent):
        return [("next", step.next), ("timeout_next", step.timeout_next)]
    if isinstance(step, CallWebhook):
        return [("next", step.next), ("on_error", step.on_error)]
    if isinstance(step, End):
        return []
    return [("next", step.next)]


def parse_definition(
    raw: object,
    *,
    check_filter: Callable[[object, str], None] | None = None,
    known_templates: set[str] | None = None,
    known_stages: set[str] | None = None,
) -> Definition:
    """Validate a definition document; JourneyError names the first bad part.

    Beyond the shape: every ``next`` names a step, every step is reachable from ``start``, every loop contains a wait,
    templates and stages exist (when the caller passes the known ones) and filters are valid (``check_filter``).
    """
    if not isinstance(raw, Mapping):
        raise JourneyError("", "a journey definition is a JSON object")
    try:
        defn = _DEFINITION.validate_python(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p in _STEP_TAGS)]
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise JourneyError(_loc_path(loc), msg) from None
    for sid in defn.steps:
        if not _STEP_ID_RE.match(sid):
            raise JourneyError(f"steps.{sid}", "a step id is 1-64 letters, digits, '_' or '-'")
    if defn.start not in defn.steps:
        raise JourneyError("start", f"no step {defn.start!r}")
    for sid, step in defn.steps.items():
        for where, target in successors(step):
            if target is not None and target not in defn.steps:
                raise JourneyError(f"steps.{sid}.{where}", f"no step {target!r}")
        if known_templates is not None and isinstance(step, SendEmail) and step.template not in known_templates:
            raise JourneyError(f"steps.{sid}.template", f"unknown template {step.template!r}")
        if (
            known_stages is not None
            and isinstance(step, UpdateContact)
            and step.stage is not None
            and step.stage not in known_stages
        ):
            raise JourneyError(f"steps.{sid}.stage", f"unknown lifecycle stage {step.stage!r}")
        if check_filter is not None and isinstance(step, Branch):
            for i, arm in enumerate(step.arms):
                check_filter(arm.filter, f"steps.{sid}.arms[{i}].filter")
    if check_filter is not None and defn.goal is not None and defn.goal.filter is not None:
        check_filter(defn.goal.filter, "goal.filter")
    reachable = _reachable(defn)
    for sid in defn.steps:
        if sid not in reachable:
            raise JourneyError(f"steps.{sid}", "unreachable from start")
    loop = _loop_without_wait(defn)
    if loop:
        raise JourneyError(f"steps.{loop[0]}", "a loop without a wait: " + " -> ".join([*loop, loop[0]]))
    return defn


_STEP_TAGS = {
    "send_email",
    "wait",
    "wait_until",
    "wait_for_event",
    "branch",
    "split",
    "update_contact",
    "create_task",
    "webhook",
    "list",
    "coupon",
    "end",
    "event",
    "segment_entered",
    "segment_exited",
    "stage_changed",
    "date_property",
    "schedule",
    "manual",
}


def _reachable(defn: Definition) -> set[str]:
    seen: set[str] = set()
    stack = [defn.start]
    while stack:
        sid = stack.pop()
        if sid in seen:
            continue
        seen.add(sid)
        stack.extend(t for _, t in successors(defn.steps[sid]) if t is not None)
    return seen


def _loop_without_wait(defn: Definition) -> list[str]:
    """A cycle through steps that never wait (those would spin forever), or []."""
    graph = {
        sid: [t for _, t in successors(step) if t is not None and defn.steps[t].type not in WAIT_TYPES]
        for sid, step in defn.steps.items()
        if step.type not in WAIT_TYPES
    }
    color: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        color[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if color.get(nxt) == 1:
                return path[path.index(nxt) :]
            if color.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        color[node] = 2
        path.pop()
        return []

    for sid in graph:
        if color.get(sid) is None:
            found = visit(sid)
            if found:
                return found
    return []


def definition_json(defn: Definition) -> dict[str, Any]:
    """The stored JSON form (``parse_definition`` reads it back equal)."""
    return defn.model_dump(by_alias=True, mode="json", exclude_none=True)


# --- diagram --------------------------------------------------------------------------------------------------------


def _label(step: Any) -> str:
    if isinstance(step, SendEmail):
        text = f"Email: {step.template}"
    elif isinstance(step, Wait):
        d = step.duration
        text = "Wait " + " ".join(f"{n}{u}" for n, u in ((d.days, "d"), (d.hours, "h"), (d.minutes, "min")) if n)
    elif isinstance(step, WaitUntil):
        text = f"Wait until {step.time}" + (f" on {','.join(map(str, step.weekdays))}" if step.weekdays else "")
    elif isinstance(step, WaitForEvent):
        text = f"Wait for {step.event}"
    elif isinstance(step, Branch):
        text = "Branch"
    elif isinstance(step, Split):
        text = "Split" + (f" (holdout {step.holdout_percent:g}%)" if step.holdout_percent else "")
    elif isinstance(step, UpdateContact):
        text = "Update contact"
    elif isinstance(step, CreateTask):
        text = f"Task: {step.title}"
    elif isinstance(step, CallWebhook):
        text = "Webhook"
    elif isinstance(step, ListChange):
        text = f"{'Add to' if step.action == 'add' else 'Remove from'} list {step.list_id}"
    elif isinstance(step, IssueCoupon):
        text = f"Coupon: {step.offer}"
    else:
        text = "End"
    return text.replace('"', "'").replace("<", "‹").replace(">", "›")


def to_mermaid(defn: Definition, counts: Mapping[str, int] | None = None) -> str:
    """A Mermaid flowchart of the journey; ``counts`` (contacts per step) are shown in the boxes when given."""
    ids = {sid: f"s{i}" for i, sid in enumerate(defn.steps)}
    lines = ["flowchart TD", '  trigger(["Trigger: ' + defn.trigger.type + '"])', f"  trigger --> {ids[defn.start]}"]
    ended = False
    for sid, step in defn.steps.items():
        label = _label(step)
        if counts is not None:
            label += f" · {counts.get(sid, 0)}"
        shape = ('{"', '"}') if step.type in ("branch", "split") else ('["', '"]')
        lines.append(f"  {ids[sid]}{shape[0]}{sid}: {label}{shape[1]}")
        for where, target in successors(step):
            edge = where.split(".")[0].split("[")[0]
            text = ""
            if isinstance(step, Branch):
                text = "else" if where == "else" else f"arm {where[5 : where.index(']')]}"
            elif isinstance(step, Split):
                text = step.variants[int(where[9 : where.index("]")])].name
            elif edge in ("timeout_next", "on_error"):
                text = "timeout" if edge == "timeout_next" else "error"
            dest = ids[target] if target is not None else "done"
            ended = ended or target is None
            lines.append(f"  {ids[sid]} -->{'|' + text + '|' if text else ''} {dest}")
    if ended:
        lines.append('  done(["End"])')
    return "\n".join(lines) + "\n"


# --- time -----------------------------------------------------------------------------------------------------------


def zone(name: str | None, fallback: str = "UTC") -> ZoneInfo:
    """The IANA zone ``name``, else ``fallback``, else UTC."""
    for candidate in (name, fallback, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The instant wall-clock ``at`` on ``day`` happens in ``tz``: the first one when the clock falls back, the first
    existing minute after the gap when the clock springs forward."""
    wall = datetime.combine(day, at)
    for _ in range(24 * 60):
        candidate = wall.replace(tzinfo=tz, fold=0)
        back = candidate.astimezone(ZoneInfo("UTC")).astimezone(tz)
        if back.replace(tzinfo=None) == wall:
            return candidate.astimezone(ZoneInfo("UTC"))
        wall += timedelta(minutes=1)
    raise ValueError("no valid local time found")  # pragma: no cover - no zone has a day-long gap


def next_local_time(after: datetime, at: str, tz: ZoneInfo, weekdays: Iterable[int] | None = None) -> datetime:
    """The first instant strictly after ``after`` when the wall clock in ``tz`` shows ``at`` on an allowed weekday."""
    hh, mm = (int(x) for x in at.split(":"))
    allowed = set(weekdays) if weekdays else set(range(1, 8))
    day = after.astimezone(tz).date()
    for offset in range(0, 9):
        d = day + timedelta(days=offset)
        if d.isoweekday() not in allowed:
            continue
        instant = local_instant(d, time(hh, mm), tz)
        if instant > after:
            return instant
    raise ValueError("no allowed weekday")  # pragma: no cover - weekdays is never empty


# --- randomness -----------------------------------------------------------------------------------------------------


def bucket(*parts: object) -> float:
    """A number in [0, 1) fixed by ``parts`` (journey, step, contact): sticky, uniform, reproducible."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_variant(step: Split, u: float) -> str:
    """The variant (or ``holdout``) a contact with bucket ``u`` gets."""
    hold = step.holdout_percent / 100
    if u < hold:
        return "holdout"
    rest = (u - hold) / (1 - hold)
    total = sum(v.weight for v in step.variants)
    acc = 0.0
    for v in step.variants:
        acc += v.weight / total
        if rest < acc:
            return v.name
    return step.variants[-1].name


# --- the step machine -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    """Where an enrollment stands: at ``step`` since ``since``; visits per step; split assignments."""

    step: str
    since: datetime
    visits: Mapping[str, int] = field(default_factory=dict)
    variants: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the caller knows for this advance.

    ``filters``: results of filters by key (``goal``, ``<step>#<arm>``); a missing key is asked for.
    ``event_arrived``: the event awaited by the current wait_for_event step arrived.
    ``webhook``: the outcome of the current webhook step's call (True ok, False given up), None not called yet.
    ``goal_reached``: the goal event arrived.
    """

    filters: Mapping[str, bool] = field(default_factory=dict)
    event_arrived: bool = False
    webhook: bool | None = None
    goal_reached: bool = False


@dataclass(frozen=True, slots=True)
class Effect:
    """One thing to do, caused by visit ``visit`` of step ``step_id``; ``key`` is unique per enrollment."""

    step_id: str
    visit: int
    step: Any

    @property
    def key(self) -> str:
        return f"{self.step_id}:{self.visit}"


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A line of the enrollment's timeline."""

    step_id: str
    outcome: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Advance:
    """The result of ``advance``.

    ``status``: ``waiting`` (until ``due_at``; ``wait_event`` names an awaited event), ``ended`` (``end_reason``
    completed | goal | holdout | failed | stuck), ``needs_filters`` (evaluate ``needs`` and call again), or
    ``needs_webhook`` (call the webhook of the current step and call again with its outcome).
    """

    status: Literal["waiting", "ended", "needs_filters", "needs_webhook"]
    position: Position
    effects: tuple[Effect, ...] = ()
    log: tuple[LogEntry, ...] = ()
    due_at: datetime | None = None
    wait_event: WaitForEvent | None = None
    end_reason: str | None = None
    needs: Mapping[str, dict[str, Any]] = field(default_factory=dict)


def enter(defn: Definition, now: datetime) -> Position:
    """The position of a contact that has just entered."""
    return Position(step=defn.start, since=now, visits={defn.start: 1})


def _move(pos: Position, target: str, now: datetime) -> Position:
    visits = dict(pos.visits)
    visits[target] = visits.get(target, 0) + 1
    return replace(pos, step=target, since=now, visits=visits)


def advance(
    defn: Definition,
    pos: Position,
    facts: Facts,
    now: datetime,
    *,
    journey_id: int,
    contact_id: int,
    tz: ZoneInfo,
) -> Advance:
    """Walk from ``pos`` until the enrollment waits, ends, or needs a fact; see ``Advance``.

    Effects are returned in order, for the steps passed in this call. When the result asks for facts, it returns the
    effects gathered so far with the position of the step that needs them: the caller carries the effects out, finds
    the facts (so a branch sees what an earlier update changed) and calls again from that position.
    """
    effects: list[Effect] = []
    log: list[LogEntry] = []
    if facts.goal_reached or facts.filters.get("goal") is True:
        return Advance("ended", pos, (), (LogEntry(pos.step, "goal", now),), end_reason="goal")
    if defn.goal is not None and defn.goal.filter is not None and "goal" not in facts.filters:
        return Advance("needs_filters", pos, needs={"goal": defn.goal.filter})
    current = pos
    first = True
    event_arrived = facts.event_arrived
    webhook = facts.webhook
    for _ in range(len(defn.steps) * 2 + 2):
        sid = current.step
        step = defn.steps[sid]
        visit = current.visits.get(sid, 1)
        target: str | None
        if isinstance(step, Wait):
            due = current.since + step.duration.delta()
            if due > now:
                return Advance("waiting", current, tuple(effects), tuple(log), due_at=due)
            target = step.next
            log.append(LogEntry(sid, "waited", now))
        elif isinstance(step, WaitUntil):
            due = next_local_time(current.since, step.time, tz, step.weekdays)
            if due > now:
                return Advance("waiting", current, tuple(effects), tuple(log), due_at=due)
            target = step.next
            log.append(LogEntry(sid, "waited", now))
        elif isinstance(step, WaitForEvent):
            if first and event_arrived:
                target = step.next
                log.append(LogEntry(sid, f"event:{step.event}", now))
            else:
                due = current.since + step.timeout.delta()
                if due > now:
                    return Advance("waiting", current, tuple(effects), tuple(log), due_at=due, wait_event=step)
                target = step.timeout_next
                log.append(LogEntry(sid, "timeout", now))
        elif isinstance(step, Branch):
            keys = [f"{sid}#{i}" for i in range(len(step.arms))]
            missing = {k: arm.filter for k, arm in zip(keys, step.arms, strict=True) if k not in facts.filters}
            if missing:
                # Effects so far are carried out first, so the filters see what earlier steps changed.
                return Advance("needs_filters", current, tuple(effects), tuple(log), needs=missing)
            chosen = next((i for i, k in enumerate(keys) if facts.filters[k]), None)
            target = step.else_ if chosen is None else step.arms[chosen].next
            log.append(LogEntry(sid, "else" if chosen is None else f"arm:{chosen}", now))
        elif isinstance(step, Split):
            name = current.variants.get(sid) or choose_variant(step, bucket(journey_id, sid, contact_id))
            current = replace(current, variants={**current.variants, sid: name})
            log.append(LogEntry(sid, f"variant:{name}", now))
            if name == "holdout":
                return Advance("ended", current, tuple(effects), tuple(log), end_reason="holdout")
            target = next(v.next for v in step.variants if v.name == name)
        elif isinstance(step, CallWebhook):
            if not first or webhook is None:
                # Effects before the webhook are carried out first; the call is made from the stored position.
                return Advance("needs_webhook", current, tuple(effects), tuple(log))
            target = step.next if webhook else step.on_error
            log.append(LogEntry(sid, "webhook:ok" if webhook else "webhook:failed", now))
            if not webhook and step.on_error is None:
                return Advance("ended", current, tuple(effects), tuple(log), end_reason="failed")
        elif isinstance(step, End):
            log.append(LogEntry(sid, "end", now))
            return Advance("ended", current, tuple(effects), tuple(log), end_reason="completed")
        else:
            effects.append(Effect(sid, visit, step))  # the caller records it with its outcome
            target = step.next
        first = False
        event_arrived = False
        webhook = None
        if target is None:
            return Advance("ended", current, tuple(effects), tuple(log), end_reason="completed")
        current = _move(current, target, now)
    return Advance("ended", current, tuple(effects), tuple(log), end_reason="stuck")


def wait_steps(defn: Definition) -> dict[str, WaitForEvent]:
    """The wait_for_event steps by id."""
    return {sid: s for sid, s in defn.steps.items() if isinstance(s, WaitForEvent)}
