"""Contact use cases. Services flush, never commit: the request or job edge commits once."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, func, insert, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suppilo.companies import service as companies_service
from suppilo.contacts import repository
from suppilo.contacts.models import Contact, ContactTag, LifecycleStage, StageChange
from suppilo.contacts.normalize import (
    email_domain,
    is_free_mail,
    normalize_country,
    normalize_email,
    normalize_language,
    normalize_phone,
    timezone_for_country,
)
from suppilo.contacts.properties import validate_properties
from suppilo.contacts.schemas import (
    ContactCreate,
    ContactFilter,
    ContactPage,
    ContactRead,
    ContactUpdate,
    LifecycleStageRead,
    StageSetIn,
    TimelineItem,
    TimelinePage,
    check_limit,
    decode_cursor,
    encode_cursor,
)
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.db.types import UTCDateTime
from suppilo.engine.lifecycle import (
    DEFAULT_RULES,
    DEFAULT_STAGES,
    StageSpec,
    decide_rule_move,
    validate_stage_set,
)
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.workspaces.models import Membership
from suppilo.workspaces.service import get_workspace, record_audit


class ContactError(DomainError):
    """A refused contact operation."""


def seed_default_stages(session: Session, workspace_id: int) -> None:
    """Give a new workspace the default lifecycle stages."""
    for spec in DEFAULT_STAGES:
        session.add(
            LifecycleStage(
                workspace_id=workspace_id,
                key=spec.key,
                label=spec.label,
                position=spec.position,
                kind=spec.kind,
                description=spec.description,
            )
        )
    session.flush()


def stage_specs(session: Session, workspace_id: int) -> list[StageSpec]:
    """The workspace's lifecycle stages in order."""
    rows = session.scalars(
        select(LifecycleStage).where(LifecycleStage.workspace_id == workspace_id).order_by(LifecycleStage.position)
    )
    return [StageSpec(r.key, r.label, r.position, r.kind, r.description) for r in rows]


def lifecycle_rules(settings: dict[str, object] | None) -> dict[str, str]:
    """The workspace's automatic stage rules: defaults overridden by ``settings['lifecycle_rules']``."""
    rules = dict(DEFAULT_RULES)
    custom = (settings or {}).get("lifecycle_rules")
    if isinstance(custom, dict):
        for trigger, stage in custom.items():
            if stage is None:
                rules.pop(str(trigger), None)
            else:
                rules[str(trigger)] = str(stage)
    return rules


def change_stage(
    session: Session,
    contact: Contact,
    to_stage: str,
    *,
    reason: str,
    source: str,
    actor: str | None = None,
    at: datetime | None = None,
    stages: list[StageSpec] | None = None,
) -> StageChange | None:
    """Move ``contact`` to ``to_stage`` and record the change; None when it is already there."""
    known = stages if stages is not None else stage_specs(session, contact.workspace_id)
    if to_stage not in {s.key for s in known}:
        raise ContactError("lifecycle_stage", f"unknown lifecycle stage {to_stage!r}", code="unknown_stage")
    if contact.lifecycle_stage == to_stage:
        return None
    when = at or utcnow()
    change = StageChange(
        workspace_id=contact.workspace_id,
        contact_id=contact.id,
        from_stage=contact.lifecycle_stage,
        to_stage=to_stage,
        changed_at=when,
        reason=reason[:500],
        source=source,
        actor=actor,
    )
    contact.lifecycle_stage = to_stage
    contact.lifecycle_stage_at = when
    session.add(change)
    session.flush()
    return change


def apply_rule(
    session: Session,
    contact: Contact,
    trigger: str,
    *,
    rules: dict[str, str],
    stages: list[StageSpec],
    at: datetime | None = None,
    detail: str = "",
) -> StageChange | None:
    """Apply the automatic rule for ``trigger`` (e.g. ``form_submitted``) to ``contact``."""
    move = decide_rule_move(stages, rules, contact.lifecycle_stage, trigger)
    if move is None:
        return None
    reason = f"{move.reason}: {detail}" if detail else move.reason
    return change_stage(session, contact, move.to_stage, reason=reason, source="rule", at=at, stages=stages)


