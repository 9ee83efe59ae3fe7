"""``suppilo referrals`` / ``suppilo surveys`` / ``suppilo reviews``: the referral programme, NPS/CSAT surveys and
review moderation from the command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from suppilo.adapters.cli.common import JsonOpt, WorkspaceOpt, cli_session, emit_json, fail, resolve_workspace
from suppilo.advocacy import service
from suppilo.advocacy.schemas import ReferralRead, ReviewRead, SurveyCreate, SurveyRead
from suppilo.errors import DomainError
from suppilo.offers import codes

referrals_app = typer.Typer(help="The referral programme: codes, attribution, leaderboard.", no_args_is_help=True)
surveys_app = typer.Typer(help="NPS and CSAT surveys: create, send, results.", no_args_is_help=True)
reviews_app = typer.Typer(help="Reviews: list, moderate, export for the website.", no_args_is_help=True)
out = Console()


def register(app: typer.Typer) -> None:
    """Add ``suppilo referrals``, ``suppilo surveys`` and ``suppilo reviews`` to the root app."""
    app.add_typer(referrals_app, name="referrals")
    app.add_typer(surveys_app, name="surveys")
    app.add_typer(reviews_app, name="reviews")


def _domain_fail(exc: DomainError) -> None:
    fail(escape(f"{exc.field + ': ' if exc.field else ''}{exc.message} [{exc.code}]"))


def _settings() -> tuple[str, str]:
    from suppilo.config import get_settings

    cfg = get_settings()
    return cfg.resolved_secret_key(), cfg.public_url


# --- referrals --------------------------------------------------------------------------------------------------


@referrals_app.command("code")
def code(
    contact_id: int = typer.Argument(..., help="The advocate's contact id."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print (creating it on first use) the contact's personal referral code and link."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            row = service.get_or_create_code(session, ws.id, contact_id)
            data = {"contact_id": row.contact_id, "code": row.code, "display": codes.display(row.code),
                    "url": service.referral_url(_settings()[1], row.code)}  # fmt: skip
    except DomainError as exc:
        _domain_fail(exc)
        return
    if as_json:
        emit_json(data)
    else:
        out.print(f"[bold]{data['display']}[/bold]  {data['url']}")


@referrals_app.command("attribute")
def attribute(
    ref_code: str = typer.Argument(..., help="The referral code."),
    contact_id: int = typer.Argument(..., help="The referred contact."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Attribute a contact to a code's owner (a refusal is stored and shown with its reason)."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            row = service.attribute(session, ws.id, code=ref_code, referred_contact_id=contact_id, source="cli")
            data = ReferralRead.model_validate(row).model_dump(mode="json")
    except DomainError as exc:
        _domain_fail(exc)
        return
    if as_json:
        emit_json(data)
    elif data["status"] == "refused":
        out.print(f"refused: {data['reason']} ({escape(data['detail'] or '')})")
    else:
        out.print(f"referral {data['id']}: contact {data['referred_id']} referred by {data['referrer_id']}")


@referrals_app.command("leaderboard")
def leaderboard(
    limit: int = typer.Option(20, "--limit"), workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt
) -> None:
    """Referrers by converted referrals."""
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        rows = service.leaderboard(session, ws.id, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table = Table("contact", "email", "referrals", "converted", "refused", "rewards", "points")
    for r in rows:
        table.add_row(str(r["contact_id"]), escape(r["email"] or ""), str(r["referrals"]), str(r["converted"]),
                      str(r["refused"]), str(r["rewards"]), str(r["reward_points"]))  # fmt: skip
    out.print(table)


@referrals_app.command("run")
def run(as_json: bool = JsonOpt) -> None:
    """Run the consumer once: landing-URL attributions and rewards for referred contacts who reached the stage."""
    from suppilo.advocacy.tasks import run_advocacy
    from suppilo.config import get_settings
    from suppilo.db.session import make_engine, make_session_factory

    engine = make_engine(get_settings().resolved_database_url())
    try:
        n = run_advocacy(make_session_factory(engine))
    finally:
        engine.dispose()
    if as_json:
        emit_json({"rows_read": n})
    else:
        out.print(f"{n} new touches and stage changes read")


# --- surveys ----------------------------------------------------------------------------------------------------


@surveys_app.command("create")
def create_survey(
    name: str = typer.Argument(...),
    kind: str = typer.Option("nps", "--kind", help="nps | csat"),
    template: str | None = typer.Option(None, "--template", help="Template key (nps_survey for NPS by default)."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Define a survey."""
    try:
        data = SurveyCreate.model_validate({"name": name, "kind": kind, "template_key": template})
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            survey = SurveyRead.model_validate(service.create_survey(session, ws.id, data)).model_dump(mode="json")
    except DomainError as exc:
        _domain_fail(exc)
        return
    except ValueError as exc:
        fail(escape(str(exc)))
        return
    if as_json:
        emit_json(survey)
    else:
        out.print(f"survey {survey['id']} ({survey['kind']}, template {survey['template_key']})")


