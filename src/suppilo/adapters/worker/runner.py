"""Runs the API with uvicorn and, in the same process by default, the background worker."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("suppilo.worker")

JobFn = Callable[[sessionmaker[Session]], Any]


@dataclass
class PeriodicJob:
    """A job run every ``interval`` seconds; its function opens its own unit of work."""

    name: str
    interval: float
    fn: JobFn
    next_run: float = 0.0


@dataclass
class Worker:
    """Runs periodic jobs, each in its own thread (a long outbox drain never delays the journeys' next tick);
    a failing job is logged and retried next period."""

    session_factory: sessionmaker[Session]
    jobs: list[PeriodicJob] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def run_once(self, now: float | None = None) -> list[str]:
        """Run every due job once; returns the names of those that ran."""
        ran: list[str] = []
        t = time.monotonic() if now is None else now
        for job in self.jobs:
            if t >= job.next_run:
                try:
                    job.fn(self.session_factory)
                except Exception:
                    log.exception("job %s failed", job.name)
                job.next_run = t + job.interval
                ran.append(job.name)
        return ran

    def _loop(self, job: PeriodicJob) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                job.fn(self.session_factory)
            except Exception:
                log.exception("job %s failed", job.name)
            self._stop.wait(max(0.0, job.interval - (time.monotonic() - started)))

    def start(self) -> None:
        """Start one daemon thread per job."""
        for job in self.jobs:
            thread = threading.Thread(target=self._loop, args=(job,), name=f"suppilo-{job.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the loops, wait for running jobs to finish, and release what the jobs keep between periods."""
        from suppilo.adapters.worker.jobs import close_jobs

        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        close_jobs()


def default_jobs() -> list[PeriodicJob]:
    """The periodic jobs every installation runs."""
    from suppilo.adapters.worker.jobs import JOBS

    return [PeriodicJob(name, interval, fn) for name, interval, fn in JOBS]


class WorkerHook:
    """Starts and stops the worker with the app."""

    def __init__(self) -> None:
        self.worker: Worker | None = None

    async def start(self, app: FastAPI) -> None:
        self.worker = Worker(app.state.session_factory, default_jobs())
        self.worker.start()

    async def stop(self, app: FastAPI) -> None:
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop)


class MailCatcherHook:
    """Starts the built-in mail catcher before the worker and stops it after; a busy port is logged, not fatal."""

    def __init__(self, data_dir: Any = None, host: str | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.catcher: Any = None

    async def start(self, app: FastAPI) -> None:
        from suppilo.messaging.catcher import MailCatcher

        settings = app.state.settings
        self.catcher = MailCatcher(
            self.data_dir or settings.data_dir,
            host=self.host or settings.mail_catcher_host,
            port=self.port or settings.mail_catcher_port,
        )
        try:
            await asyncio.to_thread(self.catcher.start)
        except (OSError, RuntimeError) as exc:
            log.error("mail catcher not started on %s:%s: %s", self.catcher.host, self.catcher.port, exc)
            self.catcher = None
            return
        app.state.mail_catcher = self.catcher
        log.info("mail catcher listening on %s:%s", self.catcher.host, self.catcher.port)

    async def stop(self, app: FastAPI) -> None:
        if self.catcher is not None:
            await asyncio.to_thread(self.catcher.stop)
            self.catcher = None


def run_server(
    *,
    host: str,
    port: int,
    with_worker: bool,
    app: FastAPI | None = None,
    with_mail_catcher: bool | None = None,
) -> None:
    """Serve the API with uvicorn, with the worker when asked; the mail catcher runs when asked, or by default
    when no SMTP server is configured (``SUPPILO_SMTP_HOST``)."""
    import uvicorn

    from suppilo.adapters.http.app import create_app
    from suppilo.adapters.http.serving import GcFreezeHook
    from suppilo.config import get_settings

    hooks: list[Any] = []
    if with_mail_catcher is None:
        with_mail_catcher = not get_settings().smtp_host
    if with_mail_catcher:
        hooks.append(MailCatcherHook())
    if with_worker:
        hooks.append(WorkerHook())
    hooks.append(GcFreezeHook())  # last: what the hooks before it set up is start-up state too
    application = app or create_app(lifespan_hooks=hooks)
    uvicorn.run(application, host=host, port=port, log_level="info", proxy_headers=True)
