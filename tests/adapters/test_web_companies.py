"""The companies list and company page, and merging duplicate contacts from the contact page: search and filters,
money in the user's locale, fit explanation, linked contacts and deals, stored script shown as text, field errors
that keep what was typed, and another workspace's records answered 404."""

from __future__ import annotations

import re

import pytest

from suppilo.consent.models import ConsentRecord
from suppilo.contacts.models import ContactMerge
from tests.adapters.test_web_shell import csrf_of, login, make_user
from tests.conftest import make_workspace

SCRIPT = "<script>alert('xss')</script>"


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    yield
    client.cookies.clear()


def company(client, ws, **fields) -> dict:
    res = client.post("/api/v1/companies", json=fields, headers=ws.auth())
    assert res.status_code == 201, res.text
    return res.json()


def contact(client, ws, **fields) -> dict:
    res = client.post("/api/v1/contacts", json=fields, headers=ws.auth())
    assert res.status_code == 201, res.text
    return res.json()


def rows(html: str, table_id: str) -> list[str]:
    start = html.index(f'id="{table_id}"')
    body = html[html.index("<tbody>", start) : html.index("</tbody>", start)]
    return [r for r in re.findall(r"<tr>(.*?)</tr>", body, re.S) if "No companies match." not in r]


def test_companies_list_searches_filters_and_pages(client, session_factory, workspace) -> None:
    company(client, workspace, name="Nordic Hotels", domain="nordhotel.fi", industry="Hospitality", country="FI")
    company(client, workspace, name="Baltic Outfitters", domain="norbalt.lv", industry="Retail", country="LV")
    company(client, workspace, name="Svea Gifts", domain="sveagifts.se", industry="Retail", country="SE")
    for i in range(52):
        company(client, workspace, name=f"Paged {i:02d}", domain=f"paged{i:02d}.example", industry="Software")
    login(client, make_user(session_factory, workspace.id, "analyst"))
    base = f"/app/w/{workspace.slug}/companies"
    page = client.get(base, params={"q": "nor"})
    assert page.status_code == 200
    found = rows(page.text, "companies-table")
    # "nor" is the prefix of one name (Nordic Hotels) and of another's domain (norbalt.lv).
    assert len(found) == 2
    assert any("Nordic Hotels" in r for r in found) and any("Baltic Outfitters" in r for r in found)
    retail = rows(client.get(base, params={"industry": "Retail"}).text, "companies-table")
    assert len(retail) == 2 and not any("Nordic" in r for r in retail)
    se = rows(client.get(base, params={"industry": "Retail", "country": "se"}).text, "companies-table")
    assert len(se) == 1 and "Svea Gifts" in se[0]
    assert "No companies match." in client.get(base, params={"q": "zzz"}).text
    first = client.get(base, params={"industry": "Software"})
    assert len(rows(first.text, "companies-table")) == 50 and 'rel="next"' in first.text
    next_href = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = client.get(next_href)
    assert len(rows(second.text, "companies-table")) == 2
    assert "Paged 00" in second.text and "Paged 00" not in first.text
    # The nav links to the list, and the industry select offers the workspace's industries.
    assert f'href="/app/w/{workspace.slug}/companies"' in first.text
    assert '<option value="Hospitality"' in first.text


def test_companies_list_bad_country_is_a_field_error_keeping_the_input(client, session_factory, workspace) -> None:
    company(client, workspace, name="Nordic Hotels", domain="nordhotel.fi", country="FI")
    login(client, make_user(session_factory, workspace.id, "sales"))
    res = client.get(f"/app/w/{workspace.slug}/companies", params={"q": "nordic", "country": "Finland"})
    assert res.status_code == 422
    assert 'id="company-country-error"' in res.text and "two-letter ISO code, such as FI or SE" in res.text
    assert 'value="Finland"' in res.text and 'value="nordic"' in res.text
    assert 'aria-invalid="true"' in res.text
    bad_cursor = client.get(f"/app/w/{workspace.slug}/companies", params={"cursor": "garbage"})
    assert bad_cursor.status_code == 200 and "This page link is no longer valid" in bad_cursor.text
    assert "Nordic Hotels" in bad_cursor.text


