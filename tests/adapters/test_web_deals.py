"""The deal page (amounts in the user's locale, BANT form with field errors that keep what was typed, tasks,
objections, activities, proposals with totals, the stage history), my tasks and overdue tasks, the forecast view
with its chart and CSV; stored script shown as text, other workspaces' deals 404, roles."""

from __future__ import annotations

import csv
import io
import re
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from suppilo.accounts import service as accounts
from suppilo.deals.models import Task
from tests.adapters.test_web_shell import csrf_of, login, make_user
from tests.adapters.web_settle import settled

SCRIPT = "<script>alert('deal')</script>"
ATTR = '" onmouseover="alert(1)" x="'


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    yield
    client.cookies.clear()


def _ok(res, code=200):
    assert res.status_code == code, res.text
    return res.json()


def deal(client, ws, **fields) -> dict:
    return _ok(client.post("/api/v1/deals", json=fields, headers=ws.auth()), 201)


def user_id(session_factory, email: str) -> int:
    with session_factory() as s:
        return accounts.get_user_by_email(s, email).id


def later(days: int = 2) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


def make_overdue(session_factory, task_id: int, hours: int = 3) -> None:
    with session_factory() as s:
        s.execute(update(Task).where(Task.id == task_id).values(due_at=datetime.now(UTC) - timedelta(hours=hours)))
        s.commit()


def test_deal_page_shows_everything_in_the_users_locale(client, session_factory, workspace) -> None:
    email = make_user(session_factory, workspace.id, "sales", language="fi", name="Sanna Myyjä")
    owner = user_id(session_factory, email)
    c = _ok(
        client.post(
            "/api/v1/contacts", json={"email": "ostaja@example.fi", "first_name": "Olli"}, headers=workspace.auth()
        ),
        201,
    )
    d = deal(
        client,
        workspace,
        name="Teltat " + SCRIPT,
        amount_minor=1234567,
        currency="EUR",
        owner_id=owner,
        contact_id=c["id"],
    )
    stages = {s["key"]: s["id"] for s in client.get("/api/v1/pipelines", headers=workspace.auth()).json()[0]["stages"]}
    _ok(client.post(f"/api/v1/deals/{d['id']}/move", json={"stage_id": stages["demo"]}, headers=workspace.auth()))
    _ok(
        client.post(
            f"/api/v1/deals/{d['id']}/objections",
            json={"text": "Too dear " + ATTR, "response": SCRIPT},
            headers=workspace.auth(),
        ),
        201,
    )
    _ok(
        client.post(
            "/api/v1/activities",
            json={"kind": "call", "body": "Soitettu " + SCRIPT, "deal_id": d["id"]},
            headers=workspace.auth(),
        ),
        201,
    )
    sku = f"TENT-{secrets.token_hex(3)}"
    _ok(
        client.post(
            "/api/v1/products",
            json={"sku": sku, "name": "Tunturiteltta", "price_minor": 45000, "currency": "EUR"},
            headers=workspace.auth(),
        ),
        201,
    )
    _ok(
        client.post(
            f"/api/v1/deals/{d['id']}/proposals",
            json={
                "title": "Tarjous",
                "valid_until": (datetime.now(UTC).date() + timedelta(days=30)).isoformat(),
                "discount_bp": 1000,
                "lines": [{"sku": sku, "quantity": 3}],
            },
            headers=workspace.auth(),
        ),
        201,
    )
    task = _ok(
        client.post(
            "/api/v1/tasks",
            json={"title": "Soita " + SCRIPT, "due_at": later(), "deal_id": d["id"], "owner_id": owner},
            headers=workspace.auth(),
        ),
        201,
    )
    late = _ok(
        client.post(
            "/api/v1/tasks",
            json={"title": "Myöhässä", "due_at": later(), "deal_id": d["id"], "owner_id": owner},
            headers=workspace.auth(),
        ),
        201,
    )
    make_overdue(session_factory, late["id"])
    login(client, email)
    res = client.get(f"/app/w/{workspace.slug}/deals/{d['id']}")
    assert res.status_code == 200
    html = res.text
    assert "12\xa0345,67\xa0€" in html  # Finnish money format
    assert 'id="deal-owner">Sanna Myyjä<' in html and "Olli" in html
    assert '<span class="badge stage" id="deal-stage">Demo</span>' in html
    # Proposal: 3 × 450 € = 1 350 €, 10 % off = 135 €, total 1 215 €.
    assert (
        "Tunturiteltta" in html and "1\xa0350,00\xa0€" in html and "135,00\xa0€" in html and "1\xa0215,00\xa0€" in html
    )
    # Stored script and attribute breakers are text.
    assert SCRIPT not in html and ATTR not in html
    assert "Teltat &lt;script&gt;" in html and "Too dear &#34; onmouseover=&#34;alert(1)&#34;" in html
    assert re.search(r'\son[a-z]+="', html) is None
    # The overdue task is marked, the other is not; both can be completed.
    row = html[html.index(f'id="task-{late["id"]}"') - 40 : html.index("</tr>", html.index(f'id="task-{late["id"]}"'))]
    assert 'class="overdue"' in row and "Myöhässä" in row
    row = html[html.index(f'id="task-{task["id"]}"') : html.index("</tr>", html.index(f'id="task-{task["id"]}"'))]
    assert "overdue" not in row
    # The stage history: opened, then moved to Demo.
    history = html[html.index('id="history-table"') : html.index("</table>", html.index('id="history-table"'))]
    assert history.count("<tr>") == 3 and "Demo" in history
    # The board links its card to this page.
    board = client.get(f"/app/w/{workspace.slug}/pipeline").text
    assert f'href="/app/w/{workspace.slug}/deals/{d["id"]}"' in board


