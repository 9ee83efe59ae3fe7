"""BG/NBD and Gamma-Gamma: likelihoods against a scalar reference, parameter recovery from simulated data, CLV."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import check_grad
from scipy.special import hyp2f1

from suppilo.engine import clv

# The CDNOW estimates (Fader, Hardie & Lee 2005; Fader & Hardie 2005).
R, ALPHA, A, B = 0.24, 4.41, 0.79, 2.43
P, Q, V = 6.25, 3.74, 15.44


def simulate_bgnbd(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in weeks: CDNOW-like ages of 27..39 weeks, customers drawn from the BG/NBD process."""
    lam = rng.gamma(R, 1.0 / ALPHA, n)
    p = rng.beta(A, B, n)
    T = 39.0 - rng.uniform(0.0, 12.0, n)
    arrivals = rng.poisson(lam * T)  # purchases while alive over (0, T]
    drop_after = rng.geometric(p)  # drops out right after this repeat purchase
    x = np.minimum(arrivals, drop_after).astype(np.float64)
    tx = np.zeros(n)
    pos = x > 0
    # The x-th of N uniform arrival times on (0, T] is T * Beta(x, N - x + 1).
    tx[pos] = T[pos] * rng.beta(x[pos], arrivals[pos] - x[pos] + 1)
    return x, tx, T


