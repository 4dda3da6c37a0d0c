"""Dataset import from CSV, JSONL or Parquet: parse and validate everything first, then write in one transaction.

Any bad row rejects the whole file with an error naming the line and the problem, and nothing is written.
Exact (normalised) duplicates are reported and skipped.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFoundError, TooLargeError, ValidationFailed
from core.names import check_display_name, check_slug
from core.ngrams import near_duplicate_groups
from core.settings import get_settings
from core.textnorm import content_hash
from db.models import Dataset, Origin, Project, Sample, SampleLabel, Split

SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test"}


class ImportRejected(ValidationFailed):
    def __init__(self, line: int, problem: str, field: str | None = None) -> None:
        super().__init__(f"line {line}: {problem}", field=field or "file", extra={"line": line, "problem": problem})
        self.line = line


@dataclass
class Row:
    line: int
    text: str
    labels: dict[str, str]
    split: str | None
    external_id: str | None


@dataclass
class ImportSpec:
    dataset: str
    tasks: list[str]
    text_col: str = "text"
    split_col: str | None = "split"  # used when present in the file
    id_col: str | None = "id"
    language: str = "en"
    label_order: dict[str, list[str]] = field(default_factory=dict)  # optional explicit ordered label sets
    split_seed: int = 42
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    project: str = "default"  # where a new dataset goes (an existing one stays in its project)
    display_name: str | None = None  # a new dataset's name for people; default: its slug


@dataclass
class ImportResult:
    dataset: str
    created_dataset: bool
    imported: int
    duplicates: list[dict[str, Any]]
    split_counts: dict[str, int]
    split_info: dict[str, Any]
    # Near-duplicate groups (core/ngrams.py) whose members sit in different splits: [{"lines", "splits"}]
    near_duplicates_across_splits: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "created_dataset": self.created_dataset,
            "imported": self.imported,
            "duplicates_skipped": len(self.duplicates),
            "duplicates": self.duplicates[:1000],
            "split_counts": self.split_counts,
            "split_info": self.split_info,
            "near_duplicate_groups_across_splits": len(self.near_duplicates_across_splits),
            "near_duplicates_across_splits": self.near_duplicates_across_splits[:1000],
        }


def detect_format(filename: str | None, data: bytes) -> str:
    name = (filename or "").lower()
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".parquet") or data[:4] == b"PAR1":
        return "parquet"
    return "csv"


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ImportRejected(line, f"invalid UTF-8 (byte {data[err.start]:#04x} at offset {err.start})") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ImportRejected(line, "NUL character in the file (is it a binary file?)")
    return text


def _records_csv(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, dict[str, Any]]] = []
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRejected(1, "the file is empty") from None
    except csv.Error as err:
        raise ImportRejected(reader.line_num or 1, f"malformed CSV header: {err}") from None
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise ImportRejected(1, f"duplicate column names in the header: {header}")
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise ImportRejected(start, f"malformed CSV: {err}") from None
        if not values or values == [""]:
            continue
        if len(values) != len(header):
            raise ImportRejected(start, f"expected {len(header)} fields, found {len(values)}")
        records.append((start, dict(zip(header, values, strict=True))))
    return records


def _records_jsonl(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    text = _decode(data)
    records = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            raise ImportRejected(n, f"invalid JSON: {err.msg}") from None
        if not isinstance(obj, dict):
            raise ImportRejected(n, "each line must be a JSON object")
        records.append((n, obj))
    return records


def _records_parquet(data: bytes) -> list[tuple[int, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with streamlit
        raise ImportRejected(1, "Parquet needs pyarrow installed") from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise ImportRejected(1, f"unreadable Parquet file: {err}") from None
    # A Parquet "line" is the row number, counting the header as line 1 as in a CSV file.
    return [(i + 2, row) for i, row in enumerate(table.to_pylist())]


def read_records(data: bytes, fmt: str) -> list[tuple[int, dict[str, Any]]]:
    settings = get_settings()
    if len(data) > settings.max_request_bytes:
        raise TooLargeError(f"file is {len(data)} bytes; the limit is {settings.max_request_bytes}", field="file")
    reader = {"csv": _records_csv, "jsonl": _records_jsonl, "parquet": _records_parquet}.get(fmt)
    if reader is None:
        raise ValidationFailed(f"unknown format {fmt!r}: use csv, jsonl or parquet", field="format")
    records = reader(data)
    if len(records) > settings.max_upload_rows:
        raise TooLargeError(f"file has {len(records)} rows; the limit is {settings.max_upload_rows}", field="file")
    return records


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from Parquet
        return None
    value = str(value).strip()
    return value or None


def validate_rows(records: list[tuple[int, dict[str, Any]]], spec: ImportSpec, known: dict[str, list[str]] | None
                  ) -> list[Row]:
    """Check every record; `known` holds an existing dataset's label sets (unknown labels are then errors)."""
    if not records:
        raise ImportRejected(1, "no data rows")
    max_chars = get_settings().max_text_chars
    first_line, first = records[0]
    columns = set(first)
    for col in [spec.text_col, *spec.tasks]:
        if col not in columns:
            raise ImportRejected(first_line, f"column {col!r} not found (columns: {', '.join(sorted(columns))})",
                                 field="text_col" if col == spec.text_col else "task")
    use_split = bool(spec.split_col) and spec.split_col in columns
    rows: list[Row] = []
    for line, rec in records:
        raw_text = rec.get(spec.text_col)
        if raw_text is None or (isinstance(raw_text, str) and not raw_text.strip()):
            raise ImportRejected(line, f"missing text in column {spec.text_col!r}")
        if not isinstance(raw_text, str):
            raise ImportRejected(line, f"text in column {spec.text_col!r} must be a string")
        text = raw_text.strip()
        if len(text) > max_chars:
            raise ImportRejected(line, f"text is {len(text)} characters; the maximum is {max_chars} "
                                       "(AUGLOOP_MAX_TEXT_CHARS)")
        labels: dict[str, str] = {}
        for task in spec.tasks:
            value = _cell(rec.get(task))
            if value is None:
                continue
            allowed = (known or {}).get(task) or spec.label_order.get(task)
            if allowed is not None and value not in allowed:
                raise ImportRejected(line, f"unknown label {value!r} for task {task!r} (known: {', '.join(allowed)})",
                                     field="task")
            labels[task] = value
        split = None
        if use_split:
            value = _cell(rec.get(spec.split_col))
            if value is None:
                raise ImportRejected(line, f"missing split in column {spec.split_col!r}")
            split = SPLIT_ALIASES.get(value.lower())
            if split is None:
                raise ImportRejected(line, f"unknown split {value!r} (use train, val or test)")
        external_id = _cell(rec.get(spec.id_col)) if spec.id_col else None
        rows.append(Row(line=line, text=text, labels=labels, split=split, external_id=external_id))
    return rows


