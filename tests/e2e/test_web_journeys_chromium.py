"""Journeys and segments in a real headless Chromium against suppilo under uvicorn: enable a playbook from the gallery,
let its trigger happen, run the scanners, the runner and the sender into the built-in mail catcher, and read the
welcome mail in the mail catcher page; build a segment and watch its count change as a condition is added."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
from playwright.sync_api import expect

from suppilo.db.base import utcnow
from suppilo.events import service as events_service
from suppilo.journeys.runner import run_due
from suppilo.journeys.triggers import run_scanners
from suppilo.messaging.catcher import MailCatcher
from suppilo.messaging.sender import Sender, SenderConfig
from suppilo.messaging.transport import SmtpConfig, SmtpTransport
from tests.adapters.test_web_shell import make_user
from tests.conftest import make_workspace
from tests.e2e.test_snippet_chromium import free_port
from tests.e2e.test_web_chromium import app_url, browser, log_in, watched  # noqa: F401 (fixtures)


def send_outbox(session_factory, data_dir, workspace_id: int) -> int:
    """Drain the workspace's outbox over SMTP into the built-in mail catcher (as ``suppilo outbox send`` does)."""
    catcher = MailCatcher(data_dir, port=free_port())
    catcher.start()
    try:
        config = SenderConfig(
            secret="e2e-secret-" + "x" * 32,
            public_url="http://127.0.0.1",
            from_address="shop@pohjola.example",
            poll_interval=0.05,
            workspace_ids=(workspace_id,),
        )
        transport = SmtpTransport(SmtpConfig(host=catcher.host, port=catcher.port, start_tls=False, timeout=10))

        async def drain() -> object:
            try:
                return await Sender(session_factory, transport, config).run(until_empty=True, max_seconds=60)
            finally:
                await transport.close()

        # Playwright's sync API keeps an event loop running in this thread: the sender gets a thread of its own.
        with ThreadPoolExecutor(1) as pool:
            stats = pool.submit(asyncio.run, drain()).result(timeout=120)
    finally:
        catcher.stop()
    return int(getattr(stats, "sent", 0))


def test_enable_a_playbook_and_read_its_mail_in_the_catcher(app_url, watched, session_factory, test_settings) -> None:  # noqa: F811
    ws = make_workspace(session_factory)
    with httpx.Client(base_url=app_url, headers=ws.auth()) as http:
        c = http.post(
            "/api/v1/contacts",
            json={"email": "aino.virtanen@example.fi", "first_name": "Aino", "country": "FI", "language": "en"},
        )
        assert c.status_code in (200, 201), c.text
        contact_id = c.json()["id"]
        consent = http.post(
            f"/api/v1/contacts/{contact_id}/consent",
            json={"action": "granted", "topic": "marketing", "confirmed": True},
        )
        assert consent.status_code == 201, consent.text
    log_in(watched, app_url, make_user(session_factory, ws.id, "marketer"))
    page = watched.page
    page.get_by_role("link", name="Journeys", exact=True).click()
    expect(page.get_by_role("heading", name="Journeys")).to_be_visible()
    page.get_by_role("link", name="Playbook gallery").click()
    card = page.locator("#playbook-welcome_series")
    card.get_by_label("Tips after (days)").fill("2")
    card.get_by_role("button", name="Enable").click()
    expect(page.locator("[role=status]")).to_have_text("Playbook enabled.")
    expect(page.locator("#journey-name")).to_have_text("Welcome series")
    expect(page.locator("#journey-status")).to_have_text("Active")
    expect(page.locator("#step-pause")).to_contain_text("2 d")

    # The trigger happens (a form submission), then the worker's parts run: scanners, runner, sender.
    with session_factory() as s:
        events_service.record_event(s, ws.id, contact_id, "Form Submitted", {"form": "newsletter"}, utcnow())
        s.commit()
    assert run_scanners(session_factory) >= 1
    assert run_due(session_factory) >= 1
    assert send_outbox(session_factory, test_settings.data_dir, ws.id) == 1

    page.reload()
    expect(page.locator("#kpi-entered")).to_have_text("1")
    expect(page.locator("#report-welcome")).to_contain_text("1")
    page.get_by_role("link", name="Mail catcher").click()
    message = page.locator("main a[href*='/mail/']").first
    expect(message).to_be_visible()
    message.click()
    expect(page.locator("#mail-headers")).to_contain_text("aino.virtanen@example.fi")
    expect(page.locator("#mail-text")).to_contain_text("Aino")
    subject = page.locator("#mail-subject").inner_text()
    assert subject.strip()
    # The journey's enrollment timeline names the welcome step and its message.
    page.goto(f"{app_url}/app/w/{ws.slug}/journeys")
    page.get_by_role("link", name="Welcome series").click()
    page.get_by_role("link", name="Enrollments and their timelines").click()
    page.locator("#enrollments-table a[href*='/enrollments/']").first.click()
    expect(page.locator("#enrollment-timeline")).to_contain_text("welcome")
    # The only thing the policy blocked is the mail's open-tracking pixel inside the sandboxed mail frame.
    assert all('"img-src data:"' in v and "/o/" in v for v in watched.csp_violations())
    assert watched.dialogs == []


def after_swap(page, action) -> None:
    """Do ``action`` (which makes htmx redraw the builder) and wait until the builder was redrawn."""
    page.evaluate("document.getElementById('builder').dataset.stale = '1'")
    action()
    page.wait_for_selector("#builder:not([data-stale])")
    # htmx wires the new content up when it settles: act on it only after that (and with no request in flight).
    page.wait_for_function(
        "() => !document.querySelector('.htmx-settling, .htmx-swapping, .htmx-added, .htmx-request')"
    )


def test_build_a_segment_and_watch_its_count(app_url, watched, session_factory) -> None:  # noqa: F811
    ws = make_workspace(session_factory)
    with httpx.Client(base_url=app_url, headers=ws.auth()) as http:
        for email, country in (("a@example.fi", "FI"), ("b@example.fi", "FI"), ("c@example.se", "SE")):
            assert http.post("/api/v1/contacts", json={"email": email, "country": country}).status_code in (200, 201)
    log_in(watched, app_url, make_user(session_factory, ws.id, "marketer"))
    page = watched.page
    page.get_by_role("link", name="Segments", exact=True).click()
    page.get_by_role("link", name="New segment").click()
    count = page.locator("#count-value")
    expect(count).to_have_text("3")  # no condition yet: everyone
    after_swap(page, lambda: page.get_by_role("button", name="Add a condition").click())
    after_swap(page, lambda: page.locator("#row-0-what").select_option("contact.country"))
    expect(page.locator("#row-0-op")).to_have_value("eq")
    page.locator("#row-0-value").fill("FI")
    expect(count).to_have_text("2")  # htmx counted as we typed
    # A second condition: with AND nobody is in both countries; switching the group to OR takes both.
    after_swap(page, lambda: page.get_by_role("button", name="Add a condition").click())
    after_swap(page, lambda: page.locator("#row-1-what").select_option("contact.country"))
    page.locator("#row-1-value").fill("SE")
    expect(count).to_have_text("0")  # FI and SE at once: nobody
    after_swap(page, lambda: page.locator("#group-0-match").select_option("or"))
    expect(count).to_have_text("3")
    page.get_by_label("Name", exact=True).fill("Nordic shoppers")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("[role=status]")).to_have_text("Segment saved.")
    expect(page.locator("#member-count")).to_have_text("3")
    expect(page.locator("#history-table")).to_contain_text("entered")
    assert watched.csp_violations() == [] and watched.dialogs == []