def repoint_stage_history(session: Session, workspace_id: int, from_contact_id: int, to_contact_id: int) -> None:
    """Move the stage history of one contact onto another (used by merges)."""
    session.execute(
        update(StageChange)
        .where(StageChange.workspace_id == workspace_id, StageChange.contact_id == from_contact_id)
        .values(contact_id=to_contact_id)
    )


# --- contacts -------------------------------------------------------------------------------------------------------

_SIMPLE_TEXT = ("region", "city", "job_title", "external_id")
MAX_TAG_LENGTH = 100


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())
    return value or None


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ContactError("timezone", f"{name!r} is not an IANA time zone", code="invalid_timezone") from exc
    return name


def _check_owner(session: Session, workspace_id: int, owner_id: int) -> None:
    member = session.scalar(
        select(Membership.id).where(Membership.workspace_id == workspace_id, Membership.user_id == owner_id)
    )
    if member is None:
        raise ContactError("owner_id", f"user {owner_id} is not a member of this workspace", code="invalid_owner")


def normalize_tags(tags: Iterable[str], path: str = "tags") -> list[str]:
    """Trimmed, lower-cased, de-duplicated tags, sorted; an empty or over-long tag raises ContactError."""
    out: set[str] = set()
    for i, raw in enumerate(tags):
        tag = " ".join(str(raw).split()).lower()
        if not tag:
            raise ContactError(f"{path}[{i}]", "a tag cannot be empty", code="invalid_tag")
        if len(tag) > MAX_TAG_LENGTH:
            raise ContactError(f"{path}[{i}]", f"a tag is at most {MAX_TAG_LENGTH} characters", code="invalid_tag")
        out.add(tag)
    return sorted(out)


def _normalized_fields(
    session: Session, workspace_id: int, fields: dict[str, Any], contact: Contact | None
) -> dict[str, Any]:
    """Column values for ``fields`` (only the keys given), normalised and checked."""
    out: dict[str, Any] = {}
    if "email" in fields:
        out["email"] = normalize_email(fields["email"]) if fields["email"] and fields["email"].strip() else None
    for key in ("first_name", "last_name"):
        if key in fields:
            out[key] = _text(fields[key])
            out[f"{key}_lower"] = out[key].lower() if out[key] else None
    for key in _SIMPLE_TEXT:
        if key in fields:
            out[key] = _text(fields[key])
    if "country" in fields:
        out["country"] = normalize_country(fields["country"]) if fields["country"] else None
    if "language" in fields:
        out["language"] = normalize_language(fields["language"]) if fields["language"] else None
    if "timezone" in fields:
        out["timezone"] = _check_timezone(fields["timezone"].strip()) if fields["timezone"] else None
    country = out.get("country", contact.country if contact else None)
    if "timezone" not in out and "country" in out:
        old_country = contact.country if contact else None
        old_tz = contact.timezone if contact else None
        if old_tz is None or old_tz == timezone_for_country(old_country):
            out["timezone"] = timezone_for_country(country)
    if "phone" in fields:
        if fields["phone"] and fields["phone"].strip():
            default_country = country or get_workspace(session, workspace_id).country
            out["phone"] = normalize_phone(fields["phone"], default_country)
        else:
            out["phone"] = None
    if fields.get("owner_id") is not None:
        _check_owner(session, workspace_id, fields["owner_id"])
    if "owner_id" in fields:
        out["owner_id"] = fields["owner_id"]
    if fields.get("company_id") is not None:
        try:
            companies_service.get_company(session, workspace_id, fields["company_id"])
        except NotFound as exc:
            raise ContactError("company_id", exc.message, code="invalid_company") from exc
    if "company_id" in fields:
        out["company_id"] = fields["company_id"]
    return out


