"""The demo workspace comes with an ICP, and every contact has a fit score after loading."""

from __future__ import annotations

import secrets
from collections import Counter
from datetime import date

from sqlalchemy import func, select

from suppilo.contacts.models import Contact
from suppilo.db.session import unit_of_work
from suppilo.demo import loader
from suppilo.demo.generator import DemoParams
from suppilo.scoring import service
from suppilo.scoring.models import ContactScore

PARAMS = DemoParams(seed=5, contacts=200, today=date(2025, 6, 1))


def test_demo_has_an_icp_and_fit_scores(db_engine, session_factory):
    with unit_of_work(session_factory) as s:
        setup = loader.setup_workspace(s, PARAMS, f"demo-{secrets.token_hex(4)}")
    result = loader.load_data(db_engine, setup.workspace_id, PARAMS)
    with unit_of_work(session_factory) as s:
        loader.mark_complete(s, setup.workspace_id, PARAMS, result)
    ws = setup.workspace_id
    with session_factory() as s:
        icps = service.list_icps(s, ws)
        assert [i.name for i in icps] == ["Wholesale partner"]
        contacts = s.scalar(select(func.count()).select_from(Contact).where(Contact.workspace_id == ws))
        grades = Counter(
            s.scalars(select(ContactScore.grade).where(ContactScore.workspace_id == ws, ContactScore.kind == "fit"))
        )
        assert sum(grades.values()) == contacts
        # wholesale buyers in the home markets grade well, consumers without a company do not
        assert grades["A"] + grades["B"] > 0 and grades["D"] > grades["A"]
        best = s.scalar(
            select(ContactScore.contact_id)
            .where(ContactScore.workspace_id == ws, ContactScore.kind == "fit")
            .order_by(ContactScore.score.desc(), ContactScore.contact_id)
            .limit(1)
        )
        fit = service.explain(s, ws, best)["scores"]["fit"]
        assert fit["icp_name"] == "Wholesale partner" and fit["grade"] == "A"
        assert {c["criterion"] for c in fit["criteria"]} == {
            "industries",
            "employees",
            "location",
            "job_titles",
            "seniority",
        }
