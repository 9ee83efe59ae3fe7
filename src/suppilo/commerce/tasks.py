"""Periodic commerce work: marking idle open carts abandoned."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from suppilo.commerce import repository as repo
from suppilo.commerce.money import major_number
from suppilo.commerce.service import cart_abandon_minutes
from suppilo.db.base import utcnow
from suppilo.db.session import unit_of_work
from suppilo.events import service as events_service
from suppilo.workspaces import service as workspaces_service

CHUNK_SIZE = 500


def abandon_idle_carts_chunk(session: Session, workspace_id: int, now: datetime, *, limit: int = CHUNK_SIZE) -> int:
    """Mark up to ``limit`` open carts of the workspace idle for longer than its ``cart_abandon_minutes`` as
    abandoned and record a 'Cart Abandoned' event for each; returns how many were marked."""
    workspace = workspaces_service.get_workspace(session, workspace_id)
    idle_before = now - timedelta(minutes=cart_abandon_minutes(workspace))
    carts = repo.idle_open_carts(session, workspace_id, idle_before, limit)
    for cart in carts:
        message_id = f"cart-abandoned:{cart.id}:{cart.updated_at}"
        events_service.record_event(
            session,
            workspace_id,
            cart.contact_id,
            "Cart Abandoned",
            {
                "cart_id": cart.external_id,
                "value": major_number(cart.value_minor, cart.currency),
                "currency": cart.currency,
                "products": [
                    {
                        "sku": line.get("sku"),
                        "name": line.get("name"),
                        "category": line.get("category"),
                        "price": major_number(int(line.get("unit_price_minor", 0)), cart.currency),
                        "quantity": line.get("quantity"),
                    }
                    for line in cart.lines or []
                ],
                "last_activity_at": cart.last_activity_at.isoformat(),
            },
            now,
            message_id=message_id,
        )
        cart.status = "abandoned"
    session.flush()
    return len(carts)


def abandon_idle_carts(factory: sessionmaker[Session], now: datetime, *, chunk_size: int = CHUNK_SIZE) -> int:
    """Abandon idle open carts of every workspace, each chunk in its own transaction; returns how many."""
    with factory() as session:
        workspace_ids = repo.workspaces_with_open_carts(session)
        session.rollback()
    total = 0
    for workspace_id in workspace_ids:
        while True:
            with unit_of_work(factory) as session:
                done = abandon_idle_carts_chunk(session, workspace_id, now, limit=chunk_size)
            total += done
            if done < chunk_size:
                break
    return total


def run_abandoned_carts(factory: sessionmaker[Session]) -> int:
    """The periodic job: abandon carts idle as of now."""
    return abandon_idle_carts(factory, utcnow())
