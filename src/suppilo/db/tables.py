"""The Table behind a mapped class, typed as one."""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.orm import DeclarativeBase


def table_of(model: type[DeclarativeBase]) -> Table:
    """``model.__table__`` as a ``Table``: declarative types it as a ``FromClause`` (a class may map a join or a
    select), while every model here maps one table; anything else is a programming error."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a single Table")
    return table
