"""Import: atomic, every bad row named by line, duplicates reported, stratified split when none is given."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from core.errors import TooLargeError, ValidationFailed
from db.models import Dataset, Sample, SampleLabel
from db.session import session_scope
from services.importing import ImportSpec, import_file
from tests.conftest import EXAMPLE_CSV


def run_import(engine, data: bytes, filename="data.csv", **spec):
    spec.setdefault("dataset", "d")
    spec.setdefault("tasks", ["sentiment"])
    with session_scope(engine) as s:
        return import_file(s, data, ImportSpec(**spec), filename=filename)


def count(engine, model=Sample) -> int:
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(model))


GOOD = b"text,sentiment,split\nI love it,positive,train\nI hate it,negative,train\nmeh,neutral,test\n"


def test_example_dataset_imports_with_its_split(engine):
    result = run_import(engine, EXAMPLE_CSV.read_bytes(), dataset="psm", tasks=["bias", "message", "audience"])
    assert result.imported == 5000 and result.split_counts == {"train": 4000, "val": 500, "test": 500}
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset))
        assert ds.labels_of("bias") == ["neutral", "partisan"]
        assert len(ds.labels_of("message")) == 9
        assert s.scalar(select(func.count()).select_from(SampleLabel).where(SampleLabel.label == "other")) == 121


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (b"text,sentiment\nok,positive\n,negative\n", 3, "missing text"),
        (b"text,sentiment\nok,positive\n   ,negative\n", 3, "missing text"),
        (b"text,sentiment\nok,positive\nfine,negative\nbad \xff\xfe bytes,positive\n", 4, "invalid UTF-8"),
        (b'text,sentiment\nok,positive\n"unterminated,positive\n', 3, "malformed CSV"),
        (b"text,sentiment\nok,positive\ntoo,many,fields\n", 3, "expected 2 fields"),
        (b"text,sentiment,split\nok,positive,train\nfine,negative,holdout\n", 3, "unknown split"),
    ],
)
def test_a_bad_row_rejects_the_whole_file_naming_the_line(engine, data, line, problem):
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, data)
    assert err.value.extra["line"] == line and problem in err.value.message
    assert count(engine) == 0 and count(engine, Dataset) == 0


def test_unknown_label_for_a_declared_task(engine):
    data = b"text,sentiment\nok,positive\nbad,angry\n"
    with pytest.raises(ValidationFailed, match="line 3: unknown label 'angry'"):
        run_import(engine, data, label_order={"sentiment": ["negative", "neutral", "positive"]})
    run_import(engine, GOOD)
    with pytest.raises(ValidationFailed, match="line 2: unknown label 'angry'"):
        run_import(engine, b"text,sentiment\nnew text,angry\n")
    assert count(engine) == 3  # the existing dataset is untouched


@pytest.mark.parametrize(
    ("spec", "field", "problem"),
    [
        ({"tasks": ["sentiment", "sentiment"]}, "task", "declared twice"),
        ({"tasks": ["sentiment", "text"]}, "task", "the file's text column"),
        ({"tasks": ["sentiment"], "id_col": "sentiment"}, "task", "the file's id column"),
        ({"tasks": ["sentiment", "origin"]}, "task", "taken by the columns augloop adds to an export"),
        ({"tasks": ["sentiment", "near_val_test"]}, "task", "taken by the columns"),
        ({"label_order": {"sentiment": ["negative", "positive", "negative"]}}, "labels", "['negative'] more than once"),
        ({"label_order": {"sentiment": ["negative", " "]}}, "labels", "blank label name"),
        ({"label_order": {"sentiment": []}}, "labels", "declares no label name"),  # the CLI's --labels sentiment=
        ({"label_order": {"polarity": ["a", "b"]}}, "labels", "'polarity' is not among the declared tasks"),
    ],
)
def test_task_and_label_names_that_would_break_training_or_export_are_refused(engine, spec, field, problem):
    data = b"text,sentiment,origin,near_val_test\nI love it,positive,web,x\nI hate it,negative,web,x\n"
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, data, **spec)
    assert err.value.field == field and problem in err.value.message
    assert count(engine) == 0 and count(engine, Dataset) == 0


def test_text_over_the_maximum_length(engine, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setattr(get_settings(), "max_text_chars", 10)
    with pytest.raises(ValidationFailed, match="line 3: text is 23 characters; the maximum is 10"):
        run_import(engine, b"text,sentiment\nshort,positive\nthis text is too long!!,negative\n")
    assert count(engine) == 0


def test_too_many_rows(engine, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setattr(get_settings(), "max_upload_rows", 2)
    with pytest.raises(TooLargeError):
        run_import(engine, GOOD)


def test_missing_columns_are_named(engine):
    with pytest.raises(ValidationFailed, match="column 'sentiment' not found"):
        run_import(engine, b"text,label\nok,positive\n")
    with pytest.raises(ValidationFailed, match="column 'body' not found"):
        run_import(engine, GOOD, text_col="body")
    with pytest.raises(ValidationFailed) as err:  # a file whose text is under another name: how to say so
        run_import(engine, b"body,sentiment\nok,positive\n")
    assert err.value.field == "text_col" and "text_col names the text column (augloop import --text-col)" in str(
        err.value
    )


def test_duplicates_are_reported_and_skipped(engine):
    data = b"text,sentiment\nSame text,positive\nother,negative\n  same   TEXT ,positive\n"
    result = run_import(engine, data)
    assert result.imported == 2
    assert result.duplicates == [{"line": 4, "duplicate_of_line": 2}]
    again = run_import(engine, b"text,sentiment\nother,negative\nbrand new,positive\n")
    assert again.imported == 1 and again.duplicates[0]["line"] == 2 and "duplicate_of_sample" in again.duplicates[0]


def test_a_file_of_corrected_labels_says_they_were_not_applied(engine, tmp_path):
    """An ML engineer re-imported texts the dataset holds with corrected labels: "3 duplicates skipped" and no
    word that the labels differ. The rows are still skipped (an import changes no stored sample), and said so.
    The same import reported a skipped row as a new test row near a train text (the report ran before the rows
    were matched to the dataset's)."""
    from services.importing import import_path

    run_import(engine, b"text,sentiment,split\nI love it,positive,train\nI hate it,negative,train\nmeh,neutral,test\n")
    with session_scope(engine) as s:
        loved = s.scalar(select(Sample.id).where(Sample.text == "I love it"))
    path = tmp_path / "fixed.csv"
    # line 2: other label; line 3: same label; line 4: a test text of the dataset given to train
    path.write_bytes(b"text,sentiment,split\nI love it,negative,train\nI hate it,negative,train\nMEH,neutral,train\n")
    fixed = import_path(engine, path, ImportSpec(dataset="d", tasks=["sentiment"], split_col="split"))
    assert fixed.imported == 0 and fixed.duplicates_skipped == 3
    [warning] = [w for w in fixed.warnings if "with other labels" in w]
    assert warning == (
        "1 row(s) repeat a text the dataset holds (case, spacing and Unicode form aside) with other labels and were"
        " skipped, the stored labels kept (an"
        f" import adds texts, it does not change a stored sample's labels): line 2 (sentiment 'negative') repeats"
        f" sample {loved} ('positive')"
    )
    assert fixed.near_existing_across_splits == [] and fixed.near_existing_across_splits_count == 0


def test_missing_label_is_allowed_per_task(engine):
    run_import(engine, b"text,a,b\none,x,\ntwo,,y\nthree,x,y\n", tasks=["a", "b"])
    with session_scope(engine) as s:
        labels = {smp.text: smp.labels for smp in s.scalars(select(Sample))}
    assert labels == {"one": {"a": "x"}, "two": {"b": "y"}, "three": {"a": "x", "b": "y"}}


def test_stratified_split_is_drawn_with_a_fixed_seed_and_recorded(engine, tmp_path):
    rows = ["text,label"] + [f"text number {i},{'rare' if i % 10 == 0 else 'common'}" for i in range(200)]
    data = ("\n".join(rows) + "\n").encode()
    first = run_import(engine, data, dataset="a", tasks=["label"])
    run_import(engine, data, dataset="b", tasks=["label"])
    assert first.split_info == {
        "source": "stratified",
        "seed": 42,
        "stratified_by": "label",
        "fractions": [0.8, 0.1, 0.1],
        "near_duplicates_kept_together": 0,
        "largest_group_rows": 0,
    }
    with session_scope(engine) as s:
        by_ds = {}
        for name in ("a", "b"):
            rows_ = s.execute(
                select(Sample.external_id, Sample.text, Sample.split)
                .join(Dataset)
                .where(Dataset.name == name)
                .order_by(Sample.text)
            ).all()
            by_ds[name] = [(t, sp) for _e, t, sp in rows_]
        assert by_ds["a"] == by_ds["b"], "same seed, same split"
        rare = s.execute(
            select(Sample.split, func.count())
            .join(SampleLabel)
            .join(Dataset)
            .where(Dataset.name == "a", SampleLabel.label == "rare")
            .group_by(Sample.split)
        ).all()
    assert dict(rare) == {"train": 16, "val": 2, "test": 2}, "each class split 80/10/10"


def test_jsonl_and_bom_and_crlf(engine):
    lines = [
        json.dumps({"text": "héllo wörld", "sentiment": "positive"}),
        json.dumps({"text": "x", "sentiment": "negative"}),
    ]
    result = run_import(engine, ("\r\n".join(lines)).encode(), filename="d.jsonl")
    assert result.imported == 2
    result = run_import(engine, "\ufefftext,sentiment\r\nbom text,positive\r\n".encode(), dataset="bom")
    assert result.imported == 1
    with pytest.raises(ValidationFailed, match="line 2: invalid JSON"):
        run_import(engine, b'{"text": "a", "sentiment": "p"}\n{"text": \n', filename="bad.jsonl", dataset="j")


def test_a_drawn_split_gives_val_and_test_their_share_when_every_class_is_small(engine) -> None:
    """Rounded class by class, 80/10/10 gave a class of four rows no val or test row: a file of a hundred such
    classes imported all into train (no val: every training run failed in its worker). The shares are now of
    the whole file, handed to the classes with the largest remainders first; a class of one stays in train."""
    rows = ["text,label"] + [f"short post {i},class{i % 100}" for i in range(400)] + ["lonely post,single"]
    result = run_import(engine, ("\n".join(rows) + "\n").encode(), dataset="small", tasks=["label"])
    assert result.split_counts == {"train": 321, "val": 40, "test": 40}
    assert _split_of(engine, "lonely post") == "train"
    with session_scope(engine) as s:
        per_class = s.execute(
            select(SampleLabel.label, func.count())
            .join(Sample)
            .where(Sample.split == "train")
            .group_by(SampleLabel.label)
        ).all()
    assert min(n for _label, n in per_class) >= 1 and len(per_class) == 101, "every class keeps a train row"


def test_a_drawn_split_of_many_one_row_classes_is_quick_and_loads_no_shortfall_onto_the_others() -> None:
    """A long-tailed first task (thousands of one-row classes) made the apportioning loop cubic (21 s at 3,000
    classes, hours at 30,000), and the share the one-row classes could not give went to the big class."""
    import time
    from collections import Counter

    from services.importing import stratified_split

    strata = [f"tail{i}" for i in range(30_000)] + ["big"] * 1000
    start = time.perf_counter()
    split = stratified_split(strata, 1, (0.8, 0.1, 0.1))
    assert time.perf_counter() - start < 5
    big = Counter(s for s, key in zip(split, strata, strict=True) if key == "big")
    assert big == {"train": 800, "val": 100, "test": 100}
    assert all(s == "train" for s, key in zip(split, strata, strict=True) if key != "big")


def test_a_jsonl_record_with_a_split_after_a_first_without_one_is_refused(engine):
    """Which rows carry a split is decided by the first record; a later record's own split would be lost (the
    stratified split could put a test text into train), so the file is refused, naming its line, and nothing
    is stored."""
    lines = [
        json.dumps({"text": "first, no split", "sentiment": "positive"}),
        json.dumps({"text": "second, meant for test", "sentiment": "negative", "split": "test"}),
    ]
    with pytest.raises(ValidationFailed, match=r"line 2: .*'split' but the first record has none"):
        run_import(engine, "\n".join(lines).encode(), filename="mixed.jsonl")
    assert count(engine) == 0
    lines[1] = json.dumps({"text": "second, no split either", "sentiment": "negative", "split": None})
    assert run_import(engine, "\n".join(lines).encode(), filename="ok.jsonl").imported == 2


def test_a_task_imported_without_labels_keeps_its_empty_label_set(engine):
    """A later import cannot put labels into a task the dataset has no label set for: they would be stored,
    then ignored by training and the statistics."""
    assert run_import(engine, b"text,sentiment\nan unlabelled post,\n").imported == 1
    with pytest.raises(ValidationFailed, match="unknown label 'positive' for task 'sentiment'"):
        run_import(engine, b"text,sentiment\na labelled post,positive\n")
    assert count(engine) == 1


FARM = "Senator Smith voted against the farm bill today, a shameful day for rural families everywhere"
TOWN = "Our town hall meeting on water rights starts at six tonight at the public library downtown"
BASE = [("I love this new policy on schools", "train"), ("The weather is lovely", "train"), (TOWN, "train")]


def _csv(rows: list[tuple[str, str]], split: bool = True) -> bytes:
    head = "text,sentiment,split\n" if split else "text,sentiment\n"
    return (head + "".join(f'"{t}",positive{"," + s if split else ""}\n' for t, s in rows)).encode()


def _split_of(engine, text: str) -> str:
    with session_scope(engine) as s:
        return s.scalar(select(Sample.split).where(Sample.text == text))


def test_a_second_file_keeps_near_copies_of_the_datasets_texts_on_their_side_of_the_split(engine, tmp_path):
    """A retweet of a test text imported later would train and inflate every test figure: a new train row near
    a val/test text, or a new val/test row near a train original, is reported (the leak guard's measure); when
    augloop draws the split the row takes that text's split, when the file gives it the file's split stands."""
    from services.importing import import_path

    run_import(engine, _csv([*BASE, (FARM, "test")]))
    with session_scope(engine) as s:
        farm_id = s.scalar(select(Sample.id).where(Sample.text == FARM))
        town_id = s.scalar(select(Sample.id).where(Sample.text == TOWN))
    retweet = "RT @farmer: " + FARM
    drawn = run_import(engine, _csv([(retweet, "")], split=False))  # one row: the draw puts it in train
    assert drawn.near_existing_across_splits_count == 1
    assert drawn.near_existing_across_splits == [
        {"line": 2, "split": "train", "near_sample": farm_id, "near_split": "test", "moved": True}
    ]
    assert _split_of(engine, retweet) == "test"
    given = run_import(engine, _csv([(TOWN + " (updated)", "test")]))
    assert given.near_existing_across_splits == [
        {"line": 2, "split": "test", "near_sample": town_id, "near_split": "train", "moved": False}
    ]
    assert _split_of(engine, TOWN + " (updated)") == "test", "a split the file gives is the file's"
    # A val/test row augloop draws near a train original goes to train (here through a file on disk, as the
    # import job reads it); an unrelated row is left where the draw put it.
    path = tmp_path / "more.csv"
    path.write_bytes(
        _csv([("I love this new policy on schools!!", ""), ("Completely unrelated words here", "")], False)
    )
    spec = ImportSpec(dataset="d", tasks=["sentiment"], split_fractions=(0.0, 0.0, 1.0))
    moved = import_path(engine, path, spec)
    assert [(p["line"], p["near_split"], p["moved"]) for p in moved.near_existing_across_splits] == [(2, "train", True)]
    assert _split_of(engine, "I love this new policy on schools!!") == "train"
    assert _split_of(engine, "Completely unrelated words here") == "test"


def test_parquet(engine, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["one", "two"], "sentiment": ["positive", None]}), path)
    result = run_import(engine, path.read_bytes(), filename="d.parquet")
    assert result.imported == 2

    # Ids as a data tool writes them: dates and decimals are ids as their text
    from datetime import date
    from decimal import Decimal

    typed = tmp_path / "typed.parquet"
    table = {"text": ["three", "four"], "sentiment": ["positive", "positive"], "id": [date(2026, 1, 2), None]}
    pq.write_table(pa.table(table), typed)
    run_import(engine, typed.read_bytes(), filename="typed.parquet", id_col="id")
    decimals = tmp_path / "decimals.parquet"
    pq.write_table(pa.table({"text": ["five"], "sentiment": ["positive"], "id": [Decimal("12.50")]}), decimals)
    run_import(engine, decimals.read_bytes(), filename="decimals.parquet", id_col="id")
    with session_scope(engine) as s:
        ids = set(s.scalars(select(Sample.external_id).where(Sample.external_id.is_not(None))))
    assert ids == {"2026-01-02", "12.50"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("\u200b\u200d", "is empty (nothing but blanks and invisible characters)"),  # passes str.strip()
        ("a NUL\u0000 inside", "holds a NUL character"),  # JSON's \u0000 escape: no NUL byte in the file
    ],
)
def test_an_imported_text_that_cannot_be_stored_is_refused_naming_its_line(any_engine, text, problem):
    """As an edit or a submitted text (core.textnorm.text_problem): a text of only invisible characters would
    hash as the empty text (every such row a duplicate of the first), and Postgres refuses a NUL in a text
    column, answering with an error that names no line."""
    lines = [json.dumps({"text": "fine", "sentiment": "positive"}), json.dumps({"text": text, "sentiment": "negative"})]
    with pytest.raises(ValidationFailed) as err:
        run_import(any_engine, "\n".join(lines).encode(), filename="d.jsonl")
    assert err.value.extra["line"] == 2 and problem in err.value.message and err.value.field == "file"
    assert count(any_engine) == 0 and count(any_engine, Dataset) == 0


