"""Normalising emails, phones, domains and the time zone of a country."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from babel.core import get_global
from email_validator import EmailNotValidError, validate_email

from suppilo.errors import DomainError

FREE_MAIL_DOMAINS = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.de",
        "yahoo.fr",
        "yahoo.se",
        "ymail.com",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.de",
        "hotmail.se",
        "hotmail.fi",
        "hotmail.dk",
        "outlook.com",
        "outlook.de",
        "outlook.fi",
        "outlook.dk",
        "live.com",
        "live.se",
        "live.dk",
        "live.fi",
        "msn.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "gmx.de",
        "gmx.net",
        "gmx.com",
        "web.de",
        "t-online.de",
        "mail.com",
        "protonmail.com",
        "proton.me",
        "pm.me",
        "tutanota.com",
        "yandex.com",
        "yandex.ru",
        "mail.ru",
        "inbox.lv",
        "inbox.lt",
        "one.lv",
        "zoho.com",
        "fastmail.com",
        "hey.com",
        "suomi24.fi",
        "luukku.com",
        "kolumbus.fi",
        "telia.com",
        "bredband.net",
        "spray.se",
        "jubii.dk",
        "ofir.dk",
        "mail.dk",
    ]
)


class InvalidValue(DomainError):
    """A value that cannot be normalised; ``field`` names it, the message says why."""


@lru_cache(maxsize=65536)
def normalize_email(raw: str) -> str:
    """Lower-cased, IDN-to-ASCII, validated address (no DNS lookup); raises InvalidValue."""
    value = raw.strip()
    if "\r" in value or "\n" in value:
        raise InvalidValue("email", "an email address cannot contain line breaks", code="invalid_email")
    try:
        result = validate_email(value, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InvalidValue(
            "email", f"{raw!r} is not a valid email address: {exc}", code="invalid_email", params={"value": raw}
        ) from exc
    local = result.local_part
    domain = result.ascii_domain.lower()
    # The local part is case-sensitive by the RFC, but every large provider treats it case-insensitively
    # and users type it both ways; folding it is what CRMs do to avoid duplicate contacts.
    return f"{local.lower()}@{domain}"


def email_domain(email: str) -> str:
    """The domain part of a normalised address."""
    return email.rsplit("@", 1)[1]


def is_free_mail(domain: str) -> bool:
    """Whether ``domain`` is a consumer mailbox provider (contacts are then not linked to a company)."""
    return domain in FREE_MAIL_DOMAINS


def normalize_phone(raw: str, default_country: str | None) -> str:
    """E.164 form of ``raw``, read in ``default_country`` when it has no international prefix."""
    try:
        number = phonenumbers.parse(raw, (default_country or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue(
            "phone", f"{raw!r} is not a phone number: {exc}", code="invalid_phone", params={"value": raw}
        ) from exc
    if not phonenumbers.is_possible_number(number):
        raise InvalidValue(
            "phone", f"{raw!r} is not a possible phone number", code="invalid_phone", params={"value": raw}
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_domain(raw: str) -> str:
    """A bare, lower-case, ASCII (IDNA) host name from a domain or URL."""
    value = raw.strip().lower()
    for prefix in ("https://", "http://", "//"):
        if value.startswith(prefix):
            value = value[len(prefix) :]
    value = value.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0].split(":", 1)[0].rstrip(".")
    if value.startswith("www."):
        value = value[4:]
    if "@" in value:
        value = value.rsplit("@", 1)[1]
    try:
        ascii_value = value.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidValue(
            "domain", f"{raw!r} is not a valid domain name", code="invalid_domain", params={"value": raw}
        ) from exc
    labels = ascii_value.split(".")
    if len(labels) < 2 or any(not label or len(label) > 63 for label in labels) or len(ascii_value) > 253:
        raise InvalidValue(
            "domain", f"{raw!r} is not a valid domain name", code="invalid_domain", params={"value": raw}
        )
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    if any(set(label) - allowed or label.startswith("-") or label.endswith("-") for label in labels):
        raise InvalidValue(
            "domain", f"{raw!r} is not a valid domain name", code="invalid_domain", params={"value": raw}
        )
    return ascii_value


# Countries spanning several zones: the zone where most of the population lives (Babel lists them
# alphabetically, which would put every American in Adak).
MAIN_ZONE = {
    "US": "America/New_York",
    "CA": "America/Toronto",
    "AU": "Australia/Sydney",
    "RU": "Europe/Moscow",
    "BR": "America/Sao_Paulo",
    "MX": "America/Mexico_City",
    "ES": "Europe/Madrid",
    "PT": "Europe/Lisbon",
    "ID": "Asia/Jakarta",
    "KZ": "Asia/Almaty",
    "CL": "America/Santiago",
    "AR": "America/Argentina/Buenos_Aires",
    "UA": "Europe/Kyiv",
    "DE": "Europe/Berlin",
    "NZ": "Pacific/Auckland",
    "CN": "Asia/Shanghai",
}


@lru_cache(maxsize=512)
def timezone_for_country(country: str | None) -> str | None:
    """The main IANA time zone of a country, or None when unknown."""
    if not country:
        return None
    code = country.upper()
    if code in MAIN_ZONE:
        return MAIN_ZONE[code]
    zones = get_global("territory_zones").get(code)
    return zones[0] if zones else None


def normalize_country(raw: str) -> str:
    """An ISO 3166-1 alpha-2 code, upper-case; raises InvalidValue for unknown codes."""
    value = raw.strip().upper()
    if len(value) != 2 or value not in get_global("territory_zones"):
        raise InvalidValue(
            "country",
            f"{raw!r} is not an ISO 3166-1 alpha-2 country code",
            code="invalid_country",
            params={"value": raw},
        )
    return value


def normalize_language(raw: str) -> str:
    """A lower-case language code such as ``fi`` or ``sv`` (region dropped)."""
    value = raw.strip().replace("_", "-").split("-", 1)[0].lower()
    if not (2 <= len(value) <= 3 and value.isalpha()):
        raise InvalidValue(
            "language", f"{raw!r} is not a language code", code="invalid_language", params={"value": raw}
        )
    return value
