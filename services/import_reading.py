"""Reading an import file in chunks: CSV, JSONL or Parquet parsed from a binary stream and validated row by row.

Nothing here holds more than one chunk: CSV and JSONL are decoded 1 MB at a time (invalid UTF-8 and NUL are
refused naming their line, as the whole-file reader did), Parquet is read by record batches. A bad row raises
ImportRejected naming its line and the problem; the caller has written nothing visible yet.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import math
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from core.errors import TooLargeError, ValidationFailed
from core.inputs import RepeatedKey, json_object_once
from core.names import label_name_problem
from core.settings import get_settings
from core.textnorm import text_problem, unstorable
from db.models import Origin
from services.exporting import spreadsheet_value

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}
READ_BYTES = 1 << 20
CHUNK_ROWS = 10_000
EXTERNAL_ID_MAX = 200  # samples.external_id

Record = tuple[int, dict[str, Any]]  # (line, the row's fields)


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


DEFAULT_SPLIT_COL = "split"
DEFAULT_ID_COL = "id"
# The columns a file augloop exported has on every row, whatever is missing (services/exporting.py
# RESERVED_COLUMNS; a JSONL tool may drop the null ones: external_id, review_status, near_val_test of an
# original), with `origin` one of augloop's: its `id` is the exporting server's sample id, the file's own is
# `external_id`, and `origin` says which rows were originals there.
EXPORT_SIGNATURE = frozenset({"id", "text", "split", "origin"})
# A CSV or Parquet export has every column on every row: one without `external_id` is a user's own file with an
# `origin` column (its ids were dropped for an `external_id` it does not have); a JSONL export's rows may have
# lost their null keys to a tool (jq, pandas), so there the four columns above decide.
DENSE_EXPORT_SIGNATURE = EXPORT_SIGNATURE | {"external_id"}
# ... or, its `external_id` column deleted by hand, the export's review column beside them: a user's own file does
# not have both (it imported every variant as an original, rejected ones too: an attacker's find)
REVIEWED_EXPORT_SIGNATURE = EXPORT_SIGNATURE | {"review_status"}
EXPORT_ORIGINS = frozenset(origin.value for origin in Origin)


def _a_sample_id(value: Any) -> bool:
    """Whether `value` can be an export's `id`: a server's sample id, a positive integer (a JSON number, or its
    digits in a CSV cell). A user's own file with an `origin` column has ids of its own (`tw-1`), kept."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value > 0
    return isinstance(value, str) and value.isascii() and value.isdigit() and not value.startswith("0")


@dataclass
class ImportSpec:
    dataset: str
    tasks: list[str]
    text_col: str = "text"
    split_col: str | None = DEFAULT_SPLIT_COL  # the default is used when present; another name must be there
    id_col: str | None = DEFAULT_ID_COL  # the same: the default is used when present; another name must be there
    # Every row's split, for a file that is one split (train.csv, dev.csv, test.csv): train, val or test (or an
    # alias: dev, validation, …); None reads the split column or draws a split
    split: str | None = None
    language: str | None = None  # a new dataset's language tag (None: en); an existing one's, if given, must match
    label_order: dict[str, list[str]] = field(default_factory=dict)  # optional explicit ordered label sets
    split_seed: int = 42
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    project: str | None = None  # where a new dataset goes (None: the default project); an existing one stays put
    display_name: str | None = None  # a new dataset's name for people; default: its slug

    def __post_init__(self) -> None:
        # As every door takes them: a task may be given as "bias,message", and an empty column name means none.
        self.tasks = [t.strip() for item in self.tasks for t in item.split(",") if t.strip()]
        # Column names are read stripped in every format: so are the ones named (" text" found no column since)
        self.text_col = self.text_col.strip() or self.text_col
        self.split_col = (self.split_col or "").strip() or None
        self.id_col = (self.id_col or "").strip() or None
        if self.split is not None:  # an alias (dev, validation, …) reads as its split; anything else is refused
            self.split = SPLIT_ALIASES.get(self.split.strip().lower(), self.split.strip()) or None
        # Declared label names stripped and in NFC, as every label read from the file (_label_at): a declared
        # " a" was a class no row could hold (cells are stripped), `café` typed with a combining accent is the
        # same class as the precomposed one, not a second class that looks the same.
        self.label_order = {task: [declared_label(name) for name in names] for task, names in self.label_order.items()}


