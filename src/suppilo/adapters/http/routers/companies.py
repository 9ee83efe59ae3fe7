"""HTTP routes: companies (CRUD, list and search) and their contacts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer
from suppilo.adapters.http.routers.contacts import actor_of
from suppilo.companies import service
from suppilo.companies.schemas import CompanyCreate, CompanyPage, CompanyRead, CompanyUpdate
from suppilo.contacts import service as contacts_service
from suppilo.contacts.schemas import MAX_PAGE_SIZE, ContactFilter, ContactPage

router = APIRouter(prefix="/api/v1", tags=["companies"])

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


@router.post("/companies", response_model=CompanyRead, status_code=201)
def create_company(data: CompanyCreate, principal: Writer, session: DbSession) -> CompanyRead:
    """Create a company; its domain is normalised and unique in the workspace."""
    return CompanyRead.model_validate(
        service.create_company(session, principal.workspace_id, data, actor=actor_of(session, principal))
    )


@router.get("/companies", response_model=CompanyPage)
def list_companies(
    principal: Reader,
    session: ReadSession,
    q: str | None = None,
    domain: str | None = None,
    cursor: str | None = None,
    limit: Limit = 50,
) -> CompanyPage:
    """Companies newest first; ``q`` is a case-insensitive name prefix, ``domain`` an exact domain."""
    return service.list_companies(session, principal.workspace_id, q=q, domain=domain, cursor=cursor, limit=limit)


@router.get("/companies/{company_id}", response_model=CompanyRead)
def read_company(company_id: int, principal: Reader, session: ReadSession) -> CompanyRead:
    """One company."""
    return CompanyRead.model_validate(service.get_company(session, principal.workspace_id, company_id))


@router.patch("/companies/{company_id}", response_model=CompanyRead)
def update_company(company_id: int, data: CompanyUpdate, principal: Writer, session: DbSession) -> CompanyRead:
    """Change a company."""
    return CompanyRead.model_validate(
        service.update_company(session, principal.workspace_id, company_id, data, actor=actor_of(session, principal))
    )


@router.delete("/companies/{company_id}", status_code=204)
def delete_company(company_id: int, principal: Writer, session: DbSession) -> Response:
    """Delete a company; its contacts are kept without a company."""
    service.delete_company(session, principal.workspace_id, company_id, actor=actor_of(session, principal))
    return Response(status_code=204)


@router.get("/companies/{company_id}/contacts", response_model=ContactPage)
def company_contacts(
    company_id: int,
    principal: Reader,
    session: ReadSession,
    include_anonymous: bool = False,
    cursor: str | None = None,
    limit: Limit = 50,
) -> ContactPage:
    """The company's contacts, newest first."""
    company = service.get_company(session, principal.workspace_id, company_id)
    flt = ContactFilter(company_id=company.id, include_anonymous=include_anonymous)
    return contacts_service.list_contacts(session, principal.workspace_id, flt, cursor=cursor, limit=limit)
