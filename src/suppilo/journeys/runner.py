"""The journey runner: claims due enrollments, walks them with the step machine, and commits each batch's effects
(outbox rows, contact updates, tasks, list changes, coupons) with the enrollments' advance in one transaction.

On PostgreSQL due work is claimed with ``FOR UPDATE SKIP LOCKED``: any number of runner processes share one database
and never take the same enrollment; a runner killed mid-batch rolls its transaction back, so nothing is half done and
the batch is taken again. SQLite serialises writers, so one runner works at a time there.

Webhook steps are the exception (a network call must not hold a transaction): the enrollment is handed to the
webhook phase with a lease (``due_at`` in the future, ``lease_token``), the call is made outside any transaction,
and its outcome is recorded only if the lease is still held; a runner that dies after the call leaves the lease to
expire and the call is repeated with the same idempotency key (at-least-once, which receivers dedupe).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.engine import journey as jengine
from suppilo.engine.journey import Advance, Definition, Facts, Position
from suppilo.errors import DomainError
from suppilo.journeys.models import Enrollment, EnrollmentStep, Journey
from suppilo.journeys.service import definition_of
from suppilo.messaging import outbox
from suppilo.segments import service as segments_service
from suppilo.workspaces.models import Workspace

log = logging.getLogger("suppilo.journeys")

WEBHOOK_LEASE = timedelta(seconds=120)
# Enrollments claimed and advanced per transaction.
BATCH = 500
# SQLite: the share of the time a runner working off a backlog holds the write lock, and its shortest pause.
SQLITE_SHARE = 0.5
SQLITE_MIN_PAUSE = 0.02


_ROW_COLUMNS = (
    "id", "workspace_id", "journey_id", "version", "contact_id", "status", "phase", "group", "step", "step_since",
    "due_at", "wait_event", "event_arrived", "goal_reached", "webhook_outcome", "attempts", "visits", "variants",
    "data", "entered_at", "ended_at", "end_reason", "converted_at", "last_error",
)  # fmt: skip
_ROW_DT = ("step_since", "due_at", "entered_at", "ended_at", "converted_at")
_ROW_JSON = ("visits", "variants", "data")
# What advancing may change; written back for every claimed row with one statement.
_WRITE_COLUMNS = (
    "status", "phase", "group", "step", "step_since", "due_at", "wait_event", "event_arrived", "webhook_outcome",
    "attempts", "visits", "variants", "data", "ended_at", "end_reason", "converted_at", "last_error",
)  # fmt: skip
_PG_TYPES = {
    "status": "text", "phase": "text", "group": "text", "step": "text", "step_since": "timestamptz",
    "due_at": "timestamptz", "wait_event": "text", "event_arrived": "boolean", "webhook_outcome": "text",
    "attempts": "integer", "visits": "jsonb", "variants": "jsonb", "data": "jsonb", "ended_at": "timestamptz",
    "end_reason": "text", "converted_at": "timestamptz", "last_error": "text",
}  # fmt: skip


class _Row:
    """An enrollment as the runner reads and writes it: plain attributes (no ORM state to track per row).

    The batch reads its rows with one statement and writes them back with one, so a step that only queues a message
    costs a few Python operations per enrollment, not an ORM object, its change tracking and its flush."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__ = values

    if TYPE_CHECKING:
        id: int
        workspace_id: int
        journey_id: int
        version: int
        contact_id: int
        status: str
        phase: str
        group: str
        step: str
        step_since: datetime
        due_at: datetime | None
        wait_event: str | None
        event_arrived: bool
        goal_reached: bool
        webhook_outcome: str | None
        attempts: int
        visits: dict[str, int]
        variants: dict[str, str]
        data: dict[str, Any]
        entered_at: datetime
        ended_at: datetime | None
        end_reason: str | None
        converted_at: datetime | None
        last_error: str | None


@dataclass
class _Item:
    row: _Row
    defn: Definition
    journey: str
    tz: Any
    pos: Position
    facts: Facts
    result: Advance | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)


