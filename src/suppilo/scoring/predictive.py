"""The predictive score: a logistic regression trained on the workspace's own history.

Two cohorts, split by time: contacts as they were ``2 × days`` ago (label: reached the target stage within the next
``days``) train the model, contacts as they were ``days`` ago validate it (AUC, Brier score, calibration); the
model that scores is then fitted on both. Every feature is computed from data before the cohort's moment (the fit
score is the current one: profile history is not kept). Contacts already at or past the target stage get no
predictive score.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact, StageChange
from suppilo.db.base import utcnow
from suppilo.engine.scoring import (
    EngagementConfig,
    InsufficientHistory,
    PredictiveExample,
    PredictiveModel,
    ScoredEvent,
    engagement,
    horizon_start,
    percentile_grades,
    predict,
    train_predictive,
)
from suppilo.errors import DomainError
from suppilo.events.models import Event
from suppilo.scoring import service
from suppilo.scoring.models import ContactScore, ScoringSettings

MAX_CONTACTS = 50_000
RETRAIN_AFTER = timedelta(days=7)
FEATURE_LABELS = {
    "fit_score": "fit score",
    "fit_unknown": "no fit score",
    "engagement": "engagement",
    "negative_engagement": "negative engagement",
    "events_30d_page": "page views in 30 days",
    "events_30d_form": "forms submitted in 30 days",
    "events_30d_email_click": "email clicks in 30 days",
    "events_30d_email_open": "email opens in 30 days",
    "events_30d_other": "other events in 30 days",
    "age_days": "days known",
    "days_since_last_event": "days since the last event",
    "stage_position": "lifecycle stage",
}


@dataclass
class _History:
    created: dict[int, datetime]
    channel: dict[int, str | None]
    changes: dict[int, list[tuple[datetime, str]]]
    events: dict[int, list[ScoredEvent]]
    event_times: dict[int, list[datetime]]
    fit: dict[int, float]


def _category(e: ScoredEvent) -> str | None:
    if e.name.startswith("segment.") or e.kind in ("identify", "alias", "group"):
        return None
    if e.kind in ("page", "screen"):
        return "page"
    if e.name == "Form Submitted":
        return "form"
    if e.name in ("email_clicked", "email_opened"):
        if e.properties.get("machine") is True:
            return None
        return "email_click" if e.name == "email_clicked" else "email_open"
    return "other"


def _load(session: Session, workspace_id: int, since: datetime, until: datetime) -> _History:
    rows = session.execute(
        select(Contact.id, Contact.created_at, Contact.first_touch_channel)
        .where(Contact.workspace_id == workspace_id)
        .order_by(Contact.id)
    ).all()
    step = max(1, len(rows) // MAX_CONTACTS + (1 if len(rows) % MAX_CONTACTS else 0))
    rows = rows[::step]  # a deterministic sample when the workspace is large
    ids = [int(r.id) for r in rows]
    h = _History(
        created={int(r.id): r.created_at for r in rows},
        channel={int(r.id): r.first_touch_channel for r in rows},
        changes=defaultdict(list),
        events=defaultdict(list),
        event_times=defaultdict(list),
        fit={},
    )
    for chunk in service._chunks(ids):
        for r in session.execute(
            select(StageChange.contact_id, StageChange.changed_at, StageChange.to_stage)
            .where(StageChange.workspace_id == workspace_id, StageChange.contact_id.in_(chunk))
            .order_by(StageChange.changed_at, StageChange.id)
        ):
            h.changes[r.contact_id].append((r.changed_at, r.to_stage))
        for r in session.execute(
            select(Event.id, Event.contact_id, Event.name, Event.kind, Event.properties, Event.occurred_at)
            .where(
                Event.workspace_id == workspace_id,
                Event.contact_id.in_(chunk),
                Event.occurred_at >= since,
                Event.occurred_at <= until,
            )
            .order_by(Event.occurred_at, Event.id)
        ):
            h.events[r.contact_id].append(ScoredEvent(r.name, r.kind, r.occurred_at, r.properties or {}, r.id))
            h.event_times[r.contact_id].append(r.occurred_at)
        for cid, score in session.execute(
            select(ContactScore.contact_id, ContactScore.score).where(
                ContactScore.workspace_id == workspace_id,
                ContactScore.kind == "fit",
                ContactScore.contact_id.in_(chunk),
            )
        ):
            h.fit[cid] = score
    return h


@dataclass(frozen=True)
class _Funnel:
    first: str
    position: dict[str, float]
    target: float
    side: frozenset[str]


def _funnel(session: Session, workspace_id: int, target_stage: str) -> _Funnel:
    specs = contacts_service.stage_specs(session, workspace_id)
    funnel = [s for s in sorted(specs, key=lambda s: s.position) if s.kind == "funnel"]
    keys = [s.key for s in funnel]
    if target_stage not in keys or keys.index(target_stage) == 0:
        raise DomainError("target_stage", f"{target_stage!r} is not a funnel stage after the first one")
    position = {k: i / max(1, len(keys) - 1) for i, k in enumerate(keys)}
    return _Funnel(keys[0], position, position[target_stage], frozenset(s.key for s in specs if s.kind != "funnel"))


def _stage_at(h: _History, cid: int, at: datetime, f: _Funnel) -> str:
    stage = f.first
    for when, to in h.changes.get(cid, []):
        if when > at:
            break
        stage = to
    return stage


def _eligible(h: _History, cid: int, at: datetime, f: _Funnel) -> bool:
    if h.created[cid] > at:
        return False
    stage = _stage_at(h, cid, at, f)
    return stage not in f.side and f.position.get(stage, 0.0) < f.target


def _reached(h: _History, cid: int, start: datetime, end: datetime, f: _Funnel) -> int:
    return int(any(start < when <= end and f.position.get(to, -1.0) >= f.target for when, to in h.changes.get(cid, [])))


def _example(h: _History, cid: int, at: datetime, f: _Funnel, config: EngagementConfig) -> PredictiveExample:
    times = h.event_times.get(cid, [])
    lo = bisect.bisect_left(times, horizon_start(at, config))
    hi = bisect.bisect_right(times, at)
    window = h.events.get(cid, [])[lo:hi]
    counts: dict[str, int] = defaultdict(int)
    recent = at - timedelta(days=30)
    for e in window:
        if e.at >= recent:
            kind = _category(e)
            if kind is not None:
                counts[kind] += 1
    last = max((e.at for e in window if _category(e) is not None), default=None)
    return PredictiveExample(
        fit_score=h.fit.get(cid),
        engagement=engagement(window, config, at).score,
        event_counts=counts,
        age_days=(at - h.created[cid]).total_seconds() / 86_400,
        days_since_last_event=None if last is None else (at - last).total_seconds() / 86_400,
        stage_position=f.position.get(_stage_at(h, cid, at, f), 0.0),
        channel=h.channel.get(cid),
    )


def train(
    session: Session, workspace_id: int, target_stage: str = "customer", days: int = 90, now: datetime | None = None
) -> dict[str, Any]:
    """Train and store the workspace's model, then score its contacts; the validation report.

    DomainError ``insufficient_history`` when there are too few outcomes (the rules-based scores stand in).
    """
    now = now or utcnow()
    if not 7 <= days <= 365:
        raise DomainError("days", "from 7 to 365 days")
    f = _funnel(session, workspace_id, target_stage)
    config = service.engagement_config(session, workspace_id)
    r1, r2 = now - timedelta(days=2 * days), now - timedelta(days=days)
    h = _load(session, workspace_id, horizon_start(r1, config), now)
    cohorts = []
    for at in (r1, r2):
        cohorts.append(
            [
                (_example(h, cid, at, f, config), _reached(h, cid, at, at + timedelta(days=days), f))
                for cid in h.created
                if _eligible(h, cid, at, f)
            ]
        )
    settings = service._settings(session, workspace_id)
    try:
        model = train_predictive(cohorts[0], cohorts[1], target_stage=target_stage, days=days)
    except InsufficientHistory as exc:
        settings.predictive = {**(settings.predictive or {}), "error": str(exc), "error_at": now.isoformat()}
        session.flush()
        raise DomainError("target_stage", str(exc), code="insufficient_history") from None
    settings.predictive = {
        "model": model.model_dump(mode="json"),
        "trained_at": now.isoformat(),
        "error": None,
    }
    session.flush()
    scored = score(session, workspace_id, None, now)
    return {
        "changed": len(scored.changed),
        "target_stage": target_stage,
        "days": days,
        "trained_at": now,
        "metrics": model.metrics,
        "coefficients": dict(zip(model.features, model.coef, strict=True)),
        "scored": scored.scored,
    }


def model_of(session: Session, workspace_id: int) -> PredictiveModel | None:
    """The workspace's stored model, if one was trained."""
    settings = session.get(ScoringSettings, workspace_id)
    stored = (settings.predictive or {}).get("model") if settings is not None else None
    return PredictiveModel.model_validate(stored) if stored else None


