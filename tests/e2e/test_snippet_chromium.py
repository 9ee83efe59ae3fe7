"""The snippet, the embed and the hosted form in a real headless Chromium against a running suppilo.

suppilo runs under uvicorn on one port; a plain static site on another port (a second origin) loads /t.js.
"""

from __future__ import annotations

import functools
import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from suppilo.capture import service as capture_service
from suppilo.capture.models import FormSubmission
from suppilo.capture.schemas import FormCreate
from suppilo.contacts.models import Contact
from suppilo.events.models import Event
from tests.conftest import make_workspace
from tests.e2e.chromium import CHROMIUM, require_chromium

require_chromium()

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UTM = "?utm_source=newsletter&utm_medium=email&utm_campaign=autumn"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(fetch: Callable[[], Any], *, timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``fetch`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def app_url(test_settings, db_engine) -> Iterator[str]:
    """suppilo under uvicorn in a background thread, on the test database."""
    import uvicorn

    from suppilo.adapters.http.app import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(test_settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A static web site on another origin: (base URL, directory to write pages into)."""
    root = tmp_path_factory.mktemp("site")
    (root / "thanks.html").write_text("<!doctype html><title>Thanks</title><p id='thanks'>Thanks!</p>")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(locale="en-GB")
    pg = context.new_page()
    yield pg
    context.close()


def landing_page(app_url: str, write_key: str, body: str = "") -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Autumn sale</title>
<script>
  window.suppilo = window.suppilo || [];
  suppilo.push(["init", {{ writeKey: "{write_key}" }}]);
</script>
<script async src="{app_url}/t.js?k={write_key}"></script>
</head><body>
<h1>Autumn sale</h1>
{body}
</body></html>"""


def page_events(session_factory, workspace_id: int) -> list[Event]:
    with session_factory() as s:
        return list(s.scalars(select(Event).where(Event.workspace_id == workspace_id, Event.kind == "page")))


def suppilo_cookies(page: Page) -> list[dict[str, Any]]:
    return [c for c in page.context.cookies() if c["name"] == "suppilo_aid"]


def test_page_view_with_campaign_then_form_identifies_the_visitor(app_url, site, page, session_factory):
    ws = make_workspace(session_factory, require_tracking_consent=False)
    base, root = site
    form = """<form data-suppilo-form action="/thanks.html" method="get">
  <label>Email <input type="email" name="email"></label>
  <label>First name <input type="text" name="first_name"></label>
  <button type="submit">Join</button>
</form>"""
    (root / "landing.html").write_text(landing_page(app_url, ws.track_key, form))
    page.goto(f"{base}/landing.html{UTM}")

    [event] = wait_for(lambda: page_events(session_factory, ws.id), what="the page view")
    assert event.context["campaign"] == {"name": "autumn", "source": "newsletter", "medium": "email"}
    assert event.context["library"]["name"] == "suppilo.js"
    assert event.properties["title"] == "Autumn sale" and event.properties["path"] == "/landing.html"
    assert event.properties["search"] == UTM
    with session_factory() as s:
        visitor = s.get(Contact, event.contact_id)
        assert visitor is not None and visitor.is_anonymous
        assert visitor.first_touch_channel == "email" and visitor.latest_touch_channel == "email"

    anonymous_id = page.evaluate("suppilo.anonymousId()")
    assert anonymous_id == event.anonymous_id
    assert [c["value"] for c in suppilo_cookies(page)] == [anonymous_id]
    assert page.evaluate("localStorage.getItem('suppilo_aid')") == anonymous_id

    page.fill("input[name=email]", "Visitor@Example.fi")
    page.fill("input[name=first_name]", "Vera")
    page.click("button[type=submit]")
    page.wait_for_url("**/thanks.html*")

    def identified() -> Contact | None:
        with session_factory() as s:
            return s.scalar(select(Contact).where(Contact.workspace_id == ws.id, Contact.email == "visitor@example.fi"))

    contact = wait_for(identified, what="the identified contact")
    assert contact.first_name == "Vera" and not contact.is_anonymous
    assert contact.first_touch_channel == "email"
    with session_factory() as s:
        history = s.scalar(select(Event).where(Event.workspace_id == ws.id, Event.message_id == event.message_id))
        assert history.contact_id == contact.id


def test_consent_required_sets_no_identifier_before_consent(app_url, site, page, session_factory):
    ws = make_workspace(session_factory, require_tracking_consent=True)
    base, root = site
    (root / "consent.html").write_text(landing_page(app_url, ws.track_key))
    page.goto(f"{base}/consent.html{UTM}")

    [event] = wait_for(lambda: page_events(session_factory, ws.id), what="the cookieless page view")
    assert event.context["campaign"]["medium"] == "email"
    assert suppilo_cookies(page) == []
    assert page.evaluate("Object.keys(localStorage)") == []
    assert "suppilo_aid" not in page.evaluate("document.cookie")

    page.evaluate("suppilo.consent(true)")
    [cookie] = suppilo_cookies(page)
    stored = page.evaluate("localStorage.getItem('suppilo_aid')")
    assert stored and cookie["value"] == stored
    # The page load's id is the one kept, so this visit's page view stays with the visitor.
    assert stored == event.anonymous_id

    page.evaluate("suppilo.consent(false)")
    assert suppilo_cookies(page) == [] and page.evaluate("Object.keys(localStorage)") == []


def make_form(session_factory, workspace_id: int, **overrides: Any):
    data = {
        "slug": "newsletter",
        "name": "Newsletter",
        "fields": [
            {"name": "email", "label": "Email", "type": "email", "required": True, "maps_to": "email"},
            {"name": "first_name", "label": "First name", "type": "text", "maps_to": "first_name"},
        ],
        "consent_text": "Send me the newsletter.",
        "consent_version": "v1",
        "consent_required": True,
        "success_message": "Welcome aboard!",
    }
    data.update(overrides)
    with session_factory() as s:
        form = capture_service.create_form(s, workspace_id, FormCreate(**data))
        s.commit()
        return form


def test_hosted_form_page(app_url, page, session_factory):
    ws = make_workspace(session_factory)
    form = make_form(session_factory, ws.id, language="fi")
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)

    page.goto(f"{app_url}/f/{form.public_key}")
    page.fill("#f-email", "not-an-email")
    page.fill("#f-first_name", "Olli")
    page.click("button[type=submit]")
    assert page.text_content("#f-email-error") == "Anna kelvollinen sähköpostiosoite."
    assert page.text_content("#f-consent-error") == "Rastita ruutu jatkaaksesi."
    assert page.input_value("#f-email") == "not-an-email"
    assert page.input_value("#f-first_name") == "Olli"
    # The stylesheet applies under the page's CSP (the honeypot is moved off-screen).
    assert page.evaluate("getComputedStyle(document.querySelector('.hp')).position") == "absolute"

    page.fill("#f-email", "olli@example.fi")
    page.check("#f-consent")
    page.click("button[type=submit]")
    assert page.text_content("p.message") == "Welcome aboard!"
    assert violations == []
    with session_factory() as s:
        [sub] = s.scalars(select(FormSubmission).where(FormSubmission.form_id == form.id))
        assert sub.consent_given and sub.consent_text == "Send me the newsletter."
        assert s.get(Contact, sub.contact_id).email == "olli@example.fi"


def test_embedded_form_links_the_visitor(app_url, site, page, session_factory):
    ws = make_workspace(session_factory, require_tracking_consent=False)
    form = make_form(session_factory, ws.id, slug="embed", consent_required=False)
    base, root = site
    body = f"""<div data-suppilo-embed="{form.public_key}"></div>
<script src="{app_url}/f/{form.public_key}/embed.js"></script>"""
    (root / "embed.html").write_text(landing_page(app_url, ws.track_key, body))
    page.goto(f"{base}/embed.html{UTM}")
    [event] = wait_for(lambda: page_events(session_factory, ws.id), what="the page view")

    page.fill(f"#suppilo-{form.public_key}-email", "embed@example.fi")
    page.click(".suppilo-submit")
    page.wait_for_selector(".suppilo-success")
    assert page.text_content(".suppilo-success") == "Welcome aboard!"

    with session_factory() as s:
        contact = s.scalar(select(Contact).where(Contact.workspace_id == ws.id, Contact.email == "embed@example.fi"))
        assert contact is not None and contact.first_touch_channel == "email"
        [sub] = s.scalars(select(FormSubmission).where(FormSubmission.form_id == form.id))
        assert sub.page_url == f"{base}/embed.html{UTM}" and sub.consent_given is False
        viewed = s.scalar(select(Event).where(Event.workspace_id == ws.id, Event.message_id == event.message_id))
        assert viewed.contact_id == contact.id
