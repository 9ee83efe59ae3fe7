"""Forms over HTTP: the CRUD API and the public hosted page / embed submissions."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from suppilo.capture.models import FormSubmission
from suppilo.contacts.models import Contact, ContactTag, StageChange
from suppilo.events.models import Event

CONSENT = "Yes, send me the Autumn newsletter. I can unsubscribe at any time — see privacy.html §3."


def form_payload(**overrides):
    data = {
        "slug": "newsletter",
        "name": "Newsletter sign-up",
        "fields": [
            {"name": "email", "label": "Email", "type": "email", "required": True, "maps_to": "email"},
            {"name": "first_name", "label": "First name", "type": "text", "maps_to": "first_name"},
            {"name": "phone", "label": "Phone", "type": "tel", "maps_to": "phone"},
            {"name": "topic", "label": "Topic", "type": "select", "options": ["Sauna", "Boats"]},
        ],
        "consent_text": CONSENT,
        "consent_version": "2024-09",
        "consent_required": True,
        "consent_topic": "newsletter",
        "success_message": "Thanks, you're in!",
        "tags": ["newsletter", "autumn"],
        "language": "en",
    }
    data.update(overrides)
    return data


def create_form(client, workspace, **overrides):
    resp = client.post("/api/v1/forms", json=form_payload(**overrides), headers=workspace.auth("write"))
    assert resp.status_code == 201, resp.text
    return resp.json()


def contact_by_email(session_factory, workspace, email):
    with session_factory() as s:
        return s.scalar(select(Contact).where(Contact.workspace_id == workspace.id, Contact.email == email))


def submissions(session_factory, form_id):
    with session_factory() as s:
        return list(s.scalars(select(FormSubmission).where(FormSubmission.form_id == form_id)))


def test_crud(client, workspace):
    form = create_form(client, workspace)
    assert len(form["public_key"]) >= 20
    assert form["hosted_url"].endswith(f"/f/{form['public_key']}")
    assert form["embed_url"].endswith(f"/f/{form['public_key']}/embed.js")
    got = client.get(f"/api/v1/forms/{form['id']}", headers=workspace.auth("read"))
    assert got.status_code == 200 and got.json()["consent_text"] == CONSENT
    listed = client.get("/api/v1/forms", headers=workspace.auth("read")).json()
    assert [f["slug"] for f in listed] == ["newsletter"]
    patched = client.patch(
        f"/api/v1/forms/{form['id']}", json={"name": "Renamed", "is_active": False}, headers=workspace.auth("write")
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "Renamed" and patched.json()["public_key"] == form["public_key"]
    assert client.delete(f"/api/v1/forms/{form['id']}", headers=workspace.auth("write")).status_code == 204
    assert client.get(f"/api/v1/forms/{form['id']}", headers=workspace.auth("read")).status_code == 404


def test_read_key_cannot_write_and_duplicate_slug_conflicts(client, workspace):
    resp = client.post("/api/v1/forms", json=form_payload(), headers=workspace.auth("read"))
    assert resp.status_code == 403
    create_form(client, workspace)
    dup = client.post("/api/v1/forms", json=form_payload(), headers=workspace.auth("write"))
    assert dup.status_code == 409 and dup.json()["error"]["path"] == "slug"


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"redirect_url": "javascript:alert(1)"}, "body.redirect_url"),
        ({"slug": "Has Spaces"}, "body.slug"),
        ({"language": "de"}, "body.language"),
        ({"consent_version": None}, "body"),
    ],
)
def test_validation_errors_have_paths(client, workspace, change, path):
    resp = client.post("/api/v1/forms", json=form_payload(**change), headers=workspace.auth("write"))
    assert resp.status_code == 422
    assert resp.json()["error"]["path"] == path


def test_field_errors_have_paths(client, workspace):
    fields = form_payload()["fields"]
    bad = [*fields[:3], {"name": "topic", "label": "Topic", "type": "select"}]
    resp = client.post("/api/v1/forms", json=form_payload(fields=bad), headers=workspace.auth("write"))
    assert resp.status_code == 422 and resp.json()["error"]["path"] == "body.fields[3]"
    bad = [*fields[:3], {"name": "x", "label": "X", "maps_to": "password"}]
    resp = client.post("/api/v1/forms", json=form_payload(fields=bad), headers=workspace.auth("write"))
    assert resp.json()["error"]["path"] == "body.fields[3].maps_to"
    bad = [*fields[:3], {"name": "x", "label": "X", "maps_to": "properties.shoe_size"}]
    resp = client.post("/api/v1/forms", json=form_payload(fields=bad), headers=workspace.auth("write"))
    assert resp.status_code == 422 and resp.json()["error"]["path"] == "fields[3].maps_to"
    no_email = [f for f in fields if f["name"] != "email"]
    resp = client.post("/api/v1/forms", json=form_payload(fields=no_email), headers=workspace.auth("write"))
    assert resp.status_code == 422 and resp.json()["error"]["path"] == "body.fields"


def test_other_workspace_forms_are_not_found(client, workspace, other_workspace):
    form = create_form(client, workspace)
    for method in ("get", "patch", "delete"):
        kwargs = {"json": {"name": "x"}} if method == "patch" else {}
        resp = getattr(client, method)(f"/api/v1/forms/{form['id']}", headers=other_workspace.auth("write"), **kwargs)
        assert resp.status_code == 404, method
    resp = client.get(f"/api/v1/forms/{form['id']}/submissions", headers=other_workspace.auth("read"))
    assert resp.status_code == 404
    assert client.get("/api/v1/forms", headers=other_workspace.auth("read")).json() == []


def test_hosted_page_is_localised_with_strict_csp(client, workspace):
    form = create_form(client, workspace, language=None)
    page = client.get(f"/f/{form['public_key']}", headers={"Accept-Language": "fi-FI,fi;q=0.9,en;q=0.5"})
    assert page.status_code == 200
    assert "<script" not in page.text
    assert "Lähetä" in page.text and '<html lang="fi">' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'none'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    sv = client.get(f"/f/{form['public_key']}", headers={"Accept-Language": "sv"})
    assert "Skicka" in sv.text
    fixed = create_form(client, workspace, slug="lv-form", language="lv")
    assert "Nosūtīt" in client.get(f"/f/{fixed['public_key']}", headers={"Accept-Language": "sv"}).text


def test_hosted_page_escapes_script_in_names_and_labels(client, workspace):
    fields = form_payload()["fields"]
    fields[1]["label"] = "<script>alert('label')</script>"
    form = create_form(client, workspace, name="<script>alert('name')</script>", fields=fields)
    page = client.get(f"/f/{form['public_key']}")
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(&#39;name&#39;)&lt;/script&gt;" in page.text
    assert "&lt;script&gt;alert(&#39;label&#39;)&lt;/script&gt;" in page.text


def test_hosted_submission_stores_contact_consent_tags_stage_and_event(client, workspace, session_factory):
    form = create_form(client, workspace)
    resp = client.post(
        f"/f/{form['public_key']}",
        data={
            "email": " Ada@Example.FI ",
            "first_name": "Ada",
            "phone": "040 123 4567",
            "topic": "Sauna",
            "consent": "true",
        },
        headers={"User-Agent": "pytest-browser/1.0", "Referer": "https://shop.example.fi/newsletter"},
    )
    assert resp.status_code == 200, resp.text
    assert "Thanks, you&#39;re in!" in resp.text
    contact = contact_by_email(session_factory, workspace, "ada@example.fi")
    assert contact is not None and contact.first_name == "Ada" and contact.phone == "+358401234567"
    assert contact.lifecycle_stage == "interest"
    [sub] = submissions(session_factory, form["id"])
    assert sub.consent_given is True
    assert sub.consent_text == CONSENT and sub.consent_version == "2024-09"
    assert sub.page_url == "https://shop.example.fi/newsletter"
    assert sub.user_agent == "pytest-browser/1.0" and sub.ip
    assert sub.data["topic"] == "Sauna" and sub.contact_id == contact.id
    with session_factory() as s:
        tags = set(s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact.id)))
        assert tags == {"newsletter", "autumn"}
        changes = list(s.scalars(select(StageChange).where(StageChange.contact_id == contact.id)))
        [change] = [c for c in changes if c.to_stage == "interest"]
        assert (change.from_stage, change.to_stage) == ("awareness", "interest")
        assert "form_submitted" in change.reason and "Newsletter sign-up" in change.reason
        events = list(s.scalars(select(Event).where(Event.contact_id == contact.id, Event.name == "Form Submitted")))
        assert len(events) == 1 and events[0].properties["form_slug"] == "newsletter"
    listed = client.get(f"/api/v1/forms/{form['id']}/submissions", headers=workspace.auth("read")).json()
    assert listed[0]["consent_text"] == CONSENT


def test_second_submission_updates_the_same_contact(client, workspace, session_factory):
    form = create_form(client, workspace, consent_required=False)
    client.post(f"/f/{form['public_key']}", data={"email": "bo@example.fi"})
    resp = client.post(f"/f/{form['public_key']}", data={"email": "BO@example.fi", "first_name": "Bo"})
    assert resp.status_code == 200
    with session_factory() as s:
        rows = list(
            s.scalars(select(Contact).where(Contact.workspace_id == workspace.id, Contact.email == "bo@example.fi"))
        )
    assert len(rows) == 1 and rows[0].first_name == "Bo"
    subs = submissions(session_factory, form["id"])
    assert len(subs) == 2 and all(not s.consent_given for s in subs)


def test_invalid_submission_shows_errors_next_to_fields_and_keeps_values(client, workspace, session_factory):
    form = create_form(client, workspace, language=None)
    resp = client.post(
        f"/f/{form['public_key']}",
        data={"email": "not-an-email", "first_name": "Ada <b>", "topic": "Cars"},
        headers={"Accept-Language": "da"},
    )
    assert resp.status_code == 422
    html = resp.text
    assert re.search(r'<input type="email" id="f-email" name="email" value="not-an-email"', html)
    assert 'value="Ada &lt;b&gt;"' in html
    assert '<p class="error" id="f-email-error">Indtast en gyldig e-mailadresse.</p>' in html
    assert '<p class="error" id="f-topic-error">Vælg en af mulighederne.</p>' in html
    assert '<p class="error" id="f-consent-error">Sæt kryds i feltet for at fortsætte.</p>' in html
    assert submissions(session_factory, form["id"]) == []
    assert contact_by_email(session_factory, workspace, "not-an-email") is None


def test_embed_json_submission_with_cors_and_field_errors(client, workspace, session_factory):
    form = create_form(client, workspace, language=None)
    url = f"/f/{form['public_key']}"
    pre = client.options(url, headers={"Origin": "https://shop.example.fi", "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "*"
    bad = client.post(url, json={"email": "", "consent": False}, headers={"Accept-Language": "sv"})
    assert bad.status_code == 422 and bad.headers["access-control-allow-origin"] == "*"
    details = {d["path"]: d for d in bad.json()["error"]["details"]}
    assert details["fields.email"]["code"] == "required"
    assert details["fields.email"]["message"] == "Fältet är obligatoriskt."
    assert details["fields.consent"]["code"] == "consent_required"
    ok = client.post(url, json={"email": "cy@example.fi", "consent": True, "page_url": "https://shop.example.fi/"})
    assert ok.status_code == 200
    assert ok.json() == {"ok": True, "message": "Thanks, you're in!", "redirect_url": None}
    [sub] = submissions(session_factory, form["id"])
    assert sub.page_url == "https://shop.example.fi/" and sub.consent_given


def test_honeypot_answers_success_and_stores_nothing(client, workspace, session_factory):
    form = create_form(client, workspace, consent_required=False)
    resp = client.post(f"/f/{form['public_key']}", data={"email": "bot@example.fi", "website_url": "http://spam"})
    assert resp.status_code == 200 and "Thanks, you&#39;re in!" in resp.text
    assert submissions(session_factory, form["id"]) == []
    assert contact_by_email(session_factory, workspace, "bot@example.fi") is None


def test_redirect_after_submission(client, workspace):
    form = create_form(client, workspace, consent_required=False, redirect_url="https://shop.example.fi/thanks")
    resp = client.post(f"/f/{form['public_key']}", data={"email": "dee@example.fi"}, follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "https://shop.example.fi/thanks"
    page = client.get(f"/f/{form['public_key']}")
    assert "form-action 'self' https://shop.example.fi" in page.headers["content-security-policy"]


def test_inactive_and_unknown_forms_are_404_pages(client, workspace, session_factory):
    form = create_form(client, workspace, is_active=False)
    for url in (f"/f/{form['public_key']}", "/f/no-such-key"):
        page = client.get(url)
        assert page.status_code == 404 and "Form not found" in page.text
        posted = client.post(url, data={"email": "eve@example.fi", "consent": "true"})
        assert posted.status_code == 404
    assert client.get(f"/f/{form['public_key']}/embed.js").status_code == 404
    assert submissions(session_factory, form["id"]) == []


def test_rate_limit_per_ip(test_settings, db_engine, workspace, session_factory):
    from fastapi.testclient import TestClient

    from suppilo.adapters.http.app import create_app

    limited = create_app(test_settings.model_copy(update={"form_rate_limit_per_minute": 3}))
    with TestClient(limited) as c:
        form = create_form(c, workspace, consent_required=False)
        for i in range(3):
            assert c.post(f"/f/{form['public_key']}", data={"email": f"r{i}@example.fi"}).status_code == 200
        blocked = c.post(f"/f/{form['public_key']}", data={"email": "r9@example.fi"})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        assert "Too many submissions" in blocked.text
        as_json = c.post(f"/f/{form['public_key']}", json={"email": "r9@example.fi"})
        assert as_json.status_code == 429 and as_json.json()["error"]["code"] == "rate_limited"
    assert len(submissions(session_factory, form["id"])) == 3
    assert contact_by_email(session_factory, workspace, "r9@example.fi") is None


def test_embed_script_carries_form_and_consent_setting(client, workspace):
    form = create_form(client, workspace, language=None, name="Spring </script><script>alert(1)</script>")
    resp = client.get(f"/f/{form['public_key']}/embed.js", headers={"Accept-Language": "fi"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/javascript")
    body = resp.text
    assert "</script>" not in body
    assert f'"publicKey":"{form["public_key"]}"' in body
    assert '"requireConsent":true' in body and '"submit":"Lähetä"' in body
    assert CONSENT in body


def test_stale_consent_text_is_asked_again(client, workspace, session_factory):
    form = create_form(client, workspace, language=None)
    page = client.get(f"/f/{form['public_key']}")
    assert '<input type="hidden" name="consent_version" value="2024-09">' in page.text
    new_text = "Yes, send me the Winter newsletter."
    client.patch(
        f"/api/v1/forms/{form['id']}",
        json={"consent_text": new_text, "consent_version": "2024-12"},
        headers=workspace.auth("write"),
    )
    stale = client.post(
        f"/f/{form['public_key']}", data={"email": "fay@example.fi", "consent": "true", "consent_version": "2024-09"}
    )
    assert stale.status_code == 422
    assert "The consent text has changed" in stale.text and new_text in stale.text
    assert 'id="f-consent" name="consent" value="true" checked' not in stale.text
    assert submissions(session_factory, form["id"]) == []
    fresh = client.post(
        f"/f/{form['public_key']}", data={"email": "fay@example.fi", "consent": "true", "consent_version": "2024-12"}
    )
    assert fresh.status_code == 200
    [sub] = submissions(session_factory, form["id"])
    assert (sub.consent_text, sub.consent_version) == (new_text, "2024-12")
