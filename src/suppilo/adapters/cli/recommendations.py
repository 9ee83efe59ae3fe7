"""``suppilo recommendations``: recompute from the orders, show what goes with a product or suits a contact."""

from __future__ import annotations

from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, console, emit_json, fail, resolve_workspace
from suppilo.analytics.rates import minor_exponent
from suppilo.db.base import utcnow
from suppilo.errors import DomainError
from suppilo.recommendations import service

rec_app = typer.Typer(help="Product recommendations: bought together, similar customers, best-sellers.")


def register(app: typer.Typer) -> None:
    """Add ``suppilo recommendations`` to the root app."""
    app.add_typer(rec_app, name="recommendations", no_args_is_help=True)


def _price(minor: int, currency: str) -> str:
    exp = minor_exponent(currency)
    return f"{minor / 10**exp:.{exp}f} {currency}"


@rec_app.command("recompute")
def recompute(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Recompute the workspace's rules, similar products and best-sellers from all its orders now."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        total = service.count_lines(session, ws.id)
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=as_json,
        ) as progress:
            task = progress.add_task("reading order lines", total=total)
            result = service.recompute(session, ws.id, utcnow(), progress=lambda n: progress.advance(task, n))
            progress.update(task, completed=total, description="computed")
    if as_json:
        emit_json(result)
        return
    console.print(
        f"{result['lines']} order lines in {result['orders']} orders of {result['customers']} customers: "
        f"{result['together_rules']} bought-together rules, {result['similar_pairs']} similar-product pairs, "
        f"{result['best_sellers']} best-sellers ({result['duration_ms']} ms)."
    )


@rec_app.command("product")
def product(
    product_id: int = typer.Argument(..., help="Product id."),
    limit: int = typer.Option(10, "--limit", min=1, max=50),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Products often bought together with this one, then bought by the same customers."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            rows: list[dict[str, Any]] = service.for_product(session, ws.id, product_id, limit=limit)
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("No recommendations (recompute first, or the product has too few orders).")
        return
    table = Table("id", "sku", "name", "price", "kind", "support", "confidence", "lift", "score")
    for r in rows:
        table.add_row(
            str(r["product_id"]),
            r["sku"],
            r["name"],
            _price(r["price_minor"], r["currency"]),
            r["kind"],
            f"{r['support']:.4f}",
            f"{r['confidence']:.3f}",
            f"{r['lift']:.2f}",
            f"{r['score']:.3f}",
        )
    console.print(table)


@rec_app.command("contact")
def contact(
    contact_id: int = typer.Argument(..., help="Contact id."),
    limit: int = typer.Option(4, "--limit", min=1, max=50),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Products for a contact, with the reason each was picked."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            rows: list[dict[str, Any]] = service.for_contact(session, ws.id, contact_id, limit=limit)
    except DomainError as exc:
        fail(f"{exc.field}: {exc.message}")
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("No recommendations (recompute first, or the workspace has no orders).")
        return
    table = Table("id", "sku", "name", "category", "price", "reason")
    for r in rows:
        table.add_row(
            str(r["product_id"]),
            r["sku"],
            r["name"],
            r["category"] or "",
            _price(r["price_minor"], r["currency"]),
            r["reason"],
        )
    console.print(table)
