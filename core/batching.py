"""Length bucketing: sort items by length and cut batches whose padded size stays within a budget.

A batch is padded to its longest member, so a batch of similar lengths wastes little on padding, and its cost
is rows × the cost of one row as long as the longest. The augmenters cut under a token budget (a batch of
tweets is not padded to an essay, and a batch of essays stays within memory); the trainer cuts fixed-size
batches, longest first, within shuffled chunks of its epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, SupportsInt

if TYPE_CHECKING:
    import numpy as np


def length_buckets(
    items: Sequence[int],
    lengths: Sequence[SupportsInt] | np.ndarray,
    *,
    max_rows: int,
    token_budget: int | None = None,
    row_cost: Callable[[int], int] | None = None,
    longest_first: bool = False,
) -> list[list[int]]:
    """`items` (indices into `lengths`) sorted by length (stable; longest first if asked) and cut in order.

    A batch closes before the item that would make it exceed `max_rows` rows or, with a `token_budget`, make
    rows × row_cost(longest length in it) exceed the budget; `row_cost` is the padded cost of one row of a
    given length (the length itself by default; it must not decrease with the length). An item that is over
    the budget on its own still gets a batch: every item is in exactly one batch.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1; got {max_rows}")
    cost = row_cost or (lambda length: length)
    sign = -1 if longest_first else 1
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for item in sorted(items, key=lambda i: sign * int(lengths[i])):
        widest = max(longest, int(lengths[item])) if current else int(lengths[item])
        over_budget = token_budget is not None and (len(current) + 1) * cost(widest) > token_budget
        if current and (len(current) >= max_rows or over_budget):
            batches.append(current)
            current, widest = [], int(lengths[item])
        current.append(item)
        longest = widest
    if current:
        batches.append(current)
    return batches