# A whole number written as a decimal: pandas writes an integer column holding a missing value as floats
# (1.0, 0.0, NaN), so one file's 1.0 and another's (or the same file's) 1 were two classes
_WHOLE_DECIMAL = re.compile(r"[+-]?[0-9]+\.0+")


def label_key(name: str) -> str:
    """A label as every import reads it, cell or declared name: in Unicode's NFC (`café` typed two ways is one
    class) and a whole number written as a decimal as the whole number (`1.0` is `1`; case is kept: `Left` and
    `left` may be distinct on purpose)."""
    name = unicodedata.normalize("NFC", name)
    if _WHOLE_DECIMAL.fullmatch(name):  # the fraction of zeros goes; the number stays as written (+1.0 is +1)
        return name.split(".", 1)[0]
    return name


def declared_label(name: str) -> str:
    """A label name as an import reads a declared one: stripped, then as label_key reads it."""
    return label_key(name.strip())


def detect_format(filename: str | None, head: bytes) -> str:
    """The file's format by its name, else by its first bytes: Parquet's magic number, or a JSON object (JSON
    Lines uploaded as `data.txt` was read as CSV, and its refusal listed columns like '{"text": "a"')."""
    name = (filename or "").lower()
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".parquet") or head[:4] == b"PAR1":
        return "parquet"
    if not name.endswith((".csv", ".tsv")) and _a_json_object(head.removeprefix(b"\xef\xbb\xbf").lstrip()):
        return "jsonl"
    return "csv"


def _a_json_object(head: bytes) -> bool:
    """Whether the first line of `head` is a JSON object (a CSV header may begin with "{" too: `{id},text`)."""
    first, _newline, _rest = head.partition(b"\n")  # a file of one record may end without one
    if not first.startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


UTF16_HINT = ": the file looks UTF-16 without a byte-order mark (every other byte is 0); save it as UTF-8"


def _utf16_like(head: bytes | str) -> bool:
    """Text of mostly ASCII characters in UTF-16 has a 0 byte in every other place."""
    sample = head[:512]
    zeros = sample.count(b"\x00") if isinstance(sample, bytes) else sample.count("\x00")
    return len(sample) >= 8 and zeros * 3 >= len(sample)


# A file's first bytes that say it is no text file at all: an encoding hint sent the user re-encoding a gzip file
PACKED = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook is one): save the sheet as 'CSV UTF-8', or unzip it"),
    (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) or Office file: save the sheet as 'CSV UTF-8'"),
    (b"\x1f\x8b", "gzip-compressed: decompress it first (gunzip)"),
    (b"BZh", "bzip2-compressed: decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed: decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed: decompress it first (unzstd)"),
)


def packed_kind(head: bytes) -> str | None:
    """What the first bytes of a file say it is, when it is a compressed file or a spreadsheet (None: neither)."""
    return next((what for magic, what in PACKED if head.startswith(magic)), None)


