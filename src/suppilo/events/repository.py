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
    row = conn.execute(
        select(Workspace.site_domains, Workspace.settings, Workspace.country).where(Workspace.id == workspace_id)
    ).one()
    return list(row[0] or []), dict(row[1] or {}), row[2]


def existing_message_ids(conn: Connection, workspace_id: int, message_ids: Sequence[str]) -> set[str]:
    """Which of ``message_ids`` are already stored."""
    if not message_ids:
        return set()
    rows = conn.execute(
        select(events_t.c.message_id).where(
            events_t.c.workspace_id == workspace_id, events_t.c.message_id.in_(list(message_ids))
        )
    )
    return {r[0] for r in rows}


def lookup_identities(
    conn: Connection, workspace_id: int, anonymous_ids: Iterable[str], user_ids: Iterable[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Contacts of the given anonymous ids and user ids (identity rows and ``contacts.external_id``)."""
    anon = list(set(anonymous_ids))
    users = list(set(user_ids))
    anon_map: dict[str, int] = {}
    user_map: dict[str, int] = {}
    conds = []
    if anon:
        conds.append(and_(identities_t.c.kind == "anonymous_id", identities_t.c.value.in_(anon)))
    if users:
        conds.append(and_(identities_t.c.kind == "user_id", identities_t.c.value.in_(users)))
    if conds:
        rows = conn.execute(
            select(identities_t.c.kind, identities_t.c.value, identities_t.c.contact_id).where(
                identities_t.c.workspace_id == workspace_id, or_(*conds)
            )
        )
        for kind, value, contact_id in rows:
            (anon_map if kind == "anonymous_id" else user_map)[value] = contact_id
    missing = [u for u in users if u not in user_map]
    if missing:
        rows = conn.execute(
            select(contacts_t.c.external_id, contacts_t.c.id).where(
                contacts_t.c.workspace_id == workspace_id, contacts_t.c.external_id.in_(missing)
            )
        )
        for external_id, contact_id in rows:
            user_map[external_id] = contact_id
    return anon_map, user_map


def contacts_by_email(conn: Connection, workspace_id: int, emails: Iterable[str]) -> dict[str, int]:
    """Contact ids by normalised email."""
    wanted = list(set(emails))
    if not wanted:
        return {}
    rows = conn.execute(
        select(contacts_t.c.email, contacts_t.c.id).where(
            contacts_t.c.workspace_id == workspace_id, contacts_t.c.email.in_(wanted)
        )
    )
    return {email: cid for email, cid in rows}


def contact_states(conn: Connection, workspace_id: int, ids: Iterable[int]) -> dict[int, Any]:
    """The ingest-relevant columns of existing contacts, by id."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(*STATE_COLUMNS).where(contacts_t.c.workspace_id == workspace_id, contacts_t.c.id.in_(wanted))
    )
    return {r.id: r for r in rows}


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
    stmt = contacts_t.insert().returning(contacts_t.c.id, sort_by_parameter_order=True)
    return [r[0] for r in conn.execute(stmt, rows)]


def insert_identities(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert identities; one already taken (a concurrent writer) is left to its contact."""
    if rows:
        conn.execute(dialect_insert(conn, identities_t).on_conflict_do_nothing(), rows)


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert events; returns message id -> event id of those stored now (duplicates are skipped)."""
    if not rows:
        return {}
    stmt = (
        dialect_insert(conn, events_t)
        .on_conflict_do_nothing(index_elements=["workspace_id", "message_id"])
        .returning(events_t.c.id, events_t.c.message_id)
    )
    return {mid: eid for eid, mid in conn.execute(stmt, rows)}


def insert_touches(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert touches."""
    if rows:
        conn.execute(touches_t.insert(), rows)


def update_contacts(conn: Connection, workspace_id: int, changes: dict[int, dict[str, Any]]) -> None:
    """Apply per-contact column changes, one executemany per distinct set of columns."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for contact_id, values in changes.items():
        if not values:
            continue
        keys = tuple(sorted(values))
        groups[keys].append({"b_id": contact_id, **{f"b_{k}": v for k, v in values.items()}})
    for keys, params in groups.items():
        stmt = (
            update(contacts_t)
            .where(contacts_t.c.workspace_id == workspace_id, contacts_t.c.id == bindparam("b_id"))
            .values({k: bindparam(f"b_{k}") for k in keys})
        )
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
