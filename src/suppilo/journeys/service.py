"""Journeys: definitions and versions, entry rules and enrolment, explicit migration, reporting and timelines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import yaml
from sqlalchemy import BigInteger, Boolean, Integer, String, and_, cast, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.db.tables import table_of
from suppilo.db.types import JSONType, UTCDateTime
from suppilo.engine import journey as jengine
from suppilo.engine.journey import Definition, JourneyError
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.journeys.models import (
    JOURNEY_STATES,
    Enrollment,
    EnrollmentStep,
    Journey,
    JourneyVersion,
)
from suppilo.messaging import service as messaging_service
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.segments import service as segments_service
from suppilo.segments.models import SegmentMembership
from suppilo.workspaces.models import Workspace

CHUNK = 2000


class JourneysError(DomainError):
    """A refused journey operation."""


# --- definitions ----------------------------------------------------------------------------------------------------


def load_document(text: str) -> object:
    """A definition document from JSON or YAML text."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise JourneysError("definition", f"not valid YAML or JSON{where}", code="invalid_document") from None


def validate_definition(session: Session, workspace_id: int, raw: object) -> Definition:
    """Parse and check a definition against the workspace (templates, stages, filters, segments, lists)."""

    def check_filter(value: object, path: str) -> None:
        segments_service.parse_filter_json(session, workspace_id, value, f"definition.{path}")

    template_kinds = {t.key: t.kind for t in messaging_service.list_templates(session, workspace_id)}
    templates = set(template_kinds)
    stages = {s.key for s in contacts_service.stage_specs(session, workspace_id)}
    try:
        defn = jengine.parse_definition(raw, check_filter=check_filter, known_templates=templates, known_stages=stages)
    except JourneyError as exc:
        raise JourneysError(
            f"definition.{exc.path}" if exc.path else "definition", exc.reason, code="invalid_journey"
        ) from None
    for sid, step in defn.steps.items():
        if isinstance(step, jengine.SendEmail) and step.kind is not None and step.kind != template_kinds[step.template]:
            raise JourneysError(
                f"definition.steps.{sid}.kind",
                f"template {step.template!r} is {template_kinds[step.template]}; a step cannot send it as {step.kind}",
                code="kind_mismatch",
            )
    seg_refs: list[tuple[str, int]] = []
    trig = defn.trigger
    if isinstance(trig, jengine.SegmentTrigger | jengine.ScheduleTrigger):
        seg_refs.append(("definition.trigger.segment_id", trig.segment_id))
    if defn.entry.exclusion_segment_id is not None:
        seg_refs.append(("definition.entry.exclusion_segment_id", defn.entry.exclusion_segment_id))
    lists = [(f"definition.steps.{sid}.list_id", s.list_id) for sid, s in defn.steps.items() if s.type == "list"]
    for path, seg_id in [*seg_refs, *lists]:
        try:
            seg = segments_service.get_segment(session, workspace_id, seg_id)
        except NotFound:
            raise JourneysError(path, f"segment {seg_id} not found", code="unknown_segment") from None
        if (path, seg_id) in lists and seg.kind != "static":
            raise JourneysError(
                path, f"segment {seg_id} is dynamic; a list step needs a static list", code="not_a_list"
            )
    if isinstance(trig, jengine.StageTrigger):
        for path, key in (("to", trig.to), ("from", trig.from_)):
            if key is not None and key not in stages:
                raise JourneysError(
                    f"definition.trigger.{path}", f"unknown lifecycle stage {key!r}", code="unknown_stage"
                )
    return defn


@lru_cache(maxsize=2048)
def _parse_stored(journey_id: int, version: int, text: str) -> Definition:
    return jengine.parse_definition(json.loads(text))


def parse_stored(journey_id: int, version: int, raw: dict[str, Any]) -> Definition:
    """A stored version's definition, parsed once per process (versions never change)."""
    return _parse_stored(journey_id, version, json.dumps(raw, sort_keys=True))


def definition_of(session: Session, journey_id: int, version: int) -> Definition:
    """The parsed definition of a stored version (cached: versions never change)."""
    row = session.scalar(
        select(JourneyVersion.definition).where(
            JourneyVersion.journey_id == journey_id, JourneyVersion.version == version
        )
    )
    if row is None:
        raise NotFound("version", f"journey {journey_id} has no version {version}")
    return parse_stored(journey_id, version, row)


