"""The demo's retention and advocacy: a loyalty programme with points earned on the last half-year's orders, a
referral programme with a few advocates and the friends they brought, an NPS survey sent and partly answered (its
promoters start the review-and-referral journey live), moderated product reviews, and computed recommendations.

Deterministic for a seed; recorded after the journeys are switched on, so the survey answers start journeys."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.advocacy import service as advocacy_service
from suppilo.advocacy.schemas import ReferralProgramIn, ReviewCreate, RewardSpec, SurveyCreate
from suppilo.advocacy.surveys import SurveyClaim
from suppilo.commerce.models import Order, OrderLine
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.errors import DomainError
from suppilo.loyalty import service as loyalty_service
from suppilo.loyalty.schemas import ProgramIn
from suppilo.recommendations import service as recommendations_service

REVIEWS = [
    (5, "en", "Kept us dry for a week", "Pitched it in the rain in Lapland for a week: bone dry, and it packs small."),
    (4, "fi", "Hyvä retkikeitin", "Kiehauttaa litran vettä nopeasti, tuuli haittaa vähän."),
    (5, "sv", "Bästa sovsäcken", "Varm ner till minus tio, som utlovat. Lätt att packa."),
    (3, "da", "Godt, men tungt", "Solid kvalitet, men for tung til lange vandreture."),
    (5, "lv", "Lieliska jaka", "Silta un viegla, lieliski piemērota rudens pārgājieniem."),
    (4, "en", "Great value", "Does everything the expensive brands do for half the price."),
    (2, "en", "Zip broke", "The zip broke after two trips; customer service replaced it quickly though."),
    (5, "fi", "Erinomainen", "Paras ostos tänä vuonna, suosittelen."),
    (4, "sv", "Bra passform", "Sitter bra och andas väl, lite kort i ärmarna."),
    (5, "en", "Perfect for the kids", "Our two kids love it; easy to set up for a family of four."),
    (1, "da", "Forkert størrelse", "Kom i forkert størrelse, og returneringen tog to uger."),
    (4, "lv", "Labs", "Laba kvalitāte par savu cenu."),
]


def load_retention(session: Session, workspace_id: int, *, seed: int = 7) -> dict[str, Any]:
    """Set up and fill the retention features; returns counts of what was made."""
    rng = random.Random(seed)
    now = utcnow()
    out: dict[str, Any] = {}

    loyalty_service.put_program(session, workspace_id, ProgramIn(points_per_unit=1, expiry_days=365))
    recent = list(
        session.scalars(
            select(Order)
            .where(
                Order.workspace_id == workspace_id,
                Order.contact_id.is_not(None),
                Order.status == "completed",
                Order.placed_at >= now - timedelta(days=180),
            )
            .order_by(Order.id)
            .limit(3000)
        )
    )
    out["points_orders"] = sum(1 for o in recent if loyalty_service.earn_for_order(session, workspace_id, o))

    advocacy_service.put_program(
        session,
        workspace_id,
        ReferralProgramIn(
            reward_stage="customer",
            referrer_reward=RewardSpec(kind="points", points=500),
            referred_reward=RewardSpec(kind="coupon", offer_key="winback"),
        ),
    )
    customers = list(
        session.scalars(
            select(Contact.id)
            .where(
                Contact.workspace_id == workspace_id,
                Contact.lifecycle_stage.in_(("customer", "loyal", "advocate")),
                Contact.email.is_not(None),
            )
            .order_by(Contact.id)
        )
    )
    newcomers = list(
        session.scalars(
            select(Contact.id)
            .where(
                Contact.workspace_id == workspace_id,
                Contact.lifecycle_stage.in_(("awareness", "interest")),
                Contact.email.is_not(None),
            )
            .order_by(Contact.id.desc())
            .limit(200)
        )
    )
    advocates = rng.sample(customers, min(8, len(customers)))
    made = 0
    for referred in rng.sample(newcomers, min(16, len(newcomers))):
        code = advocacy_service.get_or_create_code(session, workspace_id, rng.choice(advocates)).code
        try:
            referral = advocacy_service.attribute(
                session, workspace_id, code=code, referred_contact_id=referred, source="demo"
            )
        except DomainError:
            continue
        made += referral.status == "attributed"
    out["referrals"] = made

    survey = advocacy_service.create_survey(session, workspace_id, SurveyCreate(name="Customer NPS"))
    asked = rng.sample(customers, min(40, len(customers)))
    advocacy_service.send_survey(session, workspace_id, survey.id, asked)
    answered = 0
    for cid in asked[:30]:
        roll = rng.random()
        score = rng.choice([9, 10]) if roll < 0.5 else rng.choice([7, 8]) if roll < 0.8 else rng.randint(2, 6)
        if advocacy_service.record_answer(session, SurveyClaim(workspace_id, survey.id, cid, score)) is not None:
            answered += 1
    out["survey_answers"] = answered

    skus = [
        sku
        for (sku,) in session.execute(
            select(OrderLine.sku).where(OrderLine.workspace_id == workspace_id).group_by(OrderLine.sku).limit(12)
        )
    ]
    reviewed = 0
    for i, (rating, _lang, title, text) in enumerate(REVIEWS):
        if not customers or not skus:
            break
        review, _ = advocacy_service.create_review(
            session,
            workspace_id,
            ReviewCreate(
                contact_id=customers[(i * 37) % len(customers)],
                product_sku=skus[i % len(skus)],
                rating=rating,
                title=title,
                text=text,
                idempotency_key=f"demo-review-{i}",
            ),
            source="demo",
        )
        if i % 4 != 3:
            advocacy_service.approve(session, workspace_id, review.id, actor="demo")
        reviewed += 1
    out["reviews"] = reviewed
    out["recommendations"] = recommendations_service.recompute(session, workspace_id, now)
    session.flush()
    return out
