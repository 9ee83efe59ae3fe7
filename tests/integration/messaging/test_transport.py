"""Real SMTP round trips to an aiosmtpd server started in the test: MIME structure, DKIM verified with dkimpy
(List-Unsubscribe headers included), header injection refused, pooled connections reused, 4xx/5xx classified,
STARTTLS and AUTH, the maildir transport and the built-in mail catcher."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from email import policy
from email.parser import BytesParser
from pathlib import Path

import dkim
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from suppilo.messaging.catcher import MailCatcher
from suppilo.messaging.mime import (
    HeaderInjectionError,
    build_message,
    dkim_dns_record,
    message_bytes,
    outbox_id_of,
    safe_display_name,
    sign_dkim,
)
from suppilo.messaging.transport import (
    MaildirTransport,
    PermanentSendError,
    SmtpConfig,
    SmtpTransport,
    TransientSendError,
    data_bytes,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Recorder:
    """Keeps what the server accepted; recipients in ``reject`` get the given reply at RCPT."""

    def __init__(self, reject: dict[str, str] | None = None, data_reply: str | None = None) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.reject = reject or {}
        self.data_reply = data_reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return self.reject[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return "250 OK queued"


class CountingController(Controller):
    """A controller that counts the connections it accepted."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connections = 0

    def factory(self):
        self.connections += 1
        return super().factory()


@pytest.fixture
def smtp_server():
    started: list[CountingController] = []

    def start(handler: Recorder | None = None, **kwargs) -> tuple[CountingController, Recorder]:
        handler = handler or Recorder()
        controller = CountingController(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        controller.connections = 0  # start() probes the server once
        started.append(controller)
        return controller, handler

    yield start
    for c in started:
        c.stop()


@pytest.fixture(scope="session")
def rsa_keys(tmp_path_factory) -> tuple[bytes, bytes]:
    d = tmp_path_factory.mktemp("dkim")
    subprocess.run(["openssl", "genrsa", "-out", str(d / "k.pem"), "2048"], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "rsa", "-in", str(d / "k.pem"), "-pubout", "-out", str(d / "k.pub")],
        check=True,
        capture_output=True,
    )
    return (d / "k.pem").read_bytes(), (d / "k.pub").read_bytes()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"),
            *("-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")),
        ],
        check=True,
        capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


def _message(outbox_id: int = 7, **overrides) -> bytes:
    args = {
        "outbox_id": outbox_id,
        "workspace_slug": "nordshop",
        "domain": "mail.nordshop.fi",
        "from_email": "news@nordshop.fi",
        "from_name": "Nordshop Ääkköset",
        "to_email": "aino@example.fi",
        "to_name": "Aino Virtanen",
        "subject": "Tervetuloa – hyvää päivää",
        "text": "Hei Aino!\n\nTervetuloa.\n",
        "html": "<p>Hei <b>Aino</b>!</p>",
        "headers": {
            "List-Unsubscribe": "<https://nordshop.fi/u/abc>, <mailto:unsub@nordshop.fi>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    } | overrides
    return message_bytes(build_message(**args))


def _send(transport, data: bytes, to: str = "aino@example.fi") -> None:
    asyncio.run(_send_async(transport, data, to))


async def _send_async(transport, data: bytes, to: str) -> None:
    try:
        await transport.send("bounces@nordshop.fi", [to], data)
    finally:
        await transport.close()


def test_smtp_round_trip_keeps_structure_and_message_id(smtp_server) -> None:
    controller, recorder = smtp_server()
    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=controller.port, start_tls=False))
    _send(transport, _message())
    assert len(recorder.messages) == 1
    mail_from, rcpts, raw = recorder.messages[0]
    assert (mail_from, rcpts) == ("bounces@nordshop.fi", ["aino@example.fi"])
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert msg["Message-ID"] == "<outbox-7.nordshop@mail.nordshop.fi>"
    assert outbox_id_of(msg["Message-ID"]) == (7, "nordshop")
    assert msg["Subject"] == "Tervetuloa – hyvää päivää"
    assert msg["From"].addresses[0].display_name == "Nordshop Ääkköset"
    assert msg.get_content_type() == "multipart/alternative"
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Hei Aino!\n\nTervetuloa.\n"
    assert "<b>Aino</b>" in msg.get_body(("html",)).get_content()
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_dkim_signature_verifies_after_smtp_and_covers_list_unsubscribe(smtp_server, rsa_keys) -> None:
    private, public = rsa_keys
    record = dkim_dns_record(public, "s2024", "nordshop.fi")
    assert record.name == "s2024._domainkey.nordshop.fi"
    assert record.value.startswith("v=DKIM1; k=rsa; p=MII")
    assert record.zone_line().startswith('s2024._domainkey.nordshop.fi. IN TXT "v=DKIM1;')

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"s2024._domainkey.nordshop.fi."
        return record.value.encode()

    signed = sign_dkim(_message(), selector="s2024", domain="nordshop.fi", private_key_pem=private)
    controller, recorder = smtp_server()
    _send(SmtpTransport(SmtpConfig(host="127.0.0.1", port=controller.port, start_tls=False)), signed)
    received = recorder.messages[0][2]
    assert dkim.verify(received, dnsfunc=dnsfunc)
    sig = BytesParser(policy=policy.default).parsebytes(received)["DKIM-Signature"]
    signed_headers = [h.strip().lower() for h in sig.split("h=")[1].split(";")[0].split(":")]
    assert {"from", "subject", "message-id", "list-unsubscribe", "list-unsubscribe-post"} <= set(signed_headers)
    # Changing a signed header breaks the signature.
    tampered = received.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: x")
    assert tampered != received
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)


