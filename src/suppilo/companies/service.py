"""Company use cases. Services flush, never commit."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from suppilo.companies import repository
from suppilo.companies.models import Company
from suppilo.companies.schemas import CompanyCreate, CompanyPage, CompanyRead, CompanyUpdate
from suppilo.contacts.normalize import InvalidValue, normalize_country, normalize_domain
from suppilo.contacts.properties import validate_properties
from suppilo.contacts.schemas import check_limit, decode_cursor, encode_cursor
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.workspaces.models import Membership
from suppilo.workspaces.service import record_audit

# Second-level labels under which registrations happen (acme.co.uk is "Acme", not "Co").
_SECOND_LEVEL = frozenset({"co", "com", "org", "net", "ac", "gov", "edu", "ltd", "plc"})


class CompanyError(DomainError):
    """A refused company operation."""


def name_from_domain(domain: str) -> str:
    """A readable company name from a domain: ``acme-tools.co.uk`` -> ``Acme Tools``."""
    labels = domain.split(".")
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        label = labels[-3]
    else:
        label = labels[-2] if len(labels) >= 2 else labels[0]
    with contextlib.suppress(UnicodeError):
        label = label.encode("ascii").decode("idna")
    words = [w for w in label.replace("_", "-").split("-") if w]
    return " ".join(w[:1].upper() + w[1:] for w in words) or domain


def _normalized_domain(raw: str) -> str:
    try:
        return normalize_domain(raw)
    except InvalidValue as exc:
        raise CompanyError("domain", exc.message, code="invalid_domain") from exc


def _check_owner(session: Session, workspace_id: int, owner_id: int) -> None:
    member = session.scalar(
        select(Membership.id).where(Membership.workspace_id == workspace_id, Membership.user_id == owner_id)
    )
    if member is None:
        raise CompanyError("owner_id", f"user {owner_id} is not a member of this workspace", code="invalid_owner")


def _check_domain_free(session: Session, workspace_id: int, domain: str, company_id: int | None = None) -> None:
    existing = repository.by_domain(session, workspace_id, domain)
    if existing is not None and existing.id != company_id:
        raise Conflict("domain", f"company {existing.id} already has the domain {domain!r}", code="duplicate_domain")


def get_company(session: Session, workspace_id: int, company_id: int) -> Company:
    """The company with this id in this workspace; NotFound (path company_id) otherwise."""
    company = repository.by_id(session, workspace_id, company_id)
    if company is None:
        raise NotFound("company_id", f"company {company_id} not found")
    return company


def find_by_domain(session: Session, workspace_id: int, domain: str) -> Company | None:
    """The company with this domain (normalised first)."""
    return repository.by_domain(session, workspace_id, _normalized_domain(domain))


def find_or_create_by_domain(session: Session, workspace_id: int, domain: str) -> Company:
    """The company with this domain, created (named after the domain) when missing; safe under concurrency."""
    normalized = _normalized_domain(domain)
    existing = repository.by_domain(session, workspace_id, normalized)
    if existing is not None:
        return existing
    name = name_from_domain(normalized)
    company = Company(workspace_id=workspace_id, name=name, name_lower=name.lower(), domain=normalized, properties={})
    try:
        with session.begin_nested():
            session.add(company)
            session.flush()
    except IntegrityError:
        found = repository.by_domain(session, workspace_id, normalized)
        if found is None:
            raise
        return found
    return company


def _clean(session: Session, workspace_id: int, fields: dict[str, Any], company_id: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "domain":
            if value is not None and value.strip():
                value = _normalized_domain(value)
                _check_domain_free(session, workspace_id, value, company_id)
            else:
                value = None
        elif key == "country" and value is not None:
            try:
                value = normalize_country(value)
            except InvalidValue as exc:
                raise CompanyError("country", exc.message, code="invalid_country") from exc
        elif key == "owner_id" and value is not None:
            _check_owner(session, workspace_id, value)
        elif key == "name":
            if value is None or not value.strip():
                raise CompanyError("name", "a company needs a name", code="required")
            value = value.strip()
        elif isinstance(value, str):
            value = value.strip() or None
        out[key] = value
    return out


def create_company(session: Session, workspace_id: int, data: CompanyCreate, *, actor: str | None = None) -> Company:
    """A new company; 409 on a domain another company has."""
    fields = data.model_dump(exclude={"properties"})
    if not fields.get("name"):
        if not fields.get("domain"):
            raise CompanyError("name", "a company needs a name or a domain", code="required")
        fields["name"] = name_from_domain(_normalized_domain(fields["domain"]))
    fields = _clean(session, workspace_id, fields, None)
    if fields.get("annual_revenue_minor") is not None and not fields.get("revenue_currency"):
        raise CompanyError("revenue_currency", "annual revenue needs its ISO 4217 currency", code="required")
    properties = validate_properties(session, workspace_id, "company", data.properties)
    company = Company(workspace_id=workspace_id, name_lower=fields["name"].lower(), properties=properties, **fields)
    session.add(company)
    session.flush()
    return company


def update_company(
    session: Session, workspace_id: int, company_id: int, data: CompanyUpdate, *, actor: str | None = None
) -> Company:
    """Change a company (a field set to null is cleared; properties are merged)."""
    company = get_company(session, workspace_id, company_id)
    changes = data.model_dump(exclude_unset=True)
    props = changes.pop("properties", None)
    fields = _clean(session, workspace_id, changes, company.id)
    revenue = fields.get("annual_revenue_minor", company.annual_revenue_minor)
    currency = fields.get("revenue_currency", company.revenue_currency)
    if revenue is not None and not currency:
        raise CompanyError("revenue_currency", "annual revenue needs its ISO 4217 currency", code="required")
    if props is not None:
        company.properties = validate_properties(session, workspace_id, "company", props, current=company.properties)
    for key, value in fields.items():
        setattr(company, key, value)
    if "name" in fields:
        company.name_lower = fields["name"].lower()
    session.flush()
    return company


def delete_company(session: Session, workspace_id: int, company_id: int, *, actor: str | None = None) -> None:
    """Delete a company; its contacts stay, without a company."""
    from suppilo.contacts.models import Contact

    company = get_company(session, workspace_id, company_id)
    session.execute(
        update(Contact)
        .where(Contact.workspace_id == workspace_id, Contact.company_id == company.id)
        .values(company_id=None)
        .execution_options(synchronize_session="fetch")
    )
    record_audit(
        session,
        workspace_id,
        actor=actor or "system",
        action="company.deleted",
        subject_type="company",
        subject_id=company.id,
        details={"name": company.name, "domain": company.domain},
    )
    session.delete(company)
    session.flush()


def list_companies(
    session: Session,
    workspace_id: int,
    *,
    q: str | None = None,
    domain: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> CompanyPage:
    """A page of companies newest first: ``q`` is a case-insensitive name prefix, ``domain`` an exact domain."""
    check_limit(limit)
    before_id = decode_cursor(cursor)
    prefix = q.strip().lower() if q and q.strip() else None
    dom = _normalized_domain(domain) if domain and domain.strip() else None
    rows = list(
        session.scalars(
            repository.list_statement(
                workspace_id, name_prefix=prefix, domain=dom, before_id=before_id, limit=limit + 1
            )
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return CompanyPage(
        items=[CompanyRead.model_validate(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
    )


def browse_companies(
    session: Session,
    workspace_id: int,
    *,
    q: str | None = None,
    industry: str | None = None,
    country: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> CompanyPage:
    """A page of companies newest first for the web list: ``q`` is a case-insensitive prefix of the name or of
    the domain (``nor`` finds "Nordic Hotels" and ``nordhotel.fi``), ``industry`` exact, ``country`` ISO 3166-1
    alpha-2. Raises DomainError on ``country`` or ``cursor`` when they are not valid."""
    check_limit(limit)
    before_id = decode_cursor(cursor)
    code = None
    if country and country.strip():
        try:
            code = normalize_country(country)
        except InvalidValue as exc:
            raise CompanyError("country", exc.message, code="invalid_country") from exc
    prefix = q.strip().lower() if q and q.strip() else None
    rows = list(
        session.scalars(
            repository.browse_statement(
                workspace_id,
                prefix=prefix,
                industry=industry.strip() if industry and industry.strip() else None,
                country=code,
                before_id=before_id,
                limit=limit + 1,
            )
        )
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return CompanyPage(
        items=[CompanyRead.model_validate(r) for r in rows],
        next_cursor=encode_cursor(rows[-1].id) if more and rows else None,
    )


def industries(session: Session, workspace_id: int) -> list[str]:
    """The industries the workspace's companies name, sorted (for the list's filter)."""
    return repository.industries(session, workspace_id)


def company_contacts(
    session: Session, workspace_id: int, company_id: int, *, limit: int = 50
) -> tuple[list[Any], bool]:
    """The newest ``limit`` contacts linked to the company, and whether there are more."""
    from suppilo.contacts.models import Contact

    rows = list(
        session.scalars(
            select(Contact)
            .where(Contact.workspace_id == workspace_id, Contact.company_id == company_id)
            .order_by(Contact.id.desc())
            .limit(limit + 1)
        )
    )
    return rows[:limit], len(rows) > limit


def company_deals(
    session: Session, workspace_id: int, company_id: int, contact_ids: list[int], *, limit: int = 50
) -> list[Any]:
    """Deals of the company or of these contacts of it, newest first."""
    from sqlalchemy import or_

    from suppilo.deals.models import Deal

    cond = Deal.company_id == company_id
    if contact_ids:
        cond = or_(cond, Deal.contact_id.in_(contact_ids))
    return list(
        session.scalars(
            select(Deal).where(Deal.workspace_id == workspace_id, cond).order_by(Deal.id.desc()).limit(limit)
        )
    )
