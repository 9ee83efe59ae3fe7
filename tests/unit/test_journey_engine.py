"""The journey step machine and definition checks, without a database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suppilo.engine import journey as j

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def definition(steps: dict, start: str = "a", **extra) -> j.Definition:
    return j.parse_definition({"name": "t", "trigger": {"type": "manual"}, "start": start, "steps": steps, **extra})


def run(defn, pos, now, facts=None, contact_id=1, tz="Europe/Helsinki"):
    return j.advance(defn, pos, facts or j.Facts(), now, journey_id=7, contact_id=contact_id, tz=ZoneInfo(tz))


def test_walks_until_a_wait_and_resumes_after_it():
    d = definition(
        {
            "a": {"type": "send_email", "template": "welcome", "next": "w"},
            "w": {"type": "wait", "duration": {"days": 2}, "next": "b"},
            "b": {"type": "send_email", "template": "tips"},
        }
    )
    r = run(d, j.enter(d, T0), T0)
    assert r.status == "waiting" and r.due_at == T0 + timedelta(days=2)
    assert [e.step_id for e in r.effects] == ["a"]
    again = run(d, r.position, T0 + timedelta(days=1))
    assert again.status == "waiting" and again.effects == ()
    done = run(d, r.position, T0 + timedelta(days=2))
    assert done.status == "ended" and done.end_reason == "completed" and [e.step_id for e in done.effects] == ["b"]


def test_effect_keys_count_visits_so_a_loop_sends_once_per_visit():
    d = definition(
        {
            "a": {"type": "send_email", "template": "t", "next": "w"},
            "w": {"type": "wait", "duration": {"days": 1}, "next": "a"},
        }
    )
    r1 = run(d, j.enter(d, T0), T0)
    r2 = run(d, r1.position, T0 + timedelta(days=1))
    assert [e.key for e in r1.effects] == ["a:1"] and [e.key for e in r2.effects] == ["a:2"]


def test_wait_for_event_and_its_timeout():
    d = definition(
        {
            "a": {
                "type": "wait_for_event",
                "event": "Order Completed",
                "timeout": {"days": 3},
                "next": "yes",
                "timeout_next": "no",
            },
            "yes": {"type": "update_contact", "add_tags": ["bought"]},
            "no": {"type": "send_email", "template": "nudge"},
        }
    )
    r = run(d, j.enter(d, T0), T0)
    assert r.status == "waiting" and r.wait_event is not None and r.wait_event.event == "Order Completed"
    arrived = run(d, r.position, T0 + timedelta(hours=1), j.Facts(event_arrived=True))
    assert [e.step_id for e in arrived.effects] == ["yes"]
    timeout = run(d, r.position, T0 + timedelta(days=3))
    assert [e.step_id for e in timeout.effects] == ["no"]


def test_branch_asks_for_filters_after_carrying_out_earlier_effects():
    d = definition(
        {
            "a": {"type": "update_contact", "add_tags": ["x"], "next": "b"},
            "b": {
                "type": "branch",
                "arms": [{"filter": {"type": "tag", "op": "has_tag", "value": "x"}, "next": "yes"}],
                "else": "no",
            },
            "yes": {"type": "send_email", "template": "y"},
            "no": {"type": "send_email", "template": "n"},
        }
    )
    r = run(d, j.enter(d, T0), T0)
    assert r.status == "needs_filters" and list(r.needs) == ["b#0"] and [e.step_id for e in r.effects] == ["a"]
    assert r.position.step == "b"
    yes = run(d, r.position, T0, j.Facts(filters={"b#0": True}))
    no = run(d, r.position, T0, j.Facts(filters={"b#0": False}))
    assert [e.step_id for e in yes.effects] == ["yes"] and [e.step_id for e in no.effects] == ["no"]


def test_goal_filter_is_asked_first_and_ends_as_goal():
    d = definition(
        {"a": {"type": "send_email", "template": "t"}},
        goal={"filter": {"type": "tag", "op": "has_tag", "value": "won"}},
    )
    first = run(d, j.enter(d, T0), T0)
    assert first.status == "needs_filters" and "goal" in first.needs
    done = run(d, j.enter(d, T0), T0, j.Facts(filters={"goal": True}))
    assert done.status == "ended" and done.end_reason == "goal" and done.effects == ()


def test_split_is_sticky_weighted_and_has_a_holdout():
    d = definition(
        {
            "s": {
                "type": "split",
                "variants": [{"name": "A", "weight": 3, "next": "a"}, {"name": "B", "weight": 1, "next": "b"}],
                "holdout_percent": 10,
            },
            "a": {"type": "send_email", "template": "a"},
            "b": {"type": "send_email", "template": "b"},
        },
        start="s",
    )
    counts: Counter[str] = Counter()
    for cid in range(4000):
        r = run(d, j.enter(d, T0), T0, contact_id=cid)
        again = run(d, j.enter(d, T0), T0 + timedelta(days=5), contact_id=cid)
        assert r.position.variants == again.position.variants  # sticky
        counts[r.position.variants["s"]] += 1
    assert 320 <= counts["holdout"] <= 480
    assert 2500 <= counts["A"] <= 2900 and 800 <= counts["B"] <= 1000


@pytest.mark.parametrize(
    ("tz", "at", "after", "expected_utc"),
    [
        # Helsinki springs forward on 2026-03-29 at 03:00 local: 02:30 does not exist, the first valid minute is 04:00.
        ("Europe/Helsinki", "03:30", datetime(2026, 3, 28, 12, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),
        # Riga falls back on 2026-10-25: 03:30 happens twice; the first one is taken (EEST, UTC+3).
        ("Europe/Riga", "03:30", datetime(2026, 10, 24, 12, 0, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        # New York springs forward on 2026-03-08: 02:30 does not exist; 03:00 EDT is the first valid minute.
        ("America/New_York", "02:30", datetime(2026, 3, 7, 20, 0, tzinfo=UTC), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),
    ],
)
def test_wait_until_across_daylight_saving_changes(tz, at, after, expected_utc):
    got = j.next_local_time(after, at, ZoneInfo(tz))
    assert got == expected_utc


def test_wait_until_keeps_the_local_hour_over_the_change():
    tz = ZoneInfo("Europe/Helsinki")
    before = j.next_local_time(datetime(2026, 3, 27, 12, tzinfo=UTC), "09:00", tz)
    after = j.next_local_time(datetime(2026, 3, 30, 12, tzinfo=UTC), "09:00", tz)
    assert before.astimezone(tz).hour == 9 and after.astimezone(tz).hour == 9
    assert before.hour == 7 and after.hour == 6  # UTC+2 before, UTC+3 after


def test_wait_until_respects_weekdays_in_the_contacts_zone():
    # Friday 2026-11-27 23:30 UTC is already Saturday in Helsinki: the next weekday 09:00 there is Monday.
    got = j.next_local_time(
        datetime(2026, 11, 27, 23, 30, tzinfo=UTC), "09:00", ZoneInfo("Europe/Helsinki"), [1, 2, 3, 4, 5]
    )
    assert got == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("steps", "path", "reason"),
    [
        ({"a": {"type": "send_email", "template": "t", "next": "zz"}}, "steps.a.next", "no step"),
        ({"a": {"type": "end"}, "b": {"type": "end"}}, "steps.b", "unreachable"),
        (
            {
                "a": {"type": "update_contact", "add_tags": ["x"], "next": "b"},
                "b": {"type": "update_contact", "add_tags": ["y"], "next": "a"},
            },
            "steps.a",
            "loop without a wait",
        ),
        ({"a": {"type": "branch", "arms": [{"filter": {}, "next": None}]}}, "steps.a.else", "Field required"),
        ({"a": {"type": "wait", "duration": {"days": 0}}}, "steps.a", "positive duration"),
        ({"a": {"type": "teleport"}}, "steps.a", "does not match any of the expected tags"),
    ],
)
def test_invalid_definitions_name_the_path(steps, path, reason):
    with pytest.raises(j.JourneyError) as err:
        definition(steps)
    assert err.value.path.startswith(path), err.value.path
    assert reason in err.value.reason


def test_mermaid_diagram_names_every_step_and_edge():
    d = definition(
        {
            "a": {"type": "send_email", "template": "welcome", "next": "b"},
            "b": {"type": "branch", "arms": [{"filter": {}, "next": "c"}], "else": None},
            "c": {"type": "end"},
        }
    )
    text = j.to_mermaid(d, {"a": 5})
    assert "Email: welcome · 5" in text and "-->|arm 0|" in text and "-->|else| done" in text


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9), st.floats(min_value=0, max_value=99))
def test_choose_variant_is_a_function_of_the_bucket(contact_id, holdout):
    step = j.Split(
        type="split", variants=(j.Variant(name="A", weight=1), j.Variant(name="B", weight=2)), holdout_percent=holdout
    )
    u = j.bucket(1, "s", contact_id)
    assert 0 <= u < 1
    assert j.choose_variant(step, u) == j.choose_variant(step, j.bucket(1, "s", contact_id))
    assert (j.choose_variant(step, u) == "holdout") == (u < holdout / 100)
