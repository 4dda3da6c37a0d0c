"""A training run's snapshot: every (sample id, content hash) it trained on, as a Parquet file beside its
artifacts (two columns, read back by record batches), so that a run over millions of samples stores no
multi-megabyte JSON row and the API streams it. Runs recorded before the file existed keep their list in
training_runs.snapshot, and read the same way."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from db.models import TrainingRun

SNAPSHOT_FILE = "snapshot.parquet"
BATCH_ROWS = 65_536


def write_snapshot(pairs: Sequence[Sequence[Any]], path: Path) -> int:
    """Write [[sample_id, content_hash], ...] to `path` (Parquet, row groups of BATCH_ROWS); returns the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("sample_id", pa.int64()), ("content_hash", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(pairs), BATCH_ROWS):
            chunk = pairs[start : start + BATCH_ROWS]
            writer.write_table(
                pa.table(
                    {"sample_id": [int(p[0]) for p in chunk], "content_hash": [str(p[1]) for p in chunk]}, schema=schema
                )
            )
    return len(pairs)


def snapshot_size(run: TrainingRun) -> int:
    if run.snapshot_path is not None and run.snapshot_size is not None:  # written together when a run succeeds
        return run.snapshot_size
    return len(run.snapshot or [])


def snapshot_batches(run: TrainingRun) -> Iterator[list[list[Any]]]:
    """The run's snapshot in batches of [sample_id, content_hash] (from its file, or from the row of an older
    run). A file that is gone raises FileNotFoundError."""
    if run.snapshot_path is None:
        rows = run.snapshot or []
        for start in range(0, len(rows), BATCH_ROWS):
            yield [list(pair) for pair in rows[start : start + BATCH_ROWS]]
        return
    import pyarrow.parquet as pq

    with pq.ParquetFile(run.snapshot_path) as parquet:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            ids, hashes = batch.column(0).to_pylist(), batch.column(1).to_pylist()
            yield [[i, h] for i, h in zip(ids, hashes, strict=True)]


def snapshot_pairs(run: TrainingRun) -> Iterator[list[Any]]:
    for batch in snapshot_batches(run):
        yield from batch


def pairs_digest(pairs: Iterable[Sequence[Any]]) -> str:
    """A digest of a training set, its (sample_id, content_hash) pairs in any order: equal digests, same texts."""
    digest = hashlib.sha256()
    for sample_id, content in sorted((int(i), str(h)) for i, h in pairs):
        digest.update(f"{sample_id}:{content}\n".encode())
    return digest.hexdigest()


def snapshot_digest(run: TrainingRun) -> str:
    """The run's training-set digest: stored when it finished, or (a run recorded before migration 0010) read
    and sorted from its snapshot, which takes seconds for a million pairs. A file that is gone raises
    FileNotFoundError."""
    if run.snapshot_digest is not None:
        return run.snapshot_digest
    return pairs_digest(snapshot_pairs(run))


def snapshot_json(run: TrainingRun) -> Iterator[str]:
    """{"run_id", "size", "snapshot": [[id, hash], ...]} as text chunks, one batch at a time."""
    yield f'{{"run_id": {run.id}, "size": {snapshot_size(run)}, "snapshot": ['
    first = True
    for batch in snapshot_batches(run):
        if batch:
            yield ("" if first else ", ") + json.dumps(batch)[1:-1]
            first = False
    yield "]}"
