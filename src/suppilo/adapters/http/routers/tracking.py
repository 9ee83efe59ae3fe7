"""Segment-compatible tracking API: /v1/identify, track, page, screen, group, alias, batch (and import).

Segment and RudderStack libraries work by pointing their host here. The write key comes as the HTTP Basic user
name (as Segment sends it), a bearer token, or a ``writeKey`` field in the body (``sendBeacon`` cannot set
headers). Browsers call these endpoints from customers' sites, so they answer CORS for any origin, without
credentials. Single calls are parsed on the event loop, batches in the thread pool; both are then stored by one
writer thread per process, in groups (``GroupCommit``): the requests that arrived while a transaction ran go into
the next one together.
"""

from __future__ import annotations

import asyncio
import os
import threading
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool

from suppilo.adapters.http.deps import basic_user, bearer_key, principal_for_key
from suppilo.adapters.http.errors import error_body
from suppilo.db.base import utcnow
from suppilo.events.ingest import TYPES, ItemError, Message, parse_batch, parse_message, store

try:
    import fcntl
except ImportError:  # Windows has no flock: there only this process's threads queue on the lock
    fcntl = None  # type: ignore[assignment]

router = APIRouter(tags=["tracking"])

CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
OK = orjson.dumps({"success": True})


class _SqliteWriterLock:
    """Ingest transactions on one SQLite database queue here instead of in SQLite's busy handler.

    SQLite has one writer at a time, and its busy handler waits by sleeping (up to 100 ms a try), so a writer that
    finds the database locked idles long after the lock is free. This process's threads queue on a thread lock;
    other server processes on the same database (``--workers``) on an ``flock`` of a file next to it, which the
    kernel hands over the moment it is released.
    """

    def __init__(self, path: str | None) -> None:
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        if fcntl is not None and path and path != ":memory:":
            self._fd = os.open(f"{path}-ingest.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


_sqlite_locks: dict[str, _SqliteWriterLock] = {}
_sqlite_locks_guard = threading.Lock()


def _serial(engine: Any) -> AbstractContextManager[Any]:
    """What ingest transactions of this engine queue on (nothing on PostgreSQL: its advisory lock serialises)."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    path = engine.url.database
    lock = _sqlite_locks.get(str(path))
    if lock is None:
        with _sqlite_locks_guard:
            lock = _sqlite_locks.get(str(path))
            if lock is None:
                lock = _sqlite_locks[str(path)] = _SqliteWriterLock(path)
    return lock


class TrackingSettings(BaseSettings):
    """Settings of the tracking endpoints (environment prefix ``SUPPILO_TRACKING_``)."""

    model_config = SettingsConfigDict(env_prefix="SUPPILO_TRACKING_", env_file=None, extra="ignore")

    synchronous_commit: bool = Field(
        default=False,
        description="PostgreSQL: wait for the WAL flush before acknowledging tracked calls (see ARCHITECTURE.md, "
        "Ingest). Off: a crash can lose the last few hundred ms of acknowledged calls, never corrupts.",
    )


_tracking_settings: TrackingSettings | None = None


def tracking_settings() -> TrackingSettings:
    """The tracking settings of this process (read from the environment once)."""
    global _tracking_settings
    if _tracking_settings is None:
        _tracking_settings = TrackingSettings()
    return _tracking_settings


def _json(status: int, payload: Any) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(body, status_code=status, media_type="application/json", headers=CORS_HEADERS)


def _error(status: int, code: str, message: str, path: str = "") -> Response:
    return _json(status, error_body(code, message, path, [{"path": path, "message": message}] if path else []))


@dataclass(eq=False)
class _Call:
    """One request (a single call, or a batch in ``batch``) waiting for the transaction that stores it.

    ``run`` stores a group of requests of one workspace in one transaction; ``done`` is called (on the writer
    thread) once the request is stored or has failed. ``errors`` holds what storing reported (a batch's validation
    errors are kept by its handler).
    """

    workspace_id: int
    message: Message | None
    run: Callable[[int, list[_Call]], None]
    done: Callable[[], None]
    errors: list[dict[str, Any]] = field(default_factory=list)
    failure: BaseException | None = None
    batch: list[Message] | None = None

    def size(self) -> int:
        return len(self.batch) if self.batch is not None else 1


class GroupCommit:
    """Tracking requests are stored by one writer thread per process, in groups: every request that arrived while
    the last transaction ran goes into the next one (up to ``MAX_ROUND_CALLS`` calls).

    Requests are parsed before they queue and wait on a future, not in a thread of their own: a thread per waiting
    request would compete with the event loop for the interpreter lock. One transaction for several requests
    costs one commit and one set of lookups instead of one per request, and the writer goes from one round to the
    next without handing a lock to another thread. Each request is answered only after the commit that holds it;
    a failed group is retried request by request, so one bad request fails alone.
    """

    MAX_ROUND_CALLS = 2_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Call] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def submit(self, call: _Call) -> None:
        """Queue ``call``; ``call.done()`` runs once it is stored (``call.failure`` holds what storing it raised)."""
        with self._lock:
            self._pending.append(call)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="suppilo-track-writer", daemon=True)
                self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                group: list[_Call] = []
                size = 0
                for call in self._pending:
                    if group and size + call.size() > self.MAX_ROUND_CALLS:
                        break
                    group.append(call)
                    size += call.size()
                del self._pending[: len(group)]
                if not self._pending:
                    self._wake.clear()
            if group:
                self._round(group)

    @staticmethod
    @staticmethod
    def _store_group(run: Callable[[int, list[_Call]], None], workspace_id: int, calls: list[_Call]) -> None:
        """Store one workspace's calls of a round together, or call by call when that fails."""
        try:
            run(workspace_id, calls)
        except Exception as exc:
            if len(calls) == 1:
                calls[0].failure = exc
                return
            for call in calls:
                try:
                    run(workspace_id, [call])
                except Exception as single:
                    call.failure = single

    @classmethod
    def _round(cls, group: list[_Call]) -> None:
        try:
            batches: dict[tuple[Any, int], list[_Call]] = {}
            for call in group:
                batches.setdefault((call.run, call.workspace_id), []).append(call)
            if len(batches) == 1:
                for (run, workspace_id), calls in batches.items():
                    cls._store_group(run, workspace_id, calls)
            else:
                # Workspaces do not wait for each other on PostgreSQL (one advisory lock each): their transactions
                # run side by side (on SQLite they queue for the writer lock as before).
                futures = [
                    _round_pool().submit(cls._store_group, run, workspace_id, calls)
                    for (run, workspace_id), calls in batches.items()
                ]
                for future in futures:
                    future.result()
        except BaseException as exc:
            for call in group:
                call.failure = call.failure or exc
        finally:
            for call in group:
                try:
                    call.done()
                except RuntimeError:  # its event loop has closed (the server is shutting down): nobody waits
                    continue


_pool: ThreadPoolExecutor | None = None


def _round_pool() -> ThreadPoolExecutor:
    """The threads that store the workspaces of one round side by side (made on first use)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="suppilo-track-store")
    return _pool


_group_commit = GroupCommit()


def _store_calls(
    factory: Any, serial: AbstractContextManager[Any], sync: bool, workspace_id: int, calls: list[_Call]
) -> None:
    """Store the requests of one workspace in one transaction; each request gets its own errors back."""
    messages: list[Message] = []
    for call in calls:
        call.errors = []
        if call.batch is not None:
            sink = (call.errors, "batch")
            for m in call.batch:
                m.sink = sink
            messages.extend(call.batch)
        elif call.message is not None:
            call.message.sink = (call.errors, "")
            messages.append(call.message)
    if not messages:
        return
    with serial, factory() as session:
        store(
            session,
            workspace_id,
            messages,
            received_at=messages[-1].received_at or utcnow(),
            synchronous_commit=sync,
        )
        session.commit()


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        decomp = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = decomp.decompress(body, limit + 1)
        except zlib.error as exc:
            raise ValueError("the body is not valid gzip") from exc
        if len(body) > limit or decomp.unconsumed_tail:
            raise _TooLarge
    return body


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _authenticate(request: Request, body: bytes) -> tuple[dict[str, Any], Any] | Response:
    """The JSON body and the principal of its write key, or the error response."""
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return _error(400, "invalid_json", "the body is not valid JSON", "body")
    if not isinstance(payload, dict):
        return _error(422, "validation_error", "the body must be a JSON object", "body")
    key = basic_user(request) or bearer_key(request)
    if key is None:
        body_key = payload.get("writeKey")
        key = body_key if isinstance(body_key, str) and body_key else None
    if key is None:
        return _error(401, "unauthorized", "a write key is required (HTTP Basic user name)", "headers.authorization")
    principal = principal_for_key(request, key)
    if principal is None:
        return _error(401, "unauthorized", "the write key is unknown or revoked", "headers.authorization")
    if not principal.allows("track"):
        return _error(403, "forbidden", "this key lacks the 'track' scope", "headers.authorization")
    return payload, principal


def _parse_batch(request: Request, body: bytes) -> tuple[int, list[Message], list[dict[str, Any]]] | Response:
    """Parse, authenticate and validate one batch request (runs in the thread pool): workspace, calls and errors."""
    received_at = utcnow()
    settings = request.app.state.settings
    checked = _authenticate(request, body)
    if isinstance(checked, Response):
        return checked
    payload, principal = checked
    ip = request.client.host if request.client else None
    items = payload.get("batch")
    if not isinstance(items, list):
        return _error(422, "validation_error", "batch must be a list of calls", "batch")
    if len(items) > settings.max_batch_items:
        return _error(
            413, "too_large", f"a batch holds at most {settings.max_batch_items} calls; got {len(items)}", "batch"
        )
    messages, errors = parse_batch(items, received_at=received_at, sent_at=_parse_time(payload.get("sentAt")), ip=ip)
    return principal.workspace_id, messages, errors


async def _handle_batch(request: Request, body: bytes) -> Response:
    """Parse a batch in the thread pool, then queue it for the writer thread like single calls."""
    parsed = await run_in_threadpool(_parse_batch, request, body)
    if isinstance(parsed, Response):
        return parsed
    workspace_id, messages, errors = parsed
    if messages:
        waker = _Waker()
        call = _Call(workspace_id, None, _store_of(request.app), waker, batch=messages)
        await _stored(call, waker)
        errors.extend(call.errors)
    errors.sort(key=lambda e: e["index"])
    return _json(200, {"success": True, "accepted": len(messages), "errors": errors})


def _store_of(app: Any) -> Callable[[int, list[_Call]], None]:
    """The function that stores a group of this app's single calls (one per app, so its calls group together)."""
    run: Callable[[int, list[_Call]], None] | None = getattr(app.state, "track_store", None)
    if run is None:
        run = app.state.track_store = partial(
            _store_calls,
            app.state.session_factory,
            _serial(app.state.engine),
            tracking_settings().synchronous_commit,
        )
    return run


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # a request whose client went away is cancelled
        future.set_result(None)


class _Waker:
    """Resolves a future of the event loop it was made on, from the writer thread."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[None] = self.loop.create_future()

    def __call__(self) -> None:  # called by the writer thread once the request is stored
        self.loop.call_soon_threadsafe(_resolve, self.future)


async def _stored(call: _Call, waker: _Waker) -> None:
    """Queue ``call`` (whose ``done`` is ``waker``) for the writer thread and wait until it is stored; raises what
    storing it raised."""
    _group_commit.submit(call)
    await waker.future
    if call.failure is not None:
        raise call.failure


async def _handle_single(request: Request, body: bytes, kind: str) -> Response:
    """Parse, authenticate and validate one call on the event loop; the writer thread stores it."""
    received_at = utcnow()
    checked = _authenticate(request, body)
    if isinstance(checked, Response):
        return checked
    payload, principal = checked
    ip = request.client.host if request.client else None
    raw = {k: v for k, v in payload.items() if k != "writeKey"}
    try:
        message = parse_message(raw, 0, kind=kind, received_at=received_at, ip=ip)
    except ItemError as exc:
        return _error(422, "validation_error", f"{exc.path}: {exc.message}", exc.path)
    waker = _Waker()
    call = _Call(principal.workspace_id, message, _store_of(request.app), waker)
    await _stored(call, waker)
    if call.errors:
        return _json(200, {"success": True, "errors": call.errors})
    return _json(200, OK)


def _endpoint(kind: str | None) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            body = await _read_body(request, request.app.state.settings.max_batch_bytes)
        except _TooLarge:
            limit = request.app.state.settings.max_batch_bytes
            return _error(413, "too_large", f"the body exceeds {limit} bytes", "body")
        except ValueError as exc:
            return _error(400, "invalid_body", str(exc), "body")
        if kind is None:
            return await _handle_batch(request, body)
        return await _handle_single(request, body, kind)

    endpoint.__name__ = f"segment_{kind or 'batch'}"
    endpoint.__doc__ = (
        f'Segment ``{kind}`` call; answers ``{{"success": true}}``.'
        if kind
        else "Segment batch of calls; invalid calls are reported by index, the valid ones stored."
    )
    return endpoint


for _kind in sorted(TYPES):
    router.add_api_route(f"/v1/{_kind}", _endpoint(_kind), methods=["POST"], name=f"segment_{_kind}")
router.add_api_route("/v1/batch", _endpoint(None), methods=["POST"], name="segment_batch")
router.add_api_route("/v1/import", _endpoint(None), methods=["POST"], name="segment_import")
# analytics.js (Segment's browser library, "analytics-next") posts to one-letter paths.
for _short, _kind in {"t": "track", "p": "page", "i": "identify", "g": "group", "a": "alias", "s": "screen"}.items():
    router.add_api_route(
        f"/v1/{_short}", _endpoint(_kind), methods=["POST"], name=f"segment_{_kind}_short", include_in_schema=False
    )
router.add_api_route("/v1/b", _endpoint(None), methods=["POST"], name="segment_batch_short", include_in_schema=False)


@router.options("/v1/{path:path}", include_in_schema=False)
async def preflight(request: Request, path: str) -> Response:
    """CORS preflight for browsers on any site (no credentials)."""
    requested = request.headers.get("access-control-request-headers") or "Content-Type, Authorization"
    return Response(
        status_code=204,
        headers={
            **CORS_HEADERS,
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": requested,
            "Access-Control-Max-Age": "86400",
        },
    )
