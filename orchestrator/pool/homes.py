"""Home replicas for long shared prefixes: a capacity- and heat-aware partition of the pool.

When the pool's total KV cache is about the size of the working set (every agent's
system prompt plus the requests in flight), the cheapest way to lose hits is to hold
the same long prefix on two replicas: each copy takes room that another prefix needed.
`PrefixHomes` therefore gives each long shared prefix (a *group*: in practice an
agent's system prompt, the prompt's first message) exactly one home replica, chosen
when the group is first seen so that the replicas' homed working sets partition the
groups:

* **footprint**: the blocks of the groups homed on a replica, each group counted once
  however many requests share it, relative to that replica's KV capacity in blocks
  (from ``vllm:cache_config_info``, so heterogeneous replicas fill in proportion);
* **heat**: the requests those groups received recently (an exponentially decayed
  count, half-life `half_life_requests`), so that the partition also balances load;
* **held**: a replica that already holds the group's blocks (the router's prefix
  index) is preferred, so a forgotten group goes back where its cache still is.

A new group goes to the replica with the lowest ``footprint share + heat share - held
fraction``. The router keeps requests on their group's home and spills to another
replica only under a large momentary load difference; spilled requests do not move the
home. Groups are kept in a bounded LRU table.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["PrefixHomes"]


@dataclass(kw_only=True)
class _Group:
    home: str
    blocks: int
    heat: float = 0.0
    heat_tick: int = 0


class PrefixHomes:
    """The home replica of each long shared prefix, and the per-replica footprint and heat.

    Args:
        half_life_requests: requests after which a group's heat counts half.
        max_groups: groups remembered (least recently used ones are forgotten).
        rng: tie-breaking random generator (seeded by the router).
    """

    def __init__(self, *, half_life_requests: float, max_groups: int, rng: random.Random) -> None:
        if half_life_requests <= 0 or max_groups <= 0:
            raise ValueError(
                f"half_life_requests ({half_life_requests}) and max_groups ({max_groups}) must be positive"
            )
        self._half_life = half_life_requests
        self._max_groups = max_groups
        self._rng = rng
        self._groups: OrderedDict[int, _Group] = OrderedDict()
        self._tick = 0

    def __len__(self) -> int:
        return len(self._groups)

    def home(self, key: int) -> str | None:
        """The home of group `key`, or `None` when it has none (new or forgotten)."""
        group = self._groups.get(key)
        return None if group is None else group.home

    def best(
        self,
        blocks: int,
        candidates: Sequence[str],
        *,
        capacity_blocks: Mapping[str, int],
        held_blocks: Mapping[str, int],
    ) -> str:
        """The replica a new group of `blocks` blocks should live on (nothing is recorded).

        Args:
            blocks: the group's size in blocks.
            candidates: replicas that may take it (healthy, with a free slot).
            capacity_blocks: KV capacity of each replica, in blocks.
            held_blocks: leading blocks of the group each replica probably holds already.
        """
        if not candidates:
            raise ValueError("no candidate replica to home a prefix on")
        footprint = self.homed_blocks()
        heat = self.heat()
        fill = {r: footprint.get(r, 0) / max(1, capacity_blocks.get(r, 1)) for r in candidates}
        total_fill = sum(fill.values())
        total_heat = sum(heat.get(r, 0.0) for r in candidates)
        costs: list[tuple[float, str]] = []
        for replica in candidates:
            cost = fill[replica] / total_fill if total_fill else 0.0
            cost += heat.get(replica, 0.0) / total_heat if total_heat else 0.0
            cost -= min(blocks, held_blocks.get(replica, 0)) / max(1, blocks)
            costs.append((cost, replica))
        lowest = min(c for c, _ in costs)
        tied = [r for c, r in costs if abs(c - lowest) <= 1e-9]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)

    def assign(self, key: int, replica: str, blocks: int) -> None:
        """Make `replica` the home of group `key` (its heat is kept if it moves)."""
        group = self._groups.get(key)
        if group is None:
            group = _Group(home=replica, blocks=blocks, heat_tick=self._tick)
            self._groups[key] = group
        group.home = replica
        group.blocks = blocks
        self._groups.move_to_end(key)
        while len(self._groups) > self._max_groups:
            self._groups.popitem(last=False)

    def record(self, key: int) -> None:
        """Count one request of group `key` (it heats the group's home, wherever it ran)."""
        self._tick += 1
        group = self._groups.get(key)
        if group is None:
            return
        group.heat = self._decayed(group) + 1.0
        group.heat_tick = self._tick
        self._groups.move_to_end(key)

    def forget_replica(self, replica: str) -> None:
        """Drop the homes on `replica` (it went down; its groups are placed again)."""
        for key in [k for k, g in self._groups.items() if g.home == replica]:
            del self._groups[key]

    def homed_blocks(self) -> dict[str, int]:
        """Blocks of the groups homed on each replica (each group counted once)."""
        out: dict[str, int] = {}
        for group in self._groups.values():
            out[group.home] = out.get(group.home, 0) + group.blocks
        return out

    def heat(self) -> dict[str, float]:
        """Decayed request count of the groups homed on each replica."""
        out: dict[str, float] = {}
        for group in self._groups.values():
            out[group.home] = out.get(group.home, 0.0) + self._decayed(group)
        return out

    def groups_on(self, replica: str) -> int:
        """Groups homed on `replica`."""
        return sum(1 for g in self._groups.values() if g.home == replica)

    def _decayed(self, group: _Group) -> float:
        decay: float = 0.5 ** ((self._tick - group.heat_tick) / self._half_life)
        return group.heat * decay