@pytest.mark.parametrize(
    ("record", "field", "problem"),
    [
        ({"text": "fine too", "sentiment": "neg\u0000ative"}, "task", "label in column 'sentiment' holds a NUL"),
        ({"text": "fine too", "sentiment": "negative", "id": "a\u0000"}, "id_col", "id in column 'id' holds a NUL"),
        # Over the columns' lengths (sample_labels.label 100, samples.external_id 200): Postgres refused the
        # whole import with a 500 naming nothing; SQLite stored them.
        ({"text": "fine too", "sentiment": "n" * 101}, "task", "is 101 characters; the most is 100"),
        (
            {"text": "fine too", "sentiment": "negative", "id": "i" * 201},
            "id_col",
            "is 201 characters; the most is 200",
        ),
        # A class that looks like another (a zero-width space), reverses its line (U+202E) or breaks a header
        ({"text": "fine too", "sentiment": "\u200bpositive"}, "task", "control or format character ('\\u200b')"),
        ({"text": "fine too", "sentiment": "\u202epositive"}, "task", "control or format character"),
        ({"text": "fine too", "sentiment": "line\nbreak"}, "task", "control or format character ('\\n')"),
        # JSON values that are no label
        ({"text": "fine too", "sentiment": {"a": 1}}, "task", "label in column 'sentiment' is a dict"),
        ({"text": "fine too", "sentiment": ["x"]}, "task", "label in column 'sentiment' is a list"),
        ({"text": "fine too", "sentiment": float("inf")}, "task", "is an infinite number"),
    ],
)
def test_a_label_or_id_that_cannot_be_stored_as_written_is_refused_naming_its_line(any_engine, record, field, problem):
    """A label or an id from JSON's \\u0000 escape: Postgres refuses a NUL in a text column; likewise for a
    label or an id too long for its column, or a label no one could tell from another or print."""
    lines = [json.dumps({"text": "fine", "sentiment": "positive", "id": "a"}), json.dumps(record)]
    with pytest.raises(ValidationFailed) as err:
        run_import(any_engine, "\n".join(lines).encode(), filename="d.jsonl", id_col="id")
    assert err.value.extra["line"] == 2 and problem in err.value.message and err.value.field == field
    assert count(any_engine) == 0 and count(any_engine, Dataset) == 0


