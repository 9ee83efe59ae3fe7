"""A served app keeps its start-up objects out of the garbage collector's full passes while it runs."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from suppilo.adapters.http.app import create_app
from suppilo.adapters.http.serving import GcFreezeHook


def test_start_up_objects_frozen_while_served_and_released_at_stop(test_settings, db_engine) -> None:
    hook = GcFreezeHook()
    app = create_app(test_settings, lifespan_hooks=[hook])
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:
        # Everything the process had at start-up (modules, routes, mappers, templates) is frozen ...
        assert hook.frozen > 50_000
        assert gc.get_freeze_count() > 50_000  # (frozen objects still die by reference counting)
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/app/login").status_code == 200
        # ... so a full collection no longer walks it: far fewer objects are left to the collector.
        assert len(gc.get_objects()) < hook.frozen
    assert gc.get_freeze_count() == 0
    assert hook.frozen == 0


def test_work_that_freezes_inside_a_served_process_leaves_the_start_up_freeze_in_place() -> None:
    from suppilo import gc_freeze

    assert gc.get_freeze_count() == 0
    gc_freeze.freeze_served()
    try:
        with gc_freeze.frozen_while(), gc_freeze.frozen_while():  # e.g. two imports at once
            assert gc.get_freeze_count() > 0
        # the work ended: its garbage is collectable again, the start-up objects are still frozen
        assert gc.get_freeze_count() > 0
    finally:
        gc_freeze.thaw_served()
    assert gc.get_freeze_count() == 0
    with gc_freeze.frozen_while():  # outside a served process the work's freeze is simply given back
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_pauses_of_the_collector_nest_and_give_back_the_state_they_found() -> None:
    from suppilo import gc_freeze

    was = gc.isenabled()
    try:
        gc.enable()
        with gc_freeze.paused():
            assert not gc.isenabled()
            with gc_freeze.paused():  # e.g. a columnar append inside a rescoring's fetch
                assert not gc.isenabled()
            assert not gc.isenabled()  # the inner block ending does not turn the collector back on
        assert gc.isenabled()
        gc.disable()  # a process that keeps the collector off keeps it off
        with gc_freeze.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
