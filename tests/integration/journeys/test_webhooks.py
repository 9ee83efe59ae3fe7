"""Webhook steps over real HTTP: signed calls, retries with backoff, the error path, and no holding up of others."""

from __future__ import annotations

import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from suppilo.db.base import utcnow
from suppilo.journeys import runner, service
from suppilo.journeys.models import EnrollmentStep
from suppilo.webhooks import verify_signature
from suppilo.workspaces.models import Workspace

from .support import contact, enrollments, install_templates, journey, timeline


class Receiver:
    """A local HTTP server answering with the next status of ``statuses`` (then 200) and recording the calls."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.calls: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def _definition(url: str) -> dict:
    return {
        "name": "Hook",
        "trigger": {"type": "manual"},
        "start": "call",
        "steps": {
            "call": {"type": "webhook", "url": url, "next": "ok", "on_error": "failed"},
            "ok": {"type": "update_contact", "add_tags": ["synced"]},
            "failed": {"type": "update_contact", "add_tags": ["sync-failed"]},
        },
    }


@pytest.fixture
def ws(session_factory, workspace):
    install_templates(session_factory, workspace.id)
    return workspace


def _enrol(session_factory, ws_id: int, jid: int, cid: int) -> None:
    with session_factory() as s:
        service.enrol_contacts(s, ws_id, jid, [cid], key="t")
        s.commit()


def test_signed_call_then_the_next_step(session_factory, ws):
    with Receiver([]) as rx:
        jid = journey(session_factory, ws.id, _definition(rx.url))
        cid = contact(session_factory, ws.id, "hook@example.com")
        _enrol(session_factory, ws.id, jid, cid)
        runner.run_due(session_factory)  # hands the enrollment to the webhook phase
        assert runner.run_webhooks(session_factory, allow_private=True) == 1
        runner.run_due(session_factory)
    headers, body = rx.calls[0]
    with session_factory() as s:
        secret = s.get(Workspace, ws.id).settings["webhook_secret"]
    assert verify_signature(headers["x-suppilo-signature"], body, secret)
    assert b'"email":"hook@example.com"' in body and headers["x-suppilo-idempotency-key"].startswith("journey:")
    row = enrollments(session_factory, jid)[0]
    assert row.status == "ended" and ("call", "webhook:ok") in timeline(session_factory, row.id)
    assert ("ok", "update_contact") in timeline(session_factory, row.id)


def test_failures_are_retried_with_backoff_then_take_the_error_path(session_factory, ws):
    from suppilo.webhooks.client import MAX_ATTEMPTS

    with Receiver([503] * MAX_ATTEMPTS) as rx:
        jid = journey(session_factory, ws.id, _definition(rx.url))
        cid = contact(session_factory, ws.id, "retry@example.com")
        _enrol(session_factory, ws.id, jid, cid)
        runner.run_due(session_factory)
        clock = [utcnow()]
        for attempt in range(1, MAX_ATTEMPTS + 1):
            assert runner.run_webhooks(session_factory, allow_private=True, now=lambda: clock[0]) == 1
            row = enrollments(session_factory, jid)[0]
            if attempt < MAX_ATTEMPTS:
                assert row.phase == "webhook" and row.due_at > clock[0]  # waits before the next try
                assert runner.run_webhooks(session_factory, allow_private=True, now=lambda: clock[0]) == 0
                clock[0] = row.due_at + timedelta(seconds=1)
        runner.run_due(session_factory, now=lambda: clock[0])
    assert len(rx.calls) == MAX_ATTEMPTS
    assert len({h["x-suppilo-idempotency-key"] for h, _ in rx.calls}) == 1
    row = enrollments(session_factory, jid)[0]
    steps = timeline(session_factory, row.id)
    assert ("failed", "update_contact") in steps and steps.count(("call", "webhook:retry")) == MAX_ATTEMPTS - 1


def test_a_refused_address_fails_at_once_without_holding_up_others(session_factory, ws):
    jid = journey(session_factory, ws.id, _definition("http://169.254.169.254/latest/meta-data"))
    a = contact(session_factory, ws.id, "a@example.com")
    _enrol(session_factory, ws.id, jid, a)
    runner.run_due(session_factory)
    assert runner.run_webhooks(session_factory) == 1  # the default: private ranges refused
    runner.run_due(session_factory)
    row = enrollments(session_factory, jid)[0]
    assert row.status == "ended" and ("failed", "update_contact") in timeline(session_factory, row.id)
    with session_factory() as s:
        detail = s.scalar(
            select(EnrollmentStep.detail).where(
                EnrollmentStep.enrollment_id == row.id, EnrollmentStep.outcome == "webhook:call"
            )
        )
    assert "169.254.169.254" in detail["error"]  # the reason is on the enrollment's timeline
