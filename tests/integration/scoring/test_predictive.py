"""The predictive score on a real database: time-split training on the workspace's history, validation report,
per-contact probability with reasons, refusal with too little history, and the scoring job's share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from suppilo.errors import DomainError
from suppilo.scoring import predictive, service
from suppilo.scoring.models import ContactScore
from suppilo.segments.compiler import contacts, events, stage_changes

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
DAYS = 30
R1, R2 = NOW - 2 * DAYS * DAY, NOW - DAYS * DAY


def _contact(session, ws: int, stage: str = "interest", channel: str = "organic_search") -> int:
    created = NOW - 400 * DAY
    return int(
        session.execute(
            insert(contacts).returning(contacts.c.id),
            {
                "workspace_id": ws,
                "lifecycle_stage": stage,
                "first_touch_channel": channel,
                "properties": {},
                "created_at": created,
                "updated_at": created,
                "version": 1,
            },
        ).scalar_one()
    )


def _active(session, ws: int, cid: int, before: datetime, forms: int = 2, pages: int = 5) -> None:
    rows = [{"kind": "track", "name": "Form Submitted", "at": before - (i + 1) * 2 * DAY} for i in range(forms)] + [
        {"kind": "page", "name": "Pricing", "at": before - (i + 1) * DAY} for i in range(pages)
    ]
    session.execute(
        insert(events),
        [
            {
                "workspace_id": ws,
                "contact_id": cid,
                "kind": r["kind"],
                "name": r["name"],
                "properties": {"path": "/pricing"},
                "occurred_at": r["at"],
                "received_at": r["at"],
                "message_id": f"m-{cid}-{i}",
            }
            for i, r in enumerate(rows)
        ],
    )


def _became_customer(session, ws: int, cid: int, at: datetime) -> None:
    session.execute(
        insert(stage_changes),
        [
            {
                "workspace_id": ws,
                "contact_id": cid,
                "from_stage": None,
                "to_stage": "interest",
                "changed_at": NOW - 400 * DAY,
            },
            {"workspace_id": ws, "contact_id": cid, "from_stage": "interest", "to_stage": "customer", "changed_at": at},
        ],
    )


def _history(session, ws: int, converters: int) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {"early": [], "late": [], "idle": [], "hot": []}
    for i in range(converters):
        a = _contact(session, ws, "customer", "email")
        _active(session, ws, a, R1)
        _became_customer(session, ws, a, R1 + (5 + i % 10) * DAY)
        groups["early"].append(a)
        b = _contact(session, ws, "customer", "email")
        _active(session, ws, b, R2)
        _became_customer(session, ws, b, R2 + (5 + i % 10) * DAY)
        groups["late"].append(b)
    for i in range(60):
        c = _contact(session, ws, "interest", "paid_social")
        if i % 4 == 0:  # a few visits that lead nowhere
            _active(session, ws, c, R1 + i * DAY % (50 * DAY), forms=0, pages=1)
        groups["idle"].append(c)
    for _ in range(5):
        d = _contact(session, ws, "interest", "email")
        _active(session, ws, d, NOW)
        groups["hot"].append(d)
    return groups


def test_trains_on_history_and_scores_with_reasons(session, workspace):
    ws = workspace.id
    g = _history(session, ws, 25)
    report = predictive.train(session, ws, "customer", DAYS, NOW)
    m = report["metrics"]
    assert (m["train_positives"], m["validation_positives"]) == (25, 25)
    assert m["auc"] > 0.9 and 0 <= m["brier"] < 0.2
    assert sum(b["contacts"] for b in m["calibration"]) == m["validation_contacts"]
    assert report["coefficients"]["engagement"] > 0

    rows = {
        r.contact_id: r
        for r in session.execute(
            select(ContactScore).where(ContactScore.workspace_id == ws, ContactScore.kind == "predictive")
        ).scalars()
    }
    # customers already reached the target: no predictive score
    assert not set(g["early"] + g["late"]) & set(rows)
    hot = [rows[c].score for c in g["hot"]]
    idle = [rows[c].score for c in g["idle"]]
    assert min(hot) > max(idle)
    assert all(rows[c].grade == "A" for c in g["hot"])
    p = service.explain(session, ws, g["hot"][0], NOW)["scores"]["predictive"]
    assert 0 < p["score"] <= 100 and len(p["reasons"]) == 3
    assert all(r["detail"].endswith("the likelihood") for r in p["reasons"])
    assert predictive.status(session, ws)["metrics"]["auc"] == m["auc"]

    # a contact scored alone is graded with the cut points of the last full scoring
    predictive.score(session, ws, [g["idle"][1]], NOW)
    assert session.scalar(
        select(ContactScore.grade).where(ContactScore.contact_id == g["idle"][1], ContactScore.kind == "predictive")
    ) in ("C", "D")


def test_too_little_history_is_refused_and_the_rules_stand_in(session, workspace):
    ws = workspace.id
    _history(session, ws, 3)
    with pytest.raises(DomainError) as exc:
        predictive.train(session, ws, "customer", DAYS, NOW)
    assert exc.value.code == "insufficient_history"
    assert "3 contacts that reached customer within 30 days" in exc.value.message
    assert predictive.status(session, ws)["error"] == exc.value.message
    assert predictive.run(session, ws, [], NOW) is None  # no model: nothing to do
    with pytest.raises(DomainError) as exc:
        predictive.score(session, ws, None, NOW)
    assert exc.value.code == "not_trained"
    with pytest.raises(DomainError) as exc:
        predictive.train(session, ws, "awareness", DAYS, NOW)
    assert exc.value.field == "target_stage"


def test_scoring_run_rescoring_and_weekly_retraining(session, workspace):
    ws = workspace.id
    g = _history(session, ws, 25)
    predictive.train(session, ws, "customer", DAYS, NOW)
    later = NOW + DAY
    result = predictive.run(session, ws, [g["idle"][0]], later)
    assert result is not None and result.scored == 1
    week = NOW + 8 * DAY
    result = predictive.run(session, ws, [], week)
    assert result is not None and result.scored == len(g["idle"]) + len(g["hot"])
    assert predictive.status(session, ws)["trained_at"] == week.isoformat()
