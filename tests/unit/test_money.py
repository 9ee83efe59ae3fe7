"""Major/minor unit conversion by the currency's exponent, with Decimal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from suppilo.commerce.money import MoneyError, exponent, major_number, normalize_currency, to_major, to_minor


def test_exponents_come_from_iso_4217() -> None:
    assert (exponent("EUR"), exponent("JPY"), exponent("BHD"), exponent("SEK")) == (2, 0, 3, 2)


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        (19.99, "EUR", 1999),
        ("19.99", "EUR", 1999),
        (0.1 + 0.2, "EUR", 30),  # 0.30000000000000004 -> 30, not 29 or 31
        (1.005, "EUR", 101),  # half up on the decimal text, where float maths would give 100
        (1500, "JPY", 1500),
        (19.5, "JPY", 20),
        ("1.234", "BHD", 1234),
        (Decimal("12.345"), "EUR", 1235),
        (0, "EUR", 0),
    ],
)
def test_to_minor(value, currency, minor) -> None:
    assert to_minor(value, currency, "properties.total") == minor


@pytest.mark.parametrize("value", [None, True, "ten", float("nan"), float("inf"), [1]])
def test_to_minor_refuses_non_numbers_with_the_path(value) -> None:
    with pytest.raises(MoneyError) as err:
        to_minor(value, "EUR", "properties.products[2].price")
    assert err.value.field == "properties.products[2].price"


def test_back_to_major() -> None:
    assert to_major(1999, "EUR") == Decimal("19.99")
    assert to_major(1500, "JPY") == Decimal("1500")
    assert major_number(1999, "EUR") == 19.99 and major_number(1500, "JPY") == 1500
    assert to_minor(major_number(123456789, "EUR"), "EUR", "x") == 123456789


def test_currency_codes() -> None:
    assert normalize_currency(" eur ") == "EUR"
    for bad in ("EURO", "ABC", "XXX", 978, None):
        with pytest.raises(MoneyError) as err:
            normalize_currency(bad, "properties.currency")
        assert err.value.field == "properties.currency"
