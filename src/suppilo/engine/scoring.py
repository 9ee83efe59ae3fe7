"""Scoring math: ideal-customer-profile fit, engagement with exponential decay, and the predictive model.

Pure functions of their arguments (no database, no clock: ``now`` is passed in).

**Fit.** An ICP is a set of weighted criteria (industries, employee range, revenue range in one currency, countries
or named regions, job-title keywords, seniority keywords, pain-point tags, budget). Each criterion is matched or
not; its points are its weight when matched and 0 otherwise; the score is ``100 × points / sum of weights``.
**Missing data is not a match**: a contact whose company has no employee count gets 0 points for the employee
criterion and the explanation says "employees unknown". Grades: A ≥ 80, B ≥ 60, C ≥ 40, D below (an ICP can set
its own thresholds with ``grades``).

**Engagement.** Rules give points to events (by name and/or kind, optionally with property filters, optionally
capped at N events per rule per period). Every point decays by half each ``half_life``: an event worth 10 points
30 days ago with a 30-day half-life is worth 5 now. The score is the sum of decayed points of every rule that
matches every event (an event can match several rules). Events after ``now`` do not count. Because decay is
exponential, a stored score and its time (``as_of``) can be brought forward without rescanning history:
``score(now) = score(as_of) × 2^(−(now − as_of) / half_life)`` — see ``decayed`` and ``add_points``.

**Filters on a decaying score.** ``decay_key`` turns (score, as_of) into ``log2|score| + as_of / half_life``
(seconds), which does not change with time; ``|score(now)| ≥ v`` is then ``key ≥ log2 v + now / half_life``, a
comparison the database can make with a plain index-friendly expression and no exponentials (see
``decayed_matches``, used by both the SQL compiler and the in-memory evaluator).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from suppilo.engine.filter_eval import event_property_matches
from suppilo.engine.filters import (
    EVENT_WHERE_OPS,
    EventPropertyFilter,
    FilterError,
    _Parser,
    decay_key,
    decayed_compare,
    decayed_threshold,
    epoch_seconds,
)

GRADES = ("A", "B", "C", "D")
DEFAULT_GRADE_BANDS: tuple[tuple[str, float], ...] = (("A", 80.0), ("B", 60.0), ("C", 40.0))
MAX_WEIGHT = 1000.0
MAX_POINTS = 10_000.0
MAX_LIST = 500
# Engagement older than this many half-lives (< 0.1 % of its points) is left out of a full recomputation.
HORIZON_HALF_LIVES = 10
MIN_HALF_LIFE = timedelta(hours=1)
MAX_HALF_LIFE = timedelta(days=3650)

_EU = frozenset(
    "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE".split()  # noqa: SIM905
)
REGIONS: dict[str, frozenset[str]] = {
    "nordics": frozenset({"FI", "SE", "NO", "DK", "IS"}),
    "baltics": frozenset({"EE", "LV", "LT"}),
    "dach": frozenset({"DE", "AT", "CH"}),
    "benelux": frozenset({"BE", "NL", "LU"}),
    "uk_ireland": frozenset({"GB", "IE"}),
    "eu": _EU,
    "eea": _EU | {"IS", "LI", "NO"},
    "north_america": frozenset({"US", "CA", "MX"}),
    "anz": frozenset({"AU", "NZ"}),
    "latam": frozenset({"AR", "BO", "BR", "CL", "CO", "CR", "EC", "GT", "MX", "PA", "PE", "PY", "UY", "VE"}),
    "apac": frozenset({"AU", "NZ", "JP", "KR", "CN", "HK", "TW", "SG", "MY", "TH", "ID", "PH", "VN", "IN"}),
}


class ScoringError(ValueError):
    """An invalid scoring definition: ``path`` names the bad field (``employees.min``), ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or '<root>'}: {reason}")
        self.path = path
        self.reason = reason


def _pydantic_error(exc: ValidationError, prefix: str = "") -> ScoringError:
    err = exc.errors()[0]
    path = prefix
    for part in err["loc"]:
        path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else str(part))
    msg = str(err["msg"]).removeprefix("Value error, ")
    return ScoringError(path, msg)


# --- ICP definition ------------------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Weight = Field(default=10.0, ge=0.0, le=MAX_WEIGHT, allow_inf_nan=False)
Currency = Field(pattern=r"^[A-Z]{3}$")


class IndustriesCriterion(_Model):
    """The company's industry is one of ``values`` (letter case and surrounding spaces ignored)."""

    values: tuple[str, ...] = Field(min_length=1, max_length=MAX_LIST)
    weight: float = Weight


class EmployeesCriterion(_Model):
    """The company has ``min`` ≤ employees ≤ ``max`` (either bound may be left out)."""

    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)
    weight: float = Weight

    @model_validator(mode="after")
    def _bounds(self) -> EmployeesCriterion:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not be above max")
        return self


class RevenueCriterion(_Model):
    """The company's annual revenue (minor units of ``currency``) is within [min_minor, max_minor]."""

    currency: str = Currency
    min_minor: int | None = Field(default=None, ge=0)
    max_minor: int | None = Field(default=None, ge=0)
    weight: float = Weight

    @model_validator(mode="after")
    def _bounds(self) -> RevenueCriterion:
        if self.min_minor is None and self.max_minor is None:
            raise ValueError("give min_minor, max_minor or both")
        if self.min_minor is not None and self.max_minor is not None and self.min_minor > self.max_minor:
            raise ValueError("min_minor must not be above max_minor")
        return self


class LocationCriterion(_Model):
    """The contact's country (or else its company's) is one of ``countries`` or in one of the named ``regions``."""

    countries: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    weight: float = Weight

    @model_validator(mode="after")
    def _some(self) -> LocationCriterion:
        if not self.countries and not self.regions:
            raise ValueError("give countries, regions or both")
        for c in self.countries:
            if not re.fullmatch(r"[A-Z]{2}", c):
                raise ValueError(f"{c!r} is not an ISO 3166 country code such as FI")
        for r in self.regions:
            if r not in REGIONS:
                raise ValueError(f"unknown region {r!r}; one of {', '.join(REGIONS)}")
        return self

    def country_set(self) -> frozenset[str]:
        """Every accepted country code."""
        out = set(self.countries)
        for r in self.regions:
            out |= REGIONS[r]
        return frozenset(out)


