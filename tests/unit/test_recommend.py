"""The recommendation engine: association rules, item similarity, candidate scoring, best-sellers."""

from __future__ import annotations

import math
from collections import Counter
from itertools import permutations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suppilo.engine import recommend

A, B, C, D = 11, 22, 33, 44
# Five baskets: {A,B,C} {A,B} {A,C} {B,D} {A,B,D}; order 2 has A on two lines (counts once).
BASKETS = [(1, A), (1, B), (1, C), (2, A), (2, A), (2, B), (3, A), (3, C), (4, B), (4, D), (5, A), (5, B), (5, D)]


def _rules(**kwargs: object) -> dict[tuple[int, int], dict[str, float]]:
    orders, products = zip(*BASKETS, strict=True)
    r = recommend.association_rules(np.array(orders), np.array(products), **kwargs)  # type: ignore[arg-type]
    return {
        (int(a), int(b)): {"support": s, "confidence": c, "lift": li, "count": int(n), "rank": int(k)}
        for a, b, s, c, li, n, k in zip(
            r.antecedent, r.consequent, r.support, r.confidence, r.lift, r.pair_count, r.rank, strict=True
        )
    }


def test_hand_computed_support_confidence_lift() -> None:
    rules = _rules(min_count=2, top_k=None)
    # n(A)=4, n(B)=4, n(C)=2, n(D)=2, N=5; pairs AB=3, AC=2, BD=2 (BC=1 and AD=1 are below min_count).
    assert set(rules) == {(A, B), (B, A), (A, C), (C, A), (B, D), (D, B)}
    assert rules[(A, B)]["count"] == 3
    assert rules[(A, B)]["support"] == pytest.approx(3 / 5)
    assert rules[(A, B)]["confidence"] == pytest.approx(3 / 4)
    assert rules[(A, B)]["lift"] == pytest.approx(3 * 5 / (4 * 4))
    assert rules[(A, C)]["confidence"] == pytest.approx(2 / 4)
    assert rules[(C, A)]["confidence"] == pytest.approx(1.0)
    assert rules[(C, A)]["lift"] == pytest.approx(2 * 5 / (2 * 4))
    assert rules[(D, B)]["confidence"] == pytest.approx(1.0)
    assert rules[(B, D)]["support"] == pytest.approx(2 / 5)
    # A's rules are ranked by confidence: B (0.75) before C (0.5).
    assert rules[(A, B)]["rank"] == 0 and rules[(A, C)]["rank"] == 1


def test_thresholds_and_top_k() -> None:
    assert set(_rules(min_count=2, min_confidence=0.6, top_k=None)) == {(A, B), (B, A), (C, A), (D, B)}
    assert set(_rules(min_count=2, min_lift=1.1, top_k=None)) == {(A, C), (C, A), (B, D), (D, B)}
    assert set(_rules(min_count=1, min_support=0.5, top_k=None)) == {(A, B), (B, A)}
    top1 = _rules(min_count=1, top_k=1)
    assert {a for a, _ in top1} == {A, B, C, D} and len(top1) == 4
    assert (A, B) in top1 and (C, A) in top1 and (D, B) in top1
    # B's candidates: A (0.75), D (0.5), C (0.25): A wins.
    assert (B, A) in top1


def test_big_baskets_are_left_out() -> None:
    rows = BASKETS + [(9, p) for p in (A, B, C, D, 55, 66)]
    orders, products = zip(*rows, strict=True)
    r = recommend.association_rules(np.array(orders), np.array(products), min_count=1, top_k=None, max_basket_size=5)
    assert r.n_rows == 5
    assert 55 not in set(r.antecedent.tolist())