def create_journey(
    session: Session, workspace_id: int, raw: object, *, actor: str = "", playbook: str | None = None
) -> Journey:
    """Save a new journey (a draft) with its first version."""
    defn = validate_definition(session, workspace_id, raw)
    now = utcnow()
    journey = Journey(
        workspace_id=workspace_id,
        name=defn.name,
        status="draft",
        current_version=1,
        trigger_type=defn.trigger.type,
        playbook=playbook,
        created_at=now,
        updated_at=now,
    )
    session.add(journey)
    session.flush()
    session.add(
        JourneyVersion(
            workspace_id=workspace_id,
            journey_id=journey.id,
            version=1,
            definition=jengine.definition_json(defn),
            created_at=now,
            created_by=actor[:200],
        )
    )
    session.flush()
    return journey


def get_journey(session: Session, workspace_id: int, journey_id: int, *, path: str = "journey_id") -> Journey:
    row = session.scalar(select(Journey).where(Journey.workspace_id == workspace_id, Journey.id == journey_id))
    if row is None:
        raise NotFound(path, f"journey {journey_id} not found")
    return row


def list_journeys(session: Session, workspace_id: int, *, status: str | None = None) -> list[Journey]:
    query = select(Journey).where(Journey.workspace_id == workspace_id)
    if status is not None:
        query = query.where(Journey.status == status)
    return list(session.scalars(query.order_by(Journey.id)))


def current_definition(session: Session, journey: Journey) -> Definition:
    return definition_of(session, journey.id, journey.current_version)


def update_definition(session: Session, workspace_id: int, journey_id: int, raw: object, *, actor: str = "") -> Journey:
    """Save a new version; contacts already inside stay on theirs (see ``migrate``)."""
    journey = get_journey(session, workspace_id, journey_id)
    if journey.status == "archived":
        raise Conflict("journey_id", "an archived journey cannot be edited", code="archived")
    defn = validate_definition(session, workspace_id, raw)
    now = utcnow()
    journey.current_version += 1
    journey.name = defn.name
    journey.trigger_type = defn.trigger.type
    journey.updated_at = now
    if isinstance(defn.trigger, jengine.ScheduleTrigger) and journey.status == "active":
        journey.next_run_at = _next_schedule(session, workspace_id, defn.trigger, now)
    session.add(
        JourneyVersion(
            workspace_id=workspace_id,
            journey_id=journey.id,
            version=journey.current_version,
            definition=jengine.definition_json(defn),
            created_at=now,
            created_by=actor[:200],
        )
    )
    session.flush()
    return journey


def versions(session: Session, workspace_id: int, journey_id: int) -> list[JourneyVersion]:
    get_journey(session, workspace_id, journey_id)
    return list(
        session.scalars(
            select(JourneyVersion)
            .where(JourneyVersion.workspace_id == workspace_id, JourneyVersion.journey_id == journey_id)
            .order_by(JourneyVersion.version)
        )
    )


def _workspace_zone(session: Session, workspace_id: int) -> str:
    return session.scalar(select(Workspace.timezone).where(Workspace.id == workspace_id)) or "UTC"


def _next_schedule(session: Session, workspace_id: int, trig: jengine.ScheduleTrigger, after: datetime) -> datetime:
    tz = jengine.zone(_workspace_zone(session, workspace_id))
    if trig.every == "day":
        return jengine.next_local_time(after, trig.at, tz)
    if trig.every == "week":
        return jengine.next_local_time(after, trig.at, tz, [trig.weekday or 1])
    candidate = after
    for _ in range(40):
        candidate = jengine.next_local_time(candidate, trig.at, tz)
        if candidate.astimezone(tz).day == trig.day_of_month:
            return candidate
    raise JourneysError("definition.trigger.day_of_month", "no such day", code="invalid_schedule")  # pragma: no cover


STREAMS = ("journeys.events", "journeys.stage_changes")


