"""Export the training view (originals + approved variants by default) as CSV or JSONL, with provenance.

An export of the training view is what an engineer trains on outside augloop, so it holds what the trainer
learns from: an approved variant (or submitted text, or pseudo-label) whose text is a near-duplicate of a val or
test text as they are now (the leak guard's measure, services/leak_guard.py) is left out, as every training run
leaves it out (services/training_data.py), and counted. Every row not an original says so in `near_val_test`;
pending and rejected rows, which never train, stay in the views that ask for them, flagged. An edited variant's
`generated_text` (the augmenter's text its reviewer replaced) is checked the same way and left blank when it is a
near-duplicate of a val or test text: the row stays (its own text is what `near_val_test` is about).

A JSONL record is one line for any line-based reader: U+2028, U+2029 and U+0085, which JSON allows raw in a
string but `str.splitlines` (and JavaScript before ES2019) take for line ends, are written as \\u escapes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shlex
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from core.settings import get_settings
from db.chunks import chunked
from db.datasets import VIEW_COLUMNS, count_view, view_rows
from db.models import Dataset, Job, JobStatus, Origin, ReviewStatus
from db.session import delete_when_committed
from services import leak_guard
from services.access import shown_provenance

FORMATS = ("csv", "jsonl")
# What a row says about where it came from: the view's columns after its identity and text (db.datasets).
PROVENANCE = list(VIEW_COLUMNS[VIEW_COLUMNS.index("origin") :])
# An export's columns beside the tasks' (one column per task, named by the task): a task may not take one of these
# names, or its labels would be written over (services/importing.py refuses such a task at import).
RESERVED_COLUMNS = ("id", "external_id", "text", "split", *PROVENANCE, "near_val_test")


@dataclass
class ExportCount:
    """What an export wrote and what it left out, filled in as its chunks are read."""

    rows: int = 0
    left_out_near_val_test: int = 0
    # CSV cells (texts, labels) that a leading ' keeps from running as a formula: not the exact value, which the
    # JSONL export keeps
    guarded_cells: int = 0


INCLUDE_CHOICES = {"original", "approved", "pending", "rejected"}


def parse_include(include: str | list[str]) -> set[str]:
    parts = include.split(",") if isinstance(include, str) else include
    chosen = {p.strip() for p in parts if p.strip()}
    bad = chosen - INCLUDE_CHOICES
    if bad or not chosen:
        raise ValidationFailed(
            f"include must name some of {sorted(INCLUDE_CHOICES)}; got {sorted(bad) or 'nothing'}", field="include"
        )
    return chosen


def columns(dataset: Dataset) -> list[str]:
    return [*RESERVED_COLUMNS[:4], *dataset.task_names(), *RESERVED_COLUMNS[4:]]


def record(row: dict[str, Any], dataset: Dataset, whole_paths: bool = False) -> dict[str, Any]:
    """One exported row from a view row (db.datasets.view_rows): its columns, then one column per task. A model
    directory of the server's in the provenance is named by its last part (access.shown_provenance: exports
    through the API and export jobs reach every member), unless `whole_paths` (the operator's CLI)."""
    out: dict[str, Any] = {
        "id": row["id"],
        "external_id": row["external_id"],
        "text": row["text"],
        "split": row["split"],
    }
    for task in dataset.task_names():
        out[task] = row["labels"].get(task)
    for key in PROVENANCE:
        out[key] = row[key] if whole_paths or key not in ("model_name", "method_params") else shown_provenance(row[key])
    out["near_val_test"] = row.get("near_val_test")
    return out


def reimport_command(dataset: Dataset, file: str) -> tuple[str, list[str]]:
    """The `augloop import` command that makes a new dataset of `dataset`'s export `file` with the tasks, label sets
    and language it has: an export holds rows, not the label sets (their order is the classes' ids, and a class no
    row holds is not in it) or the language, which an import would otherwise take sorted and as `en`. Also the tasks
    whose label set `--labels TASK=a,b,c` cannot spell (a task name with `=`, a label with `,` or spaces at an end):
    the API's labels field (JSON) takes those."""
    args = ["augloop", "import", f"./{file}" if file.startswith("-") else file, f"--dataset={dataset.name}"]
    args += [f"--task={task}" for task in dataset.task_names()]
    unspelt: list[str] = []
    for task in dataset.task_names():
        labels = dataset.labels_of(task)
        if not labels:  # nothing to keep: its rows hold no label, nor will the re-imported ones
            continue
        if "=" in task or any("," in label or label != label.strip() for label in labels):
            unspelt.append(task)
            continue
        args.append(f"--labels={task}={','.join(labels)}")
    args.append(f"--language={dataset.language}")
    if dataset.project is not None:  # where it was; on another server, a project of that name must exist
        args.append(f"--project={dataset.project_name}")
    if dataset.display_name and dataset.display_name != dataset.name:
        args.append(f"--display-name={dataset.display_name}")
    return shlex.join(args), unspelt


def _guarded(
    session: Session, dataset: Dataset, rows: Iterator[dict[str, Any]], count: ExportCount
) -> Iterator[dict[str, Any]]:
    """The view's rows, checked a leak guard's batch at a time (leak_guard.CHECK_BATCH: one freshness key read
    per batch), each row not an original marked `near_val_test` (True or False; None for originals,
    which imports check), and an approved one that is near left out and counted."""
    batch: list[dict[str, Any]] = []

    def checked() -> Iterator[dict[str, Any]]:
        reviewed = [row for row in batch if row["origin"] != Origin.original.value]
        found = leak_guard.leaks(session, dataset, [row["text"] for row in reviewed])
        for row, leak in zip(reviewed, found, strict=True):
            row["near_val_test"] = leak is not None
        edited = [row for row in reviewed if row.get("generated_text") and row["generated_text"] != row["text"]]
        found = leak_guard.leaks(session, dataset, [row["generated_text"] for row in edited]) if edited else []
        for row, leak in zip(edited, found, strict=True):
            if leak is not None:
                row["generated_text"] = None
        for row in batch:
            if row.get("near_val_test") and row["review_status"] == ReviewStatus.approved.value:
                count.left_out_near_val_test += 1
                continue
            count.rows += 1
            yield row

    for row in rows:
        batch.append(row)
        if len(batch) >= leak_guard.CHECK_BATCH:
            yield from checked()
            batch = []
    yield from checked()


# OWASP's rule against formula injection (CSV injection): a cell that begins with one of these is read by a
# spreadsheet as a formula (or, past a tab or carriage return, still as one); a leading ' makes it text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A signed decimal number ("-1", "+0.5", "-2e3") is a number to a spreadsheet, not a formula: labels such as -1/0/+1
# stay as they are (they came back from a re-import as other classes, "'-1" and "'+1").
_SIGNED_NUMBER = re.compile(r"[+-](?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")  # ASCII digits only


def _formula_like(value: str) -> bool:
    """Whether a spreadsheet would read `value` as a formula, or a re-import would read it as a guarded one (a
    text that itself begins with ' before a formula's start, "'@user is wrong": it lost its ' on the way back)."""
    bare = value.lstrip("'")
    return bare.startswith(FORMULA_STARTS) and not _SIGNED_NUMBER.fullmatch(bare)


def spreadsheet_safe(value: Any, count: ExportCount | None = None) -> Any:
    """A CSV cell a spreadsheet shows as text: strings that begin like a formula (or like a guarded one) get a
    leading ' (counted in `count.guarded_cells`), which spreadsheet_value takes off again. Numbers stay numbers
    (a negative similarity, a label "-1": no formula). JSONL exports are left exact."""
    if isinstance(value, str) and _formula_like(value):
        if count is not None:
            count.guarded_cells += 1
        return "'" + value
    return value


def spreadsheet_value(value: Any) -> Any:
    """A cell spreadsheet_safe wrote, as it was: without the ' it put before a formula's start (a re-import of a
    CSV export; services/import_reading.py)."""
    if isinstance(value, str) and value[:1] == "'" and spreadsheet_safe(value[1:]) == value:
        return value[1:]
    return value


# Characters JSON leaves raw in a string that line readers split on (those below U+0020 json.dumps escapes).
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"})


def jsonl_line(rec: dict[str, Any]) -> str:
    """One JSON record on one line: exact JSON (json.loads gives `rec` back), with no character that any
    line-based reader takes for a line end."""
    return json.dumps(rec, ensure_ascii=False).translate(_LINE_BREAKS)


_SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# Names of formats an export does not write (a JSON file is one array, not JSON Lines)
_OTHER_FORMATS = {  # with their article
    ".tsv": "a tab-separated",
    ".tab": "a tab-separated",
    ".json": "a JSON (one array)",
    ".parquet": "a Parquet",
    ".xlsx": "an Excel",
    ".xls": "an Excel",
}


def format_for(path: Path, fmt: str | None) -> str:
    """The format a file export writes: the one asked for, else the one its name says (`.jsonl`, `.ndjson`:
    JSONL; else CSV). A name that says another format than the one asked for is refused: `-o x.jsonl` wrote
    CSV into it, silently."""
    said = _SUFFIX_FORMATS.get(path.suffix.lower())
    if path.suffix.lower() in _OTHER_FORMATS:  # `-o x.tsv` wrote comma-separated values into it, silently
        raise ValidationFailed(
            f"{path.name} names {_OTHER_FORMATS[path.suffix.lower()]} file; an export is CSV (.csv) or JSON Lines "
            "(.jsonl)",
            field="output",
        )
    if fmt is None:
        return said or "csv"
    check_format(fmt)
    if said is not None and said != fmt:
        raise ValidationFailed(
            f"{path.name} names a {said.upper()} file but the format asked for is {fmt}; change one", field="format"
        )
    return fmt


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValidationFailed(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}", field="format")


def iter_export(
    session: Session,
    dataset: Dataset,
    include: set[str],
    fmt: str,
    count: ExportCount | None = None,
    whole_paths: bool = False,
) -> Iterator[str]:
    """The export file as text chunks of 500 rows (streamed by the API, written by the CLI and the export
    job); samples are read in batches, so memory holds one batch whatever the size of the dataset, beside the
    leak guard's val/test index (built once per process where the view holds rows that are not originals).
    `count` follows the rows written and those left out (see the module's doc)."""
    check_format(fmt)
    cols = columns(dataset)
    count = count if count is not None else ExportCount()
    rows = _guarded(session, dataset, view_rows(session, dataset, include), count)
    if fmt == "csv":
        buf = io.StringIO()
        # CRLF, the csv module's and RFC 4180's line end: with "\n" alone, a cell holding a lone CR went out unquoted,
        # and a reader (pandas, a spreadsheet) ended the row there, the rest of the cell a row of its own (a formula)
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\r\n")
        csv.writer(buf, lineterminator="\r\n").writerow([spreadsheet_safe(c) for c in cols])  # task names too
        for i, sample in enumerate(rows, start=1):
            rec = record(sample, dataset, whole_paths)
            if rec["method_params"] is not None:
                rec["method_params"] = json.dumps(rec["method_params"], sort_keys=True)
            writer.writerow({key: spreadsheet_safe(value, count) for key, value in rec.items()})
            if i % 500 == 0:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()
    else:
        lines = []
        for sample in rows:
            lines.append(jsonl_line(record(sample, dataset, whole_paths)))
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
    whole_paths: bool = False,
) -> ExportCount:
    """Write atomically (a temporary file of this call's own, then rename). Returns the rows written and left
    out. `progress(read, total)` follows the view's rows a chunk at a time (a million rows take a while).

    A new file is private (the CLI's umask 077, SECURITY.md); a file replaced keeps its permission bits: an export
    over a team's 0644 file made it 0600, unreadable to the group that read it before."""
    tmp = part_path(path)
    try:
        count = _write_part(session, dataset, include, fmt, tmp, progress, whole_paths)
        # a new file (or one deleted meanwhile) stays private, as everything augloop writes
        with contextlib.suppress(FileNotFoundError):
            tmp.chmod(stat.S_IMODE(path.stat().st_mode) & 0o777)  # its read/write bits, never setuid or sticky
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def exports_folder() -> Path:
    return get_settings().data_dir.resolve() / "exports"


