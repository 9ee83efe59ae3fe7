"""Bulk Core statements of the ingest path: one statement per kind of row and batch, never an ORM object per event."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from suppilo.contacts.models import Contact, ContactIdentity, PropertyDefinition
from suppilo.events.models import Event, Touch
from suppilo.workspaces.models import Workspace

contacts_t = Contact.__table__
identities_t = ContactIdentity.__table__
events_t = Event.__table__
touches_t = Touch.__table__

# Columns of a contact the ingest path reads to decide identities, touches and seen times.
STATE_COLUMNS = (
    contacts_t.c.id,
    contacts_t.c.is_anonymous,
    contacts_t.c.email,
    contacts_t.c.external_id,
    contacts_t.c.lifecycle_stage,
    contacts_t.c.country,
    contacts_t.c.properties,
    contacts_t.c.first_touch_at,
    contacts_t.c.latest_touch_at,
    contacts_t.c.first_seen_at,
    contacts_t.c.last_seen_at,
)


# Statements are built once: building a construct costs more than running it for a single call.
_EXISTING = select(events_t.c.message_id).where(
    events_t.c.workspace_id == bindparam("ws"), events_t.c.message_id.in_(bindparam("values", expanding=True))
)
_IDENTITY_COLUMNS = (identities_t.c.kind, identities_t.c.value, identities_t.c.contact_id)
_IDENTITIES_BOTH = select(*_IDENTITY_COLUMNS).where(
    identities_t.c.workspace_id == bindparam("ws"),
    or_(
        and_(identities_t.c.kind == "anonymous_id", identities_t.c.value.in_(bindparam("anon", expanding=True))),
        and_(identities_t.c.kind == "user_id", identities_t.c.value.in_(bindparam("users", expanding=True))),
    ),
)
_IDENTITIES_KIND = select(*_IDENTITY_COLUMNS).where(
    identities_t.c.workspace_id == bindparam("ws"),
    identities_t.c.kind == bindparam("kind"),
    identities_t.c.value.in_(bindparam("values", expanding=True)),
)
_BY_EXTERNAL_ID = select(contacts_t.c.external_id, contacts_t.c.id).where(
    contacts_t.c.workspace_id == bindparam("ws"), contacts_t.c.external_id.in_(bindparam("values", expanding=True))
)
_BY_EMAIL = select(contacts_t.c.email, contacts_t.c.id).where(
    contacts_t.c.workspace_id == bindparam("ws"), contacts_t.c.email.in_(bindparam("values", expanding=True))
)
_STATES = select(*STATE_COLUMNS).where(
    contacts_t.c.workspace_id == bindparam("ws"), contacts_t.c.id.in_(bindparam("values", expanding=True))
)
_WORKSPACE = select(Workspace.site_domains, Workspace.settings, Workspace.country).where(
    Workspace.id == bindparam("ws")
)
_EVENT_INSERTS: dict[str, Insert] = {}
_IDENTITY_INSERTS: dict[str, Insert] = {}
_CONTACT_INSERT = contacts_t.insert().returning(contacts_t.c.id, sort_by_parameter_order=True)
_TOUCH_INSERT = touches_t.insert()
_UPDATES: dict[tuple[str, ...], Any] = {}


def dialect_insert(conn: Connection, table: Any) -> Insert:
    """An INSERT of the connection's dialect (for ON CONFLICT)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def lock_workspace_ingest(conn: Connection, workspace_id: int) -> None:
    """Serialise identity resolution of one workspace (PostgreSQL; SQLite's BEGIN IMMEDIATE already does)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(8237, :ws)"), {"ws": workspace_id})


def workspace_info(conn: Connection, workspace_id: int) -> tuple[list[str], dict[str, Any], str]:
    """The site domains, settings and country of a workspace."""
    row = conn.execute(_WORKSPACE, {"ws": workspace_id}).one()
    return list(row[0] or []), dict(row[1] or {}), row[2]


def existing_message_ids(conn: Connection, workspace_id: int, message_ids: Sequence[str]) -> set[str]:
    """Which of ``message_ids`` are already stored."""
    if not message_ids:
        return set()
    rows = conn.execute(_EXISTING, {"ws": workspace_id, "values": list(message_ids)})
    return {r[0] for r in rows}


def lookup_identities(
    conn: Connection, workspace_id: int, anonymous_ids: Iterable[str], user_ids: Iterable[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Contacts of the given anonymous ids and user ids (identity rows and ``contacts.external_id``)."""
    anon = list(set(anonymous_ids))
    users = list(set(user_ids))
    anon_map: dict[str, int] = {}
    user_map: dict[str, int] = {}
    if anon and users:
        rows = conn.execute(_IDENTITIES_BOTH, {"ws": workspace_id, "anon": anon, "users": users})
    elif anon:
        rows = conn.execute(_IDENTITIES_KIND, {"ws": workspace_id, "kind": "anonymous_id", "values": anon})
    elif users:
        rows = conn.execute(_IDENTITIES_KIND, {"ws": workspace_id, "kind": "user_id", "values": users})
    else:
        rows = None
    for kind, value, contact_id in rows or ():
        (anon_map if kind == "anonymous_id" else user_map)[value] = contact_id
    missing = [u for u in users if u not in user_map]
    if missing:
        for external_id, contact_id in conn.execute(_BY_EXTERNAL_ID, {"ws": workspace_id, "values": missing}):
            user_map[external_id] = contact_id
    return anon_map, user_map


