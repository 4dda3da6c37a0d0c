"""core.batching.length_buckets: the length bucketing the augmenters and the trainer's batches share."""

from __future__ import annotations

import itertools
import random

import pytest

from core.batching import length_buckets


def padded(batches: list[list[int]], lengths: list[int]) -> list[int]:
    return [len(b) * max(lengths[i] for i in b) for b in batches]


def test_every_item_once_sorted_and_within_the_budget() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(500)]
    items = list(range(500))
    batches = length_buckets(items, lengths, max_rows=32, token_budget=400)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == items
    assert [lengths[i] for i in flat] == sorted(lengths)  # shortest first
    assert all(1 <= len(b) <= 32 for b in batches)
    assert all(cost <= 400 for cost in padded(batches, lengths))
    # Greedy: each batch closed only because its next item would have broken the budget or the row cap.
    for batch, following in itertools.pairwise(batches):
        grown = [*batch, following[0]]
        assert len(grown) > 32 or padded([grown], lengths)[0] > 400


def test_ties_keep_their_order_and_longest_first_reverses_the_sort() -> None:
    lengths = [3, 1, 3, 2, 1]
    assert length_buckets([0, 1, 2, 3, 4], lengths, max_rows=2) == [[1, 4], [3, 0], [2]]
    assert length_buckets([4, 3, 2, 1, 0], lengths, max_rows=2, longest_first=True) == [[2, 0], [3, 4], [1]]
    assert length_buckets([], lengths, max_rows=2) == []


def test_row_cost_counts_the_longest_row_and_an_oversized_item_stands_alone() -> None:
    lengths = [10, 10, 10, 100]
    # cost of a row = 2 × its length (e.g. k = 2 outputs): two rows of 10 cost 40, three cost 60.
    batches = length_buckets(range(4), lengths, max_rows=8, token_budget=50, row_cost=lambda n: 2 * n)
    assert batches == [[0, 1], [2], [3]]
    with pytest.raises(ValueError, match="max_rows"):
        length_buckets(range(4), lengths, max_rows=0)
