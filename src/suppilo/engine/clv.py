"""Predictive customer lifetime value: BG/NBD purchases and drop-out, Gamma-Gamma spend, discounted CLV.

Models
------
* BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a customer buys as a
  Poisson process with rate ``lambda ~ Gamma(r, alpha)``; after every repeat purchase the customer drops out with
  probability ``p ~ Beta(a, b)``. A customer is summarised by ``x`` (repeat purchases), ``t_x`` (time of the last
  purchase since the first) and ``T`` (time since the first purchase).
* Gamma-Gamma (Fader & Hardie 2005, "The Gamma-Gamma model of monetary value"): a customer's transaction values are
  ``Gamma(p, nu)`` with ``nu ~ Gamma(q, gamma)``; fitted on customers with ``x > 0`` on the mean of their repeat
  transaction values.

Both are fitted by maximum likelihood on log-parameters with L-BFGS-B and analytic gradients. Identical
``(x, t_x, T)`` rows are compressed into weighted rows first, and every term that depends only on ``x`` is computed
once per distinct ``x``, so a million customers fit in well under a second.

Time is in any unit (``unit_days`` says how many days one unit is: 7 for weeks); the summary helper converts.
Nothing here reads a clock or a random source: data come in as arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import betaln, digamma, gammaln, hyp2f1

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_REPEAT_CUSTOMERS = 20
DAYS_PER_MONTH = 365.25 / 12
_LOG_BOUND = 12.0  # log-parameters are kept within exp(±12)
HISTORICAL_FALLBACK = "historical_average"

Method = Literal["bg_nbd", "historical_average"]


# --------------------------------------------------------------------------------------------------------------------
# The customer summary (x, t_x, T, monetary value)
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerSummary:
    """One row per customer: ``frequency`` (repeat purchases), ``recency`` (t_x), ``age`` (T) and ``monetary``.

    ``monetary`` is the mean value of the repeat purchases (0 when there are none), as the Gamma-Gamma model expects.
    ``customer_ids`` are the distinct ids in sorted order.
    """

    customer_ids: npt.NDArray[np.generic]
    frequency: FloatArray
    recency: FloatArray
    age: FloatArray
    monetary: FloatArray
    unit_days: float = 1.0

    def __len__(self) -> int:
        return int(self.frequency.shape[0])


def summarize_transactions(
    customer_ids: npt.ArrayLike,
    times: npt.ArrayLike,
    values: npt.ArrayLike,
    observation_end: float,
    *,
    unit_days: float = 7.0,
    time_unit_days: float = 1.0,
) -> CustomerSummary:
    """The (x, t_x, T, monetary) table from order rows with grouped numpy reductions (no per-order loop, no sort).

    ``times`` and ``observation_end`` are numbers in ``time_unit_days`` days (1.0: days, 1/86400: seconds); the
    output is in ``unit_days`` days (7.0: weeks). Orders after ``observation_end`` are ignored. Every order counts as a
    transaction, including several at the same instant.
    """
    ids = np.asarray(customer_ids)
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if not (ids.shape == t.shape == v.shape) or ids.ndim != 1:
        raise ValueError("customer_ids, times and values must be one-dimensional arrays of the same length")
    keep = t <= observation_end
    if not keep.all():
        ids, t, v = ids[keep], t[keep], v[keep]
    if ids.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return CustomerSummary(ids, empty, empty.copy(), empty.copy(), empty.copy(), unit_days)
    # Customer codes: integer ids in a compact range index bins directly; anything else goes through np.unique.
    if ids.dtype.kind in "iu" and int(ids.max()) - int(ids.min()) <= 4 * ids.size + 1024:
        base = int(ids.min())
        codes = (ids - base).astype(np.intp)
        nbins = int(ids.max()) - base + 1
        uniq = None
    else:
        uniq, codes = np.unique(ids, return_inverse=True)
        nbins = int(uniq.size)
    # Grouped reductions with bincount and ufunc.at: no sort of the order rows.
    counts = np.bincount(codes, minlength=nbins).astype(np.float64)
    total = np.bincount(codes, weights=v, minlength=nbins).astype(np.float64)
    first_t = np.full(nbins, np.inf)
    np.minimum.at(first_t, codes, t)
    last_t = np.full(nbins, -np.inf)
    np.maximum.at(last_t, codes, t)
    # The first order's value (several orders at the first instant: the largest of them).
    is_first = t == first_t[codes]
    first_v = np.full(nbins, -np.inf)
    np.maximum.at(first_v, codes[is_first], v[is_first])
    present = counts > 0
    if uniq is None:
        uniq = np.flatnonzero(present) + base
        counts, total, first_t = counts[present], total[present], first_t[present]
        last_t, first_v = last_t[present], first_v[present]
    scale = time_unit_days / unit_days
    frequency = counts - 1.0
    recency = (last_t - first_t) * scale
    age = (observation_end - first_t) * scale
    repeat_total = total - first_v
    monetary = np.divide(repeat_total, frequency, out=np.zeros_like(repeat_total), where=frequency > 0)
    return CustomerSummary(uniq, frequency, recency, age, monetary, unit_days)


# --------------------------------------------------------------------------------------------------------------------
# Compression of identical rows
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compressed:
    x: FloatArray
    tx: FloatArray
    T: FloatArray
    weight: FloatArray
    ux: FloatArray  # distinct x values
    x_index: IntArray  # row -> index into ux
    ux_weight: FloatArray  # total weight per distinct x


def _compress(x: FloatArray, tx: FloatArray, T: FloatArray, *, dedupe: bool = True) -> _Compressed:
    if dedupe and x.size > 1:
        # One integer key per row from the codes of each column among its distinct values, then one integer sort.
        integral = bool(np.all(x == np.floor(x))) and float(x.max()) < 2.0**31
        ux0 = np.arange(int(x.max()) + 1, dtype=np.float64) if integral else np.unique(x)
        xi = x.astype(np.int64) if integral else np.searchsorted(ux0, x)
        uv = np.union1d(np.unique(T), np.unique(tx))
        Ti, txi = np.searchsorted(uv, T), np.searchsorted(uv, tx)
        nv = np.int64(uv.size)
        if float(ux0.size) * float(uv.size) ** 2 < 2.0**62:
            key = (xi.astype(np.int64) * nv + Ti) * nv + txi
            ukey, weights = np.unique(key, return_counts=True)
            rest, tx_code = np.divmod(ukey, nv)
            x_code, T_code = np.divmod(rest, nv)
            x, tx, T = ux0[x_code], uv[tx_code], uv[T_code]
            weight = weights.astype(np.float64)
        else:
            weight = np.ones_like(x)
    else:
        weight = np.ones_like(x)
    ux, x_index = np.unique(x, return_inverse=True)
    ux_weight = np.bincount(x_index, weights=weight, minlength=ux.size).astype(np.float64)
    return _Compressed(x, tx, T, weight, ux, x_index.astype(np.int64), ux_weight)


# --------------------------------------------------------------------------------------------------------------------
# BG/NBD
# --------------------------------------------------------------------------------------------------------------------


def bgnbd_log_likelihood_rows(
    params: tuple[float, float, float, float], x: FloatArray, tx: FloatArray, T: FloatArray
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood (FHL 2005, eq. 7) in the log-sum-exp form."""
    r, alpha, a, b = params
    x = np.asarray(x, dtype=np.float64)
    tx = np.asarray(tx, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    a1 = gammaln(r + x) - gammaln(r) + r * math.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    pos = x > 0
    out = a1 + a2
    if pos.any():
        xp = x[pos]
        a3 = betaln(a + 1.0, b + xp - 1.0) - betaln(a, b) - (r + xp) * np.log(alpha + tx[pos])
        out[pos] = a1[pos] + np.logaddexp(a2[pos], a3)
    return np.asarray(out, dtype=np.float64)


def _dot(u: FloatArray, v: FloatArray) -> float:
    """Σ u·v without BLAS (whose thread pool costs more than it saves on a busy machine)."""
    return float(np.multiply(u, v).sum())


def _bgnbd_nll_and_grad(theta: FloatArray, c: _Compressed) -> tuple[float, FloatArray]:
    """Negative mean log-likelihood and its gradient with respect to the log-parameters."""
    r, alpha, a, b = np.exp(theta)
    ux = c.ux
    # Terms depending on x only, once per distinct x.
    beta_ab = betaln(a, b)
    a1_u = gammaln(r + ux) - gammaln(r) + r * math.log(alpha)
    b2_u = betaln(a, b + ux) - beta_ab
    pos_u = ux > 0
    b3_u = np.where(pos_u, betaln(a + 1.0, np.maximum(b + ux - 1.0, 1e-300)) - beta_ab, -np.inf)
    psi_r = digamma(r)
    psi_ab = digamma(a + b)
    psi_abx = digamma(a + b + ux)
    da1_dr_u = digamma(r + ux) - psi_r + math.log(alpha)
    db2_da_u = psi_ab - psi_abx
    db2_db_u = digamma(b + ux) - psi_abx - digamma(b) + psi_ab
    db3_da_u = digamma(a + 1.0) - psi_abx - digamma(a) + psi_ab
    db3_db_u = np.where(pos_u, digamma(np.maximum(b + ux - 1.0, 1e-300)) - psi_abx - digamma(b) + psi_ab, 0.0)

    idx = c.x_index
    w = c.weight
    rx = r + c.x
    log_aT = np.log(alpha + c.T)
    log_at = np.log(alpha + c.tx)
    a2 = b2_u[idx] - rx * log_aT
    a3 = b3_u[idx] - rx * log_at
    lse = np.logaddexp(a2, a3)
    w3 = np.exp(a3 - lse)  # 0 where x == 0
    w2 = 1.0 - w3
    total_w = float(w.sum())

    ll = _dot(a1_u, c.ux_weight) + _dot(w, lse)
    # d/dr
    g_r = _dot(da1_dr_u, c.ux_weight) - _dot(w, w2 * log_aT + w3 * log_at)
    # d/dalpha
    g_alpha = r / alpha * total_w - _dot(w, rx * (w2 / (alpha + c.T) + w3 / (alpha + c.tx)))
    # d/da, d/db: per distinct x, mixed by the row weights of the two branches.
    w2_u = np.bincount(idx, weights=w * w2, minlength=ux.size).astype(np.float64)
    w3_u = np.bincount(idx, weights=w * w3, minlength=ux.size).astype(np.float64)
    g_a = _dot(db2_da_u, w2_u) + _dot(db3_da_u, w3_u)
    g_b = _dot(db2_db_u, w2_u) + _dot(db3_db_u, w3_u)
    grad = np.array([g_r * r, g_alpha * alpha, g_a * a, g_b * b])
    return -ll / total_w, -grad / total_w


@dataclass(frozen=True, slots=True)
class BgNbdFit:
    """A fitted BG/NBD model, or the reason it could not be fitted (then predictions use the named fallback)."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    converged: bool
    n_customers: int
    n_repeat_customers: int
    n_rows_fitted: int
    iterations: int = 0
    reason: str = ""
    fallback: str | None = None
    unit_days: float = 1.0

    @property
    def params(self) -> tuple[float, float, float, float]:
        return (self.r, self.alpha, self.a, self.b)

    @property
    def method(self) -> Method:
        return "bg_nbd" if self.converged else "historical_average"


def _not_fitted(n: int, repeat: int, reason: str, unit_days: float) -> BgNbdFit:
    nan = float("nan")
    return BgNbdFit(nan, nan, nan, nan, nan, False, n, repeat, 0, 0, reason, HISTORICAL_FALLBACK, unit_days)


def fit_bgnbd(
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    age: npt.ArrayLike,
    *,
    compress: bool = True,
    min_repeat_customers: int = MIN_REPEAT_CUSTOMERS,
    unit_days: float = 1.0,
    max_iterations: int = 500,
) -> BgNbdFit:
    """Maximum-likelihood BG/NBD on (x, t_x, T); ``compress=False`` fits every row (the benchmark's baseline)."""
    x = np.asarray(frequency, dtype=np.float64)
    tx = np.asarray(recency, dtype=np.float64)
    T = np.asarray(age, dtype=np.float64)
    n = int(x.size)
    if not (x.shape == tx.shape == T.shape):
        raise ValueError("frequency, recency and age must have the same length")
    if n and (np.any(x < 0) or np.any(tx < 0) or np.any(tx > T) or np.any((x == 0) & (tx != 0))):
        raise ValueError("need x >= 0, 0 <= t_x <= T, and t_x = 0 when x = 0")
    repeat = int(np.count_nonzero(x > 0))
    if repeat < min_repeat_customers:
        return _not_fitted(n, repeat, f"too few repeat customers ({repeat} < {min_repeat_customers})", unit_days)
    if float(T.max()) <= 0:
        return _not_fitted(n, repeat, "all customers have age 0", unit_days)
    c = _compress(x, tx, T, dedupe=compress)
    # Start: r = 1 and alpha from the observed repeat rate; a = 1, b = 3 (drop-out after a few purchases).
    rate = max(float(x.mean()) / max(float(T.mean()), 1e-9), 1e-6)
    starts = [np.log([1.0, 1.0 / rate, 1.0, 3.0]), np.log([0.5, 0.5 / rate, 0.5, 1.0])]
    best = None
    for theta0 in starts:
        res = minimize(
            _bgnbd_nll_and_grad,
            np.clip(theta0, -_LOG_BOUND + 1, _LOG_BOUND - 1),
            args=(c,),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 4,
            options={"maxiter": max_iterations},
        )
        if best is None or (np.isfinite(res.fun) and res.fun < best.fun):
            best = res
        if res.success and np.isfinite(res.fun):
            break
    assert best is not None
    total_w = float(c.weight.sum())
    r, alpha, a, b = (float(v) for v in np.exp(best.x))
    ll = -float(best.fun) * total_w
    at_bound = bool(np.any(np.abs(best.x) >= _LOG_BOUND - 1e-6))
    if not best.success or not np.isfinite(ll):
        reason = f"optimiser did not converge: {best.message}"
    elif at_bound:
        reason = "a parameter ran to its bound (the data do not identify the model)"
    else:
        reason = ""
    converged = reason == ""
    return BgNbdFit(
        r,
        alpha,
        a,
        b,
        ll,
        converged,
        n,
        repeat,
        int(c.x.size),
        int(best.nit),
        reason,
        None if converged else HISTORICAL_FALLBACK,
        unit_days,
    )


def _alive_odds(params: tuple[float, float, float, float], x: FloatArray, tx: FloatArray, T: FloatArray) -> FloatArray:
    """``delta(x>0) * a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)``, computed in logs."""
    r, alpha, a, b = params
    pos = x > 0
    odds = np.zeros_like(x)
    if pos.any():
        xp = x[pos]
        log_odds = math.log(a) - np.log(b + xp - 1.0) + (r + xp) * (np.log(alpha + T[pos]) - np.log(alpha + tx[pos]))
        odds[pos] = np.exp(np.minimum(log_odds, 700.0))
    return odds


def probability_alive(
    fit: BgNbdFit, frequency: npt.ArrayLike, recency: npt.ArrayLike, age: npt.ArrayLike
) -> FloatArray:
    """P(alive | x, t_x, T) (FHL 2005 eq. 11); exactly 1 for customers without repeat purchases.

    NaN for every customer when the fit did not converge: P(alive) has no historical fallback.
    """
    x = np.asarray(frequency, dtype=np.float64)
    tx = np.asarray(recency, dtype=np.float64)
    T = np.asarray(age, dtype=np.float64)
    if not fit.converged:
        return np.full(x.shape, np.nan)
    return np.asarray(1.0 / (1.0 + _alive_odds(fit.params, x, tx, T)), dtype=np.float64)


def expected_purchases(
    fit: BgNbdFit, t: float, frequency: npt.ArrayLike, recency: npt.ArrayLike, age: npt.ArrayLike
) -> FloatArray:
    """Expected purchases in the next ``t`` time units given (x, t_x, T) (FHL 2005 eq. 10, with ``hyp2f1``).

    Fallback when the fit did not converge: the customer's own repeat rate ``x / T`` times ``t``.
    """
    x = np.asarray(frequency, dtype=np.float64)
    tx = np.asarray(recency, dtype=np.float64)
    T = np.asarray(age, dtype=np.float64)
    if t <= 0:
        return np.zeros(x.shape)
    if not fit.converged:
        return np.asarray(np.divide(x, T, out=np.zeros_like(x), where=T > 0) * t, dtype=np.float64)
    r, alpha, a, b = fit.params
    if abs(a - 1.0) < 1e-9:
        a = 1.0 + 1e-9
    z = t / (alpha + T + t)
    # FHL eq. 10 has ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z). With 1 - z = (alpha+T)/(alpha+T+t),
    # Euler's transformation turns it into (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z), whose small upper parameters
    # keep the series accurate for heavy buyers (the direct form loses all precision around x = 300).
    hyp = hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
    numer = (a + b + x - 1.0) / (a - 1.0) * (1.0 - (1.0 - z) ** (a - 1.0) * hyp)
    out = numer / (1.0 + _alive_odds((r, alpha, a, b), x, tx, T))
    return np.asarray(np.maximum(out, 0.0), dtype=np.float64)


# --------------------------------------------------------------------------------------------------------------------
# Gamma-Gamma
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GammaGammaFit:
    """A fitted Gamma-Gamma spend model (``v`` is the paper's gamma), or why not (fallback: historical mean)."""

    p: float
    q: float
    v: float
    log_likelihood: float
    converged: bool
    n_customers: int
    reason: str = ""
    fallback: str | None = None
    population_mean: float = float("nan")  # the historical mean repeat-order value (the fallback)


def gamma_gamma_log_likelihood_rows(
    params: tuple[float, float, float], frequency: FloatArray, monetary: FloatArray
) -> FloatArray:
    """Per-customer Gamma-Gamma log-likelihood of the mean spend ``monetary`` over ``frequency`` transactions."""
    p, q, v = params
    x = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary, dtype=np.float64)
    px = p * x
    out = (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * math.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(v + x * m)
    )
    return np.asarray(out, dtype=np.float64)


def _gg_nll_and_grad(
    theta: FloatArray,
    ux: FloatArray,
    ux_w: FloatArray,
    x: FloatArray,
    xm: FloatArray,
    const_p: float,
    const: float,
) -> tuple[float, FloatArray]:
    p, q, v = np.exp(theta)
    n = float(ux_w.sum())
    pux = p * ux
    lv = np.log(v + xm)
    ll = (
        _dot(gammaln(pux + q) - gammaln(pux), ux_w)
        - n * float(gammaln(q))
        + n * q * math.log(v)
        + p * const_p
        - const
        - _dot(p * x + q, lv)
    )
    psi_pq = digamma(pux + q)
    g_p = _dot(ux * (psi_pq - digamma(pux)), ux_w) + const_p - _dot(x, lv)
    g_q = _dot(psi_pq, ux_w) - n * float(digamma(q)) + n * math.log(v) - float(lv.sum())
    g_v = float(n * q / v - ((p * x + q) / (v + xm)).sum())
    grad = np.array([g_p * p, g_q * q, g_v * v])
    return -ll / n, -grad / n


def fit_gamma_gamma(
    frequency: npt.ArrayLike,
    monetary: npt.ArrayLike,
    *,
    min_customers: int = MIN_REPEAT_CUSTOMERS,
    max_iterations: int = 500,
) -> GammaGammaFit:
    """Maximum-likelihood Gamma-Gamma on the customers with ``x > 0`` and a positive mean repeat spend."""
    x_all = np.asarray(frequency, dtype=np.float64)
    m_all = np.asarray(monetary, dtype=np.float64)
    use = (x_all > 0) & (m_all > 0)
    x, m = x_all[use], m_all[use]
    n = int(x.size)
    hist = float((x * m).sum() / x.sum()) if n else float("nan")
    nan = float("nan")
    if n < min_customers:
        return GammaGammaFit(
            nan, nan, nan, nan, False, n, f"too few repeat customers ({n} < {min_customers})", HISTORICAL_FALLBACK, hist
        )
    ux, inv = np.unique(x, return_inverse=True)
    ux_w = np.bincount(inv, minlength=ux.size).astype(np.float64)
    xm = x * m
    log_m = np.log(m)
    const_p = _dot(x, log_m) + _dot(x, np.log(x))  # sum of p*x*(log m + log x), without p
    const = float(log_m.sum())
    mean_m, var_m = float(m.mean()), float(m.var())
    # Moment-style start: q a little above 2, v from the mean, p from the within-customer dispersion.
    q0 = 3.0
    p0 = max(mean_m**2 / max(var_m, 1e-12), 0.5)
    v0 = max(mean_m * (q0 - 1.0) / p0, 1e-6)
    starts = [np.log([p0, q0, v0]), np.log([1.0, 1.0, 1.0])]
    best = None
    for theta0 in starts:
        res = minimize(
            _gg_nll_and_grad,
            np.clip(theta0, -_LOG_BOUND + 1, _LOG_BOUND - 1),
            args=(ux, ux_w, x, xm, const_p, const),
            jac=True,
            method="L-BFGS-B",
            bounds=[(-_LOG_BOUND, _LOG_BOUND)] * 3,
            options={"maxiter": max_iterations},
        )
        if best is None or (np.isfinite(res.fun) and res.fun < best.fun):
            best = res
        if res.success and np.isfinite(res.fun):
            break
    assert best is not None
    p, q, v = (float(val) for val in np.exp(best.x))
    ll = -float(best.fun) * n
    if not best.success or not np.isfinite(ll):
        reason = f"optimiser did not converge: {best.message}"
    elif np.any(np.abs(best.x) >= _LOG_BOUND - 1e-6):
        reason = "a parameter ran to its bound (the data do not identify the model)"
    elif q <= 1.0:
        reason = "q <= 1: the expected spend is infinite under the fitted model"
    else:
        reason = ""
    ok = reason == ""
    return GammaGammaFit(p, q, v, ll, ok, n, reason, None if ok else HISTORICAL_FALLBACK, hist)


def expected_order_value(fit: GammaGammaFit, frequency: npt.ArrayLike, monetary: npt.ArrayLike) -> FloatArray:
    """E[M | x, mean spend]: ``(v + x m) p / (p x + q - 1)``; the population mean ``p v / (q - 1)`` when ``x = 0``.

    Fallback when the fit did not converge: the customer's own mean spend, or the historical mean when ``x = 0``.
    """
    x = np.asarray(frequency, dtype=np.float64)
    m = np.asarray(monetary, dtype=np.float64)
    if not fit.converged:
        return np.asarray(np.where((x > 0) & (m > 0), m, fit.population_mean), dtype=np.float64)
    p, q, v = fit.p, fit.q, fit.v
    m_eff = np.where(x > 0, m, 0.0)
    return np.asarray((v + x * m_eff) * p / (p * x + q - 1.0), dtype=np.float64)


# --------------------------------------------------------------------------------------------------------------------
# CLV and the combined fit
# --------------------------------------------------------------------------------------------------------------------


def discounted_clv(
    bg: BgNbdFit,
    gg: GammaGammaFit,
    frequency: npt.ArrayLike,
    recency: npt.ArrayLike,
    age: npt.ArrayLike,
    monetary: npt.ArrayLike,
    *,
    months: int = 12,
    monthly_discount_rate: float = 0.01,
) -> FloatArray:
    """Sum over months m = 1..months of E[purchases in month m] × E[order value] / (1 + d)^m.

    Months are ``365.25 / 12`` days, converted with the fit's ``unit_days``.
    """
    if months < 0 or monthly_discount_rate <= -1:
        raise ValueError("months must be >= 0 and the discount rate > -1")
    x = np.asarray(frequency, dtype=np.float64)
    month = DAYS_PER_MONTH / bg.unit_days
    value = expected_order_value(gg, x, monetary)
    total = np.zeros(x.shape)
    previous = np.zeros(x.shape)
    for k in range(1, months + 1):
        cumulative = expected_purchases(bg, k * month, x, recency, age)
        total += (cumulative - previous) / (1.0 + monthly_discount_rate) ** k
        previous = cumulative
    return np.asarray(total * value, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ClvPredictions:
    """Per-customer predictions in the order of the summary rows."""

    p_alive: FloatArray
    expected_purchases: FloatArray
    expected_order_value: FloatArray
    clv: FloatArray
    horizon_units: float
    method: Method


@dataclass(frozen=True, slots=True)
class ClvModel:
    """Both fits together; ``predict`` gives every customer's P(alive), purchases, order value and CLV."""

    bg_nbd: BgNbdFit
    gamma_gamma: GammaGammaFit

    @property
    def converged(self) -> bool:
        return self.bg_nbd.converged and self.gamma_gamma.converged

    @property
    def reasons(self) -> list[str]:
        return [
            f"{name}: {f.reason}"
            for name, f in (("bg_nbd", self.bg_nbd), ("gamma_gamma", self.gamma_gamma))
            if f.reason
        ]

    def predict(
        self, summary: CustomerSummary, *, months: int = 12, monthly_discount_rate: float = 0.01
    ) -> ClvPredictions:
        horizon = months * DAYS_PER_MONTH / self.bg_nbd.unit_days
        args = (summary.frequency, summary.recency, summary.age)
        return ClvPredictions(
            probability_alive(self.bg_nbd, *args),
            expected_purchases(self.bg_nbd, horizon, *args),
            expected_order_value(self.gamma_gamma, summary.frequency, summary.monetary),
            discounted_clv(
                self.bg_nbd,
                self.gamma_gamma,
                *args,
                summary.monetary,
                months=months,
                monthly_discount_rate=monthly_discount_rate,
            ),
            horizon,
            self.bg_nbd.method,
        )


def fit_clv(summary: CustomerSummary, *, min_repeat_customers: int = MIN_REPEAT_CUSTOMERS) -> ClvModel:
    """Fit BG/NBD and Gamma-Gamma on a customer summary."""
    bg = fit_bgnbd(
        summary.frequency,
        summary.recency,
        summary.age,
        min_repeat_customers=min_repeat_customers,
        unit_days=summary.unit_days,
    )
    gg = fit_gamma_gamma(summary.frequency, summary.monetary, min_customers=min_repeat_customers)
    return ClvModel(bg, gg)


# --------------------------------------------------------------------------------------------------------------------
# Calibration / holdout check
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrequencyBucket:
    """Customers with ``frequency`` repeat purchases in calibration (the last bucket is "this many or more")."""

    frequency: int
    open_ended: bool
    customers: int
    predicted_mean: float
    actual_mean: float


@dataclass(frozen=True, slots=True)
class HoldoutReport:
    """Predicted against actual repeat purchases in the holdout period, in total and per calibration frequency."""

    model: ClvModel
    customers: int
    holdout_units: float
    predicted_total: float
    actual_total: float
    buckets: tuple[FrequencyBucket, ...] = field(default_factory=tuple)
    insufficient_data: bool = False
    reason: str = ""

    @property
    def relative_error(self) -> float | None:
        if self.actual_total <= 0:
            return None
        return (self.predicted_total - self.actual_total) / self.actual_total


def calibration_holdout(
    customer_ids: npt.ArrayLike,
    times: npt.ArrayLike,
    values: npt.ArrayLike,
    cutoff: float,
    observation_end: float,
    *,
    unit_days: float = 7.0,
    time_unit_days: float = 1.0,
    max_bucket: int = 7,
    min_repeat_customers: int = MIN_REPEAT_CUSTOMERS,
) -> HoldoutReport:
    """Fit on orders up to ``cutoff`` and compare predicted with actual purchases in ``(cutoff, observation_end]``.

    Only customers whose first order is in the calibration period are scored.
    """
    if observation_end <= cutoff:
        raise ValueError("observation_end must be after cutoff")
    ids = np.asarray(customer_ids)
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    cal = t <= cutoff
    summary = summarize_transactions(
        ids[cal], t[cal], v[cal], cutoff, unit_days=unit_days, time_unit_days=time_unit_days
    )
    model = fit_clv(summary, min_repeat_customers=min_repeat_customers)
    horizon = (observation_end - cutoff) * time_unit_days / unit_days
    hold = (~cal) & (t <= observation_end)
    hold_ids = ids[hold]
    pos = np.searchsorted(summary.customer_ids, hold_ids)
    pos_c = np.minimum(pos, max(len(summary) - 1, 0))
    known = (pos < len(summary)) & (summary.customer_ids[pos_c] == hold_ids) if len(summary) else np.zeros(0, bool)
    actual = np.bincount(pos_c[known], minlength=len(summary)).astype(np.float64)
    if len(summary) == 0:
        return HoldoutReport(model, 0, horizon, 0.0, 0.0, (), True, "no customers in the calibration period")
    predicted = expected_purchases(model.bg_nbd, horizon, summary.frequency, summary.recency, summary.age)
    buckets: list[FrequencyBucket] = []
    f = summary.frequency.astype(np.int64)
    for k in range(max_bucket + 1):
        sel = f >= k if k == max_bucket else f == k
        count = int(sel.sum())
        if count == 0:
            continue
        buckets.append(
            FrequencyBucket(k, k == max_bucket, count, float(predicted[sel].mean()), float(actual[sel].mean()))
        )
    reason = "" if model.bg_nbd.converged else f"BG/NBD not fitted ({model.bg_nbd.reason}); predictions use x/T"
    return HoldoutReport(
        model,
        len(summary),
        horizon,
        float(predicted.sum()),
        float(actual.sum()),
        tuple(buckets),
        not model.bg_nbd.converged,
        reason,
    )
