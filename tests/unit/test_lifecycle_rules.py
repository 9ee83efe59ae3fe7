"""The automatic lifecycle rules only move forward, and bring inactive customers back on an order."""

from suppilo.engine.lifecycle import DEFAULT_RULES, DEFAULT_STAGES, StageSpec, decide_rule_move, validate_stage_set


def test_form_moves_awareness_to_interest() -> None:
    move = decide_rule_move(DEFAULT_STAGES, DEFAULT_RULES, "awareness", "form_submitted")
    assert move is not None and move.to_stage == "interest" and "form_submitted" in move.reason


def test_rules_never_move_backwards() -> None:
    assert decide_rule_move(DEFAULT_STAGES, DEFAULT_RULES, "customer", "form_submitted") is None
    assert decide_rule_move(DEFAULT_STAGES, DEFAULT_RULES, "loyal", "first_order") is None


def test_orders_move_to_customer_then_loyal() -> None:
    first = decide_rule_move(DEFAULT_STAGES, DEFAULT_RULES, "interest", "first_order")
    assert first is not None and first.to_stage == "customer"
    second = decide_rule_move(DEFAULT_STAGES, DEFAULT_RULES, "customer", "repeat_order")
    assert second is not None and second.to_stage == "loyal"


def test_inactive_comes_back_only_with_an_order() -> None:
    assert decide_rule_move(DEFAULT_STAGES, DEFAULT_RULES, "inactive", "form_submitted") is None
    back = decide_rule_move(DEFAULT_STAGES, DEFAULT_RULES, "inactive", "repeat_order")
    assert back is not None and back.to_stage == "loyal"


def test_unknown_trigger_does_nothing() -> None:
    assert decide_rule_move(DEFAULT_STAGES, DEFAULT_RULES, "awareness", "moon_landing") is None


def test_stage_set_validation_names_problems() -> None:
    bad = [StageSpec("a", "A", 1), StageSpec("a", "B", 1), StageSpec("Bad Key", "C", 2)]
    problems = validate_stage_set(bad)
    assert "stage keys must be unique" in problems
    assert "funnel stage positions must be unique" in problems
    assert any("Bad Key" in p for p in problems)
    assert validate_stage_set(list(DEFAULT_STAGES)) == []
