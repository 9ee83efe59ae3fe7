"""Screenshots of the web interface's main pages into docs/screenshots/ (PNG, 1280 px wide).

Builds a small Pohjola Outdoor demo workspace (the deterministic demo generator) in a temporary SQLite database,
records marketing spend the way the demo's channel economics describe it (cost per paid click, cost per contact
for events/outbound/offline), catches one message in the built-in mail catcher, serves suppilo under uvicorn and
drives Debian's Chromium through Playwright:

    .venv/bin/python scripts/screenshots.py [--contacts 3000] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from playwright.sync_api import sync_playwright
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from suppilo.adapters.http.app import create_app
from suppilo.analytics import service as analytics
from suppilo.analytics.schemas import SpendCreate
from suppilo.config import Settings
from suppilo.contacts.models import Contact
from suppilo.db.registry import Base
from suppilo.db.session import make_engine, make_session_factory
from suppilo.deals import service as deals_service
from suppilo.deals.schemas import DealCreate, DealMove
from suppilo.demo import loader
from suppilo.demo.generator import DemoParams
from suppilo.demo.params import CHANNEL_COST_PER_CONTACT_EUR, CHANNEL_CPC_EUR
from suppilo.events.models import Touch
from suppilo.messaging import mime
from suppilo.messaging.catcher import MailStore

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_demo(contacts: int) -> tuple[Path, Settings, Engine, sessionmaker[Session], DemoParams, Any]:
    """The deterministic Pohjola Outdoor demo workspace ``demo`` in a new temporary SQLite database."""
    tmp = Path(tempfile.mkdtemp(prefix="suppilo-shots-"))
    settings = Settings(data_dir=tmp, database_url=f"sqlite:///{tmp / 'suppilo.sqlite3'}", secret_key="s" * 40)
    engine = make_engine(settings.resolved_database_url())
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    params = DemoParams(seed=1, contacts=contacts)
    with factory() as s:
        setup = loader.setup_workspace(s, params, "demo")
        s.commit()
    result = loader.load_data(engine, setup.workspace_id, params)
    with factory() as s:
        loader.mark_complete(s, setup.workspace_id, params, result)
        s.commit()
    return tmp, settings, engine, factory, params, setup


def record_spend(factory, workspace_id: int, today: date, days: int = 365) -> None:
    """Daily spend per channel: paid touches × cost per click, plus cost per first-touch contact where fixed."""
    start = datetime.combine(today - timedelta(days=days), datetime.min.time(), tzinfo=UTC)
    with factory() as s:
        day = func.date(Touch.occurred_at)
        clicks = s.execute(
            select(day, Touch.channel, func.count())
            .where(Touch.workspace_id == workspace_id, Touch.occurred_at >= start)
            .group_by(day, Touch.channel)
        ).all()
        fday = func.date(Contact.first_touch_at)
        firsts = s.execute(
            select(fday, Contact.first_touch_channel, func.count())
            .where(Contact.workspace_id == workspace_id, Contact.first_touch_at >= start)
            .group_by(fday, Contact.first_touch_channel)
        ).all()
        amounts: dict[tuple[str, str], float] = {}
        for d, channel, n in clicks:
            if CHANNEL_CPC_EUR.get(channel or "", 0.0) > 0:
                amounts[(str(d), channel)] = amounts.get((str(d), channel), 0.0) + n * CHANNEL_CPC_EUR[channel]
        for d, channel, n in firsts:
            if channel in CHANNEL_COST_PER_CONTACT_EUR:
                cost = n * CHANNEL_COST_PER_CONTACT_EUR[channel]
                amounts[(str(d), channel)] = amounts.get((str(d), channel), 0.0) + cost
        for (d, channel), eur in sorted(amounts.items()):
            analytics.add_spend(
                s,
                workspace_id,
                SpendCreate(
                    date=date.fromisoformat(d[:10]), channel=channel, amount_minor=round(eur * 100), currency="EUR"
                ),
            )
        s.commit()


def open_deals(factory, workspace_id: int) -> None:
    """A few wholesale deals for contacts in the decision stage, spread over the pipeline."""
    with factory() as s:
        pipeline = deals_service.ensure_default_pipeline(s, workspace_id)
        stages = deals_service.pipeline_stages(s, workspace_id, [pipeline.id])[pipeline.id]
        open_stages = [st for st in stages if st.kind == "open"]
        rows = s.execute(
            select(Contact.id, Contact.company_id, Contact.last_name)
            .where(Contact.workspace_id == workspace_id, Contact.lifecycle_stage == "decision")
            .order_by(Contact.id)
            .limit(14)
        ).all()
        for i, (cid, company_id, last) in enumerate(rows):
            deal = deals_service.create_deal(
                s,
                workspace_id,
                DealCreate(
                    name=f"Wholesale order {last or cid}",
                    contact_id=cid,
                    company_id=company_id,
                    amount_minor=(i % 5 + 1) * 125_000,
                    currency="EUR",
                ),
            )
            target = open_stages[i % len(open_stages)]
            if target.id != deal.stage_id:
                deals_service.move_deal(s, workspace_id, deal.id, DealMove(stage_id=target.id))
        s.commit()


def catch_welcome_mail(data_dir: Path, slug: str) -> None:
    raw = mime.build_message(
        outbox_id=1,
        workspace_slug=slug,
        domain="pohjola-outdoor.example",
        from_email="hello@pohjola-outdoor.example",
        from_name="Pohjola Outdoor",
        to_email="aino.virtanen@example.fi",
        to_name="Aino Virtanen",
        subject="Tervetuloa Pohjola Outdoorin kerhoon!",
        text="Hei Aino,\n\nkiitos liittymisestä! Syksyn retkeilyvinkit ja jäsenedut tulevat pian.\n\nPohjola Outdoor",
        html=(
            "<html><body style='font-family:sans-serif;background:#f4f1ea;padding:24px'>"
            "<h1 style='color:#1d4d2b'>Tervetuloa, Aino!</h1>"
            "<p>Kiitos liittymisestä Pohjola Outdoorin kerhoon. Syksyn retkeilyvinkit ja jäsenedut tulevat pian.</p>"
            "<p style='color:#555'>Pohjola Outdoor · Eteläranta 12 · 00130 Helsinki</p></body></html>"
        ),
    )
    data = mime.message_bytes(raw)
    MailStore(data_dir).store("hello@pohjola-outdoor.example", ["aino.virtanen@example.fi"], data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp, settings, engine, factory, params, setup = build_demo(args.contacts)
    record_spend(factory, setup.workspace_id, params.today)
    catch_welcome_mail(tmp, "demo")
    open_deals(factory, setup.workspace_id)
    admin = next(u for u in setup.users if u["role"] == "admin")
    with factory() as s:
        customer = s.scalar(
            select(Contact.id)
            .where(
                Contact.workspace_id == setup.workspace_id,
                Contact.lifecycle_stage == "loyal",
                Contact.first_name.is_not(None),
            )
            .order_by(Contact.id)
            .limit(1)
        )
    engine.dispose()

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    shots = {
        "login": "/app/login",
        "dashboard": "/app/w/demo/?days=365",
        "contacts": "/app/w/demo/contacts?q=a",
        "contact": f"/app/w/demo/contacts/{customer}",
        "pipeline": "/app/w/demo/pipeline",
        "mail": "/app/w/demo/mail",
        "mail-message": "/app/w/demo/mail/1",
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 860}, locale="en-GB")
        page.goto(base + shots["login"])
        page.screenshot(path=str(args.out / "login.png"))
        page.get_by_label("Email").fill(admin["email"])
        page.get_by_label("Password").fill(admin["password"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/app/w/demo/")
        for name, path in shots.items():
            if name == "login":
                continue
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / f"{name}.png"), full_page=name == "dashboard")
        browser.close()
    server.should_exit = True
    thread.join(timeout=10)
    for png in sorted(args.out.glob("*.png")):
        print(f"{png} {png.stat().st_size // 1024} kB")


if __name__ == "__main__":
    main()
