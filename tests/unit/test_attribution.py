"""Attribution models on hand-worked paths; every model hands out exactly the attributed conversions and revenue."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from suppilo.engine import attribution as at

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def path(channels: str, converted: bool, value: float = 0.0, *, campaigns: str = "", gap_days: float = 1.0):
    """A path from a string of one-letter channels, one touch per ``gap_days``, converting a day after the last."""
    touches = tuple(
        at.Touch(ch, T0 + timedelta(days=i * gap_days), campaigns[i] if i < len(campaigns) else None)
        for i, ch in enumerate(channels)
    )
    conv_at = T0 + timedelta(days=len(channels) * gap_days) if converted else None
    return at.ConversionPath(touches, converted, value, conv_at)


THREE = [path("AB", True, 100.0), path("A", False), path("B", True, 50.0)]


def credits(result: at.AttributionResult) -> dict[str, tuple[float, float]]:
    return {c.key: (c.conversions, c.revenue) for c in result.credits}


def test_markov_removal_effects_worked_by_hand() -> None:
    # Paths: A > B > conversion (100), A > null, B > conversion (50).
    # Transitions: start>A 2, start>B 1, A>B 1, A>null 1, B>conv 2.
    # P(conv) = 2/3 * 1/2 * 1 + 1/3 * 1 = 2/3.
    # Without A (start>A goes to null): 1/3, removal effect 1 - (1/3)/(2/3) = 1/2.
    # Without B: 0, removal effect 1. Shares 1/3 and 2/3 of 2 conversions and 150 revenue.
    result = at.attribute_all(THREE)["markov"]
    assert result.removal_effects == pytest.approx({"A": 0.5, "B": 1.0})
    got = credits(result)
    assert got["A"] == pytest.approx((2 / 3, 50.0))
    assert got["B"] == pytest.approx((4 / 3, 100.0))
    assert [c.key for c in result.credits] == ["B", "A"]
    base, _ = at.markov_removal_effects(at.transition_counts(at.encode_paths(THREE)))
    assert base == pytest.approx(2 / 3)


def test_markov_with_a_loop_and_a_channel_that_never_helps() -> None:
    # A > A > C > conv, C > conv, D > null, D > A > null.
    # start: A 1/4, C 1/4, D 2/4. A: A 1/3, C 1/3, null 1/3. C: conv 1. D: A 1/2, null 1/2.
    # From A: p = 1/3 p + 1/3 -> p = 1/2. From D: 1/2 * 1/2 = 1/4. P(conv) = 1/8 + 1/4 + 1/8 = 1/2.
    # Without A: 1/4 (only start>C), effect 1/2. Without C: 0, effect 1. Without D: 1/8 + 1/4 = 3/8, effect 1/4.
    paths = [path("AAC", True, 10.0), path("C", True, 20.0), path("D", False), path("DA", False)]
    result = at.attribute_all(paths)["markov"]
    assert result.removal_effects == pytest.approx({"A": 0.5, "C": 1.0, "D": 0.25})
    got = credits(result)
    assert got["C"][0] == pytest.approx(2 * 1.0 / 1.75)
    assert got["D"][1] == pytest.approx(30 * 0.25 / 1.75)


def test_rule_based_models_worked_by_hand() -> None:
    models = at.attribute_all(THREE)
    assert credits(models["first_touch"]) == {"A": (1.0, 100.0), "B": (1.0, 50.0)}
    assert credits(models["last_touch"]) == {"A": (0.0, 0.0), "B": (2.0, 150.0)}
    assert credits(models["linear"]) == {"A": (0.5, 50.0), "B": (1.5, 100.0)}
    # Two touches: 50/50 under the U shape too.
    assert credits(models["position_based"]) == {"A": (0.5, 50.0), "B": (1.5, 100.0)}


def test_position_based_shapes() -> None:
    four = at.encode_paths([path("ABCD", True, 10.0)])
    assert at.touch_weights(four, "position_based") == pytest.approx([0.4, 0.1, 0.1, 0.4])
    three = at.encode_paths([path("ABC", True, 10.0), path("Z", True, 1.0)])
    assert at.touch_weights(three, "position_based") == pytest.approx([0.4, 0.2, 0.4, 1.0])


def test_time_decay_halves_per_half_life() -> None:
    # Touches 21, 14 and 7 days before the conversion with a 7-day half-life: 1/8, 1/4, 1/2 -> 1/7, 2/7, 4/7.
    p = path("ABC", True, 70.0, gap_days=7.0)
    p = at.ConversionPath(p.touches, True, 70.0, T0 + timedelta(days=21))
    result = at.attribute(at.encode_paths([p]), "time_decay", half_life_days=7.0)
    assert credits(result) == {
        "C": pytest.approx((4 / 7, 40.0)),
        "B": pytest.approx((2 / 7, 20.0)),
        "A": pytest.approx((1 / 7, 10.0)),
    }
    # Very old journeys keep their shape instead of underflowing to zero.
    old = at.ConversionPath(p.touches, True, 70.0, T0 + timedelta(days=20_000))
    assert sum(c.conversions for c in at.attribute(at.encode_paths([old]), "time_decay").credits) == pytest.approx(1)
    with pytest.raises(ValueError):
        at.touch_weights(at.encode_paths([p]), "time_decay", half_life_days=0)


def test_every_model_hands_out_exactly_the_totals() -> None:
    rng = np.random.default_rng(4)
    paths = []
    for _ in range(400):
        k = int(rng.integers(0, 6))
        chans = "".join(rng.choice(list("ABCDE"), k))
        camps = "".join(rng.choice(list("xyz"), k))
        conv = bool(rng.random() < 0.3)
        paths.append(path(chans, conv, float(rng.integers(1, 200)) if conv else 0.0, campaigns=camps))
    conv_with_touch = [p for p in paths if p.converted and p.touches]
    conv_without = [p for p in paths if p.converted and not p.touches]
    assert conv_without, "the sample must include a conversion without touches"
    for level in ("channel", "campaign"):
        for model, result in at.attribute_all(paths, level=level).items():
            assert result.total_conversions == len(conv_with_touch), model
            assert result.total_revenue == pytest.approx(sum(p.value for p in conv_with_touch))
            assert sum(c.conversions for c in result.credits) == pytest.approx(result.total_conversions), model
            assert sum(c.revenue for c in result.credits) == pytest.approx(result.total_revenue), model
            assert result.unattributed_conversions == len(conv_without)
            assert all(c.conversions >= -1e-12 for c in result.credits)


def test_campaign_level_keys_touches_without_campaign_as_none() -> None:
    paths = [path("AB", True, 10.0, campaigns="s"), path("A", True, 4.0)]
    got = credits(at.attribute_all(paths, level="campaign")["first_touch"])
    assert got == {"s": (1.0, 10.0), at.NO_CAMPAIGN: (1.0, 4.0)}


def test_transition_counts_match_a_per_path_count() -> None:
    rng = np.random.default_rng(9)
    paths = [
        path("".join(rng.choice(list("ABC"), int(rng.integers(0, 5)))), bool(rng.random() < 0.5)) for _ in range(300)
    ]
    table = at.encode_paths(paths)
    idx = {name: i + 1 for i, name in enumerate(table.names)}
    n = len(table.names)
    want = np.zeros((n + 3, n + 3))
    for p in paths:
        if not p.touches:
            continue
        states = [0] + [idx[t.channel] for t in p.touches] + [n + 1 if p.converted else n + 2]
        for a, b in itertools.pairwise(states):
            want[a, b] += 1
    assert np.array_equal(at.transition_counts(table), want)


def test_no_conversions_is_reported_not_divided() -> None:
    results = at.attribute_all([path("AB", False), path("", False)])
    for result in results.values():
        assert result.insufficient_data and result.total_conversions == 0
        assert all(c.conversions == 0 for c in result.credits)
    assert at.attribute_all([])["markov"].insufficient_data


def test_removal_effects_match_re_solving_the_chain_without_each_channel() -> None:
    rng = np.random.default_rng(21)
    paths = [
        path("".join(rng.choice(list("ABCDEF"), int(rng.integers(1, 7)))), bool(rng.random() < 0.35))
        for _ in range(500)
    ]
    counts = at.transition_counts(at.encode_paths(paths))
    n = counts.shape[0] - 3
    probs = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)

    def p_conv(q: np.ndarray, r: np.ndarray) -> float:
        return float(np.linalg.solve(np.eye(n + 1) - q, r)[0])

    q, r = probs[: n + 1, : n + 1], probs[: n + 1, n + 1]
    base = p_conv(q, r)
    want = []
    for k in range(1, n + 1):
        qk, rk = q.copy(), r.copy()
        qk[k, :] = 0.0  # the channel's row goes to null
        rk[k] = 0.0
        want.append(1 - p_conv(qk, rk) / base)
    got_base, got = at.markov_removal_effects(counts)
    assert got_base == pytest.approx(base, rel=1e-12)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
