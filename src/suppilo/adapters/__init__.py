"""Thin edges: HTTP API, web UI, CLI, worker, mail. Each uses domain services only."""
