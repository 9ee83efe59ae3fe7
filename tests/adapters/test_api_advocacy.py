"""Advocacy over HTTP: referral links, attribution through a form and a landing URL, rewards once; survey links
answered by one click (forged ones write nothing); reviews moderated and exported."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import uuid

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app as cli_app
from suppilo.advocacy.models import Referral, ReferralReward, SurveyResponse
from suppilo.advocacy.tasks import run_advocacy
from suppilo.config import get_settings
from suppilo.contacts.models import Contact, ContactTag
from suppilo.events.models import Event
from suppilo.messaging import service as messaging_service
from suppilo.messaging.outbox_models import OutboxMessage
from suppilo.offers import codes

API = "/api/v1"


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def _contact(client, ws, email: str, **extra) -> int:
    res = client.post(f"{API}/contacts", json={"email": email, **extra}, headers=ws.auth("write"))
    assert res.status_code == 201, res.text
    return int(res.json()["id"])


def _form(client, ws) -> str:
    body = {
        "slug": "signup",
        "name": "Sign-up",
        "fields": [
            {"name": "email", "label": "Email", "type": "email", "required": True, "maps_to": "email"},
            {"name": "first_name", "label": "First name", "type": "text", "maps_to": "first_name"},
        ],
    }
    res = client.post(f"{API}/forms", json=body, headers=ws.auth("write"))
    assert res.status_code == 201, res.text
    return str(res.json()["public_key"])


def _programme(client, ws) -> None:
    offer = {"key": "friend-10", "name": "10 € off", "kind": "fixed", "amount_minor": 1000, "currency": "EUR"}
    assert client.post(f"{API}/offers", json=offer, headers=ws.auth("write")).status_code == 201
    loyalty = {"enabled": True, "bonus_events": {"referral": 400, "review": 20}}
    assert client.put(f"{API}/loyalty/program", json=loyalty, headers=ws.auth("admin")).status_code == 200
    program = {
        "reward_stage": "customer",
        "referrer_reward": {"kind": "points"},
        "referred_reward": {"kind": "coupon", "offer_key": "friend-10"},
    }
    assert client.put(f"{API}/referrals/program", json=program, headers=ws.auth("write")).status_code == 403
    res = client.put(f"{API}/referrals/program", json=program, headers=ws.auth("admin"))
    assert res.status_code == 200, res.text
    bad = client.put(f"{API}/referrals/program", json={**program, "reward_stage": "moon"}, headers=ws.auth("admin"))
    assert (bad.status_code, bad.json()["error"]["path"]) == (422, "reward_stage")


def _order(client, ws, contact_id: int, ext: str) -> None:
    order = {
        "external_id": ext,
        "contact_id": contact_id,
        "placed_at": "2030-01-01T10:00:00+00:00",
        "currency": "EUR",
        "total_minor": 5000,
    }
    assert client.post(f"{API}/orders", json=order, headers=ws.auth("write")).status_code == 201


def test_referral_link_form_and_landing_url_attribution_and_one_reward(client, workspace, session_factory) -> None:
    ws = workspace
    _programme(client, ws)
    advocate = _contact(client, ws, "anna.korhonen@gmail.com", first_name="Anna")
    res = client.post(f"{API}/referrals/codes/{advocate}", headers=ws.auth("write"))
    assert res.status_code == 200
    code = res.json()["code"]
    assert res.json()["url"] == f"http://testserver/r/{code}" and codes.is_valid(code)
    assert client.post(f"{API}/referrals/codes/{advocate}", headers=ws.auth("write")).json()["code"] == code

    # the personal link sends the visitor to the website with ?ref= and referral UTM tags
    hop = client.get(f"/r/{codes.display(code).lower()}", follow_redirects=False)
    assert hop.status_code == 302
    landing = hop.headers["location"]
    assert landing.startswith("https://shop.example.fi/?ref=" + code) and "utm_medium=referral" in landing
    assert client.get("/r/AAAA-BBBB-CCCC", follow_redirects=False).status_code == 404

    # (a) a form with a `ref` field: a new contact is attributed; the advocate's own gmail variant is refused
    key = _form(client, ws)
    assert client.post(f"/f/{key}", data={"email": "friend@example.fi", "ref": code}).status_code in (200, 303)
    assert client.post(f"/f/{key}", data={"email": "a.nnakorhonen+x@googlemail.com", "ref": code}).status_code in (
        200,
        303,
    )
    # (b) the snippet's page view of the landing URL, later the same visitor signs up through the form
    anon = f"anon-{uuid.uuid4()}"
    page = {
        "type": "page",
        "messageId": str(uuid.uuid4()),
        "anonymousId": anon,
        "name": "Home",
        "properties": {"url": landing},
        "context": {"page": {"url": landing, "referrer": ""}},
        "timestamp": "2030-01-01T09:00:00Z",
    }
    assert client.post("/v1/batch", json={"batch": [page]}, headers=_basic(ws.track_key)).status_code == 200
    run_advocacy(session_factory)
    form_page = f"https://shop.example.fi/join?ref={code}"
    client.post(f"/f/{key}", data={"email": "visitor@example.fi", "suppilo_anonymous_id": anon, "page_url": form_page})
    listed = client.get(f"{API}/referrals", headers=ws.auth("read")).json()
    by_source = {(r["source"], r["status"], r["reason"]) for r in listed}
    assert ("form", "attributed", None) in by_source
    assert ("form", "refused", "same_email") in by_source
    assert ("landing_url", "attributed", None) in by_source
    with session_factory() as s:
        friend = s.scalar(select(Contact.id).where(Contact.workspace_id == ws.id, Contact.email == "friend@example.fi"))
        visitor = s.scalar(
            select(Contact.id).where(Contact.workspace_id == ws.id, Contact.email == "visitor@example.fi")
        )
    assert {r["referred_id"] for r in listed if r["status"] == "attributed" and r["source"] == "form"} == {friend}

    # both referred contacts buy: each referral pays once, however often the consumer runs
    _order(client, ws, friend, "R-1")
    _order(client, ws, visitor, "R-2")
    run_advocacy(session_factory)
    run_advocacy(session_factory)
    with session_factory() as s:
        statuses = s.scalars(
            select(Referral.status).where(Referral.workspace_id == ws.id, Referral.status != "refused")
        ).all()
        assert sorted(statuses) == ["converted", "converted"]
        rewards = s.scalars(select(ReferralReward).where(ReferralReward.workspace_id == ws.id)).all()
        assert sorted((r.recipient, r.contact_id) for r in rewards) == sorted(
            [("referrer", advocate), ("referrer", advocate), ("referred", friend), ("referred", visitor)]
        )
    balance = client.get(f"{API}/loyalty/contacts/{advocate}", headers=ws.auth("read")).json()
    assert balance["points"] == 800
    board = client.get(f"{API}/referrals/leaderboard", headers=ws.auth("read")).json()
    assert [(b["contact_id"], b["referrals"], b["converted"], b["refused"], b["reward_points"]) for b in board] == [
        (advocate, 2, 2, 1, 800)
    ]
    coupons = client.get(f"{API}/coupons?contact_id={friend}", headers=ws.auth("read")).json()
    assert len(coupons["items"] if isinstance(coupons, dict) else coupons) == 1


def test_attribute_api_refusals_errors_and_isolation(client, workspace, other_workspace) -> None:
    ws = workspace
    owner = _contact(client, ws, "owner@example.fi")
    code = client.post(f"{API}/referrals/codes/{owner}", headers=ws.auth("write")).json()["code"]
    res = client.post(f"{API}/referrals/attribute", json={"code": code, "contact_id": owner}, headers=ws.auth("write"))
    assert res.status_code == 200 and (res.json()["status"], res.json()["reason"]) == ("refused", "self_referral")
    typo = ("3" if code[0] != "3" else "4") + code[1:]
    res = client.post(f"{API}/referrals/attribute", json={"code": typo, "contact_id": owner}, headers=ws.auth("write"))
    assert (res.status_code, res.json()["error"]["code"], res.json()["error"]["path"]) == (422, "bad_checksum", "code")
    stranger = _contact(client, other_workspace, "x@example.fi")
    res = client.post(
        f"{API}/referrals/attribute", json={"code": code, "contact_id": stranger}, headers=other_workspace.auth("write")
    )
    assert res.status_code == 404
    res = client.post(f"{API}/referrals/attribute", json={"code": code, "contact_id": owner}, headers=ws.auth("read"))
    assert res.status_code == 403
    assert client.get(f"{API}/referrals", headers=other_workspace.auth("read")).json() == []


def _survey_links(client, ws, session_factory, contact_id: int) -> list[str]:
    with session_factory() as s:
        row = s.scalar(
            select(OutboxMessage).where(OutboxMessage.workspace_id == ws.id, OutboxMessage.contact_id == contact_id)
        )
        mail = messaging_service.render_for_contact(s, ws.id, row.template_key, contact_id, extra=row.extra)
    return [u.replace("&amp;", "&") for u in re.findall(r'href="http://testserver(/s/[^"]+)"', mail.html)]


def test_survey_answered_by_one_click_forged_links_write_nothing(
    client, workspace, other_workspace, session_factory
) -> None:
    ws = workspace
    other_ws_headers = other_workspace.auth("read")
    promoter = _contact(client, ws, "fan@example.fi", first_name="Fanni", last_name="Nieminen")
    critic = _contact(client, ws, "critic@example.fi")
    res = client.post(f"{API}/surveys", json={"name": "NPS 2030", "kind": "nps"}, headers=ws.auth("write"))
    assert res.status_code == 201 and res.json()["template_key"] == "nps_survey"
    sid = res.json()["id"]
    sent = client.post(f"{API}/surveys/{sid}/send", json={"contact_ids": [promoter, critic]}, headers=ws.auth("write"))
    assert sent.json() == {"queued": 2, "skipped": {}}

    links = _survey_links(client, ws, session_factory, promoter)
    assert len(links) == 11 and links[10].endswith("?score=10")
    # a mail scanner fetching every link records nothing: it gets a confirmation button instead
    for link in links:
        scan = client.get(link, headers={"User-Agent": "Mozilla/5.0 (compatible; Proofpoint URL Defense)"})
        assert scan.status_code == 200 and "Confirm your answer" in scan.text
    with session_factory() as s:
        assert s.scalar(select(func.count(SurveyResponse.id)).where(SurveyResponse.workspace_id == ws.id)) == 0
    page = client.get(links[10])
    assert page.status_code == 200 and "Thank you" in page.text and "<textarea" in page.text
    again = client.get(links[2])  # a second click keeps the first answer
    assert again.status_code == 200 and "already answered 10" in again.text

    # forged and altered links: 404 with a clear message, nothing written
    token = links[10].split("/s/")[1].split("?")[0]
    head, mac = token.split(".")
    altered = f"/s/{head}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}?score=10"
    for bad in (altered, "/s/forged.token?score=9", links[10].replace("score=10", "score=11")):
        res = client.get(bad)
        assert res.status_code == 404 and "not valid" in res.text and "Nothing was recorded" in res.text
        assert client.post(bad, data={"comment": "x", "review_rating": "5"}).status_code == 404

    # the thank-you page's form: a comment and a review (pending moderation)
    res = client.post(
        links[10], data={"comment": "Lovely shop", "review_rating": "5", "review_text": "Great <b>tent</b>"}
    )
    assert res.status_code == 200 and "review" in res.text
    critic_links = _survey_links(client, ws, session_factory, critic)
    confirmed = client.post(critic_links[2])  # the scanner page's "Send my answer" button
    assert confirmed.status_code == 200 and "Thank you" in confirmed.text
    with session_factory() as s:
        answers = {
            r.contact_id: (r.score, r.comment)
            for r in s.scalars(select(SurveyResponse).where(SurveyResponse.workspace_id == ws.id))
        }
        assert answers == {promoter: (10, "Lovely shop"), critic: (2, None)}
        answered = s.scalars(select(Event).where(Event.workspace_id == ws.id, Event.name == "Survey Answered")).all()
        assert sorted(e.properties["score"] for e in answered) == [2, 10]
        tags = s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == promoter)).all()
        assert "promoter" in tags
        assert s.get(Contact, promoter).lifecycle_stage == "advocate"
    tasks = client.get(f"{API}/tasks", headers=ws.auth("read")).json()
    assert [(t["contact_id"], t["kind"]) for t in tasks] == [(critic, "call")]
    assert tasks[0]["title"].startswith("NPS 2/10 from critic@example.fi")
    answers = client.get(f"{API}/surveys/{sid}/responses", headers=ws.auth("read")).json()
    assert sorted((a["contact_id"], a["score"], a["comment"]) for a in answers) == sorted(
        [(promoter, 10, "Lovely shop"), (critic, 2, None)]
    )
    assert client.get(f"{API}/surveys/{sid}/responses", headers=other_ws_headers).status_code == 404
    results = client.get(f"{API}/surveys/{sid}/results?period=day", headers=ws.auth("read")).json()
    assert (results["sent"], results["responses"], results["response_rate"], results["nps"]) == (2, 2, 100.0, 0.0)
    reviews = client.get(f"{API}/reviews?status=pending", headers=ws.auth("read")).json()
    assert [(r["rating"], r["author_name"], r["source"]) for r in reviews] == [(5, "Fanni N.", "survey")]


def test_reviews_api_moderation_and_exports(client, workspace, other_workspace) -> None:
    ws = workspace
    anna = _contact(client, ws, "anna@example.fi", first_name="Anna", last_name="Korhonen")
    body = {"contact_id": anna, "rating": 4, "text": '=1+1, "quoted"'}
    res = client.post(f"{API}/reviews", json=body, headers=ws.auth("write"))
    assert res.status_code == 201 and res.json()["status"] == "pending"
    rid = res.json()["id"]
    assert client.post(f"{API}/reviews", json={**body, "rating": 6}, headers=ws.auth("write")).status_code == 422
    assert client.post(f"{API}/reviews/{rid}/approve", headers=other_workspace.auth("write")).status_code == 404
    res = client.post(f"{API}/reviews/{rid}/reject", json={}, headers=ws.auth("write"))
    assert (res.status_code, res.json()["error"]["path"]) == (422, "reason")
    assert client.post(f"{API}/reviews/{rid}/approve", headers=ws.auth("write")).json()["status"] == "approved"
    exported = client.get(f"{API}/reviews/export?format=json", headers=ws.auth("read")).json()
    assert [(r["author"], r["text"]) for r in exported["reviews"]] == [("Anna K.", '=1+1, "quoted"')]
    res = client.get(f"{API}/reviews/export?format=csv", headers=ws.auth("read"))
    assert res.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(res.text)))
    assert [(r["author"], r["text"]) for r in rows] == [("Anna K.", '\'=1+1, "quoted"')]
    assert client.get(f"{API}/reviews/export?format=csv", headers=other_workspace.auth("read")).text.count("\n") == 1
    with_count = client.get(f"{API}/reviews", headers=ws.auth("read")).json()
    assert len(with_count) == 1


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, db_engine, tmp_path):
    monkeypatch.setenv("SUPPILO_DATABASE_URL", database_url)
    monkeypatch.setenv("SUPPILO_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SUPPILO_SECRET_KEY", "cli-secret-" + "z" * 32)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_cli_referrals_surveys_and_reviews(cli_env: CliRunner, client, workspace, tmp_path) -> None:
    ws = workspace
    run = cli_env.invoke
    anna = _contact(client, ws, "anna.cli@example.fi", first_name="Anna", last_name="Korhonen")
    bo = _contact(client, ws, "bo.cli@example.fi")
    res = run(cli_app, ["referrals", "code", str(anna), "--workspace", ws.slug, "--json"])
    assert res.exit_code == 0, res.output
    code = json.loads(res.output)["code"]
    res = run(cli_app, ["referrals", "attribute", code, str(anna), "--workspace", ws.slug])
    assert res.exit_code == 0 and "refused: self_referral" in res.output
    res = run(cli_app, ["referrals", "attribute", code.lower(), str(bo), "--workspace", ws.slug, "--json"])
    assert json.loads(res.output)["status"] == "attributed"
    res = run(cli_app, ["referrals", "leaderboard", "--workspace", ws.slug, "--json"])
    assert [(r["contact_id"], r["referrals"], r["refused"]) for r in json.loads(res.output)] == [(anna, 1, 1)]

    res = run(cli_app, ["surveys", "create", "Quarterly NPS", "--workspace", ws.slug, "--json"])
    sid = json.loads(res.output)["id"]
    res = run(cli_app, ["surveys", "send", str(sid), "-c", str(anna), "-c", str(bo), "--workspace", ws.slug])
    assert res.exit_code == 0 and "2 queued" in res.output
    res = run(cli_app, ["surveys", "results", str(sid), "--workspace", ws.slug, "--json"])
    assert (json.loads(res.output)["sent"], json.loads(res.output)["nps"]) == (2, None)
    assert run(cli_app, ["surveys", "create", "CSAT", "--kind", "csat", "--workspace", ws.slug]).exit_code == 1

    review = client.post(
        f"{API}/reviews", json={"contact_id": anna, "rating": 5, "text": "+tent"}, headers=ws.auth("write")
    ).json()
    res = run(cli_app, ["reviews", "list", "--workspace", ws.slug, "--json"])
    assert [r["id"] for r in json.loads(res.output)] == [review["id"]]
    assert run(cli_app, ["reviews", "approve", str(review["id"]), "--workspace", ws.slug]).exit_code == 0
    out_file = tmp_path / "reviews.csv"
    res = run(cli_app, ["reviews", "export", "--format", "csv", "--out", str(out_file), "--workspace", ws.slug])
    assert res.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out_file.read_text(encoding="utf-8"))))
    assert [(r["author"], r["text"]) for r in rows] == [("Anna K.", "'+tent")]
    res = run(cli_app, ["reviews", "reject", str(review["id"]), "--reason", "", "--workspace", ws.slug])
    assert res.exit_code == 1 and "reason_required" in res.output
