"""Money: ISO 4217 codes and conversions between decimal major units and integer minor units.

Amounts are stored as integers in the currency's minor unit (cents, öre; yen have none). Conversions use
``Decimal`` built from the textual form of the input, never binary floating-point arithmetic.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache

from babel.numbers import get_currency_precision, list_currencies

from suppilo.errors import DomainError

# Codes babel knows that are not money one can be paid in.
_NOT_MONEY = frozenset({"XXX", "XTS"})


class MoneyError(DomainError):
    """A currency code or amount that cannot be used."""


@lru_cache(maxsize=1)
def known_currencies() -> frozenset[str]:
    """Every ISO 4217 code babel has data for (minus the 'no currency' and testing codes)."""
    return frozenset(list_currencies()) - _NOT_MONEY


def is_currency(code: str) -> bool:
    """Whether ``code`` is a known upper-case ISO 4217 code."""
    return code in known_currencies()


def normalize_currency(raw: object, field: str = "currency") -> str:
    """An upper-case ISO 4217 code; raises MoneyError naming ``field`` for anything else."""
    if not isinstance(raw, str):
        raise MoneyError(field, f"currency must be an ISO 4217 code such as 'EUR'; got {raw!r}", "unknown_currency")
    code = raw.strip().upper()
    if not is_currency(code):
        raise MoneyError(field, f"{raw!r} is not a known ISO 4217 currency code", "unknown_currency")
    return code


@lru_cache(maxsize=512)
def exponent(currency: str) -> int:
    """Digits after the decimal point of the currency's minor unit (EUR 2, JPY 0, BHD 3)."""
    if not is_currency(currency):
        raise MoneyError("currency", f"{currency!r} is not a known ISO 4217 currency code", "unknown_currency")
    return int(get_currency_precision(currency))


def to_decimal(value: object, field: str) -> Decimal:
    """A finite Decimal from a JSON number or a numeric string (floats through their shortest repr)."""
    if isinstance(value, bool) or value is None:
        raise MoneyError(field, f"{field} must be a number; got {value!r}", "invalid_amount")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int | float | str):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation as exc:
            raise MoneyError(field, f"{field} must be a number; got {value!r}", "invalid_amount") from exc
    else:
        raise MoneyError(field, f"{field} must be a number; got {value!r}", "invalid_amount")
    if not number.is_finite():
        raise MoneyError(field, f"{field} must be a finite number; got {value!r}", "invalid_amount")
    return number


def to_minor(value: object, currency: str, field: str) -> int:
    """Decimal major units (``19.99``) to integer minor units (``1999`` for EUR, ``20`` for JPY ``19.99``).

    Digits beyond the currency's exponent are rounded half up (shops send e.g. ``19.990000001``).
    """
    number = to_decimal(value, field)
    places = exponent(currency)
    scaled = (number * (Decimal(10) ** places)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(scaled)


def to_major(minor: int, currency: str) -> Decimal:
    """Integer minor units back to an exact Decimal of major units (``1999`` EUR -> ``Decimal('19.99')``)."""
    places = exponent(currency)
    return Decimal(minor).scaleb(-places)


def major_number(minor: int, currency: str) -> int | float:
    """Major units as a JSON number for Segment-style event properties (an int when the exponent is 0)."""
    places = exponent(currency)
    if places == 0:
        return minor
    # The shortest float that prints as the exact decimal; readers convert back with to_minor.
    return float(str(to_major(minor, currency)))
