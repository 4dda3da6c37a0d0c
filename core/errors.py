"""Domain errors, raised below the API and mapped to HTTP statuses once, in api/errors.py."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code = 400

    def __init__(self, message: str, *, field: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra or {}


class NotFoundError(DomainError):
    status_code = 404


class ConflictError(DomainError):
    """Stale version, duplicate name or text."""

    status_code = 409


class ConcurrentChange(ConflictError):
    """What a request was checked against changed under it (another import created the dataset meanwhile):
    nothing was written, and the same request again may well succeed. A queued job retries it."""


class ValidationFailed(DomainError):
    """Input that is well-formed but wrong: unknown label, bad file row, invalid method for a language."""

    status_code = 422


class TooLargeError(DomainError):
    status_code = 413


class PermissionDenied(DomainError):
    status_code = 403


class QuotaExceeded(DomainError):
    """A per-project limit on work in flight (queued and running training jobs): retry once some finish."""

    status_code = 429


class ServerBusy(DomainError):
    """The server is doing as much of this at once as it is set to: the same request a little later will do."""

    status_code = 503
    retry_after = 5
