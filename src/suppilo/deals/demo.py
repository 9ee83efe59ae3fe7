"""The demo workspace's sales pipeline: deals for the wholesale leads the demo generator made sales-qualified, with
stage histories, BANT, proposals, tasks, activities, objections and the assignment setup.

Deterministic (a function of the seed, the anchor and the generated contacts) and small (one deal per qualified
lead, at most ``MAX_DEALS``): a few thousand rows written in one flush. Leads who became customers have won deals
(the amount is their first order: that order is the deal's, so no second order is recorded), and half of them a later
upsell deal, open or lost (a customer's lost deal leaves the contact a customer); leads still in decision have open
deals in a stage that fits their age.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from suppilo.commerce.models import Order, Product
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact, StageChange
from suppilo.deals import assignment
from suppilo.deals.models import (
    Activity,
    AssignmentRule,
    Deal,
    DealObjection,
    DealStageChange,
    OwnerAssignment,
    Proposal,
    ProposalLine,
    SalesTeam,
    Task,
)
from suppilo.deals.schemas import AssignmentRuleIn, SalesSettingsIn, TeamIn
from suppilo.deals.service import ensure_default_pipeline, pipeline_stages
from suppilo.engine import working_hours as wh
from suppilo.workspaces.models import Membership

MAX_DEALS = 240
OPEN_KEYS = ("qualification", "discovery_call", "demo", "proposal", "negotiation")
LOST_REASONS = (
    "Chose a competitor with a local warehouse",
    "No budget this season",
    "Went quiet after the demo",
    "Minimum order too large for the shop",
    "Delivery times did not fit their opening",
)
AUTHORITIES = ("Store owner", "Purchasing lead", "Category manager", "Hotel manager", "Operations director")
NEEDS = (
    "Rental fleet of tents and sleeping bags for the summer season",
    "A display stand of headlamps and accessories by the till",
    "Branded fleece jackets for guides and staff",
    "Bulk packs of base layers for the winter range",
    "Kayak and SUP rental equipment for the lake shop",
)
TIMELINES = ("Before the summer season", "This quarter", "For the Christmas trade", "Next spring", "Within a month")
OBJECTIONS = (
    ("The margin is lower than with our current supplier", "Offered volume tiers and a 5 % launch discount."),
    ("We cannot store a full pallet", "Split delivery in two shipments at no extra cost."),
    ("We need the goods before the season opens", "Confirmed stock and a delivery date in writing."),
)
ACTIVITY_LINES = {
    "call": "Discovery call: walked through their range and season plan.",
    "meeting": "Demo at the shop: showed samples and the display stand.",
    "email": "Sent wholesale terms and the price list.",
}


@dataclass(frozen=True, slots=True)
class DemoPipelineResult:
    """What was written."""

    deals: int
    proposals: int
    tasks: int


def _setup_assignment(session: Session, workspace_id: int, sales: list[int]) -> None:
    team = assignment.create_team(session, workspace_id, TeamIn(name="Wholesale", members=sales))
    assignment.replace_rules(
        session,
        workspace_id,
        [
            AssignmentRuleIn(
                name="Nordic wholesale",
                conditions={"country": ["FI", "SE", "NO", "DK"]},
                team_id=team.id,
                distribution="round_robin",
            ),
            AssignmentRuleIn(name="Everyone else", conditions={}, team_id=team.id, distribution="load_balanced"),
        ],
    )
    assignment.put_settings(
        session,
        workspace_id,
        SalesSettingsIn(
            assign_on_stage="decision",
            response_hours=4,
            handoff_task_title="First contact",
            working_hours={"weekdays": [1, 2, 3, 4, 5], "start": "08:00", "end": "16:00"},
        ),
    )


def _times(start: datetime, end: datetime, n: int, rng: random.Random) -> list[datetime]:
    """``n`` increasing instants from ``start`` (included) up to ``end``."""
    if n <= 1:
        return [start]
    span = (end - start).total_seconds()
    cuts = sorted(rng.uniform(0.05, 0.95) for _ in range(n - 1))
    return [start] + [start + timedelta(seconds=span * c) for c in cuts]


def load_demo_pipeline(session: Session, workspace_id: int, anchor: datetime, seed: int) -> DemoPipelineResult:
    """Write the demo pipeline into a freshly generated demo workspace (see the module docstring)."""
    rng = random.Random(seed * 7919 + 17)
    sales = sorted(
        session.scalars(
            select(Membership.user_id).where(Membership.workspace_id == workspace_id, Membership.role == "sales")
        )
    ) or sorted(session.scalars(select(Membership.user_id).where(Membership.workspace_id == workspace_id)))
    _setup_assignment(session, workspace_id, sales)
    team = session.scalars(select(SalesTeam).where(SalesTeam.workspace_id == workspace_id)).one()
    rule = session.scalars(
        select(AssignmentRule).where(AssignmentRule.workspace_id == workspace_id).order_by(AssignmentRule.position)
    ).first()
    pipeline = ensure_default_pipeline(session, workspace_id)
    stages = {s.key: s for s in pipeline_stages(session, workspace_id, [pipeline.id])[pipeline.id]}
    products = list(session.scalars(select(Product).where(Product.workspace_id == workspace_id).order_by(Product.id)))
    wholesale = [p for p in products if (p.properties or {}).get("wholesale")] or products[:10]
    schedule = assignment.schedule_for(session, workspace_id, sales[0])

    first_decision = (
        select(StageChange.contact_id, func.min(StageChange.changed_at).label("at"))
        .where(StageChange.workspace_id == workspace_id, StageChange.to_stage == "decision")
        .group_by(StageChange.contact_id)
        .subquery()
    )
    leads = list(
        session.execute(
            select(Contact, first_decision.c.at)
            .join(first_decision, first_decision.c.contact_id == Contact.id)
            .where(Contact.workspace_id == workspace_id)
            .order_by(Contact.id)
            .limit(MAX_DEALS)
        )
    )
    first_orders: dict[int, tuple[datetime, int, str]] = {}
    if leads:
        for contact_id, placed_at, total, currency in session.execute(
            select(Order.contact_id, Order.placed_at, Order.total_minor, Order.currency)
            .where(Order.workspace_id == workspace_id, Order.contact_id.in_([c.id for c, _ in leads]))
            .order_by(Order.contact_id, Order.placed_at)
        ):
            if contact_id is not None:
                first_orders.setdefault(contact_id, (placed_at, total, currency))
    specs = contacts_service.stage_specs(session, workspace_id)
    order_of = {s.key: s.position for s in specs}
    counts = {"deals": 0, "proposals": 0, "tasks": 0}
    ctx = _Ctx(workspace_id, pipeline.id, stages, wholesale, schedule, anchor, team.id, rule, counts)
    for i, (contact, opened) in enumerate(leads):
        ctx.owner = sales[i % len(sales)]
        contact.owner_id = contact.owner_id or ctx.owner
        bought = first_orders.get(contact.id)
        age_days = (anchor - opened).days
        moved_on = order_of.get(contact.lifecycle_stage, 0) > order_of["decision"]
        if bought is not None and bought[0] > opened and moved_on:
            # Won: the first wholesale order was the deal's.
            _write_deal(session, ctx, contact, opened, bought[0], [*OPEN_KEYS, "won"], "won", bought[1], bought[2], rng)
            upsell_at = bought[0] + timedelta(days=rng.uniform(20, 90))
            if rng.random() < 0.5 and upsell_at < anchor - timedelta(days=2):
                # Follow-up for upsell and cross-sell: a second deal, open or (when old) lost. A lost deal of a
                # customer leaves the contact a customer.
                amount = rng.randrange(10, 120) * 10_000
                if (anchor - upsell_at).days > 40 and rng.random() < 0.6:
                    closed = upsell_at + timedelta(days=rng.uniform(10, 35))
                    path = [*OPEN_KEYS[: rng.randint(1, 5)], "lost"]
                    _write_deal(session, ctx, contact, upsell_at, closed, path, "lost", amount, "EUR", rng, "upsell")
                else:
                    path = list(OPEN_KEYS[: rng.randint(1, 4)])
                    closed = anchor - timedelta(hours=rng.uniform(2, 24 * 10))
                    _write_deal(session, ctx, contact, upsell_at, closed, path, "open", amount, "EUR", rng, "upsell")
        elif contact.lifecycle_stage == "decision":
            closed = anchor - timedelta(hours=rng.uniform(2, 24 * min(20, max(1, age_days))))
            depth = min(len(OPEN_KEYS), 1 + age_days // 12 + rng.choice((0, 0, 1)))
            amount = rng.randrange(15, 250) * 10_000
            _write_deal(session, ctx, contact, opened, closed, list(OPEN_KEYS[:depth]), "open", amount, "EUR", rng)
    session.flush()
    return DemoPipelineResult(**counts)


@dataclass(slots=True)
class _Ctx:
    workspace_id: int
    pipeline_id: int
    stages: dict[str, Any]
    products: list[Product]
    schedule: wh.WorkingHours
    anchor: datetime
    team_id: int
    rule: AssignmentRule | None
    counts: dict[str, int]
    owner: int = 0


def _write_deal(
    session: Session,
    ctx: _Ctx,
    contact: Contact,
    opened: datetime,
    closed: datetime,
    path: list[str],
    outcome: str,
    amount: int,
    currency: str,
    rng: random.Random,
    kind: str = "wholesale",
) -> None:
    """One deal with its stage history, hand-off, activities, objection, proposal and next task."""
    workspace_id, anchor, stages = ctx.workspace_id, ctx.anchor, ctx.stages
    owner = ctx.owner
    closed = max(min(closed, anchor - timedelta(hours=1)), opened + timedelta(hours=1))
    times = _times(opened, closed, len(path), rng)
    final = stages[path[-1]]
    qualified = len(path) > 2 or outcome == "won"
    lost_reason = rng.choice(LOST_REASONS) if outcome == "lost" else None
    deal = Deal(
        workspace_id=workspace_id,
        pipeline_id=ctx.pipeline_id,
        stage_id=final.id,
        status=outcome,
        name=f"{contact.first_name or 'Lead'} {contact.last_name or contact.id}: {kind}"[:300],
        contact_id=contact.id,
        company_id=contact.company_id,
        owner_id=owner,
        amount_minor=amount,
        currency=currency,
        expected_close_date=(closed if outcome != "open" else anchor + timedelta(days=rng.randint(7, 75))).date(),
        source_channel="form" if kind == "wholesale" else "sales",
        budget_minor=int(amount * rng.uniform(0.8, 1.3)) // 100 * 100,
        budget_currency=currency,
        authority=rng.choice(AUTHORITIES),
        decision_maker=rng.random() < 0.6,
        need=rng.choice(NEEDS),
        timeline=rng.choice(TIMELINES),
        qualification_status="qualified" if qualified else ("disqualified" if outcome == "lost" else "unqualified"),
        lost_reason=lost_reason,
        won_at=closed if outcome == "won" else None,
        lost_at=closed if outcome == "lost" else None,
        stage_entered_at=times[-1],
        version=len(path),
        created_at=opened,
        updated_at=times[-1],
    )
    session.add(deal)
    session.flush()
    ctx.counts["deals"] += 1
    previous: int | None = None
    for key, at in zip(path, times, strict=True):
        stage = stages[key]
        reason = "opened" if previous is None else ((lost_reason or "") if key == "lost" else "")
        session.add(
            DealStageChange(
                workspace_id=workspace_id,
                deal_id=deal.id,
                from_stage_id=previous,
                to_stage_id=stage.id,
                changed_at=at,
                actor="demo",
                reason=reason,
            )
        )
        previous = stage.id
    if kind == "wholesale":
        # The hand-off: who got the lead, by which rule, and the first-contact task due within 4 working hours.
        due = wh.due_in_working_hours(opened, 4, ctx.schedule)
        responded = wh.due_in_working_hours(opened, rng.choice((1, 2, 3, 6)), ctx.schedule)
        answered = responded if responded < anchor else None
        handoff = Task(
            workspace_id=workspace_id,
            deal_id=deal.id,
            contact_id=contact.id,
            owner_id=owner,
            kind="call",
            title=f"First contact: {deal.name}"[:300],
            due_at=due,
            done_at=answered,
            handoff_at=opened,
            responded_at=answered,
            created_at=opened,
            updated_at=opened,
        )
        session.add(handoff)
        session.flush()
        ctx.counts["tasks"] += 1
        if ctx.rule is not None:
            session.add(
                OwnerAssignment(
                    workspace_id=workspace_id,
                    subject_type="deal",
                    subject_id=deal.id,
                    user_id=owner,
                    rule_id=ctx.rule.id,
                    rule_name=ctx.rule.name,
                    team_id=ctx.team_id,
                    distribution=ctx.rule.distribution,
                    trigger="stage:decision",
                    task_id=handoff.id,
                    assigned_at=opened,
                )
            )
    for activity, at in zip(("call", "meeting", "email"), times[1:], strict=False):
        session.add(
            Activity(
                workspace_id=workspace_id,
                deal_id=deal.id,
                contact_id=contact.id,
                owner_id=owner,
                kind=activity,
                body=ACTIVITY_LINES[activity],
                occurred_at=at,
            )
        )
    if "negotiation" in path and rng.random() < 0.6:
        text, response = rng.choice(OBJECTIONS)
        session.add(
            DealObjection(
                workspace_id=workspace_id,
                deal_id=deal.id,
                text=text,
                response=response,
                raised_at=times[path.index("negotiation")],
            )
        )
    if "proposal" in path and ctx.products:
        at = times[path.index("proposal")]
        ctx.counts["proposals"] += _proposal(session, deal, at, anchor, outcome, ctx.products, rng)
    if outcome == "open":
        ctx.counts["tasks"] += _follow_up(session, deal, anchor, rng)


def _proposal(
    session: Session,
    deal: Deal,
    at: datetime,
    anchor: datetime,
    outcome: str,
    products: list[Product],
    rng: random.Random,
) -> int:
    chosen = rng.sample(products, k=min(len(products), rng.randint(1, 3)))
    valid_until: date = (at + timedelta(days=30)).date()
    status = {"won": "accepted", "lost": "rejected"}.get(outcome, "sent")
    if status == "sent" and valid_until < anchor.date():
        status = "expired"
    proposal = Proposal(
        workspace_id=deal.workspace_id,
        deal_id=deal.id,
        title=f"Wholesale offer for {deal.name}"[:300],
        currency="EUR",
        valid_until=valid_until,
        discount_bp=500 if rng.random() < 0.4 else None,
        status=status,
        created_at=at,
        updated_at=at,
    )
    session.add(proposal)
    session.flush()
    subtotal = 0
    lines: list[Any] = []
    for position, product in enumerate(chosen):
        quantity = rng.choice((5, 10, 20, 40))
        line_total = quantity * product.price_minor
        subtotal += line_total
        lines.append(
            ProposalLine(
                workspace_id=deal.workspace_id,
                proposal_id=proposal.id,
                position=position,
                product_id=product.id,
                name=product.name,
                quantity=quantity,
                unit_price_minor=product.price_minor,
                line_total_minor=line_total,
            )
        )
    session.add_all(lines)
    discount = subtotal * 500 // 10_000 if proposal.discount_bp else 0
    proposal.subtotal_minor, proposal.discount_minor, proposal.total_minor = subtotal, discount, subtotal - discount
    if outcome == "open":
        deal.amount_minor = proposal.total_minor  # the amount of an open deal is its latest offer
    return 1


def _follow_up(session: Session, deal: Deal, anchor: datetime, rng: random.Random) -> int:
    """An open deal's next step: a call or meeting, some overdue, with a reminder an hour before."""
    due = anchor + timedelta(hours=rng.choice((-50, -26, 10, 34, 58, 80, 130, 200)))
    reminder = due - timedelta(hours=1)
    session.add(
        Task(
            workspace_id=deal.workspace_id,
            deal_id=deal.id,
            contact_id=deal.contact_id,
            owner_id=deal.owner_id,
            kind=rng.choice(("call", "meeting", "email")),
            title=f"Follow up: {deal.name}"[:300],
            due_at=due,
            reminder_at=reminder,
            # Reminders before the demo's anchor count as sent (the demo does not mail its own past).
            reminder_sent_at=reminder if reminder < anchor else None,
            created_at=anchor - timedelta(days=1),
            updated_at=anchor - timedelta(days=1),
        )
    )
    return 1
