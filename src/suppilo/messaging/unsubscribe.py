"""Signed mail tokens, RFC 8058 one-click unsubscribe and the preference centre.

Tokens are ``base64url(payload).base64url(HMAC-SHA256(key, payload)[:16])`` with a key derived per purpose from
the installation secret, so an unsubscribe token cannot be replayed as a click token. An altered or forged token
verifies as None and changes nothing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.consent import service as consent_service
from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.events import service as events_service
from suppilo.messaging import suppression
from suppilo.workspaces.models import Workspace

# Links in a mail work at least this long (RFC 8058 wants them lasting; CAN-SPAM 30 days; we promise 60).
UNSUBSCRIBE_VALID_DAYS = 365
DEFAULT_TOPICS = ("newsletter", "offers", "product_updates")


@functools.lru_cache(maxsize=64)
def _key(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode(), f"suppilo-mail-token:{purpose}".encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_token(secret: str, purpose: str, fields: tuple[int, ...]) -> str:
    """A token carrying integer ``fields``, signed for ``purpose``."""
    payload = ".".join(str(int(f)) for f in fields).encode()
    mac = hmac.digest(_key(secret, purpose), payload, "sha256")[:16]  # one call into OpenSSL, same MAC as hmac.new
    return f"{_b64(payload)}.{_b64(mac)}"


def verify_token(secret: str, purpose: str, token: str, arity: int) -> tuple[int, ...] | None:
    """The fields of a valid token of ``purpose`` with ``arity`` fields, or None."""
    if not token or len(token) > 300 or token.count(".") != 1:
        return None
    head, tail = token.split(".", 1)
    try:
        payload = _unb64(head)
        mac = _unb64(tail)
    except (ValueError, TypeError):
        return None
    # Only the canonical spelling is valid: base64 ignores the spare bits of its last character, so without this
    # check a token altered in that character would still verify.
    if _b64(payload) != head or _b64(mac) != tail:
        return None
    expected = hmac.new(_key(secret, purpose), payload, hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        fields = tuple(int(p) for p in payload.decode("ascii").split("."))
    except (UnicodeDecodeError, ValueError):
        return None
    return fields if len(fields) == arity else None


@dataclass(frozen=True, slots=True)
class UnsubscribeClaim:
    """Who a valid unsubscribe token speaks for."""

    workspace_id: int
    contact_id: int
    outbox_id: int
    issued_at: datetime


def unsubscribe_token(secret: str, workspace_id: int, contact_id: int, outbox_id: int, issued_at: datetime) -> str:
    """The token of one message's unsubscribe link."""
    return sign_token(secret, "unsubscribe", (workspace_id, contact_id, outbox_id, int(issued_at.timestamp())))


def parse_unsubscribe_token(
    secret: str, token: str, *, now: datetime | None = None, valid_days: int = UNSUBSCRIBE_VALID_DAYS
) -> UnsubscribeClaim | None:
    """The claim of a valid, unexpired token, or None."""
    fields = verify_token(secret, "unsubscribe", token, 4)
    if fields is None:
        return None
    issued = datetime.fromtimestamp(fields[3], UTC)
    if (now or utcnow()) > issued + timedelta(days=valid_days):
        return None
    return UnsubscribeClaim(fields[0], fields[1], fields[2], issued)


