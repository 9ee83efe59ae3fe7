"""Funnel math on hand-worked event and stage histories."""

from __future__ import annotations

import numpy as np
import pytest

from suppilo.engine import funnel as fn

H = 3600.0
DAY = 86_400.0
STEPS = ["visit", "form", "demo", "order"]


def rows(events: dict[str, list[tuple[float, str]]]) -> tuple[list[str], list[float], list[str]]:
    ids, times, names = [], [], []
    for contact, items in events.items():
        for t, name in items:
            ids.append(contact)
            times.append(t)
            names.append(name)
    return ids, times, names


EVENTS = {
    # c1: the whole funnel inside the window; visit > form 1 h, form > demo 2 h, demo > order 1 day.
    "c1": [(0.0, "visit"), (1 * H, "form"), (3 * H, "demo"), (3 * H + DAY, "order")],
    # c2: order before the demo does not count; stops at demo.
    "c2": [(0.0, "visit"), (2 * H, "order"), (5 * H, "form"), (9 * H, "demo")],
    # c3: form then visit: the form precedes every visit, so only step 1.
    "c3": [(0.0, "form"), (1 * H, "visit")],
    # c4: the first visit's form comes 40 days later (outside 30 days), but a later visit starts a full run.
    "c4": [(0.0, "visit"), (40 * DAY, "visit"), (40 * DAY + 1 * H, "form"), (41 * DAY, "demo"), (42 * DAY, "order")],
    # c5: never visits.
    "c5": [(0.0, "form"), (1.0, "demo")],
    # c6: the order is 31 days after the first visit: reaches demo only.
    "c6": [(0.0, "visit"), (1 * DAY, "form"), (2 * DAY, "demo"), (31 * DAY, "order")],
}


def test_ordered_funnel_worked_by_hand() -> None:
    r = fn.ordered_funnel(*rows(EVENTS), STEPS, 30 * DAY, min_contacts=1)
    counts = [s.count for s in r.steps]
    # Visit: c1 c2 c3 c4 c6 = 5; form: c1 c2 c4 c6 = 4; demo: c1 c2 c4 c6 = 4; order: c1 c4 = 2.
    assert counts == [5, 4, 4, 2]
    assert [s.drop_off for s in r.steps] == [0, 1, 0, 2]
    assert r.steps[0].conversion_from_previous is None
    assert [s.conversion_from_previous for s in r.steps[1:]] == pytest.approx([0.8, 1.0, 0.5])
    assert r.overall_conversion == pytest.approx(2 / 5) and r.entered == 5 and r.converted == 2
    # Visit > form: c1 1 h, c2 5 h, c4 1 h (from its second visit), c6 1 day -> median of 1h,1h,5h,24h = 3 h.
    assert r.steps[1].median_seconds_from_previous == pytest.approx(3 * H)
    # Demo > order: c1 1 day, c4 1 day.
    assert r.steps[3].median_seconds_from_previous == pytest.approx(DAY)
    # Visit > order: c1 27 h, c4 2 days -> median 37.5 h.
    assert r.steps[3].median_seconds_from_start == pytest.approx((27 * H + 48 * H) / 2)
    assert not r.insufficient_data


def test_input_order_does_not_matter_and_lists_give_the_same() -> None:
    ids, times, names = rows(EVENTS)
    perm = np.random.default_rng(0).permutation(len(ids))
    shuffled = fn.ordered_funnel(
        np.array(ids)[perm], np.array(times)[perm], np.array(names)[perm], STEPS, 30 * DAY, min_contacts=1
    )
    assert shuffled == fn.ordered_funnel(ids, times, names, STEPS, 30 * DAY, min_contacts=1)
    assert fn.ordered_funnel_from_lists(EVENTS, STEPS, 30 * DAY, min_contacts=1) == shuffled


def test_a_repeated_step_needs_a_later_event() -> None:
    events = {"a": [(0.0, "view"), (10.0, "view")], "b": [(0.0, "view")], "c": [(5.0, "view"), (5.0, "view")]}
    r = fn.ordered_funnel(*rows(events), ["view", "view"], 60.0, min_contacts=1)
    # Same timestamp is fine for c: two distinct events in input order.
    assert [s.count for s in r.steps] == [3, 2]


def test_window_is_measured_from_the_first_step() -> None:
    events = {"a": [(0.0, "visit"), (20.0, "form"), (40.0, "order")]}
    assert [s.count for s in fn.ordered_funnel(*rows(events), ["visit", "form", "order"], 30.0).steps] == [1, 1, 0]
    assert [s.count for s in fn.ordered_funnel(*rows(events), ["visit", "form", "order"], 40.0).steps] == [1, 1, 1]


def test_empty_and_tiny_funnels_say_so() -> None:
    empty = fn.ordered_funnel([], [], [], STEPS, DAY)
    assert empty.insufficient_data and empty.reason == "no contact entered the funnel"
    assert empty.overall_conversion is None
    assert all(s.count == 0 and s.conversion_from_start is None for s in empty.steps)
    assert all(s.median_seconds_from_previous is None for s in empty.steps)
    tiny = fn.ordered_funnel(*rows(EVENTS), STEPS, 30 * DAY)
    assert tiny.insufficient_data and "only 5 contacts" in tiny.reason
    assert tiny.overall_conversion == pytest.approx(0.4)
    nobody_visits = fn.ordered_funnel(*rows({"x": [(0.0, "form")]}), STEPS, DAY)
    assert nobody_visits.entered == 0 and nobody_visits.steps[1].conversion_from_previous is None


