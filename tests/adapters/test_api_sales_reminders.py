"""Task reminders to the owner through the outbox and a real SMTP server (once, in the owner's language and zone),
the task_reminder template in five languages, and proposal expiry by the sales job."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select, update

from suppilo.deals import proposals, reminders
from suppilo.deals.models import Proposal, Task
from suppilo.deals.tasks import run_sales
from suppilo.messaging import service as messaging_service
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.workspaces import service as workspaces_service
from tests.integration.messaging.outbox_support import SmtpSink, drain, make_sender

API = "/api/v1"


def _member(session_factory, ws, *, language="en", timezone="UTC", name="Rep") -> tuple[int, str]:
    with session_factory() as s:
        address = f"rep-{secrets.token_hex(4)}@example.fi"
        user = workspaces_service.create_user(s, email=address, name=name, password_hash=None)
        user.language = language
        user.timezone = timezone
        workspaces_service.add_member(s, ws.id, user.id, "sales")
        s.commit()
        return user.id, address


def _ok(res, code=200):
    assert res.status_code == code, res.text
    return res.json()


def _queued(session_factory, ws) -> int:
    """Reminder messages queued for this workspace (other tests share the database and the job)."""
    with session_factory() as s:
        return len(
            s.scalars(
                select(OutboxMessage.id).where(
                    OutboxMessage.workspace_id == ws.id, OutboxMessage.dedupe_key.like("task-reminder:%")
                )
            ).all()
        )


def _due_reminder(session_factory, task_id: int, minutes_ago: int = 1) -> None:
    """Move a task's reminder into the past (the API refuses past times, as users would expect)."""
    with session_factory() as s:
        s.execute(
            update(Task)
            .where(Task.id == task_id)
            .values(reminder_at=datetime.now(UTC) - timedelta(minutes=minutes_ago))
        )
        s.commit()


def test_task_reminder_template_is_valid_in_five_languages(session, workspace) -> None:
    template = messaging_service.get_template_by_key(session, workspace.id, "task_reminder")
    assert template.kind == "transactional" and template.status == "published"
    assert {v.language for v in template.variants} == {"en", "sv", "fi", "da", "lv"}
    assert messaging_service.template_issues(session, template) == []


def test_reminder_is_mailed_to_the_owner_once_in_their_language_and_zone(client, workspace, session_factory):
    rep, address = _member(session_factory, workspace, language="fi", timezone="Europe/Helsinki", name="Aino")
    contact = _ok(
        client.post(
            f"{API}/contacts",
            json={"email": "lead@example.org", "first_name": "Matti"},
            headers=workspace.auth("write"),
        ),
        201,
    )
    deal = _ok(
        client.post(
            f"{API}/deals",
            json={"name": "Kajakit", "owner_id": rep, "contact_id": contact["id"]},
            headers=workspace.auth("write"),
        ),
        201,
    )
    due = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)  # 14.00 in Helsinki
    task = _ok(
        client.post(
            f"{API}/tasks",
            json={
                "title": "Soita takaisin",
                "kind": "call",
                "due_at": due.isoformat(),
                "reminder_at": (due - timedelta(hours=1)).isoformat(),
                "deal_id": deal["id"],
                "owner_id": rep,
            },
            headers=workspace.auth("write"),
        ),
        201,
    )
    # Not yet due: nothing is queued.
    with session_factory() as s:
        reminders.queue_due_reminders(s)
        s.commit()
    assert _queued(session_factory, workspace) == 0
    _due_reminder(session_factory, task["id"])
    assert run_sales(session_factory)["reminders"] >= 1
    assert _queued(session_factory, workspace) == 1
    run_sales(session_factory)
    assert _queued(session_factory, workspace) == 1  # marked sent
    with session_factory() as s:
        # Even with the mark lost, the dedupe key keeps it to one message.
        t = s.get(Task, task["id"])
        t.reminder_sent_at = None
        s.commit()
        reminders.queue_due_reminders(s)
        s.commit()
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.workspace_id == workspace.id)).all()
        assert len(rows) == 1
        assert rows[0].dedupe_key == f"task-reminder:{task['id']}:{t.reminder_at.isoformat()}"
        assert rows[0].contact_id is None and rows[0].to_address == address

    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, workspace.id)
        asyncio.run(drain(sender, transport))
    assert len(sink.received) == 1
    msg = sink.received[0].message
    assert sink.received[0].rcpt_tos == [address]
    assert str(msg["Subject"]) == "Muistutus: Soita takaisin"
    body = msg.get_body(("plain",)).get_content()
    assert "Hei Aino" in body and "puhelun" in body and "Kajakit" in body and "Matti" in body
    assert "14.00" in body  # 12:00 UTC in the owner's zone, Finnish format
    with session_factory() as s:
        assert s.scalars(select(OutboxMessage.status).where(OutboxMessage.workspace_id == workspace.id)).all() == [
            "sent"
        ]

    # Moving the reminder gives a new message; a done task's reminder is not sent.
    new_time = (due - timedelta(minutes=30)).isoformat()
    _ok(client.patch(f"{API}/tasks/{task['id']}", json={"reminder_at": new_time}, headers=workspace.auth("write")))
    _due_reminder(session_factory, task["id"], minutes_ago=2)
    run_sales(session_factory)
    assert _queued(session_factory, workspace) == 2
    other = _ok(
        client.post(
            f"{API}/tasks",
            json={
                "title": "Done already",
                "due_at": due.isoformat(),
                "reminder_at": (due - timedelta(hours=2)).isoformat(),
                "owner_id": rep,
            },
            headers=workspace.auth("write"),
        ),
        201,
    )
    _ok(client.post(f"{API}/tasks/{other['id']}/complete", headers=workspace.auth("write")))
    _due_reminder(session_factory, other["id"])
    run_sales(session_factory)
    assert _queued(session_factory, workspace) == 2


