"""Domain errors shared by every service; servers map them to gRPC/HTTP status codes."""

from __future__ import annotations


class RtvolError(Exception):
    """Base class: the message is shown to the caller as is."""


class InvalidInput(RtvolError):
    """Bad input from a caller: INVALID_ARGUMENT / HTTP 400. Name the field in the message."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason  # a short label for the rejects counter


class NotFound(RtvolError):
    """An unknown model, version or stock: NOT_FOUND / HTTP 404."""


class ResourceExhausted(RtvolError):
    """A bounded queue or limit is full: RESOURCE_EXHAUSTED / HTTP 503. Retry later or elsewhere."""


class Unavailable(RtvolError):
    """Not ready or shutting down: UNAVAILABLE / HTTP 503."""
