"""Signed browser sessions and their CSRF tokens (the cookie side of `web.auth`).

A session value is `<payload>.<signature>`: the payload names the API token
the session was opened with, when the session ends and a random nonce; the
signature is an HMAC-SHA256 of the payload under the server's secret. Nothing
secret is in the cookie: it proves who logged in with which token, and the
token itself is checked again (not revoked, not expired) on every request.

The CSRF token is another HMAC of the same payload, so it belongs to one
session: a CSRF cookie planted by a neighbouring site (cookie tossing) does
not match the session it would be sent with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["SessionCodec", "SessionValue"]

_SESSION_LABEL = b"budgetflow-session:"
_CSRF_LABEL = b"budgetflow-csrf:"
_MIN_SECRET_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, kw_only=True)
class SessionValue:
    """A session read back from its cookie, signature checked."""

    token_id: int
    """The API token the session was opened with."""
    expires_at: datetime
    """When the session ends (UTC)."""
    csrf: str
    """The CSRF token that state-changing requests of this session must carry."""


class SessionCodec:
    """Makes and checks session values and their CSRF tokens under one secret."""

    def __init__(self, secret: bytes | None) -> None:
        """Use `secret` (at least 16 bytes), or a random one for this process when `None`."""
        if secret is not None and len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(f"a session secret needs at least {_MIN_SECRET_BYTES} bytes")
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def _mac(self, label: bytes, payload: str) -> str:
        return _b64(hmac.new(self._secret, label + payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, token_id: int, *, now: datetime, ttl: timedelta) -> tuple[str, SessionValue]:
        """A new cookie value for token `token_id`, valid for `ttl` from `now`, and what it holds."""
        expires = int((now + ttl).timestamp())
        payload = f"{token_id}:{expires}:{secrets.token_urlsafe(16)}"
        value = f"{payload}.{self._mac(_SESSION_LABEL, payload)}"
        return value, SessionValue(
            token_id=token_id,
            expires_at=datetime.fromtimestamp(expires, UTC),
            csrf=self._mac(_CSRF_LABEL, payload),
        )

    def read(self, value: str, *, now: datetime) -> SessionValue | None:
        """What a cookie value holds, or `None` when it is malformed, forged or expired."""
        payload, dot, signature = value.rpartition(".")
        if not dot or not payload.isascii() or not signature.isascii():
            return None
        if not hmac.compare_digest(signature, self._mac(_SESSION_LABEL, payload)):
            return None
        parts = payload.split(":")
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        expires_at = datetime.fromtimestamp(int(parts[1]), UTC)
        if now >= expires_at:
            return None
        return SessionValue(
            token_id=int(parts[0]), expires_at=expires_at, csrf=self._mac(_CSRF_LABEL, payload)
        )

    @staticmethod
    def csrf_matches(session: SessionValue, given: str | None) -> bool:
        """Whether `given` (the request's CSRF header) is this session's CSRF token."""
        return given is not None and given.isascii() and hmac.compare_digest(given, session.csrf)
