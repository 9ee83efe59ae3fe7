"""Request dependencies: the database session (one commit per request) and API-key principals."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from suppilo.adapters.http.errors import ApiError
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.service import KeyPrincipal

# Key lookups are cached briefly: a revoked key stops working within this many seconds.
KEY_CACHE_SECONDS = 10.0
_key_cache: dict[str, tuple[float, KeyPrincipal | None]] = {}
_key_cache_lock = threading.Lock()


def session_factory(request: Request) -> sessionmaker[Session]:
    """The app's session factory."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


def db_session(request: Request) -> Iterator[Session]:
    """A session whose transaction commits once when the endpoint returns, before the response is sent."""
    session = session_factory(request)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def read_session(request: Request) -> Iterator[Session]:
    """A read-only session (SQLite: a deferred transaction that never blocks writers)."""
    session = request.app.state.read_session_factory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


DbSession = Annotated[Session, Depends(db_session, scope="function")]
ReadSession = Annotated[Session, Depends(read_session, scope="function")]


def principal_for_key(request: Request, raw: str) -> KeyPrincipal | None:
    """The principal of a raw key, through a short-lived cache."""
    now = time.monotonic()
    with _key_cache_lock:
        hit = _key_cache.get(raw)
    if hit is not None and now - hit[0] < KEY_CACHE_SECONDS:
        return hit[1]
    with request.app.state.read_session_factory() as session:
        principal = workspaces_service.authenticate_key(session, raw)
    with _key_cache_lock:
        if len(_key_cache) > 10_000:
            _key_cache.clear()
        _key_cache[raw] = (now, principal)
    return principal


def clear_key_cache() -> None:
    """Forget cached key lookups (after a revocation in this process)."""
    with _key_cache_lock:
        _key_cache.clear()


def bearer_key(request: Request) -> str | None:
    """The raw key of an ``Authorization: Bearer`` header."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def basic_user(request: Request) -> str | None:
    """The user name of an ``Authorization: Basic`` header (Segment sends the write key there)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0] or None


def require_scope(scope: str) -> Callable[[Request], KeyPrincipal]:
    """A dependency that authenticates a bearer key and checks it has ``scope``."""

    def dependency(request: Request) -> KeyPrincipal:
        raw = bearer_key(request)
        if raw is None:
            raise ApiError(
                401, "unauthorized", "an API key is required: Authorization: Bearer <key>", "headers.authorization"
            )
        principal = principal_for_key(request, raw)
        if principal is None:
            raise ApiError(401, "unauthorized", "the API key is unknown or revoked", "headers.authorization")
        if not principal.allows(scope):
            raise ApiError(403, "forbidden", f"this API key lacks the {scope!r} scope", "headers.authorization")
        return principal

    return dependency


Reader = Annotated[KeyPrincipal, Depends(require_scope("read"))]
Writer = Annotated[KeyPrincipal, Depends(require_scope("write"))]
Admin = Annotated[KeyPrincipal, Depends(require_scope("admin"))]
