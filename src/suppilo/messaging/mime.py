"""MIME messages (multipart/alternative text + html), header safety, and DKIM signing with dkimpy.

Header injection: no header value suppilo writes may contain CR, LF or NUL. ``build_message`` refuses such
values with :class:`HeaderInjectionError` (display names coming from contact data should first go through
:func:`safe_display_name`, which folds any whitespace run into one space). Non-ASCII display names and subjects
are RFC 2047 encoded by the ``email`` package.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import dkim

from suppilo.errors import DomainError

SMTP_POLICY = policy.SMTP.clone(max_line_length=78)
SMTPUTF8_POLICY = policy.SMTPUTF8.clone(max_line_length=78)

_BAD_CHARS = re.compile(r"[\r\n\x00]")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,75}$")
RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "subject", "date", "message-id", "mime-version", "content-type"}
    | {"content-transfer-encoding", "dkim-signature", "sender", "return-path"}
)
DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Feedback-ID",
    "Auto-Submitted",
)
ALWAYS_SIGNED_WHEN_PRESENT = ("From", "List-Unsubscribe", "List-Unsubscribe-Post")


class HeaderInjectionError(DomainError):
    """A header value contained CR, LF or NUL (or an address was malformed): the message is not built."""

    default_code = "header_injection"


def safe_display_name(name: str | None) -> str:
    """A display name for contact data: whitespace runs (CR/LF included) become one space, NUL is dropped."""
    if not name:
        return ""
    return " ".join(name.replace("\x00", "").split())[:200]


def _check_value(field: str, value: str) -> str:
    if _BAD_CHARS.search(value):
        raise HeaderInjectionError(field, f"{field} must not contain line breaks or NUL characters")
    return value


def _idna_domain(domain: str) -> str:
    try:
        domain.encode("ascii")
        return domain
    except UnicodeEncodeError:
        return domain.encode("idna").decode("ascii")


def make_address(field: str, email: str, name: str | None = None) -> Address:
    """An ``Address`` after refusing CR/LF/NUL and malformed addresses; an IDN domain is punycoded."""
    _check_value(field, email)
    _check_value(f"{field}_name", name or "")
    if email.count("@") != 1 or any(c in email for c in '<>",; \t()[]\\'):
        raise HeaderInjectionError(field, f"{field} is not a valid email address: {email!r}")
    local, domain = email.split("@")
    if not local or not domain:
        raise HeaderInjectionError(field, f"{field} is not a valid email address: {email!r}")
    try:
        return Address(display_name=name or "", username=local, domain=_idna_domain(domain))
    except (ValueError, UnicodeError) as exc:
        raise HeaderInjectionError(field, f"{field} is not a valid email address: {email!r}") from exc


def message_id(outbox_id: int | str, workspace_slug: str, domain: str) -> str:
    """``<outbox-{id}.{workspace_slug}@{domain}>``: the outbox id is recoverable from bounces and replies."""
    for field, value in (("outbox_id", str(outbox_id)), ("workspace_slug", workspace_slug), ("domain", domain)):
        if not re.fullmatch(r"[A-Za-z0-9.-]+", value):
            raise HeaderInjectionError(field, f"{field} may only hold letters, digits, dots and hyphens")
    return f"<outbox-{outbox_id}.{workspace_slug}@{_idna_domain(domain)}>"


_OUTBOX_ID = re.compile(r"<outbox-(\d+)\.([A-Za-z0-9-]+)@[^>]+>")


def outbox_id_of(message_id_value: str) -> tuple[int, str] | None:
    """The (outbox id, workspace slug) of a Message-ID built by :func:`message_id`, else ``None``."""
    match = _OUTBOX_ID.search(message_id_value or "")
    return (int(match.group(1)), match.group(2)) if match else None


def build_message(
    *,
    outbox_id: int | str,
    workspace_slug: str,
    domain: str,
    from_email: str,
    to_email: str,
    subject: str,
    text: str,
    html: str | None = None,
    from_name: str | None = None,
    to_name: str | None = None,
    reply_to: str | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    date: datetime | None = None,
) -> EmailMessage:
    """A multipart/alternative message (text, then html) ready for :func:`message_bytes` and :func:`sign_dkim`.

    ``headers`` adds headers such as ``List-Unsubscribe`` and ``List-Unsubscribe-Post``; a name outside
    ``[A-Za-z0-9-]`` or one suppilo sets itself (From, To, Subject, Message-ID, ...) is refused, and so is
    any value with CR/LF/NUL.
    """
    _check_value("subject", subject)
    sender = make_address("from", from_email, from_name)
    recipient = make_address("to", to_email, to_name)
    smtputf8 = not (sender.username.isascii() and recipient.username.isascii())
    msg = EmailMessage(policy=SMTPUTF8_POLICY if smtputf8 else SMTP_POLICY)
    msg["Message-ID"] = message_id(outbox_id, workspace_slug, domain)
    msg["Date"] = format_datetime((date or datetime.now(UTC)).astimezone(UTC))
    msg["From"] = sender
    msg["To"] = recipient
    if reply_to:
        msg["Reply-To"] = make_address("reply_to", reply_to)
    msg["Subject"] = subject
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    for name, value in items:
        if not _HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
            raise HeaderInjectionError(f"headers.{name}", f"the header {name!r} cannot be set here")
        msg[name] = _check_value(f"headers.{name}", str(value))
    body_text = text.replace("\r\n", "\n")
    msg.set_content(body_text, subtype="plain", charset="utf-8", cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html.replace("\r\n", "\n"), subtype="html", charset="utf-8", cte="quoted-printable")
    return msg


def message_bytes(msg: EmailMessage) -> bytes:
    """The wire form with CRLF line ends (what is signed and sent)."""
    return msg.as_bytes(policy=msg.policy)


def sign_dkim(
    message: bytes,
    *,
    selector: str,
    domain: str,
    private_key_pem: bytes | str,
    headers_to_sign: Iterable[str] | None = None,
) -> bytes:
    """The message with a ``DKIM-Signature`` (relaxed/relaxed, rsa-sha256, PEM RSA key) prepended.

    Signs the listed headers that are present, always including ``From``, ``List-Unsubscribe`` and
    ``List-Unsubscribe-Post`` when the message has them (RFC 8058 requires both to be covered).
    """
    key = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    head = message.split(b"\r\n\r\n", 1)[0].lower()
    present = {line.split(b":", 1)[0].strip() for line in head.split(b"\r\n") if line and line[:1] not in b" \t"}
    wanted = list(headers_to_sign or DEFAULT_SIGNED_HEADERS)
    for name in ALWAYS_SIGNED_WHEN_PRESENT:
        if name.lower() not in {w.lower() for w in wanted}:
            wanted.append(name)
    include = [w.encode() for w in wanted if w.lower().encode() in present]
    signature = dkim.sign(
        message,
        selector.encode(),
        _idna_domain(domain).encode(),
        key,
        include_headers=include,
        canonicalize=(b"relaxed", b"relaxed"),
    )
    return bytes(signature) + message


@dataclass(frozen=True, slots=True)
class DkimRecord:
    """The DNS TXT record that publishes a DKIM public key."""

    name: str
    value: str
    type: str = "TXT"

    def zone_line(self) -> str:
        """A BIND zone line, the value split into quoted strings of at most 255 characters."""
        chunks = [self.value[i : i + 255] for i in range(0, len(self.value), 255)]
        return f"{self.name}. IN TXT " + " ".join(f'"{c}"' for c in chunks)

    def __str__(self) -> str:
        return self.zone_line()


def dkim_dns_record(public_key_pem: bytes | str, selector: str, domain: str) -> DkimRecord:
    """The TXT record to publish at ``{selector}._domainkey.{domain}`` for a PEM RSA public key."""
    pem = public_key_pem.decode() if isinstance(public_key_pem, bytes) else public_key_pem
    body = "".join(line.strip() for line in pem.strip().splitlines() if not line.startswith("-----"))
    base64.b64decode(body, validate=True)
    return DkimRecord(f"{selector}._domainkey.{_idna_domain(domain)}", f"v=DKIM1; k=rsa; p={body}")


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


_RSA_ALGORITHM = _der(0x30, bytes.fromhex("06092a864886f70d010101") + b"\x05\x00")


def dkim_public_key_pem(private_key_pem: bytes | str) -> bytes:
    """The PEM SubjectPublicKeyInfo of a PEM RSA private key (PKCS#1 or PKCS#8), via dkimpy's key parser."""
    from dkim.crypto import parse_pem_private_key

    key = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
    pk = parse_pem_private_key(key.replace(b"\r\n", b"\n"))
    rsa_key = _der(0x30, _der_int(pk["modulus"]) + _der_int(pk["publicExponent"]))
    spki = _der(0x30, _RSA_ALGORITHM + _der(0x03, b"\x00" + rsa_key))
    b64 = base64.b64encode(spki).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return ("-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n").encode()


def generate_dkim_private_key(bits: int = 2048) -> bytes:
    """A new unencrypted PEM RSA private key, made by the ``openssl`` binary (as dkimpy's ``dknewkey`` does)."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl program is needed to generate a DKIM key")
    done = subprocess.run([openssl, "genrsa", str(int(bits))], capture_output=True, check=True)  # noqa: S603
    return done.stdout