def _hint(offset: int, chunk: bytes, at_start: bool = False) -> str:
    """What to do about a file that is not UTF-8: a compressed file or a workbook says so by its first bytes
    (`chunk` is the file's beginning when `at_start`); UTF-16 says so with its byte-order mark (Excel's "Unicode
    text"); anything else is most often Windows-1252 or Latin-1 (Excel's plain "CSV")."""
    if at_start and (kind := packed_kind(chunk)):
        return f": the file is {kind}"
    if offset <= 1 and chunk[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return ": the file is UTF-16 (its first bytes say so); save it as UTF-8 (in Excel: 'CSV UTF-8')"
    if _utf16_like(chunk):
        return UTF16_HINT
    return ": the file is not UTF-8 (Windows-1252 or Latin-1?); save it as UTF-8 (in Excel: 'CSV UTF-8')"


def _lines(stream: BinaryIO) -> Iterator[str]:
    """The stream's lines, decoded, with their line endings (\\n, \\r\\n or \\r, as csv expects them)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    consumed = 0  # bytes before the current chunk
    newlines = 0  # line feeds before the current chunk
    carry = ""
    while True:
        chunk = stream.read(READ_BYTES)
        final = not chunk
        try:
            decoded = decoder.decode(chunk, final)
        except UnicodeDecodeError as err:
            # err.object is what the decoder held back from the previous chunk (never a line feed: an
            # incomplete multi-byte character) followed by this chunk, less a byte-order mark.
            line = newlines + err.object[: err.start].count(b"\n") + 1
            offset = consumed + len(chunk) - len(err.object) + err.start
            raise ImportRejected(
                line,
                f"invalid UTF-8 (byte {err.object[err.start]:#04x} at offset {offset})"
                + _hint(offset, chunk, at_start=consumed == 0),
            ) from None
        if "\x00" in decoded:
            line = newlines + decoded[: decoded.index("\x00")].count("\n") + 1
            why = "is it a binary file?"
            if consumed == 0 and (kind := packed_kind(chunk)):
                why = f"the file is {kind}"
            elif consumed == 0 and _utf16_like(decoded):
                why = UTF16_HINT.removeprefix(": ")
            raise ImportRejected(line, f"NUL character in the file ({why})")
        consumed += len(chunk)
        newlines += decoded.count("\n")
        pending = carry + decoded
        if not pending:
            if final:
                return
            continue
        lines = list(io.StringIO(pending, newline=""))
        # The last line may continue in the next chunk (a "\r" may be half of "\r\n"): keep it back.
        carry = "" if final or lines[-1].endswith("\n") else lines.pop()
        yield from lines
        if final:
            return


DELIMITERS = (",", ";", "\t", "|")
_EXCEL_SEP = re.compile(r"(\"?)sep=([,;\t|])\1\r?\n?")  # quoted by some tools: "sep=;"


def delimiter_of(header: str) -> str:
    """The CSV file's delimiter, read from its header line: a comma wherever the header has one (or has a single
    column), else the one of `;` (Excel's CSV where the decimal mark is a comma), a tab (TSV, Excel's "Unicode
    text") or `|` that the header holds most of. A header "text;label" read with commas was one column, and the
    file was refused at its first row ("expected 1 fields, found 2")."""
    counts = {d: header.count(d) for d in DELIMITERS}
    if counts[","] or not any(counts.values()):
        return ","
    return max(DELIMITERS[1:], key=lambda d: counts[d])


def _csv_records(stream: BinaryIO) -> Iterator[Record]:
    # csv's own cap on a field (131,072 characters) below AUGLOOP_MAX_TEXT_CHARS refused, as a malformed CSV, a
    # text the same file's JSONL form imported. The cap stays (a field is read whole into memory), raised to the
    # setting: a text a little past it gets the setting's message, one far past it csv's "field larger than" one.
    limit = min(get_settings().max_text_chars + 1, 2**31 - 1)  # csv takes a C long; no upload holds more
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
    lines = _lines(stream)
    first = next(lines, None)
    if first is None:
        raise ImportRejected(1, "the file is empty")
    skipped = 0  # lines before the header
    delimiter = None
    if sep := _EXCEL_SEP.fullmatch(first):  # Excel's first line naming the delimiter: "sep=;" was a column name
        delimiter, skipped = sep.group(2), 1
        first = next(lines, None)
        if first is None:
            raise ImportRejected(2, "the file has no header line after its 'sep=' line")
    reader = csv.reader(itertools.chain([first], lines), delimiter=delimiter or delimiter_of(first), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRejected(1, "the file is empty") from None
    except csv.Error as err:
        raise ImportRejected(skipped + (reader.line_num or 1), f"malformed CSV header: {err}") from None
    header = [h.strip() for h in header]
    as_read = list(header)
    if set(header) >= DENSE_EXPORT_SIGNATURE:  # a CSV export guards its header too (a task named "@stance")
        header = [spreadsheet_value(h) for h in header]
    named = [i for i, name in enumerate(header) if name]  # Excel pads a sheet with unnamed, empty columns
    if len({header[i] for i in named}) != len(named):
        raise ImportRejected(1, f"duplicate column names in the header: {header}")
    while True:
        start = skipped + reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            if "field larger than field limit" in str(err):  # any column's: csv reads every field whole
                raise ImportRejected(
                    start,
                    f"a field is longer than {csv.field_size_limit():,} characters, the most a CSV field may hold "
                    "here (Python's csv cap, or AUGLOOP_MAX_TEXT_CHARS where that is larger); every field is read "
                    "whole, so the cap holds in every column, one the import leaves out too: shorten it, or remove "
                    "the column if the import does not use it",
                ) from None
            raise ImportRejected(start, f"malformed CSV: {err}") from None
        if not any(value.strip() for value in values):  # a blank line, or a row of delimiters only (Excel's)
            continue
        if len(values) != len(header):
            raise ImportRejected(start, f"expected {len(header)} fields, found {len(values)}")
        # Two files joined (`cat a.csv b.csv`): the second's header became a sample, its task's name a class
        if [v.strip().removeprefix("\ufeff").strip() for v in values] == as_read:
            raise ImportRejected(
                start, f"this line repeats the header (line {skipped + 1}): two files joined? remove it"
            )
        yield start, {header[i]: values[i] for i in named}


def label_order_from_json(raw: str | None) -> dict[str, list[str]]:
    """The `labels` form field of an import request: JSON mapping each task to its ordered label names; a task
    given twice is refused (Python's reader kept the last), as a JSONL record's key given twice is."""
    if not raw:
        return {}
    try:
        value = json.loads(raw, object_pairs_hook=json_object_once)
    except RepeatedKey as err:
        raise ValidationFailed(f"labels: task {err.key!r} is given twice", field="labels") from None
    except json.JSONDecodeError as err:
        raise ValidationFailed(f'labels must be JSON like {{"task": ["a", "b"]}}: {err.msg}', field="labels") from None
    except RecursionError:  # nested thousands deep: Python's reader gives up (it was a 500)
        raise ValidationFailed("labels: nested too deep", field="labels") from None
    if not isinstance(value, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in value.values()
    ):
        raise ValidationFailed("labels must map each task to a list of label names", field="labels")
    return value


# A .json file written as one JSON array (pandas' to_json(orient="records"), a web API's answer): the line reader
# sees "[" and fails with "Expecting value", which did not say what to do.
_ARRAY_HINT = (
    "; the file must be JSON Lines, one object per line (a JSON array of objects is not read: write it with "
    "pandas' to_json(orient='records', lines=True), or `jq -c '.[]'`)"
)


def _jsonl_records(stream: BinaryIO) -> Iterator[Record]:
    for n, raw in enumerate(_lines(stream), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, object_pairs_hook=json_object_once)
        except json.JSONDecodeError as err:
            hint = _ARRAY_HINT if raw.lstrip().startswith("[") else ""
            raise ImportRejected(n, f"invalid JSON: {err.msg}{hint}") from None
        except RepeatedKey as err:
            raise ImportRejected(n, f"invalid JSON: the key {err.key!r} appears twice in one object") from None
        # What Python's JSON reader raises besides its own error, for a line that is JSON but more than Python
        # reads (it was a 500 from the API and a traceback from the CLI): arrays or objects nested past the
        # recursion limit, and an integer of more digits than Python converts (sys.get_int_max_str_digits).
        except RecursionError:
            raise ImportRejected(n, "invalid JSON: nested too deep") from None
        except ValueError:
            limit = sys.get_int_max_str_digits()
            raise ImportRejected(n, f"invalid JSON: a number of more than {limit} digits") from None
        if not isinstance(obj, dict):
            raise ImportRejected(n, f"each line must be a JSON object{_ARRAY_HINT if isinstance(obj, list) else ''}")
        # a key is a column name: messages and warnings quote it, and a lone surrogate (the escape \ud800) has no
        # UTF-8 form, so the answer naming it was a 500 and a job's stored result broke every job list
        if (key := next((k for k in obj if unstorable(k)), None)) is not None:
            raise ImportRejected(n, f"the key {key!a} {unstorable(key)}: a column name must be plain text")
        if any(k != k.strip() for k in obj):  # read stripped, as a CSV header's names and every task name are
            names = [k.strip() for k in obj]
            if len(set(names)) != len(names):
                raise ImportRejected(n, f"the keys {sorted(obj)} name one column twice once their spaces are cut")
            obj = dict(zip(names, obj.values(), strict=True))
        yield n, obj


def _parquet_records(stream: BinaryIO) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(stream)
        # names read stripped, as a CSV header's and every task name are ("Bias " could never be a task)
        names = [name.strip() for name in parquet.schema_arrow.names]
        twice = sorted(name for name, n in Counter(names).items() if n > 1)
        if twice:  # a row read as a dict keeps the last of them: its labels, silently
            raise ImportRejected(1, f"column{'s' if len(twice) > 1 else ''} {twice} appear(s) twice in the header")
        batches = parquet.iter_batches(batch_size=CHUNK_ROWS)
        line = 2  # a Parquet "line" is the row number, counting the header as line 1 as in a CSV file
        for batch in batches:
            for values in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                yield line, dict(zip(names, values, strict=True))
                line += 1
    except ImportRejected:
        raise
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise ImportRejected(1, f"unreadable Parquet file: {err}") from None


def record_chunks(stream: BinaryIO, fmt: str, rows: int = CHUNK_ROWS) -> Iterator[list[Record]]:
    """The file's records in chunks of `rows`; past AUGLOOP_MAX_UPLOAD_ROWS records, TooLargeError."""
    reader = {"csv": _csv_records, "jsonl": _jsonl_records, "parquet": _parquet_records}.get(fmt)
    if reader is None:
        raise ValidationFailed(f"unknown format {fmt!r}: use csv, jsonl or parquet", field="format")
    limit = get_settings().max_upload_rows
    chunk: list[Record] = []
    for seen, record in enumerate(reader(stream), start=1):
        if seen > limit:
            raise TooLargeError(f"file has more than {limit} rows (AUGLOOP_MAX_UPLOAD_ROWS)", field="file")
        chunk.append(record)
        if len(chunk) >= rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _cell(value: Any) -> str | None:
    """A label, split or id cell as text; None for an empty one. JSONL and Parquet cells may be numbers,
    booleans, decimals or dates: their text as Python writes it (`1`, `True`: what earlier imports stored, so a
    second file matches the first); NaN is pandas' empty cell. An object, a list or an infinite number is no
    label: ValueError."""
    if value is None or (isinstance(value, float) and value != value):  # NaN from Parquet or pandas' JSONL
        return None
    if isinstance(value, float) and value in (math.inf, -math.inf):
        raise ValueError("an infinite number")
    if isinstance(value, dict | list | tuple | set | bytes):
        raise ValueError(f"a {type(value).__name__}, not a string or number")
    value = str(value).strip()
    return value or None


def _names_a_split(cell: Any) -> bool:
    """Whether a cell reads as a split (train, dev, test, …): a split column under another name has only such."""
    return isinstance(cell, str) and cell.strip().lower() in SPLIT_ALIASES


def _blank(value: Any) -> bool:
    try:
        return _cell(value) is None
    except ValueError:  # an object, a list: something, though no label
        return False


def _cell_at(line: int, record: dict[str, Any], column: str, what: str, field: str) -> str | None:
    try:
        return _cell(record.get(column))
    except ValueError as err:
        raise ImportRejected(line, f"the {what} in column {column!r} is {err}", field=field) from None


def _label_at(line: int, record: dict[str, Any], task: str) -> str | None:
    """A task's label in a record, as label_key reads it."""
    text = _cell_at(line, record, task, "label", "task")
    return None if text is None else label_key(text)


LABELS_CHECKED_KEPT = 100_000  # distinct (task, cell) answers kept: a label set is at most a few thousand


class RowValidator:
    """Checks records chunk by chunk; `known` holds an existing dataset's label sets (unknown labels are then
    errors). The first record fixes the columns."""

    def __init__(self, spec: ImportSpec, known: dict[str, list[str]] | None, undeclared: Sequence[str] = ()) -> None:
        self.spec = spec
        # the dataset's tasks the import does not declare: a file with such a column would leave its labels
        # out for good (a stored sample never changes: importing the file again skips every row as a duplicate)
        self.undeclared = frozenset(undeclared)
        self.shown = {
            task: order
            for task in spec.tasks
            # an existing dataset's label set, even an empty one (a task imported with no labels), is binding:
            # a label outside it would be stored and then ignored by training and the statistics
            if (order := (known or {}).get(task, spec.label_order.get(task))) is not None
        }
        # label_key's spelling → the label set's own: a label set stored before labels were read in NFC, or
        # with whole numbers as decimals (`1.0`), may hold another spelling of the same name, which its new rows
        # must match (of two such spellings, the first listed)
        self.allowed = {task: {label_key(name): name for name in reversed(order)} for task, order in self.shown.items()}
        self.max_chars = get_settings().max_text_chars
        self.use_split: bool | None = None  # decided by the first record's columns
        self.id_col = spec.id_col  # an augloop export's own ids are in external_id (_columns)
        self.export = False  # the file is an augloop export (EXPORT_SIGNATURE)
        self.guarded = False  # its cells may carry the CSV export's formula guard (set by the reader: CSV)
        self.not_originals = 0  # an export's rows that were no original there, left out
        # When augloop draws the split: the file's other columns whose every cell so far names a split ("fold",
        # "partition": a split column under another name, which the user most likely meant to keep)
        self.split_like: list[str] = []
        self.rows = 0
        # JSONL leaves a missing label out of its record: a task the first record lacks is looked for in the
        # others, and only one no record has is an error (finish). CSV and Parquet name every column up front.
        self.sparse = False
        self.unseen: set[str] = set()
        # (task, cell as read) → the label stored: a file repeats a handful of labels on every row, and each
        # check (NFC, storable, a name, in the label set) gives the same answer for the same cell
        self.checked: dict[tuple[str, str], str] = {}

    def _undeclared_in(self, line: int, record: dict[str, Any]) -> None:
        """A label in a column of a task the import does not declare (a blank or null one loses nothing: a
        template's, or an export's column of a task the file's texts are not labelled in)."""
        found = sorted(t for t in self.undeclared if t in record and not _blank(record[t]))
        if not found:
            return
        raise ImportRejected(
            line,
            f"the file has a column of the dataset's task(s) {', '.join(repr(t) for t in found)}, which the import "
            f"does not declare: its labels would be left out for good (an import never changes a stored sample); "
            f"declare {'them' if len(found) > 1 else 'it'} too (augloop import -t; a `task` field over the API), or "
            "remove the column",
            field="task",
        )

    def _columns(self, line: int, record: dict[str, Any]) -> None:
        spec = self.spec
        columns = set(record)
        if self.sparse:
            self.unseen = {task for task in spec.tasks if task not in columns}
        wanted = [spec.text_col, *(t for t in spec.tasks if t not in self.unseen)]
        missing = [col for col in wanted if col not in columns]
        if missing:
            # A CSV or Parquet header is line 1; a JSONL record names its own columns.
            at = line if self.sparse else 1
            by_folded = {" ".join(c.casefold().split()): c for c in columns}
            alike = [(col, by_folded[key]) for col in missing if (key := " ".join(col.casefold().split())) in by_folded]
            hint = "".join(f"; did you mean {found!r} for {col!r}?" for col, found in alike)
            if spec.text_col in missing and not alike:
                hint += "; text_col names the text column (augloop import --text-col)"
            raise ImportRejected(
                at,
                f"column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)} not found (columns:"
                f" {', '.join(repr(c) for c in sorted(columns))}){hint}",
                field="text_col" if missing[0] == spec.text_col else "task",
            )
        # A split or id column named on purpose and missing (a typo) would silently draw a split (test texts in
        # train) or import every row without its external id; the default names are used only when present.
        for field_name, named, default, instead in (
            ("split_col", spec.split_col, DEFAULT_SPLIT_COL, "let augloop draw the split"),
            ("id_col", spec.id_col, DEFAULT_ID_COL, "import without external ids"),
        ):
            if named not in (None, default) and named not in columns:
                what = field_name.removesuffix("_col")
                names = ", ".join(repr(c) for c in sorted(columns))  # quoted: a header's control characters too
                raise ImportRejected(
                    line if self.sparse else 1,  # a CSV or Parquet header is line 1
                    f"{what} column {named!r} not found (columns: {names}); leave it out to {instead}",
                    field=field_name,
                )
        given_split = bool(spec.split_col) and spec.split_col in columns
        if spec.split is not None and given_split:
            raise ImportRejected(
                line if self.sparse else 1,
                f"the file has a split column {spec.split_col!r} and every row was given the split {spec.split!r}: "
                "give one or the other (an empty split_col reads no column)",
                field="split",
            )
        self.use_split = given_split or spec.split is not None
        if not self.use_split:
            used = {spec.text_col, *spec.tasks, self.id_col}
            self.split_like = [col for col in record if col not in used]
        signature = EXPORT_SIGNATURE if self.sparse else DENSE_EXPORT_SIGNATURE
        if (
            (columns >= signature or columns >= REVIEWED_EXPORT_SIGNATURE)
            and str(record.get("origin") or "").strip() in EXPORT_ORIGINS
            and _a_sample_id(record.get("id"))
        ):
            # Re-imported (another server, a new dataset), an export's `id` would become the rows' external ids
            # in place of their own; and its variants, submitted texts and pseudo-labels (whatever their review:
            # an export may hold rejected ones) would become originals, which train as they are.
            self.export = True
            if spec.id_col == DEFAULT_ID_COL:
                self.id_col = "external_id"

    def finish(self) -> None:
        """After the last record: a task no JSONL record names is a typo, not a column of missing labels."""
        if self.unseen:
            raise ImportRejected(
                1,
                f"column(s) {', '.join(repr(t) for t in sorted(self.unseen))} not found in any record",
                field="task",
            )

    def validate(self, records: list[Record]) -> list[Row]:
        spec = self.spec
        if self.use_split is None and records:
            self._columns(*records[0])
        rows: list[Row] = []
        for line, rec in records:
            if self.undeclared:
                self._undeclared_in(line, rec)
            if self.unseen:
                self.unseen.difference_update(rec.keys())
            if self.split_like:
                self.split_like = [col for col in self.split_like if _names_a_split(rec.get(col))]
            if self.export:
                if str(rec.get("origin") or "").strip() not in ("", "original"):
                    self.not_originals += 1
                    continue
                if self.guarded:  # the CSV export's leading ' before =, +, -, @: the exact value back
                    rec = {k: spreadsheet_value(v) for k, v in rec.items()}
            raw_text = rec.get(spec.text_col)
            if raw_text is None or (isinstance(raw_text, str) and not raw_text.strip()):
                raise ImportRejected(line, f"missing text in column {spec.text_col!r}")
            if not isinstance(raw_text, str):
                raise ImportRejected(line, f"text in column {spec.text_col!r} must be a string")
            # As for a text a person writes: a NUL can come through JSON's \u0000 escape or Parquet (Postgres
            # then refuses the whole import naming no line), and a text of only invisible characters hashes as
            # the empty text.
            if problem := text_problem(raw_text):
                raise ImportRejected(line, f"text in column {spec.text_col!r} {problem}")
            # Leading whitespace is kept: it is part of the text, and stripping it would turn "\t=1+1" into
            # the formula "=1+1" (a spreadsheet runs it when the text is exported and opened).
            text = raw_text.rstrip()
            if len(text) > self.max_chars:
                raise ImportRejected(
                    line, f"text is {len(text)} characters; the maximum is {self.max_chars} (AUGLOOP_MAX_TEXT_CHARS)"
                )
            labels: dict[str, str] = {}
            for task in spec.tasks:
                cell = rec.get(task)
                known_label = self.checked.get((task, cell)) if isinstance(cell, str) else None
                if known_label is not None:
                    labels[task] = known_label
                    continue
                value = _label_at(line, rec, task)
                if value is None:
                    continue
                if problem := unstorable(value):
                    raise ImportRejected(line, f"the label in column {task!r} {problem}", field="task")
                if problem := label_name_problem(value):
                    raise ImportRejected(line, f"the label {value[:60]!r} in column {task!r} {problem}", field="task")
                allowed = self.allowed.get(task)
                if allowed is not None:
                    if value not in allowed:
                        raise ImportRejected(
                            line,
                            f"unknown label {value!r} for task {task!r} (known: {', '.join(self.shown[task])})",
                            field="task",
                        )
                    value = allowed[value]
                labels[task] = value
                if isinstance(cell, str) and len(self.checked) < LABELS_CHECKED_KEPT:
                    self.checked[(task, cell)] = value
            split = None
            drawn_or_given = not self.use_split or spec.split is not None
            if drawn_or_given and spec.split_col and _cell_at(line, rec, spec.split_col, "split", "file"):
                # JSONL: the first record had no split, so augloop draws one (or every row was given one); a record
                # that gives its own would silently lose it (a test text could land in train)
                if spec.split is not None:
                    raise ImportRejected(
                        line,
                        f"this record has a {spec.split_col!r} and every row was given the split {spec.split!r}: "
                        "give one or the other (an empty split_col reads no column)",
                        field="split",
                    )
                raise ImportRejected(
                    line,
                    f"this record has a {spec.split_col!r} but the first record has none: give every record "
                    "a split, or none",
                )
            if spec.split is not None:
                split = spec.split
            elif self.use_split and spec.split_col:
                value = _cell_at(line, rec, spec.split_col, "split", "file")
                if value is None:
                    raise ImportRejected(line, f"missing split in column {spec.split_col!r}")
                split = SPLIT_ALIASES.get(value.lower())
                if split is None:
                    raise ImportRejected(line, f"unknown split {value!r} (use train, val or test)")
            id_col = self.id_col
            external_id = _cell_at(line, rec, id_col, "id", "id_col") if id_col else None
            if external_id is not None and (problem := unstorable(external_id)):
                raise ImportRejected(line, f"the id in column {id_col!r} {problem}", field="id_col")
            if external_id is not None and len(external_id) > EXTERNAL_ID_MAX:
                raise ImportRejected(
                    line,
                    f"the id in column {id_col!r} is {len(external_id)} characters; the most is {EXTERNAL_ID_MAX}",
                    field="id_col",
                )
            rows.append(Row(line=line, text=text, labels=labels, split=split, external_id=external_id))
        self.rows += len(rows)
        return rows
