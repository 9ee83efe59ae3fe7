"""The analytics API and the ``suppilo report`` CLI: imports, reports, errors, tenant isolation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.config import get_settings

from .builders import contact

RATES = "date,currency,rate_to_eur\n2025-01-01,SEK,0.08\n"
SPEND = (
    "date,channel,campaign,amount,currency\n"
    "2025-03-10,paid_search,spring,100.00,EUR\n2025-03-11,paid_search,,1000,SEK\n"
)


def _load(session, ws: int) -> None:
    contact(
        session,
        ws,
        "paid_search",
        touches=[("paid_search", "2025-03-01")],
        stages=[("interest", "2025-03-02"), ("customer", "2025-03-10")],
        orders=[("2025-03-10", 100_000, "SEK")],
    )
    contact(session, ws, "paid_search", touches=[("paid_search", "2025-03-03")], stages=[("interest", "2025-03-03")])
    session.commit()


def test_api_spend_and_rates_flow(client, session, workspace, other_workspace) -> None:
    h = workspace.auth("write")
    r = client.post("/api/v1/rates/import", files={"file": ("r.csv", RATES, "text/csv")}, headers=h)
    assert r.status_code == 200 and r.json()["imported"] == 1
    r = client.post("/api/v1/spend/import", files={"file": ("s.csv", SPEND, "text/csv")}, headers=h)
    assert r.json() == {"imported": 2, "errors": []}
    r = client.post(
        "/api/v1/spend",
        json={"date": "2025-03-12", "channel": "paid_search", "amount_minor": 1_000, "currency": "eur"},
        headers=h,
    )
    assert r.status_code == 201 and r.json()["currency"] == "EUR"
    _load(session, workspace.id)
    q = {"from": "2025-03-01", "to": "2025-03-31"}
    r = client.get("/api/v1/reports/spend", params=q, headers=workspace.auth("read"))
    assert r.status_code == 200, r.text
    row = r.json()["rows"][0]
    # 100 EUR + 1000 SEK * 0.08 + 10 EUR = 190 EUR; two leads; one customer worth 80 EUR
    assert (row["channel"], row["spend_minor"], row["leads"], row["new_customers"]) == ("paid_search", 19_000, 2, 1)
    assert row["cost_per_lead_minor"] == 9_500 and row["cac_minor"] == 19_000 and row["roas"] == pytest.approx(8 / 19)
    r = client.get("/api/v1/rates", headers=workspace.auth("read"))
    assert r.json()[0]["base"] == "SEK" and r.json()[0]["quote"] == "EUR"
    # The other workspace sees none of it.
    other = client.get("/api/v1/reports/spend", params=q, headers=other_workspace.auth("read")).json()
    assert other["rows"] == [] and other["insufficient_data"]
    assert client.get("/api/v1/rates", headers=other_workspace.auth("read")).json() == []
    # Read keys cannot write.
    r = client.post(
        "/api/v1/spend",
        json={"date": "2025-03-12", "channel": "x", "amount_minor": 1, "currency": "EUR"},
        headers=workspace.auth("read"),
    )
    assert r.status_code == 403


def test_api_missing_rate_is_named(client, workspace) -> None:
    h = workspace.auth("write")
    client.post(
        "/api/v1/spend", json={"date": "2025-03-12", "channel": "tv", "amount_minor": 1, "currency": "NOK"}, headers=h
    )
    r = client.get("/api/v1/reports/spend", params={"from": "2025-03-01", "to": "2025-03-31"}, headers=h)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "missing_exchange_rate" and "NOK->EUR on or before 2025-03-12" in err["message"]


def test_api_reports_answer_on_empty_data(client, workspace) -> None:
    h = workspace.auth("read")
    q = {"from": "2025-03-01", "to": "2025-03-31"}
    funnel = client.get("/api/v1/reports/funnel", params={**q, "group_by": "country"}, headers=h).json()
    assert funnel["all"]["insufficient_data"] and funnel["all"]["reason"]
    att = client.get("/api/v1/reports/attribution", params={**q, "level": "campaign"}, headers=h).json()
    assert att["insufficient_data"] and att["conversions"] == 0
    ef = client.post(
        "/api/v1/reports/event-funnel", json={"steps": ["page:/", "Signed Up"], "window_days": 7, **q}, headers=h
    )
    assert ef.status_code == 200 and ef.json()["insufficient_data"]
    assert client.get("/api/v1/reports/cohorts", params={"by": "month"}, headers=h).json()["insufficient_data"]
    assert client.get("/api/v1/reports/clv", headers=h).status_code == 404
    fit = client.post("/api/v1/reports/clv/fit", json={}, headers=workspace.auth("write")).json()
    assert fit["insufficient_data"] and fit["customers"] == 0
    assert client.get("/api/v1/reports/clv", headers=h).json()["customers"] == 0
    bad = client.get("/api/v1/reports/spend", params={"from": "2025-04-01", "to": "2025-03-01"}, headers=h)
    assert bad.status_code == 422 and bad.json()["error"]["path"] == "from"


def test_api_experiment_and_sample_size(client, workspace) -> None:
    h = workspace.auth("read")
    body = {
        "arms": [{"name": "A", "conversions": 100, "trials": 1000}, {"name": "B", "conversions": 130, "trials": 1000}],
        "control": "A",
    }
    r = client.post("/api/v1/reports/experiment", json=body, headers=h)
    assert r.status_code == 200 and r.json()["comparisons"][0]["two_proportion"]["significant"] is True
    looked = {
        "arms": [
            {"name": "A", "conversions": 100, "trials": 1000, "history": [{"conversions": 10, "trials": 100}]},
            {"name": "B", "conversions": 130, "trials": 1000, "history": [{"conversions": 14, "trials": 100}]},
        ],
        "control": "A",
    }
    r = client.post("/api/v1/reports/experiment", json=looked, headers=h)
    assert len(r.json()["comparisons"][0]["sequential"]["p_values"]) == 2
    r = client.post("/api/v1/reports/experiment", json={**body, "control": "Z"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["path"] == "control"
    r = client.get("/api/v1/reports/sample-size", params={"baseline": 0.1, "mde": 0.02}, headers=h)
    assert r.json()["per_arm"] == 3841
    # an effect that would move the rate past 100 % is refused on its field, with a code
    r = client.get("/api/v1/reports/sample-size", params={"baseline": 0.5, "mde": 0.6}, headers=h)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["path"] == "mde" and err["code"] == "effect_out_of_range" and "1.1" in err["message"]
    r = client.get("/api/v1/reports/sample-size", params={"baseline": 0.2, "mde": 0.0}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "effect_out_of_range"
    r = client.get("/api/v1/reports/sample-size", params={"baseline": 0.2, "mde": -0.5, "relative": True}, headers=h)
    assert r.json()["per_arm"] > 0  # 20 % -> 10 %: a fall is detectable too


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_reports(cli: CliRunner, session, workspace, tmp_path: Path) -> None:
    from suppilo.analytics import service

    service.import_rates_csv(session, workspace.id, RATES)
    service.import_spend_csv(session, workspace.id, SPEND)
    _load(session, workspace.id)
    args = ["-w", workspace.slug, "--from", "2025-03-01", "--to", "2025-03-31"]
    res = cli.invoke(cli_app, ["report", "spend", *args, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["rows"][0]["spend_minor"] == 18_000
    out = tmp_path / "spend.csv"
    res = cli.invoke(cli_app, ["report", "spend", *args, "--csv", str(out)])
    assert res.exit_code == 0 and "paid_search" in res.stdout
    assert out.read_text().splitlines()[1].startswith("paid_search,18000,2,1,1,8000,9000,18000,18000")
    res = cli.invoke(cli_app, ["report", "attribution", *args])
    assert res.exit_code == 0 and "markov" in res.stdout
    res = cli.invoke(cli_app, ["report", "funnel", *args, "--group-by", "channel"])
    assert res.exit_code == 0 and "insufficient data" in res.output
    res = cli.invoke(cli_app, ["report", "cohorts", "-w", workspace.slug, "--to", "2025-04-30", "--json"])
    assert json.loads(res.stdout)["cohorts"][0]["cohort"] == "2025-03"
    res = cli.invoke(cli_app, ["report", "clv", "-w", workspace.slug])
    assert res.exit_code == 1 and "no CLV fit yet" in res.output
    res = cli.invoke(cli_app, ["report", "clv", "-w", workspace.slug, "--fit"])
    assert res.exit_code == 0 and "historical_average" in res.output
