"""Login sessions of the web interface (users and memberships live in ``workspaces``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from suppilo.db.base import Base, BigId, IdMixin
from suppilo.db.types import UTCDateTime


class LoginSession(IdMixin, Base):
    """A signed-in browser. Only the SHA-256 of the random cookie value is stored, so a database leak does not
    hand out live sessions; the CSRF token is tied to the session and replaced with it on every login."""

    __tablename__ = "login_sessions"
    __table_args__ = (Index("ix_login_sessions_user", "user_id"),)

    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    # The workspace last opened in this session (where "/" leads); access is checked on every request anyway.
    workspace_id: Mapped[int | None] = mapped_column(BigId, ForeignKey("workspaces.id", ondelete="SET NULL"))
    csrf_token: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    user_agent: Mapped[str] = mapped_column(String(300), nullable=False, default="")
