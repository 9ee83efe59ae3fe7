"""The plain-shape parser of Segment calls gives exactly what the pydantic models give (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from suppilo.events.ingest import ItemError, _fast_fields, _model_fields, parse_batch

_good_times = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.isoformat(timespec="milliseconds") + "Z"
    ),
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})?\Z"),
)
_odd = st.one_of(
    st.sampled_from(["", "2024-05-01", "2024-05-01 10:00:00Z", "1714557600", "2024-02-30T10:00:00Z", "x" * 201]),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.text(max_size=205),
)
_text = st.one_of(st.none(), st.text(max_size=200))
_object = st.one_of(st.none(), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))

# A call in the plain shape libraries send (times as RFC 3339 text), with at most one field replaced by anything.
_plain = st.fixed_dictionaries(
    {
        "messageId": _text,
        "anonymousId": st.text(min_size=1, max_size=200),
        "userId": _text,
        "timestamp": _good_times,
        "sentAt": _good_times,
        "context": _object,
        "event": st.text(min_size=1, max_size=200),
        "name": _text,
        "category": _text,
        "properties": _object,
        "traits": _object,
        "groupId": st.text(min_size=1, max_size=200),
        "previousId": st.text(min_size=1, max_size=200),
    }
)


@st.composite
def _calls(draw: st.DrawFn) -> dict:
    raw = draw(_plain)
    field = draw(st.one_of(st.none(), st.sampled_from(sorted(raw))))
    if field is not None:
        raw[field] = draw(st.one_of(st.none(), _odd))
    return {k: v for k, v in raw.items() if v is not None}


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@settings(max_examples=400, deadline=None)
@given(raw=_calls(), kind=st.sampled_from(["track", "page", "screen", "identify", "group", "alias"]))
def test_the_fast_parser_accepts_only_what_pydantic_accepts_and_reads_it_alike(raw: dict, kind: str) -> None:
    fast = _fast_fields(raw, kind)
    try:
        model = _model_fields(raw, kind, "batch[0]")
    except ItemError:
        assert fast is None  # refused calls always take the pydantic path (its messages and paths)
        return
    if fast is None:
        return  # an unusual but valid shape (numbers for strings, other time formats): pydantic reads it
    assert fast.keys() <= model.keys()
    for key, value in fast.items():
        if key in ("timestamp", "originalTimestamp", "sentAt"):
            assert _aware(value) == _aware(model[key]), key
        else:
            assert value == model[key], key


def test_refused_calls_of_a_batch_keep_pydantic_messages_and_paths() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    messages, errors = parse_batch(
        [
            {"type": "track", "anonymousId": "a", "event": "Ok", "timestamp": "2024-05-01T10:00:00Z"},
            {"type": "track", "anonymousId": "a", "event": ""},
            {"type": "page", "anonymousId": "a", "timestamp": "yesterday"},
            {"type": "alias", "previousId": "p"},
            {"type": "track", "anonymousId": "a", "event": "Ok", "properties": [1]},
            {"type": "page", "anonymousId": 17, "timestamp": 1714557600},
        ],
        received_at=now,
        sent_at=None,
        ip=None,
    )
    assert [m.index for m in messages] == [0, 5]
    assert messages[1].anonymous_id == "17"  # numbers are read as strings, as Segment libraries send them
    assert messages[1].occurred_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert [(e["index"], e["path"]) for e in errors] == [
        (1, "batch[1].event"),
        (2, "batch[2].timestamp"),
        (3, "batch[3].userId"),
        (4, "batch[4].properties"),
    ]
    assert "at least 1 character" in errors[0]["message"]
    assert "datetime" in errors[1]["message"]
