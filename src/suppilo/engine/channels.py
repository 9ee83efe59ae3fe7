"""Classifying a visit's UTM parameters and referrer into a marketing channel by an ordered rule table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

CHANNELS: tuple[str, ...] = (
    "organic_search",
    "paid_search",
    "organic_social",
    "paid_social",
    "email",
    "referral",
    "direct",
    "display",
    "affiliate",
    "events",
    "outbound",
    "offline",
)

SEARCH_DOMAINS = (
    "google.",
    "bing.com",
    "duckduckgo.com",
    "yahoo.com",
    "yandex.",
    "baidu.com",
    "ecosia.org",
    "search.brave.com",
    "startpage.com",
    "qwant.com",
    "seznam.cz",
    "naver.com",
    "ask.com",
)
SOCIAL_DOMAINS = (
    "facebook.com",
    "fb.com",
    "instagram.com",
    "linkedin.com",
    "lnkd.in",
    "twitter.com",
    "x.com",
    "t.co",
    "youtube.com",
    "tiktok.com",
    "pinterest.com",
    "reddit.com",
    "threads.net",
    "bsky.app",
    "mastodon.social",
    "vk.com",
    "draugiem.lv",
    "snapchat.com",
    "whatsapp.com",
    "telegram.org",
    "t.me",
)
PAID = ["cpc", "ppc", "paid", "paidsearch", "paid-search", "paid_search", "sem", "cpv", "cpa"]
PAID_SOCIAL = ["paidsocial", "paid-social", "paid_social", "social-paid", "social_paid", "socialpaid"]

# The default rule table; a workspace gets a copy it can edit. First matching rule wins.
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "channel": "paid_search",
        "conditions": {"click_ids": ["gclid", "msclkid", "gbraid", "wbraid", "dclid"]},
        "description": "Ad click id from a search engine",
    },
    {
        "channel": "paid_search",
        "conditions": {"medium": PAID, "source_domains": list(SEARCH_DOMAINS)},
        "description": "Paid medium from a search engine",
    },
    {"channel": "paid_social", "conditions": {"medium": PAID_SOCIAL}, "description": "Paid social medium"},
    {
        "channel": "paid_social",
        "conditions": {"medium": PAID, "source_domains": list(SOCIAL_DOMAINS)},
        "description": "Paid medium from a social network",
    },
    {"channel": "paid_search", "conditions": {"medium": PAID}, "description": "Other paid clicks"},
    {
        "channel": "display",
        "conditions": {"medium": ["display", "banner", "cpm", "programmatic", "video"]},
        "description": "Display advertising",
    },
    {
        "channel": "affiliate",
        "conditions": {"medium": ["affiliate", "affiliates", "partner"]},
        "description": "Affiliates and partners",
    },
    {
        "channel": "email",
        "conditions": {"medium": ["email", "e-mail", "e_mail", "newsletter", "mail"]},
        "description": "Email",
    },
    {"channel": "email", "conditions": {"source": ["newsletter", "email", "suppilo"]}, "description": "Email source"},
    {
        "channel": "events",
        "conditions": {"medium": ["event", "events", "webinar", "conference", "tradeshow", "fair"]},
        "description": "Events and webinars",
    },
    {
        "channel": "outbound",
        "conditions": {"medium": ["outbound", "cold-email", "cold_email", "cold-call", "sdr", "prospecting"]},
        "description": "Outbound prospecting",
    },
    {
        "channel": "offline",
        "conditions": {"medium": ["offline", "print", "direct-mail", "direct_mail", "qr", "tv", "radio", "ooh"]},
        "description": "Offline media",
    },
    {
        "channel": "organic_social",
        "conditions": {"medium": ["social", "organic-social", "organic_social", "social-organic", "sm"]},
        "description": "Organic social medium",
    },
    {
        "channel": "organic_social",
        "conditions": {"source_domains": list(SOCIAL_DOMAINS)},
        "description": "Social network as source",
    },
    {
        "channel": "organic_social",
        "conditions": {"referrer_domains": list(SOCIAL_DOMAINS)},
        "description": "Referred by a social network",
    },
    {"channel": "organic_search", "conditions": {"medium": ["organic", "seo"]}, "description": "Organic medium"},
    {
        "channel": "organic_search",
        "conditions": {"referrer_domains": list(SEARCH_DOMAINS)},
        "description": "Referred by a search engine",
    },
    {"channel": "referral", "conditions": {"medium": ["referral", "ref"]}, "description": "Referral medium"},
    {"channel": "referral", "conditions": {"any_referrer": True}, "description": "Any other site"},
)

CONDITION_KEYS = frozenset(
    {"medium", "source", "source_domains", "referrer_domains", "click_ids", "any_referrer", "campaign_prefix"}
)


@dataclass(frozen=True, slots=True)
class Visit:
    """What a visit tells about its origin; parsed from the landing URL and the referrer."""

    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    referrer_host: str | None = None
    click_ids: frozenset[str] = field(default_factory=frozenset)

    @property
    def has_campaign(self) -> bool:
        """Whether the visit carries marketing parameters (UTM or an ad click id)."""
        return bool(self.utm_source or self.utm_medium or self.utm_campaign or self.click_ids)


@dataclass(frozen=True, slots=True)
class Classification:
    """The channel of a visit and the values to store with its touch."""

    channel: str
    source: str | None
    medium: str | None
    campaign: str | None
    term: str | None
    content: str | None


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        host = urlsplit(url if "//" in url else f"//{url}").hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value[:200] or None


def parse_visit(
    *,
    url: str | None,
    referrer: str | None,
    campaign: Mapping[str, Any] | None = None,
    site_domains: Sequence[str] = (),
) -> Visit:
    """A Visit from a page URL (its utm_* and click-id parameters), the referrer and Segment's context.campaign.

    A referrer on one of the site's own domains (or the page's own host) is not a referrer.
    """
    query: dict[str, list[str]] = {}
    page_host = _host(url)
    if url:
        try:
            query = parse_qs(urlsplit(url).query, keep_blank_values=False)
        except ValueError:
            query = {}

    def q(name: str) -> str | None:
        values = query.get(name)
        return _clean(values[0]) if values else None

    camp = campaign or {}

    def c(name: str) -> str | None:
        value = camp.get(name)
        return _clean(str(value)) if value is not None else None

    ref_host = _host(referrer)
    own = {d.lower().removeprefix("www.") for d in site_domains}
    if page_host:
        own.add(page_host)
    if ref_host and any(ref_host == d or ref_host.endswith("." + d) for d in own):
        ref_host = None
    click_ids = frozenset(
        k for k in ("gclid", "msclkid", "gbraid", "wbraid", "dclid", "fbclid", "ttclid", "li_fat_id") if k in query
    )
    return Visit(
        utm_source=q("utm_source") or c("source"),
        utm_medium=q("utm_medium") or c("medium"),
        utm_campaign=q("utm_campaign") or c("name") or c("campaign"),
        utm_term=q("utm_term") or c("term"),
        utm_content=q("utm_content") or c("content"),
        referrer_host=ref_host,
        click_ids=click_ids,
    )


def _domain_match(host: str | None, domains: Sequence[str]) -> bool:
    if not host:
        return False
    for d in domains:
        d = d.lower()
        if d.endswith("."):
            # "google." matches google.com, google.fi, google.co.uk ...
            if host.startswith(d) or ("." + d) in host:
                return True
        elif host == d or host.endswith("." + d):
            return True
    return False


def rule_matches(conditions: Mapping[str, Any], visit: Visit) -> bool:
    """Whether every condition of a rule holds for ``visit`` (lists match any of their values)."""
    medium = (visit.utm_medium or "").lower()
    source = (visit.utm_source or "").lower()
    for key, expected in conditions.items():
        if key == "medium":
            if medium not in {str(v).lower() for v in expected}:
                return False
        elif key == "source":
            if source not in {str(v).lower() for v in expected}:
                return False
        elif key == "source_domains":
            src_host = _host(source) if source else None
            if not (
                _domain_match(src_host, expected) or any(source == str(d).rstrip(".").split(".")[0] for d in expected)
            ):
                return False
        elif key == "referrer_domains":
            if not _domain_match(visit.referrer_host, expected):
                return False
        elif key == "click_ids":
            if not visit.click_ids & {str(v) for v in expected}:
                return False
        elif key == "any_referrer":
            if bool(visit.referrer_host) != bool(expected):
                return False
        elif key == "campaign_prefix":
            if not (visit.utm_campaign or "").lower().startswith(str(expected).lower()):
                return False
        else:
            return False
    return True


def validate_rule(channel: str, conditions: Mapping[str, Any]) -> list[str]:
    """Problems with one rule (empty when valid)."""
    problems: list[str] = []
    if channel not in CHANNELS:
        problems.append(f"channel must be one of {', '.join(CHANNELS)}")
    if not conditions:
        problems.append("a rule needs at least one condition")
    for key, value in conditions.items():
        if key not in CONDITION_KEYS:
            problems.append(f"unknown condition {key!r}")
        elif key == "any_referrer":
            if not isinstance(value, bool):
                problems.append("any_referrer must be true or false")
        elif key == "campaign_prefix":
            if not isinstance(value, str):
                problems.append("campaign_prefix must be a string")
        elif not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
            problems.append(f"{key} must be a non-empty list of strings")
    return problems


def classify(visit: Visit, rules: Sequence[Mapping[str, Any]]) -> Classification:
    """The channel of ``visit`` under ``rules`` (each ``{"channel", "conditions"}``); direct when nothing matches."""
    channel = "direct"
    if visit.has_campaign or visit.referrer_host:
        for rule in rules:
            if rule_matches(rule["conditions"], visit):
                channel = str(rule["channel"])
                break
        else:
            channel = "referral" if visit.referrer_host else "direct"
    source = visit.utm_source or visit.referrer_host
    medium = visit.utm_medium
    if medium is None and channel == "organic_search":
        medium = "organic"
    elif medium is None and channel in ("referral", "organic_social") and visit.referrer_host:
        medium = "referral"
    return Classification(channel, source, medium, visit.utm_campaign, visit.utm_term, visit.utm_content)
