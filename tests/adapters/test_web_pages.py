"""The web interface's pages: dashboard figures, contact search and paging, the contact page with its timeline
(stored script shown as text), the mail catcher (own workspace only, HTML under its own CSP), and the users CLI."""

from __future__ import annotations

import base64
import secrets
import uuid
from email.message import EmailMessage

import pytest
from typer.testing import CliRunner

from suppilo.adapters.web.routes import dashboard as dashboard_route
from suppilo.adapters.web.security import MAIL_BODY_CSP
from suppilo.messaging import mime
from suppilo.messaging.catcher import MailStore
from tests.adapters.test_web_shell import PASSWORD, csrf_of, login, make_user
from tests.adapters.web_settle import settled
from tests.conftest import make_workspace

SCRIPT = "<script>alert('xss')</script>"
ATTR = '" onmouseover="alert(1)" x="'


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    dashboard_route.clear_cache()
    yield
    client.cookies.clear()


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def contact(client, ws, **fields) -> dict:
    res = client.post("/api/v1/contacts", json=fields, headers=ws.auth())
    assert res.status_code == 201, res.text
    return res.json()


def test_dashboard_shows_the_funnel_with_conversion(client, session_factory, workspace) -> None:
    ids = [contact(client, workspace, email=f"d{i}@example.com", country="FI")["id"] for i in range(4)]
    for cid in ids[:2]:
        client.post(f"/api/v1/contacts/{cid}/stage", json={"stage": "interest"}, headers=workspace.auth())
    client.post(f"/api/v1/contacts/{ids[0]}/stage", json={"stage": "customer"}, headers=workspace.auth())
    login(client, make_user(session_factory, workspace.id, "analyst"))
    page = settled(client, f"/app/w/{workspace.slug}/?days=30")
    assert page.status_code == 200
    html = page.text
    assert 'id="funnel-table"' in html and "<svg" in html and '<title id="funnel-title">' in html
    table = html[html.index('id="funnel-table"') : html.index("</table>", html.index('id="funnel-table"'))]
    # Interest was reached by 2, customer (and so decision/consideration) by 1: 50 % go on from interest.
    assert '<th scope="row">Interest</th><td class="num">2</td>' in table
    assert '<th scope="row">Customer</th><td class="num">1</td>' in table
    assert "50.0%" in table
    assert 'id="kpi-contacts">4<' in html
    assert 'id="channel-table"' in html and 'id="countries"' in html


def test_dashboard_numbers_follow_the_user_locale(client, session_factory, workspace) -> None:
    with session_factory() as s:
        from suppilo.analytics import service as analytics
        from suppilo.analytics.schemas import SpendCreate
        from suppilo.db.base import utcnow

        analytics.add_spend(
            s,
            workspace.id,
            SpendCreate(date=utcnow().date(), channel="paid_search", amount_minor=123456, currency="EUR"),
        )
        s.commit()
    login(client, make_user(session_factory, workspace.id, "marketer", language="fi"))
    html = settled(client, f"/app/w/{workspace.slug}/").text
    assert "Elinkaaren suppilo" in html
    assert "1\xa0234,56\xa0€" in html  # Finnish money format: NBSP grouping, decimal comma


