"""Set-based rescoring: fit and engagement for many contacts at once, equal to the per-contact path.

``service.recompute_fit`` and ``service.recompute_engagement`` read and write 1,000 contacts at a time through
SQLAlchemy and score each contact on its own. Here the same results come from:

- **reads in large id ranges** on the DBAPI cursor (contacts joined to their company, tags, stored scores, and the
  engagement events of the horizon with their time as integer microseconds computed by the database), only the
  columns the active ICPs and rules read;
- **fit computed once per distinct set of facts** (``best_fit`` is a pure function of ``FitFacts``, so contacts
  sharing facts share the result and its explanation's JSON text);
- **rules matched once per distinct (event name, kind)** (and per distinct properties only for rules with a
  ``where``: other events' properties are not even read), and a whole range's engagement computed at once by
  ``engine.scoring.engagement_batch`` (numpy: caps, decay and sums vectorised, each sum added in the per-contact
  path's order), so the scores are bit-identical to ``engine.scoring.engagement``;
- **fit explanations shared**: each distinct explanation text is stored once (``score_explanations``) and a row
  references it, so an unchanged row is recognised by comparing ids;
- **nothing rewritten that would not change**: a fit row equal in score, grade, ICP and explanation id, and an
  engagement row already stored as of this moment with the same score, contributions and cap state, are kept;
- **bulk writes** of what changed: SQLite ``executemany`` in the caller's transaction; PostgreSQL ``COPY`` into a
  temporary table and one ``INSERT … SELECT … ON CONFLICT DO UPDATE`` (history rows are copied straight in), the
  COPY text formatted a column at a time.

Explanations, history rows (same reasons and thresholds), stage thresholds and segment updates follow exactly as on
the per-contact path; when many contacts changed, the segments reading that score are refreshed in full (compiled
SQL) instead of contact by contact, which stores the same membership.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo import gc_freeze
from suppilo.db.base import utcnow
from suppilo.engine.filters import epoch_seconds
from suppilo.engine.scoring import (
    BatchEngagement,
    EngagementConfig,
    FitFacts,
    FitScorer,
    PainPointsCriterion,
    engagement_batch,
    horizon_start,
)
from suppilo.scoring import service
from suppilo.segments import service as segments_service
from suppilo.segments.models import Segment

if TYPE_CHECKING:
    from suppilo.analytics.columnar import ColumnarStore

# Contacts read, scored and written per round.
RANGE = 50_000
# With more changed contacts than this, segments reading the score are refreshed in full rather than per contact.
SEGMENT_FULL_REFRESH = 5_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

Progress = Callable[[int], None]


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _gc_paused(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` with the cyclic garbage collector paused: rescoring keeps millions of tuples alive for a range
    (fetched rows, their columns, rows to write) and makes no reference cycles, and collecting those over and over
    cost 10–25 % of its CPU time (measured with and without at 200,000 contacts)."""

    @functools.wraps(fn)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with gc_freeze.paused():
            return fn(*args, **kwargs)

    return run


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _cursor(session: Session) -> Any:
    session.flush()
    return session.connection().connection.cursor()


def _sql(session: Session, text: str) -> str:
    return text.replace("?", "%s") if _dialect(session) == "postgresql" else text


# ``workspace_id`` in a query that reads an id range: the unary plus keeps the planner from taking an index that
# starts with the workspace (it would walk every row of the workspace for each range: at 1,000,000 contacts the
# contacts and tags of each 50,000-id range were found by scanning all of them) instead of the id's own key
_BY_ID = "+workspace_id"


def _ranges(ids: Sequence[int]) -> Iterator[tuple[int, int, Sequence[int]]]:
    size = RANGE
    for i in range(0, len(ids), size):
        part = ids[i : i + size]
        yield part[0], part[-1], part


def _time_text(session: Session, t: datetime) -> Any:
    """A time as the driver takes it (SQLite: naive UTC text as SQLAlchemy stores it)."""
    if _dialect(session) == "sqlite":
        return t.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return t


def _epoch_us_sql(session: Session, column: str) -> str:
    """SQL giving a stored time as integer microseconds since the epoch (exact on both databases)."""
    if _dialect(session) == "sqlite":
        # stored as 'YYYY-MM-DD HH:MM:SS.ffffff' (SQLAlchemy's SQLite format, always six fraction digits)
        return f"(CAST(strftime('%s', {column}) AS INTEGER) * 1000000 + CAST(substr({column}, 21, 6) AS INTEGER))"
    return f"CAST(extract(epoch FROM {column}) * 1000000 AS BIGINT)"


def _json_text(session: Session, column: str) -> str:
    return f"{column}::text" if _dialect(session) == "postgresql" else column


class _JsonCache:
    """Parsed JSON by its stored text (stored explanations repeat: parsing each distinct text once)."""

    def __init__(self) -> None:
        self._seen: dict[Any, Any] = {}

    def __call__(self, raw: Any) -> Any:
        if raw is None or not isinstance(raw, str | bytes):
            return raw
        hit = self._seen.get(raw)
        if hit is None:
            hit = orjson.loads(raw)
            if len(self._seen) < 200_000:
                self._seen[raw] = hit
        return hit


# --- writing ---------------------------------------------------------------------------------------------------------

_SCORE_COLUMNS = service._SCORE_COLUMNS
_HISTORY_COLUMNS = service._HISTORY_COLUMNS
_PG_TEMP_TYPES = {
    "workspace_id": "bigint",
    "contact_id": "bigint",
    "kind": "text",
    "score": "float8",
    "grade": "text",
    "icp_id": "bigint",
    "explanation": "jsonb",
    "explanation_id": "bigint",
    "state": "jsonb",
    "decay_key": "float8",
    "half_life_seconds": "float8",
    "as_of": "timestamptz",
    "computed_at": "timestamptz",
}


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _cell(v: Any) -> str:
    """One value in COPY's text format (floats by ``repr``, which PostgreSQL reads back to the same double)."""
    if v is None:
        return "\\N"
    if isinstance(v, str):
        return v.translate(_COPY_ESCAPES)
    if isinstance(v, datetime):
        return v.isoformat()
    return repr(v)


def _column_text(values: Sequence[Any]) -> Sequence[str]:
    """One column's values in COPY's text format (the same text as ``_cell``), formatted per column with C-level
    ``map`` over the common cases: ints, floats, strings needing no escapes, a few distinct times, NULLs."""
    types = set(map(type, values))
    plain = types - {type(None)}
    if len(plain) == 1:
        kind = next(iter(plain))
        if kind is int or kind is float:
            fmt: Callable[[Any], str] = repr
        elif kind is str:
            joined = "".join(v for v in values if v is not None)
            if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
                fmt = _cell
            else:
                if not types - plain:
                    return values
                fmt = str
        elif kind is datetime:
            distinct = {v: v.isoformat() for v in set(values) if v is not None}
            fmt = distinct.__getitem__
        else:
            fmt = _cell
        if types == plain:
            return list(map(fmt, values))
        return ["\\N" if v is None else fmt(v) for v in values]
    if not plain:
        return ["\\N"] * len(values)
    return list(map(_cell, values))


