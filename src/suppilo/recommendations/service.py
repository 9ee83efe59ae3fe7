"""Recommendations: recompute from a workspace's orders, then read them per product or per contact.

``recompute`` reads the order lines in bulk (Core, streamed in chunks), mines "often bought together" rules over orders
and item-to-item similarity over customers with ``suppilo.engine.recommend``, ranks best-sellers, and replaces the
stored results in the caller's transaction (readers see the old set until it commits).

``for_contact`` answers what the email templates read as ``recommendations``: products picked from the contact's most
recent order (bought together), then from similar customers, then best-sellers in the contact's categories and
overall, never a product the contact already bought and never an inactive product.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import and_, case, delete, func, insert, select
from sqlalchemy.orm import Session

from suppilo.analytics.service import BUYING_STATUSES, REVENUE_STATUSES
from suppilo.commerce.models import Order, OrderLine, Product
from suppilo.contacts import service as contacts_service
from suppilo.db.base import utcnow
from suppilo.engine import recommend
from suppilo.errors import NotFound
from suppilo.recommendations.models import BestSeller, RecommendationRule, RecommendationRun

CHUNK = 100_000
INSERT_BATCH = 5_000
RECOMPUTE_AFTER = timedelta(hours=24)
BEST_SELLER_WINDOW = timedelta(days=90)

# "Often bought together": at least 2 orders with both, B follows A in at least 5% of A's orders, and more often
# than chance (lift ≥ 1); 10 per product.
TOGETHER_MIN_COUNT = 2
TOGETHER_MIN_CONFIDENCE = 0.05
TOGETHER_MIN_LIFT = 1.0
TOGETHER_TOP_K = 10
# "Customers like you": at least 2 customers bought both; 20 neighbours per product.
SIMILAR_MIN_COMMON = 2
SIMILAR_TOP_K = 20

INACTIVE_STATUSES = frozenset({"inactive", "archived", "discontinued", "draft", "deleted", "hidden"})

REASON_TOGETHER = "bought_together"
REASON_SIMILAR = "similar_customers"
REASON_CATEGORY = "best_seller_in_category"
REASON_BEST = "best_seller"


def is_active(product: Product) -> bool:
    """False when the shop marked the product off sale: ``properties.active`` false or an off-sale ``status``."""
    props = product.properties or {}
    if props.get("active") is False:
        return False
    status = props.get("status")
    return not (isinstance(status, str) and status.strip().lower() in INACTIVE_STATUSES)


# --------------------------------------------------------------------------------------------------------------------
# Reading order lines in bulk
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineArrays:
    """One entry per order line of a revenue order whose product is known (``contact == -1``: no contact)."""

    order: npt.NDArray[np.int64]
    contact: npt.NDArray[np.int64]
    product: npt.NDArray[np.int64]
    quantity: npt.NDArray[np.int64]
    recent: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return int(self.order.shape[0])


def _product_of_line() -> Any:
    # A line without a product id (ordered before the product was in the catalogue) is matched by SKU.
    return func.coalesce(OrderLine.product_id, Product.id)


def _stream(session: Session, stmt: Any, chunk: int, width: int, progress: Any = None) -> npt.NDArray[np.int64]:
    parts: list[npt.NDArray[np.int64]] = [np.zeros((0, width), dtype=np.int64)]
    # Core, not the ORM: plain column rows need none of the ORM's per-row loading.
    result = session.connection().execute(stmt.execution_options(stream_results=True, yield_per=chunk))
    for rows in result.partitions():
        # fromiter over the flattened rows: np.array(rows) goes through every Row as a sequence, 100× slower.
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=len(rows) * width)
        parts.append(flat.reshape(-1, width))
        if progress is not None:
            progress(len(rows))
    return np.concatenate(parts)


_PG_ORDERS = (
    "COPY (SELECT id::bigint, coalesce(contact_id, -1)::bigint, (placed_at >= %(since)s)::int::bigint FROM orders"
    " WHERE workspace_id = %(ws)s AND status = ANY(%(statuses)s) AND placed_at <= %(now)s) TO STDOUT (FORMAT binary)"
)
_PG_LINES = (
    "COPY (SELECT order_id::bigint, product_id::bigint, quantity::bigint FROM order_lines"
    " WHERE workspace_id = %(ws)s AND product_id IS NOT NULL) TO STDOUT (FORMAT binary)"
)


def _pg_copy(session: Session, sql: str, params: dict[str, Any], width: int, progress: Any = None) -> Any:
    """Rows of bigint columns (no NULLs) through ``COPY … TO STDOUT (FORMAT binary)``, decoded with one
    ``np.frombuffer``: every row is an int16 field count, then per field an int32 length and the big-endian int64."""
    raw = session.connection().connection.driver_connection
    assert raw is not None
    chunks: list[bytes] = []
    with raw.cursor() as cur, cur.copy(sql, params) as copy:
        for data in copy:
            chunks.append(bytes(data))
    buf = b"".join(chunks)
    row = np.dtype(
        [("n", ">i2")] + [(name, t) for i in range(width) for name, t in ((f"l{i}", ">i4"), (f"v{i}", ">i8"))]
    )
    # 19-byte header (signature, flags, extension length) and a 2-byte trailer.
    body = buf[19:-2]
    if len(body) % row.itemsize:
        raise ValueError("unexpected COPY row layout")
    rows = np.frombuffer(body, dtype=row)
    out = np.empty((rows.shape[0], width), dtype=np.int64)
    for i in range(width):
        out[:, i] = rows[f"v{i}"]
    if progress is not None:
        progress(rows.shape[0])
    return out


def load_lines(
    session: Session, workspace_id: int, now: datetime, *, chunk: int = CHUNK, progress: Any = None
) -> LineArrays:
    """The workspace's order lines as arrays.

    Orders and lines are read by separate single-table queries and joined in numpy on the order id: a database join
    can be planned as a nested loop when the tables have no statistics yet (right after an import), which is
    quadratic. On PostgreSQL both come through binary ``COPY``; elsewhere Core streams them in chunks of ``chunk``
    rows. Lines without a product id are matched to a product by SKU.
    """
    since = now - BEST_SELLER_WINDOW
    if session.get_bind().dialect.name == "postgresql":
        params = {"ws": workspace_id, "since": since, "now": now, "statuses": list(REVENUE_STATUSES)}
        orders = _pg_copy(session, _PG_ORDERS, params, 3)
        linked = _pg_copy(session, _PG_LINES, params, 3, progress)
    else:
        orders = _stream(
            session,
            select(Order.id, func.coalesce(Order.contact_id, -1), case((Order.placed_at >= since, 1), else_=0)).where(
                Order.workspace_id == workspace_id, Order.status.in_(REVENUE_STATUSES), Order.placed_at <= now
            ),
            chunk,
            3,
        )
        linked = _stream(
            session,
            select(OrderLine.order_id, OrderLine.product_id, OrderLine.quantity).where(
                OrderLine.workspace_id == workspace_id, OrderLine.product_id.is_not(None)
            ),
            chunk,
            3,
            progress,
        )
    unlinked = session.execute(
        select(OrderLine.order_id, OrderLine.sku, OrderLine.quantity).where(
            OrderLine.workspace_id == workspace_id, OrderLine.product_id.is_(None)
        )
    ).all()
    if unlinked:
        if progress is not None:
            progress(len(unlinked))
        by_sku = dict(
            session.execute(select(Product.sku, Product.id).where(Product.workspace_id == workspace_id)).all()
        )
        matched = [(o, by_sku[sku], q) for o, sku, q in unlinked if sku in by_sku]
        if matched:
            linked = np.concatenate([linked, np.array(matched, dtype=np.int64)])
    by_id = np.argsort(orders[:, 0], kind="stable")
    order_ids = orders[by_id, 0]
    pos = np.minimum(np.searchsorted(order_ids, linked[:, 0]), max(order_ids.size - 1, 0))
    ok = order_ids[pos] == linked[:, 0] if order_ids.size else np.zeros(linked.shape[0], dtype=np.bool_)
    lines, row = linked[ok], by_id[pos[ok]]
    return LineArrays(
        order=np.ascontiguousarray(lines[:, 0]),
        contact=np.ascontiguousarray(orders[row, 1]),
        product=np.ascontiguousarray(lines[:, 1]),
        quantity=np.ascontiguousarray(lines[:, 2]),
        recent=orders[row, 2] > 0,
    )


def count_lines(session: Session, workspace_id: int) -> int:
    """How many order lines the workspace has (an upper bound of what ``load_lines`` reads; for progress bars)."""
    return int(session.scalar(select(func.count(OrderLine.id)).where(OrderLine.workspace_id == workspace_id)) or 0)


# --------------------------------------------------------------------------------------------------------------------
# Recompute
# --------------------------------------------------------------------------------------------------------------------


def _fingerprint(session: Session, workspace_id: int) -> tuple[int, datetime | None]:
    count, updated = session.execute(
        select(func.count(Order.id), func.max(Order.updated_at)).where(Order.workspace_id == workspace_id)
    ).one()
    return int(count or 0), updated


def get_run(session: Session, workspace_id: int) -> RecommendationRun | None:
    """The workspace's last computation, if any."""
    return session.scalar(select(RecommendationRun).where(RecommendationRun.workspace_id == workspace_id))


