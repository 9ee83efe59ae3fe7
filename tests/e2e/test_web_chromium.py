"""The web interface in a real headless Chromium against suppilo under uvicorn: login, dashboard, contact search
and timeline, stored script through the tracking endpoint, the mail catcher, CSRF, CSP, workspace isolation."""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from suppilo.messaging import mime
from suppilo.messaging.catcher import MailStore
from tests.adapters.test_web_shell import PASSWORD, make_user
from tests.conftest import make_workspace
from tests.e2e.chromium import CHROMIUM, require_chromium
from tests.e2e.test_snippet_chromium import CHROMIUM_ARGS, free_port, wait_for

require_chromium()

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

SCRIPT = "<script>alert('xss')</script>"
ATTR = '" onmouseover="alert(1)" x="'


@pytest.fixture(scope="module")
def app_url(test_settings, db_engine) -> Iterator[str]:
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
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watched:
    """A page with every dialog (alert/confirm) and console error it produced."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def csp_violations(self) -> list[str]:
        return [e for e in self.errors if "Content Security Policy" in e]


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    yield Watched(page)
    context.close()


def log_in(w: Watched, app_url: str, email: str, password: str = PASSWORD) -> None:
    w.page.goto(f"{app_url}/app/login")
    w.page.get_by_label("Email").fill(email)
    w.page.get_by_label("Password").fill(password)
    w.page.get_by_role("button", name="Log in").click()


def test_login_wrong_password_then_dashboard(app_url, watched, session_factory) -> None:
    ws = make_workspace(session_factory)
    email = make_user(session_factory, ws.id, "admin", name="Aino Admin")
    page = watched.page
    response = page.goto(f"{app_url}/")
    assert page.url.startswith(f"{app_url}/app/login")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    log_in(watched, app_url, email, "definitely wrong")
    expect(page.locator("#login-error")).to_have_text("Wrong email or password.")
    expect(page.get_by_label("Email")).to_have_value(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    assert page.url == f"{app_url}/app/w/{ws.slug}/"
    # A new workspace has no dashboard snapshot yet: the page says it is being computed and polls (htmx) until the
    # background computation stored it, then shows the figures without a reload.
    expect(page.locator("#dashboard-computing")).to_be_visible()
    expect(page.locator("#funnel-table")).to_be_visible(timeout=30_000)
    expect(page.locator("#dashboard-computing")).to_have_count(0)
    expect(page.get_by_role("heading", name="Cost and return by channel")).to_be_visible()
    assert page.evaluate("typeof htmx") == "object", "htmx (from npm) did not load"
    # The period select submits itself (app.js) and the page keeps working under the CSP.
    page.select_option("#days", "30")
    page.wait_for_url(f"{app_url}/app/w/{ws.slug}/?days=30")
    assert watched.csp_violations() == [] and watched.dialogs == []


def test_find_a_contact_and_read_its_timeline(app_url, watched, session_factory) -> None:
    ws = make_workspace(session_factory, require_tracking_consent=False)
    anon = str(uuid.uuid4())
    auth = (ws.track_key, "")
    with httpx.Client(base_url=app_url, auth=auth) as http:
        page_call = {
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "name": "Tents",
            "properties": {"url": "https://shop.example.fi/tents?utm_source=newsletter&utm_campaign=autumn"},
            "context": {"campaign": {"name": "autumn", "source": "newsletter", "medium": "email"}},
        }
        assert http.post("/v1/page", json=page_call).status_code == 200
        identify = {
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "traits": {"email": "kaisa.korhonen@example.com", "firstName": "Kaisa", "lastName": "Korhonen"},
        }
        assert http.post("/v1/identify", json=identify).status_code == 200
    email = make_user(session_factory, ws.id, "sales")
    log_in(watched, app_url, email)
    page = watched.page
    page.get_by_role("link", name="Contacts").click()
    # Typing searches as you type (htmx swaps the results in place and updates the address).
    page.get_by_label("Search by name or email").fill("korh")
    expect(page.locator("#contacts-table")).to_contain_text("Kaisa Korhonen")
    page.wait_for_url("**/contacts?q=korh*")
    page.get_by_role("link", name="Kaisa Korhonen").click()
    expect(page.locator("#contact-name")).to_have_text("Kaisa Korhonen")
    timeline = page.locator("#timeline-items")
    expect(timeline).to_contain_text("page: Tents")
    expect(timeline).to_contain_text("autumn")
    expect(page.locator("#stage-history")).to_contain_text("Interest")
    assert watched.csp_violations() == [] and watched.dialogs == []


def test_stored_script_through_the_tracking_endpoint_never_runs(app_url, watched, session_factory) -> None:
    ws = make_workspace(session_factory, require_tracking_consent=False)
    anon = str(uuid.uuid4())
    with httpx.Client(base_url=app_url, auth=(ws.track_key, "")) as http:
        call = {
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "name": SCRIPT,
            "properties": {"url": f"https://shop.example.fi/{ATTR}", "note": SCRIPT, "nested": {"x": ATTR}},
            "context": {
                "page": {"url": f"https://shop.example.fi/?utm_campaign={ATTR}", "path": "/", "title": SCRIPT},
                "campaign": {"name": SCRIPT, "source": ATTR, "medium": "email"},
            },
        }
        assert http.post("/v1/page", json=call).status_code == 200
        identify = {
            "messageId": str(uuid.uuid4()),
            "anonymousId": anon,
            "traits": {"email": "mallory@example.com", "firstName": SCRIPT, "lastName": ATTR},
        }
        assert http.post("/v1/identify", json=identify).status_code == 200
    log_in(watched, app_url, make_user(session_factory, ws.id, "admin"))
    page = watched.page
    page.goto(f"{app_url}/app/w/{ws.slug}/contacts?q=mallory")
    row = page.locator("#contacts-table tbody tr").first
    expect(row).to_contain_text(SCRIPT)
    row.hover()
    row.get_by_role("link").click()
    expect(page.locator("#contact-name")).to_contain_text(SCRIPT)
    expect(page.locator("#contact-name")).to_contain_text(ATTR.strip())
    timeline = page.locator("#timeline-items")
    expect(timeline).to_contain_text(SCRIPT)
    expect(timeline).to_contain_text('onmouseover="alert(1)"')
    for item in timeline.locator("li").all():
        item.hover()
    page.locator("#properties").hover()
    assert page.locator("#main script").count() == 0
    page.wait_for_timeout(300)
    assert watched.dialogs == [], f"a stored script ran: {watched.dialogs}"
    assert watched.csp_violations() == []


def test_mail_catcher_renders_a_message_safely(app_url, watched, session_factory, test_settings) -> None:
    ws = make_workspace(session_factory)
    msg = EmailMessage()
    msg["From"] = "Pohjola Outdoor <shop@example.fi>"
    msg["To"] = "anna@example.com"
    msg["Subject"] = f"Welcome to the club {secrets.token_hex(3)}"
    msg["Message-ID"] = mime.message_id(41, ws.slug, "example.fi")
    msg.set_content("Welcome, Anna! (text part)")
    msg.add_alternative(
        "<html><body><p id='greeting' style='color:#123456'>Welcome, Anna!</p>"
        "<script>alert('from mail')</script><img src=x onerror=\"alert('img')\"></body></html>",
        subtype="html",
    )
    MailStore(test_settings.data_dir).store("shop@example.fi", ["anna@example.com"], msg.as_bytes())
    log_in(watched, app_url, make_user(session_factory, ws.id, "marketer"))
    page = watched.page
    page.get_by_role("link", name="Mail catcher").click()
    page.get_by_role("link", name=str(msg["Subject"])).click()
    expect(page.locator("#mail-subject")).to_have_text(str(msg["Subject"]))
    expect(page.locator("#mail-text")).to_contain_text("Welcome, Anna! (text part)")
    expect(page.locator("#mail-headers")).to_contain_text("anna@example.com")
    frame = page.frame_locator("#mail-html")
    expect(frame.locator("#greeting")).to_have_text("Welcome, Anna!")
    assert page.locator("#mail-html").get_attribute("sandbox") == ""
    page.wait_for_timeout(300)
    assert watched.dialogs == [], f"mail script ran: {watched.dialogs}"


def test_csrf_missing_is_refused_and_other_workspaces_are_404(app_url, watched, session_factory) -> None:
    ws = make_workspace(session_factory)
    other = make_workspace(session_factory)
    with httpx.Client(base_url=app_url, headers=ws.auth()) as http:
        c = http.post("/api/v1/contacts", json={"email": "csrf@example.com", "first_name": "Cora"}).json()
    log_in(watched, app_url, make_user(session_factory, ws.id, "marketer"))
    page = watched.page
    page.goto(f"{app_url}/app/w/{ws.slug}/contacts/{c['id']}")
    # Without the token the form is refused...
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    page.get_by_label("Add a tag").fill("forged")
    response_holder: list[int] = []
    page.on("response", lambda r: response_holder.append(r.status) if r.request.method == "POST" else None)
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.get_by_role("heading", name="Request refused")).to_be_visible()
    assert 403 in response_holder
    # ...with it the same form works.
    page.goto(f"{app_url}/app/w/{ws.slug}/contacts/{c['id']}")
    page.get_by_label("Add a tag").fill("genuine")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator("#properties .tags")).to_contain_text("genuine")
    expect(page.locator("#properties .tags")).not_to_contain_text("forged")
    assert page.goto(f"{app_url}/app/w/{other.slug}/").status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()


def test_language_switch_in_the_browser(app_url, watched, session_factory) -> None:
    ws = make_workspace(session_factory)
    log_in(watched, app_url, make_user(session_factory, ws.id, "analyst"))
    page = watched.page
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.select_option("#language", "sv")
    expect(page.get_by_role("heading", name="Översikt")).to_be_visible()
    expect(page.get_by_role("button", name="Logga ut")).to_be_visible()
    assert page.locator("html").get_attribute("lang") == "sv"
    page.get_by_role("button", name="Logga ut").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()


def test_move_deals_on_the_board_by_drag_and_by_keyboard(app_url, watched, session_factory) -> None:
    ws = make_workspace(session_factory)
    with httpx.Client(base_url=app_url, headers=ws.auth()) as http:
        dragged = http.post("/api/v1/deals", json={"name": "Drag me", "amount_minor": 50000, "currency": "EUR"}).json()
        keyed = http.post("/api/v1/deals", json={"name": "Key me", "amount_minor": 70000, "currency": "EUR"}).json()
        stages = {s["key"]: s["id"] for s in http.get("/api/v1/pipelines").json()[0]["stages"]}
    log_in(watched, app_url, make_user(session_factory, ws.id, "sales"))
    page = watched.page
    page.get_by_role("link", name="Pipeline").click()
    demo = page.locator(f'[data-stage-id="{stages["demo"]}"]')
    page.locator(f"#deal-{dragged['id']}").drag_to(demo)
    expect(page.locator("[role=status]")).to_have_text("Deal moved.")
    expect(page.locator(f'[data-stage-id="{stages["demo"]}"]')).to_contain_text("Drag me")
    # Without a mouse: open the card's Move menu, choose the stage, press the button, all from the keyboard.
    card = page.locator(f"#deal-{keyed['id']}")
    card.locator("summary").focus()
    page.keyboard.press("Enter")
    card.get_by_label("Move to stage").focus()
    card.get_by_label("Move to stage").select_option(str(stages["proposal"]))
    card.locator("form button[type=submit]").focus()
    page.keyboard.press("Enter")
    expect(page.locator(f'[data-stage-id="{stages["proposal"]}"]')).to_contain_text("Key me")
    # Dropping on Lost asks for the reason instead of moving at once.
    lost = page.locator(f'[data-stage-id="{stages["lost"]}"]')
    page.locator(f"#deal-{dragged['id']}").drag_to(lost)
    reason = page.locator(f"#lost-{dragged['id']}")
    expect(reason).to_be_focused()
    reason.fill("went with a competitor")
    page.keyboard.press("Enter")
    expect(page.locator(f'[data-stage-id="{stages["lost"]}"]')).to_contain_text("went with a competitor")
    with httpx.Client(base_url=app_url, headers=ws.auth()) as http:
        assert http.get(f"/api/v1/deals/{dragged['id']}").json()["status"] == "lost"
        assert http.get(f"/api/v1/deals/{keyed['id']}").json()["stage_id"] == stages["proposal"]
    assert watched.csp_violations() == [] and watched.dialogs == []
