"""Coupon codes: the check characters catch every single-character change and every adjacent swap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from suppilo.offers import codes

payloads = st.text(alphabet=codes.ALPHABET, min_size=codes.PAYLOAD_LENGTH, max_size=codes.PAYLOAD_LENGTH)


@given(payloads)
def test_every_generated_form_is_valid(payload: str) -> None:
    assert codes.is_valid(codes.with_check(payload))


@settings(max_examples=300)
@given(payloads, st.integers(min_value=0, max_value=codes.CODE_LENGTH - 1), st.sampled_from(codes.ALPHABET))
def test_any_single_character_change_is_detected(payload: str, position: int, replacement: str) -> None:
    code = codes.with_check(payload)
    changed = code[:position] + replacement + code[position + 1 :]
    assert codes.is_valid(changed) == (changed == code)


@settings(max_examples=300)
@given(payloads, st.integers(min_value=0, max_value=codes.CODE_LENGTH - 2))
def test_any_adjacent_swap_is_detected(payload: str, position: int) -> None:
    code = codes.with_check(payload)
    swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]
    assert codes.is_valid(swapped) == (swapped == code)


def test_codes_are_friendly_and_typed_forms_normalise() -> None:
    code = codes.new_code()
    assert len(code) == codes.CODE_LENGTH and not set(code) & set("01OI")
    assert codes.is_valid(codes.normalize(codes.display(code).lower().replace("-", " - ")))
    assert not codes.is_valid(code[:-1]) and not codes.is_valid(code + "A")
    assert len({codes.new_code() for _ in range(10_000)}) == 10_000