def test_bant_form_saves_and_keeps_what_was_typed_on_errors(client, session_factory, workspace) -> None:
    d = deal(client, workspace, name="Skis", amount_minor=90000, currency="EUR")
    login(client, make_user(session_factory, workspace.id, "sales"))
    url = f"/app/w/{workspace.slug}/deals/{d['id']}"
    token = csrf_of(client.get(url).text)
    typed = {
        "csrf_token": token,
        "version": str(d["version"]),
        "budget": "12 000,5x",
        "budget_currency": "EUR",
        "authority": "Head of purchasing " + SCRIPT,
        "decision_maker": "yes",
        "need": "Rental fleet renewal",
        "timeline": "Before winter",
        "qualification_status": "qualified",
    }
    res = client.post(f"{url}/bant", data=typed)
    assert res.status_code == 422
    html = res.text
    assert 'id="bant-budget" name="budget" type="text" value="12 000,5x"' in html
    assert 'aria-invalid="true" aria-describedby="bant-budget-error"' in html
    assert "Give the budget as an amount such as 12000.50." in html
    assert "Head of purchasing &lt;script&gt;" in html and "Rental fleet renewal</textarea>" in html
    assert _ok(client.get(f"/api/v1/deals/{d['id']}", headers=workspace.auth()))["budget_minor"] is None
    # A budget without a currency is refused at the currency field.
    res = client.post(f"{url}/bant", data={**typed, "budget": "100", "budget_currency": ""})
    assert res.status_code == 422 and 'id="bant-currency-error"' in res.text
    # Unknown currency: the schema's message under the field.
    res = client.post(f"{url}/bant", data={**typed, "budget": "100", "budget_currency": "XXQ"})
    assert res.status_code == 422 and 'id="bant-currency-error"' in res.text
    res = client.post(f"{url}/bant", data={**typed, "budget": "12 000,50"}, follow_redirects=False)
    assert res.status_code == 303
    saved = _ok(client.get(f"/api/v1/deals/{d['id']}", headers=workspace.auth()))
    assert (
        saved["budget_minor"],
        saved["budget_currency"],
        saved["decision_maker"],
        saved["qualification_status"],
    ) == (1200050, "EUR", True, "qualified")
    page = client.get(res.headers["location"]).text
    assert "Qualification saved." in page and 'value="12000.50"' in page
    # The same form again carries the old version: refused with 409, the typed text kept.
    res = client.post(f"{url}/bant", data={**typed, "budget": "1", "need": "changed my mind"})
    assert res.status_code == 409 and 'id="bant-conflict"' in res.text and "changed my mind</textarea>" in res.text
    assert _ok(client.get(f"/api/v1/deals/{d['id']}", headers=workspace.auth()))["need"] == "Rental fleet renewal"
    assert client.post(f"{url}/bant", data={**typed, "csrf_token": ""}).status_code == 403


