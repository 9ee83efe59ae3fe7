"""Outbound webhooks against real HTTP(S) servers on 127.0.0.1: signed delivery, SSRF refusals (addresses,
spellings, schemes, redirects, rebinding), timeouts and the retry classification."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from suppilo.config import Settings
from suppilo.webhooks import MAX_ATTEMPTS, deliver, retry_delay, verify_signature
from suppilo.webhooks.client import RETRY_SCHEDULE, blocked_reason, resolve, retry_bounds
from suppilo.webhooks.signing import canonical_json, signature_header

SECRET = "whsec_" + "k" * 32


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Behaviour:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'
    delay: float = 0.0
    endless: bool = False


class Receiver:
    """A real HTTP(S) server on 127.0.0.1 that records each request and answers as told."""

    def __init__(self, behaviour: Behaviour | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.seen: list[Seen] = []
        self.server_names: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                outer.seen.append(Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                b = outer.behaviour
                if b.delay:
                    time.sleep(b.delay)
                self.send_response(b.status)
                for name, value in b.headers.items():
                    self.send_header(name, value)
                if b.endless:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    chunk = b"x" * 16384
                    try:
                        for _ in range(100_000):
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    except OSError:
                        pass
                    return
                self.send_header("Content-Length", str(len(b.body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up (timeout tests)
                    self.wfile.write(b.body)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:

            def remember(sock: Any, name: str | None, ctx: Any) -> None:
                outer.server_names.append(name)

            tls.sni_callback = remember
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


def test_signed_post_reaches_the_receiver_and_verifies():
    payload = {"event": "journey.step", "contact": {"id": 42, "name": "Äino"}, "amount": 1250}
    with Receiver() as rx:
        result = deliver(
            f"http://127.0.0.1:{rx.port}/hooks/in?x=1",
            payload,
            secret=SECRET,
            idempotency_key="enrollment-7:step-3",
            allow_private=True,
        )
    assert result.ok and result.status == 200 and result.error is None and not result.retryable
    assert result.duration_ms > 0
    assert len(rx.seen) == 1
    got = rx.seen[0]
    assert got.path == "/hooks/in?x=1"
    assert (
        got.body
        == canonical_json(payload)
        == json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-suppilo-idempotency-key"] == "enrollment-7:step-3"
    assert got.headers["user-agent"].startswith("suppilo-webhooks/")
    assert got.headers["host"] == f"127.0.0.1:{rx.port}"
    header = got.headers["x-suppilo-signature"]
    assert verify_signature(header, got.body, SECRET)
    assert not verify_signature(header, got.body + b" ", SECRET)  # altered body
    assert not verify_signature(header, got.body, "another-secret")
    t = int(header.split(",")[0][2:])
    assert not verify_signature(header, got.body, SECRET, tolerance_s=300, now=t + 301)  # replayed later
    assert verify_signature(header, got.body, SECRET, tolerance_s=300, now=t + 299)


def test_verify_signature_rejects_malformed_headers_and_accepts_a_rotated_secret():
    body = b'{"a":1}'
    now = 1_700_000_000
    good = signature_header(body, SECRET, now)
    for bad in ("", "t=abc,v1=00", "v1=" + "0" * 64, f"t={now}", "garbage", f"t={now},t={now},{good.split(',')[1]}"):
        assert not verify_signature(bad, body, SECRET, now=now), bad
    rotated = f"{good},v1={signature_header(body, 'old-secret', now).split('v1=')[1]}"
    assert verify_signature(rotated, body, SECRET, now=now)
    assert verify_signature(rotated, body, "old-secret", now=now)
    assert not verify_signature(good, body, "", now=now)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/",
        "http://localhost:{port}/",
        "http://10.1.2.3:{port}/",
        "http://192.168.0.10/",
        "http://172.16.5.4/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/",
        "http://[::ffff:127.0.0.1]:{port}/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fc00::1]/",
        "http://[fe80::1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0:{port}/",
        "http://224.0.0.1/",
        "http://2130706433:{port}/",
        "http://0177.0.0.1:{port}/",
        "http://0x7f.1:{port}/",
        "http://127.1:{port}/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:{port}/",
        "//example.com/",
        "http:///nohost",
        "http://user:pass@example.com/",
    ],
)
def test_refused_urls_never_reach_a_server(url):
    with Receiver() as rx:
        result = deliver(url.format(port=rx.port), {"a": 1}, secret=SECRET, idempotency_key="k")
    assert not result.ok and result.status is None and not result.retryable
    assert result.error and result.error.startswith("refused"), result.error
    assert rx.seen == []


def test_a_name_resolving_to_any_blocked_address_is_refused():
    def resolver(host, port, *args):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    result = deliver("https://mixed.example/", {}, secret=SECRET, idempotency_key="k", resolver=resolver)
    assert not result.ok and not result.retryable and "10.0.0.7" in (result.error or "")


def test_the_connection_goes_to_the_vetted_address_without_resolving_again():
    calls = []

    def resolver(host, port, *args):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    with Receiver() as rx:
        # "rebind.test" exists in no DNS: the request can only arrive through the address vetted once.
        result = deliver(
            f"http://rebind.test:{rx.port}/x",
            {"n": 1},
            secret=SECRET,
            idempotency_key="k",
            allow_private=True,
            resolver=resolver,
        )
    assert result.ok, result.error
    assert calls == ["rebind.test"]
    assert rx.seen[0].headers["host"] == f"rebind.test:{rx.port}"


def _cert(tmp: Path, name: str) -> tuple[Path, Path]:
    key, crt = tmp / f"{name}.key", tmp / f"{name}.crt"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(crt),
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )
    return crt, key


def test_tls_uses_the_host_name_for_sni_and_the_certificate_while_connecting_to_the_pinned_address(tmp_path):
    crt, key = _cert(tmp_path, "hooks.shop.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    client_ctx = ssl.create_default_context(cafile=str(crt))

    def resolver(host, port, *args):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    with Receiver(tls=server_ctx) as rx:
        ok = deliver(
            f"https://hooks.shop.test:{rx.port}/in",
            {"x": 1},
            secret=SECRET,
            idempotency_key="k",
            allow_private=True,
            ssl_context=client_ctx,
            resolver=resolver,
        )
        assert ok.ok, ok.error
        assert rx.server_names == ["hooks.shop.test"]
        assert rx.seen[0].headers["host"] == f"hooks.shop.test:{rx.port}"
        # The same server under another name: its certificate does not match, nothing is posted.
        bad = deliver(
            f"https://other.shop.test:{rx.port}/in",
            {"x": 1},
            secret=SECRET,
            idempotency_key="k",
            allow_private=True,
            ssl_context=client_ctx,
            resolver=resolver,
        )
    assert not bad.ok and bad.status is None and "certificate" in (bad.error or "").lower()
    assert len(rx.seen) == 1


def test_a_redirect_to_loopback_is_not_followed():
    with Receiver() as target, Receiver() as rx:
        rx.behaviour = Behaviour(status=302, headers={"Location": f"http://127.0.0.1:{target.port}/admin"})
        result = deliver(f"http://127.0.0.1:{rx.port}/", {}, secret=SECRET, idempotency_key="k", allow_private=True)
    assert not result.ok and result.status == 302 and not result.retryable
    assert f"http://127.0.0.1:{target.port}/admin" in (result.error or "")
    assert len(rx.seen) == 1 and target.seen == []


@pytest.mark.parametrize(
    ("status", "ok", "retryable"),
    [
        (200, True, False),
        (204, True, False),
        (404, False, False),
        (400, False, False),
        (410, False, False),
        (408, False, True),
        (429, False, True),
        (500, False, True),
        (503, False, True),
    ],
)
def test_status_classification(status, ok, retryable):
    body = b"" if status == 204 else b"answer"
    with Receiver(Behaviour(status=status, body=body)) as rx:
        result = deliver(f"http://127.0.0.1:{rx.port}/", {}, secret=SECRET, idempotency_key="k", allow_private=True)
    assert (result.ok, result.status, result.retryable) == (ok, status, retryable)
    assert (result.error is None) == ok


def test_a_slow_server_times_out_and_is_retryable():
    with Receiver(Behaviour(delay=3.0)) as rx:
        started = time.monotonic()
        result = deliver(
            f"http://127.0.0.1:{rx.port}/", {}, secret=SECRET, idempotency_key="k", timeout=0.5, allow_private=True
        )
        elapsed = time.monotonic() - started
    assert not result.ok and result.retryable and result.status is None
    assert "timeout" in (result.error or "")
    assert elapsed < 2.0


def test_a_server_trickling_bytes_cannot_outlast_the_total_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():  # one header byte every 0.1 s: each read is fast, the whole never ends
                try:
                    conn.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.1)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    result = deliver(
        f"http://127.0.0.1:{port}/", {}, secret=SECRET, idempotency_key="k", timeout=1.0, allow_private=True
    )
    elapsed = time.monotonic() - started
    stop.set()
    listener.close()
    assert not result.ok and result.retryable and "timeout" in (result.error or "")
    assert elapsed < 2.0


def test_an_endless_response_body_is_read_only_up_to_the_cap():
    with Receiver(Behaviour(endless=True)) as rx:
        result = deliver(
            f"http://127.0.0.1:{rx.port}/", {}, secret=SECRET, idempotency_key="k", timeout=5.0, allow_private=True
        )
    assert result.ok and result.status == 200
    assert result.duration_ms < 4000


def test_connection_refused_and_unresolvable_names_are_retryable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        refused = deliver(f"http://127.0.0.1:{port}/", {}, secret=SECRET, idempotency_key="k", allow_private=True)
    assert not refused.ok and refused.retryable and refused.error.startswith("connection error")

    def no_such_name(host, port, *args):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    unresolved = deliver("https://gone.example/", {}, secret=SECRET, idempotency_key="k", resolver=no_such_name)
    assert not unresolved.ok and unresolved.retryable and "resolve" in unresolved.error


def test_bad_payloads_and_keys_are_refused_not_retried():
    for kwargs in ({"idempotency_key": "a\r\nX-Evil: 1"}, {"idempotency_key": ""}, {"idempotency_key": "k" * 201}):
        result = deliver("https://example.com/", {}, secret=SECRET, **kwargs)
        assert not result.ok and not result.retryable and result.error.startswith("refused")
    result = deliver("https://example.com/", {"x": float("nan")}, secret=SECRET, idempotency_key="k")
    assert not result.ok and not result.retryable
    result = deliver("https://example.com/", {"x": object()}, secret=SECRET, idempotency_key="k")
    assert not result.ok and not result.retryable


def test_blocked_reason_covers_embedded_ipv4_and_leaves_public_addresses():
    blocked = [
        "127.0.0.1",
        "10.0.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "100.64.0.1",
        "100.127.255.254",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2002:7f00:1::1",
        "2001:db8::1",
        "64:ff9b:1::a00:1",
        "64:ff9b:1::5db8:d822",
    ]
    for text in blocked:
        assert blocked_reason(ipaddress.ip_address(text)) is not None, text
    for text in ("93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:93.184.216.34", "64:ff9b::101:101"):
        assert blocked_reason(ipaddress.ip_address(text)) is None, text


def test_resolve_checks_every_address_and_allow_private_lets_them_through():
    def resolver(host, port, *args):
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("fe80::1%eth0", port, 0, 2)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port)),
        ]

    with pytest.raises(Exception, match="link-local"):
        resolve("h.test", 80, allow_private=False, resolver=resolver)
    assert resolve("h.test", 80, allow_private=True, resolver=resolver) == ["fe80::1", "127.0.0.1"]


def test_retry_delay_follows_the_schedule_within_jitter_bounds():
    rng = random.Random(7)
    assert len(RETRY_SCHEDULE) + 1 == MAX_ATTEMPTS
    previous_high = 0.0
    for attempt in range(1, MAX_ATTEMPTS + 3):
        low, high = retry_bounds(attempt)
        assert low >= previous_high * 0.5 and high <= 6 * 3600
        for _ in range(200):
            assert low <= retry_delay(attempt, rng) <= high
        previous_high = high
    assert retry_bounds(1) == (24.0, 36.0)
    assert retry_bounds(2) == (96.0, 144.0)
    assert retry_bounds(4) == (2880.0, 4320.0)
    assert retry_bounds(5)[1] == retry_bounds(50)[1] == 6 * 3600.0
    assert len({round(retry_delay(1, rng), 6) for _ in range(20)}) > 1  # jittered


def test_allow_private_setting_reads_the_environment(monkeypatch):
    assert Settings().webhook_allow_private is False
    monkeypatch.setenv("SUPPILO_WEBHOOK_ALLOW_PRIVATE", "1")
    assert Settings().webhook_allow_private is True
