"""Every API router, in the order they are mounted."""

from fastapi import APIRouter

from suppilo.adapters.http.routers import (
    advocacy,
    advocacy_public,
    commerce,
    companies,
    consent,
    contacts,
    deals,
    forms,
    journeys,
    lifecycle,
    loyalty,
    messages,
    offers,
    public_mail,
    reports,
    scoring,
    segments,
    sources,
    templates,
    tracking,
    transfer,
    workspace,
)

# The tracking routes come first: they take most of the traffic, and Starlette matches routes in order.
ROUTERS: list[APIRouter] = [
    tracking.router,
    workspace.router,
    contacts.router,
    companies.router,
    lifecycle.router,
    sources.router,
    commerce.router,
    offers.router,
    loyalty.router,
    deals.router,
    journeys.router,
    forms.router,
    transfer.router,
    templates.router,
    messages.router,
    consent.router,
    public_mail.router,
    advocacy_public.router,
    advocacy.router,
    reports.router,
    segments.router,
    scoring.router,
]
