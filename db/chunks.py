"""Long IN-lists, cut into statements that every supported database accepts."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# SQLite before 3.32 accepts at most 999 bound parameters per statement (SQLITE_MAX_VARIABLE_NUMBER; 32,766
# since, 65,535 on Postgres), and a system SQLite may be that old. 900 ids leave room for the handful of other
# parameters a statement binds beside its IN-list (dataset id, status, a user id), and are still long enough
# that a large selection costs few round trips.
IN_LIST_CHUNK = 900


def chunked(items: Sequence[T], size: int = IN_LIST_CHUNK) -> Iterator[list[T]]:
    """Consecutive slices of at most `size` items, in order; none for no items."""
    if size < 1:
        raise ValueError(f"size must be at least 1; got {size}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