def needs_recompute(session: Session, workspace_id: int, now: datetime) -> bool:
    """True when never computed, when the last computation is 24 h old or more, or when orders changed since."""
    run = get_run(session, workspace_id)
    if run is None:
        return True
    if now - run.computed_at >= RECOMPUTE_AFTER:
        return True
    count, updated = _fingerprint(session, workspace_id)
    return count != run.order_count or updated != run.orders_updated_at


def workspaces_with_orders(session: Session) -> list[int]:
    """Every workspace that has at least one order."""
    return sorted(int(w) for w in session.scalars(select(Order.workspace_id).distinct()))


def _rule_rows(
    rules: recommend.Rules, kind: str, workspace_id: int, now: datetime, known: set[int]
) -> list[dict[str, Any]]:
    return [
        {
            "workspace_id": workspace_id,
            "product_id": a,
            "recommended_product_id": b,
            "kind": kind,
            "rank": k,
            "pair_count": n,
            "support": s,
            "confidence": c,
            "lift": li,
            "score": sc,
            "computed_at": now,
        }
        for a, b, k, n, s, c, li, sc in zip(
            rules.antecedent.tolist(),
            rules.consequent.tolist(),
            rules.rank.tolist(),
            rules.pair_count.tolist(),
            rules.support.tolist(),
            rules.confidence.tolist(),
            rules.lift.tolist(),
            rules.score.tolist(),
            strict=True,
        )
        if a in known and b in known
    ]


