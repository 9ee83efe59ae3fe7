"""The sender: drains the outbox over a pooled transport, effectively once.

1. Read due rows (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: a read transaction) and build each message
   outside any write; then, in one short write transaction, leave alone rows changed since the read, re-check
   consent and suppression, defer marketing rows held by the workspace's sending policies (frequency cap, quiet
   hours: ``policies.py``) and mark the others ``sending`` with a lease token; COMMIT before talking to the server.
2. Send over the transport with N concurrent connections, under global and per-domain token buckets.
3. Record the outcome with a fencing check (``WHERE lease_token = :mine AND status = 'sending'``): sent, deferred
   with exponential backoff (4xx, connection errors), or failed (5xx, too many attempts).

A row left in ``sending`` after its lease (the process died between steps 1 and 3) becomes ``uncertain``: it is
reported (``suppilo outbox uncertain``, ``GET /v1/messages?status=uncertain``) and resent only by an explicit
``suppilo outbox resend ID``. Claims stream in chunks and results are flushed continuously, so memory stays flat.

Run it with ``suppilo outbox send`` (``settings.py`` builds the config from the environment), or in the
server process through the worker job ``send_outbox``.
"""

from __future__ import annotations

import asyncio
import binascii
import concurrent.futures
import contextlib
import dataclasses
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.util
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime, formataddr
from typing import Any, NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from suppilo.consent import service as consent_service
from suppilo.db.base import utcnow
from suppilo.db.results import rowcount
from suppilo.errors import DomainError, NotFound
from suppilo.messaging import mime, suppression, tracking, unsubscribe
from suppilo.messaging import policies as send_policies
from suppilo.messaging import service as templates_service
from suppilo.messaging.outbox_models import DUE_STATES, OutboxMessage
from suppilo.messaging.sender_sql import ClaimedRow, SenderDb, WorkspaceRow, json_text, read_time
from suppilo.workspaces import service as workspaces_service

log = logging.getLogger("suppilo.messaging.sender")


@dataclass
class SenderConfig:
    """What the sender needs (adapters fill it from the settings)."""

    secret: str
    public_url: str
    from_address: str
    from_name: str | None = None
    envelope_from: str | None = None
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None
    message_id_domain: str | None = None
    concurrency: int = 4
    chunk_size: int = 200
    lease_seconds: float = 300.0
    global_rate: float = 0.0
    global_burst: int = 50
    domain_rate: float = 0.0
    domain_burst: int = 10
    max_attempts: int = 8
    backoff_base: float = 60.0
    backoff_max: float = 6 * 3600.0
    poll_interval: float = 1.0
    flush_every: int = 100
    flush_seconds: float = 0.05
    track_opens: bool = True
    track_clicks: bool = True
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key_pem: bytes | None = None
    # Processes that render claimed messages (0: render in the sender process). With workers, the claim hands plain
    # data to them and waits without holding the GIL, so the event loop keeps the connections busy meanwhile.
    render_workers: int = 0
    # The render workers run this many steps below the sender's CPU priority (``nice``; 0: the same). Rendering is
    # throughput work, a reply on a connection is latency work: where the cores are shared (the SMTP relay, the
    # journey runner), the sender's event loop and the relay get the CPU first when a reply arrives, instead of
    # waiting for a worker's time slice to end while every connection waits for them; idle cores still go to the
    # workers, so rendering keeps up. On the two-core bench (journeys_send): +8 % messages/s at nice 10 over 50,000
    # messages in four alternated pairs, no difference measurable over 100,000 in two.
    render_nice: int = 10
    # Claims run in a process of their own (which owns the render workers), not in a thread of the sender process:
    # the claim's Python (staging, the checks, marking) then never holds the sender's GIL while a reply waits on a
    # connection. The sender process keeps the event loop, the outcomes and the recovery. Needs a database other
    # processes can open (not an in-memory SQLite: there the claim stays in a thread). On the two-core bench
    # (journeys_send, 100,000 messages, same hour): 0.741-0.834 of the bare loop in four runs vs 0.690-0.706 in two.
    claim_process: bool = False
    # Only these workspaces (None: all). Lets an operator drain one tenant, and tests stay in their own.
    workspace_ids: tuple[int, ...] | None = None
    # While ``run`` goes, the interpreter's thread switch interval is at most this many seconds (0: left alone). The
    # claim and the recording of outcomes run in threads beside the event loop; with Python's default of 5 ms, an
    # SMTP reply that arrives while such a thread holds the GIL waits up to 5 ms before the event loop may read it,
    # and every connection waiting for a reply stalls with it. Restored when the last run of the process ends.
    switch_interval: float = 0.0005

    @property
    def bounce_address(self) -> str:
        return self.envelope_from or self.from_address

    @property
    def id_domain(self) -> str:
        return self.message_id_domain or self.from_address.rsplit("@", 1)[-1]


@dataclass(slots=True)
class Prepared:
    """A claimed message ready to go: the bytes to send and what identifies the claim."""

    outbox_id: int
    workspace_id: int
    contact_id: int | None
    lease_token: str
    recipient: str
    domain: str
    message_bytes: bytes


@dataclass(slots=True)
class Outcome:
    """What happened to one send: ``sent``, ``transient`` or ``permanent`` with the server's answer."""

    prepared: Prepared
    result: str
    detail: str = ""


@dataclass
class RunStats:
    """Counters of one run."""

    claimed: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    suppressed: int = 0
    skipped: int = 0
    uncertain: int = 0
    fenced: int = 0
    held: int = 0  # deferred by a sending policy (frequency cap, quiet hours): waits, never dropped
    started: float = field(default_factory=time.monotonic)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``acquire`` waits for one. A rate of 0 never waits."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.capacity = max(1.0, float(burst))
        self.tokens = self.capacity
        self.updated = time.monotonic()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        while True:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self.tokens) / self.rate)


