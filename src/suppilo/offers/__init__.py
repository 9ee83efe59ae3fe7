"""Offers and coupon codes: definitions, value rules, issuing, redemption."""
