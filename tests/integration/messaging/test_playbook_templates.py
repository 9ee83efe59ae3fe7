"""The default templates of the journey playbooks, rendered for real contacts in every shipped language, with and
without their optional context: language-specific text, personalised values, and nothing left unrendered."""

from __future__ import annotations

from typing import Any

import pytest

from suppilo.contacts import service as contacts_service
from suppilo.contacts.schemas import ContactCreate
from suppilo.messaging import service
from suppilo.messaging.templates import RenderedMessage

LANGUAGES = ("en", "sv", "fi", "da", "lv")
PLAYBOOK_TEMPLATES = {
    "nurture_interest": "marketing",
    "onboarding": "marketing",
    "cross_sell": "marketing",
    "referral_request": "marketing",
    "sales_handoff_ack": "transactional",
}
WEBSITE = "https://shop.example.fi"  # the test workspace's first site domain
NBSP = "\xa0"
# What the sender fills in for every message.
URLS = {"unsubscribe_url": "https://mail.example.fi/u/t1", "preferences_url": "https://mail.example.fi/p/t1"}


def _contact(session, workspace_id: int, language: str, first_name: str | None = "Aino") -> int:
    data = ContactCreate(
        email=f"{language}-{first_name or 'anon'}@example.com", first_name=first_name, language=language
    )
    contact = contacts_service.create_contact(session, workspace_id, data)
    session.flush()
    return contact.id


def _render(session, workspace_id: int, key: str, language: str, extra: dict[str, Any]) -> RenderedMessage:
    """Render in the contact's own language (no explicit language: the contact's choice picks the variant)."""
    contact_id = _contact(session, workspace_id, language)
    rendered = service.render_for_contact(session, workspace_id, key, contact_id, extra={**URLS, **extra})
    assert rendered.language == language
    assert rendered.template_key == key
    _assert_clean(rendered)
    return rendered


def _assert_clean(rendered: RenderedMessage) -> None:
    for part in (rendered.subject, rendered.preheader, rendered.html, rendered.text):
        for leftover in ("None", "{{", "}}", "{%", "%}", "[[", "]]", "Undefined"):
            assert leftover not in part, (leftover, part)
    assert rendered.subject.strip() and rendered.text.strip()
    assert 'href=""' not in rendered.html  # every link has a target


def _assert_contains(rendered: RenderedMessage, subject: list[str], body: list[str]) -> None:
    for needle in subject:
        assert needle in rendered.subject, (needle, rendered.subject)
    for needle in body:
        assert needle in rendered.text, (needle, rendered.text)


def test_playbook_templates_are_installed_published_and_valid(session, workspace) -> None:
    templates = {t.key: t for t in service.list_templates(session, workspace.id)}
    for key, kind in PLAYBOOK_TEMPLATES.items():
        template = templates[key]
        assert template.kind == kind
        assert template.status == "published"
        assert {v.language for v in template.variants} == set(LANGUAGES)
        assert service.template_issues(session, template) == []
        assert service.publish_issues(session, template) == []
        for variant in template.variants:
            assert f'<html lang="{variant.language}">' in variant.html


def test_every_template_a_playbook_sends_is_a_default_template() -> None:
    from suppilo.journeys.playbooks import PLAYBOOKS

    defaults = {spec["key"] for spec in service.default_templates()}
    sent = {
        step["template"]
        for playbook in PLAYBOOKS.values()
        for step in playbook.build({})["steps"].values()
        if step["type"] == "send_email"
    }
    assert set(PLAYBOOK_TEMPLATES) <= sent
    assert sent <= defaults


# --- nurture_interest --------------------------------------------------------------------------------------------