def set_status(session: Session, workspace_id: int, journey_id: int, status: str) -> Journey:
    """Activate, pause or archive; archiving ends every active enrollment."""
    if status not in JOURNEY_STATES or status == "draft":
        raise JourneysError("status", "status must be active, paused or archived", code="invalid_status")
    journey = get_journey(session, workspace_id, journey_id)
    if journey.status == "archived":
        raise Conflict("journey_id", "an archived journey cannot change state", code="archived")
    now = utcnow()
    if status == "active":
        from suppilo.contacts.models import StageChange
        from suppilo.events.models import Event
        from suppilo.events.stream import ensure_cursor

        ensure_cursor(session, STREAMS[0], Event.__table__)
        ensure_cursor(session, STREAMS[1], StageChange.__table__)
        defn = current_definition(session, journey)
        if journey.activated_at is None:
            journey.activated_at = now
        if isinstance(defn.trigger, jengine.ScheduleTrigger):
            journey.next_run_at = _next_schedule(session, workspace_id, defn.trigger, now)
        elif isinstance(defn.trigger, jengine.DateTrigger):
            journey.next_run_at = now
    if status == "archived":
        session.execute(
            update(Enrollment)
            .where(Enrollment.workspace_id == workspace_id, Enrollment.journey_id == journey.id)
            .where(Enrollment.status == "active")
            .values(status="ended", end_reason="archived", ended_at=now, due_at=None)
        )
    journey.status = status
    journey.updated_at = now
    session.flush()
    return journey


# --- enrolment ------------------------------------------------------------------------------------------------------


def _insert_ignore(session: Session) -> postgresql.Insert | sqlite.Insert:
    """INSERT into the enrollments table that skips rows colliding with a unique key (entry key, one active)."""
    table = table_of(Enrollment)  # insert() takes a Table, not the FromClause __table__ is typed as
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def _log_entered(session: Session, journey: Journey, step_id: str, enrollment_ids: list[int], now: datetime) -> None:
    """The first line of each new enrollment's timeline."""
    for start in range(0, len(enrollment_ids), 5000):
        session.execute(
            insert(EnrollmentStep),
            [
                {
                    "workspace_id": journey.workspace_id,
                    "enrollment_id": eid,
                    "journey_id": journey.id,
                    "step_id": step_id,
                    "outcome": "entered",
                    "at": now,
                    "detail": {},
                }
                for eid in enrollment_ids[start : start + 5000]
            ],
        )


def _entered_since(session: Session, journey_id: int, since: datetime | None) -> int:
    query = select(func.count()).select_from(Enrollment).where(Enrollment.journey_id == journey_id)
    if since is not None:
        query = query.where(Enrollment.entered_at >= since)
    return int(session.scalar(query) or 0)


def _room(session: Session, journey: Journey, defn: Definition, now: datetime) -> int | None:
    """How many more contacts may enter now under the entry limits (None: no limit)."""
    room: int | None = None
    if defn.entry.max_entries is not None:
        room = max(0, defn.entry.max_entries - _entered_since(session, journey.id, None))
    if defn.entry.max_entries_per_day is not None:
        tz = jengine.zone(_workspace_zone(session, journey.workspace_id))
        local_midnight = jengine.local_instant(now.astimezone(tz).date(), datetime.min.time(), tz)
        today = max(0, defn.entry.max_entries_per_day - _entered_since(session, journey.id, local_midnight))
        room = today if room is None else min(room, today)
    return room


