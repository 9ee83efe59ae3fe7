"""Shared helpers of the advocacy tests."""

from __future__ import annotations

import secrets
from typing import Any

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow

SECRET = "test-secret-" + "x" * 32
PUBLIC = "http://testserver"


def contact(session, ws: int, email: str | None, *, stage: str = "interest", **fields: Any) -> Contact:
    now = utcnow()
    c = Contact(
        workspace_id=ws,
        email=email,
        lifecycle_stage=stage,
        lifecycle_stage_at=now,
        created_at=now,
        updated_at=now,
        version=1,
        properties=fields.pop("properties", {}),
        **fields,
    )
    session.add(c)
    session.flush()
    return c


def unique_email(prefix: str = "p") -> str:
    return f"{prefix}-{secrets.token_hex(4)}@example.fi"
