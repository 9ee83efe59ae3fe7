"""Contacts: people, their identities, tags, custom properties and lifecycle stage history."""
