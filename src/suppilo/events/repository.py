"""Bulk statements of the ingest path: one statement per kind of row and batch, never an ORM object per event.

The hot statements run on the DBAPI cursor of the session's connection with pre-serialised values (JSON text from
orjson, UTC timestamps in the form SQLAlchemy stores them on SQLite), because SQLAlchemy's per-row parameter and
type processing cost more than the statements themselves. PostgreSQL gets one statement per batch and kind of row
through ``unnest`` of typed arrays (psycopg's executemany would send one statement per row); SQLite gets
``executemany``, which runs the prepared statement per row inside the library.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import JSON, Boolean, Connection, Integer, select
from sqlalchemy import Table as SqlTable
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import ReturningInsert

from suppilo.contacts.models import Contact, ContactIdentity, PropertyDefinition, StageChange
from suppilo.db.tables import table_of
from suppilo.db.types import UTCDateTime
from suppilo.events.models import Event, Touch

contacts_t = table_of(Contact)
identities_t = table_of(ContactIdentity)
events_t = table_of(Event)
touches_t = table_of(Touch)
stage_changes_t = table_of(StageChange)


class ContactState(NamedTuple):
    """The columns of a stored contact the ingest path reads to decide identities, touches and seen times."""

    id: int
    is_anonymous: bool
    email: str | None
    external_id: str | None
    lifecycle_stage: str
    country: str | None
    properties: dict[str, Any]
    first_touch_at: datetime | None
    latest_touch_at: datetime | None
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    first_touch_channel: str | None
    first_touch_source: str | None
    first_touch_campaign: str | None
    latest_touch_channel: str | None
    latest_touch_source: str | None
    latest_touch_campaign: str | None


_STATE_DT = {7, 8, 9, 10}
_STATE_COLUMNS = ", ".join(ContactState._fields)


# --- values as the driver takes them ------------------------------------------------------------------------


def dumps(value: Any) -> str:
    """JSON text of a value (orjson; the standard library for what orjson refuses, such as huge integers)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, default=str)