def _insert(session: Session, table: Any, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), INSERT_BATCH):
        session.execute(insert(table), rows[i : i + INSERT_BATCH])


def _best_seller_rows(
    lines: LineArrays, workspace_id: int, now: datetime, categories: dict[int, str | None]
) -> list[dict[str, Any]]:
    if len(lines) == 0:
        return []
    all_ids, all_counts = recommend.best_sellers(lines.product, lines.order)
    recent_ids, recent_counts = recommend.best_sellers(lines.product[lines.recent], lines.order[lines.recent])
    recent_of = dict(zip(recent_ids.tolist(), recent_counts.tolist(), strict=True))
    recent = np.array([recent_of.get(pid, 0) for pid in all_ids.tolist()], dtype=np.int64)
    products, inverse = np.unique(lines.product, return_inverse=True)
    units = np.bincount(inverse.reshape(-1), weights=lines.quantity, minlength=products.size)
    unit_of = dict(zip(products.tolist(), units.astype(np.int64).tolist(), strict=True))
    order = np.lexsort((all_ids, -all_counts, -recent))
    rows: list[dict[str, Any]] = []
    for i in order.tolist():
        pid = int(all_ids[i])
        if pid not in categories:
            continue
        rank = len(rows)
        rows.append(
            {
                "workspace_id": workspace_id,
                "product_id": pid,
                "category": categories[pid],
                "rank": rank,
                "recent_orders": int(recent[i]),
                "total_orders": int(all_counts[i]),
                "units": unit_of[pid],
                "computed_at": now,
            }
        )
    return rows