def test_tasks_objections_activities_and_proposals_from_the_deal_page(client, session_factory, workspace) -> None:
    d = deal(client, workspace, name="Kayaks", amount_minor=100, currency="EUR")
    sku = f"KAY-{secrets.token_hex(3)}"
    _ok(
        client.post(
            "/api/v1/products",
            json={"sku": sku, "name": "Kayak", "price_minor": 80000, "currency": "EUR"},
            headers=workspace.auth(),
        ),
        201,
    )
    email = make_user(session_factory, workspace.id, "sales")
    login(client, email)
    url = f"/app/w/{workspace.slug}/deals/{d['id']}"
    token = csrf_of(client.get(url).text)
    # A task due in the past is refused at the due field; the title stays.
    res = client.post(
        f"{url}/tasks", data={"csrf_token": token, "title": "Call back", "kind": "call", "due_at": "2020-01-01T10:00"}
    )
    assert res.status_code == 422 and "is in the past" in res.text and 'value="Call back"' in res.text
    res = client.post(
        f"{url}/tasks", data={"csrf_token": token, "title": "Call back", "kind": "call", "due_at": "soon"}
    )
    assert res.status_code == 422 and 'id="task-due-error"' in res.text
    due = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    res = client.post(
        f"{url}/tasks",
        data={
            "csrf_token": token,
            "title": "Call back",
            "kind": "call",
            "due_at": due,
            "owner_id": str(user_id(session_factory, email)),
        },
    )
    assert res.status_code == 200 and "Task added." in res.text
    tasks = _ok(client.get(f"/api/v1/tasks?owner_id={user_id(session_factory, email)}", headers=workspace.auth()))
    assert [t["title"] for t in tasks] == ["Call back"] and tasks[0]["deal_id"] == d["id"]
    res = client.post(
        f"/app/w/{workspace.slug}/tasks/{tasks[0]['id']}/complete", data={"csrf_token": token, "next": url}
    )
    assert res.status_code == 200 and "Done" in res.text
    assert _ok(client.get(f"/api/v1/tasks/{tasks[0]['id']}", headers=workspace.auth()))["done_at"] is not None
    # Objections and activities.
    res = client.post(f"{url}/objections", data={"csrf_token": token, "text": "   ", "response": ""})
    assert res.status_code == 422 and 'id="objection-text-error"' in res.text
    res = client.post(
        f"{url}/objections", data={"csrf_token": token, "text": "Needs board approval", "response": "We send a memo"}
    )
    assert "Objection logged." in res.text and "Needs board approval" in res.text
    res = client.post(
        f"{url}/activities", data={"csrf_token": token, "kind": "meeting", "body": "Demo at their office"}
    )
    assert "Activity logged." in res.text and "Demo at their office" in res.text
    # Proposals: an unknown SKU is refused at its line; then create, send, accept.
    valid = (datetime.now(UTC).date() + timedelta(days=14)).isoformat()
    bad = {
        "csrf_token": token,
        "title": "Offer",
        "valid_until": valid,
        "discount_percent": "5",
        "sku_0": sku,
        "quantity_0": "2",
        "sku_1": "NOPE",
        "quantity_1": "1",
    }
    res = client.post(f"{url}/proposals", data=bad)
    assert res.status_code == 422 and 'id="proposal-sku-1-error"' in res.text and "no product with sku" in res.text
    assert 'value="NOPE"' in res.text
    assert _ok(client.get(f"/api/v1/deals/{d['id']}/proposals", headers=workspace.auth())) == []
    res = client.post(f"{url}/proposals", data={**bad, "discount_percent": "150", "sku_1": ""})
    assert res.status_code == 422 and 'id="proposal-discount-error"' in res.text
    res = client.post(f"{url}/proposals", data={**bad, "sku_1": ""})
    assert res.status_code == 200 and "Proposal created." in res.text
    assert "€1,600.00" in res.text and "€80.00" in res.text and "€1,520.00" in res.text
    proposal = _ok(client.get(f"/api/v1/deals/{d['id']}/proposals", headers=workspace.auth()))[0]
    res = client.post(f"/app/w/{workspace.slug}/proposals/{proposal['id']}/send", data={"csrf_token": token})
    assert "Proposal marked as sent." in res.text
    res = client.post(f"/app/w/{workspace.slug}/proposals/{proposal['id']}/accept", data={"csrf_token": token})
    assert "Proposal accepted" in res.text and 'id="deal-amount">€1,520.00<' in res.text


