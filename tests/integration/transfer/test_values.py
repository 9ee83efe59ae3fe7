"""Cell parsing: the email fast path agrees with normalize_email; money in minor units by currency exponent."""

from __future__ import annotations

import pytest

from suppilo.contacts.normalize import InvalidValue, normalize_email
from suppilo.transfer.values import CellError, fast_normalize_email, parse_country, parse_money

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
