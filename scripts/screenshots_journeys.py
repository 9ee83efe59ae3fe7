"""Screenshots of the journeys list, a journey page, the playbook gallery and the segment builder into
docs/screenshots/.

Builds the same small Pohjola Outdoor demo workspace as scripts/screenshots.py (reusing its helpers), enables a few
playbooks, enrols some contacts and lets the runner walk them (the welcome mails are queued in the outbox), saves a
segment, serves it under uvicorn and drives Debian's Chromium:

    .venv/bin/python scripts/screenshots_journeys.py [--contacts 2000] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import importlib.util
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from sqlalchemy import select

from suppilo.adapters.http.app import create_app
from suppilo.contacts.models import Contact
from suppilo.journeys import playbooks
from suppilo.journeys import service as journeys_service
from suppilo.journeys.runner import run_due
from suppilo.segments import service as segments_service
from suppilo.segments.schemas import SegmentCreate

_spec = importlib.util.spec_from_file_location("shots", Path(__file__).with_name("screenshots.py"))
assert _spec is not None and _spec.loader is not None
shots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shots)

SEGMENT_FILTER = {
    "and": [
        {
            "and": [
                {"type": "contact", "field": "country", "op": "in", "value": ["FI", "SE"]},
                {"type": "stage", "op": "in", "value": ["customer", "loyal"]},
            ]
        },
        {
            "or": [
                {"type": "order_count", "op": "gte", "value": 2},
                {"type": "last_order", "op": "within_last_days", "value": 180},
            ]
        },
    ]
}


def journeys_with_numbers(factory, workspace_id: int) -> int:
    """Enable three playbooks, enrol contacts into two of them and walk them; returns the welcome journey's id."""
    with factory() as s:
        existing = {j.playbook: j.id for j in journeys_service.list_journeys(s, workspace_id) if j.playbook}
        for key in ("welcome_series", "abandoned_cart", "win_back", "cross_sell"):
            if key not in existing:
                existing[key] = playbooks.enable(s, workspace_id, key, {}, actor="screenshots").id
        ids = list(
            s.scalars(
                select(Contact.id)
                .where(Contact.workspace_id == workspace_id, Contact.email.is_not(None))
                .order_by(Contact.id)
                .limit(120)
            )
        )
        journeys_service.enrol_contacts(s, workspace_id, existing["welcome_series"], ids[:80], key="shots")
        journeys_service.enrol_contacts(s, workspace_id, existing["abandoned_cart"], ids[80:], key="shots")
        s.commit()
    run_due(factory)
    return existing["welcome_series"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _tmp, settings, engine, factory, _params, setup = shots.build_demo(args.contacts)
    welcome = journeys_with_numbers(factory, setup.workspace_id)
    with factory() as s:
        segment = segments_service.create_segment(
            s,
            setup.workspace_id,
            SegmentCreate(name="Nordic repeat customers", description="Customers in FI or SE who buy again",
                          filter=SEGMENT_FILTER),
        )  # fmt: skip
        s.commit()
        segment_id = segment.id
    admin = next(u for u in setup.users if u["role"] == "admin")
    engine.dispose()

    import uvicorn

    port = shots.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    pages = {
        "journeys": ("/app/w/demo/journeys", False),
        "journey": (f"/app/w/demo/journeys/{welcome}", True),
        "playbooks": ("/app/w/demo/journeys/playbooks", False),
        "segment-builder": (f"/app/w/demo/segments/{segment_id}/edit", True),
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shots.CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860}, locale="en-GB")
        page.goto(base + "/app/login")
        page.get_by_label("Email").fill(admin["email"])
        page.get_by_label("Password").fill(admin["password"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/app/w/demo/")
        for name, (path, full) in pages.items():
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=full)
        browser.close()
    server.should_exit = True
    thread.join(timeout=10)
    for name in pages:
        png = args.out / f"{name}.png"
        print(f"{png} {png.stat().st_size // 1024} kB")


if __name__ == "__main__":
    main()
