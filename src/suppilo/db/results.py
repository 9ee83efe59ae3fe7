"""Typed access to what a DML statement reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import CursorResult, Result


def rowcount(result: Result[Any]) -> int:
    """The number of rows an UPDATE or DELETE matched (0 when the driver reports none).

    ``Session.execute`` is typed as returning ``Result``; for INSERT/UPDATE/DELETE it returns a ``CursorResult``,
    the only kind that has ``rowcount``. Anything else is a programming error.
    """
    if not isinstance(result, CursorResult):
        raise TypeError(f"rowcount needs the result of a DML statement, got {type(result).__name__}")
    return int(result.rowcount or 0)