def _claim(session: Session, now: datetime, limit: int, phase: str = "step") -> list[Enrollment]:
    query = (
        select(Enrollment)
        .join(Journey, and_(Journey.id == Enrollment.journey_id, Journey.status == "active"))
        .where(Enrollment.status == "active", Enrollment.phase == phase, Enrollment.due_at <= now)
        .order_by(Enrollment.due_at, Enrollment.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(of=Enrollment, skip_locked=True)
    return list(session.scalars(query))


class _Db:
    """The DBAPI cursor of the session's connection (inside its transaction) and the dialect's value forms."""

    def __init__(self, session: Session) -> None:
        conn = session.connection()
        self.pg = conn.dialect.name == "postgresql"
        driver: Any = conn.connection.driver_connection
        # PostgreSQL: binary parameters (arrays are sent without escaping each element as text).
        self.cur: Any = driver.cursor(binary=True) if self.pg else driver.cursor()
        self.p = "%b" if self.pg else "?"
        self._dt: dict[datetime, str] = {}

    def dt(self, value: datetime | None) -> Any:
        """A timestamp as the driver takes it (SQLite: naive UTC text, as SQLAlchemy stores it)."""
        if value is None or self.pg:
            return value
        text = self._dt.get(value)
        if text is None:
            text = self._dt[value] = value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return text

    def read_dt(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        stored: datetime = value
        return stored.replace(tzinfo=UTC) if stored.tzinfo is None else stored.astimezone(UTC)

    def read_json(self, value: Any) -> Any:
        return orjson.loads(value) if isinstance(value, str | bytes) else value


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what orjson refuses (integers beyond 64 bits, keys that are not strings)
        return json.dumps(value, default=str)


def _claim_rows(db: _Db, now: datetime, limit: int) -> list[_Row]:
    """Due enrollments of active journeys in due order; PostgreSQL locks them (others skip them) until commit."""
    # JSON as text, parsed by orjson (psycopg would parse jsonb with the standard library).
    columns = ", ".join(f'e."{c}"::text' if db.pg and c in _ROW_JSON else f'e."{c}"' for c in _ROW_COLUMNS)
    p = db.p
    sql = (
        f"SELECT {columns} FROM journey_enrollments AS e"
        " JOIN journeys AS j ON j.id = e.journey_id AND j.status = 'active'"
        f" WHERE e.status = 'active' AND e.phase = 'step' AND e.due_at <= {p}"
        # By due time alone: the (status, phase, due_at) index gives that order, so the scan stops after ``limit``
        # rows (ordering by id as well made PostgreSQL sort every due row at each claim: 50 ms at 20,000 due).
        f" ORDER BY e.due_at LIMIT {p}"
    )
    if db.pg:
        sql += " FOR UPDATE OF e SKIP LOCKED"
    db.cur.execute(sql, (db.dt(now), limit))
    records = db.cur.fetchall()
    dt_at = [_ROW_COLUMNS.index(c) for c in _ROW_DT]
    json_at = [_ROW_COLUMNS.index(c) for c in _ROW_JSON]
    bool_at = [_ROW_COLUMNS.index(c) for c in ("event_arrived", "goal_reached")]
    rows: list[_Row] = []
    read_dt, read_json = db.read_dt, db.read_json
    for record in records:
        values = list(record)
        for i in dt_at:
            values[i] = read_dt(values[i])
        for i in json_at:
            values[i] = read_json(values[i]) or {}
        for i in bool_at:
            values[i] = bool(values[i])
        rows.append(_Row(dict(zip(_ROW_COLUMNS, values, strict=True))))
    return rows


def _write_rows(db: _Db, rows: list[_Row]) -> None:
    """Store the batch's new positions: one statement (PostgreSQL: an UPDATE from arrays; SQLite: executemany)."""
    if not rows:
        return
    columns: list[list[Any]] = []
    for c in _WRITE_COLUMNS:
        values = [getattr(r, c) for r in rows]
        if c in _ROW_JSON:
            values = [_json(v) for v in values]
        elif _PG_TYPES[c] == "timestamptz":
            values = [db.dt(v) for v in values]
        columns.append(values)
    ids = [r.id for r in rows]
    if db.pg:
        args = ", ".join(f"%b::{'text' if _PG_TYPES[c] == 'jsonb' else _PG_TYPES[c]}[]" for c in _WRITE_COLUMNS)
        names = ", ".join(f'"{c}"' for c in _WRITE_COLUMNS)
        sets = ", ".join(
            f'"{c}" = u."{c}"::jsonb' if _PG_TYPES[c] == "jsonb" else f'"{c}" = u."{c}"' for c in _WRITE_COLUMNS
        )
        db.cur.execute(
            f"UPDATE journey_enrollments AS e SET {sets} FROM unnest(%b::bigint[], {args}) AS u(id_, {names})"
            " WHERE e.id = u.id_",
            [ids, *columns],
        )
    else:
        sets = ", ".join(f'"{c}" = ?' for c in _WRITE_COLUMNS)
        db.cur.executemany(f"UPDATE journey_enrollments SET {sets} WHERE id = ?", list(zip(*columns, ids, strict=True)))


_LOG_COLUMNS = ("workspace_id", "enrollment_id", "journey_id", "step_id", "outcome", "at", "outbox_id", "detail")


def _write_logs(db: _Db, logs: list[dict[str, Any]]) -> None:
    """Append the batch's timeline lines with one statement."""
    if not logs:
        return
    names = ", ".join(_LOG_COLUMNS)
    if db.pg:
        db.cur.execute(
            f"INSERT INTO journey_steps_log ({names}) SELECT u.workspace_id, u.enrollment_id, u.journey_id,"
            " u.step_id, u.outcome, u.at, u.outbox_id, u.detail::jsonb FROM unnest(%b::bigint[], %b::bigint[],"
            " %b::bigint[], %b::text[], %b::text[], %b::timestamptz[], %b::bigint[], %b::text[])"
            f" AS u({names})",
            [
                [e["workspace_id"] for e in logs],
                [e["enrollment_id"] for e in logs],
                [e["journey_id"] for e in logs],
                [e["step_id"] for e in logs],
                [e["outcome"] for e in logs],
                [e["at"] for e in logs],
                [e["outbox_id"] for e in logs],
                [_json(e["detail"]) for e in logs],
            ],
        )
    else:
        dt = db.dt
        db.cur.executemany(
            f"INSERT INTO journey_steps_log ({names}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (e["workspace_id"], e["enrollment_id"], e["journey_id"], e["step_id"], e["outcome"], dt(e["at"]),
                 e["outbox_id"], _json(e["detail"]))
                for e in logs
            ],
        )  # fmt: skip


def _zones(session: Session, rows: list[_Row]) -> dict[int, Any]:
    contact_ids = list({r.contact_id for r in rows})
    ws_ids = list({r.workspace_id for r in rows})
    ws_tz = dict(session.execute(select(Workspace.id, Workspace.timezone).where(Workspace.id.in_(ws_ids))).all())
    zones: dict[int, Any] = {}
    for start in range(0, len(contact_ids), 1000):
        for cid, ws, tz in session.execute(
            select(Contact.id, Contact.workspace_id, Contact.timezone).where(
                Contact.id.in_(contact_ids[start : start + 1000])
            )
        ):
            zones[cid] = jengine.zone(tz, ws_tz.get(ws) or "UTC")
    return zones


def _needs_zone(defn: Definition) -> bool:
    """Whether walking ``defn`` can need the contact's time zone (only ``wait_until`` reads local time)."""
    return any(isinstance(step, jengine.WaitUntil) for step in defn.steps.values())


def _evaluate(
    session: Session, workspace_id: int, raw: dict[str, Any], contact_ids: list[int], now: datetime
) -> set[int]:
    """The contacts among ``contact_ids`` that match a (stored, validated) filter now."""
    node = segments_service.parse_stored_filter(session, workspace_id, raw)
    where = segments_service.matching_clause(session, workspace_id, node, now)
    from suppilo.segments.compiler import contacts as contacts_t

    out: set[int] = set()
    for start in range(0, len(contact_ids), 1000):
        chunk = contact_ids[start : start + 1000]
        out |= set(session.scalars(select(contacts_t.c.id).where(where, contacts_t.c.id.in_(chunk))))
    return out


def _line(
    row: _Row,
    step_id: str,
    outcome: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
    outbox_id: int | None = None,
) -> dict[str, Any]:
    """One row of the enrollment's timeline (``journey_steps_log``), written in bulk at the end of the batch."""
    return {
        "workspace_id": row.workspace_id,
        "enrollment_id": row.id,
        "journey_id": row.journey_id,
        "step_id": step_id,
        "outcome": outcome[:64],
        "at": at,
        "outbox_id": outbox_id,
        "detail": detail or {},
    }


class _Effects:
    """Carries out step effects for a batch; bulk where the effect allows it."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now
        self.mail: list[tuple[_Item, jengine.Effect, dict[str, Any]]] = []
        self.kinds: dict[int, dict[str, str]] = {}
        self.tags_add: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.tags_remove: dict[int, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
        self.shown: dict[int, dict[str, Any]] = {}  # an update step's settings as its timeline lines show them

    def template_kind(self, workspace_id: int, key: str) -> str:
        if workspace_id not in self.kinds:
            from suppilo.messaging.models import Template

            self.kinds[workspace_id] = dict(
                self.session.execute(select(Template.key, Template.kind).where(Template.workspace_id == workspace_id))
                .tuples()
                .all()
            )
        return self.kinds[workspace_id].get(key, "marketing")

    def apply(self, item: _Item, effects: tuple[jengine.Effect, ...]) -> None:
        row = item.row
        for eff in effects:
            step = eff.step
            detail: dict[str, Any] = {}
            try:
                if isinstance(step, jengine.SendEmail):
                    extra: dict[str, Any] = {
                        "message": {
                            **step.message,
                            "journey_id": row.journey_id,
                            "journey": item.journey,
                            "step": eff.step_id,
                        }
                    }
                    if "coupon" in row.data:
                        extra["offer"] = row.data["coupon"]
                    for root in step.include:
                        if root == "owner":
                            owner = owner_name(self.session, row.contact_id)
                            if owner:
                                extra["message"]["owner_name"] = owner
                        elif root == "recommendations":
                            from suppilo.recommendations import service as recommendations_service

                            extra["recommendations"] = [
                                {k: v for k, v in item.items() if v is not None}
                                for item in recommendations_service.for_contact(
                                    self.session, row.workspace_id, row.contact_id, limit=4
                                )
                            ]
                        elif root == "referral":
                            from suppilo.advocacy import service as advocacy_service
                            from suppilo.config import get_settings

                            extra["referral"] = {
                                k: v
                                for k, v in advocacy_service.referral_context(
                                    self.session, row.workspace_id, row.contact_id, public_url=get_settings().public_url
                                ).items()
                                if v is not None
                            }
                        else:
                            extra[root] = commerce_context(self.session, row.workspace_id, row.contact_id, root)
                    self.mail.append(
                        (
                            item,
                            eff,
                            {
                                "dedupe_key": f"journey:{row.id}:{eff.step_id}:{eff.visit}",
                                "contact_id": row.contact_id,
                                "template_key": step.template,
                                "kind": step.kind or self.template_kind(row.workspace_id, step.template),
                                "topic": step.topic,
                                "priority": step.priority,
                                "extra": extra,
                            },
                        )
                    )
                    continue
                if isinstance(step, jengine.UpdateContact):
                    detail = self._update_contact(row, step)
                elif isinstance(step, jengine.CreateTask):
                    detail = self._task(row, step, item.journey)
                elif isinstance(step, jengine.ListChange):
                    detail = self._list(row, step)
                elif isinstance(step, jengine.IssueCoupon):
                    detail = self._coupon(row, step, eff)
            except DomainError as exc:
                detail = {"error": f"{exc.field}: {exc.message}"}
            item.logs.append(self._log(row, eff.step_id, step.type if "error" not in detail else "error", detail))

    def _log(
        self, row: _Row, step_id: str, outcome: str, detail: dict[str, Any], outbox_id: int | None = None
    ) -> dict[str, Any]:
        return _line(row, step_id, outcome, self.now, detail, outbox_id)

    def _update_contact(self, row: _Row, step: jengine.UpdateContact) -> dict[str, Any]:
        session = self.session
        shown = self.shown.get(id(step))
        if shown is None:
            shown = self.shown[id(step)] = step.model_dump(exclude={"type", "next"}, exclude_defaults=True)
        detail = dict(shown)
        if not (step.set or step.stage or step.score_points):
            # Tags only: gathered for the whole batch and written with a few statements (flush_tags).
            self.tags_add[row.workspace_id][row.contact_id].extend(step.add_tags)
            self.tags_remove[row.workspace_id][row.contact_id].extend(step.remove_tags)
            return detail
        contact = contacts_service.get_contact(session, row.workspace_id, row.contact_id)
        if step.set:
            from suppilo.contacts.schemas import ContactUpdate

            builtin = {k: v for k, v in step.set.items() if k in ContactUpdate.model_fields and k != "properties"}
            custom = {k.removeprefix("properties."): v for k, v in step.set.items() if k not in builtin}
            data: dict[str, Any] = dict(builtin)
            if custom:
                data["properties"] = custom
            contacts_service.update_contact(session, row.workspace_id, contact.id, ContactUpdate(**data))
        if step.add_tags:
            contacts_service.add_tags(session, row.workspace_id, contact.id, step.add_tags)
        if step.remove_tags:
            contacts_service.remove_tags(session, row.workspace_id, contact.id, step.remove_tags)
        if step.stage:
            contacts_service.change_stage(
                session, contact, step.stage, reason=f"journey {row.journey_id}", source="journey", at=self.now
            )
        if step.score_points:
            from suppilo.contacts.schemas import ContactUpdate

            ensure_points_property(session, row.workspace_id)
            contact = contacts_service.get_contact(session, row.workspace_id, row.contact_id)
            current = (contact.properties or {}).get(POINTS_PROPERTY) or 0
            total = current + step.score_points
            contacts_service.update_contact(
                session, row.workspace_id, contact.id, ContactUpdate(properties={POINTS_PROPERTY: total})
            )
            detail["journey_points"] = total
        return detail

    def flush_tags(self) -> None:
        for ws in sorted(set(self.tags_add) | set(self.tags_remove)):
            contacts_service.change_tags_many(
                self.session, ws, dict(self.tags_add.get(ws, {})), dict(self.tags_remove.get(ws, {}))
            )
        self.tags_add.clear()
        self.tags_remove.clear()

    def _task(self, row: _Row, step: jengine.CreateTask, journey: str) -> dict[str, Any]:
        from suppilo.deals import service as deals_service
        from suppilo.deals.schemas import TaskCreate

        owner = self.session.scalar(select(Contact.owner_id).where(Contact.id == row.contact_id))
        task = deals_service.create_task(
            self.session,
            row.workspace_id,
            TaskCreate(
                title=step.title,
                kind=step.kind,
                due_at=None if step.working_hours else self.now + step.due_in.delta(),
                due_in_working_hours=step.due_in.delta().total_seconds() / 3600 if step.working_hours else None,
                contact_id=row.contact_id,
                owner_id=owner,
            ),
            now=self.now,
        )
        return {"task_id": task.id, "owner_id": owner, "due_at": task.due_at.isoformat(), "journey": journey}

    def _list(self, row: _Row, step: jengine.ListChange) -> dict[str, Any]:
        fn = segments_service.add_members if step.action == "add" else segments_service.remove_members
        changed = fn(self.session, row.workspace_id, step.list_id, [row.contact_id], self.now)
        return {"list_id": step.list_id, "changed": changed}

    def _coupon(self, row: _Row, step: jengine.IssueCoupon, eff: jengine.Effect) -> dict[str, Any]:
        from suppilo.offers import service as offers_service

        coupon = offers_service.issue_coupon(
            self.session,
            row.workspace_id,
            offer_key=step.offer,
            contact_id=row.contact_id,
            idempotency_key=f"journey:{row.id}:{eff.key}",
            now=self.now,
        )
        offer = {
            "coupon_code": coupon.code,
            "kind": coupon.kind,
            "discount_percent": coupon.percent / 100 if coupon.percent is not None else None,
            "amount_minor": coupon.amount_minor,
            "currency": coupon.currency,
            "product_sku": coupon.product_sku,
            "expires_at": coupon.expires_at.isoformat() if coupon.expires_at else None,
        }
        row.data = {**row.data, "coupon": {k: v for k, v in offer.items() if v is not None}}
        return {"coupon_id": coupon.id, "code": coupon.code}

    def flush_mail(self) -> None:
        if not self.mail:
            return
        by_ws: dict[int, list[tuple[_Item, jengine.Effect, dict[str, Any]]]] = defaultdict(list)
        for entry in self.mail:
            by_ws[entry[0].row.workspace_id].append(entry)
        for ws, entries in by_ws.items():
            ids = outbox.enqueue_many_ids(self.session, ws, [e[2] for e in entries])
            for item, eff, msg in entries:
                item.logs.append(
                    self._log(
                        item.row,
                        eff.step_id,
                        "send_email",
                        {"template": msg["template_key"]},
                        ids.get(msg["dedupe_key"]),
                    )
                )
        self.mail.clear()


POINTS_PROPERTY = "journey_points"


def ensure_points_property(session: Session, workspace_id: int) -> None:
    """Declare the number property that journeys' score points add to (filterable like any property)."""
    from suppilo.contacts import properties

    properties.ensure_definition(
        session,
        workspace_id,
        name=POINTS_PROPERTY,
        type="number",
        label="Journey points",
        description="Points added or taken by journey steps (update_contact.score_points).",
    )


def owner_name(session: Session, contact_id: int) -> str | None:
    """The name of the contact's owner (the sales rep), if it has one."""
    from suppilo.workspaces.models import User

    return (
        session.scalar(select(User.name).join(Contact, Contact.owner_id == User.id).where(Contact.id == contact_id))
        or None
    )


def commerce_context(session: Session, workspace_id: int, contact_id: int, root: str) -> dict[str, Any]:
    """The contact's latest order or cart as a template sees it (empty when there is none)."""
    from suppilo.commerce.models import Cart, Order, OrderLine

    if root == "order":
        order = session.scalar(
            select(Order)
            .where(Order.workspace_id == workspace_id, Order.contact_id == contact_id, Order.status != "cancelled")
            .order_by(Order.placed_at.desc(), Order.id.desc())
            .limit(1)
        )
        if order is None:
            return {}
        lines = session.scalars(select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.id))
        return {
            "number": order.external_id,
            "placed_at": order.placed_at.isoformat(),
            "currency": order.currency,
            "total_minor": order.total_minor,
            "lines": [
                {"name": ln.name, "sku": ln.sku, "quantity": ln.quantity, "unit_price_minor": ln.unit_price_minor}
                for ln in lines
            ],
        }
    cart = session.scalar(
        select(Cart)
        .where(Cart.workspace_id == workspace_id, Cart.contact_id == contact_id)
        .order_by(Cart.last_activity_at.desc(), Cart.id.desc())
        .limit(1)
    )
    if cart is None:
        return {}
    return {
        "currency": cart.currency,
        "value_minor": cart.value_minor,
        "lines": [
            {"name": ln.get("name"), "quantity": ln.get("quantity"), "unit_price_minor": ln.get("unit_price_minor")}
            for ln in cart.lines or []
        ],
    }