def recompute(
    session: Session, workspace_id: int, now: datetime | None = None, *, progress: Any = None
) -> dict[str, Any]:
    """Recompute the workspace's rules, similar products and best-sellers from its orders and replace the stored
    ones (flushes; the caller commits). ``progress(n)`` is called with each chunk's line count."""
    now = now or utcnow()
    started = time.perf_counter()
    order_count, orders_updated_at = _fingerprint(session, workspace_id)
    lines = load_lines(session, workspace_id, now, progress=progress)
    categories: dict[int, str | None] = {
        int(pid): cat
        for pid, cat in session.execute(
            select(Product.id, Product.category).where(Product.workspace_id == workspace_id)
        ).all()
    }
    known = set(categories)
    together = recommend.association_rules(
        lines.order,
        lines.product,
        min_count=TOGETHER_MIN_COUNT,
        min_confidence=TOGETHER_MIN_CONFIDENCE,
        min_lift=TOGETHER_MIN_LIFT,
        top_k=TOGETHER_TOP_K,
    )
    with_contact = lines.contact >= 0
    similar = recommend.similar_items(
        lines.contact[with_contact], lines.product[with_contact], min_common=SIMILAR_MIN_COMMON, top_k=SIMILAR_TOP_K
    )
    rule_rows = _rule_rows(together, "together", workspace_id, now, known)
    similar_rows = _rule_rows(similar, "similar", workspace_id, now, known)
    best_rows = _best_seller_rows(lines, workspace_id, now, categories)

    session.execute(delete(RecommendationRule).where(RecommendationRule.workspace_id == workspace_id))
    session.execute(delete(BestSeller).where(BestSeller.workspace_id == workspace_id))
    _insert(session, RecommendationRule, rule_rows + similar_rows)
    _insert(session, BestSeller, best_rows)
    customers = recommend.distinct_count(lines.contact[with_contact])
    stats = {
        "computed_at": now,
        "order_count": order_count,
        "orders_updated_at": orders_updated_at,
        "lines": len(lines),
        "baskets": together.n_rows,
        "customers": customers,
        "together_rules": len(rule_rows),
        "similar_pairs": len(similar_rows),
        "best_sellers": len(best_rows),
        "duration_ms": int((time.perf_counter() - started) * 1000),
    }
    run = get_run(session, workspace_id)
    if run is None:
        run = RecommendationRun(workspace_id=workspace_id, **stats)
        session.add(run)
    else:
        for key, value in stats.items():
            setattr(run, key, value)
    session.flush()
    return run_summary(run)


def run_summary(run: RecommendationRun) -> dict[str, Any]:
    """The public fields of a computation."""
    return {
        "computed_at": run.computed_at,
        "lines": run.lines,
        "orders": run.baskets,
        "customers": run.customers,
        "together_rules": run.together_rules,
        "similar_pairs": run.similar_pairs,
        "best_sellers": run.best_sellers,
        "duration_ms": run.duration_ms,
    }


# --------------------------------------------------------------------------------------------------------------------
# Reading recommendations
# --------------------------------------------------------------------------------------------------------------------


