"""Pydantic shapes of recommended products and of a recomputation. Money is integer minor units plus ISO 4217."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

Reason = Literal["bought_together", "similar_customers", "best_seller_in_category", "best_seller"]


class RecommendedProduct(BaseModel):
    """A product to suggest, with why: the fields email templates read under ``recommendations``."""

    product_id: int
    name: str
    url: str | None
    image_url: str | None
    price_minor: int
    currency: str
    sku: str
    category: str | None
    reason: Reason


class ProductRecommendation(RecommendedProduct):
    """A product to show with another one, with the measures of the pair.

    ``together``: support, confidence and lift of the association rule, ``orders_together`` the orders holding both.
    ``similar``: ``score`` is the cosine similarity over customers, ``customers_in_common`` bought both.
    """

    kind: Literal["together", "similar"]
    score: float
    support: float
    confidence: float
    lift: float
    orders_together: int | None = None
    customers_in_common: int | None = None


class RecomputeResult(BaseModel):
    """What one recomputation read and stored."""

    computed_at: datetime
    lines: int
    orders: int
    customers: int
    together_rules: int
    similar_pairs: int
    best_sellers: int
    duration_ms: int


class RecommendationStatus(BaseModel):
    """The last computation of the workspace (``computed_at`` null: never computed; run recompute or wait for the
    hourly job)."""

    computed_at: datetime | None = None
    lines: int = 0
    orders: int = 0
    customers: int = 0
    together_rules: int = 0
    similar_pairs: int = 0
    best_sellers: int = 0
    duration_ms: int = 0