def _facts_of(row: _Row) -> Facts:
    webhook = None if row.webhook_outcome is None else row.webhook_outcome == "ok"
    return Facts(event_arrived=row.event_arrived, webhook=webhook, goal_reached=row.goal_reached)


def _finish(item: _Item, now: datetime) -> None:
    """Store the outcome of the walk on the enrollment row."""
    row = item.row
    res = item.result
    assert res is not None
    pos = res.position
    row.step = pos.step
    row.step_since = pos.since
    row.visits = dict(pos.visits)
    row.variants = dict(pos.variants)
    row.event_arrived = False
    row.webhook_outcome = None
    row.last_error = None
    row.wait_event = None
    item.logs.extend(_line(row, e.step_id, e.outcome, e.at) for e in res.log)
    if res.status == "waiting":
        row.due_at = res.due_at
        row.wait_event = res.wait_event.event if res.wait_event is not None else None
    elif res.status == "needs_webhook":
        row.phase = "webhook"
        row.attempts = 0
        row.due_at = now
    elif res.status == "ended":
        if res.end_reason == "holdout":
            # Nothing is sent; the contact is watched for the goal during the goal window.
            goal = item.defn.goal
            row.group = "holdout"
            row.due_at = row.entered_at + timedelta(days=goal.window_days if goal else 30)
            return
        row.status = "ended"
        row.end_reason = res.end_reason
        row.ended_at = now
        row.due_at = None
        if res.end_reason == "goal" and row.converted_at is None:
            row.converted_at = now


