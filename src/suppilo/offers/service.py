"""Offer use cases: definitions with value rules, issuing coupons (one, idempotent; or in bulk), redemption.

Services flush, never commit. Double redemption is impossible: a coupon moves from ``issued`` to ``redeemed`` with a
conditional ``UPDATE … WHERE status = 'issued'`` whose row count decides, and ``coupon_redemptions.coupon_id`` is
unique as a second guard. Per-customer limits are serialised per (offer, contact) by a PostgreSQL advisory lock
(SQLite serialises every writer with ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from suppilo.analytics.rates import rate_book, workspace_currency
from suppilo.analytics.service import REVENUE_STATUSES
from suppilo.commerce import repository as commerce_repo
from suppilo.commerce.models import Order
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.db.types import UTCDateTime
from suppilo.engine.rfm import GROUPS as RFM_GROUPS
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.events import service as events_service
from suppilo.offers import codes
from suppilo.offers.models import Coupon, Offer, Redemption
from suppilo.offers.schemas import CouponRead, OfferCreate, OfferUpdate, RedemptionRead

BULK_CHUNK = 5_000
CLV_GROUPS = ("A", "B", "C", "D")
MAX_TIERS = 50
ADVISORY_NAMESPACE = 8241
VALUE_FIELD = {"percent": "percent", "fixed": "amount_minor"}


class OfferError(DomainError):
    """A refused offer operation."""


class CouponRefused(DomainError):
    """A coupon that cannot be redeemed; ``code`` says why (coupon_expired, coupon_used, ...), path ``code``."""


# --- value rules --------------------------------------------------------------------------------------------------


def _int(value: Any, path: str, *, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OfferError(path, "must be a whole number", "invalid_value_rule")
    if not minimum <= value <= maximum:
        raise OfferError(path, f"must be between {minimum} and {maximum}", "invalid_value_rule")
    return value


def _tier_value(item: Any, kind: str, path: str, extra: frozenset[str] = frozenset()) -> dict[str, int]:
    if not isinstance(item, dict):
        raise OfferError(path, "must be an object", "invalid_value_rule")
    field = VALUE_FIELD[kind]
    for name in item:
        if name != field and name not in extra:
            raise OfferError(
                f"{path}.{name}", f"unknown field; a {kind} offer's value is {field!r}", "invalid_value_rule"
            )
    if field not in item:
        raise OfferError(f"{path}.{field}", f"a {kind} offer's tier needs {field!r}", "invalid_value_rule")
    hi = 100 if kind == "percent" else 10**15
    return {field: _int(item[field], f"{path}.{field}", minimum=1, maximum=hi)}


def validate_value_rule(rule: Any, kind: str, path: str = "value_rule") -> dict[str, Any] | None:
    """The rule in its stored form, or OfferError naming the offending field (e.g. ``value_rule.tiers[1].min``).

    ``{"by": "ltv", "tiers": [{"min": <minor units of the workspace currency>, "percent"|"amount_minor": n}, ...]}``
    with strictly increasing ``min``; or ``{"by": "clv_tier", "groups": {"A": {...}, ...}, "default": {...}}``; or
    ``{"by": "rfm_group", "groups": {"champions": {...}, "at_risk": {...}, ...}, "default": {...}}`` (the RFM groups
    the daily RFM run writes onto contacts).
    """
    if rule is None:
        return None
    if not isinstance(rule, dict):
        raise OfferError(path, "must be an object", "invalid_value_rule")
    if kind not in VALUE_FIELD:
        raise OfferError(path, f"a {kind} offer has no value to set per contact", "invalid_value_rule")
    by = rule.get("by")
    if by == "ltv":
        allowed = {"by", "tiers"}
    elif by in ("clv_tier", "rfm_group"):
        allowed = {"by", "groups", "default"}
    else:
        raise OfferError(f"{path}.by", "must be 'ltv', 'clv_tier' or 'rfm_group'", "invalid_value_rule")
    for name in rule:
        if name not in allowed:
            raise OfferError(f"{path}.{name}", "unknown field", "invalid_value_rule")
    if by == "ltv":
        tiers = rule.get("tiers")
        if not isinstance(tiers, list) or not tiers:
            raise OfferError(f"{path}.tiers", "must be a non-empty list", "invalid_value_rule")
        if len(tiers) > MAX_TIERS:
            raise OfferError(f"{path}.tiers", f"at most {MAX_TIERS} tiers", "invalid_value_rule")
        out: list[dict[str, int]] = []
        previous = -1
        for i, tier in enumerate(tiers):
            tpath = f"{path}.tiers[{i}]"
            value = _tier_value(tier, kind, tpath, frozenset({"min"}))
            if "min" not in tier:
                raise OfferError(f"{tpath}.min", "each tier needs 'min' (minor units)", "invalid_value_rule")
            minimum = _int(tier["min"], f"{tpath}.min", minimum=0, maximum=10**15)
            if minimum <= previous:
                raise OfferError(f"{tpath}.min", "tiers must have strictly increasing 'min'", "invalid_value_rule")
            previous = minimum
            out.append({"min": minimum, **value})
        return {"by": "ltv", "tiers": out}
    groups = rule.get("groups")
    known, what = (
        (CLV_GROUPS, "CLV tiers are A, B, C and D")
        if by == "clv_tier"
        else (RFM_GROUPS, "RFM groups are " + ", ".join(RFM_GROUPS))
    )
    if not isinstance(groups, dict) or not groups:
        raise OfferError(f"{path}.groups", f"must be a non-empty object keyed by group ({what})", "invalid_value_rule")
    stored: dict[str, Any] = {"by": by, "groups": {}}
    for name, item in groups.items():
        if name not in known:
            raise OfferError(f"{path}.groups.{name}", what, "invalid_value_rule")
        stored["groups"][name] = _tier_value(item, kind, f"{path}.groups.{name}")
    if "default" in rule:
        stored["default"] = _tier_value(rule["default"], kind, f"{path}.default")
    return stored


def contact_lifetime_value(session: Session, workspace_id: int, contact_id: int) -> int:
    """The contact's paid orders net of refunds, in minor units of the workspace currency (each order converted
    with the workspace's exchange rate of its day, as the analytics reports do)."""
    rows = session.execute(
        select(Order.placed_at, Order.currency, Order.total_minor, Order.refunded_minor).where(
            Order.workspace_id == workspace_id,
            Order.contact_id == contact_id,
            Order.status.in_(REVENUE_STATUSES),
        )
    ).all()
    if not rows:
        return 0
    home = workspace_currency(session, workspace_id)
    if all(r.currency == home for r in rows):
        return sum(max(int(r.total_minor) - int(r.refunded_minor or 0), 0) for r in rows)
    book = rate_book(session, workspace_id)
    return sum(
        book.convert(max(int(r.total_minor) - int(r.refunded_minor or 0), 0), r.currency, home, r.placed_at.date())
        for r in rows
    )


