"""The Segment-spec ingest path: validate calls, resolve identities, store events, touches and contact changes in bulk.

One batch costs a fixed number of statements (identity and contact lookups, one INSERT per kind of row,
one UPDATE per distinct set of changed contact columns) whatever its size; only rare cases (merges of
stored contacts, lifecycle moves, groups) use the ORM.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.commerce import service as commerce_service
from suppilo.companies.models import Company
from suppilo.contacts import service as contacts_service
from suppilo.contacts.merge import merge_contacts
from suppilo.contacts.models import Contact
from suppilo.contacts.normalize import InvalidValue, normalize_domain, normalize_email
from suppilo.db.base import utcnow
from suppilo.engine.channels import Classification, Visit, classify, parse_visit
from suppilo.engine.lifecycle import decide_rule_move
from suppilo.errors import DomainError
from suppilo.events import repository as repo
from suppilo.events import service as events_service
from suppilo.events.identity import Person, Resolver, coerce_property, contact_fields_from_traits
from suppilo.events.schemas import MESSAGE_MODELS

TYPES = frozenset(MESSAGE_MODELS)


class ItemError(Exception):
    """An invalid call: the path of the offending field and why."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


@dataclass(slots=True)
class Message:
    """A validated call, normalised for storage."""

    index: int
    kind: str
    name: str
    message_id: str
    anonymous_id: str | None
    user_id: str | None
    occurred_at: datetime
    properties: dict[str, Any]
    context: dict[str, Any]
    traits: dict[str, Any]
    email: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    person: Person | None = None
    received_at: datetime | None = None  # when its request arrived (calls of several requests can share a store)
    # Where ``store`` reports this call's errors when requests share a store: (its request's error list, path prefix)
    sink: tuple[list[dict[str, Any]], str] | None = None

    def contact(self) -> Person:
        """The contact this call is about (the surviving one after merges); set once identities are resolved."""
        if self.person is None:
            raise RuntimeError("the call has not been resolved to a contact")
        return self.person.find()

    def contact_id(self) -> int:
        """The id of ``contact()``, which is stored by then."""
        contact_id = self.contact().id
        if contact_id is None:
            raise RuntimeError("the call's contact has not been stored")
        return contact_id


@dataclass(slots=True)
class IngestResult:
    """What a batch did: valid calls, calls stored now (not seen before) and the invalid ones."""

    accepted: int
    stored: int
    errors: list[dict[str, Any]] = field(default_factory=list)


def _join(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def message_hash(raw: dict[str, Any]) -> str:
    """A deterministic message id for a call that came without one: the hash of its canonical JSON."""
    try:
        data = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        data = json.dumps(raw, sort_keys=True, default=str).encode()
    return "sha256-" + hashlib.sha256(data).hexdigest()[:48]


# An RFC 3339 timestamp that ``datetime.fromisoformat`` and pydantic read alike (anything else goes to pydantic).
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})?")
_COMMON = ("messageId", "anonymousId", "userId", "timestamp", "originalTimestamp", "sentAt", "context")
_FAST_FIELDS: dict[str, tuple[tuple[str, int, bool], ...]] = {
    # (field, max length of a string / -1 for an object, required) beyond the common ones
    "track": (("event", 200, True), ("properties", -1, False)),
    "page": (("name", 200, False), ("category", 200, False), ("properties", -1, False)),
    "screen": (("name", 200, False), ("category", 200, False), ("properties", -1, False)),
    "identify": (("traits", -1, False),),
    "group": (("groupId", 200, True), ("traits", -1, False)),
    "alias": (("previousId", 200, True), ("userId", 200, True)),
}


def _fast_time(value: Any) -> datetime | None:
    if type(value) is not str or not _TIMESTAMP.fullmatch(value):
        raise ValueError
    return datetime.fromisoformat(value)


