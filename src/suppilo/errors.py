"""Errors that domains raise and adapters map onto responses: a code, the path of the input, a message."""

from __future__ import annotations


class DomainError(ValueError):
    """A refused operation. ``field`` is the dotted path of the offending input ('' when none)."""

    status = 422
    default_code = "invalid"

    def __init__(self, field: str, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code or self.default_code


class NotFound(DomainError):
    """The record does not exist in this workspace."""

    status = 404
    default_code = "not_found"


class Conflict(DomainError):
    """The request conflicts with the stored state (duplicate key, stale version)."""

    status = 409
    default_code = "conflict"