def test_company_page_shows_firmographics_contacts_deals_and_fit(client, session_factory, workspace) -> None:
    acme = company(
        client,
        workspace,
        name="Nordic Hotels",
        domain="https://www.NordHotel.fi/about",
        industry="Hospitality",
        employees=1250,
        annual_revenue_minor=123456789,
        revenue_currency="EUR",
        country="FI",
        city="Turku",
    )
    assert acme["domain"] == "nordhotel.fi"
    anna = contact(client, workspace, email="anna@nordhotel.fi", first_name="Anna", last_name="Hotelli")
    assert anna["company_id"] == acme["id"]
    deal = client.post(
        "/api/v1/deals",
        json={"name": "Hotel linen 2027", "contact_id": anna["id"], "amount_minor": 4500000, "currency": "EUR"},
        headers=workspace.auth(),
    )
    assert deal.status_code == 201, deal.text
    icp = client.post(
        "/api/v1/scoring/icps",
        json={
            "name": "Hotels",
            "definition": {
                "industries": {"values": ["Hospitality"], "weight": 60},
                "employees": {"min": 5000, "weight": 40},
            },
        },
        headers=workspace.auth(),
    )
    assert icp.status_code == 201, icp.text
    with session_factory() as s:
        from suppilo.scoring import service as scoring_service

        scoring_service.recompute_company_fit(s, workspace.id, [acme["id"]])
        s.commit()
    login(client, make_user(session_factory, workspace.id, "marketer", language="fi"))
    page = client.get(f"/app/w/{workspace.slug}/companies/{acme['id']}")
    assert page.status_code == 200
    html = page.text
    assert 'id="company-domain">nordhotel.fi<' in html
    assert 'id="company-employees">1\xa0250<' in html
    assert 'id="company-revenue">1\xa0234\xa0567,89\xa0€<' in html  # Babel, Finnish locale
    assert "Anna Hotelli" in html and f'href="/app/w/{workspace.slug}/contacts/{anna["id"]}"' in html
    assert "Hotel linen 2027" in html and "45\xa0000,00\xa0€" in html
    explanation = html[html.index('id="company-fit-explanation"') :]
    assert "Hospitality" in explanation
    # The contact page links to its company.
    contact_page = client.get(f"/app/w/{workspace.slug}/contacts/{anna['id']}")
    assert (
        f'href="/app/w/{workspace.slug}/companies/{acme["id"]}" id="contact-company">Nordic Hotels<'
        in contact_page.text
    )


def test_company_values_are_escaped_and_other_workspaces_are_404(client, session_factory, workspace) -> None:
    evil = company(client, workspace, name=SCRIPT, domain="evil.example", industry=SCRIPT, city=SCRIPT)
    other = make_workspace(session_factory)
    theirs = company(client, other, name="Their Company", domain="theirs.example")
    login(client, make_user(session_factory, workspace.id, "admin"))
    for url in (f"/app/w/{workspace.slug}/companies", f"/app/w/{workspace.slug}/companies/{evil['id']}"):
        html = client.get(url).text
        assert SCRIPT not in html and "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in html
    assert client.get(f"/app/w/{workspace.slug}/companies/{theirs['id']}").status_code == 404
    assert client.get(f"/app/w/{other.slug}/companies/{theirs['id']}").status_code == 404
    assert client.get(f"/app/w/{other.slug}/companies").status_code == 404
    assert "Their Company" not in client.get(f"/app/w/{workspace.slug}/companies").text


# --- merging duplicates ------------------------------------------------------------------------------------------


