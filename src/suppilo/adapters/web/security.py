"""Security headers of every web-interface response: a strict Content-Security-Policy (no inline script or style,
no framing), nosniff, referrer policy; authenticated pages are never cached."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
# A caught e-mail's HTML: no script, no network (images only inline), framed only by our own message page.
MAIL_BODY_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'; sandbox"

BASE_HEADERS: dict[str, str] = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_web_path(path: str) -> bool:
    """Paths of the web interface (and the front door, which redirects into it)."""
    return path == "/" or path == "/app" or path.startswith("/app/")


class SecurityHeaders:
    """Pure ASGI middleware: adds the headers to responses of web-interface paths, keeping any the route set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_web_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {k.decode("latin-1").lower() for k, _ in headers}
                if "content-security-policy" not in present:
                    headers.append((b"content-security-policy", CSP.encode()))
                for name, value in BASE_HEADERS.items():
                    if name not in present:
                        headers.append((name.encode(), value.encode()))
                if scope.get("scheme") == "https" and "strict-transport-security" not in present:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