def test_other_workspaces_deals_are_404_and_analysts_only_read(
    client, session_factory, workspace, other_workspace
) -> None:
    ours = deal(client, workspace, name="Ours", amount_minor=1000, currency="EUR")
    theirs = deal(client, other_workspace, name="Theirs", amount_minor=1000, currency="EUR")
    their_task = _ok(
        client.post(
            "/api/v1/tasks",
            json={"title": "Theirs", "due_at": later(), "deal_id": theirs["id"]},
            headers=other_workspace.auth(),
        ),
        201,
    )
    login(client, make_user(session_factory, workspace.id, "analyst"))
    page = client.get(f"/app/w/{workspace.slug}/deals/{ours['id']}")
    assert page.status_code == 200 and "bant-form" not in page.text and "task-form" not in page.text
    token = csrf_of(page.text)
    assert (
        client.post(
            f"/app/w/{workspace.slug}/deals/{ours['id']}/bant", data={"csrf_token": token, "version": "1"}
        ).status_code
        == 403
    )
    assert client.get(f"/app/w/{workspace.slug}/deals/{theirs['id']}").status_code == 404
    assert client.get(f"/app/w/{other_workspace.slug}/deals/{theirs['id']}").status_code == 404
    client.cookies.clear()
    login(client, make_user(session_factory, workspace.id, "admin"))
    token = csrf_of(client.get(f"/app/w/{workspace.slug}/deals/{ours['id']}").text)
    base = f"/app/w/{workspace.slug}"
    assert client.get(f"{base}/deals/{theirs['id']}").status_code == 404
    for path, data in (
        (f"{base}/deals/{theirs['id']}/bant", {"version": "1"}),
        (f"{base}/deals/{theirs['id']}/tasks", {"title": "x", "due_at": "2031-01-01T10:00"}),
        (f"{base}/deals/{theirs['id']}/objections", {"text": "x"}),
        (f"{base}/tasks/{their_task['id']}/complete", {}),
    ):
        assert client.post(path, data={"csrf_token": token, **data}).status_code == 404, path
    assert _ok(client.get(f"/api/v1/tasks/{their_task['id']}", headers=other_workspace.auth()))["done_at"] is None
    assert client.get(f"{base}/deals/abc").status_code in (404, 422)