def enrol(
    session: Session,
    journey: Journey,
    pairs: Sequence[tuple[int, str]],
    now: datetime,
    *,
    defn: Definition | None = None,
) -> list[int]:
    """Enrol (contact id, entry key) pairs under the journey's entry rules; returns the contacts that entered.

    Idempotent: an entry key enters at most once; a contact is never twice at once in the same journey.
    """
    if journey.status != "active" or not pairs:
        return []
    defn = defn or current_definition(session, journey)
    ws = journey.workspace_id
    entered: list[int] = []
    room = _room(session, journey, defn, now)
    for start in range(0, len(pairs), CHUNK):
        if room is not None and room <= 0:
            break
        chunk = list(dict(pairs[start : start + CHUNK]).items())  # one key per contact in a chunk
        ids = [cid for cid, _ in chunk]
        existing = set(session.scalars(select(Contact.id).where(Contact.workspace_id == ws, Contact.id.in_(ids))))
        blocked: set[int] = set()
        prior = session.execute(
            select(Enrollment.contact_id, func.max(Enrollment.entered_at), func.max(Enrollment.status))
            .where(Enrollment.journey_id == journey.id, Enrollment.contact_id.in_(ids))
            .group_by(Enrollment.contact_id)
        ).all()
        for cid, last_entered, max_status in prior:
            # 'active' > 'ended': max(status) says whether one is still active.
            if (
                max_status == "active"
                or defn.entry.reentry == "never"
                or (defn.entry.reentry == "after" and last_entered > now - timedelta(days=defn.entry.reentry_days or 0))
            ):
                blocked.add(cid)
        if defn.entry.exclusion_segment_id is not None:
            blocked |= set(
                session.scalars(
                    select(SegmentMembership.contact_id).where(
                        SegmentMembership.segment_id == defn.entry.exclusion_segment_id,
                        SegmentMembership.contact_id.in_(ids),
                    )
                )
            )
        rows = [
            {
                "workspace_id": ws,
                "journey_id": journey.id,
                "version": journey.current_version,
                "contact_id": cid,
                "entry_key": key[:200],
                "status": "active",
                "phase": "step",
                "group": "treatment",
                "step": defn.start,
                "step_since": now,
                "due_at": now,
                "event_arrived": False,
                "goal_reached": False,
                "attempts": 0,
                "visits": {defn.start: 1},
                "variants": {},
                "data": {},
                "entered_at": now,
            }
            for cid, key in chunk
            if cid in existing and cid not in blocked
        ]
        if room is not None:
            rows = rows[:room]
        if not rows:
            continue
        session.flush()
        table = Enrollment.__table__
        stmt = _insert_ignore(session).returning(table.c.id, table.c.contact_id)
        new = session.execute(stmt, rows).all() if len(rows) > 1 else session.execute(stmt.values(rows[0])).all()
        _log_entered(session, journey, defn.start, [eid for eid, _ in new], now)
        entered.extend(cid for _, cid in new)
        if room is not None:
            room -= len(new)
    return entered


def enrol_contacts(
    session: Session, workspace_id: int, journey_id: int, contact_ids: Iterable[int], *, key: str
) -> list[int]:
    """Manual or API enrolment of contacts (``key`` makes a retried request enrol nobody twice)."""
    journey = get_journey(session, workspace_id, journey_id)
    if journey.status != "active":
        raise Conflict("journey_id", f"journey {journey_id} is {journey.status}; activate it first", code="not_active")
    ids = list(dict.fromkeys(contact_ids))
    missing = set(ids) - set(
        session.scalars(select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.id.in_(ids)))
    )
    if missing:
        raise NotFound("contact_ids", f"contact {min(missing)} not found")
    return enrol(session, journey, [(cid, f"manual:{key}:{cid}") for cid in ids], utcnow())


def enrol_segment(session: Session, workspace_id: int, journey_id: int, segment_id: int, *, key: str) -> int:
    """Enrol every member of a segment; returns how many entered.

    Set-based: one INSERT ... SELECT per chunk of members applies the entry rules in SQL (not already inside, the
    re-entry policy, the exclusion segment, the limits), so a million members enter in well under five minutes.
    """
    journey = get_journey(session, workspace_id, journey_id)
    if journey.status != "active":
        raise Conflict("journey_id", f"journey {journey_id} is {journey.status}; activate it first", code="not_active")
    segments_service.get_segment(session, workspace_id, segment_id)
    defn = current_definition(session, journey)
    now = utcnow()
    total = 0
    after = 0
    room = _room(session, journey, defn, now)
    while room is None or room > 0:
        upto = session.scalar(
            select(func.max(SegmentMembership.contact_id)).where(
                SegmentMembership.contact_id.in_(
                    select(SegmentMembership.contact_id)
                    .where(SegmentMembership.segment_id == segment_id, SegmentMembership.contact_id > after)
                    .order_by(SegmentMembership.contact_id)
                    .limit(CHUNK * 5)
                    .scalar_subquery()
                ),
                SegmentMembership.segment_id == segment_id,
            )
        )
        if upto is None:
            return total
        entered = _enrol_range(session, journey, defn, segment_id, after, int(upto), key, now, room)
        total += entered
        if room is not None:
            room -= entered
        after = int(upto)
    return total


