"""A journey end to end on the real database: triggers, emails through the outbox, waits, branches, goals."""

from __future__ import annotations

import pytest

from suppilo.errors import DomainError
from suppilo.journeys import service

from .support import contact, enrollments, event, install_templates, journey, later, messages, tick, timeline

WELCOME = {
    "name": "Welcome series",
    "trigger": {"type": "event", "event": "Signed Up", "where": [{"path": "plan", "op": "eq", "value": "pro"}]},
    "goal": {"event": "Order Completed"},
    "start": "hello",
    "steps": {
        "hello": {"type": "send_email", "template": "welcome", "next": "pause"},
        "pause": {"type": "wait", "duration": {"days": 2}, "next": "tagged"},
        "tagged": {
            "type": "branch",
            "arms": [{"filter": {"type": "tag", "op": "has_tag", "value": "vip"}, "next": "vip"}],
            "else": "nudge",
        },
        "vip": {"type": "update_contact", "add_tags": ["welcomed-vip"], "next": None},
        "nudge": {"type": "send_email", "template": "win_back", "next": "done"},
        "done": {"type": "end"},
    },
}


@pytest.fixture
def ws(session_factory, workspace):
    install_templates(session_factory, workspace.id)
    return workspace


def test_event_enrols_sends_waits_and_branches(session_factory, ws):
    jid = journey(session_factory, ws.id, WELCOME)
    anna = contact(session_factory, ws.id, "anna@example.fi")
    bo = contact(session_factory, ws.id, "bo@example.se")
    event(session_factory, ws.id, anna, "Signed Up", plan="pro")
    event(session_factory, ws.id, bo, "Signed Up", plan="free")  # the trigger's filter keeps Bo out

    tick(session_factory)
    rows = enrollments(session_factory, jid)
    assert [r.contact_id for r in rows] == [anna]
    assert rows[0].step == "pause" and rows[0].status == "active"
    sent = messages(session_factory, ws.id, anna)
    assert [m.template_key for m in sent] == ["welcome"]

    # Nothing more happens before the wait is over, however often the runner looks.
    tick(session_factory, later(days=1))
    assert len(messages(session_factory, ws.id, anna)) == 1

    tick(session_factory, later(days=2, minutes=1))
    assert [m.template_key for m in messages(session_factory, ws.id, anna)] == ["welcome", "win_back"]
    row = enrollments(session_factory, jid)[0]
    assert row.status == "ended" and row.end_reason == "completed"
    steps = timeline(session_factory, row.id)
    assert steps[0] == ("hello", "entered")
    assert ("tagged", "else") in steps and ("done", "end") in steps


def test_the_same_event_twice_enrols_once_and_never_never_reenters(session_factory, ws):
    jid = journey(session_factory, ws.id, WELCOME)
    anna = contact(session_factory, ws.id, "anna@example.fi")
    event(session_factory, ws.id, anna, "Signed Up", plan="pro")
    tick(session_factory)
    event(session_factory, ws.id, anna, "Signed Up", plan="pro", again=True)
    tick(session_factory)
    assert len(enrollments(session_factory, jid)) == 1
    assert len(messages(session_factory, ws.id, anna)) == 1


def test_goal_event_ends_the_enrollment_as_converted(session_factory, ws):
    jid = journey(session_factory, ws.id, WELCOME)
    anna = contact(session_factory, ws.id, "anna@example.fi")
    event(session_factory, ws.id, anna, "Signed Up", plan="pro")
    tick(session_factory)
    event(session_factory, ws.id, anna, "Order Completed", order_id="A-1")
    tick(session_factory)
    row = enrollments(session_factory, jid)[0]
    assert row.status == "ended" and row.end_reason == "goal" and row.converted_at is not None
    # The nudge after the wait never goes out.
    tick(session_factory, later(days=3))
    assert len(messages(session_factory, ws.id, anna)) == 1


