"""Which requests a replica died while serving: the pool's memory against poison requests.

A request that crashes the vLLM engine (for example a seeded request whose uncached
prompt vLLM CPU must prefill in chunks) would crash every replica it is retried on,
one after the other. The client sees one try at a time (the gateway retries), so it
remembers, per request, the replicas that died while serving it and decides when the
request is poison: at once when the replica answered 5xx before it died, at the second
death when the connection merely dropped. A poison request is failed with an error
that is not retryable, and refused if it is sent again anyway.

A request is identified by its attempt (``metadata["attempt_id"]``, when the gateway
sets it) and a digest of its messages: the retries of one attempt share the key, a
new attempt or a different prompt does not. Sampling parameters are left out on
purpose (a retry may be sent with a lower `max_tokens` or another seed).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

from orchestrator.errors import ProviderError
from orchestrator.model_client import ChatRequest

__all__ = ["RequestDeaths", "request_key"]


def request_key(request: ChatRequest) -> str:
    """The identity of `request` across retries: attempt id and a digest of the messages."""
    payload = json.dumps(
        [request.metadata.get("attempt_id", ""), [dict(m) for m in request.messages]],
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.blake2b(payload.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class _Entry:
    replicas: tuple[str, ...]
    """Replicas that died serving the request, oldest first."""
    poison: str | None
    """Why the request is no longer sent anywhere, once it is."""


class RequestDeaths:
    """Per request key, the replicas that died while serving it (a bounded LRU).

    Args:
        max_requests: keys kept; the least recently touched are forgotten first (a
            forgotten request is only treated as new again).
    """

    def __init__(self, max_requests: int = 1024) -> None:
        if max_requests < 1:
            raise ValueError(f"max_requests must be at least 1, got {max_requests}")
        self._max = max_requests
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def died_on(self, key: str) -> tuple[str, ...]:
        """Replicas that died while serving the request, oldest first (empty: none)."""
        entry = self._entries.get(key)
        return () if entry is None else entry.replicas

    def died(self, key: str, error: ProviderError, *, replica: str, pool: str, health: str) -> ProviderError:
        """Note that `replica` died while serving the request; return the error to raise.

        Not retryable when the replica answered 5xx before dying (its engine died running
        this request) or when this is the second replica to die serving it; retryable,
        on another replica, after a first dropped connection.

        Args:
            key: the request's `request_key`.
            error: the call's error as mapped from the provider's.
            replica: the replica that died.
            pool: the pool's name.
            health: how its ``/health`` check failed.
        """
        old = self._entries.pop(key, None)
        replicas = old.replicas if old is not None else ()
        if replica not in replicas:
            replicas = (*replicas, replica)
        status = error.status_code
        crashed = status is not None and status >= 500
        where = f"replica `{replica}` of pool `{pool}`"
        if not crashed and len(replicas) < 2:
            self._keep(key, _Entry(replicas, None))
            return ProviderError(
                f"{where} dropped the connection and died while serving this request (then its"
                f" `/health` check: {health}); retry on another replica. If this request kills"
                " that one too, it will not be retried again",
                retryable=True,
                status_code=status,
            )
        how = f"answered HTTP {status}" if crashed else "dropped the connection"
        before = [f"`{r}`" for r in replicas if r != replica]
        history = f"; {', '.join(before)} died serving it before" if before else ""
        poison = (
            f"{where} died while serving this request (it {how}, then its `/health` check:"
            f" {health}){history}. The request was not retried on another replica, so that it"
            " cannot take the pool down one replica after another. Check the request's prompt and"
            " parameters (vLLM CPU, for one, crashes on a request with a `seed` whose uncached"
            " prompt is longer than `--max-num-batched-tokens`) and the replica's log for the"
            " engine's error"
        )
        self._keep(key, _Entry(replicas, poison))
        return ProviderError(poison, retryable=False, status_code=status)

    def refusal(self, key: str) -> ProviderError | None:
        """The error for a request sent again after it was found poison, else `None`."""
        entry = self._entries.get(key)
        if entry is None or entry.poison is None:
            return None
        self._entries.move_to_end(key)
        return ProviderError(f"not sent again: {entry.poison}", retryable=False)

    def forget(self, key: str) -> None:
        """Drop the request (it succeeded)."""
        self._entries.pop(key, None)

    def _keep(self, key: str, entry: _Entry) -> None:
        self._entries[key] = entry
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