_JOB_FILE = re.compile(rf"job\d+\.(?:{'|'.join(FORMATS)})(?:\..+\.part)?")


def is_job_file_name(name: str) -> bool:
    """Whether `name` is one an export job writes under exports/ (`job<id>.<format>`, or an attempt's part)."""
    return _JOB_FILE.fullmatch(name) is not None


def export_job_files(job_id: int) -> list[Path]:
    """Where export job `job_id` publishes its file, in either format (whether or not it exists)."""
    return [exports_folder() / f"job{job_id}.{fmt}" for fmt in FORMATS]


def export_job_parts(job_id: int) -> list[Path]:
    """The files export job `job_id`'s attempts are writing or left behind (a worker killed mid-write)."""
    return sorted(exports_folder().glob(f"job{job_id}.*.part"))


def _succeeded_exports(dataset_id: int) -> Select[int]:
    """A dataset's succeeded export jobs, the latest to finish first."""
    return (
        select(Job.id)
        .where(Job.kind == "export", Job.dataset_id == dataset_id, Job.status == JobStatus.succeeded)
        .order_by(Job.finished_at.desc(), Job.id.desc())
    )


def pruned_exports(session: Session, job_ids: list[int]) -> list[Path]:
    """The files of these export jobs that are no longer among the newest `AUGLOOP_EXPORTS_KEPT_PER_DATASET` of
    their dataset (to be deleted: exports are copies of a dataset, and any member may ask for one)."""
    kept_count = get_settings().exports_kept_per_dataset
    by_dataset: dict[int, list[int]] = {}
    for ids in chunked(sorted(set(job_ids))):
        for job_id, dataset_id in session.execute(
            select(Job.id, Job.dataset_id).where(Job.id.in_(ids), Job.kind == "export", Job.dataset_id.is_not(None))
        ).tuples():
            assert dataset_id is not None  # the query leaves none out; for the type checker
            by_dataset.setdefault(dataset_id, []).append(job_id)
    out: list[Path] = []
    for dataset_id, ids in by_dataset.items():
        kept = set(session.scalars(_succeeded_exports(dataset_id).limit(kept_count)))
        out += [path for job_id in ids if job_id not in kept for path in export_job_files(job_id)]
    return out