@pytest.mark.parametrize(
    "overrides",
    [
        {"subject": "Hello\r\nBcc: victim@example.com"},
        {"subject": "Hello\nX-Evil: 1"},
        {"to_name": "Aino\r\nBcc: victim@example.com"},
        {"from_name": "Shop\nReply-To: evil@example.com"},
        {"to_email": "aino@example.fi\r\nBcc: victim@example.com"},
        {"to_email": "aino@example.fi>, <victim@example.com"},
        {"headers": {"List-Unsubscribe": "<https://x>\r\nBcc: victim@example.com"}},
        {"headers": {"Bcc": "victim@example.com"}},
        {"headers": {"X-Evil\r\nBcc": "x"}},
    ],
)
def test_header_injection_is_refused(overrides) -> None:
    with pytest.raises(HeaderInjectionError):
        _message(**overrides)


def test_display_names_from_contact_data_are_folded_not_split(smtp_server) -> None:
    name = safe_display_name("Aino\r\nBcc: victim@example.com")
    assert name == "Aino Bcc: victim@example.com"
    controller, recorder = smtp_server()
    _send(SmtpTransport(SmtpConfig(host="127.0.0.1", port=controller.port, start_tls=False)), _message(to_name=name))
    msg = BytesParser(policy=policy.default).parsebytes(recorder.messages[0][2])
    assert msg["Bcc"] is None
    assert msg["To"].addresses[0].addr_spec == "aino@example.fi"
    assert msg["To"].addresses[0].display_name == name
    assert recorder.messages[0][1] == ["aino@example.fi"]


def test_pool_reuses_its_connections(smtp_server) -> None:
    controller, recorder = smtp_server()
    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=controller.port, start_tls=False, pool_size=3))

    async def run() -> None:
        try:
            await asyncio.gather(
                *(transport.send("b@nordshop.fi", [f"u{i}@example.fi"], _message(outbox_id=i)) for i in range(60))
            )
        finally:
            await transport.close()

    asyncio.run(run())
    assert len(recorder.messages) == 60
    ids = {BytesParser(policy=policy.default).parsebytes(m[2])["Message-ID"] for m in recorder.messages}
    assert len(ids) == 60
    assert 1 <= controller.connections <= 3
    assert transport.connections_opened == controller.connections


