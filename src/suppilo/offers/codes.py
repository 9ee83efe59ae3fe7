"""Coupon codes: unguessable, human-friendly, with two check characters so typos are refused before a lookup.

A code is ``PAYLOAD_LENGTH`` random characters (``secrets``) of a 32-letter alphabet without 0/O/1/I, followed by two
check characters, shown in groups of four (``ABCD-EFGH-JK23``). The check characters make the weighted sum
``Σ wᵢ·vᵢ`` of all character values ≡ 0 (mod 1021): the payload weights are 1..n, the two check characters weigh
``32k`` and ``k`` (k = n + 1), so together they add ``k·(32a + b)`` and 32a + b takes every residue of the prime 1021.
Changing one character changes the sum by ``w·δ`` with 0 < |δ| < 32 and w ≢ 0 (mod 1021); swapping two adjacent
different characters changes it by ``(wᵢ − wᵢ₊₁)·δ``, and adjacent weights differ. Both are therefore always caught.
"""

from __future__ import annotations

import re
import secrets

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
PAYLOAD_LENGTH = 10
CODE_LENGTH = PAYLOAD_LENGTH + 2
GROUP = 4
MODULUS = 1021
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}
_K = PAYLOAD_LENGTH + 1
_SEPARATORS = re.compile(r"[\s\-_.]+")


def _weights(length: int) -> list[int]:
    """Weights of a code of ``length`` characters (payload, then the two check characters)."""
    payload = length - 2
    k = payload + 1
    return [*range(1, payload + 1), 32 * k, k]


def _check_pair(payload: str) -> str:
    weights = _weights(len(payload) + 2)
    total = sum(w * _VALUE[ch] for w, ch in zip(weights, payload, strict=False))
    k = len(payload) + 1
    # k · x ≡ −total (mod p)  →  x = −total · k⁻¹ (mod p), 0 ≤ x < 1021 < 32²
    x = (-total * pow(k, -1, MODULUS)) % MODULUS
    return ALPHABET[x // 32] + ALPHABET[x % 32]


def with_check(payload: str) -> str:
    """``payload`` (alphabet characters) followed by its two check characters."""
    if not payload or any(ch not in _VALUE for ch in payload):
        raise ValueError("the payload must be non-empty and use only the code alphabet")
    return payload + _check_pair(payload)


def new_code(length: int = PAYLOAD_LENGTH) -> str:
    """A fresh random code (without separators), 5 bits of entropy per payload character."""
    return with_check("".join(secrets.choice(ALPHABET) for _ in range(length)))


def new_codes(count: int, length: int = PAYLOAD_LENGTH) -> list[str]:
    """``count`` fresh random codes at once (one ``secrets.token_bytes`` call: 256 is a multiple of the alphabet's
    32 letters, so ``byte % 32`` is uniform)."""
    raw = secrets.token_bytes(count * length)
    return [with_check("".join(ALPHABET[b & 31] for b in raw[i * length : (i + 1) * length])) for i in range(count)]


def normalize(text: str) -> str:
    """A code as typed (any case, spaces or dashes) in its stored form: upper case, no separators."""
    return _SEPARATORS.sub("", text).upper()


def is_valid(code: str) -> bool:
    """True when the (normalised) code has the right length, alphabet and check characters."""
    if len(code) != CODE_LENGTH or any(ch not in _VALUE for ch in code):
        return False
    return sum(w * _VALUE[ch] for w, ch in zip(_weights(len(code)), code, strict=True)) % MODULUS == 0


def display(code: str) -> str:
    """The code in groups of four for printing (``ABCD-EFGH-JK23``)."""
    return "-".join(code[i : i + GROUP] for i in range(0, len(code), GROUP))
