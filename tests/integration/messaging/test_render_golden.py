"""Every shipped template, in every shipped language, renders byte for byte as it did before the sender's batch
rendering was introduced, for a set of generated contacts (names with quotes, ampersands, non-ASCII letters and
no-break spaces, missing values) with and without the optional context (order, cart, offer, ...).

The digests in ``data/render_golden.json`` were written from the renderer as it was (commit 1d7190b). When a shipped
template is edited on purpose, regenerate them with
``.venv/bin/python -m tests.integration.messaging.test_render_golden``
and review the diff of the rendered output, not only of the digests.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suppilo.messaging import service, templates

GOLDEN = Path(__file__).parent / "data" / "render_golden.json"
LANGUAGES = ("en", "sv", "fi", "da", "lv")

WORKSPACE = {
    "name": "Pohjola Outdoor & Co",
    "postal_address": "Mannerheimintie 1, 00100 Helsinki, Finland",
    "address_line1": "Mannerheimintie 1",
    "postal_code": "00100",
    "city": "Helsinki",
    "country": "FI",
    "website": "https://shop.example.fi",
    "currency": "EUR",
    "timezone": "Europe/Helsinki",
    "default_language": "en",
}
URLS = {
    "unsubscribe_url": "https://mail.example.fi/u/tok-123",
    "preferences_url": "https://mail.example.fi/u/tok-123",
}
EXTRA: dict[str, Any] = {
    "order": {
        "number": "PO-1001",
        "total_minor": 123456,
        "currency": "EUR",
        "placed_at": "2024-05-02T21:30:00+00:00",
        "review_url": "https://shop.example.fi/review?o=1001&x=1",
        "lines": [
            {"name": 'Tent <2p> "Lite"', "quantity": 1, "unit_price_minor": 29900},
            {"name": "Stove & pot", "quantity": 2, "unit_price_minor": 4950},
        ],
    },
    "cart": {"value_minor": 5990, "currency": "SEK", "url": "https://shop.example.fi/cart/9"},
    "offer": {
        "coupon_code": "WB-7K2Q-9XJ3",
        "discount_percent": 0.15,
        "expires_at": "2024-06-30T20:00:00+00:00",
        "url": "https://shop.example.fi/offer",
    },
    "recommendations": [
        {"name": "Sleeping bag", "price_minor": 19900, "currency": "EUR", "url": "https://shop.example.fi/p/1"},
        {"name": "Mat 'Air'", "price_minor": 7900, "url": ""},
    ],
    "survey": {"url": "https://shop.example.fi/nps/1"},
    "referral": {"url": "https://shop.example.fi/r/ABC", "code": "ABC", "reward": "10 €"},
    "message": {
        "interest": " hiking ",
        "confirm_url": "https://mail.example.fi/consent/confirm/tok",
        "owner_name": "Mikko Ö'Hara",
        "task_title": "Call back <today>",
        "task_url": "https://app.example.fi/tasks/5",
        "task_kind": "call",
        "due_at": "2024-03-31T00:30:00+00:00",
        "deal_name": "Big & tall",
        "contact_name": "Anna",
        "response_hours": 4,
    },
}
FIRST = ["Lee", "O'Brien", "Zoë", "Jörg & Ann", 'Anna "A"', "Ilze\u00a0Marta", "", "Åsa", "<b>Bob</b>", "Mikko"]
LAST = ["Smith", "Kõiv", "", "Virtanen", "Bērziņa", "D'Angelo"]
COUNTRIES = ["FI", "SE", "DK", "LV", "US", "DE", None]
ZONES = ["Europe/Helsinki", "America/New_York", None, "Europe/Riga", "Nowhere/Unknown"]


def generated_contacts(n: int = 12, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        first, last = rnd.choice(FIRST), rnd.choice(LAST)
        out.append(
            {
                "id": 1000 + i,
                "first_name": first or None,
                "last_name": last or None,
                "full_name": " ".join(x for x in (first, last) if x) or None,
                "email": f"c{i}@example.com",
                "language": LANGUAGES[i % 5],
                "country": rnd.choice(COUNTRIES),
                "city": rnd.choice(["Helsinki", "Tartu & Co", None]),
                "region": None,
                "timezone": rnd.choice(ZONES),
                "job_title": rnd.choice(["CEO", None]),
                "lifecycle_stage": "lead",
                "properties": {},
            }
        )
    return out


def cases() -> list[tuple[str, str, int, str, Any, dict[str, Any]]]:
    out = []
    for spec in service.default_templates():
        for variant in spec["variants"]:
            lang = variant["language"]
            content = SimpleNamespace(
                subject=variant["subject"], preheader=variant["preheader"], html=variant["html"], text=None
            )
            for contact in generated_contacts():
                for label, extra in (("bare", {}), ("full", EXTRA)):
                    context = {**extra, **URLS, "contact": contact, "company": {}, "workspace": WORKSPACE}
                    out.append((spec["key"], lang, contact["id"], label, content, context))
    return out


def digest(message: templates.RenderedMessage) -> str:
    joined = "\x00".join((message.subject, message.preheader, message.html, message.text))
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def render_all() -> dict[str, str]:
    return {
        f"{key}/{lang}/{cid}/{label}": digest(templates.render_message(content, language=lang, context=context))
        for key, lang, cid, label, content, context in cases()
    }


def test_every_shipped_template_renders_as_before() -> None:
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    got = render_all()
    assert set(got) == set(expected)
    changed = sorted(k for k in got if got[k] != expected[k])
    assert not changed, f"{len(changed)} rendered messages changed, e.g. {changed[:5]}"


@pytest.mark.parametrize("key", sorted({spec["key"] for spec in service.default_templates()}))
def test_the_golden_cases_cover_every_language_of_each_template(key: str) -> None:
    langs = {lang for k, lang, *_ in cases() if k == key}
    assert langs == set(LANGUAGES)


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(render_all(), indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {GOLDEN}")


def test_batch_rendering_equals_rendering_one_contact_at_a_time(session, workspace) -> None:
    """The sender renders a claimed batch from bulk reads (``SenderDb.context_rows`` + ``contact_context_of`` +
    ``render_loaded``); every shipped template gives exactly what ``render_for_contact`` gives for the same stored
    contact."""
    from suppilo.companies.models import Company
    from suppilo.contacts import service as contacts_service
    from suppilo.contacts.schemas import ContactCreate
    from suppilo.messaging.sender_sql import SenderDb

    company = Company(
        workspace_id=workspace.id, name="Tunturi & Sons", name_lower="tunturi & sons", domain="tunturi.fi"
    )
    session.add(company)
    session.flush()
    ids = []
    for i, c in enumerate(generated_contacts()):
        data = ContactCreate(
            email=c["email"],
            first_name=c["first_name"],
            last_name=c["last_name"],
            language=c["language"],
            country=c["country"] if c["country"] != "US" else None,
            company_id=company.id if i % 2 else None,
        )
        ids.append(contacts_service.create_contact(session, workspace.id, data).id)
    session.flush()
    rows, companies = SenderDb(session.connection()).context_rows(workspace.id, ids)
    contexts = {
        c.id: service.contact_context_of(c, companies.get(c.company_id) if c.company_id is not None else None)
        for c in rows
    }
    assert set(contexts) == set(ids)
    ws_context = service.workspace_context(session, workspace.id)
    compared = 0
    for spec in service.default_templates():
        template = service.get_template_by_key(session, workspace.id, spec["key"])
        for cid in ids:
            for extra in ({**URLS}, {**EXTRA, **URLS}):
                one = service.render_for_contact(session, workspace.id, spec["key"], cid, extra=extra)
                batch = service.render_loaded(template, *contexts[cid], ws_context, extra=extra)
                assert batch == one, (spec["key"], cid)
                compared += 1
    assert compared == len(service.default_templates()) * len(ids) * 2


TRICKY_HTML = [
    "<!DOCTYPE html><html><head><style>p{color:red}</style></head><body><p>a &amp; b &lt;c&gt; \"d\" 'e'</p>"
    "<!-- a comment -->tail <br> x<br/>y<hr><ul><li>one</li><li>two<ol><li>n</li></ol></li></ul>"
    '<a href="https://x.example/?a=1&amp;b=&quot;2&quot;&gt;">label &nbsp; here</a><a href="mailto:a@b.c">a@b.c</a>'
    '<img alt="Logo &amp; co" src="l.png"><div style="display: none">hidden</div><table><tr><td>1</td><th>2</th>'
    "</tr></table><h1>Title</h1>\n\n  spaced \t text  </body></html>",
    '<html><body><p data-x="<b>">attribute with markup</p><P CLASS="Up">upper</P></body></html>',
    "<p>unbalanced <b>bold <i>both</p> & stray < less than</p>",
    "<p>a single 'quoted' <a href='https://x.example'>link</a></p><script>var x = '<p>';</script>",
    "plain text with &#39;entities&#x27; and &unknown; &amp",
    # line breaks inside tags, attribute values, comments and text (the tokenizer reuses the calls of whole lines)
    '<p\nclass="x">a</p>\n<!-- multi\nline -->text \n  more\n<a href="https://x.example/a\nb">l\nabel</a>&amp\nx',
    "<p>first line   \n   second line</p>\n\n<br>\n<ul>\n<li>one\n</li>\n<li>\ntwo</li></ul>\n",
    '<div title="a\nb">x</div>\n<div style="display:\nnone">hidden\n</div>shown',
    "line one\nline two &amp;\n<!-- c -->\n\ntrailing<a href='https://x.example'>\n</a>",
]


@pytest.mark.parametrize("html", TRICKY_HTML)
def test_the_fast_html_tokenizer_equals_htmlparser(html: str) -> None:
    for source in (html, templates.inline_css(html)):
        assert templates.html_to_text(source) == templates._html_to_text_parser(source)


_PIECES = [
    "<p>", "</p>", "<div>", "</div>", '<a href="https://e.example/?a=1&amp;b">', "</a>", "<br>", "<li>", "</li>",
    "<ul>", "</ul>", "<!-- c -->", "<!-- c\nd -->", '<p\nclass="k">', '<img alt="x\ny">', "a", "b c", " ", "\n",
    "  \n ", "\t", "&amp;", "&lt;", "&amp", "&#39;", "x&nbsp;y",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_the_line_by_line_tokenizer_equals_the_whole_document_and_htmlparser(pieces: list[str]) -> None:
    html = "".join(pieces)
    for source in (html, templates.inline_css(f"<html><head><style>p{{color:red}}</style></head><body>{html}")):
        by_lines = templates._lines_calls(source)
        if by_lines is not None:
            assert by_lines == templates._document_calls(source)
        assert templates.html_to_text(source) == templates._html_to_text_parser(source)


def test_the_fast_html_tokenizer_equals_htmlparser_on_every_shipped_template() -> None:
    fast_used = 0
    for _key, lang, _cid, _label, content, context in cases()[::7]:
        state = templates._RenderState(
            locale=templates.locale_for(lang, None), timezone=templates.ZoneInfo("UTC"), currency="EUR"
        )
        token = templates._state.set(state)
        try:
            body = templates.inline_css(templates._render_part(content.html, templates._plain(context), html=True))
        finally:
            templates._state.reset(token)
        fast_used += templates._feed_serialized(templates._TextMaker(), body)
        by_lines = templates._lines_calls(body)
        assert by_lines is not None and by_lines == templates._document_calls(body)
        assert templates.html_to_text(body) == templates._html_to_text_parser(body)
    assert fast_used > 100  # the serializer's output takes the fast path