def product_card(product: Product, reason: str) -> dict[str, Any]:
    """A product as templates read it: name, url, price in minor units, currency, sku, category, reason."""
    return {
        "product_id": product.id,
        "name": product.name,
        "url": product.url,
        "image_url": product.image_url,
        "price_minor": product.price_minor,
        "currency": product.currency,
        "sku": product.sku,
        "category": product.category,
        "reason": reason,
    }


def _products(session: Session, workspace_id: int, ids: Iterable[int]) -> dict[int, Product]:
    wanted = list(dict.fromkeys(ids))
    found: dict[int, Product] = {}
    for i in range(0, len(wanted), 500):
        for p in session.scalars(
            select(Product).where(Product.workspace_id == workspace_id, Product.id.in_(wanted[i : i + 500]))
        ):
            found[p.id] = p
    return found


RuleRow = tuple[int, int, float, float, float, float, int]


def _rules_of(session: Session, workspace_id: int, kind: str, product_ids: Sequence[int]) -> list[RuleRow]:
    """(product, recommended, score, support, confidence, lift, pair count) of the products' rules, best first."""
    if not product_ids:
        return []
    rows = session.execute(
        select(
            RecommendationRule.product_id,
            RecommendationRule.recommended_product_id,
            RecommendationRule.score,
            RecommendationRule.support,
            RecommendationRule.confidence,
            RecommendationRule.lift,
            RecommendationRule.pair_count,
        )
        .where(
            RecommendationRule.workspace_id == workspace_id,
            RecommendationRule.kind == kind,
            RecommendationRule.product_id.in_(list(product_ids)),
        )
        .order_by(RecommendationRule.product_id, RecommendationRule.rank)
    ).all()
    return [(int(a), int(b), float(sc), float(su), float(c), float(li), int(n)) for a, b, sc, su, c, li, n in rows]


