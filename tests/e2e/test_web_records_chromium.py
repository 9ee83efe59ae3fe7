"""Contacts and companies in headless Chromium against suppilo under uvicorn: import a CSV through the column
mapping, watch the progress update in place and read the summary; merge two duplicate contacts from the contact
page; open a company from a contact."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.adapters.test_web_shell import make_user
from tests.conftest import make_workspace
from tests.e2e.chromium import require_chromium

require_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.e2e.test_web_chromium import app_url, browser, log_in, watched  # noqa: E402, F401

ROWS = 40_000


def big_csv(path: Path) -> Path:
    """A CSV in HubSpot-like columns with 40,000 contacts, two of them invalid (lines 3 and 20,002)."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write("Email Address,First Name,Last Name,Country/Region,Favourite colour\n")
        for i in range(ROWS):
            line = i + 2
            if line == 3:
                fh.write("not-an-email,Broken,Row,FI,red\n")
            elif line == 20_002:
                fh.write(f"bad{i}@example.com,Bad,Country,Atlantis,blue\n")
            else:
                fh.write(f"person{i}@example.com,Person,Number{i},FI,green\n")
    return path


def hold_after_first_batch(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make the web process's import wait after its first committed batch (and its progress report) until the
    returned event is set: on a fast machine 40,000 rows are in before the progress page has loaded, and the page
    would rightly show the summary at once. Everything else is the real import."""
    from suppilo.transfer import jobs

    go_on = threading.Event()
    real = jobs.importer.import_file

    def held(*args: Any, progress: Any, **kwargs: Any) -> Any:
        def report(rows: int, read: int, total: int) -> None:
            progress(rows, read, total)
            go_on.wait(timeout=120)

        return real(*args, progress=report, **kwargs)

    monkeypatch.setattr(jobs.importer, "import_file", held)
    return go_on


def test_import_with_mapping_progress_and_summary(
    app_url,  # noqa: F811
    watched,  # noqa: F811
    session_factory,
    tmp_path,
    monkeypatch,
) -> None:
    ws = make_workspace(session_factory)
    go_on = hold_after_first_batch(monkeypatch)
    log_in(watched, app_url, make_user(session_factory, ws.id, "marketer"))
    page = watched.page
    page.goto(f"{app_url}/app/w/{ws.slug}/contacts")
    page.get_by_role("link", name="Import and export").click()
    page.get_by_label("CSV file").set_input_files(str(big_csv(tmp_path / "hubspot-export.csv")))
    page.get_by_role("button", name="Upload and map the columns").click()
    expect(page.get_by_role("heading", name="Map the columns")).to_be_visible()
    # Guessed from the header; the sample shows the first rows with their line numbers.
    expect(page.get_by_label("Email Address")).to_have_value("email")
    expect(page.get_by_label("First Name")).to_have_value("first_name")
    expect(page.get_by_label("Country/Region")).to_have_value("country")
    expect(page.get_by_label("Favourite colour")).to_have_value("ignore")
    expect(page.locator("#mapping-table")).to_contain_text("person0@example.com")
    expect(page.locator("#mapping-table")).to_contain_text("Line 3")
    # Two columns mapped to Email: the form says which one and keeps the choice.
    page.get_by_label("Last Name").select_option("email")
    page.get_by_role("button", name="Start the import").click()
    expect(page.locator("#column-2-error")).to_contain_text("already mapped")
    expect(page.get_by_label("Last Name")).to_have_value("email")
    page.get_by_label("Last Name").select_option("last_name")
    page.get_by_role("button", name="Start the import").click()
    # The progress view: a bar and counters that htmx refreshes in place (no page load) until the summary.
    expect(page.locator("#import-bar")).to_be_visible()
    # The first batch is in (the import waits there): the counters and the bar show it without a page load.
    page.evaluate("window.__stillTheSamePage = true")
    expect(page.locator("#rows-done")).not_to_have_text("0", timeout=10_000)
    done = int(page.locator("#rows-done").inner_text().replace(",", ""))
    assert 0 < done < ROWS
    assert 0 < int(page.locator("#import-bar").get_attribute("value") or 0) < 100
    go_on.set()
    expect(page.locator("#import-summary")).to_be_visible(timeout=180_000)
    assert page.evaluate("window.__stillTheSamePage") is True
    expect(page.locator("#summary-rows")).to_have_text("40,000")
    expect(page.locator("#summary-created")).to_have_text("39,998")
    expect(page.locator("#summary-failed")).to_have_text("2")
    refused = page.locator("#refused-rows")
    expect(refused.locator("tbody tr")).to_have_count(2)
    expect(refused.locator("tbody tr").nth(0).locator("td").first).to_have_text("3")
    expect(refused.locator("tbody tr").nth(1).locator("td").first).to_have_text("20002")
    expect(refused.locator("tbody tr").nth(1)).to_contain_text("Atlantis")
    assert watched.csp_violations() == [] and watched.dialogs == []
    with httpx.Client(base_url=app_url, headers={"Authorization": f"Bearer {ws.admin_key}"}) as http:
        found = http.get("/api/v1/contacts", params={"q": "person39999@example.com"}).json()["items"]
        assert found and found[0]["last_name"] == "Number39999" and found[0]["country"] == "FI"


def test_merge_duplicates_from_the_contact_page(app_url, watched, session_factory) -> None:  # noqa: F811
    ws = make_workspace(session_factory)
    with httpx.Client(base_url=app_url, headers={"Authorization": f"Bearer {ws.admin_key}"}) as http:
        company = http.post("/api/v1/companies", json={"name": "Nordic Hotels", "domain": "nordhotel.fi"}).json()
        keep = http.post(
            "/api/v1/contacts", json={"email": "liisa@nordhotel.fi", "first_name": "Liisa", "last_name": "Laine"}
        ).json()
        dup = http.post(
            "/api/v1/contacts",
            json={"email": "liisa.laine@example.com", "first_name": "Liisa", "phone": "+358401112233"},
        ).json()
        http.post(f"/api/v1/contacts/{dup['id']}/tags", json={"tags": ["webinar"]})
    log_in(watched, app_url, make_user(session_factory, ws.id, "sales"))
    page = watched.page
    page.goto(f"{app_url}/app/w/{ws.slug}/contacts/{keep['id']}")
    page.get_by_role("link", name="Merge a duplicate into this contact").click()
    page.get_by_label("Search by name or email").fill("liisa")
    page.get_by_role("button", name="Search").click()
    candidates = page.locator("#merge-candidates")
    expect(candidates).to_contain_text("liisa.laine@example.com")
    expect(candidates).not_to_contain_text("liisa@nordhotel.fi")
    candidates.get_by_role("link", name="Compare").click()
    table = page.locator("#merge-table")
    expect(table.locator("tr", has_text="Phone")).to_contain_text("from the duplicate")
    expect(page.locator("#merge-result-tags")).to_have_text("webinar")
    page.get_by_label("Reason (kept in the merge history)").fill("same person, two addresses")
    page.get_by_role("button", name="Merge the two contacts").click()
    expect(page.locator("#merged-notice")).to_be_visible()
    assert page.url == f"{app_url}/app/w/{ws.slug}/contacts/{keep['id']}?done=merged"
    expect(page.locator("#properties")).to_contain_text("+358401112233")
    expect(page.locator("#properties")).to_contain_text("webinar")
    # The old address of the duplicate leads to the survivor; its company link opens the company page.
    page.goto(f"{app_url}/app/w/{ws.slug}/contacts/{dup['id']}")
    expect(page.locator("#contact-name")).to_have_text("Liisa Laine")
    page.locator("#contact-company").click()
    expect(page.locator("#company-name")).to_have_text("Nordic Hotels")
    assert page.url.endswith(f"/companies/{company['id']}")
    expect(page.locator("#company-contacts")).to_contain_text("Liisa Laine")
    # The companies list searches as you type (htmx swaps the results and follows with the address).
    page.get_by_role("link", name="Companies", exact=True).first.click()
    page.get_by_label("Search by name or domain").fill("nordh")
    page.wait_for_url("**/companies?q=nordh*")
    expect(page.locator("#companies-table")).to_contain_text("nordhotel.fi")
    page.get_by_label("Search by name or domain").fill("zz-none")
    expect(page.locator("#companies-table")).to_contain_text("No companies match.")
    assert watched.csp_violations() == [] and watched.dialogs == []