def _fast_fields(raw: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The fields of a call in the plain shape every library sends, checked without pydantic.

    Returns None for anything else (numbers where strings belong, other time formats, invalid values): those
    calls go through the pydantic model, which accepts or refuses them with its messages, so the result never
    depends on which path read the call.
    """
    get = raw.get
    out: dict[str, Any] = {}
    try:
        for name in ("messageId", "anonymousId", "userId"):
            value = get(name)
            if value is not None and (type(value) is not str or len(value) > 200):
                return None
            out[name] = value
        for name in ("timestamp", "originalTimestamp", "sentAt"):
            value = get(name)
            out[name] = None if value is None else _fast_time(value)
    except ValueError:
        return None
    context = get("context")
    if context is not None and (type(context) is not dict or not all(type(k) is str for k in context)):
        return None
    out["context"] = context
    for name, limit, required in _FAST_FIELDS[kind]:
        value = get(name)
        if value is None:
            if required:
                return None
        elif limit < 0:
            if type(value) is not dict or not all(type(k) is str for k in value):
                return None
        elif type(value) is not str or len(value) > limit or (required and not value):
            return None
        out[name] = value
    return out


def _model_fields(raw: dict[str, Any], kind: str, prefix: str) -> dict[str, Any]:
    """The fields of a call validated by its pydantic model; raises ItemError with the first error's path."""
    try:
        msg = MESSAGE_MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ItemError(_join(prefix, tuple(first["loc"])), str(first["msg"])) from None
    return {name: getattr(msg, name) for name in (*_COMMON, *(f[0] for f in _FAST_FIELDS[kind]))}


def parse_message(
    raw: Any,
    index: int,
    *,
    kind: str | None,
    received_at: datetime,
    sent_at: datetime | None = None,
    ip: str | None = None,
    prefix: str = "",
) -> Message:
    """Validate one call; raises ItemError with the field path (``prefix`` + field)."""
    if not isinstance(raw, dict):
        raise ItemError(prefix or "body", "a call must be a JSON object")
    if kind is None:
        declared = raw.get("type")
        kind = declared.lower() if isinstance(declared, str) else None
        if kind not in TYPES:
            raise ItemError(
                _join(prefix, ("type",)), f"type must be one of {', '.join(sorted(TYPES))}; got {declared!r}"
            )
    f = _fast_fields(raw, kind)
    if f is None:
        f = _model_fields(raw, kind, prefix)
    anonymous_id = f["anonymousId"]
    user_id = f["userId"]
    if not (anonymous_id or user_id):
        raise ItemError(_join(prefix, ("userId",)), "anonymousId or userId is required")
    timestamp = _aware(f["timestamp"] or f["originalTimestamp"])
    sent = _aware(f["sentAt"]) or sent_at
    if timestamp is not None and sent is not None:
        occurred = received_at - (sent - timestamp)
    else:
        occurred = timestamp or received_at
    context = dict(f["context"] or {})
    if ip and "ip" not in context:
        context["ip"] = ip
    traits: dict[str, Any] = dict(f["traits"] or {}) if kind in ("identify", "group") else {}
    properties: dict[str, Any]
    email: str | None = None
    group_id = previous_id = None
    if kind == "track":
        name = f["event"]
        properties = dict(f["properties"] or {})
    elif kind in ("page", "screen"):
        properties = dict(f["properties"] or {})
        name = f["name"] or (str(properties["name"])[:200] if properties.get("name") else kind)
        if f["category"] and "category" not in properties:
            properties["category"] = f["category"]
    elif kind == "identify":
        name = "identify"
        properties = traits
        raw_email = traits.get("email")
        if raw_email not in (None, ""):
            if not isinstance(raw_email, str):
                raise ItemError(_join(prefix, ("traits", "email")), "email must be a string")
            try:
                email = normalize_email(raw_email)
            except InvalidValue as exc:
                raise ItemError(_join(prefix, ("traits", "email")), exc.message) from None
    elif kind == "group":
        name = "group"
        group_id = f["groupId"]
        properties = {"groupId": group_id, "traits": traits}
    else:
        name = "alias"
        previous_id = f["previousId"]
        properties = {"previousId": previous_id, "userId": user_id}
    message_id = f["messageId"] or message_hash({**raw, "type": kind})
    return Message(
        index=index,
        kind=kind,
        name=name,
        message_id=message_id,
        anonymous_id=anonymous_id,
        user_id=user_id,
        occurred_at=occurred,
        properties=properties,
        context=context,
        traits=traits,
        email=email,
        group_id=group_id,
        previous_id=previous_id,
        received_at=received_at,
    )


def parse_batch(
    items: list[Any], *, received_at: datetime, sent_at: datetime | None, ip: str | None, prefix: str = "batch"
) -> tuple[list[Message], list[dict[str, Any]]]:
    """Validate every call of a batch; the invalid ones are reported by index and path."""
    messages: list[Message] = []
    errors: list[dict[str, Any]] = []
    for i, raw in enumerate(items):
        try:
            messages.append(
                parse_message(
                    raw, i, kind=None, received_at=received_at, sent_at=sent_at, ip=ip, prefix=f"{prefix}[{i}]"
                )
            )
        except ItemError as exc:
            errors.append({"index": i, "path": exc.path, "message": exc.message})
    return messages, errors


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def visit_of(m: Message, site_domains: list[str]) -> tuple[Visit, str | None, str | None] | None:
    """The visit a call describes (page views, and calls whose context carries page, campaign or referrer)."""
    ctx = m.context
    page = ctx.get("page") if isinstance(ctx.get("page"), dict) else None
    campaign = ctx.get("campaign") if isinstance(ctx.get("campaign"), dict) else None
    ref = ctx.get("referrer")
    if m.kind != "page" and not (page or campaign or ref):
        return None
    url = referrer = None
    if m.kind == "page":
        url = _str(m.properties.get("url"))
        referrer = _str(m.properties.get("referrer"))
    if page:
        url = url or _str(page.get("url"))
        referrer = referrer or _str(page.get("referrer"))
    if isinstance(ref, dict):
        referrer = referrer or _str(ref.get("url")) or _str(ref.get("link"))
    elif isinstance(ref, str):
        referrer = referrer or _str(ref)
    if campaign is None or all(isinstance(v, str) for v in campaign.values()):
        key = (url, referrer, tuple(sorted(campaign.items())) if campaign else None, tuple(site_domains))
        visit = _parse_visit_cached(*key)
    else:
        visit = parse_visit(url=url, referrer=referrer, campaign=campaign, site_domains=site_domains)
    return visit, url, referrer


@lru_cache(maxsize=4096)
def _parse_visit_cached(
    url: str | None, referrer: str | None, campaign: tuple[tuple[str, str], ...] | None, site_domains: tuple[str, ...]
) -> Visit:
    return parse_visit(url=url, referrer=referrer, campaign=dict(campaign or ()), site_domains=site_domains)


def _custom_properties(traits: dict[str, Any], definitions: dict[str, tuple[str, list[str]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in traits.items():
        definition = definitions.get(key)
        if definition is not None:
            ok, coerced = coerce_property(definition[0], definition[1], value)
            if ok:
                out[key] = coerced
    return out


def _company_for_group(session: Session, workspace_id: int, group_id: str, traits: dict[str, Any]) -> int:
    """Find the company of a ``group`` call by its group id or normalised domain, or create it."""
    domain = None
    for key in ("domain", "website"):
        raw = traits.get(key)
        if isinstance(raw, str) and raw.strip():
            try:
                domain = normalize_domain(raw)
                break
            except InvalidValue:
                continue
    company = session.scalar(
        select(Company).where(Company.workspace_id == workspace_id, Company.external_id == group_id).limit(1)
    )
    if company is None and domain:
        company = session.scalar(select(Company).where(Company.workspace_id == workspace_id, Company.domain == domain))
    name = traits.get("name") if isinstance(traits.get("name"), str) and traits["name"].strip() else None
    if company is None:
        label = (name or domain or group_id).strip()[:200]
        company = Company(workspace_id=workspace_id, name=label, name_lower=label.lower(), domain=domain)
        session.add(company)
    if company.external_id is None:
        company.external_id = group_id
    if name:
        company.name = name.strip()[:200]
        company.name_lower = company.name.lower()
    if domain and company.domain is None:
        company.domain = domain
    if isinstance(traits.get("industry"), str):
        company.industry = traits["industry"][:100]
    employees = traits.get("employees")
    if isinstance(employees, int | float | str) and not isinstance(employees, bool):
        with contextlib.suppress(ValueError):
            company.employees = int(employees)
    session.flush()
    return company.id


def _apply_identified_rule(
    session: Session, workspace_id: int, candidates: dict[int, tuple[str, datetime]], ws_settings: dict[str, Any]
) -> None:
    """The ``contact_identified`` lifecycle rule for contacts an identify gave an email, in bulk.

    Decides each move with the same engine rule as ``contacts.service.apply_rule`` (forward only, side stages
    untouched) and writes the stage changes with one INSERT and one UPDATE per target stage.
    """
    lifecycle = contacts_service.lifecycle_rules(ws_settings)
    if "contact_identified" not in lifecycle:
        return
    stages = contacts_service.stage_specs(session, workspace_id)
    moves: list[dict[str, Any]] = []
    by_target: dict[str, list[tuple[int, str, datetime]]] = {}
    for contact_id, (stage, at) in candidates.items():
        move = decide_rule_move(stages, lifecycle, stage, "contact_identified")
        if move is None:
            continue
        moves.append(
            {
                "workspace_id": workspace_id,
                "contact_id": contact_id,
                "from_stage": stage,
                "to_stage": move.to_stage,
                "changed_at": at,
                "reason": move.reason[:500],
                "source": "rule",
                "actor": None,
            }
        )
        by_target.setdefault(move.to_stage, []).append((contact_id, stage, at))
    if not moves:
        return
    db = repo.raw(session.connection())
    repo.insert_stage_changes(db, moves)
    for target, params in by_target.items():
        repo.move_stages(db, workspace_id, target, params)


_NEW_CONTACT_FIELDS = (
    "email",
    "external_id",
    "first_name",
    "last_name",
    "first_name_lower",
    "last_name_lower",
    "phone",
    "language",
    "country",
    "region",
    "city",
    "timezone",
    "job_title",
)
_TOUCH_FIELDS = ("channel", "source", "campaign")


def store(
    session: Session,
    workspace_id: int,
    messages: list[Message],
    *,
    received_at: datetime,
    errors: list[dict[str, Any]] | None = None,
    prefix: str = "batch",
    synchronous_commit: bool | None = None,
) -> int:
    """Store validated calls: identities, contacts, events, touches, e-commerce records; returns how many are new.

    Calls whose e-commerce record cannot be made (an order without ``order_id``) are stored as events and
    reported in ``errors`` with the property path. ``synchronous_commit=False`` lets PostgreSQL acknowledge the
    transaction's commit before its WAL reaches the disk (see "Ingest" in ARCHITECTURE.md).
    """
    unique: dict[str, Message] = {}
    for m in messages:
        unique.setdefault(m.message_id, m)
    if not unique:
        return 0
    db = repo.raw(session.connection())
    repo.lock_workspace_ingest(db, workspace_id, synchronous_commit=synchronous_commit)
    known = repo.existing_message_ids(db, workspace_id, list(unique))
    msgs = [m for mid, m in unique.items() if mid not in known] if known else list(unique.values())
    if not msgs:
        return 0

    anon_ids: set[str] = set()
    user_ids: set[str] = set()
    emails: set[str] = set()
    for m in msgs:
        if m.anonymous_id:
            anon_ids.add(m.anonymous_id)
        if m.user_id:
            user_ids.add(m.user_id)
        if m.previous_id:
            anon_ids.add(m.previous_id)
            user_ids.add(m.previous_id)
        if m.email:
            emails.add(m.email)
    anon_map, user_map = repo.lookup_identities(db, workspace_id, anon_ids, user_ids)
    email_map = repo.contacts_by_email(db, workspace_id, emails) if emails else {}
    states = repo.contact_states(
        db, workspace_id, set(anon_map.values()) | set(user_map.values()) | set(email_map.values())
    )
    site_domains, ws_settings, ws_country = repo.workspace_info(db, workspace_id)
    resolver = Resolver(anon_map, user_map, email_map, states)

    definitions: dict[str, tuple[str, list[str]]] | None = None
    identified: list[tuple[Person, datetime]] = []
    groups: list[Message] = []
    for m in msgs:
        if m.kind == "alias":
            person = resolver.alias(m.previous_id or "", m.user_id or "")
        else:
            person = resolver.resolve(m.anonymous_id, m.user_id, m.email)
        m.person = person
        if m.kind == "identify":
            if m.traits:
                if definitions is None:
                    definitions = repo.contact_property_definitions(session.connection(), workspace_id)
                fields = contact_fields_from_traits(m.traits, person.country or ws_country)
                resolver.apply_traits(person, fields, _custom_properties(m.traits, definitions))
            if m.email:
                identified.append((person, m.occurred_at))
        elif m.kind == "group":
            groups.append(m)

    # Seen times and touches per surviving contact, in time order.
    rules: list[dict[str, Any]] | None = None
    classified: dict[Visit, Classification] = {}
    seen: dict[int, list[datetime]] = {}
    touch_first: dict[int, tuple[datetime, Classification]] = {}
    touch_latest: dict[int, tuple[datetime, Classification]] = {}
    touches: list[tuple[Message, Person, Classification, str | None, str | None]] = []
    for m in sorted(msgs, key=lambda x: x.occurred_at) if len(msgs) > 1 else msgs:
        person = m.contact()
        key = id(person)
        span = seen.get(key)
        if span is None:
            seen[key] = [m.occurred_at, m.occurred_at]
        else:
            span[1] = m.occurred_at
        found = visit_of(m, site_domains)
        if found is None:
            continue
        visit, url, referrer = found
        if visit.has_campaign or visit.referrer_host:
            if rules is None:
                rules = repo.cached_channel_rules(
                    workspace_id, lambda: events_service.channel_rules(session, workspace_id)
                )
            classification = classified.get(visit)
            if classification is None:
                classification = classified[visit] = classify(visit, rules)
        elif person.first_touch_at is None and key not in touch_first:
            classification = classify(visit, ())
        else:
            continue
        touches.append((m, person, classification, url, referrer))
        touch_first.setdefault(key, (m.occurred_at, classification))
        touch_latest[key] = (m.occurred_at, classification)

    now = utcnow()
    # New contacts, inserted in bulk with their final values.
    new_people = [p for p in resolver.new if p.parent is None]
    rows = []
    for p in new_people:
        first_seen, last_seen = seen.get(id(p), [received_at, received_at])
        row: dict[str, Any] = dict.fromkeys(_NEW_CONTACT_FIELDS)
        if p.changes:
            row.update({k: v for k, v in p.changes.items() if k in row})
        row.update(
            workspace_id=workspace_id,
            email=p.email,
            external_id=p.external_id,
            is_anonymous=p.is_anonymous,
            lifecycle_stage="awareness",
            lifecycle_stage_at=first_seen,
            properties=p.properties,
            first_seen_at=first_seen,
            last_seen_at=last_seen,
            version=1,
            created_at=now,
            updated_at=now,
        )
        first = touch_first.get(id(p))
        latest = touch_latest.get(id(p))
        for name, touch in (("first_touch", first), ("latest_touch", latest)):
            row[f"{name}_at"] = touch[0] if touch else None
            row[f"{name}_channel"] = touch[1].channel if touch else None
            row[f"{name}_source"] = touch[1].source if touch else None
            row[f"{name}_campaign"] = touch[1].campaign if touch else None
        rows.append(row)
    for p, new_id in zip(new_people, repo.insert_contacts(db, rows), strict=True):
        p.id = new_id
    if new_people:
        repo.insert_stage_changes(
            db,
            [
                {
                    "workspace_id": workspace_id,
                    "contact_id": p.id,
                    "from_stage": None,
                    "to_stage": "awareness",
                    "changed_at": seen.get(id(p), [received_at])[0],
                    "reason": "first seen",
                    "source": "rule",
                    "actor": None,
                }
                for p in new_people
            ],
        )

    identity_rows: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, value, p in resolver.identities:
        identity_rows.setdefault(
            (kind, value),
            {
                "workspace_id": workspace_id,
                "kind": kind,
                "value": value,
                "contact_id": p.find().id,
                "created_at": now,
            },
        )
    repo.insert_identities(db, list(identity_rows.values()))

    stored = repo.insert_event_rows(
        db,
        workspace_id,
        [
            {
                "workspace_id": workspace_id,
                "contact_id": m.contact().id,
                "anonymous_id": m.anonymous_id,
                "kind": m.kind,
                "name": m.name[:200],
                "properties": m.properties,
                "context": m.context,
                "occurred_at": m.occurred_at,
                "received_at": m.received_at or received_at,
                "message_id": m.message_id,
            }
            for m in msgs
        ],
    )
    touches = [t for t in touches if t[0].message_id in stored]
    if touches:
        event_ids = stored
        repo.insert_touches(
            db,
            [
                {
                    "workspace_id": workspace_id,
                    "contact_id": p.id,
                    "event_id": event_ids[m.message_id],
                    "occurred_at": m.occurred_at,
                    "channel": c.channel,
                    "source": c.source,
                    "medium": c.medium,
                    "campaign": c.campaign,
                    "term": c.term,
                    "content": c.content,
                    "referrer": referrer,
                    "landing_url": url,
                }
                for m, p, c, url, referrer in touches
            ],
        )

    trait_changes: dict[int, dict[str, Any]] = {}
    activity: dict[int, dict[str, Any]] = {}
    for p in resolver.persons.values():
        if p.parent is not None or p.id is None:
            continue
        values: dict[str, Any] = dict(p.changes)
        if p.props_changed:
            values["properties"] = p.properties
        if values:
            values["updated_at"] = now
            trait_changes[p.id] = values
        span = seen.get(id(p))
        first = touch_first.get(id(p))
        latest = touch_latest.get(id(p))
        if span is None and first is None and latest is None:
            continue
        # Every activity row carries all its columns (unchanged ones from the stored state): one statement.
        state = states[p.id]
        seen_first, seen_last = p.first_seen_at, p.last_seen_at
        if span is not None:
            if seen_first is None or span[0] < seen_first:
                seen_first = span[0]
            if seen_last is None or span[1] > seen_last:
                seen_last = span[1]
        row = {
            "first_seen_at": seen_first,
            "last_seen_at": seen_last,
            "first_touch_at": state.first_touch_at,
            "first_touch_channel": state.first_touch_channel,
            "first_touch_source": state.first_touch_source,
            "first_touch_campaign": state.first_touch_campaign,
            "latest_touch_at": state.latest_touch_at,
            "latest_touch_channel": state.latest_touch_channel,
            "latest_touch_source": state.latest_touch_source,
            "latest_touch_campaign": state.latest_touch_campaign,
        }
        changed = seen_first != p.first_seen_at or seen_last != p.last_seen_at
        if first is not None and p.first_touch_at is None:
            changed = True
            row["first_touch_at"] = first[0]
            for f in _TOUCH_FIELDS:
                row[f"first_touch_{f}"] = getattr(first[1], f)
        if latest is not None and (p.latest_touch_at is None or latest[0] >= p.latest_touch_at):
            changed = True
            row["latest_touch_at"] = latest[0]
            for f in _TOUCH_FIELDS:
                row[f"latest_touch_{f}"] = getattr(latest[1], f)
        if changed:
            activity[p.id] = row
    company_changes: dict[int, dict[str, Any]] = {}
    for m in groups:
        company_id = _company_for_group(session, workspace_id, m.group_id or "", m.traits)
        company_changes[m.contact_id()] = {"company_id": company_id}
    for contact_id, values in trait_changes.items():
        seen_row = activity.pop(contact_id, None)
        if seen_row is not None:
            values.update(seen_row)  # one UPDATE per contact: its traits and its activity
    repo.update_contacts(db, workspace_id, activity)
    repo.update_contacts(db, workspace_id, trait_changes, bump=True)
    repo.update_contacts(db, workspace_id, company_changes)

    for merged in resolver.merges:
        keep = merged.find()
        if keep.id is not None and merged.id is not None and keep.id != merged.id:
            merge_contacts(session, workspace_id, keep.id, merged.id, reason="identity resolution", actor="tracking")
            keep.stage = session.scalar(select(Contact.lifecycle_stage).where(Contact.id == keep.id)) or keep.stage
    for person, email in resolver.after_merge_email:
        target = person.find()
        contact = session.get(Contact, target.id) if target.id is not None else None
        if contact is not None and contact.workspace_id == workspace_id and contact.email != email:
            contact.email = email
            contact.version = (contact.version or 1) + 1
            session.flush()

    candidates: dict[int, tuple[str, datetime]] = {}
    for p, at in identified:
        target = p.find()
        if target.id is not None and target.id not in candidates:
            candidates[target.id] = (target.stage, at)
    if candidates:
        _apply_identified_rule(session, workspace_id, candidates, ws_settings)

    for m in msgs:
        if m.kind == "track" and m.name in commerce_service.ECOMMERCE_EVENTS and m.message_id in stored:
            # The event is stored either way; an order that cannot be recorded is reported on its call.
            try:
                with session.begin_nested():
                    commerce_service.apply_ecommerce_event(
                        session,
                        workspace_id,
                        m.contact().id,
                        m.name,
                        m.properties,
                        m.occurred_at,
                        m.message_id,
                    )
            except DomainError as exc:
                report, where = m.sink if m.sink is not None else (errors, prefix)
                if report is not None:
                    path = f"{where}[{m.index}].{exc.field}" if where else exc.field
                    report.append({"index": m.index, "path": path, "message": exc.message})
    return len(stored)


def ingest(
    session: Session,
    workspace_id: int,
    items: list[Any],
    *,
    received_at: datetime | None = None,
    sent_at: datetime | None = None,
    ip: str | None = None,
    synchronous_commit: bool | None = None,
) -> IngestResult:
    """Validate and store a Segment batch; invalid calls are reported, the valid ones stored."""
    received = received_at or utcnow()
    messages, errors = parse_batch(items, received_at=received, sent_at=sent_at, ip=ip)
    stored = store(
        session, workspace_id, messages, received_at=received, errors=errors, synchronous_commit=synchronous_commit
    )
    errors.sort(key=lambda e: e["index"])
    return IngestResult(accepted=len(messages), stored=stored, errors=errors)
