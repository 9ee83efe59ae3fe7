"""How a visit from each marketing channel looks: UTM parameters, click ids and the referrer.

The default channel rules (``suppilo.engine.channels.DEFAULT_RULES``) classify every visit built here into
the channel it was built for; ``tests/integration/demo`` checks that.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

GOOGLE_BY_COUNTRY = {
    "FI": "www.google.fi",
    "SE": "www.google.se",
    "DK": "www.google.dk",
    "NO": "www.google.no",
    "EE": "www.google.ee",
    "LV": "www.google.lv",
    "LT": "www.google.lt",
    "DE": "www.google.de",
    "GB": "www.google.co.uk",
    "US": "www.google.com",
}
REFERRAL_SITES = (
    "www.retkeilyblogi.example",
    "fjallbloggen.example",
    "www.hygge-hjem.example",
    "outdoor-gear-review.example",
    "www.talsu-pargajieni.example",
    "www.saunafriends.example",
)
PAID_SOCIAL_SOURCES_B2C = (
    ("facebook", "l.facebook.com"),
    ("instagram", "l.instagram.com"),
    ("tiktok", "www.tiktok.com"),
)
PAID_SOCIAL_SOURCES_B2B = (("linkedin", "www.linkedin.com"), ("facebook", "l.facebook.com"))
ORGANIC_SOCIAL_REFERRERS = (
    "l.facebook.com",
    "www.instagram.com",
    "www.pinterest.com",
    "www.reddit.com",
    "www.youtube.com",
)
CAMPAIGN_BASES: dict[str, tuple[str, ...]] = {
    "paid_search": ("brand", "tents", "winter-gear", "sauna", "merino"),
    "paid_social": ("new-season", "sauna-life", "hike-more", "gift-guide"),
    "email": ("newsletter", "new-arrivals", "offers", "outdoor-guides"),
    "display": ("awareness", "retargeting"),
    "affiliate": ("partners",),
    "events": ("outdoor-expo", "habitare", "retail-days"),
    "outbound": ("wholesale-prospecting",),
    "offline": ("winter-catalogue", "store-flyer"),
}


@dataclass(frozen=True, slots=True)
class VisitSpec:
    """The landing query string and referrer of a visit, and the touch values they stand for."""

    channel: str
    query: str  # without '?', '' when none
    referrer: str | None
    source: str | None
    medium: str | None
    campaign: str | None
    term: str | None
    content: str | None

    def campaign_context(self) -> dict[str, str]:
        """Segment ``context.campaign`` of the landing page (empty without UTM parameters)."""
        out: dict[str, str] = {}
        if self.query and "utm_" in self.query:
            for key, value in (("source", self.source), ("medium", self.medium), ("name", self.campaign)):
                if value:
                    out[key] = value
            if self.term:
                out["term"] = self.term
            if self.content:
                out["content"] = self.content
        return out


def _campaign(rng: random.Random, channel: str, when: datetime) -> str:
    base = rng.choice(CAMPAIGN_BASES[channel])
    if channel == "email":
        return f"{base}-{when:%Y-%m}"
    return f"{base}-{when.year}q{(when.month - 1) // 3 + 1}"


def _click_id(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def build_visit(rng: random.Random, channel: str, *, country: str, b2b: bool, when: datetime) -> VisitSpec:
    """A visit from ``channel`` for a contact in ``country``."""
    if channel == "paid_search":
        if rng.random() < 0.85:
            source, ref, click = "google", "www.google.com", "gclid"
        else:
            source, ref, click = "bing", "www.bing.com", "msclkid"
        campaign = _campaign(rng, channel, when)
        term = rng.choice(("tent", "merino wool", "sauna bucket", "hiking boots", "sleeping bag", "pohjola outdoor"))
        params = {
            "utm_source": source,
            "utm_medium": "cpc",
            "utm_campaign": campaign,
            "utm_term": term,
            click: _click_id(rng),
        }
        return VisitSpec(channel, urlencode(params), f"https://{ref}/", source, "cpc", campaign, term, None)
    if channel == "paid_social":
        source, ref = rng.choice(PAID_SOCIAL_SOURCES_B2B if b2b else PAID_SOCIAL_SOURCES_B2C)
        campaign = _campaign(rng, channel, when)
        content = rng.choice(("video-15s", "carousel", "single-image"))
        params = {
            "utm_source": source,
            "utm_medium": "paid_social",
            "utm_campaign": campaign,
            "utm_content": content,
        }
        if source in ("facebook", "instagram"):
            params["fbclid"] = _click_id(rng)
        return VisitSpec(channel, urlencode(params), f"https://{ref}/", source, "paid_social", campaign, None, content)
    if channel == "organic_search":
        r = rng.random()
        host = GOOGLE_BY_COUNTRY[country] if r < 0.8 else ("www.bing.com" if r < 0.92 else "duckduckgo.com")
        return VisitSpec(channel, "", f"https://{host}/", host.removeprefix("www."), "organic", None, None, None)
    if channel == "organic_social":
        host = rng.choice(ORGANIC_SOCIAL_REFERRERS)
        return VisitSpec(channel, "", f"https://{host}/", host.removeprefix("www."), "referral", None, None, None)
    if channel == "email":
        campaign = _campaign(rng, channel, when)
        params = {"utm_source": "newsletter", "utm_medium": "email", "utm_campaign": campaign}
        return VisitSpec(channel, urlencode(params), None, "newsletter", "email", campaign, None, None)
    if channel == "referral":
        host = rng.choice(REFERRAL_SITES)
        ref = f"https://{host}/{rng.choice(('blog', 'reviews', 'guides'))}/{rng.randint(100, 999)}"
        return VisitSpec(channel, "", ref, host.removeprefix("www."), "referral", None, None, None)
    if channel == "display":
        source = rng.choice(("adform", "gdn"))
        campaign = _campaign(rng, channel, when)
        params = {"utm_source": source, "utm_medium": "display", "utm_campaign": campaign}
        return VisitSpec(channel, urlencode(params), None, source, "display", campaign, None, None)
    if channel == "affiliate":
        source = rng.choice(("adtraction", "awin"))
        campaign = _campaign(rng, channel, when)
        params = {"utm_source": source, "utm_medium": "affiliate", "utm_campaign": campaign}
        ref = "https://www.hintaopas.example/" if country == "FI" else "https://www.prisjakt.example/"
        return VisitSpec(channel, urlencode(params), ref, source, "affiliate", campaign, None, None)
    if channel == "events":
        campaign = _campaign(rng, channel, when)
        params = {"utm_source": "trade-fair", "utm_medium": "event", "utm_campaign": campaign}
        return VisitSpec(channel, urlencode(params), None, "trade-fair", "event", campaign, None, None)
    if channel == "outbound":
        campaign = _campaign(rng, channel, when)
        params = {"utm_source": "sales", "utm_medium": "cold-email", "utm_campaign": campaign}
        return VisitSpec(channel, urlencode(params), None, "sales", "cold-email", campaign, None, None)
    if channel == "offline":
        campaign = _campaign(rng, channel, when)
        medium = rng.choice(("qr", "print"))
        params = {"utm_source": "catalogue", "utm_medium": medium, "utm_campaign": campaign}
        return VisitSpec(channel, urlencode(params), None, "catalogue", medium, campaign, None, None)
    if channel == "direct":
        return VisitSpec(channel, "", None, None, None, None, None, None)
    raise ValueError(f"unknown channel {channel!r}")
