"""Every API router, in the order they are mounted."""

from fastapi import APIRouter

from suppilo.adapters.http.routers import (
    commerce,
    companies,
    consent,
    contacts,
    forms,
    lifecycle,
    messages,
    public_mail,
    sources,
    templates,
    tracking,
    transfer,
    workspace,
)

ROUTERS: list[APIRouter] = [
    workspace.router,
    contacts.router,
    companies.router,
    lifecycle.router,
    tracking.router,
    sources.router,
    commerce.router,
    forms.router,
    transfer.router,
    templates.router,
    messages.router,
    consent.router,
    public_mail.router,
]
