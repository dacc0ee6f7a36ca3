"""Block-chain hashes of prompts and a bounded, per-replica index of the chains seen.

vLLM reuses KV cache per block of tokens, and a block is only reusable when every
block before it matches too. We mirror that without a tokenizer: the rendered prompt
(messages in order, with their roles) is cut into fixed-size blocks of characters
(block size in tokens times an estimate of characters per token), and block *i*'s hash
covers block *i* and the hash of block *i - 1*. Two prompts then share the first *k*
hashes exactly when they share their first *k* blocks of text.

`PrefixIndex` keeps, for each replica, the set of block hashes that replica has
probably cached, bounded by the replica's KV capacity in blocks with LRU eviction. It
is approximate on purpose (the replica's own cache may evict differently), cheap, and
never grows past its capacity.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from orchestrator.model_client import ChatMessage

__all__ = ["BlockHasher", "PrefixIndex", "ReplicaPrefixCache", "render_prompt"]

_SEED = b"budgetflow-prefix-v1"


def render_prompt(messages: Iterable[ChatMessage]) -> str:
    """Flatten messages, in order, into the text whose prefix the router tracks.

    Roles are included so that the same text as `system` and as `user` does not
    count as the same prefix (the chat template renders them differently).
    """
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)


@dataclass(frozen=True, kw_only=True)
class BlockHasher:
    """Cuts rendered prompts into blocks and chains their hashes."""

    block_size_tokens: int = 16
    """KV block size of the replicas, in tokens."""
    chars_per_token: float = 4.0
    """Average characters per token of the served model's tokenizer (an estimate)."""

    def __post_init__(self) -> None:
        if self.block_size_tokens <= 0 or self.chars_per_token <= 0:
            raise ValueError(
                f"block_size_tokens ({self.block_size_tokens}) and chars_per_token"
                f" ({self.chars_per_token}) must be positive"
            )

    @property
    def block_chars(self) -> int:
        """Characters in one block."""
        return max(1, round(self.block_size_tokens * self.chars_per_token))

    def hash_text(self, text: str) -> tuple[int, ...]:
        """Chained hashes of the full blocks of `text` (a trailing partial block is not cached)."""
        size = self.block_chars
        data = text.encode("utf-8", "surrogatepass")
        hashes: list[int] = []
        previous = _SEED
        # Blocks are cut on encoded bytes: cheap and stable across runs and platforms.
        for start in range(0, len(data) - size + 1, size):
            digest = hashlib.blake2b(previous + data[start : start + size], digest_size=8).digest()
            hashes.append(int.from_bytes(digest, "big"))
            previous = digest
        return tuple(hashes)

    def hash_messages(self, messages: Iterable[ChatMessage]) -> tuple[int, ...]:
        """Chained block hashes of the rendered messages."""
        return self.hash_text(render_prompt(messages))


class ReplicaPrefixCache:
    """LRU set of block hashes one replica probably holds, at most `capacity_blocks` of them."""

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks <= 0:
            raise ValueError(f"capacity_blocks must be positive, got {capacity_blocks}")
        self._capacity = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    @property
    def capacity_blocks(self) -> int:
        """Most blocks kept."""
        return self._capacity

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block: object) -> bool:
        return block in self._blocks

    def resize(self, capacity_blocks: int) -> None:
        """Change the capacity, evicting least recently used blocks if it shrinks."""
        if capacity_blocks <= 0:
            raise ValueError(f"capacity_blocks must be positive, got {capacity_blocks}")
        self._capacity = capacity_blocks
        self._evict()

    def match(self, chain: Sequence[int]) -> int:
        """How many leading blocks of `chain` are held (no LRU update)."""
        # Chained hashes make a hit on block i imply blocks 0..i; eviction order (below)
        # keeps held chains contiguous, so a binary search would also do. Linear is
        # simpler and stops at the first miss.
        matched = 0
        for block in chain:
            if block not in self._blocks:
                break
            matched += 1
        return matched

    def insert(self, chain: Sequence[int]) -> None:
        """Record that `chain` is now cached, as most recently used."""
        # Touch the tail first so that the head of a chain is the most recent: LRU then
        # evicts a chain from its end, as vLLM frees a request's blocks in reverse order,
        # and the shared head (a system prompt) survives longest.
        for block in reversed(chain):
            self._blocks[block] = None
            self._blocks.move_to_end(block)
        self._evict()

    def clear(self) -> None:
        """Forget everything (the replica restarted or its cache was reset)."""
        self._blocks.clear()

    def _evict(self) -> None:
        while len(self._blocks) > self._capacity:
            self._blocks.popitem(last=False)


class PrefixIndex:
    """Per-replica `ReplicaPrefixCache`s."""

    def __init__(self, replicas: Iterable[str], *, capacity_blocks: int) -> None:
        self._caches = {r: ReplicaPrefixCache(capacity_blocks) for r in replicas}

    def cache(self, replica: str) -> ReplicaPrefixCache:
        """The index of `replica`."""
        return self._caches[replica]

    def match(self, replica: str, chain: Sequence[int]) -> int:
        """Leading blocks of `chain` that `replica` probably holds."""
        return self._caches[replica].match(chain)

    def insert(self, replica: str, chain: Sequence[int]) -> None:
        """Record `chain` as cached on `replica`."""
        self._caches[replica].insert(chain)

    def resize(self, replica: str, capacity_blocks: int) -> None:
        """Set `replica`'s capacity."""
        self._caches[replica].resize(capacity_blocks)

    def clear(self, replica: str) -> None:
        """Forget what `replica` held."""
        self._caches[replica].clear()

    def sizes(self) -> dict[str, int]:
        """Blocks indexed per replica."""
        return {r: len(c) for r, c in self._caches.items()}
