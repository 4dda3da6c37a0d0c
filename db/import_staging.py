"""Staging tables of an import: the file's validated rows land here in batches, then move into `samples` in one
statement pair (the switch).

They are TEMPORARY tables, private to the connection that stages: nothing else sees them, writing them takes no
lock on the shared database (on SQLite, a deferred transaction that writes only TEMP tables leaves the write lock
free for everyone else), and a process killed mid-import leaves nothing behind: the database drops a
connection's temporary tables with the connection. Rows are written with COPY on Postgres and executemany on
SQLite. Functions run on the caller's connection and transaction; the caller commits.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, bindparam, text

from db.chunks import chunked
from db.models import UTCDateTime

if TYPE_CHECKING:
    import psycopg

ROWS = "import_rows"
LABELS = "import_labels"
SPLITS = "import_splits"

_CREATE = (
    (
        f"CREATE TEMPORARY TABLE {ROWS} (seq INTEGER PRIMARY KEY, line BIGINT NOT NULL, text TEXT NOT NULL, "
        "content_hash VARCHAR(64) NOT NULL, external_id VARCHAR(200), split VARCHAR(8), first_seq INTEGER NOT NULL, "
        "existing_id INTEGER)"
    ),
    f"CREATE TEMPORARY TABLE {LABELS} (seq INTEGER NOT NULL, task VARCHAR(100) NOT NULL, label VARCHAR(100) NOT NULL)",
    f"CREATE TEMPORARY TABLE {SPLITS} (seq INTEGER PRIMARY KEY, split VARCHAR(8) NOT NULL)",
)


# SQLite's page cache per connection, in KiB, while it stages and switches: its 2 MB default thrashes on the
# indexes of a million rows (the staging phase ran ~1.5× longer with it). Given back by drop().
SQLITE_CACHE_KIB = 131_072


def create(conn: Connection) -> None:
    """Empty staging tables on this connection (left over ones from an earlier import on it are dropped)."""
    drop(conn)
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA main.cache_size = -{SQLITE_CACHE_KIB}")
        conn.exec_driver_sql(f"PRAGMA temp.cache_size = -{SQLITE_CACHE_KIB}")
    for statement in _CREATE:
        conn.exec_driver_sql(statement)


def drop(conn: Connection) -> None:
    for table in (ROWS, LABELS, SPLITS):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA main.cache_size = -2000")
        conn.exec_driver_sql("PRAGMA temp.cache_size = -2000")


def _copy(conn: Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        driver = cast("psycopg.Connection[Any]", conn.connection.driver_connection)  # Postgres: always psycopg 3
        with driver.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in columns)
        conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", list(map(tuple, rows)))


def add_rows(
    conn: Connection,
    rows: Sequence[tuple[int, int, str, str, str | None, str | None]],
    labels: Sequence[tuple[int, str, str]],
) -> None:
    """rows: (seq, line, text, content_hash, external_id, split); labels: (seq, task, label)."""
    _copy(
        conn,
        ROWS,
        ("seq", "line", "text", "content_hash", "external_id", "split", "first_seq"),
        [(*row, row[0]) for row in rows],
    )
    _copy(conn, LABELS, ("seq", "task", "label"), labels)


def add_splits(conn: Connection, seqs: Sequence[int], splits: Sequence[str]) -> None:
    """Splits drawn by augloop (they take precedence over import_rows.split)."""
    _copy(conn, SPLITS, ("seq", "split"), list(zip(seqs, splits, strict=True)))


def link_duplicates(conn: Connection) -> None:
    """first_seq: the first row of the file with the same content hash (the row itself when it is the first)."""
    conn.exec_driver_sql(f"CREATE INDEX ix_{ROWS}_hash ON {ROWS} (content_hash, seq)")
    conn.exec_driver_sql(
        f"UPDATE {ROWS} SET first_seq = "
        f"(SELECT MIN(r2.seq) FROM {ROWS} r2 WHERE r2.content_hash = {ROWS}.content_hash) "
        f"WHERE content_hash IN (SELECT content_hash FROM {ROWS} GROUP BY content_hash HAVING COUNT(*) > 1)"
    )


def link_existing(conn: Connection, dataset_id: int) -> None:
    """existing_id: the dataset's sample with the same content hash, if any. Run before the switch (the
    near-duplicate report must not name rows that will be skipped) and again in it, under the write lock: a
    sample deleted meanwhile links no more."""
    conn.exec_driver_sql(f"UPDATE {ROWS} SET existing_id = NULL WHERE existing_id IS NOT NULL")
    conn.execute(
        text(
            f"UPDATE {ROWS} SET existing_id = (SELECT s.id FROM samples s WHERE s.dataset_id = :ds "
            f"AND s.content_hash = {ROWS}.content_hash) WHERE EXISTS (SELECT 1 FROM samples s "
            f"WHERE s.dataset_id = :ds AND s.content_hash = {ROWS}.content_hash)"
        ),
        {"ds": dataset_id},
    )


def texts_of(conn: Connection, seqs: Sequence[int]) -> list[str]:
    """The staged texts of `seqs` (sorted, distinct), in that order."""
    found: dict[int, str] = {}
    for chunk in chunked(seqs):
        marks = ", ".join(str(int(s)) for s in chunk)  # integers from numpy: safe to inline
        found.update(conn.exec_driver_sql(f"SELECT seq, text FROM {ROWS} WHERE seq IN ({marks})").tuples().all())
    return [found[int(s)] for s in seqs]


def label_sets(conn: Connection) -> dict[str, list[str]]:
    """Every label seen per task (in the database's collation: the caller sorts them as it needs)."""
    out: dict[str, list[str]] = {}
    for task, label in conn.exec_driver_sql(f"SELECT DISTINCT task, label FROM {LABELS} ORDER BY task, label").tuples():
        out.setdefault(task, []).append(label)
    return out


_NEW = "r.seq = r.first_seq AND r.existing_id IS NULL"
_SPLIT = "COALESCE(d.split, r.split)"
_FROM = f"{ROWS} r LEFT JOIN {SPLITS} d ON d.seq = r.seq"


def duplicates(conn: Connection, limit: int) -> tuple[int, int, list[dict[str, Any]]]:
    """How many rows are skipped as duplicates, how many of those repeat a sample that is not an original (a
    variant, submitted text or pseudo-label, whatever its review), and the first `limit` of them: a row whose
    text the dataset already holds names that sample with its origin and review status, a repeat within the
    file names the first line."""
    where = "r.existing_id IS NOT NULL OR r.seq <> r.first_seq"
    count = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {ROWS} r WHERE {where}").scalar_one()
    of_reviewed = conn.exec_driver_sql(
        f"SELECT COUNT(*) FROM {ROWS} r JOIN samples s ON s.id = r.existing_id WHERE s.origin <> 'original'"
    ).scalar_one()
    listed: list[dict[str, Any]] = []
    for line, existing, first_line, origin, status in conn.exec_driver_sql(
        f"SELECT r.line, r.existing_id, f.line, s.origin, s.review_status FROM {ROWS} r "
        f"JOIN {ROWS} f ON f.seq = r.first_seq LEFT JOIN samples s ON s.id = r.existing_id "
        f"WHERE {where} ORDER BY r.seq LIMIT {int(limit)}"
    ).tuples():
        listed.append(
            {"line": line, "duplicate_of_sample": existing, "origin": origin, "review_status": status}
            if existing is not None
            else {"line": line, "duplicate_of_line": first_line}
        )
    return int(count), int(of_reviewed), listed


def label_conflicts(conn: Connection, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Rows skipped as repeats of an earlier row of the file whose labels they contradict (a task the earlier row
    labels otherwise, or leaves unlabelled): how many, and the first `limit` as line, first line, task, label and
    the label kept."""
    repeats = conn.exec_driver_sql(f"SELECT COUNT(*) FROM {ROWS} WHERE seq <> first_seq").scalar_one()
    if not repeats:
        return 0, []
    conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS ix_{LABELS}_seq ON {LABELS} (seq, task)")
    found = (
        f"FROM {ROWS} r JOIN {ROWS} f ON f.seq = r.first_seq JOIN {LABELS} a ON a.seq = r.seq "
        f"LEFT JOIN {LABELS} b ON b.seq = r.first_seq AND b.task = a.task "
        "WHERE r.seq <> r.first_seq AND (b.label IS NULL OR b.label <> a.label)"
    )
    return _rows_in_conflict(
        conn,
        found,
        "r.line, f.line, a.task, a.label, b.label",
        ("line", "duplicate_of_line", "task", "label", "kept"),
        limit,
    )


def _rows_in_conflict(
    conn: Connection, found: str, columns: str, keys: tuple[str, ...], limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """How many rows (r.seq) `found` (FROM … WHERE over rows r and their labels a) holds, and its first `limit`
    (row, task) pairs as dicts of `keys` for the selected `columns`."""
    count = conn.exec_driver_sql(f"SELECT COUNT(DISTINCT r.seq) {found}").scalar_one()
    if not count:
        return 0, []
    rows = conn.exec_driver_sql(f"SELECT {columns} {found} ORDER BY r.seq, a.task LIMIT {int(limit)}").tuples()
    return int(count), [dict(zip(keys, row, strict=True)) for row in rows]


def split_conflicts(conn: Connection, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Rows skipped as repeats (of a text the dataset holds, or of an earlier row of the file) whose split, as the
    file gives it, is not the split the text keeps: how many, and the first `limit` as line, the file's split,
    the split kept, and the sample or first line repeated."""
    found = (
        f"FROM {ROWS} r LEFT JOIN samples s ON s.id = r.existing_id JOIN {ROWS} f ON f.seq = r.first_seq "
        # the repeats first, on r alone: the joins then look up the few rows skipped, not every row of the file
        "WHERE r.split IS NOT NULL AND (r.existing_id IS NOT NULL OR r.seq <> r.first_seq) AND ("
        "(r.existing_id IS NOT NULL AND s.split <> r.split) "
        "OR (r.existing_id IS NULL AND r.seq <> r.first_seq AND f.split IS NOT NULL AND f.split <> r.split))"
    )
    count = conn.exec_driver_sql(f"SELECT COUNT(*) {found}").scalar_one()
    if not count:
        return 0, []
    listed = [
        {"line": line, "split": split, "kept": kept, **({"sample": sample} if sample else {"first_line": first})}
        for line, split, kept, sample, first in conn.exec_driver_sql(
            f"SELECT r.line, r.split, COALESCE(s.split, f.split), r.existing_id, f.line {found} "
            f"ORDER BY r.seq LIMIT {int(limit)}"
        ).tuples()
    ]
    return int(count), listed


def id_repeats(
    conn: Connection, dataset_id: int | None, limit: int
) -> tuple[int, list[dict[str, Any]], int, list[dict[str, Any]]]:
    """Rows the import adds whose id another row it adds also has, and rows it adds whose id a stored sample of
    the dataset already has (a join by id back to the file, or to an export, would then be ambiguous): how many of
    each, and the first `limit` as line, id and the first line or the sample. A row skipped as a repeat of a text
    adds nothing, so its id is not counted. Grouping a million staged ids takes about half a second on SQLite."""
    if conn.exec_driver_sql(f"SELECT 1 FROM {ROWS} WHERE external_id IS NOT NULL LIMIT 1").first() is None:
        return 0, [], 0, []
    conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS ix_{ROWS}_id ON {ROWS} (external_id, seq)")
    new = "r.seq = r.first_seq AND r.existing_id IS NULL AND r.external_id IS NOT NULL"
    first = (
        f"SELECT r.external_id AS id, MIN(r.seq) AS seq FROM {ROWS} r WHERE {new} "
        "GROUP BY r.external_id HAVING COUNT(*) > 1"
    )
    within = (
        f"FROM {ROWS} r JOIN ({first}) f ON f.id = r.external_id JOIN {ROWS} fr ON fr.seq = f.seq "
        f"WHERE {new} AND r.seq <> f.seq"
    )
    repeats = int(conn.exec_driver_sql(f"SELECT COUNT(*) {within}").scalar_one())
    listed = [
        {"line": line, "id": ident, "first_line": first_line}
        for line, ident, first_line in conn.exec_driver_sql(
            f"SELECT r.line, r.external_id, fr.line {within} ORDER BY r.seq LIMIT {int(limit)}"
        ).tuples()
    ]
    if dataset_id is None:
        return repeats, listed, 0, []
    # the dataset's samples that have an id, each looked up in the file's index (not the file's rows each
    # looked up in the dataset: samples have no index on external_id)
    stored = (
        f"FROM samples s JOIN {ROWS} r ON r.external_id = s.external_id "
        f"WHERE s.dataset_id = :ds AND s.external_id IS NOT NULL AND {new}"
    )
    clashes = int(conn.execute(text(f"SELECT COUNT(DISTINCT r.seq) {stored}"), {"ds": dataset_id}).scalar_one())
    clashing = [
        {"line": line, "id": ident, "sample": sample}
        for line, ident, sample in conn.execute(
            text(f"SELECT r.line, r.external_id, MIN(s.id) {stored} GROUP BY r.seq ORDER BY r.seq LIMIT {int(limit)}"),
            {"ds": dataset_id},
        ).tuples()
    ]
    return repeats, listed, clashes, clashing


def existing_label_conflicts(conn: Connection, limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Rows skipped because the dataset holds their text, whose labels differ from that sample's (a task the
    sample labels otherwise, or leaves unlabelled): how many, and the first `limit` as line, sample, task, label
    and the sample's label."""
    found = (
        f"FROM {ROWS} r JOIN {LABELS} a ON a.seq = r.seq "
        "LEFT JOIN sample_labels b ON b.sample_id = r.existing_id AND b.task = a.task "
        "WHERE r.existing_id IS NOT NULL AND (b.label IS NULL OR b.label <> a.label)"
    )
    return _rows_in_conflict(
        conn,
        found,
        "r.line, r.existing_id, a.task, a.label, b.label",
        ("line", "sample", "task", "label", "kept"),
        limit,
    )


def new_rows(conn: Connection, batch: int = 10_000) -> Iterator[list[tuple[int, int, str, str]]]:
    """The rows that will be inserted, as (seq, line, text, split), in seq order, `batch` at a time."""
    last = -1
    while True:
        rows = (
            conn.exec_driver_sql(
                f"SELECT r.seq, r.line, r.text, {_SPLIT} FROM {_FROM} WHERE {_NEW} AND r.seq > {int(last)} "
                f"ORDER BY r.seq LIMIT {int(batch)}"
            )
            .tuples()
            .all()
        )
        if not rows:
            return
        yield [(int(seq), int(line), text, split) for seq, line, text, split in rows]
        last = rows[-1][0]


def move_splits(conn: Connection, moves: dict[int, str]) -> None:
    """Rows whose drawn split changes (`add_splits` wrote every row's first)."""
    for chunk in chunked(sorted(moves)):
        conn.execute(
            text(f"UPDATE {SPLITS} SET split = :split WHERE seq = :seq"),
            [{"split": moves[seq], "seq": seq} for seq in chunk],
        )


def split_counts(conn: Connection) -> dict[str, int]:
    """Rows that will be inserted, per split."""
    return dict(
        conn.exec_driver_sql(f"SELECT {_SPLIT}, COUNT(*) FROM {_FROM} WHERE {_NEW} GROUP BY {_SPLIT}").tuples().all()
    )


def insert_samples(conn: Connection, dataset_id: int, created_by: int | None, now: datetime) -> int:
    """The switch: every new row (first in the file, not in the dataset yet) becomes an original sample, with
    its labels, in two statements. Returns how many samples were inserted."""
    params = {"ds": dataset_id, "by": created_by, "now": now}
    inserted = conn.execute(
        text(
            "INSERT INTO samples (dataset_id, external_id, text, split, origin, content_hash, created_by, "
            "review_count, version, created_at, updated_at) "
            f"SELECT :ds, r.external_id, r.text, {_SPLIT}, 'original', r.content_hash, :by, 0, 1, :now, :now "
            f"FROM {_FROM} WHERE {_NEW} ORDER BY r.seq"
        ).bindparams(bindparam("now", type_=UTCDateTime())),
        params,
    ).rowcount
    conn.execute(
        text(
            "INSERT INTO sample_labels (sample_id, task, label) "
            f"SELECT s.id, l.task, l.label FROM {LABELS} l JOIN {ROWS} r ON r.seq = l.seq "
            f"JOIN samples s ON s.dataset_id = :ds AND s.content_hash = r.content_hash WHERE {_NEW}"
        ),
        {"ds": dataset_id},
    )
    return int(inserted)
