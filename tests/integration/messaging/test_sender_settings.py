"""Sender settings come from the environment in one place (``suppilo.messaging.settings``), shared by the CLI, the
worker and the web: the same variables give the same sender configuration and the same DKIM record."""

from __future__ import annotations

import pytest

from suppilo.adapters.cli import outbox as cli_outbox
from suppilo.config import Settings
from suppilo.messaging import settings as sender_settings
from suppilo.messaging.mime import dkim_dns_record, dkim_public_key_pem
from tests.integration.messaging.outbox_support import rsa_key_pair


@pytest.fixture
def env(monkeypatch, tmp_path):
    private, _ = rsa_key_pair(tmp_path)
    key_file = tmp_path / "dkim.pem"  # written by rsa_key_pair
    values = {
        "SUPPILO_MAIL_FROM": "news@shop.example.fi",
        "SUPPILO_MAIL_FROM_NAME": "Pohjola Outdoor",
        "SUPPILO_BOUNCE_ADDRESS": "bounces@shop.example.fi",
        "SUPPILO_SENDER_RATE": "25",
        "SUPPILO_SENDER_DOMAIN_RATE": "2.5",
        "SUPPILO_SENDER_DOMAIN_BURST": "3",
        "SUPPILO_SENDER_CHUNK_SIZE": "300",
        "SUPPILO_SENDER_MAX_ATTEMPTS": "4",
        "SUPPILO_SENDER_RENDER_WORKERS": "2",
        "SUPPILO_SENDER_CLAIM_PROCESS": "true",
        "SUPPILO_DKIM_SELECTOR": "s2024",
        "SUPPILO_DKIM_DOMAIN": "shop.example.fi",
        "SUPPILO_DKIM_PRIVATE_KEY_FILE": str(key_file),
        "SUPPILO_SMTP_POOL_SIZE": "6",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return private


def test_the_environment_configures_the_sender(env, tmp_path) -> None:
    config = sender_settings.sender_config(Settings(data_dir=tmp_path, secret_key="k" * 40))
    assert (config.from_address, config.from_name, config.bounce_address) == (
        "news@shop.example.fi",
        "Pohjola Outdoor",
        "bounces@shop.example.fi",
    )
    assert (config.global_rate, config.domain_rate, config.domain_burst) == (25.0, 2.5, 3)
    assert (config.chunk_size, config.max_attempts, config.concurrency) == (300, 4, 6)  # pool size from SMTP
    assert config.render_workers == 2 and config.claim_process is True
    assert (config.dkim_selector, config.dkim_domain, config.dkim_private_key_pem) == ("s2024", "shop.example.fi", env)
    # A command-line option wins over the environment; None leaves the setting alone.
    overridden = sender_settings.sender_config(
        Settings(data_dir=tmp_path, secret_key="k" * 40), concurrency=2, chunk_size=None
    )
    assert (overridden.concurrency, overridden.chunk_size) == (2, 300)


def test_cli_and_web_read_the_same_settings(env) -> None:
    assert cli_outbox.SenderSettings is sender_settings.SenderSettings
    assert cli_outbox.sender_config is sender_settings.sender_config
    record = sender_settings.configured_dkim_record()
    assert record == dkim_dns_record(dkim_public_key_pem(env), "s2024", "shop.example.fi")


def test_an_unreadable_dkim_key_names_the_variable(env, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SUPPILO_DKIM_PRIVATE_KEY_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(sender_settings.SenderSettingsError, match="SUPPILO_DKIM_PRIVATE_KEY_FILE: cannot read"):
        sender_settings.sender_config(Settings(data_dir=tmp_path, secret_key="k" * 40))
