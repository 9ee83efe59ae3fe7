"""The referral programme: personal codes, attribution with abuse guards, rewards when the referred contact
reaches the programme's stage, and the leaderboard.

Attribution comes from a form field or page URL (``capture``), a landing URL seen by the tracking snippet (the
touches stream, read by ``process_touches``) or the API. Rewards are granted by ``process_stage_changes``, a
consumer of the stage-change stream; each reward is keyed by referral and side, so a re-read grants nothing twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suppilo.advocacy.models import Referral, ReferralCode, ReferralProgram, ReferralReward
from suppilo.advocacy.schemas import ReferralProgramIn
from suppilo.companies.models import Company
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact, ContactIdentity, ContactMerge, StageChange
from suppilo.db.base import utcnow
from suppilo.engine.lifecycle import position_of
from suppilo.errors import DomainError, NotFound
from suppilo.events import service as events_service
from suppilo.events.models import Event, Touch
from suppilo.events.stream import ensure_cursor, lock_cursor, read
from suppilo.offers import codes

STAGE_CURSOR = "advocacy.stage_changes"
TOUCH_CURSOR = "advocacy.touches"
SCAN_LIMIT = 2000
REFUSAL_REASONS = (
    "self_referral",
    "same_email",
    "same_household",
    "same_device",
    "already_referred",
    "already_converted",
)
_GMAIL = {"gmail.com", "googlemail.com"}
_ADDRESS_KEYS = ("address_line1", "address", "street", "street_address", "address1")
_POSTAL_KEYS = ("postal_code", "postcode", "zip", "zip_code")


class ReferralError(DomainError):
    """A refused referral operation."""


# --- the programme ----------------------------------------------------------------------------------------------


def get_program(session: Session, workspace_id: int) -> ReferralProgram:
    """The programme (disabled defaults, not stored, until one is saved)."""
    row = session.scalar(select(ReferralProgram).where(ReferralProgram.workspace_id == workspace_id))
    if row is not None:
        return row
    return ReferralProgram(
        workspace_id=workspace_id,
        enabled=False,
        reward_stage="customer",
        referrer_reward=None,
        referred_reward=None,
        max_rewards_per_referrer=None,
        updated_at=utcnow(),
    )


def _check_reward(session: Session, workspace_id: int, spec: Any, path: str) -> dict[str, Any] | None:
    if spec is None:
        return None
    data: dict[str, Any] = spec.model_dump()
    if data["kind"] == "coupon":
        from suppilo.offers import service as offers_service

        offers_service.get_offer(session, workspace_id, data["offer_key"], path=f"{path}.offer_key")
    else:
        from suppilo.loyalty import service as loyalty_service

        loyalty_program = loyalty_service.get_program(session, workspace_id)
        if not loyalty_program.enabled:
            raise ReferralError(
                f"{path}.kind", "points need an enabled loyalty programme (PUT /api/v1/loyalty/program)",
                code="loyalty_disabled",
            )  # fmt: skip
        if data["points"] is None and "referral" not in (loyalty_program.bonus_events or {}):
            raise ReferralError(
                f"{path}.points",
                "give points, or configure a 'referral' bonus event in the loyalty programme",
                code="no_referral_bonus",
            )
    return data


def put_program(session: Session, workspace_id: int, data: ReferralProgramIn) -> ReferralProgram:
    """Save the programme after checking the stage, the offers and the points."""
    specs = contacts_service.stage_specs(session, workspace_id)
    if position_of(specs, data.reward_stage) is None:
        funnel = ", ".join(s.key for s in specs if s.kind == "funnel")
        raise ReferralError(
            "reward_stage", f"{data.reward_stage!r} is not a funnel stage (known: {funnel})", code="unknown_stage"
        )
    referrer = _check_reward(session, workspace_id, data.referrer_reward, "referrer_reward")
    referred = _check_reward(session, workspace_id, data.referred_reward, "referred_reward")
    if data.enabled and referrer is None and referred is None:
        raise ReferralError("referrer_reward", "an enabled programme rewards the referrer, the referred or both",
                            code="no_reward")  # fmt: skip
    row = session.scalar(select(ReferralProgram).where(ReferralProgram.workspace_id == workspace_id))
    if row is None:
        row = ReferralProgram(workspace_id=workspace_id)
        session.add(row)
    row.enabled = data.enabled
    row.reward_stage = data.reward_stage
    row.referrer_reward = referrer
    row.referred_reward = referred
    row.max_rewards_per_referrer = data.max_rewards_per_referrer
    row.updated_at = utcnow()
    ensure_cursors(session)
    session.flush()
    return row


def ensure_cursors(session: Session) -> None:
    """Start the consumers' cursors (a new cursor starts at the end of its table: what happens from now on)."""
    ensure_cursor(session, STAGE_CURSOR, StageChange.__table__)
    ensure_cursor(session, TOUCH_CURSOR, Touch.__table__)


