"""Proposals on deals: catalogue lines, a discount, totals computed here in minor units of one currency; accepting a
proposal sets the deal's amount to its total."""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from suppilo.commerce import service as commerce_service
from suppilo.commerce.models import Product
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.deals.models import Activity, Proposal, ProposalLine
from suppilo.deals.schemas import ProposalCreate, ProposalLineIn, ProposalLineRead, ProposalRead, ProposalUpdate
from suppilo.deals.service import DealError, _claim_version, get_deal
from suppilo.errors import NotFound


def _product(session: Session, workspace_id: int, line: ProposalLineIn, path: str) -> Product:
    if line.product_id is not None:
        return commerce_service.get_product(session, workspace_id, line.product_id)
    if not line.sku:
        raise DealError(f"{path}.product_id", "give a product_id or a sku from the catalogue")
    product = session.scalar(select(Product).where(Product.workspace_id == workspace_id, Product.sku == line.sku))
    if product is None:
        raise NotFound(f"{path}.sku", f"no product with sku {line.sku!r}")
    return product


def _build_lines(
    session: Session, workspace_id: int, currency: str, lines: list[ProposalLineIn]
) -> list[tuple[Product, str, int, int]]:
    built = []
    for i, line in enumerate(lines):
        path = f"lines[{i}]"
        try:
            product = _product(session, workspace_id, line, path)
        except NotFound as exc:
            if line.product_id is not None:
                raise NotFound(f"{path}.product_id", exc.message) from exc
            raise
        price = line.unit_price_minor
        if price is None:
            if product.currency != currency:
                raise DealError(
                    f"{path}.unit_price_minor",
                    f"product {product.sku!r} is priced in {product.currency}, the proposal in {currency}: "
                    "give unit_price_minor in the proposal's currency",
                    code="currency_mismatch",
                )
            price = product.price_minor
        built.append((product, line.name or product.name, line.quantity, price))
    return built


def _totals(proposal: Proposal, line_totals: list[int]) -> None:
    subtotal = sum(line_totals)
    if proposal.discount_bp is not None:
        discount = int((Decimal(subtotal) * proposal.discount_bp / 10_000).quantize(Decimal(1), ROUND_HALF_UP))
    else:
        discount = proposal.discount_fixed_minor or 0
    if discount > subtotal:
        raise DealError("discount_minor", f"the discount {discount} exceeds the subtotal {subtotal}")
    proposal.subtotal_minor = subtotal
    proposal.discount_minor = discount
    proposal.total_minor = subtotal - discount


def _replace_lines(session: Session, proposal: Proposal, lines: list[ProposalLineIn]) -> None:
    built = _build_lines(session, proposal.workspace_id, proposal.currency, lines)
    session.execute(
        delete(ProposalLine).where(
            ProposalLine.workspace_id == proposal.workspace_id, ProposalLine.proposal_id == proposal.id
        )
    )
    totals = []
    for pos, (product, name, qty, price) in enumerate(built):
        total = qty * price
        totals.append(total)
        session.add(
            ProposalLine(
                workspace_id=proposal.workspace_id,
                proposal_id=proposal.id,
                position=pos,
                product_id=product.id,
                name=name,
                quantity=qty,
                unit_price_minor=price,
                line_total_minor=total,
            )
        )
    _totals(proposal, totals)


def _check_discount(discount_bp: int | None, discount_minor: int | None) -> None:
    if discount_bp is not None and discount_minor is not None:
        raise DealError("discount_minor", "give discount_bp or discount_minor, not both")


def create_proposal(session: Session, workspace_id: int, deal_id: int, data: ProposalCreate) -> Proposal:
    """A draft proposal on a deal; refused: validity not in the future, a line priced in another currency."""
    deal = get_deal(session, workspace_id, deal_id)
    if data.valid_until <= utcnow().date():
        raise DealError("valid_until", "a proposal must be valid until a day in the future", code="validity_past")
    _check_discount(data.discount_bp, data.discount_minor)
    currency = data.currency or deal.currency
    if not currency:
        raise DealError("currency", "the deal has no currency: give the proposal's currency")
    proposal = Proposal(
        workspace_id=workspace_id,
        deal_id=deal.id,
        title=data.title,
        currency=currency,
        valid_until=data.valid_until,
        discount_bp=data.discount_bp,
        discount_fixed_minor=data.discount_minor,
        status="draft",
    )
    session.add(proposal)
    session.flush()
    _replace_lines(session, proposal, data.lines)
    session.flush()
    return proposal


def get_proposal(session: Session, workspace_id: int, proposal_id: int) -> Proposal:
    """A proposal of this workspace; NotFound otherwise."""
    proposal = session.scalar(select(Proposal).where(Proposal.workspace_id == workspace_id, Proposal.id == proposal_id))
    if proposal is None:
        raise NotFound("proposal_id", f"proposal {proposal_id} not found")
    return proposal


def list_proposals(session: Session, workspace_id: int, deal_id: int) -> list[Proposal]:
    """The proposals of a deal, oldest first."""
    get_deal(session, workspace_id, deal_id)
    return list(
        session.scalars(
            select(Proposal)
            .where(Proposal.workspace_id == workspace_id, Proposal.deal_id == deal_id)
            .order_by(Proposal.id)
        )
    )


