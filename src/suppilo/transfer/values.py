"""Parsing the cells of an imported file: numbers, money, dates, booleans, countries, custom properties."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from babel import Locale
from babel.core import get_global
from babel.numbers import get_currency_precision, list_currencies
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from phonenumbers import phonenumberutil as _pnu
from phonenumbers.phonemetadata import PhoneMetadata

from suppilo.contacts.normalize import InvalidValue, normalize_country, normalize_email, normalize_phone

_CURRENCIES = frozenset(list_currencies())
_SPACES = re.compile(r"[\s\u00a0\u202f']")
_INT = re.compile(r"^[+-]?\d+$")


class CellError(ValueError):
    """A cell that cannot be read. The message (English: the error file, the API) names the column; ``code`` and
    ``params`` (strings: ``column``, ``value`` and what the code needs) let an interface word it in another language.
    """

    def __init__(self, message: str, code: str = "invalid_cell", params: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.params = params or {}


def cell_error(column: str, message: str, code: str, raw: str | None = None, **params: object) -> CellError:
    """A CellError for ``column`` ("<column>: <message>") with ``code`` and the column, the raw value and ``params``."""
    values = {"column": column, **{k: str(v) for k, v in params.items()}}
    if raw is not None:
        values["value"] = raw
    return CellError(f"{column}: {message}", code, values)


def invalid_cell(column: str, exc: InvalidValue, raw: str) -> CellError:
    """A CellError for a value ``contacts.normalize`` refused (its code: invalid_email, invalid_phone, ...)."""
    return CellError(f"{column}: {exc.message}", exc.code, {"column": column, "value": raw})


# --- email fast path ---------------------------------------------------------------------------------------------

# Plain ASCII addresses (the overwhelming majority) are checked by this pattern, and their domain once by the
# full validator; anything else goes through ``normalize_email``. Both give the same result for what the
# pattern accepts: a dot-atom local part of common characters and a host name of letter/digit/hyphen labels.
_SIMPLE_EMAIL = re.compile(
    r"^(?P<local>[a-z0-9_%+\-]+(?:\.[a-z0-9_%+\-]+)*)@(?P<domain>(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})$"
)


_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)


@lru_cache(maxsize=65536)
def _domain_ok(domain: str) -> bool:
    """Whether a host name that matched ``_SIMPLE_EMAIL`` passes email_validator's domain checks."""
    if "--" in domain or len(domain) > 253:
        try:  # punycode labels and other rarities: ask the full validator
            return normalize_email(f"a@{domain}") == f"a@{domain}"
        except InvalidValue:
            return False
    return not any(domain == d or domain.endswith("." + d) for d in _SPECIAL_USE)


def fast_normalize_email(raw: str) -> str:
    """``normalize_email`` with a fast path for plain ASCII addresses; raises InvalidValue."""
    value = raw.strip().lower()
    m = _SIMPLE_EMAIL.match(value)
    if m is not None and len(m.group("local")) <= 64 and len(value) <= 254 and _domain_ok(m.group("domain")):
        return value
    return normalize_email(raw)


# --- phone fast path ---------------------------------------------------------------------------------------------

# A number already written in international form ('+', digits, single spaces) skips phonenumbers' generic front
# end (RFC 3966, extensions, vanity letters, IDD prefixes: none can occur in such a string) and goes straight to
# the steps ``phonenumbers.parse`` takes after it has the country code: the same national prefix stripping, the
# same Italian leading zero, the same possibility check and E.164 formatting. Anything else, and every failure,
# goes through ``normalize_phone`` so errors carry its message.
_INTERNATIONAL = re.compile(r"^\+[1-9](?: ?[0-9]){5,24}$")
_NOT_POSSIBLE_AFTER_STRIP = (
    _pnu.ValidationResult.TOO_SHORT,
    _pnu.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    _pnu.ValidationResult.INVALID_LENGTH,
)


