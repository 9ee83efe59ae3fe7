"""HTTP routes: contacts (CRUD, list and search, tags, merge, timeline) and custom property definitions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession, Writer
from suppilo.contacts import properties as properties_service
from suppilo.contacts import service
from suppilo.contacts.schemas import (
    MAX_PAGE_SIZE,
    ContactCreate,
    ContactFilter,
    ContactPage,
    ContactRead,
    ContactUpdate,
    MergeIn,
    PropertyDefinitionCreate,
    PropertyDefinitionRead,
    PropertyDefinitionUpdate,
    TagsIn,
    TimelinePage,
)
from suppilo.errors import DomainError
from suppilo.workspaces.models import ApiKey
from suppilo.workspaces.service import KeyPrincipal

router = APIRouter(prefix="/api/v1", tags=["contacts"])

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


def actor_of(session: Session, principal: KeyPrincipal) -> str:
    """How an API key is named in stage changes and the audit log: ``api_key:<id> (<name>)``."""
    name = session.scalar(
        select(ApiKey.name).where(ApiKey.workspace_id == principal.workspace_id, ApiKey.id == principal.key_id)
    )
    return f"api_key:{principal.key_id}" + (f" ({name})" if name else "")


def _if_match(value: str | None) -> int | None:
    if value is None:
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise DomainError("headers.if-match", "If-Match must be the contact's version number", code="invalid_version")
    return int(raw)


@router.post("/contacts", response_model=ContactRead, status_code=201)
def create_contact(data: ContactCreate, principal: Writer, session: DbSession) -> ContactRead:
    """Create a contact (email, phone, country, language and time zone are normalised)."""
    contact = service.create_contact(
        session, principal.workspace_id, data, actor=actor_of(session, principal), source="api"
    )
    return service.contact_read(session, contact)


@router.get("/contacts", response_model=ContactPage)
def list_contacts(
    principal: Reader,
    session: ReadSession,
    lifecycle_stage: str | None = None,
    company_id: int | None = None,
    owner_id: int | None = None,
    tag: str | None = None,
    country: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    q: str | None = None,
    include_anonymous: bool = False,
    cursor: str | None = None,
    limit: Limit = 50,
) -> ContactPage:
    """Contacts newest first with filters; ``q`` is a case-insensitive prefix of email, first or last name."""
    for name, value in (("created_after", created_after), ("created_before", created_before)):
        if value is not None and value.tzinfo is None:
            raise DomainError(name, f"{name} needs a time zone (e.g. 2024-05-01T00:00:00Z)", code="naive_datetime")
    flt = ContactFilter(
        lifecycle_stage=lifecycle_stage,
        company_id=company_id,
        owner_id=owner_id,
        tag=tag,
        country=country,
        created_after=created_after,
        created_before=created_before,
        q=q,
        include_anonymous=include_anonymous,
    )
    return service.list_contacts(session, principal.workspace_id, flt, cursor=cursor, limit=limit)


@router.get("/contacts/{contact_id}", response_model=ContactRead)
def read_contact(contact_id: int, principal: Reader, session: ReadSession) -> ContactRead:
    """One contact (an id merged away answers with the surviving contact)."""
    return service.contact_read(session, service.get_contact(session, principal.workspace_id, contact_id))


@router.patch("/contacts/{contact_id}", response_model=ContactRead)
def update_contact(
    contact_id: int,
    data: ContactUpdate,
    principal: Writer,
    session: DbSession,
    if_match: Annotated[str | None, Header()] = None,
) -> ContactRead:
    """Change a contact; send its ``version`` (body or If-Match) to refuse overwriting someone else's change."""
    contact = service.update_contact(
        session,
        principal.workspace_id,
        contact_id,
        data,
        expected_version=_if_match(if_match),
        actor=actor_of(session, principal),
    )
    return service.contact_read(session, contact)


@router.delete("/contacts/{contact_id}", status_code=204)
def delete_contact(contact_id: int, principal: Writer, session: DbSession) -> Response:
    """Delete a contact for good (recorded in the audit log)."""
    service.delete_contact(session, principal.workspace_id, contact_id, actor=actor_of(session, principal))
    return Response(status_code=204)