def resolve_value(session: Session, workspace_id: int, offer: Offer, contact_id: int | None) -> dict[str, int | None]:
    """``{"percent", "amount_minor"}`` of a coupon of ``offer`` for this contact (the base value without a rule)."""
    base: dict[str, int | None] = {"percent": offer.percent, "amount_minor": offer.amount_minor}
    rule = offer.value_rule
    if not rule or contact_id is None or offer.kind not in VALUE_FIELD:
        return base
    chosen: dict[str, Any] | None = None
    if rule.get("by") == "ltv":
        ltv = contact_lifetime_value(session, workspace_id, contact_id)
        for tier in rule["tiers"]:
            if ltv >= tier["min"]:
                chosen = tier
    elif rule.get("by") in ("clv_tier", "rfm_group"):
        props = session.scalar(
            select(Contact.properties).where(Contact.workspace_id == workspace_id, Contact.id == contact_id)
        )
        group = (props or {}).get(rule["by"])
        chosen = rule["groups"].get(group) if isinstance(group, str) else None
        if chosen is None:
            chosen = rule.get("default")
    if chosen is None:
        return base
    field = VALUE_FIELD[offer.kind]
    return {**base, field: int(chosen[field])}


# --- offers -------------------------------------------------------------------------------------------------------


def _check_offer(session: Session, workspace_id: int, offer: Offer) -> None:
    """Kind-specific fields, validity and the value rule of the offer as it would be stored."""
    if offer.kind == "percent":
        if offer.percent is None:
            raise OfferError("percent", "a percent offer needs percent (1–100)", "missing_value")
        offer.amount_minor = offer.currency = None
        offer.product_sku = None
        offer.product_id = None
    elif offer.kind == "fixed":
        if offer.amount_minor is None:
            raise OfferError("amount_minor", "a fixed offer needs amount_minor", "missing_value")
        if offer.currency is None:
            raise OfferError("currency", "a fixed offer needs the currency of its amount", "missing_value")
        offer.percent = None
        offer.product_sku = None
        offer.product_id = None
    else:
        if offer.product_sku:
            product = commerce_repo.get_product_by_sku(session, workspace_id, offer.product_sku)
            if product is None:
                raise OfferError("product_sku", f"no product has SKU {offer.product_sku!r}", "unknown_product")
        elif offer.product_id is not None:
            product = commerce_repo.get_product(session, workspace_id, offer.product_id)
            if product is None:
                raise OfferError("product_id", f"product {offer.product_id} not found", "unknown_product")
        else:
            raise OfferError("product_sku", "a free_product offer needs product_sku or product_id", "missing_value")
        offer.product_sku = product.sku
        offer.product_id = product.id
        offer.percent = offer.amount_minor = None
        offer.currency = None
    if offer.min_order_minor is not None and offer.min_order_currency is None:
        offer.min_order_currency = workspace_currency(session, workspace_id)
    if offer.valid_from and offer.valid_until and offer.valid_until <= offer.valid_from:
        raise OfferError("valid_until", "valid_until must be after valid_from", "invalid_validity")
    offer.value_rule = validate_value_rule(offer.value_rule, offer.kind)


