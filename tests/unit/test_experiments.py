"""A/B statistics against values worked out independently (scipy.stats, numerical integration, textbook numbers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import betainc

from suppilo.engine import experiments as ex


def test_two_proportion_test_matches_the_chi_square_test_and_hand_numbers() -> None:
    # A: 200/1000, B: 250/1000. Pooled rate 0.225, SE0 = sqrt(0.225 * 0.775 * 2/1000) = 0.0186748, z = 2.6774.
    r = ex.two_proportion_test(200, 1000, 250, 1000)
    assert r.z == pytest.approx(0.05 / math.sqrt(0.225 * 0.775 * 0.002))
    assert r.z == pytest.approx(2.6774, abs=1e-4)
    chi2, p, _, _ = stats.chi2_contingency([[200, 800], [250, 750]], correction=False)
    assert r.p_value == pytest.approx(p, rel=1e-9)
    assert r.z**2 == pytest.approx(chi2, rel=1e-9)
    se = math.sqrt(0.2 * 0.8 / 1000 + 0.25 * 0.75 / 1000)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.05 - 1.959964 * se, 0.05 + 1.959964 * se), rel=1e-5)
    assert r.significant and r.relative_lift == pytest.approx(0.25)
    same = ex.two_proportion_test(30, 1000, 31, 1000)
    assert not same.significant and same.p_value is not None and same.p_value > 0.8


def test_two_proportion_test_on_empty_or_constant_data() -> None:
    assert ex.two_proportion_test(0, 0, 3, 10).insufficient_data
    flat = ex.two_proportion_test(0, 100, 0, 120)
    assert flat.insufficient_data and flat.p_value is None and not flat.significant
    with pytest.raises(ValueError):
        ex.two_proportion_test(5, 3, 1, 10)


def beats_by_integration(ca: int, na: int, cb: int, nb: int) -> float:
    a = stats.beta(ca + 1, na - ca + 1)
    b = stats.beta(cb + 1, nb - cb + 1)
    val, _ = integrate.quad(lambda x: b.pdf(x) * a.cdf(x), 0, 1, limit=200, points=[ca / na, cb / nb])
    return float(val)


@pytest.mark.parametrize("counts", [(20, 100, 30, 100), (120, 1000, 100, 1000), (1, 10, 0, 10), (48, 400, 55, 410)])
def test_chance_to_beat_closed_form_agrees_with_integration(counts: tuple[int, int, int, int]) -> None:
    assert ex.probability_b_beats_a(*counts) == pytest.approx(beats_by_integration(*counts), abs=1e-7)


def test_bayesian_ab_monte_carlo_and_expected_loss() -> None:
    rng = np.random.default_rng(42)
    result = ex.bayesian_ab([("control", 100, 1000), ("new", 125, 1000)], rng=rng, draws=200_000)
    control, new = result.arms
    assert control.chance_to_beat_control is None
    assert new.chance_to_beat_control == pytest.approx(beats_by_integration(100, 1000, 125, 1000), abs=1e-7)
    assert new.chance_to_be_best == pytest.approx(new.chance_to_beat_control, abs=0.005)
    # Expected loss of choosing "new": E[max(p_c - p_n, 0)], by integration over p_n with the inner integral in
    # closed form: int_y^1 (x - y) f_c(x) dx = m_c (1 - I_y(a_c + 1, b_c)) - y (1 - I_y(a_c, b_c)).
    ac, bc, an, bn = 101, 901, 126, 876
    mc = ac / (ac + bc)
    loss_new, _ = integrate.quad(
        lambda y: stats.beta.pdf(y, an, bn) * (mc * (1 - betainc(ac + 1, bc, y)) - y * (1 - betainc(ac, bc, y))),
        0,
        1,
        points=[0.1, 0.125],
        limit=200,
    )
    assert new.expected_loss == pytest.approx(loss_new, abs=2e-4)
    assert control.expected_loss > new.expected_loss
    assert control.posterior_mean == pytest.approx(101 / 1002)


def test_bayesian_abn_picks_the_better_arm_and_is_reproducible() -> None:
    arms = [("a", 50, 1000), ("b", 52, 1000), ("c", 80, 1000)]
    one = ex.bayesian_ab(arms, rng=np.random.default_rng(1), draws=50_000)
    two = ex.bayesian_ab(arms, rng=np.random.default_rng(1), draws=50_000)
    assert one == two
    by = {a.name: a for a in one.arms}
    assert by["c"].chance_to_be_best > 0.95
    assert by["c"].chance_to_beat_control is not None and by["c"].chance_to_beat_control > 0.99
    assert sum(a.chance_to_be_best for a in one.arms) == pytest.approx(1.0)
    assert min(one.arms, key=lambda a: a.expected_loss).name == "c"
    with pytest.raises(ValueError):
        ex.bayesian_ab([("a", 1, 2)], rng=np.random.default_rng(1))


def test_sample_size_textbook_value_and_power() -> None:
    # 5% -> 10%, alpha 0.05 two-sided, power 0.8: 435 per group (normal approximation, no continuity correction).
    n = ex.sample_size_two_proportions(0.05, 0.05)
    assert n == 435
    assert ex.sample_size_two_proportions(0.05, 1.0, relative=True) == 435

    def power(p1: float, p2: float, m: int) -> float:
        pbar = (p1 + p2) / 2
        se0 = math.sqrt(2 * pbar * (1 - pbar) / m)
        se1 = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / m)
        return float(stats.norm.cdf((abs(p2 - p1) - stats.norm.ppf(0.975) * se0) / se1))

    for p1, p2 in [(0.2, 0.25), (0.03, 0.036), (0.5, 0.45)]:
        m = ex.sample_size_two_proportions(p1, p2 - p1)
        assert power(p1, p2, m) >= 0.8 > power(p1, p2, m - 1)
    with pytest.raises(ValueError):
        ex.sample_size_two_proportions(0.5, 0.6)


def test_sequential_test_stops_on_a_real_effect() -> None:
    rng = np.random.default_rng(8)
    a = rng.random(20_000) < 0.10
    b = rng.random(20_000) < 0.13
    looks = [ex.Look(int(a[:n].sum()), n, int(b[:n].sum()), n) for n in range(500, 20_001, 500)]
    r = ex.sequential_test(looks, alpha=0.05, tau=0.05)
    assert r.stop and r.stopped_at_look is not None and r.p_value <= 0.05
    assert all(x >= y for x, y in zip(r.p_values, r.p_values[1:], strict=False))
    # The likelihood ratio at the last look, written out from the formula.
    last = looks[-1]
    pooled = (last.conversions_a + last.conversions_b) / 40_000
    v = pooled * (1 - pooled) * 2 / 20_000
    d = last.conversions_b / 20_000 - last.conversions_a / 20_000
    lr = math.sqrt(v / (v + 0.0025)) * math.exp(0.0025 * d * d / (2 * v * (v + 0.0025)))
    assert r.likelihood_ratios[-1] == pytest.approx(lr, rel=1e-9)


def test_sequential_test_false_positive_rate_under_peeking_stays_below_alpha() -> None:
    rng = np.random.default_rng(2017)
    sims, alpha = 400, 0.05
    checkpoints = np.arange(100, 10_001, 100)  # 100 peeks per experiment
    msprt_rejects = 0
    naive_rejects = 0
    for _ in range(sims):
        ca = np.cumsum(rng.random(10_000) < 0.1)[checkpoints - 1]
        cb = np.cumsum(rng.random(10_000) < 0.1)[checkpoints - 1]
        looks = [ex.Look(int(x), int(n), int(y), int(n)) for x, y, n in zip(ca, cb, checkpoints, strict=True)]
        msprt_rejects += ex.sequential_test(looks, alpha=alpha, tau=0.05).stop
        naive_rejects += any(
            (t := ex.two_proportion_test(lk.conversions_a, lk.trials_a, lk.conversions_b, lk.trials_b)).p_value
            is not None
            and t.p_value < alpha
            for lk in looks
        )
    assert msprt_rejects / sims <= alpha
    # Peeking at a fixed-horizon test a hundred times rejects a true null far more often than alpha.
    assert naive_rejects / sims > 2 * alpha


def test_incremental_lift_against_a_holdout() -> None:
    lift = ex.incremental_lift(600, 10_000, 50, 1_000)
    assert lift.rate_treatment == 0.06 and lift.rate_holdout == 0.05
    assert lift.absolute == pytest.approx(0.01)
    assert lift.relative == pytest.approx(0.2)
    assert lift.incremental_conversions == pytest.approx(100.0)
    se = math.sqrt(0.06 * 0.94 / 10_000 + 0.05 * 0.95 / 1_000)
    z = stats.norm.ppf(0.975)
    assert lift.absolute_ci == pytest.approx((0.01 - z * se, 0.01 + z * se))
    se_log = math.sqrt(1 / 600 - 1 / 10_000 + 1 / 50 - 1 / 1_000)
    assert lift.relative_ci == pytest.approx((1.2 * math.exp(-z * se_log) - 1, 1.2 * math.exp(z * se_log) - 1))
    assert lift.relative_ci is not None and lift.relative_ci[0] < 0 < lift.relative_ci[1]  # not significant
    assert lift.p_value is not None and lift.p_value > 0.05
    empty = ex.incremental_lift(10, 100, 0, 0)
    assert empty.insufficient_data and empty.relative is None
    none_in_holdout = ex.incremental_lift(10, 100, 0, 100)
    assert none_in_holdout.relative is None and "undefined" in none_in_holdout.reason