STAGES = ["awareness", "interest", "consideration", "customer"]
CHANGES = [
    # a: awareness (2 d) > interest (3 d) > customer (still)
    ("a", "awareness", 0.0),
    ("a", "interest", 2 * DAY),
    ("a", "customer", 5 * DAY),
    # b: awareness (4 d) > interest (still)
    ("b", "awareness", 1 * DAY),
    ("b", "interest", 5 * DAY),
    # c: straight to consideration (1 d), then inactive (a side stage)
    ("c", "consideration", 0.0),
    ("c", "inactive", 1 * DAY),
    # d: awareness only
    ("d", "awareness", 3 * DAY),
    # e: only ever a side stage: not in the funnel
    ("e", "inactive", 0.0),
]


def test_stage_funnel_worked_by_hand() -> None:
    ids, stages, times = zip(*CHANGES, strict=True)
    r = fn.stage_funnel(ids, stages, times, STAGES, min_contacts=1)
    by = {s.stage: s for s in r.stages}
    assert r.contacts == 4
    # Reached (this stage or later): awareness a b c d = 4; interest a b c = 3; consideration a c = 2; customer a = 1.
    assert [by[k].reached for k in STAGES] == [4, 3, 2, 1]
    assert [by[k].entered for k in STAGES] == [3, 2, 1, 1]
    assert [by[k].current for k in STAGES] == [1, 1, 0, 1]
    assert by["awareness"].conversion_to_next == pytest.approx(0.75)
    assert by["interest"].conversion_to_next == pytest.approx(2 / 3)
    assert by["consideration"].conversion_to_next == pytest.approx(0.5)
    assert by["customer"].conversion_to_next is None and by["customer"].drop_off is None
    assert [by[k].drop_off for k in STAGES[:3]] == [1, 1, 1]
    assert by["interest"].drop_off_rate == pytest.approx(1 / 3)
    # Completed stays: awareness a 2 d, b 4 d (d's is open) -> 3 d; interest a 3 d; consideration c 1 d.
    assert by["awareness"].median_seconds_in_stage == pytest.approx(3 * DAY)
    assert by["awareness"].completed_stays == 2
    assert by["interest"].median_seconds_in_stage == pytest.approx(3 * DAY)
    assert by["consideration"].median_seconds_in_stage == pytest.approx(DAY)
    assert by["customer"].median_seconds_in_stage is None and by["customer"].completed_stays == 0


def test_stage_funnel_on_nothing() -> None:
    r = fn.stage_funnel([], [], [], STAGES)
    assert r.insufficient_data and r.contacts == 0 and r.reason == "no contact reached a funnel stage"
    assert all(s.reached == 0 and s.conversion_to_next is None and s.drop_off_rate is None for s in r.stages)
    with pytest.raises(ValueError):
        fn.stage_funnel([], [], [], ["a", "a"])


@pytest.mark.parametrize("seed", range(6))
def test_grouped_funnel_equals_the_sorting_one_on_random_data(seed: int) -> None:
    # Integer times with many ties, repeated step labels, contacts in a shuffled (but contiguous) order.
    rng = np.random.default_rng(seed)
    n = 4000
    contact = rng.integers(0, 300, n)
    t = rng.integers(0, 60, n) * 3600
    names = np.array(["visit", "form", "demo", "order", "other"])[rng.integers(0, 5, n)]
    order = np.lexsort((np.arange(n), t, contact))  # the row order the grouped function expects
    perm = rng.permutation(300)  # contacts in any order: relabel the sort key, keep each contact contiguous
    order = order[np.argsort(perm[contact[order]], kind="stable")]
    for steps, window in [(STEPS, 7 * DAY), (["visit", "visit", "order"], 2 * DAY), (["form"], 0.0), (STEPS, 0.0)]:
        code = {s: i for i, s in enumerate(dict.fromkeys(steps))}
        lab = np.array([code.get(x, -1) for x in names[order]])
        grouped = fn.ordered_funnel_grouped(
            contact[order], t[order], lab, [code[s] for s in steps], steps, window, min_contacts=1
        )
        reference = fn.ordered_funnel(contact, t.astype(float), names, steps, window, min_contacts=1)
        assert grouped.entered > 0
        assert grouped == reference, (seed, steps)


def test_grouped_funnel_on_no_rows_and_bad_input() -> None:
    empty = fn.ordered_funnel_grouped([], [], [], [0, 1], ["a", "b"], DAY)
    assert empty.entered == 0 and empty.insufficient_data and empty.overall_conversion is None
    with pytest.raises(ValueError, match="same length"):
        fn.ordered_funnel_grouped([1], [1, 2], [0], [0], ["a"], DAY)
    with pytest.raises(ValueError, match="window"):
        fn.ordered_funnel_grouped([1], [1], [0], [0], ["a"], -1.0)
