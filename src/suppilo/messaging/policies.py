"""Sending policies applied by the sender when a marketing message is about to go out.

Workspace settings (``workspace.settings``, set through ``PATCH /api/v1/workspace``):

- ``frequency_cap: {"max": 3, "days": 7}`` — at most ``max`` marketing messages per contact in any ``days`` days.
  A message over the cap is deferred (status ``deferred``, ``last_error`` ``"frequency_cap"``) until the oldest
  counted message leaves the window; never dropped. Messages competing for a contact's free slots go in claim order:
  higher ``priority`` first, then the earlier due time.
- ``quiet_hours: {"start": "21:00", "end": "08:00"}`` — a marketing message whose send moment falls inside the
  window in the contact's time zone (``contact.timezone``, else the workspace's) waits until the window ends
  (``last_error`` ``"quiet_hours"``); DST rules in ``suppilo.engine.quiet_hours``.

Transactional messages are never capped, never held by quiet hours and do not count toward the cap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.orm import Session

from suppilo.engine.quiet_hours import QuietHours, QuietHoursError, parse_quiet_hours, quiet_until, zone
from suppilo.errors import DomainError
from suppilo.messaging.outbox_models import DUE_STATES, OutboxMessage

log = logging.getLogger("suppilo.messaging.policies")

POLICY_KEYS = ("frequency_cap", "quiet_hours")
FREQUENCY_CAP_REASON = "frequency_cap"
QUIET_HOURS_REASON = "quiet_hours"
MAX_CAP = 1000
MAX_CAP_DAYS = 365
# pg_advisory_xact_lock(namespace, contact): senders counting one contact's cap take turns.
_LOCK_NAMESPACE = 8238


class PolicyError(DomainError):
    """An invalid sending-policy setting."""


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most ``max`` marketing messages per contact in any ``days`` days."""

    max: int
    days: int

    @property
    def window(self) -> timedelta:
        return timedelta(days=self.days)

    def as_dict(self) -> dict[str, int]:
        return {"max": self.max, "days": self.days}


