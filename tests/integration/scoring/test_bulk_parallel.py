"""A full rescoring split by contact-id ranges over worker processes (``bulk.rescore_parallel``) stores exactly what
the single-process set-based rescoring stores, and a range that fails leaves nothing of itself written."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from suppilo.contacts.models import Contact
from suppilo.scoring import bulk
from suppilo.scoring.models import ContactScore, ScoreChange
from tests.integration.scoring.test_bulk_parity import (
    COUNTRIES,
    EVENTS,
    ICPS,
    T0,
    T1,
    TAGS,
    TITLES,
    _build,
    _change,
    _icp_names,
    _stored,
)

RULES = {
    "half_life_days": 7.5,
    "rules": [
        {"key": "any_page", "kind": "page", "points": 1.5, "max_per_period": 2, "period_days": 3},
        {"key": "careers", "kind": "page", "where": [{"path": "path", "op": "contains", "value": "career"}],
         "points": -4},
        {"key": "opens", "event": "email_opened", "points": 0.7, "max_per_period": 1},
        {"key": "order", "event": "Order Completed", "points": 25},
    ],
    "stage_thresholds": [{"min_score": 3, "from_stages": ["interest"], "to_stage": "consideration"}],
}  # fmt: skip
COMPANIES = [
    {"industry": "Software", "employees": 50, "revenue": None, "currency": "EUR", "country": "FI", "budget": None},
    {"industry": "Retail", "employees": None, "revenue": 90_000_000, "currency": "EUR", "country": None,
     "budget": 150_000},
    {"industry": None, "employees": 900, "revenue": None, "currency": "EUR", "country": "DE", "budget": None},
]  # fmt: skip
PEOPLE = [
    {
        "company": None if i % 7 == 0 else i % 3, "country": COUNTRIES[i % len(COUNTRIES)],
        "title": TITLES[i % len(TITLES)], "tags": [TAGS[i % 3]] if i % 2 else [], "budget": None,
        "events": [((i + j) % len(EVENTS), timedelta(days=-((i + 3 * j) % 40), hours=-j)) for j in range(i % 6)],
        "later": [(j % len(EVENTS), timedelta(hours=-j)) for j in range(i % 3)],
    }
    for i in range(60)
]  # fmt: skip


def _two_workspaces(session_factory: Any) -> tuple[tuple[int, list[int], list[int]], tuple[int, list[int], list[int]]]:
    with session_factory() as session:
        a, a_companies, a_ids = _build(session, COMPANIES, PEOPLE, ICPS, RULES, False)
        b, b_companies, b_ids = _build(session, COMPANIES, PEOPLE, ICPS, RULES, False)
        session.commit()
    return (a, a_companies, a_ids), (b, b_companies, b_ids)


def _state(session_factory: Any, ws: int, ids: list[int]) -> tuple[Any, ...]:
    with session_factory() as session:
        pos = {cid: i for i, cid in enumerate(ids)}
        stages = sorted(
            (pos[c.id], c.lifecycle_stage) for c in session.scalars(select(Contact).where(Contact.workspace_id == ws))
        )
        return (*_stored(session, ws, ids, _icp_names(session, ws)), stages)


def _single(session_factory: Any, ws: int, now: Any) -> dict[str, bulk.service.ScoreWrite]:
    with session_factory() as session:
        result = bulk.rescore_all(session, ws, now=now)
        session.commit()
    return result


@pytest.mark.parametrize("copy", [False, True], ids=["row_store", "columnar_copy"])
def test_parallel_rescoring_equals_one_process(session_factory, database_url, tmp_path, copy):
    """Also with the columnar copy of the event log: synced by the parent (new events after the edits included),
    read by both workers at once through read-only connections."""
    from suppilo.analytics.columnar import ColumnarStore

    store = ColumnarStore(tmp_path / "columnar") if copy else None
    (a, a_companies, a_ids), (b, b_companies, b_ids) = _two_workspaces(session_factory)
    for now, edit in ((T0, False), (T1, True), (T1, False)):  # first scoring, after changes, same moment again
        if edit:
            with session_factory() as session:
                _change(session, a, a_companies, a_ids, PEOPLE)
                _change(session, b, b_companies, b_ids, PEOPLE)
                session.commit()
        want = _single(session_factory, a, now)
        done: list[int] = []
        got = bulk.rescore_parallel(
            database_url, b, now=now, processes=2, range_size=7, progress=done.append, store=store
        )
        assert _state(session_factory, b, b_ids) == _state(session_factory, a, a_ids)
        if store is not None:
            with session_factory() as session:
                assert store.exists(session)
        assert sum(done) == 2 * len(b_ids)
        for kind in ("fit", "engagement"):
            assert got[kind].scored == want[kind].scored
            assert [b_ids.index(c) for c in got[kind].changed] == [a_ids.index(c) for c in want[kind].changed]
    # the stage threshold moved someone (so the comparison above covered stage moves too)
    assert any(stage == "consideration" for _, stage in _state(session_factory, b, b_ids)[2])


def _refuse_scores_of(session_factory: Any, contact_id: int) -> str:
    """A trigger making the database refuse the engagement row of this contact (a real write failure in one range,
    after its fit rows were written in the same transaction)."""
    name = f"refuse_{secrets.token_hex(4)}"
    with session_factory() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.execute(
                text(
                    f"CREATE TRIGGER {name} BEFORE INSERT ON contact_scores "
                    f"WHEN NEW.contact_id = {contact_id} AND NEW.kind = 'engagement' "
                    "BEGIN SELECT RAISE(ABORT, 'score refused'); END"
                )
            )
        else:
            session.execute(
                text(
                    f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.contact_id = {contact_id} AND NEW.kind = 'engagement' THEN "
                    "RAISE EXCEPTION 'score refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            session.execute(
                text(f"CREATE TRIGGER {name} BEFORE INSERT ON contact_scores FOR EACH ROW EXECUTE FUNCTION {name}()")
            )
        session.commit()
    return name


def _drop(session_factory: Any, name: str) -> None:
    with session_factory() as session:
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text(f"DROP TRIGGER {name}"))
        else:
            session.execute(text(f"DROP TRIGGER {name} ON contact_scores"))
            session.execute(text(f"DROP FUNCTION {name}()"))
        session.commit()


def test_a_failed_range_is_reported_leaves_nothing_half_written_and_a_rerun_completes(session_factory, database_url):
    (a, _, a_ids), (b, _, b_ids) = _two_workspaces(session_factory)
    bad = b_ids[23]  # in the fourth range of 7 (ids 21..27 of the list); it has events
    trigger = _refuse_scores_of(session_factory, bad)
    try:
        with pytest.raises(bulk.RangesFailed) as failure:
            bulk.rescore_parallel(database_url, b, now=T0, processes=2, range_size=7)
    finally:
        _drop(session_factory, trigger)
    assert [(lo, hi) for lo, hi, _ in failure.value.failed] == [(b_ids[21], b_ids[27])]
    assert "score refused" in failure.value.failed[0][2]
    with session_factory() as session:
        scored = set(session.scalars(select(ContactScore.contact_id).where(ContactScore.workspace_id == b)))
        history = set(session.scalars(select(ScoreChange.contact_id).where(ScoreChange.workspace_id == b)))
        moved = {
            c.id for c in session.scalars(select(Contact).where(Contact.workspace_id == b))
            if c.lifecycle_stage != "interest"
        }  # fmt: skip
    failed_range = set(b_ids[21:28])
    assert not scored & failed_range and not history & failed_range and not moved & failed_range  # none of it
    assert set(b_ids) - failed_range <= scored  # every other range stored (each contact has a fit row)
    # the same run again completes it: everything equals a single-process rescoring
    bulk.rescore_parallel(database_url, b, now=T0, processes=2, range_size=7)
    _single(session_factory, a, T0)
    assert _state(session_factory, b, b_ids) == _state(session_factory, a, a_ids)


def test_fit_work_shared_between_ranges_follows_an_icp_change(session_factory):
    """A worker keeps the fit of each distinct set of facts from one range for the next (``bulk_fit(shared=)``):
    the ranges store what one call over every contact stores, and after an ICP's weights (and an exchange rate)
    changed between calls nothing is answered from what was kept."""
    from datetime import date
    from decimal import Decimal

    from suppilo.analytics import service as analytics_service
    from suppilo.analytics.schemas import RateCreate
    from suppilo.scoring import service
    from suppilo.scoring.schemas import IcpUpdate

    (a, _, a_ids), (b, _, b_ids) = _two_workspaces(session_factory)

    def ranges(ws: int, ids: list[int], shared: dict) -> None:
        with session_factory() as session:
            for i in range(0, len(ids), 7):
                bulk.bulk_fit(session, ws, None, T0, bounds=(ids[i], ids[min(i + 7, len(ids)) - 1]), shared=shared)
            session.commit()

    def whole(ws: int) -> None:
        with session_factory() as session:
            bulk.bulk_fit(session, ws, None, T0)
            session.commit()

    shared: dict = {}
    ranges(b, b_ids, shared)
    whole(a)
    assert _state(session_factory, b, b_ids) == _state(session_factory, a, a_ids)
    kept = len(shared["memo"])
    assert kept > 0
    for ws in (a, b):
        with session_factory() as session:
            first = service.list_icps(session, ws)[0]
            heavier = {**ICPS[0], "industries": {**ICPS[0]["industries"], "weight": 70}}  # the same criteria
            service.update_icp(session, ws, first.id, IcpUpdate(definition=heavier))
            analytics_service.upsert_rates(
                session, ws, [RateCreate(date=date(2026, 2, 1), base="USD", quote="EUR", rate=Decimal("0.5"))]
            )
            session.commit()
    ranges(b, b_ids, shared)
    whole(a)
    assert _state(session_factory, b, b_ids) == _state(session_factory, a, a_ids)
