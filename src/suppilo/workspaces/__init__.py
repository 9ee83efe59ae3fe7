"""Workspaces (tenants), users and API keys."""
