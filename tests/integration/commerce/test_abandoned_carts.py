"""The abandoned-cart job: idle open carts become abandoned once, with one 'Cart Abandoned' event each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from suppilo.adapters.worker.jobs import JOBS
from suppilo.commerce.models import Cart
from suppilo.commerce.tasks import abandon_idle_carts, run_abandoned_carts
from suppilo.events.models import Event
from suppilo.workspaces.models import Workspace

NOW = datetime(2024, 9, 1, 12, 0, tzinfo=UTC)


def _cart(session, ws_id: int, ext: str, idle_minutes: int, status: str = "open") -> None:
    session.add(
        Cart(
            workspace_id=ws_id,
            external_id=ext,
            status=status,
            currency="EUR",
            value_minor=1999,
            lines=[{"sku": "A", "name": "A", "quantity": 1, "unit_price_minor": 1999}],
            last_activity_at=NOW - timedelta(minutes=idle_minutes),
            applied_message_ids=[],
        )
    )


def _statuses(session, ws_id: int) -> dict[str, str]:
    rows = session.execute(select(Cart.external_id, Cart.status).where(Cart.workspace_id == ws_id))
    return dict(rows.tuples().all())


def _abandoned_events(session, ws_id: int) -> list[Event]:
    return list(
        session.scalars(
            select(Event).where(Event.workspace_id == ws_id, Event.name == "Cart Abandoned").order_by(Event.id)
        )
    )


def test_idle_carts_are_abandoned_once_by_the_workspace_setting(session_factory, workspace, other_workspace) -> None:
    with session_factory() as s:
        s.get(Workspace, other_workspace.id).settings = {"cart_abandon_minutes": 240}
        _cart(s, workspace.id, "idle", 61)
        _cart(s, workspace.id, "fresh", 59)
        _cart(s, workspace.id, "done", 600, status="converted")
        _cart(s, other_workspace.id, "theirs-idle-2h", 120)
        _cart(s, other_workspace.id, "theirs-idle-5h", 300)
        s.commit()

    abandon_idle_carts(session_factory, NOW)

    with session_factory() as s:
        assert _statuses(s, workspace.id) == {"idle": "abandoned", "fresh": "open", "done": "converted"}
        assert _statuses(s, other_workspace.id) == {"theirs-idle-2h": "open", "theirs-idle-5h": "abandoned"}
        events = _abandoned_events(s, workspace.id)
        assert len(events) == 1
        cart = s.scalar(select(Cart).where(Cart.workspace_id == workspace.id, Cart.external_id == "idle"))
        assert events[0].message_id.startswith(f"cart-abandoned:{cart.id}:")
        assert events[0].properties["cart_id"] == "idle" and events[0].properties["value"] == 19.99
        assert events[0].occurred_at == NOW

    # Running again (even later) changes nothing and records no second event.
    abandon_idle_carts(session_factory, NOW + timedelta(hours=5))
    with session_factory() as s:
        assert _statuses(s, workspace.id)["fresh"] == "abandoned"
        assert [e.properties["cart_id"] for e in _abandoned_events(s, workspace.id)] == ["idle", "fresh"]


def test_job_works_through_chunks(session_factory, workspace) -> None:
    with session_factory() as s:
        for i in range(7):
            _cart(s, workspace.id, f"c{i}", 100 + i)
        s.commit()
    abandon_idle_carts(session_factory, NOW, chunk_size=3)
    with session_factory() as s:
        assert set(_statuses(s, workspace.id).values()) == {"abandoned"}
        assert len(_abandoned_events(s, workspace.id)) == 7


def test_job_is_registered_for_the_worker() -> None:
    entry = next(e for e in JOBS if e[0] == "abandoned_carts")
    assert entry[1] == 60.0 and entry[2] is run_abandoned_carts