class UserRecipient(NamedTuple):
    """The recipient of a message to a workspace user (no contact): only the address is known."""

    id: int | None
    email: str
    country: str | None
    timezone: str | None


def _is_user_message(row: Any, body: Any) -> bool:
    """A pre-rendered transactional message to a workspace user: no contact, ``extra.to_user_id`` and the address in
    ``to_address`` (set when it was queued)."""
    return (
        row.contact_id is None
        and bool((row.extra or {}).get("to_user_id"))
        and bool(row.to_address)
        and row.kind == "transactional"
        and body is not None
    )


class _Updates:
    """The claim's row changes, written as one statement per kind of change (``sender_sql``)."""

    __slots__ = ("closed", "held", "sending")

    def __init__(self) -> None:
        self.closed: list[tuple[int, str, str]] = []  # (id, status, reason)
        self.held: list[tuple[int, datetime, str]] = []  # (id, until, reason)
        self.sending: list[tuple[int, str, str, str]] = []  # (id, to, Message-ID, links JSON)

    def write(self, db: SenderDb, token: str, now: datetime, lease_expires_at: datetime) -> None:
        db.close_rows(self.closed, now)
        db.hold_rows(self.held, now)
        db.mark_sending(self.sending, token, now, lease_expires_at)
        self.closed, self.held, self.sending = [], [], []


def backoff_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds before attempt ``attempts + 1``: base * 2^(attempts-1), capped."""
    return float(min(cap, base * (2 ** max(0, attempts - 1))))


_UNSAFE = re.compile(r"[\r\n\x00]")
# MIME boundaries: a random prefix per process plus a counter (one urandom call per message cost as much as the
# rest of the message build). "=_" never occurs in quoted-printable text, so no part can contain a boundary line.
_BOUNDARY_PREFIX = f"=_suppilo_{uuid.uuid4().hex[:16]}_"
_boundaries = itertools.count(1)


def _qp(text: str) -> bytes:
    """Quoted-printable UTF-8 with CRLF line ends (binascii, C speed)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"  # as the email package does
    data = text.encode("utf-8")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def _header(name: str, value: str) -> bytes:
    if _UNSAFE.search(value):
        raise mime.HeaderInjectionError(f"headers.{name}", f"{name} cannot contain CR, LF or NUL")
    if value.isascii() and len(name) + len(value) < 76:
        return f"{name}: {value}\r\n".encode("ascii")
    if name.startswith("List-") and value.isascii() and value.startswith("<"):
        # A list of <...> items (List-Unsubscribe): folded after each comma (RFC 5322 folding: unfolded, it is the
        # same value), without email.header's general folding, which cost more than the rest of the header block.
        return f"{name}: {value.replace(', ', ',' + chr(13) + chr(10) + ' ')}\r\n".encode("ascii")
    return _encoded_header(name, value)


@functools.lru_cache(maxsize=4096)
def _encoded_header(name: str, value: str) -> bytes:
    """A header RFC 2047-encoded and folded by email.header; the same subject goes to many contacts, so cached."""
    encoded = Header(value, "utf-8" if not value.isascii() else "us-ascii", header_name=name).encode(
        linesep="\r\n", maxlinelen=76
    )
    return f"{name}: {encoded}\r\n".encode("ascii")


_last_date: tuple[datetime, bytes] | None = None


def _date_header(date: datetime) -> bytes:
    """``Date: ...`` (a claimed batch shares one moment: formatted once)."""
    global _last_date
    hit = _last_date
    if hit is not None and hit[0] == date:
        return hit[1]
    value = _header("Date", format_datetime(date.astimezone(UTC)))
    _last_date = (date, value)
    return value


