"""The advocacy consumer job: referral attribution from landing URLs (touches) and referral rewards (stage
changes), each stream read from its own cursor, one transaction per batch."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from suppilo.advocacy.referrals import SCAN_LIMIT, process_stage_changes, process_touches


def run_advocacy(factory: sessionmaker[Session]) -> int:
    """Attribute new landing-URL referrals first (a visitor may convert in the same batch), then grant rewards for
    new stage changes; returns rows read."""
    total = 0
    for fn in (process_touches, process_stage_changes):
        while True:
            with factory() as session:
                n = fn(session)
                session.commit()
            total += n
            if n < SCAN_LIMIT:
                break
    return total