def fast_normalize_phone(raw: str, default_country: str | None) -> str:
    """``normalize_phone`` with a fast path for numbers written as ``+<country code> <digits>``."""
    value = raw.strip()
    if value != raw or _INTERNATIONAL.match(value) is None:
        return normalize_phone(raw, default_country)
    digits = value[1:].replace(" ", "")
    code, national = _pnu._extract_country_code(digits)
    if code == 0:
        return normalize_phone(raw, default_country)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, _pnu.region_code_for_country_code(code))
    if metadata is None or len(national) < _pnu._MIN_LENGTH_FOR_NSN:
        return normalize_phone(raw, default_country)
    _carrier, stripped, _ = _pnu._maybe_strip_national_prefix_carrier_code(national, metadata)
    if _pnu._test_number_length(stripped, metadata) not in _NOT_POSSIBLE_AFTER_STRIP:
        national = stripped
    if not _pnu._MIN_LENGTH_FOR_NSN <= len(national) <= _pnu._MAX_LENGTH_FOR_NSN:
        return normalize_phone(raw, default_country)
    number = phonenumbers.PhoneNumber(country_code=code)
    _pnu._set_italian_leading_zeros_for_phone_number(national, number)
    number.national_number = int(national)
    if not phonenumbers.is_possible_number(number):
        return normalize_phone(raw, default_country)
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


# --- numbers and money -------------------------------------------------------------------------------------------


def parse_decimal(raw: str, column: str) -> Decimal:
    """A decimal number written with '.' or ',' as the decimal separator and spaces, ' or ',' between thousands."""
    value = _SPACES.sub("", raw.strip())
    for symbol in ("€", "$", "£", "kr", "SEK", "EUR", "USD", "NOK", "DKK", "GBP"):
        value = value.replace(symbol, "")
    if "," in value and "." in value:
        if value.rfind(",") > value.rfind("."):
            value = value.replace(".", "").replace(",", ".")
        else:
            value = value.replace(",", "")
    elif value.count(",") == 1:
        value = value.replace(",", ".")
    elif value.count(",") > 1:
        value = value.replace(",", "")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise cell_error(column, f"{raw!r} is not a number", "not_a_number", raw) from None
    if not number.is_finite():
        raise cell_error(column, f"{raw!r} is not a number", "not_a_number", raw)
    return number


def parse_int(raw: str, column: str, *, minimum: int | None = None) -> int:
    """A whole number (``1 200`` and ``3.0`` accepted)."""
    value = raw.strip()
    if _INT.match(value):
        number = int(value)
    else:
        dec = parse_decimal(value, column)
        if dec != dec.to_integral_value():
            raise cell_error(column, f"{raw!r} is not a whole number", "not_a_whole_number", raw)
        number = int(dec)
    if minimum is not None and number < minimum:
        raise cell_error(column, f"{raw!r} must be at least {minimum}", "below_minimum", raw, minimum=minimum)
    return number


def parse_currency(raw: str, column: str) -> str:
    """An ISO 4217 code, upper-case."""
    value = raw.strip().upper()
    if value not in _CURRENCIES:
        raise cell_error(column, f"{raw!r} is not an ISO 4217 currency code", "not_a_currency", raw)
    return value


@lru_cache(maxsize=512)
def currency_exponent(currency: str) -> int:
    """Digits after the decimal point of ``currency`` (EUR 2, JPY 0, KWD 3)."""
    return int(get_currency_precision(currency))


def parse_money(raw: str, currency: str, column: str) -> int:
    """Integer minor units of an amount in ``currency``; more decimals than the currency has is an error."""
    amount = parse_decimal(raw, column)
    exponent = currency_exponent(currency)
    minor = amount.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise cell_error(
            column,
            f"{raw!r} has more than {exponent} decimals for {currency}",
            "too_many_decimals",
            raw,
            digits=exponent,
            currency=currency,
        )
    return int(minor)


def format_money(minor: int | None, currency: str | None) -> str:
    """Minor units as a decimal string (``1250`` EUR -> ``12.50``)."""
    if minor is None:
        return ""
    exponent = currency_exponent(currency) if currency else 2
    if exponent == 0:
        return str(minor)
    return f"{Decimal(minor).scaleb(-exponent):.{exponent}f}"