def test_contact_search_filters_and_keyset_pages(client, session_factory, workspace) -> None:
    for i in range(55):
        contact(client, workspace, email=f"page{i:02d}@example.com", first_name="Paged", last_name=f"P{i:02d}")
    target = contact(client, workspace, email="anna.virtanen@example.com", first_name="Anna", last_name="Virtanen")
    client.post(f"/api/v1/contacts/{target['id']}/stage", json={"stage": "consideration"}, headers=workspace.auth())
    client.post(f"/api/v1/contacts/{target['id']}/tags", json={"tags": ["vip"]}, headers=workspace.auth())
    login(client, make_user(session_factory, workspace.id, "sales"))
    base = f"/app/w/{workspace.slug}/contacts"
    res = client.get(base, params={"q": "anna"})
    assert "Anna Virtanen" in res.text and "page01@" not in res.text
    assert "Anna Virtanen" in client.get(base, params={"q": "virt"}).text
    assert "Anna Virtanen" in client.get(base, params={"stage": "consideration"}).text
    assert "page01@" not in client.get(base, params={"stage": "consideration"}).text
    assert "Anna Virtanen" in client.get(base, params={"tag": "vip"}).text
    assert "No contacts match." in client.get(base, params={"q": "zzzz-nobody"}).text
    first = client.get(base, params={"q": "page"})
    assert first.text.count('href="/app/w/') >= 50
    assert 'rel="next"' in first.text
    next_href = first.text.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = client.get(next_href)
    # 55 matches: 50 on the first page, the 5 oldest on the second, none twice.
    assert "page04@example.com" in second.text and "page05@example.com" not in second.text
    assert "page54@example.com" in first.text and "page04@example.com" not in first.text
    assert 'rel="next"' not in second.text and "First page" in second.text


def test_stored_script_is_shown_as_text_everywhere(client, session_factory) -> None:
    ws = make_workspace(session_factory, require_tracking_consent=False)
    anon = str(uuid.uuid4())
    page_call = {
        "messageId": str(uuid.uuid4()),
        "anonymousId": anon,
        "name": SCRIPT,
        "properties": {"url": f"https://shop.example.fi/{ATTR}", "note": SCRIPT},
        "context": {
            "page": {"url": f"https://shop.example.fi/?utm_campaign={ATTR}", "path": "/", "title": SCRIPT},
            "campaign": {"name": SCRIPT, "source": ATTR, "medium": "email"},
        },
    }
    assert client.post("/v1/page", json=page_call, headers=basic(ws.track_key)).status_code == 200
    identify = {
        "messageId": str(uuid.uuid4()),
        "anonymousId": anon,
        "traits": {"email": "xss@example.com", "firstName": SCRIPT, "lastName": ATTR, "jobTitle": SCRIPT},
    }
    assert client.post("/v1/identify", json=identify, headers=basic(ws.track_key)).status_code == 200
    login(client, make_user(session_factory, ws.id, "admin"))
    listing = client.get(f"/app/w/{ws.slug}/contacts", params={"q": "xss"})
    assert "xss@example.com" in listing.text
    for html in (listing.text,):
        assert SCRIPT not in html and 'onmouseover="alert' not in html
        assert "&lt;script&gt;" in html
    href = listing.text.split('<td><a href="', 1)[1].split('"')[0]
    page = client.get(href)
    assert page.status_code == 200
    html = page.text
    assert SCRIPT not in html and ATTR not in html
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in html
    assert "&#34; onmouseover=&#34;alert(1)&#34; x=&#34;" in html
    assert 'id="timeline-items"' in html and "Visit source" in html


def test_contact_page_reads_timeline_history_and_edits(client, session_factory, workspace) -> None:
    c = contact(client, workspace, email="tl@example.com", first_name="Tiina")
    client.post(
        f"/api/v1/contacts/{c['id']}/stage", json={"stage": "interest", "reason": "webinar"}, headers=workspace.auth()
    )
    login(client, make_user(session_factory, workspace.id, "marketer"))
    url = f"/app/w/{workspace.slug}/contacts/{c['id']}"
    html = client.get(url).text
    assert "Tiina" in html and "webinar" in html and 'id="stage-history"' in html
    assert "No consent recorded." in html and "Not in any segment." in html and "No deals." in html
    res = client.post(
        f"{url}/stage",
        data={"stage": "consideration", "reason": "asked for a demo", "csrf_token": csrf_of(html)},
        follow_redirects=True,
    )
    assert "Lifecycle stage changed." in res.text and "asked for a demo" in res.text
    assert client.get(f"/api/v1/contacts/{c['id']}", headers=workspace.auth()).json()["lifecycle_stage"] == (
        "consideration"
    )
    bad = client.post(f"{url}/stage", data={"stage": "no-such-stage", "csrf_token": csrf_of(html)})
    assert bad.status_code == 422


