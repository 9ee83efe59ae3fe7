"""Interface languages: gettext catalogues read from the shipped ``.po`` files at startup (no compile step), and
numbers, money and dates formatted with Babel in the user's locale and time zone.

Catalogues live in ``locale/<lang>/LC_MESSAGES/messages.po``; ``pybabel extract``/``update`` maintain them (see
docs/web.md). A message missing from a catalogue falls back to the English text.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_precision
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).parent / "locale"
LANGUAGES: dict[str, str] = {"en": "English", "sv": "Svenska", "fi": "Suomi", "da": "Dansk", "lv": "Latviešu"}
# The Babel locale of each interface language (formats of numbers, money and dates).
LOCALES = {"en": "en_GB", "sv": "sv_SE", "fi": "fi_FI", "da": "da_DK", "lv": "lv_LV"}
DEFAULT_LANGUAGE = "en"


def supported(language: str | None) -> str:
    """``language`` when the interface has it, else English."""
    code = (language or "").split("-")[0].split("_")[0].lower()
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


def negotiate(accept_language: str | None) -> str:
    """The best interface language for an ``Accept-Language`` header."""
    weighted: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        code = tag.split("-")[0].lower()
        if code in LANGUAGES and q > 0:
            weighted.append((-q, i, code))
    return sorted(weighted)[0][2] if weighted else DEFAULT_LANGUAGE


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"


@cache
def translations(language: str) -> NullTranslations:
    """The gettext translations of a language, built in memory from its ``.po`` file (fuzzy entries skipped)."""
    path = catalogue_path(language)
    if language == DEFAULT_LANGUAGE or not path.exists():
        return NullTranslations()
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(fp=buffer)


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class Formatter:
    """Formats values for one language and time zone (templates call it as ``fmt``)."""

    language: str
    timezone: str = "UTC"

    @property
    def locale(self) -> Locale:
        try:
            return Locale.parse(LOCALES.get(self.language, "en_GB"))
        except UnknownLocaleError:
            return Locale.parse("en_GB")

    def number(self, value: float | int | None, digits: int = 0) -> str:
        if value is None:
            return "–"
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=self.locale)

    def percent(self, value: float | None, digits: int = 1) -> str:
        if value is None:
            return "–"
        pattern = str(self.locale.percent_formats[None].pattern).split(";")[0]
        if digits:
            last = pattern.rfind("0")
            pattern = pattern[: last + 1] + "." + "0" * digits + pattern[last + 1 :]
        return format_percent(value, format=pattern, locale=self.locale)

    def ratio(self, value: float | None) -> str:
        """A multiple such as ROI 2.35 → ``2.35×``."""
        if value is None:
            return "–"
        return format_decimal(value, format="#,##0.00", locale=self.locale) + "×"

    def money(self, minor: int | None, currency: str | None) -> str:
        """Integer minor units of ``currency`` as money in this locale."""
        if minor is None or not currency:
            return "–"
        digits = int(get_currency_precision(currency))
        return format_currency(Decimal(int(minor)).scaleb(-digits), currency, locale=self.locale)

    def datetime(self, value: dt.datetime | str | None) -> str:
        if value is None or value == "":
            return "–"
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                return str(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=ZoneInfo("UTC"))
        return str(format_datetime(value, format="medium", tzinfo=_zone(self.timezone), locale=self.locale))

    def date(self, value: dt.date | dt.datetime | str | None) -> str:
        if value is None or value == "":
            return "–"
        if isinstance(value, str):
            try:
                value = dt.date.fromisoformat(value[:10])
            except ValueError:
                return str(value)
        if isinstance(value, dt.datetime):
            value = value.astimezone(_zone(self.timezone)).date()
        return str(format_date(value, format="medium", locale=self.locale))

    def month(self, value: str) -> str:
        """``YYYY-MM`` as a short month name and year."""
        try:
            d = dt.date.fromisoformat(value + "-01")
        except ValueError:
            return value
        return format_date(d, format="MMM yyyy", locale=self.locale)

    def iso(self, value: dt.datetime | None) -> str:
        """Machine-readable time for ``<time datetime=...>``."""
        return value.isoformat() if value is not None else ""
