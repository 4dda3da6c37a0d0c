"""How an import reads a file's columns: names as a user's tools write them, and the columns it must not skip."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select

from core.errors import ValidationFailed
from db.models import Dataset, Sample, SampleLabel
from services.importing import ImportSpec, import_file


def _csv(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _samples(session, name: str) -> int:  # type: ignore[no-untyped-def]
    return int(session.scalar(select(func.count()).select_from(Sample).join(Dataset).where(Dataset.name == name)) or 0)


def test_a_file_with_a_column_of_a_task_the_import_leaves_out_is_refused(db_session) -> None:  # type: ignore[no-untyped-def]
    """The second file's `topic` labels were dropped unsaid when only `-t bias` was given, and importing it again
    with both skipped every row as a duplicate: the labels were gone for good."""
    first = ["text,bias,topic,split", "a one,x,p,train", "b two,y,q,val", "c three,x,q,test"]
    import_file(db_session, _csv(first), ImportSpec(dataset="d", tasks=["bias", "topic"]))
    db_session.commit()
    second = _csv(["text,bias,topic,split", "d four,x,p,train"])
    with pytest.raises(ValidationFailed) as caught:
        import_file(db_session, second, ImportSpec(dataset="d", tasks=["bias"]))
    assert caught.value.field == "task" and "'topic'" in str(caught.value) and "-t" in str(caught.value)
    db_session.rollback()
    assert _samples(db_session, "d") == 3  # nothing of the refused file stored
    # JSON Lines names a record's columns in the record: a later record carrying the task is found too
    records = [{"text": "e five", "bias": "x", "split": "train"}, {"text": "f six", "bias": "y", "topic": "q"}]
    data = "\n".join(json.dumps(r) for r in records).encode()
    with pytest.raises(ValidationFailed) as caught:
        import_file(db_session, data, ImportSpec(dataset="d", tasks=["bias"]), filename="more.jsonl")
    assert caught.value.field == "task" and "line 2" in str(caught.value)
    db_session.rollback()
    # declared, the same file imports with its labels; a file without the column imports as before
    result = import_file(db_session, second, ImportSpec(dataset="d", tasks=["bias", "topic"]))
    assert result.imported == 1
    without = _csv(["text,bias,split", "g seven,y,train"])
    result = import_file(db_session, without, ImportSpec(dataset="d", tasks=["bias"]))
    assert result.imported == 1
    stored = db_session.scalar(
        select(func.count()).select_from(SampleLabel).join(Sample).where(Sample.text == "d four")
    )
    assert stored == 2
    # the column left blank or null loses nothing (a template's, an export's column of an unlabelled task):
    # imported as before; a label further down is refused naming its line
    blank = _csv(["text,bias,topic,split", "h eight,x,,train", "i nine,y, ,train"])
    assert import_file(db_session, blank, ImportSpec(dataset="d", tasks=["bias"])).imported == 2
    nulls = "\n".join(json.dumps({"text": f"j {n}", "bias": "x", "topic": None}) for n in ("ten", "eleven"))
    assert (
        import_file(db_session, nulls.encode(), ImportSpec(dataset="d", tasks=["bias"]), filename="n.jsonl").imported
        == 2
    )
    late = _csv(["text,bias,topic,split", "k twelve,x,,train", "l thirteen,y,q,train"])
    with pytest.raises(ValidationFailed, match="line 3: the file has a column"):
        import_file(db_session, late, ImportSpec(dataset="d", tasks=["bias"]))


def test_a_header_repeated_mid_file_is_refused_naming_its_line(db_session) -> None:  # type: ignore[no-untyped-def]
    """`cat a.csv b.csv`: the second header became a sample, and the task's name one of its classes."""
    lines = ["text,bias"] + [f"post {i},{'ab'[i % 2]}" for i in range(10)]
    lines.insert(6, "text,bias")
    with pytest.raises(ValidationFailed, match=r"line 7: this line repeats the header \(line 1\)"):
        import_file(db_session, _csv(lines), ImportSpec(dataset="h", tasks=["bias"]))
    # a second file's byte-order mark and spaces around its names make no difference
    joined = _csv(lines[:6]) + "\ufefftext , bias\n".encode() + _csv(lines[7:])
    with pytest.raises(ValidationFailed, match="repeats the header"):
        import_file(db_session, joined, ImportSpec(dataset="h", tasks=["bias"]))