def _holdout_done(session: Session, item: _Item, now: datetime) -> None:
    row = item.row
    goal = item.defn.goal
    if (
        goal is not None
        and goal.filter is not None
        and row.converted_at is None
        and row.contact_id in _evaluate(session, row.workspace_id, goal.filter, [row.contact_id], now)
    ):
        row.converted_at = now
    row.status = "ended"
    row.end_reason = "holdout"
    row.ended_at = now
    row.due_at = None
    item.logs.append(_line(row, row.step, "holdout:converted" if row.converted_at else "holdout:ended", now))


def advance_batch(session: Session, now: datetime | None = None, *, limit: int = BATCH) -> int:
    """Claim up to ``limit`` due enrollments and advance them; the caller commits. Returns how many were advanced.

    The batch is set-based: one statement claims the rows, each kind of effect is written for the whole batch (one
    INSERT of outbox rows, one of timeline lines), and one statement stores every enrollment's new position."""
    now = now or utcnow()
    db = _Db(session)
    rows = _claim_rows(db, now, limit)
    if not rows:
        return 0
    defs: dict[tuple[int, int], Definition] = {}
    for row in rows:
        key = (row.journey_id, row.version)
        if key not in defs:
            defs[key] = definition_of(session, row.journey_id, row.version)
    names = dict(
        session.execute(select(Journey.id, Journey.name).where(Journey.id.in_({k[0] for k in defs}))).tuples().all()
    )
    zoned = {key for key, defn in defs.items() if _needs_zone(defn)}
    zones = _zones(session, [r for r in rows if (r.journey_id, r.version) in zoned]) if zoned else {}
    utc = jengine.zone("UTC")
    items: list[_Item] = []
    holdouts: list[_Item] = []
    for row in rows:
        pos = Position(row.step, row.step_since, dict(row.visits), dict(row.variants))
        item = _Item(
            row,
            defs[(row.journey_id, row.version)],
            names[row.journey_id],
            zones.get(row.contact_id, utc),
            pos,
            _facts_of(row),
        )
        if row.group == "holdout":
            holdouts.append(item)
        else:
            items.append(item)
    for item in holdouts:
        _holdout_done(session, item, now)
    effects = _Effects(session, now)
    pending = items
    for _ in range(64):
        if not pending:
            break
        needs: list[_Item] = []
        for item in pending:
            res = jengine.advance(
                item.defn,
                item.pos,
                item.facts,
                now,
                journey_id=item.row.journey_id,
                contact_id=item.row.contact_id,
                tz=item.tz,
            )
            effects.apply(item, res.effects)
            if res.status == "needs_filters":
                item.logs.extend(_line(item.row, e.step_id, e.outcome, e.at) for e in res.log)
                item.pos = res.position
                item.result = res
                needs.append(item)
            else:
                item.result = res
                _finish(item, now)
        if not needs:
            break
        # Evaluate each needed filter once for all the contacts that need it (after the effects so far are visible).
        effects.flush_mail()
        effects.flush_tags()
        session.flush()
        wanted: dict[tuple[int, str], tuple[dict[str, Any], list[_Item], list[str]]] = {}
        for item in needs:
            assert item.result is not None
            for fact_key, raw in item.result.needs.items():
                text = json.dumps(raw, sort_keys=True)
                entry = wanted.setdefault((item.row.workspace_id, text), (raw, [], []))
                entry[1].append(item)
                entry[2].append(fact_key)
        new_facts: dict[int, dict[str, bool]] = defaultdict(dict)
        for (ws, _), (raw, its, keys) in wanted.items():
            matched = _evaluate(session, ws, raw, [i.row.contact_id for i in its], now)
            for it, fact_key in zip(its, keys, strict=True):
                new_facts[id(it)][fact_key] = it.row.contact_id in matched
        for item in needs:
            f = item.facts
            item.facts = Facts(
                filters={**f.filters, **new_facts[id(item)]},
                event_arrived=f.event_arrived if item.pos.step == item.row.step else False,
                webhook=f.webhook if item.pos.step == item.row.step else None,
                goal_reached=f.goal_reached,
            )
        pending = needs
    for item in pending:
        if item.result is not None and item.result.status == "needs_filters":
            item.result = Advance("ended", item.pos, end_reason="stuck")
            _finish(item, now)
    effects.flush_mail()
    effects.flush_tags()
    session.flush()
    _write_logs(db, [entry for item in [*items, *holdouts] for entry in item.logs])
    _write_rows(db, rows)
    return len(rows)


