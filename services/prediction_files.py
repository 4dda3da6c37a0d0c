"""Predictions for a file of texts (`augloop predict`): the texts read from CSV, JSONL or plain text, predicted in
requests of the API's size through services.prediction.predict (the same checks, model cache and decision
rule), and written as JSONL or CSV with a label and a probability per class for every task."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy.orm import Session

from core.errors import TooLargeError, ValidationFailed
from core.settings import Settings
from db.models import User
from services.exporting import jsonl_line, spreadsheet_safe, spreadsheet_value
from services.prediction import check_texts, model_spec, predict

READ_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
WRITE_FORMATS = ("jsonl", "csv")


@dataclass(frozen=True)
class TextRow:
    where: str  # "line 7", "row 12": how an error names it
    text: str
    id: str | None  # the --id-col value, carried to the output


def read_format(path: Path) -> str:
    fmt = READ_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValidationFailed(
            f"cannot tell how to read {path.name}: name a .csv, .tsv, .jsonl or .txt file (one text per line)",
            field="input",
        )
    return fmt


def read_texts(path: Path, text_col: str = "text", id_col: str | None = None) -> list[TextRow]:
    """The texts of a file, in its order. CSV/TSV: the column `text_col` (cells an augloop CSV export guarded
    against spreadsheets read as they were), JSONL: the field `text_col` of each object, plain text: each
    non-blank line. A missing column, a row without text or a file without any is refused, naming where."""
    fmt = read_format(path)
    try:
        with path.open(encoding="utf-8-sig", newline="" if fmt in ("csv", "tsv") else None) as f:
            rows = list(_rows(f, fmt, text_col, id_col))
    except UnicodeDecodeError as err:
        raise ValidationFailed(
            f"{path.name} is not UTF-8 text ({err.reason} at byte {err.start})", field="input"
        ) from None
    except csv.Error as err:
        raise ValidationFailed(f"{path.name} is not valid {fmt.upper()}: {err}", field="input") from None
    if not rows:
        raise ValidationFailed(f"{path.name} holds no text to predict", field="input")
    return rows


def _rows(f: IO[str], fmt: str, text_col: str, id_col: str | None) -> Iterator[TextRow]:
    if fmt == "txt":
        for n, line in enumerate(f, start=1):
            if line.strip():
                yield TextRow(f"line {n}", line.rstrip("\r\n"), None)
        return
    if fmt == "jsonl":
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as err:
                raise ValidationFailed(f"line {n} is not JSON: {err.msg}", field="input") from None
            except ValueError as err:  # a key given twice: a reader keeps the last, silently
                raise ValidationFailed(f"line {n} {err}", field="input") from None
            if not isinstance(record, dict):
                raise ValidationFailed(f"line {n} is not a JSON object", field="input")
            yield TextRow(f"line {n}", _text(record.get(text_col), f"line {n}", text_col), _id(record, id_col, n))
        return
    reader = csv.reader(f, delimiter="\t" if fmt == "tsv" else ",", strict=True)
    try:
        header = next(reader, None) or []
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:  # a reader would keep the last of them, silently (the importer refuses it too)
            raise ValidationFailed(f"the header names column {repeated[0]!r} more than once", field="input")
        for col, option in ((text_col, "--text-col"), (id_col, "--id-col")):
            if col is not None and col not in header:
                raise ValidationFailed(
                    f"the file has no column {col!r} ({option}); its columns: {', '.join(header) or 'none'}",
                    field=option.lstrip("-").replace("-", "_"),
                )
        text_at = header.index(text_col)
        id_at = header.index(id_col) if id_col is not None else None
        n = 0
        for cells in reader:
            if not cells:  # a blank line
                continue
            n += 1
            where = f"row {n} (line {reader.line_num})"  # the line the row ends on: a quoted cell may span lines
            if len(cells) != len(header):  # an unquoted comma in a text: the text would be cut short
                raise ValidationFailed(
                    f"{where} has {len(cells)} fields where the header has {len(header)} (a text holding the "
                    "delimiter must be quoted)",
                    field="input",
                )
            text = spreadsheet_value(cells[text_at])
            ident = spreadsheet_value(cells[id_at]) if id_at is not None else None
            yield TextRow(where, _text(text, where, text_col), ident or None)
    except csv.Error as err:
        raise ValidationFailed(f"line {reader.line_num} is not valid {fmt.upper()}: {err}", field="input") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"gives the key {next(k for k in keys if keys.count(k) > 1)!r} twice")
    return dict(pairs)


def _text(value: Any, where: str, text_col: str) -> str:
    if value is not None and not isinstance(value, str):
        raise ValidationFailed(f"{where}: {text_col!r} is not a string", field="input")
    if not value or not value.strip():
        raise ValidationFailed(f"{where} has no text in {text_col!r}", field="input")
    return value


def _id(record: dict[str, Any], id_col: str | None, n: int) -> str | None:
    if id_col is None:
        return None
    if id_col not in record:
        raise ValidationFailed(f"line {n} has no field {id_col!r} (--id-col)", field="id_col")
    value = record[id_col]
    return None if value is None else str(value)


def predict_rows(
    session: Session,
    model_id: int,
    rows: list[TextRow],
    settings: Settings,
    user: User | None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[tuple[TextRow, dict[str, str], dict[str, dict[str, float]], list[dict[str, Any]]]]:
    """(row, labels per task, probabilities per task and class, the model's tasks) for every row, predicted in
    requests of `trainer_predict_max_texts` texts; `progress(done)` after each. An error names the row."""
    model_spec(session, model_id, user)  # a model that cannot predict is said before anything is read through it
    try:  # every text checked before the first request: a bad last row fails in a second, not after the rest
        check_texts([r.text for r in rows], settings)
    except (ValidationFailed, TooLargeError) as err:
        raise type(err)(_located(err.message, rows), field=err.field, extra=err.extra) from None
    size = settings.trainer_predict_max_texts
    for start in range(0, len(rows), size):
        batch = rows[start : start + size]
        try:
            answer = predict(session, model_id, [r.text for r in batch], settings, user)
        except (ValidationFailed, TooLargeError) as err:  # "texts[3] …": the file's row
            raise type(err)(_located(err.message, batch), field=err.field, extra=err.extra) from None
        for row, labels, probs in zip(batch, answer["labels"], answer["probabilities"], strict=True):
            yield row, labels, probs, answer["tasks"]
        if progress is not None:
            progress(start + len(batch))


def _located(message: str, batch: list[TextRow]) -> str:
    """predict's "texts[3] is empty" as the file's "row 12 (line 13): is empty"."""
    if message.startswith("texts[") and "]" in message:
        index, rest = message[6:].split("]", 1)
        if index.isdigit() and int(index) < len(batch):
            return f"{batch[int(index)].where}: {rest.strip()}"
    return message


def write_predictions(
    out: IO[str],
    fmt: str,
    predicted: Iterator[tuple[TextRow, dict[str, str], dict[str, dict[str, float]], list[dict[str, Any]]]],
    *,
    with_ids: bool,
) -> int:
    """Write every prediction: JSONL objects {id?, text, labels, probabilities}, exact; or CSV rows (id?, text,
    a label per task, then `p(task=label)` per class), its cells guarded against spreadsheet formulas. The number
    of rows written."""
    if fmt not in WRITE_FORMATS:
        raise ValidationFailed(f"format must be one of {', '.join(WRITE_FORMATS)}; got {fmt!r}", field="format")
    writer = None
    n = 0
    for row, labels, probs, tasks in predicted:
        if fmt == "jsonl":
            record: dict[str, Any] = {"id": row.id} if with_ids else {}
            record.update(text=row.text, labels=labels, probabilities=probs)
            out.write(jsonl_line(record) + "\n")  # no U+2028 and the like raw: line readers split there
        else:
            if writer is None:
                writer = csv.writer(out)
                head = ["id"] if with_ids else []
                head += ["text", *(t["name"] for t in tasks)]
                head += [f"p({t['name']}={label})" for t in tasks for label in t["labels"]]
                writer.writerow([spreadsheet_safe(h) for h in head])
            cells: list[Any] = [row.id] if with_ids else []
            cells += [row.text, *(labels[t["name"]] for t in tasks)]
            cells += [probs[t["name"]][label] for t in tasks for label in t["labels"]]
            writer.writerow([spreadsheet_safe(c) for c in cells])
        n += 1
    return n
