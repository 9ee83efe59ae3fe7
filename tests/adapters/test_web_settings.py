"""Settings pages (admins only): workspace with sending policies, ICP and engagement JSON with validation errors,
lifecycle stages, consent policies, DKIM record, API keys shown once and revoked, users and roles; CSRF, stored
script shown as text, other workspaces 404."""

from __future__ import annotations

import re

import pytest

from suppilo.messaging.mime import generate_dkim_private_key
from tests.adapters.test_web_shell import csrf_of, login, make_user

SCRIPT = "<script>alert('settings')</script>"
ICP = '{"location": {"countries": ["FI", "SE"], "weight": 15}, "job_titles": {"keywords": ["marketing"], "weight": 10}}'


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    yield
    client.cookies.clear()


def admin(client, session_factory, workspace) -> str:
    login(client, make_user(session_factory, workspace.id, "admin"))
    return csrf_of(client.get(f"/app/w/{workspace.slug}/settings/workspace").text)


def test_only_admins_see_settings(client, session_factory, workspace, other_workspace) -> None:
    for role in ("marketer", "sales", "analyst"):
        client.cookies.clear()
        login(client, make_user(session_factory, workspace.id, role))
        page = client.get(f"/app/w/{workspace.slug}/")
        assert "/settings" not in page.text
        for section in ("workspace", "scoring", "stages", "consent", "sending", "api-keys", "users"):
            assert client.get(f"/app/w/{workspace.slug}/settings/{section}").status_code == 403
        token = csrf_of(page.text)
        assert (
            client.post(
                f"/app/w/{workspace.slug}/settings/api-keys", data={"csrf_token": token, "scopes": "read"}
            ).status_code
            == 403
        )
    client.cookies.clear()
    admin(client, session_factory, workspace)
    assert "/settings" in client.get(f"/app/w/{workspace.slug}/").text
    assert client.get(f"/app/w/{other_workspace.slug}/settings/workspace").status_code == 404


def test_workspace_settings_validate_and_keep_input(client, session_factory, workspace) -> None:
    token = admin(client, session_factory, workspace)
    url = f"/app/w/{workspace.slug}/settings/workspace"
    values = {
        "name": f"Pohjola {SCRIPT}",
        "default_language": "fi",
        "currency": "EUR",
        "timezone": "Mars/Olympus",
        "address_line1": "Esplanadi 1",
        "postal_code": "00100",
        "city": "Helsinki",
        "address_country": "FI",
        "cap_max": "0",
        "cap_days": "7",
        "quiet_start": "21:00",
        "quiet_end": "08:00",
        "csrf_token": token,
    }
    assert client.post(url, data={k: v for k, v in values.items() if k != "csrf_token"}).status_code == 403
    bad = client.post(url, data=values)
    assert bad.status_code == 422 and 'value="Mars/Olympus"' in bad.text and "IANA" in bad.text
    bad = client.post(url, data=dict(values, timezone="Europe/Helsinki"))
    assert bad.status_code == 422 and 'id="cap-max-error"' in bad.text and 'value="0"' in bad.text
    ok = client.post(url, data=dict(values, timezone="Europe/Helsinki", cap_max="3"))
    assert ok.status_code == 200 and "Settings saved." in ok.text
    assert "&lt;script&gt;" in ok.text and SCRIPT not in ok.text
    ws = client.get("/api/v1/workspace", headers=workspace.auth("admin")).json()
    assert ws["timezone"] == "Europe/Helsinki" and ws["frequency_cap"] == {"max": 3, "days": 7}
    assert ws["quiet_hours"] == {"start": "21:00", "end": "08:00"} and ws["city"] == "Helsinki"
    # Emptying both fields of a policy turns it off.
    client.post(url, data=dict(values, timezone="Europe/Helsinki", cap_max="", cap_days=""))
    assert client.get("/api/v1/workspace", headers=workspace.auth("admin")).json().get("frequency_cap") is None