def test_user_messages_respect_suppression(client, workspace, session_factory):
    from suppilo.messaging import suppression

    rep, address = _member(session_factory, workspace)
    task = _ok(
        client.post(
            f"{API}/tasks",
            json={
                "title": "Follow up",
                "due_at": "2030-01-01T10:00:00Z",
                "reminder_at": "2030-01-01T09:00:00Z",
                "owner_id": rep,
            },
            headers=workspace.auth("write"),
        ),
        201,
    )
    _due_reminder(session_factory, task["id"])
    with session_factory() as s:
        suppression.suppress(s, workspace.id, address, "hard_bounce", source="test")
        s.commit()
    run_sales(session_factory)
    assert _queued(session_factory, workspace) == 1
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, workspace.id)
        asyncio.run(drain(sender, transport))
    assert sink.received == []
    with session_factory() as s:
        assert s.scalars(select(OutboxMessage.status).where(OutboxMessage.workspace_id == workspace.id)).all() == [
            "suppressed"
        ]


def _proposal(client, ws, deal_id, valid_until):
    sku = f"SKU-{secrets.token_hex(3)}"
    _ok(
        client.post(
            f"{API}/products",
            json={"sku": sku, "name": "Tent", "price_minor": 10000, "currency": "EUR"},
            headers=ws.auth("write"),
        ),
        201,
    )
    body = {"title": "Offer", "valid_until": valid_until, "lines": [{"sku": sku, "quantity": 2}]}
    return _ok(client.post(f"{API}/deals/{deal_id}/proposals", json=body, headers=ws.auth("write")), 201)


