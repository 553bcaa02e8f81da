"""Cutting a step's customers into shards."""

from __future__ import annotations

import pytest

from webrelease.copier.runlayout import shard_layout
from webrelease.copier.spec import MAX_SHARDS


def test_fifty_customers_in_five_shards() -> None:
    plan = shard_layout(50, 10, 10)
    assert (plan.shards, plan.size, plan.parallelism, plan.note) == (5, 10, 5, "")
    assert [plan.bounds(i) for i in range(5)] == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]


def test_last_shard_is_smaller_and_every_customer_is_in_exactly_one_shard() -> None:
    plan = shard_layout(101, 25, 3)
    assert plan.shards == 5
    assert [plan.customers_in(i) for i in range(plan.shards)] == [25, 25, 25, 25, 1]
    covered = [p for i in range(plan.shards) for p in range(*plan.bounds(i))]
    assert covered == list(range(101))
    assert all(plan.shard_of(p) == i for i in range(plan.shards) for p in range(*plan.bounds(i)))
    assert plan.parallelism == 3


@pytest.mark.parametrize("customers", [MAX_SHARDS + 1, 100_000, 1_234_567])
def test_too_many_shards_grow_the_shard_size(customers: int) -> None:
    plan = shard_layout(customers, 1, 50)
    assert plan.shards <= MAX_SHARDS
    assert plan.size * plan.shards >= customers > plan.size * (plan.shards - 1)
    assert "per shard" in plan.note


def test_exactly_max_shards_is_kept() -> None:
    plan = shard_layout(MAX_SHARDS * 2, 2, 10)
    assert (plan.shards, plan.size, plan.note) == (MAX_SHARDS, 2, "")


def test_no_customers_no_shards() -> None:
    plan = shard_layout(0, 50, 10)
    assert (plan.shards, plan.parallelism) == (0, 0)


@pytest.mark.parametrize(("customers", "size", "par"), [(-1, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_bad_arguments(customers: int, size: int, par: int) -> None:
    with pytest.raises(ValueError):
        shard_layout(customers, size, par)


def test_out_of_range_index() -> None:
    plan = shard_layout(10, 5, 1)
    with pytest.raises(IndexError):
        plan.customers_in(2)
    with pytest.raises(IndexError):
        plan.shard_of(10)
