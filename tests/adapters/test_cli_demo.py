"""`suppilo demo`: migrates a fresh SQLite data dir, loads, prints credentials; a restart reuses the workspace."""

from __future__ import annotations

import json
import stat

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings
from suppilo.contacts.models import Contact
from suppilo.db.session import make_engine, make_session_factory
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.models import Workspace


@pytest.fixture
def demo_env(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.delenv("SUPPILO_DATABASE_URL", raising=False)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner(), tmp_path
    get_settings.cache_clear()


def _run(runner: CliRunner, *args: str):
    res = runner.invoke(cli_app, ["demo", "--no-serve", "--json", "--today", "2025-06-01", *args])
    return res


def test_demo_loads_prints_credentials_and_reuses_on_restart(demo_env) -> None:
    runner, data_dir = demo_env
    res = _run(runner, "--contacts", "150", "--seed", "4")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["reused"] is False and out["workspace"] == "demo"
    assert out["counts"]["contacts"] == 450 and out["counts"]["companies"] == 7
    assert out["counts"]["events"] > 1000 and out["counts"]["orders"] > 10
    assert out["admin_key"].startswith("sk_") and out["write_key"].startswith("wk_")
    assert {u["role"] for u in out["users"]} == {"admin", "marketer", "sales", "analyst"}

    cred = data_dir / "demo-credentials.json"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert json.loads(cred.read_text())["demo"]["admin_key"] == out["admin_key"]

    engine = make_engine(f"sqlite:///{data_dir / 'suppilo.sqlite3'}")
    factory = make_session_factory(engine)
    with factory() as s:
        principal = workspaces_service.authenticate_key(s, out["admin_key"])
        assert principal is not None and principal.workspace_id == out["workspace_id"] and principal.allows("admin")
        tracker = workspaces_service.authenticate_key(s, out["write_key"])
        assert tracker is not None and tracker.allows("track") and not tracker.allows("read")
        ws = s.get(Workspace, out["workspace_id"])
        assert ws is not None and ws.currency == "EUR" and ws.timezone == "Europe/Helsinki" and ws.country == "FI"
        assert ws.site_domains == ["pohjola-outdoor.example"] and ws.city == "Helsinki"
        members = workspaces_service.list_members(s, ws.id)
        admin = next(u for u, role in members if role == "admin")
        assert admin.password_hash and admin.password_hash.startswith("$argon2")
        from argon2 import PasswordHasher

        password = next(u["password"] for u in out["users"] if u["role"] == "admin")
        assert PasswordHasher().verify(admin.password_hash, password)

    # the playbooks are on, and the fresh activity starts them at once: welcome mails, thank-yous, sales tasks
    from suppilo.demo.journeys import PLAYBOOKS, SIGN_UPS
    from suppilo.journeys import runner as journey_runner
    from suppilo.journeys import triggers
    from suppilo.journeys.models import Journey
    from suppilo.messaging.outbox_models import OutboxMessage

    triggers.run_scanners(factory)
    journey_runner.run_due(factory)
    with factory() as s:
        journeys = list(s.scalars(select(Journey).where(Journey.workspace_id == out["workspace_id"])))
        assert {j.playbook for j in journeys} == set(PLAYBOOKS) and {j.status for j in journeys} == {"active"}
        queued = list(s.scalars(select(OutboxMessage.template_key).where(OutboxMessage.workspace_id == ws.id)))
        assert queued.count("welcome") == len(SIGN_UPS)
        assert queued.count("order_thank_you") >= 1
        # retention: points earned, referrals, an NPS survey with answers, reviews, recommendations
        from suppilo.advocacy.models import Referral, Review, SurveyResponse
        from suppilo.loyalty.models import LoyaltyEntry
        from suppilo.recommendations.models import RecommendationRule

        for model in (LoyaltyEntry, Referral, SurveyResponse, Review, RecommendationRule):
            assert s.scalar(select(func.count()).select_from(model).where(model.workspace_id == ws.id)) > 0, model
        assert queued.count("nps_survey") >= 1
        from suppilo.demo.journeys import SEGMENTS
        from suppilo.segments.models import Segment

        segments = {g.name: g.member_count for g in s.scalars(select(Segment).where(Segment.workspace_id == ws.id))}
        assert set(segments) >= {name for name, _, _ in SEGMENTS}
        assert segments["Nordic newsletter"] > 0

    # a restart with the same parameters reuses everything, keys included
    res = _run(runner, "--contacts", "150", "--seed", "4")
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert again["reused"] is True and again["workspace_id"] == out["workspace_id"]
    assert again["admin_key"] == out["admin_key"] and again["counts"] == out["counts"]
    with factory() as s:
        assert len(workspaces_service.list_api_keys(s, out["workspace_id"])) == 2

    # other parameters need --force, which rebuilds
    res = _run(runner, "--contacts", "100", "--seed", "4")
    assert res.exit_code == 1
    res = _run(runner, "--contacts", "100", "--seed", "4", "--force")
    assert res.exit_code == 0, res.output
    rebuilt = json.loads(res.stdout)
    assert rebuilt["reused"] is False and rebuilt["params"]["contacts"] == 100
    assert rebuilt["admin_key"] != out["admin_key"]
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Workspace)) == 1
        assert workspaces_service.authenticate_key(s, out["admin_key"]) is None
        known = s.scalar(
            select(func.count()).where(Contact.workspace_id == rebuilt["workspace_id"], Contact.is_anonymous.is_(False))
        )
        assert known == 100 + len(SIGN_UPS)  # the demo's live sign-ups come on top
        assert s.scalar(select(func.count()).select_from(Contact)) == 300 + len(SIGN_UPS)
    engine.dispose()


def test_bad_day_is_refused(demo_env) -> None:
    runner, _ = demo_env
    res = runner.invoke(cli_app, ["demo", "--no-serve", "--today", "June 1st"])
    assert res.exit_code == 1
