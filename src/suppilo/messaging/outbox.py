"""The transactional outbox: one row per message and cause, written in the caller's transaction.

``enqueue`` is called by whatever causes a message (a broadcast, a journey step, a double-opt-in sign-up) inside
its own transaction, so the message exists exactly when its cause does. The sender (``sender.py``) drains it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.db.tables import table_of
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.messaging.outbox_models import FINAL_STATES, OUTBOX_STATES, OutboxBody, OutboxMessage

KINDS = ("marketing", "transactional")


class OutboxError(DomainError):
    """A refused outbox operation."""


def _rendered_dict(rendered: Any) -> dict[str, Any] | None:
    if rendered is None:
        return None
    if dataclasses.is_dataclass(rendered) and not isinstance(rendered, type):
        data = dataclasses.asdict(rendered)
    elif isinstance(rendered, dict):
        data = dict(rendered)
    else:
        data = {k: getattr(rendered, k) for k in ("subject", "preheader", "html", "text")}
    if not data.get("subject") or not (data.get("html") or data.get("text")):
        raise OutboxError("rendered", "a rendered message needs a subject and a body", code="invalid_rendered")
    return {k: data.get(k) or "" for k in ("subject", "preheader", "html", "text")}


def _row(
    workspace_id: int,
    *,
    dedupe_key: str,
    contact_id: int | None,
    template_key: str | None,
    rendered: Any,
    kind: str,
    topic: str,
    priority: int,
    not_before: datetime | None,
    extra: dict[str, Any] | None,
    broadcast_id: int | None,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if kind not in KINDS:
        raise OutboxError("kind", "kind must be marketing or transactional", code="invalid_kind")
    if not dedupe_key or len(dedupe_key) > 200:
        raise OutboxError("dedupe_key", "a dedupe key of 1-200 characters is required", code="invalid_dedupe_key")
    if template_key is None and rendered is None:
        raise OutboxError("template_key", "a template key or a rendered message is required", code="no_content")
    if not_before is not None and not_before.tzinfo is None:
        raise OutboxError("not_before", "not_before must be timezone-aware", code="naive_datetime")
    body = _rendered_dict(rendered)
    return {
        "workspace_id": workspace_id,
        "dedupe_key": dedupe_key,
        "contact_id": contact_id,
        "broadcast_id": broadcast_id,
        "kind": kind,
        "topic": topic,
        "template_key": template_key,
        "extra": extra or {},
        "status": "queued",
        "priority": priority,
        "claim_rank": -priority,
        "not_before": not_before,
        "next_attempt_at": max(not_before, now) if not_before else now,
        "attempts": 0,
        "links": [],
        "human_opens": 0,
        "machine_opens": 0,
        "human_clicks": 0,
        "machine_clicks": 0,
        "created_at": now,
        "updated_at": now,
    }, body


def _insert(session: Session):  # type: ignore[no-untyped-def]
    name = session.get_bind().dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(OutboxMessage)


def enqueue(
    session: Session,
    workspace_id: int,
    *,
    dedupe_key: str,
    contact_id: int | None,
    template_key: str | None = None,
    rendered: Any = None,
    kind: str = "marketing",
    topic: str = "marketing",
    priority: int = 0,
    not_before: datetime | None = None,
    extra: dict[str, Any] | None = None,
    broadcast_id: int | None = None,
) -> OutboxMessage | None:
    """Queue one message in the caller's transaction; None when a message with ``dedupe_key`` already exists."""
    row, body = _row(
        workspace_id,
        dedupe_key=dedupe_key,
        contact_id=contact_id,
        template_key=template_key,
        rendered=rendered,
        kind=kind,
        topic=topic,
        priority=priority,
        not_before=not_before,
        extra=extra,
        broadcast_id=broadcast_id,
        now=utcnow(),
    )
    session.flush()
    stmt = (
        _insert(session)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["workspace_id", "dedupe_key"])
        .returning(OutboxMessage.id)
    )
    new_id = session.execute(stmt).scalar()
    if new_id is None:
        return None
    if body is not None:
        session.execute(insert(table_of(OutboxBody)), [{"outbox_id": new_id, "workspace_id": workspace_id, **body}])
    return session.get(OutboxMessage, new_id)


def enqueue_many(session: Session, workspace_id: int, items: Iterable[dict[str, Any]]) -> int:
    """Queue many messages with one statement per 1,000 (each item: the keyword arguments of ``enqueue``); returns
    how many were new (existing dedupe keys are skipped)."""
    return len(_enqueue_many(session, workspace_id, items)[0])


