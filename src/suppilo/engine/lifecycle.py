"""Lifecycle stages and the rules that move contacts between them automatically."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StageKind = Literal["funnel", "side"]


@dataclass(frozen=True, slots=True)
class StageSpec:
    """A lifecycle stage: its key, label, order and whether it is part of the ordered funnel."""

    key: str
    label: str
    position: int
    kind: StageKind = "funnel"
    description: str = ""


DEFAULT_STAGES: tuple[StageSpec, ...] = (
    StageSpec("awareness", "Awareness", 10, "funnel", "First touch: a visit or an ad click, often anonymous."),
    StageSpec("interest", "Interest", 20, "funnel", "Left contact details: a form, a sign-up, an import."),
    StageSpec("consideration", "Consideration", 30, "funnel", "Engaged; fit and engagement over threshold (MQL)."),
    StageSpec("decision", "Decision", 40, "funnel", "Sales-qualified; a deal is open."),
    StageSpec("customer", "Customer", 50, "funnel", "First purchase or a won deal."),
    StageSpec("loyal", "Loyal", 60, "funnel", "Repeat purchases; retained."),
    StageSpec("advocate", "Advocate", 70, "funnel", "Refers others, reviews, promoter."),
    StageSpec("inactive", "Inactive (win-back)", 100, "side", "A customer who stopped buying."),
)

# Trigger name -> the stage it moves a contact to (only ever forward along the funnel).
DEFAULT_RULES: dict[str, str] = {
    "contact_identified": "interest",
    "form_submitted": "interest",
    "contact_imported": "interest",
    "deal_opened": "decision",
    "first_order": "customer",
    "repeat_order": "loyal",
    "referral_made": "advocate",
}


@dataclass(frozen=True, slots=True)
class StageMove:
    """A decided move: from, to and why."""

    from_stage: str | None
    to_stage: str
    reason: str


def position_of(stages: tuple[StageSpec, ...] | list[StageSpec], key: str | None) -> int | None:
    """The funnel position of ``key``, or None for unknown and side stages."""
    for stage in stages:
        if stage.key == key:
            return stage.position if stage.kind == "funnel" else None
    return None


def decide_rule_move(
    stages: tuple[StageSpec, ...] | list[StageSpec],
    rules: dict[str, str],
    current: str | None,
    trigger: str,
) -> StageMove | None:
    """The move a rule ``trigger`` causes for a contact at ``current``, or None.

    Rules only move forward along the funnel, so a customer who fills in a form stays a customer.
    A contact in a side stage (inactive) is brought back by an order (``first_order``/``repeat_order``)
    and by nothing weaker.
    """
    target = rules.get(trigger)
    if target is None:
        return None
    target_pos = position_of(stages, target)
    if target_pos is None:
        return None
    known = {s.key: s for s in stages}
    if current in known and known[current].kind == "side":
        if trigger in ("first_order", "repeat_order"):
            return StageMove(current, target, f"rule: {trigger} brings the contact back")
        return None
    current_pos = position_of(stages, current)
    if current_pos is not None and current_pos >= target_pos:
        return None
    return StageMove(current, target, f"rule: {trigger}")


def validate_stage_set(stages: list[StageSpec]) -> list[str]:
    """Problems with a workspace's edited stage set (empty list when valid)."""
    problems: list[str] = []
    keys = [s.key for s in stages]
    if len(set(keys)) != len(keys):
        problems.append("stage keys must be unique")
    funnel = [s for s in stages if s.kind == "funnel"]
    if not funnel:
        problems.append("at least one funnel stage is required")
    positions = [s.position for s in funnel]
    if len(set(positions)) != len(positions):
        problems.append("funnel stage positions must be unique")
    for s in stages:
        if not s.key or not s.key.replace("_", "").isalnum() or s.key != s.key.lower():
            problems.append(f"stage key {s.key!r} must be lower-case letters, digits and underscores")
    return problems
