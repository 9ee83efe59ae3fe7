"""Marketing attribution: rule-based models and data-driven Markov-chain attribution over conversion paths.

A path is one journey's ordered touches (channel, campaign, time) and whether and when it converted, with what value.
Every model hands each converting path's one conversion and its value out over the path's touches; the credits per
channel (or per campaign) therefore sum to the attributed conversions and revenue under every model.

Models
------
* ``first_touch`` / ``last_touch``: everything to the first / last touch.
* ``linear``: equal shares.
* ``position_based`` (U-shaped): 40% first, 40% last, 20% spread over the middle touches; one touch gets 100%,
  two touches get 50/50.
* ``time_decay``: weight ``2^(-age / half_life)`` with ``age`` the time from the touch to the conversion.
* ``markov``: a first-order Markov chain over the states start, the channels, conversion and null, estimated from
  converting AND non-converting paths. The removal effect of a channel is the relative drop in the probability of
  reaching conversion from start when the channel's row is redirected to null. Credits are the removal effects
  normalised to the attributed conversions; revenue gets the same shares. Absorption probabilities come from a linear
  solve, not simulation, and every removal from one matrix inverse (a rank-one update per channel).

Paths without touches cannot credit anything: their conversions are reported as ``unattributed_*``.
Everything is vectorised over a CSR layout (``PathTable``): touch keys in path order plus path offsets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

Model = Literal["first_touch", "last_touch", "linear", "position_based", "time_decay", "markov"]
MODELS: tuple[Model, ...] = ("first_touch", "last_touch", "linear", "position_based", "time_decay", "markov")
Level = Literal["channel", "campaign"]
NO_CAMPAIGN = "(none)"
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Touch:
    """One marketing touch of a journey."""

    channel: str
    at: datetime
    campaign: str | None = None


@dataclass(frozen=True, slots=True)
class ConversionPath:
    """A journey: its touches (any order; they are sorted by time) and its conversion, if any."""

    touches: tuple[Touch, ...]
    converted: bool
    value: float = 0.0
    converted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PathTable:
    """Paths in CSR layout: touches of path ``i`` are ``keys[offsets[i]:offsets[i+1]]`` in time order.

    ``keys`` index ``names`` (channels or campaigns); ``touch_times`` and ``conversion_times`` are seconds on any
    common clock (only differences are used, by time decay). ``conversion_times`` of non-converting paths are ignored.
    """

    names: tuple[str, ...]
    keys: IntArray
    offsets: IntArray
    converted: BoolArray
    values: FloatArray
    touch_times: FloatArray | None = None
    conversion_times: FloatArray | None = None

    @property
    def n_paths(self) -> int:
        return int(self.offsets.size - 1)

    def lengths(self) -> IntArray:
        return np.diff(self.offsets).astype(np.int64)


def encode_paths(paths: Iterable[ConversionPath], level: Level = "channel") -> PathTable:
    """The CSR table of ``paths`` keyed by channel or by campaign (touches without one: ``NO_CAMPAIGN``)."""
    index: dict[str, int] = {}
    keys: list[int] = []
    times: list[float] = []
    offsets = [0]
    converted: list[bool] = []
    values: list[float] = []
    conv_times: list[float] = []
    for path in paths:
        touches = sorted(path.touches, key=lambda t: t.at)
        for touch in touches:
            name = touch.channel if level == "channel" else (touch.campaign or NO_CAMPAIGN)
            keys.append(index.setdefault(name, len(index)))
            times.append(touch.at.timestamp())
        offsets.append(len(keys))
        converted.append(path.converted)
        values.append(float(path.value) if path.converted else 0.0)
        if path.converted_at is not None:
            conv_times.append(path.converted_at.timestamp())
        else:
            conv_times.append(times[-1] if touches else 0.0)
    return PathTable(
        tuple(index),
        np.asarray(keys, dtype=np.int64),
        np.asarray(offsets, dtype=np.int64),
        np.asarray(converted, dtype=np.bool_),
        np.asarray(values, dtype=np.float64),
        np.asarray(times, dtype=np.float64),
        np.asarray(conv_times, dtype=np.float64),
    )


@dataclass(frozen=True, slots=True)
class Credit:
    """Credited conversions and revenue of one channel or campaign."""

    key: str
    conversions: float
    revenue: float


@dataclass(frozen=True, slots=True)
class AttributionResult:
    """One model's credits, largest first; totals are what was handed out."""

    model: Model
    credits: tuple[Credit, ...]
    total_conversions: float
    total_revenue: float
    unattributed_conversions: float = 0.0
    unattributed_revenue: float = 0.0
    removal_effects: dict[str, float] | None = None  # markov only
    insufficient_data: bool = False
    reason: str = ""

    def as_dict(self) -> dict[str, Credit]:
        return {c.key: c for c in self.credits}


