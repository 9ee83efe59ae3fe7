"""Per-country rules for marketing email: which regime applies and whether a consent state allows mail.

Pure functions: the state and the time come in as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

EU = "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE"
EU_EEA = frozenset(f"{EU} IS LI NO".split())
OPT_OUT_COUNTRIES = frozenset({"US"})
CASL_COUNTRIES = frozenset({"CA"})
LEGAL_BASES = ("consent", "legitimate_interest", "contract", "implied_purchase", "implied_inquiry")
ACTIONS = ("granted", "withdrawn", "objection")
# CASL s.10(10): implied consent lasts two years after a purchase and six months after an inquiry.
CASL_IMPLIED_VALIDITY = {"implied_purchase": timedelta(days=730), "implied_inquiry": timedelta(days=183)}
# Bases that count as a soft opt-in where single opt-in suffices (existing customers, ePrivacy Art. 13(2)).
SOFT_OPT_IN_BASES = frozenset({"legitimate_interest", "contract", "implied_purchase"})


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether marketing mail may go out, and why (a short machine-readable reason)."""

    allowed: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Grant:
    """The latest state of one topic for one contact, as derived from the ledger."""

    action: str
    legal_basis: str
    recorded_at: datetime
    evidence_at: datetime | None
    confirmed_at: datetime | None


def regime(country: str | None, *, eu_double_opt_in: bool = True) -> str:
    """``double_opt_in``, ``opt_in``, ``opt_out`` or ``casl`` for a country (ISO alpha-2)."""
    code = (country or "").upper()
    if code == "DE":
        return "double_opt_in"
    if code in EU_EEA:
        return "double_opt_in" if eu_double_opt_in else "opt_in"
    if code in OPT_OUT_COUNTRIES:
        return "opt_out"
    if code in CASL_COUNTRIES:
        return "casl"
    return "opt_in"


def needs_double_opt_in(country: str | None, *, eu_double_opt_in: bool = True) -> bool:
    """Whether a sign-up from this country must be confirmed before any marketing mail."""
    return regime(country, eu_double_opt_in=eu_double_opt_in) == "double_opt_in"


def decide(rule: str, *, objection: bool, general: Grant | None, specific: Grant | None, now: datetime) -> Decision:
    """Apply ``rule`` to the derived state: an objection or a withdrawal always wins; the topic's own record
    overrides the general ``marketing`` record."""
    if objection:
        return Decision(False, "objection")
    if general is not None and general.action == "withdrawn":
        return Decision(False, "withdrawn")
    latest = specific or general
    if latest is not None and latest.action == "withdrawn":
        return Decision(False, "withdrawn")
    if rule == "opt_out":
        return Decision(True, "opt_out_regime")
    if latest is None:
        return Decision(False, "no_consent")
    basis = latest.legal_basis
    if rule == "casl":
        if basis == "consent":
            return Decision(True, "express_consent")
        validity = CASL_IMPLIED_VALIDITY.get(basis)
        if validity is None:
            return Decision(False, "casl_basis_not_accepted")
        start = latest.evidence_at or latest.recorded_at
        if now >= start + validity:
            return Decision(False, "implied_consent_expired")
        return Decision(True, basis)
    if rule == "double_opt_in":
        if basis != "consent":
            return Decision(False, "double_opt_in_required")
        if latest.confirmed_at is None:
            return Decision(False, "unconfirmed")
        return Decision(True, "confirmed_consent")
    if basis == "consent" or basis in SOFT_OPT_IN_BASES:
        return Decision(True, basis)
    return Decision(False, "no_consent")
