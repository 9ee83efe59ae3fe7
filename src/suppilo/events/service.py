"""Event and source use cases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from suppilo.db.base import utcnow
from suppilo.engine.channels import CHANNELS, DEFAULT_RULES, classify, parse_visit, rule_matches, validate_rule
from suppilo.errors import DomainError
from suppilo.events import repository as repo
from suppilo.events.models import ChannelRule
from suppilo.events.schemas import ChannelRuleIn, ChannelRuleRead, ChannelTestIn, ChannelTestOut
from suppilo.workspaces.models import Workspace
from suppilo.workspaces.service import record_audit


class EventError(DomainError):
    """A refused event or source operation."""


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
    t = ChannelRule.__table__
    rows = session.execute(
        select(t.c.id, t.c.position, t.c.channel, t.c.conditions, t.c.description)
        .where(t.c.workspace_id == workspace_id)
        .order_by(t.c.position, t.c.id)
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


def rule_problems(rules: list[ChannelRuleIn]) -> list[dict[str, str]]:
    """Every problem of an edited table, with its path (``rules[2].conditions.medium``)."""
    problems: list[dict[str, str]] = []
    for i, rule in enumerate(rules):
        if rule.channel not in CHANNELS:
            problems.append({"path": f"rules[{i}].channel", "message": f"channel must be one of {', '.join(CHANNELS)}"})
        if not rule.conditions:
            problems.append({"path": f"rules[{i}].conditions", "message": "a rule needs at least one condition"})
        for key, value in rule.conditions.items():
            for message in validate_rule("direct", {key: value}):
                problems.append({"path": f"rules[{i}].conditions.{key}", "message": message})
    return problems


def replace_channel_rules(
    session: Session, workspace_id: int, rules: list[ChannelRuleIn], *, actor: str
) -> list[dict[str, Any]]:
    """Replace the workspace's table (tried in the given order); refuses it whole when a rule is invalid."""
    problems = rule_problems(rules)
    if problems:
        first = problems[0]
        raise EventError(first["path"], first["message"], code="invalid_rule")
    session.execute(delete(ChannelRule).where(ChannelRule.workspace_id == workspace_id))
    for position, rule in enumerate(rules, start=1):
        session.add(
            ChannelRule(
                workspace_id=workspace_id,
                position=position * 10,
                channel=rule.channel,
                conditions=rule.conditions,
                description=rule.description,
            )
        )
    session.flush()
    repo.forget_workspace(workspace_id)
    record_audit(
        session,
        workspace_id,
        actor=actor,
        action="channel_rules.replaced",
        subject_type="channel_rules",
        details={"rules": len(rules)},
    )
    return channel_rules(session, workspace_id)


def try_classification(session: Session, workspace_id: int, data: ChannelTestIn) -> ChannelTestOut:
    """How the current table classifies a landing URL and referrer, and which rule decided."""
    site_domains = session.scalar(select(Workspace.site_domains).where(Workspace.id == workspace_id)) or []
    visit = parse_visit(url=data.url, referrer=data.referrer, campaign=data.campaign, site_domains=site_domains)
    rules = channel_rules(session, workspace_id)
    result = classify(visit, rules)
    matched = None
    if visit.has_campaign or visit.referrer_host:
        matched = next((r for r in rules if rule_matches(r["conditions"], visit)), None)
    return ChannelTestOut(
        channel=result.channel,
        source=result.source,
        medium=result.medium,
        campaign=result.campaign,
        term=result.term,
        content=result.content,
        referrer_host=visit.referrer_host,
        rule=ChannelRuleRead(**matched) if matched else None,
    )


def record_event(
    session: Session,
    workspace_id: int,
    contact_id: int | None,
    name: str,
    properties: dict[str, Any],
    occurred_at: datetime,
    *,
    kind: str = "track",
    message_id: str | None = None,
) -> int | None:
    """Store a system event (form submitted, order completed ...); None when ``message_id`` was already stored.

    Without a message id the event gets a deterministic one from its content, so a retried job stores it once.
    """
    from suppilo.events.ingest import message_hash

    if message_id is None:
        message_id = message_hash(
            {"contact_id": contact_id, "name": name, "properties": properties, "at": occurred_at.isoformat()}
        )
    session.flush()
    stored = repo.insert_events(
        session.connection(),
        [
            {
                "workspace_id": workspace_id,
                "contact_id": contact_id,
                "anonymous_id": None,
                "kind": kind,
                "name": name[:200],
                "properties": properties,
                "context": {"source": "system"},
                "occurred_at": occurred_at,
                "received_at": utcnow(),
                "message_id": message_id,
            }
        ],
    )
    return stored.get(message_id)
