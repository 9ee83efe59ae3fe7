"""Which paths the attribution report gathers (set-based, one grouped query): a customer whose touches all came
before the period keeps them, the first order's value is the earliest order's (the first stored one at a tie),
cancelled orders are no first order, and a contact that bought before the period is no non-converting path."""

from __future__ import annotations

from datetime import date

import pytest

from suppilo.analytics import service

from .builders import contact

MARCH = (date(2025, 3, 1), date(2025, 3, 31))


def test_paths_gathered_for_the_period(session, workspace) -> None:
    ws = workspace.id
    # Converts in March; its only touch was in February: the path still has it.
    contact(session, ws, "display", touches=[("display", "2025-02-10")], orders=[("2025-03-05", 4_000, "EUR")])
    # Two orders at the same moment: the first stored one is the conversion's value.
    contact(
        session,
        ws,
        "email",
        touches=[("email", "2025-03-01"), ("email", "2025-03-20")],
        orders=[("2025-03-09", 2_000, "EUR"), ("2025-03-09", 9_000, "EUR")],
    )
    # A cancelled order is no purchase: this contact's first order is the completed one in March.
    contact(
        session,
        ws,
        "paid_social",
        touches=[("paid_social", "2025-02-25"), ("affiliate", "2025-03-02")],
        orders=[("2025-02-26", 7_000, "EUR", "cancelled"), ("2025-03-03", 3_000, "EUR")],
    )
    # Bought in January, touched in March: left out. A contact touched only after the period: left out.
    contact(session, ws, "email", touches=[("referral", "2025-03-04")], orders=[("2025-01-04", 5_000, "EUR")])
    contact(session, ws, "email", touches=[("podcast", "2025-04-04")])
    # Touched in March and in February, buying only in April: a non-converting path of its March touches.
    contact(
        session,
        ws,
        "video",
        touches=[("video", "2025-02-01"), ("organic_search", "2025-03-06")],
        orders=[("2025-04-02", 1_000, "EUR")],
    )
    rep = service.attribution_report(session, ws, *MARCH, "channel")
    assert (rep["paths"], rep["conversions"], rep["revenue_minor"]) == (4, 3, 9_000)
    first = {c["key"]: (c["conversions"], c["revenue"]) for c in rep["models"]["first_touch"]["credits"]}
    assert first["display"] == (1.0, 4_000.0)
    assert first["email"] == (1.0, 2_000.0)  # the 03-20 touch came after the conversion
    assert first["paid_social"] == (1.0, 3_000.0)
    assert first["organic_search"] == (0.0, 0.0) and "video" not in first  # a path, not converting
    assert not {"referral", "podcast"} & set(first)
    last = {c["key"]: c["conversions"] for c in rep["models"]["last_touch"]["credits"]}
    assert last["affiliate"] == pytest.approx(1.0) and last["email"] == pytest.approx(1.0)
