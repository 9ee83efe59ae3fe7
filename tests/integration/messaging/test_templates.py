"""Templates on a real database: defaults per workspace, language fallback, validation at save, marketing rules,
rendering for a contact with Babel formatting, and tenant isolation."""

from __future__ import annotations

import pytest

from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import PropertyDefinition
from suppilo.contacts.schemas import ContactCreate
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.messaging import service
from suppilo.messaging.schemas import TemplateCreate, TemplateUpdate, VariantCreate, VariantIn
from suppilo.messaging.templates import TemplateInvalid, TemplateRenderError
from tests.conftest import make_workspace

MARKETING_HTML = (
    "<p>Hi {{ contact.first_name | default('there') }}</p>"
    '<p>{{ workspace.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
)


def _contact(session, workspace_id: int, **fields) -> int:
    data = {"email": "aino@example.fi", "first_name": "Aino", "language": "fi", "country": "FI"} | fields
    contact = contacts_service.create_contact(session, workspace_id, ContactCreate(**data))
    session.flush()
    return contact.id


def _create(session, workspace_id: int, key: str = "promo", kind: str = "marketing", **variant) -> object:
    v = {"language": "en", "subject": "Hello {{ contact.first_name }}", "html": MARKETING_HTML} | variant
    return service.create_template(
        session, workspace_id, TemplateCreate(key=key, kind=kind, variants=[VariantCreate(**v)])
    )


def test_new_workspace_gets_the_default_templates_in_five_languages(session, workspace) -> None:
    templates = {t.key: t for t in service.list_templates(session, workspace.id)}
    assert set(templates) == {
        "welcome",
        "double_opt_in",
        "order_thank_you",
        "abandoned_cart",
        "win_back",
        "review_request",
        "nps_survey",
        "nurture_interest",
        "onboarding",
        "cross_sell",
        "referral_request",
        "sales_handoff_ack",
        "task_reminder",
    }
    for template in templates.values():
        assert {v.language for v in template.variants} == {"en", "sv", "fi", "da", "lv"}
        assert template.status == "published"
        assert service.template_issues(session, template) == []
    assert templates["double_opt_in"].kind == "transactional"
    assert templates["win_back"].kind == "marketing"


def test_workspace_without_address_keeps_marketing_defaults_as_drafts(session_factory) -> None:
    ws = make_workspace(session_factory, address_line1=None, postal_code=None, city=None, address_country=None)
    with session_factory() as s:
        status = {t.key: t.status for t in service.list_templates(s, ws.id)}
        assert status["double_opt_in"] == "published"
        assert status["order_thank_you"] == "published"
        assert status["welcome"] == "draft"
        with pytest.raises(TemplateInvalid) as exc:
            service.publish_template(s, ws.id, service.get_template_by_key(s, ws.id, "welcome").id)
        assert exc.value.field == "workspace.postal_address"
        assert "postal address" in exc.value.message


def test_render_for_contact_uses_the_contacts_language_and_finnish_formats(session, workspace) -> None:
    contact_id = _contact(session, workspace.id)
    rendered = service.render_for_contact(
        session,
        workspace.id,
        "order_thank_you",
        contact_id,
        extra={
            "order": {
                "number": "PO-1001",
                "placed_at": "2024-05-01T21:30:00+00:00",
                "total_minor": 123456,
                "currency": "EUR",
                "lines": [{"name": "Teltta", "quantity": 1, "unit_price_minor": 123456}],
            }
        },
    )
    assert rendered.language == "fi"
    assert rendered.kind == "transactional"
    assert rendered.subject == "Kiitos tilauksestasi PO-1001"
    # 21:30 UTC is already 2 May in Helsinki; money and dates in Finnish.
    assert "2. toukokuuta 2024" in rendered.text
    assert "1\xa0234,56\xa0€" in rendered.text
    assert "Kiitos, Aino!" in rendered.text
    assert 'style="' in rendered.html and "<style" not in rendered.html  # CSS inlined


def test_language_falls_back_to_the_workspace_default(session, workspace) -> None:
    contact_id = _contact(session, workspace.id, email="hans@example.de", language="de", country="DE")
    rendered = service.render_for_contact(session, workspace.id, "welcome", contact_id)
    assert rendered.language == "en"
    assert rendered.subject.startswith("Welcome to Test ")
    assert "Mannerheimintie 1, 00100 Helsinki, Finland" in rendered.text


def test_missing_variant_and_template_are_domain_errors(session, workspace) -> None:
    contact_id = _contact(session, workspace.id, language="de")
    template = _create(session, workspace.id, language="sv", subject="Hej")
    service.publish_template(session, workspace.id, template.id)
    with pytest.raises(DomainError) as exc:
        service.render_for_contact(session, workspace.id, "promo", contact_id)
    assert exc.value.code == "variant_missing"
    with pytest.raises(NotFound):
        service.render_for_contact(session, workspace.id, "nope", contact_id)


def test_drafts_are_not_rendered_for_sending_but_previewed(session, workspace) -> None:
    contact_id = _contact(session, workspace.id, language="en")
    template = _create(session, workspace.id)
    with pytest.raises(DomainError) as exc:
        service.render_for_contact(session, workspace.id, "promo", contact_id)
    assert exc.value.code == "template_unpublished"
    preview = service.preview(session, workspace.id, template.id, contact_id)
    assert preview.subject == "Hello Aino"
    assert "Unsubscribe (https://example.invalid/unsubscribe)" in preview.text


