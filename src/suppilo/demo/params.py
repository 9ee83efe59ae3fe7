"""The numbers behind the demo business: channel economics and the purchase models (other packages reuse them).

Every figure here is documented in docs/demo.md; analytics tests check that they can recover the
BG/NBD and Gamma-Gamma parameters from the generated orders.
"""

from __future__ import annotations

from dataclasses import dataclass

SITE_DOMAIN = "pohjola-outdoor.example"
SITE_URL = f"https://{SITE_DOMAIN}"
GENERATOR_VERSION = 1

# Known contacts are generated in chunks of this size (each with its own seeded random stream), so the data
# does not depend on anything but seed, size and anchor.
CHUNK_SIZE = 1000
ANONYMOUS_PER_KNOWN = 2
CONTACTS_PER_COMPANY = 20
B2B_SHARE = 0.22  # of known contacts
HISTORY_DAYS = 365
INACTIVE_AFTER_DAYS = 180  # a customer with no order for this long moves to 'inactive'


@dataclass(frozen=True, slots=True)
class ChannelEconomics:
    """How a channel behaves in the demo: share of new contacts, cost per click and conversion to customer."""

    cpc_eur: float  # average cost per click (0 for unpaid channels)
    b2c_share: float  # share of B2C first touches
    b2b_share: float  # share of B2B first touches
    conversion: float  # probability that a known contact first touched here becomes a customer
    clicks_per_contact: float  # paid clicks (landing sessions, incl. anonymous ones) per known contact acquired


CHANNEL_ECONOMICS: dict[str, ChannelEconomics] = {
    "paid_search": ChannelEconomics(0.85, 0.21, 0.12, 0.26, 9.0),
    "paid_social": ChannelEconomics(0.55, 0.22, 0.08, 0.08, 16.0),
    "organic_search": ChannelEconomics(0.0, 0.17, 0.13, 0.24, 6.0),
    "organic_social": ChannelEconomics(0.0, 0.07, 0.03, 0.14, 10.0),
    "email": ChannelEconomics(0.0, 0.06, 0.05, 0.48, 2.0),
    "referral": ChannelEconomics(0.0, 0.06, 0.10, 0.44, 3.0),
    "display": ChannelEconomics(0.35, 0.06, 0.02, 0.07, 25.0),
    "affiliate": ChannelEconomics(0.60, 0.05, 0.0, 0.30, 5.0),
    "events": ChannelEconomics(0.0, 0.0, 0.14, 0.40, 1.0),
    "outbound": ChannelEconomics(0.0, 0.0, 0.18, 0.20, 1.5),
    "offline": ChannelEconomics(0.0, 0.02, 0.03, 0.18, 1.0),
    "direct": ChannelEconomics(0.0, 0.08, 0.12, 0.30, 2.0),
}

# Cost per click in EUR by channel; the analytics spend table multiplies it with paid landing sessions.
CHANNEL_CPC_EUR: dict[str, float] = {k: v.cpc_eur for k, v in CHANNEL_ECONOMICS.items()}

# Fixed costs per acquired contact for channels not paid by the click (EUR): events (stand, travel) and outbound
# (sales time), offline (print, direct mail).
CHANNEL_COST_PER_CONTACT_EUR: dict[str, float] = {"events": 85.0, "outbound": 40.0, "offline": 12.0}


@dataclass(frozen=True, slots=True)
class BGNBDParams:
    """BG/NBD: purchase rate λ ~ Gamma(shape r, rate α) per day, drop-out after each purchase p ~ Beta(a, b)."""

    r: float
    alpha: float  # days
    a: float
    b: float


@dataclass(frozen=True, slots=True)
class GammaGammaParams:
    """Gamma-Gamma: order value z ~ Gamma(shape p, rate ν), ν ~ Gamma(shape q, rate γ); values in EUR."""

    p: float
    q: float
    gamma: float

    @property
    def mean_order_value_eur(self) -> float:
        """E[z] = p·γ / (q − 1)."""
        return self.p * self.gamma / (self.q - 1)


BGNBD_B2C = BGNBDParams(r=0.9, alpha=110.0, a=0.8, b=3.2)
BGNBD_B2B = BGNBDParams(r=1.6, alpha=90.0, a=0.5, b=4.5)
GAMMA_GAMMA_B2C = GammaGammaParams(p=6.0, q=3.5, gamma=37.5)  # mean 90 EUR
GAMMA_GAMMA_B2B = GammaGammaParams(p=4.0, q=4.0, gamma=1200.0)  # mean 1 600 EUR

REFUND_RATE = 0.04  # share of orders with a refund (half of them full)
ABANDONED_CART_RATE = 0.22  # share of known contacts' browsing sessions that leave a cart behind