# --- dates -------------------------------------------------------------------------------------------------------

_DATE_FORMATS = ("%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y", "%Y/%m/%d")
_DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %I:%M %p",
)


def parse_datetime(raw: str, column: str, tz: ZoneInfo) -> datetime:
    """An aware UTC datetime from ISO 8601, ``YYYY-MM-DD HH:MM``, ``DD.MM.YYYY`` or ``M/D/YYYY`` (US) forms.

    A value without an offset is read in the workspace's time zone ``tz``; a bare date is midnight there.
    """
    value = raw.strip()
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        for fmt in _DATETIME_FORMATS + _DATE_FORMATS:
            try:
                parsed = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        raise cell_error(
            column, f"{raw!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS+00:00)", "not_a_datetime", raw
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def parse_date(raw: str, column: str) -> date:
    """A calendar date."""
    value = raw.strip()
    try:
        return date.fromisoformat(value[:10]) if len(value) >= 10 and value[4] == "-" else _strp_date(value)
    except ValueError:
        raise cell_error(column, f"{raw!r} is not a date (use YYYY-MM-DD)", "not_a_date", raw) from None


def _strp_date(value: str) -> date:
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ValueError(value)


_TRUE = frozenset({"true", "yes", "y", "1", "x", "on", "kyllä", "ja"})
_FALSE = frozenset({"false", "no", "n", "0", "off", "ei", "nej", "nei"})


def parse_bool(raw: str, column: str) -> bool:
    """true/false, yes/no, 1/0."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise cell_error(column, f"{raw!r} is not true or false", "not_a_boolean", raw)


# --- places and zones --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    names: dict[str, str] = {}
    zones = get_global("territory_zones")
    for lang in ("en", "fi", "sv", "de", "fr", "es", "da", "nb", "et", "lv", "lt"):
        for code, name in Locale(lang).territories.items():
            if len(code) == 2 and code.isalpha() and code in zones:
                names.setdefault(name.lower(), code)
    names.update({"usa": "US", "united states of america": "US", "uk": "GB", "england": "GB", "great britain": "GB"})
    return names


@lru_cache(maxsize=4096)
def parse_country(raw: str, column: str) -> str:
    """An ISO 3166-1 alpha-2 code from a code or a country name ('Finland', 'Suomi', 'United States')."""
    value = raw.strip()
    if len(value) == 2:
        try:
            return normalize_country(value)
        except InvalidValue:
            pass
    code = _country_names().get(value.lower())
    if code is None:
        raise cell_error(
            column, f"{raw!r} is not a country (ISO 3166-1 alpha-2 code or English name)", "not_a_country", raw
        )
    return code


def parse_timezone(raw: str, column: str) -> str:
    """An IANA time zone name."""
    value = raw.strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise cell_error(column, f"{raw!r} is not an IANA time zone", "not_a_timezone", raw) from None
    return value


# --- custom properties -------------------------------------------------------------------------------------------


def parse_property(raw: str, column: str, type_: str, options: list[str]) -> Any:
    """A custom property value of ``type_`` (string, number, boolean, date, enum, multi_enum), JSON-ready."""
    if type_ == "number":
        number = parse_decimal(raw, column)
        return int(number) if number == number.to_integral_value() and abs(number) < 2**53 else float(number)
    if type_ == "boolean":
        return parse_bool(raw, column)
    if type_ == "date":
        return parse_date(raw, column).isoformat()
    if type_ in ("enum", "multi_enum"):
        by_lower = {o.lower(): o for o in options}
        parts = [raw.strip()] if type_ == "enum" else [p.strip() for p in re.split(r"[;,]", raw) if p.strip()]
        out = []
        for part in parts:
            option = by_lower.get(part.lower())
            if option is None:
                choices = ", ".join(options)
                raise cell_error(column, f"{part!r} is not one of {choices}", "not_an_option", part, options=choices)
            out.append(option)
        return out[0] if type_ == "enum" else out
    return raw.strip()
