"""The image pixel: a page view recorded for a good write key, nothing for a bad one, always a GIF."""

from __future__ import annotations

from sqlalchemy import func, select

from suppilo.contacts.models import Contact
from suppilo.events.models import Event

GIF_HEADER = b"GIF89a"


def events_of(session_factory, workspace_id):
    with session_factory() as s:
        return list(s.scalars(select(Event).where(Event.workspace_id == workspace_id)))


def assert_gif(resp):
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/gif"
    assert resp.content.startswith(GIF_HEADER) and len(resp.content) < 100
    assert "no-store" in resp.headers["cache-control"] and "no-cache" in resp.headers["cache-control"]
    assert "set-cookie" not in resp.headers


def test_good_key_records_a_page_view_with_campaign(client, workspace, session_factory):
    resp = client.get(
        "/v1/p.gif",
        params={
            "k": workspace.track_key,
            "u": "https://shop.example.fi/sale?utm_source=newsletter&utm_medium=email&utm_campaign=autumn",
            "r": "https://mail.example.com/",
            "a": "anon-pixel-1",
            "t": "Autumn sale",
        },
        headers={"User-Agent": "Mail client 1.0"},
    )
    assert_gif(resp)
    [event] = events_of(session_factory, workspace.id)
    assert event.kind == "page" and event.anonymous_id == "anon-pixel-1"
    assert event.properties["url"].startswith("https://shop.example.fi/sale")
    assert event.properties["title"] == "Autumn sale"
    assert event.context["campaign"] == {"name": "autumn", "source": "newsletter", "medium": "email"}
    assert event.context["userAgent"] == "Mail client 1.0"
    with session_factory() as s:
        contact = s.get(Contact, event.contact_id) if event.contact_id else None
    assert contact is not None and contact.first_touch_channel == "email"


def test_bad_or_missing_key_returns_the_gif_and_writes_nothing(client, workspace, session_factory):
    with session_factory() as s:
        before = s.scalar(select(func.count()).select_from(Event))
    for params in (
        {"k": "wk_not-a-real-key", "u": "https://shop.example.fi/"},
        {"u": "https://shop.example.fi/"},
        {"k": workspace.read_key + "x", "u": "https://shop.example.fi/"},
    ):
        assert_gif(client.get("/v1/p.gif", params=params))
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == before


def test_without_anonymous_id_each_view_gets_its_own(client, workspace, session_factory):
    for _ in range(2):
        assert_gif(client.get("/v1/p.gif", params={"k": workspace.track_key, "u": "https://shop.example.fi/"}))
    ids = {e.anonymous_id for e in events_of(session_factory, workspace.id)}
    assert len(ids) == 2 and all(i.startswith("pixel-") for i in ids)
