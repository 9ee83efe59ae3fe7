"""Screenshots of the companies list, a company page, the import's column mapping and a merge preview into
docs/screenshots/.

Builds the same small Pohjola Outdoor demo workspace as scripts/screenshots.py (the demo loader, company fit scores
from its ICP), serves it under uvicorn and drives Debian's Chromium: the companies list filtered by an industry, the
company with the most contacts, a HubSpot-style CSV uploaded to the import page (the mapping step guessed from its
header), and the merge preview of two contacts:

    .venv/bin/python scripts/screenshots_records.py [--contacts 2000] [--out docs/screenshots]
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
from suppilo.companies.models import Company
from suppilo.contacts.models import Contact

_spec = importlib.util.spec_from_file_location("shots", Path(__file__).with_name("screenshots.py"))
assert _spec is not None and _spec.loader is not None
shots = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shots)

CSV = (
    "Email Address,First Name,Last Name,Phone Number,Company Name,Country/Region,Preferred language,"
    "Lifecycle Stage,Tags,Notes\n"
    """aino.laine@nordhotel.fi,Aino,Laine,+358 40 123 4567,Nordic Hotels,FI,fi,lead,trade-fair;hotel,Met at Matka 2026
erik.berg@fjallgarden.se,Erik,Berg,+46 70 123 45 67,Fjällgården,SE,sv,marketingqualifiedlead,hotel,
mette.holm@kystbo.dk,Mette,Holm,,Kystbo,DK,da,opportunity,gift,Asked for a quote
janis.ozols@riga-gifts.lv,Jānis,Ozols,+371 2000 0000,Riga Gifts,LV,lv,lead,,
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp, settings, engine, factory, _params, setup = shots.build_demo(args.contacts)
    with factory() as s:
        company_id = s.execute(
            select(Contact.company_id)
            .where(Contact.workspace_id == setup.workspace_id, Contact.company_id.is_not(None))
            .group_by(Contact.company_id)
            .order_by(func.count().desc())
            .limit(1)
        ).scalar_one()
        industry = s.scalar(select(Company.industry).where(Company.id == company_id))
        pair = list(
            s.scalars(
                select(Contact.id)
                .where(Contact.workspace_id == setup.workspace_id, Contact.email.is_not(None))
                .order_by(Contact.id)
                .limit(2)
            )
        )
    admin = next(u for u in setup.users if u["role"] == "admin")
    engine.dispose()
    csv_path = tmp / "hubspot-contacts.csv"
    csv_path.write_text(CSV, encoding="utf-8")

    import uvicorn

    port = shots.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    names = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shots.CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860}, locale="en-GB")
        page.goto(base + "/app/login")
        page.get_by_label("Email").fill(admin["email"])
        page.get_by_label("Password").fill(admin["password"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/app/w/demo/")

        def shot(name: str, full: bool = False) -> None:
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=full)
            names.append(name)

        page.goto(f"{base}/app/w/demo/companies?industry={industry or ''}")
        shot("companies")
        page.goto(f"{base}/app/w/demo/companies/{company_id}")
        shot("company", full=True)
        page.goto(f"{base}/app/w/demo/imports")
        page.get_by_label("CSV file").set_input_files(str(csv_path))
        page.get_by_role("button", name="Upload and map the columns").click()
        page.get_by_role("heading", name="Map the columns").wait_for()
        shot("import-mapping", full=True)
        page.goto(f"{base}/app/w/demo/contacts/{pair[0]}/merge?other={pair[1]}")
        shot("merge-preview", full=True)
        browser.close()
    server.should_exit = True
    thread.join(timeout=10)
    for name in names:
        png = args.out / f"{name}.png"
        print(f"{png} {png.stat().st_size // 1024} kB")


if __name__ == "__main__":
    main()
