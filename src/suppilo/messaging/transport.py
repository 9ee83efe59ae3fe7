"""Transports hand a finished (signed) message to the world: SMTP over a pool of persistent connections, or a
directory of .eml files for development. Adding an HTTP provider is described in docs/messaging.md.

Every transport raises :class:`TransientSendError` for outcomes worth retrying (4xx replies, refused or lost
connections, timeouts) and :class:`PermanentSendError` for 5xx replies. A transient error raised after the
message data was transmitted (the server's reply to the final dot was lost) leaves the message's fate unknown;
such errors carry ``after_data=True`` so the sender can mark the message uncertain instead of resending it.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import ssl
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import aiosmtplib
from aiosmtplib.email import quote_address

if TYPE_CHECKING:
    from suppilo.config import Settings


class SendError(Exception):
    """A message was not accepted. ``code`` is the SMTP reply code (0 when there was none)."""

    def __init__(
        self,
        message: str,
        *,
        code: int = 0,
        refused: dict[str, tuple[int, str]] | None = None,
        after_data: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.refused = refused or {}
        self.after_data = after_data


class TransientSendError(SendError):
    """Try again later: a 4xx reply, a refused or lost connection, a timeout."""


class PermanentSendError(SendError):
    """Do not retry: a 5xx reply (unknown user, policy rejection, message refused)."""


@runtime_checkable
class Transport(Protocol):
    """Delivers one message to its recipients; raises TransientSendError or PermanentSendError."""

    async def send(self, envelope_from: str, recipients: list[str], message_bytes: bytes) -> None: ...

    async def close(self) -> None: ...


# A plain ASCII address (dot-atom local part and domain, nothing to quote or strip): aiosmtplib's quote_address
# returns it as ``<address>`` after email.utils.parseaddr, which costs more than the rest of MAIL or RCPT.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9_%+=-]+(?:\.[A-Za-z0-9_%+=-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


@functools.lru_cache(maxsize=64)
def _quoted_cached(address: str) -> bytes:
    return quote_address(address).encode("ascii")


def smtp_path(address: str) -> bytes:
    """``<address>`` as aiosmtplib's ``mail``/``rcpt`` put it on the command line (same validation: an address that
    could smuggle parameters or commands raises ValueError). Envelope senders repeat, so they are cached."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    return _quoted_cached(address)


_LINE_END = re.compile(rb"\r\n|\n|\r")


def data_bytes(message: bytes) -> bytes:
    """What follows the DATA command on the wire: the message with every line ending CRLF, each line that starts
    with "." given a second one (RFC 5321 4.5.2), ending in CRLF, then the final ".". The same bytes aiosmtplib's
    ``data`` sends, without its two regular-expression passes over the whole message (about 40 µs for a 2 KB message,
    a fifth of the sender's time per message) when the message is CRLF throughout, as every message suppilo builds
    is: three counts and at most one replace."""
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        message = _LINE_END.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if b"\n." in message:
        message = message.replace(b"\n.", b"\n..")
    if message.startswith(b"."):
        message = b"." + message
    return message + b".\r\n"


async def _data(smtp: aiosmtplib.SMTP, message_bytes: bytes) -> None:
    """DATA, the message (``data_bytes``) and the reply to the final dot, on a connection this task holds alone (the
    pool lends each connection to one transaction at a time). Replies other than 354 / 250 raise as aiosmtplib's
    ``data`` does; a lost connection or a 421 closes the connection, as aiosmtplib's commands do."""
    reply = await smtp.execute_command(b"DATA", timeout=None)
    if reply.code != 354:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        # read_response marks the reply as expected before it yields to the event loop, so nothing that arrives
        # after this write can be taken for unsolicited data.
        protocol.write(data_bytes(message_bytes))
        reply = await protocol.read_response(timeout=None)
    except aiosmtplib.SMTPServerDisconnected:
        smtp.close()
        raise
    if reply.code == 421:
        smtp.close()
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)


def _error_for(code: int, message: str, **kwargs: object) -> SendError:
    cls = PermanentSendError if 500 <= code < 600 else TransientSendError
    return cls(f"{code} {message}".strip(), code=code, **kwargs)  # type: ignore[arg-type]


@dataclass
class SmtpConfig:
    """Where and how to reach the SMTP server."""

    host: str
    port: int = 25
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool | None = None  # True: require, False: never, None: when offered
    pool_size: int = 4
    timeout: float = 30.0
    validate_certs: bool = True
    tls_context: ssl.SSLContext | None = None
    local_hostname: str | None = None
    idle_check_seconds: float = 30.0


