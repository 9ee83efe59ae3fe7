"""Background work of a web process: refreshes that run at most once per key at a time, each in a daemon thread,
and :class:`Results`, the in-process cache of reports asked for with non-default parameters (computed in the
background like the snapshots, so a page view never computes them)."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from suppilo.db.base import utcnow
from suppilo.errors import DomainError

log = logging.getLogger("suppilo.web")

# Every refresh in flight in this process, for ``wait_idle`` (tests and benches wait for the background to settle).
_idle = threading.Condition()
_running = 0


class Refreshes:
    """Keys whose refresh is running. ``start`` runs ``work`` in a thread unless that key's refresh already runs;
    a failure is logged (the page keeps showing the figures it has) and the key is free again either way.

    ``work`` computes in a read-only transaction and writes its result in a short one at the end (the snapshots'
    ``refresh_apart``): on SQLite a write transaction holds the database's write lock from its start, and tracking
    and imports must not wait for the seconds a computation takes."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._keys: set[Hashable] = set()
        self._lock = threading.Lock()

    def start(self, key: Hashable, work: Callable[[], object]) -> bool:
        """Start ``work`` for ``key`` unless it already runs; whether this call started it."""
        global _running
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
        with _idle:
            _running += 1
        threading.Thread(target=self._run, args=(key, work), daemon=True).start()
        return True

    def _run(self, key: Hashable, work: Callable[[], object]) -> None:
        global _running
        try:
            work()
        except Exception:
            log.exception("%s refresh failed for %s", self.what, key)
        finally:
            with self._lock:
                self._keys.discard(key)
            with _idle:
                _running -= 1
                _idle.notify_all()

    def running(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._keys

    def clear(self) -> None:
        """Forget refreshes in flight (tests and benches start from a clean slate)."""
        with self._lock:
            self._keys.clear()

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._keys)


def wait_idle(timeout: float = 60.0) -> bool:
    """Wait until no background refresh of this process runs (at most ``timeout`` seconds); whether none runs."""
    deadline = time.monotonic() + timeout
    with _idle:
        while _running:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _idle.wait(left)
    return True


@dataclass(frozen=True)
class Result:
    """One computed report: its figures (or the refusal the computation raised), the source rows' watermark it saw
    and when it was computed."""

    value: Any
    error: DomainError | None
    mark: str
    computed_at: datetime


class Results:
    """Reports asked for with parameters that have no stored snapshot (explicit dates, another grouping), keyed by
    their parameters and computed once in a background thread, in this process's memory.

    Memory rather than snapshot rows because the keys are unbounded (any pair of dates) and a result is only worth
    keeping while someone explores it: at most ``size`` results are kept, least recently shown dropped first. A result
    is served as long as it is kept; once the source rows moved on (another watermark) or it is ``max_age`` seconds old
    it is shown marked as updating while one thread recomputes it. A restart loses nothing but the time to recompute.
    """

    def __init__(self, what: str, *, max_age: float = 300.0, size: int = 128) -> None:
        self.max_age = max_age
        self.size = size
        self._refreshes = Refreshes(what)
        self._results: OrderedDict[Hashable, Result] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Result | None:
        with self._lock:
            result = self._results.get(key)
            if result is not None:
                self._results.move_to_end(key)
            return result

    def is_current(self, result: Result, mark: str) -> bool:
        return result.mark == mark and (utcnow() - result.computed_at).total_seconds() < self.max_age

    def start(
        self,
        key: Hashable,
        factory: Callable[[], Session],
        watermark: Callable[[Session], str],
        compute: Callable[[Session], Any],
    ) -> bool:
        """Compute ``key`` in the background unless that already runs, in one read session of ``factory``: the source
        rows' ``watermark`` first, then the figures; a :class:`DomainError` the computation raises is kept and shown
        like figures. Whether this call started it."""

        def work() -> None:
            with factory() as session:
                mark = watermark(session)  # read before the computation: rows committed meanwhile move it again
                at = utcnow()
                try:
                    result = Result(compute(session), None, mark, at)
                except DomainError as exc:
                    result = Result(None, exc, mark, at)
            with self._lock:
                self._results[key] = result
                self._results.move_to_end(key)
                while len(self._results) > self.size:
                    self._results.popitem(last=False)

        return self._refreshes.start(key, work)

    def running(self, key: Hashable) -> bool:
        return self._refreshes.running(key)

    def clear(self) -> None:
        with self._lock:
            self._results.clear()
        self._refreshes.clear()
