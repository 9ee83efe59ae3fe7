"""Company use cases on a real database: names from domains, find-or-create by domain."""

from __future__ import annotations

import pytest

from suppilo.companies import service
from suppilo.companies.schemas import CompanyCreate, CompanyUpdate
from suppilo.errors import Conflict, DomainError


@pytest.mark.parametrize(
    ("domain", "name"),
    [
        ("acme.com", "Acme"),
        ("nordic-tools.co.uk", "Nordic Tools"),
        ("shop.example.fi", "Example"),
        ("xn--bcher-kva.de", "Bücher"),
    ],
)
def test_name_from_domain(domain: str, name: str) -> None:
    assert service.name_from_domain(domain) == name


def test_find_or_create_by_domain_is_idempotent(session, workspace, other_workspace) -> None:
    a = service.find_or_create_by_domain(session, workspace.id, "WWW.Acme.com")
    b = service.find_or_create_by_domain(session, workspace.id, "https://acme.com/contact")
    assert a.id == b.id and a.domain == "acme.com" and a.name == "Acme"
    c = service.find_or_create_by_domain(session, other_workspace.id, "acme.com")
    assert c.id != a.id


def test_domain_change_keeps_uniqueness(session, workspace) -> None:
    a = service.create_company(session, workspace.id, CompanyCreate(name="A", domain="a.example"))
    b = service.create_company(session, workspace.id, CompanyCreate(name="B", domain="b.example"))
    with pytest.raises(Conflict):
        service.update_company(session, workspace.id, b.id, CompanyUpdate(domain="A.example"))
    service.update_company(session, workspace.id, a.id, CompanyUpdate(domain="a.example"))
    with pytest.raises(DomainError) as err:
        service.create_company(session, workspace.id, CompanyCreate())
    assert err.value.field == "name"
