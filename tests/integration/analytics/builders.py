"""Small hand-built analytics data: contacts with first touches, stage changes, touches and orders."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from suppilo.commerce.models import Order
from suppilo.contacts.models import Contact, StageChange
from suppilo.events.models import Event, Touch

_seq = itertools.count(1)


def at(day: str, hour: int = 12) -> datetime:
    """A UTC datetime on a ``YYYY-MM-DD`` day."""
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


def contact(
    s: Session,
    ws: int,
    channel: str | None,
    *,
    campaign: str | None = None,
    country: str | None = "FI",
    region: str | None = None,
    stages: list[tuple[str, str]] = (),  # type: ignore[assignment]
    touches: list[tuple[str, str] | tuple[str, str, str]] = (),  # type: ignore[assignment]
    orders: list[tuple[str, int, str] | tuple[str, int, str, str]] = (),  # type: ignore[assignment]
) -> int:
    """A contact with ``stages`` [(stage, day)], ``touches`` [(channel, day[, campaign])] and ``orders``
    [(day, total_minor, currency[, status])]."""
    n = next(_seq)
    c = Contact(
        workspace_id=ws,
        email=f"a{n}-{ws}@example.fi",
        country=country,
        region=region,
        first_touch_channel=channel,
        first_touch_campaign=campaign,
        lifecycle_stage=stages[-1][0] if stages else "awareness",
        properties={"customer_type": "B2C"},
    )
    s.add(c)
    s.flush()
    prev = None
    for stage, day in stages:
        s.add(StageChange(workspace_id=ws, contact_id=c.id, from_stage=prev, to_stage=stage, changed_at=at(day)))
        prev = stage
    for t in touches:
        s.add(
            Touch(
                workspace_id=ws,
                contact_id=c.id,
                channel=t[0],
                occurred_at=at(t[1]),
                campaign=t[2] if len(t) > 2 else None,
            )
        )
    for o in orders:
        s.add(
            Order(
                workspace_id=ws,
                external_id=f"o{next(_seq)}",
                contact_id=c.id,
                placed_at=at(o[0]),
                currency=o[2],
                total_minor=o[1],
                status=o[3] if len(o) > 3 else "completed",
            )
        )
    s.flush()
    return c.id


def event(s: Session, ws: int, contact_id: int, day: str, hour: int, name: str, path: str | None = None) -> None:
    s.add(
        Event(
            workspace_id=ws,
            contact_id=contact_id,
            kind="page" if path else "track",
            name=name,
            properties={"path": path} if path else {},
            context={},
            occurred_at=at(day, hour),
            received_at=at(day, hour),
            message_id=f"m{next(_seq)}",
        )
    )
    s.flush()