def create_offer(session: Session, workspace_id: int, data: OfferCreate) -> Offer:
    """A new offer; its key is unique in the workspace (Conflict on ``key`` otherwise)."""
    if _offer_by_key(session, workspace_id, data.key) is not None:
        raise Conflict("key", f"an offer with key {data.key!r} already exists")
    offer = Offer(workspace_id=workspace_id, **data.model_dump())
    _check_offer(session, workspace_id, offer)
    try:
        with session.begin_nested():
            session.add(offer)
            session.flush()
    except IntegrityError as exc:
        raise Conflict("key", f"an offer with key {data.key!r} already exists") from exc
    return offer


def _offer_by_key(session: Session, workspace_id: int, key: str) -> Offer | None:
    return session.scalar(select(Offer).where(Offer.workspace_id == workspace_id, Offer.key == key))


def get_offer(session: Session, workspace_id: int, key: str, *, path: str = "offer_key") -> Offer:
    """An offer of this workspace by key."""
    offer = _offer_by_key(session, workspace_id, key)
    if offer is None:
        raise NotFound(path, f"offer {key!r} not found")
    return offer


def list_offers(session: Session, workspace_id: int, *, active: bool | None = None) -> list[Offer]:
    """The workspace's offers by key."""
    q = select(Offer).where(Offer.workspace_id == workspace_id).order_by(Offer.key)
    if active is not None:
        q = q.where(Offer.active.is_(active))
    return list(session.scalars(q))


def update_offer(session: Session, workspace_id: int, key: str, data: OfferUpdate) -> Offer:
    """Change the fields sent (coupons already issued keep the value they were issued with)."""
    offer = get_offer(session, workspace_id, key, path="key")
    changes = data.model_dump(exclude_unset=True)
    for required in ("name", "kind", "active", "description"):
        if required in changes and changes[required] is None:
            raise OfferError(required, f"{required} cannot be null")
    if "product_id" in changes and "product_sku" not in changes:
        changes["product_sku"] = None  # the product named by id replaces the one named by SKU
    with session.no_autoflush:
        for name, value in changes.items():
            setattr(offer, name, value)
        _check_offer(session, workspace_id, offer)
    session.flush()
    return offer


def delete_offer(session: Session, workspace_id: int, key: str) -> None:
    """Remove an offer that never issued a coupon (otherwise deactivate it with ``active: false``)."""
    offer = get_offer(session, workspace_id, key, path="key")
    issued = session.scalar(
        select(func.count()).select_from(Coupon).where(Coupon.workspace_id == workspace_id, Coupon.offer_id == offer.id)
    )
    if issued:
        raise Conflict("key", f"offer {key!r} has {issued} coupons: set active to false instead", "offer_in_use")
    session.execute(delete(Offer).where(Offer.workspace_id == workspace_id, Offer.id == offer.id))
    session.flush()


