"""The DuckDB columnar route answers exactly like the row-store route, and its copy follows the source database."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import delete, insert

from suppilo.analytics import columnar, event_cohorts, service
from suppilo.contacts.merge import merge_contacts
from suppilo.contacts.models import Contact
from suppilo.events.models import Event

NAMES = ["Visit", "Form Submitted", "Demo Booked", "Order Completed", "Other"]
PATHS = ["/pricing", "/", "/blog"]
FROM, TO = date(2025, 1, 1), date(2025, 6, 30)
_msg = itertools.count(1)


def _contacts(session, ws: int, n: int) -> list[int]:
    ids = []
    for i in range(n):
        c = Contact(workspace_id=ws, email=f"col{i}-{ws}-{next(_msg)}@example.fi", lifecycle_stage="awareness")
        session.add(c)
        session.flush()
        ids.append(c.id)
    return ids


def _events(session, ws: int, contacts: list[int], rng: random.Random, per_contact: int = 25) -> None:
    rows = []
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for cid in contacts:
        for _ in range(rng.randint(1, per_contact)):
            # Whole hours over half a year, so that ties in time happen and must keep the id order.
            at = base + timedelta(hours=rng.randint(0, 24 * 185))
            if rng.random() < 0.3:
                kind, name, props = "page", "Page", {"path": rng.choice(PATHS)}
            else:
                kind, name, props = "track", rng.choice(NAMES), {}
            rows.append(
                {
                    "workspace_id": ws,
                    "contact_id": cid,
                    "kind": kind,
                    "name": name,
                    "properties": props,
                    "context": {},
                    "occurred_at": at,
                    "received_at": at,
                    "message_id": f"col-{next(_msg)}",
                }
            )
    rng.shuffle(rows)  # ids are not in time order
    session.execute(insert(Event), rows)
    session.flush()


FUNNELS = [
    (["Visit", "Form Submitted", "Demo Booked", "Order Completed"], 7),
    (["page:/pricing", "Form Submitted", "Order Completed"], 30),
    (["Visit", "Visit", "page:/pricing", "Visit"], 3.5),
    (["Page", "page:/pricing", "Demo Booked"], 14),
]


def _compare(session, ws: int, store: columnar.ColumnarStore) -> None:
    for steps, window in FUNNELS:
        sql = service.event_funnel_report(session, ws, steps, window, FROM, TO, min_contacts=1, engine="sql")
        col = service.event_funnel_report(
            session, ws, steps, window, FROM, TO, min_contacts=1, engine="columnar", store=store
        )
        assert sql["engine"] == "sql" and col["engine"] == "columnar"
        assert sql["entered"] > 0
        for a, b in zip(sql["steps"], col["steps"], strict=True):
            for key, va in a.items():
                vb = b[key]
                if isinstance(va, float):
                    assert vb == pytest.approx(va, rel=1e-9, abs=1e-6), (steps, key)
                else:
                    assert vb == va, (steps, key)
        for key in ("entered", "converted", "overall_conversion", "insufficient_data", "reason", "window_seconds"):
            assert col[key] == sql[key]
    for by, start_event, return_event, frm in [
        ("month", None, None, None),
        ("week", None, None, date(2025, 2, 1)),
        ("month", "Form Submitted", "Order Completed", None),
        ("week", "Visit", None, None),
    ]:
        kw = {"by": by, "start_event": start_event, "return_event": return_event, "date_from": frm, "date_to": TO}
        sql_c = event_cohorts.event_cohort_report(session, ws, engine="sql", **kw)
        col_c = event_cohorts.event_cohort_report(session, ws, engine="columnar", store=store, **kw)
        assert sql_c["cohorts"] and sql_c["cohorts"] == col_c["cohorts"], (by, start_event, return_event)


@pytest.mark.parametrize("compact_at", [0, 10**9], ids=["sorted-main", "unsorted-tail"])
def test_columnar_equals_row_store_and_follows_changes(
    session, workspace, other_workspace, tmp_path, monkeypatch, compact_at
) -> None:
    # Both storage paths: every sync folds new rows into the sorted main part, or they all stay in the tail.
    monkeypatch.setattr(columnar, "COMPACT_MIN_ROWS", compact_at)
    monkeypatch.setattr(columnar, "COMPACT_SHARE", 0.0)
    rng = random.Random(7)
    ws = workspace.id
    store = columnar.ColumnarStore(tmp_path / "columnar")
    ids = _contacts(session, ws, 60)
    _events(session, ws, ids, rng)
    # Another workspace's events must never leak into this one's copy.
    _events(session, other_workspace.id, _contacts(session, other_workspace.id, 10), rng)
    session.commit()
    _compare(session, ws, store)

    with store.connect(session) as con:
        stats = columnar.sync(session, con, ws)
        assert stats.appended == 0 and not stats.rebuilt  # already current: nothing to copy
    # New events, a merge and a deleted contact: the copy follows all three.
    _events(session, ws, ids[:20], rng, per_contact=10)
    merge_contacts(session, ws, ids[0], ids[1], reason="test", actor=None)
    session.execute(delete(Contact).where(Contact.workspace_id == ws, Contact.id == ids[2]))
    session.commit()
    with store.connect(session) as con:
        if compact_at == 0:  # a rescoring's sync leaves the tail for the next one to fold in
            held = columnar.sync(session, con, ws, compaction=False)
            assert held.appended > 0 and not held.compacted
            assert con.execute(f"SELECT count(*) FROM {columnar.tail_table(ws)}").fetchone()[0] >= held.appended
        stats = columnar.sync(session, con, ws)
        assert (stats.appended > 0 and stats.repointed_merges == 1 and stats.purged > 0) or compact_at == 0
        assert stats.compacted == (compact_at == 0)
        for table in (columnar.main_table(ws), columnar.tail_table(ws)):
            moved = con.execute(f"SELECT count(*) FROM {table} WHERE contact_id IN (?, ?)", [ids[1], ids[2]]).fetchone()
            assert moved == (0,)
        # The main part stays sorted by (contact, time, id): what the reports rely on.
        main = con.execute(f"SELECT contact_id, ts, id FROM {columnar.main_table(ws)}").fetchall()
        assert main == sorted(main) and (len(main) > 0) == (compact_at == 0)
    _compare(session, ws, store)
    # A merge after compaction: the merged contact's rows leave the sorted part and join the survivor's.
    merge_contacts(session, ws, ids[3], ids[4], reason="test", actor=None)
    session.commit()
    monkeypatch.setattr(columnar, "COMPACT_MIN_ROWS", 10**9)
    _compare(session, ws, store)


def test_week_labels_and_grid_by_hand(session, workspace, tmp_path) -> None:
    ws = workspace.id
    a, b, c = _contacts(session, ws, 3)

    def ev(cid: int, day: str, name: str = "Visit") -> dict:
        at = datetime.fromisoformat(day).replace(hour=10, tzinfo=UTC)
        return {
            "workspace_id": ws,
            "contact_id": cid,
            "kind": "track",
            "name": name,
            "properties": {},
            "context": {},
            "occurred_at": at,
            "received_at": at,
            "message_id": f"h-{next(_msg)}",
        }

    # Monday 2025-03-03 starts ISO week 10; Sunday 2025-03-09 is still in it; Sunday 2025-03-23 ends week 12.
    session.execute(
        insert(Event),
        [ev(a, "2025-03-03"), ev(a, "2025-03-12"), ev(b, "2025-03-09"), ev(b, "2025-03-19"), ev(c, "2025-03-10")],
    )
    session.commit()
    store = columnar.ColumnarStore(tmp_path)
    for engine in ("sql", "columnar"):
        rep = event_cohorts.event_cohort_report(
            session, ws, by="week", date_to=date(2025, 3, 23), engine=engine, store=store
        )
        assert [(r["cohort"], r["start"], r["contacts"], r["retained"]) for r in rep["cohorts"]] == [
            ("2025-W10", "2025-03-03", 2, [2, 1, 1]),
            ("2025-W11", "2025-03-10", 1, [1, 0]),
        ]
        rep = event_cohorts.event_cohort_report(
            session, ws, by="month", date_to=date(2025, 4, 30), engine=engine, store=store
        )
        assert rep["cohorts"] == [
            {"cohort": "2025-03", "start": "2025-03-01", "contacts": 3, "retained": [3, 0], "retention": [1.0, 0.0]}
        ]
    empty = event_cohorts.event_cohort_report(session, ws, by="month", start_event="Nothing", engine="sql")
    assert empty["insufficient_data"] and empty["cohorts"] == []
    with pytest.raises(Exception, match="by must be"):
        event_cohorts.event_cohort_report(session, ws, by="day")


def test_auto_engine_picks_by_size(session, workspace, tmp_path, monkeypatch) -> None:
    store = columnar.ColumnarStore(tmp_path)
    assert columnar.resolve_engine(session, "auto", None) == "sql"
    monkeypatch.setattr(columnar, "AUTO_THRESHOLD", 0)
    assert columnar.resolve_engine(session, "auto", store) == "columnar"
    monkeypatch.setattr(columnar, "AUTO_THRESHOLD", 10**12)
    assert columnar.resolve_engine(session, "auto", store) == "sql"
    with pytest.raises(Exception, match="engine must be"):
        columnar.resolve_engine(session, "fast", store)


def test_recreated_source_rebuilds_the_copy(session, workspace, tmp_path) -> None:
    ws = workspace.id
    ids = _contacts(session, ws, 5)
    _events(session, ws, ids, random.Random(1), per_contact=5)
    session.commit()
    store = columnar.ColumnarStore(tmp_path)
    with store.connect(session) as con:
        first = columnar.sync(session, con, ws)
        # Pretend the copy was made from another database: its high-water event is not this one.
        con.execute("UPDATE sync_state SET high_water_message = 'elsewhere' WHERE workspace_id = ?", [ws])
        again = columnar.sync(session, con, ws)
    assert again.rebuilt and again.rows == first.rows


def test_rows_tied_in_time_across_main_and_tail_keep_event_id_order(session, workspace, tmp_path, monkeypatch) -> None:
    ws = workspace.id
    keep, merged = _contacts(session, ws, 2)
    at = datetime(2025, 3, 3, 10, tzinfo=UTC)

    def ev(cid: int, name: str) -> None:
        session.execute(
            insert(Event),
            [
                {
                    "workspace_id": ws,
                    "contact_id": cid,
                    "kind": "track",
                    "name": name,
                    "properties": {},
                    "context": {},
                    "occurred_at": at,
                    "received_at": at,
                    "message_id": f"tie-{next(_msg)}",
                }
            ],
        )
        session.flush()

    ev(merged, "Form Submitted")  # the lower id, same instant
    ev(keep, "Visit")
    session.commit()
    store = columnar.ColumnarStore(tmp_path)
    monkeypatch.setattr(columnar, "COMPACT_MIN_ROWS", 0)
    monkeypatch.setattr(columnar, "COMPACT_SHARE", 0.0)
    with store.connect(session) as con:
        assert columnar.sync(session, con, ws).compacted
    # The merge moves the form (lower id) into the tail under the kept contact, tied in time with its visit (main).
    merge_contacts(session, ws, keep, merged, reason="test", actor=None)
    session.commit()
    monkeypatch.setattr(columnar, "COMPACT_MIN_ROWS", 10**9)
    kw = {"min_contacts": 1}
    sql = service.event_funnel_report(session, ws, ["Visit", "Form Submitted"], 7, FROM, TO, engine="sql", **kw)
    col = service.event_funnel_report(
        session, ws, ["Visit", "Form Submitted"], 7, FROM, TO, engine="columnar", store=store, **kw
    )
    # By event id the form came first, so the visit is not followed by it.
    assert [s["count"] for s in sql["steps"]] == [s["count"] for s in col["steps"]] == [1, 0]
    sql = service.event_funnel_report(session, ws, ["Form Submitted", "Visit"], 7, FROM, TO, engine="sql", **kw)
    col = service.event_funnel_report(
        session, ws, ["Form Submitted", "Visit"], 7, FROM, TO, engine="columnar", store=store, **kw
    )
    assert [s["count"] for s in sql["steps"]] == [s["count"] for s in col["steps"]] == [1, 1]
