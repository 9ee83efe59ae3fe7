"""Open pixel and click redirects with signed tokens, machine-open/click detection, timeline events.

A click token carries (workspace, outbox id, link index); the redirect goes only to the URL stored on the outbox
row when the message was sent, so no token can make suppilo an open redirect. Forged tokens write nothing.
"""

from __future__ import annotations

import html as html_lib
import ipaddress
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from suppilo.db.base import utcnow
from suppilo.events import service as events_service
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.messaging.templates import Sharing, _remember, volatile_key
from suppilo.messaging.unsubscribe import sign_token, verify_token

# A 1x1 transparent GIF.
PIXEL_GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
# Apple Mail Privacy Protection fetches images through Apple's proxies (17.0.0.0/8) with a bare user agent.
APPLE_NETWORKS = (
    ipaddress.ip_network("17.0.0.0/8"),
    ipaddress.ip_network("2620:149::/32"),
    ipaddress.ip_network("2a01:b740::/32"),
)
SCANNER_UA_PARTS = (
    "barracuda",
    "proofpoint",
    "mimecast",
    "messagelabs",
    "symantec",
    "trendmicro",
    "forcepoint",
    "fortinet",
    "ironport",
    "safelinks",
    "microsoft office existence",
    "ms-office",
    "bingpreview",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "curl/",
    "wget/",
    "go-http-client",
    "java/",
    "okhttp",
    "headlesschrome",
    "phantomjs",
    "bot",
    "spider",
    "crawler",
    "scanner",
    "preview",
)
# A click this soon after the message left is a link scanner, not a person.
SCANNER_CLICK_SECONDS = 10.0
_LINK = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)


def open_token(secret: str, workspace_id: int, outbox_id: int) -> str:
    """The token of a message's open pixel."""
    return sign_token(secret, "open", (workspace_id, outbox_id))


def click_token(secret: str, workspace_id: int, outbox_id: int, index: int) -> str:
    """The token of link ``index`` of a message."""
    return sign_token(secret, "click", (workspace_id, outbox_id, index))


def rewrite_links(
    html: str,
    *,
    click_url: Callable[[int], str],
    pixel_url: str | None,
    skip_prefixes: tuple[str, ...] = (),
    volatile: str | None = None,
) -> tuple[str, list[str]]:
    """Replace each http(s) link with a click redirect and add the open pixel; returns (html, original URLs).

    Links starting with ``skip_prefixes`` (the unsubscribe and confirmation links) stay as they are. ``volatile``:
    a string of this message alone (its unsubscribe token); HTML that differs from an earlier message's only in it
    reuses that message's split around its links (``_link_plan``), with the same result."""
    key = volatile_key(html, volatile) if volatile and _plan_sharing.wanted() else None
    plan = _link_plan(key, skip_prefixes) if key is not None else None
    if plan is not None:
        parts, found, with_placeholder = plan
        links = list(found)
        if with_placeholder:
            assert volatile is not None
            placeholder = "~" * len(volatile)
            parts = tuple(p.replace(placeholder, volatile) if i in with_placeholder else p for i, p in enumerate(parts))
        pieces = [parts[0]]
        for i in range(len(links)):
            pieces.append(html_lib.escape(click_url(i)))
            pieces.append(parts[i + 1])
        return _add_pixel("".join(pieces), pixel_url), links
    return _rewrite_links(html, click_url=click_url, pixel_url=pixel_url, skip_prefixes=skip_prefixes)


# (HTML with its message's own token replaced: ``templates.volatile_key``, skip prefixes) -> the HTML's parts
# around the links to track, those links, and which parts hold the placeholder; None when a tracked link holds it.
_PLANS: dict[str, tuple[tuple[str, ...], tuple[str, ...], frozenset[int]] | None] = {}
_PLANS_SIZE = 256
_PLANS_MAX_LEN = 64 * 1024


def _link_plan(
    key: str, skip_prefixes: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[int]] | None:
    """What ``_rewrite_links`` does to ``key`` apart from the click URLs: the text between them (each part ends
    where a tracked link's URL began and the next starts with its closing quote) and the tracked links."""
    cache_key = "\x00".join(skip_prefixes) + "\x01" + key
    hit = _PLANS.get(cache_key, _MISSING)
    _plan_sharing.record(hit is not _MISSING)
    if hit is not _MISSING:
        return hit  # type: ignore[no-any-return]
    parts: list[str] = []
    links: list[str] = []
    pos = 0
    unsure = any("~" in p for p in skip_prefixes)
    for match in _LINK.finditer(key):
        url = html_lib.unescape(match.group(3))
        if "~" in url:
            # Skipped or not as the real URL would be only if no prefix reaches into the placeholder.
            before = url[: url.index("~")]
            unsure = unsure or any(len(p) > len(before) and p.startswith(before) for p in skip_prefixes)
        if any(url.startswith(p) for p in skip_prefixes):
            continue
        links.append(url)
        parts.append(key[pos : match.start(3)])
        pos = match.end(3)
    parts.append(key[pos:])
    plan: tuple[tuple[str, ...], tuple[str, ...], frozenset[int]] | None = (
        tuple(parts),
        tuple(links),
        frozenset(i for i, p in enumerate(parts) if "~" in p),
    )
    if unsure or any("~" in url for url in links):
        plan = None
    _remember(_PLANS, cache_key, plan, _PLANS_MAX_LEN, _PLANS_SIZE)
    return plan


