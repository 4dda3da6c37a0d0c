"""Export the training view (originals + approved variants by default) as CSV or JSONL, with provenance."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from core.settings import get_settings
from db.datasets import VIEW_COLUMNS, count_view, view_rows
from db.models import Dataset

FORMATS = ("csv", "jsonl")
# What a row says about where it came from: the view's columns after its identity and text (db.datasets).
PROVENANCE = list(VIEW_COLUMNS[VIEW_COLUMNS.index("origin") :])


def columns(dataset: Dataset) -> list[str]:
    return ["id", "external_id", "text", "split", *dataset.task_names(), *PROVENANCE]


def record(row: dict[str, Any], dataset: Dataset) -> dict[str, Any]:
    """One exported row from a view row (db.datasets.view_rows): its columns, then one column per task."""
    out: dict[str, Any] = {
        "id": row["id"],
        "external_id": row["external_id"],
        "text": row["text"],
        "split": row["split"],
    }
    for task in dataset.task_names():
        out[task] = row["labels"].get(task)
    for key in PROVENANCE:
        out[key] = row[key]
    return out


# OWASP's rule against formula injection (CSV injection): a cell that begins with one of these is read by a
# spreadsheet as a formula (or, past a tab or carriage return, still as one); a leading ' makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: strings that begin like a formula get a leading '. Numbers stay
    numbers (a negative similarity is not a formula). JSONL exports are left exact."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValidationFailed(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}", field="format")


def iter_export(
    session: Session, dataset: Dataset, include: set[str], fmt: str, counter: list[int] | None = None
) -> Iterator[str]:
    """The export file as text chunks of 500 rows (streamed by the API, written by the CLI and the export
    job); samples are read in batches, so memory holds one batch whatever the size of the dataset."""
    check_format(fmt)
    cols = columns(dataset)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        csv.writer(buf, lineterminator="\n").writerow([spreadsheet_safe(c) for c in cols])  # task names too
        for i, sample in enumerate(view_rows(session, dataset, include), start=1):
            if counter is not None:
                counter[0] += 1
            rec = record(sample, dataset)
            if rec["method_params"] is not None:
                rec["method_params"] = json.dumps(rec["method_params"], sort_keys=True)
            writer.writerow({key: spreadsheet_safe(value) for key, value in rec.items()})
            if i % 500 == 0:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()
    else:
        lines = []
        for sample in view_rows(session, dataset, include):
            if counter is not None:
                counter[0] += 1
            lines.append(json.dumps(record(sample, dataset), ensure_ascii=False))
            if len(lines) >= 500:
                yield "\n".join(lines) + "\n"
                lines = []
        if lines:
            yield "\n".join(lines) + "\n"


def write_export(
    session: Session,
    dataset: Dataset,
    include: set[str],
    fmt: str,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write atomically (temporary file, then rename). Returns the number of rows. `progress(written, total)`
    follows it a chunk at a time (a million rows take a while)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    counter = [0]
    total = count_view(session, dataset, include) if progress else 0
    if progress:
        progress(0, total)
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        for chunk in iter_export(session, dataset, include, fmt, counter):
            fh.write(chunk)
            if progress:
                progress(counter[0], max(total, counter[0]))
    tmp.replace(path)
    return counter[0]


def export_to_file(engine: Engine, dataset_name: str, fmt: str, include: str, job_id: int) -> dict[str, Any]:
    """The `export` job's work: the chosen view of a dataset, written to <data_dir>/exports/job<id>.<fmt>."""
    from db.datasets import get_dataset, parse_include
    from db.session import readonly_engine, session_scope

    chosen = parse_include(include)
    path = get_settings().data_dir.resolve() / "exports" / f"job{job_id}.{fmt}"
    # Read-only: on SQLite a write transaction would hold the database's one write lock for the whole export.
    with session_scope(readonly_engine(engine)) as session:
        dataset = get_dataset(session, dataset_name)
        rows = write_export(session, dataset, chosen, fmt, path)
    return {"path": str(path), "rows": rows, "format": fmt, "dataset": dataset_name}
