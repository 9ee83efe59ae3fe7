"""``suppilo offers`` / ``suppilo loyalty``: define offers, generate and redeem coupon codes, loyalty balances."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import select

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, emit_json, fail, resolve_workspace
from suppilo.errors import DomainError
from suppilo.loyalty import service as loyalty_service
from suppilo.loyalty.tasks import run_loyalty
from suppilo.offers import codes, service
from suppilo.offers.models import Coupon
from suppilo.offers.schemas import OfferCreate, OfferRead

offers_app = typer.Typer(help="Offers and coupon codes.", no_args_is_help=True)
loyalty_app = typer.Typer(
    help="The loyalty programme: balances and the periodic expiry/tier run.", no_args_is_help=True
)
out = Console()


def register(app: typer.Typer) -> None:
    """Add ``suppilo offers`` and ``suppilo loyalty`` to the root app."""
    app.add_typer(offers_app, name="offers")
    app.add_typer(loyalty_app, name="loyalty")


def _domain_fail(exc: DomainError) -> None:
    fail(escape(f"{exc.field + ': ' if exc.field else ''}{exc.message} [{exc.code}]"))


@offers_app.command("create")
def create(
    key: str = typer.Argument(..., help="Offer key, unique in the workspace (e.g. winback-10)."),
    name: str = typer.Option(..., "--name", help="Name shown to staff."),
    kind: str = typer.Option("percent", "--kind", help="percent | fixed | free_product."),
    percent: int | None = typer.Option(None, "--percent", help="Percentage off (percent offers)."),
    amount: int | None = typer.Option(None, "--amount", help="Amount off in minor units (fixed offers)."),
    currency: str | None = typer.Option(None, "--currency", help="Currency of --amount."),
    sku: str | None = typer.Option(None, "--sku", help="The free product's SKU (free_product offers)."),
    min_order: int | None = typer.Option(None, "--min-order", help="Minimum order in minor units."),
    valid_until: datetime | None = typer.Option(None, "--valid-until", help="End of the offer (UTC)."),
    valid_days: int | None = typer.Option(None, "--valid-days", help="Each coupon expires this many days after issue."),
    limit: int | None = typer.Option(None, "--per-customer-limit", help="Redemptions per customer."),
    value_rule: str | None = typer.Option(None, "--value-rule", help='JSON, e.g. {"by":"ltv","tiers":[...]}.'),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Define an offer."""
    try:
        rule = json.loads(value_rule) if value_rule else None
    except json.JSONDecodeError as exc:
        fail(f"value_rule: not JSON ({exc.msg})")
        return
    until = valid_until.replace(tzinfo=valid_until.tzinfo or UTC) if valid_until else None
    try:
        data = OfferCreate.model_validate(
            {
                "key": key,
                "name": name,
                "kind": kind,
                "percent": percent,
                "amount_minor": amount,
                "currency": currency,
                "product_sku": sku,
                "min_order_minor": min_order,
                "valid_until": until,
                "valid_days": valid_days,
                "per_customer_limit": limit,
                "value_rule": rule,
            }
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}")
        return
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        try:
            offer = service.create_offer(session, ws.id, data)
        except DomainError as exc:
            _domain_fail(exc)
            return
        result = OfferRead.model_validate(offer).model_dump(mode="json")
    if as_json:
        emit_json(result)
    else:
        out.print(f"offer [bold]{key}[/bold] created ({kind})")