# --- codes ------------------------------------------------------------------------------------------------------


def referral_url(public_url: str, code: str) -> str:
    return f"{public_url.rstrip('/')}/r/{code}"


def get_or_create_code(session: Session, workspace_id: int, contact_id: int) -> ReferralCode:
    """The contact's personal code, created on first use (unguessable, with check characters); a contact that
    absorbed merged contacts keeps the oldest code among them, so links already shared stay the same."""
    contact = contacts_service.get_contact(session, workspace_id, contact_id)
    existing = session.scalar(
        select(ReferralCode)
        .where(
            ReferralCode.workspace_id == workspace_id,
            ReferralCode.contact_id.in_(_merged_into(session, workspace_id, contact.id)),
        )
        .order_by(ReferralCode.id)
        .limit(1)
    )
    if existing is not None:
        return existing
    ensure_cursors(session)
    ins = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(ReferralCode)
    for _ in range(5):
        stmt = (
            ins.values(workspace_id=workspace_id, contact_id=contact.id, code=codes.new_code(), created_at=utcnow())
            .on_conflict_do_nothing()
            .returning(ReferralCode.id)
        )
        if session.execute(stmt).scalar() is not None:
            break
    row = session.scalar(
        select(ReferralCode).where(ReferralCode.workspace_id == workspace_id, ReferralCode.contact_id == contact.id)
    )
    if row is None:
        raise ReferralError("contact_id", "no free referral code could be drawn", code="code_collision")
    return row


def code_owner(session: Session, workspace_id: int, code: str) -> ReferralCode:
    """The code's row; a typo is refused before the lookup (``bad_checksum``), an unknown code is NotFound."""
    norm = codes.normalize(code)
    if not codes.is_valid(norm):
        raise ReferralError("code", "this is not a valid referral code (mistyped?)", code="bad_checksum")
    row = session.scalar(
        select(ReferralCode).where(ReferralCode.workspace_id == workspace_id, ReferralCode.code == norm)
    )
    if row is None:
        raise NotFound("code", "no such referral code in this workspace")
    return row


def find_code(session: Session, code: str) -> ReferralCode | None:
    """The code across workspaces (for the public ``/r/{code}`` redirect), or None."""
    norm = codes.normalize(code)
    if not codes.is_valid(norm):
        return None
    return session.scalar(select(ReferralCode).where(ReferralCode.code == norm).order_by(ReferralCode.id).limit(1))


def referral_context(session: Session, workspace_id: int, contact_id: int, *, public_url: str) -> dict[str, Any]:
    """The ``referral`` template variable for a contact: its code, printable code and link."""
    row = get_or_create_code(session, workspace_id, contact_id)
    program = get_program(session, workspace_id)
    return {
        "code": codes.display(row.code),
        "url": referral_url(public_url, row.code),
        "reward": reward_text(session, workspace_id, program.referrer_reward) if program.enabled else None,
    }


def reward_text(session: Session, workspace_id: int, spec: dict[str, Any] | None) -> str | None:
    """A reward in words for mails ("500 points", or the offer's name)."""
    if not spec:
        return None
    if spec["kind"] == "coupon":
        from suppilo.offers import service as offers_service

        return str(offers_service.get_offer(session, workspace_id, spec["offer_key"]).name)
    points = spec.get("points")
    if points is None:
        from suppilo.loyalty import service as loyalty_service

        points = (loyalty_service.get_program(session, workspace_id).bonus_events or {}).get("referral")
    return f"{points} points" if points else None


def ref_from_url(url: str | None) -> str | None:
    """The ``ref`` query parameter of a URL, if any."""
    if not url or "ref=" not in url:
        return None
    try:
        values = parse_qs(urlsplit(url).query).get("ref")
    except ValueError:
        return None
    return values[0][:40] if values else None