def stratified_split(rows: list[Row], stratify_task: str | None, seed: int,
                     fractions: tuple[float, float, float],
                     together: list[list[int]] | None = None) -> None:
    """Assign train/val/test in place, stratified by one task's label, reproducible under `seed`. Each group of
    `together` (indices into `rows`: near-duplicates) is drawn as one unit, by its first member's label, and all
    its members get that unit's split: a retweet never sits in train while its tweet is in test."""
    follower_of = {i: members[0] for members in together or [] for i in members[1:]}
    strata: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if i not in follower_of:
            strata[row.labels.get(stratify_task, "") if stratify_task else ""].append(i)
    rng = random.Random(seed)
    for key in sorted(strata):
        members = strata[key]
        rng.shuffle(members)
        n = len(members)
        n_val = round(n * fractions[1])
        n_test = round(n * fractions[2])
        for k, i in enumerate(members):
            rows[i].split = Split.val if k < n_val else Split.test if k < n_val + n_test else Split.train
    for i, first in follower_of.items():
        rows[i].split = rows[first].split


def import_file(session: Session, data: bytes, spec: ImportSpec, *, filename: str | None = None,
                fmt: str | None = None, created_by: int | None = None) -> ImportResult:
    """Validate the whole file, then add it to the dataset (created if new) in the caller's transaction. Its
    rows become trusted originals: importing is an admin's (or the operator's, from the CLI) act."""
    if not spec.tasks:
        raise ValidationFailed("declare at least one task (a label column)", field="task")
    records = read_records(data, fmt or detect_format(filename, data))
    dataset = session.scalar(select(Dataset).where(Dataset.name == spec.dataset))
    known = None
    if dataset is not None:
        unknown = [t for t in spec.tasks if t not in dataset.task_names()]
        if unknown:
            raise ValidationFailed(
                f"dataset {spec.dataset!r} has tasks {dataset.task_names()}; unknown task(s) {unknown}", field="task"
            )
        known = {t: dataset.labels_of(t) for t in spec.tasks}
    rows = validate_rows(records, spec, known)
    groups = near_duplicate_groups([r.text for r in rows])

    split_info: dict[str, Any]
    if all(r.split is not None for r in rows):
        split_info = {"source": "column", "column": spec.split_col}
    else:
        stratify = spec.tasks[0]
        stratified_split(rows, stratify, spec.split_seed, spec.split_fractions, together=groups)
        split_info = {"source": "stratified", "seed": spec.split_seed, "stratified_by": stratify,
                      "fractions": list(spec.split_fractions), "near_duplicates_kept_together": len(groups)}
    across = [
        {"lines": [rows[i].line for i in members], "splits": [rows[i].split for i in members]}
        for members in groups
        if len({rows[i].split for i in members}) > 1
    ]

    created = dataset is None
    if dataset is None:
        task_defs = []
        for task in spec.tasks:
            seen = sorted({r.labels[task] for r in rows if task in r.labels})
            order = spec.label_order.get(task) or seen
            task_defs.append({"name": task, "labels": list(order)})
        check_slug(spec.dataset, field="name", what="a dataset name")
        project = session.scalar(select(Project).where(Project.name == spec.project))
        if project is None:
            raise NotFoundError(f"project {spec.project!r} not found", field="project")
        display = check_display_name(spec.display_name or spec.dataset, field="display_name")
        dataset = Dataset(name=spec.dataset, display_name=display, project_id=project.id, language=spec.language,
                          tasks=task_defs, split_info=split_info)
        session.add(dataset)
        session.flush()
        existing: dict[str, int] = {}
    else:
        existing = dict(session.execute(
            select(Sample.content_hash, Sample.id).where(Sample.dataset_id == dataset.id)
        ).tuples().all())

    first_line_of: dict[str, int] = {}
    duplicates: list[dict[str, Any]] = []
    new_samples: list[Sample] = []
    split_counts: dict[str, int] = defaultdict(int)
    for row in rows:
        digest = content_hash(row.text)
        if digest in existing:
            duplicates.append({"line": row.line, "duplicate_of_sample": existing[digest]})
            continue
        if digest in first_line_of:
            duplicates.append({"line": row.line, "duplicate_of_line": first_line_of[digest]})
            continue
        first_line_of[digest] = row.line
        sample = Sample(dataset_id=dataset.id, text=row.text, split=row.split, origin=Origin.original,
                        content_hash=digest, external_id=row.external_id, created_by=created_by)
        sample.labels_rows = [SampleLabel(task=t, label=v) for t, v in row.labels.items()]
        new_samples.append(sample)
        split_counts[row.split or ""] += 1
    session.add_all(new_samples)
    session.flush()
    return ImportResult(dataset=dataset.name, created_dataset=created, imported=len(new_samples),
                        duplicates=duplicates, split_counts=dict(split_counts), split_info=split_info,
                        near_duplicates_across_splits=across)
