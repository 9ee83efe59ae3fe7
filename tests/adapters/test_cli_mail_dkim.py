"""`suppilo mail dkim-keygen/dkim-record` and `GET /api/v1/mail/dkim` show the DNS record of the signing key."""

from __future__ import annotations

import base64
import json
import stat

import dkim
from dkim.crypto import parse_pem_private_key, parse_public_key
from typer.testing import CliRunner

from suppilo.adapters.cli.main import app
from suppilo.messaging.mime import build_message, message_bytes, sign_dkim

runner = CliRunner()


def _matches(p_value: str, private_pem: bytes) -> bool:
    """The published p= holds the modulus and exponent of the private key."""
    public = parse_public_key(base64.b64decode(p_value))
    private = parse_pem_private_key(private_pem)
    return (public["modulus"], public["publicExponent"]) == (private["modulus"], private["publicExponent"])


def _configure(monkeypatch, key_file, selector: str = "s2026", domain: str = "nordshop.fi") -> None:
    monkeypatch.setenv("SUPPILO_DKIM_SELECTOR", selector)
    monkeypatch.setenv("SUPPILO_DKIM_DOMAIN", domain)
    monkeypatch.setenv("SUPPILO_DKIM_PRIVATE_KEY_FILE", str(key_file))


def _signed_verifies(private_pem: bytes, record_value: str, record_name: str) -> bool:
    msg = build_message(
        outbox_id=7,
        workspace_slug="nordshop",
        domain="nordshop.fi",
        from_email="news@nordshop.fi",
        to_email="aino@example.fi",
        subject="Kevät",
        text="Hei Aino!\n",
        html="<p>Hei</p>",
    )
    signed = sign_dkim(message_bytes(msg), selector="s2026", domain="nordshop.fi", private_key_pem=private_pem)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record_value.encode() if name.decode().rstrip(".") == record_name else b""

    return bool(dkim.verify(signed, dnsfunc=dnsfunc))


def test_keygen_writes_private_key_and_prints_matching_record(tmp_path, monkeypatch) -> None:
    out = tmp_path / "dkim.pem"
    result = runner.invoke(
        app, ["mail", "dkim-keygen", "--selector", "s2026", "--domain", "nordshop.fi", "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    private_pem = out.read_bytes()
    assert parse_pem_private_key(private_pem)["modulus"].bit_length() == 2048
    record = json.loads(result.stdout)
    assert record["name"] == "s2026._domainkey.nordshop.fi"
    assert _matches(record["value"].split("p=", 1)[1], private_pem)
    assert _signed_verifies(private_pem, record["value"], record["name"])
    # an existing key is never overwritten
    again = runner.invoke(app, ["mail", "dkim-keygen", "--selector", "x", "--domain", "nordshop.fi", "--out", str(out)])
    assert again.exit_code == 1
    assert out.read_bytes() == private_pem


def test_dkim_record_of_configured_key(tmp_path, monkeypatch) -> None:
    key_file = tmp_path / "k.pem"
    runner.invoke(
        app, ["mail", "dkim-keygen", "--selector", "s2026", "--domain", "nordshop.fi", "--out", str(key_file)]
    )
    private_pem = key_file.read_bytes()
    _configure(monkeypatch, key_file)
    result = runner.invoke(app, ["mail", "dkim-record", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["name"] == "s2026._domainkey.nordshop.fi"
    assert record["type"] == "TXT"
    assert record["value"].startswith("v=DKIM1; k=rsa; p=")
    assert _matches(record["value"].split("p=", 1)[1], private_pem)
    assert _signed_verifies(private_pem, record["value"], record["name"])
    plain = runner.invoke(app, ["mail", "dkim-record"])
    assert plain.exit_code == 0
    assert 's2026._domainkey.nordshop.fi. IN TXT "v=DKIM1; k=rsa; p=' in plain.stdout


def test_dkim_record_not_configured(monkeypatch) -> None:
    for name in ("SUPPILO_DKIM_SELECTOR", "SUPPILO_DKIM_DOMAIN", "SUPPILO_DKIM_PRIVATE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["mail", "dkim-record"])
    assert result.exit_code == 1
    assert "DKIM is not configured" in result.output


def test_http_dkim_record(client, workspace, tmp_path, monkeypatch) -> None:
    for name in ("SUPPILO_DKIM_SELECTOR", "SUPPILO_DKIM_DOMAIN", "SUPPILO_DKIM_PRIVATE_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    missing = client.get("/api/v1/mail/dkim", headers=workspace.auth("admin"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "dkim_not_configured"

    key_file = tmp_path / "k.pem"
    runner.invoke(
        app, ["mail", "dkim-keygen", "--selector", "s2026", "--domain", "nordshop.fi", "--out", str(key_file)]
    )
    _configure(monkeypatch, key_file)
    assert client.get("/api/v1/mail/dkim", headers=workspace.auth("read")).status_code == 403
    resp = client.get("/api/v1/mail/dkim", headers=workspace.auth("admin"))
    assert resp.status_code == 200, resp.text
    record = resp.json()
    assert record["name"] == "s2026._domainkey.nordshop.fi"
    assert _matches(record["value"].split("p=", 1)[1], key_file.read_bytes())
    assert _signed_verifies(key_file.read_bytes(), record["value"], record["name"])