def run_due(
    factory: sessionmaker[Session],
    *,
    limit: int = BATCH,
    max_batches: int = 1000,
    now: Callable[[], datetime] = utcnow,
    sqlite_share: float = SQLITE_SHARE,
) -> int:
    """Advance due enrollments batch by batch (one transaction each) until none is due; returns how many.

    On SQLite (one writer at a time) a backlog is worked off taking at most ``sqlite_share`` of the time: after a
    full batch the runner leaves the database free in proportion to how long the batch held it. SQLite's busy
    handler polls (ever less often, up to every 100 ms), so a writer that begins its next transaction right after
    committing keeps every other writer (the sender's claims and outcomes) waiting until its whole backlog is done.
    """
    total = 0
    pause = 0.0
    bind = factory.kw.get("bind")
    if bind is not None and bind.dialect.name == "sqlite" and 0 < sqlite_share < 1:
        pause = 1 / sqlite_share - 1
    for _ in range(max_batches):
        with factory() as session:
            session.connection()  # begins the transaction (SQLite: takes the write lock, waiting for it if held)
            held = time.monotonic()
            n = advance_batch(session, now(), limit=limit)
            session.commit()
        total += n
        if n < limit:
            break
        if pause:
            time.sleep(max(SQLITE_MIN_PAUSE, (time.monotonic() - held) * pause))
    return total


