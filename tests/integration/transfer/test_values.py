"""Cell parsing: the email fast path agrees with normalize_email; money in minor units by currency exponent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

from suppilo.contacts.normalize import InvalidValue, normalize_email, normalize_phone
from suppilo.transfer.values import CellError, fast_normalize_email, fast_normalize_phone, parse_country, parse_money

EMAILS = [
    "a@b.co",
    "A.B@Example.COM",
    "x@localhost.test",
    "x@foo.local",
    "x@a-b.fi",
    "x@xn--mnchen-3ya.de",
    "x@a--b.com",
    "x@foo.invalid",
    "a..b@x.com",
    ".a@x.com",
    "a@x..com",
    "a@-x.com",
    "a@x-.com",
    "a+tag@sub.domain.example.org",
    "x@foo.onion",
    "Ö@x.fi",
    "a@x.123",
    " spaced@x.fi ",
    "a@b",
]


@pytest.mark.parametrize("raw", EMAILS)
def test_email_fast_path_matches_the_validator(raw: str) -> None:
    def outcome(fn):
        try:
            return fn(raw)
        except InvalidValue:
            return "invalid"

    assert outcome(fast_normalize_email) == outcome(normalize_email)


def test_money_and_countries() -> None:
    assert parse_money("12.50", "EUR", "price") == 1250
    assert parse_money("1 234,5", "EUR", "price") == 123450
    assert parse_money("1,234.56", "USD", "price") == 123456
    assert parse_money("1200", "JPY", "price") == 1200
    assert parse_money("1.234", "KWD", "price") == 1234
    with pytest.raises(CellError):
        parse_money("1.5", "JPY", "price")
    assert parse_country("Finland", "country") == "FI" and parse_country("se", "country") == "SE"


def _outcome(fn, *args):
    try:
        return fn(*args)
    except InvalidValue as exc:
        return ("invalid", exc.message)


_LABEL = st.text("abcxyz019-", min_size=1, max_size=12)
_TLDS = [
    "fi",
    "com",
    "Org",
    "local",
    "localhost",
    "test",
    "onion",
    "invalid",
    "example",
    "arpa",
    "x",
    "123",
    "a1",
    "c-m",
]


@settings(max_examples=3000, deadline=None)
@given(
    local=st.lists(st.text("aZ09._%+-!#'~=/ö", min_size=0, max_size=8), min_size=1, max_size=4),
    labels=st.lists(_LABEL, min_size=0, max_size=3),
    tld=st.sampled_from(_TLDS) | st.text("az09-", min_size=0, max_size=6),
    pad=st.sampled_from(["", " ", "\t"]),
)
def test_email_fast_path_matches_the_validator_on_generated_addresses(local, labels, tld, pad) -> None:
    raw = pad + ".".join(local) + "@" + ".".join([*labels, tld]) + pad
    assert _outcome(fast_normalize_email, raw) == _outcome(normalize_email, raw)


@settings(max_examples=500, deadline=None)
@given(raw=st.emails())
def test_email_fast_path_matches_the_validator_on_hypothesis_emails(raw: str) -> None:
    assert _outcome(fast_normalize_email, raw) == _outcome(normalize_email, raw)


@settings(max_examples=3000, deadline=None)
@given(
    code=st.sampled_from(sorted(COUNTRY_CODE_TO_REGION_CODE)) | st.integers(0, 999),
    groups=st.lists(st.tuples(st.sampled_from(["", " ", "  ", "-"]), st.text("0123456789", min_size=1, max_size=5))),
    region=st.sampled_from([None, "FI", "US", "IT", "GB", "DE", "SE", "BR", "AR", "MX", "CN", "RU"]),
)
def test_phone_fast_path_matches_phonenumbers(code: int, groups, region) -> None:
    raw = f"+{code}" + "".join(sep + digits for sep, digits in groups)
    assert _outcome(fast_normalize_phone, raw, region) == _outcome(normalize_phone, raw, region)


@pytest.mark.parametrize(
    "raw",
    [
        "+358 40 1234567",
        "+39 06 1234 5678",
        "+44 20 7946 0958",
        "+1 212 555 0101",
        "+7 495 123 45 67",
        "+800 1234 5678",
    ],
)
def test_phone_fast_path_known_numbers(raw: str) -> None:
    assert fast_normalize_phone(raw, "FI") == normalize_phone(raw, "FI")