@router.get("/contacts/{contact_id}/tags", response_model=list[str])
def read_tags(contact_id: int, principal: Reader, session: ReadSession) -> list[str]:
    """The contact's tags, sorted."""
    return service.get_tags(session, principal.workspace_id, contact_id)


@router.put("/contacts/{contact_id}/tags", response_model=list[str])
def replace_tags(contact_id: int, data: TagsIn, principal: Writer, session: DbSession) -> list[str]:
    """Replace the contact's tags."""
    return service.set_tags(session, principal.workspace_id, contact_id, data.tags)


@router.post("/contacts/{contact_id}/tags", response_model=list[str])
def add_tags(contact_id: int, data: TagsIn, principal: Writer, session: DbSession) -> list[str]:
    """Add tags to the contact."""
    return service.add_tags(session, principal.workspace_id, contact_id, data.tags)


@router.delete("/contacts/{contact_id}/tags/{tag}", response_model=list[str])
def remove_tag(contact_id: int, tag: str, principal: Writer, session: DbSession) -> list[str]:
    """Remove one tag from the contact."""
    return service.remove_tags(session, principal.workspace_id, contact_id, [tag])


@router.get("/contacts/{contact_id}/timeline", response_model=TimelinePage)
def read_timeline(
    contact_id: int,
    principal: Reader,
    session: ReadSession,
    before: datetime | None = None,
    limit: Limit = 50,
) -> TimelinePage:
    """What happened to the contact, newest first; continue with ``before=next_before``."""
    return service.timeline(session, principal.workspace_id, contact_id, before=before, limit=limit)


@router.post("/contacts/{contact_id}/merge", response_model=ContactRead)
def merge_contact(contact_id: int, data: MergeIn, principal: Writer, session: DbSession) -> ContactRead:
    """Merge ``other_id`` into this contact: its identities, events, orders and history move here."""
    from suppilo.contacts.merge import merge_contacts

    keep = service.get_contact(session, principal.workspace_id, contact_id)
    try:
        other = service.get_contact(session, principal.workspace_id, data.other_id)
    except DomainError as exc:
        raise type(exc)("other_id", exc.message, exc.code) from exc
    if other.id == keep.id:
        raise DomainError("other_id", "a contact cannot be merged into itself", code="same_contact")
    merged = merge_contacts(
        session, principal.workspace_id, keep.id, other.id, reason=data.reason, actor=actor_of(session, principal)
    )
    return service.contact_read(session, merged)


# --- custom property definitions ------------------------------------------------------------------------------------


@router.get("/properties", response_model=list[PropertyDefinitionRead])
def list_properties(
    principal: Reader, session: ReadSession, object_type: Literal["contact", "company"] | None = None
) -> list[PropertyDefinitionRead]:
    """The custom properties of contacts and companies."""
    rows = properties_service.list_definitions(session, principal.workspace_id, object_type)
    return [PropertyDefinitionRead.model_validate(r) for r in rows]


@router.post("/properties", response_model=PropertyDefinitionRead, status_code=201)
def create_property(data: PropertyDefinitionCreate, principal: Admin, session: DbSession) -> PropertyDefinitionRead:
    """Define a custom property."""
    return PropertyDefinitionRead.model_validate(
        properties_service.create_definition(session, principal.workspace_id, data)
    )


@router.get("/properties/{property_id}", response_model=PropertyDefinitionRead)
def read_property(property_id: int, principal: Reader, session: ReadSession) -> PropertyDefinitionRead:
    """One property definition."""
    return PropertyDefinitionRead.model_validate(
        properties_service.get_definition(session, principal.workspace_id, property_id)
    )


@router.patch("/properties/{property_id}", response_model=PropertyDefinitionRead)
def update_property(
    property_id: int, data: PropertyDefinitionUpdate, principal: Admin, session: DbSession
) -> PropertyDefinitionRead:
    """Change a property definition (its type only while no record has a value for it)."""
    return PropertyDefinitionRead.model_validate(
        properties_service.update_definition(session, principal.workspace_id, property_id, data)
    )


@router.delete("/properties/{property_id}", status_code=204)
def delete_property(property_id: int, principal: Admin, session: DbSession) -> Response:
    """Remove a property definition no record uses."""
    properties_service.delete_definition(session, principal.workspace_id, property_id)
    return Response(status_code=204)
