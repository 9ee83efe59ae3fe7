"""Funnel math: ordered event funnels with a conversion window, and the lifecycle-stage funnel.

Both are pure functions over arrays (contact id, time in seconds on any common clock, event or stage key), vectorised
with numpy: no loop per contact or per event. Ties in time keep the input order.

Ordered event funnel
--------------------
A contact reaches step ``k`` when it has events of steps 1..k in that order (each strictly after the previous one in
the contact's time-sorted list) with step ``k`` at most ``window_seconds`` after step 1. Every step-1 event is tried
as a start and each following step takes its earliest occurrence (which is optimal for a fixed start); the contact
counts at the deepest level any start reaches, the earliest such start giving the times.

Lifecycle-stage funnel
----------------------
From stage-change histories: how many contacts ever reached each funnel stage (that stage or a later one, since
contacts may skip stages), how many entered it as recorded, stage-to-stage conversion and drop-off, and the median
time in a stage over completed stays (a stay ends at the contact's next stage change). Stages not in the funnel list
(side stages such as "inactive") end stays but are not counted.

A report over no or too few contacts sets ``insufficient_data`` and leaves undefined rates as ``None``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_CONTACTS = 30


def _rate(num: int, den: int) -> float | None:
    return num / den if den > 0 else None


def _median(values: FloatArray) -> float | None:
    return float(np.median(values)) if values.size else None


def _contact_codes(contact_ids: npt.ArrayLike) -> IntArray:
    ids = np.asarray(contact_ids)
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    if ids.dtype.kind in "iu" and ids.min() >= 0 and int(ids.max()) <= 4 * ids.size + 1024:
        return ids.astype(np.int64).reshape(-1)  # compact non-negative integer ids serve as codes directly
    _, codes = np.unique(ids, return_inverse=True)
    return np.asarray(codes, dtype=np.int64).reshape(-1)


def _insufficient(n: int, min_contacts: int, what: str) -> tuple[bool, str]:
    if n == 0:
        return True, f"no contact {what}"
    if n < min_contacts:
        return True, f"only {n} contacts {what} (fewer than {min_contacts}): rates are not reliable"
    return False, ""


# --------------------------------------------------------------------------------------------------------------------
# Ordered event funnel
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FunnelStep:
    """One step: contacts reaching it, conversion from the previous step and from step 1, median times."""

    step: str
    count: int
    drop_off: int  # contacts of the previous step that did not reach this one (0 for step 1)
    conversion_from_previous: float | None  # None for step 1
    conversion_from_start: float | None
    median_seconds_from_previous: float | None
    median_seconds_from_start: float | None


@dataclass(frozen=True, slots=True)
class FunnelResult:
    steps: tuple[FunnelStep, ...]
    window_seconds: float
    entered: int
    converted: int
    overall_conversion: float | None
    insufficient_data: bool = False
    reason: str = ""


def ordered_funnel(
    contact_ids: npt.ArrayLike,
    times: npt.ArrayLike,
    events: npt.ArrayLike,
    steps: Sequence[str],
    window_seconds: float,
    *,
    min_contacts: int = MIN_CONTACTS,
) -> FunnelResult:
    """The ordered funnel ``steps`` over event rows ``(contact_id, time, event name)`` in any order."""
    if not steps:
        raise ValueError("a funnel needs at least one step")
    if window_seconds < 0:
        raise ValueError("window_seconds must not be negative")
    t = np.asarray(times, dtype=np.float64)
    ev = np.asarray(events)
    codes = _contact_codes(contact_ids)
    if not (codes.shape == t.shape == ev.shape):
        raise ValueError("contact_ids, times and events must have the same length")
    order = np.lexsort((t, codes))  # stable: ties keep the input order
    codes_s, t_s, ev_s = codes[order], t[order], ev[order]
    n_steps = len(steps)
    positions = [np.flatnonzero(ev_s == name) for name in steps]

    start_pos = positions[0]
    cand_contact = codes_s[start_pos]
    start_time = t_s[start_pos]
    cur = start_pos.copy()
    level = np.ones(start_pos.size, dtype=np.int64)
    step_times = np.full((n_steps, start_pos.size), np.nan)
    step_times[0] = start_time
    active = np.ones(start_pos.size, dtype=np.bool_)
    for k in range(1, n_steps):
        pk = positions[k]
        if pk.size == 0 or not active.any():
            break
        idx = np.searchsorted(pk, cur, side="right")
        ok = active & (idx < pk.size)
        nxt = pk[np.minimum(idx, pk.size - 1)]
        ok &= codes_s[nxt] == cand_contact
        ok &= t_s[nxt] - start_time <= window_seconds
        cur = np.where(ok, nxt, cur)
        level = np.where(ok, k + 1, level)
        step_times[k] = np.where(ok, t_s[nxt], np.nan)
        active = ok

    # Per contact the deepest start, the earliest among equals (candidates are in position order already).
    if start_pos.size:
        pick_order = np.lexsort((start_pos, -level, cand_contact))
        first = np.r_[True, cand_contact[pick_order][1:] != cand_contact[pick_order][:-1]]
        best = pick_order[first]
    else:
        best = np.zeros(0, dtype=np.int64)
    best_level = level[best]
    best_times = step_times[:, best]
    entered = int(best.size)
    result_steps: list[FunnelStep] = []
    prev_count = entered
    for k, name in enumerate(steps):
        reached = best_level >= k + 1
        count = int(np.count_nonzero(reached))
        if k == 0:
            from_prev: FloatArray = np.zeros(0)
            from_start: FloatArray = np.zeros(0)
        else:
            from_prev = best_times[k, reached] - best_times[k - 1, reached]
            from_start = best_times[k, reached] - best_times[0, reached]
        result_steps.append(
            FunnelStep(
                name,
                count,
                prev_count - count,
                _rate(count, prev_count) if k else None,
                _rate(count, entered),
                _median(from_prev) if k else None,
                _median(from_start) if k else None,
            )
        )
        prev_count = count
    converted = result_steps[-1].count
    flag, reason = _insufficient(entered, min_contacts, "entered the funnel")
    return FunnelResult(
        tuple(result_steps), window_seconds, entered, converted, _rate(converted, entered), flag, reason
    )


def ordered_funnel_grouped(
    contact_ids: npt.ArrayLike,
    times: npt.ArrayLike,
    labels: npt.ArrayLike,
    step_labels: Sequence[int],
    step_names: Sequence[str],
    window: float,
    *,
    time_scale: float = 1.0,
    min_contacts: int = MIN_CONTACTS,
) -> FunnelResult:
    """The same funnel as :func:`ordered_funnel` over rows that are already **grouped by contact** (each contact's
    rows contiguous, in any contact order) and **in event order within a contact**; one row per (event, step label)
    with the label as a small integer, ``step_labels[k]`` the label of step ``k``. ``times`` and ``window`` share a
    unit; ``time_scale`` units make a second (the medians are in seconds).

    One linear pass per distinct label finds, for every row, the next row of that label (a reversed running
    minimum), so each start follows its chain by array lookups: no sort and no search, O(rows x steps).
    """
    if not step_labels or len(step_labels) != len(step_names):
        raise ValueError("step_labels and step_names must be non-empty and of the same length")
    if window < 0:
        raise ValueError("window must not be negative")
    c = np.asarray(contact_ids).reshape(-1)
    if c.size and c.dtype.kind not in "iu":
        c = c.astype(np.int64)
    t = np.asarray(times).reshape(-1)
    lab = np.asarray(labels).reshape(-1)
    if not (c.shape == t.shape == lab.shape):
        raise ValueError("contact_ids, times and labels must have the same length")
    n = c.size
    index_type = np.int32 if n < 2**31 - 1 else np.int64
    rows = np.arange(n, dtype=index_type)
    nxt: dict[int, npt.NDArray[Any]] = {}
    for label in dict.fromkeys(int(x) for x in step_labels[1:]):
        pos = np.where(lab == label, rows, index_type(n))
        after = np.empty(n, dtype=index_type)
        if n:
            after[: n - 1] = np.minimum.accumulate(pos[:0:-1])[::-1]  # first row of the label strictly after i
            after[n - 1] = n
        nxt[label] = after

    starts = np.flatnonzero(lab == step_labels[0]).astype(index_type)
    n_starts = starts.size
    cs = c[starts]
    t1 = t[starts]
    # Row n stands for "no next row": its contact matches no one's.
    c_ext = np.append(c, c.min() - 1 if n else np.zeros(1, dtype=c.dtype))
    level = np.ones(n_starts, dtype=np.int8)
    step_times = [t1]
    live = np.arange(n_starts, dtype=index_type)  # the starts still climbing, and where each one stands
    cur = starts
    for k in range(1, len(step_labels)):
        tk = np.empty(n_starts, dtype=t.dtype)
        step_times.append(tk)
        if not live.size:
            continue
        p = nxt[int(step_labels[k])][cur]
        inside = c_ext[p] == cs[live]  # the next row of the label is still this contact's
        live, p = live[inside], p[inside]
        tp = t[p]
        ok = tp - t1[live] <= window
        live, cur = live[ok], p[ok]
        tk[live] = tp[ok]
        level[live] = k + 1

    if n_starts:
        new = np.r_[True, cs[1:] != cs[:-1]]
        seg = np.cumsum(new, dtype=index_type) - 1
        deepest = np.maximum.reduceat(level, np.flatnonzero(new))
        hit = np.flatnonzero(level == deepest[seg])
        best = hit[np.r_[True, seg[hit][1:] != seg[hit][:-1]]]  # the earliest start reaching the contact's deepest
    else:
        best = np.zeros(0, dtype=np.int64)
    best_level = level[best]
    entered = int(best.size)
    result_steps: list[FunnelStep] = []
    prev_count = entered
    for k, name in enumerate(step_names):
        reached = best_level >= k + 1
        count = int(np.count_nonzero(reached))
        if k:
            sel = best[reached]
            tk, tprev, tfirst = step_times[k][sel], step_times[k - 1][sel], step_times[0][sel]
            from_prev = _median((tk - tprev) / time_scale)
            from_start = _median((tk - tfirst) / time_scale)
        else:
            from_prev = from_start = None
        result_steps.append(
            FunnelStep(
                name,
                count,
                prev_count - count,
                _rate(count, prev_count) if k else None,
                _rate(count, entered),
                from_prev,
                from_start,
            )
        )
        prev_count = count
    converted = result_steps[-1].count
    flag, reason = _insufficient(entered, min_contacts, "entered the funnel")
    return FunnelResult(
        tuple(result_steps), window / time_scale, entered, converted, _rate(converted, entered), flag, reason
    )


def ordered_funnel_from_lists(
    events_by_contact: Mapping[str, Iterable[tuple[float, str]]] | Mapping[int, Iterable[tuple[float, str]]],
    steps: Sequence[str],
    window_seconds: float,
    *,
    min_contacts: int = MIN_CONTACTS,
) -> FunnelResult:
    """The same funnel over per-contact lists of ``(time, event name)``."""
    ids: list[object] = []
    times: list[float] = []
    names: list[str] = []
    for contact, items in events_by_contact.items():
        for at, name in items:
            ids.append(contact)
            times.append(at)
            names.append(name)
    return ordered_funnel(
        np.asarray(ids), np.asarray(times, dtype=np.float64), np.asarray(names, dtype=object), steps, window_seconds,
        min_contacts=min_contacts,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Lifecycle-stage funnel
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StageStats:
    """One funnel stage of the lifecycle report."""

    stage: str
    reached: int  # contacts that were ever at this stage or a later funnel stage
    entered: int  # contacts with a recorded change into this stage
    current: int  # contacts whose latest change is into this stage
    conversion_to_next: float | None  # reached(next) / reached(this); None for the last stage or no contacts
    drop_off: int | None  # reached(this) - reached(next)
    drop_off_rate: float | None
    median_seconds_in_stage: float | None
    completed_stays: int


@dataclass(frozen=True, slots=True)
class StageFunnelResult:
    stages: tuple[StageStats, ...]
    contacts: int
    insufficient_data: bool = False
    reason: str = ""


def stage_funnel(
    contact_ids: npt.ArrayLike,
    stages: npt.ArrayLike,
    times: npt.ArrayLike,
    funnel_stages: Sequence[str],
    *,
    min_contacts: int = MIN_CONTACTS,
) -> StageFunnelResult:
    """The lifecycle funnel from stage-change rows ``(contact_id, new stage, time)``; ``funnel_stages`` in order."""
    if not funnel_stages or len(set(funnel_stages)) != len(funnel_stages):
        raise ValueError("funnel_stages must be a non-empty list of distinct stage keys")
    t = np.asarray(times, dtype=np.float64)
    st = np.asarray(stages)
    codes = _contact_codes(contact_ids)
    if not (codes.shape == t.shape == st.shape):
        raise ValueError("contact_ids, stages and times must have the same length")
    n_stages = len(funnel_stages)
    order = np.lexsort((t, codes))  # stable: ties keep the input order
    codes_s, t_s, st_s = codes[order], t[order], st[order]
    rank = np.full(t.size, -1, dtype=np.int64)
    for k, key in enumerate(funnel_stages):
        rank[st_s == key] = k
    n_contacts = int(codes.max()) + 1 if codes.size else 0

    # Reached: the deepest funnel rank per contact; a contact at rank k passed every earlier stage.
    deepest = np.full(n_contacts, -1, dtype=np.int64)
    np.maximum.at(deepest, codes_s, rank)
    in_funnel = deepest >= 0
    per_rank = np.bincount(deepest[in_funnel], minlength=n_stages)
    reached = np.cumsum(per_rank[::-1])[::-1]
    # Entered: distinct (contact, stage) pairs recorded.
    f = rank >= 0
    pairs = np.unique(codes_s[f] * n_stages + rank[f])
    entered = np.bincount(pairs % n_stages, minlength=n_stages)
    # Current: the stage of each contact's last change.
    last = np.r_[codes_s[1:] != codes_s[:-1], True] if codes_s.size else np.zeros(0, dtype=np.bool_)
    last_rank = rank[last]
    current = np.bincount(last_rank[last_rank >= 0], minlength=n_stages)
    # Completed stays: a change followed by another change of the same contact.
    has_next = ~last
    durations = np.r_[t_s[1:] - t_s[:-1], 0.0] if t_s.size else np.zeros(0)

    contacts = int(np.count_nonzero(in_funnel))
    out: list[StageStats] = []
    for k, key in enumerate(funnel_stages):
        stay = has_next & (rank == k)
        here, nxt = int(reached[k]), int(reached[k + 1]) if k + 1 < n_stages else None
        out.append(
            StageStats(
                key,
                here,
                int(entered[k]),
                int(current[k]),
                _rate(nxt, here) if nxt is not None else None,
                here - nxt if nxt is not None else None,
                _rate(here - nxt, here) if nxt is not None else None,
                _median(durations[stay]),
                int(np.count_nonzero(stay)),
            )
        )
    flag, reason = _insufficient(contacts, min_contacts, "reached a funnel stage")
    return StageFunnelResult(tuple(out), contacts, flag, reason)
