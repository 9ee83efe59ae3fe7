"""The demo business's product catalogue: 64 products in 8 categories, prices per currency, bundles."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Fixed demo exchange rates (units of the currency per 1 EUR). Order values are drawn in EUR and converted
# with these, so analytics can convert back exactly.
FX_PER_EUR: dict[str, float] = {"EUR": 1.0, "SEK": 11.5, "DKK": 7.46, "NOK": 11.6, "USD": 1.08}
CURRENCIES: tuple[str, ...] = tuple(FX_PER_EUR)


@dataclass(frozen=True, slots=True)
class ProductSpec:
    """A product of the catalogue; ``price_eur`` in euro cents."""

    sku: str
    name: str
    category: str
    price_eur: int
    b2b: bool = False  # sold mostly wholesale (display stands, bulk packs)

    @property
    def slug(self) -> str:
        """URL path segment of the product."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


CATEGORIES: tuple[tuple[str, str], ...] = (
    ("tents", "Tents & Shelters"),
    ("sleeping", "Sleeping Bags & Mats"),
    ("clothing", "Outdoor Clothing"),
    ("footwear", "Footwear"),
    ("backpacks", "Backpacks"),
    ("kitchen", "Camp Kitchen"),
    ("home", "Home & Sauna"),
    ("textiles", "Wool Textiles"),
)
CATEGORY_LABEL: dict[str, str] = dict(CATEGORIES)

_RAW: tuple[tuple[str, str, float], ...] = (
    ("tents", "Lapland 2 Tunnel Tent", 389.0),
    ("tents", "Lapland 3 Tunnel Tent", 469.0),
    ("tents", "Kota Lavvu Shelter", 329.0),
    ("tents", "Tarp 3x3 Ripstop", 79.0),
    ("tents", "Tent Footprint Lapland 2", 49.0),
    ("tents", "Aluminium Tent Pegs 10-pack", 24.9),
    ("tents", "Hammock Ultralight", 59.0),
    ("tents", "Bivy Bag Storm", 149.0),
    ("sleeping", "Revontuli -10 Down Sleeping Bag", 299.0),
    ("sleeping", "Kesä +5 Summer Sleeping Bag", 89.0),
    ("sleeping", "Self-inflating Mat 5 cm", 79.0),
    ("sleeping", "Foam Sit Pad", 14.9),
    ("sleeping", "Inflatable Pillow", 24.9),
    ("sleeping", "Merino Sleeping Bag Liner", 69.0),
    ("sleeping", "Winter Mat R7", 159.0),
    ("sleeping", "Compression Sack 20 l", 29.0),
    ("clothing", "Tunturi Shell Jacket", 279.0),
    ("clothing", "Tunturi Shell Trousers", 219.0),
    ("clothing", "Merino Base Layer Top", 79.0),
    ("clothing", "Merino Base Layer Bottoms", 69.0),
    ("clothing", "Fleece Mid Layer", 89.0),
    ("clothing", "Down Vest", 129.0),
    ("clothing", "Wool Beanie", 29.0),
    ("clothing", "Hiking Socks 2-pack", 24.9),
    ("footwear", "Erä GTX Hiking Boots", 219.0),
    ("footwear", "Trail Running Shoes", 149.0),
    ("footwear", "Winter Boots -30", 189.0),
    ("footwear", "Felt Sauna Slippers", 39.0),
    ("footwear", "Gaiters", 39.0),
    ("footwear", "Boot Wax", 12.9),
    ("footwear", "Wool Insoles", 19.9),
    ("footwear", "Rubber Boots", 79.0),
    ("backpacks", "Vaellus 65 l Trekking Pack", 249.0),
    ("backpacks", "Päivä 25 l Daypack", 99.0),
    ("backpacks", "Rolltop 30 l City Pack", 119.0),
    ("backpacks", "Dry Bag 10 l", 24.9),
    ("backpacks", "Hip Pack", 39.0),
    ("backpacks", "Rain Cover M", 24.9),
    ("backpacks", "Kids' Pack 12 l", 49.0),
    ("backpacks", "Trekking Poles Carbon", 129.0),
    ("kitchen", "Trangia-style Stove Set", 89.0),
    ("kitchen", "Titanium Mug 450 ml", 34.9),
    ("kitchen", "Kuksa Birch Cup", 39.0),
    ("kitchen", "Fire Steel", 14.9),
    ("kitchen", "Puukko Knife", 69.0),
    ("kitchen", "Insulated Bottle 0.75 l", 34.9),
    ("kitchen", "Freeze-dried Meal 6-pack", 49.0),
    ("kitchen", "Cast Iron Campfire Pan", 59.0),
    ("home", "Sauna Bucket & Ladle", 49.0),
    ("home", "Sauna Towel Linen", 39.0),
    ("home", "Birch Sauna Whisk 3-pack", 19.9),
    ("home", "Candle Lantern", 44.9),
    ("home", "Reindeer Hide", 189.0),
    ("home", "Birch Cutting Board", 34.9),
    ("home", "Sauna Scent Birch", 12.9),
    ("home", "Retail Display Stand (wholesale)", 390.0),
    ("textiles", "Lambswool Throw", 119.0),
    ("textiles", "Merino Blanket", 169.0),
    ("textiles", "Wool Mittens", 39.0),
    ("textiles", "Knitted Scarf", 49.0),
    ("textiles", "Wool Cushion Cover", 34.9),
    ("textiles", "Linen Tablecloth", 79.0),
    ("textiles", "Felted Seat Pad 4-pack", 59.0),
    ("textiles", "Wool Socks Bulk 24-pack (wholesale)", 199.0),
)


