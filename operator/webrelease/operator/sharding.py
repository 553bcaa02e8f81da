"""How a step's customers are cut into shards (Job indexes). Pure.

Shard ``i`` holds customers ``[i * size, (i + 1) * size)`` of the step's frozen, sorted list
(the shard pod takes exactly that slice: ``webrelease.copier.snapshot.read_slice``). The spec asks
for ``customersPerShard``; when that would make more than :data:`MAX_SHARDS` shards, the size
grows until the shards fit (and the plan says so in :attr:`ShardPlan.note`).
"""

from __future__ import annotations

from dataclasses import dataclass

from webrelease.copier.spec import MAX_SHARDS


@dataclass(frozen=True, slots=True)
class ShardPlan:
    """``customers`` customers in ``shards`` shards of ``size`` (the last one may be smaller)."""

    customers: int
    size: int
    shards: int
    parallelism: int
    note: str = ""

    def customers_in(self, index: int) -> int:
        """How many customers shard ``index`` holds."""
        if not 0 <= index < self.shards:
            raise IndexError(f"shard {index} is out of range (0..{self.shards - 1})")
        return min(self.size, self.customers - index * self.size)

    def bounds(self, index: int) -> tuple[int, int]:
        """Positions ``[start, stop)`` of shard ``index`` in the step's list."""
        start = index * self.size
        return start, start + self.customers_in(index)

    def shard_of(self, position: int) -> int:
        """The shard holding the customer at ``position`` of the list."""
        if not 0 <= position < self.customers:
            raise IndexError(f"position {position} is out of range (0..{self.customers - 1})")
        return position // self.size


def plan_shards(
    customers: int, customers_per_shard: int, parallelism: int, *, max_shards: int = MAX_SHARDS
) -> ShardPlan:
    """The plan for ``customers`` customers: ``ceil(customers / size)`` shards, at most ``max_shards``.

    ``parallelism`` (pods at once) is capped at the number of shards. No customers, no shards.
    """
    if customers < 0:
        raise ValueError(f"customers must not be negative, got {customers}")
    if customers_per_shard < 1:
        raise ValueError(f"customersPerShard must be at least 1, got {customers_per_shard}")
    if parallelism < 1:
        raise ValueError(f"parallelism must be at least 1, got {parallelism}")
    if max_shards < 1:
        raise ValueError(f"max_shards must be at least 1, got {max_shards}")
    size = customers_per_shard
    note = ""
    if -(-customers // size) > max_shards:
        size = -(-customers // max_shards)
        note = (
            f"{customers} customers at {customers_per_shard} per shard would make more than "
            f"{max_shards} shards; using {size} per shard"
        )
    shards = -(-customers // size)
    return ShardPlan(
        customers=customers, size=size, shards=shards, parallelism=min(parallelism, shards), note=note
    )
