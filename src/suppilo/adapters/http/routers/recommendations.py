"""HTTP routes: recommendations — products for a product, products for a contact, recompute, status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession
from suppilo.recommendations import service
from suppilo.recommendations.schemas import (
    ProductRecommendation,
    RecommendationStatus,
    RecommendedProduct,
    RecomputeResult,
)

router = APIRouter(prefix="/api/v1", tags=["recommendations"])

Limit = Annotated[int, Query(ge=1, le=50)]


@router.get("/products/{product_id}/recommendations", response_model=list[ProductRecommendation])
def for_product(
    product_id: int, principal: Reader, session: ReadSession, limit: Limit = 10
) -> list[ProductRecommendation]:
    """Often bought together with the product (support, confidence, lift), then bought by the same customers."""
    rows = service.for_product(session, principal.workspace_id, product_id, limit=limit)
    return [ProductRecommendation.model_validate(r) for r in rows]


@router.get("/contacts/{contact_id}/recommendations", response_model=list[RecommendedProduct])
def for_contact(contact_id: int, principal: Reader, session: ReadSession, limit: Limit = 4) -> list[RecommendedProduct]:
    """Products for the contact, with the reason: bought together with their latest order, similar customers,
    best-sellers in their categories, best-sellers; never one they already bought or an inactive one."""
    rows = service.for_contact(session, principal.workspace_id, contact_id, limit=limit)
    return [RecommendedProduct.model_validate(r) for r in rows]


@router.post("/recommendations/recompute", response_model=RecomputeResult)
def recompute(principal: Admin, session: DbSession) -> RecomputeResult:
    """Recompute the workspace's recommendations from its orders now (the hourly job does it when due)."""
    return RecomputeResult.model_validate(service.recompute(session, principal.workspace_id))


@router.get("/recommendations/status", response_model=RecommendationStatus)
def status(principal: Reader, session: ReadSession) -> RecommendationStatus:
    """When the recommendations were last computed and what they hold."""
    run = service.get_run(session, principal.workspace_id)
    return RecommendationStatus() if run is None else RecommendationStatus.model_validate(service.run_summary(run))
