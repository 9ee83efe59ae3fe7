"""Sales forecast and pipeline velocity: pure math over plain values (no database, clock or currency table).

Money is integer minor units plus an ISO 4217 code. Amounts in different currencies are only ever added after
conversion through a rate the caller passes in; a currency without a rate stays in its own bucket.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from itertools import pairwise

COMMIT_PROBABILITY = 80
STALL_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class ForecastDeal:
    """An open deal as the forecast sees it (or ``count`` deals alike in all but the amount, summed)."""

    amount_minor: int
    currency: str
    probability: int
    close_month: str | None
    owner_id: int | None
    stage_key: str | None  # None for deals grouped by team or place
    count: int = 1


@dataclass(slots=True)
class CurrencyTotals:
    """Sums of one group in one currency."""

    currency: str
    converted: bool
    count: int = 0
    best_case_minor: int = 0
    weighted_minor: int = 0
    commit_minor: int = 0


@dataclass(slots=True)
class ForecastGroup:
    """One group of the forecast (a month, an owner or a stage) with its totals per currency."""

    key: str | None
    totals: dict[str, CurrencyTotals] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StageOrder:
    """A pipeline stage: its key, position and kind (open, won, lost)."""

    key: str
    position: int
    kind: str


@dataclass(frozen=True, slots=True)
class StageVelocity:
    """Completed stays in a stage: how many and how long on average."""

    stage_key: str
    stays: int
    average_days: float | None


@dataclass(frozen=True, slots=True)
class StageConversion:
    """Deals that entered a stage and how many of them went on to a later, not-lost stage."""

    stage_key: str
    entered: int
    advanced: int
    rate: float | None


def weighted(amount_minor: int, probability: int) -> int:
    """``amount × probability / 100``, rounded half up to a whole minor unit."""
    if not 0 <= probability <= 100:
        raise ValueError("probability must be between 0 and 100")
    return int((Decimal(amount_minor) * probability / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def convert(
    amount_minor: int,
    currency: str,
    target: str,
    rates: Mapping[str, Decimal],
    exponents: Mapping[str, int],
) -> int | None:
    """``amount_minor`` of ``currency`` in minor units of ``target``, or None without a rate.

    ``rates[c]`` is the price of one major unit of ``c`` in major units of ``target``; ``exponents`` gives the
    minor-unit digits of each currency (2 when missing).
    """
    if currency == target:
        return amount_minor
    rate = rates.get(currency)
    if rate is None:
        return None
    major = Decimal(amount_minor).scaleb(-exponents.get(currency, 2))
    out = (major * rate).scaleb(exponents.get(target, 2))
    return int(out.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _group_key(deal: ForecastDeal, group_by: str) -> str | None:
    if group_by == "month":
        return deal.close_month
    if group_by == "owner":
        return None if deal.owner_id is None else str(deal.owner_id)
    if group_by == "stage":
        return deal.stage_key
    raise ValueError("group_by must be month, owner or stage")


def forecast(
    deals: Iterable[ForecastDeal],
    group_by: str,
    target: str,
    rates: Mapping[str, Decimal],
    exponents: Mapping[str, int],
    *,
    commit_probability: int = COMMIT_PROBABILITY,
) -> list[ForecastGroup]:
    """Best case (every open deal), weighted (amount × probability) and commit (probability ≥ commit_probability)
    per group. Amounts convertible into ``target`` are summed there; the rest stay per currency.
    Groups are sorted by key with the group without a key (no month, no owner) last.
    """
    groups: dict[str | None, ForecastGroup] = {}
    for deal in deals:
        key = _group_key(deal, group_by)
        group = groups.setdefault(key, ForecastGroup(key))
        converted = convert(deal.amount_minor, deal.currency, target, rates, exponents)
        if converted is None:
            currency, amount, is_converted = deal.currency, deal.amount_minor, False
        else:
            currency, amount, is_converted = target, converted, deal.currency != target
        totals = group.totals.setdefault(currency, CurrencyTotals(currency, converted=False))
        totals.converted = totals.converted or is_converted
        totals.count += deal.count
        totals.best_case_minor += amount
        totals.weighted_minor += weighted(amount, deal.probability)
        if deal.probability >= commit_probability:
            totals.commit_minor += amount
    return sorted(groups.values(), key=lambda g: (g.key is None, g.key or ""))


def velocity(histories: Iterable[Sequence[tuple[str, float]]], stages: Sequence[StageOrder]) -> list[StageVelocity]:
    """Average days per stage over completed stays (a stay ends when the deal enters its next stage).

    ``histories`` holds each deal's visits ``(stage_key, entered_at seconds)`` in time order; the stay in a deal's
    current stage is not counted.
    """
    totals: dict[str, tuple[int, float]] = {}
    for visits in histories:
        for (key, at), (_, next_at) in pairwise(visits):
            n, seconds = totals.get(key, (0, 0.0))
            totals[key] = (n + 1, seconds + (next_at - at))
    return velocity_from_totals(totals, stages)


def velocity_from_totals(totals: Mapping[str, tuple[int, float]], stages: Sequence[StageOrder]) -> list[StageVelocity]:
    """Per open stage, in order: ``totals[key]`` = (completed stays, their summed seconds) as average days."""
    out = []
    for stage in sorted(stages, key=lambda s: s.position):
        if stage.kind != "open":
            continue
        n, seconds = totals.get(stage.key, (0, 0.0))
        avg = round(seconds / n / 86400, 2) if n else None
        out.append(StageVelocity(stage.key, n, avg))
    return out


def conversion(histories: Iterable[Sequence[str]], stages: Sequence[StageOrder]) -> list[StageConversion]:
    """Per open stage: deals that entered it, and those that later entered a stage further on that is not lost."""
    by_key = {s.key: s for s in stages}
    entered: dict[str, int] = {}
    advanced: dict[str, int] = {}
    floor = float("-inf")
    # Many deals share one path through the stages: work out each distinct path once.
    paths = Counter(tuple(visited) for visited in histories)
    for visited, times in paths.items():
        items = [by_key.get(k) for k in visited]
        # later_best[i]: the furthest position of a not-lost stage entered after visit i.
        later_best = [floor] * len(items)
        best = floor
        for i in range(len(items) - 1, -1, -1):
            later_best[i] = best
            stage = items[i]
            if stage is not None and stage.kind != "lost" and stage.position > best:
                best = stage.position
        seen: set[str] = set()
        for i, stage in enumerate(items):
            if stage is None or stage.kind != "open" or stage.key in seen:
                continue
            seen.add(stage.key)
            entered[stage.key] = entered.get(stage.key, 0) + times
            if later_best[i] > stage.position:
                advanced[stage.key] = advanced.get(stage.key, 0) + times
    return conversion_from_counts({k: (n, advanced.get(k, 0)) for k, n in entered.items()}, stages)


def conversion_from_counts(
    counts: Mapping[str, tuple[int, int]], stages: Sequence[StageOrder]
) -> list[StageConversion]:
    """Per open stage, in order: ``counts[key]`` = (deals that entered it, those of them that later entered a
    further stage that is not lost) with the rate."""
    out = []
    for stage in sorted(stages, key=lambda s: s.position):
        if stage.kind != "open":
            continue
        n, a = counts.get(stage.key, (0, 0))
        out.append(StageConversion(stage.key, n, a, round(a / n, 4) if n else None))
    return out


def stall_threshold(
    average_days: float | None, factor: float = STALL_FACTOR, minimum_days: float = 1.0
) -> float | None:
    """Days in a stage after which an open deal counts as stalled: ``factor`` × the stage's average completed stay,
    at least ``minimum_days``; None when the stage has no completed stay to compare with."""
    if average_days is None:
        return None
    return max(average_days * factor, minimum_days)
