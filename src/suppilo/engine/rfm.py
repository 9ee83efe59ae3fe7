"""RFM: recency, frequency and monetary scores 1–5 by quintile among a workspace's customers, and the named groups
marketers act on (champions, loyal, at risk, hibernating ...).

Recency scores 5 for the most recent buyers; frequency and monetary 5 for the most orders and the most spent. Ties
share a score (ranks are taken on values, so equal values never straddle a boundary). The group follows the usual
R/F grid (the monetary score is reported, not used for the group, as in most RFM playbooks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

GROUPS = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new_customer",
    "promising",
    "needs_attention",
    "about_to_sleep",
    "at_risk",
    "cannot_lose",
    "hibernating",
    "lost",
)


@dataclass(frozen=True, slots=True)
class RfmResult:
    """Per customer (in input order): the three scores, the code (``"545"``) and the group."""

    recency: npt.NDArray[np.int64]
    frequency: npt.NDArray[np.int64]
    monetary: npt.NDArray[np.int64]
    codes: list[str]
    groups: list[str]


def quintile_scores(values: npt.ArrayLike, *, higher_is_better: bool = True) -> npt.NDArray[np.int64]:
    """1–5 by quintile of ``values`` (5 = best); equal values get equal scores."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, inverse = np.unique(x, return_inverse=True)
    # The share of customers strictly below each distinct value, then the midpoint of its block: ties stay together.
    counts = np.bincount(inverse, minlength=len(uniq))
    below = np.concatenate(([0], np.cumsum(counts)[:-1]))
    mid = (below + counts / 2.0) / n
    score_of_value = np.minimum(5, np.floor(mid * 5).astype(np.int64) + 1)
    scores = score_of_value[inverse]
    return scores if higher_is_better else 6 - scores


def group_of(r: int, f: int) -> str:
    """The named group of a recency and frequency score."""
    if r >= 4 and f >= 4:
        return "champions"
    if r >= 3 and f >= 4:
        return "loyal"
    if r >= 4 and f >= 2:
        return "potential_loyalist"
    if r == 5 and f == 1:
        return "new_customer"
    if r == 4 and f == 1:
        return "promising"
    if r == 3 and f == 3:
        return "needs_attention"
    if r == 3 and f <= 2:
        return "about_to_sleep"
    if r <= 2 and f == 5:
        return "cannot_lose"
    if r <= 2 and f >= 3:
        return "at_risk"
    if r == 2:
        return "hibernating"
    return "lost"


def rfm(days_since_last: npt.ArrayLike, orders: npt.ArrayLike, spent: npt.ArrayLike) -> RfmResult:
    """Scores and groups for customers given days since their last order, their order count and their spend."""
    r = quintile_scores(days_since_last, higher_is_better=False)
    f = quintile_scores(orders)
    m = quintile_scores(spent)
    codes = [f"{a}{b}{c}" for a, b, c in zip(r.tolist(), f.tolist(), m.tolist(), strict=True)]
    groups = [group_of(a, b) for a, b in zip(r.tolist(), f.tolist(), strict=True)]
    return RfmResult(r, f, m, codes, groups)