def for_product(session: Session, workspace_id: int, product_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """Products to show with ``product_id``: bought together first (by confidence), then bought by the same
    customers (by similarity); active products only, each once, with the rule's measures."""
    product = session.scalar(select(Product).where(Product.workspace_id == workspace_id, Product.id == product_id))
    if product is None:
        raise NotFound("product_id", f"product {product_id} not found")
    picked: list[tuple[str, RuleRow]] = []
    seen = {product_id}
    for kind in ("together", "similar"):
        for row in _rules_of(session, workspace_id, kind, [product_id]):
            if row[1] not in seen:
                seen.add(row[1])
                picked.append((kind, row))
    products = _products(session, workspace_id, [row[1] for _, row in picked])
    out: list[dict[str, Any]] = []
    for kind, row in picked:
        target = products.get(row[1])
        if target is None or not is_active(target):
            continue
        card = product_card(target, REASON_TOGETHER if kind == "together" else REASON_SIMILAR)
        card.update(
            {
                "kind": kind,
                "score": row[2],
                "support": row[3],
                "confidence": row[4],
                "lift": row[5],
                "orders_together" if kind == "together" else "customers_in_common": row[6],
            }
        )
        out.append(card)
        if len(out) >= limit:
            break
    return out


def _contact_history(session: Session, workspace_id: int, contact_id: int) -> tuple[list[int], list[int]]:
    """(every product the contact bought, the products of their most recent order); SKU-matched like recompute."""
    product_id = _product_of_line()
    rows = session.execute(
        select(Order.id, product_id)
        .join(OrderLine, and_(OrderLine.order_id == Order.id, OrderLine.workspace_id == Order.workspace_id))
        .outerjoin(
            Product,
            and_(
                OrderLine.product_id.is_(None),
                Product.workspace_id == OrderLine.workspace_id,
                Product.sku == OrderLine.sku,
            ),
        )
        .where(
            Order.workspace_id == workspace_id,
            Order.contact_id == contact_id,
            Order.status.in_(BUYING_STATUSES),
            product_id.is_not(None),
        )
    ).all()
    bought = list(dict.fromkeys(int(r[1]) for r in rows))
    latest = session.scalar(
        select(Order.id)
        .where(
            Order.workspace_id == workspace_id,
            Order.contact_id == contact_id,
            Order.status.in_(REVENUE_STATUSES),
        )
        .order_by(Order.placed_at.desc(), Order.id.desc())
        .limit(1)
    )
    last_order = list(dict.fromkeys(int(r[1]) for r in rows if r[0] == latest))
    return bought, last_order


def _best_sellers(session: Session, workspace_id: int, categories: Sequence[str] | None, limit: int) -> list[int]:
    stmt = select(BestSeller.product_id).where(BestSeller.workspace_id == workspace_id)
    if categories is not None:
        if not categories:
            return []
        stmt = stmt.where(BestSeller.category.in_(list(categories)))
    return [int(p) for p in session.scalars(stmt.order_by(BestSeller.rank).limit(limit))]


def for_contact(session: Session, workspace_id: int, contact_id: int, limit: int = 4) -> list[dict[str, Any]]:
    """Up to ``limit`` products for a contact, as the email templates read ``recommendations``:
    ``{"name", "url", "price_minor", "currency", "sku", "category", "reason", "product_id", "image_url"}``.

    Picked in this order: bought together with the products of the contact's most recent order
    (``reason="bought_together"``), bought by customers who bought what the contact bought
    (``"similar_customers"``), best-sellers in the categories the contact buys most (``"best_seller_in_category"``),
    then overall best-sellers (``"best_seller"``). Never a product the contact already bought, never an inactive one,
    each product once. A contact without orders gets best-sellers. A merged-away contact id follows the merge.
    """
    contact = contacts_service.get_contact(session, workspace_id, contact_id)
    limit = max(0, limit)
    bought, last_order = _contact_history(session, workspace_id, contact.id)
    owned = set(bought)
    candidates: list[tuple[int, str]] = []

    # 1. Often bought together with the latest order: the best confidence any of its products gives.
    best: dict[int, float] = {}
    for row in _rules_of(session, workspace_id, "together", last_order):
        if row[1] not in owned:
            best[row[1]] = max(best.get(row[1], 0.0), float(row[2]))
    candidates += [(pid, REASON_TOGETHER) for pid, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))]

    # 2. Customers like you: neighbours of everything the contact bought, similarities summed.
    neighbours = _rules_of(session, workspace_id, "similar", bought)
    if neighbours:
        ids, _ = recommend.score_candidates(
            [r[0] for r in neighbours],
            [r[1] for r in neighbours],
            [float(r[2]) for r in neighbours],
            bought,
            limit=limit * 5 + 20,
        )
        candidates += [(int(pid), REASON_SIMILAR) for pid in ids.tolist()]

    # 3. Best-sellers of the contact's categories (most bought first), 4. then overall.
    pool = limit * 5 + len(owned) + 20
    if owned:
        owned_products = _products(session, workspace_id, bought)
        counts: dict[str, int] = {}
        for p in owned_products.values():
            if p.category:
                counts[p.category] = counts.get(p.category, 0) + 1
        for category in sorted(counts, key=lambda c: (-counts[c], c)):
            candidates += [(pid, REASON_CATEGORY) for pid in _best_sellers(session, workspace_id, [category], pool)]
    candidates += [(pid, REASON_BEST) for pid in _best_sellers(session, workspace_id, None, pool)]

    ordered: list[tuple[int, str]] = []
    seen = set(owned)
    for pid, reason in candidates:
        if pid not in seen:
            seen.add(pid)
            ordered.append((pid, reason))
    out: list[dict[str, Any]] = []
    start = 0
    while len(out) < limit and start < len(ordered):
        window = ordered[start : start + limit * 3 + 10]
        start += len(window)
        products = _products(session, workspace_id, [pid for pid, _ in window])
        for pid, reason in window:
            product = products.get(pid)
            if product is not None and is_active(product):
                out.append(product_card(product, reason))
                if len(out) >= limit:
                    break
    return out
