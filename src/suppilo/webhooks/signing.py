"""Webhook signatures: ``X-Suppilo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.

The body is the exact bytes received (canonical JSON: keys sorted, no spaces, UTF-8). A receiver checks the
signature with the shared secret and refuses old timestamps so a captured request cannot be replayed later::

    from suppilo.webhooks.signing import verify_signature

    ok = verify_signature(request.headers["X-Suppilo-Signature"], raw_body, secret, tolerance_s=300)

The same check in any language: split the header on ``,`` into ``t`` and ``v1`` values, compute
``hex(hmac_sha256(secret, t + "." + body))``, compare in constant time with any ``v1``, and accept only when
``|now - t| <= tolerance``. Several ``v1`` entries may appear while a secret is being rotated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

SIGNATURE_HEADER = "X-Suppilo-Signature"
IDEMPOTENCY_HEADER = "X-Suppilo-Idempotency-Key"
DEFAULT_TOLERANCE_S = 300.0


def canonical_json(payload: Any) -> bytes:
    """The payload as canonical JSON bytes: sorted keys, no whitespace, UTF-8, no NaN/Infinity."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def compute_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` with ``secret``."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-Suppilo-Signature`` value for ``body`` sent at ``timestamp``."""
    return f"t={int(timestamp)},v1={compute_signature(body, secret, timestamp)}"


def parse_signature_header(header: str) -> tuple[int, list[str]] | None:
    """``(timestamp, [v1 signatures])`` from a header, or None when it is malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if timestamp is not None or not value.isdigit() or len(value) > 12:
                return None
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.lower())
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def verify_signature(
    header: str | None,
    body: bytes,
    secret: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid signature of ``body`` with ``secret`` made within ``tolerance_s`` seconds of
    ``now`` (unix seconds; default the current time). Constant-time comparison; a malformed header is False."""
    if not header or not secret:
        return False
    parsed = parse_signature_header(header)
    if parsed is None:
        return False
    timestamp, signatures = parsed
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    expected = compute_signature(body, secret, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
