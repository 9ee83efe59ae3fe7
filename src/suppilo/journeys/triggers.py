"""What starts and wakes journeys: scanners over the event log and the stage-change history, and the clock
(schedules, date properties).

A scanner reads an append-only table in id order from a stored cursor, after the rows were committed (work is handed
on only after commit; see ``suppilo.events.stream`` for ids that commit out of order). Everything a scanner does is
keyed (the entry key of an enrollment is the event's id), so reading a row twice changes nothing.
"""

from __future__ import annotations

import time as _time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from suppilo.contacts.models import Contact, StageChange
from suppilo.db.base import utcnow
from suppilo.engine import journey as jengine
from suppilo.engine.filter_eval import event_property_matches
from suppilo.events.models import Event
from suppilo.events.stream import lock_cursor, read
from suppilo.journeys.models import Enrollment, Journey, JourneyVersion
from suppilo.journeys.service import _next_schedule, definition_of, enrol, enrol_segment, parse_stored
from suppilo.workspaces.models import Workspace

SCAN_LIMIT = 5000


@dataclass
class _Interest:
    """What the active journeys of the installation listen to."""

    triggers: dict[tuple[int, str], list[tuple[Journey, jengine.Definition]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    waits: dict[tuple[int, str], list[tuple[int, int, str, jengine.WaitForEvent]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    goals: dict[tuple[int, str], list[tuple[Journey, jengine.Goal]]] = field(default_factory=lambda: defaultdict(list))
    stage: dict[int, list[tuple[Journey, jengine.Definition]]] = field(default_factory=lambda: defaultdict(list))

    def names(self) -> set[tuple[int, str]]:
        return set(self.triggers) | set(self.waits) | set(self.goals)


def _interest(session: Session) -> _Interest:
    out = _Interest()
    journeys = list(session.scalars(select(Journey).where(Journey.status.in_(("active", "paused")))))
    # Every version of these journeys in one read (contacts can wait in any version still in use).
    defs: dict[tuple[int, int], jengine.Definition] = {
        (jid, v): parse_stored(jid, v, raw)
        for jid, v, raw in session.execute(
            select(JourneyVersion.journey_id, JourneyVersion.version, JourneyVersion.definition).where(
                JourneyVersion.journey_id.in_([j.id for j in journeys])
            )
        )
    }
    for j in journeys:
        defn = defs[(j.id, j.current_version)]
        if j.status == "active":
            trig = defn.trigger
            if isinstance(trig, jengine.EventTrigger):
                out.triggers[(j.workspace_id, trig.event)].append((j, defn))
            elif isinstance(trig, jengine.SegmentTrigger):
                name = "segment.entered" if trig.type == "segment_entered" else "segment.exited"
                out.triggers[(j.workspace_id, name)].append((j, defn))
            elif isinstance(trig, jengine.StageTrigger):
                out.stage[j.workspace_id].append((j, defn))
        if defn.goal is not None and defn.goal.event is not None:
            out.goals[(j.workspace_id, defn.goal.event)].append((j, defn.goal))
    workspace_of = {j.id: j.workspace_id for j in journeys}
    for (jid, v), vdef in defs.items():
        for sid, step in jengine.wait_steps(vdef).items():
            out.waits[(workspace_of[jid], step.event)].append((jid, v, sid, step))
    return out


def scan_events(session: Session, *, limit: int = SCAN_LIMIT, clock: Callable[[], float] = _time.time) -> int:
    """Enrol contacts whose events trigger journeys, wake those waiting for an event, mark goals; returns rows read."""
    events_t = Event.__table__
    cursor = lock_cursor(session, "journeys.events", events_t)
    rows = read(
        session,
        cursor,
        events_t,
        [events_t.c.workspace_id, events_t.c.contact_id, events_t.c.name],
        limit,
        clock,
    )
    if not rows:
        return 0
    interest = _interest(session)
    names = interest.names()
    hits = [r for r in rows if r[2] is not None and (r[1], r[3]) in names]
    if not hits:
        return len(rows)
    props: dict[int, dict[str, Any]] = dict(
        session.execute(select(Event.id, Event.properties).where(Event.id.in_([r[0] for r in hits]))).tuples().all()
    )
    times = {
        eid: (occurred_at, received_at)
        for eid, occurred_at, received_at in session.execute(
            select(Event.id, Event.occurred_at, Event.received_at).where(Event.id.in_([r[0] for r in hits]))
        )
    }
    now = utcnow()
    to_enrol: dict[int, list[tuple[int, str]]] = defaultdict(list)
    journeys: dict[int, tuple[Journey, jengine.Definition]] = {}
    for eid, ws, contact_id, name in hits:
        properties = props.get(eid) or {}
        _, received_at = times.get(eid, (now, now))
        for journey, defn in interest.triggers.get((ws, name), []):
            if journey.activated_at is not None and received_at < journey.activated_at:
                continue  # an event from before the journey was switched on
            trig = defn.trigger
            if isinstance(trig, jengine.EventTrigger):
                if not all(event_property_matches(f, properties) for f in trig.where):
                    continue
            elif isinstance(trig, jengine.SegmentTrigger) and properties.get("segment_id") != trig.segment_id:
                continue
            journeys[journey.id] = (journey, defn)
            to_enrol[journey.id].append((contact_id, f"event:{eid}"))
        waits = interest.waits.get((ws, name), [])
        if waits:
            _wake(session, ws, contact_id, name, properties, waits, now)
        for journey, goal in interest.goals.get((ws, name), []):
            if all(event_property_matches(f, properties) for f in goal.where):
                _goal(session, journey, goal, contact_id, received_at, now)
    for jid, pairs in to_enrol.items():
        journey, defn = journeys[jid]
        enrol(session, journey, pairs, now, defn=defn)
    return len(rows)


def _wake(
    session: Session,
    workspace_id: int,
    contact_id: int,
    name: str,
    properties: dict[str, Any],
    waits: list[tuple[int, int, str, jengine.WaitForEvent]],
    now: datetime,
) -> None:
    candidates = session.execute(
        select(Enrollment.id, Enrollment.journey_id, Enrollment.version, Enrollment.step, Enrollment.step_since).where(
            Enrollment.workspace_id == workspace_id,
            Enrollment.contact_id == contact_id,
            Enrollment.status == "active",
            Enrollment.phase == "step",
            Enrollment.wait_event == name,
        )
    ).all()
    steps = {(jid, v, sid): step for jid, v, sid, step in waits}
    for eid, jid, version, step_id, since in candidates:
        step = steps.get((jid, version, step_id))
        if step is None or not all(event_property_matches(f, properties) for f in step.where):
            continue
        # Only if it still waits at the same step since the same moment (the runner may have moved it meanwhile).
        session.execute(
            update(Enrollment)
            .where(Enrollment.id == eid, Enrollment.step == step_id, Enrollment.step_since == since)
            .where(Enrollment.status == "active")
            .values(event_arrived=True, due_at=now)
        )


def _goal(session: Session, journey: Journey, goal: jengine.Goal, contact_id: int, at: datetime, now: datetime) -> None:
    """The goal event arrived: an active treatment enrollment ends as converted; a holdout one, or one that already
    finished its steps, is counted as converted when the event falls within the goal window of its entry."""
    base = (
        update(Enrollment)
        .where(Enrollment.workspace_id == journey.workspace_id, Enrollment.journey_id == journey.id)
        .where(Enrollment.contact_id == contact_id, Enrollment.converted_at.is_(None))
    )
    session.execute(
        base.where(Enrollment.status == "active", Enrollment.group == "treatment").values(
            goal_reached=True, converted_at=at, due_at=now
        )
    )
    window = base.where(Enrollment.entered_at >= at - timedelta(days=goal.window_days), Enrollment.entered_at <= at)
    session.execute(window.where(Enrollment.status == "active", Enrollment.group == "holdout").values(converted_at=at))
    session.execute(window.where(Enrollment.status == "ended").values(converted_at=at))


def scan_stage_changes(session: Session, *, limit: int = SCAN_LIMIT, clock: Callable[[], float] = _time.time) -> int:
    """Enrol contacts whose lifecycle stage changed into journeys with a stage trigger; returns rows read."""
    t = StageChange.__table__
    cursor = lock_cursor(session, "journeys.stage_changes", t)
    cols = [t.c.workspace_id, t.c.contact_id, t.c.from_stage, t.c.to_stage, t.c.changed_at]
    rows = read(session, cursor, t, cols, limit, clock)
    if not rows:
        return 0
    interest = _interest(session)
    now = utcnow()
    to_enrol: dict[int, list[tuple[int, str]]] = defaultdict(list)
    journeys: dict[int, tuple[Journey, jengine.Definition]] = {}
    for cid, ws, contact_id, from_stage, to_stage, changed_at in rows:
        for journey, defn in interest.stage.get(ws, []):
            if journey.activated_at is not None and changed_at < journey.activated_at - timedelta(minutes=5):
                continue  # a change from before the journey was switched on
            trig = defn.trigger
            assert isinstance(trig, jengine.StageTrigger)
            if from_stage is None and trig.from_ is None and trig.to is None:
                continue  # a contact's creation is not a stage change
            if (trig.to is None or trig.to == to_stage) and (trig.from_ is None or trig.from_ == from_stage):
                journeys[journey.id] = (journey, defn)
                to_enrol[journey.id].append((contact_id, f"stage:{cid}"))
    for jid, pairs in to_enrol.items():
        journey, defn = journeys[jid]
        enrol(session, journey, pairs, now, defn=defn)
    return len(rows)


# --- the clock ------------------------------------------------------------------------------------------------------


def _date_of(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value) >= 10:
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _occurrence(trig: jengine.DateTrigger, value: date, today: date) -> date | None:
    """The day the journey should start for this value, if it is ``today``."""
    if trig.anniversary:
        for year in (today.year - 1, today.year, today.year + 1):
            try:
                base = value.replace(year=year)
            except ValueError:  # 29 February in a common year: the 28th
                base = value.replace(year=year, day=28)
            if base + timedelta(days=trig.offset_days) == today:
                return today
        return None
    return today if value + timedelta(days=trig.offset_days) == today else None


def run_date_trigger(session: Session, journey: Journey, defn: jengine.Definition, now: datetime) -> int:
    """Enrol contacts whose date property falls due today (in their time zone) at or after the trigger's time."""
    trig = defn.trigger
    assert isinstance(trig, jengine.DateTrigger)
    ws_tz = session.scalar(select(Workspace.timezone).where(Workspace.id == journey.workspace_id)) or "UTC"
    builtin = trig.property in ("created_at", "updated_at", "lifecycle_stage_at")
    cols = [Contact.id, Contact.timezone, getattr(Contact, trig.property) if builtin else Contact.properties]
    pairs: list[tuple[int, str]] = []
    after = 0
    while True:
        batch = session.execute(
            select(*cols)
            .where(Contact.workspace_id == journey.workspace_id, Contact.id > after)
            .order_by(Contact.id)
            .limit(5000)
        ).all()
        if not batch:
            break
        after = batch[-1][0]
        for cid, tzname, raw in batch:
            value = _date_of(raw if builtin else (raw or {}).get(trig.property))
            if value is None:
                continue
            tz = jengine.zone(tzname, ws_tz)
            local = now.astimezone(tz)
            day = _occurrence(trig, value, local.date())
            if day is None or local.strftime("%H:%M") < trig.at:
                continue
            pairs.append((cid, f"date:{day.isoformat()}:{cid}"))
    return len(enrol(session, journey, pairs, now, defn=defn))


def run_schedule_trigger(session: Session, journey: Journey, defn: jengine.Definition, now: datetime) -> int:
    """At a schedule's occurrence, enrol its segment's members once for that occurrence (set-based)."""
    trig = defn.trigger
    assert isinstance(trig, jengine.ScheduleTrigger)
    occurrence = journey.next_run_at or now
    stamp = occurrence.strftime("%Y%m%dT%H%M")
    entered = enrol_segment(session, journey.workspace_id, journey.id, trig.segment_id, key=f"schedule:{stamp}")
    journey.next_run_at = _next_schedule(session, journey.workspace_id, trig, max(now, occurrence))
    return entered


DATE_INTERVAL = timedelta(minutes=15)


def run_clock(session: Session, now: datetime | None = None) -> int:
    """Run due schedule and date triggers; returns how many contacts entered."""
    now = now or utcnow()
    total = 0
    due = list(
        session.scalars(
            select(Journey).where(
                Journey.status == "active",
                Journey.trigger_type.in_(("schedule", "date_property")),
                Journey.next_run_at <= now,
            )
        )
    )
    for journey in due:
        defn = definition_of(session, journey.id, journey.current_version)
        if isinstance(defn.trigger, jengine.ScheduleTrigger):
            total += run_schedule_trigger(session, journey, defn, now)
        elif isinstance(defn.trigger, jengine.DateTrigger):
            total += run_date_trigger(session, journey, defn, now)
            journey.next_run_at = now + DATE_INTERVAL
    session.flush()
    return total


def run_scanners(factory: sessionmaker[Session]) -> int:
    """One scan of each stream and the clock, each in its own transaction."""
    total = 0
    for fn in (scan_events, scan_stage_changes):
        while True:
            with factory() as session:
                n = fn(session)
                session.commit()
            total += n
            if n < SCAN_LIMIT:
                break
    with factory() as session:
        run_clock(session)
        session.commit()
    return total
