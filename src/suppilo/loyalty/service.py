"""Loyalty use cases: the append-only points ledger, the cached balance, tiers, rewards, expiry, order hooks.

Services flush, never commit. Every entry and its balance change are written together in one savepoint. A debit is
a conditional ``UPDATE loyalty_balances SET points = points - n WHERE points >= n``: whatever the concurrency, a
redemption that would take the balance below zero changes nothing and is refused (``insufficient_points``).
Reversals on refund and expiry are not redemptions and may take a balance below zero when the points were spent.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from suppilo.analytics.rates import minor_exponent, rate_book, workspace_currency
from suppilo.analytics.service import REVENUE_STATUSES
from suppilo.commerce import repository as commerce_repo
from suppilo.commerce.models import Order
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.errors import DomainError, NotFound
from suppilo.events import service as events_service
from suppilo.loyalty.models import LoyaltyBalance, LoyaltyEntry, LoyaltyProgram
from suppilo.loyalty.schemas import DEFAULT_TIERS, ProgramIn
from suppilo.offers import service as offers_service
from suppilo.offers.models import Coupon

TIER_EVENT = "loyalty.tier_changed"
TIER_KINDS = ("earn", "bonus", "reverse")
EXPIRY_NOTICE_DAYS = 30


class LoyaltyError(DomainError):
    """A refused loyalty operation."""


# --- programme ----------------------------------------------------------------------------------------------------


def _default_program(workspace_id: int) -> LoyaltyProgram:
    return LoyaltyProgram(
        workspace_id=workspace_id,
        enabled=False,
        points_per_unit=Decimal(1),
        expiry_days=None,
        tier_basis="points",
        tier_window_days=365,
        tiers=[t.model_dump(mode="json") for t in DEFAULT_TIERS],
        bonus_events={"review": 50, "referral": 500},
        rewards=[],
    )


def get_program(session: Session, workspace_id: int) -> LoyaltyProgram:
    """The workspace's programme; an unsaved, disabled default when none was saved."""
    program = session.scalar(select(LoyaltyProgram).where(LoyaltyProgram.workspace_id == workspace_id))
    return program if program is not None else _default_program(workspace_id)


def put_program(session: Session, workspace_id: int, data: ProgramIn) -> LoyaltyProgram:
    """Save the programme. Tiers need distinct keys and strictly increasing ``min`` from 0; rewards distinct keys
    and existing offers. Paths name the offending field (``tiers[1].min``)."""
    seen: set[str] = set()
    previous = -1
    for i, tier in enumerate(data.tiers):
        if tier.key in seen:
            raise LoyaltyError(f"tiers[{i}].key", f"tier {tier.key!r} appears twice", "duplicate_tier")
        seen.add(tier.key)
        if i == 0 and tier.min != 0:
            raise LoyaltyError("tiers[0].min", "the first tier starts at 0 (every member has a tier)", "invalid_tiers")
        if tier.min <= previous:
            raise LoyaltyError(f"tiers[{i}].min", "tiers need strictly increasing min", "invalid_tiers")
        previous = tier.min
    reward_keys: set[str] = set()
    for i, reward in enumerate(data.rewards):
        if reward.key in reward_keys:
            raise LoyaltyError(f"rewards[{i}].key", f"reward {reward.key!r} appears twice", "duplicate_reward")
        reward_keys.add(reward.key)
        if reward.offer_key is not None:
            offers_service.get_offer(session, workspace_id, reward.offer_key, path=f"rewards[{i}].offer_key")
    program = session.scalar(select(LoyaltyProgram).where(LoyaltyProgram.workspace_id == workspace_id))
    if program is None:
        program = LoyaltyProgram(workspace_id=workspace_id)
        session.add(program)
    values = data.model_dump(mode="json")
    program.enabled = data.enabled
    program.points_per_unit = data.points_per_unit
    program.expiry_days = data.expiry_days
    program.tier_basis = data.tier_basis
    program.tier_window_days = data.tier_window_days
    program.tiers = values["tiers"]
    program.bonus_events = values["bonus_events"]
    program.rewards = values["rewards"]
    session.flush()
    return program


