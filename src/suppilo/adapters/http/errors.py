"""Every API error is JSON: ``{"error": {"code", "message", "path", "details": [{"path", "message"}]}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from suppilo.errors import DomainError


class ApiError(Exception):
    """An error raised by an adapter with its HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, path: str = "", details: list[dict[str, Any]] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        self.details = details or []


def error_body(code: str, message: str, path: str = "", details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message, "path": path, "details": details or []}}


def loc_to_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "items", 3, "email")`` -> ``"body.items[3].email"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic errors as ``[{"path", "message", "type"}]``."""
    return [
        {
            "path": loc_to_path(tuple(e.get("loc", ()))),
            "message": str(e.get("msg", "invalid")),
            "type": e.get("type", ""),
        }
        for e in errors
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Map domain, validation and HTTP errors onto the JSON error shape."""

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.field, [{"path": exc.field, "message": exc.message}]),
            status_code=exc.status,
        )

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="suppilo"'} if exc.status == 401 else None
        return JSONResponse(
            error_body(exc.code, exc.message, exc.path, exc.details), status_code=exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(list(exc.errors()))
        first = details[0] if details else {"path": "", "message": "invalid request"}
        return JSONResponse(
            error_body("validation_error", f"{first['path']}: {first['message']}", first["path"], details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 403: "forbidden", 413: "too_large"}
        return JSONResponse(
            error_body(code.get(exc.status_code, "http_error"), str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
