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


def _fill(table: sa.Table, **given: object) -> dict[str, object]:
    """A row for ``table`` as it was at an older revision: ``given`` plus a plain value for each required column."""
    from datetime import UTC, datetime

    row: dict[str, object] = dict(given)
    for col in table.columns:
        if col.name in row or col.nullable or col.server_default is not None:
            continue
        if col.primary_key and col.name == "id":
            continue
        t = col.type
        if isinstance(t, sa.Boolean):
            row[col.name] = False
        elif isinstance(t, sa.Integer | sa.Float | sa.Numeric):
            row[col.name] = 0
        elif isinstance(t, sa.DateTime):
            row[col.name] = datetime(2026, 11, 1, tzinfo=UTC)
        elif isinstance(t, sa.Date):
            row[col.name] = datetime(2026, 11, 1).date()
        elif isinstance(t, sa.JSON):
            row[col.name] = {}
        else:
            row[col.name] = "x"
    return row


def test_pre_rendered_bodies_move_to_their_own_table(empty_url: str) -> None:
    """0003 moves the bodies of pre-rendered messages out of outbox_messages: a queued message keeps its content."""
    engine = make_engine(empty_url)
    upgrade(engine, "0002")
    body = {"subject": "Tervetuloa", "preheader": "Hei", "html": "<p>Hei Liisa</p>", "text": "Hei Liisa"}
    with engine.begin() as conn:
        meta = sa.MetaData()
        workspaces = sa.Table("workspaces", meta, autoload_with=conn)
        outbox = sa.Table("outbox_messages", meta, autoload_with=conn)
        outbox.c.rendered.type = sa.JSON()  # reflected as plain JSON/JSONB; make SQLite decode it too
        ws = conn.execute(workspaces.insert().values(_fill(workspaces, slug="migr", name="Migr"))).inserted_primary_key[
            0
        ]
        queued = _fill(outbox, workspace_id=ws, dedupe_key="a", status="queued", rendered=body)
        templated = _fill(outbox, workspace_id=ws, dedupe_key="b", status="queued", rendered=None)
        conn.execute(outbox.insert(), [queued])
        conn.execute(outbox.insert(), [templated])
    upgrade(engine)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT m.dedupe_key, b.subject, b.preheader, b.html, b.text FROM outbox_messages m "
                "LEFT JOIN outbox_bodies b ON b.outbox_id = m.id ORDER BY m.dedupe_key"
            )
        ).all()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("outbox_messages")}
    engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("a", "Tervetuloa", "Hei", "<p>Hei Liisa</p>", "Hei Liisa"),
        ("b", None, None, None, None),
    ]
    assert "rendered" not in columns


def test_segment_memberships_survive_losing_their_workspace_key(empty_url: str) -> None:
    """0004 drops the memberships' own workspace foreign key (on SQLite by rebuilding the tables): every membership
    and history row is still there afterwards, and a segment's count reads as before (no deltas yet)."""
    engine = make_engine(empty_url)
    upgrade(engine, "0003")
    with engine.begin() as conn:
        meta = sa.MetaData()
        tables = {
            name: sa.Table(name, meta, autoload_with=conn)
            for name in ("workspaces", "contacts", "segments", "segment_memberships", "segment_membership_changes")
        }
        for t in tables.values():
            for col in t.columns:
                if isinstance(col.type, sa.JSON) or col.type.__class__.__name__ == "JSONB":
                    col.type = sa.JSON()
        ws = conn.execute(
            tables["workspaces"].insert().values(_fill(tables["workspaces"], slug="segm", name="Segm"))
        ).inserted_primary_key[0]
        contacts = [
            conn.execute(
                tables["contacts"].insert().values(_fill(tables["contacts"], workspace_id=ws, email=f"c{i}@ex.fi"))
            ).inserted_primary_key[0]
            for i in range(3)
        ]
        seg = conn.execute(
            tables["segments"]
            .insert()
            .values(_fill(tables["segments"], workspace_id=ws, name="Hot leads", member_count=3))
        ).inserted_primary_key[0]
        conn.execute(
            tables["segment_memberships"].insert(),
            [_fill(tables["segment_memberships"], workspace_id=ws, segment_id=seg, contact_id=c) for c in contacts],
        )
        conn.execute(
            tables["segment_membership_changes"].insert(),
            [
                _fill(tables["segment_membership_changes"], workspace_id=ws, segment_id=seg, contact_id=c)
                for c in contacts
            ],
        )
    upgrade(engine)
    with engine.connect() as conn:
        members = conn.execute(
            sa.text("SELECT contact_id FROM segment_memberships WHERE segment_id = :s ORDER BY contact_id"), {"s": seg}
        ).scalars()
        changes = conn.execute(
            sa.text("SELECT count(*) FROM segment_membership_changes WHERE segment_id = :s"), {"s": seg}
        ).scalar()
        count = conn.execute(sa.text("SELECT member_count FROM segments WHERE id = :s"), {"s": seg}).scalar()
        member_list = list(members)
    engine.dispose()
    assert member_list == sorted(contacts)
    assert changes == 3 and count == 3
