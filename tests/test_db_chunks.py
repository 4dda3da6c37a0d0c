"""db.chunks.chunked: the one way long IN-lists are cut, under SQLite's bound-parameter limit."""

from __future__ import annotations

import sqlite3

import pytest

from db.chunks import IN_LIST_CHUNK, chunked


@pytest.mark.parametrize("n", [0, 1, IN_LIST_CHUNK, IN_LIST_CHUNK + 1, 2 * IN_LIST_CHUNK + 5])
def test_chunks_cover_the_items_in_order(n: int) -> None:
    items = list(range(n))
    chunks = list(chunked(items))
    assert [i for c in chunks for i in c] == items
    assert len(chunks) == -(-n // IN_LIST_CHUNK)
    assert all(1 <= len(c) <= IN_LIST_CHUNK for c in chunks)


def test_small_sizes_and_tuples() -> None:
    assert list(chunked((1, 2, 3), 2)) == [[1, 2], [3]]
    assert list(chunked([1, 2], 2)) == [[1, 2]]
    with pytest.raises(ValueError, match="size"):
        list(chunked([1], 0))


def test_lookups_stay_under_the_old_sqlite_limit_of_999_parameters(db_session) -> None:
    from db.augmentation import labels_of
    from services.votes import latest_votes

    raw = db_session.connection().connection.driver_connection
    raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # what SQLite before 3.32 allows
    ids = list(range(1, 2 * IN_LIST_CHUNK + 2))
    with pytest.raises(Exception, match="too many SQL variables"):
        raw.execute(f"SELECT id FROM samples WHERE id IN ({','.join('?' * len(ids))})", ids)
    assert labels_of(db_session, ids) == {i: {} for i in ids}
    assert latest_votes(db_session, ids) == {}