class SmtpTransport:
    """SMTP through up to ``pool_size`` persistent connections (aiosmtplib), opened when first needed.

    A connection serves one message at a time and goes back to the pool after a clean exchange; after an error
    it is reset, or closed when the reset fails. A connection idle for longer than ``idle_check_seconds`` is
    probed with NOOP before reuse so a server-side idle timeout never costs a message.
    """

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._semaphore: asyncio.Semaphore | None = None
        self._open: set[aiosmtplib.SMTP] = set()
        self.connections_opened = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTransport:
        """The configured server, or the built-in mail catcher when ``SUPPILO_SMTP_HOST`` is unset."""
        if settings.smtp_host:
            return cls(
                SmtpConfig(
                    host=settings.smtp_host,
                    port=settings.smtp_port,
                    username=settings.smtp_username,
                    password=settings.smtp_password,
                    use_tls=settings.smtp_tls,
                    start_tls=settings.smtp_starttls,
                    pool_size=settings.smtp_pool_size,
                    timeout=settings.smtp_timeout,
                )
            )
        return cls(
            SmtpConfig(
                host=settings.mail_catcher_host,
                port=settings.mail_catcher_port,
                start_tls=False,
                pool_size=settings.smtp_pool_size,
                timeout=settings.smtp_timeout,
            )
        )

    def _sem(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.config.pool_size)
        return self._semaphore

    async def _connect(self) -> aiosmtplib.SMTP:
        cfg = self.config
        smtp = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            use_tls=cfg.use_tls,
            start_tls=cfg.start_tls,
            timeout=cfg.timeout,
            validate_certs=cfg.validate_certs,
            tls_context=cfg.tls_context,
            local_hostname=cfg.local_hostname,
        )
        try:
            await smtp.connect()
            if cfg.username:
                await smtp.login(cfg.username, cfg.password or "")
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            raise _error_for(exc.code, f"authentication failed: {exc.message}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            raise _error_for(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
            smtp.close()
            raise TransientSendError(f"cannot connect to {cfg.host}:{cfg.port}: {exc}") from exc
        self.connections_opened += 1
        self._open.add(smtp)
        return smtp

    async def _acquire(self) -> aiosmtplib.SMTP:
        while self._idle:
            smtp, since = self._idle.pop()
            if not smtp.is_connected:
                self._discard(smtp)
                continue
            if time.monotonic() - since > self.config.idle_check_seconds:
                try:
                    await smtp.noop()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    self._discard(smtp)
                    continue
            return smtp
        return await self._connect()

    def _discard(self, smtp: aiosmtplib.SMTP) -> None:
        self._open.discard(smtp)
        if smtp.is_connected:
            smtp.close()

    async def _release(self, smtp: aiosmtplib.SMTP, *, clean: bool) -> None:
        if not clean and smtp.is_connected:
            try:
                await smtp.rset()
                clean = True
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                clean = False
        if clean and smtp.is_connected:
            self._idle.append((smtp, time.monotonic()))
        else:
            self._discard(smtp)

    async def send(self, envelope_from: str, recipients: list[str], message_bytes: bytes) -> None:
        """Send one message; raises TransientSendError or PermanentSendError when it is not accepted."""
        if not recipients:
            raise PermanentSendError("no recipients")
        async with self._sem():
            smtp = await self._acquire()
            clean = False
            try:
                await self._transaction(smtp, envelope_from, recipients, message_bytes)
                clean = True
            finally:
                await self._release(smtp, clean=clean)

    async def _transaction(
        self, smtp: aiosmtplib.SMTP, envelope_from: str, recipients: list[str], message_bytes: bytes
    ) -> None:
        if not envelope_from.isascii() or not all(r.isascii() for r in recipients):
            await self._transaction_utf8(smtp, envelope_from, recipients, message_bytes)
            return
        # The ASCII case (every message the sender builds): MAIL and RCPT go through ``execute_command`` with the
        # addresses quoted as ``mail``/``rcpt`` quote them, and the replies are awaited without a per-command
        # ``asyncio.wait_for`` (a timer, a waiter and callbacks per reply): one ``asyncio.timeout`` per
        # transaction, armed twice. The envelope (MAIL and each RCPT) gets ``timeout`` seconds per command, DATA
        # two (the 354 and the reply to the final dot), so no reply waits longer than ``timeout`` seconds beyond
        # the time the earlier replies left unused.
        stage = "mail"
        timeout = self.config.timeout
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as deadline:
                try:
                    if smtp.is_ehlo_or_helo_needed:
                        deadline.reschedule(loop.time() + timeout)
                        await smtp.ehlo()
                    deadline.reschedule(loop.time() + timeout * (1 + len(recipients)))
                    reply = await smtp.execute_command(b"MAIL", b"FROM:" + smtp_path(envelope_from), timeout=None)
                    if reply.code != 250:
                        raise _error_for(reply.code, reply.message)
                    stage = "rcpt"
                    refused: dict[str, tuple[int, str]] = {}
                    for rcpt in recipients:
                        reply = await smtp.execute_command(b"RCPT", b"TO:" + smtp_path(rcpt), timeout=None)
                        if reply.code not in (250, 251):
                            refused[rcpt] = (reply.code, reply.message)
                    if len(refused) == len(recipients):
                        worst = max(code for code, _ in refused.values())
                        raise _error_for(worst, "every recipient was refused", refused=refused)
                    stage = "data"
                    # DATA waits twice (354, then the reply to the final dot), each under this timeout.
                    deadline.reschedule(loop.time() + 2 * timeout)
                    await _data(smtp, message_bytes)
                    if refused:
                        worst = max(code for code, _ in refused.values())
                        raise _error_for(worst, "some recipients were refused (the others accepted)", refused=refused)
                except asyncio.CancelledError:
                    # The deadline fired while a reply was awaited: the connection may still deliver that reply
                    # later, so it cannot serve another command (aiosmtplib closes it on its own timeouts too).
                    if deadline.expired():
                        smtp.close()
                    raise
        except SendError:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            raise _error_for(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientSendError(
                f"connection lost during {stage.upper()}: {exc}", after_data=stage == "data"
            ) from exc

    async def _transaction_utf8(
        self, smtp: aiosmtplib.SMTP, envelope_from: str, recipients: list[str], message_bytes: bytes
    ) -> None:
        """A transaction with a non-ASCII address (SMTPUTF8), through aiosmtplib's ``mail``/``rcpt``/``data``."""
        stage = "mail"
        try:
            await smtp.mail(envelope_from, options=["SMTPUTF8"], encoding="utf-8")
            stage = "rcpt"
            refused: dict[str, tuple[int, str]] = {}
            for rcpt in recipients:
                try:
                    await smtp.rcpt(rcpt, encoding="utf-8")
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused[rcpt] = (exc.code, exc.message)
            if len(refused) == len(recipients):
                worst = max(code for code, _ in refused.values())
                raise _error_for(worst, "every recipient was refused", refused=refused)
            stage = "data"
            await smtp.data(message_bytes)
            if refused:
                worst = max(code for code, _ in refused.values())
                raise _error_for(worst, "some recipients were refused (the others accepted)", refused=refused)
        except SendError:
            raise
        except aiosmtplib.SMTPResponseException as exc:
            raise _error_for(exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientSendError(
                f"connection lost during {stage.upper()}: {exc}", after_data=stage == "data"
            ) from exc

    async def close(self) -> None:
        """Say QUIT on every pooled connection."""
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                smtp.close()
            self._open.discard(smtp)
        for smtp in list(self._open):
            self._discard(smtp)


class MaildirTransport:
    """Development transport: each message becomes ``<directory>/new/<time>.<id>.eml`` (written atomically).

    A ``Return-Path`` and one ``Delivered-To`` per recipient are prepended, as a delivery agent would; the
    DKIM signature stays valid since those headers are not signed.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    async def send(self, envelope_from: str, recipients: list[str], message_bytes: bytes) -> None:
        """Write the message; an OS error (disk full, permissions) is transient."""
        if not recipients:
            raise PermanentSendError("no recipients")
        for value in [envelope_from, *recipients]:
            if any(c in value for c in "\r\n\x00<>"):
                raise PermanentSendError(f"invalid envelope address {value!r}")
        trace = f"Return-Path: <{envelope_from}>\r\n" + "".join(f"Delivered-To: {r}\r\n" for r in recipients)
        try:
            await asyncio.to_thread(self._write, trace.encode() + message_bytes)
        except OSError as exc:
            raise TransientSendError(f"cannot write to {self.directory}: {exc}") from exc

    def _write(self, data: bytes) -> Path:
        tmp_dir, new_dir = self.directory / "tmp", self.directory / "new"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        new_dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.eml"
        tmp = tmp_dir / name
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        final = new_dir / name
        os.replace(tmp, final)
        return final

    def messages(self) -> list[Path]:
        """The delivered files, oldest first."""
        new_dir = self.directory / "new"
        return sorted(new_dir.glob("*.eml")) if new_dir.exists() else []

    async def close(self) -> None:
        """Nothing to release."""


def transport_from_settings(settings: Settings) -> Transport:
    """The SMTP transport of the settings (the configured server, or the built-in mail catcher)."""
    return SmtpTransport.from_settings(settings)