def _tier_for(program: LoyaltyProgram, value: int) -> dict[str, Any] | None:
    chosen = None
    for tier in program.tiers:
        if value >= int(tier["min"]):
            chosen = tier
    return chosen


# --- ledger primitives --------------------------------------------------------------------------------------------


def _insert(session: Session) -> Any:
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _credit(session: Session, workspace_id: int, contact_id: int, delta: int, now: datetime) -> None:
    """Add ``delta`` (any sign) to the cached balance, creating the row."""
    table = cast(Table, LoyaltyBalance.__table__)
    stmt = _insert(session)(table).values(
        workspace_id=workspace_id, contact_id=contact_id, points=delta, updated_at=now
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["workspace_id", "contact_id"],
        set_={"points": table.c.points + stmt.excluded.points, "updated_at": stmt.excluded.updated_at},
    )
    session.execute(stmt)


def _debit(session: Session, workspace_id: int, contact_id: int, points: int, now: datetime) -> bool:
    """Take ``points`` off the balance only if it has them; False (nothing changed) otherwise."""
    table = cast(Table, LoyaltyBalance.__table__)
    result = session.execute(
        update(table)
        .where(table.c.workspace_id == workspace_id, table.c.contact_id == contact_id, table.c.points >= points)
        .values(points=table.c.points - points, updated_at=now)
    )
    return rowcount(result) == 1


def _by_key(session: Session, workspace_id: int, key: str) -> LoyaltyEntry | None:
    return session.scalar(
        select(LoyaltyEntry).where(LoyaltyEntry.workspace_id == workspace_id, LoyaltyEntry.idempotency_key == key)
    )


def _check_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > 200:
        raise LoyaltyError("idempotency_key", "the idempotency key must be 1 to 200 characters")
    return key


def _require_contact(session: Session, workspace_id: int, contact_id: int) -> None:
    if commerce_repo.contact_exists(session, workspace_id, contact_id) is None:
        raise NotFound("contact_id", f"contact {contact_id} not found")


