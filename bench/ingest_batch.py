"""Throughput of /v1/batch (identity resolution included) against a bare bulk insert of the same event rows.

Starts the app with uvicorn on a free localhost port (SQLite under a temp dir by default, ``--postgres URL`` for a
fresh database on that server) the way ``suppilo serve`` does (uvicorn, uvloop + httptools, one worker process unless
``--workers``), sends pre-built Segment batches over keep-alive connections from a separate load-generator process,
and prints one JSON line {"bench", "figure", "unit", "baseline", "ratio"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.events.models import Event
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.schemas import WorkspaceCreate


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def database(pg_url: str | None):
    """A fresh database URL: a SQLite file in a temp dir, or a new database on the PostgreSQL server."""
    if pg_url:
        name = f"suppilo_bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(pg_url).set(database=name).render_as_string(hide_password=False)
        try:
            yield url, None
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{Path(tmp) / 'bench.sqlite3'}", tmp


def setup_workspace(url: str) -> tuple[int, str]:
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    with factory() as s:
        ws = workspaces_service.create_workspace(
            s, WorkspaceCreate(slug="bench", name="Bench", site_domains=["shop.example.fi"])
        )
        _, key = workspaces_service.create_api_key(s, ws.id, scopes=["track"])
        s.commit()
        ws_id = ws.id
    engine.dispose()
    return ws_id, key


def analyze(url: str) -> None:
    """PostgreSQL: ANALYZE once the first calls are in, as autovacuum does within a minute of a new table's first rows.

    A table that was never analyzed has no statistics: the planner then takes a ``workspace_id`` index for as good
    as the unique one and scans the workspace per looked-up value. A server that has run for a minute has
    statistics (later growth is scaled from the table's size), so the bench measures that state, not the first
    minute of a fresh database.
    """
    if not url.startswith("postgresql"):
        return
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE"))
    engine.dispose()


SERVER_PIDS: dict[str, int] = {}


def server_cpu(base: str) -> float:
    """CPU seconds (user + system) used so far by the server at ``base`` and its worker processes (Linux /proc).

    Under load, requests/s of a cheap endpoint measure how soon the scheduler wakes the server and the client
    more than what serving costs; CPU per request is the cost itself.
    """
    root = SERVER_PIDS[base]
    stats: dict[int, tuple[int, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in stats.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(stats[pid][1] for pid in tree if pid in stats)


@contextmanager
def server(
    url: str,
    data_dir: str,
    app: str = "suppilo.adapters.http.app:create_app",
    app_dir: str | None = None,
    workers: int = 1,
):
    port = free_port()
    env = {**os.environ, "SUPPILO_DATABASE_URL": url, "SUPPILO_DATA_DIR": data_dir, "SUPPILO_SECRET_KEY": "b" * 40}
    cmd = [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--log-level", "warning", "--no-access-log", "--workers", str(workers)]
    if app_dir:
        cmd += ["--app-dir", app_dir]
    proc = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    SERVER_PIDS[base] = proc.pid
    try:
        for _ in range(200):
            try:
                if httpx.get(base + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise RuntimeError("server did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


URLS = [
    "https://shop.example.fi/",
    "https://shop.example.fi/products",
    "https://shop.example.fi/products/kettle",
    "https://shop.example.fi/?utm_source=newsletter&utm_medium=email&utm_campaign=may",
    "https://shop.example.fi/?utm_source=google&utm_medium=cpc&utm_campaign=brand",
]
REFERRERS = ["", "", "https://www.google.com/", "https://shop.example.fi/", "https://t.co/abc"]


def make_batches(n_events: int, batch_size: int, visitors: int, seed: int = 7) -> list[list[dict[str, Any]]]:
    """Segment-shaped calls: 70 % page, 25 % track, 5 % identify, over a pool of visitors."""
    rnd = random.Random(seed)
    base = datetime(2024, 5, 1, tzinfo=UTC)
    calls = []
    for i in range(n_events):
        v = rnd.randrange(visitors)
        anon = f"anon-{v}"
        ts = (base + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
        url = rnd.choice(URLS)
        ctx = {
            "page": {"url": url, "referrer": rnd.choice(REFERRERS), "path": "/", "title": "Shop"},
            "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            "locale": "fi-FI",
            "library": {"name": "analytics.js", "version": "2.11.1"},
        }
        common = {
            "messageId": uuid.UUID(int=rnd.getrandbits(128)).hex,
            "anonymousId": anon,
            "timestamp": ts,
            "context": ctx,
        }
        r = rnd.random()
        if r < 0.70:
            calls.append({"type": "page", "name": "Home", "properties": {"url": url, "title": "Shop"}, **common})
        elif r < 0.95:
            calls.append(
                {"type": "track", "event": "Product Viewed", "properties": {"product_id": f"SKU-{v % 50}"}, **common}
            )
        else:
            calls.append(
                {
                    "type": "identify",
                    "userId": f"user-{v}",
                    "traits": {"email": f"person{v}@example.com", "firstName": "Bench", "lastName": f"P{v}"},
                    **common,
                }
            )
    return [calls[i : i + batch_size] for i in range(0, len(calls), batch_size)]


async def _post_loop(host: str, port: int, requests: list[bytes]) -> None:
    """Send pre-built HTTP/1.1 requests one after another over one keep-alive connection; any non-200 fails."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if status_line.split()[1] != b"200":
                raise RuntimeError(f"{status_line.decode().strip()}: {body[:300]!r}")
    finally:
        writer.close()


def _client(host: str, port: int, chunks: list[list[bytes]], out: Any) -> None:
    """The load generator's process: one asyncio task per connection; sends the elapsed seconds to ``out``."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(_post_loop(host, port, c) for c in chunks))
        return time.perf_counter() - start

    try:
        out.send(asyncio.run(run()))
    except Exception as exc:  # reported to the parent, which raises it
        out.send(exc)


def send_all(base: str, path: str, bodies: list[bytes], headers: dict[str, str], connections: int) -> float:
    """POST every body over ``connections`` keep-alive connections; returns the elapsed seconds.

    The load generator runs in its own process (asyncio, requests serialised up front), so the client's work
    does not compete with the server for the interpreter.
    """
    host, port = base.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    requests = [
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies
    ]
    chunks = [requests[i::connections] for i in range(connections)]
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_client, args=(host, int(port), chunks, child))
    proc.start()
    result = parent.recv()
    proc.join()
    if isinstance(result, Exception):
        raise result
    return float(result)


def bare_insert(url: str, ws_id: int, batches: list[list[dict[str, Any]]]) -> float:
    """Events/s of a bare bulk insert of the same event rows (one transaction per batch)."""
    engine = make_engine(url)
    table = Event.__table__
    now = datetime.now(UTC)
    rows_by_batch = [
        [
            {
                "workspace_id": ws_id,
                "contact_id": None,
                "anonymous_id": c["anonymousId"],
                "kind": c["type"],
                "name": c.get("event") or c.get("name") or c["type"],
                "properties": c.get("properties") or c.get("traits") or {},
                "context": c["context"],
                "occurred_at": datetime.fromisoformat(c["timestamp"].replace("Z", "+00:00")),
                "received_at": now,
                "message_id": "bare-" + c["messageId"],
            }
            for c in batch
        ]
        for batch in batches
    ]
    start = time.perf_counter()
    for rows in rows_by_batch:
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)
    elapsed = time.perf_counter() - start
    engine.dispose()
    return sum(len(r) for r in rows_by_batch) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL server URL (a fresh database is created)")
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--visitors", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--connections", type=int, default=4, help="concurrent keep-alive client connections")
    args = parser.parse_args()
    with database(args.postgres) as (url, tmp):
        data_dir = tmp or tempfile.mkdtemp()
        ws_id, key = setup_workspace(url)
        batches = make_batches(args.events, args.batch, args.visitors)
        bodies = [orjson.dumps({"batch": b, "sentAt": b[-1]["timestamp"]}) for b in batches]
        headers = {"Content-Type": "application/json", "Authorization": httpx.BasicAuth(key, "")._auth_header}
        with server(url, data_dir, workers=args.workers) as base:
            send_all(base, "/v1/batch", bodies[:2], headers, 1)  # warm-up (these events count as stored)
            analyze(url)
            load_before = os.getloadavg()[0]
            cpu_before = server_cpu(base)
            elapsed = send_all(base, "/v1/batch", bodies[2:], headers, args.connections)
            cpu = server_cpu(base) - cpu_before
            load_after = os.getloadavg()[0]
        sent = sum(len(b) for b in batches[2:])
        figure = sent / elapsed
        baseline = bare_insert(url, ws_id, batches)
        engine = make_engine(url)
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM events WHERE message_id NOT LIKE 'bare-%'")).scalar()
            contacts = conn.execute(sa.text("SELECT count(*) FROM contacts")).scalar()
        engine.dispose()
        if stored != args.events:
            raise SystemExit(f"stored {stored} events, expected {args.events}")
    print(
        json.dumps(
            {
                "bench": f"ingest_batch[{'postgresql' if args.postgres else 'sqlite'}]",
                "figure": round(figure),
                "unit": "events/s",
                "baseline": round(baseline),
                "ratio": round(figure / baseline, 3),
                "server_cpu_us_per_event": round(cpu / sent * 1e6, 1),
                "batch": args.batch,
                "events": args.events,
                "contacts": contacts,
                "workers": args.workers,
                "connections": args.connections,
                "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
