"""`suppilo serve --workers 2`: two API processes answer real HTTP, tracking calls reach the database, and a SIGTERM
to the parent leaves no process behind."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from suppilo.db.migrate import upgrade
from suppilo.db.session import make_engine, make_session_factory
from suppilo.events.models import Event
from tests.conftest import PG_URL, _drop_pg_database, _fresh_pg_database, make_workspace

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process trees from /proc")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc; zombies count as gone)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, ppid = fields[0], int(fields[1])
        if state != "Z":
            parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.fixture
def migrated_url(tmp_path: Path):
    """A database built by the migrations, as `suppilo serve` expects (the suite's own is built from the models)."""
    if PG_URL:
        url, name = _fresh_pg_database(PG_URL)
    else:
        url, name = f"sqlite:///{tmp_path / 'served.sqlite3'}", ""
    engine = make_engine(url)
    upgrade(engine)
    try:
        yield url, engine
    finally:
        engine.dispose()
        if name:
            _drop_pg_database(PG_URL, name)


def test_serve_with_two_api_processes_stores_calls_and_stops_cleanly(migrated_url, tmp_path: Path) -> None:
    database_url, engine = migrated_url
    session_factory = make_session_factory(engine)
    workspace = make_workspace(session_factory)
    port = _free_port()
    env = dict(os.environ)
    env.update(SUPPILO_DATABASE_URL=database_url, SUPPILO_DATA_DIR=str(tmp_path))
    log_path = tmp_path / "serve.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "suppilo.adapters.cli.main",
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--no-worker",
            "--no-mail-catcher",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    tree: set[int] = set()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240  # two interpreters importing the app on a loaded 2-core machine
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                up = httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                up = False
            if up:
                break
            time.sleep(0.5)
        assert up, f"server did not answer /healthz (exit code {proc.poll()}): {log_path.read_text()[-2000:]}"

        # the uvicorn supervisor and its two API processes run under the command
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_descendants(proc.pid)) < 3:
            time.sleep(0.5)
        tree = _descendants(proc.pid)
        assert len(tree) >= 3, f"expected a supervisor and two API processes, found {sorted(tree)}"

        auth = "Basic " + base64.b64encode(f"{workspace.track_key}:".encode()).decode()
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": auth}) as client:
            for i in range(20):
                res = client.post(
                    "/v1/track",
                    json={"anonymousId": f"anon-{i % 4}", "event": "Workers Test", "messageId": f"workers-{i}"},
                )
                assert res.status_code == 200, res.text
        with session_factory() as s:
            stored = s.scalar(
                select(func.count())
                .select_from(Event)
                .where(Event.workspace_id == workspace.id, Event.name == "Workers Test")
            )
        assert stored == 20
    finally:
        tree |= _descendants(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in tree):
        time.sleep(0.2)
    assert not [pid for pid in tree if _alive(pid)], "API processes outlived the serve command"
    assert proc.returncode in (0, 128 + signal.SIGTERM), log_path.read_text()[-2000:]
