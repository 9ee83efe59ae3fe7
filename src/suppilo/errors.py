"""Errors that domains raise and adapters map onto responses: a code, the path of the input, a message (and the
message's parameters, so that an interface can word it in its user's language)."""

from __future__ import annotations


class DomainError(ValueError):
    """A refused operation. ``field`` is the dotted path of the offending input ('' when none)."""

    status = 422
    default_code = "invalid"

    def __init__(self, field: str, message: str, code: str | None = None, params: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message  # English (the API's text); the web interface translates by ``code`` and ``params``
        self.code = code or self.default_code
        self.params = params or {}


class NotFound(DomainError):
    """The record does not exist in this workspace."""

    status = 404
    default_code = "not_found"


class Conflict(DomainError):
    """The request conflicts with the stored state (duplicate key, stale version)."""

    status = 409
    default_code = "conflict"
