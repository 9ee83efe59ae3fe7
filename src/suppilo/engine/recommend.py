"""Product recommendations: "often bought together" association rules, item-to-item similarity, best-sellers.

Inputs are flat arrays of (row, item) pairs: ``(order_id, product_id)`` for baskets, ``(contact_id, product_id)`` for
customers. Duplicate pairs (two lines of the same product in one order) count once.

Association rules (A → B) over baskets
--------------------------------------
With ``N`` baskets, ``n(A)`` baskets containing A and ``n(AB)`` baskets containing both:

* support(A→B)    = n(AB) / N                         (symmetric)
* confidence(A→B) = n(AB) / n(A)                      (the share of A's baskets that also hold B; ≤ 1)
* lift(A→B)       = n(AB)·N / (n(A)·n(B))             (symmetric; > 1 when B follows A more often than by chance)

Rules are kept when they reach ``min_count``, ``min_support``, ``min_confidence`` and ``min_lift``; the ``top_k``
best per antecedent are returned, ranked by confidence, then lift, then the consequent's id (deterministic).

Item similarity over customers ("customers like you also bought")
-----------------------------------------------------------------
The same counts over customers instead of baskets (a customer "contains" every product they ever bought) give the
cosine similarity of two product columns of the binary customer×product matrix: ``n(AB) / sqrt(n(A)·n(B))``.
A customer's candidates are scored by summing the similarities of their neighbours to everything the customer bought
(item-based collaborative filtering, Sarwar et al. 2001), excluding what they already have.

Complexity
----------
Rows and items are mapped to dense indices with ``np.unique`` (O(L log L) for L lines), the binary row×item matrix
is built as ``scipy.sparse`` CSR (duplicates summed then clipped to 1, O(L)), and the co-occurrence matrix is
``Xᵀ·X`` (sparse product: O(Σ_rows size²) time, O(pairs) memory). Rows with more than ``max_row_size`` distinct items
(wholesale orders, bots) are left out so one huge row cannot cost size² work. Selecting the top-k per item is one
integer ``argsort`` of the P surviving pairs on (item, quantised score) (O(P log P)), then an exact ``np.lexsort`` of
the few contenders. There is no Python loop over lines, rows or pairs.

Nothing here reads a clock, a database or a random source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_MAX_BASKET_SIZE = 100
DEFAULT_MAX_CUSTOMER_ITEMS = 500


@dataclass(frozen=True, slots=True)
class Cooccurrence:
    """Counts over rows: ``items`` (distinct ids, sorted), ``item_counts`` (rows holding each item), ``n_rows``, and
    every ordered pair ``(left, right)`` of item *indices* with ``left != right`` held together by ``pair_counts``
    rows. Both directions of a pair are present."""

    items: IntArray
    item_counts: IntArray
    n_rows: int
    left: IntArray
    right: IntArray
    pair_counts: IntArray


@dataclass(frozen=True, slots=True)
class Rules:
    """Directed product pairs ``antecedent → consequent`` (ids, not indices) with their measures.

    ``antecedent_support`` and ``consequent_support`` are the marginal supports n(A)/N and n(B)/N; ``score`` is what
    the pairs were ranked by (confidence for association rules, cosine similarity for similar items); ``rank`` is the
    0-based position of the pair among its antecedent's pairs.
    """

    antecedent: IntArray
    consequent: IntArray
    pair_count: IntArray
    support: FloatArray
    confidence: FloatArray
    lift: FloatArray
    score: FloatArray
    rank: IntArray
    antecedent_support: FloatArray
    consequent_support: FloatArray
    n_rows: int

    def __len__(self) -> int:
        return int(self.antecedent.shape[0])


def _as_ids(values: npt.ArrayLike, name: str) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids")
    return arr.astype(np.int64, copy=False)


def _dense_index(values: IntArray) -> tuple[IntArray, IntArray]:
    """``(distinct sorted values, index of each value among them)``, like ``np.unique(return_inverse=True)``.

    When the ids span a range not much larger than their number (database ids usually do), a presence table over the
    range replaces the O(n log n) sort with O(n + range) work.
    """
    lo, hi = int(values.min()), int(values.max())
    span = hi - lo + 1
    if span <= max(4 * values.size, 1 << 16):
        shifted = values - lo
        present = np.zeros(span, dtype=np.bool_)
        present[shifted] = True
        lookup = np.cumsum(present, dtype=np.int64) - 1
        return np.flatnonzero(present).astype(np.int64) + lo, lookup[shifted]
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct.astype(np.int64), inverse.astype(np.int64).reshape(-1)


def binary_matrix(
    row_ids: npt.ArrayLike, item_ids: npt.ArrayLike, *, max_row_size: int | None = None
) -> tuple[sp.csr_matrix, IntArray]:
    """The binary rows×items CSR matrix (int32) and the sorted distinct item ids of its columns.

    Duplicated (row, item) pairs count once. Rows holding more than ``max_row_size`` distinct items are emptied.
    """
    rows = _as_ids(row_ids, "row_ids")
    cols = _as_ids(item_ids, "item_ids")
    if rows.shape != cols.shape:
        raise ValueError("row_ids and item_ids must have the same length")
    if rows.size == 0:
        return sp.csr_matrix((0, 0), dtype=np.int32), np.zeros(0, dtype=np.int64)
    _, row_idx = _dense_index(rows)
    items, col_idx = _dense_index(cols)
    n_rows = int(row_idx.max()) + 1
    ones = np.ones(rows.size, dtype=np.int32)
    x = sp.csr_matrix(
        (ones, (row_idx.astype(np.int32), col_idx.astype(np.int32))), shape=(n_rows, items.size), dtype=np.int32
    )
    x.sum_duplicates()
    x.data[:] = 1
    if max_row_size is not None:
        sizes = np.diff(x.indptr)
        too_big = sizes > max_row_size
        if bool(too_big.any()):
            x.data[np.repeat(too_big, sizes)] = 0
            x.eliminate_zeros()
    return x, items.astype(np.int64)


def cooccurrence(
    row_ids: npt.ArrayLike,
    item_ids: npt.ArrayLike,
    *,
    max_row_size: int | None = None,
    min_pair_count: int = 1,
) -> Cooccurrence:
    """Item counts and pair counts of (row, item) pairs (see the module docstring for the cost)."""
    x, items = binary_matrix(row_ids, item_ids, max_row_size=max_row_size)
    if items.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Cooccurrence(items, empty, 0, empty, empty, empty)
    sizes = np.diff(x.indptr)
    n_rows = int(np.count_nonzero(sizes))
    item_counts = np.bincount(x.indices, minlength=items.size).astype(np.int64)
    # Only rows with at least two items can form a pair; dropping the others shrinks the product.
    multi = x[sizes >= 2] if bool((sizes < 2).any()) else x
    co = (multi.T.tocsr() @ multi).tocoo()
    left = co.row.astype(np.int64)
    right = co.col.astype(np.int64)
    counts = co.data.astype(np.int64)
    keep = (left != right) & (counts >= max(1, min_pair_count))
    return Cooccurrence(items, item_counts, n_rows, left[keep], right[keep], counts[keep])


def _contenders(left: IntArray, score: FloatArray, keep: npt.NDArray[np.bool_], top_k: int) -> npt.NDArray[np.bool_]:
    """Pairs that can be among their antecedent's ``top_k``: score at least the k-th best score of the antecedent.

    One integer sort on ``(antecedent, quantised score)`` instead of a four-key sort of every pair; the quantisation
    is monotonic, so every pair of the exact top-k (and every tie at its edge) survives, and the exact ranking is then
    done on the few survivors only.
    """
    out = np.zeros(left.size, dtype=np.bool_)
    idx = np.flatnonzero(keep)
    if idx.size == 0 or top_k <= 0:
        return out
    s = score[idx]
    top = float(s.max())
    q = np.floor(s / top * (2**31 - 1)).astype(np.int64) if top > 0 else np.zeros(idx.size, dtype=np.int64)
    key = (left[idx] << 32) | ((2**31 - 1) - q)
    order = np.argsort(key)
    sorted_left = left[idx][order]
    starts = np.flatnonzero(np.r_[True, sorted_left[1:] != sorted_left[:-1]])
    ends = np.r_[starts[1:], sorted_left.size]
    kth = q[order][np.minimum(starts + top_k, ends) - 1]
    group = np.repeat(np.arange(starts.size), ends - starts)
    survivors = np.empty(idx.size, dtype=np.bool_)
    survivors[order] = q[order] >= kth[group]
    out[idx] = survivors
    return out


def _rank(
    co: Cooccurrence,
    score: FloatArray,
    support: FloatArray,
    confidence: FloatArray,
    lift: FloatArray,
    keep: npt.NDArray[np.bool_],
    top_k: int | None,
) -> Rules:
    if top_k is not None:
        keep = keep & _contenders(co.left, score, keep, top_k)
    left, right, counts = co.left[keep], co.right[keep], co.pair_counts[keep]
    score, support, confidence, lift = score[keep], support[keep], confidence[keep], lift[keep]
    # Group by antecedent, best score first, then higher lift, then the smaller consequent id.
    order = np.lexsort((co.items[right], -lift, -score, left))
    left, right, counts = left[order], right[order], counts[order]
    score, support, confidence, lift = score[order], support[order], confidence[order], lift[order]
    if left.size:
        starts = np.flatnonzero(np.r_[True, left[1:] != left[:-1]])
        group_sizes = np.diff(np.r_[starts, left.size])
        rank = np.arange(left.size, dtype=np.int64) - np.repeat(starts, group_sizes)
    else:
        rank = np.zeros(0, dtype=np.int64)
    if top_k is not None:
        sel = rank < top_k
        left, right, counts, rank = left[sel], right[sel], counts[sel], rank[sel]
        score, support, confidence, lift = score[sel], support[sel], confidence[sel], lift[sel]
    n = float(co.n_rows) if co.n_rows else 1.0
    return Rules(
        antecedent=co.items[left],
        consequent=co.items[right],
        pair_count=counts,
        support=support,
        confidence=confidence,
        lift=lift,
        score=score,
        rank=rank,
        antecedent_support=co.item_counts[left] / n,
        consequent_support=co.item_counts[right] / n,
        n_rows=co.n_rows,
    )


def _measures(co: Cooccurrence) -> tuple[FloatArray, FloatArray, FloatArray]:
    n = float(max(co.n_rows, 1))
    pair = co.pair_counts.astype(np.float64)
    n_left = co.item_counts[co.left].astype(np.float64)
    n_right = co.item_counts[co.right].astype(np.float64)
    support = pair / n
    confidence = pair / n_left
    lift = pair * n / (n_left * n_right)
    return support, confidence, lift


def rules_from_cooccurrence(
    co: Cooccurrence,
    *,
    min_count: int = 2,
    min_support: float = 0.0,
    min_confidence: float = 0.0,
    min_lift: float = 0.0,
    top_k: int | None = 10,
) -> Rules:
    """Association rules from counts: thresholds, then the ``top_k`` per antecedent by confidence."""
    support, confidence, lift = _measures(co)
    keep = (
        (co.pair_counts >= min_count) & (support >= min_support) & (confidence >= min_confidence) & (lift >= min_lift)
    )
    return _rank(co, confidence, support, confidence, lift, keep, top_k)


def association_rules(
    basket_ids: npt.ArrayLike,
    product_ids: npt.ArrayLike,
    *,
    min_count: int = 2,
    min_support: float = 0.0,
    min_confidence: float = 0.0,
    min_lift: float = 0.0,
    top_k: int | None = 10,
    max_basket_size: int | None = DEFAULT_MAX_BASKET_SIZE,
) -> Rules:
    """ "Often bought together": rules A → B over baskets (one row per order line: its order and product)."""
    co = cooccurrence(basket_ids, product_ids, max_row_size=max_basket_size, min_pair_count=min_count)
    return rules_from_cooccurrence(
        co, min_count=min_count, min_support=min_support, min_confidence=min_confidence, min_lift=min_lift, top_k=top_k
    )


def similar_items(
    customer_ids: npt.ArrayLike,
    product_ids: npt.ArrayLike,
    *,
    min_common: int = 2,
    min_similarity: float = 0.0,
    top_k: int | None = 20,
    max_items_per_customer: int | None = DEFAULT_MAX_CUSTOMER_ITEMS,
) -> Rules:
    """Item-to-item cosine similarity over customers; ``score`` is the cosine, at least ``min_common`` co-buyers."""
    co = cooccurrence(customer_ids, product_ids, max_row_size=max_items_per_customer, min_pair_count=min_common)
    support, confidence, lift = _measures(co)
    n_left = co.item_counts[co.left].astype(np.float64)
    n_right = co.item_counts[co.right].astype(np.float64)
    cosine = co.pair_counts / np.sqrt(n_left * n_right)
    keep = (co.pair_counts >= min_common) & (cosine >= min_similarity)
    return _rank(co, cosine, support, confidence, lift, keep, top_k)


def distinct_count(values: npt.ArrayLike) -> int:
    """How many distinct ids ``values`` holds (a sort and a comparison: plain ``np.unique`` takes minutes on tens of
    millions of int64 in numpy 2.4)."""
    arr = np.sort(_as_ids(values, "values"))
    return int(arr.size and 1 + np.count_nonzero(arr[1:] != arr[:-1]))


def score_candidates(
    sources: npt.ArrayLike,
    targets: npt.ArrayLike,
    weights: npt.ArrayLike,
    history: npt.ArrayLike,
    *,
    exclude: npt.ArrayLike | None = None,
    limit: int = 10,
) -> tuple[IntArray, FloatArray]:
    """Rank products for one customer from neighbour pairs ``source → target`` with ``weights``.

    A target's score is the sum of the weights of the pairs whose source is in ``history``; targets in ``history`` or
    ``exclude`` are dropped. Returns up to ``limit`` ``(ids, scores)``, best first, ties by the smaller id.
    """
    src = _as_ids(sources, "sources")
    tgt = _as_ids(targets, "targets")
    w = np.asarray(weights, dtype=np.float64)
    if not (src.shape == tgt.shape == w.shape):
        raise ValueError("sources, targets and weights must have the same length")
    hist = _as_ids(history, "history")
    banned = np.union1d(hist, _as_ids(exclude, "exclude") if exclude is not None else np.zeros(0, dtype=np.int64))
    use = np.isin(src, hist) & ~np.isin(tgt, banned)
    if not bool(use.any()) or limit <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    ids, inverse = np.unique(tgt[use], return_inverse=True)
    totals = np.bincount(inverse, weights=w[use], minlength=ids.size)
    order = np.lexsort((ids, -totals))[:limit]
    return ids[order].astype(np.int64), totals[order].astype(np.float64)


def best_sellers(
    product_ids: npt.ArrayLike, order_ids: npt.ArrayLike, *, limit: int | None = None
) -> tuple[IntArray, IntArray]:
    """Products by the number of distinct orders holding them, most first (ties by the smaller id)."""
    products = _as_ids(product_ids, "product_ids")
    orders = _as_ids(order_ids, "order_ids")
    if products.shape != orders.shape:
        raise ValueError("product_ids and order_ids must have the same length")
    if products.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    x, ids = binary_matrix(orders, products)
    counts = np.bincount(x.indices, minlength=ids.size).astype(np.int64)
    order = np.lexsort((ids, -counts))
    if limit is not None:
        order = order[:limit]
    return ids[order].astype(np.int64), counts[order].astype(np.int64)