def _caught(store: MailStore, slug: str, outbox_id: int, subject: str, html: str) -> int:
    msg = EmailMessage()
    msg["From"] = "shop@example.fi"
    msg["To"] = "anna@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = mime.message_id(outbox_id, slug, "example.fi")
    msg.set_content("Hello in plain text")
    msg.add_alternative(html, subtype="html")
    return store.store("shop@example.fi", ["anna@example.com"], msg.as_bytes()).id


def test_mail_catcher_shows_own_messages_safely(client, session_factory, workspace, other_workspace, test_settings):
    store = MailStore(test_settings.data_dir)
    tag = secrets.token_hex(3)
    mine = _caught(
        store, workspace.slug, 1, f"Welcome {tag} {SCRIPT}", f"<p>Hi</p>{SCRIPT}<img src=x onerror=alert(2)>"
    )
    theirs = _caught(store, other_workspace.slug, 2, f"Secret {tag}", "<p>theirs</p>")
    login(client, make_user(session_factory, workspace.id, "marketer"))
    base = f"/app/w/{workspace.slug}/mail"
    listing = client.get(base).text
    assert f"Welcome {tag}" in listing and f"Secret {tag}" not in listing and SCRIPT not in listing
    page = client.get(f"{base}/{mine}")
    assert page.status_code == 200 and "Hello in plain text" in page.text and SCRIPT not in page.text
    assert f'src="{base}/{mine}/body" sandbox referrerpolicy="no-referrer"' in page.text
    body = client.get(f"{base}/{mine}/body")
    assert body.headers["content-security-policy"] == MAIL_BODY_CSP
    assert "script-src" not in body.headers["content-security-policy"] and "sandbox" in MAIL_BODY_CSP
    assert body.headers["x-frame-options"] == "SAMEORIGIN"
    raw = client.get(f"{base}/{mine}/raw")
    assert raw.headers["content-type"].startswith("text/plain") and "attachment" in raw.headers["content-disposition"]
    assert client.get(f"{base}/{theirs}").status_code == 404
    assert client.get(f"{base}/{theirs}/body").status_code == 404
    assert client.get(f"{base}/987654321").status_code == 404


def test_users_cli_creates_a_user_who_can_log_in(client, workspace) -> None:
    from suppilo.adapters.cli.main import app as cli

    email = f"cli-{secrets.token_hex(4)}@example.com"
    runner = CliRunner()
    env = {"SUPPILO_DATABASE_URL": client.app.state.settings.resolved_database_url()}
    from suppilo.config import get_settings

    get_settings.cache_clear()
    try:
        res = runner.invoke(
            cli,
            ["users", "create", email, "--role", "sales", "--password", PASSWORD, "-w", workspace.slug, "--json"],
            env=env,
        )
        assert res.exit_code == 0, res.output
        short = runner.invoke(
            cli, ["users", "create", "x" + email, "--password", "short", "-w", workspace.slug], env=env
        )
        assert short.exit_code != 0 and "at least" in short.output
        listed = runner.invoke(cli, ["users", "list", "-w", workspace.slug, "--json"], env=env)
        assert email in listed.output and "sales" in listed.output
    finally:
        get_settings.cache_clear()
    assert login(client, email).status_code == 303
    assert client.get(f"/app/w/{workspace.slug}/contacts").status_code == 200


def test_dashboard_explains_a_report_it_cannot_compute(client, session_factory, workspace) -> None:
    from suppilo.db.base import utcnow

    order = {
        "external_id": "sek-1",
        "email": "sek@example.se",
        "placed_at": utcnow().isoformat(),
        "currency": "SEK",
        "total_minor": 49900,
    }
    assert client.post("/api/v1/orders", json=order, headers=workspace.auth()).status_code == 201
    login(client, make_user(session_factory, workspace.id, "admin"))
    res = settled(client, f"/app/w/{workspace.slug}/")
    assert res.status_code == 200
    assert 'id="money-error"' in res.text and "SEK" in res.text
    assert 'id="funnel-table"' in res.text  # the rest still shows
    # In the user's language, from the refusal's code and parameters kept with the snapshot.
    client.cookies.clear()
    login(client, make_user(session_factory, workspace.id, "analyst", language="fi"))
    res = client.get(f"/app/w/{workspace.slug}/")
    day = utcnow().date().isoformat()
    assert f"Vaihtokurssia SEK → EUR ei ole päivältä {day} tai sitä aiemmin: tuo kurssit valuuttaan EUR." in res.text
    assert "no exchange rate" not in res.text