def simulate_spend(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Mean of x Gamma(p, nu) transaction values with nu ~ Gamma(q, v): Gamma(p x, nu x)."""
    nu = rng.gamma(Q, 1.0 / V, x.size)
    m = np.zeros(x.size)
    pos = x > 0
    m[pos] = rng.gamma(P * x[pos], 1.0 / (nu[pos] * x[pos]))
    return m


def reference_bgnbd_ll(r: float, alpha: float, a: float, b: float, x: int, tx: float, T: float) -> float:
    """FHL 2005 eq. 6 written out directly, one customer at a time."""

    def beta(u: float, v: float) -> float:
        return math.exp(math.lgamma(u) + math.lgamma(v) - math.lgamma(u + v))

    common = math.exp(math.lgamma(r + x) - math.lgamma(r)) * alpha**r
    first = beta(a, b + x) / beta(a, b) * common / (alpha + T) ** (r + x)
    second = beta(a + 1, b + x - 1) / beta(a, b) * common / (alpha + tx) ** (r + x) if x > 0 else 0.0
    return math.log(first + second)


def reference_gg_ll(p: float, q: float, v: float, x: int, m: float) -> float:
    """Fader & Hardie 2005 eq. 4: the density of the mean spend, written out directly."""
    log_coef = math.lgamma(p * x + q) - math.lgamma(p * x) - math.lgamma(q)
    return (
        log_coef + q * math.log(v) + (p * x - 1) * math.log(m) + p * x * math.log(x) - (p * x + q) * math.log(v + m * x)
    )


def test_log_likelihood_matches_the_scalar_reference() -> None:
    rows = [(0, 0.0, 38.86), (1, 30.43, 38.86), (2, 1.71, 38.86), (7, 29.43, 38.86), (25, 35.0, 37.0)]
    x = np.array([r[0] for r in rows], dtype=float)
    tx = np.array([r[1] for r in rows])
    T = np.array([r[2] for r in rows])
    got = clv.bgnbd_log_likelihood_rows((R, ALPHA, A, B), x, tx, T)
    want = [reference_bgnbd_ll(R, ALPHA, A, B, int(xi), ti, Ti) for xi, ti, Ti in rows]
    assert got == pytest.approx(want, rel=1e-10)
    xs = np.array([1.0, 2.0, 6.0])
    ms = np.array([35.0, 12.5, 80.25])
    gg = clv.gamma_gamma_log_likelihood_rows((P, Q, V), xs, ms)
    assert gg == pytest.approx([reference_gg_ll(P, Q, V, int(a), b) for a, b in zip(xs, ms, strict=True)], rel=1e-10)


def test_analytic_gradients_agree_with_finite_differences() -> None:
    rng = np.random.default_rng(3)
    x, tx, T = simulate_bgnbd(rng, 2000)
    c = clv._compress(x, tx, T)
    theta = np.log([0.3, 4.0, 0.9, 2.0])
    err = check_grad(lambda t: clv._bgnbd_nll_and_grad(t, c)[0], lambda t: clv._bgnbd_nll_and_grad(t, c)[1], theta)
    assert err < 1e-5
    # Compressed and uncompressed rows give the same mean log-likelihood.
    full = clv._compress(x, tx, T, dedupe=False)
    assert clv._bgnbd_nll_and_grad(theta, c)[0] == pytest.approx(clv._bgnbd_nll_and_grad(theta, full)[0], rel=1e-12)


def test_bgnbd_recovers_the_cdnow_parameters_from_simulated_customers() -> None:
    rng = np.random.default_rng(2005)
    x, tx, T = simulate_bgnbd(rng, 20_000)
    fit = clv.fit_bgnbd(x, tx, T, unit_days=7.0)
    assert fit.converged and fit.reason == "" and fit.fallback is None
    assert fit.r == pytest.approx(R, rel=0.15)
    assert fit.alpha == pytest.approx(ALPHA, rel=0.2)
    assert fit.a == pytest.approx(A, rel=0.3)
    assert fit.b == pytest.approx(B, rel=0.35)
    # The optimum beats the true parameters on the sample, and equals the summed row likelihoods.
    rows = clv.bgnbd_log_likelihood_rows(fit.params, x, tx, T)
    assert fit.log_likelihood == pytest.approx(float(rows.sum()), rel=1e-9)
    assert fit.log_likelihood >= float(clv.bgnbd_log_likelihood_rows((R, ALPHA, A, B), x, tx, T).sum())


def test_gamma_gamma_recovers_parameters() -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(1, 8, 20_000).astype(float)
    m = simulate_spend(rng, x)
    fit = clv.fit_gamma_gamma(x, m)
    assert fit.converged
    assert fit.p == pytest.approx(P, rel=0.15)
    assert fit.q == pytest.approx(Q, rel=0.15)
    assert fit.v == pytest.approx(V, rel=0.25)
    # The population mean spend p v / (q - 1) is what a customer without repeat purchases gets.
    zero = clv.expected_order_value(fit, np.array([0.0]), np.array([0.0]))
    assert zero[0] == pytest.approx(fit.p * fit.v / (fit.q - 1.0))
    # Shrinkage: with more transactions the estimate moves towards the customer's own mean.
    est = clv.expected_order_value(fit, np.array([1.0, 50.0]), np.array([100.0, 100.0]))
    assert abs(est[1] - 100.0) < abs(est[0] - 100.0)


def test_p_alive_is_one_without_repeat_purchases_and_falls_with_silence() -> None:
    fit = clv.BgNbdFit(R, ALPHA, A, B, 0.0, True, 3, 2, 3)
    p = clv.probability_alive(fit, np.array([0.0, 4.0, 4.0]), np.array([0.0, 38.0, 5.0]), np.array([39.0, 39.0, 39.0]))
    assert p[0] == 1.0
    assert 0.0 < p[2] < p[1] < 1.0
    # Formula check for the customer with x = 4, t_x = 5: 1 / (1 + a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)).
    assert p[2] == pytest.approx(1.0 / (1.0 + A / (B + 3) * ((ALPHA + 39) / (ALPHA + 5)) ** (R + 4)))


def test_expected_purchases_of_a_new_customer_is_the_unconditional_expectation() -> None:
    fit = clv.BgNbdFit(R, ALPHA, A, B, 0.0, True, 1, 1, 1)
    t = 52.0
    got = clv.expected_purchases(fit, t, np.array([0.0]), np.array([0.0]), np.array([0.0]))[0]
    # FHL 2005 eq. 9: E[X(t)] for a customer just acquired.
    want = (A + B - 1) / (A - 1) * (1 - (ALPHA / (ALPHA + t)) ** R * hyp2f1(R, B, A + B - 1, t / (ALPHA + t)))
    assert got == pytest.approx(want, rel=1e-10)


def simulate_orders(rng: np.random.Generator, n: int, end_day: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order rows (customer, day, value) from the BG/NBD + Gamma-Gamma process, rates per week."""
    lam = rng.gamma(R, 1.0 / ALPHA, n) / 7.0
    drop = rng.beta(A, B, n)
    nu = rng.gamma(Q, 1.0 / V, n)
    ids: list[int] = []
    days: list[float] = []
    for i in range(n):
        t = rng.uniform(0.0, 84.0)
        ids.append(i)
        days.append(t)
        while True:
            t += rng.exponential(1.0 / lam[i])
            if t > end_day:
                break
            ids.append(i)
            days.append(t)
            if rng.random() < drop[i]:
                break
    values = rng.gamma(P, 1.0 / nu[np.array(ids)])
    return np.array(ids), np.array(days), values


def test_holdout_predictions_match_actual_repeat_purchases() -> None:
    rng = np.random.default_rng(11)
    ids, days, values = simulate_orders(rng, 8000, end_day=78 * 7)
    report = clv.calibration_holdout(ids, days, values, cutoff=39 * 7, observation_end=78 * 7, unit_days=7.0)
    assert not report.insufficient_data and report.model.converged
    assert report.holdout_units == pytest.approx(39.0)
    assert report.actual_total > 500
    assert report.relative_error is not None and abs(report.relative_error) < 0.1
    by_freq = {b.frequency: b for b in report.buckets}
    assert by_freq[0].customers > by_freq[3].customers
    assert by_freq[7].open_ended and not by_freq[0].open_ended
    # Customers who bought more in calibration buy more in the holdout, predicted and actually.
    assert by_freq[0].predicted_mean < by_freq[3].predicted_mean
    assert by_freq[0].actual_mean < by_freq[3].actual_mean


def test_summary_from_orders() -> None:
    ids = np.array(["b", "a", "a", "b", "a", "c"])
    days = np.array([10.0, 0.0, 14.0, 3.0, 7.0, 20.0])
    vals = np.array([5.0, 100.0, 30.0, 1.0, 10.0, 9.0])
    s = clv.summarize_transactions(ids, days, vals, observation_end=21.0, unit_days=7.0)
    assert list(s.customer_ids) == ["a", "b", "c"]
    # a: orders on days 0, 7, 14 -> x = 2, t_x = 2 weeks, T = 3 weeks, repeat mean (10 + 30) / 2.
    # b: days 3, 10 -> x = 1, t_x = 1 week, T = 18/7 weeks, repeat mean 5. c: one order on day 20.
    assert list(s.frequency) == [2.0, 1.0, 0.0]
    assert s.recency == pytest.approx([2.0, 1.0, 0.0])
    assert s.age == pytest.approx([3.0, 18 / 7, 1 / 7])
    assert s.monetary == pytest.approx([20.0, 5.0, 0.0])
    late = clv.summarize_transactions(ids, days, vals, observation_end=9.0, unit_days=1.0)
    assert list(late.customer_ids) == ["a", "b"] and list(late.frequency) == [1.0, 0.0]
    assert len(clv.summarize_transactions([], [], [], observation_end=1.0)) == 0


def test_too_few_repeat_customers_names_the_fallback() -> None:
    x = np.array([0.0, 1.0, 2.0, 0.0])
    tx = np.array([0.0, 3.0, 5.0, 0.0])
    T = np.array([10.0, 10.0, 10.0, 4.0])
    m = np.array([0.0, 20.0, 40.0, 0.0])
    summary = clv.CustomerSummary(np.arange(4), x, tx, T, m, unit_days=7.0)
    model = clv.fit_clv(summary)
    assert not model.converged
    assert (
        model.bg_nbd.fallback == clv.HISTORICAL_FALLBACK and "too few repeat customers (2 < 20)" in model.bg_nbd.reason
    )
    assert model.gamma_gamma.fallback == clv.HISTORICAL_FALLBACK
    pred = model.predict(summary, months=3, monthly_discount_rate=0.0)
    assert pred.method == "historical_average"
    assert np.isnan(pred.p_alive).all()
    horizon = 3 * clv.DAYS_PER_MONTH / 7.0
    assert pred.expected_purchases == pytest.approx(x / T * horizon)
    # Order value: own repeat mean, else the historical mean repeat-order value (20 + 2*40) / 3.
    assert pred.expected_order_value == pytest.approx([100 / 3, 20.0, 40.0, 100 / 3])
    assert pred.clv == pytest.approx(pred.expected_purchases * pred.expected_order_value)


def test_discounted_clv_sums_monthly_purchases() -> None:
    rng = np.random.default_rng(5)
    x, tx, T = simulate_bgnbd(rng, 5000)
    m = simulate_spend(rng, x)
    summary = clv.CustomerSummary(np.arange(x.size), x, tx, T, m, unit_days=7.0)
    model = clv.fit_clv(summary)
    assert model.converged and model.reasons == []
    undiscounted = model.predict(summary, months=12, monthly_discount_rate=0.0)
    discounted = model.predict(summary, months=12, monthly_discount_rate=0.02)
    # Without discounting CLV is purchases over the year times order value.
    assert undiscounted.clv == pytest.approx(undiscounted.expected_purchases * undiscounted.expected_order_value)
    assert np.all(discounted.clv <= undiscounted.clv + 1e-12)
    assert np.all(discounted.clv >= undiscounted.clv / 1.02**12 - 1e-12)
    assert undiscounted.horizon_units == pytest.approx(12 * clv.DAYS_PER_MONTH / 7.0)


def test_bad_rows_are_refused() -> None:
    with pytest.raises(ValueError):
        clv.fit_bgnbd([1.0], [5.0], [3.0])
    with pytest.raises(ValueError):
        clv.fit_bgnbd([0.0], [1.0], [3.0])


def test_expected_purchases_agrees_with_the_direct_formula_and_stays_finite_for_heavy_buyers() -> None:
    fit = clv.BgNbdFit(R, ALPHA, A, B, 0.0, True, 1, 1, 1)
    x = np.array([0.0, 1.0, 3.0, 12.0])
    tx = np.array([0.0, 10.0, 30.0, 36.0])
    T = np.array([39.0, 39.0, 39.0, 39.0])
    t = 26.0
    # FHL 2005 eq. 10 in its published form.
    z = t / (ALPHA + T + t)
    direct = (
        (A + B + x - 1)
        / (A - 1)
        * (1 - ((ALPHA + T) / (ALPHA + T + t)) ** (R + x) * hyp2f1(R + x, B + x, A + B + x - 1, z))
    )
    odds = np.where(x > 0, A / (B + x - 1) * ((ALPHA + T) / (ALPHA + tx)) ** (R + x), 0.0)
    assert clv.expected_purchases(fit, t, x, tx, T) == pytest.approx(direct / (1 + odds), rel=1e-9)
    heavy = [
        clv.expected_purchases(fit, h, np.array([300.0]), np.array([39.0]), np.array([39.0]))[0] for h in (4, 52, 520)
    ]
    assert all(np.isfinite(heavy)) and heavy[0] < heavy[1] < heavy[2]
    # A heavy buyer seen this week buys at about (r + x) / (alpha + T) per week in the near term.
    assert heavy[0] == pytest.approx(4 * (R + 300) / (ALPHA + 39), rel=0.05)