# --- issuing ------------------------------------------------------------------------------------------------------


def check_issuable(offer: Offer, now: datetime) -> None:
    """OfferError (path offer_key) unless the offer is active and has not ended."""
    if not offer.active:
        raise OfferError("offer_key", f"offer {offer.key!r} is not active", "offer_inactive")
    if offer.valid_until is not None and offer.valid_until <= now:
        raise OfferError("offer_key", f"offer {offer.key!r} ended at {offer.valid_until.isoformat()}", "offer_expired")


def _expiry(offer: Offer, now: datetime) -> datetime | None:
    ends = [t for t in (offer.valid_until, now + timedelta(days=offer.valid_days) if offer.valid_days else None) if t]
    return min(ends) if ends else None


def _coupon_by_key(session: Session, workspace_id: int, key: str) -> Coupon | None:
    return session.scalar(select(Coupon).where(Coupon.workspace_id == workspace_id, Coupon.idempotency_key == key))


def _same_request(coupon: Coupon, offer_key: str, offer_id: int | None, contact_id: int | None, key: str) -> Coupon:
    if (offer_id is not None and coupon.offer_id != offer_id) or coupon.contact_id != contact_id:
        raise Conflict(
            "idempotency_key", f"idempotency key {key!r} was already used for another offer or contact", "key_reused"
        )
    return coupon


def issue_coupon(
    session: Session,
    workspace_id: int,
    *,
    offer_key: str,
    contact_id: int | None,
    idempotency_key: str,
    now: datetime | None = None,
) -> Coupon:
    """A new single-use coupon of the offer (for ``contact_id``, or for anyone when None), its value resolved now
    by the offer's value rule and its expiry the offer's end or ``valid_days`` after issue, whichever is first.

    Idempotent on (workspace, ``idempotency_key``): a second call with the same key returns the same coupon, also
    when two calls race. Raises NotFound (offer_key, contact_id), OfferError (offer_inactive, offer_expired) and
    Conflict (key_reused: the key was used for another offer or contact).
    """
    now = now or utcnow()
    key = idempotency_key.strip()
    if not key or len(key) > 200:
        raise OfferError("idempotency_key", "the idempotency key must be 1 to 200 characters")
    existing = _coupon_by_key(session, workspace_id, key)
    offer = get_offer(session, workspace_id, offer_key)
    if existing is not None:
        return _same_request(existing, offer_key, offer.id, contact_id, key)
    check_issuable(offer, now)
    if contact_id is not None and commerce_repo.contact_exists(session, workspace_id, contact_id) is None:
        raise NotFound("contact_id", f"contact {contact_id} not found")
    value = resolve_value(session, workspace_id, offer, contact_id)
    for _attempt in range(5):
        coupon = Coupon(
            workspace_id=workspace_id,
            offer_id=offer.id,
            code=codes.new_code(),
            contact_id=contact_id,
            status="issued",
            kind=offer.kind,
            percent=value["percent"],
            amount_minor=value["amount_minor"],
            currency=offer.currency,
            product_sku=offer.product_sku,
            expires_at=_expiry(offer, now),
            idempotency_key=key,
            issued_at=now,
        )
        try:
            with session.begin_nested():
                session.add(coupon)
                session.flush()
            return coupon
        except IntegrityError:
            raced = _coupon_by_key(session, workspace_id, key)
            if raced is not None:
                return _same_request(raced, offer_key, offer.id, contact_id, key)
            # otherwise the random code collided with another coupon's: draw again
    raise OfferError("code", "could not draw a unique code", "code_collision")


