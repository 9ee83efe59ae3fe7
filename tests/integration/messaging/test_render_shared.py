"""Messages whose rendered HTML differs only in their own unsubscribe token share the CSS inlining, the text part and
the split of the HTML around its tracked links (``templates.volatile_key``), and, for the CSS inlining and the text
part, also when they differ in the contact's names of the same length (``templates.personal_key``); the results equal
those computed on each message's own HTML, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from suppilo.messaging import service, templates, tracking, unsubscribe
from suppilo.messaging.sender import SenderConfig, _build_job, _Job, _TemplateData, _Variant

from .test_render_golden import URLS, WORKSPACE, cases

SECRET = "s" * 40
BASE = "https://mail.example.fi"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _token(outbox_id: int, contact_id: int = 7) -> str:
    return unsubscribe.unsubscribe_token(SECRET, 3, contact_id, outbox_id, NOW)


def _with_url(context: dict[str, Any], token: str) -> dict[str, Any]:
    url = f"{BASE}/u/{token}"
    return {**context, "unsubscribe_url": url, "preferences_url": url}


def _share_always() -> None:
    """Look for shared work now, even after many misses (``templates.Sharing`` pauses then)."""
    templates._body_sharing.paused = tracking._plan_sharing.paused = 0


def _uncached(content: Any, lang: str, context: dict[str, Any]) -> templates.RenderedMessage:
    return templates.render_message(content, language=lang, context=context)


def _rewrite(html: str, outbox_id: int, volatile: str | None) -> tuple[str, list[str]]:
    return tracking.rewrite_links(
        html,
        click_url=lambda i: f"{BASE}/c/{tracking.click_token(SECRET, 3, outbox_id, i)}",
        pixel_url=f"{BASE}/o/{tracking.open_token(SECRET, 3, outbox_id)}.gif",
        skip_prefixes=(f"{BASE}/u/", f"{BASE}/consent/"),
        volatile=volatile,
    )


def test_every_shipped_template_renders_and_tracks_the_same_with_the_shared_work() -> None:
    assert URLS["unsubscribe_url"].startswith(f"{BASE}/u/")
    templates._BODIES.clear()
    tracking._PLANS.clear()
    compared = 0
    for n, (_key, lang, _cid, _label, content, context) in enumerate(cases()[::3]):
        _share_always()
        for outbox_id in (n * 2 + 1, n * 2 + 2, 10**9 + n):  # the second (same length) shares the first's work
            token = _token(outbox_id)
            ctx = _with_url(context, token)
            shared = templates.render_message(content, language=lang, context=ctx, volatile=token)
            alone = _uncached(content, lang, ctx)
            assert shared == alone
            assert _rewrite(shared.html, outbox_id, token) == _rewrite(alone.html, outbox_id, None)
            if content.html and "unsubscribe_url" in content.html:
                assert token in shared.html and token in shared.text
            compared += 1
    assert compared > 300
    # The work was shared: far fewer distinct bodies than messages, every one of them usable.
    assert 0 < len(templates._BODIES) < compared / 2
    assert all(hit is not None for hit in templates._BODIES.values())


def test_contacts_with_different_names_get_their_own_body_and_tokens() -> None:
    cfg = SenderConfig(secret=SECRET, public_url=BASE, from_address="news@shop.example.fi")
    spec = next(t for t in service.default_templates() if t["key"] == "welcome")
    data = _TemplateData(
        id=1,
        key="welcome",
        kind="marketing",
        version=1,
        variants=tuple(
            _Variant(v["language"], v["subject"], v["preheader"], v["html"], None) for v in spec["variants"]
        ),
    )

    def job(outbox_id: int, first_name: str) -> _Job:
        contact = {"id": outbox_id, "first_name": first_name, "email": f"c{outbox_id}@ex.com", "language": "en"}
        return _Job(
            outbox_id=outbox_id, workspace_id=3, kind="marketing", extra=None, template_key="welcome", body=None,
            contact_id=outbox_id, email=f"c{outbox_id}@ex.com", context=(contact, {}), template=data,
            workspace_context=WORKSPACE, slug="ws", from_name="Shop", from_header="From: news@shop.example.fi\r\n",
            now=NOW,
        )  # fmt: skip

    built = {i: _build_job(cfg, job(i, name)) for i, name in ((101, "Lee"), (102, "Lee"), (103, "Maria"))}
    for outbox_id, (data_bytes, links, _mid) in built.items():
        text = data_bytes.decode("ascii")
        flat = text.replace("=\r\n", "")
        token = unsubscribe.unsubscribe_token(SECRET, 3, outbox_id, outbox_id, NOW)
        assert f"/u/{token}" in flat  # its own unsubscribe link, in the headers and both parts
        assert flat.count(token) >= 3
        assert tracking.open_token(SECRET, 3, outbox_id) in flat
        assert tracking.click_token(SECRET, 3, outbox_id, 0) in flat
        assert links == ["https://shop.example.fi"]
        others = [unsubscribe.unsubscribe_token(SECRET, 3, o, o, NOW) for o in built if o != outbox_id]
        assert not any(other in flat for other in others)
    assert "Welcome, Maria!" in built[103][0].decode("ascii").replace("=\r\n", "")
    assert "Maria" not in built[102][0].decode("ascii").replace("=\r\n", "")


def test_the_shared_bodies_stay_bounded() -> None:
    templates._BODIES.clear()
    templates._body_sharing = templates.Sharing(pause=0)  # never pauses: every message is looked up
    html = '<html><head><style>p{color:red}</style></head><body><p>{{ n }}</p><a href="{{ u }}">x</a></body></html>'
    content = _Variant("en", "s", "", html, None)
    for n in range(templates._BODIES_SIZE * 2 + 5):
        token = _token(n + 1)
        templates.render_message(content, language="en", context={"n": n, "u": f"{BASE}/u/{token}"}, volatile=token)
        assert len(templates._BODIES) <= templates._BODIES_SIZE
    templates._body_sharing = templates.Sharing()


def _alone(html: str, with_text: bool) -> tuple[str, str | None]:
    body = templates.inline_css(html)
    return body, templates.html_to_text(body) if with_text else None


def _outcome(fn: Any, *args: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("error", type(exc), str(exc))


_TOKEN = _token(424242)
# Places a token may stand in HTML a template makes: link values, tag and attribute names (lower-cased by parsing),
# end tags, comments, style blocks and attributes, text, and CSS that selects on attribute values.
_PIECES = [
    f'<a href="{BASE}/u/{_TOKEN}">unsubscribe</a>', f'<a class="x" href="{BASE}/u/{_TOKEN}">u</a>',
    f'<a href="{BASE}/c/x">t</a>', f'<a href="https://shop.example/{_TOKEN}">shop</a>', f"<a/{_TOKEN}\">",
    f"</{_TOKEN}\">", f"x</{_TOKEN}\">", f'<p title="/{_TOKEN}">t</p>', f'<p style="color:red" data-u="/{_TOKEN}">',
    f"<!-- /{_TOKEN}\" -->", f"text /{_TOKEN}\" more",
    f'<style>p{{color:red}} a[href*="{_TOKEN[:6]}"]{{color:blue}}</style>',
    "<style>.u{color:green}</style>", f'<img alt="/{_TOKEN}" src="a.png">', f"<p style='/{_TOKEN}\"'>",
    f'<div style="x:/{_TOKEN}">s</div>', f'<p title="x href="{BASE}/u/{_TOKEN}">', f"<!DOCTYPE /{_TOKEN}\">",
    "<p>", "</p>", "<div>", "</div>", "<br>", " ", "\n", "&amp;", "&", "<", "/", '"', "'", "~",
    "<style>:lang(en) {color:red}</style>", f'<html lang="en-/{_TOKEN}">',
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_sharing_never_changes_a_result_wherever_the_token_stands(pieces: list[str]) -> None:
    html = "<html><head><style>p{color:#111}</style></head><body>" + "".join(pieces) + "</body></html>"
    _share_always()
    for with_text in (True, False):
        shared = _outcome(templates._body_and_text, html, _TOKEN, with_text)
        alone = _outcome(lambda: _alone(html, with_text))
        assert shared == alone
    final = shared[1][0] if shared[0] == "ok" else html
    assert _rewrite(final, 424242, _TOKEN) == _rewrite(final, 424242, None)
    assert _rewrite(html, 424242, _TOKEN) == _rewrite(html, 424242, None)


def test_the_token_is_not_set_aside_where_parsing_or_css_would_treat_it_otherwise() -> None:
    link = f'<a href="{BASE}/u/{_TOKEN}">u</a>'
    dangerous = [
        f'<a/{_TOKEN}">',  # an attribute name: lower-cased by parsing
        f'<p title="x href="{BASE}/u/{_TOKEN}">',  # a quote closes the value before it: names again
        f'<style>a[href*="{_TOKEN[:6]}"]{{color:blue}}</style>{link}',  # CSS selecting on the value
        f"<style>a:lang(en){{color:blue}}</style>{link}",
        f'<div style="x:/{_TOKEN}">s</div>',  # a style attribute: CSS parsing rewrites it
        f'<!-- /{_TOKEN}" -->',
        f'</{_TOKEN}">',
    ]
    for piece in dangerous:
        templates._BODIES.clear()
        _share_always()
        html = "<html><head><style>p{color:#111}</style></head><body>" + piece + "</body></html>"
        shared = _outcome(templates._body_and_text, html, _TOKEN, True)
        assert shared == _outcome(_alone, html, True)
        assert all(hit is None for hit in templates._BODIES.values()), piece


def test_sharing_pauses_while_it_does_not_pay_and_the_results_stay_the_same() -> None:
    templates._BODIES.clear()
    templates._body_sharing = sharing = templates.Sharing(window=8, min_hits=2, pause=20)
    html = '<html><head><style>p{color:red}</style></head><body><p>{{ n }}</p><a href="{{ u }}">x</a></body></html>'
    content = _Variant("en", "s", "", html, None)

    def render(n: int, outbox_id: int) -> templates.RenderedMessage:
        token = _token(outbox_id)
        ctx = {"n": n, "u": f"{BASE}/u/{token}"}
        shared = templates.render_message(content, language="en", context=ctx, volatile=token)
        assert shared == templates.render_message(content, language="en", context=ctx)
        return shared

    for i in range(8):  # distinct names: every lookup misses
        render(i, 1000 + i)
    assert sharing.paused == 20
    cached = len(templates._BODIES)
    for i in range(20):  # worked on alone: nothing looked up or kept
        render(100 + i, 2000 + i)
    assert sharing.paused == 0 and len(templates._BODIES) == cached
    for i in range(8):  # the same values again: hits, so it keeps sharing
        render(7, 3000 + i)
    assert sharing.paused == 0 and sharing.tries == 0
    templates._body_sharing = templates.Sharing()


# Places a contact's name may stand in HTML a template makes (the names below and "Mari" as a stand-in).
_NAME_PIECES = [
    "<p>Hei NAME!</p>", "<p>NAME</p>", "Dear NAME,", "<b>NAME</b>", "<h1>Welcome, NAME</h1>", "&NAME;", "&#NAME",
    "&amp;NAME", "<NAME>", "</NAME>", "<!NAME>", "<p NAME>", '<p title="NAME">x</p>', '<p title="x>y" NAME>',
    '<img alt="NAME" src="a.png">', '<div style="font-family:NAME">x</div>', "<!-- NAME -->", "<title>NAME</title>",
    '<a href="https://shop.example/?n=NAME">go</a>', '<a href="https://shop.example/">NAME</a>', "xNAME", "NAMEx",
    "NAME-NAME", "(NAME)", "«NAME»", "<p>", "</p>", " ", "\n", "&", "<", "^", "`", "~",
    f'<a href="{BASE}/u/{_TOKEN}">unsubscribe</a>', "<style>p{color:red}</style>", "<style>[title]{color:red}</style>",
    '<p class="NAME">x</p>', '<p id="NAME">x</p>', "<style>.Mari{color:red} #Lee{color:blue}</style>",
    "<style>.mari{color:red} #lee{color:blue}</style>",
]  # fmt: skip
_NAMES = ["Mari", "Lee", "amp", "lt", "Doctype", "Anna-Liisa", "Ēriks", "Jānis", "Väinö", "Lee3", "O'Neil", "A"]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_NAME_PIECES), max_size=12),
    st.sampled_from(_NAMES),
    st.sampled_from(["", *_NAMES]),
)
def test_setting_the_names_aside_never_changes_a_result_wherever_they_stand(
    pieces: list[str], first: str, last: str
) -> None:
    body = "".join(p.replace("NAME", first if i % 2 == 0 else last or first) for i, p in enumerate(pieces))
    html = "<html><head><style>p{color:#111}</style></head><body>" + body + "</body></html>"
    _share_always()
    for with_text in (True, False):
        shared = _outcome(templates._body_and_text, html, _TOKEN, with_text, (first, last))
        assert shared == _outcome(lambda: _alone(html, with_text))
        again = _outcome(templates._body_and_text, html, _TOKEN, with_text, (first, last))  # from the cache
        assert again == shared


def test_names_of_the_same_length_share_one_body_and_each_message_keeps_its_own_name() -> None:
    templates._BODIES.clear()
    templates._body_sharing = templates.Sharing(pause=0)
    html = (
        "<html><head><style>p{color:red} .n{font-weight:bold}</style></head><body><h1>Welcome, {{ contact.first_name }}"
        ' {{ contact.last_name }}!</h1><p class="n">Hei {{ contact.first_name }}, we kept a gift for you.</p>'
        '<img alt="{{ contact.first_name }}" src="https://shop.example/a.png"><a href="{{ u }}">unsubscribe</a>'
        "</body></html>"
    )
    content = _Variant("en", "s", "", html, None)
    people = [("Aino", "Laine"), ("Lars", "Berg1"), ("Māra", "Ozola"), ("Anna-Liisa", "Virtanen"), ("Ēriks", "Kalni")]
    for n, (first, last) in enumerate(people):
        token = _token(n + 1)
        ctx = {"contact": {"first_name": first, "last_name": last}, "u": f"{BASE}/u/{token}"}
        shared = templates.render_message(content, language="en", context=ctx, volatile=token)
        assert shared == templates.render_message(content, language="en", context=ctx)
        assert f"Welcome, {first} {last}!" in shared.text and f'alt="{first}"' in shared.html
        assert token in shared.html
    # Aino Laine and Māra Ozola (4 and 5 letters) share one body; Lars's last name has a digit and stays in his key.
    keys = list(templates._BODIES)
    assert len(keys) == 4
    assert all(hit is not None for hit in templates._BODIES.values())
    assert sum("Welcome, ^^^^ `````!" in k for k in keys) == 1
    assert sum("Welcome, ^^^^ Berg1!" in k for k in keys) == 1
    templates._body_sharing = templates.Sharing()