def status(session: Session, workspace_id: int) -> dict[str, Any]:
    """The stored model's target, training time and validation report (or the last training error)."""
    settings = session.get(ScoringSettings, workspace_id)
    p = (settings.predictive if settings is not None else None) or {}
    model = p.get("model")
    return {
        "trained": model is not None,
        "target_stage": model["target_stage"] if model else None,
        "days": model["days"] if model else None,
        "trained_at": p.get("trained_at"),
        "metrics": model["metrics"] if model else None,
        "error": p.get("error"),
    }


def _reasons(reasons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in reasons:
        name = str(r["feature"])
        label = FEATURE_LABELS.get(name) or (
            f"came through {name.removeprefix('channel_')}" if name.startswith("channel_") else name
        )
        direction = "raises" if r["effect"] > 0 else "lowers"
        out.append({**r, "detail": f"{label} {direction} the likelihood"})
    return out


def score(
    session: Session, workspace_id: int, contact_ids: list[int] | None = None, now: datetime | None = None
) -> service.ScoreWrite:
    """Predictive scores (probability × 100, grade by rank, top reasons) for eligible contacts now."""
    now = now or utcnow()
    model = model_of(session, workspace_id)
    if model is None:
        raise DomainError("predictive", "no predictive model yet: train one first", code="not_trained")
    f = _funnel(session, workspace_id, model.target_stage)
    config = service.engagement_config(session, workspace_id)
    h = _load(session, workspace_id, horizon_start(now, config), now)
    wanted = set(h.created) if contact_ids is None else set(contact_ids) & set(h.created)
    probs: dict[int, tuple[float, list[dict[str, Any]]]] = {}
    done: list[int] = []
    for cid in sorted(wanted):
        if _eligible(h, cid, now, f):
            probs[cid] = predict(model, _example(h, cid, now, f, config))
        else:
            done.append(cid)
    settings = service._settings(session, workspace_id)
    stored = dict(settings.predictive or {})
    if contact_ids is None:
        grades = percentile_grades({cid: p for cid, (p, _) in probs.items()})
        stored["cuts"] = {g: min((probs[c][0] for c, gg in grades.items() if gg == g), default=None) for g in "ABC"}
        settings.predictive = stored
    else:
        cuts: dict[str, Any] = stored.get("cuts") or {}
        grades = {}
        for cid, (p, _) in probs.items():
            grades[cid] = next((g for g in "ABC" if cuts.get(g) is not None and p >= cuts[g]), "D")
    result = service.ScoreWrite()
    old = {}
    for chunk in service._chunks(sorted(probs)):
        old.update(service._existing(session, workspace_id, "predictive", chunk))
    rows = []
    for cid, (p, reasons) in probs.items():
        value = round(p * 100, 2)
        result.scored += 1
        prev = old.get(cid)
        if prev is None or prev.score != value or prev.grade != grades[cid]:
            result.changed.append(cid)
        rows.append(service._row(workspace_id, cid, "predictive", value, grades[cid], None, _reasons(reasons), now))
    service._upsert(session, rows)
    for chunk in service._chunks(done):
        gone = session.scalars(
            delete(ContactScore)
            .where(
                ContactScore.workspace_id == workspace_id,
                ContactScore.kind == "predictive",
                ContactScore.contact_id.in_(chunk),
            )
            .returning(ContactScore.contact_id)
        )
        result.changed.extend(gone)
    session.flush()
    service._segments(session, workspace_id, sorted(result.changed), "predictive", now)
    return result


def run(session: Session, workspace_id: int, touched: list[int], now: datetime) -> service.ScoreWrite | None:
    """The scoring run's share: retrain a model older than a week (keeping the old one if that fails) and score
    everyone, or else score the contacts whose other scores changed. None when the workspace has no model."""
    p = service._settings(session, workspace_id).predictive or {}
    model = p.get("model")
    if not model:
        return None
    trained_at = datetime.fromisoformat(p["trained_at"]) if p.get("trained_at") else None
    if trained_at is None or now - trained_at >= RETRAIN_AFTER:
        try:
            report = train(session, workspace_id, model["target_stage"], int(model["days"]), now)
            return service.ScoreWrite(scored=int(report["scored"]), changed=[])
        except DomainError:
            pass  # the error is stored with the settings; the old model keeps scoring
    if not touched:
        return service.ScoreWrite()
    return score(session, workspace_id, touched, now)