def prune_exports(session: Session, dataset_id: int) -> None:
    """As an export publishes: the files of the dataset's exports that fall out of the newest kept go once the
    transaction commits (the workers' sweep deletes any this misses, services/leftover_files.py)."""
    kept_count = get_settings().exports_kept_per_dataset
    for job_id in session.scalars(_succeeded_exports(dataset_id).offset(kept_count).limit(kept_count)):
        for path in export_job_files(job_id):
            delete_when_committed(session, path)


def part_path(path: Path) -> Path:
    """Where one attempt writes `path` before publishing it: a name of its own (`<name>.<random>.part`), so that
    two attempts at one file (a worker that lost its lease and the one that took the job over) never write into
    each other's file, nor into the one published. A dataset's deletion finds it by the final name's start
    (`job<id>.`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.part")


def _write_part(
    session: Session,
    dataset: Dataset,
    include: set[str],
    fmt: str,
    tmp: Path,
    progress: Callable[[int, int], None] | None,
    whole_paths: bool = False,
) -> ExportCount:
    count = ExportCount()
    total = count_view(session, dataset, include) if progress else 0
    if progress:
        progress(0, total)
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        for chunk in iter_export(session, dataset, include, fmt, count, whole_paths):
            fh.write(chunk)
            if progress:
                read = count.rows + count.left_out_near_val_test
                progress(read, max(total, read))
    return count


FinishFn = Callable[[Session, dict[str, Any]], None]


def export_to_file(
    engine: Engine,
    dataset_name: str,
    fmt: str,
    include: str,
    job_id: int,
    *,
    progress: Callable[[int, int], None] | None = None,
    finish: FinishFn | None = None,
) -> dict[str, Any]:
    """The `export` job's work: the chosen view of a dataset, written to <data_dir>/exports/job<id>.<fmt>.

    The attempt writes a file of its own; `progress(read, total)` is called between chunks (the job's: it raises
    when the job was cancelled or its lease lost, and the attempt stops there). The file is published in the
    transaction that runs `finish(session, result)` (the job completes there, if its worker still holds it):
    renamed into place once the completion stands, and deleted again if that transaction does not commit. A
    worker that lost its lease, a job cancelled or deleted with its dataset, publishes nothing and leaves nothing.
    """
    from db.datasets import get_dataset
    from db.session import discard_unless_committed, session_scope, snapshot_engine

    chosen = parse_include(include)
    path = exports_folder() / f"job{job_id}.{fmt}"
    tmp = part_path(path)
    try:
        # Read-only: on SQLite a write transaction would hold the database's one write lock for the whole export.
        with session_scope(snapshot_engine(engine)) as session:  # one snapshot, on Postgres too
            dataset = get_dataset(session, dataset_name)
            dataset_id = dataset.id
            count = _write_part(session, dataset, chosen, fmt, tmp, progress)
        result = {
            "path": str(path.relative_to(get_settings().data_dir.resolve())),  # GET /jobs/{id}/artifact serves it
            "rows": count.rows,
            "left_out_near_val_test": count.left_out_near_val_test,
            "guarded_cells": count.guarded_cells,
            "format": fmt,
            "dataset": dataset_name,
        }
        if finish is None:  # no job to complete (a caller in-process)
            tmp.replace(path)
            return result
        with session_scope(engine) as session:
            finish(session, result)  # raises, publishing nothing, unless the job is still this attempt's
            tmp.replace(path)
            discard_unless_committed(session, path)
            # This attempt holds the job: the files of earlier ones (a worker killed mid-write) are no one's now.
            # Deleted here, under the lease, never at the attempt's start: an attempt that stalled past its lease
            # there would delete the file of the one that took the job over.
            for stale in export_job_parts(job_id):
                if stale != tmp:
                    delete_when_committed(session, stale)
            prune_exports(session, dataset_id)
        return result
    finally:
        tmp.unlink(missing_ok=True)