# --------------------------------------------------------------------------------------------------------------------
# Rule-based models: a weight per touch, normalised within the path.
# --------------------------------------------------------------------------------------------------------------------


def touch_weights(table: PathTable, model: Model, *, half_life_days: float = 7.0) -> FloatArray:
    """Each touch's share of its path's conversion (each path's shares sum to 1; empty paths have none)."""
    lengths = table.lengths()
    n_touch = int(table.keys.size)
    path_of = np.repeat(np.arange(table.n_paths), lengths)
    pos = np.arange(n_touch) - table.offsets[:-1][path_of]  # position within the path
    k = lengths[path_of]
    if model == "first_touch":
        return np.asarray(pos == 0, dtype=np.float64)
    if model == "last_touch":
        return np.asarray(pos == k - 1, dtype=np.float64)
    if model == "linear":
        return 1.0 / k.astype(np.float64)
    if model == "position_based":
        ends = (pos == 0) | (pos == k - 1)
        w = np.where(ends, 0.4, 0.2 / np.maximum(k - 2, 1))
        w = np.where(k == 1, 1.0, w)
        return np.asarray(np.where(k == 2, 0.5, w), dtype=np.float64)
    if model == "time_decay":
        if half_life_days <= 0:
            raise ValueError("half_life_days must be positive")
        if table.touch_times is None or table.conversion_times is None:
            raise ValueError("time decay needs touch and conversion times")
        age_days = np.maximum(table.conversion_times[path_of] - table.touch_times, 0.0) / SECONDS_PER_DAY
        # Relative to the path's most recent touch, so that old paths do not underflow to zero weights.
        youngest = np.full(table.n_paths, np.inf)
        np.minimum.at(youngest, path_of, age_days)
        raw = np.exp2(-(age_days - youngest[path_of]) / half_life_days)
        sums = np.bincount(path_of, weights=raw, minlength=table.n_paths)
        return np.asarray(raw / sums[path_of], dtype=np.float64)
    raise ValueError(f"not a rule-based model: {model}")


def _credits(names: Sequence[str], conv: FloatArray, rev: FloatArray) -> tuple[Credit, ...]:
    order = sorted(range(len(names)), key=lambda i: (-conv[i], -rev[i], names[i]))
    return tuple(Credit(names[i], float(conv[i]), float(rev[i])) for i in order)


def _totals(table: PathTable) -> tuple[float, float, float, float]:
    has_touch = table.lengths() > 0
    conv = table.converted
    return (
        float(np.count_nonzero(conv & has_touch)),
        float(table.values[conv & has_touch].sum()),
        float(np.count_nonzero(conv & ~has_touch)),
        float(table.values[conv & ~has_touch].sum()),
    )


def rule_based(table: PathTable, model: Model, *, half_life_days: float = 7.0) -> AttributionResult:
    """First touch, last touch, linear, position-based or time-decay credits."""
    weights = touch_weights(table, model, half_life_days=half_life_days)
    path_of = np.repeat(np.arange(table.n_paths), table.lengths())
    conv_w = weights * table.converted[path_of]
    rev_w = weights * table.values[path_of] * table.converted[path_of]
    n = len(table.names)
    conv = np.bincount(table.keys, weights=conv_w, minlength=n).astype(np.float64)
    rev = np.bincount(table.keys, weights=rev_w, minlength=n).astype(np.float64)
    total_c, total_r, un_c, un_r = _totals(table)
    empty = total_c == 0
    return AttributionResult(
        model,
        _credits(table.names, conv, rev),
        total_c,
        total_r,
        un_c,
        un_r,
        None,
        empty,
        "no converting path with a touch" if empty else "",
    )


