"""The columnar route for heavy event analytics: an incrementally maintained DuckDB copy of the event log.

DuckDB's SQLite and PostgreSQL scanner extensions are downloaded from the network on first use, which a self-hosted
install cannot count on, so the route keeps its own copy instead: one DuckDB file per source database under
``<data dir>/columnar/`` holding, per workspace, the columns the event reports need for events of known contacts.

Layout (``LAYOUT`` in the file name; an older file is simply ignored and can be deleted):

* ``names(code, name)``, ``kinds(code, kind)`` and ``paths(code, path)``: dictionaries of event names, call kinds
  (``page``, ``track``, …) and page paths, so rows carry small integers and a step filter is an integer comparison;
* ``main_<workspace>(id, contact_id, ts, name_id, path_id, kind_id, path_text, machine)``: the bulk of the
  workspace's events, **stored sorted by (contact, time, event id)**, so a scan returns every contact's events
  together and in order. ``path_id`` is the page path as text (whatever JSON value ``properties.path`` holds);
  ``path_text`` says whether that value is a JSON string, and ``machine`` what ``properties.machine`` is (0 false,
  1 true, 2 another value, NULL none) — what the default engagement rules test (layout v3, for
  ``scoring.bulk``);
* ``tail_<workspace>``: the same columns, rows appended since the last compaction, unsorted. A report reads the main
  part in stored order and re-sorts only the contacts that have tail rows; :func:`sync` folds the tail into the
  main part (one sorted rewrite) once it holds more than ``COMPACT_MIN_ROWS`` rows and ``COMPACT_SHARE`` of the
  main part.

The operational database stays the source of truth; :func:`sync` brings the copy up to date before every columnar
report:

* new events are appended by id (above the copied high-water id; on PostgreSQL a tail of ids below it is re-read
  because sequences can commit out of order, and rows already copied are skipped);
* contact merges recorded since the last sync (``contact_merges``) move the merged contact's rows to the tail under
  the surviving contact, as the merge did in the source;
* deleted contacts (their events cascade away) are detected by a count and their events dropped from the copy;
* a copy whose high-water event no longer matches the source (a recreated database) is rebuilt from scratch.

The reports read only the needed integer columns in stored order (no sort, no join) and finish in numpy with linear
passes: the ordered funnel through ``engine.funnel.ordered_funnel_grouped`` and the cohort grid through
:func:`cohort_counts`. They give the same answers as the row-store versions in ``service.event_funnel_report`` and
``event_cohorts.event_cohort_report`` (tests compare both on SQLite and PostgreSQL).
"""

from __future__ import annotations

import dataclasses
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
import numpy.typing as npt
from sqlalchemy import BigInteger, String, case, cast, func, literal_column, select
from sqlalchemy.orm import Session

from suppilo import gc_freeze
from suppilo.contacts.models import Contact, ContactMerge
from suppilo.engine import funnel
from suppilo.errors import DomainError
from suppilo.events.models import Event

