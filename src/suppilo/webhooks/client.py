"""Outbound webhooks, safe against server-side request forgery.

``deliver(url, payload, secret=..., idempotency_key=...)`` POSTs the payload as canonical JSON, signed
(``signing.py``), and answers a ``WebhookResult``; it never raises for network or server trouble.

At every call:

1. Only ``http`` and ``https`` URLs with a host and without user info are accepted. Any port is allowed (webhook
   receivers often listen on 8080, 8443 ...); the address checks below are what keeps internal services out.
2. The host is resolved here (``socket.getaddrinfo``) and the call is refused when ANY address it resolves to is
   loopback, private (RFC 1918, ``fc00::/7``), link-local (``169.254.0.0/16`` with the cloud metadata address,
   ``fe80::/10``), shared/CGNAT (``100.64.0.0/10``), unspecified, multicast, reserved or otherwise not globally
   routable, including IPv4 addresses embedded in IPv6 (mapped ``::ffff:a.b.c.d``, 6to4, Teredo, NAT64). Numeric
   spellings (``http://2130706433/``, ``http://127.1/``) resolve to what they mean and are refused the same way.
3. The connection goes to a vetted address: the network backend ignores name resolution and connects to the
   addresses checked in step 2, so a DNS answer that changes between the check and the connection (DNS
   rebinding) is never used. The URL keeps its host name, so the ``Host`` header, TLS SNI and the certificate
   check are all on the name.
4. Redirects are not followed: a 3xx answer is a failure that reports its ``Location``.
5. Timeouts: connect (at most 5 s), each read and write, and a total deadline for the whole call that is enforced
   on every socket operation (a server trickling bytes cannot hold a worker). At most 64 KiB of the response body
   is read (compressed bodies are not decoded).

``allow_private=True`` skips step 2's address check (the connection is still pinned): for tests and for self-hosters
whose receivers live on their own network, who set ``SUPPILO_WEBHOOK_ALLOW_PRIVATE=1``.

Retries are the caller's: ``WebhookResult.retryable`` says whether to try again, ``retry_delay(attempt)`` how long
to wait, ``MAX_ATTEMPTS`` when to give up. The receiver deduplicates on ``X-Suppilo-Idempotency-Key``.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from suppilo.webhooks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, canonical_json, signature_header

USER_AGENT = "suppilo-webhooks/1.0"
MAX_RESPONSE_BYTES = 64 * 1024
MAX_CONNECT_TIMEOUT = 5.0
# Seconds to wait after attempt 1, 2, 3, 4, 5 failed (the last value repeats); each is jittered by +-20%.
RETRY_SCHEDULE: tuple[float, ...] = (30.0, 120.0, 600.0, 3600.0, 6 * 3600.0)
RETRY_JITTER = 0.2
RETRY_CAP = 6 * 3600.0
MAX_ATTEMPTS = 6

Resolver = Callable[..., list[tuple[Any, ...]]]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_METADATA = ipaddress.ip_address("169.254.169.254")


@dataclass(frozen=True, slots=True)
class WebhookResult:
    """The outcome of one delivery attempt."""

    ok: bool
    status: int | None
    error: str | None
    retryable: bool
    duration_ms: float


class WebhookRefused(Exception):
    """The URL or the address it resolves to is not allowed (never retried)."""


def blocked_reason(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``address`` may not be called (None: a public address)."""
    if isinstance(address, ipaddress.IPv6Address):
        # ::ffff:a.b.c.d is a.b.c.d on a dual-stack socket; NAT64 (DNS64 networks) reaches the embedded a.b.c.d.
        translated = address.ipv4_mapped
        if translated is None and address in _NAT64:
            translated = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if translated is not None:
            reason = blocked_reason(translated)
            return None if reason is None else f"{reason} (as {address})"
        if address in _LOCAL_NAT64:
            return "a local-use NAT64 address"
        embedded: list[ipaddress.IPv4Address] = []
        if address.sixtofour is not None:
            embedded.append(address.sixtofour)
        if address.teredo is not None:
            embedded.extend(address.teredo)
        for inner in embedded:
            reason = blocked_reason(inner)
            if reason is not None:
                return f"{reason} (embedded in {address})"
    if address == _METADATA:
        return "the cloud metadata address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a shared (CGNAT) address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "an address that is not globally routable"
    return None


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise WebhookRefused(f"invalid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise WebhookRefused(f"only http and https URLs are called, not {parsed.scheme or 'a relative URL'!r}")
    if not parsed.raw_host:
        raise WebhookRefused("the URL has no host")
    if parsed.userinfo:
        raise WebhookRefused("user info in the URL is not allowed (put credentials in the secret)")
    return parsed


def resolve(host: str, port: int, *, allow_private: bool, resolver: Resolver = socket.getaddrinfo) -> list[str]:
    """The addresses ``host`` resolves to, all checked; raises WebhookRefused when any is not allowed and
    OSError when the name does not resolve."""
    infos = resolver(host, port, 0, socket.SOCK_STREAM)
    addresses: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = str(sockaddr[0]).split("%", 1)[0]
        address = ipaddress.ip_address(text)
        if not allow_private:
            reason = blocked_reason(address)
            if reason is not None:
                raise WebhookRefused(f"{host} resolves to {address}, {reason}")
        if str(address) not in addresses:
            addresses.append(str(address))
    if not addresses:
        raise OSError(f"{host} has no IPv4 or IPv6 address")
    return addresses


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation also respects the call's total deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _limit(self, timeout: float | None, error: type[Exception]) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise error("the total timeout of the call ran out")
        return remaining if timeout is None else min(timeout, remaining)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._limit(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._limit(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._limit(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class PinnedBackend(httpcore.NetworkBackend):
    """Connects ``host`` only to the vetted ``addresses`` (never resolves it again), within ``deadline``."""

    def __init__(self, host: str, addresses: list[str], deadline: float) -> None:
        self._host = host
        self._addresses = addresses
        self._deadline = deadline
        self._backend = httpcore.SyncBackend()
        self.connected_to: str | None = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if host.lower() != self._host.lower():
            raise httpcore.ConnectError(f"refusing to connect to {host!r}: only {self._host!r} was vetted")
        last: Exception | None = None
        for address in self._addresses:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                break
            limit = remaining if timeout is None else min(timeout, remaining)
            try:
                stream = self._backend.connect_tcp(
                    address, port, timeout=limit, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            self.connected_to = address
            return _DeadlineStream(stream, self._deadline)
        if last is not None:
            raise last
        raise httpcore.ConnectTimeout("the total timeout of the call ran out")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for webhooks")


_EXCEPTIONS: tuple[tuple[type[Exception], type[Exception]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.TimeoutException, httpx.TimeoutException),
)


def _mapped(exc: Exception) -> Exception:
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            return target(str(exc))
    return exc


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except httpcore.TimeoutException as exc:
            raise _mapped(exc) from exc
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise _mapped(exc) from exc

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport over one httpcore connection pool whose network backend is a ``PinnedBackend``."""

    def __init__(self, backend: PinnedBackend, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            max_keepalive_connections=0,
            retries=0,
            network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = self._pool.handle_request(core_request)
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise _mapped(exc) from exc
        except httpcore.UnsupportedProtocol as exc:
            raise _mapped(exc) from exc
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def _classify(status: int) -> tuple[bool, bool]:
    """(ok, retryable) for a final HTTP status."""
    if 200 <= status < 300:
        return True, False
    if status in (408, 425, 429) or 500 <= status < 600:
        return False, True
    return False, False


def _header_value(value: str, name: str) -> str:
    if any(ch in value for ch in "\r\n\x00") or not value.isascii():
        raise WebhookRefused(f"{name} must be ASCII without CR, LF or NUL")
    return value


def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str,
    idempotency_key: str,
    timeout: float = 10.0,
    allow_private: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    resolver: Resolver = socket.getaddrinfo,
    clock: Callable[[], float] = time.time,
) -> WebhookResult:
    """POST ``payload`` to ``url`` as signed canonical JSON; never raises for network or server trouble.

    ``timeout`` bounds the whole call (connect is at most 5 s of it). ``ssl_context`` replaces the default
    certificate store (a private CA); ``resolver`` and ``clock`` are ``socket.getaddrinfo`` and ``time.time``
    unless a test replaces them."""
    started = time.monotonic()
    deadline = started + timeout

    def result(ok: bool, status: int | None, error: str | None, retryable: bool) -> WebhookResult:
        return WebhookResult(ok, status, error, retryable, round((time.monotonic() - started) * 1000.0, 3))

    try:
        target = _parse(url)
        key = _header_value(idempotency_key, "the idempotency key")
        if not key or len(key) > 200:
            raise WebhookRefused("the idempotency key must be 1-200 characters")
        body = canonical_json(payload)
    except WebhookRefused as exc:
        return result(False, None, f"refused: {exc}", False)
    except (TypeError, ValueError) as exc:
        return result(False, None, f"refused: the payload is not JSON: {exc}", False)
    host = target.raw_host.decode("ascii")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        addresses = resolve(host, port, allow_private=allow_private, resolver=resolver)
    except WebhookRefused as exc:
        return result(False, None, f"refused: {exc}", False)
    except (OSError, UnicodeError) as exc:
        return result(False, None, f"could not resolve {host}: {exc}", True)

    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",
        SIGNATURE_HEADER: signature_header(body, secret, int(clock())),
        IDEMPOTENCY_HEADER: key,
    }
    backend = PinnedBackend(host, addresses, deadline)
    transport = PinnedTransport(backend, ssl_context or httpx.create_ssl_context())
    limits = httpx.Timeout(timeout, connect=min(MAX_CONNECT_TIMEOUT, timeout))
    try:
        with (
            httpx.Client(transport=transport, follow_redirects=False, trust_env=False, timeout=limits) as client,
            client.stream("POST", target, content=body, headers=headers) as response,
        ):
            received = 0
            for chunk in response.iter_raw():
                received += len(chunk)
                if received >= MAX_RESPONSE_BYTES:
                    break  # the rest is not read; closing the response drops the connection
            status = response.status_code
            if 300 <= status < 400:
                location = response.headers.get("location", "")
                return result(False, status, f"redirect {status} to {location[:500]!r} not followed", False)
            ok, retryable = _classify(status)
            return result(ok, status, None if ok else f"HTTP {status}", retryable)
    except httpx.TimeoutException as exc:
        return result(False, None, f"timeout: {exc or type(exc).__name__}", True)
    except httpx.TransportError as exc:
        return result(False, None, f"connection error: {type(exc).__name__}: {exc}", True)
    except ssl.SSLError as exc:
        return result(False, None, f"TLS error: {exc}", True)


def retry_bounds(attempt: int) -> tuple[float, float]:
    """The (shortest, longest) wait after failed attempt number ``attempt`` (1-based)."""
    base = RETRY_SCHEDULE[min(max(attempt, 1), len(RETRY_SCHEDULE)) - 1]
    return base * (1 - RETRY_JITTER), min(RETRY_CAP, base * (1 + RETRY_JITTER))


def retry_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): 30 s, 2 min, 10 min, 1 h, then 6 h,
    each jittered by +-20% so many failing receivers do not retry in step, never more than 6 h. Give up after
    ``MAX_ATTEMPTS`` attempts."""
    low, high = retry_bounds(attempt)
    return (rng or random).uniform(low, high)