def generate_codes(
    session: Session,
    workspace_id: int,
    *,
    offer_key: str,
    count: int,
    batch: str | None = None,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[str, int]:
    """Store ``count`` new codes of the offer for anyone (base value), in chunks of Core bulk inserts; returns the
    batch label and the number stored. ``progress(n)`` is called after each chunk with the codes stored so far."""
    if count < 1:
        raise OfferError("count", "count must be at least 1")
    now = now or utcnow()
    offer = get_offer(session, workspace_id, offer_key)
    check_issuable(offer, now)
    label = batch or f"{offer.key[:60]}-{now:%Y%m%d}-{uuid.uuid4().hex[:8]}"
    conn = session.connection()
    postgres = conn.dialect.name == "postgresql"
    # One statement per chunk whatever its size: the codes travel as one array (PostgreSQL) or JSON list (SQLite),
    # every other column is the same for the whole batch.
    source, code, cast_open = (
        ("unnest(CAST(:codes AS TEXT[])) AS u(c)", "u.c", True)
        if postgres
        else (
            "json_each(:codes) AS u WHERE true",
            "u.value",
            False,
        )
    )

    def typed(name: str, sql_type: str) -> str:
        return f"CAST(:{name} AS {sql_type})" if cast_open else f":{name}"

    stmt = text(
        "INSERT INTO coupons (workspace_id, offer_id, code, contact_id, status, kind, percent, amount_minor, "
        "currency, product_sku, expires_at, idempotency_key, batch, issued_at) "
        f"SELECT :ws, :offer, {code}, NULL, 'issued', :kind, {typed('percent', 'INTEGER')}, "
        f"{typed('amount', 'BIGINT')}, {typed('currency', 'VARCHAR')}, {typed('sku', 'VARCHAR')}, "
        f"{typed('expires', 'TIMESTAMPTZ')}, NULL, :batch, {typed('issued', 'TIMESTAMPTZ')} FROM {source} "
        "ON CONFLICT (workspace_id, code) DO NOTHING RETURNING id"
    ).bindparams(bindparam("expires", type_=UTCDateTime()), bindparam("issued", type_=UTCDateTime()))
    params: dict[str, Any] = {
        "ws": workspace_id,
        "offer": offer.id,
        "kind": offer.kind,
        "percent": offer.percent,
        "amount": offer.amount_minor,
        "currency": offer.currency,
        "sku": offer.product_sku,
        "expires": _expiry(offer, now),
        "batch": label,
        "issued": now,
    }
    done = 0
    while done < count:
        fresh = sorted(set(codes.new_codes(min(BULK_CHUNK, count - done))))
        # a code that collided with an existing one is skipped by ON CONFLICT DO NOTHING: the loop draws more
        done += len(conn.execute(stmt, {**params, "codes": fresh if postgres else json.dumps(fresh)}).all())
        if progress is not None:
            progress(done)
    session.flush()
    return label, done


# --- reading ------------------------------------------------------------------------------------------------------


def get_coupon(session: Session, workspace_id: int, code: str) -> Coupon:
    """A coupon of this workspace by code (as typed: case and dashes do not matter)."""
    coupon = session.scalar(
        select(Coupon).where(Coupon.workspace_id == workspace_id, Coupon.code == codes.normalize(code))
    )
    if coupon is None:
        raise NotFound("code", "no such coupon", "coupon_unknown")
    return coupon


def list_coupons(
    session: Session,
    workspace_id: int,
    *,
    offer_key: str | None = None,
    contact_id: int | None = None,
    status: str | None = None,
    batch: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Coupon], str | None]:
    """A page of coupons, newest first."""
    q = select(Coupon).where(Coupon.workspace_id == workspace_id)
    if offer_key is not None:
        q = q.where(Coupon.offer_id == get_offer(session, workspace_id, offer_key).id)
    if contact_id is not None:
        q = q.where(Coupon.contact_id == contact_id)
    if status is not None:
        q = q.where(Coupon.status == status)
    if batch is not None:
        q = q.where(Coupon.batch == batch)
    if cursor:
        (last_id,) = commerce_repo.decode_cursor(cursor, [int])
        q = q.where(Coupon.id < last_id)
    size = max(1, min(limit, commerce_repo.MAX_PAGE))
    rows = list(session.scalars(q.order_by(Coupon.id.desc()).limit(size + 1)))
    next_cursor = commerce_repo.encode_cursor([rows[size - 1].id]) if len(rows) > size else None
    return rows[:size], next_cursor


def offer_keys(session: Session, workspace_id: int, offer_ids: set[int]) -> dict[int, str]:
    """Offer keys by id."""
    if not offer_ids:
        return {}
    rows = session.execute(
        select(Offer.id, Offer.key).where(Offer.workspace_id == workspace_id, Offer.id.in_(sorted(offer_ids)))
    )
    return {int(i): str(k) for i, k in rows}


