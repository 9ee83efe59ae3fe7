"""The deterministic demo business: companies, contacts and their behaviour as plain row dicts.

Everything is a pure function of ``DemoParams`` (seed, size, anchor day) and the ids handed in: known contacts
are generated in chunks of ``CHUNK_SIZE``, each chunk from its own ``random.Random`` seeded with
``(seed, chunk)``, so memory stays constant and the data does not depend on how it is loaded.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from suppilo.demo import catalog
from suppilo.demo.names import (
    COMPANY_WORDS,
    FIRST_NAMES,
    INDUSTRIES,
    JOB_TITLES,
    LAST_NAMES,
    LV_FEMALE,
    MARKET_BY_COUNTRY,
    MARKETS,
    Market,
    ascii_fold,
)
from suppilo.demo.params import (
    ABANDONED_CART_RATE,
    ANONYMOUS_PER_KNOWN,
    B2B_SHARE,
    BGNBD_B2B,
    BGNBD_B2C,
    CHANNEL_ECONOMICS,
    CHUNK_SIZE,
    CONTACTS_PER_COMPANY,
    GAMMA_GAMMA_B2B,
    GAMMA_GAMMA_B2C,
    HISTORY_DAYS,
    INACTIVE_AFTER_DAYS,
    REFUND_RATE,
    SITE_URL,
)
from suppilo.demo.visits import VisitSpec, build_visit

STAGE_POSITION = {
    "awareness": 10,
    "interest": 20,
    "consideration": 30,
    "decision": 40,
    "customer": 50,
    "loyal": 60,
    "advocate": 70,
}
INTERESTS = ("hiking", "camping", "skiing", "sauna", "home", "running")
INTEREST_CATEGORIES = {
    "hiking": ("backpacks", "footwear", "clothing"),
    "camping": ("tents", "sleeping", "kitchen"),
    "skiing": ("clothing", "textiles", "footwear"),
    "sauna": ("home", "textiles"),
    "home": ("home", "textiles", "kitchen"),
    "running": ("footwear", "clothing"),
}
NEWSLETTER_TOPICS = ("new-arrivals", "offers", "outdoor-guides", "home-and-sauna")
VAT_RATE = {
    "FI": 0.255,
    "SE": 0.25,
    "DK": 0.25,
    "NO": 0.25,
    "EE": 0.22,
    "LV": 0.21,
    "LT": 0.21,
    "DE": 0.19,
    "GB": 0.0,
    "US": 0.0,
}
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
)
# Channels of later visits of known contacts (newsletters bring most of them back).
RETURN_CHANNELS = (
    ("email", 0.38),
    ("direct", 0.27),
    ("organic_search", 0.15),
    ("paid_search", 0.12),
    ("paid_social", 0.08),
)
FORMS: tuple[dict[str, Any], ...] = (
    {
        "slug": "newsletter",
        "name": "Newsletter sign-up",
        "fields": [
            {"name": "email", "label": "Email", "type": "email", "required": True, "maps_to": "email"},
            {"name": "first_name", "label": "First name", "type": "text", "required": False, "maps_to": "first_name"},
            {
                "name": "topics",
                "label": "Topics",
                "type": "multi_enum",
                "required": False,
                "maps_to": "properties.newsletter_topics",
            },
        ],
        "consent_text": (
            "Yes, send me Pohjola Outdoor's newsletter with new products, offers and outdoor guides. "
            "I can unsubscribe at any time."
        ),
        "consent_topic": "marketing",
        "tags": ["newsletter"],
    },
    {
        "slug": "wholesale-inquiry",
        "name": "Wholesale inquiry",
        "fields": [
            {"name": "email", "label": "Work email", "type": "email", "required": True, "maps_to": "email"},
            {"name": "first_name", "label": "First name", "type": "text", "required": True, "maps_to": "first_name"},
            {"name": "last_name", "label": "Last name", "type": "text", "required": True, "maps_to": "last_name"},
            {"name": "company", "label": "Company", "type": "text", "required": True, "maps_to": "company.name"},
            {"name": "phone", "label": "Phone", "type": "tel", "required": False, "maps_to": "phone"},
            {"name": "message", "label": "What would you like to stock?", "type": "textarea", "required": False},
        ],
        "consent_text": (
            "Pohjola Outdoor may contact me about wholesale terms and send me the retailer newsletter. "
            "I can withdraw my consent at any time."
        ),
        "consent_topic": "sales",
        "tags": ["wholesale"],
    },
    {
        "slug": "winter-catalogue",
        "name": "Download the winter catalogue",
        "fields": [
            {"name": "email", "label": "Email", "type": "email", "required": True, "maps_to": "email"},
            {"name": "first_name", "label": "First name", "type": "text", "required": False, "maps_to": "first_name"},
            {"name": "last_name", "label": "Last name", "type": "text", "required": False, "maps_to": "last_name"},
        ],
        "consent_text": "Send me the catalogue and occasional offers by email. I can unsubscribe at any time.",
        "consent_topic": "marketing",
        "tags": ["catalogue"],
    },
)
CONSENT_VERSION = "2024-09"
FORM_PATHS = {"newsletter": "/newsletter", "wholesale-inquiry": "/wholesale", "winter-catalogue": "/catalogue"}


@dataclass(frozen=True, slots=True)
class DemoParams:
    """What the generated data is a function of."""

    seed: int = 1
    contacts: int = 20000
    today: date = field(default_factory=lambda: datetime.now(UTC).date())

    @property
    def anchor(self) -> datetime:
        """The end of the history: ``today`` at 00:00 UTC."""
        return datetime(self.today.year, self.today.month, self.today.day, tzinfo=UTC)

    @property
    def n_companies(self) -> int:
        """Number of B2B accounts."""
        return max(1, self.contacts // CONTACTS_PER_COMPANY)

    @property
    def n_chunks(self) -> int:
        """Number of chunks of known contacts."""
        return max(1, math.ceil(self.contacts / CHUNK_SIZE))

    def as_dict(self) -> dict[str, Any]:
        """JSON form, stored on the workspace to recognise an identical demo."""
        return {"seed": self.seed, "contacts": self.contacts, "today": self.today.isoformat()}


@dataclass(frozen=True, slots=True)
class CompanyInfo:
    """What contacts need to know about their company."""

    id: int
    country: str
    domain: str
    owner_id: int | None


@dataclass
class Context:
    """Ids of the rows made during setup and of the companies, handed to every chunk."""

    workspace_id: int
    contact_id_base: int  # contact of known index i gets base + 4*i + 1, its anonymous visitors +3 and +4
    companies: list[CompanyInfo]
    product_ids: dict[str, int]
    form_ids: dict[str, int]
    user_ids: dict[str, int]  # role -> user id
    forms: dict[str, dict[str, Any]] = field(default_factory=lambda: {f["slug"]: f for f in FORMS})
    _by_country: dict[str, list[CompanyInfo]] = field(default_factory=dict)

    def companies_in(self, country: str) -> list[CompanyInfo]:
        """The companies of ``country`` (all companies when it has none)."""
        if not self._by_country:
            for c in self.companies:
                self._by_country.setdefault(c.country, []).append(c)
        return self._by_country.get(country) or self.companies


@dataclass
class IdCounter:
    """Running ids of rows that other rows point at (events ← touches, orders ← lines/refunds/carts)."""

    next_event: int
    next_order: int

    def event(self) -> int:
        self.next_event += 1
        return self.next_event - 1

    def order(self) -> int:
        self.next_order += 1
        return self.next_order - 1


@dataclass
class Rows:
    """Rows of one chunk, per table, in insertion order."""

    contacts: list[dict[str, Any]] = field(default_factory=list)
    identities: list[dict[str, Any]] = field(default_factory=list)
    merges: list[dict[str, Any]] = field(default_factory=list)
    stage_changes: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    touches: list[dict[str, Any]] = field(default_factory=list)
    form_submissions: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    order_lines: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    carts: list[dict[str, Any]] = field(default_factory=list)

    TABLES = (
        "contacts",
        "events",
        "touches",
        "identities",
        "merges",
        "stage_changes",
        "tags",
        "form_submissions",
        "orders",
        "order_lines",
        "refunds",
        "carts",
    )

    def counts(self) -> dict[str, int]:
        """Rows per table."""
        return {t: len(getattr(self, t)) for t in self.TABLES}


# --- helpers ------------------------------------------------------------------------------------------------------


class _Weighted:
    """Fast repeated weighted choice."""

    def __init__(self, items: list[tuple[Any, float]]) -> None:
        self.values = [v for v, _ in items]
        total = 0.0
        self.cum: list[float] = []
        for _, w in items:
            total += w
            self.cum.append(total)
        self.total = total

    def pick(self, rng: random.Random) -> Any:
        i = bisect.bisect_right(self.cum, rng.random() * self.total)
        return self.values[min(i, len(self.values) - 1)]


_MARKETS = _Weighted([(m, m.weight) for m in MARKETS])
_B2C_CHANNELS = _Weighted([(k, v.b2c_share) for k, v in CHANNEL_ECONOMICS.items() if v.b2c_share > 0])
_B2B_CHANNELS = _Weighted([(k, v.b2b_share) for k, v in CHANNEL_ECONOMICS.items() if v.b2b_share > 0])
_RETURN = _Weighted(list(RETURN_CHANNELS))
_INDUSTRIES = _Weighted(list(INDUSTRIES))
_TITLES = _Weighted(list(JOB_TITLES))
_LANG = {m.country: _Weighted(list(m.languages)) for m in MARKETS}
_TZ = {m.country: _Weighted([(i, w) for i, (_, w) in enumerate(m.timezones)]) for m in MARKETS}
_CITY = {m.country: _Weighted([((c, r), w) for c, r, w in m.cities]) for m in MARKETS}
_PRICES: dict[str, list[tuple[int, catalog.ProductSpec]]] = {
    cur: sorted(((catalog.price_in(p, cur), p) for p in catalog.PRODUCTS if not p.b2b), key=lambda x: (x[0], x[1].sku))
    for cur in catalog.CURRENCIES
}
_PRICES_B2B: dict[str, list[tuple[int, catalog.ProductSpec]]] = {
    cur: sorted(((catalog.price_in(p, cur), p) for p in catalog.PRODUCTS), key=lambda x: (x[0], x[1].sku))
    for cur in catalog.CURRENCIES
}
_BY_CATEGORY: dict[str, list[catalog.ProductSpec]] = {}
for _p in catalog.PRODUCTS:
    if not _p.b2b:
        _BY_CATEGORY.setdefault(_p.category, []).append(_p)
# Daytime activity by local hour (evenings peak).
_HOURS = _Weighted(
    [(h, w) for h, w in enumerate((1, 0.5, 0.3, 0.2, 0.2, 0.4, 1, 2, 3, 4, 4, 4, 5, 5, 4, 4, 4, 5, 6, 7, 8, 8, 6, 3))]
)


def currency_for(country: str) -> str:
    """The currency a buyer in ``country`` pays in (UK buyers pay in EUR; see docs/demo.md)."""
    return MARKET_BY_COUNTRY[country].currency


def _uuid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _local_time(rng: random.Random, day_start: datetime, offset: int) -> datetime:
    """A moment of the day starting at ``day_start`` (UTC midnight) at a plausible local hour."""
    hour = _HOURS.pick(rng)
    return day_start + timedelta(hours=hour - offset, seconds=rng.randrange(3600))


def _phone(rng: random.Random, market: Market) -> str:
    digits = "".join(str(rng.randrange(10)) for _ in range(market.phone_digits))
    return f"{market.phone_prefix}{digits}"


def _lang_path(lang: str) -> str:
    return "" if lang == "en" else f"/{lang}"


def _page_for(rng: random.Random, kind: str, product: catalog.ProductSpec | None = None) -> tuple[str, str, str]:
    """(path, page name, title) of a page of the shop."""
    if kind == "home":
        return "/", "Home", "Pohjola Outdoor – Nordic outdoor and home goods"
    if kind == "category":
        key, label = rng.choice(catalog.CATEGORIES)
        return f"/c/{key}", "Category", f"{label} – Pohjola Outdoor"
    if kind == "product":
        p = product or rng.choice(catalog.PRODUCTS)
        return f"/p/{p.slug}", "Product", f"{p.name} – Pohjola Outdoor"
    if kind == "guide":
        topic = rng.choice(("how-to-choose-a-sleeping-bag", "layering-for-winter", "sauna-etiquette", "first-hike"))
        return f"/guides/{topic}", "Guide", f"{topic.replace('-', ' ').capitalize()} – Pohjola Outdoor"
    if kind == "wholesale":
        return "/wholesale", "Wholesale", "Become a retailer – Pohjola Outdoor"
    if kind == "checkout":
        return "/checkout", "Checkout", "Checkout – Pohjola Outdoor"
    if kind == "cart":
        return "/cart", "Cart", "Your cart – Pohjola Outdoor"
    if kind == "form":
        return "/newsletter", "Newsletter", "Newsletter – Pohjola Outdoor"
    raise ValueError(kind)


_LANDING_KIND = {
    "paid_search": ("product", "category"),
    "paid_social": ("product",),
    "organic_search": ("guide", "product", "category", "home"),
    "organic_social": ("product", "guide"),
    "email": ("category", "product", "home"),
    "referral": ("product", "guide"),
    "display": ("home", "category"),
    "affiliate": ("product",),
    "events": ("wholesale",),
    "outbound": ("wholesale",),
    "offline": ("home", "category"),
    "direct": ("home",),
}


# --- the person being simulated ------------------------------------------------------------------------------------


class _Person:
    """Accumulates one contact's events, touches and stage candidates while its story is told."""

    def __init__(
        self,
        rng: random.Random,
        ctx: Context,
        ids: IdCounter,
        rows: Rows,
        contact_id: int,
        anonymous_id: str,
        market: Market,
        lang: str,
        offset: int,
        b2b: bool,
        tag: str,
    ) -> None:
        self.rng = rng
        self.ctx = ctx
        self.ids = ids
        self.rows = rows
        self.contact_id = contact_id
        self.anonymous_id = anonymous_id
        self.market = market
        self.lang = lang
        self.offset = offset
        self.b2b = b2b
        self.tag = tag  # message id prefix
        self.seq = 0
        self.locale = f"{lang}-{market.country}"
        self.user_agent = rng.choice(USER_AGENTS)
        self.first_touch: tuple[datetime, VisitSpec] | None = None
        self.latest_touch: tuple[datetime, VisitSpec] | None = None
        self.first_seen: datetime | None = None
        self.last_seen: datetime | None = None

    def event(
        self, kind: str, name: str, at: datetime, properties: dict[str, Any], context: dict[str, Any] | None = None
    ) -> int:
        event_id = self.ids.event()
        self.seq += 1
        ctx = {"locale": self.locale, "userAgent": self.user_agent}
        if context:
            ctx.update(context)
        self.rows.events.append(
            {
                "id": event_id,
                "workspace_id": self.ctx.workspace_id,
                "contact_id": self.contact_id,
                "anonymous_id": self.anonymous_id,
                "kind": kind,
                "name": name,
                "properties": properties,
                "context": ctx,
                "occurred_at": at,
                "received_at": at + timedelta(milliseconds=self.rng.randrange(50, 2500)),
                "message_id": f"{self.tag}-{self.seq}",
            }
        )
        if self.first_seen is None or at < self.first_seen:
            self.first_seen = at
        if self.last_seen is None or at > self.last_seen:
            self.last_seen = at
        return event_id

    def page(self, at: datetime, path: str, name: str, title: str, referrer: str | None, query: str = "") -> int:
        url = f"{SITE_URL}{_lang_path(self.lang)}{path}"
        if query:
            url = f"{url}?{query}"
        full_path = f"{_lang_path(self.lang)}{path}"
        props = {"url": url, "path": full_path, "title": title, "referrer": referrer or "", "name": name}
        return self.event("page", name, at, props)

    def session(
        self, start: datetime, channel: str, n_pages: int, landing: tuple[str, str, str] | None = None
    ) -> tuple[datetime, str]:
        """A visit: a landing page from ``channel`` with its touch, then ``n_pages - 1`` more pages."""
        visit = build_visit(self.rng, channel, country=self.market.country, b2b=self.b2b, when=start)
        path, name, title = landing or _page_for(self.rng, self.rng.choice(_LANDING_KIND[channel]))
        url = f"{SITE_URL}{_lang_path(self.lang)}{path}" + (f"?{visit.query}" if visit.query else "")
        campaign = visit.campaign_context()
        props = {
            "url": url,
            "path": f"{_lang_path(self.lang)}{path}",
            "title": title,
            "referrer": visit.referrer or "",
            "name": name,
        }
        event_id = self.event("page", name, start, props, {"campaign": campaign} if campaign else None)
        self.rows.touches.append(
            {
                "workspace_id": self.ctx.workspace_id,
                "contact_id": self.contact_id,
                "event_id": event_id,
                "occurred_at": start,
                "channel": channel,
                "source": visit.source,
                "medium": visit.medium,
                "campaign": visit.campaign,
                "term": visit.term,
                "content": visit.content,
                "referrer": visit.referrer,
                "landing_url": url,
            }
        )
        if self.first_touch is None or start < self.first_touch[0]:
            self.first_touch = (start, visit)
        if self.latest_touch is None or start >= self.latest_touch[0]:
            self.latest_touch = (start, visit)
        t = start
        prev = url
        for _ in range(n_pages - 1):
            t += timedelta(seconds=self.rng.randrange(15, 180))
            path, name, title = _page_for(self.rng, self.rng.choice(("category", "product", "product", "guide")))
            self.page(t, path, name, title, prev)
            prev = f"{SITE_URL}{_lang_path(self.lang)}{path}"
        return t, prev

    def track(self, at: datetime, name: str, properties: dict[str, Any]) -> int:
        return self.event("track", name, at, properties)