def _copy(session: Session, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """COPY rows in text format, formatted here a column at a time in blocks (psycopg's per-row ``write_row``, and
    formatting cell by cell, cost more)."""
    driver: Any = session.connection().connection.driver_connection
    with driver.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for i in range(0, len(rows), 50_000):
            block = rows[i : i + 50_000]
            cols = [_column_text(list(map(itemgetter(j), block))) for j in range(len(columns))]
            copy.write("\n".join(map("\t".join, zip(*cols, strict=True))) + "\n")


_SQLITE_SCORES = (
    f"INSERT INTO contact_scores ({', '.join(_SCORE_COLUMNS)}) VALUES ({', '.join('?' for _ in _SCORE_COLUMNS)}) "
    "ON CONFLICT (workspace_id, contact_id, kind) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _SCORE_COLUMNS if c not in ("workspace_id", "contact_id", "kind"))
)
_SQLITE_HISTORY = (
    f"INSERT INTO score_changes ({', '.join(_HISTORY_COLUMNS)}) VALUES ({', '.join('?' for _ in _HISTORY_COLUMNS)})"
)


class _BackgroundWrites:
    """SQLite, rows written in the caller's transaction: each range's score and history rows are written by one
    background thread while the next range is read and scored (sqlite3 lets go of the GIL while SQLite inserts, and
    the connection is serialized), at most one range in flight. ``wait`` before anything reads what was written;
    the context's exit waits too, so nothing is still writing when the caller commits or rolls back."""

    def __init__(self, session: Session) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.cursor = _cursor(session)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="rescore-writes")
        self.pending: Any = None

    def submit(self, rows: list[tuple[Any, ...]], fresh: list[tuple[Any, ...]], history: list[tuple[Any, ...]]) -> None:
        self.wait()
        self.pending = self.pool.submit(self._run, rows, fresh, history)

    def _run(self, rows: list[tuple[Any, ...]], fresh: list[tuple[Any, ...]], history: list[tuple[Any, ...]]) -> None:
        self.cursor.executemany(_SQLITE_SCORES, rows)
        self.cursor.executemany(_SQLITE_SCORES, fresh)
        self.cursor.executemany(_SQLITE_HISTORY, history)

    def wait(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _BackgroundWrites:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)


def _writes(session: Session, deferred: Deferred | None) -> contextlib.AbstractContextManager[Any]:
    """Background writes where they apply (SQLite, not deferred), else nothing."""
    if deferred is None and _dialect(session) == "sqlite":
        return _BackgroundWrites(session)
    return contextlib.nullcontext()


def write_scores(session: Session, rows: list[tuple[Any, ...]], fresh: list[tuple[Any, ...]] | None = None) -> None:
    """Insert or replace score rows given as tuples in ``_SCORE_COLUMNS`` order (JSON as text, driver times).

    ``fresh`` rows are of contacts that had no row of that kind when read: on PostgreSQL they are COPYed straight
    into the table under a savepoint (no temporary table, no ``ON CONFLICT``); should another writer have added
    one of them since, the savepoint is rolled back and they are upserted with the others."""
    fresh = fresh or []
    if not rows and not fresh:
        return
    session.flush()
    keep = ("workspace_id", "contact_id", "kind")
    sets = ", ".join(f"{c} = excluded.{c}" for c in _SCORE_COLUMNS if c not in keep)
    cols = ", ".join(_SCORE_COLUMNS)
    conflict = f"ON CONFLICT (workspace_id, contact_id, kind) DO UPDATE SET {sets}"
    if _dialect(session) == "sqlite":
        cur = _cursor(session)
        cur.executemany(_SQLITE_SCORES, rows)
        cur.executemany(_SQLITE_SCORES, fresh)
        return
    if fresh:
        try:
            with session.begin_nested():
                _copy(session, "contact_scores", _SCORE_COLUMNS, fresh)
        except Exception as exc:
            if getattr(exc, "sqlstate", None) != "23505":  # only a unique violation: another writer's row
                raise
            rows = rows + fresh
    if not rows:
        return
    conn = session.connection()
    decl = ", ".join(f"{c} {_PG_TEMP_TYPES[c]}" for c in _SCORE_COLUMNS)
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS bulk_scores ({decl}) ON COMMIT DROP")
    conn.exec_driver_sql("TRUNCATE bulk_scores")
    _copy(session, "bulk_scores", _SCORE_COLUMNS, rows)
    conn.exec_driver_sql(f"INSERT INTO contact_scores ({cols}) SELECT {cols} FROM bulk_scores {conflict}")


def write_history(session: Session, rows: list[tuple[Any, ...]]) -> None:
    """Append history rows given as tuples in ``_HISTORY_COLUMNS`` order."""
    if not rows:
        return
    if _dialect(session) == "sqlite":
        _cursor(session).executemany(_SQLITE_HISTORY, rows)
        return
    session.flush()
    _copy(session, "score_changes", _HISTORY_COLUMNS, rows)


@dataclass
class Deferred:
    """Rows scored for a later short write transaction (a range scored by a worker process): explanation ids come
    from ``explain`` (stored and committed at once: shared, harmless if the range fails)."""

    explain: Callable[[set[str]], dict[str, int]]
    scores: list[tuple[Any, ...]] = field(default_factory=list)
    # texts not stored yet when read, by the negative id the rows carry instead (resolved by the writer)
    placeholders: dict[str, int] = field(default_factory=dict)
    fresh: list[tuple[Any, ...]] = field(default_factory=list)
    history: list[tuple[Any, ...]] = field(default_factory=list)
    reached: list[int] = field(default_factory=list)


def _write(
    session: Session,
    rows: list[tuple[Any, ...]],
    fresh: list[tuple[Any, ...]],
    history: list[tuple[Any, ...]],
    deferred: Deferred | None,
    background: _BackgroundWrites | None = None,
) -> None:
    if background is not None:
        background.submit(rows, fresh, history)
    elif deferred is None:
        write_scores(session, rows, fresh)
        write_history(session, history)
    else:
        deferred.scores.extend(rows)
        deferred.fresh.extend(fresh)
        deferred.history.extend(history)


def _after_change(session: Session, workspace_id: int, ids: list[int], kind: str, now: datetime) -> None:
    """Segments reading ``score:<kind>`` follow the changed contacts (in full when there are many)."""
    if not ids:
        return
    if len(ids) <= SEGMENT_FULL_REFRESH:
        service._segments(session, workspace_id, ids, kind, now)
        return
    dep = f"score:{kind}"
    seeds = {
        int(sid)
        for sid, deps in session.execute(
            select(Segment.id, Segment.dependencies).where(
                Segment.workspace_id == workspace_id, Segment.kind == "dynamic"
            )
        )
        if segments_service._affected(list(deps or []), {dep})
    }
    if seeds:
        segments_service.refresh_all(session, workspace_id, now, only=seeds, reason=dep)


# --- fit -------------------------------------------------------------------------------------------------------------


def _ids(
    session: Session,
    workspace_id: int,
    contact_ids: Sequence[int] | None,
    bounds: tuple[int, int] | None,
    in_range: Sequence[int] | None,
) -> Sequence[int]:
    """The contacts to score: ``contact_ids`` (sorted, once each), else those of the range ``bounds`` (``in_range``
    when the caller read them already) or of the workspace."""
    if contact_ids is not None:
        return sorted(set(contact_ids))
    if in_range is not None and bounds is not None:
        return in_range
    return _all_ids(session, workspace_id, bounds)


def _all_ids(session: Session, workspace_id: int, bounds: tuple[int, int] | None = None) -> list[int]:
    cur = _cursor(session)
    if bounds is None:
        cur.execute(_sql(session, "SELECT id FROM contacts WHERE workspace_id = ? ORDER BY id"), (workspace_id,))
    else:
        cur.execute(
            _sql(session, f"SELECT id FROM contacts WHERE {_BY_ID} = ? AND id BETWEEN ? AND ? ORDER BY id"),
            (workspace_id, *bounds),
        )
    return [r[0] for r in cur.fetchall()]