def _sku(category: str, index: int) -> str:
    return f"PO-{category[:3].upper()}-{index:03d}"


def _build() -> tuple[ProductSpec, ...]:
    counters: dict[str, int] = {}
    out: list[ProductSpec] = []
    for category, name, price in _RAW:
        counters[category] = counters.get(category, 0) + 1
        out.append(
            ProductSpec(
                _sku(category, counters[category]),
                name,
                category,
                round(price * 100),
                b2b="wholesale" in name,
            )
        )
    return tuple(out)


PRODUCTS: tuple[ProductSpec, ...] = _build()
PRODUCT_BY_SKU: dict[str, ProductSpec] = {p.sku: p for p in PRODUCTS}


def _by_name(name: str) -> str:
    for p in PRODUCTS:
        if p.name == name:
            return p.sku
    raise KeyError(name)


# Products often bought together: when the first is in an order, the others follow with the given probability.
BUNDLES: tuple[tuple[str, tuple[str, ...], float], ...] = (
    (
        _by_name("Lapland 2 Tunnel Tent"),
        (_by_name("Tent Footprint Lapland 2"), _by_name("Aluminium Tent Pegs 10-pack")),
        0.6,
    ),
    (
        _by_name("Revontuli -10 Down Sleeping Bag"),
        (_by_name("Winter Mat R7"), _by_name("Merino Sleeping Bag Liner")),
        0.5,
    ),
    (_by_name("Tunturi Shell Jacket"), (_by_name("Tunturi Shell Trousers"),), 0.55),
    (_by_name("Merino Base Layer Top"), (_by_name("Merino Base Layer Bottoms"),), 0.6),
    (_by_name("Erä GTX Hiking Boots"), (_by_name("Boot Wax"), _by_name("Hiking Socks 2-pack")), 0.5),
    (_by_name("Vaellus 65 l Trekking Pack"), (_by_name("Rain Cover M"), _by_name("Dry Bag 10 l")), 0.45),
    (_by_name("Trangia-style Stove Set"), (_by_name("Freeze-dried Meal 6-pack"), _by_name("Fire Steel")), 0.5),
    (_by_name("Sauna Bucket & Ladle"), (_by_name("Sauna Scent Birch"), _by_name("Birch Sauna Whisk 3-pack")), 0.55),
)
BUNDLE_BY_SKU: dict[str, tuple[tuple[str, ...], float]] = {head: (rest, p) for head, rest, p in BUNDLES}


def price_in(product: ProductSpec, currency: str) -> int:
    """The product's shelf price in ``currency`` (minor units), rounded the way shops round (x9 / .90)."""
    if currency == "EUR":
        return product.price_eur
    value = product.price_eur / 100 * FX_PER_EUR[currency]
    if currency in ("SEK", "DKK", "NOK"):
        # whole crowns ending in 9 (389 EUR → 4 479 SEK)
        return (math.ceil(value / 10) * 10 - 1) * 100
    # USD: .00 below 20, otherwise whole dollars ending in 9
    if value < 20:
        return math.ceil(value) * 100 - 10
    return (math.ceil(value / 10) * 10 - 1) * 100


def eur_to(currency: str, amount_eur_minor: int) -> int:
    """A EUR amount (minor units) in ``currency`` at the fixed demo rate."""
    return round(amount_eur_minor * FX_PER_EUR[currency])
