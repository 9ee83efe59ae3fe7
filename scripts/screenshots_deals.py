"""Screenshots of the sales pages into docs/screenshots/: a deal page (BANT, tasks, proposals, objections,
activities, history), my tasks and the forecast view.

Builds the Pohjola Outdoor demo workspace (its living pipeline: deals with histories, BANT, tasks, proposals and
objections) in a temporary SQLite database, serves it under uvicorn and drives Debian's Chromium through Playwright,
logged in as the demo's sales user:

    .venv/bin/python scripts/screenshots_deals.py [--contacts 2000] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import importlib.util
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright
from sqlalchemy import func, select

from suppilo.adapters.http.app import create_app
from suppilo.deals.models import Deal, DealObjection, Proposal, Task

CHROMIUM = "/usr/bin/chromium"


_spec = importlib.util.spec_from_file_location("shots", Path(__file__).with_name("screenshots.py"))
assert _spec is not None and _spec.loader is not None
demo_shots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_shots)


def richest_open_deal(factory, workspace_id: int) -> int:
    """The open deal with the most proposals, objections and tasks (the page shows every section filled)."""
    with factory() as s:
        score = {}
        for model in (Proposal, DealObjection, Task):
            rows = s.execute(
                select(model.deal_id, func.count())
                .where(model.workspace_id == workspace_id, model.deal_id.is_not(None))
                .group_by(model.deal_id)
            )
            for deal_id, n in rows:
                score[deal_id] = score.get(deal_id, 0) + 1 + min(int(n), 3)
        open_ids = set(s.scalars(select(Deal.id).where(Deal.workspace_id == workspace_id, Deal.status == "open")))
        return max((d for d in score if d in open_ids), key=lambda d: (score[d], -d))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _tmp, settings, engine, factory, _params, setup = demo_shots.build_demo(args.contacts)
    deal_id = richest_open_deal(factory, setup.workspace_id)
    sales = next(u for u in setup.users if u["role"] == "sales")
    engine.dispose()

    import uvicorn

    port = demo_shots.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    shots = {
        "deal": f"/app/w/demo/deals/{deal_id}",
        "tasks": "/app/w/demo/tasks",
        "forecast": "/app/w/demo/forecast?group_by=month&stalls_by=team",
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860}, locale="en-GB")
        page.goto(base + "/app/login")
        page.get_by_label("Email").fill(sales["email"])
        page.get_by_label("Password").fill(sales["password"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/app/w/demo/")
        for name, path in shots.items():
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=name != "tasks")
        browser.close()
    server.should_exit = True
    thread.join(timeout=10)
    for name in shots:
        png = args.out / f"{name}.png"
        print(f"{png} {png.stat().st_size // 1024} kB")


if __name__ == "__main__":
    main()