def enqueue_many_ids(session: Session, workspace_id: int, items: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Like ``enqueue_many``, returning {dedupe key: outbox id} for every item, new or already queued before."""
    new, keys = _enqueue_many(session, workspace_id, items)
    missing = [k for k in dict.fromkeys(keys) if k not in new]
    out = dict(new)
    for start in range(0, len(missing), 1000):
        chunk = missing[start : start + 1000]
        out.update(
            session.execute(
                select(OutboxMessage.dedupe_key, OutboxMessage.id).where(
                    OutboxMessage.workspace_id == workspace_id, OutboxMessage.dedupe_key.in_(chunk)
                )
            )
            .tuples()
            .all()
        )
    return out


# Columns given per row by the bulk INSERT, in order (the others are constants of a new message).
_BULK_COLUMNS = (
    "dedupe_key", "contact_id", "broadcast_id", "kind", "topic", "template_key", "extra", "priority", "not_before",
    "next_attempt_at",
)  # fmt: skip
_PG_ARRAYS = ("text", "bigint", "bigint", "text", "text", "text", "text", "integer", "timestamptz", "timestamptz")
_CONSTANT_COLUMNS = (
    "workspace_id, status, claim_rank, attempts, links, human_opens, machine_opens, human_clicks, machine_clicks,"
    " created_at, updated_at"
)
_SQLITE_CHUNK = 1000  # rows per statement: 14 parameters each, under SQLite's limit of 32,766


def _sqlite_dt(value: datetime | None) -> str | None:
    """A UTC timestamp as SQLAlchemy stores it on SQLite (naive UTC text, so text order is time order)."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


def _enqueue_many(
    session: Session, workspace_id: int, items: Iterable[dict[str, Any]]
) -> tuple[dict[str, int], list[str]]:
    """Insert the new messages on the connection's DBAPI cursor (values pre-serialised: SQLAlchemy's per-row
    processing cost more than the statement); returns ({dedupe key: id} of the rows inserted now, every item's key).
    """
    now = utcnow()
    pairs = [
        _row(
            workspace_id,
            dedupe_key=item["dedupe_key"],
            contact_id=item.get("contact_id"),
            template_key=item.get("template_key"),
            rendered=item.get("rendered"),
            kind=item.get("kind", "marketing"),
            topic=item.get("topic", "marketing"),
            priority=item.get("priority", 0),
            not_before=item.get("not_before"),
            extra=item.get("extra"),
            broadcast_id=item.get("broadcast_id"),
            now=now,
        )
        for item in items
    ]
    keys = [row["dedupe_key"] for row, _ in pairs]
    if not pairs:
        return {}, keys
    session.flush()
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    driver: Any = conn.connection.driver_connection
    cur = driver.cursor(binary=True) if pg else driver.cursor()
    new: dict[str, int] = {}
    names = ", ".join(_BULK_COLUMNS)
    if pg:
        args = ", ".join(f"%b::{t}[]" for t in _PG_ARRAYS)
        select_list = ", ".join(f"u.{c}::jsonb" if c == "extra" else f"u.{c}" for c in _BULK_COLUMNS)
        sql = (
            f"INSERT INTO outbox_messages ({names}, {_CONSTANT_COLUMNS}) SELECT {select_list}, %b, 'queued',"
            f" -u.priority, 0, '[]'::jsonb, 0, 0, 0, 0, %b, %b FROM unnest({args}) WITH ORDINALITY"
            f" AS u({names}, ord_) ORDER BY u.ord_ ON CONFLICT (workspace_id, dedupe_key) DO NOTHING"
            " RETURNING id, dedupe_key"
        )
        for start in range(0, len(pairs), 5000):
            chunk = [row for row, _ in pairs[start : start + 5000]]
            arrays: list[Any] = [
                [_json(r[c]) for r in chunk] if c == "extra" else [r[c] for r in chunk] for c in _BULK_COLUMNS
            ]
            cur.execute(sql, [workspace_id, now, now, *arrays])
            new.update((key, rid) for rid, key in cur.fetchall())
    else:
        stamp = _sqlite_dt(now)
        one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, 0, '[]', 0, 0, 0, 0, ?, ?)"
        for start in range(0, len(pairs), _SQLITE_CHUNK):
            chunk = [row for row, _ in pairs[start : start + _SQLITE_CHUNK]]
            params: list[Any] = []
            for r in chunk:
                params += (
                    r["dedupe_key"], r["contact_id"], r["broadcast_id"], r["kind"], r["topic"], r["template_key"],
                    _json(r["extra"]), r["priority"], _sqlite_dt(r["not_before"]), _sqlite_dt(r["next_attempt_at"]),
                    workspace_id, -r["priority"], stamp, stamp,
                )  # fmt: skip
            cur.execute(
                f"INSERT INTO outbox_messages ({names}, {_CONSTANT_COLUMNS}) VALUES {', '.join([one] * len(chunk))}"
                " ON CONFLICT (workspace_id, dedupe_key) DO NOTHING RETURNING id, dedupe_key",
                params,
            )
            new.update((key, rid) for rid, key in cur.fetchall())
    bodies = [
        {"outbox_id": new[row["dedupe_key"]], "workspace_id": workspace_id, **body}
        for row, body in pairs
        if body is not None and row["dedupe_key"] in new
    ]
    for start in range(0, len(bodies), 1000):
        session.execute(insert(table_of(OutboxBody)), bodies[start : start + 1000])
    return new, keys