def _check_unique(session: Session, workspace_id: int, values: dict[str, Any], contact_id: int | None) -> None:
    if values.get("email"):
        other = repository.by_email(session, workspace_id, values["email"])
        if other is not None and other.id != contact_id:
            raise Conflict("email", f"contact {other.id} already has the email {values['email']}", "duplicate_email")
    if values.get("external_id"):
        other_id = session.scalar(
            select(Contact.id).where(Contact.workspace_id == workspace_id, Contact.external_id == values["external_id"])
        )
        if other_id is not None and other_id != contact_id:
            raise Conflict(
                "external_id", f"contact {other_id} already has this external id", code="duplicate_external_id"
            )


def _link_company(session: Session, contact: Contact) -> None:
    """Link a contact with a work email to the company of its domain (created when missing)."""
    if contact.email is None or contact.company_id is not None:
        return
    domain = email_domain(contact.email)
    if is_free_mail(domain):
        return
    contact.company_id = companies_service.find_or_create_by_domain(session, contact.workspace_id, domain).id


def _flush_unique(session: Session, workspace_id: int, values: dict[str, Any], contact_id: int | None) -> None:
    """Flush; a concurrent duplicate (unique index) becomes the same Conflict as the pre-check."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        _check_unique(session, workspace_id, values, contact_id)
        raise


def _replace_tags(session: Session, contact: Contact, tags: list[str]) -> bool:
    current = set(repository.tags_of(session, contact.workspace_id, [contact.id])[contact.id])
    wanted = set(tags)
    if current == wanted:
        return False
    if current - wanted:
        session.execute(
            delete(ContactTag).where(
                ContactTag.workspace_id == contact.workspace_id,
                ContactTag.contact_id == contact.id,
                ContactTag.tag.in_(sorted(current - wanted)),
            )
        )
    for tag in sorted(wanted - current):
        session.add(ContactTag(workspace_id=contact.workspace_id, contact_id=contact.id, tag=tag))
    session.flush()
    return True


def create_contact(
    session: Session, workspace_id: int, data: ContactCreate, *, actor: str | None = None, source: str = "api"
) -> Contact:
    """A new contact, normalised, linked to its company by email domain, with its first stage recorded."""
    fields = data.model_dump(exclude={"tags", "properties", "lifecycle_stage", "is_anonymous"})
    values = _normalized_fields(session, workspace_id, fields, None)
    if "timezone" not in values or values["timezone"] is None:
        values["timezone"] = timezone_for_country(values.get("country"))
    tags = normalize_tags(data.tags)
    properties = validate_properties(session, workspace_id, "contact", data.properties)
    stages = stage_specs(session, workspace_id)
    if data.lifecycle_stage:
        if data.lifecycle_stage not in {s.key for s in stages}:
            raise ContactError(
                "lifecycle_stage", f"unknown lifecycle stage {data.lifecycle_stage!r}", code="unknown_stage"
            )
        stage = data.lifecycle_stage
    else:
        funnel = [s for s in stages if s.kind == "funnel"]
        stage = funnel[0].key if funnel else "awareness"
    _check_unique(session, workspace_id, values, None)
    now = utcnow()
    contact = Contact(
        workspace_id=workspace_id,
        is_anonymous=data.is_anonymous and not values.get("email"),
        lifecycle_stage=stage,
        lifecycle_stage_at=now,
        properties=properties,
        version=1,
        created_at=now,
        updated_at=now,
        **values,
    )
    session.add(contact)
    _flush_unique(session, workspace_id, values, None)
    if data.company_id is None:
        _link_company(session, contact)
    session.add(
        StageChange(
            workspace_id=workspace_id,
            contact_id=contact.id,
            from_stage=None,
            to_stage=stage,
            changed_at=now,
            reason="contact created",
            source=source[:16],
            actor=actor,
        )
    )
    for tag in tags:
        session.add(ContactTag(workspace_id=workspace_id, contact_id=contact.id, tag=tag))
    session.flush()
    return contact


def _claim_version(session: Session, contact: Contact, expected_version: int | None) -> None:
    """Bump the contact's version; with ``expected_version`` only if it is still that (else 409)."""
    if expected_version is None:
        contact.version = (contact.version or 0) + 1
        return
    result = session.execute(
        update(Contact)
        .where(
            Contact.workspace_id == contact.workspace_id,
            Contact.id == contact.id,
            Contact.version == expected_version,
        )
        .values(version=expected_version + 1)
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        session.refresh(contact, ["version"])
        raise Conflict(
            "version",
            f"the contact was changed meanwhile (version {contact.version}, you sent {expected_version}); reload it",
            code="version_conflict",
        )
    contact.version = expected_version + 1


def update_contact(
    session: Session,
    workspace_id: int,
    contact_id: int,
    data: ContactUpdate,
    *,
    expected_version: int | None = None,
    actor: str | None = None,
) -> Contact:
    """Change a contact. A stale ``expected_version`` (or ``data.version``) is refused with 409 and nothing changes."""
    contact = get_contact(session, workspace_id, contact_id)
    changes = data.model_dump(exclude_unset=True)
    version = changes.pop("version", None)
    expected = expected_version if expected_version is not None else version
    tags_in = changes.pop("tags", None)
    props_in = changes.pop("properties", None)
    values = _normalized_fields(session, workspace_id, changes, contact)
    tags = normalize_tags(tags_in) if tags_in is not None else None
    properties = (
        validate_properties(session, workspace_id, "contact", props_in, current=contact.properties)
        if props_in is not None
        else None
    )
    _check_unique(session, workspace_id, values, contact.id)
    _claim_version(session, contact, expected)
    for key, value in values.items():
        setattr(contact, key, value)
    if values.get("email"):
        contact.is_anonymous = False
    if properties is not None:
        contact.properties = properties
    contact.updated_at = utcnow()
    _flush_unique(session, workspace_id, values, contact.id)
    if values.get("email") and "company_id" not in changes:
        _link_company(session, contact)
    if tags is not None:
        _replace_tags(session, contact, tags)
    session.flush()
    return contact


_UPSERT_FIELDS = frozenset(ContactCreate.model_fields) - {"email", "is_anonymous"}


def upsert_contact_by_email(
    session: Session, workspace_id: int, email: str, attrs: dict[str, Any], *, source: str
) -> tuple[Contact, bool]:
    """The contact with ``email``, created from ``attrs`` or updated with its non-empty values; (contact, created).

    ``tags`` are added to the existing ones and ``properties`` merged. Unknown attribute names raise ContactError.
    """
    unknown = sorted(set(attrs) - _UPSERT_FIELDS)
    if unknown:
        raise ContactError(unknown[0], f"{unknown[0]!r} is not a contact attribute", code="unknown_attribute")
    normalized = normalize_email(email)
    existing = repository.by_email(session, workspace_id, normalized)
    if existing is None:
        data = ContactCreate(email=normalized, **attrs)
        return create_contact(session, workspace_id, data, actor=source, source=source), True
    given = {k: v for k, v in attrs.items() if v not in (None, "", [], {}) and k not in ("tags", "lifecycle_stage")}
    if attrs.get("tags"):
        current = repository.tags_of(session, workspace_id, [existing.id])[existing.id]
        given["tags"] = [*current, *normalize_tags(attrs["tags"])]
    contact = update_contact(session, workspace_id, existing.id, ContactUpdate(**given), actor=source)
    return contact, False


def get_contact(session: Session, workspace_id: int, contact_id: int) -> Contact:
    """The contact with this id in this workspace (following merges to the surviving contact); else NotFound."""
    seen: set[int] = set()
    current = contact_id
    while current not in seen:
        seen.add(current)
        contact = repository.by_id(session, workspace_id, current)
        if contact is not None:
            return contact
        target = repository.merged_into(session, workspace_id, current)
        if target is None:
            break
        current = target
    raise NotFound("contact_id", f"contact {contact_id} not found")


def delete_contact(session: Session, workspace_id: int, contact_id: int, *, actor: str | None = None) -> None:
    """Delete a contact and what belongs to it (tags, identities, events), leaving an audit entry."""
    contact = get_contact(session, workspace_id, contact_id)
    record_audit(
        session,
        workspace_id,
        actor=actor or "system",
        action="contact.deleted",
        subject_type="contact",
        subject_id=contact.id,
        details={"email": contact.email, "external_id": contact.external_id},
    )
    session.execute(
        delete(ContactTag).where(ContactTag.workspace_id == workspace_id, ContactTag.contact_id == contact.id)
    )
    session.delete(contact)
    session.flush()


def contact_reads(session: Session, workspace_id: int, contacts: list[Contact]) -> list[ContactRead]:
    """API shapes of ``contacts`` with their sorted tags (one query for all)."""
    tags = repository.tags_of(session, workspace_id, [c.id for c in contacts])
    out = []
    for c in contacts:
        read = ContactRead.model_validate(c)
        read.tags = tags[c.id]
        out.append(read)
    return out


def contact_read(session: Session, contact: Contact) -> ContactRead:
    """The API shape of one contact."""
    return contact_reads(session, contact.workspace_id, [contact])[0]


def list_contacts(
    session: Session, workspace_id: int, flt: ContactFilter, *, cursor: str | None = None, limit: int = 50
) -> ContactPage:
    """A page of contacts newest first; ``next_cursor`` continues it (None on the last page)."""
    check_limit(limit)
    before_id = decode_cursor(cursor)
    text = repository.search_text(flt.q or "")
    if repository.is_single_term(text):
        rows = _search_page(session, workspace_id, flt, text, before_id=before_id, limit=limit + 1)
    else:
        stmt = repository.list_statement(workspace_id, flt, before_id=before_id, limit=limit + 1)
        rows = list(session.scalars(stmt))
    more = len(rows) > limit
    rows = rows[:limit]
    return ContactPage(
        items=contact_reads(session, workspace_id, rows),
        next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
    )


def _search_page(
    session: Session, workspace_id: int, flt: ContactFilter, text: str, *, before_id: int | None, limit: int
) -> list[Contact]:
    """A page of a one-term search: from the prefix indexes when matches are few, else walking ids newest first."""
    candidates = repository.sparse_candidates(session, workspace_id, text, before_id=before_id)
    if candidates is None:
        stmt = repository.list_statement(
            workspace_id, flt, before_id=before_id, limit=limit, search=repository.dense_condition(text)
        )
        return list(session.scalars(stmt))
    rows: list[Contact] = []
    chunk = 500
    for start in range(0, len(candidates), chunk):
        ids = candidates[start : start + chunk]
        stmt = repository.list_statement(
            workspace_id, flt, before_id=before_id, limit=limit - len(rows), search=Contact.id.in_(ids)
        )
        rows.extend(session.scalars(stmt))
        if len(rows) >= limit:
            break
    return rows


def get_tags(session: Session, workspace_id: int, contact_id: int) -> list[str]:
    """The contact's tags, sorted."""
    contact = get_contact(session, workspace_id, contact_id)
    return repository.tags_of(session, workspace_id, [contact.id])[contact.id]


def set_tags(session: Session, workspace_id: int, contact_id: int, tags: Iterable[str]) -> list[str]:
    """Replace the contact's tags; returns them sorted."""
    contact = get_contact(session, workspace_id, contact_id)
    wanted = normalize_tags(tags)
    if _replace_tags(session, contact, wanted):
        _claim_version(session, contact, None)
        session.flush()
    return wanted


def add_tags(session: Session, workspace_id: int, contact_id: int, tags: Iterable[str]) -> list[str]:
    """Add tags to the contact; returns all its tags sorted."""
    contact = get_contact(session, workspace_id, contact_id)
    current = repository.tags_of(session, workspace_id, [contact.id])[contact.id]
    return set_tags(session, workspace_id, contact.id, [*current, *normalize_tags(tags)])


def remove_tags(session: Session, workspace_id: int, contact_id: int, tags: Iterable[str]) -> list[str]:
    """Remove tags from the contact (absent ones are ignored); returns the remaining tags sorted."""
    contact = get_contact(session, workspace_id, contact_id)
    drop = set(normalize_tags(tags))
    current = repository.tags_of(session, workspace_id, [contact.id])[contact.id]
    return set_tags(session, workspace_id, contact.id, [t for t in current if t not in drop])


def change_tags_many(
    session: Session,
    workspace_id: int,
    add: dict[int, Iterable[str]] | None = None,
    remove: dict[int, Iterable[str]] | None = None,
) -> set[int]:
    """Add and remove tags of many contacts of the workspace with a few statements (journeys, bulk edits).

    Contacts whose tags changed get a new version; segments that depend on tags are updated for them at once.
    Returns the ids of the contacts whose tags changed.
    """
    adding = {cid: normalize_tags(tags) for cid, tags in (add or {}).items()}
    removing = {cid: set(normalize_tags(tags)) for cid, tags in (remove or {}).items()}
    ids = sorted(set(adding) | set(removing))
    if not ids:
        return set()
    session.flush()
    current = repository.tags_of(session, workspace_id, ids)
    new_rows: list[dict[str, Any]] = []
    drops: dict[str, list[int]] = {}
    changed: set[int] = set()
    for cid in ids:
        have = set(current.get(cid, []))
        for tag in sorted(set(adding.get(cid, [])) - have):
            new_rows.append({"workspace_id": workspace_id, "contact_id": cid, "tag": tag})
            changed.add(cid)
        for tag in sorted(removing.get(cid, set()) & have):
            drops.setdefault(tag, []).append(cid)
            changed.add(cid)
    if new_rows:
        session.execute(insert(ContactTag), new_rows)
    for tag, cids in drops.items():
        session.execute(
            delete(ContactTag).where(
                ContactTag.workspace_id == workspace_id, ContactTag.tag == tag, ContactTag.contact_id.in_(cids)
            )
        )
    if changed:
        now = utcnow()
        session.execute(
            update(Contact)
            .where(Contact.workspace_id == workspace_id, Contact.id.in_(sorted(changed)))
            .values(version=Contact.version + 1, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        for contact in session.identity_map.values():
            if isinstance(contact, Contact) and contact.id in changed:
                session.expire(contact, ["version", "updated_at"])
        from suppilo.segments import service as segments_service

        segments_service.update_for_contacts(session, workspace_id, sorted(changed), {"tags"}, now, reason="tags")
    return changed


# --- lifecycle ------------------------------------------------------------------------------------------------------


def move_contact_stage(
    session: Session, workspace_id: int, contact_id: int, stage: str, *, reason: str, actor: str | None
) -> tuple[Contact, StageChange | None]:
    """A manual move (source ``api``); the change is None when the contact already is in ``stage``."""
    contact = get_contact(session, workspace_id, contact_id)
    change = change_stage(session, contact, stage, reason=reason or "manual move", source="api", actor=actor)
    if change is not None:
        _claim_version(session, contact, None)
        session.flush()
    return contact, change


def stage_history(session: Session, workspace_id: int, contact_id: int) -> list[StageChange]:
    """The contact's stage changes, newest first."""
    contact = get_contact(session, workspace_id, contact_id)
    return list(
        session.scalars(
            select(StageChange)
            .where(StageChange.workspace_id == workspace_id, StageChange.contact_id == contact.id)
            .order_by(StageChange.changed_at.desc(), StageChange.id.desc())
        )
    )


def list_stages(session: Session, workspace_id: int) -> list[LifecycleStageRead]:
    """The workspace's stages in order, each with the number of contacts in it."""
    counts = dict(
        session.execute(
            select(Contact.lifecycle_stage, func.count())
            .where(Contact.workspace_id == workspace_id)
            .group_by(Contact.lifecycle_stage)
        ).all()
    )
    return [
        LifecycleStageRead(
            key=s.key,
            label=s.label,
            position=s.position,
            kind=s.kind,
            description=s.description,
            contacts=int(counts.get(s.key, 0)),
        )
        for s in stage_specs(session, workspace_id)
    ]


def replace_stages(
    session: Session, workspace_id: int, data: StageSetIn, *, actor: str | None = None
) -> list[LifecycleStageRead]:
    """Replace the stage set. Contacts in a removed stage move to ``data.move_to`` (recorded), else 409."""
    specs = [StageSpec(s.key, s.label, s.position, s.kind, s.description) for s in data.stages]
    problems = validate_stage_set(specs)
    if problems:
        raise ContactError("stages", "; ".join(problems), code="invalid_stage_set")
    new_keys = {s.key for s in specs}
    existing = {
        r.key: r for r in session.scalars(select(LifecycleStage).where(LifecycleStage.workspace_id == workspace_id))
    }
    removed = sorted(set(existing) - new_keys)
    in_removed = 0
    if removed:
        in_removed = int(
            session.scalar(
                select(func.count())
                .select_from(Contact)
                .where(Contact.workspace_id == workspace_id, Contact.lifecycle_stage.in_(removed))
            )
            or 0
        )
    if in_removed:
        if not data.move_to:
            raise Conflict(
                "move_to",
                f"{in_removed} contact(s) are in {', '.join(removed)}; give move_to to move them",
                code="stage_in_use",
            )
        if data.move_to not in new_keys:
            raise ContactError("move_to", f"{data.move_to!r} is not in the new stage set", code="unknown_stage")
        now = utcnow()
        reason = data.reason or "stage removed from the lifecycle"
        moved = select(
            literal(workspace_id),
            Contact.id,
            Contact.lifecycle_stage,
            literal(data.move_to),
            literal(now, UTCDateTime()),
            literal(reason[:500]),
            literal("api"),
            literal(actor),
        ).where(Contact.workspace_id == workspace_id, Contact.lifecycle_stage.in_(removed))
        session.execute(
            insert(StageChange).from_select(
                ["workspace_id", "contact_id", "from_stage", "to_stage", "changed_at", "reason", "source", "actor"],
                moved,
            )
        )
        session.execute(
            update(Contact)
            .where(Contact.workspace_id == workspace_id, Contact.lifecycle_stage.in_(removed))
            .values(lifecycle_stage=data.move_to, lifecycle_stage_at=now, version=Contact.version + 1, updated_at=now)
            .execution_options(synchronize_session="fetch")
        )
    for key in removed:
        session.delete(existing[key])
    for spec in specs:
        row = existing.get(spec.key)
        if row is None:
            session.add(
                LifecycleStage(
                    workspace_id=workspace_id,
                    key=spec.key,
                    label=spec.label,
                    position=spec.position,
                    kind=spec.kind,
                    description=spec.description,
                )
            )
        else:
            row.label, row.position, row.kind, row.description = spec.label, spec.position, spec.kind, spec.description
    record_audit(
        session,
        workspace_id,
        actor=actor or "system",
        action="lifecycle.stages_replaced",
        subject_type="workspace",
        subject_id=workspace_id,
        details={"stages": sorted(new_keys), "removed": removed, "moved": in_removed, "move_to": data.move_to},
    )
    session.flush()
    return list_stages(session, workspace_id)


# --- timeline -------------------------------------------------------------------------------------------------------


def timeline(
    session: Session, workspace_id: int, contact_id: int, *, before: datetime | None = None, limit: int = 50
) -> TimelinePage:
    """Events, stage changes, orders, form submissions and touches of a contact, newest first.

    ``next_before`` is the time of the last item; items sharing that time are kept on the same page so that
    continuing with ``before=next_before`` skips nothing.
    """
    check_limit(limit)
    if before is not None and before.tzinfo is None:
        raise ContactError("before", "before needs a time zone (e.g. 2024-05-01T12:00:00Z)", code="naive_datetime")
    contact = get_contact(session, workspace_id, contact_id)
    rows = repository.timeline_rows(session, workspace_id, contact.id, before=before, limit=limit + 1)
    rows.sort(key=lambda r: r["at"], reverse=True)
    if len(rows) <= limit:
        return TimelinePage(items=[TimelineItem(**r) for r in rows], next_before=None)
    cut = limit
    while cut < len(rows) and rows[cut]["at"] == rows[limit - 1]["at"]:
        cut += 1
    page = rows[:cut]
    return TimelinePage(items=[TimelineItem(**r) for r in page], next_before=page[-1]["at"])