# --- webhooks -------------------------------------------------------------------------------------------------------


def _claim_webhooks(session: Session, now: datetime, limit: int) -> list[tuple[int, str]]:
    rows = _claim(session, now, limit, phase="webhook")
    claimed: list[tuple[int, str]] = []
    for row in rows:
        token = str(uuid.uuid4())
        row.lease_token = token
        row.due_at = now + WEBHOOK_LEASE
        claimed.append((row.id, token))
    session.flush()
    return claimed


def run_webhooks(
    factory: sessionmaker[Session],
    *,
    limit: int = 50,
    allow_private: bool | None = None,
    now: Callable[[], datetime] = utcnow,
) -> int:
    """Call the webhooks of enrollments waiting at a webhook step; returns how many calls were made."""
    from suppilo.config import get_settings
    from suppilo.webhooks import client as webhooks

    private = get_settings().webhook_allow_private if allow_private is None else allow_private
    with factory() as session:
        claimed = _claim_webhooks(session, now(), limit)
        jobs: list[tuple[int, str, str, dict[str, Any], str]] = []
        for eid, token in claimed:
            row = session.get(Enrollment, eid)
            assert row is not None
            defn = definition_of(session, row.journey_id, row.version)
            step = defn.steps[row.step]
            assert isinstance(step, jengine.CallWebhook)
            secret = _webhook_secret(session, row.workspace_id)
            payload = {
                "journey_id": row.journey_id,
                "enrollment_id": row.id,
                "step": row.step,
                "contact": _contact_payload(session, row.contact_id),
                "attempt": row.attempts + 1,
            }
            jobs.append((eid, token, step.url, payload, secret))
        session.commit()
    for eid, token, url, payload, secret in jobs:
        visit = payload.get("attempt")
        result = webhooks.deliver(
            url, payload, secret=secret, idempotency_key=f"journey:{eid}:{payload['step']}", allow_private=private
        )
        with factory() as session:
            row = session.get(Enrollment, eid)
            if row is None or row.lease_token != token or row.phase != "webhook":
                continue  # the lease was lost: whoever holds it now decides
            t = now()
            row.lease_token = None
            row.attempts = row.attempts + 1
            outcome = "ok" if result.ok else "failed"
            if not result.ok and result.retryable and row.attempts < webhooks.MAX_ATTEMPTS:
                row.due_at = t + timedelta(seconds=webhooks.retry_delay(row.attempts))
                row.last_error = (result.error or f"HTTP {result.status}")[:500]
                outcome = "retry"
            else:
                row.phase = "step"
                row.webhook_outcome = outcome
                row.due_at = t
                row.last_error = None if result.ok else (result.error or f"HTTP {result.status}")[:500]
            session.add(
                EnrollmentStep(
                    workspace_id=row.workspace_id,
                    enrollment_id=row.id,
                    journey_id=row.journey_id,
                    step_id=row.step,
                    # The decision (webhook:ok / webhook:failed) is logged by the step machine when it moves on.
                    outcome="webhook:retry" if outcome == "retry" else "webhook:call",
                    at=t,
                    detail={"status": result.status, "error": result.error, "attempt": visit},
                )
            )
            session.commit()
    return len(jobs)