def test_dashboard_reads_its_snapshot_and_catches_up_with_new_data(client, session_factory, workspace) -> None:
    import time

    from suppilo.analytics import dashboard as snapshots

    login(client, make_user(session_factory, workspace.id, "analyst"))
    url = f"/app/w/{workspace.slug}/"
    contact(client, workspace, email="one@example.com")
    first = client.get(url).text  # no snapshot yet: the page says so and polls while one thread computes it
    assert 'id="dashboard-computing"' in first and 'hx-trigger="every 2s"' in first and "kpi-contacts" not in first
    first = settled(client, url).text
    assert 'id="kpi-contacts">1<' in first and 'id="dashboard-updating"' not in first
    with session_factory() as s:
        assert snapshots.snapshot(s, workspace.id, 90) is not None
    contact(client, workspace, email="two@example.com")
    page = client.get(url).text  # overtaken by a new row: served at once, saying so, recomputed behind
    assert 'id="kpi-contacts">1<' in page and 'id="dashboard-updating"' in page
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and 'id="kpi-contacts">2<' not in client.get(url).text:
        time.sleep(0.05)
    page = client.get(url).text
    assert 'id="kpi-contacts">2<' in page and 'id="dashboard-updating"' not in page
    # The worker's job catches up without a page view.
    contact(client, workspace, email="three@example.com")
    assert snapshots.run_refresh(session_factory) >= 1
    page = client.get(url).text
    assert 'id="kpi-contacts">3<' in page and 'id="dashboard-updating"' not in page


