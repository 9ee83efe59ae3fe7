"""Ideal-customer-profile fit, engagement and predictive scores of contacts and companies."""
