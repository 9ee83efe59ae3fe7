"""Pydantic shapes of the loyalty programme, balances, ledger entries and requests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from suppilo.commerce.schemas import Text
from suppilo.offers.schemas import CouponRead

Key = Annotated[str, Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class TierIn(BaseModel):
    """A tier: reached when the basis value (points or spend in the window) is at least ``min``."""

    model_config = ConfigDict(extra="forbid")

    key: Key
    name: Text = Field(min_length=1, max_length=100)
    min: int = Field(ge=0, le=10**15)
    multiplier: Decimal = Field(default=Decimal(1), ge=1, le=10, description="earning multiplier of the tier")
    perks: list[Annotated[str, Field(max_length=300)]] = Field(default_factory=list, max_length=50)


class RewardIn(BaseModel):
    """Something points buy; with ``offer_key`` the redemption issues a coupon of that offer."""

    model_config = ConfigDict(extra="forbid")

    key: Key
    name: Text = Field(min_length=1, max_length=200)
    points: int = Field(ge=1, le=10**12)
    offer_key: str | None = Field(default=None, min_length=1, max_length=100)


DEFAULT_TIERS = [
    TierIn(key="member", name="Member", min=0),
    TierIn(key="silver", name="Silver", min=1000, multiplier=Decimal("1.25")),
    TierIn(key="gold", name="Gold", min=5000, multiplier=Decimal("1.5")),
]


class ProgramIn(BaseModel):
    """The programme. ``points_per_unit``: points per major unit of the workspace currency of an order's value
    (subtotal − discount, converted at the order's day); ``tier_basis``: earned points or net spend (minor units of
    the workspace currency) over the last ``tier_window_days``; ``expiry_days``: earned points expire that long
    after they were earned (None: never)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    points_per_unit: Decimal = Field(default=Decimal(1), ge=0, le=100_000, decimal_places=4)
    expiry_days: int | None = Field(default=None, ge=1, le=36_500)
    tier_basis: Literal["points", "spend"] = "points"
    tier_window_days: int = Field(default=365, ge=1, le=36_500)
    tiers: list[TierIn] = Field(default_factory=lambda: list(DEFAULT_TIERS), min_length=1, max_length=20)
    bonus_events: dict[Annotated[str, Field(min_length=1, max_length=100)], Annotated[int, Field(ge=1, le=10**9)]] = (
        Field(default_factory=lambda: {"review": 50, "referral": 500}, max_length=100)
    )
    rewards: list[RewardIn] = Field(default_factory=list, max_length=200)


class ProgramRead(ProgramIn):
    """The programme as stored (``enabled`` false until one is saved)."""

    model_config = ConfigDict(extra="ignore", from_attributes=True)


class AwardIn(BaseModel):
    """Bonus points: a configured ``event`` (e.g. "review") or an explicit number of ``points``."""

    model_config = ConfigDict(extra="forbid")

    points: int | None = Field(default=None, ge=1, le=10**12)
    event: str | None = Field(default=None, min_length=1, max_length=100)
    reason: str = Field(default="", max_length=500)
    idempotency_key: Text = Field(min_length=1, max_length=200)


class RedeemPointsIn(BaseModel):
    """Spend points: on a configured ``reward``, on a coupon of ``offer_key`` for ``points``, or plain ``points``."""

    model_config = ConfigDict(extra="forbid")

    reward: str | None = Field(default=None, min_length=1, max_length=50)
    offer_key: str | None = Field(default=None, min_length=1, max_length=100)
    points: int | None = Field(default=None, ge=1, le=10**12)
    reason: str = Field(default="", max_length=500)
    idempotency_key: Text = Field(min_length=1, max_length=200)


class EntryRead(BaseModel):
    """A ledger entry."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    contact_id: int
    kind: str
    points: int
    reason: str
    order_id: int | None
    coupon_id: int | None
    lot_id: int | None
    idempotency_key: str | None
    expires_at: datetime | None
    occurred_at: datetime


class EntryPage(BaseModel):
    """A page of ledger entries, newest first."""

    items: list[EntryRead]
    next_cursor: str | None


class RedeemPointsOut(BaseModel):
    """The redemption entry, and the coupon it bought (if any)."""

    entry: EntryRead
    coupon: CouponRead | None


class BalanceRead(BaseModel):
    """A contact's points, tier and the way to the next one."""

    contact_id: int
    points: int
    tier: str | None
    tier_name: str | None
    tier_since: datetime | None
    perks: list[str]
    tier_basis: str
    tier_value: int
    next_tier: str | None
    to_next_tier: int | None
    expiring_points: int
    next_expiry_at: datetime | None


class TierStat(BaseModel):
    """A tier and how many contacts are in it."""

    key: str
    name: str
    min: int
    multiplier: Decimal
    perks: list[str]
    contacts: int


class ExpiryResult(BaseModel):
    """What a run of the loyalty job did."""

    expired_entries: int
    expired_points: int
    tier_changes: int
