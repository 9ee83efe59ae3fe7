"""RFM scores and groups."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from suppilo.engine import rfm


def test_quintiles_of_ten_distinct_values():
    assert rfm.quintile_scores(list(range(10))).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert rfm.quintile_scores(list(range(10)), higher_is_better=False).tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]


def test_groups_of_typical_customers():
    result = rfm.rfm(
        days_since_last=[3, 400, 10, 380, 200], orders=[12, 11, 1, 1, 3], spent=[90000, 80000, 500, 300, 4000]
    )
    assert result.groups[0] == "champions"  # recent, frequent
    assert result.groups[1] in ("cannot_lose", "at_risk")  # used to buy a lot, gone quiet
    assert result.groups[3] == "hibernating"  # one order long ago
    assert result.codes[0][0] == "5" and result.codes[1][0] == "1"  # the latest buyer and the longest gone


@given(st.lists(st.integers(0, 20), min_size=1, max_size=60))
def test_scores_are_1_to_5_monotone_and_ties_share_a_score(values):
    scores = rfm.quintile_scores(values).tolist()
    assert all(1 <= s <= 5 for s in scores)
    pairs = sorted(zip(values, scores, strict=True))
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(pairs))
    by_value: dict[int, set[int]] = {}
    for v, s in zip(values, scores, strict=True):
        by_value.setdefault(v, set()).add(s)
    assert all(len(s) == 1 for s in by_value.values())
    assert {rfm.group_of(r, f) for r in range(1, 6) for f in range(1, 6)} <= set(rfm.GROUPS)