def test_merge_search_preview_confirm_keeps_both_histories(client, session_factory, workspace) -> None:
    keep = contact(client, workspace, email="anna.k@example.com", first_name="Anna", last_name="Korhonen")
    dup = contact(
        client, workspace, email="anna.korhonen@work.example", first_name="Anna", phone="+358401234567", city="Oulu"
    )
    client.post(f"/api/v1/contacts/{dup['id']}/stage", json={"stage": "consideration"}, headers=workspace.auth())
    client.post(f"/api/v1/contacts/{dup['id']}/tags", json={"tags": ["webinar"]}, headers=workspace.auth())
    client.post(f"/api/v1/contacts/{keep['id']}/tags", json={"tags": ["newsletter"]}, headers=workspace.auth())
    deal = client.post(
        "/api/v1/deals",
        json={"name": "Duplicate's deal", "contact_id": dup["id"], "amount_minor": 1000, "currency": "EUR"},
        headers=workspace.auth(),
    )
    assert deal.status_code == 201, deal.text
    with session_factory() as s:
        from suppilo.consent import service as consent_service

        consent_service.record_consent(
            s, workspace.id, dup["id"], topic="newsletter", action="granted", source="form", legal_basis="consent"
        )
        s.commit()
    login(client, make_user(session_factory, workspace.id, "sales"))
    base = f"/app/w/{workspace.slug}/contacts/{keep['id']}"
    assert 'id="merge-link"' in client.get(base).text
    search = client.get(f"{base}/merge", params={"q": "anna"})
    candidates = search.text[search.text.index('id="merge-candidates"') :]
    assert "anna.korhonen@work.example" in candidates and "anna.k@example.com" not in candidates
    preview = client.get(f"{base}/merge", params={"other": dup["id"], "q": "anna"})
    assert preview.status_code == 200
    table = preview.text[preview.text.index('id="merge-table"') :]
    # Kept email stays; the phone and city come from the duplicate; the stage further along wins; tags unite.
    assert re.search(
        r"Email</th>.*?anna\.k@example\.com.*?anna\.korhonen@work\.example.*?<strong>anna\.k@", table, re.S
    )
    assert re.search(
        r"Phone</th>.*?<strong>\+358401234567</strong> <span class=\"badge\">from the duplicate", table, re.S
    )
    # (creating the deal took the duplicate on to Decision, further along than the kept contact's Awareness)
    assert 'id="merge-result-stage">Decision<' in table
    assert 'id="merge-result-tags">newsletter, webinar<' in table
    res = client.post(
        f"{base}/merge",
        data={"csrf_token": csrf_of(preview.text), "other_id": str(dup["id"]), "reason": "same person"},
        follow_redirects=False,
    )
    assert res.status_code == 303 and res.headers["location"] == f"{base}?done=merged"
    page = client.get(res.headers["location"]).text
    assert 'id="merged-notice"' in page and "+358401234567" in page and "Oulu" in page
    assert "Duplicate&#39;s deal" in page and "webinar" in page
    # The duplicate's address now leads to the survivor; its consent record and deal moved with it.
    moved = client.get(f"/app/w/{workspace.slug}/contacts/{dup['id']}", follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == base
    with session_factory() as s:
        from sqlalchemy import select

        consents = s.scalars(select(ConsentRecord).where(ConsentRecord.workspace_id == workspace.id)).all()
        assert [c.contact_id for c in consents] == [keep["id"]]
        merge_row = s.scalars(select(ContactMerge).where(ContactMerge.workspace_id == workspace.id)).one()
        assert merge_row.merged_id == dup["id"] and merge_row.reason == "same person"
        assert merge_row.snapshot["email"] == "anna.korhonen@work.example"


def test_merge_refuses_itself_and_foreign_contacts_and_needs_csrf(client, session_factory, workspace) -> None:
    keep = contact(client, workspace, email="solo@example.com", first_name="Solo")
    other = make_workspace(session_factory)
    foreign = contact(client, other, email="foreign@example.com")
    login(client, make_user(session_factory, workspace.id, "marketer"))
    base = f"/app/w/{workspace.slug}/contacts/{keep['id']}"
    form = client.get(f"{base}/merge")
    token = csrf_of(form.text)
    same = client.post(f"{base}/merge", data={"csrf_token": token, "other_id": str(keep["id"])})
    assert same.status_code == 422 and "cannot be merged with itself" in same.text
    assert client.get(f"{base}/merge", params={"other": keep["id"]}).status_code == 422
    assert client.get(f"{base}/merge", params={"other": "abc"}).status_code == 422
    assert client.post(f"{base}/merge", data={"csrf_token": token, "other_id": str(foreign["id"])}).status_code == 404
    assert client.get(f"{base}/merge", params={"other": foreign["id"]}).status_code == 404
    assert client.post(f"{base}/merge", data={"other_id": str(foreign["id"])}).status_code == 403
    assert client.get(f"/app/w/{workspace.slug}/contacts/{foreign['id']}/merge").status_code == 404
    # Nothing was merged: the foreign contact is still there in its own workspace.
    assert client.get(f"/api/v1/contacts/{foreign['id']}", headers=other.auth()).status_code == 200


def test_analysts_cannot_merge(client, session_factory, workspace) -> None:
    a = contact(client, workspace, email="a@example.com")
    b = contact(client, workspace, email="b@example.com")
    login(client, make_user(session_factory, workspace.id, "analyst"))
    base = f"/app/w/{workspace.slug}/contacts/{a['id']}"
    assert 'id="merge-link"' not in client.get(base).text
    assert client.get(f"{base}/merge").status_code == 403
    token = csrf_of(client.get(base).text)
    assert client.post(f"{base}/merge", data={"csrf_token": token, "other_id": str(b["id"])}).status_code == 403


def test_merge_preview_escapes_stored_values(client, session_factory, workspace) -> None:
    a = contact(client, workspace, email="x1@example.com", first_name=SCRIPT)
    b = contact(client, workspace, email="x2@example.com", last_name=SCRIPT, city=SCRIPT)
    login(client, make_user(session_factory, workspace.id, "admin"))
    html = client.get(f"/app/w/{workspace.slug}/contacts/{a['id']}/merge", params={"other": b["id"]}).text
    assert SCRIPT not in html and "&lt;script&gt;" in html