@_gc_paused
def bulk_fit(
    session: Session,
    workspace_id: int,
    contact_ids: Sequence[int] | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    *,
    bounds: tuple[int, int] | None = None,
    deferred: Deferred | None = None,
    shared: dict[Any, Any] | None = None,
    in_range: Sequence[int] | None = None,
) -> service.ScoreWrite:
    """``service.recompute_fit`` for these contacts (None: every contact of the workspace, or of the id range
    ``bounds``), set-based. With ``deferred`` the rows are kept there for a later write instead of written (stage
    thresholds and segments are then the caller's). ``shared``: a dict kept by the caller across calls (the ranges
    one worker process scores): the fit of each distinct set of facts, the explanation ids found, the workspace's
    companies (read once) and the fit by raw facts are reused by the next call with the same ICPs and exchange rates
    (one rescoring: the caller starts a new dict for the next). ``in_range``: the ids of the contacts in ``bounds``
    when the caller has read them (``_ids``)."""
    now = now or utcnow()
    icps = service.active_icps(session, workspace_id)
    ids = _ids(session, workspace_id, contact_ids, bounds, in_range)
    if not icps:
        assert deferred is None, "a deferred fit needs an active ICP"
        result = service.recompute_fit(session, workspace_id, ids, now)
        if progress is not None:
            progress(len(ids))
        return result
    result = service.ScoreWrite()
    rates = service.latest_rates(session, workspace_id)
    convert = service._converter(session, workspace_id, rates)
    budgets = service._budget(icps)
    uses_tags = any(isinstance(c, PainPointsCriterion) for _, icp in icps for _, c in icp.criteria())
    uses_titles = any(icp.job_titles is not None or icp.seniority is not None for _, icp in icps)
    scorer = FitScorer(icps, convert)
    memo: dict[tuple[Any, ...], tuple[int, float, str, str]] = {}
    eids: dict[str, int] = {}  # explanation text -> its score_explanations id
    if shared is not None:  # what a previous call with the same ICPs and rates found
        fingerprint = (workspace_id, repr(icps), tuple(sorted(rates.items())))
        if shared.get("fingerprint") != fingerprint:
            shared.clear()
            shared.update(fingerprint=fingerprint, memo=memo, eids=eids)
        memo, eids = shared["memo"], shared["eids"]
    by_row: dict[tuple[Any, ...], tuple[int, float, str, str]] = {}  # the same, by raw facts
    parse = _JsonCache()
    stamp = _time_text(session, now)
    title = "job_title" if uses_titles else "NULL"
    # contacts and companies are read as single-table streams and joined here: no join plan to go wrong on tables
    # the planner has no statistics for yet (a nested loop over every company per contact)
    contacts_sql = _sql(
        session,
        f"SELECT id, company_id, country, {title}, {'properties' if budgets else 'NULL'} FROM contacts "
        f"WHERE {_BY_ID} = ? AND id BETWEEN ? AND ?",
    )
    cur = _cursor(session)
    companies_sql = (
        "SELECT id, industry, employees, annual_revenue_minor, revenue_currency, country, "
        f"{_json_text(session, 'properties') if budgets else 'NULL'} FROM companies WHERE "
    )
    if shared is not None and "companies" in shared:
        # the companies as the worker's first range read them, numbered as then: ``by_row`` (raw facts with those
        # numbers) carries over too
        company_facts, company_of = shared["companies"]
        by_row = shared["by_row"]
    else:
        if bounds is None or shared is not None:
            # every company of the workspace: all contacts, or the first range of a worker that keeps them for
            # its next ranges
            cur.execute(_sql(session, companies_sql + "workspace_id = ?"), (workspace_id,))
        else:  # one range: only its contacts' companies
            cur.execute(
                _sql(
                    session,
                    companies_sql + f"{_BY_ID} = ? AND id IN (SELECT company_id FROM contacts WHERE {_BY_ID} = ? "
                    "AND id BETWEEN ? AND ? AND company_id IS NOT NULL)",
                ),
                (workspace_id, workspace_id, *bounds),
            )
        # each company as the number of its distinct facts (0: none), so a contact's key is a short tuple
        company_facts = [(None, None, None, None, None, None)]
        numbers: dict[tuple[Any, ...], int] = {company_facts[0]: 0}
        company_of = {}
        for r in cur.fetchall():
            n = numbers.get(r[1:])
            if n is None:
                n = numbers[r[1:]] = len(company_facts)
                company_facts.append(r[1:])
            company_of[r[0]] = n
        if shared is not None:
            shared.update(companies=(company_facts, company_of), by_row=by_row)
    # a contact's tags as one text (joined in the database; normalised tags never hold the separator \x1f)
    tags_sql = _sql(
        session,
        (
            "SELECT contact_id, group_concat(tag, char(31)) FROM contact_tags "
            if _dialect(session) == "sqlite"
            else "SELECT contact_id, string_agg(tag, chr(31) ORDER BY tag) FROM contact_tags "
        )
        + f"WHERE {_BY_ID} = ? AND contact_id BETWEEN ? AND ? GROUP BY contact_id",
    )
    old_sql = _sql(
        session,
        "SELECT contact_id, score, grade, icp_id, explanation_id FROM contact_scores "
        "WHERE workspace_id = ? AND kind = 'fit' AND contact_id BETWEEN ? AND ?",
    )
    with _writes(session, deferred) as background:
        for lo, hi, part in _ranges(ids):
            wanted = None if contact_ids is None else set(part)
            cur = _cursor(session)
            tags: dict[int, str] = {}
            if uses_tags:
                cur.execute(tags_sql, (workspace_id, lo, hi))
                tags = dict(cur.fetchall())
            cur.execute(old_sql, (workspace_id, lo, hi))
            old = {r[0]: r[1:] for r in cur.fetchall()}  # (score, grade, icp id, explanation id)
            cur.execute(contacts_sql, (workspace_id, lo, hi))
            rows: list[tuple[Any, ...]] = []
            fresh: list[tuple[Any, ...]] = []  # of contacts without a row of this kind when read
            history: list[tuple[Any, ...]] = []
            get_tags = tags.get
            get_company = company_of.get  # a contact without a company (None) gets 0 too
            fetched = cur.fetchall()
            if wanted is not None:
                fetched = [r for r in fetched if r[0] in wanted]
            cids: list[int] = [r[0] for r in fetched]
            if budgets:
                raw_keys = []
                for cid, company_id, country, job_title, cprops in fetched:
                    number = get_company(company_id, 0)
                    coprops = company_facts[number][5]
                    budget, budget_currency = service._budget_of(parse(cprops) or {}, parse(coprops) or {}, budgets)
                    raw_keys.append((number, country, job_title, get_tags(cid), budget, budget_currency))
            else:
                raw_keys = [
                    (get_company(company_id, 0), country, job_title, get_tags(cid), None, None)
                    for cid, company_id, country, job_title, _ in fetched
                ]
            hits: list[Any] = list(map(by_row.get, raw_keys))
            for i in [i for i, hit in enumerate(hits) if hit is None]:
                raw_key = raw_keys[i]
                hit = by_row.get(raw_key)  # found earlier in this range
                if hit is None:
                    number, country, job_title, tag_text, budget, budget_currency = raw_key
                    industry, employees, revenue, currency, co_country, _ = company_facts[number]
                    facts = FitFacts(
                        industry=industry,
                        employees=employees,
                        revenue_minor=revenue,
                        revenue_currency=currency,
                        country=country or co_country,
                        job_title=job_title,
                        tags=frozenset(tag_text.split("\x1f")) if tag_text else frozenset(),
                        budget_minor=budget,
                        budget_currency=budget_currency,
                    )
                    key = scorer.key(facts)
                    hit = memo.get(key)
                    if hit is None:
                        best = scorer(facts)
                        assert best is not None
                        text = orjson.dumps(service.fit_explanation_json(best[1])).decode()
                        hit = (best[0], best[1].score, best[1].grade, text)
                        if len(memo) < 500_000:
                            memo[key] = hit
                    if len(by_row) < 500_000:
                        by_row[raw_key] = hit
                hits[i] = hit
            distinct = {id(hit): hit for hit in hits}
            new_texts = {hit[3] for hit in distinct.values()} - eids.keys()
            if new_texts:
                eids.update(
                    service.explanation_ids(session, workspace_id, new_texts)
                    if deferred is None
                    else deferred.explain(new_texts)
                )
            # each distinct result as its stored row reads back: (score, grade, icp id, explanation id)
            stored_as = {k: (hit[1], hit[2], hit[0], eids[hit[3]]) for k, hit in distinct.items()}
            get_old = old.get
            result.scored += len(cids)
            for cid, hit in zip(cids, hits, strict=True):
                want = stored_as[id(hit)]
                prev = get_old(cid)
                if prev == want:
                    continue
                score, grade, icp_id, eid = want
                (rows if prev is not None else fresh).append(
                    (workspace_id, cid, "fit", score, grade, icp_id, "[]", eid, "{}", None, None, stamp, stamp)
                )
                if prev is None or prev[0] != score or prev[1] != grade:
                    result.changed.append(cid)
                    history.append(
                        (
                            workspace_id,
                            cid,
                            "fit",
                            score,
                            None if prev is None else prev[0],
                            grade,
                            stamp,
                            "profile or ICP changed",
                        )
                    )
            _write(session, rows, fresh, history, deferred, background)
            if progress is not None:
                progress(len(part))
    result.changed.sort()
    if deferred is not None:
        return result
    config = service.engagement_config(session, workspace_id)
    if any(t.min_fit_grade is not None for t in config.stage_thresholds):
        service._stage_thresholds(session, workspace_id, result.changed, config, now)
    _after_change(session, workspace_id, result.changed, "fit", now)
    return result


