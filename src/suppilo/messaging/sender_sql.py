"""The sender's hot statements, run on the DBAPI cursor of the session's connection (inside its transaction).

The claim reads a chunk of due rows with their pre-rendered body and their contact in one statement and gets plain
tuples; the status changes of a chunk go in as one ``executemany`` (SQLite) or one ``unnest`` statement
(PostgreSQL) per kind of change, with values already in the form the driver stores: SQLAlchemy's per-row parameter
and result processing cost more of the sender's one core than the statements themselves (docs/benchmarks.md,
issue 3). Timestamps are stored as SQLAlchemy's ``UTCDateTime`` stores them (SQLite: naive UTC text with
microseconds, so text order is time order), JSON as text (``jsonb`` casts on PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection


class ClaimedRow(NamedTuple):
    """One claimed outbox row (the columns the sender reads), with its body and contact when it has them."""

    id: int
    workspace_id: int
    contact_id: int | None
    kind: str
    topic: str
    template_key: str | None
    extra: dict[str, Any]
    claim_rank: int
    next_attempt_at: Any  # as stored (SQLite: text); read_time() gives the datetime
    to_address: str | None
    body: Body | None
    contact: ContactRow | None
    status: str = "queued"  # as read: the write that marks the claim checks it is unchanged (``claim_states``)
    attempts: int = 0


class ClaimState(NamedTuple):
    """What the claim's write compares with what its read saw: a row whose state or recipient changed in between
    (another sender took it, an operator or an erasure changed it) is left alone."""

    status: str
    next_attempt_at: Any  # as stored
    attempts: int
    email: str | None  # the contact's address now (None: no contact in the row's workspace, or no address)
    to_address: str | None


class Body(NamedTuple):
    """A pre-rendered message (``outbox_bodies``)."""

    subject: str
    html: str
    text: str


class ContactRow(NamedTuple):
    """What the claim reads of the recipient contact."""

    id: int
    email: str | None
    country: str | None
    timezone: str | None


class WorkspaceRow(NamedTuple):
    """What the claim reads of a workspace."""

    slug: str
    name: str
    timezone: str
    settings: dict[str, Any]


class ContextContact(NamedTuple):
    """The columns of a contact that ``service.contact_context_of`` reads."""

    id: int
    first_name: str | None
    last_name: str | None
    email: str | None
    language: str | None
    country: str | None
    city: str | None
    region: str | None
    timezone: str | None
    job_title: str | None
    lifecycle_stage: str
    properties: dict[str, Any]
    company_id: int | None


class ContextCompany(NamedTuple):
    """The columns of a company that ``service.contact_context_of`` reads."""

    id: int
    name: str
    industry: str | None
    domain: str | None
    country: str | None
    city: str | None


def db_time(pg: bool, value: datetime) -> Any:
    """A timezone-aware time as the driver stores it for a ``UTCDateTime`` column."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given where a timezone-aware one is required")
    if pg:
        return value
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def read_time(value: Any) -> datetime:
    """A stored ``UTCDateTime`` value as a timezone-aware UTC datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    stored: datetime = value
    return stored.replace(tzinfo=UTC) if stored.tzinfo is None else stored.astimezone(UTC)


def _json_value(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return {} if value == "{}" else orjson.loads(value)
    return value if value is not None else {}


def json_text(value: Any) -> str:
    """JSON text of a value (orjson; the standard library for what orjson refuses)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, default=str)