def test_a_row_whose_text_is_a_reviewed_sample_is_not_imported_and_says_so(admin, engine, settings, tmp_path):
    """An admin's file is trusted data; a row whose text the dataset holds as a submitted text (here one a
    reviewer rejected) or a variant is skipped like any duplicate (that sample's review decides whether the text
    trains), but the admin hears which, in the API's answer, the UI and the CLI; and the API's answer carries
    the rows that came near a text on the other side of the split."""
    from core.textnorm import content_hash
    from tests.cli_process import cli_env, run_augloop

    url = "/api/v1/datasets/d/import"
    first = admin.post(url, files={"file": ("a.csv", _csv([*BASE, (FARM, "test")]))}, data={"task": ["sentiment"]})
    assert first.is_success, first.text
    submitted = "A text someone sent through the API that a reviewer rejected"
    with session_scope(engine) as s:
        dataset_id = s.scalar(select(Dataset.id).where(Dataset.name == "d"))
        sample = Sample(
            dataset_id=dataset_id,
            text=submitted,
            split="train",
            origin="submitted",
            review_status="rejected",
            content_hash=content_hash(submitted),
        )
        s.add(sample)
        s.flush()
        submitted_id = sample.id
    rows = [(submitted, "train"), ("RT @farmer: " + FARM, "train"), ("The weather is lovely", "train")]
    r = admin.post(url, files={"file": ("b.csv", _csv(rows))}, data={"task": ["sentiment"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["imported"] == 1 and body["duplicates_skipped"] == 2 and body["duplicates_of_reviewed_samples"] == 1
    assert body["duplicates"][0] == {
        "line": 2,
        "duplicate_of_sample": submitted_id,
        "origin": "submitted",
        "review_status": "rejected",
    }
    assert body["duplicates"][1]["origin"] == "original"
    assert body["near_existing_across_splits_count"] == 1 and body["near_existing_across_splits"][0]["line"] == 3
    path = tmp_path / "c.csv"
    path.write_bytes(_csv([(submitted, "train")]))
    out = run_augloop("import", str(path), "--dataset", "d", "--task", "sentiment", env=cli_env(settings))
    assert out.returncode == 0, out.stderr
    warning = " ".join(out.stderr.split())
    assert "1 row(s) not imported" in warning and f"sample {submitted_id}, submitted (rejected)" in warning


def test_tasks_given_as_comma_lists_and_empty_column_names_mean_the_same_at_every_door(engine):
    """The CLI's `-t bias,message`, the API's repeated or comma-joined `task` fields and an empty `split_col` or
    `id_col` (none: draw the split, no ids) are read by the spec itself, so every door imports alike."""
    spec = ImportSpec(dataset="d", tasks=[" sentiment , ", "topic"], split_col="", id_col="")
    assert (spec.tasks, spec.split_col, spec.id_col) == (["sentiment", "topic"], None, None)
    data = b"text,sentiment,topic,split\n" + b"".join(b"text %d,pos,a,bogus\n" % i for i in range(20))
    result = run_import(engine, data, tasks=["sentiment,topic"], split_col="")
    # No split column read: the split is drawn, so the "bogus" values are not refused as unknown splits.
    assert result.imported == 20 and sum(result.split_counts.values()) == 20


def test_numbers_and_booleans_in_jsonl_label_columns_are_labels_and_nan_is_an_empty_cell(engine):
    """A 0/1 or true/false label column as pandas writes it to JSONL: `1` is the label "1", `true` is "True" (as
    earlier imports stored it, so that a second file matches the first), and NaN, pandas' empty cell, leaves the
    task unlabelled."""
    records = [
        {"text": "one", "stance": 1, "sarcastic": True},
        {"text": "two", "stance": 0, "sarcastic": False},
        {"text": "three", "stance": float("nan"), "sarcastic": True},
    ]
    data = "\n".join(json.dumps(r) for r in records).encode()
    run_import(engine, data, filename="d.jsonl", tasks=["stance", "sarcastic"])
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset))
        assert ds.labels_of("stance") == ["0", "1"] and ds.labels_of("sarcastic") == ["False", "True"]
        labels = s.execute(select(SampleLabel.task, SampleLabel.label)).all()
    assert sorted(labels) == [
        ("sarcastic", "False"),
        ("sarcastic", "True"),
        ("sarcastic", "True"),
        ("stance", "0"),
        ("stance", "1"),
    ]


def test_a_whole_number_written_as_a_decimal_is_the_same_label(engine):
    """pandas writes an integer column holding a missing value as floats (1.0, 0.0, NaN): one file's 1.0 and
    another's 1 (or the same file's) were two classes, in silence."""
    records = [{"text": "one", "stance": 1.0}, {"text": "two", "stance": 0}, {"text": "three", "stance": 1}]
    records += [{"text": "four", "stance": "0.00"}, {"text": "five", "stance": 2.5}, {"text": "six", "stance": "+1.0"}]
    records += [{"text": "seven", "stance": "+1"}]
    data = "\n".join(json.dumps(r) for r in records).encode()
    run_import(engine, data, filename="d.jsonl", tasks=["stance"])
    with session_scope(engine) as s:
        assert s.scalar(select(Dataset)).labels_of("stance") == ["+1", "0", "1", "2.5"]
    # a label set stored with decimals (before this rule) takes a later file's whole numbers as its own
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset))
        ds.tasks = [{"name": "stance", "labels": ["+1", "0.0", "1.0", "2.5"]}]
    again = run_import(engine, b"text,stance\nseventy,1\neight,0.0\n", tasks=["stance"])
    assert again.imported == 2
    with session_scope(engine) as s:
        got = dict(s.execute(select(Sample.text, SampleLabel.label).join(SampleLabel)).tuples().all())
    assert got["seventy"] == "1.0" and got["eight"] == "0.0"
    # declared the same way: 1.0 is the class 1
    declared = run_import(engine, b"text,y\nnine,1\n", dataset="e", tasks=["y"], label_order={"y": ["0.0", "1.0"]})
    assert declared.imported == 1
    with session_scope(engine) as s:
        assert s.scalar(select(Dataset).where(Dataset.name == "e")).labels_of("y") == ["0", "1"]


