"""Block-chain hashing and the bounded per-replica prefix index."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.model_client import ChatMessage
from orchestrator.pool.prefix_index import BlockHasher, PrefixIndex, ReplicaPrefixCache, render_prompt

HASHER = BlockHasher(block_size_tokens=4, chars_per_token=1.0)  # 4-character blocks


def test_only_full_blocks_are_hashed() -> None:
    assert HASHER.hash_text("abc") == ()
    assert len(HASHER.hash_text("abcd")) == 1
    assert len(HASHER.hash_text("abcdefghi")) == 2


def test_chain_hash_covers_everything_before() -> None:
    a = HASHER.hash_text("AAAABBBBCCCC")
    b = HASHER.hash_text("AAAAXXXXCCCC")
    assert a[0] == b[0]
    # Same third block, different second: the chain makes the third hashes differ.
    assert a[1] != b[1]
    assert a[2] != b[2]


def test_hashes_are_stable_across_instances() -> None:
    again = BlockHasher(block_size_tokens=4, chars_per_token=1.0)
    assert again.hash_text("stable prefix text") == HASHER.hash_text("stable prefix text")


def test_roles_are_part_of_the_prefix() -> None:
    as_system: tuple[ChatMessage, ...] = ({"role": "system", "content": "x" * 40},)
    as_user: tuple[ChatMessage, ...] = ({"role": "user", "content": "x" * 40},)
    assert render_prompt(as_system) != render_prompt(as_user)
    assert HASHER.hash_messages(as_system)[0] != HASHER.hash_messages(as_user)[0]


@given(st.text(min_size=0, max_size=200), st.text(min_size=0, max_size=200))
def test_shared_prefix_gives_shared_leading_hashes(prefix: str, suffix: str) -> None:
    whole = HASHER.hash_text(prefix + suffix)
    alone = HASHER.hash_text(prefix)
    assert whole[: len(alone)] == alone


def test_match_counts_leading_blocks() -> None:
    cache = ReplicaPrefixCache(capacity_blocks=100)
    chain = HASHER.hash_text("AAAABBBBCCCCDDDD")
    cache.insert(chain[:2])
    assert cache.match(chain) == 2
    assert cache.match(HASHER.hash_text("ZZZZBBBB")) == 0


@given(st.lists(st.text(min_size=4, max_size=120), min_size=1, max_size=40), st.integers(1, 30))
def test_index_never_exceeds_capacity(texts: list[str], capacity: int) -> None:
    cache = ReplicaPrefixCache(capacity_blocks=capacity)
    for text in texts:
        cache.insert(HASHER.hash_text(text))
        assert len(cache) <= capacity


def test_lru_evicts_chain_tails_before_shared_heads() -> None:
    cache = ReplicaPrefixCache(capacity_blocks=6)
    shared = "SYS1SYS2"  # two shared blocks, like a system prompt
    first = HASHER.hash_text(shared + "aaaabbbb")
    cache.insert(first)
    second = HASHER.hash_text(shared + "ccccdddd")
    cache.insert(second)
    third = HASHER.hash_text(shared + "eeeeffff")
    cache.insert(third)  # 2 shared + 6 distinct blocks > 6: the oldest tails go first
    assert len(cache) == 6
    assert cache.match(third) == 4
    assert cache.match(second) == 4
    assert cache.match(first) == 2  # its tail was evicted; the shared head survived


def test_resize_shrinks_and_clear_forgets() -> None:
    cache = ReplicaPrefixCache(capacity_blocks=10)
    chain = HASHER.hash_text("x" * 40)
    cache.insert(chain)
    assert len(cache) == 10
    cache.resize(3)
    assert len(cache) == 3
    assert cache.match(chain) == 3  # the head is kept
    cache.clear()
    assert len(cache) == 0


def test_prefix_index_is_per_replica() -> None:
    index = PrefixIndex(["a", "b"], capacity_blocks=8)
    chain = HASHER.hash_text("q" * 16)
    index.insert("a", chain)
    assert index.match("a", chain) == 4
    assert index.match("b", chain) == 0
    assert index.sizes() == {"a": 4, "b": 0}


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="positive"):
        BlockHasher(block_size_tokens=0)
    with pytest.raises(ValueError, match="positive"):
        ReplicaPrefixCache(capacity_blocks=0)
