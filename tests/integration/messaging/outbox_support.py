"""Test support for the outbox tests: a real aiosmtpd server that records what it accepts, contacts, senders."""

from __future__ import annotations

import email
import email.policy
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy.orm import Session, sessionmaker

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.messaging.sender import Sender, SenderConfig
from suppilo.messaging.transport import SmtpConfig, SmtpTransport

SECRET = "test-secret-" + "x" * 32
PUBLIC_URL = "https://mail.example.test"


@dataclass
class Received:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class SinkHandler:
    """Accepts everything except recipients listed in ``replies`` (address -> SMTP reply at RCPT)."""

    received: list[Received] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        reply = self.replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpSink:
    """A real SMTP server on a free local port."""

    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=free_port())

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def by_message_id(self) -> Counter[str]:
        return Counter(str(r.message["Message-ID"]) for r in self.received)


def add_contact(factory: sessionmaker[Session], workspace_id: int, email_address: str, **attrs: Any) -> int:
    """A committed contact."""
    with factory() as s:
        now = utcnow()
        c = Contact(workspace_id=workspace_id, email=email_address, created_at=now, updated_at=now, **attrs)
        s.add(c)
        s.commit()
        return c.id


def make_sender(
    factory: sessionmaker[Session], sink: SmtpSink, workspace_id: int, **overrides: Any
) -> tuple[Sender, SmtpTransport]:
    """A sender over a pooled SMTP transport to ``sink``, for one workspace (tests share the database)."""
    concurrency = overrides.pop("concurrency", 4)
    config = SenderConfig(
        secret=SECRET,
        public_url=PUBLIC_URL,
        from_address="news@shop.example.fi",
        envelope_from="bounces@shop.example.fi",
        unsubscribe_mailto="unsubscribe@shop.example.fi",
        concurrency=concurrency,
        poll_interval=0.05,
        workspace_ids=(workspace_id,),
        **overrides,
    )
    transport = SmtpTransport(
        SmtpConfig(host="127.0.0.1", port=sink.port, start_tls=False, pool_size=concurrency, timeout=10)
    )
    return Sender(factory, transport, config), transport


async def drain(sender: Sender, transport: SmtpTransport) -> Any:
    try:
        return await sender.run(until_empty=True, max_seconds=60)
    finally:
        await transport.close()


def rsa_key_pair(tmp: Path) -> tuple[bytes, bytes]:
    """(private PEM, public PEM) made with openssl."""
    priv, pub = tmp / "dkim.pem", tmp / "dkim.pub"
    subprocess.run(["openssl", "genrsa", "-traditional", "-out", str(priv), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(priv), "-pubout", "-out", str(pub)], check=True, capture_output=True)
    return priv.read_bytes(), pub.read_bytes()


RENDERED = {
    "subject": "Spring sale",
    "preheader": "New gear",
    "html": '<html><body><p>Hello</p><a href="https://shop.example.fi/sale?a=1&amp;b=2">Sale</a></body></html>',
    "text": "Hello, see https://shop.example.fi/sale",
}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def assert_processes_gone(pids: list[int]) -> None:
    """Every one of ``pids`` exits within 10 s."""
    deadline = time.monotonic() + 10
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(process_alive(pid) for pid in pids)