@pytest.mark.parametrize(
    ("spec", "field", "problem"),
    [
        ({"tasks": ["t" * 101]}, "task", "is 101 characters; the most is 100"),
        ({"tasks": ["sentiment\u202e"]}, "task", "control or format character"),
        ({"label_order": {"sentiment": ["positive", "negative\u200b"]}}, "labels", "control or format character"),
    ],
)
def test_task_and_declared_label_names_too_long_or_unprintable_are_refused_before_reading(
    any_engine, spec, field, problem
):
    with pytest.raises(ValidationFailed) as err:
        run_import(any_engine, GOOD, **spec)
    assert err.value.field == field and problem in err.value.message
    assert count(any_engine) == 0 and count(any_engine, Dataset) == 0


def test_ids_of_a_deleted_datasets_rows_and_jobs_are_never_handed_out_again(any_engine):
    """SQLite gave a new row the table's largest id plus one, so a deleted dataset's ids came back with the next
    import: a client following job 2 or deciding on sample 7 at version 1 would meet another one."""
    from db import queue
    from services.datasets import remove

    run_import(any_engine, GOOD, dataset="keep")
    run_import(any_engine, GOOD, dataset="gone")
    with session_scope(any_engine) as s:
        gone = s.scalar(select(Dataset).where(Dataset.name == "gone"))
        job = queue.enqueue(s, "export", {"dataset": "gone"}, dataset_id=gone.id)
        last_sample = s.scalar(select(func.max(Sample.id)))
        last_job = job.id
    with session_scope(any_engine) as s:
        remove(s, "gone")
    run_import(any_engine, GOOD, dataset="next")
    with session_scope(any_engine) as s:
        new = s.scalar(select(Dataset).where(Dataset.name == "next"))
        first_new_sample = s.scalar(select(func.min(Sample.id)).where(Sample.dataset_id == new.id))
        new_job = queue.enqueue(s, "export", {"dataset": "next"}, dataset_id=new.id)
    assert first_new_sample > last_sample and new_job.id > last_job


def test_a_split_column_named_on_purpose_must_be_there(engine) -> None:
    """`--split-col fold` on a file whose column is `split`: a typo drew a random split without a word (test
    texts in train). The default name stays optional: without it, augloop draws the split."""
    with pytest.raises(ValidationFailed, match="split column 'fold' not found") as err:
        run_import(engine, GOOD, split_col="fold")
    assert err.value.field == "split_col" and count(engine) == 0
    unsplit = b"text,sentiment\nI love it,positive\nI hate it,negative\nmeh,neutral\n"
    assert run_import(engine, unsplit).imported == 3


def test_one_rule_says_how_imbalanced_a_task_is() -> None:
    """The CLI's table and the Datasets page read a task's imbalance through one rule (core.balance): the ratio,
    or ∞ when a class has no train text while another has, or nothing to show."""
    from core.balance import imbalance_shown

    def task(ratio: float | None, *counts: int) -> dict:
        labels = {f"c{i}": {"train_original": n, "train_with_approved": n} for i, n in enumerate(counts)}
        return {"imbalance_ratio": ratio, "imbalance_ratio_with_approved": ratio, "labels": labels}

    for with_approved in (False, True):  # the page showed "∞" before and "n/a" with approved variants, for one task
        assert imbalance_shown(task(12.34, 100, 8), with_approved=with_approved) == "12.3×"
        assert imbalance_shown(task(None, 100, 0), with_approved=with_approved) == "∞"
        assert imbalance_shown(task(None, 0, 0), with_approved=with_approved) is None
        assert imbalance_shown(task(None), with_approved=with_approved) is None
    # each figure counts its own texts: a class only approved submissions hold is ∞ before them, not "n/a"
    mixed = {
        "imbalance_ratio": None,
        "imbalance_ratio_with_approved": 1.7,
        "labels": {
            "a": {"train_original": 5, "train_with_approved": 5},
            "b": {"train_original": 0, "train_with_approved": 3},
        },
    }
    assert imbalance_shown(mixed) == "∞" and imbalance_shown(mixed, with_approved=True) == "1.7×"