def _enrol_range(
    session: Session,
    journey: Journey,
    defn: Definition,
    segment_id: int,
    after: int,
    upto: int,
    key: str,
    now: datetime,
    room: int | None,
) -> int:
    """One INSERT ... SELECT of the segment's members with ids in (after, upto] that pass the entry rules."""
    m = SegmentMembership.__table__.alias("m")
    e = Enrollment.__table__.alias("e")
    x = SegmentMembership.__table__.alias("x")
    # Who may not enter, as one uncorrelated set of the chunk's contacts (hashed once by PostgreSQL, an ephemeral
    # index in SQLite): a correlated NOT EXISTS left the plan to the statistics, and on tables the enrolment itself
    # was filling they were stale, so each member read every enrollment of the journey (20,000 members: 17 s on
    # PostgreSQL; 1,000,000 on SQLite: not done after 20 minutes).
    blocked = select(e.c.contact_id).where(
        e.c.workspace_id == journey.workspace_id,
        e.c.journey_id == journey.id,
        e.c.contact_id > after,
        e.c.contact_id <= upto,
    )
    if defn.entry.reentry == "always":
        blocked = blocked.where(e.c.status == "active")
    elif defn.entry.reentry == "after":
        since = now - timedelta(days=defn.entry.reentry_days or 0)
        blocked = blocked.where((e.c.status == "active") | (e.c.entered_at > since))
    conditions = [
        m.c.segment_id == segment_id,
        m.c.contact_id > after,
        m.c.contact_id <= upto,
        m.c.contact_id.not_in(blocked),
    ]
    if defn.entry.exclusion_segment_id is not None:
        conditions.append(
            ~select(x.c.contact_id)
            .where(x.c.segment_id == defn.entry.exclusion_segment_id, x.c.contact_id == m.c.contact_id)
            .exists()
        )
    prefix = f"{key}:"
    ts = UTCDateTime()
    source = (
        select(
            literal(journey.workspace_id, BigInteger()),
            literal(journey.id, BigInteger()),
            literal(journey.current_version, Integer()),
            m.c.contact_id,
            literal(prefix, String()) + cast(m.c.contact_id, String()),
            literal("active", String()),
            literal("step", String()),
            literal("treatment", String()),
            literal(defn.start, String()),
            literal(now, ts),
            literal(now, ts),
            literal(False, Boolean()),
            literal(False, Boolean()),
            literal(0, Integer()),
            literal({defn.start: 1}, JSONType),
            literal({}, JSONType),
            literal({}, JSONType),
            literal(now, ts),
        )
        .where(*conditions)
        .order_by(m.c.contact_id)
    )
    if room is not None:
        source = source.limit(room)
    cols = [
        "workspace_id", "journey_id", "version", "contact_id", "entry_key", "status", "phase", "group", "step",
        "step_since", "due_at", "event_arrived", "goal_reached", "attempts", "visits", "variants", "data", "entered_at",
    ]  # fmt: skip
    session.flush()
    table = Enrollment.__table__
    stmt = _insert_ignore(session).from_select(cols, source).returning(table.c.id)
    ids = [int(i) for i in session.scalars(stmt)]
    _log_entered(session, journey, defn.start, ids, now)
    return len(ids)


def migrate(
    session: Session,
    workspace_id: int,
    journey_id: int,
    *,
    from_version: int,
    to_version: int | None = None,
    step_map: dict[str, str] | None = None,
) -> int:
    """Move the active enrollments of ``from_version`` onto ``to_version`` (default: the current one).

    Each stays at the step of the same id unless ``step_map`` says otherwise; a step missing from the target version
    without a mapping refuses the whole move (nothing is moved).
    """
    journey = get_journey(session, workspace_id, journey_id)
    target_version = to_version or journey.current_version
    target = definition_of(session, journey.id, target_version)
    definition_of(session, journey.id, from_version)
    mapping = step_map or {}
    for src, dst in mapping.items():
        if dst not in target.steps:
            raise JourneysError(f"step_map.{src}", f"version {target_version} has no step {dst!r}", code="unknown_step")
    steps_in_use = set(
        session.scalars(
            select(Enrollment.step)
            .where(Enrollment.workspace_id == workspace_id, Enrollment.journey_id == journey.id)
            .where(Enrollment.version == from_version, Enrollment.status == "active")
            .distinct()
        )
    )
    for step in sorted(steps_in_use):
        if mapping.get(step, step) not in target.steps:
            raise JourneysError(
                f"step_map.{step}",
                f"contacts wait at step {step!r}, which version {target_version} lacks; map it to a step",
                code="unmapped_step",
            )
    moved = 0
    now = utcnow()
    for step in steps_in_use:
        dst = mapping.get(step, step)
        result = session.execute(
            update(Enrollment)
            .where(Enrollment.workspace_id == workspace_id, Enrollment.journey_id == journey.id)
            .where(Enrollment.version == from_version, Enrollment.status == "active", Enrollment.step == step)
            .values(version=target_version, step=dst, due_at=now, event_arrived=False)
        )
        moved += rowcount(result)
    return moved