def test_contact_timeline_pages_with_older_link(client, session_factory, workspace) -> None:
    from datetime import timedelta

    from suppilo.db.base import utcnow
    from suppilo.events.models import Event

    c = contact(client, workspace, email="busy@example.com")
    now = utcnow()
    with session_factory() as s:
        s.add_all(
            Event(
                workspace_id=workspace.id,
                contact_id=c["id"],
                kind="track",
                name=f"Step {i:02d}",
                occurred_at=now - timedelta(minutes=i),
                received_at=now - timedelta(minutes=i),
                message_id=f"busy-{workspace.id}-{i}",
                properties={},
                context={},
            )
            for i in range(40)
        )
        s.commit()
    login(client, make_user(session_factory, workspace.id, "analyst"))
    first = client.get(f"/app/w/{workspace.slug}/contacts/{c['id']}").text
    older = first.split('id="timeline-older"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = client.get(older).text
    on_first = {i for i in range(40) if f"Step {i:02d}<" in first}
    on_second = {i for i in range(40) if f"Step {i:02d}<" in second}
    # 30 items a page (the contact's creation is one of them), newest first, nothing twice or lost.
    assert on_first == set(range(len(on_first))) and 28 <= len(on_first) <= 30
    assert on_second == set(range(len(on_first), 40)) and not on_first & on_second
    assert "Newest first" in second and 'id="timeline-older"' not in second


def test_mail_catcher_says_when_mail_goes_to_a_real_server(test_settings, db_engine, session_factory, workspace):
    from fastapi.testclient import TestClient

    from suppilo.adapters.http.app import create_app

    app = create_app(test_settings.model_copy(update={"smtp_host": "smtp.example.net"}))
    with TestClient(app) as other:
        login(other, make_user(session_factory, workspace.id, "admin"))
        html = other.get(f"/app/w/{workspace.slug}/mail").text
    assert 'id="smtp-note"' in html and "smtp.example.net" in html


def test_contact_page_explains_scores_and_customer_value(client, session_factory, workspace) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from suppilo.contacts.models import Contact
    from suppilo.db.base import utcnow
    from suppilo.events.models import Event
    from suppilo.scoring import service as scoring_service
    from suppilo.scoring.models import ContactScore

    c = contact(client, workspace, email="scored@example.com")
    now = utcnow()
    with session_factory() as s:
        # What the CLV fit (analytics.fit_clv) writes onto a contact.
        s.execute(
            update(Contact)
            .where(Contact.workspace_id == workspace.id, Contact.id == c["id"])
            .values(properties={"predicted_clv_12m": 45678.9, "p_alive": 0.8125, "clv_tier": "high"})
        )
        s.add_all(
            Event(
                workspace_id=workspace.id,
                contact_id=c["id"],
                kind="page",
                name="Product",
                occurred_at=now - timedelta(hours=i),
                received_at=now - timedelta(hours=i),
                message_id=f"score-{workspace.id}-{i}",
                properties={},
                context={},
            )
            for i in range(3)
        )
        s.flush()
        scoring_service.recompute(s, workspace.id, [c["id"]], kinds=("engagement",), now=now)
        s.add(
            ContactScore(
                workspace_id=workspace.id,
                contact_id=c["id"],
                kind="fit",
                score=72.5,
                grade="B",
                explanation=[
                    {"criterion": "country", "matched": True, "points": 30, "max_points": 30, "detail": "FI is in"},
                    {"criterion": "employees", "matched": False, "points": 0, "max_points": 40, "detail": SCRIPT},
                ],
                as_of=now,
                computed_at=now,
            )
        )
        s.commit()
    login(client, make_user(session_factory, workspace.id, "sales"))
    html = client.get(f"/app/w/{workspace.slug}/contacts/{c['id']}").text
    assert 'id="scores"' in html and "Fit</h3>" not in html  # the heading carries the score
    assert "Fit: 73 / 100" in html or "Fit: 72 / 100" in html
    fit = html[html.index('id="fit-explanation"') :]
    assert "country: FI is in" in fit and "&lt;script&gt;" in fit and SCRIPT not in html
    engagement = html[html.index('id="engagement-explanation"') :]
    assert "3 events" in engagement
    assert 'id="priority">Nurture: good fit, not engaged yet' in html or 'id="priority">Contact now' in html
    value = html[html.index('id="clv"') :]
    assert "€456.79" in value and "81.2%" in value and "high" in value


def test_dashboard_without_a_snapshot_never_computes_in_the_request(
    client, session_factory, workspace, monkeypatch
) -> None:
    from suppilo.adapters.web import background
    from suppilo.analytics import dashboard as snapshots
    from suppilo.db.base import utcnow

    login(client, make_user(session_factory, workspace.id, "analyst"))
    contact(client, workspace, email="one@example.com", country="FI")
    url = f"/app/w/{workspace.slug}/?days=365"
    release = background.threading.Event()
    refresh = snapshots.refresh_apart
    runs: list[int] = []

    def held_refresh(*args, **kwargs):  # the background computation waits until the test lets it go
        runs.append(1)
        assert release.wait(60)
        return refresh(*args, **kwargs)

    monkeypatch.setattr(snapshots, "refresh_apart", held_refresh)
    pages = [client.get(url), client.get(url)]  # both views while the first computation runs
    assert all(p.status_code == 200 and 'id="dashboard-computing"' in p.text for p in pages)
    assert 'hx-select="#main"' in pages[0].text and "kpi-contacts" not in pages[0].text
    release.set()
    assert background.wait_idle(60)
    assert len(runs) == 1  # one computation for both views
    page = client.get(url).text
    with session_factory() as s:
        direct = snapshots.compute(s, workspace.id, 365, utcnow().date())
    assert f'id="kpi-contacts">{sum(st.contacts for st in direct["stages"])}<' in page
    assert 'id="dashboard-computing"' not in page and 'id="dashboard-updating"' not in page
