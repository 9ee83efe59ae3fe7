"""A/B/n test statistics: two-proportion z-test, Bayesian chance to beat control, always-valid sequential test,
sample size, and incremental lift against a holdout.

All inputs are counts (conversions, trials). Randomness (Monte-Carlo posteriors) comes in as a
``numpy.random.Generator``. A test over too little data says so (``insufficient_data``) instead of dividing by zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.special import betaln
from scipy.stats import norm

FloatArray = npt.NDArray[np.float64]


def _check_counts(conversions: int, trials: int, name: str) -> None:
    if trials < 0 or conversions < 0 or conversions > trials:
        raise ValueError(f"{name}: need 0 <= conversions <= trials, got {conversions}/{trials}")


# --------------------------------------------------------------------------------------------------------------------
# Frequentist two-proportion test
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProportionTest:
    """B against A: rates, difference with its confidence interval, pooled z and the two-sided p-value."""

    rate_a: float | None
    rate_b: float | None
    difference: float | None
    relative_lift: float | None
    z: float | None
    p_value: float | None
    ci_low: float | None
    ci_high: float | None
    significant: bool
    insufficient_data: bool = False
    reason: str = ""


def two_proportion_test(
    conversions_a: int, trials_a: int, conversions_b: int, trials_b: int, *, alpha: float = 0.05
) -> ProportionTest:
    """Pooled-SE z-test of ``p_b - p_a`` (two-sided) and the unpooled Wald interval of the difference."""
    _check_counts(conversions_a, trials_a, "a")
    _check_counts(conversions_b, trials_b, "b")
    if trials_a == 0 or trials_b == 0:
        return ProportionTest(None, None, None, None, None, None, None, None, False, True, "an arm has no trials")
    pa, pb = conversions_a / trials_a, conversions_b / trials_b
    diff = pb - pa
    lift = diff / pa if pa > 0 else None
    pooled = (conversions_a + conversions_b) / (trials_a + trials_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    se = math.sqrt(pa * (1 - pa) / trials_a + pb * (1 - pb) / trials_b)
    zq = float(norm.ppf(1 - alpha / 2))
    if se0 == 0:
        return ProportionTest(
            pa, pb, diff, lift, None, None, diff, diff, False, True, "no variation: every trial has the same outcome"
        )
    z = diff / se0
    p = float(2 * norm.sf(abs(z)))
    return ProportionTest(pa, pb, diff, lift, z, p, diff - zq * se, diff + zq * se, p < alpha)


# --------------------------------------------------------------------------------------------------------------------
# Bayesian Beta-Binomial
# --------------------------------------------------------------------------------------------------------------------


def probability_b_beats_a(
    conversions_a: int,
    trials_a: int,
    conversions_b: int,
    trials_b: int,
    *,
    prior: tuple[int, int] = (1, 1),
) -> float:
    """P(p_b > p_a) under independent Beta posteriors, in closed form (Evan Miller's sum; integer prior).

    ``sum_{i=0}^{alpha_b-1} B(alpha_a+i, beta_a+beta_b) / ((beta_b+i) B(1+i, beta_b) B(alpha_a, beta_a))``.
    """
    _check_counts(conversions_a, trials_a, "a")
    _check_counts(conversions_b, trials_b, "b")
    if prior[0] < 1 or prior[1] < 1:
        raise ValueError("the closed form needs an integer prior of at least (1, 1)")
    aa, ba = conversions_a + prior[0], trials_a - conversions_a + prior[1]
    ab, bb = conversions_b + prior[0], trials_b - conversions_b + prior[1]
    i = np.arange(ab, dtype=np.float64)
    terms = betaln(aa + i, ba + bb) - np.log(bb + i) - betaln(1 + i, bb) - betaln(aa, ba)
    return float(min(max(np.exp(terms).sum(), 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class ArmPosterior:
    """One arm of an A/B/n test under a Beta posterior."""

    name: str
    conversions: int
    trials: int
    posterior_mean: float
    chance_to_beat_control: float | None  # None for the control itself
    chance_to_be_best: float
    expected_loss: float  # E[max over arms of p - p_this]: the conversion rate given up by choosing this arm


@dataclass(frozen=True, slots=True)
class BayesianResult:
    arms: tuple[ArmPosterior, ...]
    control: str
    draws: int
    insufficient_data: bool = False
    reason: str = ""


def bayesian_ab(
    arms: Sequence[tuple[str, int, int]],
    *,
    rng: np.random.Generator,
    control: str | None = None,
    draws: int = 100_000,
    prior: tuple[float, float] = (1.0, 1.0),
) -> BayesianResult:
    """Chance to beat control, chance to be best and expected loss for A/B/n arms ``(name, conversions, trials)``.

    Monte-Carlo over the Beta posteriors with the given ``rng``; with two arms and an integer prior the chance to beat
    control is the exact closed form instead.
    """
    if len(arms) < 2:
        raise ValueError("need at least two arms")
    names = [a[0] for a in arms]
    if len(set(names)) != len(names):
        raise ValueError("arm names must be unique")
    for name, conv, trials in arms:
        _check_counts(conv, trials, name)
    ctrl = control if control is not None else names[0]
    if ctrl not in names:
        raise ValueError(f"unknown control arm {ctrl!r}")
    ci = names.index(ctrl)
    alphas = np.array([c + prior[0] for _, c, _ in arms], dtype=np.float64)
    betas = np.array([t - c + prior[1] for _, c, t in arms], dtype=np.float64)
    samples = rng.beta(alphas[:, None], betas[:, None], size=(len(arms), draws))
    best = samples.max(axis=0)
    winner = samples.argmax(axis=0)
    integer_prior = float(prior[0]).is_integer() and float(prior[1]).is_integer() and min(prior) >= 1
    out: list[ArmPosterior] = []
    for j, (name, conv, trials) in enumerate(arms):
        if j == ci:
            beat: float | None = None
        elif len(arms) == 2 and integer_prior:
            beat = probability_b_beats_a(arms[ci][1], arms[ci][2], conv, trials, prior=(int(prior[0]), int(prior[1])))
        else:
            beat = float(np.mean(samples[j] > samples[ci]))
        out.append(
            ArmPosterior(
                name,
                conv,
                trials,
                float(alphas[j] / (alphas[j] + betas[j])),
                beat,
                float(np.mean(winner == j)),
                float(np.mean(best - samples[j])),
            )
        )
    few = any(t == 0 for _, _, t in arms)
    return BayesianResult(
        tuple(out), ctrl, draws, few, "an arm has no trials: its posterior is the prior" if few else ""
    )


# --------------------------------------------------------------------------------------------------------------------
# Always-valid sequential test (mixture SPRT)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Look:
    """Cumulative counts at one look at the data."""

    conversions_a: int
    trials_a: int
    conversions_b: int
    trials_b: int


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """Always-valid p-values after each look (non-increasing), and whether/when the test may stop."""

    p_values: tuple[float, ...]
    likelihood_ratios: tuple[float, ...]
    p_value: float
    stop: bool
    stopped_at_look: int | None
    difference: float | None
    tau: float
    alpha: float


def msprt_likelihood_ratio(look: Look, tau: float) -> float:
    """Mixture likelihood ratio of ``theta = p_b - p_a`` (normal approximation, ``N(0, tau^2)`` mixing).

    ``Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))`` with ``d`` the observed difference and
    ``V`` its variance under the null (pooled rate) - Johari, Pekelis & Walsh (2017), "Always valid inference".
    """
    if look.trials_a == 0 or look.trials_b == 0:
        return 1.0
    pa = look.conversions_a / look.trials_a
    pb = look.conversions_b / look.trials_b
    pooled = (look.conversions_a + look.conversions_b) / (look.trials_a + look.trials_b)
    v = pooled * (1 - pooled) * (1 / look.trials_a + 1 / look.trials_b)
    if v <= 0:
        return 1.0
    t2 = tau * tau
    d = pb - pa
    log_lr = 0.5 * math.log(v / (v + t2)) + t2 * d * d / (2 * v * (v + t2))
    return math.exp(min(log_lr, 700.0))


def sequential_test(looks: Sequence[Look], *, alpha: float = 0.05, tau: float = 0.05) -> SequentialResult:
    """Mixture SPRT over cumulative looks: ``p_n = min(p_{n-1}, 1 / Lambda_n)``; stop once ``p_n <= alpha``.

    Valid however often and whenever the data are looked at, as long as looks are taken in order. ``tau`` is the
    standard deviation of the mixing distribution in rate units: about the size of the effects one expects.
    """
    if tau <= 0 or not 0 < alpha < 1:
        raise ValueError("tau must be positive and alpha in (0, 1)")
    p = 1.0
    ps: list[float] = []
    lrs: list[float] = []
    stopped: int | None = None
    for i, look in enumerate(looks):
        _check_counts(look.conversions_a, look.trials_a, "a")
        _check_counts(look.conversions_b, look.trials_b, "b")
        lr = msprt_likelihood_ratio(look, tau)
        p = min(p, 1.0 / lr)
        ps.append(p)
        lrs.append(lr)
        if stopped is None and p <= alpha:
            stopped = i
    diff = None
    if looks and looks[-1].trials_a and looks[-1].trials_b:
        last = looks[-1]
        diff = last.conversions_b / last.trials_b - last.conversions_a / last.trials_a
    return SequentialResult(tuple(ps), tuple(lrs), p, stopped is not None, stopped, diff, tau, alpha)


# --------------------------------------------------------------------------------------------------------------------
# Sample size and lift
# --------------------------------------------------------------------------------------------------------------------


def sample_size_two_proportions(
    baseline: float,
    minimum_detectable_effect: float,
    *,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = True,
) -> int:
    """Trials per arm to detect ``baseline -> baseline + effect`` (normal approximation, no continuity correction).

    ``n = (z_a sqrt(2 p(1-p)) + z_b sqrt(p1(1-p1) + p2(1-p2)))^2 / (p2 - p1)^2`` with ``p`` the mean of the rates.
    ``relative=True`` reads the effect as a fraction of the baseline (0.1 = +10%).
    """
    if not 0 < baseline < 1:
        raise ValueError("baseline must be in (0, 1)")
    p2 = baseline * (1 + minimum_detectable_effect) if relative else baseline + minimum_detectable_effect
    if not 0 < p2 < 1 or p2 == baseline:
        raise ValueError("baseline + effect must be a different rate in (0, 1)")
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise ValueError("alpha and power must be in (0, 1)")
    p1 = baseline
    za = float(norm.ppf(1 - alpha / 2 if two_sided else 1 - alpha))
    zb = float(norm.ppf(power))
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p2 - p1) ** 2
    return math.ceil(n - 1e-9)


@dataclass(frozen=True, slots=True)
class Lift:
    """Treatment against holdout: absolute and relative lift with confidence intervals, incremental conversions."""

    rate_treatment: float | None
    rate_holdout: float | None
    absolute: float | None
    absolute_ci: tuple[float, float] | None
    relative: float | None
    relative_ci: tuple[float, float] | None
    incremental_conversions: float | None
    incremental_ci: tuple[float, float] | None
    p_value: float | None
    insufficient_data: bool = False
    reason: str = ""


def incremental_lift(
    conversions_treatment: int,
    trials_treatment: int,
    conversions_holdout: int,
    trials_holdout: int,
    *,
    alpha: float = 0.05,
) -> Lift:
    """Lift of a treated group over a random holdout.

    Absolute lift ``p_t - p_h`` with the Wald interval; relative lift ``p_t / p_h - 1`` with the log-ratio (Katz)
    interval; incremental conversions ``(p_t - p_h) n_t``; p-value of the pooled two-proportion test.
    """
    test = two_proportion_test(
        conversions_holdout, trials_holdout, conversions_treatment, trials_treatment, alpha=alpha
    )
    if test.insufficient_data or test.rate_a is None or test.rate_b is None or test.difference is None:
        return Lift(test.rate_b, test.rate_a, test.difference, None, None, None, None, None, None, True, test.reason)
    pt, ph = test.rate_b, test.rate_a
    abs_ci = (float(test.ci_low or 0.0), float(test.ci_high or 0.0))
    inc = test.difference * trials_treatment
    inc_ci = (abs_ci[0] * trials_treatment, abs_ci[1] * trials_treatment)
    if conversions_holdout == 0 or conversions_treatment == 0:
        return Lift(
            pt, ph, test.difference, abs_ci, None, None, inc, inc_ci, test.p_value, False,
            "no conversions in an arm: the relative lift is undefined",
        )  # fmt: skip
    zq = float(norm.ppf(1 - alpha / 2))
    log_rr = math.log(pt / ph)
    se = math.sqrt(1 / conversions_treatment - 1 / trials_treatment + 1 / conversions_holdout - 1 / trials_holdout)
    rel_ci = (math.exp(log_rr - zq * se) - 1, math.exp(log_rr + zq * se) - 1)
    return Lift(pt, ph, test.difference, abs_ci, pt / ph - 1, rel_ci, inc, inc_ci, test.p_value)
