"""The seed guides' playbooks: ready-made journeys a workspace enables with a few settings.

Each playbook is a function of its settings returning a definition document; enabling one installs the default
templates it needs (in en, sv, fi, da and lv), validates the definition against the workspace like any other journey,
and saves it (activated unless asked otherwise). The journey is then an ordinary journey: editable, versioned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from suppilo.errors import DomainError, NotFound
from suppilo.journeys import service
from suppilo.journeys.models import Journey
from suppilo.messaging import service as messaging_service

ORDER_GOAL = {"event": "Order Completed", "window_days": 30}


def _int(settings: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = settings.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise DomainError(f"settings.{key}", f"{key} must be a whole number from {lo} to {hi}", code="invalid_setting")
    return value


def _str(settings: dict[str, Any], key: str, default: str) -> str:
    value = settings.get(key, default)
    if not isinstance(value, str) or not value.strip() or len(value) > 200:
        raise DomainError(f"settings.{key}", f"{key} must be a non-empty text", code="invalid_setting")
    return value.strip()


def welcome_series(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Welcome series",
        "description": "Welcomes a new sign-up at once, then shares tips a few days later, until the first order.",
        "trigger": {"type": "event", "event": _str(s, "event", "Form Submitted")},
        "entry": {"reentry": "never"},
        "goal": ORDER_GOAL,
        "start": "welcome",
        "steps": {
            "welcome": {"type": "send_email", "template": "welcome", "priority": 10, "next": "pause"},
            "pause": {"type": "wait", "duration": {"days": _int(s, "tips_after_days", 3, 1, 60)}, "next": "morning"},
            "morning": {"type": "wait_until", "time": "10:00", "weekdays": [1, 2, 3, 4, 5], "next": "tips"},
            "tips": {"type": "send_email", "template": "nurture_interest", "next": None},
        },
    }


def lead_nurture(s: dict[str, Any]) -> dict[str, Any]:
    interest = _str(s, "interest", "general")
    return {
        "name": f"Lead nurture: {interest}",
        "description": "Nurtures a lead who showed interest with two helpful mails a week apart, on weekday mornings.",
        "trigger": {"type": "stage_changed", "to": _str(s, "stage", "interest")},
        "entry": {"reentry": "after", "reentry_days": 90},
        "goal": {"filter": {"type": "stage", "op": "in", "value": ["decision", "customer", "loyal", "advocate"]}},
        "start": "morning",
        "steps": {
            "morning": {"type": "wait_until", "time": "10:00", "weekdays": [1, 2, 3, 4, 5], "next": "first"},
            "first": {
                "type": "send_email",
                "template": "nurture_interest",
                "message": {"interest": interest},
                "next": "week",
            },
            "week": {"type": "wait", "duration": {"days": 7}, "next": "engaged"},
            "engaged": {
                "type": "branch",
                "arms": [
                    {
                        "filter": {"type": "event", "name": "Form Submitted", "op": "at_least", "value": 1,
                                   "window": {"last_days": 7}},
                        "next": "hot",
                    }
                ],
                "else": "second",
            },
            "hot": {"type": "update_contact", "add_tags": ["engaged-lead"], "next": None},
            "second": {
                "type": "send_email",
                "template": "nurture_interest",
                "message": {"interest": interest},
                "next": None,
            },
        },
    }  # fmt: skip


def sales_handoff(s: dict[str, Any]) -> dict[str, Any]:
    hours = _int(s, "response_hours", 4, 1, 168)
    return {
        "name": "Hand-off to sales",
        "description": f"When a lead qualifies, its owner gets a call task due within {hours} h and the lead a note.",
        "trigger": {"type": "stage_changed", "to": _str(s, "stage", "decision")},
        "entry": {"reentry": "after", "reentry_days": 30},
        "start": "task",
        "steps": {
            "task": {
                "type": "create_task",
                "title": "Call the qualified lead",
                "kind": "call",
                "due_in": {"hours": hours},
                "working_hours": True,
                "next": "note",
            },
            "note": {
                "type": "send_email",
                "template": "sales_handoff_ack",
                "kind": "transactional",
                "topic": "sales",
                "include": ["owner"],
                "message": {"response_hours": hours},
                "next": None,
            },
        },
    }


def thank_you_onboarding(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Thank-you and onboarding",
        "description": "Thanks a new customer for the first order at once and sends onboarding tips a few days later.",
        "trigger": {"type": "stage_changed", "to": "customer"},
        "entry": {"reentry": "never"},
        "start": "thanks",
        "steps": {
            "thanks": {
                "type": "send_email",
                "template": "order_thank_you",
                "kind": "transactional",
                "topic": "orders",
                "include": ["order"],
                "priority": 20,
                "next": "pause",
            },
            "pause": {"type": "wait", "duration": {"days": _int(s, "onboarding_after_days", 3, 1, 30)}, "next": "tips"},
            "tips": {"type": "send_email", "template": "onboarding", "include": ["order"], "next": None},
        },
    }


def cross_sell(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Cross-sell after a purchase",
        "description": "Two weeks after an order, suggests products often bought together with it.",
        "trigger": {"type": "event", "event": "Order Completed"},
        "entry": {"reentry": "after", "reentry_days": 30},
        "goal": ORDER_GOAL,
        "start": "pause",
        "steps": {
            "pause": {"type": "wait", "duration": {"days": _int(s, "after_days", 14, 1, 90)}, "next": "suggest"},
            "suggest": {
                "type": "send_email",
                "template": "cross_sell",
                "include": ["order", "recommendations"],
                "next": None,
            },
        },
    }


def abandoned_cart(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Abandoned-cart reminder",
        "description": "Reminds a shopper of the cart left behind, once after an hour and once the next day.",
        "trigger": {"type": "event", "event": "Cart Abandoned"},
        "entry": {"reentry": "after", "reentry_days": 3},
        "goal": {"event": "Order Completed", "window_days": 7},
        "start": "hour",
        "steps": {
            "hour": {"type": "wait", "duration": {"hours": _int(s, "first_after_hours", 1, 1, 48)}, "next": "remind"},
            "remind": {"type": "send_email", "template": "abandoned_cart", "include": ["cart"], "priority": 30,
                       "next": "day"},
            "day": {"type": "wait", "duration": {"days": 1}, "next": "again"},
            "again": {"type": "send_email", "template": "abandoned_cart", "include": ["cart"], "priority": 30,
                      "next": None},
        },
    }  # fmt: skip


def win_back(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Win-back with a coupon",
        "description": (
            "When a customer has been away longer than their own buying cycle (the lapse_at date the worker keeps), "
            "sends a coupon whose value follows the customer's lifetime value (the offer's tiers)."
        ),
        "trigger": {"type": "date_property", "property": "lapse_at", "at": "10:00"},
        "entry": {"reentry": "after", "reentry_days": 180},
        "goal": {"event": "Order Completed", "window_days": 30},
        "start": "split",
        "steps": {
            "split": {
                "type": "split",
                "variants": [{"name": "coupon", "weight": 1, "next": "coupon"}],
                "holdout_percent": float(_int(s, "holdout_percent", 10, 0, 50)),
            },
            "coupon": {"type": "coupon", "offer": _str(s, "offer", "winback"), "next": "mail"},
            "mail": {"type": "send_email", "template": "win_back", "next": None},
        },
    }


def promoter_advocacy(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Review and referral request to promoters",
        "description": "Asks a promoter (NPS 9-10) for a review, and a week later to refer a friend.",
        "trigger": {
            "type": "event",
            "event": _str(s, "event", "Survey Answered"),
            "where": [{"path": "score", "op": "gt", "value": 8}],
        },
        "entry": {"reentry": "after", "reentry_days": 180},
        "start": "advocate",
        "steps": {
            "advocate": {"type": "update_contact", "stage": "advocate", "next": "review"},
            "review": {"type": "send_email", "template": "review_request", "include": ["order"], "next": "week"},
            "week": {"type": "wait", "duration": {"days": 7}, "next": "refer"},
            "refer": {"type": "send_email", "template": "referral_request", "include": ["referral"], "next": None},
        },
    }


@dataclass(frozen=True)
class Playbook:
    key: str
    name: str
    description: str
    needs: tuple[str, ...]
    build: Callable[[dict[str, Any]], dict[str, Any]]


PLAYBOOKS: dict[str, Playbook] = {
    p.key: p
    for p in (
        Playbook("welcome_series", "Welcome series", "Welcome and tips after sign-up", ("event",), welcome_series),
        Playbook("lead_nurture", "Lead nurture by interest", "Helpful mails to interested leads", ("interest",),
                 lead_nurture),
        Playbook("sales_handoff", "Hand-off to sales", "A task for the owner when a lead qualifies",
                 ("stage", "response_hours"), sales_handoff),
        Playbook("thank_you_onboarding", "Thank-you and onboarding", "After the first purchase", (),
                 thank_you_onboarding),
        Playbook("cross_sell", "Cross-sell", "Products often bought together, after a purchase", ("after_days",),
                 cross_sell),
        Playbook("abandoned_cart", "Abandoned-cart reminder", "Two reminders of a cart left behind",
                 ("first_after_hours",), abandoned_cart),
        Playbook("win_back", "Win-back", "A coupon tiered by lifetime value for lapsed customers",
                 ("offer", "holdout_percent"), win_back),
        Playbook("promoter_advocacy", "Reviews and referrals", "Review and referral requests to promoters", ("event",),
                 promoter_advocacy),
    )
}  # fmt: skip


def get_playbook(key: str) -> Playbook:
    playbook = PLAYBOOKS.get(key)
    if playbook is None:
        raise NotFound("playbook", f"no playbook {key!r}; known: {', '.join(PLAYBOOKS)}")
    return playbook


def enable(
    session: Session,
    workspace_id: int,
    key: str,
    settings: dict[str, Any] | None = None,
    *,
    activate: bool = True,
    actor: str = "",
) -> Journey:
    """Create (and activate) the journey of a playbook for the workspace."""
    playbook = get_playbook(key)
    definition = playbook.build(dict(settings or {}))
    messaging_service.install_default_templates(session, workspace_id)
    if key == "win_back":
        from suppilo.journeys.lapse import ensure_lapse_property

        ensure_lapse_property(session, workspace_id)
    journey = service.create_journey(session, workspace_id, definition, actor=actor, playbook=key)
    if activate:
        service.set_status(session, workspace_id, journey.id, "active")
    return journey
