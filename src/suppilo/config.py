"""Settings read from the environment (prefix ``SUPPILO_``); only db/ and adapters/ read them."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process-wide settings; domains receive the values they need as arguments."""

    model_config = SettingsConfigDict(env_prefix="SUPPILO_", env_file=None, extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Where SQLite, mail and exports live.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite (WAL) under the data directory."
    )
    secret_key: str | None = Field(
        default=None, description="Signs tokens; generated once into the data directory when unset."
    )
    public_url: str = Field(default="http://127.0.0.1:8000", description="Base URL people's browsers reach.")
    max_batch_bytes: int = Field(default=512 * 1024, description="Largest accepted tracking batch body.")
    max_batch_items: int = Field(default=2500, description="Most events accepted in one batch.")
    form_rate_limit_per_minute: int = Field(default=20, description="Form submissions per IP per minute.")
    log_level: str = "info"
    smtp_host: str | None = Field(
        default=None, description="SMTP server for outgoing mail; unset means the built-in mail catcher."
    )
    smtp_port: int = Field(default=587, description="SMTP port (465 with SUPPILO_SMTP_TLS, 587 with STARTTLS).")
    smtp_username: str | None = Field(default=None, description="SMTP AUTH user name.")
    smtp_password: str | None = Field(default=None, description="SMTP AUTH password.")
    smtp_tls: bool = Field(default=False, description="Implicit TLS from the first byte (port 465).")
    smtp_starttls: bool | None = Field(
        default=None, description="Require STARTTLS (true), never use it (false), or use it when offered (unset)."
    )
    smtp_pool_size: int = Field(default=4, ge=1, le=64, description="Persistent SMTP connections kept open.")
    smtp_timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for the SMTP server.")
    mail_catcher_host: str = Field(default="127.0.0.1", description="Interface of the built-in mail catcher.")
    mail_catcher_port: int = Field(default=2525, description="Port of the built-in mail catcher.")
    webhook_allow_private: bool = Field(
        default=False, description="Let webhooks call private, loopback and link-local addresses (self-hosting)."
    )

    def resolved_database_url(self) -> str:
        """The configured URL, or SQLite under the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'suppilo.sqlite3').resolve()}"

    def resolved_secret_key(self) -> str:
        """The configured secret, or one generated once and kept in the data directory."""
        if self.secret_key:
            return self.secret_key
        import secrets

        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / "secret.key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process."""
    return Settings()
