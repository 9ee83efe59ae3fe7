"""``suppilo``: serve, migrate, keys, workspaces, import, export, demo."""

from __future__ import annotations

import typer

from suppilo.adapters.cli import (
    admin,
    advocacy,
    data,
    deals,
    demo,
    journeys,
    mail,
    offers,
    outbox,
    privacy,
    recommendations,
    reports,
    scoring,
    segments,
    users,
)

app = typer.Typer(name="suppilo", help="suppilo: customer acquisition and lifecycle platform.", no_args_is_help=True)
admin.register(app)
advocacy.register(app)
data.register(app)
deals.register(app)
demo.register(app)
journeys.register(app)
mail.register(app)
offers.register(app)
outbox.register(app)
privacy.register(app)
recommendations.register(app)
reports.register(app)
scoring.register(app)
segments.register(app)
users.register(app)


if __name__ == "__main__":
    app()
