"""Background refreshes of a web process: at most one per key at a time, each in a daemon thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable

log = logging.getLogger("suppilo.web")


class Refreshes:
    """Keys whose refresh is running. ``start`` runs ``work`` in a thread unless that key's refresh already runs;
    a failure is logged (the page keeps showing the figures it has) and the key is free again either way."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._keys: set[Hashable] = set()
        self._lock = threading.Lock()

    def start(self, key: Hashable, work: Callable[[], None]) -> None:
        with self._lock:
            if key in self._keys:
                return
            self._keys.add(key)
        threading.Thread(target=self._run, args=(key, work), daemon=True).start()

    def _run(self, key: Hashable, work: Callable[[], None]) -> None:
        try:
            work()
        except Exception:
            log.exception("%s refresh failed for %s", self.what, key)
        finally:
            with self._lock:
                self._keys.discard(key)

    def clear(self) -> None:
        """Forget refreshes in flight (tests and benches start from a clean slate)."""
        with self._lock:
            self._keys.clear()

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._keys)
