"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from suppilo import __version__
from suppilo.adapters.http.errors import install_error_handlers
from suppilo.adapters.http.routers import ROUTERS
from suppilo.adapters.web import mount_web
from suppilo.config import Settings, get_settings
from suppilo.db.session import make_engine, make_session_factory


def create_app(settings: Settings | None = None, *, lifespan_hooks: list[Any] | None = None) -> FastAPI:
    """Build the app with its own engine and session factories."""
    settings = settings or get_settings()
    engine = make_engine(settings.resolved_database_url())
    hooks = lifespan_hooks or []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in hooks:
            await hook.start(app)
        try:
            yield
        finally:
            for hook in reversed(hooks):
                await hook.stop(app)
            engine.dispose()

    app = FastAPI(
        title="suppilo",
        version=__version__,
        description="Customer acquisition and lifecycle: contacts, events, commerce, funnel.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.read_session_factory = make_session_factory(engine, read_only=True)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    mount_web(app)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        # The front door is the web interface (its login page when not signed in); the API lives under /api/v1.
        return RedirectResponse("/app/")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    return app
