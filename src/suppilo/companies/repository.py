"""Company queries: by domain, and the keyset-paginated list."""

from __future__ import annotations

from sqlalchemy import Select, select
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
) -> Select[tuple[Company]]:
    """Companies newest first (keyset on id), optionally by lower-cased name prefix or exact domain."""
    stmt = select(Company).where(Company.workspace_id == workspace_id)
    if name_prefix:
        stmt = stmt.where(Company.name_lower >= name_prefix, Company.name_lower < prefix_upper_bound(name_prefix))
    if domain:
        stmt = stmt.where(Company.domain == domain)
    if before_id is not None:
        stmt = stmt.where(Company.id < before_id)
    return stmt.order_by(Company.id.desc()).limit(limit)
