"""Screenshots of the templates editor and preview, a report and the settings into docs/screenshots/.

Builds the same small Pohjola Outdoor demo workspace as scripts/screenshots.py (reusing its helpers), serves it
under uvicorn and drives Debian's Chromium:

    .venv/bin/python scripts/screenshots_templates.py [--contacts 2000] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import importlib.util
import threading
import time
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import sync_playwright
from sqlalchemy import select

from suppilo.adapters.http.app import create_app
from suppilo.contacts.models import Contact
from suppilo.messaging import service as templates_service

_spec = importlib.util.spec_from_file_location("shots", Path(__file__).with_name("screenshots.py"))
assert _spec is not None and _spec.loader is not None
shots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shots)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _tmp, settings, engine, factory, params, setup = shots.build_demo(args.contacts)
    shots.record_spend(factory, setup.workspace_id, params.today)
    admin = next(u for u in setup.users if u["role"] == "admin")
    with factory() as s:
        template = next(t for t in templates_service.list_templates(s, setup.workspace_id) if t.variants)
        contact = s.scalar(
            select(Contact)
            .where(
                Contact.workspace_id == setup.workspace_id, Contact.first_name.is_not(None), Contact.email.is_not(None)
            )
            .order_by(Contact.id)
            .limit(1)
        )
        assert contact is not None
        template_id, contact_id, query = template.id, contact.id, contact.first_name
    engine.dispose()

    import uvicorn

    port = shots.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    year_ago = params.today - timedelta(days=365)
    pages = {
        "templates": "/app/w/demo/templates",
        "template-editor": f"/app/w/demo/templates/{template_id}?lang=fi",
        "template-preview": f"/app/w/demo/templates/{template_id}/preview?q={query}&contact={contact_id}&lang=fi",
        "report-attribution": f"/app/w/demo/reports/attribution?from={year_ago}&to={params.today}",
        "report-spend": f"/app/w/demo/reports/spend?from={year_ago}&to={params.today}",
        "settings": "/app/w/demo/settings/workspace",
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shots.CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860}, locale="en-GB")
        page.goto(base + "/app/login")
        page.get_by_label("Email").fill(admin["email"])
        page.get_by_label("Password").fill(admin["password"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/app/w/demo/")
        for name, path in pages.items():
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            if name == "template-preview":
                # A sandboxed frame is drawn by its own renderer: wait for it, and shoot a tall viewport rather
                # than a full-page capture, which leaves such frames blank.
                page.frame_locator("#preview-html").locator("h1").wait_for()
                page.set_viewport_size({"width": 1280, "height": 1500})
                page.locator("#preview").scroll_into_view_if_needed()
                page.screenshot(path=str(args.out / f"{name}.png"))
                page.set_viewport_size({"width": 1280, "height": 860})
                continue
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=name.startswith("report"))
        browser.close()
    server.should_exit = True
    thread.join(timeout=10)
    for name in pages:
        png = args.out / f"{name}.png"
        print(f"{png} {png.stat().st_size // 1024} kB")


if __name__ == "__main__":
    main()