_MISSING: Any = object()
_plan_sharing = Sharing()


def _add_pixel(out: str, pixel_url: str | None) -> str:
    if pixel_url:
        pixel = f'<img src="{html_lib.escape(pixel_url)}" width="1" height="1" alt="" style="display:none">'
        closing = out.lower().rfind("</body>")
        out = out[:closing] + pixel + out[closing:] if closing >= 0 else out + pixel
    return out


def _rewrite_links(
    html: str, *, click_url: Callable[[int], str], pixel_url: str | None, skip_prefixes: tuple[str, ...]
) -> tuple[str, list[str]]:
    links: list[str] = []

    def replace(match: re.Match[str]) -> str:
        url = html_lib.unescape(match.group(3))
        if any(url.startswith(p) for p in skip_prefixes):
            return match.group(0)
        links.append(url)
        return f"{match.group(1)}{match.group(2)}{html_lib.escape(click_url(len(links) - 1))}{match.group(2)}"

    return _add_pixel(_LINK.sub(replace, html), pixel_url), links


def _is_apple_ip(ip: str | None) -> bool:
    if not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(addr in net for net in APPLE_NETWORKS if addr.version == net.version)


def machine_open_reason(user_agent: str | None, ip: str | None) -> str | None:
    """Why an open looks automatic (Apple MPP, scanner), or None for a person."""
    ua = (user_agent or "").strip()
    if _is_apple_ip(ip) or ua == "Mozilla/5.0":
        return "apple_mpp"
    low = ua.lower()
    if not ua or any(part in low for part in SCANNER_UA_PARTS):
        return "scanner_user_agent"
    return None


def machine_click_reason(
    user_agent: str | None, ip: str | None, method: str, sent_at: datetime | None, now: datetime
) -> str | None:
    """Why a click looks automatic (HEAD request, scanner agent, too fast after sending), or None."""
    if method.upper() == "HEAD":
        return "head_request"
    low = (user_agent or "").lower()
    if not low or any(part in low for part in SCANNER_UA_PARTS):
        return "scanner_user_agent"
    if sent_at is not None and (now - sent_at).total_seconds() < SCANNER_CLICK_SECONDS:
        return "too_fast"
    if _is_apple_ip(ip):
        return "apple_proxy"
    return None


@dataclass(frozen=True, slots=True)
class TrackResult:
    """What a tracking request did: the redirect target (clicks), and whether it looked automatic."""

    url: str | None
    machine_reason: str | None


def _message(session: Session, workspace_id: int, outbox_id: int) -> OutboxMessage | None:
    return session.scalar(
        select(OutboxMessage).where(OutboxMessage.workspace_id == workspace_id, OutboxMessage.id == outbox_id)
    )


def record_open(
    session: Session, secret: str, token: str, *, user_agent: str | None, ip: str | None, now: datetime | None = None
) -> TrackResult | None:
    """Count an open of a sent message; None (nothing written) for a forged token or an unknown message."""
    fields = verify_token(secret, "open", token, 2)
    if fields is None:
        return None
    row = _message(session, fields[0], fields[1])
    if row is None or row.sent_at is None:
        return None
    at = now or utcnow()
    reason = machine_open_reason(user_agent, ip)
    values: dict[str, object] = (
        {"machine_opens": OutboxMessage.machine_opens + 1} if reason else {"human_opens": OutboxMessage.human_opens + 1}
    )
    session.execute(update(OutboxMessage).where(OutboxMessage.id == row.id).values(**values))
    if reason is None and row.opened_at is None:
        row.opened_at = at
    if row.contact_id is not None:
        events_service.record_event(
            session,
            row.workspace_id,
            row.contact_id,
            "email_opened",
            {"outbox_id": row.id, "machine": reason is not None, "machine_reason": reason},
            at,
            message_id=f"mail-open-{uuid.uuid4()}",
        )
    session.flush()
    return TrackResult(None, reason)


def record_click(
    session: Session,
    secret: str,
    token: str,
    *,
    user_agent: str | None,
    ip: str | None,
    method: str = "GET",
    now: datetime | None = None,
) -> TrackResult | None:
    """Count a click and return the URL stored at send time; None for a forged token or unknown link."""
    fields = verify_token(secret, "click", token, 3)
    if fields is None:
        return None
    row = _message(session, fields[0], fields[1])
    index = fields[2]
    if row is None or not (0 <= index < len(row.links or [])):
        return None
    url = row.links[index]
    at = now or utcnow()
    reason = machine_click_reason(user_agent, ip, method, row.sent_at, at)
    values: dict[str, object] = (
        {"machine_clicks": OutboxMessage.machine_clicks + 1}
        if reason
        else {"human_clicks": OutboxMessage.human_clicks + 1}
    )
    session.execute(update(OutboxMessage).where(OutboxMessage.id == row.id).values(**values))
    if reason is None and row.clicked_at is None:
        row.clicked_at = at
    if row.contact_id is not None:
        events_service.record_event(
            session,
            row.workspace_id,
            row.contact_id,
            "email_clicked",
            {
                "outbox_id": row.id,
                "url": url,
                "link_index": index,
                "machine": reason is not None,
                "machine_reason": reason,
            },
            at,
            message_id=f"mail-click-{uuid.uuid4()}",
        )
    session.flush()
    return TrackResult(url, reason)