def test_invalid_definitions_are_refused_with_the_path(session_factory, ws):
    bad = {
        **WELCOME,
        "steps": {**WELCOME["steps"], "hello": {"type": "send_email", "template": "nope", "next": "pause"}},
    }
    with session_factory() as s, pytest.raises(DomainError) as err:
        service.create_journey(s, ws.id, bad)
    assert err.value.field == "definition.steps.hello.template"
    loop = {
        "name": "spin",
        "trigger": {"type": "manual"},
        "start": "a",
        "steps": {
            "a": {"type": "update_contact", "add_tags": ["x"], "next": "b"},
            "b": {"type": "update_contact", "add_tags": ["y"], "next": "a"},
        },
    }
    with session_factory() as s, pytest.raises(DomainError) as err:
        service.create_journey(s, ws.id, loop)
    assert "loop without a wait" in err.value.message
    bad_filter = {
        **WELCOME,
        "steps": {
            **WELCOME["steps"],
            "tagged": {"type": "branch", "arms": [{"filter": {"type": "tag", "op": "zz", "value": "x"}}], "else": None},
        },
    }
    with session_factory() as s, pytest.raises(DomainError) as err:
        service.create_journey(s, ws.id, bad_filter)
    assert err.value.field.startswith("definition.steps.tagged.arms[0].filter")


def test_update_contact_sets_properties_stage_and_points_and_issues_a_tiered_coupon(session_factory, ws):
    from sqlalchemy import select

    from suppilo.contacts.models import Contact
    from suppilo.offers import service as offers_service
    from suppilo.offers.schemas import OfferCreate

    with session_factory() as s:
        offers_service.create_offer(
            s,
            ws.id,
            OfferCreate(
                key="winback",
                name="Win-back",
                kind="percent",
                percent=10,
                valid_days=30,
                value_rule={"by": "ltv", "tiers": [{"min": 0, "percent": 10}, {"min": 50000, "percent": 20}]},
            ),
        )
        s.commit()
    definition = {
        "name": "Update",
        "trigger": {"type": "manual"},
        "start": "up",
        "steps": {
            "up": {
                "type": "update_contact",
                "set": {"job_title": "Buyer"},
                "stage": "interest",
                "score_points": 15,
                "next": "again",
            },
            "again": {"type": "update_contact", "score_points": -5, "next": "coupon"},
            "coupon": {"type": "coupon", "offer": "winback", "next": "mail"},
            "mail": {"type": "send_email", "template": "win_back"},
        },
    }
    jid = journey(session_factory, ws.id, definition)
    cid = contact(session_factory, ws.id, "kaisa@example.fi", country="US")
    with session_factory() as s:
        service.enrol_contacts(s, ws.id, jid, [cid], key="x")
        s.commit()
    tick(session_factory)
    with session_factory() as s:
        c = s.scalar(select(Contact).where(Contact.id == cid))
        assert c.job_title == "Buyer" and c.lifecycle_stage == "interest"
        assert c.properties["journey_points"] == 10
    [mail] = messages(session_factory, ws.id, cid)
    assert mail.template_key == "win_back"
    offer = mail.extra["offer"]
    assert offer["discount_percent"] == 0.1 and len(offer["coupon_code"]) >= 8
    row = enrollments(session_factory, jid)[0]
    assert row.status == "ended" and row.end_reason == "completed"


def test_merging_contacts_moves_enrollments_and_erasure_ends_them(session_factory, ws):
    from suppilo.contacts.merge import merge_contacts
    from suppilo.messaging.gdpr import erase_contact

    definition = {**WELCOME, "trigger": {"type": "manual"}}
    jid = journey(session_factory, ws.id, definition)
    keep = contact(session_factory, ws.id, "keep@example.fi")
    dup = contact(session_factory, ws.id, "dup@example.fi")
    other = contact(session_factory, ws.id, "other@example.fi")
    with session_factory() as s:
        service.enrol_contacts(s, ws.id, jid, [keep, dup, other], key="m")
        s.commit()
    tick(session_factory)
    with session_factory() as s:
        merge_contacts(s, ws.id, keep, dup, reason="duplicate", actor="test")
        s.commit()
    rows = enrollments(session_factory, jid)
    assert {r.contact_id for r in rows} == {keep, other}
    assert sorted((r.status, r.end_reason) for r in rows if r.contact_id == keep) == [
        ("active", None),
        ("ended", "merged"),
    ]
    assert len(messages(session_factory, ws.id, keep)) == 2  # the duplicate's welcome mail moved with it
    with session_factory() as s:
        counts = erase_contact(s, ws.id, other)
        s.commit()
    assert counts["journeys_exited"] == 1
    assert [(r.status, r.end_reason) for r in enrollments(session_factory, jid) if r.contact_id == other] == [
        ("ended", "erased")
    ]


