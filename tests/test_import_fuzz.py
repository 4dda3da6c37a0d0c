"""Property tests of the importer: arbitrary bytes either import completely or fail naming a line, and a failed
import leaves the database exactly as it was."""

from __future__ import annotations

import csv
import io

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from core.errors import DomainError
from db.models import Dataset, Sample, SampleLabel
from db.session import session_scope
from services.importing import ImportSpec, import_file

LABELS = ["neg", "pos"]
TRICKY = [
    "\ufeff",
    "\u200b",
    "\u200f",
    "\u202e",
    "\r\n",
    "\r",
    "\n",
    '"',
    ",",
    "\x00",
    "\ud7ff",
    "é",
    "🙂",
    "שלום",
    "\t",
    "  ",
]

text_st = st.lists(st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from(TRICKY)), max_size=30).map(
    "".join
)
row_st = st.tuples(text_st, st.one_of(st.sampled_from(LABELS), st.sampled_from(["", "unknown", "POS"])))


def snapshot(engine) -> tuple:
    with session_scope(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(Dataset)),
            s.scalar(select(func.count()).select_from(Sample)),
            s.scalar(select(func.count()).select_from(SampleLabel)),
            tuple(s.scalars(select(Sample.content_hash).order_by(Sample.id))),
        )


def attempt(engine, data: bytes, filename: str = "f.csv"):
    before = snapshot(engine)
    spec = ImportSpec(dataset="fuzz", tasks=["label"], label_order={"label": LABELS})
    try:
        with session_scope(engine) as s:
            result = import_file(s, data, spec, filename=filename)
    except DomainError as err:
        assert snapshot(engine) == before, "a failed import changed the database"
        assert err.message and ("line" in err.extra or err.field), err.message
        return None
    after = snapshot(engine)
    assert after[1] - before[1] == result.imported, "an import adds exactly what it reports"
    return result


FUZZ = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes(engine, data):
    attempt(engine, data)
    attempt(engine, data, filename="f.jsonl")


@FUZZ
@given(rows=st.lists(row_st, min_size=1, max_size=12), bom=st.booleans(), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_generated_csv_imports_completely_or_names_the_bad_line(engine, rows, bom, newline):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    data = (("\ufeff" if bom else "") + buf.getvalue()).encode("utf-8", "surrogatepass")
    result = attempt(engine, data)
    # a row of blank cells only is no row (Excel pads a sheet with them): skipped, not refused
    rows = [(t, label) for t, label in rows if t.strip() or label.strip()]
    bad_label = any(label not in ("", *LABELS) for _t, label in rows)
    blank_text = any(not t.strip() for t, _l in rows)
    if result is None:
        return
    assert not bad_label and not blank_text
    from core.textnorm import content_hash

    with session_scope(engine) as s:
        stored = set(s.scalars(select(Sample.content_hash)))
    for text, _label in rows:
        assert content_hash(text.strip()) in stored  # every row is there, or is a duplicate of one that is


@FUZZ
@given(prefix=st.binary(max_size=50), bad=st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88"]))
def test_invalid_utf8_is_refused_with_its_line(engine, prefix, bad):
    data = b"text,label\nok,pos\n" + prefix.replace(b"\n", b" ") + bad + b",neg\n"
    try:
        prefix.decode("utf-8")
    except UnicodeDecodeError:
        return
    result = attempt(engine, data)
    assert result is None


def test_huge_field_is_refused_by_length(engine):
    data = b"text,label\n" + b"a" * 100_000 + b",pos\n"
    try:
        with session_scope(engine) as s:
            import_file(s, data, ImportSpec(dataset="big", tasks=["label"]), filename="x.csv")
    except DomainError as err:
        assert "line 2" in err.message and "maximum" in err.message
    else:
        raise AssertionError("a 100,000-character text was accepted")