def contacts_by_email(conn: Connection, workspace_id: int, emails: Iterable[str]) -> dict[str, int]:
    """Contact ids by normalised email."""
    wanted = list(set(emails))
    if not wanted:
        return {}
    return {email: cid for email, cid in conn.execute(_BY_EMAIL, {"ws": workspace_id, "values": wanted})}


def contact_states(conn: Connection, workspace_id: int, ids: Iterable[int]) -> dict[int, Any]:
    """The ingest-relevant columns of existing contacts, by id."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    return {r.id: r for r in conn.execute(_STATES, {"ws": workspace_id, "values": wanted})}


def contact_property_definitions(conn: Connection, workspace_id: int) -> dict[str, tuple[str, list[str]]]:
    """Custom contact properties of a workspace: name -> (type, options)."""
    rows = conn.execute(
        select(PropertyDefinition.name, PropertyDefinition.type, PropertyDefinition.options).where(
            PropertyDefinition.workspace_id == workspace_id, PropertyDefinition.object_type == "contact"
        )
    )
    return {name: (kind, list(options or [])) for name, kind, options in rows}


def insert_contacts(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert contacts; their ids in the order of ``rows``."""
    if not rows:
        return []
    return [r[0] for r in conn.execute(_CONTACT_INSERT, rows)]


def insert_identities(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert identities; one already taken (a concurrent writer) is left to its contact."""
    if rows:
        stmt = _IDENTITY_INSERTS.get(conn.dialect.name)
        if stmt is None:
            stmt = _IDENTITY_INSERTS[conn.dialect.name] = dialect_insert(conn, identities_t).on_conflict_do_nothing()
        conn.execute(stmt, rows)


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert events; returns message id -> event id of those stored now (duplicates are skipped)."""
    if not rows:
        return {}
    stmt = _EVENT_INSERTS.get(conn.dialect.name)
    if stmt is None:
        stmt = _EVENT_INSERTS[conn.dialect.name] = (
            dialect_insert(conn, events_t)
            .on_conflict_do_nothing(index_elements=["workspace_id", "message_id"])
            .returning(events_t.c.id, events_t.c.message_id)
        )
    return {mid: eid for eid, mid in conn.execute(stmt, rows)}


def insert_touches(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert touches."""
    if rows:
        conn.execute(_TOUCH_INSERT, rows)


def update_contacts(conn: Connection, workspace_id: int, changes: dict[int, dict[str, Any]]) -> None:
    """Apply per-contact column changes, one executemany per distinct set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for contact_id, values in changes.items():
        if not values:
            continue
        keys = tuple(sorted(values))
        groups[keys].append({"b_id": contact_id, **{f"b_{k}": v for k, v in values.items()}})
    for keys, params in groups.items():
        stmt = _UPDATES.get(keys)
        if stmt is None:
            stmt = _UPDATES[keys] = (
                update(contacts_t)
                .where(contacts_t.c.workspace_id == bindparam("b_ws"), contacts_t.c.id == bindparam("b_id"))
                .values({k: bindparam(f"b_{k}") for k in keys})
            )
        for param in params:
            param["b_ws"] = workspace_id
        conn.execute(stmt, params)


def bump_contact_versions(conn: Connection, workspace_id: int, ids: Iterable[int], at: datetime) -> None:
    """Mark contacts as changed (optimistic locking of the CRUD API sees the change)."""
    wanted = list(set(ids))
    if wanted:
        conn.execute(
            update(contacts_t)
            .where(contacts_t.c.workspace_id == workspace_id, contacts_t.c.id.in_(wanted))
            .values(version=contacts_t.c.version + 1, updated_at=at)
        )