# --- guards -----------------------------------------------------------------------------------------------------


def normalize_email_variant(email: str | None) -> str | None:
    """One spelling per mailbox: lower case, ``+tag`` dropped, and for Gmail the dots dropped and
    googlemail.com read as gmail.com."""
    if not email or "@" not in email:
        return None
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in _GMAIL:
        local = local.replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def _norm_text(value: Any) -> str:
    return re.sub(r"[^0-9a-z]+", "", str(value).lower()) if value not in (None, "") else ""


def _address_of(props: dict[str, Any] | None) -> tuple[str, str] | None:
    props = props or {}
    street = next((_norm_text(props.get(k)) for k in _ADDRESS_KEYS if props.get(k)), "")
    postal = next((_norm_text(props.get(k)) for k in _POSTAL_KEYS if props.get(k)), "")
    return (street, postal) if street and postal else None


def _household(session: Session, contact: Contact) -> tuple[str, str] | None:
    own = _address_of(contact.properties)
    if own is not None or contact.company_id is None:
        return own
    company = session.scalar(
        select(Company).where(Company.workspace_id == contact.workspace_id, Company.id == contact.company_id)
    )
    return _address_of(company.properties) if company is not None else None


def _devices(session: Session, workspace_id: int, contact_id: int) -> set[str]:
    ids = set(
        session.scalars(
            select(ContactIdentity.value).where(
                ContactIdentity.workspace_id == workspace_id,
                ContactIdentity.contact_id == contact_id,
                ContactIdentity.kind == "anonymous_id",
            )
        )
    )
    ids.update(
        v
        for v in session.scalars(
            select(Event.anonymous_id)
            .where(Event.workspace_id == workspace_id, Event.contact_id == contact_id, Event.anonymous_id.is_not(None))
            .distinct()
            .limit(1000)
        )
        if v
    )
    return ids


def refusal_reason(session: Session, workspace_id: int, referrer: Contact, referred: Contact) -> tuple[str, str] | None:
    """Why ``referred`` cannot count as ``referrer``'s referral (reason, detail), or None."""
    if referrer.id == referred.id:
        return "self_referral", "the code's owner used their own code"
    a, b = normalize_email_variant(referrer.email), normalize_email_variant(referred.email)
    if a and b and a == b:
        return "same_email", f"{referred.email} is a variant of the referrer's address"
    ha, hb = _household(session, referrer), _household(session, referred)
    if ha and hb and ha == hb:
        return "same_household", "both contacts have the same postal address"
    shared = _devices(session, workspace_id, referrer.id) & _devices(session, workspace_id, referred.id)
    if shared:
        return "same_device", "both contacts were seen on the same device (anonymous id)"
    return None


# --- attribution ------------------------------------------------------------------------------------------------


def current_contact_id(session: Session, workspace_id: int, contact_id: int) -> int:
    """The contact that ``contact_id`` lives on as after merges (itself when never merged)."""
    seen = {contact_id}
    while True:
        kept = session.scalar(
            select(ContactMerge.contact_id)
            .where(ContactMerge.workspace_id == workspace_id, ContactMerge.merged_id == contact_id)
            .order_by(ContactMerge.id.desc())
            .limit(1)
        )
        if kept is None or kept in seen:
            return contact_id
        seen.add(kept)
        contact_id = kept


def _merged_into(session: Session, workspace_id: int, contact_id: int) -> set[int]:
    """``contact_id`` and every contact merged into it, transitively."""
    out = {contact_id}
    frontier = [contact_id]
    while frontier:
        rows = session.scalars(
            select(ContactMerge.merged_id).where(
                ContactMerge.workspace_id == workspace_id, ContactMerge.contact_id.in_(frontier)
            )
        ).all()
        frontier = [r for r in rows if r not in out]
        out.update(frontier)
    return out