class KeywordsCriterion(_Model):
    """The job title contains one of ``keywords`` as whole words (letter case ignored)."""

    keywords: tuple[str, ...] = Field(min_length=1, max_length=MAX_LIST)
    weight: float = Weight


class PainPointsCriterion(_Model):
    """The contact has at least one of ``tags`` (letter case ignored)."""

    tags: tuple[str, ...] = Field(min_length=1, max_length=MAX_LIST)
    weight: float = Weight


class BudgetCriterion(_Model):
    """The budget the contact (or its company) stated in the number property ``property`` is ≥ ``min_minor``.

    The amount is read in minor units; its currency from the property ``<property>_currency``, else ``currency``.
    """

    currency: str = Currency
    min_minor: int = Field(ge=0)
    property: str = Field(default="budget_minor", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$")
    weight: float = Weight


class GradeBands(_Model):
    """The lowest score of grades A, B and C (D is everything below C)."""

    A: float = Field(default=80.0, ge=0.0, le=100.0, allow_inf_nan=False)
    B: float = Field(default=60.0, ge=0.0, le=100.0, allow_inf_nan=False)
    C: float = Field(default=40.0, ge=0.0, le=100.0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _order(self) -> GradeBands:
        if not self.A >= self.B >= self.C:
            raise ValueError("thresholds must satisfy A ≥ B ≥ C")
        return self


class IcpDefinition(_Model):
    """An ideal customer profile: the criteria that are given, each with its weight."""

    industries: IndustriesCriterion | None = None
    employees: EmployeesCriterion | None = None
    revenue: RevenueCriterion | None = None
    location: LocationCriterion | None = None
    job_titles: KeywordsCriterion | None = None
    seniority: KeywordsCriterion | None = None
    pain_points: PainPointsCriterion | None = None
    budget: BudgetCriterion | None = None
    grades: GradeBands = GradeBands()

    def criteria(self) -> list[tuple[str, Any]]:
        """The given criteria with their names, in a fixed order."""
        names = ("industries", "employees", "revenue", "location", "job_titles", "seniority", "pain_points", "budget")
        return [(n, getattr(self, n)) for n in names if getattr(self, n) is not None]


def parse_icp(data: object) -> IcpDefinition:
    """Validate an ICP definition (JSON); ScoringError names the bad field."""
    if not isinstance(data, Mapping):
        raise ScoringError("", "an ICP definition must be an object")
    try:
        icp = IcpDefinition.model_validate(dict(data))
    except ValidationError as exc:
        raise _pydantic_error(exc) from None
    criteria = icp.criteria()
    if not criteria:
        raise ScoringError("", "give at least one criterion")
    if sum(c.weight for _, c in criteria) <= 0:
        raise ScoringError(f"{criteria[0][0]}.weight", "the weights of the criteria must not all be 0")
    return icp


def icp_to_json(icp: IcpDefinition) -> dict[str, Any]:
    """The JSON form (``parse_icp`` reads it back equal)."""
    return icp.model_dump(mode="json", exclude_none=True)


# --- fit -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FitFacts:
    """What fit scoring reads about a contact (with its company's data) or a company alone."""

    industry: str | None = None
    employees: int | None = None
    revenue_minor: int | None = None
    revenue_currency: str | None = None
    country: str | None = None
    job_title: str | None = None
    tags: frozenset[str] = frozenset()
    budget_minor: int | None = None
    budget_currency: str | None = None


@dataclass(frozen=True, slots=True)
class CriterionResult:
    """One line of a fit explanation."""

    criterion: str
    matched: bool
    points: float
    max_points: float
    detail: str


@dataclass(frozen=True, slots=True)
class FitResult:
    """A fit score 0–100, its grade and one explanation line per criterion."""

    score: float
    grade: str
    explanation: list[CriterionResult]


# amount_minor, from currency, to currency → amount in the target currency (None: no rate known)
Convert = Callable[[int, str, str], int | None]


def grade_for(score: float, bands: GradeBands | None = None) -> str:
    """The grade of a 0–100 score."""
    b = bands or GradeBands()
    if score >= b.A:
        return "A"
    if score >= b.B:
        return "B"
    if score >= b.C:
        return "C"
    return "D"


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _keyword_hit(title: str, keywords: Sequence[str]) -> str | None:
    t = _norm(title)
    for kw in keywords:
        k = _norm(kw)
        if k and re.search(r"(?<!\w)" + re.escape(k) + r"(?!\w)", t):
            return kw
    return None


def _money(minor: int, currency: str) -> str:
    return f"{minor / 100:,.2f} {currency}"


def _in_currency(amount: int, currency: str | None, target: str, convert: Convert | None) -> tuple[int | None, str]:
    if currency is None or currency == target:
        return amount, ""
    converted = convert(amount, currency, target) if convert is not None else None
    if converted is None:
        return None, f"in {currency}, and no {currency}→{target} rate is known"
    return converted, f" (converted from {_money(amount, currency)})"


def _bounds_text(lo: int | None, hi: int | None, fmt: Callable[[int], str]) -> str:
    if lo is not None and hi is not None:
        return f"{fmt(lo)}–{fmt(hi)}"
    if lo is not None:
        return f"at least {fmt(lo)}"
    assert hi is not None
    return f"at most {fmt(hi)}"


def _within(x: int, lo: int | None, hi: int | None) -> bool:
    return (lo is None or x >= lo) and (hi is None or x <= hi)


def _criterion(name: str, c: Any, facts: FitFacts, convert: Convert | None) -> tuple[bool, str]:
    if isinstance(c, IndustriesCriterion):
        if not facts.industry:
            return False, "industry unknown"
        ok = _norm(facts.industry) in {_norm(v) for v in c.values}
        return ok, f"industry {facts.industry!r} is {'' if ok else 'not '}one of {', '.join(c.values)}"
    if isinstance(c, EmployeesCriterion):
        want = _bounds_text(c.min, c.max, str)
        if facts.employees is None:
            return False, "employees unknown"
        ok = _within(facts.employees, c.min, c.max)
        return ok, f"{facts.employees} employees ({'within' if ok else 'outside'} {want})"
    if isinstance(c, RevenueCriterion):
        want = _bounds_text(c.min_minor, c.max_minor, lambda m: _money(m, c.currency))
        if facts.revenue_minor is None:
            return False, "annual revenue unknown"
        amount, note = _in_currency(facts.revenue_minor, facts.revenue_currency, c.currency, convert)
        if amount is None:
            return False, f"annual revenue {_money(facts.revenue_minor, facts.revenue_currency or '')} is {note}"
        ok = _within(amount, c.min_minor, c.max_minor)
        return ok, f"annual revenue {_money(amount, c.currency)}{note} ({'within' if ok else 'outside'} {want})"
    if isinstance(c, LocationCriterion):
        if not facts.country:
            return False, "country unknown"
        country = facts.country.upper()
        ok = country in c.country_set()
        wanted = ", ".join([*c.countries, *c.regions])
        return ok, f"country {country} is {'' if ok else 'not '}in {wanted}"
    if isinstance(c, KeywordsCriterion):
        label = "job title" if name == "job_titles" else "seniority in the job title"
        if not facts.job_title:
            return False, "job title unknown"
        hit = _keyword_hit(facts.job_title, c.keywords)
        if hit is None:
            return False, f"{label}: {facts.job_title!r} has none of {', '.join(c.keywords)}"
        return True, f"{label}: {facts.job_title!r} has {hit!r}"
    if isinstance(c, PainPointsCriterion):
        have = {t.casefold(): t for t in facts.tags}
        hits = [t for t in c.tags if t.casefold() in have]
        if not hits:
            return False, f"none of the tags {', '.join(c.tags)}"
        return True, f"tagged {', '.join(hits)}"
    if isinstance(c, BudgetCriterion):
        want = f"at least {_money(c.min_minor, c.currency)}"
        if facts.budget_minor is None:
            return False, "budget unknown"
        amount, note = _in_currency(facts.budget_minor, facts.budget_currency, c.currency, convert)
        if amount is None:
            return False, f"budget {_money(facts.budget_minor, facts.budget_currency or '')} is {note}"
        ok = amount >= c.min_minor
        return ok, f"budget {_money(amount, c.currency)}{note} ({'meets' if ok else 'below'} {want})"
    raise TypeError(f"unknown criterion {name}")  # pragma: no cover - the definition is closed


def fit(icp: IcpDefinition, facts: FitFacts, convert: Convert | None = None) -> FitResult:
    """Score ``facts`` against ``icp``: 0–100 (two decimals), a grade and one explanation line per criterion."""
    lines: list[CriterionResult] = []
    total = 0.0
    got = 0.0
    for name, c in icp.criteria():
        matched, detail = _criterion(name, c, facts, convert)
        points = c.weight if matched else 0.0
        lines.append(CriterionResult(name, matched, points, c.weight, detail))
        total += c.weight
        got += points
    score = round(100.0 * got / total, 2) if total > 0 else 0.0
    return FitResult(score, grade_for(score, icp.grades), lines)


def best_fit(
    icps: Iterable[tuple[int, IcpDefinition]], facts: FitFacts, convert: Convert | None = None
) -> tuple[int, FitResult] | None:
    """The highest fit over several ICPs (ties: the first); None without ICPs."""
    best: tuple[int, FitResult] | None = None
    for icp_id, icp in icps:
        r = fit(icp, facts, convert)
        if best is None or r.score > best[1].score:
            best = (icp_id, r)
    return best


def _criterion_key(c: Any) -> Callable[[FitFacts], Any]:
    """The facts one criterion reads (its result is a function of them)."""
    if isinstance(c, IndustriesCriterion):
        return lambda f: f.industry
    if isinstance(c, EmployeesCriterion):
        return lambda f: f.employees
    if isinstance(c, RevenueCriterion):
        return lambda f: (f.revenue_minor, f.revenue_currency)
    if isinstance(c, LocationCriterion):
        return lambda f: f.country
    if isinstance(c, KeywordsCriterion):
        return lambda f: f.job_title
    if isinstance(c, PainPointsCriterion):
        return lambda f: f.tags
    return lambda f: (f.budget_minor, f.budget_currency)


class FitScorer:
    """``best_fit`` for many contacts (results equal to ``best_fit``): each criterion's result is kept per distinct
    value of the facts it reads, and ``key(facts)`` gives those values for every criterion, so callers can keep
    anything derived from the result per key."""

    def __init__(self, icps: Sequence[tuple[int, IcpDefinition]], convert: Convert | None = None) -> None:
        self._icps = [(icp_id, icp, icp.criteria()) for icp_id, icp in icps]
        self._convert = convert
        self._getters = [_criterion_key(c) for _, _, criteria in self._icps for _, c in criteria]
        self._memo: list[dict[Any, CriterionResult]] = [{} for _ in self._getters]

    def key(self, facts: FitFacts) -> tuple[Any, ...]:
        """What the result depends on: equal keys, equal results."""
        return tuple([g(facts) for g in self._getters])

    def __call__(self, facts: FitFacts) -> tuple[int, FitResult] | None:
        best: tuple[int, FitResult] | None = None
        i = 0
        for icp_id, icp, criteria in self._icps:
            lines: list[CriterionResult] = []
            total = 0.0
            got = 0.0
            for name, c in criteria:
                memo = self._memo[i]
                key = self._getters[i](facts)
                i += 1
                line = memo.get(key)
                if line is None:
                    matched, detail = _criterion(name, c, facts, self._convert)
                    line = CriterionResult(name, matched, c.weight if matched else 0.0, c.weight, detail)
                    if len(memo) < 100_000:
                        memo[key] = line
                lines.append(line)
                total += c.weight
                got += line.points
            score = round(100.0 * got / total, 2) if total > 0 else 0.0
            if best is None or score > best[1].score:
                best = (icp_id, FitResult(score, grade_for(score, icp.grades), lines))
        return best


# --- engagement ----------------------------------------------------------------------------------------------------


class EngagementRule(_Model):
    """``points`` for each event named ``event`` and/or of kind ``kind`` whose properties pass every ``where``.

    ``max_per_period``: at most this many events of the rule count per ``period_days`` (UTC days from the epoch).
    """

    key: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,63}$")
    points: float = Field(ge=-MAX_POINTS, le=MAX_POINTS, allow_inf_nan=False)
    event: str | None = Field(default=None, min_length=1, max_length=200)
    kind: Literal["track", "page", "screen", "identify", "group", "alias"] | None = None
    where: tuple[EventPropertyFilter, ...] = Field(default=(), max_length=10)
    max_per_period: int | None = Field(default=None, ge=1, le=100_000)
    period_days: int = Field(default=1, ge=1, le=365)

    @model_validator(mode="after")
    def _target(self) -> EngagementRule:
        if self.event is None and self.kind is None:
            raise ValueError("give event, kind or both")
        if self.points == 0:
            raise ValueError("points must not be 0")
        return self

    def matches(self, name: str, kind: str, properties: Mapping[str, Any]) -> bool:
        """Whether an event is one this rule scores."""
        if self.event is not None and name != self.event:
            return False
        if self.kind is not None and kind != self.kind:
            return False
        return all(event_property_matches(f, properties) for f in self.where)


class StageThreshold(_Model):
    """Move a contact in one of ``from_stages`` to ``to_stage`` once its engagement score reaches ``min_score``
    (and, with ``min_fit_grade``, its fit grade is that good or better: an MQL rule)."""

    min_score: float = Field(gt=0, le=1e9, allow_inf_nan=False)
    from_stages: tuple[str, ...] = Field(min_length=1, max_length=50)
    to_stage: str = Field(min_length=1, max_length=32)
    min_fit_grade: Literal["A", "B", "C", "D"] | None = None

    def holds(self, engagement_now: float, fit_grade: str | None) -> bool:
        """Whether a contact with this engagement (now) and fit grade passes the threshold."""
        if engagement_now < self.min_score:
            return False
        return self.min_fit_grade is None or (fit_grade is not None and fit_grade <= self.min_fit_grade)

    @model_validator(mode="after")
    def _distinct(self) -> StageThreshold:
        if self.to_stage in self.from_stages:
            raise ValueError("to_stage must not be one of from_stages")
        return self


class EngagementConfig(_Model):
    """A workspace's engagement rules, the half-life of their points and the stage thresholds."""

    half_life_days: float = Field(default=30.0, allow_inf_nan=False)
    rules: tuple[EngagementRule, ...] = Field(max_length=200)
    stage_thresholds: tuple[StageThreshold, ...] = Field(default=(), max_length=20)

    @model_validator(mode="after")
    def _check(self) -> EngagementConfig:
        hl = timedelta(days=self.half_life_days)
        if not MIN_HALF_LIFE <= hl <= MAX_HALF_LIFE:
            raise ValueError("half_life_days must be from 1/24 (one hour) to 3650")
        keys = [r.key for r in self.rules]
        if len(set(keys)) != len(keys):
            raise ValueError("rule keys must be unique")
        return self

    @property
    def half_life(self) -> timedelta:
        """The half-life as a duration."""
        return timedelta(days=self.half_life_days)


DEFAULT_ENGAGEMENT: dict[str, Any] = {
    "half_life_days": 30,
    "rules": [
        {"key": "page_view", "kind": "page", "points": 1, "max_per_period": 10},
        {
            "key": "careers_page",
            "kind": "page",
            "where": [{"path": "path", "op": "contains", "value": "career"}],
            "points": -5,
            "max_per_period": 1,
        },
        {"key": "form_submit", "event": "Form Submitted", "points": 10},
        {
            "key": "email_open",
            "event": "email_opened",
            "where": [{"path": "machine", "op": "eq", "value": False}],
            "points": 2,
            "max_per_period": 3,
        },
        {
            "key": "email_click",
            "event": "email_clicked",
            "where": [{"path": "machine", "op": "eq", "value": False}],
            "points": 5,
            "max_per_period": 5,
        },
        {"key": "order", "event": "Order Completed", "points": 20},
        {"key": "unsubscribe", "event": "email_unsubscribed", "points": -15},
    ],
    "stage_thresholds": [],
}


def parse_engagement(data: object) -> EngagementConfig:
    """Validate engagement rules (JSON); ScoringError names the bad field (``rules[2].points``)."""
    if not isinstance(data, Mapping):
        raise ScoringError("", "engagement settings must be an object")
    try:
        config = EngagementConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise _pydantic_error(exc) from None
    parser = _Parser({}, {})
    for i, rule in enumerate(config.rules):
        for j, w in enumerate(rule.where):
            if w.op not in EVENT_WHERE_OPS:
                raise ScoringError(f"rules[{i}].where[{j}].op", f"one of {', '.join(sorted(EVENT_WHERE_OPS))}")
            try:
                parser.event_where(w, f"rules[{i}].where[{j}]")
            except FilterError as exc:
                raise ScoringError(exc.path, exc.reason) from None
    return config


def engagement_to_json(config: EngagementConfig) -> dict[str, Any]:
    """The JSON form (``parse_engagement`` reads it back equal)."""
    return config.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True, slots=True)
