"""The deal page in a real headless Chromium: open a deal from the board, edit its BANT qualification (a bad budget
is refused at its field with the text kept, then saved), and complete its task; no CSP violation, no dialog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.adapters.test_web_shell import make_user
from tests.conftest import make_workspace
from tests.e2e.chromium import require_chromium

require_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.e2e.test_web_chromium import app_url, browser, log_in, watched  # noqa: E402, F401

SCRIPT = "<script>alert('deal')</script>"


def test_open_a_deal_from_the_board_edit_bant_and_complete_a_task(app_url, watched, session_factory) -> None:  # noqa: F811
    ws = make_workspace(session_factory)
    email = make_user(session_factory, ws.id, "sales", name="Sami Sales")
    with httpx.Client(base_url=app_url, headers=ws.auth()) as http:
        contact = http.post("/api/v1/contacts", json={"email": "buyer@example.fi", "first_name": "Bea"}).json()
        deal = http.post(
            "/api/v1/deals",
            json={"name": "Tents for the club", "amount_minor": 250000, "currency": "EUR", "contact_id": contact["id"]},
        ).json()
        due = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        task = http.post(
            "/api/v1/tasks", json={"title": "Call Bea " + SCRIPT, "kind": "call", "due_at": due, "deal_id": deal["id"]}
        ).json()
        http.post(f"/api/v1/deals/{deal['id']}/objections", json={"text": "Too dear " + SCRIPT})
    log_in(watched, app_url, email)
    page = watched.page
    page.get_by_role("link", name="Pipeline").click()
    page.locator(f"#deal-{deal['id']}").get_by_role("link", name="Tents for the club").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Tents for the club")
    assert page.url == f"{app_url}/app/w/{ws.slug}/deals/{deal['id']}"
    expect(page.locator("#deal-amount")).to_have_text("€2,500.00")
    expect(page.locator("#objections")).to_contain_text("Too dear " + SCRIPT)

    # BANT: a budget that is not an amount is refused at its field; what was typed stays.
    page.get_by_label("Budget", exact=True).fill("fifteen k")
    page.get_by_label("Budget currency").fill("EUR")
    page.get_by_label("Authority (who decides)").fill("Club treasurer")
    page.get_by_label("Need").fill("Tents for 40 scouts")
    page.get_by_label("Qualification status").select_option("qualified")
    page.get_by_role("button", name="Save qualification").click()
    expect(page.locator("#bant-budget-error")).to_have_text("Give the budget as an amount such as 12000.50.")
    expect(page.get_by_label("Budget", exact=True)).to_have_value("fifteen k")
    expect(page.get_by_label("Need")).to_have_value("Tents for 40 scouts")
    page.get_by_label("Budget", exact=True).fill("15000")
    page.get_by_role("button", name="Save qualification").click()
    expect(page.locator("[role=status]")).to_have_text("Qualification saved.")
    expect(page.get_by_label("Budget", exact=True)).to_have_value("15000.00")
    expect(page.get_by_label("Qualification status")).to_have_value("qualified")

    # Complete the task from its row.
    row = page.locator(f"#task-{task['id']}")
    expect(row).to_contain_text("Call Bea " + SCRIPT)
    row.get_by_role("button", name="Complete").click()
    expect(page.locator(f"#task-{task['id']}")).to_contain_text("Done")
    with httpx.Client(base_url=app_url, headers=ws.auth()) as http:
        saved = http.get(f"/api/v1/deals/{deal['id']}").json()
        assert (saved["budget_minor"], saved["budget_currency"], saved["authority"], saved["need"]) == (
            1500000,
            "EUR",
            "Club treasurer",
            "Tents for 40 scouts",
        )
        assert saved["qualification_status"] == "qualified"
        assert http.get(f"/api/v1/tasks/{task['id']}").json()["done_at"] is not None
    assert watched.csp_violations() == [] and watched.dialogs == []