def move_contact(session: Session, workspace_id: int, keep_id: int, merge_id: int) -> None:
    """A merge: the merged contact's enrollments move to the kept one; where both are inside the same journey,
    the merged one's walk ends (``merged``) so the kept contact is never twice in a journey."""
    now = utcnow()
    keep_active = select(Enrollment.journey_id).where(
        Enrollment.workspace_id == workspace_id, Enrollment.contact_id == keep_id, Enrollment.status == "active"
    )
    session.execute(
        update(Enrollment)
        .where(Enrollment.workspace_id == workspace_id, Enrollment.contact_id == merge_id)
        .where(Enrollment.status == "active", Enrollment.journey_id.in_(keep_active.scalar_subquery()))
        .values(status="ended", end_reason="merged", ended_at=now, due_at=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Enrollment)
        .where(Enrollment.workspace_id == workspace_id, Enrollment.contact_id == merge_id)
        .values(contact_id=keep_id)
        .execution_options(synchronize_session=False)
    )


def exit_contact(session: Session, workspace_id: int, contact_id: int, reason: str) -> int:
    """End every active enrollment of a contact (erasure, objection, manual removal)."""
    now = utcnow()
    result = session.execute(
        update(Enrollment)
        .where(Enrollment.workspace_id == workspace_id, Enrollment.contact_id == contact_id)
        .where(Enrollment.status == "active")
        .values(status="ended", end_reason=reason[:16], ended_at=now, due_at=None)
    )
    return rowcount(result)


# --- reading --------------------------------------------------------------------------------------------------------


def get_enrollment(session: Session, workspace_id: int, enrollment_id: int) -> Enrollment:
    row = session.scalar(
        select(Enrollment).where(Enrollment.workspace_id == workspace_id, Enrollment.id == enrollment_id)
    )
    if row is None:
        raise NotFound("enrollment_id", f"enrollment {enrollment_id} not found")
    return row


def enrollment_timeline(session: Session, workspace_id: int, enrollment_id: int) -> list[EnrollmentStep]:
    get_enrollment(session, workspace_id, enrollment_id)
    return list(
        session.scalars(
            select(EnrollmentStep)
            .where(EnrollmentStep.workspace_id == workspace_id, EnrollmentStep.enrollment_id == enrollment_id)
            .order_by(EnrollmentStep.id)
        )
    )