def test_keys_and_column_names_are_read_stripped_in_every_format(db_session) -> None:  # type: ignore[no-untyped-def]
    """A CSV header's names were stripped, JSON Lines keys and Parquet names were not: "Bias " could never be a
    task (tasks are read stripped), and the error's hint ("did you mean 'Bias '") went round in a circle."""
    import pandas as pd

    splits = ["train", "val", "test"]
    records = [{" text": f"post {i}", "Bias ": "ab"[i % 2], "split": splits[i % 3]} for i in range(9)]
    jsonl = "\n".join(json.dumps(r) for r in records).encode()
    result = import_file(db_session, jsonl, ImportSpec(dataset="j", tasks=["Bias"]), filename="x.jsonl")
    assert result.imported == 9
    buf = io.BytesIO()
    pd.DataFrame({"text": [f"row {i}" for i in range(9)], "Bias ": list("aba") * 3, "split": splits * 3}).to_parquet(
        buf
    )
    result = import_file(db_session, buf.getvalue(), ImportSpec(dataset="p", tasks=["Bias"]), filename="x.parquet")
    assert result.imported == 9
    labels = db_session.scalar(select(Dataset).where(Dataset.name == "p")).labels_of("Bias")
    assert sorted(labels) == ["a", "b"]
    # a column named with its spaces finds the column read without them (" text" was found before)
    spaced = "\n".join(json.dumps({" text": f"spaced {i}", "bias": "ab"[i % 2]}) for i in range(6)).encode()
    spec = ImportSpec(dataset="s", tasks=["bias"], text_col=" text ")
    assert import_file(db_session, spaced, spec, filename="x.jsonl").imported == 6
    # two names that are one once stripped are refused, as a CSV header's are
    twice = json.dumps({"text": "t", "bias": "a", "bias ": "b"}).encode()
    with pytest.raises(ValidationFailed, match="name one column twice"):
        import_file(db_session, twice, ImportSpec(dataset="k", tasks=["bias"]), filename="x.jsonl")
    buf = io.BytesIO()
    pd.DataFrame({"text": ["t"], "bias": ["a"], " bias": ["b"]}).to_parquet(buf)
    with pytest.raises(ValidationFailed, match=r"appear.* twice"):
        import_file(db_session, buf.getvalue(), ImportSpec(dataset="k", tasks=["bias"]), filename="x.parquet")


def test_what_spreadsheets_and_other_tools_write_is_read_or_named(db_session) -> None:  # type: ignore[no-untyped-def]
    # Excel's first line naming the delimiter was read as the header ("columns 'text', 'bias' not found
    # (columns: 'sep=')"); line numbers count it
    rows = ["sep=;", "text;bias", "one post;a", "two posts;b", "three;a"]
    result = import_file(db_session, _csv(rows), ImportSpec(dataset="e", tasks=["bias"]))
    assert result.imported == 3
    with pytest.raises(ValidationFailed, match="line 4: expected 2 fields"):
        import_file(db_session, _csv([*rows[:3], "x;y;z"]), ImportSpec(dataset="e2", tasks=["bias"]))
    # JSON Lines uploaded under another ending (data.txt) was read as CSV, its columns '{"text": "…"'
    jsonl = "\n".join(json.dumps({"text": f"post {i}", "bias": "ab"[i % 2]}) for i in range(6)).encode()
    assert import_file(db_session, jsonl, ImportSpec(dataset="t", tasks=["bias"]), filename="data.txt").imported == 6
    one = b'{"text": "a single labelled text", "bias": "a", "split": "train"}'  # one record, no final newline
    assert import_file(db_session, one, ImportSpec(dataset="t1", tasks=["bias"]), filename="data.txt").imported == 1
    # a CSV whose header begins with "{" is still CSV under another ending; a quoted "sep=;" is Excel's line too
    braces = _csv(["{id},text,bias", "1,first post,a", "2,second post,b"])
    assert import_file(db_session, braces, ImportSpec(dataset="b", tasks=["bias"]), filename="data.txt").imported == 2
    quoted = _csv(['"sep=;"', "text;bias", "one, with a comma;a", "two;b"])
    assert import_file(db_session, quoted, ImportSpec(dataset="q", tasks=["bias"])).imported == 2
    # UTF-16 without a byte-order mark: "is it a binary file?" and "Windows-1252?" sent the user elsewhere
    for encoding in ("utf-16-le", "utf-16-be"):
        for text in ("text,bias\nplain,a\n", "text,bias\ncafé,a\n"):
            with pytest.raises(ValidationFailed, match="looks UTF-16 without a byte-order mark"):
                import_file(db_session, text.encode(encoding), ImportSpec(dataset="u", tasks=["bias"]))


def test_a_file_that_is_one_split_says_the_task_has_no_train_text_yet(db_session) -> None:  # type: ignore[no-untyped-def]
    """`augloop import dev.csv --split dev` warned only of no test text: the per-class warning of classes no train
    text has needs some train text, and said nothing when there was none."""
    rows = _csv(["text,bias", "a val post,x", "another val post,y", "a third,x"])
    result = import_file(db_session, rows, ImportSpec(dataset="one", tasks=["bias"], split="val"))
    said = " ".join(result.warnings)
    assert "task 'bias' has no labelled train text yet" in said and "--split train" in said, said
