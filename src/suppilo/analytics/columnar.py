"""The columnar route for heavy event analytics: an incrementally maintained DuckDB copy of the event log.

DuckDB's SQLite and PostgreSQL scanner extensions are downloaded from the network on first use, which a self-hosted
install cannot count on, so the route keeps its own copy instead: one DuckDB file per source database under
``<data dir>/columnar/`` holding, per workspace, the columns the event reports need (event id, contact id, time in
microseconds since the epoch, kind, name and a page's path) for events of known contacts. The operational database
stays the source of truth; :func:`sync` brings the copy up to date before every columnar report:

* new events are appended by id (above the copied high-water id; on PostgreSQL a tail of ids below it is re-read
  because sequences can commit out of order, and rows already copied are skipped);
* contact merges recorded since the last sync (``contact_merges``) repoint the copied events, as the merge did in the
  source;
* deleted contacts (their events cascade away) are detected by a count and their events dropped from the copy;
* a copy whose high-water event no longer matches the source (a recreated database) is rebuilt from scratch.

The two reports here — the ordered event funnel with a conversion window and acquisition-cohort retention over
events — give the same answers as the row-store versions in ``service.event_funnel_report`` and
``event_cohorts.event_cohort_report`` (tests compare both on SQLite and PostgreSQL).
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from sqlalchemy import BigInteger, String, case, cast, func, select
from sqlalchemy.orm import Session

from suppilo.contacts.models import Contact, ContactMerge
from suppilo.engine import funnel
from suppilo.errors import DomainError
from suppilo.events.models import Event

FETCH_CHUNK = 200_000
PG_TAIL_IDS = 50_000  # PostgreSQL ids can commit out of order: re-read this many ids below the high-water mark
US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
PAGE_PREFIX = "page:"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        workspace_id INTEGER NOT NULL, id BIGINT NOT NULL, contact_id BIGINT NOT NULL, ts BIGINT NOT NULL,
        kind VARCHAR NOT NULL, name VARCHAR NOT NULL, path VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS sync_state (
        workspace_id INTEGER PRIMARY KEY, high_water BIGINT NOT NULL, high_water_message VARCHAR,
        merge_high_water BIGINT NOT NULL, contact_max BIGINT NOT NULL, contacts_le_max BIGINT NOT NULL,
        rows BIGINT NOT NULL)""",
)


@dataclass(frozen=True, slots=True)
class SyncStats:
    """What one :func:`sync` did."""

    appended: int
    repointed_merges: int
    purged: int
    rebuilt: bool
    rows: int  # events of the workspace in the copy afterwards