def list_unsubscribe_headers(public_url: str, token: str, mailto: str | None) -> dict[str, str]:
    """RFC 2369 / RFC 8058 headers: an https one-click link (and a mailto when configured)."""
    url = f"{public_url.rstrip('/')}/u/{token}"
    value = f"<{url}>" + (f", <mailto:{mailto}?subject=unsubscribe>" if mailto else "")
    return {"List-Unsubscribe": value, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def _contact(session: Session, claim: UnsubscribeClaim) -> Contact | None:
    return session.scalar(
        select(Contact).where(Contact.workspace_id == claim.workspace_id, Contact.id == claim.contact_id)
    )


def unsubscribe(
    session: Session,
    claim: UnsubscribeClaim,
    *,
    source: str = "one_click",
    ip: str | None = None,
    user_agent: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Suppress the contact's address for marketing at once and record the withdrawal; True when this was new."""
    contact = _contact(session, claim)
    if contact is None or not contact.email:
        return False
    now = at or utcnow()
    new = suppression.suppress(
        session, claim.workspace_id, contact.email, "unsubscribe", source=f"{source}:outbox:{claim.outbox_id}", at=now
    )
    if new:
        consent_service.record_consent(
            session,
            claim.workspace_id,
            contact.id,
            action="withdrawn",
            topic=consent_service.GENERAL_TOPIC,
            source=f"unsubscribe:{source}",
            ip=ip,
            user_agent=user_agent,
            at=now,
        )
        events_service.record_event(
            session,
            claim.workspace_id,
            contact.id,
            "email_unsubscribed",
            {"outbox_id": claim.outbox_id, "method": source},
            now,
            message_id=f"mail-unsubscribed-{claim.outbox_id}-{contact.id}",
        )
    return new


def topics(session: Session, workspace_id: int) -> list[str]:
    """The workspace's subscription topics (``settings.mail_topics``)."""
    settings = session.scalar(select(Workspace.settings).where(Workspace.id == workspace_id)) or {}
    configured = settings.get("mail_topics")
    return [str(t) for t in configured] if configured else list(DEFAULT_TOPICS)


def preferences(session: Session, claim: UnsubscribeClaim, *, now: datetime | None = None) -> dict[str, Any]:
    """What the preference centre shows: the address (masked), whether unsubscribed, and each topic's state."""
    contact = _contact(session, claim)
    if contact is None or not contact.email:
        return {"email": None, "unsubscribed": True, "topics": {}}
    at = now or utcnow()
    unsubscribed = suppression.check(session, claim.workspace_id, contact.email, "marketing") is not None
    states = {
        topic: consent_service.can_send_marketing(session, claim.workspace_id, contact.id, topic, at).allowed
        and not unsubscribed
        for topic in topics(session, claim.workspace_id)
    }
    local, _, domain = contact.email.partition("@")
    masked = f"{local[:1]}{'*' * max(1, len(local) - 1)}@{domain}"
    return {"email": masked, "unsubscribed": unsubscribed, "topics": states}


def update_preferences(
    session: Session,
    claim: UnsubscribeClaim,
    wanted: dict[str, bool],
    *,
    ip: str | None = None,
    user_agent: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Apply the preference centre: each changed topic gets a ledger record. Choosing any topic after a full
    unsubscribe lifts that unsubscribe (the person acted from their own mailbox, so it counts as confirmed)."""
    contact = _contact(session, claim)
    if contact is None or not contact.email:
        return preferences(session, claim, now=at)
    now = at or utcnow()
    known = topics(session, claim.workspace_id)
    current = preferences(session, claim, now=now)["topics"]
    if any(wanted.get(t) for t in known) and suppression.remove(
        session, claim.workspace_id, contact.email, "unsubscribe"
    ):
        consent_service.record_consent(
            session,
            claim.workspace_id,
            contact.id,
            action="granted",
            topic=consent_service.GENERAL_TOPIC,
            source="preference_centre",
            ip=ip,
            user_agent=user_agent,
            at=now,
            confirmed=True,
            request_double_opt_in=False,
        )
        current = preferences(session, claim, now=now)["topics"]
    for topic in known:
        if topic not in wanted or bool(wanted[topic]) == current.get(topic):
            continue
        consent_service.record_consent(
            session,
            claim.workspace_id,
            contact.id,
            action="granted" if wanted[topic] else "withdrawn",
            topic=topic,
            source="preference_centre",
            ip=ip,
            user_agent=user_agent,
            at=now,
            confirmed=True,
            request_double_opt_in=False,
        )
    if not any(wanted.get(t) for t in known) and wanted:
        unsubscribe(session, claim, source="preference_centre", ip=ip, user_agent=user_agent, at=now)
    session.flush()
    return preferences(session, claim, now=now)


def confirm_token(secret: str, workspace_id: int, consent_record_id: int) -> str:
    """The token of a double-opt-in confirmation link."""
    return sign_token(secret, "confirm", (workspace_id, consent_record_id))


def parse_confirm_token(secret: str, token: str) -> tuple[int, int] | None:
    """(workspace id, consent record id) of a valid confirmation token, or None."""
    fields = verify_token(secret, "confirm", token, 2)
    return (fields[0], fields[1]) if fields else None