def _append(
    session: Session,
    workspace_id: int,
    contact_id: int,
    kind: str,
    points: int,
    *,
    key: str,
    now: datetime,
    reason: str = "",
    order_id: int | None = None,
    lot_id: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[LoyaltyEntry, bool]:
    """Write one entry and its balance change together; (entry, True) or the entry already stored under ``key``."""
    existing = _by_key(session, workspace_id, key)
    if existing is not None:
        return existing, False
    entry = LoyaltyEntry(
        workspace_id=workspace_id,
        contact_id=contact_id,
        kind=kind,
        points=points,
        reason=reason[:500],
        order_id=order_id,
        lot_id=lot_id,
        idempotency_key=key,
        expires_at=expires_at,
        occurred_at=now,
    )
    try:
        with session.begin_nested():
            _credit(session, workspace_id, contact_id, points, now)
            session.add(entry)
            session.flush()
    except IntegrityError:
        raced = _by_key(session, workspace_id, key)
        if raced is None:
            raise
        return raced, False
    return entry, True


# --- awarding -----------------------------------------------------------------------------------------------------


def award_points(
    session: Session,
    workspace_id: int,
    contact_id: int,
    *,
    idempotency_key: str,
    points: int | None = None,
    event: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> LoyaltyEntry:
    """Bonus points for a contact: the programme's points for ``event`` (e.g. "review", "referral") or ``points``.
    Idempotent on ``idempotency_key`` (the same key returns the first entry). The tier is re-evaluated."""
    now = now or utcnow()
    key = _check_key(idempotency_key)
    if (points is None) == (event is None):
        raise LoyaltyError("points", "give either points or event", "invalid_award")
    _require_contact(session, workspace_id, contact_id)
    program = get_program(session, workspace_id)
    if event is not None:
        configured = program.bonus_events or {}
        if event not in configured:
            known = ", ".join(sorted(configured)) or "none"
            raise LoyaltyError("event", f"no bonus is configured for {event!r} (configured: {known})", "unknown_event")
        points = int(configured[event])
    assert points is not None
    if points <= 0:
        raise LoyaltyError("points", "points must be positive", "invalid_award")
    expires = now + timedelta(days=program.expiry_days) if program.expiry_days else None
    entry, created = _append(
        session,
        workspace_id,
        contact_id,
        "bonus",
        points,
        key=key,
        now=now,
        reason=reason or (event or ""),
        expires_at=expires,
    )
    if created:
        update_tier(session, workspace_id, contact_id, now=now, program=program)
    return entry


def _order_value_home(session: Session, workspace_id: int, order: Order, home: str) -> int:
    value = order.subtotal_minor - order.discount_minor if order.subtotal_minor > 0 else order.total_minor
    value = max(value, 0)
    if order.currency != home:
        value = rate_book(session, workspace_id).convert(value, order.currency, home, order.placed_at.date())
    return value


def points_for(value_minor: int, currency: str, points_per_unit: Decimal) -> int:
    """Points for ``value_minor`` of ``currency`` at ``points_per_unit`` per major unit, rounded down."""
    return int(
        (Decimal(value_minor).scaleb(-minor_exponent(currency)) * points_per_unit).to_integral_value(ROUND_FLOOR)
    )


def earn_for_order(session: Session, workspace_id: int, order: Order) -> LoyaltyEntry | None:
    """Points for a stored order of a contact (once per order): its value without tax and shipping, in major units
    of the workspace currency, × ``points_per_unit`` × the contact's tier multiplier, rounded down. None when the
    programme is off, the order has no contact, or no exchange rate converts its currency."""
    if order.contact_id is None or order.status == "cancelled":
        return None
    program = get_program(session, workspace_id)
    if not program.enabled:
        return None
    home = workspace_currency(session, workspace_id)
    try:
        value = _order_value_home(session, workspace_id, order, home)
    except DomainError:
        return None
    tier = _current_tier(session, workspace_id, order.contact_id, program)
    multiplier = Decimal(str(tier.get("multiplier", 1))) if tier else Decimal(1)
    points = points_for(value, home, Decimal(program.points_per_unit) * multiplier)
    expires = order.placed_at + timedelta(days=program.expiry_days) if program.expiry_days else None
    entry, created = _append(
        session,
        workspace_id,
        order.contact_id,
        "earn",
        points,
        key=f"order:{order.id}",
        now=order.placed_at,
        reason=f"order {order.external_id}",
        order_id=order.id,
        expires_at=expires,
    )
    if created:
        update_tier(session, workspace_id, order.contact_id, now=max(order.placed_at, utcnow()), program=program)
    return entry


def reverse_for_order(
    session: Session, workspace_id: int, order: Order, *, now: datetime | None = None
) -> LoyaltyEntry | None:
    """Take back the points an order earned in proportion to what was refunded (all of them when it is cancelled
    or fully refunded); called after each refund. Each level of refund is written once."""
    if order.contact_id is None:
        return None
    rows = session.execute(
        select(LoyaltyEntry.kind, func.sum(LoyaltyEntry.points))
        .where(LoyaltyEntry.workspace_id == workspace_id, LoyaltyEntry.order_id == order.id)
        .group_by(LoyaltyEntry.kind)
    ).all()
    sums = {kind: int(total or 0) for kind, total in rows}
    earned = sums.get("earn", 0)
    if earned <= 0:
        return None
    already = -sums.get("reverse", 0)
    if order.status == "cancelled" or order.refunded_minor >= order.total_minor or order.total_minor <= 0:
        target = earned
    else:
        target = earned * order.refunded_minor // order.total_minor
    delta = target - already
    if delta <= 0:
        return None
    now = now or utcnow()
    contact_id = order.contact_id
    entry, created = _append(
        session,
        workspace_id,
        contact_id,
        "reverse",
        -delta,
        key=f"reverse:{order.id}:{target}",
        now=now,
        reason=f"refund of order {order.external_id}",
        order_id=order.id,
    )
    if created:
        update_tier(session, workspace_id, contact_id, now=now)
    return entry


# --- redeeming ----------------------------------------------------------------------------------------------------


def _reward(program: LoyaltyProgram, key: str) -> dict[str, Any]:
    for reward in program.rewards or []:
        if reward["key"] == key:
            return reward
    known = ", ".join(r["key"] for r in program.rewards or []) or "none"
    raise LoyaltyError("reward", f"no reward {key!r} (rewards: {known})", "unknown_reward")


_SPEND_PG = text(
    """
    WITH debited AS (
        UPDATE loyalty_balances SET points = points - :n, updated_at = :now
        WHERE workspace_id = :ws AND contact_id = :contact AND points >= :n
        RETURNING contact_id
    ), entry AS (
        INSERT INTO loyalty_ledger (workspace_id, contact_id, kind, points, reason, idempotency_key, occurred_at)
        SELECT :ws, contact_id, 'redeem', -CAST(:n AS BIGINT), :reason, :key, :now FROM debited
        ON CONFLICT (workspace_id, idempotency_key) DO NOTHING
        RETURNING id
    )
    SELECT (SELECT count(*) FROM debited) AS debited, (SELECT id FROM entry) AS entry_id
    """
)


def _replayed(
    session: Session, workspace_id: int, contact_id: int, key: str
) -> tuple[LoyaltyEntry, Coupon | None] | None:
    """The redemption already stored under ``key`` (a retry), or None; another kind of entry is a conflict."""
    existing = _by_key(session, workspace_id, key)
    if existing is None:
        return None
    if existing.contact_id != contact_id or existing.kind != "redeem":
        raise LoyaltyError("idempotency_key", f"idempotency key {key!r} was used for another entry", "key_reused")
    return existing, (session.get(Coupon, existing.coupon_id) if existing.coupon_id else None)


def _short(
    session: Session, workspace_id: int, contact_id: int, key: str, points: int
) -> tuple[LoyaltyEntry, Coupon | None]:
    """Why a debit changed nothing: a retry of a stored redemption (returned), an unknown contact, or too few points."""
    replay = _replayed(session, workspace_id, contact_id, key)
    if replay is not None:
        return replay
    _require_contact(session, workspace_id, contact_id)
    raise LoyaltyError("points", f"the balance is less than {points} points", "insufficient_points")


def _attached(session: Session, entry_id: int, values: dict[str, Any]) -> LoyaltyEntry:
    """The stored entry as a persistent object, without reading it back."""
    entry = LoyaltyEntry(id=entry_id, order_id=None, lot_id=None, expires_at=None, **values)
    make_transient_to_detached(entry)
    session.add(entry)
    return entry


def _spend_plain(
    session: Session, workspace_id: int, contact_id: int, points: int, key: str, label: str, now: datetime
) -> tuple[LoyaltyEntry, Coupon | None]:
    values: dict[str, Any] = {
        "workspace_id": workspace_id,
        "contact_id": contact_id,
        "kind": "redeem",
        "points": -points,
        "reason": (label or "redemption")[:500],
        "coupon_id": None,
        "idempotency_key": key,
        "occurred_at": now,
    }
    session.flush()
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        # One round trip: debit only if the balance has the points, and store the entry from the debited row.
        row = conn.execute(
            _SPEND_PG,
            {
                "n": points,
                "now": now,
                "ws": workspace_id,
                "contact": contact_id,
                "reason": values["reason"],
                "key": key,
            },
        ).one()
        if row.entry_id is not None:
            return _attached(session, int(row.entry_id), values), None
        if row.debited:
            # the key was stored meanwhile by a retry of the same request: give the points back, answer the first
            _credit(session, workspace_id, contact_id, points, now)
            replay = _replayed(session, workspace_id, contact_id, key)
            assert replay is not None
            return replay
        return _short(session, workspace_id, contact_id, key, points)
    ledger = cast(Table, LoyaltyEntry.__table__)
    try:
        with session.begin_nested():
            if not _debit(session, workspace_id, contact_id, points, now):
                raise _NoDebit
            entry_id = conn.execute(insert(ledger).values(**values).returning(ledger.c.id)).scalar_one()
    except _NoDebit:
        return _short(session, workspace_id, contact_id, key, points)
    except IntegrityError:
        replay = _replayed(session, workspace_id, contact_id, key)
        if replay is None:
            raise
        return replay
    return _attached(session, int(entry_id), values), None


class _NoDebit(Exception):
    """The conditional debit changed nothing (rolls the savepoint back)."""


def redeem_points(
    session: Session,
    workspace_id: int,
    contact_id: int,
    *,
    idempotency_key: str,
    points: int | None = None,
    reward: str | None = None,
    offer_key: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> tuple[LoyaltyEntry, Coupon | None]:
    """Spend points: on a programme ``reward`` (its points; a coupon when it names an offer), on a coupon of
    ``offer_key`` costing ``points``, or plain ``points`` (a reward fulfilled elsewhere).

    Refused with LoyaltyError (path ``points``, code ``insufficient_points``) when the balance is short, even when
    many redemptions race. Idempotent on ``idempotency_key``: a retry returns the first entry and its coupon.
    """
    now = now or utcnow()
    key = _check_key(idempotency_key)
    label = reason
    if reward is not None:
        if offer_key is not None or points is not None:
            raise LoyaltyError("reward", "give a reward alone: its points and offer come from the programme")
        item = _reward(get_program(session, workspace_id), reward)
        points, offer_key, label = int(item["points"]), item.get("offer_key"), reason or str(item["name"])
    if points is None:
        raise LoyaltyError("points", "give the points to spend (or a reward)", "missing_points")
    if points <= 0:
        raise LoyaltyError("points", "points must be positive", "invalid_points")
    if offer_key is None:
        return _spend_plain(session, workspace_id, contact_id, points, key, label, now)
    replay = _replayed(session, workspace_id, contact_id, key)
    if replay is not None:
        return replay
    _require_contact(session, workspace_id, contact_id)
    offers_service.check_issuable(offers_service.get_offer(session, workspace_id, offer_key), now)
    coupon: Coupon | None = None
    try:
        with session.begin_nested():
            if not _debit(session, workspace_id, contact_id, points, now):
                raise LoyaltyError("points", f"the balance is less than {points} points", "insufficient_points")
            coupon = offers_service.issue_coupon(
                session,
                workspace_id,
                offer_key=offer_key,
                contact_id=contact_id,
                idempotency_key=f"loyalty:{key}",
                now=now,
            )
            entry = LoyaltyEntry(
                workspace_id=workspace_id,
                contact_id=contact_id,
                kind="redeem",
                points=-points,
                reason=(label or f"coupon of {offer_key}")[:500],
                coupon_id=coupon.id,
                idempotency_key=key,
                occurred_at=now,
            )
            session.add(entry)
            session.flush()
    except IntegrityError:
        raced = _replayed(session, workspace_id, contact_id, key)
        if raced is None:
            raise
        return raced
    return entry, coupon


# --- reading ------------------------------------------------------------------------------------------------------


@dataclass
class Lot:
    """Points of one positive entry not yet spent or expired (FIFO)."""

    entry_id: int
    remaining: int
    expires_at: datetime | None


def open_lots(entries: Iterable[tuple[int, str, int, int | None, datetime | None]]) -> list[Lot]:
    """The lots still holding points after applying every entry in id order: debits take the oldest points first;
    an ``expire`` entry empties the lot it names."""
    lots: dict[int, Lot] = {}
    queue: deque[Lot] = deque()
    for entry_id, kind, points, lot_id, expires_at in entries:
        if points > 0:
            lot = Lot(entry_id, points, expires_at)
            lots[entry_id] = lot
            queue.append(lot)
        elif kind == "expire" and lot_id in lots:
            lots[lot_id].remaining = max(lots[lot_id].remaining + points, 0)
        else:
            due = -points
            while due > 0 and queue:
                head = queue[0]
                take = min(head.remaining, due)
                head.remaining -= take
                due -= take
                if head.remaining == 0:
                    queue.popleft()
        while queue and queue[0].remaining == 0:
            queue.popleft()
    return [lot for lot in lots.values() if lot.remaining > 0]


def _entries(session: Session, workspace_id: int, contact_id: int) -> list[tuple[int, str, int, int | None, Any]]:
    rows = session.execute(
        select(LoyaltyEntry.id, LoyaltyEntry.kind, LoyaltyEntry.points, LoyaltyEntry.lot_id, LoyaltyEntry.expires_at)
        .where(LoyaltyEntry.workspace_id == workspace_id, LoyaltyEntry.contact_id == contact_id)
        .order_by(LoyaltyEntry.id)
    ).all()
    return [(int(r[0]), str(r[1]), int(r[2]), r[3], r[4]) for r in rows]


def _balance_row(session: Session, workspace_id: int, contact_id: int) -> LoyaltyBalance | None:
    return session.scalar(
        select(LoyaltyBalance)
        .where(LoyaltyBalance.workspace_id == workspace_id, LoyaltyBalance.contact_id == contact_id)
        .execution_options(populate_existing=True)
    )


def balance(session: Session, workspace_id: int, contact_id: int, *, now: datetime | None = None) -> dict[str, Any]:
    """A contact's points, tier (name, perks), the way to the next tier and the points expiring soonest."""
    now = now or utcnow()
    _require_contact(session, workspace_id, contact_id)
    program = get_program(session, workspace_id)
    row = _balance_row(session, workspace_id, contact_id)
    value = tier_values(session, workspace_id, program, now, [contact_id]).get(contact_id, 0)
    tier = next((t for t in program.tiers if row is not None and t["key"] == row.tier), None)
    upcoming = next((t for t in program.tiers if int(t["min"]) > value), None)
    lots = [lot for lot in open_lots(_entries(session, workspace_id, contact_id)) if lot.expires_at is not None]
    first = min((lot.expires_at for lot in lots if lot.expires_at), default=None)
    soon = now + timedelta(days=EXPIRY_NOTICE_DAYS)
    return {
        "contact_id": contact_id,
        "points": int(row.points) if row else 0,
        "tier": row.tier if row else None,
        "tier_name": tier["name"] if tier else None,
        "tier_since": row.tier_since if row else None,
        "perks": list(tier.get("perks", [])) if tier else [],
        "tier_basis": program.tier_basis,
        "tier_value": value,
        "next_tier": upcoming["key"] if upcoming else None,
        "to_next_tier": int(upcoming["min"]) - value if upcoming else None,
        "expiring_points": sum(lot.remaining for lot in lots if lot.expires_at and lot.expires_at <= soon),
        "next_expiry_at": first,
    }


def ledger(
    session: Session, workspace_id: int, contact_id: int, *, cursor: str | None = None, limit: int = 50
) -> tuple[list[LoyaltyEntry], str | None]:
    """A page of a contact's ledger, newest first."""
    _require_contact(session, workspace_id, contact_id)
    q = select(LoyaltyEntry).where(LoyaltyEntry.workspace_id == workspace_id, LoyaltyEntry.contact_id == contact_id)
    if cursor:
        (last_id,) = commerce_repo.decode_cursor(cursor, [int])
        q = q.where(LoyaltyEntry.id < last_id)
    size = max(1, min(limit, commerce_repo.MAX_PAGE))
    rows = list(session.scalars(q.order_by(LoyaltyEntry.id.desc()).limit(size + 1)))
    return rows[:size], (commerce_repo.encode_cursor([rows[size - 1].id]) if len(rows) > size else None)


def tier_stats(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    """The programme's tiers with the number of contacts in each."""
    program = get_program(session, workspace_id)
    counts = dict(
        session.execute(
            select(LoyaltyBalance.tier, func.count())
            .where(LoyaltyBalance.workspace_id == workspace_id)
            .group_by(LoyaltyBalance.tier)
        )
        .tuples()
        .all()
    )
    return [
        {
            "key": t["key"],
            "name": t["name"],
            "min": int(t["min"]),
            "multiplier": Decimal(str(t.get("multiplier", 1))),
            "perks": list(t.get("perks", [])),
            "contacts": int(counts.get(t["key"], 0)),
        }
        for t in program.tiers
    ]


# --- tiers --------------------------------------------------------------------------------------------------------


def tier_values(
    session: Session, workspace_id: int, program: LoyaltyProgram, now: datetime, contact_ids: list[int] | None
) -> dict[int, int]:
    """Per contact, the tier basis over the window: points earned (earn + bonus − reversals) or net spend of paid
    orders in minor units of the workspace currency."""
    since = now - timedelta(days=program.tier_window_days)
    if program.tier_basis == "points":
        q = (
            select(LoyaltyEntry.contact_id, func.sum(LoyaltyEntry.points))
            .where(
                LoyaltyEntry.workspace_id == workspace_id,
                LoyaltyEntry.kind.in_(TIER_KINDS),
                LoyaltyEntry.occurred_at >= since,
            )
            .group_by(LoyaltyEntry.contact_id)
        )
        if contact_ids is not None:
            q = q.where(LoyaltyEntry.contact_id.in_(contact_ids))
        return {int(c): max(int(s or 0), 0) for c, s in session.execute(q)}
    q2 = select(Order.contact_id, Order.placed_at, Order.currency, Order.total_minor, Order.refunded_minor).where(
        Order.workspace_id == workspace_id,
        Order.contact_id.is_not(None),
        Order.status.in_(REVENUE_STATUSES),
        Order.placed_at >= since,
    )
    if contact_ids is not None:
        q2 = q2.where(Order.contact_id.in_(contact_ids))
    rows = session.execute(q2).all()
    home = workspace_currency(session, workspace_id)
    book = rate_book(session, workspace_id) if any(r.currency != home for r in rows) else None
    out: dict[int, int] = defaultdict(int)
    for cid, placed, ccy, total, refunded in rows:
        net = max(int(total) - int(refunded or 0), 0)
        if ccy != home:
            assert book is not None
            try:
                net = book.convert(net, ccy, home, placed.date())
            except DomainError:
                continue
        out[int(cast(int, cid))] += net
    return dict(out)


def _current_tier(
    session: Session, workspace_id: int, contact_id: int, program: LoyaltyProgram
) -> dict[str, Any] | None:
    key = session.scalar(
        select(LoyaltyBalance.tier).where(
            LoyaltyBalance.workspace_id == workspace_id, LoyaltyBalance.contact_id == contact_id
        )
    )
    return next((t for t in program.tiers if t["key"] == key), None)


def _change_tier(
    session: Session,
    workspace_id: int,
    contact_id: int,
    old: str | None,
    new: str,
    value: int,
    program: LoyaltyProgram,
    now: datetime,
) -> None:
    session.execute(
        update(LoyaltyBalance)
        .where(LoyaltyBalance.workspace_id == workspace_id, LoyaltyBalance.contact_id == contact_id)
        .values(tier=new, tier_since=now)
        .execution_options(synchronize_session=False)
    )
    ranks = {t["key"]: i for i, t in enumerate(program.tiers)}
    direction = "up" if old is None or ranks.get(new, 0) > ranks.get(old, -1) else "down"
    events_service.record_event(
        session,
        workspace_id,
        contact_id,
        TIER_EVENT,
        {"from": old, "to": new, "direction": direction, "basis": program.tier_basis, "value": value},
        now,
        message_id=f"loyalty-tier:{contact_id}:{new}:{now.isoformat()}"[:200],
    )


def update_tier(
    session: Session, workspace_id: int, contact_id: int, *, now: datetime, program: LoyaltyProgram | None = None
) -> str | None:
    """Re-evaluate one contact's tier; on a change store it and record a ``loyalty.tier_changed`` event."""
    program = program or get_program(session, workspace_id)
    value = tier_values(session, workspace_id, program, now, [contact_id]).get(contact_id, 0)
    tier = _tier_for(program, value)
    if tier is None:
        return None
    old = session.scalar(
        select(LoyaltyBalance.tier).where(
            LoyaltyBalance.workspace_id == workspace_id, LoyaltyBalance.contact_id == contact_id
        )
    )
    if old != tier["key"]:
        _change_tier(session, workspace_id, contact_id, old, tier["key"], value, program, now)
    return str(tier["key"])


def refresh_tiers(session: Session, workspace_id: int, *, now: datetime | None = None) -> int:
    """Re-evaluate the tier of every member (the window rolls, so tiers can drop); returns how many changed."""
    now = now or utcnow()
    program = get_program(session, workspace_id)
    members = session.execute(
        select(LoyaltyBalance.contact_id, LoyaltyBalance.tier).where(LoyaltyBalance.workspace_id == workspace_id)
    ).all()
    values = tier_values(session, workspace_id, program, now, None)
    changed = 0
    for contact_id, old in members:
        value = values.get(int(contact_id), 0)
        tier = _tier_for(program, value)
        if tier is not None and tier["key"] != old:
            _change_tier(session, workspace_id, int(contact_id), old, tier["key"], value, program, now)
            changed += 1
    session.flush()
    return changed


# --- expiry -------------------------------------------------------------------------------------------------------


def expire_points(session: Session, workspace_id: int, *, now: datetime | None = None) -> tuple[int, int]:
    """Write an ``expire`` entry for every lot past its ``expires_at`` that still holds points (oldest points are
    spent first); returns (entries, points). Each contact's balance row is locked while its ledger is read."""
    now = now or utcnow()
    due = session.scalars(
        select(LoyaltyEntry.contact_id)
        .where(
            LoyaltyEntry.workspace_id == workspace_id,
            LoyaltyEntry.expires_at.is_not(None),
            LoyaltyEntry.expires_at <= now,
            LoyaltyEntry.points > 0,
        )
        .distinct()
    ).all()
    entries = points = 0
    for contact_id in sorted(int(c) for c in due):
        session.execute(
            select(LoyaltyBalance.id)
            .where(LoyaltyBalance.workspace_id == workspace_id, LoyaltyBalance.contact_id == contact_id)
            .with_for_update()
        )
        for lot in open_lots(_entries(session, workspace_id, contact_id)):
            if lot.expires_at is None or lot.expires_at > now:
                continue
            _entry, created = _append(
                session,
                workspace_id,
                contact_id,
                "expire",
                -lot.remaining,
                key=f"expire:{lot.entry_id}",
                now=now,
                reason="points expired",
                lot_id=lot.entry_id,
            )
            if created:
                entries += 1
                points += lot.remaining
    return entries, points


def run_for_workspace(session: Session, workspace_id: int, *, now: datetime | None = None) -> dict[str, int]:
    """The periodic loyalty work of one workspace: expire due points, then re-evaluate tiers."""
    now = now or utcnow()
    entries, points = expire_points(session, workspace_id, now=now)
    changes = refresh_tiers(session, workspace_id, now=now)
    return {"expired_entries": entries, "expired_points": points, "tier_changes": changes}


def enabled_workspaces(session: Session) -> list[int]:
    """Workspaces whose loyalty programme is on."""
    return [
        int(w) for w in session.scalars(select(LoyaltyProgram.workspace_id).where(LoyaltyProgram.enabled.is_(True)))
    ]


def move_contact(
    session: Session, workspace_id: int, keep_id: int, merge_id: int, *, now: datetime | None = None
) -> None:
    """Give the ledger of contact ``merge_id`` to ``keep_id`` (for a contact merge, before the merged contact is
    deleted, which would otherwise delete its points): entries move, balances add up, the tier is re-evaluated."""
    now = now or utcnow()
    table = cast(Table, LoyaltyBalance.__table__)
    moved = session.scalar(
        select(table.c.points).where(table.c.workspace_id == workspace_id, table.c.contact_id == merge_id)
    )
    session.execute(
        update(LoyaltyEntry)
        .where(LoyaltyEntry.workspace_id == workspace_id, LoyaltyEntry.contact_id == merge_id)
        .values(contact_id=keep_id)
        .execution_options(synchronize_session=False)
    )
    if moved is None:
        return
    session.execute(table.delete().where(table.c.workspace_id == workspace_id, table.c.contact_id == merge_id))
    _credit(session, workspace_id, keep_id, int(moved), now)
    update_tier(session, workspace_id, keep_id, now=now)