# --------------------------------------------------------------------------------------------------------------------
# Markov chain
# --------------------------------------------------------------------------------------------------------------------


def transition_counts(table: PathTable) -> FloatArray:
    """Transition counts between states 0 = start, 1..n = keys, n+1 = conversion, n+2 = null (paths with touches)."""
    n = len(table.names)
    lengths = table.lengths()
    keep = lengths > 0
    size = n + 3
    n_paths = table.n_paths
    # Sequence per path: start, touches..., end (conversion or null); transitions are consecutive pairs.
    seq_offsets = table.offsets + np.arange(n_paths + 1)  # one start state per path inserted before its touches
    seq = np.empty(int(seq_offsets[-1]), dtype=np.int64)
    is_start = np.zeros(seq.size, dtype=np.bool_)
    is_start[seq_offsets[:-1]] = True
    seq[is_start] = 0
    seq[~is_start] = table.keys + 1
    end_state = np.where(table.converted, n + 1, n + 2)
    to = np.empty_like(seq)
    to[:-1] = seq[1:]
    last = seq_offsets[1:] - 1  # last position of each path's sequence
    to[last] = end_state
    valid = np.repeat(keep, lengths + 1)
    flat = seq[valid] * size + to[valid]
    counts = np.bincount(flat, minlength=size * size).astype(np.float64)
    return counts.reshape(size, size)


def markov_removal_effects(counts: FloatArray) -> tuple[float, FloatArray]:
    """The chain's conversion probability and each key's removal effect ``1 - P(conv without key) / P(conv)``.

    With ``M = I - Q`` over the transient states (start and keys), ``x = M^-1 r`` the conversion probability from
    each state and ``N = M^-1`` the expected visits, redirecting key ``k``'s row to null is a rank-one change of ``M``;
    Sherman-Morrison gives ``P(conv without k) = x_0 - N_0k x_k / N_kk`` (the conversions through ``k`` removed:
    ``N_0k / N_kk`` is the probability of ever reaching ``k``). One inverse serves every key.
    """
    size = counts.shape[0]
    n = size - 3
    totals = counts.sum(axis=1, keepdims=True)
    probs = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    m = np.eye(n + 1) - probs[: n + 1, : n + 1]
    r = probs[: n + 1, n + 1]
    visits = np.linalg.inv(m)  # every row ends in conversion or null, so I - Q is invertible
    x = visits @ r
    base = float(x[0])
    effects = np.zeros(n)
    if base <= 0:
        return base, effects
    keys = np.arange(1, n + 1)
    without = base - visits[0, keys] * x[keys] / visits[keys, keys]
    effects = 1.0 - without / base
    return base, np.asarray(np.clip(effects, 0.0, 1.0), dtype=np.float64)


def markov(table: PathTable) -> AttributionResult:
    """Data-driven attribution by removal effects of a first-order Markov chain."""
    total_c, total_r, un_c, un_r = _totals(table)
    names = table.names
    n = len(names)
    if total_c == 0:
        zero = np.zeros(n)
        return AttributionResult(
            "markov",
            _credits(names, zero, zero),
            0.0,
            0.0,
            un_c,
            un_r,
            dict.fromkeys(names, 0.0),
            True,
            "no converting path with a touch",
        )
    _, effects = markov_removal_effects(transition_counts(table))
    share = effects / effects.sum()
    return AttributionResult(
        "markov",
        _credits(names, share * total_c, share * total_r),
        total_c,
        total_r,
        un_c,
        un_r,
        {names[i]: float(effects[i]) for i in range(n)},
    )


def attribute(table: PathTable, model: Model, *, half_life_days: float = 7.0) -> AttributionResult:
    """Credits under one model."""
    if model == "markov":
        return markov(table)
    return rule_based(table, model, half_life_days=half_life_days)


def attribute_all(
    paths: Iterable[ConversionPath] | PathTable, *, level: Level = "channel", half_life_days: float = 7.0
) -> dict[Model, AttributionResult]:
    """Every model side by side, keyed by channel or campaign."""
    table = paths if isinstance(paths, PathTable) else encode_paths(paths, level)
    return {m: attribute(table, m, half_life_days=half_life_days) for m in MODELS}