def test_my_tasks_marks_overdue_and_completes(client, session_factory, workspace, other_workspace) -> None:
    email = make_user(session_factory, workspace.id, "sales")
    me = user_id(session_factory, email)
    other_email = make_user(session_factory, workspace.id, "sales", name="Olga Other")
    other = user_id(session_factory, other_email)
    d = deal(client, workspace, name="Lanterns " + SCRIPT, amount_minor=100, currency="EUR")
    mine_late = _ok(
        client.post(
            "/api/v1/tasks",
            json={"title": "Late call", "due_at": later(), "deal_id": d["id"], "owner_id": me},
            headers=workspace.auth(),
        ),
        201,
    )
    make_overdue(session_factory, mine_late["id"])
    mine_soon = _ok(
        client.post(
            "/api/v1/tasks", json={"title": "Send offer", "due_at": later(), "owner_id": me}, headers=workspace.auth()
        ),
        201,
    )
    _ok(
        client.post(
            "/api/v1/tasks",
            json={"title": "Olga task", "due_at": later(), "owner_id": other},
            headers=workspace.auth(),
        ),
        201,
    )
    login(client, email)
    base = f"/app/w/{workspace.slug}/tasks"
    html = client.get(base).text
    assert "My tasks" in html and "Late call" in html and "Send offer" in html and "Olga task" not in html
    assert "2 open tasks" in html and "1 overdue" in html
    late_row = html[
        html.index(f'id="task-{mine_late["id"]}"') - 30 : html.index(
            "</tr>", html.index(f'id="task-{mine_late["id"]}"')
        )
    ]
    assert 'class="overdue"' in late_row and "Overdue" in late_row and "Lanterns &lt;script&gt;" in late_row
    assert SCRIPT not in html
    overdue = client.get(f"{base}?show=overdue").text
    assert "Late call" in overdue and "Send offer" not in overdue
    # Sales users cannot look at someone else's list.
    assert client.get(f"{base}?user={other}").status_code == 403
    assert "My tasks" in client.get(f"{base}?user={me}").text  # their own list by id is fine
    res = client.post(
        f"/app/w/{workspace.slug}/tasks/{mine_soon['id']}/complete",
        data={"csrf_token": csrf_of(html), "next": f"{base}?show=open"},
    )
    assert res.status_code == 200 and "Send offer" not in res.text and "1 open task" in res.text
    # The return address must be a page of this workspace.
    res = client.post(
        f"/app/w/{workspace.slug}/tasks/{mine_late['id']}/complete",
        data={"csrf_token": csrf_of(html), "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert res.status_code == 303 and res.headers["location"] == f"/app/w/{workspace.slug}/deals/{d['id']}"
    client.cookies.clear()
    # Admins pick a user or a team.
    login(client, make_user(session_factory, workspace.id, "admin"))
    html = client.get(f"{base}?user={other}").text
    assert "Tasks of Olga Other" in html and "Olga task" in html and "Late call" not in html
    team = _ok(
        client.post(
            "/api/v1/sales/teams", json={"name": "Field", "members": [me, other]}, headers=workspace.auth("admin")
        ),
        201,
    )
    html = client.get(f"{base}?team={team['id']}").text
    assert "Olga task" in html and "Tasks of the team" in html
    assert client.get(f"{base}?user=999999999").status_code == 404
    # A user of another workspace is not a choice here.
    stranger = user_id(session_factory, make_user(session_factory, other_workspace.id, "sales"))
    assert client.get(f"{base}?user={stranger}").status_code == 404


def test_forecast_view_with_chart_csv_and_bad_input(client, session_factory, workspace) -> None:
    from suppilo.adapters.web.routes import deals as deals_route

    email = make_user(session_factory, workspace.id, "analyst", language="sv")
    rep = user_id(session_factory, make_user(session_factory, workspace.id, "sales", name="Rep " + SCRIPT))
    stages = {s["key"]: s["id"] for s in client.get("/api/v1/pipelines", headers=workspace.auth()).json()[0]["stages"]}
    close = (datetime.now(UTC).date() + timedelta(days=40)).isoformat()
    deal(
        client,
        workspace,
        name="A",
        amount_minor=100_000,
        currency="EUR",
        stage_id=stages["negotiation"],
        expected_close_date=close,
        owner_id=rep,
    )
    deal(
        client,
        workspace,
        name="B",
        amount_minor=50_000,
        currency="EUR",
        stage_id=stages["demo"],
        expected_close_date=close,
        owner_id=rep,
    )
    login(client, email)
    url = f"/app/w/{workspace.slug}/forecast"
    html = settled(client, url).text
    assert "<svg" in html and 'id="forecast-chart-title"' in html
    table = html[html.index('id="forecast-table"') : html.index("</table>", html.index('id="forecast-table"'))]
    # Weighted 80 % × 1000 + 40 % × 500 = 1 000 €, commit 1 000 €, best case 1 500 € (Swedish format).
    assert "1\xa0000,00\xa0€" in table and "1\xa0500,00\xa0€" in table
    html = settled(client, f"{url}?group_by=owner").text
    assert "Rep &lt;script&gt;" in html and SCRIPT not in html
    res = client.get(f"{url}?group_by=galaxy&pipeline=abc")
    assert res.status_code == 422 and res.text.count('<span class="error">') == 2
    csv_res = client.get(f"{url}.csv?group_by=owner")
    assert csv_res.status_code == 200 and csv_res.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(csv_res.content.decode("utf-8-sig"))))
    assert rows[0] == ["owner", "currency", "converted", "deals", "best_case", "weighted", "commit"]
    assert rows[1][1:] == ["EUR", "no", "2", "1500.00", "1000.00", "1000.00"]
    assert client.get(f"{url}.csv?group_by=galaxy").status_code == 422
    # Without an exchange rate a USD deal is shown in its own currency, and the page says so.
    assert "i sin egen valuta" not in client.get(url).text  # the analyst reads Swedish
    deal(client, workspace, name="C", amount_minor=70_000, currency="USD", stage_id=stages["demo"], owner_id=rep)
    # The page reads its snapshot: the new deal overtook it, so the old figures show, marked as being updated, while
    # one background refresh runs; then the page shows the new deal.
    html = client.get(f"{url}?group_by=owner").text
    assert 'id="forecast-updating"' in html and "700,00\xa0US$" not in html
    deadline = time.monotonic() + 30
    while deals_route._refreshing and time.monotonic() < deadline:
        time.sleep(0.05)
    html = client.get(f"{url}?group_by=owner").text
    assert "i sin egen valuta" in html and "700,00\xa0US$" in html
    assert 'id="forecast-as-of"' in html and 'id="forecast-updating"' not in html