def body_of(session: Session, workspace_id: int, message_id: int) -> dict[str, str] | None:
    """The pre-rendered content of a message queued with ``rendered=`` (subject, preheader, html, text), else None."""
    row = session.scalar(
        select(OutboxBody).where(OutboxBody.workspace_id == workspace_id, OutboxBody.outbox_id == message_id)
    )
    if row is None:
        return None
    return {"subject": row.subject, "preheader": row.preheader, "html": row.html, "text": row.text}


def get_message(session: Session, workspace_id: int, message_id: int) -> OutboxMessage:
    """The outbox row with this id in this workspace; NotFound otherwise."""
    row = session.scalar(
        select(OutboxMessage).where(OutboxMessage.workspace_id == workspace_id, OutboxMessage.id == message_id)
    )
    if row is None:
        raise NotFound("message_id", f"message {message_id} not found")
    return row


def list_messages(
    session: Session,
    workspace_id: int,
    *,
    status: str | None = None,
    contact_id: int | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[OutboxMessage]:
    """Messages, newest first, optionally of one status or contact."""
    if status is not None and status not in OUTBOX_STATES:
        raise OutboxError("status", f"status must be one of {', '.join(OUTBOX_STATES)}", code="invalid_status")
    query = select(OutboxMessage).where(OutboxMessage.workspace_id == workspace_id)
    if status is not None:
        query = query.where(OutboxMessage.status == status)
    if contact_id is not None:
        query = query.where(OutboxMessage.contact_id == contact_id)
    if before_id is not None:
        query = query.where(OutboxMessage.id < before_id)
    return list(session.scalars(query.order_by(OutboxMessage.id.desc()).limit(max(1, min(limit, 1000)))))


def list_uncertain(session: Session, workspace_id: int | None = None, *, limit: int = 1000) -> list[OutboxMessage]:
    """Messages whose fate is unknown after a crash (the sender died between claiming and recording)."""
    query = select(OutboxMessage).where(OutboxMessage.status == "uncertain")
    if workspace_id is not None:
        query = query.where(OutboxMessage.workspace_id == workspace_id)
    return list(session.scalars(query.order_by(OutboxMessage.id).limit(limit)))


def resend(session: Session, workspace_id: int, message_id: int, *, actor: str = "system") -> OutboxMessage:
    """Queue an uncertain or failed message again: an explicit decision by an operator (it may arrive twice)."""
    from suppilo.workspaces import service as workspaces_service

    row = get_message(session, workspace_id, message_id)
    if row.status not in ("uncertain", "failed"):
        raise Conflict("message_id", f"message {message_id} is {row.status}; only uncertain or failed ones are resent")
    previous = row.status
    now = utcnow()
    row.status = "queued"
    row.next_attempt_at = now
    row.lease_token = None
    row.lease_expires_at = None
    row.updated_at = now
    workspaces_service.record_audit(
        session,
        workspace_id,
        actor=actor,
        action="outbox.resend",
        subject_type="outbox_message",
        subject_id=row.id,
        details={"previous_status": previous},
    )
    session.flush()
    return row


def skip_for_contact(session: Session, workspace_id: int, contact_id: int, reason: str) -> int:
    """Mark the contact's waiting messages ``skipped`` (erasure, objection); returns how many."""
    now = utcnow()
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.workspace_id == workspace_id,
            OutboxMessage.contact_id == contact_id,
            OutboxMessage.status.in_(("queued", "deferred")),
        )
        .values(status="skipped", last_error=reason, updated_at=now)
    )
    return rowcount(result)


def counts(session: Session, workspace_id: int | None = None) -> dict[str, int]:
    """Messages per status."""
    query = select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
    if workspace_id is not None:
        query = query.where(OutboxMessage.workspace_id == workspace_id)
    return {status: n for status, n in session.execute(query)}


def is_final(status: str) -> bool:
    """Whether a status is final."""
    return status in FINAL_STATES