LAYOUT = "v3"
FETCH_CHUNK = 200_000
PG_TAIL_IDS = 50_000  # PostgreSQL ids can commit out of order: re-read this many ids below the high-water mark
COMPACT_MIN_ROWS = 50_000  # fold the tail into the sorted main part once it is at least this long ...
COMPACT_SHARE = 0.02  # ... and this share of the main part
US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
PAGE_PREFIX = "page:"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS names (code INTEGER PRIMARY KEY, name VARCHAR NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS paths (code INTEGER PRIMARY KEY, path VARCHAR NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS kinds (code INTEGER PRIMARY KEY, kind VARCHAR NOT NULL UNIQUE)",
    """CREATE TABLE IF NOT EXISTS sync_state (
        workspace_id INTEGER PRIMARY KEY, high_water BIGINT NOT NULL, high_water_message VARCHAR,
        merge_high_water BIGINT NOT NULL, contact_max BIGINT NOT NULL, contacts_le_max BIGINT NOT NULL,
        rows BIGINT NOT NULL)""",
)
_COLUMNS = (
    "id BIGINT NOT NULL, contact_id BIGINT NOT NULL, ts BIGINT NOT NULL, name_id INTEGER NOT NULL, path_id INTEGER,"
    " kind_id INTEGER NOT NULL, path_text BOOLEAN, machine TINYINT"
)


def main_table(workspace_id: int) -> str:
    return f"main_{int(workspace_id)}"


def tail_table(workspace_id: int) -> str:
    return f"tail_{int(workspace_id)}"


def ensure_tables(con: duckdb.DuckDBPyConnection, workspace_id: int) -> None:
    for table in (main_table(workspace_id), tail_table(workspace_id)):
        con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({_COLUMNS})")


@dataclass(frozen=True, slots=True)
class SyncStats:
    """What one :func:`sync` did."""

    appended: int
    repointed_merges: int
    purged: int
    rebuilt: bool
    rows: int  # events of the workspace in the copy afterwards
    compacted: bool = False


class ColumnarStore:
    """The directory holding the DuckDB copies (``<data dir>/columnar``); one file per source database."""

    def __init__(self, directory: Path, threads: int | None = None) -> None:
        self.directory = Path(directory)
        self.threads = threads

    def file_for(self, session: Session) -> Path:
        url = session.get_bind().engine.url.render_as_string(hide_password=True)
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        return self.directory / f"events-{LAYOUT}-{digest}.duckdb"

    def exists(self, session: Session) -> bool:
        """Whether this database's copy has been built (by an event report, or a sync)."""
        return self.file_for(session).exists()

    @contextmanager
    def connect(self, session: Session) -> Iterator[duckdb.DuckDBPyConnection]:
        """An exclusive connection to this database's copy (a file lock serialises processes)."""
        with self._locked(session, read_only=False) as con:
            yield con

    @contextmanager
    def read(self, session: Session) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to this database's copy, as it was last synced: any number of processes read at
        once (a shared file lock); a sync or report, which take the lock exclusively, waits for them."""
        with self._locked(session, read_only=True) as con:
            yield con

    @contextmanager
    def _locked(self, session: Session, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.file_for(session)
        with open(path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH if read_only else fcntl.LOCK_EX)
            con = open_store(path, self.threads, read_only=read_only)
            try:
                yield con
            finally:
                con.close()
                fcntl.flock(lock, fcntl.LOCK_UN)


def open_store(path: Path | str, threads: int | None = None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to a copy with its schema in place (``read_only``: as it is); ``threads`` (default: DuckDB's,
    one per core)."""
    con = duckdb.connect(str(path), read_only=read_only)
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if not read_only:
        for ddl in _SCHEMA:
            con.execute(ddl)
    return con


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
# Writing: append, compact, sync
# --------------------------------------------------------------------------------------------------------------------


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def workspace_rows(con: duckdb.DuckDBPyConnection, workspace_id: int) -> int:
    ensure_tables(con, workspace_id)
    return _count(con, f"SELECT count(*) FROM {main_table(workspace_id)}") + _count(
        con, f"SELECT count(*) FROM {tail_table(workspace_id)}"
    )


def append_arrays(
    con: duckdb.DuckDBPyConnection,
    workspace_id: int,
    ids: npt.ArrayLike,
    contact_ids: npt.ArrayLike,
    ts_us: npt.ArrayLike,
    names: npt.ArrayLike,
    paths: npt.ArrayLike,
    kinds: npt.ArrayLike,
    path_text: npt.ArrayLike,
    machine: npt.ArrayLike,
    *,
    skip_above: int | None = None,
) -> int:
    """Append events (time in microseconds since the epoch; ``paths`` None except for page views, ``path_text``
    whether that path is a JSON string, ``machine`` the code of ``properties.machine``) to the tail, coding names,
    kinds and paths through the dictionaries; with ``skip_above`` rows whose id above it is already in the copy are
    skipped. Returns how many rows were added."""
    ensure_tables(con, workspace_id)
    main, tail = main_table(workspace_id), tail_table(workspace_id)
    batch = {  # noqa: F841 - DuckDB scans this local by name
        "id": np.asarray(ids, dtype=np.int64),
        "contact_id": np.asarray(contact_ids, dtype=np.int64),
        "ts": np.asarray(ts_us, dtype=np.int64),
        "name": np.asarray(names, dtype=object),
        "path": np.asarray(paths, dtype=object),
        "kind": np.asarray(kinds, dtype=object),
        "path_text": np.asarray(path_text, dtype=object),
        "machine": np.asarray(machine, dtype=object),
    }
    for table, col in (("names", "name"), ("paths", "path"), ("kinds", "kind")):
        con.execute(
            f"INSERT INTO {table} SELECT (SELECT coalesce(max(code), 0) FROM {table})"
            " + row_number() OVER (ORDER BY v), v"
            f" FROM (SELECT DISTINCT {col} AS v FROM batch WHERE {col} IS NOT NULL"
            f" AND {col} NOT IN (SELECT {col} FROM {table}))"
        )
    skip = ""
    params: dict[str, Any] = {}
    if skip_above is not None:
        skip = (
            f" WHERE b.id <= $above OR b.id NOT IN (SELECT id FROM {main} WHERE id > $above"
            f" UNION ALL SELECT id FROM {tail} WHERE id > $above)"
        )
        params["above"] = skip_above
    before = _count(con, f"SELECT count(*) FROM {tail}")
    con.execute(
        f"INSERT INTO {tail} SELECT b.id, b.contact_id, b.ts, n.code, p.code, k.code, b.path_text::BOOLEAN,"
        f" b.machine::TINYINT"
        f" FROM batch b JOIN names n ON n.name = b.name JOIN kinds k ON k.kind = b.kind"
        f" LEFT JOIN paths p ON p.path = b.path{skip}",
        params or None,
    )
    return _count(con, f"SELECT count(*) FROM {tail}") - before


def compact(con: duckdb.DuckDBPyConnection, workspace_id: int) -> None:
    """Fold the tail into the main part: one rewrite sorted by (contact, time, event id)."""
    ensure_tables(con, workspace_id)
    main, tail = main_table(workspace_id), tail_table(workspace_id)
    con.execute(
        f"CREATE OR REPLACE TABLE {main} AS SELECT * FROM (SELECT * FROM {main} UNION ALL SELECT * FROM {tail})"
        " ORDER BY contact_id, ts, id"
    )
    con.execute(f"DELETE FROM {tail}")


def needs_compaction(con: duckdb.DuckDBPyConnection, workspace_id: int) -> bool:
    tail_rows = _count(con, f"SELECT count(*) FROM {tail_table(workspace_id)}")
    main_rows = _count(con, f"SELECT count(*) FROM {main_table(workspace_id)}")
    return tail_rows > 0 and tail_rows >= COMPACT_MIN_ROWS and tail_rows >= COMPACT_SHARE * main_rows


def epoch_us_expr(session: Session, col: Any) -> Any:
    """A UTC time column as microseconds since the epoch (PostgreSQL) or as its stored text (SQLite keeps naive UTC
    text); :func:`epoch_us_array` turns the fetched values into int64 microseconds."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", col) * US_PER_SECOND, BigInteger)
    return cast(col, String)


def epoch_us_array(session: Session, values: Sequence[Any]) -> np.ndarray:
    if session.get_bind().dialect.name == "postgresql":
        return np.fromiter(values, dtype=np.int64, count=len(values))
    return np.array(values, dtype="datetime64[us]").astype(np.int64)  # "YYYY-MM-DD HH:MM:SS[.ffffff]"


def _by_id(session: Session, workspace_id: int) -> list[Any]:
    """The workspace's events of known contacts, for reads in event-id order: on SQLite the two tests are written so
    that no index can serve them (``+column``), which leaves the primary key — SQLite otherwise walked every event
    of the workspace through the (workspace, contact, time) index and sorted them, 3.5 s at 2,000,000 events for
    a sync with nothing to copy."""
    if session.get_bind().dialect.name == "sqlite":
        table = Event.__tablename__
        return [
            literal_column(f"+{table}.workspace_id") == workspace_id,
            literal_column(f"+{table}.contact_id").is_not(None),
        ]
    return [Event.workspace_id == workspace_id, Event.contact_id.is_not(None)]


def _path_is_text(session: Session) -> Any:
    """For a page view, whether ``properties.path`` is a JSON string (NULL for other events)."""
    if session.get_bind().dialect.name == "postgresql":
        is_text = func.jsonb_typeof(Event.properties.op("->")("path")) == "string"
    else:
        is_text = func.json_type(Event.properties, "$.path") == "text"
    return case((Event.kind == "page", is_text), else_=None)


def _machine_code(session: Session) -> Any:
    """``properties.machine`` as 0 (false), 1 (true), 2 (another JSON value) or NULL (missing or null)."""
    if session.get_bind().dialect.name == "postgresql":
        t = func.jsonb_typeof(Event.properties.op("->")("machine"))
        is_true = Event.properties.op("->>")("machine") == "true"
        return case((t == "boolean", case((is_true, 1), else_=0)), (t.is_(None) | (t == "null"), None), else_=2)
    t = func.json_type(Event.properties, "$.machine")
    return case((t == "false", 0), (t == "true", 1), (t.is_(None) | (t == "null"), None), else_=2)


def _ts_expr(session: Session) -> Any:
    return epoch_us_expr(session, Event.occurred_at)


def _state(con: duckdb.DuckDBPyConnection, workspace_id: int) -> dict[str, Any] | None:
    cur = con.execute("SELECT * FROM sync_state WHERE workspace_id = ?", [workspace_id])
    row = cur.fetchone()
    if row is None:
        return None
    cols = [d[0] for d in cur.description or ()]
    return dict(zip(cols, row, strict=True))


def _append(con: duckdb.DuckDBPyConnection, session: Session, workspace_id: int, above: int, dedupe: bool) -> int:
    """Copy the workspace's events of known contacts with ``id > above``; returns how many rows were added."""
    path = case((Event.kind == "page", Event.properties["path"].as_string()), else_=None)
    q = (
        select(
            Event.id,
            Event.contact_id,
            _ts_expr(session),
            Event.name,
            path,
            Event.kind,
            _path_is_text(session),
            _machine_code(session),
        )
        .where(*_by_id(session, workspace_id), Event.id > above)
        .order_by(Event.id)
    )
    # Core rows straight from the connection (the ORM's row loading cost ~2× the fetch itself)
    result = session.connection().execute(q.execution_options(yield_per=FETCH_CHUNK))
    added = 0
    with gc_freeze.paused():  # rows and their columns make no cycles: collecting them cost ~40 % of a 200k sync
        for part in result.partitions(FETCH_CHUNK):
            ids, cids, tss, names, paths, kinds, texts, machine = zip(*part, strict=True)
            ts = epoch_us_array(session, tss)
            added += append_arrays(
                con, workspace_id, np.fromiter(ids, dtype=np.int64, count=len(ids)),
                np.fromiter(cids, dtype=np.int64, count=len(ids)), ts, names, paths, kinds, texts, machine,
                skip_above=above if dedupe else None,
            )  # fmt: skip
    return added


def sync(session: Session, con: duckdb.DuckDBPyConnection, workspace_id: int, *, compaction: bool = True) -> SyncStats:
    """Bring the workspace's copy up to date with the source database (see the module docstring). Without
    ``compaction`` a long tail is left for the next sync to fold in (a rescoring reads the tail as it is rather
    than wait for the main part to be rewritten)."""
    pg = session.get_bind().dialect.name == "postgresql"
    ensure_tables(con, workspace_id)
    main, tail = main_table(workspace_id), tail_table(workspace_id)
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
            con.execute(f"DELETE FROM {main}")
            con.execute(f"DELETE FROM {tail}")
            state = {"high_water": 0, "merge_high_water": 0, "contact_max": 0, "contacts_le_max": 0}
        # Merges since the last sync move the merged contact's rows to the tail under the surviving contact (in the
        # order the merges happened), which keeps the main part sorted.
        merges = session.execute(
            select(ContactMerge.id, ContactMerge.contact_id, ContactMerge.merged_id)
            .where(ContactMerge.workspace_id == workspace_id, ContactMerge.id > state["merge_high_water"])
            .order_by(ContactMerge.id)
        ).all()
        for _mid, keep, merged in merges:
            con.execute(
                f"INSERT INTO {tail} SELECT id, ?, ts, name_id, path_id, kind_id, path_text, machine FROM {main}"
                " WHERE contact_id = ?",
                [keep, merged],
            )
            con.execute(f"DELETE FROM {main} WHERE contact_id = ?", [merged])
            con.execute(f"UPDATE {tail} SET contact_id = ? WHERE contact_id = ?", [keep, merged])
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
            before = workspace_rows(con, workspace_id)
            for table in (main, tail):
                con.execute(f"DELETE FROM {table} WHERE contact_id NOT IN (SELECT id FROM alive_ids)")
            purged = before - workspace_rows(con, workspace_id)
        contact_max = int(session.scalar(select(func.max(Contact.id)).where(Contact.workspace_id == workspace_id)) or 0)
        # those at or below the new highest id: the ones counted above plus the ones added since (a short range)
        contacts_le_max = now_le + int(
            session.scalar(
                select(func.count()).where(
                    Contact.workspace_id == workspace_id, Contact.id > old_max, Contact.id <= contact_max
                )
            )
            or 0
        )
        hw = int(state["high_water"])
        tail_from = max(hw - PG_TAIL_IDS, 0) if pg and hw else hw
        appended = _append(con, session, workspace_id, tail_from, dedupe=pg and hw > 0)
        new_hw_row = session.execute(
            select(Event.id, Event.message_id).where(*_by_id(session, workspace_id)).order_by(Event.id.desc()).limit(1)
        ).first()
        compacted = compaction and needs_compaction(con, workspace_id)
        if compacted:
            compact(con, workspace_id)
        rows_now = workspace_rows(con, workspace_id)
        new_hw, new_msg = (int(new_hw_row[0]), str(new_hw_row[1])) if new_hw_row else (0, None)
        con.execute(
            "INSERT OR REPLACE INTO sync_state VALUES (?, ?, ?, ?, ?, ?, ?)",
            [workspace_id, max(new_hw, hw), new_msg, merge_hw, contact_max, contacts_le_max, rows_now],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return SyncStats(appended, len(merges), purged, rebuilt, rows_now, compacted)


def copied_rows(con: duckdb.DuckDBPyConnection, workspace_id: int) -> int:
    row = con.execute("SELECT rows FROM sync_state WHERE workspace_id = ?", [workspace_id]).fetchone()
    return int(row[0]) if row else 0


# --------------------------------------------------------------------------------------------------------------------
# Reading rows grouped by contact, in event order
# --------------------------------------------------------------------------------------------------------------------


def grouped_rows(
    con: duckdb.DuckDBPyConnection,
    workspace_id: int,
    columns: str,
    where: str,
    params: dict[str, Any],
    *,
    order: str,
    ties_by_id: bool,
) -> dict[str, np.ndarray]:
    """``SELECT contact_id AS c, {columns} … WHERE {where}`` over the workspace's copy, every contact's rows
    together and in time order: the main part in stored order (sorted by contact, time, id), with the (few) contacts
    that also have tail rows cut out and merged with their tail rows by the fetched column ``order`` (a time). With
    ``ties_by_id``, a main row and a tail row of one contact at the same time are ordered by event id (those
    contacts' rows are read again sorted by DuckDB). ``columns``/``where`` are fixed SQL text of the caller; values
    are parameters."""
    ensure_tables(con, workspace_id)
    main, tail = main_table(workspace_id), tail_table(workspace_id)
    top = _count(
        con,
        f"SELECT greatest((SELECT coalesce(max(contact_id), 0) FROM {main}),"
        f" (SELECT coalesce(max(contact_id), 0) FROM {tail}))",
    )
    contact = "contact_id::INTEGER" if top < 2**31 else "contact_id"  # half the bytes to fetch when ids allow
    select_sql = f"SELECT {contact} AS c, {columns} FROM {{src}} WHERE {where}"

    def fetch(sql: str, extra: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        got = con.execute(sql, {**params, **(extra or {})}).fetchnumpy()
        return {k: np.asarray(v) for k, v in got.items()}

    out = fetch(select_sql.format(src=main))
    if _count(con, f"SELECT count(*) FROM {tail}") == 0:
        return out
    late = fetch(select_sql.format(src=tail) + " ORDER BY contact_id, ts, id")
    if not late["c"].size:
        return out
    # The main part is sorted by contact: each touched contact's rows are one slice of it.
    touched = np.unique(late["c"])
    lo = np.searchsorted(out["c"], touched, side="left")
    hi = np.searchsorted(out["c"], touched, side="right")
    lengths = hi - lo
    cut = np.arange(int(lengths.sum())) + np.repeat(lo - np.cumsum(lengths) + lengths, lengths)
    keep = np.ones(out["c"].size, dtype=np.bool_)
    keep[cut] = False
    from_tail = np.r_[np.zeros(cut.size, dtype=np.bool_), np.ones(late["c"].size, dtype=np.bool_)]
    both = {k: np.concatenate([out[k][cut], late[k]]) for k in out}
    at = np.lexsort((from_tail, both[order], both["c"]))  # stable: on a tie in time the main row first
    both = {k: v[at] for k, v in both.items()}
    if ties_by_id:
        src, c, t = from_tail[at], both["c"], both[order]
        tie = (c[1:] == c[:-1]) & (t[1:] == t[:-1]) & (src[1:] != src[:-1])
        if tie.any():
            redo = np.unique(c[1:][tie])
            drop = np.isin(both["c"], redo)
            union = f"(SELECT * FROM {main} UNION ALL SELECT * FROM {tail}) AS all_rows"
            exact = fetch(
                select_sql.format(src=union) + " AND list_contains($redo, contact_id) ORDER BY contact_id, ts, id",
                {"redo": redo.astype(np.int64).tolist()},
            )
            both = {k: np.concatenate([v[~drop], exact[k]]) for k, v in both.items()}
    return {k: np.concatenate([out[k][keep], both[k]]) for k in out}


def _codes(con: duckdb.DuckDBPyConnection, table: str, col: str, values: Sequence[str]) -> dict[str, int]:
    if not values:
        return {}
    got = con.execute(f"SELECT {col}, code FROM {table} WHERE list_contains(?, {col})", [list(values)]).fetchall()
    return {str(v): int(code) for v, code in got}


# --------------------------------------------------------------------------------------------------------------------
# Ordered event funnel
# --------------------------------------------------------------------------------------------------------------------


def _us(dt: datetime) -> int:
    return int(dt.timestamp()) * US_PER_SECOND + dt.microsecond


def _case(col: str, mapping: dict[int, int]) -> str:
    """``CASE col WHEN code THEN label … ELSE -1 END`` over integer codes and labels (integers only: no injection)."""
    if not mapping:
        return "-1"
    whens = " ".join(f"WHEN {int(code)} THEN {int(label)}" for code, label in mapping.items())
    return f"CASE {col} {whens} ELSE -1 END"


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
    """The ordered funnel over the copy (call :func:`sync` first): the engine's "every start, earliest next step"
    rule, with ties in time broken by event id and, for one event matching both, the name step before the page step.
    """
    labels = list(dict.fromkeys(steps))
    label_of = {s: i for i, s in enumerate(labels)}
    names = [s for s in labels if not s.startswith(PAGE_PREFIX)]
    paths = [s[len(PAGE_PREFIX) :] for s in labels if s.startswith(PAGE_PREFIX)]
    name_codes = _codes(con, "names", "name", names)
    path_codes = _codes(con, "paths", "path", paths)
    by_name = {code: label_of[n] for n, code in name_codes.items()}
    by_path = {code: label_of[PAGE_PREFIX + p] for p, code in path_codes.items()}
    match = []
    if by_name:
        match.append(f"name_id IN ({', '.join(str(int(c)) for c in by_name)})")
    if by_path:
        match.append(f"path_id IN ({', '.join(str(int(c)) for c in by_path)})")
    if match:
        rows = grouped_rows(
            con,
            workspace_id,
            f"ts, ({_case('name_id', by_name)})::SMALLINT AS ln,"
            f" (coalesce({_case('path_id', by_path)}, -1))::SMALLINT AS lp",
            f"ts >= $start AND ts < $end AND ({' OR '.join(match)})",
            {"start": _us(start), "end": _us(end)},
            order="ts",
            ties_by_id=True,
        )
        ln, lp, c, t = rows["ln"], rows["lp"], rows["c"], rows["ts"]
        if not by_path:
            lab = ln
        elif not by_name:
            lab = lp
        else:
            both = (ln >= 0) & (lp >= 0)
            if not both.any():
                lab = np.where(ln >= 0, ln, lp)
            else:
                # One row per (event, label): an event matching a name step and a page step counts as both, name
                # first.
                src = np.repeat(np.arange(ln.size), 1 + both)
                second = np.r_[False, src[1:] == src[:-1]]
                lab = np.where(second | (ln[src] < 0), lp[src], ln[src])
                c, t = c[src], t[src]
    else:
        c = t = lab = np.zeros(0, dtype=np.int64)
    res = funnel.ordered_funnel_grouped(
        c,
        t,
        lab,
        [label_of[s] for s in steps],
        list(steps),
        window_seconds * US_PER_SECOND,
        time_scale=US_PER_SECOND,
        min_contacts=min_contacts,
    )
    return dataclasses.replace(res, window_seconds=window_seconds)


# --------------------------------------------------------------------------------------------------------------------
# Acquisition cohorts over events
# --------------------------------------------------------------------------------------------------------------------


def day_buckets(by: str, days: np.ndarray) -> np.ndarray:
    """The period number of UTC day numbers (days since the epoch): months since year 0 (through a lookup table over
    the days present, cheaper than calendar arithmetic per row), or Monday-based weeks since the epoch."""
    if by == "week":
        return (days + 3) // 7
    if not days.size:
        return days.astype(np.int64)
    lo, hi = int(days.min()), int(days.max())
    lut = np.arange(lo, hi + 1).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) + 1970 * 12
    buckets: np.ndarray = lut[days - lo]  # numpy types fancy indexing as Any
    return buckets


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
    """Cohort sizes by acquisition period and active contacts by (cohort, periods since), in linear passes over the
    workspace's rows grouped by contact in time order: a contact's first (start) row gives its cohort, and
    consecutive rows of one contact in one period are one active (contact, period) pair."""
    codes = _codes(con, "names", "name", [e for e in (start_event, return_event) if e])
    if start_event and start_event not in codes:
        return {}, {}  # no contact ever had the start event
    start_code = codes[start_event] if start_event else None
    return_code = codes.get(return_event, -1) if return_event else None
    cols = f"(ts // {US_PER_DAY})::INTEGER AS d" + (", name_id" if start_event or return_event else "")
    # Only the day matters to a cohort, so rows of one day may come in any order.
    rows = grouped_rows(con, workspace_id, cols, "ts < $end", {"end": _us(end)}, order="d", ties_by_id=False)
    c = rows["c"]
    if not c.size:
        return {}, {}
    b = day_buckets(by, rows["d"])
    new = np.empty(c.size, dtype=np.bool_)
    new[0] = True
    np.not_equal(c[1:], c[:-1], out=new[1:])
    seg = np.cumsum(new, dtype=np.int64 if c.size >= 2**31 else np.int32) - 1
    n_seg = int(seg[-1]) + 1
    none = np.iinfo(np.int64).min
    if start_code is None:
        acq = b[new].astype(np.int64)  # rows are in time order: a contact's first row is its earliest period
    else:
        acq = np.full(n_seg, none, dtype=np.int64)
        s_at = np.flatnonzero(rows["name_id"] == start_code)
        s_seg = seg[s_at]
        first = np.r_[True, s_seg[1:] != s_seg[:-1]]
        acq[s_seg[first]] = b[s_at[first]]
    lo = first_bucket if first_bucket is not None else -(2**62)
    kept = (acq != none) & (acq >= lo) & (acq <= last_bucket)
    if not kept.any():
        return {}, {}
    base = int(acq[kept].min())
    span = max_periods + 1
    sizes_n = np.bincount(acq[kept] - base)
    sizes = {base + i: int(v) for i, v in enumerate(sizes_n.tolist()) if v}
    # Active (contact, period) pairs: the first row of each run of one contact in one period.
    if return_code is None:
        distinct = new.copy()
        distinct[1:] |= b[1:] != b[:-1]
        r_at = np.flatnonzero(distinct)
    else:
        r_at = np.flatnonzero(rows["name_id"] == return_code)
        r_seg0, r_b0 = seg[r_at], b[r_at]
        r_at = r_at[np.r_[True, (r_seg0[1:] != r_seg0[:-1]) | (r_b0[1:] != r_b0[:-1])]] if r_at.size else r_at
    r_seg = seg[r_at]
    b0 = acq[r_seg]
    off = b[r_at] - b0
    ok = kept[r_seg] & (off >= 0) & (off <= max_periods)
    grid = np.bincount((b0[ok] - base) * span + off[ok])
    cells = np.flatnonzero(grid)
    active = {(base + i // span, i % span): n for i, n in zip(cells.tolist(), grid[cells].tolist(), strict=True)}
    return sizes, active


def month_bucket(d: date) -> int:
    return d.year * 12 + d.month - 1


def week_bucket(d: date) -> int:
    return (d.toordinal() - date(1970, 1, 1).toordinal() + 3) // 7