@dataclass(frozen=True, slots=True)
class SendPolicies:
    """A workspace's sending policies (None: not set)."""

    frequency_cap: FrequencyCap | None = None
    quiet_hours: QuietHours | None = None
    timezone: str = "UTC"

    @property
    def active(self) -> bool:
        return self.frequency_cap is not None or self.quiet_hours is not None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A claimed marketing message that passed consent and suppression."""

    row_id: int
    contact_id: int
    claim_rank: int
    next_attempt_at: datetime
    timezone: str | None


@dataclass(frozen=True, slots=True)
class Hold:
    """Defer the message until ``until`` because of ``reason``."""

    until: datetime
    reason: str


def _positive_int(value: object, path: str, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise PolicyError(path, f"a whole number from 1 to {upper} is required", code="invalid_setting")
    return value


def parse_frequency_cap(value: object, path: str = "frequency_cap") -> FrequencyCap:
    """``{"max": N, "days": D}`` as a cap; raises PolicyError with the field path."""
    if not isinstance(value, dict):
        raise PolicyError(path, 'the frequency cap is an object like {"max": 3, "days": 7}', code="invalid_setting")
    unknown = sorted(str(k) for k in value if k not in ("max", "days"))
    if unknown:
        raise PolicyError(f"{path}.{unknown[0]}", "unknown field (allowed: max, days)", code="invalid_setting")
    for key in ("max", "days"):
        if key not in value:
            raise PolicyError(f"{path}.{key}", f"{key} is required", code="invalid_setting")
    return FrequencyCap(
        max=_positive_int(value["max"], f"{path}.max", MAX_CAP),
        days=_positive_int(value["days"], f"{path}.days", MAX_CAP_DAYS),
    )


def parse_quiet_hours_setting(value: object, path: str = "quiet_hours") -> QuietHours:
    """``{"start": "HH:MM", "end": "HH:MM"}`` as a window; raises PolicyError with the field path."""
    try:
        return parse_quiet_hours(value)
    except QuietHoursError as exc:
        raise PolicyError(f"{path}.{exc.path}" if exc.path else path, exc.message, code="invalid_setting") from exc


def validate_settings(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Check the policy keys of a settings change; returns their normalised JSON (None: remove the setting).

    Raises PolicyError with the path (``frequency_cap.max``, ``quiet_hours.start`` ...) of the first bad field."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in POLICY_KEYS:
            raise PolicyError(key, f"unknown setting (allowed: {', '.join(POLICY_KEYS)})", code="invalid_setting")
        if value is None:
            out[key] = None
        elif key == "frequency_cap":
            out[key] = parse_frequency_cap(value).as_dict()
        else:
            out[key] = parse_quiet_hours_setting(value).as_dict()
    return out


def for_workspace(settings: Mapping[str, Any] | None, timezone: str = "UTC") -> SendPolicies:
    """The policies stored in a workspace's settings. A stored value that no longer validates is ignored (and
    logged) rather than stopping the sender."""
    settings = settings or {}
    cap: FrequencyCap | None = None
    quiet: QuietHours | None = None
    if settings.get("frequency_cap") is not None:
        try:
            cap = parse_frequency_cap(settings["frequency_cap"])
        except PolicyError as exc:
            log.warning("ignoring the stored frequency cap: %s: %s", exc.field, exc.message)
    if settings.get("quiet_hours") is not None:
        try:
            quiet = parse_quiet_hours_setting(settings["quiet_hours"])
        except PolicyError as exc:
            log.warning("ignoring the stored quiet hours: %s: %s", exc.field, exc.message)
    return SendPolicies(frequency_cap=cap, quiet_hours=quiet, timezone=_valid_zone(timezone) or "UTC")


def _valid_zone(name: str | None) -> str | None:
    if not name:
        return None
    try:
        zone(name)
    except QuietHoursError:
        return None
    return name


def _quiet_holds(policies: SendPolicies, candidates: list[Candidate], now: datetime) -> dict[int, Hold]:
    window = policies.quiet_hours
    if window is None:
        return {}
    holds: dict[int, Hold] = {}
    by_zone: dict[str, datetime | None] = {}
    zones: dict[str | None, str] = {}
    for c in candidates:
        tz = zones.get(c.timezone)
        if tz is None:
            tz = zones[c.timezone] = _valid_zone(c.timezone) or policies.timezone
        if tz not in by_zone:
            by_zone[tz] = quiet_until(now, tz, window)
        until = by_zone[tz]
        if until is not None:
            holds[c.row_id] = Hold(until, QUIET_HOURS_REASON)
    return holds


def lock_contacts(session: Session, contact_ids: Iterable[int]) -> None:
    """PostgreSQL: serialise cap decisions per contact across senders (transaction-scoped advisory locks, taken in
    id order so two senders never wait on each other in a cycle). SQLite has one writer at a time already."""
    if session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted({int(contact_id % 2_147_483_647) for contact_id in contact_ids})
    if not keys:
        return
    # One round trip; the sorted subquery feeds the locks in key order.
    session.execute(
        text(
            "SELECT count(pg_advisory_xact_lock(:ns, s.k)) FROM "
            "(SELECT k FROM unnest(CAST(:keys AS integer[])) AS u(k) ORDER BY k) AS s"
        ),
        {"ns": _LOCK_NAMESPACE, "keys": keys},
    )


def _cap_holds(
    session: Session,
    workspace_id: int,
    cap: FrequencyCap,
    candidates: list[Candidate],
    batch_ids: list[int],
    now: datetime,
) -> dict[int, Hold]:
    if not candidates:
        return {}
    contact_ids = sorted({c.contact_id for c in candidates})
    lock_contacts(session, contact_ids)
    since = now - cap.window
    counted: dict[int, list[datetime]] = {}
    waiting: dict[int, list[tuple[int, datetime, int]]] = {}
    for start in range(0, len(contact_ids), 500):
        chunk = contact_ids[start : start + 500]
        # Marketing mail sent in the window, plus mail other senders are sending right now (it will count).
        for row in session.execute(
            select(
                OutboxMessage.contact_id,
                func.coalesce(OutboxMessage.sent_at, OutboxMessage.sending_at).label("at"),
            ).where(
                OutboxMessage.workspace_id == workspace_id,
                OutboxMessage.contact_id.in_(chunk),
                OutboxMessage.kind == "marketing",
                or_(
                    and_(OutboxMessage.status == "sent", OutboxMessage.sent_at > since),
                    and_(OutboxMessage.status == "sending", OutboxMessage.sending_at > since),
                ),
            )
        ):
            if row.at is not None:
                counted.setdefault(row.contact_id, []).append(row.at)
        # Due marketing mail of the same contacts outside this claim (the chunk ended before it, or another status
        # was read first): one that comes first in claim order keeps its slot.
        for due in session.execute(
            select(
                OutboxMessage.contact_id, OutboxMessage.claim_rank, OutboxMessage.next_attempt_at, OutboxMessage.id
            ).where(
                OutboxMessage.workspace_id == workspace_id,
                OutboxMessage.contact_id.in_(chunk),
                OutboxMessage.kind == "marketing",
                OutboxMessage.status.in_(DUE_STATES),
                OutboxMessage.next_attempt_at <= now,
                OutboxMessage.id.not_in(batch_ids),
            )
        ):
            waiting.setdefault(due.contact_id, []).append((due.claim_rank, due.next_attempt_at, due.id))
    by_contact: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_contact.setdefault(c.contact_id, []).append(c)
    holds: dict[int, Hold] = {}
    for contact_id, mine in by_contact.items():
        times = counted.get(contact_id, [])
        free = cap.max - len(times)
        if free >= len(mine) and not waiting.get(contact_id):
            continue
        queue: list[tuple[tuple[int, datetime, int], Candidate | None]] = [
            ((c.claim_rank, c.next_attempt_at, c.row_id), c) for c in mine
        ]
        queue.extend((key, None) for key in waiting.get(contact_id, []))
        queue.sort(key=lambda item: item[0])
        over: list[Candidate] = []
        for _, candidate in queue:
            if free > 0:
                free -= 1
            elif candidate is not None:
                over.append(candidate)
        if not over:
            continue
        # The next slot frees when the oldest counted message leaves the window (slots taken now leave last).
        oldest = min([*times, now])
        until = max(oldest + cap.window, now + timedelta(seconds=1))
        for candidate in over:
            holds[candidate.row_id] = Hold(until, FREQUENCY_CAP_REASON)
    return holds


def holds_for(
    session: Session, workspace_id: int, policies: SendPolicies, candidates: list[Candidate], now: datetime
) -> dict[int, Hold]:
    """Which of these marketing messages must wait, and until when (row id -> Hold). Quiet hours first (a held
    message does not take a cap slot), then the frequency cap in claim order."""
    if not policies.active or not candidates:
        return {}
    holds = _quiet_holds(policies, candidates, now)
    if policies.frequency_cap is not None:
        rest = [c for c in candidates if c.row_id not in holds]
        batch_ids = [c.row_id for c in candidates]
        holds.update(_cap_holds(session, workspace_id, policies.frequency_cap, rest, batch_ids, now))
    return holds