def coupon_reads(session: Session, workspace_id: int, coupons: list[Coupon]) -> list[CouponRead]:
    """Coupons as the API shows them."""
    keys = offer_keys(session, workspace_id, {c.offer_id for c in coupons})
    return [
        CouponRead.model_validate(
            {
                **{k: getattr(c, k) for k in CouponRead.model_fields if k not in ("display", "offer_key")},
                "display": codes.display(c.code),
                "offer_key": keys.get(c.offer_id, ""),
            }
        )
        for c in coupons
    ]


def redemption_read(session: Session, workspace_id: int, redemption: Redemption) -> RedemptionRead:
    """A redemption with its coupon's code."""
    code = session.scalar(
        select(Coupon.code).where(Coupon.workspace_id == workspace_id, Coupon.id == redemption.coupon_id)
    )
    data = {k: getattr(redemption, k) for k in RedemptionRead.model_fields if k != "code"}
    return RedemptionRead.model_validate({**data, "code": code or ""})


def void_coupon(session: Session, workspace_id: int, code: str) -> Coupon:
    """Withdraw an unused coupon so it can no longer be redeemed."""
    coupon = get_coupon(session, workspace_id, code)
    result = session.execute(
        update(Coupon)
        .where(Coupon.workspace_id == workspace_id, Coupon.id == coupon.id, Coupon.status == "issued")
        .values(status="void")
        .execution_options(synchronize_session=False)
    )
    if rowcount(result) != 1:
        session.refresh(coupon)
        raise CouponRefused("code", f"the coupon is {coupon.status} and cannot be voided", f"coupon_{coupon.status}")
    session.refresh(coupon)
    return coupon


# --- redemption ---------------------------------------------------------------------------------------------------


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _discount(
    session: Session,
    workspace_id: int,
    claim: Any,
    total: int | None,
    currency: str | None,
    now: datetime,
) -> int | None:
    if claim.kind == "percent" and claim.percent is not None and total is not None:
        return _round(Decimal(total) * claim.percent / 100)
    if claim.kind == "fixed" and claim.amount_minor is not None and claim.currency is not None:
        if total is None or currency is None:
            return int(claim.amount_minor)
        amount = int(claim.amount_minor)
        if currency != claim.currency:
            amount = rate_book(session, workspace_id).convert(amount, claim.currency, currency, now.date())
        return min(amount, total)
    if claim.kind == "free_product" and claim.product_sku and total is not None and currency is not None:
        product = commerce_repo.get_product_by_sku(session, workspace_id, claim.product_sku)
        if product is None:
            return None
        price = product.price_minor
        if product.currency != currency:
            price = rate_book(session, workspace_id).convert(price, product.currency, currency, now.date())
        return min(price, total)
    return None


_COUPONS = cast(Table, Coupon.__table__)
_REDEMPTIONS = cast(Table, Redemption.__table__)
_OFFERS = cast(Table, Offer.__table__)
# The redemption path runs under heavy concurrency: its statements are built once, with bound parameters.
_LOOKUP = (
    select(
        _COUPONS.c.id,
        _COUPONS.c.status,
        _COUPONS.c.contact_id,
        _COUPONS.c.expires_at,
        _COUPONS.c.kind,
        _COUPONS.c.percent,
        _COUPONS.c.amount_minor,
        _COUPONS.c.currency,
        _COUPONS.c.product_sku,
        _COUPONS.c.offer_id,
        _OFFERS.c.key.label("offer_key"),
        _OFFERS.c.valid_from,
        _OFFERS.c.min_order_minor,
        _OFFERS.c.min_order_currency,
        _OFFERS.c.per_customer_limit,
    )
    .join(_OFFERS, _OFFERS.c.id == _COUPONS.c.offer_id)
    .where(
        _COUPONS.c.workspace_id == bindparam("ws"),
        _COUPONS.c.code == bindparam("code"),
        _OFFERS.c.workspace_id == bindparam("ws"),
    )
)
_CLAIM = (
    update(_COUPONS)
    .where(
        _COUPONS.c.workspace_id == bindparam("ws"),
        _COUPONS.c.id == bindparam("coupon"),
        _COUPONS.c.status == "issued",
    )
    .values(status="redeemed", redeemed_at=bindparam("now"))
)
_FIELDS = (
    "workspace_id",
    "offer_id",
    "contact_id",
    "order_id",
    "order_total_minor",
    "currency",
    "discount_minor",
    "redeemed_at",
)
_CLAIMED = _CLAIM.returning(_COUPONS.c.id).cte("claimed")
# PostgreSQL: claim the coupon and store its redemption in one statement (a writable CTE); no row, no redemption.
_CLAIM_AND_STORE = (
    insert(_REDEMPTIONS)
    .from_select(
        [*_FIELDS, "coupon_id"],
        select(
            *(bindparam(f"r_{n}", type_=_REDEMPTIONS.c[n].type).label(n) for n in _FIELDS),
            _CLAIMED.c.id.label("coupon_id"),
        ),
    )
    .returning(_REDEMPTIONS.c.id)
)
_STORE = insert(_REDEMPTIONS).returning(_REDEMPTIONS.c.id)