def test_an_import_says_what_to_look_at_before_training(engine, settings):
    """Nothing was said at import: a drawn split whose near-duplicate groups (posts sharing a long footer) left
    val and test empty, classes in no test text (a one-class test then scored macro-F1 1.0), and "NA" or
    "Positive"/"positive" cells that became classes of their own, all met only at training, or never."""
    import csv
    import io

    from typer.testing import CliRunner

    from augloop.cli import app

    posts = [row["text"] for row in csv.DictReader(io.StringIO(EXAMPLE_CSV.read_text()))][:90]
    footer = " -- Sent from my phone. This e-mail and any attachments are confidential and intended solely for the"
    footer += " addressee; if you received it in error, delete it and tell the sender at once. " * 2
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows([p[:60] + footer, "abc"[i % 3]] for i, p in enumerate(posts))
    result = run_import(engine, out.getvalue().encode(), dataset="footer", tasks=["label"])
    assert result.split_counts == {"train": 90}
    assert any("no labelled val text" in w and "largest group holds 90 rows" in w for w in result.warnings), result

    given = "text,label,split\n" + "".join(
        f"post {i},{label},{split}\n"
        for i, (label, split) in enumerate(
            [("positive", "train"), ("Positive", "train"), ("NA", "train"), ("negative", "train")] * 3
            + [("positive", "val"), ("negative", "val"), ("positive", "test")]
        )
    )
    result = run_import(engine, given.encode(), dataset="odd", tasks=["label"], split_col="split")
    assert result.warnings == [
        "task 'label': 2 class(es) that train has are in no val text, so their F1 is not measured there: 'NA',"
        " 'Positive'",
        # a rare class of 25 texts drew 1 test text and scored F1 1.0 there, unremarked (an engineer's walk)
        "task 'label': 2 class(es) have fewer than 5 val texts, so one text moves their val recall by more than 20"
        " points and their F1 there is mostly noise: 'negative' (1), 'positive' (1)",
        "task 'label': 3 class(es) that train has are in no test text, so their F1 is not measured there: 'NA',"
        " 'Positive', 'negative'",
        "task 'label': 1 class(es) have fewer than 5 test texts, so one text moves their test recall by more than 20"
        " points and their F1 there is mostly noise: 'positive' (1)",
        "task 'label': label(s) 'NA' look like missing values but are classes; leave such cells empty if the label"
        " is unknown",
        "task 'label': labels that differ only in case or spacing are separate classes: 'Positive' / 'positive'"
        " (an admin merges one into another with augloop labels rename DATASET OLD NEW --task label)",
    ]
    path = settings.data_dir / "odd.csv"
    path.write_text(given)
    shown = CliRunner().invoke(app, ["import", str(path), "-d", "odd2", "-t", "label", "--split-col", "split"])
    assert shown.exit_code == 0 and "look like missing values" in shown.output, shown.output
    # A class only val and test hold, and one declared with the labels that no row has: no model learns them,
    # the planner has no text to vary, and nothing said so.
    rare = "text,label,split\n" + "".join(
        f"text {i},{label},{split}\n"
        for i, (label, split) in enumerate(
            [("a", "train"), ("b", "train")] * 3 + [("a", "val"), ("b", "val"), ("c", "val")] + [("c", "test")] * 2
        )
    )
    result = run_import(
        engine, rare.encode(), dataset="rare", tasks=["label"], label_order={"label": ["a", "b", "c", "d"]}
    )
    assert [w for w in result.warnings if "no train text" in w] == [
        "task 'label': 2 class(es) no train text has, so no model learns them and no augmenter has a text to"
        " vary: 'c', 'd'"
    ], result.warnings
    # Their stats name them: the imbalance ratio cannot count a class of no text (it is not "n/a").
    label = CliRunner().invoke(app, ["stats", "rare", "--json"])
    assert json.loads(label.output)["tasks"]["label"]["classes_without_train_text"] == ["c", "d"], label.output
    shown = CliRunner().invoke(app, ["stats", "rare"])
    assert "imbalance ∞" in shown.output and "no train text of c, d: a model cannot learn these" in shown.output
    from tests.trainer_fixtures import add_variant

    add_variant(engine, "rare", "train", "approved", "text of c, approved", labels={"label": "c"})  # c trains now
    label = CliRunner().invoke(app, ["stats", "rare", "--json"])
    assert json.loads(label.output)["tasks"]["label"]["classes_without_train_text"] == ["d"], label.output
    assert run_import(engine, EXAMPLE_CSV.read_bytes(), dataset="psm", tasks=["bias", "message"]).warnings == []


def test_spreadsheet_exports_import_or_say_how_to_save_them(engine):
    """Excel where the decimal mark is a comma writes `;`-separated CSV, and TSV files are tab-separated: both
    were read as one column and refused at the first row ("expected 1 fields, found 2"). A file in UTF-16 or
    Windows-1252 got a bare byte error."""
    semicolons = "\ufefftext;sentiment;score\r\nI love it;positive;0,5\r\nI hate it;negative;0,25\r\n".encode()
    result = run_import(engine, semicolons, dataset="eu")
    assert result.imported == 2
    tabs = b"id\ttext\tsentiment\n1\tI love it, truly\tpositive\n2\tmeh\tneutral\n"
    result = run_import(engine, tabs, dataset="tsv", filename="data.tsv", id_col="id")
    assert result.imported == 2
    with session_scope(engine) as s:
        texts = set(s.scalars(select(Sample.text)))
    assert {"I love it", "I love it, truly", "meh"} <= texts
    for data, hint in [
        ("text,sentiment\nok,positive\n".encode("utf-16"), "the file is UTF-16"),
        ("text,sentiment\ncafé,positive\n".encode("cp1252"), "Windows-1252 or Latin-1"),
    ]:
        with pytest.raises(ValidationFailed) as err:
            run_import(engine, data, dataset="enc")
        assert "invalid UTF-8" in err.value.message and hint in err.value.message and "CSV UTF-8" in err.value.message


def test_a_compressed_file_or_a_workbook_is_named_as_such_not_as_another_encoding(engine):
    """A .csv.gz or an .xlsx was refused with "the file is not UTF-8 (Windows-1252 or Latin-1?)", which sent the
    user off re-encoding a gzip file (an attacker's find)."""
    import gzip
    import io
    import zipfile

    text = "text,sentiment\n" + "I love it,positive\n" * 200
    workbook = io.BytesIO()
    with zipfile.ZipFile(workbook, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("xl/worksheets/sheet1.xml", text)
    for data, filename, said in [
        (gzip.compress(text.encode()), "posts.csv.gz", "gzip-compressed: decompress it first"),
        (workbook.getvalue(), "posts.xlsx", "a ZIP archive (an Excel .xlsx workbook is one)"),
    ]:
        with pytest.raises(ValidationFailed) as err:
            run_import(engine, data, dataset="packed", filename=filename)
        assert said in err.value.message and "Windows-1252" not in err.value.message, err.value.message
    assert count(engine) == 0


def test_a_header_that_differs_only_in_case_is_named_with_every_missing_column(engine):
    """`id,Text ,Sentiment ,TOPIC` against --text-col text -t sentiment -t topic: the error named line 2 and the
    first column only, with no hint that the header spells them otherwise."""
    data = b"id,Text ,Sentiment ,TOPIC\n1,I love it,positive,tax\n"
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, data, dataset="hc", tasks=["sentiment", "topic"])
    message = err.value.message
    assert message.startswith("line 1: columns 'text', 'sentiment', 'topic' not found"), message
    assert "did you mean 'Text' for 'text'?" in message and "did you mean 'TOPIC' for 'topic'?" in message
    assert err.value.field == "text_col"


def test_repeated_rows_whose_labels_disagree_are_said(any_engine):
    """A text labelled twice, otherwise (two annotators who disagreed), was skipped as a plain duplicate: the
    first label kept and the disagreement never mentioned. SQLite and Postgres."""
    data = (
        b"text,sentiment,topic\n"
        b"I love it,positive,tax\n"
        b"meh,neutral,\n"
        b"I love it,negative,tax\n"
        b"meh,neutral,\n"  # the same labels: a plain duplicate
        b"meh,neutral,vote\n"  # a label the first row left out
    )
    result = run_import(any_engine, data, dataset="dup", tasks=["sentiment", "topic"])
    assert result.imported == 2 and result.duplicates_skipped == 3
    conflicts = [w for w in result.warnings if "with other labels" in w]
    assert conflicts == [
        "2 row(s) repeat an earlier row's text (case, spacing and Unicode form aside) with other labels and were"
        " skipped, the earlier row's labels kept:"
        " line 4 repeats line 2 with sentiment 'negative' (kept: 'positive'); line 6 repeats line 3 with topic"
        " 'vote' (kept: none)"
    ], result.warnings
    clean = run_import(any_engine, b"text,sentiment\na,x\na,x\n", dataset="same", tasks=["sentiment"])
    assert clean.duplicates_skipped == 1 and not [w for w in clean.warnings if "other labels" in w]