def test_reply_codes_are_classified(smtp_server) -> None:
    controller, recorder = smtp_server(
        Recorder(reject={"gone@example.fi": "550 5.1.1 no such user", "busy@example.fi": "451 4.3.0 try later"})
    )
    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=controller.port, start_tls=False, pool_size=1))

    async def run() -> None:
        try:
            with pytest.raises(PermanentSendError) as perm:
                await transport.send("b@nordshop.fi", ["gone@example.fi"], _message())
            assert perm.value.code == 550
            with pytest.raises(TransientSendError) as temp:
                await transport.send("b@nordshop.fi", ["busy@example.fi"], _message())
            assert temp.value.code == 451
            # The connection is still usable after the refusals.
            await transport.send("b@nordshop.fi", ["ok@example.fi"], _message())
        finally:
            await transport.close()

    asyncio.run(run())
    assert [m[1] for m in recorder.messages] == [["ok@example.fi"]]
    assert controller.connections == 1


def test_refusal_after_data_is_permanent(smtp_server) -> None:
    controller, _ = smtp_server(Recorder(data_reply="554 5.7.1 message refused"))
    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=controller.port, start_tls=False))
    with pytest.raises(PermanentSendError) as exc:
        _send(transport, _message())
    assert exc.value.code == 554


def test_unreachable_server_is_transient() -> None:
    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=free_port(), start_tls=False, timeout=2))
    with pytest.raises(TransientSendError):
        _send(transport, _message())


def test_starttls_and_auth(smtp_server, tls_cert) -> None:
    cert, key = tls_cert
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    logins: list[tuple[str, str]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s3cret", handled=False)

    controller, recorder = smtp_server(
        tls_context=server_ctx, require_starttls=True, authenticator=authenticator, auth_require_tls=True
    )
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    good = SmtpTransport(
        SmtpConfig(
            host="127.0.0.1",
            port=controller.port,
            start_tls=True,
            username="shop",
            password="s3cret",
            tls_context=client_ctx,
        )
    )
    _send(good, _message())
    assert len(recorder.messages) == 1
    assert logins == [("shop", "s3cret")]
    bad = SmtpTransport(
        SmtpConfig(
            host="127.0.0.1",
            port=controller.port,
            start_tls=True,
            username="shop",
            password="x",
            tls_context=client_ctx,
        )
    )
    with pytest.raises(PermanentSendError):
        _send(bad, _message())
    assert len(recorder.messages) == 1


def test_maildir_transport_writes_eml_files(tmp_path, rsa_keys) -> None:
    private, public = rsa_keys
    transport = MaildirTransport(tmp_path / "outbox")
    signed = sign_dkim(_message(), selector="s1", domain="nordshop.fi", private_key_pem=private)
    _send(transport, signed)
    files = transport.messages()
    assert len(files) == 1 and files[0].suffix == ".eml"
    data = files[0].read_bytes()
    assert data.startswith(b"Return-Path: <bounces@nordshop.fi>\r\nDelivered-To: aino@example.fi\r\n")
    record = dkim_dns_record(public, "s1", "nordshop.fi").value.encode()
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: record)
    assert not list((tmp_path / "outbox" / "tmp").iterdir())


def test_mail_catcher_stores_and_lists_what_it_receives(tmp_path) -> None:
    catcher = MailCatcher(tmp_path, port=free_port())
    catcher.start()
    try:
        transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=catcher.port, start_tls=False))

        async def run() -> None:
            try:
                for i in (1, 2):
                    await transport.send("b@nordshop.fi", [f"u{i}@example.fi"], _message(outbox_id=i))
            finally:
                await transport.close()

        asyncio.run(run())
    finally:
        catcher.stop()
    listed = catcher.list()
    assert [m.id for m in listed] == [2, 1]
    assert listed[0].envelope_to == ["u2@example.fi"]
    assert listed[0].subject == "Tervetuloa – hyvää päivää"
    assert listed[0].message_id == "<outbox-2.nordshop@mail.nordshop.fi>"
    assert (tmp_path / "mailcatcher" / "1.eml").read_bytes() == catcher.read(1)
    # A new catcher on the same directory continues the numbering.
    again = MailCatcher(tmp_path, port=free_port())
    again.start()
    try:
        asyncio.run(_send_async(SmtpTransport(SmtpConfig(host="127.0.0.1", port=again.port)), _message(), "x@y.fi"))
    finally:
        again.stop()
    assert [m.id for m in again.list()] == [3, 2, 1]