def test_proposals_past_validity_expire_once_and_cannot_be_accepted(
    client, workspace, other_workspace, session_factory
):
    deal = _ok(
        client.post(f"{API}/deals", json={"name": "Camp", "currency": "EUR"}, headers=workspace.auth("write")), 201
    )
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    old = _proposal(client, workspace, deal["id"], tomorrow)
    fresh = _proposal(client, workspace, deal["id"], (date.today() + timedelta(days=30)).isoformat())
    accepted = _proposal(client, workspace, deal["id"], tomorrow)
    _ok(client.post(f"{API}/proposals/{accepted['id']}/accept", headers=workspace.auth("write")))
    with session_factory() as s:  # time passes: their validity ends
        s.execute(
            update(Proposal)
            .where(Proposal.id.in_([old["id"], accepted["id"]]))
            .values(valid_until=date.today() - timedelta(days=1))
        )
        s.commit()
    run_sales(session_factory)
    with session_factory() as s:
        assert proposals.expire_proposals(s, workspace_id=workspace.id) == 0  # idempotent
        s.commit()
    got = {
        p["id"]: p["status"]
        for p in _ok(client.get(f"{API}/deals/{deal['id']}/proposals", headers=workspace.auth("read")))
    }
    assert got == {old["id"]: "expired", fresh["id"]: "draft", accepted["id"]: "accepted"}
    res = client.post(f"{API}/proposals/{old['id']}/accept", headers=workspace.auth("write"))
    assert res.status_code == 422 and res.json()["error"]["code"] == "proposal_expired"
    history = _ok(client.get(f"{API}/activities?deal_id={deal['id']}", headers=workspace.auth("read")))
    lines = [a["body"] for a in history if a["kind"] == "system" and "expired" in a["body"]]
    assert lines == [
        f"Proposal {old['id']} (Offer) expired: valid until {(date.today() - timedelta(days=1)).isoformat()}"
    ]


def test_reminder_links_to_the_task_in_the_web_interface(
    client, workspace, other_workspace, session_factory, monkeypatch
):
    """The mailed reminder carries an absolute link under SUPPILO_PUBLIC_URL; opened by its owner it shows the deal
    page at the task; a task without a deal links to the owner's task list."""
    import re

    from suppilo.accounts import service as accounts
    from suppilo.config import get_settings
    from tests.adapters.test_web_shell import login, make_user

    monkeypatch.setenv("SUPPILO_PUBLIC_URL", "http://testserver/")
    get_settings.cache_clear()
    email = make_user(session_factory, workspace.id, "sales", name="Rita")
    with session_factory() as s:
        owner = accounts.get_user_by_email(s, email).id
    deal = _ok(
        client.post(f"{API}/deals", json={"name": "Canoes for the camp", "owner_id": owner}, headers=workspace.auth()),
        201,
    )
    tasks = []
    for body in ({"title": "Send the price list", "deal_id": deal["id"]}, {"title": "Plan the week"}):
        tasks.append(
            _ok(
                client.post(
                    f"{API}/tasks",
                    json={
                        **body,
                        "owner_id": owner,
                        "due_at": "2030-03-01T10:00:00Z",
                        "reminder_at": "2030-03-01T09:00:00Z",
                    },
                    headers=workspace.auth(),
                ),
                201,
            )
        )
        _due_reminder(session_factory, tasks[-1]["id"])
    try:
        run_sales(session_factory)
    finally:
        get_settings.cache_clear()
    with SmtpSink() as sink:
        sender, transport = make_sender(session_factory, sink, workspace.id)
        asyncio.run(drain(sender, transport))
    assert len(sink.received) == 2 and all(r.rcpt_tos == [email] for r in sink.received)
    links = {}
    for received in sink.received:
        html = received.message.get_body(("html",)).get_content()
        found = re.findall(r'href="(http://testserver/app/[^"]+)"', html)
        assert len(found) == 1, html
        links[str(received.message["Subject"])] = found[0].replace("&amp;", "&")
    deal_link = links["Reminder: Send the price list"]
    assert deal_link == f"http://testserver/app/w/{workspace.slug}/deals/{deal['id']}#task-{tasks[0]['id']}"
    list_link = links["Reminder: Plan the week"]
    assert list_link == f"http://testserver/app/w/{workspace.slug}/tasks#task-{tasks[1]['id']}"

    client.cookies.clear()
    # Not signed in: the link asks for a login and comes back to the page.
    res = client.get(deal_link.split("#")[0], follow_redirects=False)
    assert res.status_code in (302, 303) and "/app/login" in res.headers["location"]
    login(client, email)
    page = client.get(deal_link.split("#")[0])
    assert page.status_code == 200
    assert "<h1>Canoes for the camp" in page.text and f'id="task-{tasks[0]["id"]}"' in page.text
    assert "Send the price list" in page.text
    page = client.get(list_link.split("#")[0])
    assert page.status_code == 200 and f'id="task-{tasks[1]["id"]}"' in page.text and "Plan the week" in page.text
    client.cookies.clear()
