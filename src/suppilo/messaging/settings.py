"""Sender settings, read from the environment in one place (prefix ``SUPPILO_``), and the sender built from them.

The CLI (``suppilo outbox send``), the worker's ``send_outbox`` job and the web's sending-settings page all use
this module, so they agree on the From address, DKIM key, rates and lease. The SMTP server itself (host, port,
TLS/STARTTLS, AUTH, pool size, timeout: ``SUPPILO_SMTP_*``) is read with the installation settings
(``suppilo.config.Settings``) and turned into a transport by ``transport.transport_from_settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.orm import Session, sessionmaker

from suppilo.messaging.mime import DkimRecord, dkim_dns_record, dkim_public_key_pem
from suppilo.messaging.sender import RunStats, Sender, SenderConfig

if TYPE_CHECKING:
    from suppilo.config import Settings


class SenderSettings(BaseSettings):
    """Sender settings (prefix ``SUPPILO_``): from address, rates, DKIM, lease."""

    model_config = SettingsConfigDict(env_prefix="SUPPILO_", env_file=None, extra="ignore")

    mail_from: str = Field(default="no-reply@suppilo.localhost", description="From address of outgoing mail.")
    mail_from_name: str | None = Field(default=None, description="Display name (default: the workspace name).")
    bounce_address: str | None = Field(default=None, description="Envelope sender (where DSNs go).")
    unsubscribe_mailto: str | None = Field(default=None, description="mailto address in List-Unsubscribe.")
    sender_concurrency: int | None = Field(default=None, ge=1, le=64, description="Concurrent sends (pool size).")
    sender_chunk_size: int = Field(default=200, ge=1, le=5000, description="Rows claimed per transaction.")
    sender_render_workers: int = Field(
        default=0, ge=0, le=64, description="Processes that render messages (0: render in the sender process)."
    )
    sender_render_nice: int = Field(
        default=10, ge=0, le=19, description="How far below the sender's CPU priority render workers run (nice)."
    )
    sender_claim_process: bool = Field(
        default=False,
        description="Claim (read, render, check, mark) in a process of its own, not in a thread beside the event loop.",
    )
    sender_lease_seconds: float = Field(default=300.0, gt=0, description="After this a claim counts as abandoned.")
    sender_rate: float = Field(default=0.0, ge=0, description="Global messages per second (0: unlimited).")
    sender_domain_rate: float = Field(default=0.0, ge=0, description="Per destination domain per second.")
    sender_domain_burst: int = Field(default=10, ge=1)
    sender_max_attempts: int = Field(default=8, ge=1)
    sender_backoff_seconds: float = Field(default=60.0, gt=0, description="First retry delay (doubles).")
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_private_key_file: Path | None = None


def sender_config(settings: Settings, extra: SenderSettings | None = None, **overrides: object) -> SenderConfig:
    """A SenderConfig from the settings (``overrides`` that are not None win, e.g. a CLI option)."""
    s = extra or SenderSettings()
    key = _read_key(s.dkim_private_key_file) if s.dkim_private_key_file else None
    config = SenderConfig(
        secret=settings.resolved_secret_key(),
        public_url=settings.public_url,
        from_address=s.mail_from,
        from_name=s.mail_from_name,
        envelope_from=s.bounce_address,
        unsubscribe_mailto=s.unsubscribe_mailto,
        concurrency=s.sender_concurrency or settings.smtp_pool_size,
        chunk_size=s.sender_chunk_size,
        render_workers=s.sender_render_workers,
        render_nice=s.sender_render_nice,
        claim_process=s.sender_claim_process,
        lease_seconds=s.sender_lease_seconds,
        global_rate=s.sender_rate,
        domain_rate=s.sender_domain_rate,
        domain_burst=s.sender_domain_burst,
        max_attempts=s.sender_max_attempts,
        backoff_base=s.sender_backoff_seconds,
        dkim_selector=s.dkim_selector,
        dkim_domain=s.dkim_domain,
        dkim_private_key_pem=key,
    )
    for name, value in overrides.items():
        if value is not None:
            setattr(config, name, value)
    return config


class SenderSettingsError(ValueError):
    """A sender setting that cannot be used (names the environment variable)."""


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SenderSettingsError(f"SUPPILO_DKIM_PRIVATE_KEY_FILE: cannot read {path}: {exc.strerror or exc}") from exc


def configured_dkim_record(settings: SenderSettings | None = None) -> DkimRecord | None:
    """The TXT record for the DKIM key the sender signs with, or None when DKIM is not configured."""
    s = settings or SenderSettings()
    if not (s.dkim_selector and s.dkim_domain and s.dkim_private_key_file):
        return None
    public = dkim_public_key_pem(s.dkim_private_key_file.read_bytes())
    return dkim_dns_record(public, s.dkim_selector, s.dkim_domain)


async def run_sender(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    until_empty: bool,
    max_seconds: float | None = None,
    **overrides: object,
) -> RunStats:
    """Run the sender with the configured transport until stopped (SIGTERM/SIGINT), empty, or ``max_seconds``."""
    sender = Sender(factory, None, sender_config(settings, None, **overrides))
    try:
        return await _drive(sender, settings, until_empty=until_empty, max_seconds=max_seconds)
    finally:
        await asyncio.to_thread(sender.close)


async def _drive(sender: Sender, settings: Settings, *, until_empty: bool, max_seconds: float | None) -> RunStats:
    """One run of ``sender`` over a transport of its own (its connections belong to this event loop), counting this
    run's figures only."""
    from suppilo.messaging.transport import transport_from_settings

    transport = transport_from_settings(settings)
    if hasattr(transport, "config"):
        transport.config.pool_size = max(transport.config.pool_size, sender.config.concurrency)
    sender.transport = transport
    sender.stats = RunStats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        return await sender.run(until_empty=until_empty, stop=stop, max_seconds=max_seconds)
    finally:
        sender.transport = None
        await transport.close()


class KeptSender:
    """A sender kept across the runs of a long-lived process: the worker's ``send_outbox`` job drains the outbox
    every second, and building a sender each time would spawn its claim process and render workers each time (each
    imports suppilo: 1-2 s of CPU) even when nothing is due. Kept, they are spawned on the first run and reused.

    Each run builds its own transport (connections belong to the run's event loop) and returns its own figures; the
    rate limits carry over between runs. A changed configuration (or session factory) replaces the sender. One run
    at a time; ``close`` stops the processes (the worker calls it when it stops)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sender: Sender | None = None
        self._factory: sessionmaker[Session] | None = None

    def run(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        *,
        until_empty: bool,
        max_seconds: float | None = None,
        **overrides: object,
    ) -> RunStats:
        """Run the kept sender (built or rebuilt for ``factory`` and the current settings with ``overrides``, as
        :func:`run_sender`) in an event loop of its own; this run's figures."""
        with self._lock:
            config = sender_config(settings, None, **overrides)
            sender = self._sender
            if sender is None or self._factory is not factory or sender.config != config:
                if sender is not None:
                    sender.close()
                self._sender = sender = Sender(factory, None, config)
                self._factory = factory
            return asyncio.run(_drive(sender, settings, until_empty=until_empty, max_seconds=max_seconds))

    def close(self) -> None:
        """Stop the kept sender's claim process and render workers (waits for a run in progress to end)."""
        with self._lock:
            if self._sender is not None:
                self._sender.close()
            self._sender = self._factory = None
