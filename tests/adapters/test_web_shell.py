"""The web interface's shell: login, sessions, CSRF, security headers, roles, workspace isolation, languages."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from suppilo.accounts import service as accounts
from suppilo.accounts.models import LoginSession
from suppilo.adapters.web.auth import LOGIN_COOKIE, SESSION_COOKIE, throttle
from suppilo.adapters.web.security import CSP
from suppilo.db.base import utcnow
from tests.adapters.web_settle import settled

PASSWORD = "correct horse battery staple"


def make_user(session_factory, workspace_id: int, role: str = "admin", *, language: str = "en", name: str = "") -> str:
    """A user with ``role`` in the workspace; returns the email (password: PASSWORD)."""
    email = f"{role}-{secrets.token_hex(4)}@example.com"
    with session_factory() as s:
        user = accounts.create_user(s, email=email, password=PASSWORD, name=name or role.title(), language=language)
        accounts.grant(s, workspace_id, user.id, role)
        s.commit()
    return email


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field in the page"
    return match.group(1)


def login(client, email: str, password: str = PASSWORD, next_url: str = "/app/"):
    page = client.get("/app/login")
    return client.post(
        "/app/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text), "next": next_url},
        follow_redirects=False,
    )


@pytest.fixture(autouse=True)
def _fresh_client_state(client):
    client.cookies.clear()
    throttle._failures.clear()
    yield
    client.cookies.clear()
    throttle._failures.clear()  # other modules log in from the same test client address


def test_login_page_sends_strict_security_headers(client) -> None:
    res = client.get("/app/login")
    assert res.status_code == 200
    assert res.headers["content-security-policy"] == CSP
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"):
        assert directive in res.headers["content-security-policy"]
    assert "unsafe-inline" not in res.headers["content-security-policy"]
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["referrer-policy"] == "same-origin"
    assert res.headers["x-frame-options"] == "DENY"
    # No inline script or handler anywhere in the page: only external files.
    assert re.search(r"<script(?![^>]*\bsrc=)", res.text) is None
    assert re.search(r"\son[a-z]+=", res.text) is None


def test_front_door_goes_to_login_then_dashboard(client, session_factory, workspace) -> None:
    res = client.get("/", follow_redirects=True)
    assert res.url.path == "/app/login" and "Log in" in res.text
    email = make_user(session_factory, workspace.id)
    res = login(client, email)
    assert res.status_code == 303
    res = client.get("/app/", follow_redirects=False)
    assert res.headers["location"] == f"/app/w/{workspace.slug}/"
    res = settled(client, res.headers["location"])
    assert res.status_code == 200 and "Lifecycle funnel" in res.text
    assert res.headers["cache-control"] == "no-store"


def test_session_cookie_flags_and_logout(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id)
    res = login(client, email)
    cookie = next(h for h in res.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    raw = client.cookies.get(SESSION_COOKIE)
    with session_factory() as s:
        stored = s.scalar(select(LoginSession.token_hash).where(LoginSession.token_hash == accounts.hash_token(raw)))
        assert stored is not None and raw not in stored  # only the hash is stored
    page = client.get(f"/app/w/{workspace.slug}/")
    res = client.post("/app/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/app/login"
    client.cookies.set(SESSION_COOKIE, raw)  # the old cookie no longer opens anything
    res = client.get(f"/app/w/{workspace.slug}/", follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"].startswith("/app/login?next=")


def test_wrong_password_shows_error_and_keeps_email(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id)
    res = login(client, email, "not the password")
    assert res.status_code == 400
    assert "Wrong email or password." in res.text
    assert f'value="{email}"' in res.text
    assert SESSION_COOKIE not in client.cookies
    unknown = login(client, "nobody@example.com", PASSWORD)
    assert unknown.status_code == 400 and "Wrong email or password." in unknown.text


def test_repeated_failures_are_throttled(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id)
    for _ in range(throttle.limit):
        assert login(client, email, "wrong password!").status_code == 400
    res = login(client, email)  # even the right password waits now
    assert res.status_code == 429 and "Too many failed attempts" in res.text


def test_login_rotates_the_session(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id)
    login(client, email)
    first = client.cookies.get(SESSION_COOKIE)
    # A second login from the same browser (another tab's form) replaces the session it carries.
    client.cookies.set(LOGIN_COOKIE, "tab-token", domain="testserver.local", path="/app/login")
    res = client.post(
        "/app/login",
        data={"email": email, "password": PASSWORD, "csrf_token": "tab-token"},
        follow_redirects=False,
    )
    assert res.status_code == 303
    second = client.cookies.get(SESSION_COOKIE)
    assert first and second and first != second
    with session_factory() as s:
        hashes = set(s.scalars(select(LoginSession.token_hash)))
    assert accounts.hash_token(first) not in hashes and accounts.hash_token(second) in hashes


def test_login_form_without_its_token_is_refused(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id)
    client.get("/app/login")
    res = client.post("/app/login", data={"email": email, "password": PASSWORD}, follow_redirects=False)
    assert res.status_code == 403
    client.cookies.delete(LOGIN_COOKIE, path="/app/login")
    res = client.post(
        "/app/login", data={"email": email, "password": PASSWORD, "csrf_token": "forged"}, follow_redirects=False
    )
    assert res.status_code == 403 and SESSION_COOKIE not in client.cookies


def test_state_changes_need_the_csrf_token(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id)
    login(client, email)
    contact = client.post("/api/v1/contacts", json={"email": "c@example.com"}, headers=workspace.auth()).json()
    base = f"/app/w/{workspace.slug}/contacts/{contact['id']}"
    page = client.get(base)
    token = csrf_of(page.text)
    assert client.post(f"{base}/tags", data={"tag": "vip"}, follow_redirects=False).status_code == 403
    assert client.post(f"{base}/tags", data={"tag": "vip", "csrf_token": "x" + token}).status_code == 403
    res = client.post(
        f"{base}/tags",
        data={"tag": "vip", "csrf_token": token},
        headers={"Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert res.status_code == 403 and "Request refused" in res.text
    assert client.get(f"/api/v1/contacts/{contact['id']}/tags", headers=workspace.auth()).json() == []
    res = client.post(f"{base}/tags", data={"tag": "vip", "csrf_token": token}, follow_redirects=False)
    assert res.status_code == 303
    assert client.get(f"/api/v1/contacts/{contact['id']}/tags", headers=workspace.auth()).json() == ["vip"]
    # htmx sends the token as a header.
    res = client.post(f"{base}/tags", data={"tag": "gold"}, headers={"X-CSRF-Token": token}, follow_redirects=False)
    assert res.status_code == 303
    assert client.post("/app/logout", data={}, follow_redirects=False).status_code == 403


def test_other_workspace_is_not_found(client, session_factory, workspace, other_workspace) -> None:
    email = make_user(session_factory, workspace.id)
    login(client, email)
    theirs = client.post("/api/v1/contacts", json={"email": "x@example.com"}, headers=other_workspace.auth()).json()
    assert client.get(f"/app/w/{other_workspace.slug}/").status_code == 404
    assert client.get(f"/app/w/{other_workspace.slug}/contacts").status_code == 404
    assert client.get(f"/app/w/{workspace.slug}/contacts/{theirs['id']}").status_code == 404
    assert client.get(f"/app/w/{workspace.slug}/contacts/999999999").status_code == 404
    assert client.get("/app/w/no-such-workspace/").status_code == 404


def test_workspace_switcher_lists_every_membership(client, session_factory, workspace, other_workspace) -> None:
    email = make_user(session_factory, workspace.id)
    with session_factory() as s:
        user = accounts.get_user_by_email(s, email)
        accounts.grant(s, other_workspace.id, user.id, "analyst")
        s.commit()
    login(client, email)
    page = client.get(f"/app/w/{workspace.slug}/")
    assert f'href="/app/w/{other_workspace.slug}/"' in page.text
    assert client.get(f"/app/w/{other_workspace.slug}/").status_code == 200
    # "/" now opens the workspace used last.
    assert client.get("/app/", follow_redirects=False).headers["location"] == f"/app/w/{other_workspace.slug}/"


def test_roles_limit_what_a_user_can_do(client, session_factory, workspace) -> None:
    contact = client.post("/api/v1/contacts", json={"email": "r@example.com"}, headers=workspace.auth()).json()
    base = f"/app/w/{workspace.slug}"
    analyst = make_user(session_factory, workspace.id, "analyst")
    login(client, analyst)
    page = client.get(f"{base}/contacts/{contact['id']}")
    assert page.status_code == 200 and "Add a tag" not in page.text and "Move to stage" not in page.text
    res = client.post(f"{base}/contacts/{contact['id']}/tags", data={"tag": "x", "csrf_token": csrf_of(page.text)})
    assert res.status_code == 403
    assert client.get(f"{base}/mail").status_code == 403
    assert "Mail catcher" not in client.get(f"{base}/").text
    client.cookies.clear()
    marketer = make_user(session_factory, workspace.id, "marketer")
    login(client, marketer)
    page = client.get(f"{base}/contacts/{contact['id']}")
    assert "Add a tag" in page.text and client.get(f"{base}/mail").status_code == 200


def test_sessions_end_after_idle_and_absolute_timeouts(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id)
    login(client, email)
    raw = client.cookies.get(SESSION_COOKIE)
    assert client.get(f"/app/w/{workspace.slug}/", follow_redirects=False).status_code == 200
    with session_factory() as s:
        s.execute(
            update(LoginSession)
            .where(LoginSession.token_hash == accounts.hash_token(raw))
            .values(last_seen_at=utcnow() - accounts.IDLE_TIMEOUT - timedelta(seconds=1))
        )
        s.commit()
    assert client.get(f"/app/w/{workspace.slug}/", follow_redirects=False).status_code == 303
    login(client, email)
    raw = client.cookies.get(SESSION_COOKIE)
    with session_factory() as s:
        s.execute(
            update(LoginSession)
            .where(LoginSession.token_hash == accounts.hash_token(raw))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        s.commit()
    assert client.get(f"/app/w/{workspace.slug}/", follow_redirects=False).status_code == 303


def test_language_switch_translates_the_interface(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id)
    login(client, email)
    page = client.get(f"/app/w/{workspace.slug}/contacts")
    assert '<html lang="en">' in page.text and "Contacts" in page.text
    res = client.post(
        "/app/language",
        data={"language": "fi", "csrf_token": csrf_of(page.text), "next": f"/app/w/{workspace.slug}/contacts"},
        follow_redirects=True,
    )
    assert '<html lang="fi">' in res.text and "Yhteystiedot" in res.text and "Kirjaudu ulos" in res.text
    # An unsafe "next" never leaves the site.
    res = client.post(
        "/app/language",
        data={"language": "sv", "csrf_token": csrf_of(page.text), "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert res.headers["location"] == "/app/"
    assert "Kontakter" in client.get(f"/app/w/{workspace.slug}/contacts").text


def test_login_page_follows_the_browser_language(client) -> None:
    res = client.get("/app/login", headers={"Accept-Language": "da-DK,da;q=0.9,en;q=0.5"})
    assert '<html lang="da">' in res.text and "Adgangskode" in res.text
    assert "Parole" in client.get("/app/login?lang=lv").text


def test_user_without_workspace_is_told_so(client, session_factory) -> None:
    email = f"lonely-{secrets.token_hex(4)}@example.com"
    with session_factory() as s:
        accounts.create_user(s, email=email, password=PASSWORD)
        s.commit()
    login(client, email)
    res = client.get("/app/")
    assert res.status_code == 403 and "not a member of any workspace" in res.text


def test_vendor_htmx_and_own_assets_are_served(client) -> None:
    res = client.get("/app/static/vendor/htmx.min.js")
    assert res.status_code == 200, "run ./dev (npm ci copies htmx into static/vendor)"
    assert "htmx" in res.text[:2000]
    assert res.headers["x-content-type-options"] == "nosniff"
    assert client.get("/app/static/app.js").status_code == 200
    assert "text/css" in client.get("/app/static/app.css").headers["content-type"]


def test_passwords_are_argon2_and_short_ones_refused(session_factory) -> None:
    with session_factory() as s:
        user = accounts.create_user(s, email=f"p-{secrets.token_hex(4)}@example.com", password=PASSWORD)
        assert user.password_hash.startswith("$argon2id$")
        assert accounts.authenticate(s, user.email.upper(), PASSWORD) is not None
        assert accounts.authenticate(s, user.email, PASSWORD + "x") is None
        with pytest.raises(accounts.AccountError):
            accounts.create_user(s, email="short@example.com", password="short")
        s.rollback()


def test_login_returns_to_the_page_asked_for(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id)
    wanted = f"/app/w/{workspace.slug}/contacts?q=ann&stage=interest"
    res = client.get(wanted, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"].startswith("/app/login?next=")
    form = client.get(res.headers["location"])
    assert 'name="next" value="' + wanted.replace("&", "&amp;") + '"' in form.text
    res = client.post(
        "/app/login",
        data={"email": email, "password": PASSWORD, "csrf_token": csrf_of(form.text), "next": wanted},
        follow_redirects=False,
    )
    assert res.headers["location"] == wanted
    client.cookies.clear()
    form = client.get("/app/login")
    res = client.post(
        "/app/login",
        data={"email": email, "password": PASSWORD, "csrf_token": csrf_of(form.text), "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert res.headers["location"] == "/app/"


def test_unknown_pages_under_app_are_html_404(client) -> None:
    res = client.get("/app/no/such/page")
    assert res.status_code == 404 and "text/html" in res.headers["content-type"] and "Not found" in res.text
    assert res.headers["content-security-policy"] == CSP
    assert client.get("/app/static/app.css").status_code == 200
    assert client.get("/api/v1/contacts").status_code == 401  # the API keeps its JSON errors
