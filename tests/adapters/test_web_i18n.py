"""The interface catalogues: every text of the templates and pages is translated in sv, fi, da and lv, with the
same placeholders; numbers, money and dates follow the user's locale and time zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from suppilo.adapters.web import i18n

WEB = Path(i18n.__file__).parent
PLACEHOLDER = re.compile(r"%\([a-z_]+\)s")


def used_messages() -> set[str | tuple[str, ...]]:
    """Every message the templates and the code translate (a tuple for a singular/plural pair)."""
    method_map = [("templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]
    return {m[2] if isinstance(m[2], str) else tuple(m[2]) for m in extract_from_dir(str(WEB), method_map=method_map)}


def test_pages_use_plenty_of_messages() -> None:
    used = used_messages()
    assert len(used) > 100 and "Lifecycle funnel" in used and "Wrong email or password." in used


@pytest.mark.parametrize("language", ["sv", "fi", "da", "lv"])
def test_every_message_is_translated(language: str) -> None:
    with i18n.catalogue_path(language).open("rb") as fh:
        catalog = read_po(fh, locale=language)
    missing, fuzzy, bad = [], [], []
    for msgid in sorted(used_messages(), key=str):
        singular = msgid if isinstance(msgid, str) else msgid[0]
        message = catalog.get(singular)
        strings = (message.string,) if message is not None and isinstance(message.string, str) else ()
        if message is not None and isinstance(message.string, tuple):
            strings = message.string
            if len(strings) != catalog.num_plurals:
                bad.append(msgid)
        if message is None or not strings or not all(strings):
            missing.append(msgid)
        elif message.fuzzy:
            fuzzy.append(msgid)
        elif any(sorted(PLACEHOLDER.findall(singular)) != sorted(PLACEHOLDER.findall(t)) for t in strings):
            bad.append(msgid)
    assert missing == [] and fuzzy == [] and bad == []


def test_english_catalogue_lists_every_message() -> None:
    with i18n.catalogue_path("en").open("rb") as fh:
        catalog = read_po(fh, locale="en")
    listed = {m.id if isinstance(m.id, str) else tuple(m.id) for m in catalog if m.id}
    assert used_messages() <= listed


def test_translations_load_from_the_po_files() -> None:
    assert i18n.translations("fi").gettext("Log out") == "Kirjaudu ulos"
    assert i18n.translations("lv").gettext("Password") == "Parole"
    assert i18n.translations("en").gettext("Log out") == "Log out"
    assert i18n.translations("sv").gettext("a text nobody translated") == "a text nobody translated"
    lv = i18n.translations("lv")
    assert [lv.ngettext("%(num)s event", "%(num)s events", n) % {"num": n} for n in (0, 1, 2, 21)] == [
        "0 notikumu",
        "1 notikums",
        "2 notikumi",
        "21 notikums",
    ]


def test_money_numbers_and_dates_follow_the_locale() -> None:
    assert i18n.Formatter("en").money(123456, "EUR") == "€1,234.56"
    assert i18n.Formatter("fi").money(123456, "EUR") == "1\xa0234,56\xa0€"
    assert i18n.Formatter("sv").money(123456, "SEK") == "1\xa0234,56\xa0kr"
    assert i18n.Formatter("da").number(1234567) == "1.234.567"
    assert i18n.Formatter("en").money(500, "JPY") == "JP¥500"  # no minor unit
    assert i18n.Formatter("fi").percent(0.5) == "50,0\xa0%"
    at = datetime(2024, 12, 31, 23, 30, tzinfo=UTC)
    assert "1.1.2025" in i18n.Formatter("fi", "Europe/Helsinki").datetime(at)  # already next day in Helsinki
    assert "31" in i18n.Formatter("en", "UTC").date(at)
    assert i18n.Formatter("en").money(None, "EUR") == "–"


def test_language_negotiation() -> None:
    assert i18n.negotiate("fi-FI,fi;q=0.9,en;q=0.8") == "fi"
    assert i18n.negotiate("de-DE,lv;q=0.5") == "lv"
    assert i18n.negotiate("de-DE") == "en"
    assert i18n.supported("sv_SE") == "sv" and i18n.supported("xx") == "en"


def test_service_refusals_are_shown_in_the_users_language(client, session_factory, workspace) -> None:
    """A service refusal (a code with parameters) is worded by the page in the user's language; the API keeps the
    English message with the code."""
    from tests.adapters.test_web_imports import upload
    from tests.adapters.test_web_shell import csrf_of, login, make_user

    client.cookies.clear()
    login(client, make_user(session_factory, workspace.id, "admin", language="fi"))
    page = client.get(f"/app/w/{workspace.slug}/companies", params={"country": "XQ"})
    error = re.search(r'<span class="error" id="company-country-error">(.*?)</span>', page.text)
    assert error and error.group(1) == "Anna maa sen kaksikirjaimisena ISO-koodina, esimerkiksi FI tai SE."
    empty = upload(client, workspace, b"")
    assert empty.status_code == 422 and "Tiedosto on tyhjä." in empty.text and "is empty" not in empty.text

    client.cookies.clear()
    login(client, make_user(session_factory, workspace.id, "sales", language="sv"))
    job_url = upload(client, workspace, "email,Email Address,name\na@example.com,b@example.com,Ann\n").headers[
        "location"
    ]
    token = csrf_of(client.get(job_url).text)
    twice = {"csrf_token": token, "column_0": "email", "column_1": "email", "column_2": "ignore"}
    res = client.post(f"{job_url}/start", data=twice)
    assert res.status_code == 422
    assert "Kolumnen ”email” är redan mappad till det här fältet." in res.text and "already mapped" not in res.text
    none = {"csrf_token": token, "column_0": "ignore", "column_1": "ignore", "column_2": "ignore"}
    res = client.post(f"{job_url}/start", data=none)
    assert res.status_code == 422 and "Mappa en kolumn till E-post" in res.text
    bad_date = client.get(f"/app/w/{workspace.slug}/reports/spend", params={"from": "1.2.2025"})
    assert "Ange ett datum som ÅÅÅÅ-MM-DD" in bad_date.text

    api = client.post("/api/v1/contacts", json={"email": "x@example.com", "country": "XQ"}, headers=workspace.auth())
    assert api.status_code == 422
    body = api.json()
    assert "invalid_country" in str(body) and "is not an ISO 3166-1 alpha-2 country code" in str(body)