def _webhook_secret(session: Session, workspace_id: int) -> str:
    """The workspace's webhook signing secret (created on first use, kept in the workspace settings)."""
    import secrets

    ws = session.get(Workspace, workspace_id)
    assert ws is not None
    settings = dict(ws.settings or {})
    secret = settings.get("webhook_secret")
    if not isinstance(secret, str) or len(secret) < 32:
        secret = secrets.token_hex(32)
        settings["webhook_secret"] = secret
        ws.settings = settings
        session.flush()
    return secret


def _contact_payload(session: Session, contact_id: int) -> dict[str, Any]:
    c = session.get(Contact, contact_id)
    if c is None:
        return {"id": contact_id}
    return {
        "id": c.id,
        "email": c.email,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "lifecycle_stage": c.lifecycle_stage,
        "language": c.language,
        "country": c.country,
    }


def check_goals(session: Session, now: datetime | None = None) -> int:
    """Mark active enrollments whose journey's goal filter has become true (the runner ends them as converted)."""
    now = now or utcnow()
    marked = 0
    for journey in session.scalars(select(Journey).where(Journey.status == "active")):
        defn = definition_of(session, journey.id, journey.current_version)
        if defn.goal is None or defn.goal.filter is None:
            continue
        after = 0
        while True:
            batch = list(
                session.execute(
                    select(Enrollment.id, Enrollment.contact_id, Enrollment.group)
                    .where(Enrollment.workspace_id == journey.workspace_id, Enrollment.journey_id == journey.id)
                    .where(Enrollment.status == "active", Enrollment.converted_at.is_(None), Enrollment.id > after)
                    .order_by(Enrollment.id)
                    .limit(2000)
                )
            )
            if not batch:
                break
            after = batch[-1][0]
            matched = _evaluate(session, journey.workspace_id, defn.goal.filter, [c for _, c, _ in batch], now)
            treat = [eid for eid, cid, g in batch if cid in matched and g == "treatment"]
            hold = [eid for eid, cid, g in batch if cid in matched and g == "holdout"]
            if treat:
                session.execute(
                    update(Enrollment)
                    .where(Enrollment.id.in_(treat))
                    .values(goal_reached=True, due_at=now, converted_at=now)
                )
            if hold:
                session.execute(update(Enrollment).where(Enrollment.id.in_(hold)).values(converted_at=now))
            marked += len(treat) + len(hold)
    return marked


def due_count(session: Session, now: datetime | None = None) -> int:
    """How many enrollments are due now (for monitoring)."""
    now = now or utcnow()
    return int(
        session.scalar(
            select(func.count()).select_from(Enrollment).where(Enrollment.status == "active", Enrollment.due_at <= now)
        )
        or 0
    )