def list_enrollments(
    session: Session,
    workspace_id: int,
    *,
    journey_id: int | None = None,
    contact_id: int | None = None,
    status: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[Enrollment]:
    query = select(Enrollment).where(Enrollment.workspace_id == workspace_id, Enrollment.id > after_id)
    if journey_id is not None:
        query = query.where(Enrollment.journey_id == journey_id)
    if contact_id is not None:
        query = query.where(Enrollment.contact_id == contact_id)
    if status is not None:
        query = query.where(Enrollment.status == status)
    return list(session.scalars(query.order_by(Enrollment.id).limit(max(1, min(limit, 1000)))))


def report(session: Session, workspace_id: int, journey_id: int) -> dict[str, Any]:
    """Entered, waiting, ended (by reason), goal; per step: waiting now, passed, sent / opened / clicked; and the
    conversion of the treatment against the holdout with its statistics."""
    from suppilo.engine.experiments import incremental_lift

    journey = get_journey(session, workspace_id, journey_id)
    base = and_(Enrollment.workspace_id == workspace_id, Enrollment.journey_id == journey.id)
    by_status = session.execute(
        select(Enrollment.status, Enrollment.end_reason, func.count())
        .where(base)
        .group_by(Enrollment.status, Enrollment.end_reason)
    ).all()
    entered = sum(n for _, _, n in by_status)
    waiting = sum(n for s, _, n in by_status if s == "active")
    ended = {str(r): n for s, r, n in by_status if s == "ended"}
    groups = {
        g: (int(n), int(c or 0))
        for g, n, c in session.execute(
            select(Enrollment.group, func.count(), func.count(Enrollment.converted_at))
            .where(base)
            .group_by(Enrollment.group)
        )
    }
    at_step = {
        s: n
        for s, n in session.execute(
            select(Enrollment.step, func.count()).where(base, Enrollment.status == "active").group_by(Enrollment.step)
        )
    }
    passed = {
        (s, o): n
        for s, o, n in session.execute(
            select(EnrollmentStep.step_id, EnrollmentStep.outcome, func.count())
            .where(EnrollmentStep.workspace_id == workspace_id, EnrollmentStep.journey_id == journey.id)
            .group_by(EnrollmentStep.step_id, EnrollmentStep.outcome)
        )
    }
    mail = {
        s: (int(sent or 0), int(opened or 0), int(clicked or 0), int(total or 0))
        for s, total, sent, opened, clicked in session.execute(
            select(
                EnrollmentStep.step_id,
                func.count(),
                func.count(OutboxMessage.sent_at),
                func.count(OutboxMessage.opened_at),
                func.count(OutboxMessage.clicked_at),
            )
            .join(OutboxMessage, OutboxMessage.id == EnrollmentStep.outbox_id)
            .where(EnrollmentStep.workspace_id == workspace_id, EnrollmentStep.journey_id == journey.id)
            .group_by(EnrollmentStep.step_id)
        )
    }
    defn = current_definition(session, journey)
    steps = []
    for sid, step in defn.steps.items():
        outcomes = {o: n for (s, o), n in passed.items() if s == sid and o != "entered"}
        sent, opened, clicked, queued = mail.get(sid, (0, 0, 0, 0))
        steps.append(
            {
                "step": sid,
                "type": step.type,
                "waiting": at_step.get(sid, 0),
                "passed": sum(outcomes.values()),
                "outcomes": outcomes,
                **(
                    {"queued": queued, "sent": sent, "opened": opened, "clicked": clicked}
                    if step.type == "send_email"
                    else {}
                ),
            }
        )
    treat_n, treat_c = groups.get("treatment", (0, 0))
    hold_n, hold_c = groups.get("holdout", (0, 0))
    lift: dict[str, Any] | None = None
    if hold_n:
        result = incremental_lift(treat_c, treat_n, hold_c, hold_n)
        lift = {k: getattr(result, k) for k in result.__dataclass_fields__}
    return {
        "journey_id": journey.id,
        "name": journey.name,
        "status": journey.status,
        "version": journey.current_version,
        "entered": entered,
        "waiting": waiting,
        "ended": ended,
        "goal": ended.get("goal", 0),
        "conversion": {
            "treatment": {"contacts": treat_n, "converted": treat_c},
            "holdout": {"contacts": hold_n, "converted": hold_c},
            "lift": lift,
        },
        "steps": steps,
    }


def diagram(session: Session, workspace_id: int, journey_id: int, version: int | None = None) -> str:
    """The Mermaid diagram of a version with the number of contacts waiting at each step now."""
    journey = get_journey(session, workspace_id, journey_id)
    v = version or journey.current_version
    defn = definition_of(session, journey.id, v)
    counts = {
        s: n
        for s, n in session.execute(
            select(Enrollment.step, func.count())
            .where(Enrollment.workspace_id == workspace_id, Enrollment.journey_id == journey.id)
            .where(Enrollment.status == "active", Enrollment.version == v)
            .group_by(Enrollment.step)
        )
    }
    return jengine.to_mermaid(defn, counts)


def stuck(
    session: Session, workspace_id: int | None = None, *, late: timedelta = timedelta(minutes=10)
) -> list[Enrollment]:
    """Active enrollments overdue by more than ``late`` (the runner is down or a step keeps failing), and those that
    ended as ``stuck``."""
    now = utcnow()
    query = select(Enrollment).where(
        ((Enrollment.status == "active") & (Enrollment.due_at < now - late))
        | ((Enrollment.status == "ended") & (Enrollment.end_reason == "stuck"))
    )
    if workspace_id is not None:
        query = query.where(Enrollment.workspace_id == workspace_id)
    return list(session.scalars(query.order_by(Enrollment.id).limit(1000)))
