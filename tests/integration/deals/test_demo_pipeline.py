"""The demo workspace's pipeline: open, won and lost deals with histories, owners of the sales role, BANT,
proposals, tasks and hand-offs; deterministic; the forecast and the board have something to show."""

from __future__ import annotations

import itertools
import secrets
from datetime import date

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from suppilo.contacts.models import Contact
from suppilo.db.session import unit_of_work
from suppilo.deals import assignment
from suppilo.deals import forecast as deals_forecast
from suppilo.deals.models import Deal, DealStageChange, PipelineStage, Proposal, Task
from suppilo.demo import loader
from suppilo.demo.generator import DemoParams
from suppilo.workspaces.models import Membership

PARAMS = DemoParams(seed=5, contacts=600, today=date(2025, 6, 1))


def _build(engine: Engine, factory: sessionmaker[Session]) -> int:
    with unit_of_work(factory) as s:
        setup = loader.setup_workspace(s, PARAMS, f"demo-{secrets.token_hex(4)}")
    result = loader.load_data(engine, setup.workspace_id, PARAMS)
    with unit_of_work(factory) as s:
        loader.mark_complete(s, setup.workspace_id, PARAMS, result)
    return setup.workspace_id


@pytest.fixture(scope="module")
def demo_ws(db_engine: Engine, session_factory: sessionmaker[Session]) -> int:
    return _build(db_engine, session_factory)


def test_demo_pipeline_is_alive(demo_ws: int, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s:
        deals = list(s.scalars(select(Deal).where(Deal.workspace_id == demo_ws)))
        statuses = {d.status for d in deals}
        assert statuses == {"open", "won", "lost"}, statuses
        sales = set(
            s.scalars(select(Membership.user_id).where(Membership.workspace_id == demo_ws, Membership.role == "sales"))
        )
        assert {d.owner_id for d in deals} <= sales
        stages = {st.id: st for st in s.scalars(select(PipelineStage).where(PipelineStage.workspace_id == demo_ws))}
        open_keys = {stages[d.stage_id].key for d in deals if d.status == "open"}
        assert len(open_keys) >= 3, open_keys
        for d in deals:
            assert d.amount_minor and d.budget_minor and d.authority and d.need and d.timeline
            history = list(
                s.scalars(
                    select(DealStageChange)
                    .where(DealStageChange.workspace_id == demo_ws, DealStageChange.deal_id == d.id)
                    .order_by(DealStageChange.changed_at, DealStageChange.id)
                )
            )
            assert history[0].from_stage_id is None and history[-1].to_stage_id == d.stage_id
            assert all(a.changed_at <= b.changed_at for a, b in itertools.pairwise(history))
            assert all(b.from_stage_id == a.to_stage_id for a, b in itertools.pairwise(history))
            if d.status == "lost":
                assert d.lost_reason and history[-1].reason == d.lost_reason
            if d.status == "won":
                assert d.won_at is not None and d.won_at <= PARAMS.anchor
        # A deal's contact is in decision (open) or past it.
        contact_stages = dict(
            s.execute(select(Contact.id, Contact.lifecycle_stage).where(Contact.workspace_id == demo_ws)).all()
        )
        assert all(contact_stages[d.contact_id] != "consideration" for d in deals)
        proposals = list(s.scalars(select(Proposal).where(Proposal.workspace_id == demo_ws)))
        assert {"accepted", "sent"} <= {p.status for p in proposals}
        assert all(p.total_minor == p.subtotal_minor - p.discount_minor > 0 for p in proposals)
        tasks = list(s.scalars(select(Task).where(Task.workspace_id == demo_ws)))
        assert any(t.handoff_at is not None for t in tasks)
        open_follow_ups = [t for t in tasks if t.done_at is None and t.handoff_at is None]
        assert any(t.due_at < PARAMS.anchor for t in open_follow_ups)  # some are overdue
        assert any(t.due_at > PARAMS.anchor for t in open_follow_ups)
        handoffs = assignment.list_handoffs(s, demo_ws, now=PARAMS.anchor)
        assert {state for _, state, _, _ in handoffs} & {"met", "late"}
        assert assignment.get_settings(s, demo_ws).assign_on_stage == "decision"
        fc = deals_forecast.workspace_forecast(s, demo_ws, group_by="team")
        assert [g.key for g in fc.groups] == ["Wholesale"]
        assert fc.groups[0].totals[0].weighted_minor > 0


def test_demo_pipeline_is_deterministic(
    demo_ws: int, db_engine: Engine, session_factory: sessionmaker[Session]
) -> None:
    def shape(ws: int) -> list[tuple[object, ...]]:
        with session_factory() as s:
            return [
                tuple(r)
                for r in s.execute(
                    select(Deal.name, Deal.status, Deal.amount_minor, Deal.created_at, PipelineStage.key)
                    .join(PipelineStage, PipelineStage.id == Deal.stage_id)
                    .where(Deal.workspace_id == ws)
                    .order_by(Deal.created_at, Deal.name)
                )
            ]

    again = _build(db_engine, session_factory)
    assert shape(again) == shape(demo_ws)
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(Deal).where(Deal.workspace_id == demo_ws)) > 20
