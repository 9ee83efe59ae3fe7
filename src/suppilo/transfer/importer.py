"""Streaming CSV import of contacts, companies, products and orders.

The file is read once with a csv reader; rows are validated one by one (a bad row is never half written: it goes
to the error file with its line number and reason) and written in batches with bulk upserts, one transaction per
batch, so a crash loses at most the batches in flight (one; two for contacts on PostgreSQL, see ``_import_file``)
and running the same file again completes it without duplicates.
"""

from __future__ import annotations

import csv
import json
import operator
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from itertools import chain
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
    update,
)
from sqlalchemy import column as sql_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from suppilo import gc_freeze
from suppilo.commerce.models import Order, OrderLine, Product
from suppilo.companies.models import Company
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact, ContactTag, PropertyDefinition, StageChange
from suppilo.contacts.normalize import (
    InvalidValue,
    email_domain,
    is_free_mail,
    normalize_domain,
    normalize_language,
    timezone_for_country,
)
from suppilo.db.base import utcnow
from suppilo.db.tables import table_of
from suppilo.engine.channels import CHANNELS
from suppilo.engine.lifecycle import StageSpec, decide_rule_move, position_of
from suppilo.errors import DomainError
from suppilo.events.models import Touch
from suppilo.transfer.mapping import CONTACT_FIELDS, ColumnMapping, PropertySpec, build_mapping
from suppilo.transfer.readers import UnreadableFile, open_table
from suppilo.transfer.values import (
    CellError,
    cell_error,
    fast_normalize_email,
    fast_normalize_phone,
    invalid_cell,
    parse_country,
    parse_currency,
    parse_datetime,
    parse_int,
    parse_money,
    parse_property,
    parse_timezone,
)
from suppilo.workspaces.models import Membership, User, Workspace

DEFAULT_BATCH = 10_000
PG_WRITE_SLOTS = 2
CACHE_LIMIT = 200_000

# HubSpot lifecycle stage names (internal and label forms, folded) -> our stages.
LIFECYCLE_ALIASES = {
    "subscriber": "interest",
    "lead": "interest",
    "marketingqualifiedlead": "consideration",
    "mql": "consideration",
    "salesqualifiedlead": "decision",
    "sql": "decision",
    "opportunity": "decision",
    "customer": "customer",
    "evangelist": "advocate",
    "other": "other",
}

# HubSpot "Original Source" values and Salesforce "LeadSource" picklist values -> channels.
SOURCE_CHANNELS = {
    "organicsearch": "organic_search",
    "paidsearch": "paid_search",
    "socialmedia": "organic_social",
    "organicsocial": "organic_social",
    "paidsocial": "paid_social",
    "emailmarketing": "email",
    "email": "email",
    "referrals": "referral",
    "referral": "referral",
    "partnerreferral": "referral",
    "employeereferral": "referral",
    "externalreferral": "referral",
    "wordofmouth": "referral",
    "directtraffic": "direct",
    "direct": "direct",
    "web": "direct",
    "offline": "offline",
    "offlinesources": "offline",
    "phoneinquiry": "offline",
    "othercampaigns": "display",
    "advertisement": "display",
    "display": "display",
    "tradeshow": "events",
    "seminarinternal": "events",
    "seminarpartner": "events",
    "webinar": "events",
    "events": "events",
    "purchasedlist": "outbound",
    "outbound": "outbound",
    "affiliate": "affiliate",
}

ORDER_STATUSES = ("completed", "pending", "cancelled", "refunded")


@lru_cache(maxsize=4096)
def _fold(value: str) -> str:
    return "".join(ch for ch in value.lower() if ch.isalnum())


class ImportError_(DomainError):
    """An import that cannot start (bad kind, channel or mapping)."""

    default_code = "invalid_import"


@dataclass(frozen=True, slots=True)
class RowError:
    """A refused row: the physical line where it starts and why (``error`` in English, as in the error file), with
    a ``code`` and its ``params`` (strings) so that an interface can word the reason in its user's language."""

    line: int
    error: str
    code: str = "invalid_row"
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Reason:
    """Why a row was refused: the English text and its code and parameters."""

    text: str
    code: str
    params: dict[str, str] = field(default_factory=dict)


# Reasons of refused rows that are not about one cell.
_DB_REFUSED = _Reason("the database refused the row", "row_refused")


def _width_reason(fields: int, width: int) -> _Reason:
    return _Reason(
        f"the row has {fields} fields, the header has {width}",
        "row_width",
        {"fields": str(fields), "header": str(width)},
    )


def _order_reason(order: str, line: int) -> _Reason:
    return _Reason(
        f"order {order}: its line {line} is invalid", "order_line_invalid", {"order": order, "line": str(line)}
    )


def _cell_reason(exc: CellError | InvalidValue) -> _Reason:
    if isinstance(exc, CellError):
        return _Reason(exc.message, exc.code, exc.params)
    return _Reason(exc.message, exc.code, {**exc.params, "column": exc.field})


@dataclass
class ImportSummary:
    """What an import did."""

    kind: str
    file: str
    rows: int = 0
    created: int = 0
    updated: int = 0
    failed: int = 0
    mapping: dict[str, str] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    error_file: str | None = None
    encoding: str = ""
    delimiter: str = ""
    seconds: float = 0.0

    def to_dict(self, *, max_errors: int = 1000) -> dict[str, Any]:
        """JSON-ready summary with at most ``max_errors`` row errors inline."""
        return {
            "kind": self.kind,
            "file": self.file,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "failed": self.failed,
            "mapping": self.mapping,
            "ignored_columns": self.ignored_columns,
            "warnings": self.warnings,
            "errors": [
                {"line": e.line, "error": e.error, "code": e.code, "params": e.params} for e in self.errors[:max_errors]
            ],
            "errors_truncated": self.failed > min(len(self.errors), max_errors),
            "error_file": self.error_file,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class _Item:
    """A validated row waiting for its batch to be written."""

    line: int
    cells: list[str]
    rec: dict[str, Any]
    key: str | None = None


class _BatchFailure(Exception):
    """Rows of a batch refused while writing it: ``[(item, reason)]``."""


@dataclass
class _Context:
    """What every loader needs to know about the workspace and the run."""

    workspace_id: int
    country: str
    currency: str
    tz: ZoneInfo
    stages: list[StageSpec]
    rules: dict[str, str]
    filename: str
    channel: str
    now: datetime
    owners: dict[str, int]
    warnings: list[str]
    dialect: str

    def ts(self, value: datetime | None) -> Any:
        """A datetime as the driver stores it (SQLite: naive UTC text, as ``UTCDateTime`` writes it)."""
        if value is None or self.dialect != "sqlite":
            return value
        return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]

    def js(self, value: Any) -> str:
        """A JSON value as JSON text (what SQLite stores; PostgreSQL's import stage holds it as text, cast in SQL)."""
        return json.dumps(value)

    def warn(self, message: str) -> None:
        if message not in self.warnings and len(self.warnings) < 100:
            self.warnings.append(message)