@offers_app.command("list")
def list_offers(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """The workspace's offers."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        rows = [OfferRead.model_validate(o).model_dump(mode="json") for o in service.list_offers(session, ws.id)]
    if as_json:
        emit_json(rows)
        return
    table = Table(title=f"Offers ({len(rows)})")
    for col in ("key", "name", "kind", "value", "min order", "valid until", "active"):
        table.add_column(col)
    for o in rows:
        value = (
            f"{o['percent']} %"
            if o["kind"] == "percent"
            else f"{o['amount_minor']} {o['currency']}"
            if o["kind"] == "fixed"
            else o["product_sku"]
        )
        rule = " (rule)" if o["value_rule"] else ""
        minimum = f"{o['min_order_minor']} {o['min_order_currency']}" if o["min_order_minor"] is not None else "–"
        table.add_row(
            o["key"],
            o["name"],
            o["kind"],
            f"{value}{rule}",
            minimum,
            str(o["valid_until"] or "–"),
            "yes" if o["active"] else "no",
        )
    out.print(table)


@offers_app.command("generate")
def generate(
    key: str = typer.Argument(..., help="Offer key."),
    count: int = typer.Argument(..., min=1, max=10_000_000, help="How many codes."),
    batch: str | None = typer.Option(None, "--batch", help="Batch label (default: a fresh one)."),
    out_file: Path | None = typer.Option(None, "--out", help="Write the codes to this CSV file."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Generate COUNT single-use codes for anyone (e.g. for a flyer), with a progress bar."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        columns = (TextColumn("codes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), disable=as_json) as progress:
            task = progress.add_task("codes", total=count)
            try:
                label, stored = service.generate_codes(
                    session,
                    ws.id,
                    offer_key=key,
                    count=count,
                    batch=batch,
                    progress=lambda n: progress.update(task, completed=n),
                )
            except DomainError as exc:
                _domain_fail(exc)
                return
        if out_file is not None:
            rows = session.execute(
                select(Coupon.code, Coupon.expires_at)
                .where(Coupon.workspace_id == ws.id, Coupon.batch == label)
                .order_by(Coupon.id)
            )
            with out_file.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["code", "expires_at"])
                for code, expires in rows:
                    writer.writerow([codes.display(code), expires.isoformat() if expires else ""])
    result = {"offer_key": key, "batch": label, "count": stored, "file": str(out_file) if out_file else None}
    if as_json:
        emit_json(result)
    else:
        out.print(f"{stored} codes stored in batch [bold]{label}[/bold]" + (f" → {out_file}" if out_file else ""))


@offers_app.command("issue")
def issue(
    key: str = typer.Argument(..., help="Offer key."),
    contact: int | None = typer.Option(None, "--contact", help="Contact id (none: a code for anyone)."),
    idempotency_key: str = typer.Option(..., "--idempotency-key", help="The same key returns the same coupon."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Issue one coupon."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        try:
            coupon = service.issue_coupon(
                session, ws.id, offer_key=key, contact_id=contact, idempotency_key=idempotency_key
            )
        except DomainError as exc:
            _domain_fail(exc)
            return
        data = service.coupon_reads(session, ws.id, [coupon])[0].model_dump(mode="json")
    if as_json:
        emit_json(data)
    else:
        out.print(f"{data['display']}  expires {data['expires_at'] or 'never'}")


@offers_app.command("redeem")
def redeem(
    code: str = typer.Argument(..., help="The code as typed."),
    contact: int | None = typer.Option(None, "--contact", help="Contact id of the customer."),
    total: int | None = typer.Option(None, "--total", help="Order total before the discount, minor units."),
    currency: str | None = typer.Option(None, "--currency", help="Currency of --total."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Redeem a code (refused with the reason when it is used, expired, someone else's, ...)."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        try:
            redemption = service.redeem(
                session,
                ws.id,
                code,
                contact_id=contact,
                order_total_minor=total,
                currency=currency.upper() if currency else None,
            )
        except DomainError as exc:
            _domain_fail(exc)
            return
        data = service.redemption_read(session, ws.id, redemption).model_dump(mode="json")
    if as_json:
        emit_json(data)
    else:
        off = f"{data['discount_minor']} {data['currency']}" if data["discount_minor"] is not None else "–"
        out.print(f"redeemed {codes.display(data['code'])}: discount {off}")


@loyalty_app.command("balance")
def balance(
    contact_id: int = typer.Argument(..., help="Contact id."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A contact's points, tier and the points expiring soonest."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        try:
            data: dict[str, Any] = loyalty_service.balance(session, ws.id, contact_id)
        except DomainError as exc:
            _domain_fail(exc)
            return
    if as_json:
        emit_json(data)
        return
    out.print(f"contact {contact_id}: [bold]{data['points']}[/bold] points, tier {data['tier'] or '–'}")
    if data["next_tier"]:
        out.print(f"  {data['to_next_tier']} more ({data['tier_basis']}) to {data['next_tier']}")
    if data["expiring_points"]:
        out.print(f"  {data['expiring_points']} points expire from {data['next_expiry_at']}")


@loyalty_app.command("run")
def run(as_json: bool = JsonOpt) -> None:
    """Expire due points and re-evaluate tiers in every workspace with an enabled programme (the periodic job)."""
    from suppilo.config import get_settings
    from suppilo.db.session import make_engine, make_session_factory

    engine = make_engine(get_settings().resolved_database_url())
    try:
        totals = run_loyalty(make_session_factory(engine))
    finally:
        engine.dispose()
    if as_json:
        emit_json(totals)
    else:
        out.print(
            f"{totals['workspaces']} programmes: {totals['expired_points']} points expired "
            f"({totals['expired_entries']} entries), {totals['tier_changes']} tier changes"
        )