def _sqlite_dt(value: datetime | None) -> str | None:
    """A UTC timestamp as SQLAlchemy stores it on SQLite (naive UTC text, so text order is time order)."""
    if value is None:
        return None
    if value.tzinfo is UTC:  # the common case: isoformat ends in "+00:00" (the year always has four digits)
        return value.isoformat(" ", "microseconds")[:26]
    if value.tzinfo is None:
        raise ValueError("naive datetime given where a timezone-aware one is required")
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _pg_dt(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("naive datetime given where a timezone-aware one is required")
    return value


def _read_dt(value: Any) -> datetime | None:
    """A stored timestamp as a timezone-aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)  # SQLite: naive UTC text
    stored: datetime = value  # the driver's datetime (naive on SQLite)
    return stored.replace(tzinfo=UTC) if stored.tzinfo is None else stored.astimezone(UTC)


def _kind(column: Any) -> str:
    t = column.type
    if isinstance(t, UTCDateTime):
        return "dt"
    if isinstance(t, JSON):
        return "json"
    if isinstance(t, Boolean):
        return "bool"
    if isinstance(t, Integer):
        return "int"
    return "text"


_PG_ARRAY = {"dt": "timestamptz[]", "json": "text[]", "bool": "boolean[]", "int": "bigint[]", "text": "text[]"}


class Table:
    """Column kinds of a table and converters of row values for each dialect."""

    def __init__(self, table: Any) -> None:
        self.name = table.name
        self.kinds = {c.name: _kind(c) for c in table.columns}

    def converter(self, columns: Sequence[str], dialect: str) -> list[Any]:
        out: list[Any] = []
        memo: dict[datetime, str | None] = {}  # a batch repeats its timestamps (received, now, occurred)

        def sqlite_dt(value: datetime | None) -> str | None:
            if value is None:
                return None
            text = memo.get(value)
            if text is None:
                text = memo[value] = _sqlite_dt(value)
            return text

        for c in columns:
            kind = self.kinds[c]
            if kind == "dt":
                out.append(sqlite_dt if dialect == "sqlite" else _pg_dt)
            elif kind == "json":
                out.append(dumps)
            else:
                out.append(None)
        return out


CONTACTS = Table(contacts_t)
IDENTITIES = Table(identities_t)
EVENTS = Table(events_t)
TOUCHES = Table(touches_t)
STAGE_CHANGES = Table(stage_changes_t)


class Raw:
    """The DBAPI cursor of a connection and the SQL dialect details the bulk statements need."""

    __slots__ = ("conn", "cur", "pg")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        driver: Any = conn.connection.driver_connection
        self.cur: Any = driver.cursor(binary=True) if self.pg else driver.cursor()

    @property
    def p(self) -> str:
        return "%b" if self.pg else "?"

    def lookup(
        self, columns: str, table: str, key: str, values: Sequence[Any], workspace_id: int, *, extra: str = ""
    ) -> list[Any]:
        """Rows of ``table`` in the workspace whose ``key`` is one of ``values`` (a unique key: one row per value).

        PostgreSQL probes the unique index once per value (a LATERAL subquery): with ``= ANY(array)`` the planner,
        lacking statistics on a young table, scans every row of the workspace instead. By id, neither database may
        use a ``(workspace_id, ...)`` index for the workspace condition.
        """
        out: list[Any] = []
        if key in _PARTIAL_KEYS:
            # Partial unique indexes (``WHERE key IS NOT NULL``) cover these columns; stating their predicate keeps
            # them usable without the planner having to prove it.
            extra += f" AND {key} IS NOT NULL"
        for chunk in _chunks(values, _SQLITE_LIMIT):
            if self.pg:
                kind = "bigint[]" if isinstance(chunk[0], int) else "text[]"
                # By primary key: ``+ 0`` keeps the (workspace_id, ...) indexes out of the planner's reach.
                ws = "workspace_id + 0" if key == "id" else "workspace_id"
                sql = (
                    f"SELECT x.* FROM unnest(%b::{kind}) AS u(k_) CROSS JOIN LATERAL (SELECT {columns} FROM {table}"
                    f" WHERE {ws} = %b{extra} AND {key} = u.k_ LIMIT 1) AS x"
                )
                out.extend(self.all(sql, [list(chunk), workspace_id]))
            else:
                marks = ",".join("?" * len(chunk))
                # By primary key: ``+workspace_id`` keeps SQLite from walking a (workspace_id, ...) index over every
                # contact of the workspace (it has no statistics to know the rowid lookups are cheaper).
                ws = "+workspace_id" if key == "id" else "workspace_id"
                sql = f"SELECT {columns} FROM {table} WHERE {ws} = ?{extra} AND {key} IN ({marks})"
                out.extend(self.all(sql, [workspace_id, *chunk]))
        return out

    def all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        self.cur.execute(sql, params)
        return list(self.cur.fetchall())

    def run(self, sql: str, params: Sequence[Any]) -> int:
        self.cur.execute(sql, params)
        return int(self.cur.rowcount)


def raw(conn: Connection) -> Raw:
    """A raw cursor for the connection (inside its current transaction)."""
    return Raw(conn)


_PARTIAL_KEYS = frozenset({"email", "external_id"})
_SQLITE_LIMIT = 30_000  # bound parameters per statement (SQLite's default limit is 32,766)


def _chunks(values: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


# --- reads --------------------------------------------------------------------------------------------------


def lock_workspace_ingest(db: Raw, workspace_id: int, *, synchronous_commit: bool | None = None) -> None:
    """Serialise identity resolution of one workspace (PostgreSQL; SQLite's BEGIN IMMEDIATE already does).

    ``synchronous_commit`` False turns off waiting for the WAL flush at this transaction's commit (same statement).
    """
    if db.pg:
        if synchronous_commit is False:
            db.cur.execute(
                "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock(8237, %b)",
                [workspace_id],
            )
        else:
            db.cur.execute("SELECT pg_advisory_xact_lock(8237, %b)", [workspace_id])


_ws_cache: dict[int, tuple[float, tuple[list[str], dict[str, Any], str]]] = {}
_rules_cache: dict[int, tuple[float, list[dict[str, Any]]]] = {}
_cache_lock = threading.Lock()
CACHE_SECONDS = 5.0


def forget_workspace(workspace_id: int) -> None:
    """Drop this process's cached settings and channel rules of a workspace (after an edit)."""
    with _cache_lock:
        _ws_cache.pop(workspace_id, None)
        _rules_cache.pop(workspace_id, None)


def workspace_info(db: Raw, workspace_id: int) -> tuple[list[str], dict[str, Any], str]:
    """The site domains, settings and country of a workspace (cached per process for ``CACHE_SECONDS``)."""
    now = time.monotonic()
    hit = _ws_cache.get(workspace_id)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    rows = db.all(f"SELECT site_domains, settings, country FROM workspaces WHERE id = {db.p}", [workspace_id])
    domains, settings, country = rows[0]
    if isinstance(domains, str):
        domains = json.loads(domains)
    if isinstance(settings, str):
        settings = json.loads(settings)
    info = (list(domains or []), dict(settings or {}), country)
    with _cache_lock:
        _ws_cache[workspace_id] = (now, info)
    return info


def cached_channel_rules(workspace_id: int, load: Any) -> list[dict[str, Any]]:
    """The workspace's channel rules through a per-process cache of ``CACHE_SECONDS`` (``load()`` on a miss)."""
    now = time.monotonic()
    hit = _rules_cache.get(workspace_id)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    rules: list[dict[str, Any]] = load()
    with _cache_lock:
        _rules_cache[workspace_id] = (now, rules)
    return rules


def existing_message_ids(db: Raw, workspace_id: int, message_ids: Sequence[str]) -> set[str]:
    """Which of ``message_ids`` are already stored."""
    return {r[0] for r in db.lookup("message_id", "events", "message_id", message_ids, workspace_id)}


def lookup_identities(
    db: Raw, workspace_id: int, anonymous_ids: Iterable[str], user_ids: Iterable[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Contacts of the given anonymous ids and user ids (identity rows and ``contacts.external_id``)."""
    anon = list(set(anonymous_ids))
    users = list(set(user_ids))
    anon_map: dict[str, int] = {}
    user_map: dict[str, int] = {}
    columns = "value, contact_id"
    if anon:
        anon_map.update(db.lookup(columns, "contact_identities", "value", anon, workspace_id, extra=_ANON))
    if users:
        user_map.update(db.lookup(columns, "contact_identities", "value", users, workspace_id, extra=_USER))
    missing = [u for u in users if u not in user_map]
    if missing:
        user_map.update(db.lookup("external_id, id", "contacts", "external_id", missing, workspace_id))
    return anon_map, user_map


_ANON = " AND kind = 'anonymous_id'"
_USER = " AND kind = 'user_id'"


def contacts_by_email(db: Raw, workspace_id: int, emails: Iterable[str]) -> dict[str, int]:
    """Contact ids by normalised email."""
    wanted = list(set(emails))
    return dict(db.lookup("email, id", "contacts", "email", wanted, workspace_id)) if wanted else {}


def contact_states(db: Raw, workspace_id: int, ids: Iterable[int]) -> dict[int, ContactState]:
    """The ingest-relevant columns of existing contacts, by id."""
    out: dict[int, ContactState] = {}
    wanted = list(set(ids))
    if not wanted:
        return out
    for row in db.lookup(_STATE_COLUMNS, "contacts", "id", wanted, workspace_id):
        values = list(row)
        values[1] = bool(values[1])
        if isinstance(values[6], str):
            values[6] = orjson.loads(values[6])
        for i in _STATE_DT:
            values[i] = _read_dt(values[i])
        out[values[0]] = ContactState(*values)
    return out


def contact_property_definitions(conn: Connection, workspace_id: int) -> dict[str, tuple[str, list[str]]]:
    """Custom contact properties of a workspace: name -> (type, options)."""
    rows = conn.execute(
        select(PropertyDefinition.name, PropertyDefinition.type, PropertyDefinition.options).where(
            PropertyDefinition.workspace_id == workspace_id, PropertyDefinition.object_type == "contact"
        )
    )
    return {name: (kind, list(options or [])) for name, kind, options in rows}


def event_ids(db: Raw, workspace_id: int, message_ids: Sequence[str]) -> dict[str, int]:
    """Event ids by message id."""
    return dict(db.lookup("message_id, id", "events", "message_id", message_ids, workspace_id))


# --- writes -------------------------------------------------------------------------------------------------

_SQL_CACHE: dict[tuple[Any, ...], str] = {}


def _columns_and_values(
    db: Raw, table: Table, rows: list[dict[str, Any]]
) -> tuple[list[str], list[tuple[Any, ...]] | list[list[Any]]]:
    """The columns of ``rows`` and their driver values: row tuples (SQLite) or one list per column (PostgreSQL)."""
    columns = list(rows[0])
    convert = table.converter(columns, "postgresql" if db.pg else "sqlite")
    if db.pg:
        arrays = []
        for c, fn in zip(columns, convert, strict=True):
            arrays.append([r[c] for r in rows] if fn is None else [fn(r[c]) for r in rows])
        return columns, arrays
    pairs = list(zip(columns, convert, strict=True))
    return columns, [tuple(r[c] if fn is None else fn(r[c]) for c, fn in pairs) for r in rows]


def _pg_insert_sql(table: Table, columns: list[str], tail: str, *, ordered: bool = False) -> str:
    key = ("pg-insert", table.name, tuple(columns), tail, ordered)
    sql = _SQL_CACHE.get(key)
    if sql is None:
        args = ", ".join(f"%b::{_PG_ARRAY[table.kinds[c]]}" for c in columns)
        select_list = ", ".join(f"u.{c}::jsonb" if table.kinds[c] == "json" else f"u.{c}" for c in columns)
        names = ", ".join(columns)
        if ordered:
            source = f"unnest({args}) WITH ORDINALITY AS u({names}, ord_) ORDER BY u.ord_"
        else:
            source = f"unnest({args}) AS u({names})"
        sql = _SQL_CACHE[key] = f"INSERT INTO {table.name} ({names}) SELECT {select_list} FROM {source} {tail}"
    return sql


def _sqlite_insert_sql(table: Table, columns: list[str], tail: str) -> str:
    key = ("sqlite-insert", table.name, tuple(columns), tail)
    sql = _SQL_CACHE.get(key)
    if sql is None:
        marks = ",".join("?" * len(columns))
        sql = _SQL_CACHE[key] = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks}) {tail}"
    return sql


def _insert(db: Raw, table: Table, rows: list[dict[str, Any]], tail: str = "") -> int:
    """Insert ``rows`` (all with the same keys) in one statement; returns how many were inserted."""
    if not rows:
        return 0
    columns, values = _columns_and_values(db, table, rows)
    if db.pg:
        return db.run(_pg_insert_sql(table, columns, tail), values)
    db.cur.executemany(_sqlite_insert_sql(table, columns, tail), values)
    return int(db.cur.rowcount)


def insert_contacts(db: Raw, rows: list[dict[str, Any]]) -> list[int]:
    """Insert contacts; their ids in the order of ``rows``.

    Ids come from a sequence (PostgreSQL) or AUTOINCREMENT (SQLite) and grow in insertion order, and the rows are
    inserted in the given order (PostgreSQL: ``ORDER BY`` the ordinality), so the ascending ids map onto ``rows``.
    """
    if not rows:
        return []
    columns, values = _columns_and_values(db, CONTACTS, rows)
    if db.pg:
        db.cur.execute(_pg_insert_sql(CONTACTS, columns, "RETURNING id", ordered=True), values)
        ids = sorted(r[0] for r in db.cur.fetchall())
    else:
        seq = db.all("SELECT seq FROM sqlite_sequence WHERE name = 'contacts'", [])
        first = (seq[0][0] if seq else 0) + 1
        db.cur.executemany(_sqlite_insert_sql(CONTACTS, columns, ""), values)
        last = db.all("SELECT last_insert_rowid()", [])[0][0]
        if last - first + 1 != len(rows):
            raise RuntimeError("contact ids of a bulk insert are not consecutive")
        ids = list(range(first, last + 1))
    if len(ids) != len(rows):
        raise RuntimeError("a bulk contact insert returned fewer ids than rows")
    return ids


def insert_stage_changes(db: Raw, rows: list[dict[str, Any]]) -> None:
    """Insert lifecycle stage changes."""
    _insert(db, STAGE_CHANGES, rows)


def insert_identities(db: Raw, rows: list[dict[str, Any]]) -> None:
    """Insert identities; one already taken (a concurrent writer) is left to its contact."""
    _insert(db, IDENTITIES, rows, "ON CONFLICT (workspace_id, kind, value) DO NOTHING")


def insert_event_rows(db: Raw, workspace_id: int, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert events not stored before; returns message id -> event id of those stored now.

    The caller holds the workspace's ingest lock (PostgreSQL advisory lock, SQLite's single writer) and has left out
    message ids already stored, so a conflict can only come from a writer outside the ingest path (system events);
    PostgreSQL reports exactly which rows went in, SQLite reports how many, and a mismatch there refuses the batch.
    """
    if not rows:
        return {}
    tail = "ON CONFLICT (workspace_id, message_id) DO NOTHING"
    if db.pg:
        columns, values = _columns_and_values(db, EVENTS, rows)
        db.cur.execute(_pg_insert_sql(EVENTS, columns, tail + " RETURNING message_id, id"), values)
        return dict(db.cur.fetchall())
    if _insert(db, EVENTS, rows, tail) != len(rows):
        raise RuntimeError("events appeared under the ingest lock; retry the batch")
    # Every row went in, in order, under the write lock: a rowid table gives each insert the largest id plus one,
    # so the ids are the consecutive run ending at the last one.
    last = int(db.all("SELECT last_insert_rowid()", [])[0][0])
    return {r["message_id"]: last - len(rows) + 1 + i for i, r in enumerate(rows)}


def insert_touches(db: Raw, rows: list[dict[str, Any]]) -> None:
    """Insert touches."""
    _insert(db, TOUCHES, rows)


def update_contacts(db: Raw, workspace_id: int, changes: dict[int, dict[str, Any]], *, bump: bool = False) -> None:
    """Apply per-contact column changes: one statement per distinct set of columns.

    ``bump`` also counts the contacts' ``version`` up (optimistic locking of the CRUD API sees the change).
    """
    groups: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for contact_id, values in changes.items():
        if values:
            groups[tuple(sorted(values))].append((contact_id, values))
    for keys, items in groups.items():
        convert = CONTACTS.converter(keys, "postgresql" if db.pg else "sqlite")
        extra = ", version = version + 1" if bump else ""
        if db.pg:
            sql = _SQL_CACHE.get(("pg-update", keys, bump))
            if sql is None:
                args = ", ".join(f"%b::{_PG_ARRAY[CONTACTS.kinds[k]]}" for k in keys)
                sets = ", ".join(f"{k} = u.{k}::jsonb" if CONTACTS.kinds[k] == "json" else f"{k} = u.{k}" for k in keys)
                sql = _SQL_CACHE[("pg-update", keys, bump)] = (
                    f"UPDATE contacts AS c SET {sets}{extra} FROM unnest(%b::bigint[], {args})"
                    f" AS u(id_, {', '.join(keys)}) WHERE c.workspace_id = %b AND c.id = u.id_"
                )
            arrays: list[Any] = [[cid for cid, _ in items]]
            for k, fn in zip(keys, convert, strict=True):
                arrays.append([v[k] for _, v in items] if fn is None else [fn(v[k]) for _, v in items])
            db.run(sql, [*arrays, workspace_id])
        else:
            sql = _SQL_CACHE.get(("sqlite-update", keys, bump))
            if sql is None:
                sets = ", ".join(f"{k} = ?" for k in keys)
                sql = _SQL_CACHE[("sqlite-update", keys, bump)] = (
                    f"UPDATE contacts SET {sets}{extra} WHERE workspace_id = ? AND id = ?"
                )
            pairs = list(zip(keys, convert, strict=True))
            db.cur.executemany(
                sql,
                [(*(v[k] if fn is None else fn(v[k]) for k, fn in pairs), workspace_id, cid) for cid, v in items],
            )


def move_stages(db: Raw, workspace_id: int, target: str, moves: list[tuple[int, str, datetime]]) -> None:
    """Move contacts (id, expected current stage, when) to ``target``; one whose stage changed meanwhile is left."""
    if not moves:
        return
    if db.pg:
        db.run(
            "UPDATE contacts AS c SET lifecycle_stage = %b, lifecycle_stage_at = u.at_"
            " FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[]) AS u(id_, from_, at_)"
            " WHERE c.workspace_id = %b AND c.id = u.id_ AND c.lifecycle_stage = u.from_",
            [target, [m[0] for m in moves], [m[1] for m in moves], [m[2] for m in moves], workspace_id],
        )
    else:
        db.cur.executemany(
            "UPDATE contacts SET lifecycle_stage = ?, lifecycle_stage_at = ?"
            " WHERE workspace_id = ? AND id = ? AND lifecycle_stage = ?",
            [(target, _sqlite_dt(at), workspace_id, cid, stage) for cid, stage, at in moves],
        )


# --- system events (SQLAlchemy Core; one row at a time) -----------------------------------------------------

_EVENT_INSERTS: dict[str, ReturningInsert[int, str]] = {}


def dialect_insert(conn: Connection, table: SqlTable) -> postgresql.Insert | sqlite.Insert:
    """An INSERT of the connection's dialect (for ON CONFLICT)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_events(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert events through SQLAlchemy; returns message id -> event id of those stored now (duplicates skipped)."""
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
