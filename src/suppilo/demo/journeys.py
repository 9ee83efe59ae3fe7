"""The demo's live journeys: playbooks switched on in the demo workspace, and a little fresh activity (sign-ups,
first purchases, qualified leads) recorded after they are on, so the worker sends real mail into the built-in mail
catcher within seconds of ``./dev demo`` starting."""

from __future__ import annotations

import unicodedata
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.consent import service as consent_service
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact
from suppilo.contacts.schemas import ContactCreate
from suppilo.db.base import utcnow
from suppilo.events import service as events_service
from suppilo.journeys import playbooks
from suppilo.offers import service as offers_service
from suppilo.offers.schemas import OfferCreate

PLAYBOOKS: dict[str, dict[str, object]] = {
    "welcome_series": {},
    "lead_nurture": {"interest": "hiking"},
    # Not "sales_handoff": the demo's sales settings assign an owner and create the hand-off task when a lead
    # reaches "decision" (suppilo.deals.assignment); the playbook would create a second task.
    "thank_you_onboarding": {},
    "cross_sell": {},
    "abandoned_cart": {},
    "win_back": {"offer": "winback", "holdout_percent": 10},
    "promoter_advocacy": {},
}

SIGN_UPS = [
    ("Aino", "Mäkinen", "FI", "fi"),
    ("Erik", "Lindqvist", "SE", "sv"),
    ("Mette", "Kjær", "DK", "da"),
    ("Līga", "Bērziņa", "LV", "lv"),
    ("Olivia", "Brown", "US", "en"),
    ("Juho", "Virtanen", "FI", "fi"),
]


def enable_journeys(session: Session, workspace_id: int) -> list[int]:
    """Switch the playbooks on (with a win-back offer tiered by lifetime value); returns the journey ids."""
    if offers_service._offer_by_key(session, workspace_id, "winback") is None:
        offers_service.create_offer(
            session,
            workspace_id,
            OfferCreate(
                key="winback",
                name="We miss you",
                kind="percent",
                percent=10,
                valid_days=30,
                value_rule={
                    "by": "ltv",
                    "tiers": [{"min": 0, "percent": 10}, {"min": 30000, "percent": 15}, {"min": 100000, "percent": 20}],
                },
            ),
        )
    return [
        playbooks.enable(session, workspace_id, key, settings, actor="demo").id for key, settings in PLAYBOOKS.items()
    ]


def live_activity(session: Session, workspace_id: int) -> dict[str, int]:
    """Fresh sign-ups with consent, a few first purchases and qualified leads, recorded now."""
    now = utcnow()
    signed = 0
    for i, (first, last, country, language) in enumerate(SIGN_UPS):
        ascii_name = unicodedata.normalize("NFKD", first.replace("æ", "ae")).encode("ascii", "ignore").decode().lower()
        email = f"{ascii_name}.{i}@live.example"
        contact = contacts_service.create_contact(
            session,
            workspace_id,
            ContactCreate(email=email, first_name=first, last_name=last, country=country, language=language),
            source="form",
        )
        consent_service.record_consent(
            session,
            workspace_id,
            contact.id,
            topic="marketing",
            source="demo newsletter form",
            consent_text="Yes, send me news and offers from Pohjola Outdoor. I can unsubscribe at any time.",
            confirmed=True,
            request_double_opt_in=False,
            at=now - timedelta(seconds=5),
        )
        events_service.record_event(
            session, workspace_id, contact.id, "Form Submitted", {"form": "newsletter", "live": True}, now
        )
        signed += 1
    stages = contacts_service.stage_specs(session, workspace_id)
    moved = {"customer": 0, "decision": 0}
    for target, from_stage, n in (("customer", "decision", 4), ("decision", "consideration", 4)):
        for contact in session.scalars(
            select(Contact)
            .where(
                Contact.workspace_id == workspace_id, Contact.lifecycle_stage == from_stage, Contact.email.is_not(None)
            )
            .order_by(Contact.id.desc())
            .limit(n)
        ):
            if contacts_service.change_stage(
                session, contact, target, reason="demo: live activity", source="demo", stages=stages
            ):
                moved[target] += 1
    session.flush()
    return {"sign_ups": signed, "customers": moved["customer"], "qualified": moved["decision"]}


SEGMENTS: list[tuple[str, str, dict[str, object]]] = [
    ("Hot leads", "Good fit (A or B) and not yet customers", {
        "and": [
            {"type": "score", "kind": "fit", "op": "grade_in", "value": ["A", "B"]},
            {"type": "stage", "op": "in", "value": ["awareness", "interest", "consideration", "decision"]},
        ]
    }),
    ("Customers at risk", "Used to buy, gone quiet (RFM)", {
        "type": "contact", "field": "properties.rfm_group", "op": "in",
        "value": ["at_risk", "cannot_lose", "about_to_sleep"],
    }),
    ("Nordic newsletter", "Marketing consent, Finland, Sweden, Denmark", {
        "and": [
            {"type": "consent", "topic": "marketing", "op": "granted"},
            {"type": "contact", "field": "country", "op": "in", "value": ["FI", "SE", "DK"]},
        ]
    }),
    ("Carts left this week", "Abandoned a cart in the last 7 days", {
        "type": "event", "name": "Cart Abandoned", "op": "at_least", "value": 1, "window": {"last_days": 7}
    }),
]  # fmt: skip


def create_segments(session: Session, workspace_id: int) -> list[int]:
    """The demo's segments (after RFM has run, so the RFM group exists on contacts)."""
    from suppilo.scoring import rfm
    from suppilo.segments import service as segments_service
    from suppilo.segments.schemas import SegmentCreate

    rfm.compute(session, workspace_id)
    ids = [
        segments_service.create_segment(
            session, workspace_id, SegmentCreate(name=name, description=text, filter=flt), actor="demo"
        ).id
        for name, text, flt in SEGMENTS
    ]
    return ids
