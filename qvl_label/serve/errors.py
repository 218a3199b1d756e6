"""Request-level failures of the server, each with its HTTP status and error type (one JSON shape)."""

from __future__ import annotations


class ServeError(Exception):
    """A request that cannot be answered: the app turns it into `{"error": {"type", "message"}}`."""

    status = 500
    type = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class BadRequest(ServeError):
    status = 400
    type = "invalid_request"


class Unauthorized(ServeError):
    status = 401
    type = "unauthorized"

    def __init__(self, message: str = "a valid API key is required (Authorization: Bearer KEY or X-Api-Key)") -> None:
        super().__init__(message, {"WWW-Authenticate": "Bearer"})


class Forbidden(ServeError):
    status = 403
    type = "forbidden"


class PayloadTooLarge(ServeError):
    status = 413
    type = "too_large"


class UnsupportedMediaType(ServeError):
    status = 415
    type = "unsupported_media_type"


class Unprocessable(ServeError):
    status = 422
    type = "unprocessable"


class QueueFull(ServeError):
    status = 429
    type = "queue_full"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, {"Retry-After": str(retry_after)})


class EngineFailed(ServeError):
    status = 500
    type = "engine_error"


class ShuttingDown(ServeError):
    status = 503
    type = "shutting_down"


class RequestTimeout(ServeError):
    status = 504
    type = "timeout"


class ClientGone(ServeError):
    """The client disconnected: nothing is sent, its sequences are cancelled."""

    status = 499
    type = "client_closed_request"