def test_a_label_set_given_on_re_import_must_be_the_stored_one(engine):
    """Given for an existing dataset, `labels` was ignored in silence (the stored set won): a user who meant to
    reorder or drop a class believed it done."""
    run_import(engine, GOOD, label_order={"sentiment": ["negative", "neutral", "positive"]})
    more = b"text,sentiment\nanother one,positive\n"
    for changed in (
        ["positive", "neutral", "negative"],
        ["negative", "positive"],
        ["negative", "neutral", "positive", "x"],
    ):
        with pytest.raises(ValidationFailed) as err:
            run_import(engine, more, label_order={"sentiment": changed})
        assert err.value.field == "labels" and "['negative', 'neutral', 'positive'] since its first import" in str(
            err.value.message
        )
    assert count(engine) == 3
    assert run_import(engine, more, label_order={"sentiment": ["negative", "neutral", "positive"]}).imported == 1


def test_the_stored_label_set_is_matched_in_nfc_and_stripped(engine):
    """The same set in another Unicode spelling is the same set; so is one stored, before labels were stripped,
    with a blank around a name."""
    import unicodedata

    from sqlalchemy import update

    run_import(engine, "text,sentiment\nun café,café\nautre chose,thé\n".encode())
    with session_scope(engine) as s:
        assert s.scalar(select(Dataset)).labels_of("sentiment") == ["café", "thé"]
        s.execute(update(Dataset).values(tasks=[{"name": "sentiment", "labels": ["café ", "thé"]}]))
    decomposed = [unicodedata.normalize("NFD", "café"), unicodedata.normalize("NFD", "thé")]
    assert decomposed[0] != "café"
    more = "text,sentiment\nencore une fois,thé\n".encode()
    assert run_import(engine, more, label_order={"sentiment": decomposed}).imported == 1


