"""Requests/s of single /v1/track calls against a trivial async POST served by the same server the same way.

Starts the app (plus one bench-only route, ``POST /bench/noop``) with uvicorn on a free localhost port,
the way ``suppilo serve`` does (one worker process unless ``--workers``), sends calls over keep-alive connections
from a separate load-generator process and prints one JSON line
{"bench", "figure", "unit", "baseline", "ratio"}. SQLite by default, ``--postgres URL`` for PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import orjson
from fastapi import FastAPI, Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_batch import analyze, database, send_all, server, server_cpu, setup_workspace

NOOP_OK = orjson.dumps({"success": True})


async def noop(request: Request) -> Response:
    """The baseline: served like the tracking endpoints (an async route on the event loop, no thread per request),
    it reads the body, parses it with orjson, checks the fields a call needs and answers, storing nothing."""
    payload = orjson.loads(await request.body())
    if not (isinstance(payload, dict) and isinstance(payload.get("anonymousId"), str) and payload.get("event")):
        return Response(b'{"success": false}', status_code=422, media_type="application/json")
    return Response(NOOP_OK, media_type="application/json", headers={"Access-Control-Allow-Origin": "*"})


def make_app() -> FastAPI:
    """The suppilo app with a trivial async POST as the baseline (registered like the tracking routes)."""
    from suppilo.adapters.http.app import create_app

    app = create_app()
    app.router.add_api_route("/bench/noop", noop, methods=["POST"])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", metavar="URL")
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--visitors", type=int, default=500)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive client connections")
    args = parser.parse_args()
    with database(args.postgres) as (url, tmp):
        data_dir = tmp or tempfile.mkdtemp()
        _, key = setup_workspace(url)
        bodies = [
            orjson.dumps(
                {
                    "messageId": uuid.uuid4().hex,
                    "anonymousId": f"anon-{i % args.visitors}",
                    "event": "Product Viewed",
                    "properties": {"product_id": f"SKU-{i % 40}", "price": 19.9},
                    "context": {
                        "page": {"url": "https://shop.example.fi/products/kettle", "referrer": ""},
                        "ip": "203.0.113.7",
                        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                        "locale": "fi-FI",
                    },
                    "timestamp": "2024-05-01T10:00:00.000Z",
                    "sentAt": "2024-05-01T10:00:00.100Z",
                }
            )
            for i in range(args.requests)
        ]
        headers = {"Content-Type": "application/json", "Authorization": httpx.BasicAuth(key, "")._auth_header}
        app_dir = str(Path(__file__).resolve().parent)
        with server(url, data_dir, app="track_single:make_app", app_dir=app_dir, workers=args.workers) as base:
            send_all(base, "/v1/track", bodies[:50], headers, 1)
            send_all(base, "/bench/noop", bodies[:50], headers, 1)
            analyze(url)
            load_before = os.getloadavg()[0]
            n = len(bodies) - 50
            cpu = server_cpu(base)
            baseline = n / send_all(base, "/bench/noop", bodies[50:], headers, args.connections)
            cpu_noop, cpu = server_cpu(base) - cpu, server_cpu(base)
            figure = n / send_all(base, "/v1/track", bodies[50:], headers, args.connections)
            cpu_track = server_cpu(base) - cpu
            load_after = os.getloadavg()[0]
    print(
        json.dumps(
            {
                "bench": f"track_single[{'postgresql' if args.postgres else 'sqlite'}]",
                "figure": round(figure),
                "unit": "requests/s",
                "baseline": round(baseline),
                "ratio": round(figure / baseline, 3),
                # what a request costs the server (all its processes), tracked call and baseline
                "server_cpu_us_per_request": round(cpu_track / n * 1e6),
                "baseline_server_cpu_us_per_request": round(cpu_noop / n * 1e6),
                "workers": args.workers,
                "connections": args.connections,
                "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