@surveys_app.command("send")
def send(
    survey_id: int = typer.Argument(...),
    contacts: list[int] = typer.Option(..., "--contact", "-c", help="A contact id (repeatable)."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Queue the survey mail for contacts (each once per survey)."""
    secret, public_url = _settings()
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            result = service.send_survey(session, ws.id, survey_id, contacts, secret=secret, public_url=public_url)
    except DomainError as exc:
        _domain_fail(exc)
        return
    if as_json:
        emit_json(result)
    else:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(result["skipped"].items())) or "none"
        out.print(f"{result['queued']} queued; skipped: {skipped}")


@surveys_app.command("results")
def results(
    survey_id: int = typer.Argument(...),
    period: str = typer.Option("month", "--period", help="day | week | month | quarter"),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """NPS (or CSAT average), response rate, per period."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            data = service.results(session, ws.id, survey_id, period=period)
    except DomainError as exc:
        _domain_fail(exc)
        return
    if as_json:
        emit_json(data)
        return
    head = f"NPS {data['nps']}" if data["kind"] == "nps" else f"CSAT {data['csat_average']}"
    out.print(f"{head}; {data['responses']} answers of {data['sent']} sent (rate {data['response_rate']} %)")
    table = Table("period", "sent", "answers", "NPS" if data["kind"] == "nps" else "CSAT")
    for p in data["periods"]:
        table.add_row(p["period"], str(p["sent"]), str(p["responses"]),
                      str(p["nps"] if data["kind"] == "nps" else p["csat_average"]))  # fmt: skip
    out.print(table)


# --- reviews ----------------------------------------------------------------------------------------------------


@reviews_app.command("list")
def list_reviews(
    status: str | None = typer.Option("pending", "--status", help="pending | approved | rejected"),
    limit: int = typer.Option(50, "--limit"),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Reviews, newest first (pending by default)."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            rows = [
                ReviewRead.model_validate(r).model_dump(mode="json")
                for r in service.list_reviews(session, ws.id, status=status, limit=limit)
            ]
    except DomainError as exc:
        _domain_fail(exc)
        return
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "status", "rating", "product", "author", "text")
    for r in rows:
        table.add_row(str(r["id"]), r["status"], "★" * r["rating"], escape(r["product_sku"] or ""),
                      escape(r["author_name"]), escape(r["text"][:60]))  # fmt: skip
    out.print(table)


@reviews_app.command("approve")
def approve(
    review_id: int = typer.Argument(...), workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt
) -> None:
    """Publish a review (its author earns the loyalty review bonus once)."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            data = ReviewRead.model_validate(service.approve(session, ws.id, review_id, actor="cli"))
            data_out = data.model_dump(mode="json")
    except DomainError as exc:
        _domain_fail(exc)
        return
    emit_json(data_out) if as_json else out.print(f"review {review_id} approved")


@reviews_app.command("reject")
def reject(
    review_id: int = typer.Argument(...),
    reason: str = typer.Option(..., "--reason"),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Hide a review with the reason."""
    try:
        with cli_session() as session:
            ws = resolve_workspace(session, workspace)
            data_out = ReviewRead.model_validate(
                service.reject(session, ws.id, review_id, reason=reason, actor="cli")
            ).model_dump(mode="json")
    except DomainError as exc:
        _domain_fail(exc)
        return
    emit_json(data_out) if as_json else out.print(f"review {review_id} rejected")


@reviews_app.command("export")
def export(
    fmt: str = typer.Option("csv", "--format", help="csv | json"),
    product: str | None = typer.Option(None, "--product", help="Only this SKU."),
    out_file: Path | None = typer.Option(None, "--out", help="Write to this file instead of standard output."),
    workspace: str | None = WorkspaceOpt,
) -> None:
    """Approved reviews for the website (names shortened; CSV cells safe for spreadsheets)."""
    if fmt not in ("csv", "json"):
        fail("format must be csv or json")
    with cli_session() as session:
        ws = resolve_workspace(session, workspace)
        body = (service.export_csv if fmt == "csv" else service.export_json)(session, ws.id, product_sku=product)
    if out_file is not None:
        out_file.write_text(body, encoding="utf-8", newline="")
        out.print(f"written to {out_file}")
    else:
        typer.echo(body, nl=False)