class ColumnarStore:
    """The directory holding the DuckDB copies (``<data dir>/columnar``); one file per source database."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def file_for(self, session: Session) -> Path:
        url = session.get_bind().engine.url.render_as_string(hide_password=True)
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return self.directory / f"events-{digest}.duckdb"

    @contextmanager
    def connect(self, session: Session) -> Iterator[duckdb.DuckDBPyConnection]:
        """An exclusive connection to this database's copy (a file lock serialises processes)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.file_for(session)
        with open(path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            con = duckdb.connect(str(path))
            try:
                for ddl in _SCHEMA:
                    con.execute(ddl)
                yield con
            finally:
                con.close()
                fcntl.flock(lock, fcntl.LOCK_UN)


AUTO_THRESHOLD = 250_000
ENGINES = ("auto", "sql", "columnar")


def resolve_engine(session: Session, engine: str, store: ColumnarStore | None) -> str:
    """``sql`` or ``columnar``; ``auto`` picks columnar (when a store is configured) once the event log is large.

    The size estimate is the highest event id of the database (one index lookup, an upper bound of any workspace's
    events), so a small workspace in a large shared database also takes the columnar route — with the same answer.
    """
    if engine not in ENGINES:
        raise DomainError("engine", "engine must be auto, sql or columnar")
    if engine != "auto":
        return engine
    if store is None:
        return "sql"
    top = session.scalar(select(func.max(Event.id))) or 0
    return "columnar" if top >= AUTO_THRESHOLD else "sql"


# --------------------------------------------------------------------------------------------------------------------
# Sync
# --------------------------------------------------------------------------------------------------------------------


def _ts_expr(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", Event.occurred_at) * US_PER_SECOND, BigInteger)
    return cast(Event.occurred_at, String)  # SQLite keeps naive UTC text; DuckDB parses it


def _state(con: duckdb.DuckDBPyConnection, workspace_id: int) -> dict[str, Any] | None:
    cur = con.execute("SELECT * FROM sync_state WHERE workspace_id = ?", [workspace_id])
    row = cur.fetchone()
    if row is None:
        return None
    cols = [d[0] for d in cur.description or ()]
    return dict(zip(cols, row, strict=True))


def _append(con: duckdb.DuckDBPyConnection, session: Session, workspace_id: int, above: int, dedupe: bool) -> int:
    """Copy the workspace's events of known contacts with ``id > above``; returns how many rows were added."""
    pg = session.get_bind().dialect.name == "postgresql"
    path = case((Event.kind == "page", Event.properties["path"].as_string()), else_=None)
    q = (
        select(Event.id, Event.contact_id, _ts_expr(session), Event.kind, Event.name, path)
        .where(Event.workspace_id == workspace_id, Event.contact_id.is_not(None), Event.id > above)
        .order_by(Event.id)
    )
    result = session.execute(q.execution_options(yield_per=FETCH_CHUNK))
    added = 0
    for part in result.partitions(FETCH_CHUNK):
        ids, cids, tss, kinds, names, paths = zip(*part, strict=True)
        batch = {  # noqa: F841 - DuckDB scans this local by name
            "id": np.fromiter(ids, dtype=np.int64, count=len(ids)),
            "contact_id": np.fromiter(cids, dtype=np.int64, count=len(ids)),
            "ts": np.fromiter(tss, dtype=np.int64, count=len(ids)) if pg else np.array(tss, dtype=object),
            "kind": np.array(kinds, dtype=object),
            "name": np.array(names, dtype=object),
            "path": np.array(paths, dtype=object),
        }
        ts_sql = "b.ts" if pg else "epoch_us(CAST(b.ts AS TIMESTAMP))"
        skip = " WHERE b.id NOT IN (SELECT id FROM events WHERE workspace_id = $ws AND id > $above)" if dedupe else ""
        before = con.execute("SELECT count(*) FROM events WHERE workspace_id = ?", [workspace_id]).fetchone()
        con.execute(
            f"INSERT INTO events SELECT $ws, b.id, b.contact_id, {ts_sql}, b.kind, b.name, b.path FROM batch b{skip}",
            {"ws": workspace_id, "above": above} if dedupe else {"ws": workspace_id},
        )
        after = con.execute("SELECT count(*) FROM events WHERE workspace_id = ?", [workspace_id]).fetchone()
        added += int(after[0] if after else 0) - int(before[0] if before else 0)
    return added


def sync(session: Session, con: duckdb.DuckDBPyConnection, workspace_id: int) -> SyncStats:
    """Bring the workspace's copy up to date with the source database (see the module docstring)."""
    pg = session.get_bind().dialect.name == "postgresql"
    state = _state(con, workspace_id)
    rebuilt = False
    if state is not None and state["high_water"] > 0:
        msg = session.scalar(
            select(Event.message_id).where(Event.workspace_id == workspace_id, Event.id == state["high_water"])
        )
        if msg != state["high_water_message"]:
            state = None
            rebuilt = True
    con.execute("BEGIN")
    try:
        if state is None:
            con.execute("DELETE FROM events WHERE workspace_id = ?", [workspace_id])
            state = {"high_water": 0, "merge_high_water": 0, "contact_max": 0, "contacts_le_max": 0}
        # Merges since the last sync repoint the merged contact's events, in the order they happened.
        merges = session.execute(
            select(ContactMerge.id, ContactMerge.contact_id, ContactMerge.merged_id)
            .where(ContactMerge.workspace_id == workspace_id, ContactMerge.id > state["merge_high_water"])
            .order_by(ContactMerge.id)
        ).all()
        for _mid, keep, merged in merges:
            con.execute(
                "UPDATE events SET contact_id = ? WHERE workspace_id = ? AND contact_id = ?",
                [keep, workspace_id, merged],
            )
        merge_hw = max([state["merge_high_water"], *(m[0] for m in merges)])
        # Deleted contacts: fewer contacts at or below the last seen id than merges explain.
        purged = 0
        old_max = int(state["contact_max"])
        now_le = int(
            session.scalar(select(func.count()).where(Contact.workspace_id == workspace_id, Contact.id <= old_max)) or 0
        )
        merged_away = len({m[2] for m in merges if m[2] <= old_max})
        if old_max and now_le != int(state["contacts_le_max"]) - merged_away:
            alive = np.fromiter(
                session.scalars(select(Contact.id).where(Contact.workspace_id == workspace_id)), dtype=np.int64
            )
            alive_ids = {"id": alive}  # noqa: F841 - scanned by DuckDB below
            before = con.execute("SELECT count(*) FROM events WHERE workspace_id = ?", [workspace_id]).fetchone()
            con.execute(
                "DELETE FROM events WHERE workspace_id = ? AND contact_id NOT IN (SELECT id FROM alive_ids)",
                [workspace_id],
            )
            after = con.execute("SELECT count(*) FROM events WHERE workspace_id = ?", [workspace_id]).fetchone()
            purged = int(before[0] if before else 0) - int(after[0] if after else 0)
        contact_max = int(session.scalar(select(func.max(Contact.id)).where(Contact.workspace_id == workspace_id)) or 0)
        contacts_le_max = int(
            session.scalar(select(func.count()).where(Contact.workspace_id == workspace_id, Contact.id <= contact_max))
            or 0
        )
        hw = int(state["high_water"])
        tail = max(hw - PG_TAIL_IDS, 0) if pg and hw else hw
        appended = _append(con, session, workspace_id, tail, dedupe=pg and hw > 0)
        new_hw_row = session.execute(
            select(Event.id, Event.message_id)
            .where(Event.workspace_id == workspace_id, Event.contact_id.is_not(None))
            .order_by(Event.id.desc())
            .limit(1)
        ).first()
        rows_now = con.execute("SELECT count(*) FROM events WHERE workspace_id = ?", [workspace_id]).fetchone()
        new_hw, new_msg = (int(new_hw_row[0]), str(new_hw_row[1])) if new_hw_row else (0, None)
        con.execute(
            "INSERT OR REPLACE INTO sync_state VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                workspace_id,
                max(new_hw, hw),
                new_msg,
                merge_hw,
                contact_max,
                contacts_le_max,
                rows_now[0] if rows_now else 0,
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return SyncStats(appended, len(merges), purged, rebuilt, int(rows_now[0] if rows_now else 0))


def copied_rows(con: duckdb.DuckDBPyConnection, workspace_id: int) -> int:
    row = con.execute("SELECT rows FROM sync_state WHERE workspace_id = ?", [workspace_id]).fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------------------------------------------------
# Ordered event funnel
# --------------------------------------------------------------------------------------------------------------------


def _us(dt: datetime) -> int:
    return int(dt.timestamp()) * US_PER_SECOND + dt.microsecond


def funnel_sql(steps: Sequence[str], *, table: str = "events", with_workspace: bool = True) -> str:
    """The DuckDB query for an ordered funnel; parameters ``$ws`` (when ``with_workspace``), ``$start``, ``$end``
    (microseconds), ``$window`` (microseconds), ``$s1``..``$sN`` (step labels), ``$names`` and ``$paths``.

    Rows are ordered per contact by (time, event id, name-before-page) through one HUGEINT key; every step-1 event is
    a start and each next step is found with an ASOF join (the first step-k event after the previous step's key),
    which is the engine's "earliest occurrence after the previous step" rule.
    """
    n = len(steps)
    ws = "workspace_id = $ws AND " if with_workspace else ""
    key = "(ts::HUGEINT * 4398046511104 + id * 2 + {sub})"
    branches = []
    if any(not st.startswith(PAGE_PREFIX) for st in steps):
        branches.append(
            f"SELECT contact_id AS c, ts, {key.format(sub=0)} AS k, name AS label FROM {table}"
            f" WHERE {ws}ts >= $start AND ts < $end AND list_contains($names, name)"
        )
    if any(st.startswith(PAGE_PREFIX) for st in steps):
        branches.append(
            f"SELECT contact_id AS c, ts, {key.format(sub=1)} AS k, '{PAGE_PREFIX}' || path AS label FROM {table}"
            f" WHERE {ws}ts >= $start AND ts < $end AND kind = 'page' AND list_contains($paths, path)"
        )
    ctes = [f"base AS ({' UNION ALL '.join(branches)})"]
    for k in range(1, n + 1):
        ctes.append(f"st{k} AS (SELECT c, k, ts FROM base WHERE label = $s{k})")
    ctes.append("j1 AS (SELECT c, k AS p1, ts AS t1 FROM st1)")
    for k in range(2, n + 1):
        ctes.append(
            f"j{k} AS (SELECT a.*, b.k AS p{k}, b.ts AS t{k} FROM j{k - 1} a "
            f"ASOF LEFT JOIN st{k} b ON a.c = b.c AND a.p{k - 1} < b.k)"
        )
    cond = "TRUE"
    terms = []
    for k in range(2, n + 1):
        cond = f"{cond} AND p{k} IS NOT NULL AND t{k} - t1 <= $window"
        terms.append(f"CASE WHEN {cond} THEN 1 ELSE 0 END")
    level = "1" + "".join(f" + {t}" for t in terms)
    ctes.append(f"lv AS (SELECT *, {level} AS level FROM j{n})")
    ctes.append("best AS (SELECT * FROM lv QUALIFY row_number() OVER (PARTITION BY c ORDER BY level DESC, p1) = 1)")
    aggs = ["count(*) AS entered"]
    for k in range(2, n + 1):
        aggs.append(f"count(*) FILTER (WHERE level >= {k}) AS n{k}")
        aggs.append(f"median((t{k} - t{k - 1}) / 1e6) FILTER (WHERE level >= {k}) AS mp{k}")
        aggs.append(f"median((t{k} - t1) / 1e6) FILTER (WHERE level >= {k}) AS ms{k}")
    # Only step numbers, a fixed table name and fixed expressions are interpolated; values are parameters.
    return "WITH " + ",\n".join(ctes) + f"\nSELECT {', '.join(aggs)} FROM best"


def funnel_params(
    steps: Sequence[str], window_seconds: float, start_us: int, end_us: int, workspace_id: int | None
) -> dict[str, Any]:
    params: dict[str, Any] = {"start": start_us, "end": end_us, "window": window_seconds * US_PER_SECOND}
    names = sorted({s for s in steps if not s.startswith(PAGE_PREFIX)})
    paths = sorted({s[len(PAGE_PREFIX) :] for s in steps if s.startswith(PAGE_PREFIX)})
    if names:
        params["names"] = names
    if paths:
        params["paths"] = paths
    for k, s in enumerate(steps, start=1):
        params[f"s{k}"] = s
    if workspace_id is not None:
        params["ws"] = workspace_id
    return params


def funnel_result(
    row: Sequence[Any], steps: Sequence[str], window_seconds: float, min_contacts: int
) -> funnel.FunnelResult:
    """The engine's result type from the query's single row (so both routes answer in the same shape)."""
    entered = int(row[0])
    counts = [entered] + [int(row[1 + 3 * (k - 2)]) for k in range(2, len(steps) + 1)]
    out: list[funnel.FunnelStep] = []
    prev = entered
    for i, name in enumerate(steps):
        count = counts[i]
        mp = row[2 + 3 * (i - 1)] if i else None
        ms = row[3 + 3 * (i - 1)] if i else None
        out.append(
            funnel.FunnelStep(
                name,
                count,
                prev - count,
                (count / prev if prev else None) if i else None,
                count / entered if entered else None,
                float(mp) if mp is not None else None,
                float(ms) if ms is not None else None,
            )
        )
        prev = count
    converted = counts[-1]
    if entered == 0:
        flag, reason = True, "no contact entered the funnel"
    elif entered < min_contacts:
        flag, reason = (
            True,
            f"only {entered} contacts entered the funnel (fewer than {min_contacts}): rates are not reliable",
        )
    else:
        flag, reason = False, ""
    return funnel.FunnelResult(
        tuple(out), window_seconds, entered, converted, converted / entered if entered else None, flag, reason
    )


def ordered_funnel(
    con: duckdb.DuckDBPyConnection,
    workspace_id: int,
    steps: Sequence[str],
    window_seconds: float,
    start: datetime,
    end: datetime,
    *,
    min_contacts: int = funnel.MIN_CONTACTS,
) -> funnel.FunnelResult:
    """The ordered funnel over the copy (call :func:`sync` first)."""
    sql = funnel_sql(steps)
    row = con.execute(sql, funnel_params(steps, window_seconds, _us(start), _us(end), workspace_id)).fetchone()
    assert row is not None  # an aggregate without GROUP BY always answers one row
    return funnel_result(row, steps, window_seconds, min_contacts)


# --------------------------------------------------------------------------------------------------------------------
# Acquisition cohorts over events
# --------------------------------------------------------------------------------------------------------------------


def bucket_sql(by: str, col: str = "ts") -> str:
    """The period number of a microsecond timestamp: months since year 0, or weeks (Monday-based) since the epoch."""
    if by == "month":
        return f"(year(make_timestamp({col})) * 12 + month(make_timestamp({col})) - 1)"
    return f"(({col} // {US_PER_DAY}) + 3) // 7"


def cohort_counts(
    con: duckdb.DuckDBPyConnection,
    workspace_id: int,
    by: str,
    end: datetime,
    start_event: str | None,
    return_event: str | None,
    first_bucket: int | None,
    last_bucket: int,
    max_periods: int,
) -> tuple[dict[int, int], dict[tuple[int, int], int]]:
    """Cohort sizes by acquisition period and active contacts by (cohort, periods since)."""
    b = bucket_sql(by)
    start_f = "AND name = $start_event" if start_event else ""
    ret_f = "AND name = $return_event" if return_event else ""
    params: dict[str, Any] = {
        "ws": workspace_id,
        "end": _us(end),
        "lo": first_bucket if first_bucket is not None else -(2**62),
        "hi": last_bucket,
        "maxk": max_periods,
    }
    if start_event:
        params["start_event"] = start_event
    if return_event:
        params["return_event"] = return_event
    sql = f"""
WITH acq AS (
    SELECT contact_id AS c, min({b}) AS b0 FROM events
     WHERE workspace_id = $ws AND ts < $end {start_f} GROUP BY contact_id
),
kept AS (SELECT * FROM acq WHERE b0 >= $lo AND b0 <= $hi),
act AS (
    SELECT DISTINCT contact_id AS c, {b} AS b1 FROM events WHERE workspace_id = $ws AND ts < $end {ret_f}
)
SELECT k.b0, a.b1 - k.b0 AS off, count(*) FROM kept k JOIN act a ON a.c = k.c
 WHERE a.b1 >= k.b0 AND a.b1 - k.b0 <= $maxk GROUP BY ALL
UNION ALL
SELECT b0, -1, count(*) FROM kept GROUP BY b0
"""
    sizes: dict[int, int] = {}
    active: dict[tuple[int, int], int] = {}
    for b0, off, n in con.execute(sql, params).fetchall():
        if off == -1:
            sizes[int(b0)] = int(n)
        else:
            active[(int(b0), int(off))] = int(n)
    return sizes, active


def month_bucket(d: date) -> int:
    return d.year * 12 + d.month - 1


def week_bucket(d: date) -> int:
    return (d.toordinal() - date(1970, 1, 1).toordinal() + 3) // 7