def _insert(dialect: str, table: Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def _chunks(values: list[Any], size: int = 900) -> Iterable[list[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _any_of(col: Any, postgres: bool, name: str = "emails") -> Any:
    """``col`` is one of the list bound as ``name``: one array parameter on PostgreSQL, an expanding IN on SQLite."""
    if postgres:
        item = BigInteger() if name == "ids" else String()
        return col == any_(bindparam(name, type_=postgresql.ARRAY(item)))
    return col.in_(select(literal_column("value")).select_from(func.json_each(bindparam(name, type_=String()))))


def _lookup(conn: Connection, stmt: Any, name: str, values: list[Any]) -> list[Any]:
    """Rows of a statement built with ``_any_of``: one query (an array on PostgreSQL, a JSON list on SQLite)."""
    if not values:
        return []
    return list(conn.execute(stmt, {name: values if conn.dialect.name == "postgresql" else json.dumps(values)}))


def _driver_call(conn: Connection, sql: str, call: Callable[[Any], None]) -> None:
    """Run ``call(cursor)`` on a driver cursor; a driver error becomes SQLAlchemy's DBAPIError, as from execute()."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    dbapi = conn.connection.dbapi_connection
    if dbapi is None:  # only after the connection was invalidated, which would have raised before here
        raise RuntimeError("the database connection is closed")
    cursor = dbapi.cursor()
    try:
        call(cursor)
    except dbapi_error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi_error) from exc
    finally:
        cursor.close()


def _execute_with(sql: str, params: list[Any]) -> Callable[[Any], None]:
    """A ``_driver_call`` call running ``sql`` once with ``params`` (bound now, not when called)."""

    def call(cursor: Any) -> None:
        cursor.execute(sql, params)

    return call


_PG_BINARY_TYPES = {"BIGINT": "int8", "INTEGER": "int4", "BOOLEAN": "bool", "JSONB": "jsonb", "TEXT": "text"}
_PG_BINARY_TYPES["TIMESTAMP WITH TIME ZONE"] = "timestamptz"


class _PgCopy:
    """A binary ``COPY table (columns) FROM STDIN`` (the server skips parsing text) with the columns' types."""

    def __init__(self, table_name: str, columns: Sequence[Any]) -> None:
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        types = []
        for col in columns:
            name = col.type.compile(dialect=dialect)
            types.append("text" if name.startswith("VARCHAR") else _PG_BINARY_TYPES[name])
        self.types = types
        self.sql = f"COPY {table_name} ({', '.join(c.name for c in columns)}) FROM STDIN (FORMAT BINARY)"

    def run(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        _pg_copy(conn, self.sql, rows, self.types)


def _pg_copy(conn: Connection, sql: str, rows: Sequence[Sequence[Any]], types: list[str] | None = None) -> None:
    """``COPY ... FROM STDIN`` of rows (tuples in the statement's column order) on the connection's transaction."""
    if not rows:
        return

    def copy_rows(cursor: Any) -> None:
        with cursor.copy(sql) as copy:
            if types is not None:
                copy.set_types(types)
            write_row = copy.write_row
            for row in rows:
                write_row(row)

    _driver_call(conn, sql, copy_rows)


def _sqlite_next_id(conn: Connection, table_name: str) -> int:
    """The next id SQLite's AUTOINCREMENT would hand out for ``table_name``."""
    seq = conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (table_name,)).scalar()
    top = conn.exec_driver_sql(f"SELECT max(id) FROM {table_name}").scalar()
    return max(seq or 0, top or 0) + 1


class _Rows:
    """An INSERT run by SQLite's ``executemany`` with rows as tuples in ``columns`` order (no dict per row).

    ``multi``: a plain INSERT is sent as statements of many rows each (``VALUES (...), (...), ...``, as many as
    the connection's variable limit allows) instead: the driver binds the same values, but SQLite runs hundreds
    of rows per step, so the thread takes the interpreter lock back once per statement instead of once per row
    (while the reading thread holds it, each take waits up to the switch interval).
    """

    def __init__(self, stmt: Any, columns: list[str], *, multi: bool = False) -> None:
        self.stmt = stmt
        self.columns = columns
        self.multi = multi
        self._compiled: tuple[str, Any] | None = None

    def run(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self._compiled is None:
            compiled = self.stmt.compile(dialect=conn.dialect, column_keys=self.columns)
            names = list(compiled.positiontup or ())
            if sorted(names) != sorted(self.columns):
                raise RuntimeError(f"statement parameters {names} are not the columns {self.columns}")
            sql = compiled.string
            listed, placeholders = f" ({', '.join(names)}) VALUES (", ", ".join(["?"] * len(names))
            if sql.count(listed + placeholders + ")") == 1:
                # Plain positional placeholders: name the columns in the rows' order instead of reordering rows.
                sql = sql.replace(listed, f" ({', '.join(self.columns)}) VALUES (")
                names = list(self.columns)
            order = [self.columns.index(n) for n in names]
            getter = None if order == list(range(len(order))) else operator.itemgetter(*order)
            self._compiled = (sql, getter)
        sql, getter = self._compiled
        params = rows if getter is None else [getter(row) for row in rows]
        one = f"({', '.join(['?'] * len(self.columns))})"
        values = f" VALUES {one}"
        if self.multi and len(params) > 1 and sql.count(values) == 1 and sql.count("?") == len(self.columns):
            head, tail = sql.split(values)
            _driver_call(conn, sql, lambda cursor: _execute_multi(cursor, head + " VALUES ", one, tail, params))
        else:
            _driver_call(conn, sql, lambda cursor: cursor.executemany(sql, params))


_SQLITE_MAX_VARIABLES = 32766  # SQLite's default SQLITE_MAX_VARIABLE_NUMBER since 3.32
_MULTI_ROWS = 1000


def _execute_multi(cursor: Any, head: str, one: str, tail: str, rows: list[tuple[Any, ...]]) -> None:
    """``head`` + ``one`` (one row's placeholders) + ``tail`` for ``rows``, many rows per statement: ``head`` ends with
    ``VALUES``, ``one`` is repeated once per row and ``tail`` follows (an upsert's ``ON CONFLICT`` clause)."""
    width = len(rows[0])
    limit = _SQLITE_MAX_VARIABLES
    getlimit = getattr(cursor.connection, "getlimit", None)  # Python 3.11+
    if getlimit is not None:
        limit = getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    per = max(1, min(_MULTI_ROWS, limit // width))
    full = head + ", ".join([one] * per) + tail
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        statement = full if len(part) == per else head + ", ".join([one] * len(part)) + tail
        cursor.execute(statement, list(chain.from_iterable(part)))


class _Bulk:
    """A bulk statement (built with the dialect's insert) run by the driver's ``executemany``.

    The statement is compiled once per batch shape; rows come with values already in the driver's form (see
    ``_Context.ts``/``js``), which skips SQLAlchemy's per-value bind processing, the import's main cost.
    Constants the statement carries (``version + 1``) are taken from the compiled parameters.
    """

    def __init__(self, stmt: Any) -> None:
        self.stmt = stmt
        self._compiled: dict[tuple[str, frozenset[str]], tuple[str, Any, dict[str, Any]]] = {}

    def run(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        keys = frozenset(rows[0])
        cache_key = (conn.dialect.name, keys)
        entry = self._compiled.get(cache_key)
        if entry is None:
            compiled = self.stmt.compile(dialect=conn.dialect, column_keys=sorted(keys))
            constants = {k: v for k, v in compiled.construct_params(dict.fromkeys(keys)).items() if k not in keys}
            names = compiled.positiontup
            getter: Callable[[dict[str, Any]], tuple[Any, ...]] | None = operator.itemgetter(*names) if names else None
            if names and len(names) == 1:
                single = operator.itemgetter(names[0])
                getter = lambda row: (single(row),)  # noqa: E731
            entry = (compiled.string, getter, constants)
            self._compiled[cache_key] = entry
        sql, getter, constants = entry
        if constants:
            rows = [{**row, **constants} for row in rows]
        params = [getter(row) for row in rows] if getter is not None else rows
        _driver_call(conn, sql, lambda cursor: cursor.executemany(sql, params))


def _check_len(value: str, limit: int, column: str) -> str:
    if len(value) > limit:
        raise cell_error(column, f"longer than {limit} characters", "too_long", limit=limit)
    return value


class _Loader(ABC):
    """One kind of record: parse a row, write a batch."""

    kind = ""

    def __init__(self, ctx: _Context, mapping: ColumnMapping, header: list[str]) -> None:
        self.ctx = ctx
        self.mapping = mapping
        self.header = header
        self.columns = {f: i for i, f in mapping.fields.items()}
        self.props = [(i, header[i], p) for i, p in mapping.properties.items()]

    def group_key(self, cells: list[str]) -> str | None:
        """Rows with the same key must be written in the same batch (the lines of one order)."""
        return None

    def cell(self, cells: list[str], name: str) -> str:
        i = self.columns.get(name)
        if i is None or i >= len(cells):
            return ""
        return cells[i].strip()

    def parse_props(self, cells: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, column, spec in self.props:
            raw = cells[i].strip() if i < len(cells) else ""
            if raw:
                out[spec.name] = parse_property(raw, column, spec.type, list(spec.options))
        return out

    def owner(self, raw: str) -> int | None:
        if not raw:
            return None
        owner_id = self.ctx.owners.get(raw.strip().lower())
        if owner_id is None:
            self.ctx.warn(f"owner {raw!r} is not a member of this workspace; left empty")
        return owner_id

    @abstractmethod
    def prepare(self, line: int, cells: list[str]) -> dict[str, Any]:
        """Validate one row into the values to write; raises on a bad row."""

    @abstractmethod
    def write(self, conn: Connection, items: list[_Item]) -> tuple[int, int]:
        """Write a batch; returns (created, updated)."""

    def reset_caches(self) -> None:  # noqa: B027 - an optional hook: loaders without caches keep this no-op
        """Forget cached ids (a batch was rolled back)."""

    def committed(self) -> None:  # noqa: B027 - an optional hook: loaders without caches keep this no-op
        """The batch this thread just wrote is committed: what it learned may now serve other batches."""

    def write_slots(self) -> int:
        """How many batches may be written at once, each on its own connection (see ``batch_keys``)."""
        return 1

    def batch_keys(self, items: list[_Item]) -> frozenset[str]:
        """The unique keys a batch writes: a batch waits for every batch in flight that shares one (a later row for
        the same key must win, and two transactions that wait on each other's keys would deadlock)."""
        return frozenset()


# --- companies by domain (shared by contacts and companies) ------------------------------------------------------


class _CompanyCache:
    """Company ids by domain. ``ids`` holds only committed companies (batches written at once on other connections
    share it, and a company another transaction has not committed yet would fail their foreign-key check); what a
    batch learned joins it when that batch commits (``committed``, from the writing thread)."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.ids: dict[str, int] = {}
        self._learned = threading.local()
        table = table_of(Company)
        self.table = table
        self.select = select(table.c.domain, table.c.id).where(
            table.c.workspace_id == ctx.workspace_id, table.c.domain.in_(bindparam("domains", expanding=True))
        )
        self.insert = _insert(ctx.dialect, table).on_conflict_do_nothing(
            index_elements=["workspace_id", "domain"], index_where=table.c.domain.isnot(None)
        )

    def ensure(self, conn: Connection, wanted: dict[str, str | None]) -> dict[str, int]:
        """Ids of the companies with these domains, created (named by ``wanted[domain]`` or the domain) if new."""
        known = self.ids
        found = {d: i for d in wanted if (i := known.get(d)) is not None}
        missing = [d for d in wanted if d not in found]
        if not missing:
            return found
        for chunk in _chunks(missing):
            found.update(conn.execute(self.select, {"domains": chunk}).all())
        new = [d for d in missing if d not in found]
        if new:
            if self.ctx.dialect == "postgresql":
                # One order for every transaction: two batches inserting the same new domains wait, never deadlock.
                new.sort()
            now = self.ctx.now
            conn.execute(
                self.insert,
                [
                    {
                        "workspace_id": self.ctx.workspace_id,
                        "domain": d,
                        "name": (wanted[d] or d)[:200],
                        "name_lower": (wanted[d] or d)[:200].lower(),
                        "properties": {},
                        "created_at": now,
                        "updated_at": now,
                    }
                    for d in new
                ],
            )
            for chunk in _chunks(new):
                found.update(conn.execute(self.select, {"domains": chunk}).all())
        learned: dict[str, int] = self._pending()
        learned.update((d, found[d]) for d in missing if d in found)
        return {d: found[d] for d in wanted if d in found}

    def _pending(self) -> dict[str, int]:
        pending: dict[str, int] | None = getattr(self._learned, "ids", None)
        if pending is None:
            pending = self._learned.ids = {}
        return pending

    def committed(self) -> None:
        learned = self._pending()
        if learned:
            if len(self.ids) + len(learned) > CACHE_LIMIT:
                self.ids = {}
            self.ids.update(learned)
            learned.clear()

    def reset(self) -> None:
        self.ids = {}
        self._pending().clear()


# --- contacts ----------------------------------------------------------------------------------------------------

_CONTACT_TEXT = {"first_name": 200, "last_name": 200, "job_title": 200, "region": 100, "city": 100, "external_id": 200}
_CONTACT_FILE_COLUMNS = (
    "first_name",
    "last_name",
    "first_name_lower",
    "last_name_lower",
    "phone",
    "job_title",
    "country",
    "region",
    "city",
    "language",
    "external_id",
    "owner_id",
)

# The columns every contact row carries after the file's own, all known when the row is read (``_finish``); the
# writer appends ``company_id`` and ``properties``, which depend on the database (see ContactLoader.write).
_CONTACT_FIXED_COLUMNS = (
    "workspace_id",
    "email",
    "is_anonymous",
    "timezone",
    "lifecycle_stage",
    "lifecycle_stage_at",
    "first_touch_channel",
    "latest_touch_channel",
    "first_touch_source",
    "latest_touch_source",
    "first_touch_at",
    "latest_touch_at",
    "created_at",
    "updated_at",
    "version",
)
_CHANGE_COLUMNS = ("workspace_id", "contact_id", "from_stage", "to_stage", "changed_at", "reason", "source", "actor")
_TOUCH_COLUMNS = (
    "workspace_id",
    "contact_id",
    "event_id",
    "occurred_at",
    "channel",
    "source",
    "medium",
    "campaign",
    "term",
    "content",
    "referrer",
    "landing_url",
)
_PG_STAGE = "suppilo_import_contacts"
# What the PostgreSQL upsert returns of each row it wrote (its id, and what a new row's derived rows copy).
_PG_RETURNED = (
    "email",
    "id",
    "workspace_id",
    "lifecycle_stage",
    "lifecycle_stage_at",
    "first_touch_channel",
    "first_touch_source",
    "first_touch_at",
)
_MEMO_LIMIT = 10_000
_NO_PROPS: Mapping[str, Any] = MappingProxyType({})


@lru_cache(maxsize=1024)
def _language(raw: str) -> str:
    return normalize_language(raw)


@lru_cache(maxsize=1024)
def _timezone(raw: str) -> str:
    return parse_timezone(raw, "timezone")


@lru_cache(maxsize=65536)
def _domain(raw: str) -> str:
    return normalize_domain(raw)


def _mail_company_domain(email: str) -> str | None:
    """The company domain of an address: its domain unless that is a free mail provider."""
    domain = email_domain(email)
    return None if is_free_mail(domain) else domain


class ContactLoader(_Loader):
    kind = "contacts"

    def __init__(self, ctx: _Context, mapping: ColumnMapping, header: list[str]) -> None:
        super().__init__(ctx, mapping, header)
        self.companies = _CompanyCache(ctx)
        self.table = table_of(Contact)
        t = self.table
        present = set(self.columns)
        self.file_columns = [
            c
            for c in _CONTACT_FILE_COLUMNS
            if c in present
            or (c in ("first_name_lower", "last_name_lower") and c.removesuffix("_lower") in present)
            or (c == "phone" and "mobile_phone" in present)
            or (c == "owner_id" and "owner" in present)
        ]
        self.has_props = bool(self.props)
        self.stage_keys = {s.key for s in ctx.stages}
        self.stage_by_label = {_fold(s.key): s.key for s in ctx.stages} | {_fold(s.label): s.key for s in ctx.stages}
        self.default_stage = self._initial_stage()
        self.ix: dict[str, int | None] = {f: self.columns.get(f) for f in CONTACT_FIELDS}
        self.text_cells = [
            (name, i, limit) for name, limit in _CONTACT_TEXT.items() if (i := self.columns.get(name)) is not None
        ]
        self.has_first = "first_name" in self.columns
        self._stage_memo: dict[str, str] = {}
        self._channel_memo: dict[str, tuple[str, str]] = {}
        self.has_last = "last_name" in self.columns
        self.now_v = ctx.ts(ctx.now)
        self._pg_upsert_sql: str | None = None
        self.upsert = self._upsert(_insert(ctx.dialect, t), present)
        # Every contact row is a tuple in this column order (the SQLite statement, the PostgreSQL COPY).
        self.insert_columns = [*self.file_columns, *_CONTACT_FIXED_COLUMNS, "company_id", "properties"]
        self.sqlite_upsert = _Rows(self.upsert, self.insert_columns, multi=True)
        self.sqlite_insert = _Rows(t.insert(), ["id", *self.insert_columns], multi=True)
        cols = [t.c.email, t.c.id, t.c.lifecycle_stage, t.c.company_id, t.c.first_touch_channel]
        if self.has_props:
            cols.append(t.c.properties)
        postgres = ctx.dialect == "postgresql"
        self.select_existing = select(*cols).where(t.c.workspace_id == ctx.workspace_id, _any_of(t.c.email, postgres))
        self.select_ids = select(t.c.email, t.c.id).where(
            t.c.workspace_id == ctx.workspace_id, _any_of(t.c.email, postgres)
        )
        self.stage_update = (
            update(t)
            .where(t.c.id == bindparam("_id"))
            .values(lifecycle_stage=bindparam("_stage"), lifecycle_stage_at=bindparam("_at"))
        )
        self.touch_update = (
            update(t)
            .where(t.c.id == bindparam("_id"), t.c.first_touch_channel.is_(None))
            .values(
                first_touch_channel=bindparam("_channel"),
                first_touch_source=bindparam("_source"),
                first_touch_at=bindparam("_at"),
                latest_touch_channel=func.coalesce(t.c.latest_touch_channel, bindparam("_channel")),
                latest_touch_source=func.coalesce(t.c.latest_touch_source, bindparam("_source")),
                latest_touch_at=func.coalesce(t.c.latest_touch_at, bindparam("_at")),
            )
        )
        tt = table_of(Touch)
        self.touched = select(tt.c.contact_id).where(
            tt.c.workspace_id == ctx.workspace_id,
            _any_of(tt.c.contact_id, postgres, "ids"),
            tt.c.medium == "import",
            tt.c.content == ctx.filename[:200],
        )
        self.tag_insert = _Bulk(_insert(ctx.dialect, table_of(ContactTag)).on_conflict_do_nothing())
        self.change_insert = _Rows(table_of(StageChange).insert(), list(_CHANGE_COLUMNS))
        self.touch_insert = _Rows(table_of(Touch).insert(), list(_TOUCH_COLUMNS))
        if postgres:
            # PostgreSQL: the batch is COPYed into a temporary table and upserted from it in one statement.
            # Properties travel as JSON text (no per-row JSONB adaptation in the driver) and are cast here.
            staged = table(_PG_STAGE, *[sql_column(c) for c in [*self.insert_columns, "_n"]])
            staged_values = [
                cast(staged.c[c], postgresql.JSONB) if c == "properties" else staged.c[c] for c in self.insert_columns
            ]
            from_stage = postgresql.insert(t).from_select(
                self.insert_columns, select(*staged_values).order_by(staged.c._n)
            )
            upsert = self._upsert(from_stage, present).returning(
                *[t.c[c] for c in _PG_RETURNED], literal_column("xmax = 0").label("inserted")
            )
            # Data-modifying CTEs: the rows this statement inserted (``xmax = 0``) get their first stage change and
            # import touch from what they record, in the same statement (no second and third COPY of the batch).
            up = str(upsert.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))  # type: ignore[no-untyped-call]
            self.pg_upsert = text(
                f"WITH up AS ({up}), "
                f"ch AS (INSERT INTO stage_changes ({', '.join(_CHANGE_COLUMNS)}) SELECT workspace_id, id, NULL,"
                " lifecycle_stage, lifecycle_stage_at, :reason, 'import', NULL FROM up WHERE inserted), "
                f"tc AS (INSERT INTO touches ({', '.join(_TOUCH_COLUMNS)}) SELECT workspace_id, id, NULL,"
                " first_touch_at, first_touch_channel, first_touch_source, 'import', NULL, NULL, :content, NULL, NULL"
                " FROM up WHERE inserted) "
                "SELECT email, id FROM up"
            )
            names = ", ".join("properties::text AS properties" if c == "properties" else c for c in self.insert_columns)
            self.pg_create_stage = (
                f"CREATE TEMPORARY TABLE {_PG_STAGE} ON COMMIT DROP AS "
                f"SELECT {names}, 0 AS _n FROM contacts WITH NO DATA"
            )
            staged_columns = [Column(c, Text) if c == "properties" else t.c[c] for c in self.insert_columns]
            self.pg_copy_stage = _PgCopy(_PG_STAGE, [*staged_columns, Column("_n", Integer)])
            self.pg_copy_changes = _PgCopy("stage_changes", [table_of(StageChange).c[c] for c in _CHANGE_COLUMNS])
            self.pg_copy_touches = _PgCopy("touches", [table_of(Touch).c[c] for c in _TOUCH_COLUMNS])

    def _upsert(self, ins: Any, present: set[str]) -> Any:
        """The contact upsert on (workspace, email): file columns where the file has a value, version + 1 on change."""
        t = self.table
        exc = ins.excluded
        set_: dict[str, Any] = {c: func.coalesce(exc[c], t.c[c]) for c in self.file_columns}
        set_["company_id"] = func.coalesce(t.c.company_id, exc.company_id)
        set_["timezone"] = (
            func.coalesce(exc.timezone, t.c.timezone)
            if "timezone" in present
            else func.coalesce(t.c.timezone, exc.timezone)
        )
        if self.has_props:
            set_["properties"] = exc.properties
        changed = or_(*[value.is_distinct_from(t.c[c]) for c, value in set_.items()])
        set_["updated_at"] = exc.updated_at
        set_["version"] = t.c.version + literal_column("1")
        return ins.on_conflict_do_update(
            index_elements=["workspace_id", "email"], index_where=t.c.email.isnot(None), set_=set_, where=changed
        )

    def _initial_stage(self) -> str:
        move = decide_rule_move(self.ctx.stages, self.ctx.rules, None, "contact_imported")
        if move is not None:
            return move.to_stage
        funnel = [s for s in self.ctx.stages if s.kind == "funnel"]
        return funnel[0].key if funnel else "awareness"

    def reset_caches(self) -> None:
        self.companies.reset()

    def committed(self) -> None:
        self.companies.committed()

    def write_slots(self) -> int:
        # PostgreSQL: two batches at once, so that the server works on one while this process prepares and copies
        # the next (with one, the server idled for the writer's own part of every batch). SQLite has one writer.
        return PG_WRITE_SLOTS if self.ctx.dialect == "postgresql" else 1

    def batch_keys(self, items: list[_Item]) -> frozenset[str]:
        keys = {item.rec["email"] for item in items}
        if "external_id" in self.columns:
            keys.update(f"\x00{ext}" for item in items if (ext := item.rec.get("external_id")))
        return frozenset(keys)

    def _stage(self, raw: str) -> str:
        stage = self._stage_memo.get(raw)
        if stage is None:
            stage = self._parse_stage(raw)
            if len(self._stage_memo) < _MEMO_LIMIT:
                self._stage_memo[raw] = stage
        return stage

    def _parse_stage(self, raw: str) -> str:
        key = _fold(raw)
        stage = LIFECYCLE_ALIASES.get(key) or self.stage_by_label.get(key)
        if stage is None or stage not in self.stage_keys:
            if stage == "other":
                return ""
            raise cell_error(
                "lifecycle_stage", f"{raw!r} is not a lifecycle stage of this workspace", "not_a_stage", raw
            )
        return stage

    def _channel(self, raw: str) -> tuple[str, str]:
        found = self._channel_memo.get(raw)
        if found is None:
            found = self._parse_channel(raw)
            if len(self._channel_memo) < _MEMO_LIMIT:
                self._channel_memo[raw] = found
        return found

    def _parse_channel(self, raw: str) -> tuple[str, str]:
        key = _fold(raw)
        channel = SOURCE_CHANNELS.get(key)
        if channel is None and raw.strip().lower() in CHANNELS:
            channel = raw.strip().lower()
        return channel or self.ctx.channel, raw.strip()[:200]

    def prepare(self, line: int, cells: list[str]) -> dict[str, Any]:
        # The hot path of an import: cells are read by index (import_file has checked the row is wide enough).
        ix = self.ix
        i = ix["email"]
        raw_email = cells[i].strip() if i is not None else ""
        if not raw_email:
            raise cell_error("email", "required", "required")
        try:
            email = fast_normalize_email(raw_email)
        except InvalidValue as exc:
            raise invalid_cell("email", exc, raw_email) from None
        rec: dict[str, Any] = {"email": email}
        for name, i, limit in self.text_cells:
            value = cells[i].strip()
            if value:
                if len(value) > limit:
                    raise cell_error(name, f"longer than {limit} characters", "too_long", limit=limit)
                rec[name] = value
            else:
                rec[name] = None
        if self.has_first:
            rec["first_name_lower"] = rec["first_name"].lower() if rec["first_name"] else None
        if self.has_last:
            rec["last_name_lower"] = rec["last_name"].lower() if rec["last_name"] else None
        country = None
        i = ix["country"]
        if i is not None:
            raw = cells[i].strip()
            country = parse_country(raw, "country") if raw else None
            rec["country"] = country
        i = ix["language"]
        if i is not None:
            raw = cells[i].strip()
            try:
                rec["language"] = _language(raw) if raw else None
            except InvalidValue as exc:
                raise invalid_cell("language", exc, raw) from None
        i, j = ix["phone"], ix["mobile_phone"]
        if i is not None or j is not None:
            raw = (cells[i].strip() if i is not None else "") or (cells[j].strip() if j is not None else "")
            try:
                rec["phone"] = fast_normalize_phone(raw, country or self.ctx.country) if raw else None
            except InvalidValue as exc:
                raise invalid_cell("phone", exc, raw) from None
        i = ix["timezone"]
        if i is not None:
            raw = cells[i].strip()
            rec["timezone"] = _timezone(raw) if raw else timezone_for_country(country)
        else:
            rec["timezone"] = timezone_for_country(country)
        i = ix["owner"]
        if i is not None:
            rec["owner_id"] = self.owner(cells[i].strip())
        i = ix["company_domain"]
        raw_domain = cells[i].strip() if i is not None else ""
        if raw_domain:
            try:
                domain: str | None = _domain(raw_domain)
            except InvalidValue as exc:
                raise invalid_cell("company_domain", exc, raw_domain) from None
        else:
            domain = _mail_company_domain(email)
        rec["_domain"] = domain
        i = ix["company_name"]
        rec["_company_name"] = (cells[i].strip()[:200] or None) if i is not None else None
        i = ix["lifecycle_stage"]
        raw = cells[i].strip() if i is not None else ""
        rec["_stage"] = self._stage(raw) if raw else ""
        i = ix["source"]
        raw = cells[i].strip() if i is not None else ""
        rec["_channel"], rec["_source"] = self._channel(raw) if raw else (None, None)
        i = ix["created_at"]
        raw = cells[i].strip() if i is not None else ""
        rec["_created_at"] = parse_datetime(raw, "created_at", self.ctx.tz) if raw else None
        i = ix["tags"]
        raw = cells[i].strip() if i is not None else ""
        rec["_tags"] = sorted({t.strip()[:100] for t in raw.replace(";", ",").split(",") if t.strip()}) if raw else ()
        # Shared empty values: fewer containers per row that the cyclic collector has to walk.
        rec["_props"] = self.parse_props(cells) if self.props else _NO_PROPS
        self._finish(rec)
        return rec

    def _finish(self, rec: dict[str, Any]) -> None:
        """The row in the driver's form but for its company and properties, built here (in the reading thread).

        Also the row's import channel and source (the run's channel and "import" when the file has none) and its
        creation time as stored (the run's start when the file has none).
        """
        ctx = self.ctx
        created = ctx.ts(rec["_created_at"]) if rec["_created_at"] else self.now_v
        channel = rec["_channel"]
        source = rec["_source"]
        if channel is None:
            channel, source = ctx.channel, "import"
        rec["_when"], rec["_ch"], rec["_src"] = created, channel, source
        # Same order as self.insert_columns without the last two (company_id, properties).
        rec["_row"] = (
            *[rec.get(c) for c in self.file_columns],
            ctx.workspace_id,
            rec["email"],
            False,
            rec["timezone"],
            rec["_stage"] or self.default_stage,
            created,
            channel,
            channel,
            source,
            source,
            created,
            created,
            created,
            self.now_v,
            1,
        )

    @staticmethod
    def _merge(into: dict[str, Any], rec: dict[str, Any]) -> None:
        for key, value in rec.items():
            if key == "_tags":
                into[key] = sorted(set(into[key]) | set(value))
            elif key == "_props":
                into[key] = {**into[key], **value}
            elif value not in (None, ""):
                into[key] = value

    def write(self, conn: Connection, items: list[_Item]) -> tuple[int, int]:
        ctx = self.ctx
        now = ctx.now
        postgres = ctx.dialect == "postgresql"
        # A row's own record is used as is (what this method adds to it is the same on a retry of the batch); an
        # address seen twice gets a merged copy.
        by_email: dict[str, dict[str, Any]] = {}
        merged_emails: set[str] = set()
        for item in items:
            rec = item.rec
            email = rec["email"]
            seen = by_email.get(email)
            if seen is None:
                by_email[email] = rec
            else:
                if email not in merged_emails:
                    seen = by_email[email] = dict(seen)
                    merged_emails.add(email)
                self._merge(seen, rec)
        for email in merged_emails:
            self._finish(by_email[email])
        emails = list(by_email)
        existing: dict[str, Any] = {row.email: row for row in _lookup(conn, self.select_existing, "emails", emails)}
        wanted: dict[str, str | None] = {}
        for email, rec in by_email.items():
            if rec["_domain"]:
                old = existing.get(email)
                if old is None or old.company_id is None:
                    wanted.setdefault(rec["_domain"], rec["_company_name"])
        company_ids = self.companies.ensure(conn, wanted) if wanted else {}
        rows: list[tuple[Any, ...]] = []
        new_rows: list[tuple[Any, ...]] = []  # SQLite: contacts not in the table yet
        js = ctx.js
        now_v = self.now_v
        empty = js({})
        ws_id = ctx.workspace_id
        company_of = company_ids.get
        # PostgreSQL rows end with their position (``_n``: the staged rows are upserted in file order).
        if self.has_props:
            for n, (email, rec) in enumerate(by_email.items()):
                old = existing.get(email)
                merged = {**(old.properties or {}), **rec["_props"]} if old is not None else rec["_props"]
                domain = rec["_domain"]
                if postgres:
                    rows.append((*rec["_row"], company_of(domain) if domain else None, js(merged), n))
                else:
                    (rows if old is not None else new_rows).append(
                        (*rec["_row"], company_of(domain) if domain else None, js(merged))
                    )
        elif postgres:
            rows = [
                (*rec["_row"], company_of(rec["_domain"]) if rec["_domain"] else None, empty, n)
                for n, rec in enumerate(by_email.values())
            ]
        else:
            for email, rec in by_email.items():
                domain = rec["_domain"]
                (rows if email in existing else new_rows).append(
                    (*rec["_row"], company_of(domain) if domain else None, empty)
                )
        new_emails = [e for e in emails if e not in existing]
        ids: dict[str, int] = {e: row.id for e, row in existing.items()}
        if postgres:
            ids.update(self._pg_upsert(conn, rows, f"import {ctx.filename}"[:500], ctx.filename[:200]))
            missing = [e for e in new_emails if e not in ids]  # a concurrent writer's unchanged row
        else:
            # The transaction holds SQLite's write lock (or fails on write if another writer came after its reads),
            # so the new contacts can be given the ids AUTOINCREMENT would give them, in file order.
            self.sqlite_upsert.run(conn, rows)
            first_id = _sqlite_next_id(conn, Contact.__tablename__)
            self.sqlite_insert.run(conn, [(first_id + n, *row) for n, row in enumerate(new_rows)])
            ids.update(zip(new_emails, range(first_id, first_id + len(new_rows)), strict=True))
            missing = []
        if missing:
            ids.update(_lookup(conn, self.select_ids, "emails", missing))
        # New contacts get their first stage change and import touch from their own rows, set-based: on SQLite by
        # their consecutive ids (below), on PostgreSQL in the upsert statement itself (from the rows it inserted;
        # a SELECT by a batch's ids would be planned as a scan of every contact while the table has no statistics).
        new_ids = [] if postgres else sorted(ids[e] for e in new_emails if e in ids)
        del rows, new_rows
        reason = f"import {ctx.filename}"[:500]
        content = ctx.filename[:200]
        changes: list[tuple[Any, ...]] = []
        stage_moves: list[dict[str, Any]] = []
        touches: list[tuple[Any, ...]] = []
        first_touch: list[dict[str, Any]] = []
        tags: list[dict[str, Any]] = []
        already_touched: set[int] = set()
        if existing:
            old_ids = [row.id for row in existing.values()]
            already_touched.update(cid for (cid,) in _lookup(conn, self.touched, "ids", old_ids))
        for email, rec in by_email.items():
            cid = ids[email]
            old = existing.get(email)
            when = rec["_when"]
            if old is not None:
                target = self._existing_move(old.lifecycle_stage, rec["_stage"])
                if target is not None:
                    changes.append((ws_id, cid, old.lifecycle_stage, target, now_v, reason, "import", None))
                    stage_moves.append({"_id": cid, "_stage": target, "_at": now})
                if old.first_touch_channel is None:
                    first_touch.append(
                        {"_id": cid, "_channel": rec["_ch"], "_source": rec["_src"], "_at": rec["_created_at"] or now}
                    )
            if old is not None and cid not in already_touched:
                # Same order as _TOUCH_COLUMNS.
                touches.append(
                    (ws_id, cid, None, when, rec["_ch"], rec["_src"], "import", None, None, content, None, None)
                )
            for tag in rec["_tags"]:
                tags.append({"contact_id": cid, "tag": tag, "workspace_id": ws_id})
        self._derived_rows(conn, new_ids, reason, content)
        if postgres:
            self.pg_copy_changes.run(conn, changes)
        else:
            self.change_insert.run(conn, changes)
        if stage_moves:
            conn.execute(self.stage_update, stage_moves)
        if first_touch:
            conn.execute(self.touch_update, first_touch)
        if postgres:
            self.pg_copy_touches.run(conn, touches)
        else:
            self.touch_insert.run(conn, touches)
        self.tag_insert.run(conn, tags)
        created = len(new_emails)
        return created, len(items) - created

    def _derived_rows(self, conn: Connection, new_ids: list[int], reason: str, content: str) -> None:
        """SQLite: the first stage change and the import touch of each new contact, by INSERT ... SELECT from its row.

        A new row's stage, stage time, first touch channel, source and time are exactly what those rows record, so
        the database copies them instead of receiving every value again (a third of the rows a batch sends). The new
        ids are one consecutive run (``write`` hands them out), read by a range of the primary key.
        """
        if not new_ids:
            return
        if new_ids[-1] - new_ids[0] + 1 != len(new_ids):
            raise RuntimeError("the new contacts of an import batch do not have consecutive ids")
        # ``+workspace_id``: the rowid range, not a (workspace_id, ...) index over every contact of the workspace.
        source = "FROM contacts WHERE +workspace_id = ? AND id BETWEEN ? AND ? ORDER BY id"
        statements = (
            (
                "INSERT INTO stage_changes (workspace_id, contact_id, from_stage, to_stage, changed_at, reason,"
                " source, actor) SELECT workspace_id, id, NULL, lifecycle_stage, lifecycle_stage_at, ?, 'import',"
                f" NULL {source}",
                reason,
            ),
            (
                "INSERT INTO touches (workspace_id, contact_id, event_id, occurred_at, channel, source, medium,"
                " campaign, term, content, referrer, landing_url) SELECT workspace_id, id, NULL, first_touch_at,"
                f" first_touch_channel, first_touch_source, 'import', NULL, NULL, ?, NULL, NULL {source}",
                content,
            ),
        )
        params = [self.ctx.workspace_id, new_ids[0], new_ids[-1]]
        for sql, value in statements:
            _driver_call(conn, sql, _execute_with(sql, [value, *params]))

    def _pg_upsert(self, conn: Connection, rows: list[tuple[Any, ...]], reason: str, content: str) -> dict[str, int]:
        """COPY the rows (each ending with its position) into a temporary table, upsert from it in one statement;
        ids of inserted or changed rows.

        The same statement writes each inserted contact's first stage change and import touch (see __init__).
        """
        conn.exec_driver_sql(self.pg_create_stage)
        self.pg_copy_stage.run(conn, rows)
        sql = self._pg_upsert_sql
        if sql is None:
            sql = self._pg_upsert_sql = str(self.pg_upsert.compile(dialect=conn.dialect))
        found: dict[str, int] = {}

        def upsert(cursor: Any) -> None:
            cursor.execute(sql, {"reason": reason, "content": content})
            found.update(cursor.fetchall())

        _driver_call(conn, sql, upsert)
        return found

    def _existing_move(self, current: str, wanted: str) -> str | None:
        if not wanted:
            move = decide_rule_move(self.ctx.stages, self.ctx.rules, current, "contact_imported")
            return move.to_stage if move else None
        if wanted == current:
            return None
        cur = position_of(self.ctx.stages, current)
        new = position_of(self.ctx.stages, wanted)
        if new is None or cur is None or new <= cur:
            return None  # an import never moves a contact backwards or out of a side stage
        return wanted

    def _change(self, cid: int, from_stage: str | None, to_stage: str, at: Any, reason: str) -> dict[str, Any]:
        return {
            "workspace_id": self.ctx.workspace_id,
            "contact_id": cid,
            "from_stage": from_stage,
            "to_stage": to_stage,
            "changed_at": at,
            "reason": reason,
            "source": "import",
            "actor": None,
        }


# --- companies ---------------------------------------------------------------------------------------------------


class CompanyLoader(_Loader):
    kind = "companies"
    FILE_COLUMNS = (
        "industry",
        "employees",
        "annual_revenue_minor",
        "revenue_currency",
        "country",
        "city",
        "owner_id",
        "external_id",
    )

    def __init__(self, ctx: _Context, mapping: ColumnMapping, header: list[str]) -> None:
        super().__init__(ctx, mapping, header)
        t = table_of(Company)
        self.table = t
        present = set(self.columns)
        alias = {"annual_revenue_minor": "annual_revenue", "owner_id": "owner", "revenue_currency": "annual_revenue"}
        self.file_columns = [c for c in self.FILE_COLUMNS if c in present or alias.get(c) in present]
        ins = _insert(ctx.dialect, t)
        exc = ins.excluded
        set_: dict[str, Any] = {c: func.coalesce(exc[c], t.c[c]) for c in self.file_columns}
        set_["name"] = exc.name
        set_["name_lower"] = exc.name_lower
        if self.props:
            set_["properties"] = exc.properties
        changed = or_(*[value.is_distinct_from(t.c[c]) for c, value in set_.items()])
        set_["updated_at"] = exc.updated_at
        self.upsert = ins.on_conflict_do_update(
            index_elements=["workspace_id", "domain"], index_where=t.c.domain.isnot(None), set_=set_, where=changed
        )
        self.select_existing = select(t.c.domain, t.c.name, t.c.properties).where(
            t.c.workspace_id == ctx.workspace_id, t.c.domain.in_(bindparam("domains", expanding=True))
        )

    def prepare(self, line: int, cells: list[str]) -> dict[str, Any]:
        cell = self.cell
        raw = cell(cells, "domain")
        if not raw:
            raise cell_error("domain", "required", "required")
        try:
            rec: dict[str, Any] = {"domain": normalize_domain(raw)}
        except InvalidValue as exc:
            raise invalid_cell("domain", exc, raw) from None
        rec["name"] = _check_len(cell(cells, "name"), 200, "name") or None
        for name, limit in (("industry", 100), ("city", 100), ("external_id", 200)):
            if name in self.columns:
                rec[name] = _check_len(cell(cells, name), limit, name) or None
        if "employees" in self.columns:
            raw = cell(cells, "employees")
            rec["employees"] = parse_int(raw, "employees", minimum=0) if raw else None
        if "country" in self.columns:
            raw = cell(cells, "country")
            rec["country"] = parse_country(raw, "country") if raw else None
        if "annual_revenue" in self.columns:
            raw = cell(cells, "annual_revenue")
            cur_raw = cell(cells, "revenue_currency")
            currency = parse_currency(cur_raw, "revenue_currency") if cur_raw else self.ctx.currency
            rec["annual_revenue_minor"] = parse_money(raw, currency, "annual_revenue") if raw else None
            rec["revenue_currency"] = currency if raw else None
        if "owner" in self.columns:
            rec["owner_id"] = self.owner(cell(cells, "owner"))
        raw = cell(cells, "created_at")
        rec["_created_at"] = parse_datetime(raw, "created_at", self.ctx.tz) if raw else None
        rec["_props"] = self.parse_props(cells) if self.props else {}
        return rec

    def write(self, conn: Connection, items: list[_Item]) -> tuple[int, int]:
        ctx = self.ctx
        by_domain: dict[str, dict[str, Any]] = {}
        for item in items:
            seen = by_domain.get(item.rec["domain"])
            if seen is None:
                by_domain[item.rec["domain"]] = dict(item.rec)
            else:
                for key, value in item.rec.items():
                    if key == "_props":
                        seen[key] = {**seen[key], **value}
                    elif value is not None:
                        seen[key] = value
        existing: dict[str, Any] = {}
        for chunk in _chunks(list(by_domain)):
            existing.update({r.domain: r for r in conn.execute(self.select_existing, {"domains": chunk})})
        rows = []
        for domain, rec in by_domain.items():
            old = existing.get(domain)
            name = rec["name"] or (old.name if old is not None else domain)
            row = {c: rec.get(c) for c in self.file_columns}
            row.update(
                workspace_id=ctx.workspace_id,
                domain=domain,
                name=name,
                name_lower=name.lower(),
                created_at=rec["_created_at"] or ctx.now,
                updated_at=ctx.now,
                properties={**(old.properties or {}), **rec["_props"]} if old is not None else rec["_props"],
            )
            rows.append(row)
        conn.execute(self.upsert, rows)
        created = sum(1 for d in by_domain if d not in existing)
        return created, len(items) - created


# --- products ----------------------------------------------------------------------------------------------------


class ProductLoader(_Loader):
    kind = "products"

    def __init__(self, ctx: _Context, mapping: ColumnMapping, header: list[str]) -> None:
        super().__init__(ctx, mapping, header)
        t = table_of(Product)
        present = set(self.columns)
        self.file_columns = ["name", "price_minor", "currency"] + [
            c for c in ("category", "url", "image_url") if c in present
        ]
        ins = _insert(ctx.dialect, t)
        exc = ins.excluded
        set_: dict[str, Any] = {c: func.coalesce(exc[c], t.c[c]) for c in self.file_columns}
        if self.props:
            set_["properties"] = exc.properties
        changed = or_(*[value.is_distinct_from(t.c[c]) for c, value in set_.items()])
        set_["updated_at"] = exc.updated_at
        self.upsert = ins.on_conflict_do_update(index_elements=["workspace_id", "sku"], set_=set_, where=changed)
        self.select_existing = select(t.c.sku, t.c.properties).where(
            t.c.workspace_id == ctx.workspace_id, t.c.sku.in_(bindparam("skus", expanding=True))
        )

    def prepare(self, line: int, cells: list[str]) -> dict[str, Any]:
        cell = self.cell
        sku = _check_len(cell(cells, "sku"), 100, "sku")
        if not sku:
            raise cell_error("sku", "required", "required")
        name = _check_len(cell(cells, "name"), 300, "name")
        if not name:
            raise cell_error("name", "required", "required")
        raw_cur = cell(cells, "currency")
        currency = parse_currency(raw_cur, "currency") if raw_cur else self.ctx.currency
        raw_price = cell(cells, "price")
        if not raw_price:
            raise cell_error("price", "required", "required")
        price = parse_money(raw_price, currency, "price")
        if price < 0:
            raise cell_error("price", f"{raw_price!r} is negative", "negative", raw_price)
        rec: dict[str, Any] = {"sku": sku, "name": name, "price_minor": price, "currency": currency}
        for name_, limit in (("category", 200), ("url", 2000), ("image_url", 2000)):
            if name_ in self.columns:
                rec[name_] = _check_len(cell(cells, name_), limit, name_) or None
        rec["_props"] = self.parse_props(cells) if self.props else {}
        return rec

    def write(self, conn: Connection, items: list[_Item]) -> tuple[int, int]:
        ctx = self.ctx
        by_sku: dict[str, dict[str, Any]] = {}
        for item in items:
            seen = by_sku.setdefault(item.rec["sku"], dict(item.rec))
            if seen is not item.rec:
                seen.update({k: v for k, v in item.rec.items() if v is not None and k != "_props"})
                seen["_props"] = {**seen["_props"], **item.rec["_props"]}
        existing: dict[str, Any] = {}
        for chunk in _chunks(list(by_sku)):
            existing.update({r.sku: r for r in conn.execute(self.select_existing, {"skus": chunk})})
        rows = []
        for sku, rec in by_sku.items():
            old = existing.get(sku)
            row = {c: rec.get(c) for c in self.file_columns}
            row.update(
                workspace_id=ctx.workspace_id,
                sku=sku,
                created_at=ctx.now,
                updated_at=ctx.now,
                properties={**(old.properties or {}), **rec["_props"]} if old is not None else rec["_props"],
            )
            rows.append(row)
        conn.execute(self.upsert, rows)
        created = sum(1 for s in by_sku if s not in existing)
        return created, len(items) - created


# --- orders ------------------------------------------------------------------------------------------------------


class OrderLoader(_Loader):
    kind = "orders"

    def __init__(self, ctx: _Context, mapping: ColumnMapping, header: list[str]) -> None:
        super().__init__(ctx, mapping, header)
        self.seen_orders: set[str] = set()
        self.product_ids: dict[str, int | None] = {}
        o = table_of(Order)
        c = table_of(Contact)
        self.o = o
        self.c = c
        ins = _insert(ctx.dialect, o)
        exc = ins.excluded
        cols = ["contact_id", "status", "placed_at", "currency", "subtotal_minor", "discount_minor", "tax_minor"]
        cols += ["shipping_minor"]
        cols += ["total_minor", "coupon_code", "channel"]
        set_: dict[str, Any] = {k: exc[k] for k in cols}
        changed = or_(*[value.is_distinct_from(o.c[k]) for k, value in set_.items()])
        set_["updated_at"] = exc.updated_at
        self.upsert = ins.on_conflict_do_update(
            index_elements=["workspace_id", "external_id"], set_=set_, where=changed
        )
        self.order_ids = select(o.c.external_id, o.c.id).where(
            o.c.workspace_id == ctx.workspace_id, o.c.external_id.in_(bindparam("ids", expanding=True))
        )
        self.contacts_by_email = select(c.c.email, c.c.id).where(
            c.c.workspace_id == ctx.workspace_id, c.c.email.in_(bindparam("emails", expanding=True))
        )
        self.contact_insert = _insert(ctx.dialect, c).on_conflict_do_nothing(
            index_elements=["workspace_id", "email"], index_where=c.c.email.isnot(None)
        )
        p = table_of(Product)
        self.products = select(p.c.sku, p.c.id).where(
            p.c.workspace_id == ctx.workspace_id, p.c.sku.in_(bindparam("skus", expanding=True))
        )
        self.has_total = "total" in self.columns

    def reset_caches(self) -> None:
        self.product_ids.clear()

    def group_key(self, cells: list[str]) -> str | None:
        return self.cell(cells, "order_id") or None

    def prepare(self, line: int, cells: list[str]) -> dict[str, Any]:
        cell = self.cell
        order_id = _check_len(cell(cells, "order_id"), 200, "order_id")
        if not order_id:
            raise cell_error("order_id", "required", "required")
        rec: dict[str, Any] = {"order_id": order_id}
        raw = cell(cells, "email")
        try:
            rec["email"] = fast_normalize_email(raw) if raw else None
        except InvalidValue as exc:
            raise invalid_cell("email", exc, raw) from None
        raw = cell(cells, "placed_at")
        if not raw:
            raise cell_error("placed_at", "required", "required")
        rec["placed_at"] = parse_datetime(raw, "placed_at", self.ctx.tz)
        raw = cell(cells, "currency")
        currency = parse_currency(raw, "currency") if raw else self.ctx.currency
        rec["currency"] = currency
        status = (cell(cells, "status") or "completed").lower()
        if status not in ORDER_STATUSES:
            choices = ", ".join(ORDER_STATUSES)
            raise cell_error("status", f"{status!r} is not one of {choices}", "not_an_option", status, options=choices)
        rec["status"] = status
        for name in ("discount", "tax", "shipping", "total"):
            raw = cell(cells, name)
            rec[name] = parse_money(raw, currency, name) if raw else None
        rec["coupon_code"] = _check_len(cell(cells, "coupon_code"), 100, "coupon_code") or None
        raw = cell(cells, "channel").lower()
        if raw and raw not in CHANNELS:
            choices = ", ".join(CHANNELS)
            raise cell_error("channel", f"{raw!r} is not one of {choices}", "not_an_option", raw, options=choices)
        rec["channel"] = raw or None
        sku = _check_len(cell(cells, "sku"), 100, "sku")
        raw_price = cell(cells, "unit_price")
        if sku:
            if not raw_price:
                raise cell_error("unit_price", "required for an order line", "required_for_line")
            raw_qty = cell(cells, "quantity")
            rec["line"] = {
                "sku": sku,
                "name": _check_len(cell(cells, "name"), 300, "name"),
                "category": _check_len(cell(cells, "category"), 200, "category") or None,
                "quantity": parse_int(raw_qty, "quantity", minimum=1) if raw_qty else 1,
                "unit_price_minor": parse_money(raw_price, currency, "unit_price"),
            }
        elif raw_price:
            raise cell_error("sku", "required for an order line with a unit price", "required_for_priced_line")
        else:
            rec["line"] = None
        return rec

    def write(self, conn: Connection, items: list[_Item]) -> tuple[int, int]:
        ctx = self.ctx
        orders: dict[str, dict[str, Any]] = {}
        lines: dict[str, list[dict[str, Any]]] = {}
        refused: list[tuple[_Item, _Reason]] = []
        for item in items:
            rec = item.rec
            first = orders.setdefault(rec["order_id"], rec)
            if first is not rec and (first["currency"] != rec["currency"] or first["email"] != rec["email"]):
                order = rec["order_id"]
                text_ = f"order {order}: currency and email must be the same on every line"
                refused.append((item, _Reason(text_, "order_lines_differ", {"order": order})))
                continue
            if rec["line"] is not None:
                lines.setdefault(rec["order_id"], []).append(rec["line"])
        if refused:
            bad = {it.rec["order_id"] for it, _ in refused}
            refused += [
                (
                    it,
                    _Reason(
                        f"another line of order {it.rec['order_id']} is invalid",
                        "order_other_line_invalid",
                        {"order": it.rec["order_id"]},
                    ),
                )
                for it in items
                if it.rec["order_id"] in bad and all(it is not r for r, _ in refused)
            ]
            raise _BatchFailure(refused)
        emails = sorted({r["email"] for r in orders.values() if r["email"]})
        contact_ids: dict[str, int] = {}
        for chunk in _chunks(emails):
            contact_ids.update(conn.execute(self.contacts_by_email, {"emails": chunk}).all())
        new_emails = [e for e in emails if e not in contact_ids]
        if new_emails:
            conn.execute(
                self.contact_insert,
                [
                    {
                        "workspace_id": ctx.workspace_id,
                        "email": e,
                        "is_anonymous": False,
                        "lifecycle_stage": self._start_stage(),
                        "properties": {},
                        "first_touch_channel": ctx.channel,
                        "first_touch_source": "import",
                        "first_touch_at": ctx.now,
                        "created_at": ctx.now,
                        "updated_at": ctx.now,
                        "version": 1,
                    }
                    for e in new_emails
                ],
            )
            for chunk in _chunks(new_emails):
                contact_ids.update(conn.execute(self.contacts_by_email, {"emails": chunk}).all())
        skus = sorted({ln["sku"] for ls in lines.values() for ln in ls if ln["sku"] not in self.product_ids})
        if skus:
            if len(self.product_ids) > CACHE_LIMIT:
                self.product_ids.clear()
            found: dict[str, int] = {}
            for chunk in _chunks(skus):
                found.update(conn.execute(self.products, {"skus": chunk}).all())
            for sku in skus:
                self.product_ids[sku] = found.get(sku)
        rows = []
        for oid, rec in orders.items():
            line_sum = sum(ln["quantity"] * ln["unit_price_minor"] for ln in lines.get(oid, []))
            discount, tax, shipping = rec["discount"] or 0, rec["tax"] or 0, rec["shipping"] or 0
            total = rec["total"] if rec["total"] is not None else line_sum - discount + tax + shipping
            rows.append(
                {
                    "workspace_id": ctx.workspace_id,
                    "external_id": oid,
                    "contact_id": contact_ids.get(rec["email"]) if rec["email"] else None,
                    "status": rec["status"],
                    "placed_at": rec["placed_at"],
                    "currency": rec["currency"],
                    "subtotal_minor": line_sum,
                    "discount_minor": discount,
                    "tax_minor": tax,
                    "shipping_minor": shipping,
                    "total_minor": total,
                    "refunded_minor": 0,
                    "coupon_code": rec["coupon_code"],
                    "channel": rec["channel"],
                    "properties": {},
                    "created_at": ctx.now,
                    "updated_at": ctx.now,
                }
            )
        known_before: set[str] = set()
        oids = list(orders)
        for chunk in _chunks(oids):
            known_before.update(r for r, _ in conn.execute(self.order_ids, {"ids": chunk}).tuples())
        conn.execute(self.upsert, rows)
        ids: dict[str, int] = {}
        for chunk in _chunks(oids):
            ids.update(conn.execute(self.order_ids, {"ids": chunk}).all())
        ol = table_of(OrderLine)
        replace = [ids[o] for o in oids if o not in self.seen_orders]
        for chunk in _chunks(replace):
            conn.execute(delete(ol).where(ol.c.workspace_id == ctx.workspace_id, ol.c.order_id.in_(chunk)))
        line_rows = [
            {
                "workspace_id": ctx.workspace_id,
                "order_id": ids[oid],
                "product_id": self.product_ids.get(ln["sku"]),
                **ln,
            }
            for oid in oids
            for ln in lines.get(oid, [])
        ]
        if line_rows:
            conn.execute(ol.insert(), line_rows)
        appended = [ids[o] for o in oids if o in self.seen_orders and lines.get(o)]
        for chunk in _chunks(appended):
            self._recompute_totals(conn, chunk)
        self.seen_orders.update(oids)
        self._apply_order_rules(conn, sorted(set(contact_ids.values())))
        created = len([o for o in oids if o not in known_before])
        return created, len(items) - created

    def _start_stage(self) -> str:
        funnel = [s for s in self.ctx.stages if s.kind == "funnel"]
        return funnel[0].key if funnel else "awareness"

    def _recompute_totals(self, conn: Connection, order_ids: list[int]) -> None:
        o, ol = self.o, table_of(OrderLine)
        line_sum = (
            select(func.coalesce(func.sum(ol.c.quantity * ol.c.unit_price_minor), 0))
            .where(ol.c.order_id == o.c.id)
            .scalar_subquery()
        )
        values: dict[str, Any] = {"subtotal_minor": line_sum}
        if not self.has_total:
            values["total_minor"] = line_sum - o.c.discount_minor + o.c.tax_minor + o.c.shipping_minor
        conn.execute(update(o).where(o.c.workspace_id == self.ctx.workspace_id, o.c.id.in_(order_ids)).values(values))

    def _apply_order_rules(self, conn: Connection, contact_ids: list[int]) -> None:
        """first_order / repeat_order for the batch's contacts, dated by their first and second orders."""
        if not contact_ids:
            return
        ctx, o, c = self.ctx, self.o, self.c
        stages: dict[int, str] = {}
        placed: dict[int, list[datetime]] = {}
        for chunk in _chunks(contact_ids):
            stages.update(
                conn.execute(
                    select(c.c.id, c.c.lifecycle_stage).where(c.c.workspace_id == ctx.workspace_id, c.c.id.in_(chunk))
                ).all()
            )
            rows = conn.execute(
                select(o.c.contact_id, o.c.placed_at)
                .where(o.c.workspace_id == ctx.workspace_id, o.c.contact_id.in_(chunk), o.c.status != "cancelled")
                .order_by(o.c.contact_id, o.c.placed_at)
            )
            for cid, at in rows.tuples():
                times = placed.setdefault(cid, [])
                if len(times) < 2:
                    times.append(at)
        changes: list[dict[str, Any]] = []
        moves: list[dict[str, Any]] = []
        for cid, times in placed.items():
            current = stages.get(cid)
            if current is None:
                continue
            start = current
            at = times[0]
            for trigger, when in (("first_order", times[0]), ("repeat_order", times[1] if len(times) > 1 else None)):
                if when is None:
                    continue
                move = decide_rule_move(ctx.stages, ctx.rules, current, trigger)
                if move is None:
                    continue
                changes.append(
                    {
                        "workspace_id": ctx.workspace_id,
                        "contact_id": cid,
                        "from_stage": current,
                        "to_stage": move.to_stage,
                        "changed_at": when,
                        "reason": f"{move.reason}: import {ctx.filename}"[:500],
                        "source": "rule",
                        "actor": None,
                    }
                )
                current, at = move.to_stage, when
            if current != start:
                moves.append({"_id": cid, "_stage": current, "_at": at})
        if changes:
            conn.execute(table_of(StageChange).insert(), changes)
        if moves:
            conn.execute(
                update(c)
                .where(c.c.id == bindparam("_id"))
                .values(lifecycle_stage=bindparam("_stage"), lifecycle_stage_at=bindparam("_at")),
                moves,
            )


LOADERS: dict[str, type[_Loader]] = {
    "contacts": ContactLoader,
    "companies": CompanyLoader,
    "products": ProductLoader,
    "orders": OrderLoader,
}


# --- the run -----------------------------------------------------------------------------------------------------


def _property_specs(session: Session, workspace_id: int, kind: str) -> list[PropertySpec]:
    singular = kind.removesuffix("s").removesuffix("ie") + ("y" if kind == "companies" else "")
    rows = session.execute(
        select(PropertyDefinition.name, PropertyDefinition.type, PropertyDefinition.options).where(
            PropertyDefinition.workspace_id == workspace_id, PropertyDefinition.object_type.in_([kind, singular])
        )
    )
    return [PropertySpec(name, type_, tuple(options or ())) for name, type_, options in rows]


def _owners(session: Session, workspace_id: int) -> dict[str, int]:
    out: dict[str, int] = {}
    rows = session.execute(
        select(User.id, User.email, User.name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == workspace_id)
    )
    for uid, email, name in rows:
        out[email.lower()] = uid
        if name:
            out.setdefault(name.strip().lower(), uid)
    return out


def _context(session: Session, workspace_id: int, filename: str, channel: str) -> _Context:
    ws = session.get(Workspace, workspace_id)
    if ws is None:
        raise ImportError_("workspace", f"workspace {workspace_id} does not exist")
    if channel not in CHANNELS:
        raise ImportError_("channel", f"{channel!r} is not one of {', '.join(CHANNELS)}")
    return _Context(
        workspace_id=workspace_id,
        country=ws.country,
        currency=ws.currency,
        tz=ZoneInfo(ws.timezone),
        stages=contacts_service.stage_specs(session, workspace_id),
        rules=contacts_service.lifecycle_rules(ws.settings),
        filename=filename,
        channel=channel,
        now=utcnow(),
        owners=_owners(session, workspace_id),
        warnings=[],
        dialect=session.get_bind().dialect.name,
    )


class _ErrorSink:
    """The error CSV (original columns + ``_line`` + ``_error``), opened at the first error."""

    def __init__(self, path: Path | None, header: list[str], delimiter: str, summary: ImportSummary, keep: int):
        self.path = path
        self.header = header
        self.delimiter = delimiter
        self.summary = summary
        self.keep = keep
        self._fh: Any = None
        self._writer: Any = None

    def add(self, line: int, cells: list[str], reason: _Reason) -> None:
        self.summary.failed += 1
        if len(self.summary.errors) < self.keep:
            self.summary.errors.append(RowError(line, reason.text, reason.code, reason.params))
        if self.path is None:
            return
        if self._writer is None:
            self._fh = self.path.open("w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._fh, delimiter=self.delimiter)
            self._writer.writerow([*self.header, "_line", "_error"])
            self.summary.error_file = str(self.path)
        padded = list(cells) + [""] * (len(self.header) - len(cells))
        self._writer.writerow([*padded, line, reason.text])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


Progress = Callable[[int, int, int], None]


def import_file(
    factory: sessionmaker[Session],
    workspace_id: int,
    kind: str,
    path: str | os.PathLike[str],
    *,
    filename: str | None = None,
    overrides: dict[str, str] | None = None,
    channel: str = "offline",
    error_path: str | os.PathLike[str] | None = None,
    batch_size: int = DEFAULT_BATCH,
    keep_errors: int = 1000,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import the CSV at ``path`` into the workspace; commits once per batch (a job, not a request).

    ``progress(rows, bytes_read, total_bytes)`` is called after each batch. Raises UnreadableFile or a
    MappingError (nothing written) when the file cannot be read as a table or has no key column.
    """
    if kind not in LOADERS:
        raise ImportError_("kind", f"unknown import kind {kind!r}; choose one of {', '.join(LOADERS)}")
    # A batch keeps some 50,000 containers alive, so the collector's full passes ran every couple of batches and each
    # walked the whole process (a quarter of the CPU for 100,000 rows): what exists at the start is frozen out of
    # them while the import runs (shared with a served process's own freeze, ``suppilo.gc_freeze``).
    with gc_freeze.frozen_while():
        return _import_file(
            factory,
            workspace_id,
            kind,
            path,
            filename=filename,
            overrides=overrides,
            channel=channel,
            error_path=error_path,
            batch_size=batch_size,
            keep_errors=keep_errors,
            progress=progress,
        )


def _import_file(
    factory: sessionmaker[Session],
    workspace_id: int,
    kind: str,
    path: str | os.PathLike[str],
    *,
    filename: str | None,
    overrides: dict[str, str] | None,
    channel: str,
    error_path: str | os.PathLike[str] | None,
    batch_size: int,
    keep_errors: int,
    progress: Progress | None,
) -> ImportSummary:
    started = time.perf_counter()
    name = filename or Path(path).name
    with factory() as session:
        ctx = _context(session, workspace_id, name, channel)
        props = _property_specs(session, workspace_id, kind) if kind != "orders" else []
    summary = ImportSummary(kind=kind, file=name)
    try:
        table = open_table(path)
    except UnicodeDecodeError as exc:
        raise UnreadableFile("file", f"{name}: {exc}") from exc
    with table:
        summary.encoding, summary.delimiter = table.encoding, table.delimiter
        mapping = build_mapping(kind, table.header, overrides=overrides, properties=props)
        summary.mapping = mapping.describe(table.header)
        summary.ignored_columns = list(mapping.ignored)
        loader = LOADERS[kind](ctx, mapping, table.header)
        sink = _ErrorSink(Path(error_path) if error_path else None, table.header, table.delimiter, summary, keep_errors)
        width = len(table.header)
        batch: list[_Item] = []
        refused: list[tuple[int, list[str], _Reason]] = []
        bad_keys: dict[str, int] = {}
        # The next batch is validated while worker threads write the previous ones (the drivers release the GIL
        # while the database works): one batch at a time, or ``loader.write_slots()`` on their own connections,
        # where a batch waits for every batch in flight that shares a key with it. Batches finish in file order:
        # the error file, the counts and the progress are taken in this thread, a batch's refused rows first.
        slots = loader.write_slots()
        pending: deque[_InFlight] = deque()

        def finish_oldest() -> None:
            done = pending.popleft()
            outcome = done.future.result() if done.future is not None else None
            for line, cells, reason in done.refused:
                sink.add(line, cells, reason)
            if outcome is not None:
                for line, cells, reason in outcome.errors:
                    sink.add(line, cells, reason)
                summary.created += outcome.created
                summary.updated += outcome.updated
            if progress is not None:
                progress(done.rows, done.read, table.total_bytes)

        def flush(pool: ThreadPoolExecutor) -> None:
            nonlocal batch, refused, bad_keys
            keys = loader.batch_keys(batch) if slots > 1 and batch else frozenset()
            while pending and (
                len(pending) >= slots or any(not keys.isdisjoint(p.keys) for p in pending if p.future is not None)
            ):
                finish_oldest()
            future = pool.submit(_write_batch, factory, loader, batch, bad_keys) if batch else None
            pending.append(_InFlight(future, refused, summary.rows, table.bytes_read, keys))
            batch, refused, bad_keys = [], [], {}

        try:
            with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="suppilo-import") as pool:
                try:
                    for line, cells in table.rows():
                        key = loader.group_key(cells)
                        if len(batch) >= batch_size and (key is None or key != batch[-1].key):
                            flush(pool)
                        summary.rows += 1
                        if len(cells) != width and (len(cells) < width or any(c.strip() for c in cells[width:])):
                            refused.append((line, cells, _width_reason(len(cells), width)))
                            if key is not None:
                                bad_keys.setdefault(key, line)
                            continue
                        try:
                            rec = loader.prepare(line, cells)
                        except (CellError, InvalidValue) as exc:
                            refused.append((line, cells, _cell_reason(exc)))
                            if key is not None:
                                bad_keys.setdefault(key, line)
                            continue
                        batch.append(_Item(line, cells, rec, key))
                    flush(pool)
                    while pending:
                        finish_oldest()
                finally:
                    for waiting in pending:  # a failed read or batch: later batches are not started, nor counted
                        if waiting.future is not None:
                            waiting.future.cancel()
        finally:
            sink.close()
        summary.warnings = ctx.warnings
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass(slots=True)
class _InFlight:
    """A batch handed to a writer thread (``future`` None: every row of it was refused while reading)."""

    future: Future[_Outcome] | None
    refused: list[tuple[int, list[str], _Reason]]
    rows: int
    read: int
    keys: frozenset[str]


@dataclass(slots=True)
class _Outcome:
    """What writing a batch did: counts and the rows the database refused, in the order they were found."""

    created: int = 0
    updated: int = 0
    errors: list[tuple[int, list[str], _Reason]] = field(default_factory=list)


def _write_batch(
    factory: sessionmaker[Session], loader: _Loader, items: list[_Item], bad_keys: dict[str, int]
) -> _Outcome:
    """Write one batch in its own transaction (halves of it again to find rows the database refuses)."""
    out = _Outcome()
    _write_part(factory, loader, items, bad_keys, out)
    return out


def _write_part(
    factory: sessionmaker[Session], loader: _Loader, items: list[_Item], bad_keys: dict[str, int], out: _Outcome
) -> None:
    """Write rows in one transaction; rows of a refused group or a failing statement go to ``out.errors``."""
    if bad_keys:
        good = []
        for item in items:
            if item.key in bad_keys:
                out.errors.append((item.line, item.cells, _order_reason(item.key, bad_keys[item.key])))
            else:
                good.append(item)
        items = good
    if not items:
        return
    try:
        created, updated = _run(factory, loader, items)
    except _BatchFailure as failure:
        refused: list[tuple[_Item, _Reason]] = failure.args[0]
        for item, reason in refused:
            out.errors.append((item.line, item.cells, reason))
        ids = {id(i) for i, _ in refused}
        rest = [i for i in items if id(i) not in ids]
        if rest:
            _write_part(factory, loader, rest, {}, out)
        return
    except DBAPIError:
        if len(items) == 1 or (len({i.key for i in items}) == 1 and items[0].key is not None):
            for item in items:
                out.errors.append((item.line, item.cells, _DB_REFUSED))
            return
        # Find the offending rows: write each half (order groups kept whole) again, down to single rows or groups.
        groups: dict[Any, list[_Item]] = {}
        for item in items:
            groups.setdefault(item.key if item.key is not None else id(item), []).append(item)
        parts = list(groups.values())
        half = len(parts) // 2
        for side in (parts[:half], parts[half:]):
            _write_part(factory, loader, [item for group in side for item in group], {}, out)
        return
    out.created += created
    out.updated += updated


def _run(factory: sessionmaker[Session], loader: _Loader, items: list[_Item]) -> tuple[int, int]:
    session = factory()
    try:
        with session.begin():
            result = loader.write(session.connection(), items)
        loader.committed()
        return result
    except BaseException:
        loader.reset_caches()
        raise
    finally:
        session.close()
