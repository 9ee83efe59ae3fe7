"""CLI commands: ``suppilo mail list/show`` (the built-in mail catcher) and ``suppilo mail dkim-record/dkim-keygen``."""

from __future__ import annotations

import os
import sys
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import typer
from rich.table import Table

from suppilo.adapters.cli.common import JsonOpt, console, emit_json, fail
from suppilo.config import get_settings
from suppilo.messaging.catcher import MailStore
from suppilo.messaging.mime import DkimRecord, dkim_dns_record, dkim_public_key_pem, generate_dkim_private_key
from suppilo.messaging.settings import configured_dkim_record

mail_app = typer.Typer(help="Mail received by the built-in mail catcher.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add these commands to the root app."""
    app.add_typer(mail_app, name="mail")


def _store() -> MailStore:
    return MailStore(get_settings().data_dir)


@mail_app.command("list")
def mail_list(
    limit: int = typer.Option(50, "--limit", min=1, help="Newest messages to show."),
    as_json: bool = JsonOpt,
) -> None:
    """Caught messages, newest first."""
    rows = [m.as_dict() for m in _store().list(limit=limit)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        console.print("no mail caught yet")
        return
    table = Table("id", "received", "from", "to", "subject")
    for r in rows:
        table.add_row(
            str(r["id"]), r["received_at"][:19].replace("T", " "), r["from"], ", ".join(r["to"]), r["subject"]
        )
    console.print(table)


def _part(msg: EmailMessage, subtype: str) -> str | None:
    part = msg.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    content = part.get_content()
    return content if isinstance(content, str) else content.decode("utf-8", "replace")


@mail_app.command("show")
def mail_show(
    message_id: int = typer.Argument(..., help="The id shown by `suppilo mail list`."),
    html: bool = typer.Option(False, "--html", help="Print the HTML part instead of the text part."),
    raw: bool = typer.Option(False, "--raw", help="Print the message as received."),
) -> None:
    """One caught message: its headers and text part (or HTML part, or the raw message)."""
    try:
        data = _store().read(message_id)
    except KeyError:
        fail(f"no caught message {message_id}")
        return
    if raw:
        sys.stdout.write(data.decode("utf-8", "replace"))
        return
    msg = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(msg, EmailMessage)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "List-Unsubscribe"):
        if msg.get(name):
            sys.stdout.write(f"{name}: {msg[name]}\n")
    body = _part(msg, "html" if html else "plain")
    if body is None:
        body = _part(msg, "plain" if html else "html") or ""
    sys.stdout.write("\n" + body + ("" if body.endswith("\n") else "\n"))


def _print_record(record: DkimRecord, as_json: bool) -> None:
    if as_json:
        emit_json({"name": record.name, "type": record.type, "value": record.value, "zone_line": record.zone_line()})
        return
    sys.stdout.write(f"name:  {record.name}\ntype:  {record.type}\nvalue: {record.value}\n\n{record.zone_line()}\n")


@mail_app.command("dkim-record")
def dkim_record(as_json: bool = JsonOpt) -> None:
    """The DNS TXT record to publish for the configured DKIM key (SUPPILO_DKIM_SELECTOR/_DOMAIN/_PRIVATE_KEY_FILE)."""
    record = configured_dkim_record()
    if record is None:
        fail("DKIM is not configured: set SUPPILO_DKIM_SELECTOR, SUPPILO_DKIM_DOMAIN and SUPPILO_DKIM_PRIVATE_KEY_FILE")
        return
    _print_record(record, as_json)


@mail_app.command("dkim-keygen")
def dkim_keygen(
    selector: str = typer.Option(..., "--selector", help="DKIM selector, e.g. s2026."),
    domain: str = typer.Option(..., "--domain", help="Signing domain (d=)."),
    out: Path = typer.Option(..., "--out", help="Where to write the private key (mode 600); must not exist."),
    as_json: bool = JsonOpt,
) -> None:
    """Write a new 2048-bit RSA private key and print the DNS record that publishes its public key."""
    if out.exists():
        fail(f"{out} already exists")
        return
    pem = generate_dkim_private_key()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(out, 0o600)
    _print_record(dkim_dns_record(dkim_public_key_pem(pem), selector, domain), as_json)
