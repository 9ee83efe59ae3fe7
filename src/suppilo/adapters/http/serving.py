"""What a served process adds to the app: the start-up objects kept out of the garbage collector's full passes.

A started web process holds ~320,000 long-lived objects (modules, routes, templates, SQLAlchemy's mappers, the
gettext catalogues). CPython's full (generation 2) collection walks all of them, ~0.5-0.7 s on this machine, and it
runs inside whichever request happens to allocate at that moment. ``gc.freeze()`` after start-up moves them to the
permanent generation: later collections walk only what requests create. Nothing is leaked: objects still die by
reference counting; only reference cycles among the start-up objects themselves wait until the app stops
(``gc.unfreeze()``). Bulk work in the process (an import) shares the freeze through ``suppilo.gc_freeze``.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI

from suppilo import gc_freeze

log = logging.getLogger("suppilo.serving")


class GcFreezeHook:
    """A lifespan hook (start/stop) that freezes what exists once the app and the hooks before it have started."""

    def __init__(self) -> None:
        self.frozen = 0

    async def start(self, app: FastAPI) -> None:
        started = time.perf_counter()
        self.frozen = gc_freeze.freeze_served()
        log.info("%d start-up objects frozen in %.0f ms", self.frozen, (time.perf_counter() - started) * 1000)

    async def stop(self, app: FastAPI) -> None:
        gc_freeze.thaw_served()
        self.frozen = 0


def create_served_app() -> FastAPI:
    """The app as ``suppilo serve --workers N`` runs it in each uvicorn process (``--factory``)."""
    from suppilo.adapters.http.app import create_app

    return create_app(lifespan_hooks=[GcFreezeHook()])
