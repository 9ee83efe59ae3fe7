"""The process's garbage-collector freezes, shared by everything that asks for one.

``gc.freeze()`` moves every object alive now into a permanent generation that the cyclic collector's passes skip;
``gc.unfreeze()`` gives them all back at once. Two users want it: a served process freezes its start-up objects for
as long as it serves (``suppilo.adapters.http.serving``), and long bulk work (a CSV import) freezes what exists while
it runs, so its full passes stop walking the whole process. Calling ``gc.unfreeze()`` directly at the end of an
import would also give back the served process's start-up objects; this module counts the holders and, when work
ends inside a served process, freezes the start-up state again after one collection.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_held = 0  # work currently inside ``frozen_while``
_served = False  # a served process holds its start-up freeze


def freeze_served() -> int:
    """Freeze the start-up objects of a served process (after one collection); returns how many were frozen."""
    global _served
    with _lock:
        gc.collect()
        gc.freeze()
        _served = True
        return gc.get_freeze_count()


def thaw_served() -> None:
    """The served process stops: give its objects back to the collector (unless work still holds a freeze)."""
    global _served
    with _lock:
        _served = False
        if _held == 0:
            gc.unfreeze()


@contextmanager
def frozen_while() -> Iterator[None]:
    """Freeze what exists now for the duration of the block (nested and concurrent blocks share one freeze)."""
    global _held
    with _lock:
        if _held == 0:
            gc.freeze()
        _held += 1
    try:
        yield
    finally:
        with _lock:
            _held -= 1
            if _held == 0:
                gc.unfreeze()
                if _served:
                    # what the work left behind is collected once, and the rest is start-up state again
                    gc.collect()
                    gc.freeze()


_paused = 0  # work currently inside ``paused``
_was_enabled = False  # whether the collector ran before the first of them


@contextmanager
def paused() -> Iterator[None]:
    """The cyclic collector off for the duration of the block (nested and concurrent blocks share one pause; the
    last to leave turns it back on if it was on). For work that makes millions of short-lived objects and no
    reference cycles (fetched rows): the collector's passes over them are pure cost."""
    global _paused, _was_enabled
    with _lock:
        if _paused == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _lock:
            _paused -= 1
            if _paused == 0 and _was_enabled:
                gc.enable()
