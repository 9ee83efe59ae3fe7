"""A contact's timeline: events, stage changes, orders, form submissions and touches, newest first, paginated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from suppilo.capture.models import Form, FormSubmission
from suppilo.commerce.models import Order
from suppilo.contacts.models import StageChange
from suppilo.events.models import Event, Touch

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _seed(session_factory, workspace_id: int, contact_id: int) -> None:
    with session_factory() as s:
        form = Form(workspace_id=workspace_id, slug="newsletter", public_key=f"pk-{workspace_id}", name="Newsletter")
        s.add(form)
        s.flush()
        s.add_all(
            [
                Touch(
                    workspace_id=workspace_id,
                    contact_id=contact_id,
                    occurred_at=T0,
                    channel="paid_search",
                    source="google",
                    medium="cpc",
                    campaign="spring",
                ),
                Event(
                    workspace_id=workspace_id,
                    contact_id=contact_id,
                    kind="page",
                    name="Home",
                    occurred_at=T0 + timedelta(minutes=1),
                    received_at=T0 + timedelta(minutes=1),
                    message_id=f"m1-{contact_id}",
                ),
                FormSubmission(
                    workspace_id=workspace_id,
                    form_id=form.id,
                    contact_id=contact_id,
                    data={"email": "t@example.com"},
                    consent_given=True,
                    submitted_at=T0 + timedelta(minutes=2),
                ),
                StageChange(
                    workspace_id=workspace_id,
                    contact_id=contact_id,
                    from_stage="awareness",
                    to_stage="interest",
                    changed_at=T0 + timedelta(minutes=2, seconds=1),
                    reason="rule: form_submitted",
                    source="rule",
                ),
                Order(
                    workspace_id=workspace_id,
                    external_id=f"o-{contact_id}",
                    contact_id=contact_id,
                    placed_at=T0 + timedelta(days=1),
                    currency="EUR",
                    total_minor=4990,
                ),
                Event(
                    workspace_id=workspace_id,
                    contact_id=contact_id,
                    kind="track",
                    name="Order Completed",
                    occurred_at=T0 + timedelta(days=1, seconds=1),
                    received_at=T0 + timedelta(days=1),
                    message_id=f"m2-{contact_id}",
                ),
            ]
        )
        s.commit()


def test_timeline_merges_sources_newest_first(client, workspace, session_factory) -> None:
    c = client.post("/api/v1/contacts", json={"email": "t@example.com"}, headers=workspace.auth("write")).json()
    _seed(session_factory, workspace.id, c["id"])
    res = client.get(f"/api/v1/contacts/{c['id']}/timeline", headers=workspace.auth("read"))
    assert res.status_code == 200
    items = res.json()["items"]
    # The contact was created now, so its first stage change is the newest item.
    assert [i["type"] for i in items] == [
        "stage_change",
        "event",
        "order",
        "stage_change",
        "form_submission",
        "event",
        "touch",
    ]
    times = [datetime.fromisoformat(i["at"]) for i in items]
    assert times == sorted(times, reverse=True)
    assert items[1]["title"] == "Order Completed"
    assert items[2]["data"]["total_minor"] == 4990 and items[2]["data"]["currency"] == "EUR"
    assert items[3]["data"]["to_stage"] == "interest" and items[3]["data"]["reason"] == "rule: form_submitted"
    assert items[4]["data"]["consent_given"] is True
    assert items[6]["data"]["channel"] == "paid_search" and "google" in items[6]["title"]
    assert res.json()["next_before"] is None


def test_timeline_pages_with_before(client, workspace, session_factory) -> None:
    c = client.post("/api/v1/contacts", json={"email": "p@example.com"}, headers=workspace.auth("write")).json()
    _seed(session_factory, workspace.id, c["id"])
    walked = []
    before = None
    while True:
        params = {"limit": 3, **({"before": before} if before else {})}
        page = client.get(f"/api/v1/contacts/{c['id']}/timeline", params=params, headers=workspace.auth("read")).json()
        walked += page["items"]
        before = page["next_before"]
        if before is None:
            break
    assert len(walked) == 7 and len({(i["type"], i["data"]["id"]) for i in walked}) == 7
    early = client.get(
        f"/api/v1/contacts/{c['id']}/timeline",
        params={"before": (T0 + timedelta(minutes=2)).isoformat()},
        headers=workspace.auth("read"),
    ).json()["items"]
    assert [i["type"] for i in early] == ["event", "touch"]