def _claim(session: Session, workspace_id: int, coupon_id: int, values: dict[str, Any]) -> int | None:
    """Mark the coupon redeemed only if it is still ``issued`` and store its redemption; the new redemption's id,
    or None when another transaction redeemed it first."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        params = {"ws": workspace_id, "coupon": coupon_id, "now": values["redeemed_at"]}
        params.update({f"r_{n}": values[n] for n in _FIELDS})
        return cast(int | None, conn.execute(_CLAIM_AND_STORE, params).scalar())
    claimed = conn.execute(_CLAIM, {"ws": workspace_id, "coupon": coupon_id, "now": values["redeemed_at"]})
    if claimed.rowcount != 1:
        return None
    return cast(int, conn.execute(_STORE, values).scalar_one())


def redeem(
    session: Session,
    workspace_id: int,
    code: str,
    *,
    contact_id: int | None,
    order_id: int | None = None,
    order_total_minor: int | None = None,
    currency: str | None = None,
    now: datetime | None = None,
) -> Redemption:
    """Redeem a coupon once, for ``contact_id``, optionally against an order (its total, before the discount, in
    ``currency``: checked against the offer's minimum and used for ``discount_minor``).

    Refused with CouponRefused (path ``code``): bad_checksum (a typo, caught before any lookup), coupon_unknown,
    coupon_void, coupon_used, coupon_expired, coupon_not_yet_valid, coupon_foreign (issued to another contact),
    minimum_not_met, limit_reached (the offer's per-customer limit). Safe under concurrency on both databases: the
    coupon is claimed by a conditional ``UPDATE … WHERE status = 'issued'``, never by reading then writing.
    """
    now = now or utcnow()
    normal = codes.normalize(code)
    if not codes.is_valid(normal):
        raise CouponRefused("code", "this is not a valid coupon code (check for typos)", "bad_checksum")
    row = session.connection().execute(_LOOKUP, {"ws": workspace_id, "code": normal}).first()
    if row is None:
        raise CouponRefused("code", "no coupon has this code", "coupon_unknown")
    if row.status == "void":
        raise CouponRefused("code", "this coupon was withdrawn", "coupon_void")
    if row.status == "redeemed":
        raise CouponRefused("code", "this coupon was already used", "coupon_used")
    if row.expires_at is not None and row.expires_at <= now:
        raise CouponRefused("code", f"this coupon expired at {row.expires_at.isoformat()}", "coupon_expired")
    if row.valid_from is not None and row.valid_from > now:
        raise CouponRefused("code", f"this coupon is valid from {row.valid_from.isoformat()}", "coupon_not_yet_valid")
    if row.contact_id is not None and row.contact_id != contact_id:
        raise CouponRefused("code", "this coupon belongs to another customer", "coupon_foreign")
    if order_total_minor is not None and currency is None:
        raise DomainError("currency", "give the currency of order_total_minor")
    if row.min_order_minor is not None:
        if order_total_minor is None or currency is None:
            raise CouponRefused(
                "code",
                f"this offer needs an order of at least {row.min_order_minor} {row.min_order_currency}",
                "minimum_not_met",
            )
        min_ccy = row.min_order_currency or currency
        in_min_ccy = (
            order_total_minor
            if currency == min_ccy
            else rate_book(session, workspace_id).convert(order_total_minor, currency, min_ccy, now.date())
        )
        if in_min_ccy < row.min_order_minor:
            raise CouponRefused(
                "code", f"the order is below this offer's minimum of {row.min_order_minor} {min_ccy}", "minimum_not_met"
            )
    if order_id is not None and commerce_repo.get_order(session, workspace_id, order_id) is None:
        raise NotFound("order_id", f"order {order_id} not found")
    if row.per_customer_limit is not None and contact_id is not None:
        if session.get_bind().dialect.name == "postgresql":
            lock_key = zlib.crc32(f"{row.offer_id}:{contact_id}".encode()) & 0x7FFFFFFF
            session.execute(text("SELECT pg_advisory_xact_lock(:ns, :k)"), {"ns": ADVISORY_NAMESPACE, "k": lock_key})
        used = session.scalar(
            select(func.count())
            .select_from(Redemption)
            .where(
                Redemption.workspace_id == workspace_id,
                Redemption.offer_id == row.offer_id,
                Redemption.contact_id == contact_id,
            )
        )
        if (used or 0) >= row.per_customer_limit:
            raise CouponRefused(
                "code",
                f"this customer has used this offer {used} times (limit {row.per_customer_limit})",
                "limit_reached",
            )
    discount = _discount(session, workspace_id, row, order_total_minor, currency, now)
    values: dict[str, Any] = {
        "workspace_id": workspace_id,
        "coupon_id": row.id,
        "offer_id": row.offer_id,
        "contact_id": contact_id,
        "order_id": order_id,
        "order_total_minor": order_total_minor,
        "currency": currency if order_total_minor is not None else row.currency,
        "discount_minor": discount,
        "redeemed_at": now,
    }
    session.flush()
    redemption_id = _claim(session, workspace_id, int(row.id), values)
    if redemption_id is None:
        raise CouponRefused("code", "this coupon was already used", "coupon_used")
    # The row is stored: attach it to the session as a persistent object without another round trip.
    redemption = Redemption(id=redemption_id, **values)
    make_transient_to_detached(redemption)
    session.add(redemption)
    if contact_id is not None:
        events_service.record_event(
            session,
            workspace_id,
            contact_id,
            "Coupon Redeemed",
            {
                "coupon": normal,
                "offer": row.offer_key,
                "order_id": order_id,
                "discount_minor": discount,
                "currency": values["currency"],
            },
            now,
            message_id=f"coupon-redeemed:{row.id}",
        )
    return redemption


def redemption_of_coupon(session: Session, workspace_id: int, coupon_id: int) -> Redemption | None:
    """The redemption of a coupon, if any."""
    return session.scalar(
        select(Redemption).where(Redemption.workspace_id == workspace_id, Redemption.coupon_id == coupon_id)
    )


def redeem_order_coupon(session: Session, workspace_id: int, order: Order) -> Redemption | None:
    """Redeem the coupon code an order carries (called by commerce when an order is stored).

    Never refuses the order: a code that cannot be redeemed (typo, unknown, used, expired, someone else's, a shop's
    own code) is recorded as a 'Coupon Refused' event on the contact with the reason, and None is returned. An
    order whose coupon was already redeemed for it is left as it is.
    """
    if not order.coupon_code:
        return None
    done = session.scalar(
        select(Redemption).where(Redemption.workspace_id == workspace_id, Redemption.order_id == order.id)
    )
    if done is not None:
        return done
    basis = order.subtotal_minor if order.subtotal_minor > 0 else order.total_minor
    try:
        with session.begin_nested():
            return redeem(
                session,
                workspace_id,
                order.coupon_code,
                contact_id=order.contact_id,
                order_id=order.id,
                order_total_minor=basis,
                currency=order.currency,
                now=order.placed_at,
            )
    except DomainError as exc:
        events_service.record_event(
            session,
            workspace_id,
            order.contact_id,
            "Coupon Refused",
            {"coupon": order.coupon_code, "order_id": order.external_id, "reason": exc.code, "message": exc.message},
            order.placed_at,
            message_id=f"coupon-refused:{order.id}:{order.coupon_code}"[:200],
        )
        return None


def move_contact(session: Session, workspace_id: int, keep_id: int, merge_id: int) -> None:
    """Give the coupons and redemptions of contact ``merge_id`` to ``keep_id`` (for a contact merge, before the
    merged contact is deleted: otherwise its personal coupons would become codes for anyone)."""
    for table in (_COUPONS, _REDEMPTIONS):
        session.execute(
            update(table)
            .where(table.c.workspace_id == workspace_id, table.c.contact_id == merge_id)
            .values(contact_id=keep_id)
        )