def _stage_rows(
    ctx: Context, contact_id: int, candidates: list[tuple[datetime, int, str, str]]
) -> tuple[str, datetime, list[dict[str, Any]]]:
    """Stage changes from time-ordered candidates (at, order, stage, reason); returns the final stage and time."""
    out: list[dict[str, Any]] = []
    current: str | None = None
    at_current: datetime | None = None
    for at, _, stage, reason in sorted(candidates, key=lambda c: (c[0], c[1])):
        if stage == current:
            continue
        if stage == "inactive":
            if current not in ("customer", "loyal", "advocate"):
                continue
        elif current == "inactive":
            if stage not in ("customer", "loyal"):
                continue
        elif current is not None and STAGE_POSITION[stage] <= STAGE_POSITION[current]:
            continue
        out.append(
            {
                "workspace_id": ctx.workspace_id,
                "contact_id": contact_id,
                "from_stage": current,
                "to_stage": stage,
                "changed_at": at,
                "reason": reason,
                "source": "rule",
                "actor": None,
            }
        )
        current, at_current = stage, at
    assert current is not None and at_current is not None
    return current, at_current, out


def _order_lines(
    rng: random.Random, currency: str, target: int, b2b: bool, interests: list[str]
) -> list[tuple[catalog.ProductSpec, int, int]]:
    """(product, quantity, unit price) lines whose sum covers ``target`` (minor units) with a small overshoot."""
    table = _PRICES_B2B[currency] if b2b else _PRICES[currency]
    prices = [p for p, _ in table]
    lines: dict[str, list[Any]] = {}
    remaining = target
    categories = [c for i in interests for c in INTEREST_CATEGORIES[i]] or [c for c, _ in catalog.CATEGORIES]

    def add(product: catalog.ProductSpec, qty: int) -> None:
        nonlocal remaining
        price = catalog.price_in(product, currency)
        if product.sku in lines:
            lines[product.sku][1] += qty
        else:
            lines[product.sku] = [product, qty, price]
        remaining -= price * qty

    while remaining > 0:
        if remaining <= prices[-1] and (lines or rng.random() < 0.5):
            # finish with the cheapest product that covers what is left
            product = table[bisect.bisect_left(prices, remaining)][1]
            add(product, 1)
            break
        if b2b and rng.random() < 0.5:
            product = rng.choice(table)[1]
            qty = max(1, min(24, remaining // (2 * catalog.price_in(product, currency))))
        else:
            product = rng.choice(_BY_CATEGORY[rng.choice(categories)])
            qty = 1
        add(product, qty)
        bundle = catalog.BUNDLE_BY_SKU.get(product.sku)
        if bundle and rng.random() < bundle[1]:
            for sku in bundle[0]:
                if remaining > catalog.price_in(catalog.PRODUCT_BY_SKU[sku], currency):
                    add(catalog.PRODUCT_BY_SKU[sku], qty)
    return [(p, q, price) for p, q, price in lines.values()]


# --- companies ----------------------------------------------------------------------------------------------------


def generate_companies(
    params: DemoParams, *, workspace_id: int, id_base: int, owners: list[int]
) -> list[dict[str, Any]]:
    """The B2B accounts (``params.n_companies`` rows with ids ``id_base + 1 ...``)."""
    rng = random.Random(f"suppilo-demo:{params.seed}:companies")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    anchor = params.anchor
    for i in range(params.n_companies):
        market = _MARKETS.pick(rng)
        first, second = COMPANY_WORDS[market.country]
        base = rng.choice(first) + rng.choice(second)
        if rng.random() < 0.4:
            base = f"{base} {rng.choice(LAST_NAMES[market.country])}"
        name = f"{base} {market.company_suffix}"
        slug = "-".join(part for part in ascii_fold(base.replace("&", "and")).replace(".", "").split() if part)
        slug = slug.strip("-") or "shop"
        domain = f"{slug}.{market.tld}.example"
        n = 2
        while domain in seen:
            domain = f"{slug}-{n}.{market.tld}.example"
            n += 1
        seen.add(domain)
        city, _region = _CITY[market.country].pick(rng)
        employees = max(2, int(rng.lognormvariate(2.3, 1.0)))
        revenue_eur = int(employees * rng.uniform(90_000, 220_000))
        created = anchor - timedelta(days=HISTORY_DAYS + rng.randrange(0, 400))
        rows.append(
            {
                "id": id_base + i + 1,
                "workspace_id": workspace_id,
                "name": name,
                "name_lower": name.lower(),
                "domain": domain,
                "industry": _INDUSTRIES.pick(rng),
                "employees": employees,
                "annual_revenue_minor": catalog.eur_to(market.currency, revenue_eur * 100),
                "revenue_currency": market.currency,
                "country": market.country,
                "city": city,
                "owner_id": owners[0] if rng.random() < 0.7 else owners[-1],
                "properties": {"customer_type": "B2B", "tier": rng.choice(("A", "B", "B", "C", "C", "C"))},
                "external_id": None,
                "created_at": created,
                "updated_at": created,
            }
        )
    return rows


# --- contacts -----------------------------------------------------------------------------------------------------


def _contact_row(
    ctx: Context,
    person: _Person,
    *,
    email: str | None,
    external_id: str | None,
    anonymous: bool,
    first: str | None,
    last: str | None,
    phone: str | None,
    city: tuple[str, str] | None,
    timezone: str,
    job_title: str | None,
    owner_id: int | None,
    company_id: int | None,
    stage: str,
    stage_at: datetime,
    properties: dict[str, Any],
) -> dict[str, Any]:
    assert person.first_touch and person.latest_touch and person.first_seen and person.last_seen
    ft_at, ft = person.first_touch
    lt_at, lt = person.latest_touch
    return {
        "id": person.contact_id,
        "workspace_id": ctx.workspace_id,
        "email": email,
        "external_id": external_id,
        "is_anonymous": anonymous,
        "first_name": first,
        "last_name": last,
        "first_name_lower": first.lower() if first else None,
        "last_name_lower": last.lower() if last else None,
        "phone": phone,
        "language": person.lang,
        "country": person.market.country,
        "region": city[1] if city else None,
        "city": city[0] if city else None,
        "timezone": timezone,
        "job_title": job_title,
        "owner_id": owner_id,
        "company_id": company_id,
        "lifecycle_stage": stage,
        "lifecycle_stage_at": stage_at,
        "properties": properties,
        "first_touch_channel": ft.channel,
        "first_touch_source": ft.source,
        "first_touch_campaign": ft.campaign,
        "first_touch_at": ft_at,
        "latest_touch_channel": lt.channel,
        "latest_touch_source": lt.source,
        "latest_touch_campaign": lt.campaign,
        "latest_touch_at": lt_at,
        "first_seen_at": person.first_seen,
        "last_seen_at": person.last_seen,
        "version": 1,
        "created_at": person.first_seen,
        "updated_at": person.last_seen,
    }


def _anonymous_visitor(
    rng: random.Random, params: DemoParams, ctx: Context, ids: IdCounter, rows: Rows, cid: int, key: str
) -> None:
    market = _MARKETS.pick(rng)
    lang = _LANG[market.country].pick(rng)
    tz_index = _TZ[market.country].pick(rng)
    offset = market.utc_offset_hours[tz_index]
    anon = _uuid(rng)
    person = _Person(rng, ctx, ids, rows, cid, anon, market, lang, offset, False, key)
    day = params.anchor - timedelta(days=rng.randrange(1, HISTORY_DAYS + 1))
    start = min(_local_time(rng, day, offset), params.anchor - timedelta(hours=2))
    channel = _B2C_CHANNELS.pick(rng)
    n_sessions = 1 if rng.random() < 0.8 else 2
    for s in range(n_sessions):
        if start >= params.anchor - timedelta(minutes=30):
            break
        person.session(start, channel if s == 0 else "direct", rng.choice((1, 1, 2)))
        start += timedelta(days=rng.expovariate(1 / 5))
    assert person.first_seen is not None
    stage_at = person.first_seen
    rows.stage_changes.append(
        {
            "workspace_id": ctx.workspace_id,
            "contact_id": cid,
            "from_stage": None,
            "to_stage": "awareness",
            "changed_at": stage_at,
            "reason": "rule: first visit",
            "source": "rule",
            "actor": None,
        }
    )
    rows.identities.append(
        {
            "workspace_id": ctx.workspace_id,
            "kind": "anonymous_id",
            "value": anon,
            "contact_id": cid,
            "created_at": stage_at,
        }
    )
    city = _CITY[market.country].pick(rng) if rng.random() < 0.6 else None
    rows.contacts.append(
        _contact_row(
            ctx,
            person,
            email=None,
            external_id=None,
            anonymous=True,
            first=None,
            last=None,
            phone=None,
            city=city,
            timezone=market.timezones[tz_index][0],
            job_title=None,
            owner_id=None,
            company_id=None,
            stage="awareness",
            stage_at=stage_at,
            properties={},
        )
    )


def _known_contact(rng: random.Random, params: DemoParams, ctx: Context, ids: IdCounter, rows: Rows, i: int) -> None:
    anchor = params.anchor
    ws = ctx.workspace_id
    cid = ctx.contact_id_base + 4 * i + 1
    merged_id = cid + 1
    market = _MARKETS.pick(rng)
    country = market.country
    lang = _LANG[country].pick(rng)
    tz_index = _TZ[country].pick(rng)
    offset = market.utc_offset_hours[tz_index]
    b2b = rng.random() < B2B_SHARE
    name_lang = {"FI": "fi", "SE": "sv", "DK": "da", "NO": "nb", "EE": "et", "LV": "lv", "LT": "lt", "DE": "de"}.get(
        country, "en"
    )
    if country == "FI" and lang == "sv":
        name_lang = "sv"
    first = rng.choice(FIRST_NAMES[name_lang])
    last = rng.choice(LAST_NAMES["FI-sv" if name_lang == "sv" and country == "FI" else country])
    if country == "LV" and last in LV_FEMALE and rng.random() < 0.5:
        last = LV_FEMALE[last]
    local = f"{ascii_fold(first)}.{ascii_fold(last)}"
    company: CompanyInfo | None = None
    if b2b:
        company = rng.choice(ctx.companies_in(country))
    if company is not None and rng.random() < 0.8:
        email = f"{local}{i}@{company.domain}"
        company_id: int | None = company.id
    else:
        email = f"{local}{i}@{rng.choice(market.free_mail)}"
        company_id = None
    owner_id = company.owner_id if company is not None else None
    channel = (_B2B_CHANNELS if b2b else _B2C_CHANNELS).pick(rng)
    econ = CHANNEL_ECONOMICS[channel]
    anon = _uuid(rng)
    person = _Person(rng, ctx, ids, rows, cid, anon, market, lang, offset, b2b, f"k{i}")
    interests = rng.sample(INTERESTS, rng.choice((1, 1, 2, 2, 3)))
    tags: set[str] = set()
    stages: list[tuple[datetime, int, str, str]] = []

    # 1. anonymous visits until the contact leaves its details
    day = anchor - timedelta(days=rng.randrange(1, HISTORY_DAYS + 1))
    start = min(_local_time(rng, day, offset), anchor - timedelta(hours=3))
    n_pre = 1 + (rng.random() < 0.3) + (rng.random() < 0.1)
    t = start
    for s in range(n_pre):
        ch = channel if s == 0 else ("direct" if rng.random() < 0.5 else channel)
        last_t, _ = person.session(t, ch, rng.choice((1, 1, 2, 3)))
        gap = timedelta(days=rng.expovariate(1 / 3))
        if s < n_pre - 1 and last_t + gap + timedelta(hours=1) < anchor:
            t = max(_local_time(rng, (last_t + gap).replace(hour=0, minute=0, second=0, microsecond=0), offset), last_t)
            t += timedelta(minutes=5)
            if t >= anchor - timedelta(hours=1):
                break
        else:
            break
    # the loop above runs at least one session, which sets both
    assert person.first_seen is not None and person.last_seen is not None
    stages.append((person.first_seen, 0, "awareness", "rule: first visit"))

    # 2. identification: a form or a sign-up, in the last anonymous session
    t_id = person.last_seen + timedelta(seconds=rng.randrange(20, 240))
    r = rng.random()
    if b2b and (channel in ("events", "outbound") or r < 0.6):
        form_slug: str | None = "wholesale-inquiry"
    elif r < 0.55:
        form_slug = "newsletter"
    elif r < 0.75:
        form_slug = "winter-catalogue"
    else:
        form_slug = None  # account sign-up
    topics: list[str] = []
    if form_slug is not None:
        form = ctx.forms[form_slug]
        form_path = FORM_PATHS[form_slug]
        person.page(t_id - timedelta(seconds=10), form_path, "Form", f"{form['name']} – Pohjola Outdoor", None)
        data: dict[str, Any] = {"email": email, "first_name": first}
        if form_slug != "newsletter":
            data["last_name"] = last
        if form_slug == "newsletter":
            topics = rng.sample(NEWSLETTER_TOPICS, rng.choice((1, 2, 2, 3)))
            data["topics"] = topics
        if form_slug == "wholesale-inquiry":
            data["company"] = company.domain.split(".")[0].replace("-", " ").title() if company else ""
            data["message"] = rng.choice(
                ("Looking to stock your wool textiles.", "Price list please.", "Sauna range for our hotel shop.")
            )
        page_url = f"{SITE_URL}{_lang_path(lang)}{form_path}"
        person.track(t_id, "Form Submitted", {"form_id": form_slug, "form_name": form["name"], "consent_given": True})
        rows.form_submissions.append(
            {
                "workspace_id": ws,
                "form_id": ctx.form_ids[form_slug],
                "contact_id": cid,
                "data": data,
                "consent_given": True,
                "consent_text": form["consent_text"],
                "consent_version": CONSENT_VERSION,
                "page_url": page_url,
                "ip": None,
                "user_agent": person.user_agent,
                "submitted_at": t_id,
            }
        )
        tags.update(form["tags"])
        stages.append((t_id, 1, "interest", f"rule: form_submitted: {form_slug}"))
    else:
        person.track(t_id, "Signed Up", {"method": "email"})
        stages.append((t_id, 1, "interest", "rule: contact_identified: sign-up"))
    person.event("identify", "identify", t_id + timedelta(seconds=1), {"traits": {"email": email}})
    rows.identities.append(
        {"workspace_id": ws, "kind": "anonymous_id", "value": anon, "contact_id": cid, "created_at": start}
    )
    rows.merges.append(
        {
            "workspace_id": ws,
            "contact_id": cid,
            "merged_id": merged_id,
            "merged_at": t_id + timedelta(seconds=1),
            "reason": "identified: anonymous visitor left an email address",
            "snapshot": {"is_anonymous": True, "anonymous_id": anon, "first_seen_at": start.isoformat()},
        }
    )

    # 3. what happens next
    conv = econ.conversion * (1.1 if b2b else 1.0)
    will_buy = rng.random() < conv
    gap_days = rng.expovariate(1 / (25 if b2b else 12))
    t_first_order = t_id + timedelta(days=gap_days, hours=rng.uniform(1, 10))
    if t_first_order >= anchor - timedelta(hours=1):
        will_buy = False
    engaged = rng.random() < (0.55 if will_buy else 0.3)
    horizon = t_first_order if will_buy else anchor
    if engaged:
        t_cons = t_id + (horizon - t_id) * rng.uniform(0.2, 0.5)
        stages.append((t_cons, 2, "consideration", "score: engagement over threshold"))
        if t_cons < anchor - timedelta(hours=1):
            person.session(t_cons - timedelta(minutes=3), _RETURN.pick(rng), rng.choice((2, 3, 4)))
    if b2b and (form_slug == "wholesale-inquiry") and rng.random() < (0.8 if will_buy else 0.35):
        t_dec = t_id + (horizon - t_id) * rng.uniform(0.55, 0.85)
        stages.append((t_dec, 3, "decision", "rule: deal_opened: wholesale terms sent"))
        tags.add("sales-qualified")

    # browsing sessions, some leave a cart behind
    n_browse = rng.choice((0, 0, 0, 1, 1, 2)) + (1 if engaged else 0)
    span = (anchor - t_id).total_seconds()
    currency = currency_for(country)
    for _ in range(n_browse):
        bt = t_id + timedelta(seconds=rng.uniform(0.05, 1.0) * span)
        if bt >= anchor - timedelta(hours=1):
            continue
        end, _ = person.session(bt, _RETURN.pick(rng), rng.choice((1, 1, 2, 3)))
        if rng.random() < ABANDONED_CART_RATE and end + timedelta(minutes=5) < anchor:
            product = rng.choice(_BY_CATEGORY[rng.choice(INTEREST_CATEGORIES[rng.choice(interests)])])
            price = catalog.price_in(product, currency)
            at = end + timedelta(minutes=2)
            person.track(
                at,
                "Product Added",
                {
                    "product_id": product.sku,
                    "sku": product.sku,
                    "name": product.name,
                    "price": price / 100,
                    "currency": currency,
                    "quantity": 1,
                },
            )
            status = "abandoned" if at < anchor - timedelta(hours=24) else "open"
            rows.carts.append(
                {
                    "workspace_id": ws,
                    "external_id": f"cart-{person.tag}-{person.seq}",
                    "contact_id": cid,
                    "status": status,
                    "currency": currency,
                    "value_minor": price,
                    "lines": [{"sku": product.sku, "name": product.name, "quantity": 1, "unit_price_minor": price}],
                    "order_id": None,
                    "last_activity_at": at,
                    "created_at": at,
                    "updated_at": at,
                }
            )

    # 4. orders: BG/NBD purchase process, Gamma-Gamma order values
    external_id = None
    order_times: list[datetime] = []
    spend_eur = 0
    if will_buy:
        bg = BGNBD_B2B if b2b else BGNBD_B2C
        gg = GAMMA_GAMMA_B2B if b2b else GAMMA_GAMMA_B2C
        lam = rng.gammavariate(bg.r, 1 / bg.alpha)
        p_drop = rng.betavariate(bg.a, bg.b)
        nu = rng.gammavariate(gg.q, 1 / gg.gamma)
        ot = t_first_order
        dropped = False
        while True:
            order_times.append(ot)
            if rng.random() < p_drop:
                dropped = True
                break
            order_gap = rng.expovariate(lam)  # days; may be years for a slow buyer
            if order_gap * 86400 >= (anchor - ot).total_seconds() - 600:
                break
            ot = ot + timedelta(days=order_gap)
        external_id = f"shop-{params.seed}-{i + 1:07d}"
        rows.identities.append(
            {
                "workspace_id": ws,
                "kind": "user_id",
                "value": external_id,
                "contact_id": cid,
                "created_at": t_first_order,
            }
        )
        for n, ot in enumerate(order_times):
            value_eur = max(1, round(rng.gammavariate(gg.p, 1 / nu) * 100))
            spend_eur += value_eur
            order_channel = channel if n == 0 else _RETURN.pick(rng)
            land_at = ot - timedelta(minutes=rng.randrange(8, 40))
            total = catalog.eur_to(currency, value_eur)
            lines = _order_lines(rng, currency, total, b2b, interests)
            first_product = lines[0][0]
            person.session(land_at, order_channel, 2, landing=_page_for(rng, "product", first_product))
            step = (ot - land_at - timedelta(minutes=6)) / (len(lines) + 1)
            at = land_at + timedelta(minutes=4)
            cart_lines = []
            for product, qty, price in lines:
                at += step
                person.track(
                    at,
                    "Product Added",
                    {
                        "product_id": product.sku,
                        "sku": product.sku,
                        "name": product.name,
                        "price": price / 100,
                        "currency": currency,
                        "quantity": qty,
                    },
                )
                cart_lines.append(
                    {"sku": product.sku, "name": product.name, "quantity": qty, "unit_price_minor": price}
                )
            person.page(ot - timedelta(seconds=90), *_page_for(rng, "checkout"), f"{SITE_URL}{_lang_path(lang)}/cart")
            subtotal = sum(q * price for _, q, price in lines)
            discount = subtotal - total
            order_id = ids.order()
            order_ext = f"PO-{params.seed}-{i + 1:07d}-{n + 1:02d}"
            vat = VAT_RATE[country] if not (b2b and company_id and country != "FI") else 0.0
            person.track(
                ot,
                "Order Completed",
                {
                    "order_id": order_ext,
                    "total": total / 100,
                    "revenue": total / 100,
                    "currency": currency,
                    "products": [{"sku": p.sku, "quantity": q, "price": pr / 100} for p, q, pr in lines],
                },
            )
            refunded = 0
            status = "completed"
            if rng.random() < REFUND_RATE:
                full = rng.random() < 0.5
                amount = total if full else min(total, lines[-1][2])
                r_at = ot + timedelta(days=rng.uniform(3, 30))
                if r_at < anchor:
                    refunded = amount
                    status = "refunded" if full else "partially_refunded"
                    rows.refunds.append(
                        {
                            "workspace_id": ws,
                            "external_id": f"RF-{order_ext}",
                            "order_id": order_id,
                            "amount_minor": amount,
                            "currency": currency,
                            "refunded_at": r_at,
                            "reason": rng.choice(
                                ("wrong size", "damaged in transit", "changed mind", "not as described")
                            ),
                        }
                    )
                    person.track(
                        r_at, "Order Refunded", {"order_id": order_ext, "total": amount / 100, "currency": currency}
                    )
            rows.orders.append(
                {
                    "id": order_id,
                    "workspace_id": ws,
                    "external_id": order_ext,
                    "contact_id": cid,
                    "status": status,
                    "placed_at": ot,
                    "currency": currency,
                    "subtotal_minor": subtotal,
                    "discount_minor": discount,
                    "tax_minor": round(total * vat / (1 + vat)),
                    "shipping_minor": 0,
                    "total_minor": total,
                    "refunded_minor": refunded,
                    "coupon_code": ("MEMBER" if discount * 20 > subtotal else None),
                    "channel": order_channel,
                    "properties": {"value_eur_minor": value_eur, "b2b": b2b},
                    "created_at": ot,
                    "updated_at": ot,
                }
            )
            for product, qty, price in lines:
                rows.order_lines.append(
                    {
                        "workspace_id": ws,
                        "order_id": order_id,
                        "product_id": ctx.product_ids[product.sku],
                        "sku": product.sku,
                        "name": product.name,
                        "category": product.category,
                        "quantity": qty,
                        "unit_price_minor": price,
                    }
                )
            rows.carts.append(
                {
                    "workspace_id": ws,
                    "external_id": f"cart-{person.tag}-o{n + 1}",
                    "contact_id": cid,
                    "status": "converted",
                    "currency": currency,
                    "value_minor": subtotal,
                    "lines": cart_lines,
                    "order_id": order_id,
                    "last_activity_at": ot,
                    "created_at": land_at,
                    "updated_at": ot,
                }
            )
            stages.append(
                (
                    ot,
                    4,
                    "customer" if n == 0 else "loyal",
                    f"rule: {'first_order' if n == 0 else 'repeat_order'}: {order_ext}",
                )
            )
        # inactivity: no order for INACTIVE_AFTER_DAYS
        limit = timedelta(days=INACTIVE_AFTER_DAYS)
        for a, b in zip(order_times, [*order_times[1:], anchor], strict=True):
            if b - a > limit:
                stages.append((a + limit, 5, "inactive", f"rule: no order for {INACTIVE_AFTER_DAYS} days"))
        if len(order_times) >= 2 and rng.random() < 0.15:
            adv_at = order_times[1] + timedelta(days=rng.expovariate(1 / 20))
            if adv_at < anchor and (dropped is False or adv_at < order_times[-1] + limit):
                person.track(adv_at, "Referral Sent", {"channel": rng.choice(("email", "link")), "reward": "10 EUR"})
                stages.append((adv_at, 6, "advocate", "rule: referral_made"))
        if spend_eur > (300_000 if b2b else 40_000):
            tags.add("vip")
    if channel == "events":
        tags.add("event-lead")
    stage, stage_at, stage_rows = _stage_rows(ctx, cid, stages)
    rows.stage_changes.extend(stage_rows)
    if stage == "inactive":
        tags.add("win-back")
    for tag in sorted(tags):
        rows.tags.append({"contact_id": cid, "tag": tag, "workspace_id": ws})
    props: dict[str, Any] = {"customer_type": "B2B" if b2b else "B2C", "interests": sorted(interests)}
    if topics:
        props["newsletter_topics"] = sorted(topics)
    rows.contacts.append(
        _contact_row(
            ctx,
            person,
            email=email,
            external_id=external_id,
            anonymous=False,
            first=first,
            last=last,
            phone=_phone(rng, market) if (b2b or rng.random() < 0.55) else None,
            city=_CITY[country].pick(rng),
            timezone=market.timezones[tz_index][0],
            job_title=_TITLES.pick(rng) if b2b else None,
            owner_id=owner_id,
            company_id=company_id,
            stage=stage,
            stage_at=stage_at,
            properties=props,
        )
    )


def generate_chunk(params: DemoParams, ctx: Context, ids: IdCounter, chunk: int) -> Rows:
    """The rows of chunk ``chunk``: its known contacts and their anonymous visitors, with everything they did."""
    rows = Rows()
    rng = random.Random(f"suppilo-demo:{params.seed}:{params.today.isoformat()}:{chunk}")
    start = chunk * CHUNK_SIZE
    for i in range(start, min(params.contacts, start + CHUNK_SIZE)):
        _known_contact(rng, params, ctx, ids, rows, i)
        for k in range(ANONYMOUS_PER_KNOWN):
            _anonymous_visitor(rng, params, ctx, ids, rows, ctx.contact_id_base + 4 * i + 3 + k, f"v{i}.{k}")
    return rows