# --- engagement ------------------------------------------------------------------------------------------------------


MASK_BITS = 62  # rules per mask column (an integer the SQL of both databases sums exactly)
_LO, _HI = "range_lo", "range_hi"  # bound parameters of ``_events_sql``, set per range
_RANGE_LO, _RANGE_HI = object(), object()  # their places among positional parameters


def _mask_columns(compiler: Any, rules: Sequence[Any], include: Callable[[int], bool]) -> list[Any]:
    """SQL bit masks of the rules each event matches (caps aside), ``MASK_BITS`` rules per column; rules not
    ``include``d contribute no bit."""
    from sqlalchemy import and_, case, literal_column
    from sqlalchemy.types import BigInteger

    from suppilo.segments.compiler import events as ev

    masks = []
    for k in range(0, len(rules), MASK_BITS):
        total: Any = literal_column("0")
        for i, r in enumerate(rules[k : k + MASK_BITS]):
            if not include(k + i):
                continue
            conds = [
                *([ev.c.name == r.event] if r.event is not None else []),
                *([ev.c.kind == r.kind] if r.kind is not None else []),
                *(compiler.event_where(f) for f in r.where),
            ]
            total = total + case((and_(*conds), literal_column(str(1 << i), BigInteger)), else_=literal_column("0"))
        masks.append(total.label(f"m{k // MASK_BITS}"))
    return masks


def _events_sql(
    session: Session,
    workspace_id: int,
    config: EngagementConfig,
    now: datetime,
    start: Any,
    end: Any,
    named: Sequence[int] | None = None,
) -> tuple[str | None, list[Any] | dict[str, Any]]:
    """The events of a contact-id range within the horizon, as (contact id, event id, time in microseconds, one
    bit mask per ``MASK_BITS`` rules): bit ``i`` of column ``k`` is set when the event matches rule
    ``k * MASK_BITS + i`` caps aside — its name, kind and ``where`` tests evaluated in SQL by the segment compiler's
    ``event_where``, which the segment parity tests hold equal to ``event_property_matches``. Events matching no
    rule can come back with zero masks. None when no rule can match anything.

    With ``named`` (indices of rules that each name their event): the events of those names of every contact,
    found by the (workspace, name, time) index, as (event id, masks of those rules only)."""
    from sqlalchemy import bindparam, literal_column, or_, select
    from sqlalchemy.types import BigInteger, String

    from suppilo.segments.compiler import _Compiler
    from suppilo.segments.compiler import events as ev

    rules = config.rules
    if not rules:
        return None, []
    dialect = session.get_bind().dialect
    compiler = _Compiler(dialect.name, workspace_id, now, None)
    chosen = set(range(len(rules)) if named is None else named)
    masks = _mask_columns(compiler, rules, chosen.__contains__)
    picked = [rules[i] for i in sorted(chosen)]
    names = sorted({r.event for r in picked if r.event is not None})
    kinds = sorted({r.kind for r in picked if r.event is None and r.kind is not None})
    picks = [*([ev.c.name.in_(names)] if names else []), *([ev.c.kind.in_(kinds)] if kinds else [])]
    stored = String() if dialect.name == "sqlite" else ev.c.occurred_at.type
    window = [
        ev.c.workspace_id == workspace_id,
        ev.c.occurred_at >= bindparam("horizon_start", start, type_=stored),
        ev.c.occurred_at <= bindparam("horizon_end", end, type_=stored),
        or_(*picks),
    ]
    if named is None:
        inner = select(
            ev.c.contact_id, ev.c.id, literal_column(_epoch_us_sql(session, "occurred_at")).label("at"), *masks
        ).where(
            *window,
            ev.c.contact_id.between(bindparam(_LO, 0, type_=BigInteger), bindparam(_HI, 0, type_=BigInteger)),
        )
    else:
        inner = select(ev.c.id, *masks).where(*window, ev.c.contact_id.is_not(None))
    # events matching no rule (all masks 0) are dropped by the caller: a filter here would evaluate the masks twice
    compiled = inner.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.params
    if dialect.positional:
        places = {_LO: _RANGE_LO, _HI: _RANGE_HI}
        return str(compiled), [places.get(k, params[k]) for k in compiled.positiontup or ()]
    return str(compiled), dict(params)


def _copy_answers(rule: Any) -> bool:
    """Whether the columnar copy holds every property this rule's ``where`` tests: ``machine`` on any event, ``path``
    on page views (for other events the copy has no path)."""
    allowed = {"machine", "path"} if rule.kind == "page" else {"machine"}
    return all(f.path in allowed for f in rule.where)


def _columnar_fits(config: EngagementConfig) -> bool:
    """Whether the columnar copy (with the row store for some rules) can give every rule's matches: each rule with
    a ``where`` tests only what the copy holds (``_copy_answers``) or names its event (those events' matches are
    read from the row store by name)."""
    return all(not r.where or r.event is not None or _copy_answers(r) for r in config.rules)


# ``machine`` as stored in the copy (0 false, 1 true, 2 another value, NULL none) -> index here
_MACHINE_VALUES: tuple[Any, ...] = (False, True, None, None)  # index 2: another value (read from the row store)
_MACHINE_OTHER, _MACHINE_NONE = 2, 3