def test_a_parquet_column_named_twice_is_refused(engine, tmp_path):
    """A row read as a dict kept the last of two same-named columns: its labels imported in silence (CSV and
    JSONL refuse the same)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "twice.parquet"
    table = pa.Table.from_arrays(
        [pa.array(["aa", "bb"]), pa.array(["positive", "negative"]), pa.array(["negative", "positive"])],
        names=["text", "sentiment", "sentiment"],
    )
    pq.write_table(table, path)
    with pytest.raises(ValidationFailed, match=r"line 1: column \['sentiment'\] appear\(s\) twice"):
        run_import(engine, path.read_bytes(), filename="twice.parquet")
    assert count(engine) == 0


def test_a_split_or_id_column_missing_is_named_on_the_header_line(engine):
    for spec in ({"split_col": "fold"}, {"id_col": "key"}):
        with pytest.raises(ValidationFailed) as err:
            run_import(engine, GOOD, **spec)
        assert err.value.extra["line"] == 1 and str(err.value.message).startswith("line 1: ")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_augloop_export_re_imports_its_originals_with_their_own_ids(engine, tmp_path, fmt):
    """An export re-imported (another server, a new dataset): its `id` column (the exporting server's sample ids)
    became the rows' external ids in place of their own, and its variants, whatever their review (an export may
    hold rejected ones), became originals, which train as they are."""
    from db.datasets import get_dataset
    from services.exporting import write_export
    from tests.trainer_fixtures import add_variant

    data = b"id,text,sentiment,split\n@x-1,I love it,positive,train\nx-2,@you I hate it,negative,train\n"
    data += b"x-3,meh,neutral,val\n"
    run_import(engine, data)
    add_variant(engine, "d", "train", "approved", "I adore it")
    add_variant(engine, "d", "train", "rejected", "I love love love it")
    path = tmp_path / f"export.{fmt}"
    with session_scope(engine) as s:
        write_export(s, get_dataset(s, "d"), {"original", "approved", "pending", "rejected"}, fmt, path)
    again = run_import(engine, path.read_bytes(), filename=path.name, dataset="again")
    assert again.imported == 3
    assert any(
        "augloop export" in w and "`external_id`" in w and "2 row(s) that were no original" in w for w in again.warnings
    )
    with session_scope(engine) as s:
        ds = get_dataset(s, "again")
        rows = s.execute(
            select(Sample.external_id, Sample.text, Sample.split).where(Sample.dataset_id == ds.id).order_by(Sample.id)
        ).all()
    # the CSV export's formula guard (a leading ') is taken off again: the exact values, as JSONL keeps them
    assert rows == [("@x-1", "I love it", "train"), ("x-2", "@you I hate it", "train"), ("x-3", "meh", "val")]
    if fmt == "csv":  # its external_id column deleted by hand: still an export (its review column beside `origin`)
        import csv as csv_module
        import io

        table = list(csv_module.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        out = io.StringIO()
        kept = [c for c in table[0] if c != "external_id"]
        writer = csv_module.DictWriter(out, fieldnames=kept, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)
        again = run_import(engine, out.getvalue().encode(), filename="no_ids.csv", dataset="no_ids")
        assert again.imported == 3 and any("2 row(s) that were no original" in w for w in again.warnings)
        with session_scope(engine) as s:
            texts = s.scalars(select(Sample.text).where(Sample.dataset_id == get_dataset(s, "no_ids").id)).all()
        assert sorted(texts) == ["@you I hate it", "I love it", "meh"], (
            "a variant became an original, or a guard stayed"
        )
    if fmt == "jsonl":  # a tool that drops null keys (jq, pandas) leaves an original's export row sparse
        sparse = tmp_path / "sparse.jsonl"
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        sparse.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in lines))
        again = run_import(engine, sparse.read_bytes(), filename="sparse.jsonl", dataset="sparse")
        assert again.imported == 3 and any("2 row(s) that were no original" in w for w in again.warnings)
    # an export of variants alone adds nothing, and says why
    variants = tmp_path / f"variants.{fmt}"
    with session_scope(engine) as s:
        write_export(s, get_dataset(s, "d"), {"approved"}, fmt, variants)
    with pytest.raises(ValidationFailed, match="no originals: the file is an augloop export whose 1 rows"):
        run_import(engine, variants.read_bytes(), filename=variants.name, dataset="none")


def test_a_repeated_text_with_another_split_is_skipped_and_said(engine):
    """A row repeating a text the dataset holds, or an earlier row, was skipped as a plain duplicate although the
    file put it in another split: a user who meant to move a text to test believed it moved."""
    run_import(engine, GOOD)  # "meh" in test, the others in train
    again = b"text,sentiment,split\nmeh,neutral,train\nI love it,positive,train\nnew one,positive,val\n"
    again += b"new one,positive,test\n"
    result = run_import(engine, again)
    assert result.imported == 1
    said = [w for w in result.warnings if "another split" in w]
    assert len(said) == 1 and said[0].startswith(
        "2 row(s) repeat a text (case, spacing and Unicode form aside) with another split"
    ), result.warnings
    assert "line 2 (train) repeats sample 3 (test)" in said[0] and "line 5 (test) repeats line 4 (val)" in said[0]
    with session_scope(engine) as s:
        assert s.scalar(select(Sample.split).where(Sample.text == "meh")) == "test"
        assert s.scalar(select(Sample.split).where(Sample.text == "new one")) == "val"


@pytest.mark.parametrize(
    "data",
    [
        b'[\n  {"text": "one", "sentiment": "positive"},\n  {"text": "two", "sentiment": "negative"}\n]\n',
        b'[{"text": "one", "sentiment": "positive"}, {"text": "two", "sentiment": "negative"}]\n',
    ],
    ids=["pretty", "one-line"],
)
def test_a_json_array_is_refused_saying_the_file_must_be_json_lines(engine, data):
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, data, filename="d.json")
    assert err.value.extra["line"] == 1 and "the file must be JSON Lines, one object per line" in err.value.message


def test_ids_that_name_two_texts_are_imported_and_said(any_engine):
    """An id column names a text: a user joins predictions or an export back to the file by it. Two texts under
    one id (within the file, or a stored sample's id given to a new text) imported in silence, and the join then
    found two texts."""
    first = b"id,text,sentiment,split\na1,I love it,positive,train\na2,I hate it,negative,train\na3,meh,neutral,test\n"
    assert not [w for w in run_import(any_engine, first).warnings if w.startswith("ids in column")]
    again = (
        b"id,text,sentiment\n"
        b"a2,I hate it,negative\n"  # the same text under its own id: a repeat, skipped, nothing to say
        b"b1,new one,positive\n"
        b"b1,another one,negative\n"  # two texts under one id in the file
        b"b1,a third,negative\n"
        b"a3,not meh at all,positive\n"  # a stored sample's id on a new text
        b"b2,new one,positive\n"  # a repeat of a new row's text under another id: skipped, its id adds nothing
        b",no id here,positive\n"
    )
    result = run_import(any_engine, again)
    assert result.imported == 5
    said = [w for w in result.warnings if w.startswith("ids in column 'id'")]
    assert len(said) == 1, result.warnings
    assert "2 row(s) have the id of another row" in said[0]
    assert "line 4 repeats line 3's id 'b1'; line 5 repeats line 3's id 'b1'" in said[0]
    with session_scope(any_engine) as s:
        meh = s.scalar(select(Sample.id).where(Sample.text == "meh"))
    assert f"1 row(s) have the id of a text the dataset already holds: line 6 has sample {meh}'s id 'a3'" in said[0]
    # a file without ids, or with ids that name one text each, says nothing of ids
    plain = run_import(any_engine, b"text,sentiment\nfourth,positive\n", dataset="other")
    assert not [w for w in plain.warnings if w.startswith("ids in column")]


def test_a_file_that_is_one_split_imports_into_it(any_engine):
    """Datasets ship as train.csv, dev.csv and test.csv: without a way to say a whole file's split, importing
    train.csv alone drew val and test out of the training rows, which no later import could undo."""
    train = b"text,sentiment\nI love it,positive\nI hate it,negative\nso so,neutral\nfine,positive\n"
    result = run_import(any_engine, train, split="train")
    assert result.split_counts == {"train": 4} and result.split_info == {"source": "given", "split": "train"}
    dev = run_import(any_engine, b"text,sentiment\nnot bad,positive\nawful,negative\n", split=" Dev ")
    assert dev.split_counts == {"val": 2}
    assert run_import(any_engine, b"text,sentiment\nmeh,neutral\n", split="test").split_counts == {"test": 1}
    with session_scope(any_engine) as s:
        got = dict(s.execute(select(Sample.split, func.count()).group_by(Sample.split)).tuples().all())
    assert got == {"train": 4, "val": 2, "test": 1}


@pytest.mark.parametrize(
    "data, spec, problem",
    [
        (b"text,sentiment\na,positive\n", {"split": "holdout"}, "'holdout' is no split"),
        (b"text,sentiment,fold\na,positive,test\n", {"split": "val", "split_col": "fold"}, "not both"),
        (b"text,sentiment,split\na,positive,test\n", {"split": "val"}, "the file has a split column 'split'"),
        # JSONL: a split that only later records give was overridden in silence (their test texts trained)
        (
            b'{"text": "a", "sentiment": "positive"}\n{"text": "b", "sentiment": "negative", "split": "test"}\n',
            {"split": "train", "filename": "d.jsonl"},
            "this record has a 'split' and every row was given the split 'train'",
        ),
    ],
    ids=["unknown", "with-split-col", "file-has-split", "a-later-record-has-split"],
)
def test_a_whole_files_split_is_refused_when_unknown_or_beside_a_split_column(engine, data, spec, problem):
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, data, **spec)
    assert err.value.field == "split" and problem in err.value.message
    assert count(engine) == 0


def test_a_split_column_under_another_name_is_pointed_out_when_augloop_draws_the_split(engine):
    """A file whose split column is `fold` imported with a drawn split in silence: the user's own split (the one
    their paper reports on) was replaced by a random one."""
    rows = "".join(
        f"text {i},{'positive' if i % 2 else 'negative'},{('train', 'dev', 'test')[i % 3]},x{i}\n" for i in range(30)
    )
    result = run_import(engine, ("text,sentiment,fold,note\n" + rows).encode())
    assert result.split_info["source"] == "stratified"
    said = [w for w in result.warnings if "names a split" in w]
    assert len(said) == 1 and "column 'fold'" in said[0] and "--split-col fold" in said[0], result.warnings
    # as the warning says: the file's own split kept
    kept = run_import(engine, ("text,sentiment,fold,note\n" + rows).encode(), dataset="kept", split_col="fold")
    assert kept.split_counts == {"train": 10, "val": 10, "test": 10}
    assert not [w for w in kept.warnings if "names a split" in w]
    # a column that names a split on some rows only is no split column
    mixed = rows.replace(",test,x2\n", ",later,x2\n")
    assert not [
        w
        for w in run_import(engine, ("text,sentiment,fold,note\n" + mixed).encode(), dataset="m").warnings
        if "names a split" in w
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_round_trips_texts_labels_and_tasks_that_begin_like_a_guarded_cell(engine, tmp_path, fmt):
    """The CSV export's formula guard was not reversible: a text that itself began with ' before =, +, -, @ (a
    quoted tweet, "'@user is wrong'") came back without its ', and re-imported into its own dataset as a new
    original; a task named "@stance" was guarded in the header, and the re-import could not find it."""
    from db.datasets import get_dataset
    from services.exporting import write_export

    data = "text,@stance,split\n'@realDonaldTrump is wrong',a,train\n'=x,'@x,val\n''+y z,b,test\nplain,b,train\n"
    run_import(engine, data.encode(), tasks=["@stance"])
    path = tmp_path / f"export.{fmt}"
    with session_scope(engine) as s:
        write_export(s, get_dataset(s, "d"), {"original"}, fmt, path)

    def rows(name: str) -> list[tuple[str, str, str]]:
        with session_scope(engine) as s:
            found = s.execute(
                select(Sample.text, SampleLabel.label, Sample.split)
                .join(SampleLabel)
                .where(Sample.dataset_id == get_dataset(s, name).id)
            )
            return sorted(found.tuples().all())

    again = run_import(engine, path.read_bytes(), filename=path.name, dataset="again", tasks=["@stance"])
    assert again.imported == 4 and rows("again") == rows("d")
    assert ("'@realDonaldTrump is wrong'", "a", "train") in rows("d")
    assert run_import(engine, path.read_bytes(), filename=path.name, tasks=["@stance"]).imported == 0


def test_a_users_own_csv_with_an_origin_column_keeps_its_ids(engine):
    """`id,text,…,split,origin` was taken for an augloop export: every id was dropped (read from an
    `external_id` the file does not have) and its rows of another origin skipped. A CSV export always has
    `external_id`."""
    data = b"id,text,sentiment,split,origin\nu1,hello there,positive,train,original\nu3,world,negative,val,augmented\n"
    result = run_import(engine, data)
    assert result.imported == 2 and not any("augloop export" in w for w in result.warnings)
    with session_scope(engine) as s:
        assert sorted(s.scalars(select(Sample.external_id))) == ["u1", "u3"]
    # a JSONL file needs no external_id to be an export (a tool may drop null keys), but an export's ids are the
    # server's sample ids: a file whose ids are its own keeps them, and every row whatever its origin
    lines = [
        {"id": "tw-1", "text": "user text one", "split": "train", "origin": "original", "sentiment": "a"},
        {"id": "tw-2", "text": "user text two", "split": "train", "origin": "augmented", "sentiment": "b"},
        {"id": "tw-3", "text": "user text three", "split": "val", "origin": "original", "sentiment": "b"},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    result = run_import(engine, data, filename="own.jsonl", dataset="own")
    assert result.imported == 3 and not any("augloop export" in w for w in result.warnings), result.warnings
    with session_scope(engine) as s:
        own = select(Sample.external_id).join(Dataset).where(Dataset.name == "own")
        assert sorted(s.scalars(own)) == ["tw-1", "tw-2", "tw-3"]


def test_excels_padding_imports_unnamed_empty_columns_and_rows_of_delimiters_are_left_out(engine):
    """A sheet saved as CSV by Excel pads its rows: `text,sentiment,split,,` was refused as "duplicate column
    names ['', '']", and a row of delimiters only (`,,,,`) as "missing text"."""
    data = b"text,sentiment,split,,\r\nI love it,positive,train,,\r\n,,,,\r\n , , , ,\r\nmeh,neutral,test,,\r\n"
    result = run_import(engine, data)
    assert result.imported == 2 and result.split_counts == {"train": 1, "test": 1}
    with pytest.raises(ValidationFailed, match="duplicate column names"):
        run_import(engine, b"text,sentiment,sentiment\na,positive,negative\n", dataset="twice")


