"""The template sandbox: attack payloads are refused at save and at render and never hang; missing values
render empty or their default; Babel formats; CSS is inlined; the text part is made readable from HTML."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from suppilo.messaging.templates import (
    TemplateRenderError,
    html_to_text,
    render_message,
    validate_source,
)


@dataclass
class V:
    subject: str = "Subject"
    html: str = "<p>x</p>"
    text: str | None = None
    preheader: str = ""


CTX = {
    "contact": {"first_name": "Aino", "country": "FI", "timezone": "Europe/Helsinki", "email": "a@example.fi"},
    "workspace": {"name": "Nordshop", "currency": "EUR"},
    "order": {"total_minor": 123456, "currency": "SEK", "placed_at": "2024-05-01T21:30:00Z"},
}

ATTACKS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ '{0.__class__}'.format(contact) }}",
    "{{ '{0.__class__}'.format_map(contact) }}",
    "{{ contact|attr('__class__') }}",
    "{{ contact['__class__'] }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ order.mro() }}",
    "{% for i in range(10**9) %}x{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ '%s' % contact }}",
    "{{ 'a'.center(10**9) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ contact|map(attribute='__class__')|list }}",
    "{{ 10**100000 }}",
]


@pytest.mark.parametrize("payload", ATTACKS)
def test_attack_payloads_are_refused_at_save_and_at_render(payload: str) -> None:
    assert validate_source(payload, path="variants.en.html", html=True), payload
    start = time.monotonic()
    with pytest.raises(TemplateRenderError):
        render_message(V(html=payload), language="en", context=CTX)
    assert time.monotonic() - start < 2


def test_nested_loops_hit_the_iteration_budget_quickly() -> None:
    source = "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
    assert validate_source(source, path="p") == []  # each range alone is allowed ...
    start = time.monotonic()
    with pytest.raises(TemplateRenderError) as exc:  # ... but together they exceed the budget
        render_message(V(html=source), language="en", context=CTX)
    assert "iterations" in exc.value.message
    assert time.monotonic() - start < 2


def test_output_size_is_capped() -> None:
    source = "{% for i in range(1000) %}{{ 'x' * 9000 }}{% endfor %}"
    with pytest.raises(TemplateRenderError) as exc:
        render_message(V(html=source), language="en", context=CTX)
    assert "longer than" in exc.value.message


def test_no_settings_or_objects_reach_the_context() -> None:
    class Secret:
        password = "hunter2"

    with pytest.raises(TemplateRenderError):
        render_message(V(html="{{ order.secret.password }}"), language="en", context={"order": {"secret": Secret()}})
    with pytest.raises(TemplateRenderError):
        render_message(V(html="{{ contact._hidden }}"), language="en", context=CTX)
    out = render_message(V(html="{{ config }}|{{ settings }}|{{ environment }}"), language="en", context=CTX)
    assert out.text == "||\n"


def test_missing_values_render_empty_or_default() -> None:
    out = render_message(
        V(
            subject="Hi {{ contact.last_name | default('there') }}",
            html="<p>[{{ nothing }}][{{ order.lines.first.name }}][{{ offer.code | upper }}]</p>",
        ),
        language="en",
        context={"contact": {"last_name": None}},
    )
    assert out.subject == "Hi there"
    assert out.text == "[][][]\n"


def test_syntax_errors_carry_line_numbers() -> None:
    issues = validate_source("line one\nline two\n{% for x in %}", path="variants.fi.html", html=True)
    assert [(i.path, i.line) for i in issues] == [("variants.fi.html", 3)]
    assert issues[0].message.startswith("syntax error")


def test_unknown_fields_of_known_roots_are_reported() -> None:
    issues = validate_source("{{ contact.password }} {{ company.name }} {{ order.anything }}", path="p")
    assert [i.message for i in issues] == ["unknown field contact.password"]


def test_babel_filters_use_the_contacts_locale_and_zone() -> None:
    html = (
        "<p>{{ order.total_minor | money(order.currency) }}|{{ order.placed_at | date('long') }}|"
        "{{ 1234567.891 | number(2) }}|{{ 0.25 | percent }}|{{ 500 | money }}</p>"
    )
    fi = render_message(V(html=html), language="fi", context=CTX).text.strip()
    assert fi == "1\xa0234,56\xa0SEK|2. toukokuuta 2024|1\xa0234\xa0567,89|25\xa0%|5,00\xa0€"
    en = render_message(V(html=html), language="en", context=CTX | {"contact": {"country": "US"}}).text.strip()
    assert en == "SEK1,234.56|May 1, 2024|1,234,567.89|25%|€5.00"


def test_html_is_escaped_and_subject_is_one_line() -> None:
    ctx = {"contact": {"first_name": "<script>alert(1)</script>\r\nBcc: x@y"}}
    out = render_message(
        V(subject="Hi {{ contact.first_name }}", html="<p>{{ contact.first_name }}</p>"), language="en", context=ctx
    )
    assert "<script>" not in out.html and "&lt;script&gt;" in out.html
    assert "\r" not in out.subject and "\n" not in out.subject


def test_css_is_inlined_and_preheader_hidden() -> None:
    out = render_message(
        V(html="<html><head><style>p { color: red }</style></head><body><p>Hi</p></body></html>", preheader="Pre"),
        language="en",
        context={},
    )
    assert '<p style="color: red;">Hi</p>' in out.html
    assert "<style" not in out.html
    assert 'data-preheader="1">Pre</div>' in out.html
    assert out.text == "Hi\n"  # the hidden preheader is not part of the text


def test_text_part_from_html_is_readable() -> None:
    html = (
        "<h1>Title</h1><p>First <a href='https://x.fi/a'>link</a> and <a href='https://x.fi/b'>https://x.fi/b</a>.</p>"
        "<ul><li>one</li><li>two</li></ul><ol><li>first</li><li>second</li></ol>"
        "<p>Line<br>break</p><img src='x.png' alt='Logo'><script>bad()</script>"
    )
    assert html_to_text(html) == (
        "Title\n\nFirst link (https://x.fi/a) and https://x.fi/b.\n\n- one\n- two\n\n1. first\n2. second\n\n"
        "Line\nbreak\n\nLogo\n"
    )


def test_a_given_text_part_is_used_as_is() -> None:
    out = render_message(V(html="<p>html</p>", text="Hello {{ contact.first_name }}!"), language="en", context=CTX)
    assert out.text == "Hello Aino!\n"


def test_text_parts_of_many_messages_of_one_template_carry_each_contacts_values_unescaped() -> None:
    """The text part is made from each message's own HTML (the layout's tags are tokenized once and reused): values
    escaped in the HTML read as typed, links and the unsubscribe link stay, and the preheader stays out."""
    template = V(
        subject="Hi {{ contact.first_name }}",
        preheader="Only in the inbox list",
        html="<html><head><style>p { color: #333 } a { color: #06c }</style></head><body>"
        "<h1>Hello {{ contact.first_name }}!</h1>"
        "<p>Your offer: <a href='https://shop.example.fi/o?c={{ contact.id }}&amp;x=1'>{{ contact.first_name }}'s "
        "deal</a></p><p><a href='{{ unsubscribe_url }}'>Unsubscribe</a></p></body></html>",
    )
    names = ["Tom & <Jerry>", "Ä \"quoted\" 'name'", "Plain", "Tom & <Jerry>"]
    for i, name in enumerate(names):
        ctx = {
            "contact": {"id": i, "first_name": name, "country": "FI"},
            "workspace": {"name": "Nordshop"},
            "unsubscribe_url": f"https://mail.example.fi/u/token-{i}",
        }
        out = render_message(template, language="en", context=ctx)
        assert "&amp;" in out.html or "&" not in name  # the HTML part escapes the value ...
        assert out.text == (  # ... the text part shows it as typed
            f"Hello {name}!\n\n"
            f"Your offer: {name}'s deal (https://shop.example.fi/o?c={i}&x=1)\n\n"
            f"Unsubscribe (https://mail.example.fi/u/token-{i})\n"
        )
        assert "&amp;" not in out.text and "&lt;" not in out.text and "&#" not in out.text


def test_a_workspace_context_changed_between_messages_is_rendered_as_it_is_now() -> None:
    """The workspace dict shared by a chunk's messages is made plain once; a change to it (even inside a nested
    value) shows in the next message, and what a template gets cannot reach back into the caller's dict."""
    template = V(subject="{{ workspace.name }}", html="<p>{{ workspace.name }}: {{ workspace.tags | join(',') }}</p>")
    workspace = {"name": "Nordshop", "tags": ["tents"]}
    ctx = {"contact": {"first_name": "Aino"}, "workspace": workspace}
    assert render_message(template, language="en", context=ctx).text == "Nordshop: tents\n"
    workspace["tags"].append("stoves")
    assert render_message(template, language="en", context=ctx).text == "Nordshop: tents,stoves\n"
    workspace["name"] = "Pohjola"
    out = render_message(template, language="en", context=ctx)
    assert (out.subject, out.text) == ("Pohjola", "Pohjola: tents,stoves\n")
    assert render_message(template, language="en", context={**ctx, "workspace": {"name": "Other"}}).subject == "Other"
