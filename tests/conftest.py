"""Test harness: one database per pytest worker (SQLite file, or a fresh PostgreSQL database when
``SUPPILO_TEST_DATABASE_URL`` names a server), a fresh workspace per test, and a report per run that CI reads."""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from suppilo.config import Settings
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate

PG_URL = os.environ.get("SUPPILO_TEST_DATABASE_URL", "").strip()
DIALECT = "postgresql" if PG_URL else "sqlite"
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")


def _fresh_pg_database(server_url: str) -> tuple[str, str]:
    """Create an empty database on the server of ``server_url``; returns (url, name)."""
    name = f"suppilo_test_{WORKER}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    return url, name


def _drop_pg_database(server_url: str, name: str) -> None:
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of this worker's test database, created empty and migrated by ``db_engine``."""
    if PG_URL:
        url, name = _fresh_pg_database(PG_URL)
        yield url
        _drop_pg_database(PG_URL, name)
    else:
        path = tmp_path_factory.mktemp("db") / "suppilo.sqlite3"
        yield f"sqlite:///{path}"


@pytest.fixture(scope="session")
def db_engine(database_url: str) -> Iterator[Engine]:
    """An engine on the test database with every table created."""
    engine = make_engine(database_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def session_factory(db_engine: Engine) -> sessionmaker[Session]:
    """Session factory on the test database."""
    return make_session_factory(db_engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session; tests commit what they want other sessions (and HTTP requests) to see."""
    with session_factory() as s:
        yield s
        s.rollback()


@dataclass
class WorkspaceFixture:
    """A fresh workspace and keys of every scope."""

    id: int
    slug: str
    admin_key: str
    write_key: str
    read_key: str
    track_key: str

    def auth(self, scope: str = "admin") -> dict[str, str]:
        """Authorization header for a key of ``scope``."""
        key = {"admin": self.admin_key, "write": self.write_key, "read": self.read_key, "track": self.track_key}[scope]
        return {"Authorization": f"Bearer {key}"}


def make_workspace(factory: sessionmaker[Session], **overrides: object) -> WorkspaceFixture:
    """Create a committed workspace with one key per scope."""
    slug = f"ws-{secrets.token_hex(5)}"
    data = {
        "slug": slug,
        "name": f"Test {slug}",
        "currency": "EUR",
        "timezone": "Europe/Helsinki",
        "country": "FI",
        "address_line1": "Mannerheimintie 1",
        "postal_code": "00100",
        "city": "Helsinki",
        "address_country": "FI",
        "site_domains": ["shop.example.fi"],
    }
    data.update(overrides)
    with factory() as s:
        ws = workspaces_service.create_workspace(s, WorkspaceCreate(**data))  # type: ignore[arg-type]
        keys = {
            scope: workspaces_service.create_api_key(s, ws.id, scopes=[scope])[1]
            for scope in ("admin", "write", "read", "track")
        }
        s.commit()
        return WorkspaceFixture(ws.id, slug, keys["admin"], keys["write"], keys["read"], keys["track"])


@pytest.fixture
def workspace(session_factory: sessionmaker[Session]) -> WorkspaceFixture:
    """A fresh workspace for this test (tests never see each other's data)."""
    return make_workspace(session_factory)


@pytest.fixture
def other_workspace(session_factory: sessionmaker[Session]) -> WorkspaceFixture:
    """A second workspace, for isolation tests."""
    return make_workspace(session_factory)


@pytest.fixture(scope="session")
def test_settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings pointing at the test database and a temporary data directory."""
    data_dir = tmp_path_factory.mktemp("data")
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        secret_key="test-secret-" + "x" * 32,
        public_url="http://testserver",
    )


@pytest.fixture(scope="session")
def app(test_settings: Settings, db_engine: Engine):
    """The FastAPI app on the test database."""
    from suppilo.adapters.http.app import create_app

    return create_app(test_settings)


@pytest.fixture
def client(app):
    """An HTTP client for the app (in-process ASGI)."""
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c


# --- the report CI reads to know which databases really ran -------------------------------------------------------

_counts = {"passed": 0, "failed": 0, "skipped": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if report.passed and report.when == "call":
            _counts["passed"] += 1
        elif report.failed:
            _counts["failed"] += 1
        elif report.skipped:
            _counts["skipped"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Under xdist the controller receives every worker's reports, so only it writes the report.
    if WORKER != "main":
        return
    out = Path(session.config.rootpath) / ".test-report"
    out.mkdir(exist_ok=True)
    (out / f"{DIALECT}-{WORKER}.json").write_text(json.dumps({"dialect": DIALECT, "worker": WORKER, **_counts}))


def pytest_report_header(config: pytest.Config) -> str:
    return f"suppilo test database: {DIALECT}"