def test_save_reports_every_issue_with_its_variant_path_and_line(session, workspace) -> None:
    data = TemplateCreate(
        key="broken",
        variants=[
            VariantCreate(language="en", subject="Hi {{ contact.nickname }}", html="<p>ok</p>\n<p>{% if %}</p>"),
            VariantCreate(language="fi", subject="Hei", html="<p>{{ ''.__class__.__mro__ }}</p>", text="{{ secret }}"),
        ],
    )
    with pytest.raises(TemplateInvalid) as exc:
        service.create_template(session, workspace.id, data)
    found = {(i.path, i.line) for i in exc.value.issues}
    assert ("variants.en.subject", 1) in found
    assert ("variants.en.html", 2) in found
    assert ("variants.fi.html", 1) in found
    assert ("variants.fi.text", 1) in found
    messages = " ".join(i.message for i in exc.value.issues)
    assert "unknown field contact.nickname" in messages
    assert "unknown variable 'secret'" in messages
    assert service.list_templates(session, workspace.id) and all(
        t.key != "broken" for t in service.list_templates(session, workspace.id)
    )


def test_custom_contact_properties_are_known_once_defined(session, workspace) -> None:
    html = MARKETING_HTML + "<p>{{ contact.properties.shoe_size }} {{ contact.shoe_size }}</p>"
    with pytest.raises(TemplateInvalid):
        _create(session, workspace.id, html=html)
    session.add(
        PropertyDefinition(workspace_id=workspace.id, object_type="contact", name="shoe_size", label="", type="number")
    )
    session.flush()
    template = _create(session, workspace.id, html=html)
    service.publish_template(session, workspace.id, template.id)
    contact_id = _contact(session, workspace.id, language="en", properties={"shoe_size": 43})
    assert "43 43" in service.render_for_contact(session, workspace.id, "promo", contact_id).text


@pytest.mark.parametrize(
    ("html", "text", "path", "needle"),
    [
        ("<p>{{ workspace.postal_address }}</p>", None, "variants.en.html", "unsubscribe link"),
        ('<p><a href="{{ unsubscribe_url }}">x</a></p>', None, "variants.en.html", "postal_address"),
        (MARKETING_HTML, "Hello, no link here {{ workspace.postal_address }}", "variants.en.text", "unsubscribe_url"),
    ],
)
def test_marketing_needs_unsubscribe_link_and_address(session, workspace, html, text, path, needle) -> None:
    template = _create(session, workspace.id, html=html, text=text)
    with pytest.raises(TemplateInvalid) as exc:
        service.publish_template(session, workspace.id, template.id)
    assert any(i.path == path and needle in i.message for i in exc.value.issues)
    # The same content is fine as transactional mail.
    service.update_template(session, workspace.id, template.id, TemplateUpdate(kind="transactional"))
    assert service.publish_template(session, workspace.id, template.id).status == "published"
    # A published template cannot be edited into an invalid state or switched to marketing without the rules.
    with pytest.raises(TemplateInvalid):
        service.update_template(session, workspace.id, template.id, TemplateUpdate(kind="marketing"))


def test_editing_a_published_template_keeps_it_publishable(session, workspace) -> None:
    template = _create(session, workspace.id)
    service.publish_template(session, workspace.id, template.id)
    version = template.version
    with pytest.raises(TemplateInvalid):
        service.put_variant(session, workspace.id, template.id, "en", VariantIn(subject="x", html="<p>no footer</p>"))
    session.refresh(template)
    assert template.variants[0].html == MARKETING_HTML
    updated = service.put_variant(
        session, workspace.id, template.id, "sv", VariantIn(subject="Hej", html=MARKETING_HTML)
    )
    assert {v.language for v in updated.variants} == {"en", "sv"}
    assert updated.version == version + 1


def test_duplicate_key_conflicts_and_foreign_ids_are_not_found(session, workspace, other_workspace) -> None:
    template = _create(session, workspace.id)
    with pytest.raises(Conflict):
        _create(session, workspace.id)
    with pytest.raises(NotFound):
        service.get_template(session, other_workspace.id, template.id)
    other_contact = _contact(session, other_workspace.id)
    with pytest.raises(NotFound):
        service.preview(session, workspace.id, template.id, other_contact)


def test_render_failure_is_a_domain_error_for_that_message_only(session, workspace) -> None:
    contact_id = _contact(session, workspace.id, language="en")
    template = _create(session, workspace.id, html=MARKETING_HTML + "{% for i in survey.scores %}{{ i }}{% endfor %}")
    service.publish_template(session, workspace.id, template.id)
    huge = {"scores": list(range(20_000))}
    with pytest.raises(TemplateRenderError):
        service.render_for_contact(session, workspace.id, "promo", contact_id, extra={"survey": huge})
    ok = service.render_for_contact(session, workspace.id, "promo", contact_id, extra={"survey": {"scores": [1, 2]}})
    assert "12" in ok.text


def test_extra_context_is_limited_to_known_roots(session, workspace) -> None:
    contact_id = _contact(session, workspace.id, language="en")
    with pytest.raises(DomainError) as exc:
        service.render_for_contact(session, workspace.id, "welcome", contact_id, extra={"settings": {"x": 1}})
    assert exc.value.field == "extra.settings"
