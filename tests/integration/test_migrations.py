"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from suppilo.db.migrate import upgrade
from suppilo.db.registry import Base
from suppilo.db.session import make_engine
from tests.conftest import PG_URL, _drop_pg_database, _fresh_pg_database


@pytest.fixture
def empty_url(tmp_path):
    if PG_URL:
        url, name = _fresh_pg_database(PG_URL)
        yield url
        _drop_pg_database(PG_URL, name)
    else:
        yield f"sqlite:///{tmp_path / 'migrated.sqlite3'}"


def test_upgrade_head_matches_models(empty_url: str) -> None:
    engine = make_engine(empty_url)
    upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) <= tables
    assert diff == [], f"models and migrations differ; run scripts/regen_initial_migration.py: {diff}"