def test_more_tasks_than_a_run_trains_are_refused_before_the_file_is_read(engine):
    """30,000 label columns were imported (27 s, a 6 MB answer, every dataset listing megabytes after it), and no
    run could train them (a config names at most 1,024 tasks)."""
    from trainer.config import MAX_NAMED_TASKS

    tasks = [f"t{i}" for i in range(MAX_NAMED_TASKS + 1)]
    data = ("text," + ",".join(tasks) + "\nhello," + ",".join("a" for _ in tasks) + "\n").encode()
    with pytest.raises(ValidationFailed, match=f"at most {MAX_NAMED_TASKS}") as err:
        run_import(engine, data, tasks=tasks)
    assert err.value.field == "task" and count(engine, Dataset) == 0
    assert run_import(engine, data, tasks=tasks[:MAX_NAMED_TASKS]).imported == 1


def test_texts_that_differ_in_case_spacing_or_unicode_form_are_one_text_and_the_warnings_say_so(engine) -> None:
    """A test text in another casing must not land in train (the dataset's unique key reads texts normalised),
    so `STOP` and `stop` are one text; the warnings said "repeat an earlier row's text" of texts that visibly
    differ, and the README said "exact duplicate" (an attacker's find): both now say what is the same."""
    data = "text,sentiment,split\nSTOP,angry,train\nstop,neutral,train\nHi  there,a,test\nhi there,b,train\n"
    data += "\uff46\uff4f\uff4f,a,train\nfoo,a,train\n"
    result = run_import(engine, data.encode())
    assert result.imported == 3 and result.duplicates_skipped == 3
    with session_scope(engine) as s:
        assert sorted(s.scalars(select(Sample.text))) == ["Hi  there", "STOP", "\uff46\uff4f\uff4f"]
    said = [w for w in result.warnings if "repeat" in w]
    assert len(said) == 2 and all("(case, spacing and Unicode form aside)" in w for w in said), result.warnings


_icu_databases = 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def collated_engine(request, tmp_path, monkeypatch, tmp_path_factory):
    """SQLite, and a Postgres database whose default collation is ICU's en-US, as a server's often is (the tests'
    own server is initialised in C, which sorts as SQLite does)."""
    import os

    import psycopg

    from db.session import get_engine
    from tests.conftest import _settings_on

    if request.param == "sqlite":
        yield get_engine(request.getfixturevalue("settings").resolved_database_url)
        return
    global _icu_databases
    _icu_databases += 1
    server = request.getfixturevalue("postgres_server")
    name = f"icu{os.getpid()}_{_icu_databases}"
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True) as conn:
        try:
            conn.execute(
                f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'"
            )
        except psycopg.Error as err:  # a server before 15, or built without ICU
            pytest.skip(f"no ICU collation on this PostgreSQL server: {err}")
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    for settings in _settings_on(server.url(name), data_dir, monkeypatch, tmp_path_factory):
        yield get_engine(settings.resolved_database_url)


def test_a_new_tasks_labels_take_one_order_whatever_the_databases_collation(collated_engine):
    """A task given no label set took the file's labels in the database's ORDER BY: code points on SQLite, the
    collation on Postgres (ICU en-US: `_x`, `-1`, `+1`, `a b`, `Neutral`, `partisan`, `Zeta`). The order is the
    classes' ids, so the same file gave other ids on the laptop and on the server; it is Python's sorted() on both."""
    labels = ["partisan", "Neutral", "-1", "+1", "a b", "_x", "Zeta"]
    data = "text,stance\n" + "".join(f"text number {i},{label}\n" for i, label in enumerate(labels))
    run_import(collated_engine, data.encode(), tasks=["stance"])
    with session_scope(collated_engine) as s:
        stored = s.scalar(select(Dataset)).labels_of("stance")
    assert stored == ["+1", "-1", "Neutral", "Zeta", "_x", "a b", "partisan"] == sorted(labels)


def test_an_export_re_imported_without_label_sets_or_language_says_what_it_took_and_how_to_give_them(engine, tmp_path):
    """An export holds rows, not its dataset's label sets (their order is the classes' ids; a class no row holds is
    not in it) or language: re-imported into a new dataset without them, the classes came back sorted and the
    language as `en`, unsaid."""
    from db.datasets import get_dataset
    from services.exporting import write_export

    data = b"text,stance,split\nI love it,positive,train\nI hate it,negative,train\nmeh,neutral,val\n"
    order = {"stance": ["positive", "neutral", "negative", "unused"]}
    run_import(engine, data, tasks=["stance"], label_order=order, language="de")
    path = tmp_path / "export.csv"
    with session_scope(engine) as s:
        write_export(s, get_dataset(s, "d"), {"original"}, "csv", path)

    def said(name: str, file: bytes | None = None, **spec) -> list[str]:
        result = run_import(engine, file or path.read_bytes(), filename="x.csv", dataset=name, tasks=["stance"], **spec)
        assert result.imported in (0, 3)  # 0: into the dataset that already holds the texts
        return [w for w in result.warnings if "not the exporting dataset's label sets" in w]

    plain = said("plain")
    assert len(plain) == 1 and plain[0].startswith("the file is an augloop export: "), plain
    assert "task(s) 'stance' took the labels the file holds, sorted" in plain[0] and "language is 'en'" in plain[0]
    assert "--labels stance=a,b,c --language xx" in plain[0] and "API: the labels and language fields" in plain[0]
    with session_scope(engine) as s:
        assert get_dataset(s, "plain").labels_of("stance") == ["negative", "neutral", "positive"]
    # the language given, the label set not: only what was taken is named
    half = said("half", language="de")
    assert len(half) == 1 and "language is" not in half[0] and "'stance' took the labels" in half[0]
    assert not said("both", label_order=order, language="de")
    with session_scope(engine) as s:
        copy, source = get_dataset(s, "both"), get_dataset(s, "d")
        assert (copy.tasks, copy.language) == (source.tasks, source.language)
    # into a dataset that exists, its own label sets and language stay: nothing to say
    assert not said("plain")
    # a user's own file (not an export) loses nothing of another dataset's
    assert not said("own", data)


def test_the_import_that_recreates_an_exports_dataset_is_spelt_for_the_cli_or_its_tasks_named():
    from db.models import Dataset
    from services.exporting import reimport_command

    dataset = Dataset(
        name="my data",
        language="pt-BR",
        tasks=[
            {"name": "stance", "labels": ["Zeta", "-1", "+1", "a b"]},
            {"name": "empty", "labels": []},
            {"name": "odd", "labels": ["x,y", "z"]},
        ],
    )
    command, unspelt = reimport_command(dataset, "-out.csv")
    assert command == (
        "augloop import ./-out.csv '--dataset=my data' --task=stance --task=empty --task=odd "
        "'--labels=stance=Zeta,-1,+1,a b' --language=pt-BR"
    )
    assert unspelt == ["odd"]