class _ColumnarEvents:
    """The events of contact-id ranges from the DuckDB copy of the event log (``analytics.columnar``, synced first)
    as (contact id, event id, time in microseconds, rule bit masks like ``_events_sql``'s): integer columns read in
    bulk instead of row-store rows. Rules match by the name and kind codes, and ``where`` tests on ``path`` (page
    views) and ``machine`` by the copy's columns (an event whose path or machine is another JSON value than the
    copy can tell apart is tested on its stored properties); other rules with a ``where`` name their event, and
    those events' matches come from the row store in one query by name (``_events_sql(named=…)``), joined by
    event id."""

    def __init__(
        self,
        session: Session,
        con: Any,
        workspace_id: int,
        config: EngagementConfig,
        now: datetime,
        start: datetime,
        end: datetime,
        sync: bool = True,
    ) -> None:
        from suppilo.analytics import columnar
        from suppilo.engine.filter_eval import event_property_matches

        if sync:
            columnar.sync(session, con, workspace_id, compaction=False)
        self.session, self.con, self.config = session, con, config
        cols_sql = "contact_id, id, ts, name_id, kind_id, path_id, path_text, machine"
        self.source = (
            f"(SELECT {cols_sql} FROM {columnar.main_table(workspace_id)}"
            f" UNION ALL SELECT {cols_sql} FROM {columnar.tail_table(workspace_id)})"
        )
        self.start_us, self.end_us = (start - EPOCH) // _US, (end - EPOCH) // _US
        rules = config.rules
        self.cols = cols = max(1, -(-len(rules) // MASK_BITS))
        self.names: dict[int, str] = dict(con.execute("SELECT code, name FROM names").fetchall())
        self.kinds: dict[int, str] = dict(con.execute("SELECT code, kind FROM kinds").fetchall())
        paths: dict[int, str] = dict(con.execute("SELECT code, path FROM paths").fetchall())
        shape = (max(self.names, default=0) + 1, max(self.kinds, default=0) + 1, cols)
        self.plain = np.zeros(shape, dtype=np.int64)  # rules without a where, by name and kind
        self.tested = np.zeros(shape, dtype=np.int64)  # rules with a where the copy answers, by name and kind
        self.path_ok = np.zeros((max(paths, default=0) + 1, cols), dtype=np.int64)  # their path tests (row 0: none)
        self.machine_ok = np.zeros((len(_MACHINE_VALUES), cols), dtype=np.int64)  # their machine tests
        self.tests_path = self.tests_machine = False
        self.copy_rules: list[int] = []
        named: list[int] = []
        name_of = np.array([self.names.get(n) for n in range(shape[0])], dtype=object)
        kind_of = np.array([self.kinds.get(k) for k in range(shape[1])], dtype=object)
        for i, r in enumerate(rules):
            col, bit = divmod(i, MASK_BITS)
            base = np.ones(shape[:2], dtype=bool)
            if r.event is not None:
                base &= (name_of == r.event)[:, None]
            if r.kind is not None:
                base &= (kind_of == r.kind)[None, :]
            if not r.where:
                self.plain[base, col] |= 1 << bit
                continue
            if not _copy_answers(r):
                named.append(i)
                continue
            self.copy_rules.append(i)
            self.tested[base, col] |= 1 << bit
            on_path = [f for f in r.where if f.path == "path"]
            on_machine = [f for f in r.where if f.path == "machine"]
            self.tests_path |= bool(on_path)
            self.tests_machine |= bool(on_machine)
            for code, text in [(0, None), *paths.items()]:
                props = {} if text is None else {"path": text}
                if all(event_property_matches(f, props) for f in on_path):
                    self.path_ok[code, col] |= 1 << bit
            for m, value in enumerate(_MACHINE_VALUES):
                props = {} if value is None else {"machine": value}
                if all(event_property_matches(f, props) for f in on_machine):
                    self.machine_ok[m, col] |= 1 << bit
        self.named_ids = np.zeros(0, dtype=np.int64)
        self.named_masks = np.zeros((0, cols), dtype=np.int64)
        if named:
            sql, params = _events_sql(
                session, workspace_id, config, now, _time_text(session, start), _time_text(session, end), named
            )
            cur = _cursor(session)
            cur.execute(sql, params)
            got = np.array(cur.fetchall(), dtype=np.int64).reshape(-1, 1 + cols)
            got = got[got[:, 1:].any(axis=1)]
            got = got[np.argsort(got[:, 0], kind="stable")]
            self.named_ids, self.named_masks = got[:, 0], got[:, 1:]

    def read(self, lo: int, hi: int) -> Any:
        """The range's events matching some rule: an int64 array of rows (contact, event id, time, masks…)."""
        got = self.con.execute(
            f"SELECT contact_id, id, ts, name_id, kind_id, coalesce(path_id, 0) AS path_id,"
            f" coalesce(path_text, true) AS path_text, coalesce(machine, {_MACHINE_NONE}) AS machine"
            f" FROM {self.source} WHERE contact_id BETWEEN $lo AND $hi AND ts >= $start AND ts <= $end",
            {"lo": lo, "hi": hi, "start": self.start_us, "end": self.end_us},
        ).fetchnumpy()
        n, k, p, m = (np.asarray(got[c]) for c in ("name_id", "kind_id", "path_id", "machine"))
        ids = np.asarray(got["id"], dtype=np.int64)
        masks = self.plain[n, k]
        if self.copy_rules:
            candidates = self.tested[n, k]
            tested = candidates & self.path_ok[p] & self.machine_ok[m]
            unsure = np.zeros(ids.size, dtype=bool)
            if self.tests_path:  # a path that is not a JSON string: the copy holds its text
                unsure |= (p != 0) & ~np.asarray(got["path_text"], dtype=bool)
            if self.tests_machine:
                unsure |= m == _MACHINE_OTHER
            odd = np.flatnonzero(unsure & candidates.any(axis=1))
            if odd.size:
                tested[odd] = self._masks_from_rows(ids[odd])
            masks |= tested
        if self.named_ids.size:
            at = np.minimum(np.searchsorted(self.named_ids, ids), self.named_ids.size - 1)
            found = self.named_ids[at] == ids
            masks[found] |= self.named_masks[at[found]]
        keep = masks.any(axis=1)
        return np.column_stack(
            [np.asarray(got["contact_id"], dtype=np.int64)[keep], ids[keep], np.asarray(got["ts"])[keep], masks[keep]]
        )

    def _masks_from_rows(self, ids: Any) -> Any:
        """The copy-tested rules' bits for events the copy cannot tell apart, from their stored properties."""
        out = np.zeros((ids.size, self.cols), dtype=np.int64)
        where = {int(e): j for j, e in enumerate(ids.tolist())}
        cur = _cursor(self.session)
        for i in range(0, ids.size, 500):
            part = ids[i : i + 500].tolist()
            cur.execute(
                _sql(
                    self.session,
                    f"SELECT id, name, kind, {_json_text(self.session, 'properties')} FROM events "
                    f"WHERE id IN ({', '.join('?' for _ in part)})",
                ),
                part,
            )
            for eid, name, kind, raw in cur.fetchall():
                props = _loads(raw) or {}
                for ri in self.copy_rules:
                    if self.config.rules[ri].matches(name, kind, props):
                        out[where[eid], ri // MASK_BITS] |= 1 << (ri % MASK_BITS)
        return out


def _range_params(params: list[Any] | dict[str, Any], lo: int, hi: int) -> Any:
    if isinstance(params, dict):
        return {**params, _LO: lo, _HI: hi}
    return [lo if p is _RANGE_LO else hi if p is _RANGE_HI else p for p in params]


def _match_codes(
    masks: Any, config: EngagementConfig, memo: dict[tuple[int, ...], tuple[int, ...]]
) -> tuple[Any, list[tuple[int, ...]]]:
    """Each event's code into a table of distinct matched-rule tuples (ascending rule indices), from its masks."""
    if masks.shape[1] == 1:  # up to MASK_BITS rules: one column (np.unique over rows is several times slower)
        distinct, codes = np.unique(masks[:, 0], return_inverse=True)
        rows = [[m] for m in distinct.tolist()]
    else:
        distinct, codes = np.unique(masks, axis=0, return_inverse=True)
        rows = distinct.tolist()
    table = []
    for row in rows:
        key = tuple(row)
        hit = memo.get(key)
        if hit is None:
            hit = memo[key] = tuple(
                k * MASK_BITS + i for k, m in enumerate(row) for i in range(MASK_BITS) if m >> i & 1
            )
        table.append(hit)
    return np.asarray(codes).reshape(-1), table


_NO_EVENTS: BatchEngagement = (0.0, [], {})


def _loads(raw: Any) -> Any:
    if raw == "{}":
        return {}
    return orjson.loads(raw) if isinstance(raw, str | bytes) else raw


@_gc_paused
def bulk_engagement(
    session: Session,
    workspace_id: int,
    contact_ids: Sequence[int] | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    *,
    bounds: tuple[int, int] | None = None,
    deferred: Deferred | None = None,
    store: ColumnarStore | None = None,
    copy: Any = None,
    in_range: Sequence[int] | None = None,
) -> service.ScoreWrite:
    """``service.recompute_engagement`` for these contacts (None: every contact of the workspace, or of the id
    range ``bounds``), set-based; ``deferred`` as for ``bulk_fit``. With ``store`` (the columnar copies of the
    event log) a rescoring of every contact (or of the range ``bounds``) syncs the workspace's copy and reads the
    events from it; ``copy``: instead, a connection to the copy the caller synced and holds open (read-only, so
    worker processes read it at once), only read. ``in_range`` as for ``bulk_fit``."""
    now = now or utcnow()
    config = service.engagement_config(session, workspace_id)
    ids = _ids(session, workspace_id, contact_ids, bounds, in_range)
    result = service.ScoreWrite()
    hl = config.half_life
    hl_s = hl.total_seconds()
    now_us = (now - EPOCH) // _US
    start = horizon_start(now, config)
    now_term = epoch_seconds(now) / hl_s
    stamp = _time_text(session, now)
    state_memo: dict[str, str] = {}
    half_lives: dict[float, int] = {}
    # the rules each event matches are computed by the database (bit masks, ``_events_sql``): only integers come back
    events_sql, events_params = _events_sql(
        session, workspace_id, config, now, _time_text(session, start), _time_text(session, now + service.FUTURE_SKEW)
    )
    masks_of: dict[tuple[int, ...], tuple[int, ...]] = {}
    # a stored row comes with its explanation and state: one that says what the recomputation found (decay aside,
    # ``service.engagement_kept``) is kept
    old_sql = _sql(
        session,
        f"SELECT contact_id, score, {_epoch_us_sql(session, 'as_of')}, half_life_seconds, "
        f"{_json_text(session, 'explanation')}, {_json_text(session, 'state')} "
        "FROM contact_scores WHERE workspace_id = ? AND kind = 'engagement' AND contact_id BETWEEN ? AND ?",
    )
    threshold = min((t.min_score for t in config.stage_thresholds), default=None)
    reached: list[int] = []
    with contextlib.ExitStack() as stack:
        # a full rescoring with a columnar copy at hand reads the events from it (``_ColumnarEvents``)
        columns: _ColumnarEvents | None = None
        background = stack.enter_context(_writes(session, deferred))
        held = copy is not None
        if (held or store is not None) and contact_ids is None and events_sql is not None and _columnar_fits(config):
            con = copy if held else stack.enter_context(store.connect(session))  # type: ignore[union-attr]
            columns = _ColumnarEvents(
                session, con, workspace_id, config, now, start, now + service.FUTURE_SKEW, sync=not held
            )
        for lo, hi, part in _ranges(ids):
            wanted = set(part)
            cur = _cursor(session)
            scored: dict[int, BatchEngagement] = {}
            got = None
            if columns is not None:
                got = columns.read(lo, hi)
            elif events_sql is not None:
                cur.execute(events_sql, _range_params(events_params, lo, hi))
                fetched = cur.fetchall()
                got = np.array(fetched, dtype=np.int64) if fetched else None
                del fetched
                if got is not None:
                    got = got[got[:, 3:].any(axis=1)]
            if got is not None and len(got):
                codes, table = _match_codes(got[:, 3:], config, masks_of)
                scored = engagement_batch(got[:, 0], got[:, 2], got[:, 1], table, config, now, now_us, codes=codes)
            cur.execute(old_sql, (workspace_id, lo, hi))
            old = {r[0]: r for r in cur.fetchall()}
            rows: list[tuple[Any, ...]] = []
            fresh: list[tuple[Any, ...]] = []  # of contacts without a row of this kind when read
            history: list[tuple[Any, ...]] = []
            for cid in sorted((scored.keys() | old.keys()) & wanted):
                new_score, lines, state = scored.get(cid, _NO_EVENTS)
                prev = old.get(cid)
                if prev is None and new_score == 0 and not lines:
                    continue
                result.scored += 1
                before = 0.0
                if prev is not None:
                    _, score, as_of_us, hls, stored_explanation, stored_state = prev
                    if hls is None:
                        before = float(score)
                    elif now_us <= as_of_us:
                        before = score
                    else:
                        hl_us = half_lives.get(hls)
                        if hl_us is None:
                            hl_us = half_lives[hls] = timedelta(seconds=hls) // _US
                        before = score * float(2.0 ** (-((now_us - as_of_us) / hl_us)))
                unchanged = abs(new_score - before) <= 1e-9 * max(1.0, abs(before))
                if (
                    unchanged
                    and prev is not None
                    and service.engagement_kept(
                        hls, hl_s, _loads(stored_explanation), _loads(stored_state), lines, state
                    )
                ):
                    continue  # the stored row, decayed to now, is this recomputation: kept, not in the history
                # decay_key(new_score, now, hl_s) with its time term computed once
                key = math.log2(abs(new_score)) + now_term if new_score != 0 and math.isfinite(new_score) else None
                contributions = [
                    {"rule": k, "events": n, "points": p, "points_now": round(pn, 4)} for k, n, p, pn in lines
                ]
                if state:
                    raw_state = orjson.dumps(state).decode()
                    state_text = state_memo.setdefault(raw_state, raw_state)
                else:
                    state_text = "{}"
                (rows if prev is not None else fresh).append(
                    (
                        workspace_id,
                        cid,
                        "engagement",
                        new_score,
                        None,
                        None,
                        orjson.dumps(contributions).decode(),
                        None,
                        state_text,
                        key,
                        hl_s,
                        stamp,
                        stamp,
                    )
                )
                if not unchanged:
                    result.changed.append(cid)
                    if threshold is not None and new_score >= threshold:
                        reached.append(cid)
                if prev is None or abs(new_score - before) >= service.ENGAGEMENT_HISTORY_STEP:
                    history.append(
                        (
                            workspace_id,
                            cid,
                            "engagement",
                            round(new_score, 4),
                            None if prev is None else round(before, 4),
                            None,
                            stamp,
                            "recomputed from events",
                        )
                    )
            _write(session, rows, fresh, history, deferred, background)
            if progress is not None:
                progress(len(part))
    if deferred is not None:
        deferred.reached.extend(reached)
        return result
    # only contacts at or above the lowest threshold can move (the stored score is as of now)
    service._stage_thresholds(session, workspace_id, reached, config, now)
    _after_change(session, workspace_id, result.changed, "engagement", now)
    return result


def rescore_all(
    session: Session,
    workspace_id: int,
    kinds: Sequence[str] = ("fit", "engagement"),
    now: datetime | None = None,
    progress: Progress | None = None,
    store: ColumnarStore | None = None,
) -> dict[str, service.ScoreWrite]:
    """Rescore every contact of the workspace in the caller's transaction (``progress`` gets the contacts done,
    per kind): what ``service.recompute`` does for all contacts, set-based (events from the columnar copies in
    ``store`` when given)."""
    now = now or utcnow()
    out: dict[str, service.ScoreWrite] = {}
    if "fit" in kinds:
        out["fit"] = bulk_fit(session, workspace_id, None, now, progress)
    if "engagement" in kinds:
        out["engagement"] = bulk_engagement(session, workspace_id, None, now, progress, store=store)
    session.flush()
    return out


# --- several processes -----------------------------------------------------------------------------------------------


class RangesFailed(RuntimeError):
    """Some contact-id ranges of a parallel rescoring failed: each left nothing written (its one write transaction
    rolled back); the other ranges are stored and followed up. Running the rescoring again completes it."""

    def __init__(self, failed: list[tuple[int, int, str]]) -> None:
        self.failed = failed
        parts = "; ".join(f"contacts {lo}–{hi}: {why}" for lo, hi, why in failed)
        super().__init__(f"{len(failed)} range(s) not rescored ({parts})")


def default_processes() -> int:
    """Worker processes for a full rescoring: the CPU count. On PostgreSQL the ranges' writes run concurrently; on
    SQLite the workers only read and score (the columnar copy at once, read-only) and this process writes each range
    while they score the next — 200,000 contacts on two cores: the periodic rescoring 4.5 s vs 6.6 s in one
    process, the first scoring 11.1 s vs 12.3 s (seventh session, load 2.8; docs/scoring.md)."""
    return max(1, os.cpu_count() or 1)


_ENGINES: dict[str, Any] = {}
# per worker process, the fit work one range leaves for the next of the same rescoring (``bulk_fit(shared=)``), and
# the explanation texts it met that were not stored yet, by the negative id standing in for each (``_resolve``)
_SHARED_FIT: dict[tuple[str, datetime], dict[Any, Any]] = {}
_PLACEHOLDERS: dict[tuple[str, datetime], dict[str, int]] = {}
_EID = _SCORE_COLUMNS.index("explanation_id")
_CACHE_KIB = 524_288  # the most page cache the writing process of a rescoring on SQLite keeps (512 MiB)
_HOLD_S = 2.0  # longest a rescoring on SQLite holds the write lock in one transaction (``rescore_parallel``)


_Scored = dict[str, tuple[service.ScoreWrite, "Deferred | None"]]


def _explained(texts: set[str]) -> dict[str, int]:  # pragma: no cover - never called
    raise RuntimeError("a range's explanations were stored by the worker that scored it")


def _score_range(
    url: str,
    workspace_id: int,
    kinds: Sequence[str],
    now: datetime,
    lo: int,
    hi: int,
    copy_dir: str | None = None,
    write: bool = True,
) -> tuple[_Scored | None, dict[str, tuple[int, list[int], float]]]:
    """In a worker process: read and score the contacts with ids lo..hi (a deferred read transaction, no write lock
    held; engagement events from the columnar copy in ``copy_dir``, once synced, when given), then write their
    rows, history and stage moves in one short transaction (all of the range or none) — or, without ``write``,
    return the scored rows for the caller to write (``_write_scored``). With ``write`` the shared fit explanations
    are stored by the worker (committed at once: only ever added, identical whoever adds them); without it the
    worker only reads: a text not stored yet gets a negative id in its rows that the writer resolves."""
    from suppilo.analytics.columnar import ColumnarStore
    from suppilo.db.session import make_engine

    cpu = time.process_time()
    engine = _ENGINES.get(url)
    if engine is None:
        engine = _ENGINES[url] = make_engine(url, pool_size=2)
    reader = Session(engine.execution_options(sqlite_begin="DEFERRED"))
    writer = Session(engine)
    store = ColumnarStore(Path(copy_dir)) if copy_dir is not None else None
    try:
        for memo in (_SHARED_FIT, _PLACEHOLDERS):  # only the current rescoring's
            for key in [k for k in memo if k != (url, now)]:
                del memo[key]
        shared = _SHARED_FIT.setdefault((url, now), {})
        placeholders = _PLACEHOLDERS.setdefault((url, now), {})

        def explain(texts: set[str]) -> dict[str, int]:
            if not write:  # read only; the rows of texts not stored yet carry a stand-in id (``_resolve``)
                out = service.explanation_ids(reader, workspace_id, texts, add=False)
                for text in texts - out.keys():
                    out[text] = placeholders.setdefault(text, -1 - len(placeholders))
                return out
            out = service.explanation_ids(writer, workspace_id, texts)
            writer.commit()
            return out

        done: _Scored = {}
        ids = _all_ids(reader, workspace_id, (lo, hi))  # read once for both kinds (the range's bounds are fixed)
        for kind in sorted(kinds, key=lambda k: k != "fit"):  # fit first: it needs no copy (see below)
            deferred = Deferred(explain, placeholders=placeholders)
            if kind == "fit":
                if not service.active_icps(reader, workspace_id):
                    done[kind] = (service.ScoreWrite(), None)  # nothing to score with: per contact, when written
                    continue
                done[kind] = (
                    bulk_fit(
                        reader, workspace_id, None, now, bounds=(lo, hi), deferred=deferred, shared=shared, in_range=ids
                    ),
                    deferred,
                )
            elif store is None:
                done[kind] = (
                    bulk_engagement(reader, workspace_id, None, now, bounds=(lo, hi), deferred=deferred, in_range=ids),
                    deferred,
                )
            else:
                # the copy is read once the parent has synced it (it holds the copy's lock exclusively until then),
                # in a read transaction begun after that: the row store then holds every event the copy holds
                reader.rollback()
                with store.read(reader) as con:
                    done[kind] = (
                        bulk_engagement(
                            reader, workspace_id, None, now, bounds=(lo, hi), deferred=deferred, copy=con, in_range=ids
                        ),
                        deferred,
                    )
        reader.rollback()
        if not write:
            for _, kept in done.values():
                if kept is not None:
                    kept.explain = _explained
            share = (time.process_time() - cpu) / max(1, len(done))
            return done, {k: (r.scored, [], share) for k, (r, _) in done.items()}
        _write_scored(writer, workspace_id, now, lo, hi, done)
        writer.commit()
    except BaseException:
        writer.rollback()
        raise
    finally:
        reader.close()
        writer.close()
    # segments follow in the parent, once for all ranges (the per-contact fit path followed its own)
    share = (time.process_time() - cpu) / max(1, len(done))
    return None, {k: (r.scored, r.changed if d is not None else [], share) for k, (r, d) in done.items()}


def _write_scored(writer: Session, workspace_id: int, now: datetime, lo: int, hi: int, done: _Scored) -> None:
    """Write a scored range's rows, history lines and stage moves in ``writer``'s transaction (the caller commits);
    a fit without an active ICP is recomputed contact by contact here. ``done`` is updated with what was written."""
    config = service.engagement_config(writer, workspace_id)
    for kind, (result, kept) in list(done.items()):
        if kept is None:
            in_range = _all_ids(writer, workspace_id, (lo, hi))
            done[kind] = (service.recompute_fit(writer, workspace_id, in_range, now), None)
            continue
        if kept.placeholders:
            kept.scores, kept.fresh = _resolve(writer, workspace_id, kept.placeholders, kept.scores, kept.fresh)
        write_scores(writer, kept.scores, kept.fresh)
        write_history(writer, kept.history)
        if kind == "fit":
            if any(t.min_fit_grade is not None for t in config.stage_thresholds):
                service._stage_thresholds(writer, workspace_id, result.changed, config, now)
        else:
            service._stage_thresholds(writer, workspace_id, kept.reached, config, now)


def _resolve(
    writer: Session, workspace_id: int, placeholders: dict[str, int], *parts: list[tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], ...]:
    """The score rows with each stand-in explanation id (negative, ``placeholders``: text -> it) replaced by the
    id of its text, stored now where it still is not."""
    ids = service.explanation_ids(writer, workspace_id, placeholders)
    real = {stand_in: ids[text] for text, stand_in in placeholders.items()}
    out = []
    for rows in parts:
        out.append(
            [(*r[:_EID], real[r[_EID]], *r[_EID + 1 :]) if r[_EID] is not None and r[_EID] < 0 else r for r in rows]
        )
    return tuple(out)


def _joined(
    parts: list[tuple[_Scored | None, dict[str, tuple[int, list[int], float]]]],
) -> tuple[_Scored, dict[str, tuple[int, list[int], float]]]:
    """A range's parts scored by separate tasks (one kind each) as one result, fit first."""
    scored: _Scored = {}
    info: dict[str, tuple[int, list[int], float]] = {}
    for part, part_info in sorted(parts, key=lambda p: "fit" not in p[1]):
        assert part is not None  # parts are only returned, never written by the worker
        scored.update(part)
        info.update(part_info)
    return scored, info


def _ready() -> None:
    """A worker's first task: nothing (it only makes the pool start its processes early)."""


def _start_workers(pool: ProcessPoolExecutor, n: int) -> None:
    for _ in range(n):
        pool.submit(_ready)


def _worker_context() -> Any:
    """Worker processes forked from a fresh server process that imported the application once (``forkserver``):
    no database connection is inherited (unlike ``fork``), and each worker does not import the application again
    (as with ``spawn``, ~1.3 s of CPU per worker). ``spawn`` where forkserver is not available."""
    try:
        ctx = get_context("forkserver")
    except ValueError:  # pragma: no cover - platforms without fork
        return get_context("spawn")
    ctx.set_forkserver_preload(["suppilo.scoring.bulk"])
    return ctx


def rescore_parallel(
    url: str,
    workspace_id: int,
    kinds: Sequence[str] = ("fit", "engagement"),
    now: datetime | None = None,
    processes: int | None = None,
    progress: Progress | None = None,
    range_size: int | None = None,
    store: ColumnarStore | None = None,
) -> dict[str, service.ScoreWrite]:
    """Rescore every contact of the workspace in the database at ``url`` split by contact-id ranges over worker
    processes: each reads and scores its range. On PostgreSQL the worker writes its range in one short transaction
    of its own (the writes run concurrently); on SQLite the workers only read (explanation texts not stored yet get
    stand-in ids) and this process, the one writer, writes the ranges as they come in, several per transaction held
    open at most ``_HOLD_S`` seconds, while the workers score the next; then the segments reading the scores follow
    once. With ``store`` (the columnar copies of the event log) the workspace's copy is synced here while the
    workers score their ranges' fit (on SQLite every range's fit is handed out before any engagement), and every
    worker then reads its engagement events from it (read-only, at once: the shared lock they take waits for the
    sync's exclusive one).

    A range that fails leaves nothing of itself written; the others are kept and followed up, and ``RangesFailed``
    names the failed ranges. Re-running completes the rescoring (rows already stored as of ``now`` are kept)."""
    from sqlalchemy.engine import make_url

    from suppilo.analytics import columnar
    from suppilo.db.session import make_engine

    now = now or utcnow()
    processes = processes or default_processes()
    size = range_size or RANGE
    write_here = make_url(url).get_backend_name() == "sqlite"
    engine = make_engine(url, pool_size=1)
    stack = contextlib.ExitStack()
    starting: threading.Thread | None = None
    writer: Session | None = None
    try:
        with Session(engine.execution_options(sqlite_begin="DEFERRED")) as s:
            ids = _all_ids(s, workspace_id)
            workers = min(processes, -(-len(ids) // size))
            pool = None
            if workers > 1:
                # started now, from a thread: the worker processes come up (the application imported once, by the
                # forkserver; starting a process waits for that) while the copy is synced below
                pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=_worker_context()))
                starting = threading.Thread(target=_start_workers, args=(pool, workers), daemon=True)
                starting.start()
            copy_dir = None
            if (
                store is not None
                and "engagement" in kinds
                and _columnar_fits(service.engagement_config(s, workspace_id))
            ):
                copy_dir = str(store.directory)
            s.rollback()
        ranges = [(ids[i], ids[min(i + size, len(ids)) - 1], min(size, len(ids) - i)) for i in range(0, len(ids), size)]
        score = functools.partial(_score_range, url, workspace_id, kinds, now, copy_dir=copy_dir, write=not write_here)
        futures: dict[Any, tuple[int, int, int, str | None]] = {}
        # SQLite with the copy: every range's fit is handed out before any range's engagement (one task each), so
        # the workers score fit while the copy is synced instead of waiting for it after their first range; this
        # process joins a range's two parts and writes them together (PostgreSQL: the workers write whole ranges)
        split = write_here and copy_dir is not None and len(kinds) > 1

        def submit() -> None:
            """Hand the ranges to the pool (without one they are scored here, in order, below)."""
            if pool is not None:
                if starting is not None:
                    starting.join()
                if not split:
                    futures.update({pool.submit(score, lo, hi): (lo, hi, n, None) for lo, hi, n in ranges})
                    return
                for kind in sorted(kinds, key=lambda k: k != "fit"):
                    part = functools.partial(
                        _score_range, url, workspace_id, (kind,), now, copy_dir=copy_dir, write=False
                    )
                    futures.update({pool.submit(part, lo, hi): (lo, hi, n, kind) for lo, hi, n in ranges})

        if copy_dir is not None and store is not None:
            # the copy is locked exclusively, the ranges handed out (their fit needs no copy), then the copy synced:
            # the workers' engagement waits at the lock, and the sync overlaps their fit
            with Session(engine.execution_options(sqlite_begin="DEFERRED")) as s, store.connect(s) as con:
                submit()
                columnar.sync(s, con, workspace_id, compaction=False)
                s.rollback()
        else:
            submit()
        out = {k: service.ScoreWrite() for k in kinds}
        failed: list[tuple[int, int, str]] = []
        # SQLite: the ranges scored by the workers are written here in transactions of several ranges, each held
        # open at most ``_HOLD_S`` (other writers of the database wait that long at most): the score indexes' pages
        # that every range touches are written once per transaction, not once per range. A range counts once its
        # transaction has committed; one that cannot be written leaves nothing of itself and the others in place.
        opened = 0.0
        cache_kib = min(_CACHE_KIB, max(65_536, len(ids) // 2))  # ~0.5 KiB per contact: 512 MiB at 1,000,000
        staged: list[tuple[int, int, _Scored, dict[str, tuple[int, list[int], float]]]] = []

        def count(info: dict[str, tuple[int, list[int], float]]) -> None:
            for k, (n_scored, changed, cpu_s) in info.items():
                out[k].scored += n_scored
                out[k].changed.extend(changed)
                out[k].worker_cpu_s += cpu_s

        def drop(reason: str) -> None:
            nonlocal writer
            if writer is not None:
                writer.rollback()
                writer.close()
                writer = None
            failed.extend((lo, hi, reason) for lo, hi, _, _ in staged)
            staged.clear()

        def commit() -> None:
            nonlocal writer
            if writer is None:
                return
            try:
                writer.commit()
            except Exception as exc:
                drop(f"{type(exc).__name__}: {exc}")
                return
            writer.close()
            writer = None
            for *_, info in staged:
                count(info)
            staged.clear()

        def take(lo: int, hi: int, n: int, got: tuple[_Scored | None, dict[str, tuple[int, list[int], float]]]) -> None:
            nonlocal writer, opened
            scored, info = got
            if scored is None:  # written by the worker
                count(info)
            else:
                if writer is None:
                    writer = Session(engine)
                    opened = time.monotonic()
                    # pages a transaction changes stay in memory until it commits (spilled, they are written twice)
                    writer.connection().exec_driver_sql(f"PRAGMA cache_size = -{cache_kib}")
                try:
                    _write_scored(writer, workspace_id, now, lo, hi, scored)
                except Exception:
                    # nothing of this range is kept: the transaction is rolled back and the ranges written before
                    # it in the same transaction are written again (no savepoint per range: SQLite makes every
                    # statement under one cost time in proportion to the pages the transaction has changed)
                    writer.rollback()
                    try:
                        for s_lo, s_hi, s_scored, _ in staged:
                            _write_scored(writer, workspace_id, now, s_lo, s_hi, s_scored)
                    except Exception as again:
                        drop(f"{type(again).__name__}: {again}")
                    raise
                info = {k: (r.scored, r.changed if d is not None else [], info[k][2]) for k, (r, d) in scored.items()}
                staged.append((lo, hi, scored, info))
                if time.monotonic() - opened >= _HOLD_S:
                    commit()
            if progress is not None:
                progress(n * len(kinds))

        if pool is None:
            for lo, hi, n in ranges:
                try:
                    take(lo, hi, n, score(lo, hi))
                except Exception as exc:  # reported with its range below
                    failed.append((lo, hi, f"{type(exc).__name__}: {exc}"))
            commit()
        else:
            parts: dict[int, list[tuple[_Scored | None, dict[str, tuple[int, list[int], float]]]]] = {}
            lost: set[int] = set()  # ranges one part of which failed (the other is not written)
            for future in as_completed(futures):
                lo, hi, n, kind = futures[future]
                try:
                    got = future.result()
                    if kind is not None:
                        if lo in lost:
                            continue
                        have = parts.setdefault(lo, [])
                        have.append(got)
                        if len(have) < len(kinds):
                            continue
                        del parts[lo]
                        got = _joined(have)
                    take(lo, hi, n, got)
                except Exception as exc:  # reported with its range below
                    if lo not in lost:
                        lost.add(lo)
                        parts.pop(lo, None)
                        failed.append((lo, hi, f"{type(exc).__name__}: {exc}"))
            stack.close()
        commit()
        with Session(engine) as s:
            for k in kinds:
                out[k].changed.sort()
                _after_change(s, workspace_id, out[k].changed, k, now)
            s.commit()
    finally:
        if starting is not None:
            starting.join()
        stack.close()
        if writer is not None:  # an error left a transaction open: nothing of it is kept
            writer.rollback()
            writer.close()
        engine.dispose()
    if failed:
        raise RangesFailed(sorted(failed))
    return out