def _refuse(
    session: Session, workspace_id: int, code: ReferralCode, referred_id: int, source: str, reason: str, detail: str,
    now: datetime,
) -> Referral:  # fmt: skip
    row = Referral(
        workspace_id=workspace_id,
        referrer_id=code.contact_id,
        referred_id=referred_id,
        code=code.code,
        source=source,
        status="refused",
        reason=reason,
        detail=detail[:500],
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def attribute(
    session: Session,
    workspace_id: int,
    *,
    code: str,
    referred_contact_id: int,
    source: str,
    now: datetime | None = None,
) -> Referral:
    """Attribute a contact to the owner of ``code``: an ``attributed`` referral, the existing one when this pair
    was attributed before, or a ``refused`` row with the reason (self-referral, an email variant, the same
    household or device, already referred by someone else, already past the reward stage).

    Raises ReferralError ``bad_checksum`` / NotFound for a mistyped or unknown code, NotFound for a foreign contact.
    """
    now = now or utcnow()
    owner = code_owner(session, workspace_id, code)
    referred = contacts_service.get_contact(
        session, workspace_id, current_contact_id(session, workspace_id, referred_contact_id)
    )
    referrer = session.scalar(
        select(Contact).where(
            Contact.workspace_id == workspace_id,
            Contact.id == current_contact_id(session, workspace_id, owner.contact_id),
        )
    )
    if referrer is None:
        raise NotFound("code", "the owner of this referral code no longer exists")
    existing = session.scalar(
        select(Referral).where(
            Referral.workspace_id == workspace_id,
            Referral.referred_id.in_(_merged_into(session, workspace_id, referred.id)),
            Referral.status != "refused",
        )
    )
    if existing is not None:
        if existing.referrer_id == referrer.id:
            return existing
        return _refuse(session, workspace_id, owner, referred.id, source, "already_referred",
                       f"already referred by contact {existing.referrer_id}", now)  # fmt: skip
    refusal = refusal_reason(session, workspace_id, referrer, referred)
    if refusal is not None:
        return _refuse(session, workspace_id, owner, referred.id, source, refusal[0], refusal[1], now)
    program = get_program(session, workspace_id)
    specs = contacts_service.stage_specs(session, workspace_id)
    target = position_of(specs, program.reward_stage)
    reached = position_of(specs, referred.lifecycle_stage)
    if target is not None and reached is not None and reached >= target:
        return _refuse(session, workspace_id, owner, referred.id, source, "already_converted",
                       f"the contact already is {referred.lifecycle_stage!r}", now)  # fmt: skip
    ensure_cursors(session)
    row = Referral(
        workspace_id=workspace_id,
        referrer_id=referrer.id,
        referred_id=referred.id,
        code=owner.code,
        source=source,
        status="attributed",
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # another request attributed this contact meanwhile
        again = session.scalar(
            select(Referral).where(
                Referral.workspace_id == workspace_id, Referral.referred_id == referred.id, Referral.status != "refused"
            )
        )
        if again is None:
            raise
        if again.referrer_id == referrer.id:
            return again
        return _refuse(session, workspace_id, owner, referred.id, source, "already_referred",
                       f"already referred by contact {again.referrer_id}", now)  # fmt: skip
    events_service.record_event(
        session, workspace_id, referrer.id, "Referral Made",
        {"referral_id": row.id, "referred_contact_id": referred.id, "source": source}, now,
        message_id=f"referral-made:{row.id}",
    )  # fmt: skip
    events_service.record_event(
        session, workspace_id, referred.id, "Referred",
        {"referral_id": row.id, "referrer_contact_id": referrer.id, "source": source}, now,
        message_id=f"referred:{row.id}",
    )  # fmt: skip
    workspace_settings = _workspace_settings(session, workspace_id)
    contacts_service.apply_rule(
        session, referrer, "referral_made", rules=contacts_service.lifecycle_rules(workspace_settings), stages=specs,
        at=now, detail=f"referral {row.id}",
    )  # fmt: skip
    return row


def _workspace_settings(session: Session, workspace_id: int) -> dict[str, Any]:
    from suppilo.workspaces import service as workspaces_service

    return dict(workspaces_service.get_workspace(session, workspace_id).settings or {})


def attribute_quietly(
    session: Session, workspace_id: int, *, code: str | None, referred_contact_id: int, source: str
) -> Referral | None:
    """``attribute`` for hooks (forms, landing URLs): a mistyped or unknown code is ignored instead of raised."""
    if not code:
        return None
    try:
        with session.begin_nested():
            return attribute(session, workspace_id, code=code, referred_contact_id=referred_contact_id, source=source)
    except DomainError:
        return None


def attribute_from_form(
    session: Session, workspace_id: int, contact_id: int, *, ref: str | None, page_url: str | None
) -> Referral | None:
    """The capture hook: a ``ref`` form field, else a ``ref`` parameter of the page the form was on."""
    return attribute_quietly(
        session, workspace_id, code=ref or ref_from_url(page_url), referred_contact_id=contact_id, source="form"
    )


def list_referrals(
    session: Session, workspace_id: int, *, status: str | None = None, referrer_id: int | None = None, limit: int = 100
) -> list[Referral]:
    q = select(Referral).where(Referral.workspace_id == workspace_id)
    if status:
        q = q.where(Referral.status == status)
    if referrer_id is not None:
        q = q.where(Referral.referrer_id == referrer_id)
    return list(session.scalars(q.order_by(Referral.id.desc()).limit(limit)))


def rewards_of(session: Session, workspace_id: int, referral_id: int) -> list[ReferralReward]:
    return list(
        session.scalars(
            select(ReferralReward)
            .where(ReferralReward.workspace_id == workspace_id, ReferralReward.referral_id == referral_id)
            .order_by(ReferralReward.id)
        )
    )


# --- rewards ----------------------------------------------------------------------------------------------------


def _grant_one(
    session: Session, referral: Referral, recipient: str, contact_id: int, spec: dict[str, Any], now: datetime
) -> None:
    ws = referral.workspace_id
    done = session.scalar(
        select(ReferralReward.id).where(
            ReferralReward.workspace_id == ws,
            ReferralReward.referral_id == referral.id,
            ReferralReward.recipient == recipient,
        )
    )
    if done is not None:
        return
    key = f"referral:{referral.id}:{recipient}"
    reward = ReferralReward(
        workspace_id=ws, referral_id=referral.id, recipient=recipient, contact_id=contact_id, kind=spec["kind"],
        status="granted", created_at=now,
    )  # fmt: skip
    try:
        with session.begin_nested():
            if spec["kind"] == "points":
                from suppilo.loyalty import service as loyalty_service

                entry = loyalty_service.award_points(
                    session, ws, contact_id, idempotency_key=key, points=spec.get("points"),
                    event=None if spec.get("points") else "referral", reason=f"referral {referral.id}", now=now,
                )  # fmt: skip
                reward.points = entry.points
            else:
                from suppilo.offers import service as offers_service

                coupon = offers_service.issue_coupon(
                    session, ws, offer_key=spec["offer_key"], contact_id=contact_id, idempotency_key=key, now=now
                )
                reward.coupon_code = coupon.code
    except DomainError as exc:
        reward.status = "failed"
        reward.error = f"{exc.code}: {exc.message}"[:500]
    session.add(reward)
    session.flush()
    if reward.status == "granted":
        events_service.record_event(
            session, ws, contact_id, "Referral Reward Granted",
            {"referral_id": referral.id, "recipient": recipient, "kind": reward.kind, "points": reward.points,
             "coupon_code": reward.coupon_code}, now, message_id=f"referral-reward:{referral.id}:{recipient}",
        )  # fmt: skip


def convert(session: Session, referral: Referral, program: ReferralProgram, now: datetime | None = None) -> bool:
    """Mark the referral converted and grant the programme's rewards (each once); False when it was not pending."""
    if referral.status != "attributed":
        return False
    now = now or utcnow()
    ws = referral.workspace_id
    referral.status = "converted"
    referral.converted_at = now
    referrer_id = current_contact_id(session, ws, referral.referrer_id)
    referred_id = current_contact_id(session, ws, referral.referred_id)
    session.flush()
    if program.referrer_reward:
        cap = program.max_rewards_per_referrer
        given = session.scalar(
            select(func.count(ReferralReward.id)).where(
                ReferralReward.workspace_id == ws,
                ReferralReward.recipient == "referrer",
                ReferralReward.contact_id == referrer_id,
                ReferralReward.status == "granted",
            )
        )
        if cap is None or int(given or 0) < cap:
            if session.get(Contact, referrer_id) is not None:
                _grant_one(session, referral, "referrer", referrer_id, program.referrer_reward, now)
        else:
            referral.detail = f"the referrer reached the cap of {cap} rewards"
    if program.referred_reward and session.get(Contact, referred_id) is not None:
        _grant_one(session, referral, "referred", referred_id, program.referred_reward, now)
    return True


def process_stage_changes(
    session: Session, *, limit: int = SCAN_LIMIT, clock: Callable[[], float] | None = None
) -> int:
    """Read new stage changes; a referred contact reaching the programme's stage (or a later funnel stage) converts
    its referral and gets the rewards. Returns how many rows were read."""
    t = StageChange.__table__
    cursor = lock_cursor(session, STAGE_CURSOR, t)
    kwargs: dict[str, Any] = {"clock": clock} if clock else {}
    rows = read(session, cursor, t, [t.c.workspace_id, t.c.contact_id, t.c.to_stage], limit, **kwargs)
    by_ws: dict[int, set[tuple[int, str]]] = {}
    for _, ws, contact_id, to_stage in rows:
        by_ws.setdefault(int(ws), set()).add((int(contact_id), str(to_stage)))
    for ws, moves in sorted(by_ws.items()):
        program = session.scalar(select(ReferralProgram).where(ReferralProgram.workspace_id == ws))
        if program is None or not program.enabled:
            continue
        specs = contacts_service.stage_specs(session, ws)
        target = position_of(specs, program.reward_stage)
        if target is None:
            continue
        for contact_id, to_stage in sorted(moves):
            reached = position_of(specs, to_stage)
            if reached is None or reached < target:
                continue
            for referral in _pending_for(session, ws, contact_id):
                convert(session, referral, program)
    return len(rows)


def _pending_for(session: Session, workspace_id: int, contact_id: int) -> Iterable[Referral]:
    ids = _merged_into(session, workspace_id, contact_id)
    return list(
        session.scalars(
            select(Referral)
            .where(
                Referral.workspace_id == workspace_id,
                Referral.referred_id.in_(ids),
                Referral.status == "attributed",
            )
            .with_for_update()
        )
    )


def process_touches(session: Session, *, limit: int = SCAN_LIMIT, clock: Callable[[], float] | None = None) -> int:
    """Read new touches; a landing URL carrying ``ref=CODE`` attributes the visitor's contact. Returns rows read."""
    t = Touch.__table__
    cursor = lock_cursor(session, TOUCH_CURSOR, t)
    kwargs: dict[str, Any] = {"clock": clock} if clock else {}
    rows = read(session, cursor, t, [t.c.workspace_id, t.c.contact_id, t.c.landing_url], limit, **kwargs)
    for _, ws, contact_id, url in rows:
        ref = ref_from_url(url)
        if ref and session.get(Contact, int(contact_id)) is not None:
            attribute_quietly(session, int(ws), code=ref, referred_contact_id=int(contact_id), source="landing_url")
    return len(rows)


# --- leaderboard ------------------------------------------------------------------------------------------------


def leaderboard(session: Session, workspace_id: int, *, limit: int = 50) -> list[dict[str, Any]]:
    """Referrers by converted referrals, then by referrals: counts, refusals and rewards received."""
    counts: dict[int, dict[str, int]] = {}
    for referrer_id, status, n in session.execute(
        select(Referral.referrer_id, Referral.status, func.count(Referral.id))
        .where(Referral.workspace_id == workspace_id)
        .group_by(Referral.referrer_id, Referral.status)
    ):
        row = counts.setdefault(int(referrer_id), {"referrals": 0, "converted": 0, "refused": 0})
        if status == "refused":
            row["refused"] += int(n)
        else:
            row["referrals"] += int(n)
            if status == "converted":
                row["converted"] += int(n)
    rewards: dict[int, tuple[int, int]] = {
        int(cid): (int(n), int(p or 0))
        for cid, n, p in session.execute(
            select(ReferralReward.contact_id, func.count(ReferralReward.id), func.sum(ReferralReward.points))
            .where(
                ReferralReward.workspace_id == workspace_id,
                ReferralReward.recipient == "referrer",
                ReferralReward.status == "granted",
            )
            .group_by(ReferralReward.contact_id)
        )
    }
    order = sorted(counts, key=lambda c: (-counts[c]["converted"], -counts[c]["referrals"], c))[:limit]
    people = {
        c.id: c
        for c in session.scalars(select(Contact).where(Contact.workspace_id == workspace_id, Contact.id.in_(order)))
    }
    out = []
    for cid in order:
        person = people.get(cid)
        name = " ".join(x for x in ((person.first_name, person.last_name) if person else ()) if x)
        out.append(
            {
                "contact_id": cid,
                "email": person.email if person else None,
                "name": name,
                **counts[cid],
                "rewards": rewards.get(cid, (0, 0))[0],
                "reward_points": rewards.get(cid, (0, 0))[1],
            }
        )
    return out