class SenderDb:
    """The raw cursor of a session's connection and the statements of the claim and of recording outcomes."""

    __slots__ = ("cur", "p", "pg")

    def __init__(self, conn: Connection) -> None:
        self.pg = conn.dialect.name == "postgresql"
        driver: Any = conn.connection.driver_connection
        self.cur: Any = driver.cursor(binary=True) if self.pg else driver.cursor()
        self.p = "%b" if self.pg else "?"

    def claim_rows(
        self, status: str, now: datetime, limit: int, workspace_ids: tuple[int, ...] | None
    ) -> list[ClaimedRow]:
        """Up to ``limit`` rows of ``status`` due at ``now``, in claim order (the claim index gives the order),
        locked on PostgreSQL (``FOR UPDATE OF o SKIP LOCKED``); each with its body and its contact (by id within
        the row's workspace)."""
        p = self.p
        params: list[Any] = [status, db_time(self.pg, now)]
        scope = ""
        if workspace_ids is not None:
            if not workspace_ids:
                return []
            scope = f" AND o.workspace_id IN ({', '.join([p] * len(workspace_ids))})"
            params.extend(workspace_ids)
        params.append(limit)
        # The contact by primary key: ``c.workspace_id + 0`` (PostgreSQL) and ``+c.workspace_id`` (SQLite) keep the
        # planner off the (workspace_id, ...) indexes, which it may otherwise walk (every contact of the workspace
        # for each row) on a table it has no statistics for yet.
        same_ws = "c.workspace_id + 0" if self.pg else "+c.workspace_id"
        sql = (
            "SELECT o.id, o.workspace_id, o.contact_id, o.kind, o.topic, o.template_key, o.extra, o.claim_rank,"
            " o.next_attempt_at, o.to_address, b.outbox_id, b.subject, b.html, b.text,"
            " c.id, c.email, c.country, c.timezone, o.attempts"
            " FROM outbox_messages AS o"
            " LEFT JOIN outbox_bodies AS b ON b.outbox_id = o.id"
            f" LEFT JOIN contacts AS c ON c.id = o.contact_id AND {same_ws} = o.workspace_id"
            f" WHERE o.status = {p} AND o.next_attempt_at <= {p}{scope}"
            f" ORDER BY o.claim_rank, o.next_attempt_at, o.id LIMIT {p}"
        )
        if self.pg:
            sql += " FOR UPDATE OF o SKIP LOCKED"
        self.cur.execute(sql, params)
        out: list[ClaimedRow] = []
        for r in self.cur.fetchall():
            out.append(
                ClaimedRow(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    r[5],
                    _json_value(r[6]),
                    r[7],
                    r[8],  # converted by read_time only where a policy needs it
                    r[9],
                    None if r[10] is None else Body(r[11], r[12] or "", r[13] or ""),
                    None if r[14] is None else ContactRow(r[14], r[15], r[16], r[17]),
                    status,
                    r[18],
                )
            )
        return out

    def claim_states(self, ids: Sequence[int]) -> dict[int, ClaimState]:
        """The current status, due time, attempts, contact address and stored address of outbox rows (by id)."""
        out: dict[int, ClaimState] = {}
        same_ws = "c.workspace_id + 0" if self.pg else "+c.workspace_id"
        for start in range(0, len(ids), 10_000):
            chunk = list(ids[start : start + 10_000])
            where = "o.id = ANY(%b::bigint[])" if self.pg else f"o.id IN ({','.join('?' * len(chunk))})"
            self.cur.execute(
                "SELECT o.id, o.status, o.next_attempt_at, o.attempts, c.email, o.to_address"
                " FROM outbox_messages AS o"
                f" LEFT JOIN contacts AS c ON c.id = o.contact_id AND {same_ws} = o.workspace_id"
                f" WHERE {where}",
                [chunk] if self.pg else chunk,
            )
            for r in self.cur.fetchall():
                out[r[0]] = ClaimState(r[1], r[2], r[3], r[4], r[5])
        return out

    def workspace(self, workspace_id: int) -> WorkspaceRow | None:
        """The workspace's slug, name, time zone and settings (sending policies)."""
        self.cur.execute(f"SELECT slug, name, timezone, settings FROM workspaces WHERE id = {self.p}", [workspace_id])
        r = self.cur.fetchone()
        return None if r is None else WorkspaceRow(r[0], r[1], r[2], _json_value(r[3]))

    def _by_ids(self, columns: str, table: str, workspace_id: int, ids: Sequence[int]) -> list[Any]:
        """Rows of ``table`` in the workspace by primary key (the workspace condition kept off the planner's index
        choice, as in the claim's join)."""
        out: list[Any] = []
        for start in range(0, len(ids), 10_000):
            chunk = list(ids[start : start + 10_000])
            if self.pg:
                self.cur.execute(
                    f"SELECT {columns} FROM {table} WHERE id = ANY(%b::bigint[]) AND workspace_id + 0 = %b",
                    [chunk, workspace_id],
                )
            else:
                self.cur.execute(
                    f"SELECT {columns} FROM {table} WHERE id IN ({','.join('?' * len(chunk))}) AND +workspace_id = ?",
                    [*chunk, workspace_id],
                )
            out.extend(self.cur.fetchall())
        return out

    def context_rows(
        self, workspace_id: int, contact_ids: Sequence[int]
    ) -> tuple[list[ContextContact], dict[int, ContextCompany]]:
        """The template contexts' contacts of the workspace (ids of no contact there are left out) and their
        companies, for ``service.contact_context_of``."""
        contacts = [
            ContextContact(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], _json_value(r[11]), r[12])
            for r in self._by_ids(
                "id, first_name, last_name, email, language, country, city, region, timezone, job_title,"
                " lifecycle_stage, properties, company_id",
                "contacts",
                workspace_id,
                sorted(set(contact_ids)),
            )
        ]
        company_ids = sorted({c.company_id for c in contacts if c.company_id is not None})
        companies = {
            r[0]: ContextCompany(r[0], r[1], r[2], r[3], r[4], r[5])
            for r in self._by_ids("id, name, industry, domain, country, city", "companies", workspace_id, company_ids)
        }
        return contacts, companies

    def suppression_reasons(self, workspace_id: int, digests: Sequence[str]) -> dict[str, set[str]]:
        """Address hash -> suppression reasons, for the hashes that have entries (``suppression.reasons_for_hashes``
        on the driver cursor)."""
        wanted = sorted(set(digests))
        out: dict[str, set[str]] = {}
        for start in range(0, len(wanted), 10_000):
            chunk = wanted[start : start + 10_000]
            if self.pg:
                self.cur.execute(
                    "SELECT address_hash, reason FROM suppression_entries"
                    " WHERE workspace_id = %b AND address_hash = ANY(%b::text[])",
                    [workspace_id, chunk],
                )
            else:
                self.cur.execute(
                    "SELECT address_hash, reason FROM suppression_entries"
                    f" WHERE workspace_id = ? AND address_hash IN ({','.join('?' * len(chunk))})",
                    [workspace_id, *chunk],
                )
            for digest, reason in self.cur.fetchall():
                out.setdefault(digest, set()).add(reason)
        return out

    def close_rows(self, rows: Sequence[tuple[int, str, str]], now: datetime) -> None:
        """Final states decided by the claim: (id, status, reason)."""
        if not rows:
            return
        at = db_time(self.pg, now)
        if self.pg:
            self.cur.execute(
                "UPDATE outbox_messages AS o SET status = u.status_, last_error = u.error_, updated_at = %b"
                " FROM unnest(%b::bigint[], %b::text[], %b::text[]) AS u(id_, status_, error_) WHERE o.id = u.id_",
                [at, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]],
            )
        else:
            self.cur.executemany(
                "UPDATE outbox_messages SET status = ?, last_error = ?, updated_at = ? WHERE id = ?",
                [(status, error, at, row_id) for row_id, status, error in rows],
            )

    def hold_rows(self, rows: Sequence[tuple[int, datetime, str]], now: datetime) -> None:
        """Rows held by a sending policy go back to ``deferred`` until a time: (id, until, reason)."""
        if not rows:
            return
        at = db_time(self.pg, now)
        if self.pg:
            self.cur.execute(
                "UPDATE outbox_messages AS o SET status = 'deferred', next_attempt_at = u.until_,"
                " last_error = u.error_, updated_at = %b"
                " FROM unnest(%b::bigint[], %b::timestamptz[], %b::text[]) AS u(id_, until_, error_)"
                " WHERE o.id = u.id_",
                [at, [r[0] for r in rows], [db_time(True, r[1]) for r in rows], [r[2] for r in rows]],
            )
        else:
            self.cur.executemany(
                "UPDATE outbox_messages SET status = 'deferred', next_attempt_at = ?, last_error = ?, updated_at = ?"
                " WHERE id = ?",
                [(db_time(False, until), error, at, row_id) for row_id, until, error in rows],
            )

    def mark_sending(
        self, rows: Sequence[tuple[int, str, str, str]], token: str, now: datetime, lease_expires_at: datetime
    ) -> None:
        """Claimed rows about to go: (id, recipient address, Message-ID, tracked links as JSON text)."""
        if not rows:
            return
        at = db_time(self.pg, now)
        lease = db_time(self.pg, lease_expires_at)
        if self.pg:
            self.cur.execute(
                "UPDATE outbox_messages AS o SET status = 'sending', lease_token = %b, lease_expires_at = %b,"
                " attempts = o.attempts + 1, to_address = u.to_, message_id = u.mid_, links = u.links_::jsonb,"
                " sending_at = %b, updated_at = %b"
                " FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[]) AS u(id_, to_, mid_, links_)"
                " WHERE o.id = u.id_",
                [token, lease, at, at, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
                 [r[3] for r in rows]],
            )  # fmt: skip
        else:
            self.cur.executemany(
                "UPDATE outbox_messages SET status = 'sending', lease_token = ?, lease_expires_at = ?,"
                " attempts = attempts + 1, to_address = ?, message_id = ?, links = ?, sending_at = ?, updated_at = ?"
                " WHERE id = ?",
                [(token, lease, to, mid, links, at, at, row_id) for row_id, to, mid, links in rows],
            )

    def mark_sent(self, ids: Sequence[int], token: str, now: datetime) -> int:
        """Rows of this lease still ``sending`` become ``sent`` (the fencing check); returns how many did."""
        at = db_time(self.pg, now)
        if self.pg:
            self.cur.execute(
                "UPDATE outbox_messages SET status = 'sent', sent_at = %b, updated_at = %b, lease_expires_at = NULL,"
                " last_error = NULL WHERE id = ANY(%b::bigint[]) AND lease_token = %b AND status = 'sending'",
                [at, at, list(ids), token],
            )
            return int(self.cur.rowcount)
        done = 0
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            self.cur.execute(
                "UPDATE outbox_messages SET status = 'sent', sent_at = ?, updated_at = ?, lease_expires_at = NULL,"
                f" last_error = NULL WHERE id IN ({','.join('?' * len(chunk))}) AND lease_token = ?"
                " AND status = 'sending'",
                [at, at, *chunk, token],
            )
            done += int(self.cur.rowcount)
        return done

    def insert_sent_events(self, rows: Sequence[tuple[int, int, int]], now: datetime) -> None:
        """The timeline's ``email_sent`` events: (workspace id, contact id, outbox id); keyed by the outbox id
        (``mail-sent-<id>``), so a repeat stores nothing."""
        if not rows:
            return
        at = db_time(self.pg, now)
        context = '{"source": "system"}'
        if self.pg:
            self.cur.execute(
                "INSERT INTO events (workspace_id, contact_id, anonymous_id, kind, name, properties, context,"
                " occurred_at, received_at, message_id)"
                " SELECT u.ws_, u.contact_, NULL, 'track', 'email_sent', u.props_::jsonb, %b::jsonb, %b, %b, u.mid_"
                " FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::text[]) AS u(ws_, contact_, props_, mid_)"
                " ON CONFLICT (workspace_id, message_id) DO NOTHING",
                [context, at, at, [r[0] for r in rows], [r[1] for r in rows],
                 [f'{{"outbox_id": {r[2]}}}' for r in rows], [f"mail-sent-{r[2]}" for r in rows]],
            )  # fmt: skip
        else:
            self.cur.executemany(
                "INSERT INTO events (workspace_id, contact_id, anonymous_id, kind, name, properties, context,"
                " occurred_at, received_at, message_id) VALUES (?, ?, NULL, 'track', 'email_sent', ?, ?, ?, ?, ?)"
                " ON CONFLICT (workspace_id, message_id) DO NOTHING",
                [(ws, contact, f'{{"outbox_id": {oid}}}', context, at, at, f"mail-sent-{oid}")
                 for ws, contact, oid in rows],
            )  # fmt: skip
