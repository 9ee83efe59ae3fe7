"""The journeys pages: the list with live numbers, a journey page (flow with per-step counts, report, versions),
enable / pause / archive, the YAML editor (field errors keep the text), the playbook gallery, enrollments and their
timelines; roles, CSRF, other workspaces and stored script shown as text."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import update

from suppilo.db.base import utcnow
from suppilo.journeys import playbooks
from suppilo.journeys import service as journeys_service
from suppilo.journeys.models import Enrollment
from suppilo.journeys.runner import run_due
from suppilo.messaging import service as messaging_service
from tests.adapters.test_web_shell import csrf_of, login, make_user

SCRIPT = "<script>alert('journey')</script>"


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    yield
    client.cookies.clear()


def welcome(session_factory, workspace_id: int, **settings) -> int:
    with session_factory() as s:
        journey = playbooks.enable(s, workspace_id, "welcome_series", settings)
        s.commit()
        return journey.id


def enrol(session_factory, workspace_id: int, journey_id: int, contact_id: int) -> int:
    with session_factory() as s:
        journey = journeys_service.get_journey(s, workspace_id, journey_id)
        assert journeys_service.enrol(s, journey, [(contact_id, f"test-{contact_id}")], utcnow()) == [contact_id]
        s.commit()
        return journeys_service.list_enrollments(s, workspace_id, journey_id=journey_id, contact_id=contact_id)[0].id


def contact(client, ws, email: str, **fields) -> int:
    res = client.post("/api/v1/contacts", json={"email": email, **fields}, headers=ws.auth())
    assert res.status_code in (200, 201), res.text
    return int(res.json()["id"])


def test_list_and_journey_page_show_live_numbers_per_step(client, session_factory, workspace) -> None:
    jid = welcome(session_factory, workspace.id)
    cid = contact(client, workspace, "anna@example.com", first_name="Anna")
    enrol(session_factory, workspace.id, jid, cid)
    run_due(session_factory)
    login(client, make_user(session_factory, workspace.id, "analyst"))
    html = client.get(f"/app/w/{workspace.slug}/journeys").text
    row = html[html.index(f'id="journey-{jid}"') :]
    row = row[: row.index("</tr>")]
    assert "Welcome series" in row and "Active" in row and "Form Submitted" in row
    assert re.search(r'class="num entered">1<', row) and re.search(r'class="num waiting">1<', row)
    assert 'hx-trigger="every 15s"' in html
    page = client.get(f"/app/w/{workspace.slug}/journeys/{jid}").text
    assert 'id="kpi-entered">1<' in page and 'id="kpi-waiting">1<' in page
    # The welcome mail was queued and the contact waits at the pause: the flow and the report say so.
    flow = page[page.index('id="step-pause"') :]
    assert "waiting 1" in flow[: flow.index("</li>")]
    report = page[page.index('id="report-welcome"') :]
    cells = re.findall(r'<td class="num">(\d+)', report[: report.index("</tr>")])
    assert cells[:4] == ["0", "1", "1", "0"]  # waiting, passed, queued, sent (the outbox has not sent it yet)
    assert "flowchart TD" in page and "Versions" in page
    # Analysts read but get no buttons.
    assert "journey-actions" not in page and "/edit" not in page
    timeline_link = client.get(f"/app/w/{workspace.slug}/journeys/{jid}/enrollments").text
    enrollment = re.search(r'/enrollments/(\d+)"', timeline_link)
    assert enrollment and "Anna" in timeline_link
    detail = client.get(f"/app/w/{workspace.slug}/enrollments/{enrollment.group(1)}").text
    items = detail[detail.index('id="enrollment-timeline"') :]
    assert "<strong>welcome</strong>" in items and "&#34;template&#34;: &#34;welcome&#34;" in items


def test_pause_resume_and_archive_with_csrf_and_roles(client, session_factory, workspace) -> None:
    jid = welcome(session_factory, workspace.id)
    url = f"/app/w/{workspace.slug}/journeys/{jid}/status"
    login(client, make_user(session_factory, workspace.id, "sales"))
    token = csrf_of(client.get(f"/app/w/{workspace.slug}/journeys/{jid}").text)
    assert client.post(url, data={"status": "paused", "csrf_token": token}).status_code == 403  # role
    client.cookies.clear()
    login(client, make_user(session_factory, workspace.id, "marketer"))
    page = client.get(f"/app/w/{workspace.slug}/journeys/{jid}").text
    token = csrf_of(page)
    assert "Pause" in page
    assert client.post(url, data={"status": "paused"}).status_code == 403  # no CSRF token
    res = client.post(url, data={"status": "paused", "csrf_token": token})
    assert res.status_code == 200 and "Journey paused." in res.text and 'id="journey-status">Paused<' in res.text
    res = client.post(url, data={"status": "active", "csrf_token": token})
    assert 'id="journey-status">Active<' in res.text
    res = client.post(url, data={"status": "archived", "csrf_token": token})
    assert 'id="journey-status">Archived<' in res.text and "journey-actions" not in res.text
    assert client.post(url, data={"status": "active", "csrf_token": token}).status_code == 409


def test_editor_saves_a_new_version_and_keeps_the_text_on_errors(client, session_factory, workspace) -> None:
    jid = welcome(session_factory, workspace.id)
    login(client, make_user(session_factory, workspace.id, "marketer"))
    edit = f"/app/w/{workspace.slug}/journeys/{jid}/edit"
    page = client.get(edit).text
    token = csrf_of(page)
    text = re.search(r'<textarea id="definition"[^>]*>(.*?)</textarea>', page, re.S).group(1)
    assert "template: welcome" in text
    bad = text.replace("template: nurture_interest", "template: no_such_template")
    bad = (
        bad.replace("&#39;", "'").replace("&#34;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    )
    bad += f"\n# {SCRIPT}\n"
    res = client.post(edit, data={"definition": bad, "csrf_token": token})
    assert res.status_code == 422
    assert 'id="error-path">definition.steps.tips.template<' in res.text
    assert "no_such_template" in res.text and "&lt;script&gt;alert" in res.text and SCRIPT not in res.text
    broken = client.post(edit, data={"definition": "name: [unclosed", "csrf_token": token})
    assert broken.status_code == 422 and "not valid YAML or JSON at line" in broken.text
    assert ">name: [unclosed</textarea>" in broken.text
    good = bad.replace("no_such_template", "nurture_interest").replace("days: 3", "days: 5")
    res = client.post(edit, data={"definition": good, "csrf_token": token})
    assert res.status_code == 200 and "New version saved." in res.text
    assert "Version 2" in res.text and "5 d" in res.text
    versions = res.text[res.text.index('id="versions-table"') :]
    assert versions.count("<tr>") == 3  # header + 2 versions
    old = client.get(f"{edit}?version=1").text
    assert "Loaded from version 1" in old and "days: 3" in old
    assert client.get(f"{edit}?version=9").status_code == 404


def test_new_journey_from_the_editor_with_script_in_the_name(client, session_factory, workspace) -> None:
    with session_factory() as s:
        messaging_service.install_default_templates(s, workspace.id)
        s.commit()
    login(client, make_user(session_factory, workspace.id, "admin"))
    new = f"/app/w/{workspace.slug}/journeys/new/edit"
    page = client.get(new).text
    assert "name: My journey" in page
    definition = (
        f'name: "{SCRIPT}"\ntrigger: {{type: manual}}\nstart: hello\n'
        "steps:\n  hello: {type: send_email, template: welcome}\n"
    )
    res = client.post(new, data={"definition": definition, "csrf_token": csrf_of(page)})
    assert res.status_code == 200 and "Journey created." in res.text and "Draft" in res.text
    assert "&lt;script&gt;alert(&#39;journey&#39;)&lt;/script&gt;" in res.text and SCRIPT not in res.text
    listing = client.get(f"/app/w/{workspace.slug}/journeys").text
    assert SCRIPT not in listing and "&lt;script&gt;" in listing
    # A second journey with an unreachable step: the path names it and the text stays.
    unreachable = definition + "  lost: {type: end}\n"
    res = client.post(new, data={"definition": unreachable, "csrf_token": csrf_of(page)})
    assert res.status_code == 422 and "definition.steps.lost" in res.text and "lost: {type: end}" in res.text


def test_playbook_gallery_enables_with_settings_and_shows_field_errors(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "marketer"))
    url = f"/app/w/{workspace.slug}/journeys/playbooks"
    page = client.get(url).text
    for key in playbooks.PLAYBOOKS:
        assert f'id="playbook-{key}"' in page
    assert 'name="setting_tips_after_days"' in page and 'placeholder="3"' in page
    token = csrf_of(page)
    bad = client.post(f"{url}/welcome_series", data={"csrf_token": token, "setting_tips_after_days": "600"})
    assert bad.status_code == 422
    card = bad.text[bad.text.index('id="playbook-welcome_series"') :]
    assert 'value="600"' in card and "tips_after_days must be a whole number from 1 to 60" in card
    assert 'aria-invalid="true"' in card
    word = client.post(f"{url}/welcome_series", data={"csrf_token": token, "setting_tips_after_days": "soon"})
    assert word.status_code == 422 and "a whole number is needed" in word.text
    res = client.post(
        f"{url}/welcome_series",
        data={"csrf_token": token, "setting_tips_after_days": "4", "setting_event": "Newsletter Joined"},
    )
    assert res.status_code == 200 and "Playbook enabled." in res.text and "Newsletter Joined" in res.text
    assert "4 d" in res.text and 'id="journey-status">Active<' in res.text
    again = client.get(url).text
    assert "Enabled as" in again[again.index('id="playbook-welcome_series"') :]
    assert client.post(f"{url}/no_such_playbook", data={"csrf_token": token}).status_code == 404
    draft = client.post(f"{url}/cross_sell", data={"csrf_token": token, "activate": "draft"})
    assert 'id="journey-status">Draft<' in draft.text


def test_analyst_cannot_enable_and_other_workspaces_are_404(
    client, session_factory, workspace, other_workspace
) -> None:
    jid = welcome(session_factory, workspace.id)
    other = welcome(session_factory, other_workspace.id)
    login(client, make_user(session_factory, workspace.id, "analyst"))
    page = client.get(f"/app/w/{workspace.slug}/journeys/playbooks").text
    assert "setting_tips_after_days" not in page
    token = csrf_of(page)
    res = client.post(f"/app/w/{workspace.slug}/journeys/playbooks/welcome_series", data={"csrf_token": token})
    assert res.status_code == 403
    assert client.get(f"/app/w/{workspace.slug}/journeys/{jid}/edit").status_code == 403
    assert client.get(f"/app/w/{workspace.slug}/journeys/{other}").status_code == 404
    assert client.get(f"/app/w/{workspace.slug}/journeys/{other}/enrollments").status_code == 404
    assert client.get(f"/app/w/{other_workspace.slug}/journeys").status_code == 404
    foreign = enrol(session_factory, other_workspace.id, other, contact(client, other_workspace, "o@example.com"))
    assert client.get(f"/app/w/{workspace.slug}/enrollments/{foreign}").status_code == 404


def test_stuck_enrollments_are_listed_with_their_error(client, session_factory, workspace) -> None:
    jid = welcome(session_factory, workspace.id)
    enrollment = enrol(session_factory, workspace.id, jid, contact(client, workspace, "stuck@example.com"))
    login(client, make_user(session_factory, workspace.id, "analyst"))
    assert 'id="stuck-table"' not in client.get(f"/app/w/{workspace.slug}/journeys").text
    with session_factory() as s:
        s.execute(
            update(Enrollment)
            .where(Enrollment.id == enrollment)
            .values(due_at=utcnow() - timedelta(hours=1), last_error=f"SMTP down {SCRIPT}")
        )
        s.commit()
    html = client.get(f"/app/w/{workspace.slug}/journeys").text
    stuck = html[html.index('id="stuck-table"') :]
    assert f"/enrollments/{enrollment}" in stuck and "Welcome series" in stuck
    assert "SMTP down &lt;script&gt;" in stuck and SCRIPT not in html
