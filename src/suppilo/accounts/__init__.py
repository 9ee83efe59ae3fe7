"""Accounts: people who log in to the web interface — passwords (argon2), login sessions, workspace access."""
