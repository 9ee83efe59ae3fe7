"""Owner assignment and hand-offs: teams, ordered territory rules (country, region, industry, segment membership,
company size) that name a user or a team (round-robin or load-balanced), the hand-off settings and working hours,
and the first-contact task whose due time is counted in the owner's working hours.

Teams are their own table (``sales_teams`` + ``sales_team_members``) rather than a field of memberships: a user can
be in several teams (a territory team and a product team) and a team carries its round-robin pointer. The pointer is
advanced by one atomic ``UPDATE ... SET rr_counter = rr_counter + 1 ... RETURNING``, so two concurrent assignments
never read the same value. Services flush, never commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suppilo.companies.models import Company
from suppilo.contacts.models import Contact, StageChange
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.deals.models import (
    Activity,
    AssignmentRule,
    Deal,
    OwnerAssignment,
    SalesSettings,
    SalesTeam,
    SalesTeamMember,
    Task,
    UserWorkingHours,
)
from suppilo.deals.schemas import AssignmentRuleIn, SalesSettingsIn, TeamIn
from suppilo.engine import working_hours as wh
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.events.stream import ensure_cursor, lock_cursor, read
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.models import Membership, User

LIST_CONDITIONS = ("country", "region", "industry")
SIZE_CONDITIONS = ("company_size_min", "company_size_max")
# The contact is a member of any of these stored segments (ids) now.
SEGMENT_CONDITION = "segment"


class AssignmentError(DomainError):
    """A refused team, rule or settings change."""


# --- teams ----------------------------------------------------------------------------------------------------------


def _check_member(session: Session, workspace_id: int, user_id: int, path: str) -> None:
    found = session.scalar(
        select(Membership.id).where(Membership.workspace_id == workspace_id, Membership.user_id == user_id)
    )
    if found is None:
        raise AssignmentError(path, f"user {user_id} is not a member of this workspace", code="invalid_owner")


def get_team(session: Session, workspace_id: int, team_id: int, path: str = "team_id") -> SalesTeam:
    """A team of this workspace; NotFound otherwise."""
    team = session.scalar(select(SalesTeam).where(SalesTeam.workspace_id == workspace_id, SalesTeam.id == team_id))
    if team is None:
        raise NotFound(path, f"team {team_id} not found")
    return team


def _set_members(session: Session, team: SalesTeam, data: TeamIn) -> None:
    for i, user_id in enumerate(data.members):
        if user_id in data.members[:i]:
            raise AssignmentError(f"members.{i}", f"user {user_id} is listed twice", code="duplicate_member")
        _check_member(session, team.workspace_id, user_id, f"members.{i}")
    for i, user_id in enumerate(data.inactive):
        if user_id not in data.members:
            raise AssignmentError(f"inactive.{i}", f"user {user_id} is not in members", code="invalid_member")
    existing = {
        m.user_id: m
        for m in session.scalars(
            select(SalesTeamMember).where(
                SalesTeamMember.workspace_id == team.workspace_id, SalesTeamMember.team_id == team.id
            )
        )
    }
    for user_id, member in existing.items():
        if user_id not in data.members:
            session.delete(member)
    for user_id in data.members:
        found = existing.get(user_id)
        if found is None:
            found = SalesTeamMember(workspace_id=team.workspace_id, team_id=team.id, user_id=user_id)
            session.add(found)
        found.active = user_id not in data.inactive
    session.flush()


def create_team(session: Session, workspace_id: int, data: TeamIn) -> SalesTeam:
    """A new team with its members."""
    if session.scalar(select(SalesTeam.id).where(SalesTeam.workspace_id == workspace_id, SalesTeam.name == data.name)):
        raise Conflict("name", f"a team named {data.name!r} exists", code="duplicate_name")
    team = SalesTeam(workspace_id=workspace_id, name=data.name, rr_counter=0)
    session.add(team)
    session.flush()
    _set_members(session, team, data)
    return team


def update_team(session: Session, workspace_id: int, team_id: int, data: TeamIn) -> SalesTeam:
    """Rename a team and replace its members (the round-robin pointer is kept)."""
    team = get_team(session, workspace_id, team_id)
    if data.name != team.name and session.scalar(
        select(SalesTeam.id).where(SalesTeam.workspace_id == workspace_id, SalesTeam.name == data.name)
    ):
        raise Conflict("name", f"a team named {data.name!r} exists", code="duplicate_name")
    team.name = data.name
    _set_members(session, team, data)
    return team


def delete_team(session: Session, workspace_id: int, team_id: int) -> None:
    """Remove a team that no rule names."""
    team = get_team(session, workspace_id, team_id)
    used = session.scalar(
        select(func.count())
        .select_from(AssignmentRule)
        .where(AssignmentRule.workspace_id == workspace_id, AssignmentRule.team_id == team.id)
    )
    if used:
        raise Conflict("team_id", f"team {team_id} is named by {used} assignment rule(s)", code="team_in_use")
    session.delete(team)
    session.flush()


def list_teams(session: Session, workspace_id: int) -> list[SalesTeam]:
    """The workspace's teams by name."""
    return list(
        session.scalars(select(SalesTeam).where(SalesTeam.workspace_id == workspace_id).order_by(SalesTeam.name))
    )