def _open(proposal: Proposal) -> None:
    if proposal.status in ("accepted", "rejected"):
        raise DealError("status", f"the proposal is {proposal.status}", code="proposal_closed")


def update_proposal(session: Session, workspace_id: int, proposal_id: int, data: ProposalUpdate) -> Proposal:
    """Change an open proposal; totals are recomputed."""
    proposal = get_proposal(session, workspace_id, proposal_id)
    _open(proposal)
    fields = data.model_dump(exclude_unset=True)
    if fields.get("valid_until") is not None and data.valid_until is not None and data.valid_until <= utcnow().date():
        raise DealError("valid_until", "a proposal must be valid until a day in the future", code="validity_past")
    _check_discount(data.discount_bp, data.discount_minor)
    if data.title is not None:
        proposal.title = data.title
    if data.valid_until is not None:
        proposal.valid_until = data.valid_until
    if data.status is not None:
        proposal.status = data.status
    if "discount_bp" in fields or "discount_minor" in fields:
        proposal.discount_bp = data.discount_bp
        proposal.discount_fixed_minor = data.discount_minor
    if data.lines is not None:
        _replace_lines(session, proposal, data.lines)
    else:
        _totals(proposal, [line.line_total_minor for line in proposal_lines(session, proposal)])
    session.flush()
    return proposal


def accept_proposal(session: Session, workspace_id: int, proposal_id: int) -> Proposal:
    """Accept an open, still valid proposal: the deal's amount and currency become its total (new deal version)."""
    proposal = get_proposal(session, workspace_id, proposal_id)
    _open(proposal)
    if proposal.status == "expired" or proposal.valid_until < utcnow().date():
        raise DealError("valid_until", "the proposal has expired", code="proposal_expired")
    deal = get_deal(session, workspace_id, proposal.deal_id, lock=True)
    if deal.status == "won":
        raise DealError("deal_id", "a won deal's amount is recorded in its order", code="deal_closed")
    _claim_version(session, deal, None)
    deal.amount_minor = proposal.total_minor
    deal.currency = proposal.currency
    proposal.status = "accepted"
    session.flush()
    return proposal


def reject_proposal(session: Session, workspace_id: int, proposal_id: int) -> Proposal:
    """Reject an open proposal."""
    proposal = get_proposal(session, workspace_id, proposal_id)
    _open(proposal)
    proposal.status = "rejected"
    session.flush()
    return proposal


def proposal_lines(session: Session, proposal: Proposal) -> list[ProposalLine]:
    """The lines of a proposal in order."""
    return list(
        session.scalars(
            select(ProposalLine)
            .where(ProposalLine.workspace_id == proposal.workspace_id, ProposalLine.proposal_id == proposal.id)
            .order_by(ProposalLine.position)
        )
    )


def read(session: Session, proposal: Proposal) -> ProposalRead:
    """The API view of a proposal with its lines."""
    return ProposalRead(
        id=proposal.id,
        deal_id=proposal.deal_id,
        title=proposal.title,
        currency=proposal.currency,
        valid_until=proposal.valid_until,
        discount_bp=proposal.discount_bp,
        discount_fixed_minor=proposal.discount_fixed_minor,
        subtotal_minor=proposal.subtotal_minor,
        discount_minor=proposal.discount_minor,
        total_minor=proposal.total_minor,
        status=proposal.status,
        lines=[ProposalLineRead.model_validate(line) for line in proposal_lines(session, proposal)],
        created_at=proposal.created_at,
        updated_at=proposal.updated_at,
    )


def expire_proposals(session: Session, *, today: date | None = None, workspace_id: int | None = None) -> int:
    """Mark draft and sent proposals whose validity ended before ``today`` (UTC) as expired, each with a line in its
    deal's activity history. Idempotent: a proposal changes only while it is still draft or sent (one conditional
    UPDATE each, so two runs never both record it)."""
    today = today or utcnow().date()
    query = select(Proposal.id, Proposal.workspace_id, Proposal.deal_id, Proposal.title, Proposal.valid_until).where(
        Proposal.status.in_(("draft", "sent")), Proposal.valid_until < today
    )
    if workspace_id is not None:
        query = query.where(Proposal.workspace_id == workspace_id)
    now = utcnow()
    expired = 0
    for pid, ws_id, deal_id, title, valid_until in list(session.execute(query.order_by(Proposal.id).limit(5000))):
        result = session.execute(
            update(Proposal)
            .where(Proposal.workspace_id == ws_id, Proposal.id == pid, Proposal.status.in_(("draft", "sent")))
            .values(status="expired", updated_at=now)
            .execution_options(synchronize_session="fetch")
        )
        if not rowcount(result):
            continue
        session.add(
            Activity(
                workspace_id=ws_id,
                deal_id=deal_id,
                kind="system",
                body=f"Proposal {pid} ({title}) expired: valid until {valid_until.isoformat()}",
                occurred_at=now,
            )
        )
        expired += 1
    session.flush()
    return expired