def test_addresses_go_on_the_command_line_as_aiosmtplib_quotes_them() -> None:
    from aiosmtplib.email import quote_address

    from suppilo.messaging.transport import smtp_path

    def quoted(fn, address: str) -> bytes | str:
        try:
            out = fn(address)
        except ValueError:
            return "ValueError"
        return out if isinstance(out, bytes) else out.encode("ascii")

    addresses = [
        "aino@example.fi",
        "first.last+tag@mail.example.co.uk",
        "x_y%z=1-2@sub-domain.example.com",
        "Aino Virtanen <aino@example.fi>",
        '"quoted local"@example.fi',
        " spaced@example.fi ",
        "a..b@example.fi",
        ".lead@example.fi",
        "a@example.fi> SIZE=1",
        "a@example.fi\r\nRSET",
        "a b@example.fi",
    ]
    for address in addresses:
        assert quoted(smtp_path, address) == quoted(quote_address, address), address


class SlowAt(Recorder):
    """Waits ``delay`` seconds before answering RCPT of ``slow@example.fi``, or DATA of a message to it."""

    def __init__(self, stage: str, delay: float) -> None:
        super().__init__()
        self.stage, self.delay = stage, delay

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.stage == "rcpt" and address == "slow@example.fi":
            await asyncio.sleep(self.delay)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        if self.stage == "data" and "slow@example.fi" in envelope.rcpt_tos:
            await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_a_reply_that_never_comes_is_transient_and_the_connection_is_dropped(smtp_server, stage) -> None:
    controller, recorder = smtp_server(SlowAt(stage, delay=3.0))
    transport = SmtpTransport(
        SmtpConfig(host="127.0.0.1", port=controller.port, start_tls=False, pool_size=1, timeout=0.5)
    )

    async def run() -> TransientSendError:
        try:
            with pytest.raises(TransientSendError) as exc:
                await transport.send("b@nordshop.fi", ["slow@example.fi"], _message())
            # The late reply must not be read as the answer to the next message's commands: a new connection.
            await transport.send("b@nordshop.fi", ["ok@example.fi"], _message(outbox_id=8))
            return exc.value
        finally:
            await transport.close()

    error = asyncio.run(run())
    # After the message data went out, the server may have accepted it: the sender marks such a message uncertain.
    assert error.after_data is (stage == "data")
    assert ["ok@example.fi"] in [m[1] for m in recorder.messages]
    assert transport.connections_opened == 2


# --- the DATA step -----------------------------------------------------------------------------------------------


def _aiosmtplib_data(message: bytes) -> bytes:
    """What aiosmtplib's own ``data`` puts on the wire after DATA (the reference for ``data_bytes``)."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"\r\n.", b" ", b"=2E", b"\x00"])))
def test_data_bytes_are_what_aiosmtplib_would_send(parts) -> None:
    message = b"".join(parts)
    assert data_bytes(message) == _aiosmtplib_data(message)


@pytest.mark.parametrize(
    "message",
    [
        _message(),
        b"Subject: dots\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nend\r\n",
        b".Subject: odd\r\n\r\nlone LF\nlone CR\rlast line without an ending",
    ],
)
def test_data_bytes_of_real_messages(message) -> None:
    assert data_bytes(message) == _aiosmtplib_data(message)


def test_the_server_receives_lines_starting_with_a_dot_and_lone_line_ends_intact(smtp_server) -> None:
    controller, recorder = smtp_server()
    transport = SmtpTransport(SmtpConfig(host="127.0.0.1", port=controller.port, start_tls=False, pool_size=1))
    body = b"Subject: dots\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nlone LF\nend"

    async def run() -> None:
        try:
            for _ in range(3):  # the connection stays in step after each message
                await transport.send("b@nordshop.fi", ["ok@example.fi"], body)
        finally:
            await transport.close()

    asyncio.run(run())
    assert [m[2] for m in recorder.messages] == [
        b"Subject: dots\r\n\r\n.starts with a dot\r\n..two dots\r\n.\r\nlone LF\r\nend\r\n"
    ] * 3
    assert controller.connections == 1