def test_my_tasks_counts_all_open_tasks_beyond_the_rows_shown(client, session_factory, workspace, monkeypatch) -> None:
    from suppilo.adapters.web.routes import deals as deals_route

    email = make_user(session_factory, workspace.id, "sales")
    me = user_id(session_factory, email)
    for title in ("First", "Second", "Third"):
        _ok(
            client.post(
                "/api/v1/tasks", json={"title": title, "due_at": later(), "owner_id": me}, headers=workspace.auth()
            ),
            201,
        )
    monkeypatch.setattr(deals_route, "TASKS_SHOWN", 2)
    login(client, email)
    html = client.get(f"/app/w/{workspace.slug}/tasks").text
    assert "3 open tasks" in html and "The first 2 by due time are shown." in html
    assert html.count('<tr id="task-') == 2


def test_buying_group_on_the_deal_page(client, session_factory, workspace, other_workspace) -> None:
    buyer = _ok(
        client.post(
            "/api/v1/contacts", json={"email": "bg-buyer@example.com", "first_name": "Bea"}, headers=workspace.auth()
        ),
        201,
    )
    _ok(
        client.post(
            "/api/v1/contacts",
            json={"email": "bg-boss@example.com", "first_name": "Bo" + SCRIPT},
            headers=workspace.auth(),
        ),
        201,
    )
    _ok(client.post("/api/v1/contacts", json={"email": "bg-theirs@example.com"}, headers=other_workspace.auth()), 201)
    d = deal(client, workspace, name="Group deal", contact_id=buyer["id"])
    login(client, make_user(session_factory, workspace.id, "sales"))
    url = f"/app/w/{workspace.slug}/deals/{d['id']}"
    token = csrf_of(client.get(url).text)
    res = client.post(f"{url}/contacts", data={"csrf_token": token, "email": "bg-theirs@example.com", "role": "boss"})
    assert (
        res.status_code == 422 and 'id="people-email-error"' in res.text and 'value="bg-theirs@example.com"' in res.text
    )
    res = client.post(
        f"{url}/contacts", data={"csrf_token": token, "email": "BG-Boss@example.com", "role": "decision maker"}
    )
    assert res.status_code == 200 and "Contact added." in res.text
    people = res.text[res.text.index('id="people-list"') : res.text.index("</ul>", res.text.index('id="people-list"'))]
    assert "Bea" in people and "primary contact" in people and "decision maker" in people
    assert "Bo&lt;script&gt;" in people and SCRIPT not in res.text
    group = _ok(client.get(f"/api/v1/deals/{d['id']}/contacts", headers=workspace.auth()))
    boss = group[1]["contact_id"]
    res = client.post(f"{url}/contacts/{boss}/remove", data={"csrf_token": token})
    assert (
        "Contact removed." in res.text
        and len(_ok(client.get(f"/api/v1/deals/{d['id']}/contacts", headers=workspace.auth()))) == 1
    )
    assert client.post(f"{url}/contacts/{boss}/remove", data={"csrf_token": token}).status_code == 404


def test_forecast_of_a_workspace_without_deals_or_pipelines(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "analyst"))
    res = settled(client, f"/app/w/{workspace.slug}/forecast")
    assert res.status_code == 200 and "No open deals with an amount." in res.text and "<svg" not in res.text
    csv_res = client.get(f"/app/w/{workspace.slug}/forecast.csv")
    assert csv_res.status_code == 200 and csv_res.content.decode("utf-8-sig").count("\r\n") == 1  # the header