class ScoredEvent:
    """One event as engagement scoring sees it."""

    name: str
    kind: str
    at: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)
    id: int = 0


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one rule adds to an engagement score now."""

    rule: str
    events: int
    points: float
    points_now: float


@dataclass(frozen=True, slots=True)
class EngagementResult:
    """An engagement score at ``as_of`` and the rules that make it, largest absolute contribution first."""

    score: float
    as_of: datetime
    contributions: list[Contribution]
    state: dict[str, dict[str, int]]


def decay_factor(elapsed: timedelta, half_life: timedelta) -> float:
    """2^(−elapsed / half_life): 1 at 0, ½ after one half-life (elapsed ≥ 0)."""
    return float(2.0 ** (-(elapsed / half_life)))


def decayed(score: float, last_at: datetime, now: datetime, half_life: timedelta) -> float:
    """A score stored at ``last_at`` as it stands at ``now`` (``now`` before ``last_at``: unchanged)."""
    if now <= last_at:
        return score
    return score * decay_factor(now - last_at, half_life)


def add_points(
    score: float, as_of: datetime | None, points: float, at: datetime, half_life: timedelta
) -> tuple[float, datetime]:
    """A stored score (``as_of``; None: none yet) plus ``points`` earned at ``at``; the new (score, as_of).

    An event later than ``as_of`` moves the score forward to ``at``; an earlier one (out of order) adds its
    points already decayed to ``as_of``. Either way the result equals a full recomputation.
    """
    if as_of is None:
        return points, at
    if at >= as_of:
        return decayed(score, as_of, at, half_life) + points, at
    return score + points * decay_factor(as_of - at, half_life), as_of


def _period(at: datetime, days: int) -> int:
    return math.floor(at.timestamp() / (86_400 * days))


def _counts_prune(state: dict[str, dict[str, int]], rules: Sequence[EngagementRule], before: datetime) -> None:
    for rule in rules:
        periods = state.get(rule.key)
        if not periods:
            continue
        oldest = _period(before, rule.period_days)
        for p in [p for p in periods if int(p) < oldest]:
            del periods[p]
        if not periods:
            del state[rule.key]


def apply_event(
    score: float,
    as_of: datetime | None,
    state: dict[str, dict[str, int]],
    event: ScoredEvent,
    config: EngagementConfig,
) -> tuple[float, datetime | None, dict[str, dict[str, int]], list[tuple[str, float]]]:
    """Add one event to a stored score: the new (score, as_of, cap state, [(rule, points)]).

    ``state`` counts the events each capped rule has counted per period (periods older than the horizon are
    dropped). Applying events in time order gives exactly ``engagement`` over the same events.
    """
    state = {k: dict(v) for k, v in state.items()}
    applied: list[tuple[str, float]] = []
    for rule in config.rules:
        if not rule.matches(event.name, event.kind, event.properties):
            continue
        if rule.max_per_period is not None:
            periods = state.setdefault(rule.key, {})
            p = str(_period(event.at, rule.period_days))
            if periods.get(p, 0) >= rule.max_per_period:
                continue
            periods[p] = periods.get(p, 0) + 1
        score, as_of = add_points(score, as_of, rule.points, event.at, config.half_life)
        applied.append((rule.key, rule.points))
    if as_of is not None:
        _counts_prune(state, config.rules, as_of - config.half_life * HORIZON_HALF_LIVES)
    return score, as_of, state, applied


def horizon_start(now: datetime, config: EngagementConfig) -> datetime:
    """The oldest event time a full recomputation at ``now`` reads."""
    return now - config.half_life * HORIZON_HALF_LIVES


def engagement(
    events: Iterable[ScoredEvent], config: EngagementConfig, now: datetime, top: int = 5
) -> EngagementResult:
    """The engagement score at ``now`` of these events (those after ``now`` left out), with the top contributions.

    Capped rules count the earliest events of each period (by time, then id).
    """
    ordered = sorted((e for e in events if e.at <= now), key=lambda e: (e.at, e.id))
    counts: dict[str, dict[int, int]] = {}
    per_rule: dict[str, list[float]] = {}
    total = 0.0
    hl = config.half_life
    for e in ordered:
        factor = decay_factor(now - e.at, hl)
        for rule in config.rules:
            if not rule.matches(e.name, e.kind, e.properties):
                continue
            if rule.max_per_period is not None:
                periods = counts.setdefault(rule.key, {})
                p = _period(e.at, rule.period_days)
                if periods.get(p, 0) >= rule.max_per_period:
                    continue
                periods[p] = periods.get(p, 0) + 1
            acc = per_rule.setdefault(rule.key, [0.0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += rule.points
            acc[2] += rule.points * factor
            total += rule.points * factor
    contributions = sorted(
        (Contribution(k, int(v[0]), v[1], v[2]) for k, v in per_rule.items()),
        key=lambda c: (-abs(c.points_now), c.rule),
    )
    state = {k: {str(p): n for p, n in v.items()} for k, v in counts.items()}
    _counts_prune(state, config.rules, now - hl * HORIZON_HALF_LIVES)
    return EngagementResult(total, now, contributions[:top], state)


def engagement_matched(
    events: Iterable[tuple[int, int, Sequence[int]]],
    config: EngagementConfig,
    now: datetime,
    now_us: int,
    top: int = 5,
    half_life_us: int | None = None,
) -> EngagementResult:
    """``engagement`` over events already matched to rules, for bulk rescoring: each event is (its time in
    microseconds since the epoch, its id, the indices in ``config.rules`` of the rules it matches ignoring caps).

    The same arithmetic in the same order as ``engagement`` (time differences as integer microseconds divided
    exactly as ``timedelta`` division does), so both give bit-identical scores; events after ``now_us`` are left
    out.
    """
    hl_us = half_life_us if half_life_us is not None else config.half_life // timedelta(microseconds=1)
    rules = config.rules
    counts: dict[str, dict[int, int]] = {}
    per_rule: dict[str, list[float]] = {}
    total = 0.0
    for at_us, _id, matched in sorted(e for e in events if e[0] <= now_us):
        factor = float(2.0 ** (-((now_us - at_us) / hl_us)))
        for i in matched:
            rule = rules[i]
            if rule.max_per_period is not None:
                periods = counts.setdefault(rule.key, {})
                p = math.floor(at_us / 1_000_000 / (86_400 * rule.period_days))
                if periods.get(p, 0) >= rule.max_per_period:
                    continue
                periods[p] = periods.get(p, 0) + 1
            acc = per_rule.setdefault(rule.key, [0.0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += rule.points
            acc[2] += rule.points * factor
            total += rule.points * factor
    contributions = sorted(
        (Contribution(k, int(v[0]), v[1], v[2]) for k, v in per_rule.items()),
        key=lambda c: (-abs(c.points_now), c.rule),
    )
    state = {k: {str(p): n for p, n in v.items()} for k, v in counts.items()}
    if state:
        _counts_prune(state, rules, now - config.half_life * HORIZON_HALF_LIVES)
    return EngagementResult(total, now, contributions[:top], state)


def _sequential_sums(group: Any, rank: Any, values: Sequence[Any], groups: int) -> list[Any]:
    """Per group, the sum of each of ``values`` added one after another in the order of ``rank`` (0, 1, 2, … within
    its group) starting from 0.0: exactly the floats a Python loop ``acc += v`` gives, one numpy step per rank (the
    terms of one rank belong to different groups, so each step is an elementwise add)."""
    import numpy as np

    out = [np.zeros(groups) for _ in values]
    if len(rank) == 0:
        return out
    order = np.argsort(rank, kind="stable")
    bounds = np.searchsorted(rank[order], np.arange(int(rank[order[-1]]) + 2))
    for k in range(len(bounds) - 1):
        sel = order[bounds[k] : bounds[k + 1]]
        g = group[sel]
        for acc, v in zip(out, values, strict=True):
            acc[g] += v[sel]
    return out


def _group_ranks(*keys: Any) -> tuple[Any, Any, Any]:
    """For rows sorted by ``keys`` (equal keys adjacent): each row's group number, its rank within the group, and
    the first row of each group."""
    import numpy as np

    n = len(keys[0])
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    group = np.cumsum(change) - 1
    rank = np.arange(n) - starts[group]
    return group, rank, starts


BatchEngagement = tuple[float, list[tuple[str, int, float, float]], dict[str, dict[str, int]]]


def _coded_matches(codes: Any, table: Sequence[Sequence[int]]) -> tuple[Any, Any]:
    """Each event's number of matched rules and all their indices one event after another, for events given as
    codes into a table of distinct rule tuples: a padded table row per event, its padding masked out."""
    import numpy as np

    sizes = np.array([len(t) for t in table], dtype=np.int64)
    width = max(1, int(sizes.max(initial=0)))
    padded = np.full((len(table), width), -1, dtype=np.int64)
    for row, t in enumerate(table):
        padded[row, : len(t)] = t
    per_event = padded[codes]
    return sizes[codes], per_event[per_event >= 0]


IntColumn = Any  # a sequence of ints or a numpy integer array (numpy is imported only where it is used)


def engagement_batch(
    contact_ids: IntColumn,
    at_us: IntColumn,
    event_ids: IntColumn,
    matched: Sequence[Sequence[int]],
    config: EngagementConfig,
    now: datetime,
    now_us: int,
    top: int = 5,
    *,
    codes: Any = None,
) -> dict[int, BatchEngagement]:
    """``engagement_matched`` for the events of many contacts at once, vectorised with numpy: event ``i`` belongs to
    contact ``contact_ids[i]``, happened at ``at_us[i]`` (microseconds since the epoch; later than ``now_us``
    counts as ``now_us``), has id ``event_ids[i]`` and matches the rules ``matched[i]`` (ascending indices into
    ``config.rules``, caps aside). With ``codes`` (an integer array, one per event), ``matched`` is instead a table
    of the distinct rule tuples and event ``i`` matches ``matched[codes[i]]`` (no Python object per event).

    Gives, per contact with matched events, the score, the top contributions as (rule, events, points, points_now)
    and the cap state — the same floats as ``engagement`` / ``engagement_matched``: caps keep the earliest events
    of each period (time, then id), decay factors are computed by Python's own ``pow`` per term, and every sum is
    added in the per-contact path's order (events by time and id, rules by index) one term at a time.
    """
    import numpy as np

    rules = config.rules
    hl_us = config.half_life // timedelta(microseconds=1)
    if codes is None:
        lens = np.fromiter(map(len, matched), dtype=np.int64, count=len(matched))
        flat = np.fromiter((i for m in matched for i in m), dtype=np.int64, count=int(lens.sum()))
    else:
        lens, flat = _coded_matches(np.asarray(codes, dtype=np.int64), matched)
    ev_c = np.asarray(contact_ids, dtype=np.int64)
    ev_id = np.asarray(event_ids, dtype=np.int64)
    ev_at = np.minimum(np.asarray(at_us, dtype=np.int64), now_us)
    # events already in (contact, time, id) order — as the columnar copy stores them — need no sort
    later = (ev_c[1:] > ev_c[:-1]) | (
        (ev_c[1:] == ev_c[:-1]) & ((ev_at[1:] > ev_at[:-1]) | ((ev_at[1:] == ev_at[:-1]) & (ev_id[1:] > ev_id[:-1])))
    )
    if bool(later.all()):
        order = np.arange(len(ev_c))
    else:
        # mostly in order (a sorted part and a short unsorted tail, as the copy returns them): a stable sort by
        # contact finds the runs (timsort) and is the full order if each contact's events are then in time order
        order = np.argsort(ev_c, kind="stable")
        c, a, i = ev_c[order], ev_at[order], ev_id[order]
        bad = (c[1:] == c[:-1]) & ((a[1:] < a[:-1]) | ((a[1:] == a[:-1]) & (i[1:] <= i[:-1])))
        if bool(bad.any()):
            # only the contacts whose events are then out of time order are sorted again (in the places their
            # events hold: each contact's stay together, in contact order)
            at = np.flatnonzero(np.isin(c, c[1:][bad]))
            sub = order[at]
            order[at] = sub[np.lexsort((ev_id[sub], ev_at[sub], ev_c[sub]))]
    lens_o = lens[order]
    first = np.cumsum(lens) - lens  # each event's first entry in ``flat``
    t_ev = np.repeat(order, lens_o)
    within = np.arange(len(t_ev)) - np.repeat(np.cumsum(lens_o) - lens_o, lens_o)
    t_rule = flat[first[t_ev] + within]
    t_c = ev_c[t_ev]
    t_at = ev_at[t_ev]
    # terms are in (contact, time, id) order: each one's contact as a small number, so that (contact, rule) is one
    # integer key whose stable sort keeps the terms of a (contact, rule) in time order
    t_contact = np.zeros(len(t_c), dtype=np.int64)
    if len(t_c):
        np.cumsum(t_c[1:] != t_c[:-1], out=t_contact[1:])
    n_rules = len(rules)
    # caps: within (contact, rule, period) the first ``max_per_period`` terms in time order count
    cap = np.array([r.max_per_period or 0 for r in rules], dtype=np.int64)
    period_s = np.array([86_400 * r.period_days for r in rules], dtype=np.int64)
    keep = np.ones(len(t_rule), dtype=bool)
    states: dict[int, dict[str, dict[str, int]]] = {}
    capped = np.flatnonzero(cap[t_rule] > 0)
    if len(capped):
        c_rule = t_rule[capped]
        c_contact = t_c[capped]
        c_period = np.floor(t_at[capped] / 1_000_000 / period_s[c_rule]).astype(np.int64)
        # by contact, rule, period and term order: within a (contact, rule) the terms are in time order, so their
        # periods already ascend
        o = np.argsort(t_contact[capped] * n_rules + c_rule, kind="stable")
        _, rank, starts = _group_ranks(c_contact[o], c_rule[o], c_period[o])
        keep[capped[o]] = rank < cap[c_rule[o]]
        sizes = np.diff(np.append(starts, len(o)))
        before = now - config.half_life * HORIZON_HALF_LIVES
        oldest = np.array([math.floor(before.timestamp() / (86_400 * r.period_days)) for r in rules], dtype=np.int64)
        g_rule = c_rule[o][starts]
        g_period = c_period[o][starts]
        g_count = np.minimum(sizes, cap[g_rule])
        kept = np.flatnonzero(g_period >= oldest[g_rule])
        keys = [r.key for r in rules]
        last_c = last_r = -1
        periods: dict[str, int] = {}
        for cid, ri, p, n in zip(  # groups are sorted by contact, rule, period
            c_contact[o][starts][kept].tolist(),
            g_rule[kept].tolist(),
            map(str, g_period[kept].tolist()),
            g_count[kept].tolist(),
            strict=True,
        ):
            if cid != last_c:
                states[cid] = {}
                last_c, last_r = cid, -1
            if ri != last_r:
                periods = states[cid][keys[ri]] = {}
                last_r = ri
            periods[p] = n
    k_idx = np.flatnonzero(keep)
    k_c = t_c[k_idx]
    k_rule = t_rule[k_idx]
    exponents = (-((now_us - t_at[k_idx]) / hl_us)).tolist()
    factors = np.fromiter(map(math.pow, itertools.repeat(2.0), exponents), dtype=np.float64, count=len(exponents))
    points = np.array([r.points for r in rules], dtype=np.float64)[k_rule]
    products = points * factors
    # the total per contact, in term order
    c_group, c_rank, c_starts = _group_ranks(k_c)
    contacts = k_c[c_starts].tolist()
    (totals,) = _sequential_sums(c_group, c_rank, [products], len(c_starts))
    # per (contact, rule): events, points and points now, each in term order
    o = np.argsort(t_contact[k_idx] * n_rules + k_rule, kind="stable")
    r_group, r_rank, r_starts = _group_ranks(k_c[o], k_rule[o])
    psum, nsum = _sequential_sums(r_group, r_rank, [points[o], products[o]], len(r_starts))
    counts = np.diff(np.append(r_starts, len(o)))
    g_contact = k_c[o][r_starts]
    g_rule = k_rule[o][r_starts]
    # the top contributions of each contact: largest absolute points now first, then by rule key
    key_rank = np.empty(len(rules), dtype=np.int64)
    key_rank[sorted(range(len(rules)), key=lambda i: rules[i].key)] = np.arange(len(rules))
    best = np.lexsort((key_rank[g_rule], -np.abs(nsum), g_contact))
    _, b_rank, _ = _group_ranks(g_contact[best])
    shown = best[b_rank < top]
    out: dict[int, BatchEngagement] = {}
    for cid, total in zip(contacts, totals.tolist(), strict=True):
        out[cid] = (total, [], states.get(cid, {}))
    keys = [r.key for r in rules]
    for cid, ri, n, p, pn in zip(
        g_contact[shown].tolist(),
        g_rule[shown].tolist(),
        counts[shown].tolist(),
        psum[shown].tolist(),
        nsum[shown].tolist(),
        strict=True,
    ):
        out[cid][1].append((keys[ri], n, p, pn))
    return out


# --- predictive score -----------------------------------------------------------------------------------------------

MIN_POSITIVES = 20
MIN_NEGATIVES = 20
MIN_VALIDATION_POSITIVES = 5
EVENT_FEATURES = ("page", "form", "email_click", "email_open", "other")


class InsufficientHistory(ValueError):
    """Too few examples to train on (the message says which and how many); fit and engagement stand in."""


@dataclass(frozen=True, slots=True)
class PredictiveExample:
    """What the model sees of one contact at one moment (features only from data before that moment)."""

    fit_score: float | None
    engagement: float
    event_counts: Mapping[str, int]
    age_days: float
    days_since_last_event: float | None
    stage_position: float
    channel: str | None


class PredictiveModel(_Model):
    """A fitted logistic regression on standardised features, with its validation report."""

    target_stage: str
    days: int
    features: tuple[str, ...]
    channels: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    metrics: dict[str, Any]


def _features(x: PredictiveExample, channels: Sequence[str]) -> list[float]:
    counts = [math.log1p(max(0, int(x.event_counts.get(k, 0)))) for k in EVENT_FEATURES]
    since = 365.0 if x.days_since_last_event is None else min(max(x.days_since_last_event, 0.0), 365.0)
    row = [
        0.0 if x.fit_score is None else x.fit_score / 100.0,
        1.0 if x.fit_score is None else 0.0,
        math.log1p(max(x.engagement, 0.0)),
        math.log1p(max(-x.engagement, 0.0)),
        *counts,
        math.log1p(max(x.age_days, 0.0)),
        math.log1p(since),
        x.stage_position,
    ]
    row.extend(1.0 if x.channel == c else 0.0 for c in channels)
    return row


def _feature_names(channels: Sequence[str]) -> tuple[str, ...]:
    return (
        "fit_score",
        "fit_unknown",
        "engagement",
        "negative_engagement",
        *(f"events_30d_{k}" for k in EVENT_FEATURES),
        "age_days",
        "days_since_last_event",
        "stage_position",
        *(f"channel_{c}" for c in channels),
    )


def _fit_logistic(rows: list[list[float]], y: list[int]) -> tuple[list[float], list[float], list[float], float]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(rows, dtype=float)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9 * np.maximum(1.0, np.abs(mean))] = 1.0  # a constant column (std is float noise, not 0)
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit((x - mean) / scale, np.asarray(y, dtype=int))
    return (
        [float(v) for v in mean],
        [float(v) for v in scale],
        [float(v) for v in model.coef_[0]],
        float(model.intercept_[0]),
    )


def _logit(model: PredictiveModel, row: Sequence[float]) -> tuple[float, list[float]]:
    parts = [c * (v - m) / s for c, v, m, s in zip(model.coef, row, model.mean, model.scale, strict=True)]
    return model.intercept + sum(parts), parts


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _auc(probabilities: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (ties count half); None with one class only."""
    pos = [p for p, y in zip(probabilities, labels, strict=True) if y]
    neg = [p for p, y in zip(probabilities, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    ranked = sorted((p, y) for p, y in zip(probabilities, labels, strict=True))
    # rank-sum with average ranks for ties
    ranks: list[float] = [0.0] * len(ranked)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    pos_rank_sum = sum(r for r, (_, y) in zip(ranks, ranked, strict=True) if y)
    return (pos_rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


def _calibration(probabilities: Sequence[float], labels: Sequence[int], bins: int = 5) -> list[dict[str, Any]]:
    """Predicted against observed rates in equal-count bins of the predictions."""
    pairs = sorted(zip(probabilities, labels, strict=True))
    out = []
    for b in range(bins):
        part = pairs[b * len(pairs) // bins : (b + 1) * len(pairs) // bins]
        if part:
            out.append(
                {
                    "contacts": len(part),
                    "predicted": sum(p for p, _ in part) / len(part),
                    "observed": sum(y for _, y in part) / len(part),
                }
            )
    return out


def train_predictive(
    train: Sequence[tuple[PredictiveExample, int]],
    validation: Sequence[tuple[PredictiveExample, int]],
    *,
    target_stage: str,
    days: int,
) -> PredictiveModel:
    """Fit on ``train`` (an earlier cohort), report AUC, Brier score and calibration on ``validation`` (a later
    one), then refit on both for the model that scores. InsufficientHistory when either has too few outcomes.
    """
    positives = sum(y for _, y in train)
    negatives = len(train) - positives
    if positives < MIN_POSITIVES or negatives < MIN_NEGATIVES:
        raise InsufficientHistory(
            f"the training window has {positives} contacts that reached {target_stage} within {days} days and "
            f"{negatives} that did not; at least {MIN_POSITIVES} and {MIN_NEGATIVES} are needed"
        )
    val_pos = sum(y for _, y in validation)
    if val_pos < MIN_VALIDATION_POSITIVES or val_pos == len(validation):
        raise InsufficientHistory(
            f"the validation window has {val_pos} of {len(validation)} contacts reaching {target_stage}; "
            f"at least {MIN_VALIDATION_POSITIVES} positives and some negatives are needed"
        )
    seen: dict[str, int] = {}
    for x, _ in [*train, *validation]:
        if x.channel:
            seen[x.channel] = seen.get(x.channel, 0) + 1
    channels = tuple(sorted(c for c, n in seen.items() if n >= 5))
    names = _feature_names(channels)
    rows = [_features(x, channels) for x, _ in train]
    mean, scale, coef, intercept = _fit_logistic(rows, [y for _, y in train])
    trial = PredictiveModel(
        target_stage=target_stage,
        days=days,
        features=names,
        channels=channels,
        mean=tuple(mean),
        scale=tuple(scale),
        coef=tuple(coef),
        intercept=intercept,
        metrics={},
    )
    probs = [predict(trial, x)[0] for x, _ in validation]
    labels = [y for _, y in validation]
    metrics = {
        "train_contacts": len(train),
        "train_positives": positives,
        "validation_contacts": len(validation),
        "validation_positives": val_pos,
        "auc": _auc(probs, labels),
        "brier": sum((p - y) ** 2 for p, y in zip(probs, labels, strict=True)) / len(labels),
        "base_rate": val_pos / len(validation),
        "calibration": _calibration(probs, labels),
    }
    both = [*train, *validation]
    mean, scale, coef, intercept = _fit_logistic([_features(x, channels) for x, _ in both], [y for _, y in both])
    return trial.model_copy(
        update={
            "mean": tuple(mean),
            "scale": tuple(scale),
            "coef": tuple(coef),
            "intercept": intercept,
            "metrics": metrics,
        }
    )


def predict(model: PredictiveModel, x: PredictiveExample, top: int = 3) -> tuple[float, list[dict[str, Any]]]:
    """The probability (0–1) of reaching the target stage within the model's days, and the top reasons
    (features that move the log-odds most, either way, with their value).
    """
    row = _features(x, model.channels)
    z, parts = _logit(model, row)
    effects = sorted(
        ((name, value, part) for name, value, part in zip(model.features, row, parts, strict=True) if abs(part) > 1e-9),
        key=lambda t: -abs(t[2]),
    )
    reasons: list[dict[str, Any]] = [
        {"feature": name, "value": round(value, 4), "effect": round(part, 4)} for name, value, part in effects
    ]
    return _sigmoid(z), reasons[:top]


def percentile_grades(scores: Mapping[int, float]) -> dict[int, str]:
    """Grades by rank: A the top 10 %, B the next 20 %, C the next 30 %, D the rest (ties share the better grade)."""
    ordered = sorted(scores.items(), key=lambda kv: -kv[1])
    n = len(ordered)
    out: dict[int, str] = {}
    previous: tuple[float, str] | None = None
    for i, (key, value) in enumerate(ordered):
        share = i / n
        grade = "A" if share < 0.1 else "B" if share < 0.3 else "C" if share < 0.6 else "D"
        if previous is not None and previous[0] == value:
            grade = previous[1]
        out[key] = grade
        previous = (value, grade)
    return out


__all__ = [
    "DEFAULT_ENGAGEMENT",
    "GRADES",
    "REGIONS",
    "CriterionResult",
    "EngagementConfig",
    "EngagementResult",
    "EngagementRule",
    "FitFacts",
    "FitResult",
    "FitScorer",
    "IcpDefinition",
    "InsufficientHistory",
    "PredictiveExample",
    "PredictiveModel",
    "ScoredEvent",
    "ScoringError",
    "StageThreshold",
    "add_points",
    "apply_event",
    "best_fit",
    "decay_factor",
    "decay_key",
    "decayed",
    "decayed_compare",
    "decayed_threshold",
    "engagement",
    "engagement_batch",
    "engagement_matched",
    "epoch_seconds",
    "fit",
    "grade_for",
    "horizon_start",
    "parse_engagement",
    "parse_icp",
    "percentile_grades",
    "predict",
    "train_predictive",
]
