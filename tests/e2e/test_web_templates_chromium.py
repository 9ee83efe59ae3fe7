"""Templates in a real headless Chromium: a marketer finds a template, previews it in Finnish for a real contact and
sees the rendered mail in a sandboxed frame where no script runs; a refused edit shows its message and keeps text."""

from __future__ import annotations

from suppilo.contacts.models import Contact
from suppilo.messaging import service as templates_service
from suppilo.messaging.schemas import TemplateCreate, VariantCreate
from tests.adapters.test_web_shell import make_user
from tests.conftest import make_workspace
from tests.e2e.test_web_chromium import Watched, app_url, browser, log_in, watched  # noqa: F401

from playwright.sync_api import expect  # isort: skip

SCRIPT = "<script>document.body.setAttribute('data-ran', '1'); alert('preview')</script>"
IMG = "<img src=x onerror=\"alert('img')\">"
FOOTER = '<p>{{ workspace.postal_address }}</p><a href="{{ unsubscribe_url }}">unsubscribe</a>'


def seed(session_factory) -> tuple[str, int, int, int]:
    ws = make_workspace(session_factory)
    with session_factory() as s:
        contact = Contact(workspace_id=ws.id, email="aino@example.com", first_name="Aino", language="sv")
        s.add(contact)
        s.flush()
        template = templates_service.create_template(
            s,
            ws.id,
            TemplateCreate(
                key="spring-welcome",
                name="Welcome mail",
                variants=[
                    VariantCreate(
                        language="fi",
                        subject="Tervetuloa, {{ contact.first_name }}",
                        html=f"<h1>Hei {{{{ contact.first_name }}}}!</h1>{IMG}{SCRIPT}{FOOTER}",
                    ),
                    VariantCreate(
                        language="sv", subject="Välkommen, {{ contact.first_name }}", html=f"<h1>Hej</h1>{FOOTER}"
                    ),
                ],
            ),
        )
        s.commit()
        return ws.slug, ws.id, contact.id, template.id


def test_preview_a_template_in_finnish_for_a_real_contact(app_url, watched: Watched, session_factory) -> None:  # noqa: F811
    slug, ws_id, contact_id, template_id = seed(session_factory)
    email = make_user(session_factory, ws_id, "marketer", name="Maija Marketer")
    page = watched.page
    log_in(watched, app_url, email)
    page.goto(f"{app_url}/app/w/{slug}/templates")
    page.get_by_role("link", name="Welcome mail").click()
    expect(page.locator("#template-name")).to_have_text("Welcome mail")
    page.get_by_role("link", name="Preview for a contact").click()
    page.get_by_label("Find a contact by name or email").fill("aino")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="Aino").click()
    # Without a choice the contact's own language (Swedish) is used; then Finnish is picked.
    expect(page.locator("#preview-subject")).to_have_text("Välkommen, Aino")
    page.get_by_label("Template language").select_option("fi")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#preview-language")).to_have_text("Suomi")
    expect(page.locator("#preview-subject")).to_have_text("Tervetuloa, Aino")
    frame = page.frame_locator("#preview-html")
    expect(frame.locator("h1")).to_have_text("Hei Aino!")
    assert f"contact={contact_id}" in page.url and "lang=fi" in page.url
    # The script and the onerror handler in the template never ran: no attribute set, no dialog.
    expect(frame.locator("body")).not_to_have_attribute("data-ran", "1")
    page.wait_for_timeout(300)
    assert watched.dialogs == []
    body = page.request.get(f"{app_url}/app/w/{slug}/templates/{template_id}/preview/body?contact={contact_id}&lang=fi")
    assert "sandbox" in body.headers["content-security-policy"]


def test_a_refused_edit_keeps_the_typed_text(app_url, watched: Watched, session_factory) -> None:  # noqa: F811
    slug, ws_id, _contact_id, template_id = seed(session_factory)
    email = make_user(session_factory, ws_id, "marketer")
    page = watched.page
    log_in(watched, app_url, email)
    page.goto(f"{app_url}/app/w/{slug}/templates/{template_id}?lang=da")
    page.get_by_label("Subject").fill("Hej {{ contact.first_name")
    page.get_by_label("HTML", exact=True).fill("<p>{{ contact.shoe_size }}</p>")
    page.get_by_role("button", name="Save variant").click()
    expect(page.locator("#e-html")).to_contain_text("shoe_size")
    expect(page.locator("#e-subject")).to_be_visible()
    expect(page.get_by_label("Subject")).to_have_value("Hej {{ contact.first_name")
    expect(page.get_by_label("HTML", exact=True)).to_have_value("<p>{{ contact.shoe_size }}</p>")
    assert watched.csp_violations() == [] and watched.dialogs == []


def test_reports_and_settings_pages_run_under_the_policy(app_url, watched: Watched, session_factory) -> None:  # noqa: F811
    slug, ws_id, _contact_id, _template_id = seed(session_factory)
    email = make_user(session_factory, ws_id, "admin")
    page = watched.page
    log_in(watched, app_url, email)
    page.goto(
        f"{app_url}/app/w/{slug}/reports/experiments?name0=A&conversions0=10&trials0=100&name1=B&conversions1=30&trials1=100"
    )
    expect(page.locator(".experiment-table")).to_be_visible()
    expect(page.locator("svg.chart").first).to_be_visible()
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Settings")).to_be_visible()
    page.get_by_label("Time zone").fill("Nowhere/Else")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#form-error")).to_be_visible()
    expect(page.get_by_label("Time zone")).to_have_value("Nowhere/Else")
    page.get_by_role("link", name="API keys").click()
    page.get_by_label("read", exact=True).check()
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#raw-key")).to_contain_text("sk_")
    assert watched.csp_violations() == [] and watched.dialogs == []
