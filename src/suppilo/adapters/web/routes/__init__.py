"""The web interface's pages, one module per area."""

from __future__ import annotations

from fastapi import APIRouter

from suppilo.adapters.web.routes import (
    companies,
    contacts,
    dashboard,
    deals,
    imports,
    journeys,
    mail,
    pipeline,
    reports,
    segments,
    session,
    settings,
    templates,
)

router = APIRouter(prefix="/app", include_in_schema=False)
for module in (
    session,
    dashboard,
    contacts,
    companies,
    imports,
    pipeline,
    deals,
    mail,
    journeys,
    segments,
    templates,
    reports,
    settings,
):
    router.include_router(module.router)
