"""Company queries: by domain, and the keyset-paginated list."""

from __future__ import annotations

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from suppilo.companies.models import Company


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix`` (for index range scans)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def by_domain(session: Session, workspace_id: int, domain: str) -> Company | None:
    """The company with this normalised domain."""
    return session.scalar(select(Company).where(Company.workspace_id == workspace_id, Company.domain == domain))


def by_id(session: Session, workspace_id: int, company_id: int) -> Company | None:
    """The company with this id in this workspace."""
    return session.scalar(select(Company).where(Company.workspace_id == workspace_id, Company.id == company_id))


def list_statement(
    workspace_id: int,
    *,
    name_prefix: str | None = None,
    domain: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> Select[Company]:
    """Companies newest first (keyset on id), optionally by lower-cased name prefix or exact domain."""
    stmt = select(Company).where(Company.workspace_id == workspace_id)
    if name_prefix:
        stmt = stmt.where(Company.name_lower >= name_prefix, Company.name_lower < prefix_upper_bound(name_prefix))
    if domain:
        stmt = stmt.where(Company.domain == domain)
    if before_id is not None:
        stmt = stmt.where(Company.id < before_id)
    return stmt.order_by(Company.id.desc()).limit(limit)


def browse_statement(
    workspace_id: int,
    *,
    prefix: str | None = None,
    industry: str | None = None,
    country: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> Select[Company]:
    """Companies newest first (keyset on id) whose lower-cased name or domain starts with ``prefix`` (two index
    range scans), of an industry and a country."""
    stmt = select(Company).where(Company.workspace_id == workspace_id)
    if prefix:
        upper = prefix_upper_bound(prefix)
        stmt = stmt.where(
            or_(
                and_(Company.name_lower >= prefix, Company.name_lower < upper),
                and_(Company.domain >= prefix, Company.domain < upper),
            )
        )
    if industry:
        stmt = stmt.where(Company.industry == industry)
    if country:
        stmt = stmt.where(Company.country == country)
    if before_id is not None:
        stmt = stmt.where(Company.id < before_id)
    return stmt.order_by(Company.id.desc()).limit(limit)


def industries(session: Session, workspace_id: int) -> list[str]:
    """Distinct non-empty industries of the workspace's companies, sorted."""
    rows = session.scalars(
        select(Company.industry)
        .where(Company.workspace_id == workspace_id, Company.industry.is_not(None))
        .group_by(Company.industry)
        .order_by(Company.industry)
        .limit(500)
    )
    return [r for r in rows if r]