NURTURE_WITH_INTEREST = {
    "en": (["A few tips on tents"], ["Hello Aino,", "You recently looked into tents", "your question about tents"]),
    "sv": (["Några tips om tents"], ["Hej Aino!", "Du har nyligen tittat på tents", "din fråga om tents"]),
    "fi": (["Hyödyllisiä vinkkejä: tents"], ["Hei Aino!", "tutustunut aiheeseen ”tents”", "aiheesta ”tents”"]),
    "da": (["Et par tips om tents"], ["Hej Aino!", "Du har for nylig kigget på tents", "dit spørgsmål om tents"]),
    "lv": (["Noderīgi padomi: tents"], ["Sveiki, Aino!", "interesējāties par tēmu “tents”", "par tēmu “tents”"]),
}
NURTURE_GENERAL = {
    "en": (["A few tips to get you started"], ["Ask us anything", "Visit our website"]),
    "sv": (["Några tips för att komma igång"], ["Fråga oss vad som helst", "Besök vår webbplats"]),
    "fi": (["Muutama vinkki alkuun"], ["Kysy meiltä mitä tahansa", "Käy verkkosivuillamme"]),
    "da": (["Et par tips til at komme godt i gang"], ["Spørg os om hvad som helst", "Besøg vores hjemmeside"]),
    "lv": (["Daži padomi, ar ko sākt"], ["Jautājiet mums jebko", "Apmeklēt mūsu vietni"]),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_nurture_interest_is_about_the_interest(session, workspace, language) -> None:
    rendered = _render(session, workspace.id, "nurture_interest", language, {"message": {"interest": " tents "}})
    subject, body = NURTURE_WITH_INTEREST[language]
    _assert_contains(rendered, subject, [*body, f"({WEBSITE})"])
    assert "tents" in rendered.preheader
    assert f'href="{WEBSITE}"' in rendered.html
    assert rendered.kind == "marketing"


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("extra", [{}, {"message": {"interest": "General"}}, {"message": {"interest": "  "}}])
def test_nurture_interest_without_an_interest_gives_general_tips(session, workspace, language, extra) -> None:
    rendered = _render(session, workspace.id, "nurture_interest", language, extra)
    subject, body = NURTURE_GENERAL[language]
    _assert_contains(rendered, subject, [*body, f"({WEBSITE})"])
    assert rendered.subject == subject[0]
    assert "General" not in rendered.text and "”" not in rendered.text and "“" not in rendered.text


# --- onboarding ----------------------------------------------------------------------------------------------------

ORDER = {
    "number": "PO-2001",
    "placed_at": "2024-05-01T21:30:00+00:00",  # already 2 May in Helsinki, the workspace's zone
    "currency": "EUR",
    "total_minor": 25900,
    "lines": [
        {"name": "Vaellus 2 tent", "quantity": 1, "unit_price_minor": 19900},
        {"name": "Trail mat", "quantity": 1, "unit_price_minor": 6000},
    ],
}
ONBOARDING_WITH_ORDER = {
    "en": ["Welcome aboard, Aino!", "your order PO-2001 on May 2, 2024", "Vaellus 2 tent and the rest of your order"],
    "sv": ["Välkommen som kund, Aino!", "din beställning PO-2001 den 2 maj 2024", "Vaellus 2 tent och resten av"],
    "fi": [
        "Tervetuloa asiakkaaksemme, Aino!",
        "tilauksestasi PO-2001, jonka teit 2. toukokuuta 2024",
        "tuotteesta Vaellus 2 tent ja muusta tilauksestasi",
    ],
    "da": ["Velkommen som kunde, Aino!", "din ordre PO-2001 den 2. maj 2024", "Vaellus 2 tent og resten af din ordre"],
    "lv": ["pulkā, Aino!", "pasūtījumu PO-2001 (2024. gada 2. maijs)", "preci “Vaellus 2 tent” un pārējo pasūtījumu"],
}
ONBOARDING_WITHOUT_ORDER = {
    "en": (
        "How to get the most out of your purchase",
        ["your first order.", "out of your purchase:", "reply to this email"],
    ),
    "sv": (
        "Så får du ut det mesta av ditt köp",
        ["din första beställning.", "det mesta av ditt köp:", "Svara bara på det här mejlet"],
    ),
    "fi": (
        "Näin saat ostoksestasi kaiken irti",
        ["ensimmäisestä tilauksestasi.", "saat ostoksestasi kaiken irti:", "Vastaa vain tähän viestiin"],
    ),
    "da": (
        "Sådan får du mest ud af dit køb",
        ["din første ordre.", "mest ud af dit køb:", "Svar blot på denne e-mail"],
    ),
    "lv": (
        "Kā pilnībā izmantot savu pirkumu",
        ["jūsu pirmo pasūtījumu.", "izmantot savu pirkumu:", "atbildiet uz šo e-pastu"],
    ),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_onboarding_names_the_order_and_its_product(session, workspace, language) -> None:
    rendered = _render(session, workspace.id, "onboarding", language, {"order": ORDER})
    subject = ONBOARDING_WITHOUT_ORDER[language][0]
    _assert_contains(rendered, [subject], ONBOARDING_WITH_ORDER[language])
    assert "Vaellus 2 tent" in rendered.preheader
    assert "1. " in rendered.text and "3. " in rendered.text  # the numbered tips


@pytest.mark.parametrize("language", LANGUAGES)
def test_onboarding_reads_well_without_an_order(session, workspace, language) -> None:
    rendered = _render(session, workspace.id, "onboarding", language, {})
    subject, body = ONBOARDING_WITHOUT_ORDER[language]
    _assert_contains(rendered, [subject], body)
    assert "PO-" not in rendered.text
    # One line and no "rest of the order" clause when a single product was bought.
    single = {**ORDER, "lines": ORDER["lines"][:1]}
    one = service.render_for_contact(
        session,
        workspace.id,
        "onboarding",
        _contact(session, workspace.id, language, "Ville"),
        extra={**URLS, "order": single},
    )
    _assert_clean(one)
    assert "Vaellus 2 tent" in one.text
    rest = ONBOARDING_WITH_ORDER[language][2].split("Vaellus 2 tent")[1].strip(" ”")
    assert rest not in one.text


# --- cross_sell ------------------------------------------------------------------------------------------------------

RECOMMENDATIONS = [
    {"name": "Trail mat", "url": "https://shop.example.fi/p/trail-mat", "price_minor": 4990, "currency": "EUR"},
    {"name": "Head torch", "url": "https://shop.example.fi/p/head-torch", "price_minor": 2500},  # order's currency
]
CROSS_SELL_WITH_PICKS = {
    "en": ("Customers who bought Vaellus 2 tent also bought these", ["€49.90", "SEK25.00", "See more products"]),
    "sv": (
        "Kunder som köpte Vaellus 2 tent köpte också de här",
        [f"49,90{NBSP}€", f"25,00{NBSP}kr", "Se fler produkter"],
    ),
    "fi": (
        "Tuotteen Vaellus 2 tent ostaneet ostivat myös näitä",
        [f"49,90{NBSP}€", f"25,00{NBSP}SEK", "Katso lisää tuotteita"],
    ),
    "da": (
        "Kunder, der købte Vaellus 2 tent, købte også disse",
        [f"49,90{NBSP}€", f"25,00{NBSP}SEK", "Se flere produkter"],
    ),
    "lv": (
        "Klienti, kas iegādājās “Vaellus 2 tent”, iegādājās arī šo",
        [f"49,90{NBSP}€", f"25,00{NBSP}SEK", "Skatīt citas preces"],
    ),
}
CROSS_SELL_FALLBACK = {
    "en": ("Picked for you at Test ", ["we hope you are enjoying", "take a look at what is new on our website"]),
    "sv": ("Utvalt för dig hos Test ", ["nöjd med ditt senaste köp", "ta en titt på nyheterna på vår webbplats"]),
    "fi": ("Poimintoja sinulle – Test ", ["tyytyväinen viimeisimpään ostokseesi", "katso uutuudet verkkosivuillamme"]),
    "da": ("Udvalgt til dig hos Test ", ["glad for dit seneste køb", "se nyhederne på vores hjemmeside"]),
    "lv": ("Izvēlēts tieši jums – Test ", ["pēdējais pirkums jums patīk", "apskatiet jaunumus mūsu vietnē"]),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_cross_sell_lists_two_recommendations_with_prices_and_links(session, workspace, language) -> None:
    extra = {"order": {**ORDER, "currency": "SEK"}, "recommendations": RECOMMENDATIONS}
    rendered = _render(session, workspace.id, "cross_sell", language, extra)
    subject, body = CROSS_SELL_WITH_PICKS[language]
    _assert_contains(rendered, [subject], body)
    assert "Trail mat (https://shop.example.fi/p/trail-mat)" in rendered.text
    assert "Head torch (https://shop.example.fi/p/head-torch)" in rendered.text
    assert rendered.text.index("Trail mat") < rendered.text.index("Head torch")
    assert CROSS_SELL_FALLBACK[language][1][1] not in rendered.text


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("extra", [{}, {"recommendations": []}])
def test_cross_sell_without_recommendations_points_to_the_website(session, workspace, language, extra) -> None:
    rendered = _render(session, workspace.id, "cross_sell", language, extra)
    subject, body = CROSS_SELL_FALLBACK[language]
    _assert_contains(rendered, [subject], [*body, f"({WEBSITE})"])
    assert "<table>" not in rendered.html
    # With an order but no recommendations the heading still names what was bought.
    with_order = service.render_for_contact(
        session,
        workspace.id,
        "cross_sell",
        _contact(session, workspace.id, language, "Ville"),
        extra={**URLS, "order": ORDER, "recommendations": []},
    )
    _assert_clean(with_order)
    assert "Vaellus 2 tent" in with_order.subject
    assert body[1] in with_order.text


# --- referral_request ------------------------------------------------------------------------------------------------

REFERRAL = {"url": "https://shop.example.fi/r/AINO10", "code": "AINO10", "reward": "10 € gift card"}
REFERRAL_FULL = {
    "en": (
        "Know someone who would love Test ",
        [
            "Hello Aino,",
            "As a thank-you, you get 10 € gift card.",
            "Share your personal link:",
            "enter your code at checkout:",
        ],
    ),
    "sv": (
        "Känner du någon som skulle gilla Test ",
        ["Hej Aino!", "Som tack får du 10 € gift card.", "Dela din personliga länk:", "ange din kod i kassan:"],
    ),
    "fi": (
        "Tunnetko jonkun, joka pitäisi Test ",
        [
            "Hei Aino!",
            "Kiitokseksi saat palkkion: 10 € gift card.",
            "Jaa henkilökohtainen linkkisi:",
            "syöttää koodisi kassalla:",
        ],
    ),
    "da": (
        "Kender du nogen, der ville elske Test ",
        ["Hej Aino!", "Som tak får du 10 € gift card.", "Del dit personlige link:", "indtaste din kode ved kassen:"],
    ),
    "lv": (
        "Vai pazīstat kādu, kam patiktu Test ",
        [
            "Sveiki, Aino!",
            "Pateicībā jūs saņemsiet balvu: 10 € gift card.",
            "Dalieties ar savu personīgo saiti:",
            "ievadīt jūsu kodu",
        ],
    ),
}
REFERRAL_BARE = {
    "en": "Just send them our address:",
    "sv": "Skicka bara vår adress:",
    "fi": "Lähetä hänelle vain osoitteemme:",
    "da": "Send dem blot vores adresse:",
    "lv": "Vienkārši nosūtiet mūsu adresi:",
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_referral_request_shows_link_code_and_reward(session, workspace, language) -> None:
    rendered = _render(session, workspace.id, "referral_request", language, {"referral": REFERRAL})
    subject, body = REFERRAL_FULL[language]
    _assert_contains(rendered, [subject], [*body, "https://shop.example.fi/r/AINO10", "\nAINO10\n"])
    assert "10 € gift card" in rendered.preheader
    assert f'href="{REFERRAL["url"]}"' in rendered.html
    assert REFERRAL_BARE[language] not in rendered.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_referral_request_without_referral_data_shares_the_website(session, workspace, language) -> None:
    rendered = _render(session, workspace.id, "referral_request", language, {})
    subject, body = REFERRAL_FULL[language]
    _assert_contains(rendered, [subject], [body[0], REFERRAL_BARE[language], WEBSITE])
    for absent in body[1:]:
        assert absent not in rendered.text
    assert "/r/" not in rendered.text


# --- sales_handoff_ack ---------------------------------------------------------------------------------------------

HANDOFF_4_HOURS = {
    "en": ("we will be in touch within 4 hours", "You will hear from Mikko Saari at Test "),
    "sv": ("vi hör av oss inom 4 timmar", "Du blir kontaktad av Mikko Saari på Test "),
    "fi": ("otamme yhteyttä 4 tunnin kuluessa", "Sinuun ottaa yhteyttä 4 tunnin kuluessa Mikko Saari, joka"),
    "da": ("vi kontakter dig inden for 4 timer", "Du bliver kontaktet af Mikko Saari hos Test "),
    "lv": ("sazināsimies ar jums 4 stundu laikā", "4 stundu laikā ar jums sazināsies Mikko Saari no Test "),
}
HANDOFF_BARE = {
    "en": ("we will be in touch shortly", "You will hear from our team at Test "),
    "sv": ("vi hör av oss inom kort", "Du blir kontaktad av vårt team på Test "),
    "fi": ("otamme yhteyttä pian", "Sinuun ottaa yhteyttä pian tiimimme, joka"),
    "da": ("vi kontakter dig snarest", "Du bliver kontaktet af vores team hos Test "),
    "lv": ("sazināsimies ar jums drīzumā", "Drīzumā ar jums sazināsies mūsu komanda no Test "),
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_sales_handoff_ack_names_the_owner_and_the_response_time(session, workspace, language) -> None:
    extra = {"message": {"owner_name": "Mikko Saari", "response_hours": 4, "journey": "Hand-off to sales"}}
    rendered = _render(session, workspace.id, "sales_handoff_ack", language, extra)
    subject, body = HANDOFF_4_HOURS[language]
    _assert_contains(rendered, [subject], [body])
    assert rendered.kind == "transactional"
    assert "unsubscribe" not in rendered.html.lower()


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("extra", [{}, {"message": {"response_hours": "soon"}}, {"message": {"response_hours": 0}}])
def test_sales_handoff_ack_defaults_to_our_team_and_soon(session, workspace, language, extra) -> None:
    rendered = _render(session, workspace.id, "sales_handoff_ack", language, extra)
    subject, body = HANDOFF_BARE[language]
    _assert_contains(rendered, [subject], [body])


@pytest.mark.parametrize(
    ("language", "hours", "phrase"),
    [
        ("en", 1, "within 1 hour"),
        ("en", 24, "within 24 hours"),
        ("sv", 1, "inom 1 timme"),
        ("sv", 2, "inom 2 timmar"),
        ("da", 1, "inden for 1 time"),
        ("da", 48, "inden for 48 timer"),
        ("fi", 1, "1 tunnin kuluessa"),
        ("fi", 24, "24 tunnin kuluessa"),
        ("lv", 1, "1 stundas laikā"),
        ("lv", 21, "21 stundas laikā"),
        ("lv", 11, "11 stundu laikā"),
        ("lv", 24, "24 stundu laikā"),
    ],
)
def test_sales_handoff_ack_hours_agree_in_number(session, workspace, language, hours, phrase) -> None:
    rendered = _render(session, workspace.id, "sales_handoff_ack", language, {"message": {"response_hours": hours}})
    assert phrase in rendered.subject
    assert phrase in rendered.text or phrase[0].upper() + phrase[1:] in rendered.text


# --- all of them -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(PLAYBOOK_TEMPLATES))
@pytest.mark.parametrize("language", LANGUAGES)
def test_a_contact_without_a_name_gets_a_clean_greeting(session, workspace, key, language) -> None:
    contact_id = _contact(session, workspace.id, language, first_name=None)
    rendered = service.render_for_contact(session, workspace.id, key, contact_id, extra=URLS)
    _assert_clean(rendered)
    for broken in (" ,", " !", "Hei !", "Hej ,", ", !", "Sveiki, !"):
        assert broken not in rendered.text, (broken, rendered.text)
    if PLAYBOOK_TEMPLATES[key] == "marketing":
        assert "Mannerheimintie 1, 00100 Helsinki, Finland" in rendered.text


def test_onboarding_and_cross_sell_render_a_stored_order_as_the_journey_passes_it(session, workspace) -> None:
    from datetime import UTC, datetime

    from suppilo.commerce import service as commerce_service
    from suppilo.commerce.schemas import OrderCreate, OrderLineIn
    from suppilo.journeys.runner import commerce_context

    contact_id = _contact(session, workspace.id, "fi")
    commerce_service.upsert_order(
        session,
        workspace.id,
        OrderCreate(
            external_id="PO-3001",
            contact_id=contact_id,
            placed_at=datetime(2024, 5, 1, 21, 30, tzinfo=UTC),
            currency="EUR",
            lines=[
                OrderLineIn(sku="TENT-2", name="Vaellusteltta", unit_price_minor=19900),
                OrderLineIn(sku="MAT-1", quantity=2, unit_price_minor=3000),  # no name
            ],
        ),
    )
    session.flush()
    order = commerce_context(session, workspace.id, contact_id, "order")
    extra = {**URLS, "order": order, "message": {"journey": "Thank-you and onboarding", "step": "tips"}}
    onboarding = service.render_for_contact(session, workspace.id, "onboarding", contact_id, extra=extra)
    _assert_clean(onboarding)
    assert "tilauksestasi PO-3001, jonka teit 2. toukokuuta 2024" in onboarding.text
    assert "tuotteesta Vaellusteltta ja muusta tilauksestasi kaiken irti" in onboarding.text
    extra = {**URLS, "order": order, "recommendations": RECOMMENDATIONS}
    cross_sell = service.render_for_contact(session, workspace.id, "cross_sell", contact_id, extra=extra)
    _assert_clean(cross_sell)
    assert cross_sell.subject == "Tuotteen Vaellusteltta ostaneet ostivat myös näitä"
    assert f"Head torch (https://shop.example.fi/p/head-torch) 25,00{NBSP}€" in cross_sell.text
