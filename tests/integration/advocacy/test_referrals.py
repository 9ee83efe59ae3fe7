"""Referrals on the database: codes, attribution guards with recorded reasons, rewards granted exactly once by the
stage-change consumer, the leaderboard."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from suppilo.advocacy import service
from suppilo.advocacy.models import Referral, ReferralReward
from suppilo.advocacy.schemas import ReferralProgramIn
from suppilo.advocacy.tasks import run_advocacy
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import ContactIdentity
from suppilo.db.base import utcnow
from suppilo.errors import DomainError, NotFound
from suppilo.events.models import Event
from suppilo.loyalty import service as loyalty
from suppilo.loyalty.models import LoyaltyEntry
from suppilo.loyalty.schemas import ProgramIn
from suppilo.offers import codes
from suppilo.offers import service as offers_service
from suppilo.offers.models import Coupon
from suppilo.offers.schemas import OfferCreate
from tests.integration.advocacy.helpers import contact, unique_email


def test_codes_are_personal_stable_and_checksummed(session, workspace) -> None:
    a = contact(session, workspace.id, unique_email("a"))
    b = contact(session, workspace.id, unique_email("b"))
    code_a = service.get_or_create_code(session, workspace.id, a.id).code
    assert service.get_or_create_code(session, workspace.id, a.id).code == code_a
    assert service.get_or_create_code(session, workspace.id, b.id).code != code_a
    assert codes.is_valid(code_a) and len(code_a) == codes.CODE_LENGTH
    # a typo is caught by the check characters, before the database is asked
    typo = ("3" if code_a[0] != "3" else "4") + code_a[1:]
    with pytest.raises(DomainError) as err:
        service.attribute(session, workspace.id, code=typo, referred_contact_id=b.id, source="api")
    assert err.value.code == "bad_checksum"
    with pytest.raises(NotFound):
        service.attribute(session, workspace.id, code=codes.new_code(), referred_contact_id=b.id, source="api")
    # typed in lower case with dashes it still works
    ref = service.attribute(
        session, workspace.id, code=codes.display(code_a).lower(), referred_contact_id=b.id, source="api"
    )
    assert (ref.status, ref.referrer_id, ref.referred_id) == ("attributed", a.id, b.id)
    assert contacts_service.get_contact(session, workspace.id, a.id).lifecycle_stage == "advocate"  # referral_made


def test_email_variants_are_one_mailbox() -> None:
    norm = service.normalize_email_variant
    assert norm("Anna.Korhonen+deals@GMail.com") == norm("annakorhonen@googlemail.com") == "annakorhonen@gmail.com"
    assert norm("anna.k+x@example.fi") == "anna.k@example.fi"
    assert norm("anna.k@example.fi") != norm("annak@example.fi")  # dots matter outside Gmail


def test_self_referral_and_gmail_variant_are_refused_with_the_reason(session, workspace) -> None:
    ws = workspace.id
    owner = contact(session, ws, "anna.korhonen@gmail.com")
    code = service.get_or_create_code(session, ws, owner.id).code
    self_ref = service.attribute(session, ws, code=code, referred_contact_id=owner.id, source="api")
    assert (self_ref.status, self_ref.reason) == ("refused", "self_referral")
    variant = contact(session, ws, "annakorhonen+2@googlemail.com")
    refused = service.attribute(session, ws, code=code, referred_contact_id=variant.id, source="form")
    assert (refused.status, refused.reason, refused.source) == ("refused", "same_email", "form")
    rows = session.scalars(select(Referral).where(Referral.workspace_id == ws).order_by(Referral.id)).all()
    assert [(r.status, r.reason) for r in rows] == [("refused", "self_referral"), ("refused", "same_email")]
    # a real friend still counts after the refusals
    friend = contact(session, ws, unique_email("friend"))
    assert service.attribute(session, ws, code=code, referred_contact_id=friend.id, source="api").status == "attributed"


def test_same_household_and_same_device_are_refused(session, workspace) -> None:
    ws = workspace.id
    home = {"address_line1": "Aleksanterinkatu 5 B 12", "postal_code": "00100"}
    owner = contact(session, ws, unique_email("o"), properties=home)
    code = service.get_or_create_code(session, ws, owner.id).code
    spouse = contact(session, ws, unique_email("s"), properties={"address": "aleksanterinkatu 5b 12", "zip": "00100"})
    assert service.attribute(session, ws, code=code, referred_contact_id=spouse.id, source="api").reason == (
        "same_household"
    )
    neighbour = contact(session, ws, unique_email("n"), properties={"address": "Aleksanterinkatu 7", "zip": "00100"})
    assert service.attribute(session, ws, code=code, referred_contact_id=neighbour.id, source="api").status == (
        "attributed"
    )
    owner2 = contact(session, ws, unique_email("o2"))
    code2 = service.get_or_create_code(session, ws, owner2.id).code
    twin = contact(session, ws, unique_email("t"))
    now = utcnow()
    session.add(
        ContactIdentity(workspace_id=ws, kind="anonymous_id", value="browser-1", contact_id=owner2.id, created_at=now)
    )
    session.add(
        Event(
            workspace_id=ws,
            contact_id=twin.id,
            anonymous_id="browser-1",
            kind="page",
            name="Home",
            properties={},
            context={},
            occurred_at=now,
            received_at=now,
            message_id="dev-test-1",
        )
    )
    session.flush()
    refused = service.attribute(session, ws, code=code2, referred_contact_id=twin.id, source="api")
    assert (refused.status, refused.reason) == ("refused", "same_device")


def test_already_referred_and_already_customer_are_refused(session, workspace) -> None:
    ws = workspace.id
    first = contact(session, ws, unique_email("f"))
    second = contact(session, ws, unique_email("s"))
    c1 = service.get_or_create_code(session, ws, first.id).code
    c2 = service.get_or_create_code(session, ws, second.id).code
    lead = contact(session, ws, unique_email("lead"))
    ref = service.attribute(session, ws, code=c1, referred_contact_id=lead.id, source="api")
    again = service.attribute(session, ws, code=c1, referred_contact_id=lead.id, source="landing_url")
    assert again.id == ref.id  # the same pair again is the same referral
    other = service.attribute(session, ws, code=c2, referred_contact_id=lead.id, source="api")
    assert (other.status, other.reason) == ("refused", "already_referred")
    buyer = contact(session, ws, unique_email("buyer"), stage="customer")
    late = service.attribute(session, ws, code=c1, referred_contact_id=buyer.id, source="api")
    assert (late.status, late.reason) == ("refused", "already_converted")


def _programme(session, ws) -> None:
    offers_service.create_offer(
        session,
        ws,
        OfferCreate(key="friend-10", name="10 € for a friend", kind="fixed", amount_minor=1000, currency="EUR"),
    )
    loyalty.put_program(session, ws, ProgramIn(enabled=True, bonus_events={"referral": 300}))
    service.put_program(
        session,
        ws,
        ReferralProgramIn.model_validate(
            {
                "reward_stage": "customer",
                "referrer_reward": {"kind": "points"},
                "referred_reward": {"kind": "coupon", "offer_key": "friend-10"},
            }
        ),
    )


def test_programme_is_validated(session, workspace) -> None:
    ws = workspace.id
    with pytest.raises(DomainError) as err:
        service.put_program(session, ws, ReferralProgramIn(reward_stage="nirvana", referrer_reward=None))
    assert err.value.field == "reward_stage"
    with pytest.raises(DomainError) as err:
        service.put_program(
            session, ws, ReferralProgramIn.model_validate({"referrer_reward": {"kind": "coupon", "offer_key": "nope"}})
        )
    assert err.value.field == "referrer_reward.offer_key"
    with pytest.raises(DomainError) as err:  # points without a loyalty programme
        service.put_program(session, ws, ReferralProgramIn.model_validate({"referrer_reward": {"kind": "points"}}))
    assert err.value.code == "loyalty_disabled"
    loyalty.put_program(session, ws, ProgramIn(enabled=True, bonus_events={"review": 10}))
    with pytest.raises(DomainError) as err:  # points from the loyalty bonus, but no such bonus is configured
        service.put_program(session, ws, ReferralProgramIn.model_validate({"referrer_reward": {"kind": "points"}}))
    assert err.value.code == "no_referral_bonus"
    saved = service.put_program(
        session, ws, ReferralProgramIn.model_validate({"referrer_reward": {"kind": "points", "points": 250}})
    )
    assert (saved.enabled, saved.referrer_reward, saved.referred_reward) == (
        True,
        {"kind": "points", "points": 250, "offer_key": None},
        None,
    )
    with pytest.raises(DomainError) as err:
        service.put_program(session, ws, ReferralProgramIn(enabled=True))
    assert err.value.code == "no_reward"


def test_reward_granted_exactly_once_when_the_referred_contact_becomes_a_customer(session_factory, workspace) -> None:
    ws = workspace.id
    with session_factory() as s:
        _programme(s, ws)
        referrer = contact(s, ws, unique_email("advocate"))
        friend = contact(s, ws, unique_email("friend"))
        code = service.get_or_create_code(s, ws, referrer.id).code
        ref_id = service.attribute(s, ws, code=code, referred_contact_id=friend.id, source="api").id
        rid, fid = referrer.id, friend.id
        s.commit()
    with session_factory() as s:  # a step short of the stage: nothing yet
        contacts_service.move_contact_stage(s, ws, fid, "decision", reason="demo", actor=None)
        s.commit()
    run_advocacy(session_factory)
    with session_factory() as s:
        assert s.get(Referral, ref_id).status == "attributed"
        contacts_service.move_contact_stage(s, ws, fid, "customer", reason="first order", actor=None)
        s.commit()
    run_advocacy(session_factory)
    run_advocacy(session_factory)
    with session_factory() as s:  # a later stage does not pay again
        contacts_service.move_contact_stage(s, ws, fid, "loyal", reason="repeat", actor=None)
        s.commit()
    run_advocacy(session_factory)
    with session_factory() as s:
        ref = s.get(Referral, ref_id)
        assert ref.status == "converted" and ref.converted_at is not None
        rewards = s.scalars(select(ReferralReward).where(ReferralReward.referral_id == ref_id)).all()
        assert sorted((r.recipient, r.kind, r.status) for r in rewards) == [
            ("referred", "coupon", "granted"),
            ("referrer", "points", "granted"),
        ]
        entries = s.scalars(
            select(LoyaltyEntry).where(LoyaltyEntry.workspace_id == ws, LoyaltyEntry.contact_id == rid)
        ).all()
        assert [(e.kind, e.points) for e in entries] == [("bonus", 300)]
        assert loyalty.balance(s, ws, rid)["points"] == 300
        coupons = s.scalars(select(Coupon).where(Coupon.workspace_id == ws, Coupon.contact_id == fid)).all()
        assert len(coupons) == 1 and coupons[0].code == next(r.coupon_code for r in rewards if r.kind == "coupon")
        granted = s.scalar(
            select(func.count(Event.id)).where(Event.workspace_id == ws, Event.name == "Referral Reward Granted")
        )
        assert granted == 2
        board = service.leaderboard(s, ws)
        assert [(r["contact_id"], r["referrals"], r["converted"], r["rewards"], r["reward_points"]) for r in board] == [
            (rid, 1, 1, 1, 300)
        ]


def test_reward_follows_a_merged_referred_contact_and_respects_the_cap(session_factory, workspace) -> None:
    from suppilo.contacts.merge import merge_contacts

    ws = workspace.id
    with session_factory() as s:
        _programme(s, ws)
        program = service.get_program(s, ws)
        program.max_rewards_per_referrer = 1
        referrer = contact(s, ws, unique_email("adv"))
        anon = contact(s, ws, None)
        known = contact(s, ws, unique_email("known"))
        other = contact(s, ws, unique_email("other"))
        code = service.get_or_create_code(s, ws, referrer.id).code
        first = service.attribute(s, ws, code=code, referred_contact_id=anon.id, source="landing_url").id
        second = service.attribute(s, ws, code=code, referred_contact_id=other.id, source="api").id
        merge_contacts(s, ws, known.id, anon.id, reason="identity resolution", actor="test")
        kid, oid, rid = known.id, other.id, referrer.id
        s.commit()
    with session_factory() as s:
        contacts_service.move_contact_stage(s, ws, kid, "customer", reason="order", actor=None)
        contacts_service.move_contact_stage(s, ws, oid, "customer", reason="order", actor=None)
        s.commit()
    run_advocacy(session_factory)
    with session_factory() as s:
        assert s.get(Referral, first).status == s.get(Referral, second).status == "converted"
        referrer_rewards = s.scalars(
            select(ReferralReward).where(ReferralReward.workspace_id == ws, ReferralReward.recipient == "referrer")
        ).all()
        assert len(referrer_rewards) == 1 and referrer_rewards[0].contact_id == rid
        referred = {
            r.contact_id
            for r in s.scalars(
                select(ReferralReward).where(ReferralReward.workspace_id == ws, ReferralReward.recipient == "referred")
            )
        }
        assert referred == {kid, oid}  # the merged visitor's reward went to the contact it became
        assert loyalty.balance(s, ws, rid)["points"] == 300


def test_tenant_isolation(session, workspace, other_workspace) -> None:
    owner = contact(session, workspace.id, unique_email("o"))
    code = service.get_or_create_code(session, workspace.id, owner.id).code
    stranger = contact(session, other_workspace.id, unique_email("x"))
    with pytest.raises(NotFound):
        service.attribute(session, other_workspace.id, code=code, referred_contact_id=stranger.id, source="api")
    with pytest.raises(NotFound):
        service.attribute(session, workspace.id, code=code, referred_contact_id=stranger.id, source="api")
    assert service.leaderboard(session, other_workspace.id) == []
    assert utcnow() - owner.created_at < timedelta(minutes=5)


def test_code_of_a_merged_referrer_keeps_working_and_mail_context(session, workspace) -> None:
    from suppilo.contacts.merge import merge_contacts

    ws = workspace.id
    loyalty.put_program(session, ws, ProgramIn(enabled=True, bonus_events={"referral": 250}))
    service.put_program(
        session, ws, ReferralProgramIn.model_validate({"referrer_reward": {"kind": "points"}, "enabled": True})
    )
    old = contact(session, ws, unique_email("old"))
    kept = contact(session, ws, unique_email("kept"))
    code = service.get_or_create_code(session, ws, old.id).code
    merge_contacts(session, ws, kept.id, old.id, reason="duplicate", actor="test")
    assert service.get_or_create_code(session, ws, kept.id).code == code  # the shared link stays the same
    friend = contact(session, ws, unique_email("friend"))
    ref = service.attribute(session, ws, code=code, referred_contact_id=friend.id, source="api")
    assert (ref.status, ref.referrer_id) == ("attributed", kept.id)
    ctx = service.referral_context(session, ws, kept.id, public_url="https://crm.example.fi/")
    assert ctx == {"code": codes.display(code), "url": f"https://crm.example.fi/r/{code}", "reward": "250 points"}
