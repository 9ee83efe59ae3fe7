"""Report pages: attribution side by side, spend and ROI, cohorts, CLV and experiments, each with its chart, table and
CSV download (formulas neutralised); every role reads them, only editors fit the CLV model; other workspaces 404."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta

import pytest

from suppilo.db.base import utcnow
from tests.adapters.test_web_shell import csrf_of, login, make_user
from tests.adapters.web_settle import settled

FORMULA = '=HYPERLINK("http://evil.example","x")'


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    yield
    client.cookies.clear()


def rows_of(res) -> list[list[str]]:
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    assert "attachment" in res.headers["content-disposition"]
    return list(csv.reader(io.StringIO(res.content.decode("utf-8-sig"))))


def seed(session_factory, workspace_id: int) -> None:
    """Two customers from two channels (one with a formula as its campaign), spend, and stage changes."""
    from suppilo.analytics import service as analytics
    from suppilo.analytics.schemas import SpendCreate
    from suppilo.commerce.models import Order
    from suppilo.contacts import service as contacts_service
    from suppilo.contacts.models import Contact
    from suppilo.events.models import Touch

    now = utcnow()
    with session_factory() as s:
        for i, (channel, campaign) in enumerate((("email", FORMULA), ("paid_search", "spring"))):
            c = Contact(
                workspace_id=workspace_id,
                email=f"buyer{i}@example.com",
                first_touch_channel=channel,
                first_touch_campaign=campaign,
                region="Uusimaa",
                country="FI",
            )
            s.add(c)
            s.flush()
            contacts_service.move_contact_stage(s, workspace_id, c.id, "customer", reason="test", actor="test")
            s.add(
                Touch(
                    workspace_id=workspace_id,
                    contact_id=c.id,
                    occurred_at=now - timedelta(days=5),
                    channel=channel,
                    campaign=campaign,
                )
            )
            for k in range(2):
                s.add(
                    Order(
                        workspace_id=workspace_id,
                        contact_id=c.id,
                        external_id=f"o-{i}-{k}",
                        status="completed",
                        currency="EUR",
                        total_minor=10000 + 5000 * i,
                        placed_at=now - timedelta(days=4 - k),
                    )
                )
        analytics.add_spend(
            s,
            workspace_id,
            SpendCreate(date=date.today(), channel="email", campaign=FORMULA, amount_minor=2500, currency="EUR"),
        )
        s.commit()


def test_attribution_and_spend_pages_with_charts_tables_and_csv(client, session_factory, workspace) -> None:
    seed(session_factory, workspace.id)
    login(client, make_user(session_factory, workspace.id, "analyst"))
    base = f"/app/w/{workspace.slug}/reports"
    page = settled(client, f"{base}/attribution")
    assert page.status_code == 200
    assert "<svg" in page.text and 'id="attribution-table"' in page.text and "Markov" in page.text
    assert "paid_search" in page.text and "2 conversions" in page.text
    rows = rows_of(client.get(f"{base}/attribution.csv"))
    assert rows[0][0] == "channel" and "markov_conversions" in rows[0]
    assert {r[0] for r in rows[1:]} == {"email", "paid_search"}
    # By campaign: the formula is text on the page and neutralised in the CSV.
    page = settled(client, f"{base}/attribution", params={"level": "campaign"})
    assert "=HYPERLINK(&#34;" in page.text or "=HYPERLINK(&quot;" in page.text
    rows = rows_of(client.get(f"{base}/attribution.csv", params={"level": "campaign"}))
    assert "'" + FORMULA in [r[0] for r in rows] and FORMULA not in [r[0] for r in rows]
    spend = settled(client, f"{base}/spend")
    assert spend.status_code == 200 and 'id="spend-table"' in spend.text and "<svg" in spend.text
    assert "€25.00" in spend.text and "Uusimaa" in spend.text
    rows = rows_of(client.get(f"{base}/spend.csv", params={"group_by": "campaign"}))
    assert rows[0][:3] == ["channel", "campaign", "spend_minor"]
    assert rows[1][:3] == ["email", "'" + FORMULA, "2500"]
    # A bad date is explained, with the typed value kept.
    bad = client.get(f"{base}/spend", params={"from": "2024-13-01"})
    assert bad.status_code == 200 and "YYYY-MM-DD" in bad.text and 'value="2024-13-01"' in bad.text
    assert client.get(f"{base}/spend.csv", params={"from": "nope"}).status_code == 422


def test_cohorts_clv_and_roles(client, session_factory, workspace) -> None:
    seed(session_factory, workspace.id)
    login(client, make_user(session_factory, workspace.id, "analyst"))
    base = f"/app/w/{workspace.slug}/reports"
    page = client.get(f"{base}/cohorts")
    assert page.status_code == 200 and 'id="cohort-table"' in page.text and "<svg" in page.text
    rows = rows_of(client.get(f"{base}/cohorts.csv"))
    this_month = datetime.now(UTC)
    assert rows[0][:3] == ["cohort", "customers", "retention_m0"]
    assert any(r[1] == "2" for r in rows[1:]) or sum(int(r[1]) for r in rows[1:]) == 2, (rows, this_month)
    clv = client.get(f"{base}/clv")
    assert 'id="no-fit"' in clv.text and 'id="fit-clv"' not in clv.text  # analysts read, do not fit
    token = csrf_of(client.get(f"/app/w/{workspace.slug}/contacts").text)
    assert client.post(f"{base}/clv/fit", data={"csrf_token": token}).status_code == 403
    assert client.get(f"{base}/clv.csv").status_code == 404
    client.cookies.clear()
    login(client, make_user(session_factory, workspace.id, "marketer"))
    page = client.get(f"{base}/clv")
    token = csrf_of(page.text)
    assert client.post(f"{base}/clv/fit").status_code == 403  # no CSRF token
    fitted = client.post(f"{base}/clv/fit", data={"csrf_token": token})
    assert fitted.status_code == 200 and 'id="clv-customers">2<' in fitted.text and 'id="tier-table"' in fitted.text
    rows = rows_of(client.get(f"{base}/clv.csv"))
    assert rows[0] == ["parameter", "value"] and ["customers", "2"] in rows


def test_experiments_calculator_and_csv(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "analyst"))
    base = f"/app/w/{workspace.slug}/reports"
    page = client.get(f"{base}/experiments")
    assert page.status_code == 200 and 'id="no-experiments"' in page.text
    params = {
        "name0": "A",
        "conversions0": "100",
        "trials0": "1000",
        "name1": "<b>B</b>",
        "conversions1": "150",
        "trials1": "1000",
    }
    page = client.get(f"{base}/experiments", params=params)
    assert page.status_code == 200 and "experiment-table" in page.text and "&lt;b&gt;B&lt;/b&gt;" in page.text
    assert "<b>B</b>" not in page.text and "<svg" in page.text
    rows = rows_of(client.get(f"{base}/experiments.csv", params=params))
    by_arm = {r[1]: r for r in rows[1:]}
    assert by_arm["<b>B</b>"][10] == "True" and float(by_arm["<b>B</b>"][7]) < 0.01
    bad = client.get(f"{base}/experiments", params={"name0": "A", "conversions0": "x", "trials0": "10"})
    assert "Conversions and trials are whole numbers." in bad.text and 'value="x"' in bad.text
    bad = client.get(f"{base}/experiments", params={**params, "conversions1": "2000"})
    assert "Conversions (2000) cannot exceed trials (1000)." in bad.text


def test_reports_of_another_workspace_are_not_found(client, session_factory, workspace, other_workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "analyst"))
    for name in ("attribution", "spend", "cohorts", "clv", "experiments"):
        assert client.get(f"/app/w/{other_workspace.slug}/reports/{name}").status_code == 404
        assert client.get(f"/app/w/{other_workspace.slug}/reports/{name}.csv").status_code == 404
    # The analyst's own pages list every report and the navigation offers no settings.
    page = client.get(f"/app/w/{workspace.slug}/reports/attribution")
    assert "/reports/experiments" in page.text and "/settings" not in page.text


def test_a_journey_with_a_holdout_is_an_experiment(client, session_factory, workspace) -> None:
    from suppilo.journeys import service as journeys_service
    from tests.integration.journeys.support import contact, enrollments, event, install_templates, journey, tick

    install_templates(session_factory, workspace.id)
    definition = {
        "name": "Welcome test <b>1</b>",
        "trigger": {"type": "manual"},
        "goal": {"event": "Order Completed", "window_days": 14},
        "start": "split",
        "steps": {
            "split": {
                "type": "split",
                "variants": [{"name": "mail", "weight": 1, "next": "hello"}],
                "holdout_percent": 30,
            },
            "hello": {"type": "send_email", "template": "welcome"},
        },
    }
    jid = journey(session_factory, workspace.id, definition)
    ids = [contact(session_factory, workspace.id, f"x{i}@example.com") for i in range(60)]
    with session_factory() as s:
        journeys_service.enrol_contacts(s, workspace.id, jid, ids, key="x")
        s.commit()
    tick(session_factory)
    for r in enrollments(session_factory, jid)[:12]:
        event(session_factory, workspace.id, r.contact_id, "Order Completed")
    tick(session_factory)
    with session_factory() as s:
        conv = journeys_service.report(s, workspace.id, jid)["conversion"]
    login(client, make_user(session_factory, workspace.id, "analyst"))
    base = f"/app/w/{workspace.slug}/reports"
    page = client.get(f"{base}/experiments")
    assert page.status_code == 200 and 'id="no-experiments"' not in page.text
    assert "Welcome test &lt;b&gt;1&lt;/b&gt;" in page.text and "experiment-table" in page.text
    rows = rows_of(client.get(f"{base}/experiments.csv"))
    by_arm = {r[1]: r for r in rows[1:] if r[0] == "Welcome test <b>1</b>"}
    assert set(by_arm) == {"holdout", "treatment"}
    assert int(by_arm["holdout"][3]) == conv["holdout"]["contacts"]
    assert int(by_arm["treatment"][2]) == conv["treatment"]["converted"]
    assert by_arm["treatment"][7] != "" and by_arm["holdout"][7] == ""  # the control has no test against itself


def test_cohort_heatmaps_scale_to_later_months_and_cover_events(client, session_factory, workspace) -> None:
    import re

    from suppilo.adapters.web.routes.reports import heat

    # Month 0 is always 100 %: the colour scale is set by the best later month, so 30 % shows at full strength.
    cells = heat([[1.0, 0.3, 0.15], [1.0, 0.0]])
    assert [c["strength"] for c in cells[0]] == [1.0, 1.0, 0.53] and cells[1][1]["strength"] == 0.06
    assert cells[0][1]["light_text"] and not cells[0][2]["light_text"]
    assert heat([]) == [] and heat([[None]])[0][0]["strength"] == 0.06

    seed(session_factory, workspace.id)
    login(client, make_user(session_factory, workspace.id, "analyst"))
    base = f"/app/w/{workspace.slug}/reports"
    page = client.get(f"{base}/cohorts").text
    assert 'id="cohort-heatmap"' in page and 'id="repeat-heatmap"' in page
    assert re.search(r'class="heat-value"[^>]*>100', page)  # every cohort's first month, labelled in its cell
    assert 'id="show-event-cohorts"' in page and 'id="event-cohort-table"' not in page
    with session_factory() as s:
        from sqlalchemy import select

        from suppilo.contacts.models import Contact
        from suppilo.events.models import Event

        cid = s.scalar(select(Contact.id).where(Contact.workspace_id == workspace.id).limit(1))
        s.add(
            Event(
                workspace_id=workspace.id,
                contact_id=cid,
                kind="track",
                name="Visit",
                occurred_at=utcnow(),
                received_at=utcnow(),
                message_id=f"heat-{workspace.id}",
                properties={},
                context={},
            )
        )
        s.commit()
    page = client.get(f"{base}/cohorts?events=1").text
    assert 'id="event-cohort-heatmap"' in page and 'id="event-cohort-table"' in page
    assert "Engine:" in page and re.search(r'class="heat-value"[^>]*>100', page.split('id="event-cohorts"')[1])


def test_a_reversed_period_is_refused_beside_its_field_in_the_users_language(
    client, session_factory, workspace
) -> None:
    """'From' after 'to' on a report page: the Finnish user reads the refusal in Finnish beside the From field, the
    dates they typed stay in the form, and nothing is computed; the API keeps the English message with the code."""
    import re

    seed(session_factory, workspace.id)
    login(client, make_user(session_factory, workspace.id, "analyst", language="fi"))
    base = f"/app/w/{workspace.slug}/reports"
    finnish = "Alkupäivä 2026-03-10 on myöhemmin kuin loppupäivä 2026-02-01."
    reversed_ = {"from": "2026-03-10", "to": "2026-02-01"}
    for name, extra in (("attribution", {}), ("spend", {}), ("cohorts", {"events": "1"})):
        page = client.get(f"{base}/{name}", params={**reversed_, **extra})
        assert page.status_code == 200, name
        error = re.search(r'<span class="error" id="from-error">(.*?)</span>', page.text)
        assert error and error.group(1) == finnish, (name, error)
        assert 'id="from" name="from" type="date" value="2026-03-10" aria-invalid="true"' in page.text
        assert 'value="2026-02-01"' in page.text
        assert "is after" not in page.text and "data-computing" not in page.text, name
    # Only 'from' given, later than today: the same refusal with today as the end.
    later = (utcnow().date() + timedelta(days=3)).isoformat()
    page = client.get(f"{base}/spend", params={"from": later})
    assert f"Alkupäivä {later} on myöhemmin kuin loppupäivä {utcnow().date().isoformat()}." in page.text
    download = client.get(f"{base}/attribution.csv", params=reversed_)
    assert download.status_code == 422 and finnish in download.text
    # Swedish, and a correct period still shows its figures.
    client.cookies.clear()
    login(client, make_user(session_factory, workspace.id, "analyst", language="sv"))
    page = client.get(f"{base}/attribution", params=reversed_)
    assert "Startdatumet 2026-03-10 är senare än slutdatumet 2026-02-01." in page.text
    today = utcnow().date()
    ok = settled(client, f"{base}/spend", params={"from": (today - timedelta(days=30)).isoformat(), "to": str(today)})
    assert 'id="from-error"' not in ok.text and 'id="spend-table"' in ok.text

    api = client.get("/api/v1/reports/attribution", params=reversed_, headers=workspace.auth())
    assert api.status_code == 422
    assert api.json()["error"]["code"] == "period_reversed" and "'from' (2026-03-10) is after" in api.text


def test_the_calculators_refusals_are_worded_beside_their_fields(client, session_factory, workspace) -> None:
    """The A/B calculator's refusals (its own checks and the service's) in the user's language, beside the arm's row
    or the control field, with what the user typed kept."""
    import re

    login(client, make_user(session_factory, workspace.id, "analyst", language="fi"))
    url = f"/app/w/{workspace.slug}/reports/experiments"

    def error_of(page, field: str) -> str | None:
        found = re.search(rf'<span class="error" id="{field}-error">(.*?)</span>', page.text)
        return found.group(1) if found else None

    # Row 0 left empty: the service's arm 1 is the form's row 2.
    arms = {"name1": "A", "conversions1": "10", "trials1": "100", "name2": "B", "conversions2": "120", "trials2": "100"}
    page = client.get(url, params=arms)
    assert error_of(page, "arm2") == "Konversioita (120) ei voi olla enemmän kuin kokeiluja (100)."
    assert error_of(page, "arm1") is None and 'value="120"' in page.text and "experiment-table" not in page.text
    page = client.get(url, params={**arms, "conversions2": "12", "control": "C"})
    assert error_of(page, "control") == "”C” ei ole mikään haaroista; anna verrokiksi jonkin haaran nimi."
    assert 'id="control" name="control" type="text" value="C" aria-invalid="true"' in page.text
    page = client.get(url, params={**arms, "conversions2": "12", "name2": "A"})
    assert "Kahden haaran nimi on ”A”; anna jokaiselle haaralle oma nimi." in page.text
    page = client.get(url, params={"name0": "A", "conversions0": "x", "trials0": "10"})
    assert error_of(page, "arm0") == "Konversiot ja kokeilut ovat kokonaislukuja." and 'value="x"' in page.text
    page = client.get(url, params={"name0": "A", "conversions0": "1", "trials0": "10"})
    assert "Anna vähintään kaksi haaraa." in page.text
    download = client.get(f"{url}.csv", params={**arms, "conversions2": "12", "control": "C"})
    assert download.status_code == 422 and "ei ole mikään haaroista" in download.text


def test_a_missing_exchange_rate_is_explained_in_the_users_language(client, session_factory, workspace) -> None:
    """An order in a currency without exchange rates: the spend and attribution pages say which rate is missing, in
    Swedish for a Swedish user (the API answers the English message with the code)."""
    seed(session_factory, workspace.id)
    order = {
        "external_id": "sek-1",
        "email": "sek@example.se",
        "placed_at": utcnow().isoformat(),
        "currency": "SEK",
        "total_minor": 49900,
    }
    assert client.post("/api/v1/orders", json=order, headers=workspace.auth()).status_code == 201
    login(client, make_user(session_factory, workspace.id, "analyst", language="sv"))
    base = f"/app/w/{workspace.slug}/reports"
    day = utcnow().date().isoformat()
    swedish = f"Det finns ingen växelkurs från SEK till EUR den {day} eller tidigare: importera kurser till EUR."
    period = {"from": (utcnow().date() - timedelta(days=10)).isoformat(), "to": day}
    for name in ("spend", "attribution"):
        page = settled(client, f"{base}/{name}", params=period)
        assert f'<p class="error" role="alert">{swedish}</p>' in page.text, name
        assert "no exchange rate" not in page.text
    api = client.get("/api/v1/reports/spend", params=period, headers=workspace.auth())
    assert api.status_code == 422 and api.json()["error"]["code"] == "missing_exchange_rate"