def test_empty_and_single_item_baskets() -> None:
    r = recommend.association_rules(np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert len(r) == 0
    r = recommend.association_rules(np.array([1, 2, 3]), np.array([A, B, A]), min_count=1)
    assert len(r) == 0 and r.n_rows == 3
    with pytest.raises(ValueError):
        recommend.association_rules(np.array([1, 2]), np.array([A]))


def test_sparse_large_ids_use_the_sorting_path() -> None:
    orders = np.array([10**15, 10**15, 7, 7, 3 * 10**14, 3 * 10**14])
    products = np.array([10**12, 5, 10**12, 5, 10**12, 8])
    r = recommend.association_rules(orders, products, min_count=2, top_k=None)
    assert {(int(a), int(b)) for a, b in zip(r.antecedent, r.consequent, strict=True)} == {(10**12, 5), (5, 10**12)}
    assert r.confidence[r.antecedent == 5][0] == pytest.approx(1.0)
    assert r.confidence[r.antecedent == 10**12][0] == pytest.approx(2 / 3)


def test_similar_items_cosine() -> None:
    # Customers: 1 {A,B}, 2 {A,B,C}, 3 {A}, 4 {C,D}, 5 {C,D}
    cust = np.array([1, 1, 2, 2, 2, 3, 4, 4, 5, 5])
    prod = np.array([A, B, A, B, C, A, C, D, C, D])
    s = recommend.similar_items(cust, prod, min_common=1, top_k=None)
    got = {(int(a), int(b)): float(v) for a, b, v in zip(s.antecedent, s.consequent, s.score, strict=True)}
    assert got[(A, B)] == pytest.approx(2 / math.sqrt(3 * 2))
    assert got[(C, D)] == pytest.approx(2 / math.sqrt(3 * 2))
    assert got[(A, C)] == pytest.approx(1 / math.sqrt(3 * 3))
    assert (A, D) not in got
    s2 = recommend.similar_items(cust, prod, min_common=2, top_k=None)
    assert {(int(a), int(b)) for a, b in zip(s2.antecedent, s2.consequent, strict=True)} == {
        (A, B),
        (B, A),
        (C, D),
        (D, C),
    }


def test_score_candidates_sums_neighbours_and_excludes_history() -> None:
    sources = [A, A, B, B, C]
    targets = [B, C, C, D, D]
    weights = [0.9, 0.5, 0.4, 0.3, 0.8]
    ids, scores = recommend.score_candidates(sources, targets, weights, history=[A, B], limit=5)
    # B is owned; C = 0.5 + 0.4, D = 0.3 (C's pair does not count: C is not in the history).
    assert ids.tolist() == [C, D]
    assert scores.tolist() == pytest.approx([0.9, 0.3])
    ids, _ = recommend.score_candidates(sources, targets, weights, history=[A, B], exclude=[C], limit=5)
    assert ids.tolist() == [D]
    ids, _ = recommend.score_candidates(sources, targets, weights, history=[D], limit=5)
    assert ids.tolist() == []


def test_distinct_count() -> None:
    assert recommend.distinct_count(np.array([5, 3, 5, 9, 3], dtype=np.int64)) == 3
    assert recommend.distinct_count(np.array([], dtype=np.int64)) == 0


def test_best_sellers_count_orders_not_lines() -> None:
    products = [A, A, A, B, B, C, C]
    orders = [1, 1, 1, 1, 2, 3, 4]
    ids, counts = recommend.best_sellers(products, orders)
    assert ids.tolist() == [B, C, A] and counts.tolist() == [2, 2, 1]
    ids, _ = recommend.best_sellers(products, orders, limit=1)
    assert ids.tolist() == [B]


baskets_strategy = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 7)), min_size=1, max_size=80)


@settings(max_examples=150, deadline=None)
@given(baskets_strategy)
def test_properties_match_brute_force(rows: list[tuple[int, int]]) -> None:
    orders = np.array([r[0] for r in rows])
    products = np.array([r[1] for r in rows])
    r = recommend.association_rules(orders, products, min_count=1, top_k=None, max_basket_size=None)
    baskets: dict[int, set[int]] = {}
    for o, p in rows:
        baskets.setdefault(o, set()).add(p)
    n = len(baskets)
    single = Counter(p for b in baskets.values() for p in b)
    pairs = Counter(pair for b in baskets.values() for pair in permutations(sorted(b), 2))
    assert r.n_rows == n
    got = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(r.antecedent, r.consequent, strict=True))}
    assert set(got) == set(pairs)
    for (a, b), i in got.items():
        assert r.pair_count[i] == pairs[(a, b)]
        assert r.support[i] == pytest.approx(pairs[(a, b)] / n)
        assert r.confidence[i] == pytest.approx(pairs[(a, b)] / single[a])
        assert r.confidence[i] <= 1.0 + 1e-12
        assert r.support[i] <= min(r.antecedent_support[i], r.consequent_support[i]) + 1e-12
        j = got[(b, a)]
        assert r.lift[i] == pytest.approx(r.lift[j])
        assert r.support[i] == pytest.approx(r.support[j])
    # Ranks are 0..k-1 per antecedent in non-increasing confidence.
    for a in set(r.antecedent.tolist()):
        mask = r.antecedent == a
        assert sorted(r.rank[mask].tolist()) == list(range(int(mask.sum())))
        conf_by_rank = r.confidence[mask][np.argsort(r.rank[mask])]
        assert np.all(np.diff(conf_by_rank) <= 1e-12)


@settings(max_examples=80, deadline=None)
@given(baskets_strategy, st.integers(1, 3))
def test_top_k_keeps_the_best_of_each_antecedent(rows: list[tuple[int, int]], k: int) -> None:
    orders = np.array([r[0] for r in rows])
    products = np.array([r[1] for r in rows])
    full = recommend.association_rules(orders, products, min_count=1, top_k=None, max_basket_size=None)
    top = recommend.association_rules(orders, products, min_count=1, top_k=k, max_basket_size=None)
    for a in set(full.antecedent.tolist()):
        mask_full = full.antecedent == a
        mask_top = top.antecedent == a
        assert int(mask_top.sum()) == min(k, int(mask_full.sum()))
        assert top.confidence[mask_top].min() >= np.sort(full.confidence[mask_full])[::-1][: int(mask_top.sum())].min()


@settings(max_examples=80, deadline=None)
@given(baskets_strategy)
def test_cosine_is_symmetric_and_bounded(rows: list[tuple[int, int]]) -> None:
    cust = np.array([r[0] for r in rows])
    prod = np.array([r[1] for r in rows])
    s = recommend.similar_items(cust, prod, min_common=1, top_k=None, max_items_per_customer=None)
    got = {(int(a), int(b)): float(v) for a, b, v in zip(s.antecedent, s.consequent, s.score, strict=True)}
    for (a, b), v in got.items():
        assert 0.0 < v <= 1.0 + 1e-12
        assert got[(b, a)] == pytest.approx(v)
