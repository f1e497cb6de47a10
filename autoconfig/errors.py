"""Exceptions that carry their HTTP meaning.

Views raise these; each blueprint renders them in its client's format
(plain text for Thunderbird, POX for Outlook, JSON for the admin API), so
the mapping from failure to status code is written once.
"""

from __future__ import annotations


class ClientError(Exception):
    """A request we answer with a 4xx/5xx.  ``message`` is safe to show: it never echoes input."""

    status = 400
    code = "bad_request"
    retry_after: int | None = None  # seconds, sent as Retry-After when set

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retry_after is not None:
            self.retry_after = retry_after


class BadRequest(ClientError):
    status = 400
    code = "bad_request"


class NotServed(ClientError):
    """The address's domain is not one this service answers for."""

    status = 404
    code = "domain_not_served"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class Unauthorized(ClientError):
    status = 401
    code = "unauthorized"


class Conflict(ClientError):
    status = 409
    code = "read_only"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class UriTooLong(ClientError):
    status = 414
    code = "uri_too_long"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(ClientError):
    status = 429
    code = "too_many_requests"


class Unavailable(ClientError):
    """The store cannot answer; clients retry rather than act on a guess."""

    status = 503
    code = "unavailable"
    retry_after = 5