def team_members(session: Session, workspace_id: int, team_ids: list[int]) -> dict[int, list[SalesTeamMember]]:
    """Members of these teams by team id, ordered by user id."""
    out: dict[int, list[SalesTeamMember]] = {t: [] for t in team_ids}
    if team_ids:
        for m in session.scalars(
            select(SalesTeamMember)
            .where(SalesTeamMember.workspace_id == workspace_id, SalesTeamMember.team_id.in_(team_ids))
            .order_by(SalesTeamMember.team_id, SalesTeamMember.user_id)
        ):
            out[m.team_id].append(m)
    return out


def user_teams(session: Session, workspace_id: int) -> dict[int, list[str]]:
    """Team names of each user (for grouping the forecast and the board by team)."""
    out: dict[int, list[str]] = {}
    rows = session.execute(
        select(SalesTeamMember.user_id, SalesTeam.name)
        .join(SalesTeam, SalesTeam.id == SalesTeamMember.team_id)
        .where(SalesTeamMember.workspace_id == workspace_id)
        .order_by(SalesTeam.name)
    )
    for user_id, name in rows:
        out.setdefault(user_id, []).append(name)
    return out


# --- rules ----------------------------------------------------------------------------------------------------------


def _check_conditions(conditions: Mapping[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in conditions.items():
        where = f"{path}.{key}"
        if key in LIST_CONDITIONS:
            if not isinstance(value, list) or not value:
                raise AssignmentError(where, f"{key} is a non-empty list of values")
            items = []
            for i, item in enumerate(value):
                if not isinstance(item, str) or not item.strip() or len(item) > 100:
                    raise AssignmentError(f"{where}.{i}", "give a non-empty text of at most 100 characters")
                item = item.strip()
                if key == "country" and (len(item) != 2 or not item.isalpha()):
                    raise AssignmentError(f"{where}.{i}", f"{item!r} is not a two-letter ISO country code")
                items.append(item.upper() if key == "country" else item)
            out[key] = items
        elif key == SEGMENT_CONDITION:
            if not isinstance(value, list) or not value:
                raise AssignmentError(where, "segment is a non-empty list of segment ids")
            for i, item in enumerate(value):
                if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                    raise AssignmentError(f"{where}.{i}", f"{item!r} is not a segment id")
            out[key] = sorted(set(value))
        elif key in SIZE_CONDITIONS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise AssignmentError(where, f"{key} is a whole number of employees (0 or more)")
            out[key] = value
        else:
            known = ", ".join((*LIST_CONDITIONS, SEGMENT_CONDITION, *SIZE_CONDITIONS))
            raise AssignmentError(where, f"unknown condition {key!r}; known: {known}", code="unknown_condition")
    low, high = out.get("company_size_min"), out.get("company_size_max")
    if low is not None and high is not None and high < low:
        raise AssignmentError(f"{path}.company_size_max", "company_size_max is below company_size_min")
    return out


def _check_segments(session: Session, workspace_id: int, ids: list[int], path: str) -> None:
    """Every segment a rule names exists in this workspace."""
    if not ids:
        return
    from suppilo.segments.models import Segment

    found = set(session.scalars(select(Segment.id).where(Segment.workspace_id == workspace_id, Segment.id.in_(ids))))
    for i, sid in enumerate(ids):
        if sid not in found:
            raise AssignmentError(f"{path}.{i}", f"segment {sid} not found", code="unknown_segment")


def replace_rules(session: Session, workspace_id: int, rules: list[AssignmentRuleIn]) -> list[AssignmentRule]:
    """Validate and store the workspace's ordered rules (replacing the old set)."""
    checked = []
    for i, rule in enumerate(rules):
        path = f"rules.{i}"
        if (rule.user_id is None) == (rule.team_id is None):
            raise AssignmentError(f"{path}.user_id", "give either user_id or team_id", code="invalid_target")
        if rule.user_id is not None:
            _check_member(session, workspace_id, rule.user_id, f"{path}.user_id")
        if rule.team_id is not None:
            get_team(session, workspace_id, rule.team_id, f"{path}.team_id")
        conditions = _check_conditions(rule.conditions, f"{path}.conditions")
        _check_segments(session, workspace_id, conditions.get(SEGMENT_CONDITION, []), f"{path}.conditions.segment")
        checked.append((rule, conditions))
    for old in session.scalars(select(AssignmentRule).where(AssignmentRule.workspace_id == workspace_id)):
        session.delete(old)
    session.flush()
    out = []
    for position, (rule, conditions) in enumerate(checked, start=1):
        row = AssignmentRule(
            workspace_id=workspace_id,
            position=position,
            name=rule.name,
            conditions=conditions,
            user_id=rule.user_id,
            team_id=rule.team_id,
            distribution="user" if rule.user_id is not None else rule.distribution,
            active=rule.active,
        )
        session.add(row)
        out.append(row)
    session.flush()
    return out


def list_rules(session: Session, workspace_id: int) -> list[AssignmentRule]:
    """The workspace's rules in order."""
    return list(
        session.scalars(
            select(AssignmentRule).where(AssignmentRule.workspace_id == workspace_id).order_by(AssignmentRule.position)
        )
    )


# --- settings and working hours -------------------------------------------------------------------------------------


def get_settings(session: Session, workspace_id: int) -> SalesSettings:
    """The workspace's hand-off settings (created with defaults on first use)."""
    row = session.scalar(select(SalesSettings).where(SalesSettings.workspace_id == workspace_id))
    if row is not None:
        return row
    row = SalesSettings(
        workspace_id=workspace_id,
        assign_on_stage=None,
        response_hours=4,
        handoff_task_title="First contact",
        working_hours={},
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return session.scalars(select(SalesSettings).where(SalesSettings.workspace_id == workspace_id)).one()
    return row


def _check_hours(value: Mapping[str, Any], path: str) -> dict[str, Any]:
    if not value:
        return {}
    try:
        schedule = wh.parse_working_hours(value)
    except wh.WorkingHoursError as exc:
        raise AssignmentError(f"{path}.{exc.path}".rstrip("."), exc.message, code="invalid_working_hours") from exc
    out = schedule.as_dict()
    if "timezone" not in value:
        del out["timezone"]  # the owner's own zone applies
    return out


def put_settings(session: Session, workspace_id: int, data: SalesSettingsIn) -> SalesSettings:
    """Store the hand-off settings; the stage must be one of the workspace's lifecycle stages."""
    row = get_settings(session, workspace_id)
    if data.assign_on_stage is not None:
        from suppilo.contacts import service as contacts_service

        keys = [s.key for s in contacts_service.stage_specs(session, workspace_id)]
        if data.assign_on_stage not in keys:
            raise AssignmentError(
                "assign_on_stage", f"{data.assign_on_stage!r} is not a lifecycle stage ({', '.join(keys)})"
            )
        # The scan starts where the stage-change history ends when first set up: only changes from now on count.
        ensure_cursor(session, STAGE_STREAM, StageChange.__table__)
    row.assign_on_stage = data.assign_on_stage
    row.response_hours = data.response_hours
    row.handoff_task_title = data.handoff_task_title
    row.working_hours = _check_hours(data.working_hours, "working_hours")
    session.flush()
    return row


def set_user_working_hours(
    session: Session, workspace_id: int, user_id: int, hours: Mapping[str, Any]
) -> dict[str, Any]:
    """Store (or with an empty object remove) a user's own working hours; returns what applies to them now."""
    _check_member(session, workspace_id, user_id, "user_id")
    checked = _check_hours(hours, "working_hours")
    row = session.scalar(
        select(UserWorkingHours).where(
            UserWorkingHours.workspace_id == workspace_id, UserWorkingHours.user_id == user_id
        )
    )
    if not checked:
        if row is not None:
            session.delete(row)
    elif row is None:
        session.add(UserWorkingHours(workspace_id=workspace_id, user_id=user_id, working_hours=checked))
    else:
        row.working_hours = checked
    session.flush()
    return schedule_for(session, workspace_id, user_id).as_dict()


def schedule_for(session: Session, workspace_id: int, user_id: int | None) -> wh.WorkingHours:
    """The working hours that apply to a user: their own, else the workspace's, else Monday-Friday 09-17; in the
    schedule's own zone, else the user's zone (when set), else the workspace's."""
    workspace = workspaces_service.get_workspace(session, workspace_id)
    zone = workspace.timezone
    own: dict[str, Any] = {}
    if user_id is not None:
        user_zone = session.scalar(select(User.timezone).where(User.id == user_id))
        if user_zone and user_zone != "UTC":
            zone = user_zone
        own = (
            session.scalar(
                select(UserWorkingHours.working_hours).where(
                    UserWorkingHours.workspace_id == workspace_id, UserWorkingHours.user_id == user_id
                )
            )
            or {}
        )
    spec = own or get_settings(session, workspace_id).working_hours or {}
    if not spec:
        return wh.default_schedule(zone)
    return wh.parse_working_hours(spec, default_timezone=zone)


def due_for_owner(session: Session, workspace_id: int, owner_id: int | None, start: datetime, hours: float) -> datetime:
    """``start`` plus ``hours`` of the owner's working time (what a journey's ``create_task`` step can use)."""
    return wh.due_in_working_hours(start, hours, schedule_for(session, workspace_id, owner_id))


# --- matching and choosing ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """What the rules look at."""

    country: str | None
    region: str | None
    industry: str | None
    company_size: int | None
    segments: frozenset[int] = frozenset()


def _facts(session: Session, workspace_id: int, contact: Contact | None, company_id: int | None) -> Facts:
    company = None
    cid = company_id if company_id is not None else (contact.company_id if contact is not None else None)
    if cid is not None:
        company = session.scalar(select(Company).where(Company.workspace_id == workspace_id, Company.id == cid))
    country = (contact.country if contact is not None else None) or (company.country if company else None)
    segments: frozenset[int] = frozenset()
    if contact is not None and contact.id is not None:
        from suppilo.segments.models import SegmentMembership

        segments = frozenset(
            session.scalars(
                select(SegmentMembership.segment_id).where(
                    SegmentMembership.workspace_id == workspace_id, SegmentMembership.contact_id == contact.id
                )
            )
        )
    return Facts(
        country=country.upper() if country else None,
        region=contact.region if contact is not None else None,
        industry=company.industry if company else None,
        company_size=company.employees if company else None,
        segments=segments,
    )


def matches(conditions: Mapping[str, Any], facts: Facts) -> bool:
    """Whether every condition holds for these facts (a missing fact fails the condition that names it)."""
    for key in LIST_CONDITIONS:
        if key in conditions:
            value = getattr(facts, key)
            if value is None or value.casefold() not in {str(v).casefold() for v in conditions[key]}:
                return False
    if SEGMENT_CONDITION in conditions and not facts.segments & set(conditions[SEGMENT_CONDITION]):
        return False
    size = facts.company_size
    if "company_size_min" in conditions and (size is None or size < conditions["company_size_min"]):
        return False
    return not ("company_size_max" in conditions and (size is None or size > conditions["company_size_max"]))


def _next_round_robin(session: Session, team: SalesTeam, members: list[int]) -> int:
    counter = session.execute(
        update(SalesTeam)
        .where(SalesTeam.workspace_id == team.workspace_id, SalesTeam.id == team.id)
        .values(rr_counter=SalesTeam.rr_counter + 1)
        .returning(SalesTeam.rr_counter)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    return members[(int(counter) - 1) % len(members)]


def open_load(session: Session, workspace_id: int, user_ids: list[int]) -> dict[int, int]:
    """Open deals plus open tasks per user."""
    load = dict.fromkeys(user_ids, 0)
    if not user_ids:
        return load
    for owner, n in session.execute(
        select(Deal.owner_id, func.count())
        .where(Deal.workspace_id == workspace_id, Deal.status == "open", Deal.owner_id.in_(user_ids))
        .group_by(Deal.owner_id)
    ):
        if owner is not None:
            load[owner] += int(n)
    for owner, n in session.execute(
        select(Task.owner_id, func.count())
        .where(Task.workspace_id == workspace_id, Task.done_at.is_(None), Task.owner_id.in_(user_ids))
        .group_by(Task.owner_id)
    ):
        if owner is not None:
            load[owner] += int(n)
    return load


@dataclass(frozen=True, slots=True)
class Choice:
    """An owner chosen by a rule."""

    user_id: int
    rule: AssignmentRule


def choose_owner(session: Session, workspace_id: int, facts: Facts, *, dry_run: bool = False) -> Choice | None:
    """The owner the first matching active rule gives (a rule whose user left the workspace, or a team rule without
    active members, is passed over).
    A dry run does not advance round-robin pointers (it names who is next)."""
    current = set(session.scalars(select(Membership.user_id).where(Membership.workspace_id == workspace_id)))
    for rule in list_rules(session, workspace_id):
        if not rule.active or not matches(rule.conditions, facts):
            continue
        if rule.user_id is not None:
            if rule.user_id in current:  # a user who left the workspace gets nothing
                return Choice(rule.user_id, rule)
            continue
        team = get_team(session, workspace_id, rule.team_id or 0)
        members = [
            m.user_id
            for m in team_members(session, workspace_id, [team.id])[team.id]
            if m.active and m.user_id in current
        ]
        if not members:
            continue
        if rule.distribution == "load_balanced":
            load = open_load(session, workspace_id, members)
            return Choice(min(members, key=lambda u: (load[u], u)), rule)
        if dry_run:
            return Choice(members[int(team.rr_counter) % len(members)], rule)
        return Choice(_next_round_robin(session, team, members), rule)
    return None


# --- assigning ------------------------------------------------------------------------------------------------------


def _handoff_task(
    session: Session,
    workspace_id: int,
    owner_id: int,
    title: str,
    *,
    contact_id: int | None,
    deal_id: int | None,
    now: datetime,
) -> Task:
    settings = get_settings(session, workspace_id)
    due = due_for_owner(session, workspace_id, owner_id, now, settings.response_hours)
    task = Task(
        workspace_id=workspace_id,
        deal_id=deal_id,
        contact_id=contact_id,
        owner_id=owner_id,
        kind="call",
        title=f"{settings.handoff_task_title}: {title}"[:300],
        due_at=max(due, now),
        handoff_at=now,
    )
    session.add(task)
    session.flush()
    return task


def _record(
    session: Session,
    workspace_id: int,
    *,
    subject_type: str,
    subject_id: int,
    choice: Choice,
    trigger: str,
    actor: str,
    task: Task | None,
    now: datetime,
    contact_id: int | None,
    deal_id: int | None,
) -> OwnerAssignment:
    row = OwnerAssignment(
        workspace_id=workspace_id,
        subject_type=subject_type,
        subject_id=subject_id,
        user_id=choice.user_id,
        rule_id=choice.rule.id,
        rule_name=choice.rule.name,
        team_id=choice.rule.team_id,
        distribution=choice.rule.distribution,
        trigger=trigger,
        task_id=task.id if task is not None else None,
        assigned_at=now,
    )
    session.add(row)
    workspaces_service.record_audit(
        session,
        workspace_id,
        actor=actor,
        action="owner_assigned",
        subject_type=subject_type,
        subject_id=subject_id,
        details={
            "user_id": choice.user_id,
            "rule_id": choice.rule.id,
            "rule": choice.rule.name,
            "distribution": choice.rule.distribution,
            "trigger": trigger,
        },
        at=now,
    )
    session.add(
        Activity(
            workspace_id=workspace_id,
            deal_id=deal_id,
            contact_id=contact_id,
            owner_id=choice.user_id,
            kind="system",
            body=f"Owner: user {choice.user_id} by rule {choice.rule.name!r} ({choice.rule.distribution}, {trigger})",
            occurred_at=now,
        )
    )
    session.flush()
    return row


def assign_contact(
    session: Session,
    workspace_id: int,
    contact: Contact,
    *,
    trigger: str,
    actor: str = "system",
    force: bool = False,
    now: datetime | None = None,
) -> OwnerAssignment | None:
    """Give an unowned contact (or with ``force`` any contact) an owner by the rules, with a first-contact task
    due within the response target in the owner's working hours. None when it has an owner or no rule matches."""
    if contact.owner_id is not None and not force:
        return None
    choice = choose_owner(session, workspace_id, _facts(session, workspace_id, contact, None))
    if choice is None:
        return None
    now = now or utcnow()
    contact.owner_id = choice.user_id
    name = " ".join(x for x in (contact.first_name, contact.last_name) if x) or contact.email or f"contact {contact.id}"
    task = _handoff_task(session, workspace_id, choice.user_id, name, contact_id=contact.id, deal_id=None, now=now)
    return _record(
        session,
        workspace_id,
        subject_type="contact",
        subject_id=contact.id,
        choice=choice,
        trigger=trigger,
        actor=actor,
        task=task,
        now=now,
        contact_id=contact.id,
        deal_id=None,
    )


def assign_deal(
    session: Session,
    workspace_id: int,
    deal: Deal,
    *,
    trigger: str,
    actor: str = "system",
    force: bool = False,
    now: datetime | None = None,
) -> OwnerAssignment | None:
    """Give an unowned deal an owner by the rules, with a first-contact task (see ``assign_contact``). An unowned
    contact of the deal gets the same owner."""
    if deal.owner_id is not None and not force:
        return None
    contact = None
    if deal.contact_id is not None:
        contact = session.scalar(
            select(Contact).where(Contact.workspace_id == workspace_id, Contact.id == deal.contact_id)
        )
    choice = choose_owner(session, workspace_id, _facts(session, workspace_id, contact, deal.company_id))
    if choice is None:
        return None
    now = now or utcnow()
    deal.owner_id = choice.user_id
    if contact is not None and contact.owner_id is None:
        contact.owner_id = choice.user_id
    task = _handoff_task(
        session, workspace_id, choice.user_id, deal.name, contact_id=deal.contact_id, deal_id=deal.id, now=now
    )
    return _record(
        session,
        workspace_id,
        subject_type="deal",
        subject_id=deal.id,
        choice=choice,
        trigger=trigger,
        actor=actor,
        task=task,
        now=now,
        contact_id=deal.contact_id,
        deal_id=deal.id,
    )


def list_assignments(
    session: Session, workspace_id: int, *, subject_type: str | None = None, subject_id: int | None = None
) -> list[OwnerAssignment]:
    """The assignment log, newest first."""
    query = select(OwnerAssignment).where(OwnerAssignment.workspace_id == workspace_id)
    if subject_type is not None:
        query = query.where(OwnerAssignment.subject_type == subject_type)
    if subject_id is not None:
        query = query.where(OwnerAssignment.subject_id == subject_id)
    return list(session.scalars(query.order_by(OwnerAssignment.id.desc()).limit(500)))


STAGE_STREAM = "sales.stage_changes"


def run_assignment_scan(session: Session, *, limit: int = 2000) -> int:
    """One batch of ``scan_batch``; returns how many contacts were assigned."""
    return scan_batch(session, limit=limit)[1]


def scan_batch(session: Session, *, limit: int = 2000) -> tuple[int, int]:
    """Assign owners to contacts that reached their workspace's ``assign_on_stage`` (the worker job): follows the
    stage-change history after commit with a stored cursor (``events.stream``, which also catches ids committed out of
    order). Seeing a change twice does nothing: a contact that has an owner is left alone. Returns how many contacts
    were assigned. Returns (stage changes read, contacts assigned)."""
    table = StageChange.__table__
    cursor = lock_cursor(session, STAGE_STREAM, table)
    rows = read(session, cursor, table, [table.c.workspace_id, table.c.contact_id, table.c.to_stage], limit)
    triggers: dict[int, str | None] = {}
    assigned = 0
    for _id, workspace_id, contact_id, to_stage in rows:
        if workspace_id not in triggers:
            triggers[workspace_id] = session.scalar(
                select(SalesSettings.assign_on_stage).where(SalesSettings.workspace_id == workspace_id)
            )
        stage = triggers[workspace_id]
        if stage is None or to_stage != stage:
            continue
        contact = session.scalar(select(Contact).where(Contact.workspace_id == workspace_id, Contact.id == contact_id))
        if (
            contact is not None
            and contact.lifecycle_stage == stage
            and assign_contact(session, workspace_id, contact, trigger=f"stage:{stage}")
        ):
            assigned += 1
    session.flush()
    return len(rows), assigned


def handoff_status(task: Task, now: datetime) -> str:
    """open, overdue (no response and past due), met or late (responded after the due time)."""
    if task.responded_at is None:
        return "overdue" if task.due_at < now else "open"
    return "met" if task.responded_at <= task.due_at else "late"


def list_handoffs(
    session: Session,
    workspace_id: int,
    *,
    status: str | None = None,
    owner_id: int | None = None,
    now: datetime | None = None,
    limit: int = 200,
) -> list[tuple[Task, str, timedelta | None, timedelta | None]]:
    """Hand-off tasks (newest first) with their status and response time (elapsed and in working hours)."""
    now = now or utcnow()
    query = select(Task).where(Task.workspace_id == workspace_id, Task.handoff_at.is_not(None))
    if owner_id is not None:
        query = query.where(Task.owner_id == owner_id)
    if status == "overdue":
        query = query.where(Task.responded_at.is_(None), Task.due_at < now)
    elif status == "open":
        query = query.where(Task.responded_at.is_(None), Task.due_at >= now)
    elif status == "met":
        query = query.where(Task.responded_at.is_not(None), Task.responded_at <= Task.due_at)
    elif status == "late":
        query = query.where(Task.responded_at.is_not(None), Task.responded_at > Task.due_at)
    elif status is not None:
        raise DomainError("status", "status is open, overdue, met or late", code="invalid_status")
    out = []
    schedules: dict[int | None, wh.WorkingHours] = {}
    for task in session.scalars(query.order_by(Task.handoff_at.desc(), Task.id.desc()).limit(limit)):
        elapsed = working = None
        if task.responded_at is not None and task.handoff_at is not None:
            elapsed = task.responded_at - task.handoff_at
            if task.owner_id not in schedules:
                schedules[task.owner_id] = schedule_for(session, workspace_id, task.owner_id)
            working = wh.working_time_between(task.handoff_at, task.responded_at, schedules[task.owner_id])
        out.append((task, handoff_status(task, now), elapsed, working))
    return out


def mark_responded(
    session: Session, workspace_id: int, at: datetime, *, contact_id: int | None, deal_id: int | None
) -> int:
    """Record the first response to open hand-offs of this contact or deal (an activity logged at ``at``)."""
    subject = []
    if contact_id is not None:
        subject.append(Task.contact_id == contact_id)
    if deal_id is not None:
        subject.append(Task.deal_id == deal_id)
    if not subject:
        return 0
    from sqlalchemy import or_

    result = session.execute(
        update(Task)
        .where(
            Task.workspace_id == workspace_id,
            Task.handoff_at.is_not(None),
            Task.responded_at.is_(None),
            Task.handoff_at <= at,
            or_(*subject),
        )
        .values(responded_at=at)
        .execution_options(synchronize_session="fetch")
    )
    return rowcount(result)
