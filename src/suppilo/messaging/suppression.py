"""Suppression: addresses that must not be mailed, keyed by SHA-256 of the normalised address.

The hash survives the contact's erasure and matches every variant of one address (case, IDN forms).
Marketing mail is blocked by any entry; transactional mail only by hard bounces, complaints and manual entries
(it ignores marketing opt-outs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from suppilo.contacts.normalize import InvalidValue, normalize_email
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.errors import DomainError
from suppilo.messaging.outbox_models import SuppressionEntry

REASONS = ("unsubscribe", "hard_bounce", "complaint", "manual")
BLOCKS_TRANSACTIONAL = frozenset({"hard_bounce", "complaint", "manual"})


class SuppressionError(DomainError):
    """A refused suppression operation."""


def address_hash(email: str) -> str:
    """SHA-256 hex of the normalised address; a value that is no valid address hashes its folded form."""
    if email.isascii() and email.count("@") == 1 and email == email.strip().lower() and " " not in email:
        # Already in normalised form (how contacts store addresses): normalising would return it unchanged.
        return hashlib.sha256(email.encode()).hexdigest()
    try:
        value = normalize_email(email)
    except InvalidValue:
        value = email.strip().lower()
    return hashlib.sha256(value.encode()).hexdigest()


def _insert(session: Session):  # type: ignore[no-untyped-def]
    name = session.get_bind().dialect.name
    return (postgresql.insert if name == "postgresql" else sqlite.insert)(SuppressionEntry)


def suppress(
    session: Session, workspace_id: int, email: str, reason: str, *, source: str = "", at: datetime | None = None
) -> bool:
    """Add an entry; False when the address already has one for this reason."""
    if reason not in REASONS:
        raise SuppressionError("reason", f"reason must be one of {', '.join(REASONS)}", code="invalid_reason")
    return suppress_hash(session, workspace_id, address_hash(email), reason, source=source, at=at)


def suppress_hash(
    session: Session, workspace_id: int, digest: str, reason: str, *, source: str = "", at: datetime | None = None
) -> bool:
    """Add an entry by hash (used when only the hash is known, e.g. after erasure)."""
    session.flush()
    stmt = (
        _insert(session)
        .values(
            workspace_id=workspace_id,
            address_hash=digest,
            reason=reason,
            source=source[:200],
            created_at=at or utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["workspace_id", "address_hash", "reason"])
        .returning(SuppressionEntry.id)
    )
    return session.execute(stmt).scalar() is not None


def reasons_for_hashes(session: Session, workspace_id: int, digests: Iterable[str]) -> dict[str, set[str]]:
    """hash -> reasons, for the hashes that have entries."""
    wanted = sorted(set(digests))
    out: dict[str, set[str]] = {}
    for start in range(0, len(wanted), 500):
        for digest, reason in session.execute(
            select(SuppressionEntry.address_hash, SuppressionEntry.reason).where(
                SuppressionEntry.workspace_id == workspace_id,
                SuppressionEntry.address_hash.in_(wanted[start : start + 500]),
            )
        ):
            out.setdefault(digest, set()).add(reason)
    return out


def blocking_reason(reasons: set[str] | None, kind: str) -> str | None:
    """The reason that stops a message of ``kind`` (marketing | transactional), or None."""
    if not reasons:
        return None
    relevant = reasons if kind == "marketing" else reasons & BLOCKS_TRANSACTIONAL
    for reason in REASONS:
        if reason in relevant:
            return reason
    return None


def check(session: Session, workspace_id: int, email: str, kind: str = "marketing") -> str | None:
    """The reason a message of ``kind`` to ``email`` is suppressed, or None."""
    digest = address_hash(email)
    return blocking_reason(reasons_for_hashes(session, workspace_id, [digest]).get(digest), kind)


def list_entries(
    session: Session, workspace_id: int, *, limit: int = 100, before_id: int | None = None
) -> list[SuppressionEntry]:
    """Entries, newest first."""
    query = select(SuppressionEntry).where(SuppressionEntry.workspace_id == workspace_id)
    if before_id is not None:
        query = query.where(SuppressionEntry.id < before_id)
    return list(session.scalars(query.order_by(SuppressionEntry.id.desc()).limit(max(1, min(limit, 1000)))))


def remove(session: Session, workspace_id: int, email: str, reason: str) -> bool:
    """Remove an entry (an operator lifting a manual block or a mistaken bounce); True when one existed."""
    if reason not in REASONS:
        raise SuppressionError("reason", f"reason must be one of {', '.join(REASONS)}", code="invalid_reason")
    result = session.execute(
        delete(SuppressionEntry).where(
            SuppressionEntry.workspace_id == workspace_id,
            SuppressionEntry.address_hash == address_hash(email),
            SuppressionEntry.reason == reason,
        )
    )
    return bool(rowcount(result))


def count_by_reason(session: Session, workspace_id: int) -> dict[str, int]:
    """Number of entries per reason."""
    return {
        reason: n
        for reason, n in session.execute(
            select(SuppressionEntry.reason, func.count())
            .where(SuppressionEntry.workspace_id == workspace_id)
            .group_by(SuppressionEntry.reason)
        )
    }
