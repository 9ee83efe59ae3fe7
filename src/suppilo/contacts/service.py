"""Contact use cases. Services flush, never commit: the request or job edge commits once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from suppilo.contacts.models import Contact, LifecycleStage, StageChange
from suppilo.db.base import utcnow
from suppilo.engine.lifecycle import DEFAULT_RULES, DEFAULT_STAGES, StageSpec, decide_rule_move
from suppilo.errors import DomainError


class ContactError(DomainError):
    """A refused contact operation."""


def seed_default_stages(session: Session, workspace_id: int) -> None:
    """Give a new workspace the default lifecycle stages."""
    for spec in DEFAULT_STAGES:
        session.add(
            LifecycleStage(
                workspace_id=workspace_id,
                key=spec.key,
                label=spec.label,
                position=spec.position,
                kind=spec.kind,
                description=spec.description,
            )
        )
    session.flush()


def stage_specs(session: Session, workspace_id: int) -> list[StageSpec]:
    """The workspace's lifecycle stages in order."""
    rows = session.scalars(
        select(LifecycleStage).where(LifecycleStage.workspace_id == workspace_id).order_by(LifecycleStage.position)
    )
    return [StageSpec(r.key, r.label, r.position, r.kind, r.description) for r in rows]  # type: ignore[arg-type]


def lifecycle_rules(settings: dict[str, object] | None) -> dict[str, str]:
    """The workspace's automatic stage rules: defaults overridden by ``settings['lifecycle_rules']``."""
    rules = dict(DEFAULT_RULES)
    custom = (settings or {}).get("lifecycle_rules")
    if isinstance(custom, dict):
        for trigger, stage in custom.items():
            if stage is None:
                rules.pop(str(trigger), None)
            else:
                rules[str(trigger)] = str(stage)
    return rules


def change_stage(
    session: Session,
    contact: Contact,
    to_stage: str,
    *,
    reason: str,
    source: str,
    actor: str | None = None,
    at: datetime | None = None,
    stages: list[StageSpec] | None = None,
) -> StageChange | None:
    """Move ``contact`` to ``to_stage`` and record the change; None when it is already there."""
    known = stages if stages is not None else stage_specs(session, contact.workspace_id)
    if to_stage not in {s.key for s in known}:
        raise ContactError("lifecycle_stage", f"unknown lifecycle stage {to_stage!r}", code="unknown_stage")
    if contact.lifecycle_stage == to_stage:
        return None
    when = at or utcnow()
    change = StageChange(
        workspace_id=contact.workspace_id,
        contact_id=contact.id,
        from_stage=contact.lifecycle_stage,
        to_stage=to_stage,
        changed_at=when,
        reason=reason[:500],
        source=source,
        actor=actor,
    )
    contact.lifecycle_stage = to_stage
    contact.lifecycle_stage_at = when
    session.add(change)
    session.flush()
    return change


def apply_rule(
    session: Session,
    contact: Contact,
    trigger: str,
    *,
    rules: dict[str, str],
    stages: list[StageSpec],
    at: datetime | None = None,
    detail: str = "",
) -> StageChange | None:
    """Apply the automatic rule for ``trigger`` (e.g. ``form_submitted``) to ``contact``."""
    move = decide_rule_move(stages, rules, contact.lifecycle_stage, trigger)
    if move is None:
        return None
    reason = f"{move.reason}: {detail}" if detail else move.reason
    return change_stage(session, contact, move.to_stage, reason=reason, source="rule", at=at, stages=stages)


def repoint_stage_history(session: Session, workspace_id: int, from_contact_id: int, to_contact_id: int) -> None:
    """Move the stage history of one contact onto another (used by merges)."""
    session.execute(
        update(StageChange)
        .where(StageChange.workspace_id == workspace_id, StageChange.contact_id == from_contact_id)
        .values(contact_id=to_contact_id)
    )
