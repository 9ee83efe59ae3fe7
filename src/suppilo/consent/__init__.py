"""The consent ledger: append-only records of consent per contact and topic, per-country policies."""
