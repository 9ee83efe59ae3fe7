"""Money conversion through the workspace's date-effective exchange-rate table.

A rate row says: from ``rate_date`` on, one unit of ``base`` is ``rate`` units of ``quote``. A conversion on a day
uses the latest row on or before that day: the direct pair, else the inverse pair, else a cross through the workspace
currency. Amounts are integer minor units; the exponent of each currency (JPY 0, EUR 2, ...) comes from Babel and the
result is rounded half to even. A missing rate raises a ``DomainError`` that names the pair and the day.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

from babel.numbers import get_currency_precision
from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.analytics.models import ExchangeRate
from suppilo.errors import DomainError
from suppilo.workspaces.models import Workspace


def minor_exponent(currency: str) -> int:
    """Digits after the decimal point of a currency's minor unit."""
    return int(get_currency_precision(currency.upper()))


class MissingRate(DomainError):
    """No exchange rate for a pair on or before a day."""

    default_code = "missing_exchange_rate"


class RateBook:
    """A workspace's rates in memory: per (base, quote) the sorted dates and rates."""

    def __init__(self, home: str, rows: Iterable[tuple[date, str, str, Decimal]]) -> None:
        self.home = home.upper()
        pairs: dict[tuple[str, str], list[tuple[date, Decimal]]] = {}
        for d, base, quote, rate in rows:
            pairs.setdefault((base.upper(), quote.upper()), []).append((d, Decimal(rate)))
        self._dates: dict[tuple[str, str], list[date]] = {}
        self._rates: dict[tuple[str, str], list[Decimal]] = {}
        for key, items in pairs.items():
            items.sort()
            self._dates[key] = [d for d, _ in items]
            self._rates[key] = [r for _, r in items]
        self._memo: dict[tuple[str, str, date], Decimal] = {}

    def _pair(self, base: str, quote: str, on: date) -> Decimal | None:
        dates = self._dates.get((base, quote))
        if dates is None:
            return None
        i = bisect.bisect_right(dates, on)
        return self._rates[(base, quote)][i - 1] if i else None

    def _direct(self, base: str, quote: str, on: date) -> Decimal | None:
        r = self._pair(base, quote, on)
        if r is not None:
            return r
        inv = self._pair(quote, base, on)
        return Decimal(1) / inv if inv else None

    def rate(self, from_ccy: str, to_ccy: str, on: date) -> Decimal:
        """Units of ``to_ccy`` per unit of ``from_ccy`` on ``on``."""
        f, t = from_ccy.upper(), to_ccy.upper()
        if f == t:
            return Decimal(1)
        memo = self._memo.get((f, t, on))
        if memo is not None:
            return memo
        r = self._find(f, t, on)
        self._memo[(f, t, on)] = r
        return r

    def _find(self, f: str, t: str, on: date) -> Decimal:
        r = self._direct(f, t, on)
        if r is not None:
            return r
        if self.home not in (f, t):
            a, b = self._direct(f, self.home, on), self._direct(self.home, t, on)
            if a is not None and b is not None:
                return a * b
        raise MissingRate(
            "rates",
            f"no exchange rate {f}->{t} on or before {on.isoformat()}: import one (date,currency,rate_to_{self.home})",
            params={"from": f, "to": t, "date": on.isoformat(), "home": self.home},
        )

    def convert(self, amount_minor: int, from_ccy: str, to_ccy: str, on_date: date) -> int:
        """``amount_minor`` of ``from_ccy`` in minor units of ``to_ccy`` on ``on_date`` (round half to even)."""
        if from_ccy.upper() == to_ccy.upper():
            return int(amount_minor)
        major = Decimal(int(amount_minor)).scaleb(-minor_exponent(from_ccy)) * self.rate(from_ccy, to_ccy, on_date)
        return int(major.scaleb(minor_exponent(to_ccy)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def workspace_currency(session: Session, workspace_id: int) -> str:
    """The workspace's reporting currency."""
    ccy = session.scalar(select(Workspace.currency).where(Workspace.id == workspace_id))
    if ccy is None:
        raise DomainError("workspace_id", "no such workspace", "not_found")
    return ccy.upper()


def rate_book(session: Session, workspace_id: int) -> RateBook:
    """Every rate of the workspace, loaded once for a report."""
    rows = session.execute(
        select(ExchangeRate.rate_date, ExchangeRate.base, ExchangeRate.quote, ExchangeRate.rate).where(
            ExchangeRate.workspace_id == workspace_id
        )
    ).all()
    return RateBook(workspace_currency(session, workspace_id), [(r[0], r[1], r[2], r[3]) for r in rows])


def convert(session: Session, workspace_id: int, amount_minor: int, from_ccy: str, to_ccy: str, on_date: date) -> int:
    """Convert one amount with the workspace's rates (reports load a ``RateBook`` once instead)."""
    return rate_book(session, workspace_id).convert(amount_minor, from_ccy, to_ccy, on_date)
