"""Event and source use cases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.engine.channels import DEFAULT_RULES
from suppilo.events.models import ChannelRule


def seed_default_channel_rules(session: Session, workspace_id: int) -> None:
    """Give a new workspace its own copy of the default channel rule table."""
    for position, rule in enumerate(DEFAULT_RULES, start=1):
        session.add(
            ChannelRule(
                workspace_id=workspace_id,
                position=position * 10,
                channel=rule["channel"],
                conditions=rule["conditions"],
                description=rule["description"],
            )
        )
    session.flush()


def channel_rules(session: Session, workspace_id: int) -> list[dict[str, Any]]:
    """The workspace's channel rules in the order they are tried."""
    rows = session.scalars(
        select(ChannelRule)
        .where(ChannelRule.workspace_id == workspace_id)
        .order_by(ChannelRule.position, ChannelRule.id)
    )
    return [
        {
            "id": r.id,
            "position": r.position,
            "channel": r.channel,
            "conditions": r.conditions,
            "description": r.description,
        }
        for r in rows
    ]