def fast_message_bytes(
    *,
    outbox_id: int,
    workspace_slug: str,
    domain: str,
    from_header: str,
    to_email: str,
    subject: str,
    text: str,
    html: str | None,
    reply_to: str | None,
    headers: dict[str, str],
    date: datetime,
    message_id: str | None = None,
) -> bytes | None:
    """The wire form of what ``mime.build_message`` makes (multipart/alternative, quoted-printable UTF-8 parts),
    assembled directly: about 20x faster, which the sender needs for 1,500+ messages/s on one core.
    Returns None when an address needs SMTPUTF8 (then ``mime.build_message`` is used). Header values are checked
    for CR/LF/NUL exactly as ``mime.build_message`` does; tests compare both parsed."""
    if not to_email.isascii() or "<" in to_email or ">" in to_email or "," in to_email:
        return None
    for name in headers:
        if name.lower() in mime.RESERVED_HEADERS:
            raise mime.HeaderInjectionError(f"headers.{name}", f"the header {name!r} cannot be set here")
    boundary = f"{_BOUNDARY_PREFIX}{outbox_id}_{next(_boundaries)}"
    out = [
        _header("Message-ID", message_id or mime.message_id(outbox_id, workspace_slug, domain)),
        _date_header(date),
        from_header.encode("ascii"),
        _header("To", to_email),
    ]
    if reply_to:
        out.append(_header("Reply-To", reply_to))
    out.append(_header("Subject", subject))
    out.extend(_header(name, value) for name, value in headers.items())
    out.append(b"MIME-Version: 1.0\r\n")
    if html is None:
        out.append(b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n')
        out.append(_qp(text))
        return b"".join(out)
    out.append(f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'.encode("ascii"))
    for subtype, body in (("plain", text), ("html", html)):
        out.append(f"--{boundary}\r\n".encode("ascii"))
        out.append(f'Content-Type: text/{subtype}; charset="utf-8"\r\n'.encode("ascii"))
        out.append(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
        out.append(_qp(body))
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


class _Variant(NamedTuple):
    """A template variant as plain data (what ``render_message`` reads), so a render worker process can use it."""

    language: str
    subject: str
    preheader: str
    html: str
    text: str | None


class _TemplateData(NamedTuple):
    """A published template as plain data (what ``render_loaded`` reads of a ``Template`` row)."""

    id: int
    key: str
    kind: str
    version: int
    variants: tuple[_Variant, ...]


def _template_data(template: Any) -> _TemplateData:
    return _TemplateData(
        id=template.id,
        key=template.key,
        kind=template.kind,
        version=template.version,
        variants=tuple(_Variant(v.language, v.subject, v.preheader or "", v.html, v.text) for v in template.variants),
    )


class _Job(NamedTuple):
    """Everything one message's bytes depend on, read by the claim: plain data, no session, so it can be built in
    this process or in a render worker process (``SenderConfig.render_workers``) with the same result."""

    outbox_id: int
    workspace_id: int
    kind: str
    extra: dict[str, Any] | None
    template_key: str | None
    body: tuple[str, str, str] | None  # (subject, html, text) of a pre-rendered message
    contact_id: int | None
    email: str
    context: tuple[dict[str, Any], dict[str, Any]] | None
    template: _TemplateData | None
    workspace_context: dict[str, Any] | None
    slug: str
    from_name: str | None
    from_header: str
    now: datetime


def _build_job(cfg: SenderConfig, job: _Job) -> tuple[bytes, list[str], str]:
    """The wire bytes, tracked links and Message-ID of one message (pure: no database)."""
    base = cfg.public_url.rstrip("/")
    now = job.now
    extra: dict[str, Any] = {k: v for k, v in (job.extra or {}).items() if k != "confirm_consent_id"}
    headers: dict[str, str] = {}
    unsubscribe_url: str | None = None
    utoken: str | None = None  # this message's own string in its HTML: messages otherwise alike share work
    if job.kind == "marketing":
        if job.contact_id is None:
            raise ValueError("a marketing message needs a contact")
        utoken = unsubscribe.unsubscribe_token(cfg.secret, job.workspace_id, job.contact_id, job.outbox_id, now)
        unsubscribe_url = f"{base}/u/{utoken}"
        headers.update(unsubscribe.list_unsubscribe_headers(base, utoken, cfg.unsubscribe_mailto))
        extra.setdefault("unsubscribe_url", unsubscribe_url)
        extra.setdefault("preferences_url", unsubscribe_url)
    confirm_id = (job.extra or {}).get("confirm_consent_id")
    if confirm_id is not None:
        confirm_url = (
            f"{base}/consent/confirm/{unsubscribe.confirm_token(cfg.secret, job.workspace_id, int(confirm_id))}"
        )
        message_extra = dict(extra.get("message") or {})
        message_extra["confirm_url"] = confirm_url
        extra["message"] = message_extra
    if job.body is not None:
        subject, html, text = job.body
    else:
        template, ctx, wsctx = job.template, job.context, job.workspace_context
        if template is None or wsctx is None:
            raise ValueError("the message has neither a template nor a body")
        if ctx is None:
            raise NotFound("contact_id", f"contact {job.contact_id} not found")
        result = templates_service.render_loaded(
            template,  # type: ignore[arg-type]
            ctx[0],
            ctx[1],
            wsctx,
            extra=extra,
            volatile=utoken,
        )
        if template.kind and template.kind != job.kind and template.kind == "marketing":
            raise ValueError(f"template {job.template_key!r} is marketing but the message is {job.kind}")
        # The template's layout already carries the preheader inside the HTML.
        subject, html, text = result.subject, result.html, result.text
    links: list[str] = []
    if html and job.kind == "marketing" and (cfg.track_clicks or cfg.track_opens):
        skip = (f"{base}/u/", f"{base}/consent/")
        html, links = tracking.rewrite_links(
            html,
            click_url=(lambda i: f"{base}/c/{tracking.click_token(cfg.secret, job.workspace_id, job.outbox_id, i)}")
            if cfg.track_clicks
            else (lambda i: ""),
            pixel_url=f"{base}/o/{tracking.open_token(cfg.secret, job.workspace_id, job.outbox_id)}.gif"
            if cfg.track_opens
            else None,
            skip_prefixes=skip if cfg.track_clicks else ("",),
            volatile=utoken,
        )
    headers["X-Suppilo-Kind"] = job.kind
    message_id = mime.message_id(job.outbox_id, job.slug, cfg.id_domain)
    data = fast_message_bytes(
        outbox_id=job.outbox_id,
        workspace_slug=job.slug,
        domain=cfg.id_domain,
        from_header=job.from_header,
        to_email=job.email,
        subject=subject,
        text=text or "",
        html=html or None,
        reply_to=cfg.reply_to,
        headers=headers,
        date=now,
        message_id=message_id,
    )
    if data is None:
        msg = mime.build_message(
            outbox_id=job.outbox_id,
            workspace_slug=job.slug,
            domain=cfg.id_domain,
            from_email=cfg.from_address,
            to_email=job.email,
            subject=subject,
            text=text or "",
            html=html or None,
            from_name=job.from_name,
            reply_to=cfg.reply_to,
            headers=headers,
            date=now,
        )
        data = mime.message_bytes(msg)
    if cfg.dkim_selector and cfg.dkim_domain and cfg.dkim_private_key_pem:
        data = mime.sign_dkim(
            data, selector=cfg.dkim_selector, domain=cfg.dkim_domain, private_key_pem=cfg.dkim_private_key_pem
        )
    return data, links, message_id


def _build_jobs(cfg: SenderConfig, jobs: list[_Job]) -> list[tuple[bytes, list[str], str] | str]:
    """Build a slice of messages (in a render worker process): each result, or the error text of that message."""
    out: list[tuple[bytes, list[str], str] | str] = []
    for job in jobs:
        try:
            out.append(_build_job(cfg, job))
        except Exception as exc:  # one failing render fails that message only
            out.append(f"build: {exc}")
    return out


def _exit_with_parent(parent_pid: int) -> None:
    """In a render worker or the claim process: exit when the process that started it is gone (even SIGKILLed),
    rather than linger orphaned."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="suppilo-parent-watch", daemon=True).start()


def _render_worker_start(parent_pid: int, nice: int) -> None:
    """A render worker's start: it exits with the sender (``_exit_with_parent``) and runs ``nice`` steps below the
    sender's CPU priority (``SenderConfig.render_nice``)."""
    _exit_with_parent(parent_pid)
    if nice > 0:
        os.nice(nice)


_switch_lock = threading.Lock()
_switch_runs = 0
_switch_saved = 0.0


def _switch_interval_enter(interval: float) -> None:
    """Lower the thread switch interval for a run (``SenderConfig.switch_interval``); runs of one process nest."""
    global _switch_runs, _switch_saved
    with _switch_lock:
        if _switch_runs == 0:
            _switch_saved = sys.getswitchinterval()
        _switch_runs += 1
        if 0 < interval < sys.getswitchinterval():
            sys.setswitchinterval(interval)


def _switch_interval_exit() -> None:
    global _switch_runs
    with _switch_lock:
        _switch_runs -= 1
        if _switch_runs == 0:
            sys.setswitchinterval(_switch_saved)


# The claim process's own sender (``SenderConfig.claim_process``): it claims and renders; the sender process sends.
_CLAIMER: Sender | None = None

_COUNTED = ("claimed", "failed", "suppressed", "skipped", "held")


def _claim_process_start(parent_pid: int, url: str, config: SenderConfig) -> None:
    """The claim process's start: it exits with the sender process, opens the database and starts its render
    workers (one sender each way: the render workers are this process's children)."""
    global _CLAIMER
    from suppilo.db.session import make_engine, make_session_factory

    _exit_with_parent(parent_pid)
    claimer = Sender(make_session_factory(make_engine(url)), None, dataclasses.replace(config, claim_process=False))
    claimer.warm_up()
    _CLAIMER = claimer
    # When this process ends, its render workers are told to stop before multiprocessing joins them (otherwise
    # that join waits for workers that still wait for work).
    multiprocessing.util.Finalize(claimer, claimer.close, exitpriority=10)


def _claim_in_process(limit: int, now: datetime) -> tuple[list[Prepared], dict[str, int]]:
    """In the claim process: one claim at the sender's moment ``now``; the messages and what the claim counted."""
    claimer = _CLAIMER
    if claimer is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("the claim process was not started")
    stats = claimer.stats
    before = [getattr(stats, name) for name in _COUNTED]
    prepared = claimer.claim(limit, now=now)
    return prepared, {name: getattr(stats, name) - was for name, was in zip(_COUNTED, before, strict=True)}


def _claim_process_pids() -> list[int]:
    """In the claim process: its pid and its render workers' (for tests and operators' checks)."""
    pids = [os.getpid()]
    if _CLAIMER is not None and _CLAIMER._render_pool is not None:
        pids.extend(_CLAIMER._render_pool._processes or {})
    return pids


class _Staged(NamedTuple):
    """A row the claim read, its recipient (None: no address), the workspace, and what its bytes depend on (or why
    that could not be read)."""

    row: ClaimedRow
    recipient: Any
    workspace: WorkspaceRow | None
    job: _Job | None
    error: str


# A claim whose every row was taken by another sender between its read and its write reads again, this many times
# at most (SQLite; PostgreSQL's locked read never loses a row to another sender).
_CLAIM_TRIES = 4

# A render worker gets at least this many messages at a time (fewer cost more in pickling than they save).
_MIN_SLICE = 25


class Sender:
    """Drains the outbox; one instance per process."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        transport: Any,
        config: SenderConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session_factory = session_factory
        self.transport = transport
        self.config = config
        self.clock = clock
        self.stats = RunStats()
        self._own_tokens: set[str] = set()
        self._global = TokenBucket(config.global_rate, config.global_burst)
        self._domains: dict[str, TokenBucket] = {}
        self._from_cache: dict[str | None, str] = {}
        bind = session_factory.kw["bind"]
        self._dialect = bind.dialect.name
        # SQLite: the claim reads in a deferred (read) transaction, so rendering never holds the write lock.
        self._read_factory = sessionmaker(
            bind=bind.execution_options(sqlite_begin="DEFERRED") if self._dialect == "sqlite" else bind,
            expire_on_commit=False,
            autoflush=False,
        )
        self._render_pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._claim_pool: concurrent.futures.ProcessPoolExecutor | None = None
        url = bind.url
        if config.claim_process and not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")):
            # One process claims (and owns the render workers); spawn, not fork, as below.
            self._claim_pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_claim_process_start,
                initargs=(os.getpid(), url.render_as_string(hide_password=False), config),
            )
        elif config.render_workers > 0:
            # spawn, not fork: the sender has threads and open connections that a forked child must not inherit.
            self._render_pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=config.render_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_render_worker_start,
                initargs=(os.getpid(), config.render_nice),
            )

    def warm_up(self) -> None:
        """Start the claim process and the render worker processes now (they import suppilo once), not on the first
        claim."""
        if self._claim_pool is not None:
            self._claim_pool.submit(_claim_process_pids).result()
        if self._render_pool is not None:
            list(
                self._render_pool.map(
                    _build_jobs, [self.config] * self.config.render_workers, [[]] * self.config.render_workers
                )
            )

    def close(self) -> None:
        """Stop the claim process and the render worker processes (if any); the transport is the caller's."""
        if self._claim_pool is not None:
            self._claim_pool.shutdown(wait=True, cancel_futures=True)
            self._claim_pool = None
        if self._render_pool is not None:
            self._render_pool.shutdown(wait=True, cancel_futures=True)
            self._render_pool = None

    # --- database steps (run in threads) ----------------------------------------------------------------------

    def _scoped(self, query: Any) -> Any:
        if self.config.workspace_ids is not None:
            query = query.where(OutboxMessage.workspace_id.in_(self.config.workspace_ids))
        return query

    def recover(self) -> list[int]:
        """Rows left in ``sending`` past their lease by another (dead) sender become ``uncertain``; returns ids."""
        now = self.clock()
        with self.session_factory() as session:
            query = self._scoped(
                select(OutboxMessage.id, OutboxMessage.workspace_id, OutboxMessage.lease_token).where(
                    OutboxMessage.status == "sending", OutboxMessage.lease_expires_at < now
                )
            )
            if self._dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = [r for r in session.execute(query) if r.lease_token not in self._own_tokens]
            if not rows:
                session.rollback()
                return []
            by_ws: dict[int, list[int]] = {}
            for r in rows:
                by_ws.setdefault(r.workspace_id, []).append(r.id)
            for ws, ids in by_ws.items():
                for start in range(0, len(ids), 500):
                    session.execute(
                        update(OutboxMessage)
                        .where(
                            OutboxMessage.id.in_(ids[start : start + 500]),
                            OutboxMessage.status == "sending",
                        )
                        .values(
                            status="uncertain",
                            last_error="the sender stopped while sending (lease expired): fate unknown, not resent",
                            updated_at=now,
                        )
                    )
                workspaces_service.record_audit(
                    session,
                    ws,
                    actor="sender",
                    action="outbox.uncertain",
                    subject_type="outbox_message",
                    details={"count": len(ids), "ids": ids[:1000]},
                    at=now,
                )
            session.commit()
        ids_all = [r.id for r in rows]
        log.warning(
            "%d message(s) left in sending by a stopped sender are now uncertain: %s", len(ids_all), ids_all[:20]
        )
        self.stats.uncertain += len(ids_all)
        return ids_all

    def pending(self) -> tuple[int, int]:
        """(rows due now, rows in ``sending``) across workspaces."""
        now = self.clock()
        with self.session_factory() as session:
            due = session.scalar(
                self._scoped(
                    select(func.count()).where(
                        OutboxMessage.status.in_(DUE_STATES), OutboxMessage.next_attempt_at <= now
                    )
                )
            )
            sending = session.scalar(self._scoped(select(func.count()).where(OutboxMessage.status == "sending")))
            session.rollback()
        return int(due or 0), int(sending or 0)

    def claim(self, limit: int, *, now: datetime | None = None) -> list[Prepared]:
        """Claim up to ``limit`` due rows, build them, re-check consent and suppression, mark them ``sending`` and
        commit; returns the messages to send.

        Rendering happens outside any write: SQLite reads the chunk in a read transaction (no lock, so the journey
        runner and this sender's own outcomes keep writing), builds it, then takes the write lock only to compare
        each row with what was read, re-check suppression, consent and the sending policies, and mark it. A row that
        changed in between (another sender took it, an erasure skipped it, its contact's address changed) is left
        alone. PostgreSQL keeps the rows it read locked (``FOR UPDATE OF o SKIP LOCKED``: other senders skip them,
        nobody else waits on them) and writes the same way at the end of that transaction. When every row read was
        taken by another sender meanwhile, the claim reads again (a few times at most). ``now`` (default: the
        sender's clock) is the claim's moment."""
        now = self.clock() if now is None else now
        token = str(uuid.uuid4())
        lease_expires_at = now + timedelta(seconds=self.config.lease_seconds)
        prepared: list[Prepared] = []
        for _ in range(_CLAIM_TRIES):
            read, lost = self._claim_once(limit, now, token, lease_expires_at, prepared)
            if read == 0 or lost < read:
                break
        self.stats.claimed += len(prepared)
        return prepared

    def _claim_once(
        self, limit: int, now: datetime, token: str, lease_expires_at: datetime, out: list[Prepared]
    ) -> tuple[int, int]:
        """One read → build → write round; appends what goes to ``out``; returns (rows read, rows left alone)."""
        locked = self._dialect == "postgresql"  # rows read FOR UPDATE SKIP LOCKED, written in the same transaction
        with (self.session_factory if locked else self._read_factory)() as session:
            db = SenderDb(session.connection())
            rows = self._due_rows(db, now, limit)
            if not rows:
                session.rollback()
                return 0, 0
            staged = self._stage(session, db, rows, now)
            if locked:
                built = self._build_all([s.job for s in staged if s.job is not None])
                lost = self._write_claim(session, db, staged, built, token, now, lease_expires_at, out)
                session.commit()
                return len(rows), lost
            session.rollback()
        built = self._build_all([s.job for s in staged if s.job is not None])
        with self.session_factory() as session:  # BEGIN IMMEDIATE: the write lock, for the checks and the marks only
            db = SenderDb(session.connection())
            lost = self._write_claim(session, db, staged, built, token, now, lease_expires_at, out)
            session.commit()
        return len(rows), lost

    def _due_rows(self, db: SenderDb, now: datetime, limit: int) -> list[ClaimedRow]:
        rows: list[ClaimedRow] = []
        for status in DUE_STATES:  # one status per query, so the claim index gives the order without a sort
            if len(rows) >= limit:
                break
            rows.extend(db.claim_rows(status, now, limit - len(rows), self.config.workspace_ids))
        return rows

    def _stage(self, session: Session, db: SenderDb, rows: list[ClaimedRow], now: datetime) -> list[_Staged]:
        """Each read row with its recipient and what its bytes depend on (``_Job``), or why it cannot be built.
        Messages rendered from a template: their contacts, companies, the templates and the workspace are read once
        for the chunk, so each message renders without touching the database."""
        cfg = self.config
        by_ws: dict[int, list[ClaimedRow]] = {}
        for row in rows:
            by_ws.setdefault(row.workspace_id, []).append(row)
        staged: list[_Staged] = []
        for workspace_id, ws_rows in by_ws.items():
            workspace = db.workspace(workspace_id)
            slug = workspace.slug if workspace is not None else str(workspace_id)
            from_name = cfg.from_name or (workspace.name if workspace is not None else None)
            recipients: list[tuple[ClaimedRow, Any]] = []
            for row in ws_rows:
                recipient: Any = None
                if _is_user_message(row, row.body):
                    recipient = UserRecipient(id=None, email=row.to_address or "", country=None, timezone=None)
                elif row.contact is not None and row.contact.email:
                    recipient = row.contact
                recipients.append((row, recipient))
            render_ids = [
                row.contact_id
                for row, recipient in recipients
                if recipient is not None and row.body is None and row.contact_id is not None
            ]
            contexts: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
            if render_ids:
                context_contacts, companies = db.context_rows(workspace_id, render_ids)
                for c in context_contacts:
                    co = companies.get(c.company_id) if c.company_id is not None else None
                    contexts[c.id] = templates_service.contact_context_of(c, co)
            loaded: dict[str, Any] = {}
            for row, recipient in recipients:
                job: _Job | None = None
                error = ""
                if recipient is not None:
                    try:
                        job = self._job(session, row, recipient, contexts, loaded, slug, from_name, now)
                    except Exception as exc:
                        error = f"build: {exc}"
                staged.append(_Staged(row, recipient, workspace, job, error))
        return staged

    def _write_claim(
        self,
        session: Session,
        db: SenderDb,
        staged: list[_Staged],
        built: list[tuple[bytes, list[str], str] | str],
        token: str,
        now: datetime,
        lease_expires_at: datetime,
        out: list[Prepared],
    ) -> int:
        """In the claim's write transaction: leave alone the rows that changed since they were read, re-check
        suppression, consent and the sending policies of the others, close, hold or mark them ``sending``; returns
        how many rows were left alone."""
        results = iter(built)
        staged_built = [(s, next(results) if s.job is not None else None) for s in staged]
        states = db.claim_states([s.row.id for s in staged])
        kept: dict[int, list[tuple[_Staged, Any]]] = {}
        lost = 0
        for s, result in staged_built:
            state = states.get(s.row.id)
            row = s.row
            if (
                state is None
                or state.status != row.status
                or state.next_attempt_at != row.next_attempt_at
                or state.attempts != row.attempts
                or state.to_address != row.to_address
                or state.email != (row.contact.email if row.contact is not None else None)
            ):
                lost += 1
                continue
            kept.setdefault(row.workspace_id, []).append((s, result))
        updates = _Updates()
        for workspace_id, items in kept.items():
            for s, built_one in self._checked(session, db, workspace_id, items, updates, now):
                row, recipient = s.row, s.recipient
                if built_one is None or isinstance(built_one, str):
                    reason = s.error if built_one is None else built_one
                    log.warning("message %s could not be built: %s", row.id, reason)
                    self._close(updates, row, "failed", reason[:2000])
                    continue
                message_bytes, links, message_id = built_one
                updates.sending.append((row.id, recipient.email, message_id, json_text(links) if links else "[]"))
                out.append(
                    Prepared(
                        outbox_id=row.id,
                        workspace_id=workspace_id,
                        contact_id=row.contact_id,
                        lease_token=token,
                        recipient=recipient.email,
                        domain=recipient.email.rsplit("@", 1)[-1],
                        message_bytes=message_bytes,
                    )
                )
            updates.write(db, token, now, lease_expires_at)
        return lost

    def _checked(
        self,
        session: Session,
        db: SenderDb,
        workspace_id: int,
        items: list[tuple[_Staged, Any]],
        updates: _Updates,
        now: datetime,
    ) -> list[tuple[_Staged, Any]]:
        """Suppression, consent and the sending policies of one workspace's rows (in the write transaction): closes
        or holds those that may not go now and returns the others."""
        hashes = {
            s.recipient.email: suppression.address_hash(s.recipient.email) for s, _ in items if s.recipient is not None
        }
        reasons = db.suppression_reasons(workspace_id, list(hashes.values()))
        decisions = consent_service.marketing_decisions(
            session,
            workspace_id,
            [
                (s.recipient.id, s.row.topic)
                for s, _ in items
                if s.row.kind == "marketing" and s.recipient is not None and s.recipient.id is not None
            ],
            {s.recipient.id: s.recipient.country for s, _ in items if s.recipient is not None and s.recipient.id},
            now,
        )
        ready: list[tuple[Any, Any]] = []
        by_id: dict[int, tuple[_Staged, Any]] = {}
        for s, result in items:
            row, recipient = s.row, s.recipient
            if recipient is None:
                self._close(updates, row, "skipped", "the contact has no email address")
                continue
            blocked = suppression.blocking_reason(reasons.get(hashes[recipient.email]), row.kind)
            if blocked:
                self._close(updates, row, "suppressed", blocked)
                continue
            if row.kind == "marketing":
                decision = decisions[(recipient.id, row.topic)]
                if not decision.allowed:
                    self._close(updates, row, "skipped", f"consent: {decision.reason}")
                    continue
            ready.append((row, recipient))
            by_id[row.id] = (s, result)
        workspace = items[0][0].workspace
        going = self._apply_policies(session, workspace, workspace_id, ready, updates, now)
        return [by_id[row.id] for row, _ in going]

    def _build_all(self, jobs: list[_Job]) -> list[tuple[bytes, list[str], str] | str]:
        """Build the claimed messages: here, or split over the render worker processes when there are enough."""
        pool = self._render_pool
        if pool is None or len(jobs) < 2 * _MIN_SLICE:
            return _build_jobs(self.config, jobs)
        parts = max(1, min(self.config.render_workers * 2, len(jobs) // _MIN_SLICE))
        size = -(-len(jobs) // parts)
        slices = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        results: list[tuple[bytes, list[str], str] | str] = []
        for part in pool.map(_build_jobs, itertools.repeat(self.config), slices):
            results.extend(part)
        return results

    def _job(
        self,
        session: Session,
        row: ClaimedRow,
        contact: Any,
        contexts: dict[int, tuple[dict[str, Any], dict[str, Any]]],
        loaded: dict[str, Any],
        slug: str,
        from_name: str | None,
        now: datetime,
    ) -> _Job:
        """What one message's bytes depend on; reads the template and workspace once per batch (``loaded``)."""
        template: _TemplateData | None = None
        ctx = None
        wsctx = None
        body = row.body
        if body is None:
            if row.template_key is None:
                raise ValueError("the message has neither a template nor a body")
            template = self._template(session, row.workspace_id, row.template_key, loaded)
            ctx = contexts.get(contact.id)
            if ctx is None:
                raise NotFound("contact_id", f"contact {contact.id} not found")
            wsctx = loaded.get("\x00workspace")
            if wsctx is None:
                wsctx = loaded["\x00workspace"] = templates_service.workspace_context(session, row.workspace_id)
        return _Job(
            outbox_id=row.id,
            workspace_id=row.workspace_id,
            kind=row.kind,
            extra=row.extra,
            template_key=row.template_key,
            body=None if body is None else (body.subject, body.html, body.text),
            contact_id=contact.id,
            email=contact.email,
            context=ctx,
            template=template,
            workspace_context=wsctx,
            slug=slug,
            from_name=from_name,
            from_header=self._from_header(from_name),
            now=now,
        )

    def _apply_policies(
        self,
        session: Session,
        workspace: WorkspaceRow | None,
        workspace_id: int,
        ready: list[tuple[Any, Any]],
        updates: _Updates,
        now: datetime,
    ) -> list[tuple[Any, Any]]:
        """Defer marketing messages held by the workspace's frequency cap or quiet hours (``policies.py``); returns
        the messages that go now. A held row keeps its attempts and goes back to ``deferred`` with the reason."""
        if workspace is None:
            return ready
        policies = send_policies.for_workspace(workspace.settings, workspace.timezone)
        if not policies.active:
            return ready
        candidates = [
            send_policies.Candidate(
                row_id=row.id,
                contact_id=contact.id,
                claim_rank=row.claim_rank,
                next_attempt_at=read_time(row.next_attempt_at),
                timezone=contact.timezone,
            )
            for row, contact in ready
            if row.kind == "marketing"
        ]
        holds = send_policies.holds_for(session, workspace_id, policies, candidates, now)
        if not holds:
            return ready
        going: list[tuple[Any, Any]] = []
        for row, contact in ready:
            hold = holds.get(row.id)
            if hold is None:
                going.append((row, contact))
                continue
            updates.held.append((row.id, hold.until, hold.reason))
            self.stats.held += 1
        return going

    def _from_header(self, name: str | None) -> str:
        """``From: ...`` (display name RFC 2047-encoded when needed), validated once per name."""
        cached = self._from_cache.get(name)
        if cached is None:
            address = mime.make_address("from", self.config.from_address, name)
            value = (
                formataddr((mime.safe_display_name(name), address.addr_spec), charset="utf-8")
                if name
                else address.addr_spec
            )
            cached = _header("From", value).decode("ascii")
            if len(self._from_cache) < 1000:
                self._from_cache[name] = cached
        return cached

    def _close(self, updates: _Updates, row: Any, status: str, reason: str) -> None:
        updates.closed.append((row.id, status, reason))
        if status == "suppressed":
            self.stats.suppressed += 1
        elif status == "skipped":
            self.stats.skipped += 1
        else:
            self.stats.failed += 1

    def _template(self, session: Session, workspace_id: int, key: str, loaded: dict[str, Any]) -> _TemplateData:
        """The published template ``key`` (read once per claimed batch); raises what ``render_for_contact`` would."""
        hit: Any = loaded.get(key)
        if hit is None:
            try:
                template = templates_service.get_template_by_key(session, workspace_id, key)
                hit = loaded[key] = ("ok", template, _template_data(template))
            except Exception as exc:
                hit = loaded[key] = ("error", exc)
        if hit[0] == "error":
            raise hit[1]
        if hit[1].status != "published":
            raise DomainError("template_key", f"template {key!r} is not published", code="template_unpublished")
        data: _TemplateData = hit[2]
        return data

    def finish(self, outcomes: list[Outcome]) -> None:
        """Record outcomes with the fencing check; one transaction."""
        if not outcomes:
            return
        now = self.clock()
        cfg = self.config
        sent = [o for o in outcomes if o.result == "sent"]
        with self.session_factory() as session:
            db = SenderDb(session.connection())
            fenced = 0
            if sent:
                by_token: dict[str, list[int]] = {}
                for o in sent:
                    by_token.setdefault(o.prepared.lease_token, []).append(o.prepared.outbox_id)
                for token, ids in by_token.items():
                    fenced += len(ids) - db.mark_sent(ids, token, now)
            failed_rows = [o for o in outcomes if o.result != "sent"]
            if failed_rows:
                attempts = dict(
                    session.execute(
                        select(OutboxMessage.id, OutboxMessage.attempts).where(
                            OutboxMessage.id.in_([o.prepared.outbox_id for o in failed_rows])
                        )
                    ).all()
                )
                for o in failed_rows:
                    values: dict[str, Any]
                    n = attempts.get(o.prepared.outbox_id, 1)
                    if o.result == "uncertain":
                        values = {"status": "uncertain"}
                        self.stats.uncertain += 1
                    elif o.result == "permanent" or n >= cfg.max_attempts:
                        values = {"status": "failed"}
                        self.stats.failed += 1
                    else:
                        values = {
                            "status": "deferred",
                            "next_attempt_at": now
                            + timedelta(seconds=backoff_delay(n, cfg.backoff_base, cfg.backoff_max)),
                        }
                        self.stats.deferred += 1
                    r = session.execute(
                        update(OutboxMessage)
                        .where(
                            OutboxMessage.id == o.prepared.outbox_id,
                            OutboxMessage.lease_token == o.prepared.lease_token,
                            OutboxMessage.status == "sending",
                        )
                        .values(last_error=o.detail[:2000], updated_at=now, lease_expires_at=None, **values)
                    )
                    fenced += 1 - rowcount(r)
            # The timeline's email_sent events, one statement for the batch (keyed, so a repeat stores nothing).
            db.insert_sent_events(
                [
                    (p.workspace_id, p.contact_id, p.outbox_id)
                    for p in (o.prepared for o in sent)
                    if p.contact_id is not None
                ],
                now,
            )
            session.commit()
        self.stats.sent += len(sent)
        if fenced:
            self.stats.fenced += fenced
            log.warning("%d outcome(s) not recorded: another sender took over those rows", fenced)

    # --- the async loop ---------------------------------------------------------------------------------------

    async def _claim_next(self, limit: int) -> list[Prepared]:
        """The next claim: in the claim process (``SenderConfig.claim_process``) or in a thread of this one."""
        pool = self._claim_pool
        if pool is None:
            prepared = await asyncio.to_thread(self.claim, limit)
        else:
            prepared, counted = await asyncio.wrap_future(pool.submit(_claim_in_process, limit, self.clock()))
            for name, n in counted.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)
        # This run's recovery leaves its own claims alone (``run`` forgets them when it ends).
        self._own_tokens.update(p.lease_token for p in prepared)
        return prepared

    async def _send_one(self, item: Prepared) -> Outcome:
        from suppilo.messaging.transport import PermanentSendError, TransientSendError

        await self._global.acquire()
        if self.config.domain_rate > 0:
            bucket = self._domains.get(item.domain)
            if bucket is None:
                if len(self._domains) > 10_000:
                    self._domains.clear()
                bucket = self._domains[item.domain] = TokenBucket(self.config.domain_rate, self.config.domain_burst)
            await bucket.acquire()
        try:
            await self.transport.send(self.config.bounce_address, [item.recipient], item.message_bytes)
        except PermanentSendError as exc:
            return Outcome(item, "permanent", str(exc))
        except TransientSendError as exc:
            # The connection died after the message data went out: the server may have accepted it.
            return Outcome(item, "uncertain" if exc.after_data else "transient", str(exc))
        except (TimeoutError, OSError) as exc:
            return Outcome(item, "transient", f"{type(exc).__name__}: {exc}")
        return Outcome(item, "sent")

    async def run(
        self, *, until_empty: bool = False, stop: asyncio.Event | None = None, max_seconds: float | None = None
    ) -> RunStats:
        """Send until stopped (or, with ``until_empty``, until nothing is due and nothing is in flight anywhere)."""
        cfg = self.config
        stop = stop or asyncio.Event()
        deadline = time.monotonic() + max_seconds if max_seconds else None
        _switch_interval_enter(cfg.switch_interval)
        try:
            return await self._run(cfg, until_empty, stop, deadline)
        finally:
            _switch_interval_exit()
            # Every claim of this run has its outcome recorded (or recording failed: then its rows wait in
            # ``sending`` for the lease to end, and this sender's next run recovers them like any other's).
            self._own_tokens.clear()

    async def _run(self, cfg: SenderConfig, until_empty: bool, stop: asyncio.Event, deadline: float | None) -> RunStats:
        queue: asyncio.Queue[Prepared | None] = asyncio.Queue(maxsize=cfg.chunk_size * 2)
        outcomes: list[Outcome] = []
        flush_lock = asyncio.Lock()
        last_flush = time.monotonic()

        async def flush() -> None:
            nonlocal last_flush
            async with flush_lock:
                if not outcomes:
                    return
                batch = outcomes[:]
                del outcomes[:]
                last_flush = time.monotonic()
                await asyncio.to_thread(self.finish, batch)

        # A full batch of outcomes is recorded by a task of its own: a connection never waits for the database
        # (recording waits for SQLite's write lock while the journey runner or a claim holds it).
        flushing: asyncio.Task[None] | None = None
        flush_errors: list[BaseException] = []

        async def flush_in_background() -> None:
            try:
                await flush()
            except Exception as exc:
                log.exception("recording outcomes failed")
                flush_errors.append(exc)

        async def worker() -> None:
            nonlocal flushing
            while True:
                item = await queue.get()
                try:
                    if item is None:
                        return
                    outcomes.append(await self._send_one(item))
                    if len(outcomes) >= cfg.flush_every and (flushing is None or flushing.done()):
                        flushing = asyncio.create_task(flush_in_background())
                finally:
                    queue.task_done()

        async def flusher() -> None:
            while True:
                await asyncio.sleep(cfg.flush_seconds)
                if outcomes and time.monotonic() - last_flush >= cfg.flush_seconds:
                    await flush()

        await asyncio.to_thread(self.recover)
        workers = [asyncio.create_task(worker()) for _ in range(max(1, cfg.concurrency))]
        flush_task = asyncio.create_task(flusher())
        last_recover = time.monotonic()
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                batch = await self._claim_next(cfg.chunk_size)
                for item in batch:
                    await queue.put(item)
                if batch:
                    if time.monotonic() - last_recover > cfg.lease_seconds / 2:
                        await asyncio.to_thread(self.recover)
                        last_recover = time.monotonic()
                    continue
                await queue.join()
                await flush()
                await asyncio.to_thread(self.recover)
                last_recover = time.monotonic()
                if until_empty:
                    due, sending = await asyncio.to_thread(self.pending)
                    if due == 0 and sending == 0:
                        break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=cfg.poll_interval)
        finally:
            await queue.join()
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers, return_exceptions=True)
            flush_task.cancel()
            await asyncio.gather(flush_task, return_exceptions=True)
            if flushing is not None:
                await flushing
            await flush()
        if flush_errors:
            raise flush_errors[0]
        return self.stats
