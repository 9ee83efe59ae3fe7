"""Loyalty: an append-only points ledger per contact, a cached balance, tiers, rewards and expiry."""