def test_a_survey_promoter_gets_the_review_then_the_referral_mail_with_a_personal_link(session_factory, ws):
    from suppilo.journeys import playbooks

    with session_factory() as s:
        jid = playbooks.enable(s, ws.id, "promoter_advocacy").id
        s.commit()
    fan = contact(session_factory, ws.id, "fan@example.com", country="US")
    critic = contact(session_factory, ws.id, "critic@example.com", country="US")
    event(session_factory, ws.id, fan, "Survey Answered", score=10, survey_id=1, kind="nps")
    event(session_factory, ws.id, critic, "Survey Answered", score=3, survey_id=1, kind="nps")
    tick(session_factory)
    assert [e.contact_id for e in enrollments(session_factory, jid)] == [fan]
    tick(session_factory, later(days=7, minutes=1))
    mails = messages(session_factory, ws.id, fan)
    assert [m.template_key for m in mails] == ["review_request", "referral_request"]
    referral = mails[1].extra["referral"]
    assert "/r/" in referral["url"] and referral["code"]


def test_hand_off_task_is_due_in_the_owners_working_hours(session_factory, ws):
    from datetime import UTC, datetime

    from sqlalchemy import select

    from suppilo.contacts.models import Contact
    from suppilo.deals.models import Task
    from suppilo.journeys import playbooks

    with session_factory() as s:
        jid = playbooks.enable(s, ws.id, "sales_handoff", {"response_hours": 4}).id
        s.commit()
    cid = contact(session_factory, ws.id, "lead@example.com", country="US", lifecycle_stage="consideration")
    from suppilo.contacts import service as contacts_service

    with session_factory() as s:
        contacts_service.change_stage(s, s.get(Contact, cid), "decision", reason="qualified", source="api")
        s.commit()
    friday = datetime(2026, 11, 27, 13, 0, tzinfo=UTC)  # 15:00 in Helsinki, the workspace's zone; default hours 9-17
    tick(session_factory, friday)
    with session_factory() as s:
        task = s.scalar(select(Task).where(Task.workspace_id == ws.id, Task.contact_id == cid))
    assert task is not None and task.kind == "call"
    assert task.due_at == datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # Monday 11:00 Helsinki: 2 h on Friday + 2 h
    assert [m.template_key for m in messages(session_factory, ws.id, cid)] == ["sales_handoff_ack"]
    assert enrollments(session_factory, jid)[0].end_reason == "completed"


def test_cross_sell_mail_carries_products_bought_together(session_factory, ws):
    from datetime import UTC, datetime, timedelta

    from suppilo.commerce.models import Order, OrderLine, Product
    from suppilo.journeys import playbooks
    from suppilo.recommendations import service as recommendations_service

    now = datetime.now(UTC)
    buyers = [contact(session_factory, ws.id, f"b{i}@example.com", country="US") for i in range(6)]
    with session_factory() as s:
        for sku, name in (("TENT", "Tent"), ("STOVE", "Stove"), ("MAP", "Map")):
            s.add(Product(workspace_id=ws.id, sku=sku, name=name, price_minor=5000, currency="EUR", url=f"https://shop.example.fi/{sku}",
                          created_at=now, updated_at=now))  # fmt: skip
        s.flush()
        for i, cid in enumerate(buyers):
            skus = ["TENT", "STOVE"] if i < 5 else ["TENT"]
            o = Order(workspace_id=ws.id, external_id=f"x{i}", contact_id=cid, status="completed",
                      placed_at=now - timedelta(days=30 - i), currency="EUR", total_minor=10000)  # fmt: skip
            s.add(o)
            s.flush()
            for sku in skus:
                s.add(
                    OrderLine(
                        workspace_id=ws.id, order_id=o.id, sku=sku, name=sku.title(), quantity=1, unit_price_minor=5000
                    )
                )
        recommendations_service.recompute(s, ws.id, now)
        jid = playbooks.enable(s, ws.id, "cross_sell", {"after_days": 1}).id
        s.commit()
    event(session_factory, ws.id, buyers[5], "Order Completed", order_id="x5")
    tick(session_factory)
    tick(session_factory, later(days=1, minutes=1))
    [mail] = messages(session_factory, ws.id, buyers[5])
    names = [p.get("name") for p in mail.extra["recommendations"]]
    assert mail.template_key == "cross_sell" and names and names[0] == "Stove"  # bought with the tent
    assert "Tent" not in names  # never what the contact already has
    assert enrollments(session_factory, jid)[0].status == "ended"
