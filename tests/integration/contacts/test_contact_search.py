"""Searching many contacts: a common prefix (walked in id order) and a rare one (answered from the prefix indexes)
both page through every match exactly once, newest first."""

from __future__ import annotations

from sqlalchemy import insert

from suppilo.contacts import repository, service
from suppilo.contacts.models import Contact
from suppilo.contacts.schemas import ContactFilter
from suppilo.db.base import utcnow


def _bulk(session, workspace_id: int, n: int) -> None:
    now = utcnow()
    rows = []
    for i in range(n):
        first = "mass" if i % 2 == 0 else "rare" if i % 97 == 0 else "other"
        last = "marsh" if i % 5 == 0 else "lee"
        rows.append(
            {
                "workspace_id": workspace_id,
                "email": f"u{i}@example.com",
                "is_anonymous": i % 50 == 1,
                "first_name": first.capitalize(),
                "last_name": last.capitalize(),
                "first_name_lower": first,
                "last_name_lower": last,
                "lifecycle_stage": "interest" if i % 3 == 0 else "awareness",
                "properties": {},
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
    session.execute(insert(Contact), rows)
    session.flush()


def _walk(session, workspace_id: int, flt: ContactFilter, limit: int = 40) -> list[int]:
    seen: list[int] = []
    cursor = None
    while True:
        page = service.list_contacts(session, workspace_id, flt, cursor=cursor, limit=limit)
        seen += [c.id for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return seen


def test_common_and_rare_prefixes_page_through_all_matches(session, workspace) -> None:
    n = 2 * repository.SPARSE_MATCHES + 400
    _bulk(session, workspace.id, n)
    everyone = {
        c.id: c
        for c in session.query(Contact).where(Contact.workspace_id == workspace.id, Contact.is_anonymous.is_(False))
    }

    def expected(pred) -> list[int]:
        return sorted((i for i, c in everyone.items() if pred(c)), reverse=True)

    assert repository.sparse_candidates(session, workspace.id, "ma", before_id=None) is None
    common = _walk(session, workspace.id, ContactFilter(q="MA"))
    assert common == expected(lambda c: c.first_name_lower.startswith("ma") or c.last_name_lower.startswith("ma"))
    assert repository.sparse_candidates(session, workspace.id, "rar", before_id=None) is not None
    rare = _walk(session, workspace.id, ContactFilter(q="rar"), limit=7)
    assert rare == expected(lambda c: c.first_name_lower == "rare") and len(rare) > 7
    staged = _walk(session, workspace.id, ContactFilter(q="mas", lifecycle_stage="interest"))
    assert staged == expected(lambda c: c.first_name_lower == "mass" and c.lifecycle_stage == "interest")
    assert _walk(session, workspace.id, ContactFilter(q="u1")) == expected(lambda c: c.email.startswith("u1"))