def test_icp_and_engagement_json_with_validation_errors(client, session_factory, workspace) -> None:
    token = admin(client, session_factory, workspace)
    base = f"/app/w/{workspace.slug}/settings"
    broken = client.post(f"{base}/icps/new", data={"name": "Nordics", "definition": "{not json", "csrf_token": token})
    assert broken.status_code == 422 and "not valid JSON" in broken.text and "{not json" in broken.text
    wrong = '{"employees": {"min": "many", "weight": 15}}'
    res = client.post(f"{base}/icps/new", data={"name": "Nordics", "definition": wrong, "csrf_token": token})
    assert res.status_code == 422 and 'id="icp-new-error"' in res.text and "employees" in res.text
    assert "many" in res.text
    res = client.post(f"{base}/icps/new", data={"name": SCRIPT, "definition": ICP, "active": "1", "csrf_token": token})
    assert res.status_code == 200 and "Ideal customer profile saved." in res.text
    assert SCRIPT not in res.text and "&lt;script&gt;" in res.text
    icps = client.get("/api/v1/scoring/icps", headers=workspace.auth()).json()["items"]
    assert [i["name"] for i in icps] == [SCRIPT]
    res = client.post(f"{base}/icps/{icps[0]['id']}", data={"name": "Nordics", "definition": ICP, "csrf_token": token})
    assert res.status_code == 200
    icp = client.get("/api/v1/scoring/icps", headers=workspace.auth()).json()["items"][0]
    assert icp["name"] == "Nordics" and icp["active"] is False
    page = client.get(f"{base}/scoring")
    rules = re.search(r'id="engagement-definition"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert rules and "half_life_days" in rules.group(1)
    bad = client.post(
        f"{base}/engagement", data={"definition": '{"rules": [], "half_life_days": -1}', "csrf_token": token}
    )
    assert bad.status_code == 422 and 'id="engagement-error"' in bad.text


def test_stages_consent_and_dkim(client, session_factory, workspace, monkeypatch, tmp_path) -> None:
    token = admin(client, session_factory, workspace)
    base = f"/app/w/{workspace.slug}/settings"
    page = client.get(f"{base}/stages")
    keys = re.findall(r'name="key" type="text" value="([^"]*)"', page.text)
    labels = re.findall(r'name="label" type="text" value="([^"]*)"', page.text)
    assert keys[-1] == "" and "customer" in keys
    form = {
        "csrf_token": token,
        "key": [*keys[:-1], "vip"],
        "label": [*labels[:-1], "VIP"],
        "kind": ["funnel"] * (len(keys) - 1) + ["side"],
        "description": [""] * len(keys),
    }
    res = client.post(f"{base}/stages", data=form)
    assert res.status_code == 200 and "Lifecycle stages saved." in res.text
    stages = client.get("/api/v1/lifecycle-stages", headers=workspace.auth()).json()
    assert stages[-1]["key"] == "vip" and stages[-1]["kind"] == "side"
    dup = dict(form, key=[*keys[:-1], "customer"])
    res = client.post(f"{base}/stages", data=dup)
    assert res.status_code == 422 and 'id="stages-error"' in res.text
    consent = client.get(f"{base}/consent")
    assert consent.status_code == 200 and re.search(r"<th scope=\"row\">DE.*?</th><td>Double opt-in", consent.text)
    assert re.search(r"<th scope=\"row\">US</th><td>Opt-out", consent.text)
    sending = client.get(f"{base}/sending")
    assert 'id="dkim-missing"' in sending.text
    key = tmp_path / "dkim.pem"
    key.write_bytes(generate_dkim_private_key())
    monkeypatch.setenv("SUPPILO_DKIM_SELECTOR", "s2026")
    monkeypatch.setenv("SUPPILO_DKIM_DOMAIN", "pohjola.example")
    monkeypatch.setenv("SUPPILO_DKIM_PRIVATE_KEY_FILE", str(key))
    sending = client.get(f"{base}/sending")
    assert 'id="dkim-name">s2026._domainkey.pohjola.example' in sending.text and "v=DKIM1" in sending.text
    api = client.get("/api/v1/mail/dkim", headers=workspace.auth("admin")).json()
    assert api["value"][:40] in sending.text


def test_api_keys_shown_once_and_revoked(client, session_factory, workspace, other_workspace) -> None:
    token = admin(client, session_factory, workspace)
    url = f"/app/w/{workspace.slug}/settings/api-keys"
    none = client.post(url, data={"name": "CRM sync", "csrf_token": token})
    assert none.status_code == 422 and 'id="scopes-error"' in none.text and 'value="CRM sync"' in none.text
    res = client.post(url, data={"name": "CRM sync", "scopes": ["read", "write"], "csrf_token": token})
    raw = re.search(r'id="raw-key">([^<]+)<', res.text).group(1)
    assert raw.startswith("sk_")
    assert client.get("/api/v1/contacts", headers={"authorization": f"Bearer {raw}"}).status_code == 200
    listing = client.get(url).text
    assert raw not in listing and raw[:10] in listing
    key_id = int(re.search(r'id="key-(\d+)">\s*<td>CRM sync', listing).group(1))
    foreign = client.get("/api/v1/api-keys", headers=other_workspace.auth("admin"))
    if foreign.status_code == 200:
        other_id = foreign.json()[0]["id"] if isinstance(foreign.json(), list) else foreign.json()["items"][0]["id"]
        assert client.post(f"{url}/{other_id}/revoke", data={"csrf_token": token}).status_code == 404
    res = client.post(f"{url}/{key_id}/revoke", data={"csrf_token": token})
    assert res.status_code == 200 and "Key revoked" in res.text
    row = re.search(rf'id="key-{key_id}">(.*?)</tr>', res.text, re.S).group(1)
    assert "revoked" in row and "Revoke</button>" not in row
    from suppilo.adapters.http import deps

    deps._key_cache.clear()  # key lookups are cached for a few seconds
    assert client.get("/api/v1/contacts", headers={"authorization": f"Bearer {raw}"}).status_code == 401


def test_users_added_and_roles_changed(client, session_factory, workspace, other_workspace) -> None:
    token = admin(client, session_factory, workspace)
    url = f"/app/w/{workspace.slug}/settings/users"
    bad = client.post(url, data={"email": "not-an-email", "name": "X", "role": "analyst", "csrf_token": token})
    assert bad.status_code == 422 and 'id="u-email-error"' in bad.text and 'value="not-an-email"' in bad.text
    res = client.post(url, data={"email": "liisa@example.com", "name": SCRIPT, "role": "analyst", "csrf_token": token})
    assert res.status_code == 200 and "&lt;script&gt;" in res.text and SCRIPT not in res.text
    password = re.search(r'id="new-password">([^<]+)<', res.text).group(1)
    # An existing user of another workspace only gets the role here.
    other = make_user(session_factory, other_workspace.id, "marketer")
    res = client.post(url, data={"email": other, "role": "sales", "csrf_token": token})
    assert res.status_code == 200 and 'id="new-password"' not in res.text
    user_id = int(re.search(r'id="user-(\d+)">\s*<td>&lt;script', res.text).group(1))
    assert client.post(f"{url}/{user_id}/role", data={"role": "marketer", "csrf_token": token}).status_code == 200
    assert 'marketer" selected' in client.get(url).text
    # The new user logs in with the generated password and has the role given.
    client.cookies.clear()
    assert login(client, "liisa@example.com", password).status_code == 303
    assert client.get(f"/app/w/{workspace.slug}/mail").status_code == 200  # marketers see the mail catcher
