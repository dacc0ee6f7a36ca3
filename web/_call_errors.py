"""A failed call's error text, reduced to one of a few kinds (the `error_type` metric label).

A call record keeps the provider's error as text (`CallRecord.error`). A label needs a
small fixed set instead: the kinds below, in the spirit of OpenTelemetry's `error.type`
and of the exception classes litellm raises. Anything not recognised is `other`, so the
label never takes more than `len(ERROR_TYPES)` values, whatever a provider says.
"""

from __future__ import annotations

import re

__all__ = ["ERROR_TYPES", "error_type"]

ERROR_TYPES = (
    "auth",
    "bad_request",
    "connection",
    "content_filter",
    "context_window",
    "other",
    "rate_limit",
    "replica_unavailable",
    "server_error",
    "timeout",
)
"""Every value `error_type` returns."""

_BY_TEXT: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern, re.IGNORECASE))
    for kind, pattern in (
        # Order matters: the first match wins (a timeout reported as a 504 is a timeout).
        ("replica_unavailable", r"ReplicaUnavailable|no healthy replica|had a free slot"),
        ("context_window", r"ContextWindowExceeded|context length|maximum context|context window"),
        ("content_filter", r"ContentPolicyViolation|content[ _]filter|content policy"),
        ("rate_limit", r"RateLimitError|rate limit|too many requests"),
        ("timeout", r"Timeout|timed out"),
        ("auth", r"AuthenticationError|PermissionDenied|invalid api key|unauthori[sz]ed"),
        ("connection", r"APIConnectionError|ConnectError|could not reach|connection"),
        ("server_error", r"InternalServerError|ServiceUnavailable|BadGateway|\bAPIError\b|overloaded"),
        ("bad_request", r"BadRequestError|NotFoundError|UnprocessableEntity|invalid request"),
    )
)
_STATUS = re.compile(r"\b(?:HTTP|status(?: code)?|simulated|error code)\s*:?\s*([1-5]\d\d)\b", re.IGNORECASE)


def error_type(text: str | None) -> str:
    """The kind of a failed call's error text (one of `ERROR_TYPES`)."""
    if not text:
        return "other"
    for kind, pattern in _BY_TEXT:
        if pattern.search(text):
            return kind
    found = _STATUS.search(text)
    if found is not None:
        status = int(found.group(1))
        if status == 429:
            return "rate_limit"
        if status in (401, 403):
            return "auth"
        if status in (408, 504):
            return "timeout"
        if status >= 500:
            return "server_error"
        if status >= 400:
            return "bad_request"
    return "other"
