"""Input past what Python reads, and input that only looks alike: each is refused naming where it stands, or
read as one thing, never a 500, a traceback or a silent loss.

- A JSONL line nested thousands deep or holding an integer of thousands of digits (json.loads raises
  RecursionError and a plain ValueError, not its JSONDecodeError) is an invalid line like any other.
- A trainer config (a YAML file, `--set`) with such a value is the trainer's own error naming the file or the
  option, exit 2 from the CLI.
- An id column named on purpose and missing from the file is an error, as a missing split column is.
- Labels are read in Unicode's NFC (one class for `café` however its accent was typed).
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from core.errors import ValidationFailed
from db.models import Dataset, Sample, SampleLabel
from db.session import session_scope
from tests import test_import as import_test
from tests.test_import import count
from trainer.config import TrainConfig, parse_set_option
from trainer.errors import TrainerError

DEEP_JSON = '{"text": "x", "bias": ' + "[" * 200_000 + "]" * 200_000 + "}"
LONG_INT_JSON = '{"text": "x", "bias": 1' + "0" * 5000 + "}"
# Python's reader keeps the last of a key given twice: this line imported as "right", silently
TWICE_JSON = '{"text": "x", "bias": "left", "bias": "right"}'
DIGITS = sys.get_int_max_str_digits()
NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


def run_import(engine, data: bytes, filename: str = "data.csv", **spec):
    return import_test.run_import(engine, data, filename, **{"tasks": ["bias"], **spec})


def jsonl_with(bad_line: str) -> bytes:
    return ('{"text": "fine", "bias": "left"}\n' + bad_line + "\n").encode()


def cli(*args: str):
    from augloop.cli import app

    return CliRunner().invoke(app, list(args))


# 1. JSONL lines past what Python's JSON reader takes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (DEEP_JSON, "invalid JSON: nested too deep"),
        (LONG_INT_JSON, f"invalid JSON: a number of more than {DIGITS}"),
        (TWICE_JSON, "invalid JSON: the key 'bias' appears twice in one object"),
    ],
    ids=["nested", "long-integer", "key-twice"],
)
def test_a_jsonl_line_past_pythons_reader_is_an_invalid_line_naming_it(engine, line, problem):
    """As `{"text": ` (a JSONDecodeError) is: ValidationFailed on field `file` with the line, nothing written."""
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, jsonl_with(line), filename="d.jsonl")
    assert err.value.field == "file" and err.value.extra["line"] == 2
    assert err.value.message.startswith("line 2: ") and problem in err.value.message
    assert count(engine) == 0 and count(engine, Dataset) == 0


def test_the_import_requests_label_sets_name_each_task_once(admin) -> None:
    """The form's `labels` JSON kept the last of a task given twice, where a JSONL record's key twice is refused."""
    data = {"task": "bias", "labels": '{"bias": ["left", "right"], "bias": ["right", "left"]}'}
    r = admin.post(
        "/api/v1/datasets/d/import", files={"file": ("d.jsonl", jsonl_with('{"text": "x", "bias": "left"}'))}, data=data
    )
    assert r.status_code == 422 and r.json()["field"] == "labels", r.text
    assert "task 'bias' is given twice" in r.json()["detail"]
    assert admin.get("/api/v1/datasets/d").status_code == 404  # nothing imported


@pytest.mark.parametrize("line", [DEEP_JSON, LONG_INT_JSON, TWICE_JSON], ids=["nested", "long-integer", "key-twice"])
def test_the_api_answers_422_and_the_cli_exits_2_for_such_a_line(settings, admin, tmp_path, line):
    r = admin.post("/api/v1/datasets/d/import", files={"file": ("d.jsonl", jsonl_with(line))}, data={"task": "bias"})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "file" and "line 2: invalid JSON" in r.json()["detail"]
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl_with(line))
    result = cli("import", str(path), "-d", "d", "-t", "bias")
    assert result.exit_code == 2, result.output
    assert "line 2: invalid JSON" in result.output and "Traceback" not in result.output


def test_integer_looking_csv_and_jsonl_strings_stay_text(engine):
    """A CSV cell is text, however many digits it has (no reader converts it: leading zeros stay), and a JSONL
    string of digits is a string; only a JSON *number* of thousands of digits is past the reader."""
    long_digits = "1" + "0" * 5000
    csv_data = f"text,bias,id\n{long_digits},007,000123\n".encode()
    run_import(engine, csv_data)
    jsonl = json.dumps({"text": "9" * 5000, "bias": "0042", "id": "0099"}).encode()
    run_import(engine, jsonl, filename="e.jsonl", dataset="e")
    with session_scope(engine) as s:
        rows = s.execute(select(Sample.text, Sample.external_id).order_by(Sample.id)).all()
        labels = sorted(s.scalars(select(SampleLabel.label)))
    assert rows == [(long_digits, "000123"), ("9" * 5000, "0099")]
    assert labels == ["0042", "007"]


# 2. Trainer configs past what Python reads -----------------------------------------------------------------------

YAML_VALUES = [
    ("1" + "0" * 5000, f"a number of more than {DIGITS} digits"),
    ("[" * 20_000 + "]" * 20_000, "nested too deep"),
    ("2024-13-45", "month must be in 1..12"),  # YAML 1.1 reads it as a date, and Python's date refuses it
]


@pytest.mark.parametrize(("value", "problem"), YAML_VALUES, ids=["long-integer", "nested", "bad-date"])
def test_a_config_file_with_a_value_past_python_is_a_trainer_error_naming_the_file(tmp_path: Path, value, problem):
    path = tmp_path / "big.yaml"
    path.write_text(f"epochs: {value}\n")
    with pytest.raises(TrainerError) as err:
        TrainConfig.load(path)
    assert err.value.field == "config" and str(path) in err.value.message and problem in err.value.message


@pytest.mark.parametrize(("value", "problem"), YAML_VALUES, ids=["long-integer", "nested", "bad-date"])
def test_a_set_option_with_a_value_past_python_is_a_trainer_error_naming_the_option(value, problem):
    with pytest.raises(TrainerError) as err:
        parse_set_option(["lr=0.001", f"epochs={value}"])
    assert err.value.field == "set" and err.value.message == f"--set epochs: {problem}"
    # what YAML itself cannot parse is still taken as text, for the config's own check to name
    assert parse_set_option(["encoder=[unclosed"]) == {"encoder": "[unclosed"}


def test_train_exits_2_with_a_message_for_such_a_set_option_or_config_file(settings, tmp_path: Path):
    result = cli("train", "d", "--queue", "--set", "epochs=1" + "0" * 5000)
    assert result.exit_code == 2, result.output
    assert "--set epochs: a number of more than" in result.output and "Traceback" not in result.output
    for name, value, problem in [
        ("long.yaml", "1" + "0" * 5000, f"more than {DIGITS} digits"),
        ("deep.yaml", "[" * 20_000 + "]" * 20_000, "nested too deep"),
    ]:
        (tmp_path / name).write_text(f"epochs: {value}\n")
        result = cli("train", "d", "--queue", "--config", str(tmp_path / name))
        assert result.exit_code == 2, (name, result.output)
        assert problem in " ".join(result.output.split()) and "Traceback" not in result.output
        assert name in "".join(result.output.split()), "the message names the file (wrapped to the terminal)"
    for params in ("[" * 20_000 + "]" * 20_000, '{"mlm": {"top_k": 1' + "0" * 5000 + "}}"):
        result = cli("augment", "run", "d", "--params", params)
        assert result.exit_code == 2 and "--params must be JSON that Python can read" in result.output, result.output


# 3. An id column named on purpose ---------------------------------------------------------------------------------


def test_an_id_column_named_on_purpose_must_be_in_the_file_the_default_may_be_missing(engine):
    data = b"text,bias\none,left\ntwo,right\n"
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, data, id_col="myid")
    assert err.value.field == "id_col" and err.value.extra["line"] == 1  # the header names the columns
    assert "id column 'myid' not found (columns: 'bias', 'text')" in err.value.message
    assert count(engine) == 0
    # a header's names are quoted: a terminal shown the message runs none of their escape sequences
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, b"text,bias,\x1b]0;PWNED\x07\x1b[2J\none,left,x\n", split_col="nope")
    assert err.value.field == "split_col" and "\x1b" not in err.value.message
    assert "'\\x1b]0;PWNED\\x07\\x1b[2J'" in err.value.message
    assert run_import(engine, data).imported == 2  # the default `id` column is optional
    run_import(engine, b"text,bias,myid\nthree,left,x-3\n", id_col="myid")
    with session_scope(engine) as s:
        assert s.scalar(select(Sample.external_id).where(Sample.text == "three")) == "x-3"


def test_the_api_answers_422_naming_id_col_for_a_missing_id_column(settings, admin):
    r = admin.post(
        "/api/v1/datasets/idc/import",
        files={"file": ("idc.csv", b"text,bias\none,left\n")},
        data={"task": "bias", "id_col": "myid"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "id_col" and "'myid' not found" in r.json()["detail"]


# 4. Labels that look alike ------------------------------------------------------------------------


def test_labels_spelled_in_nfc_and_nfd_are_one_class_and_case_is_kept(engine):
    assert NFC != NFD
    data = f"text,bias\none,{NFC}\ntwo,{NFD}\nthree,Left\nfour,left\n".encode()
    run_import(engine, data)
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset))
        assert sorted(ds.labels_of("bias")) == sorted(["Left", NFC, "left"])
        assert sorted(s.scalars(select(SampleLabel.label))) == sorted(["Left", NFC, NFC, "left"])
    # a second file spelled the other way matches the dataset's label
    run_import(engine, f"text,bias\nfive,{NFD}\n".encode())
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).where(SampleLabel.label == NFC)) == 3


def test_declared_labels_are_read_in_nfc_too(engine):
    run_import(engine, f"text,bias\none,{NFC}\ntwo,left\n".encode(), label_order={"bias": [NFD, "left"]})
    with session_scope(engine) as s:
        assert s.scalar(select(Dataset)).labels_of("bias") == [NFC, "left"]
    with pytest.raises(ValidationFailed) as err:  # the same name twice, however it was typed
        run_import(engine, b"text,bias\nx,left\n", dataset="e", label_order={"bias": [NFC, NFD]})
    assert err.value.field == "labels" and "more than once" in err.value.message


def test_a_label_set_stored_in_another_spelling_still_matches_its_rows(engine):
    """A dataset whose label set was stored before labels were read in NFC: its new rows take its spelling."""
    run_import(engine, f"text,bias\none,{NFC}\n".encode())
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset))
        ds.tasks = [{"name": "bias", "labels": [NFD]}]
    run_import(engine, f"text,bias\ntwo,{NFC}\n".encode())
    with session_scope(engine) as s:
        two = s.scalar(select(Sample.id).where(Sample.text == "two"))
        assert s.scalar(select(SampleLabel.label).where(SampleLabel.sample_id == two)) == NFD


# 5. Small doors ------------------------------------------------------------------------------------------------


def test_declared_labels_are_stripped_as_cells_are(engine):
    """A declared " a" was a class no row could hold (cells are stripped): every row's "a" was refused."""
    run_import(engine, b"text,bias\none,a\ntwo,b\n", label_order={"bias": [" a", "b "]})
    with session_scope(engine) as s:
        assert s.scalar(select(Dataset)).labels_of("bias") == ["a", "b"]


def test_a_csv_text_up_to_the_configured_limit_imports_past_csvs_own_field_cap(engine, monkeypatch):
    """With AUGLOOP_MAX_TEXT_CHARS above csv's 131,072-character field cap, a long text failed as a malformed
    CSV while the same text in JSONL imported."""
    import csv

    from core.settings import get_settings

    monkeypatch.setenv("AUGLOOP_MAX_TEXT_CHARS", "200000")
    get_settings.cache_clear()
    before = csv.field_size_limit()
    try:
        long_text = "word " * 30_000  # 150,000 characters
        run_import(engine, f"text,bias\n{long_text},a\nshort one,b\n".encode())
        assert run_import(engine, f"text,bias\n{long_text}x,a\n".encode(), dataset="e").imported == 1
    finally:
        csv.field_size_limit(before)
        get_settings.cache_clear()
    with session_scope(engine) as s:
        assert s.scalar(select(func.max(func.length(Sample.text)))) >= 149_000


def test_a_csv_field_past_the_limit_in_a_column_the_import_leaves_out_is_named_with_what_to_do(engine) -> None:
    """A `notes` column the import does not use, with a cell past csv's field cap, was refused as "malformed CSV:
    field larger than field limit (131072)", naming neither the limit's setting nor a way round it."""
    import csv

    from core.errors import ValidationFailed

    cap = csv.field_size_limit()  # 131,072, or AUGLOOP_MAX_TEXT_CHARS + 1 where that is larger
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, f"text,bias,notes\nshort one,a,{'n' * (cap + 10)}\n".encode())
    message = err.value.message
    assert message.startswith(f"line 2: a field is longer than {cap:,} characters, the most a CSV field"), message
    assert "remove the column if the import does not use it" in message and "malformed" not in message


@pytest.mark.parametrize("given", ["", " , "])
def test_a_worker_given_no_job_kind_is_refused_not_run_for_every_kind(settings, given) -> None:
    """`augloop worker --kinds "$KINDS"` with the variable unset ran a worker of every kind (an attacker's find)."""
    result = cli("worker", "--burst", "--kinds", given)
    assert result.exit_code == 2 and "--kinds names no job kind" in result.output, result.output


def test_a_task_given_two_label_sets_on_the_command_line_is_refused(settings, tmp_path: Path):
    (tmp_path / "f.csv").write_text("text,bias\none,a\n")
    result = cli(
        "import", str(tmp_path / "f.csv"), "-d", "d", "-t", "bias", "--labels", "bias=a,b", "--labels", "bias=b"
    )
    assert result.exit_code == 2 and "--labels names task 'bias' twice" in result.output, result.output


@pytest.mark.parametrize("given", ["bias=a,,b", "bias=a,b,", "bias= ,a"])
def test_a_blank_label_name_on_the_command_line_is_refused_as_the_api_refuses_it(settings, tmp_path: Path, given):
    """The CLI dropped blank names (`a,,b` imported as the set [a, b]) where the API answers 422."""
    (tmp_path / "f.csv").write_text("text,bias\none,a\n")
    result = cli("import", str(tmp_path / "f.csv"), "-d", "d", "-t", "bias", "--labels", given)
    assert result.exit_code == 2 and "task 'bias' has a blank label name" in result.output, result.output


def test_an_empty_task_list_for_a_plan_and_an_invisible_text_to_predict_are_refused(admin, example_dataset):
    r = admin.post(f"/api/v1/datasets/{example_dataset}/augmentation-plans", json={"tasks": []})
    assert r.status_code == 422 and r.json()["field"] == "tasks", r.text
    r = admin.post("/api/v1/models/1/predict", json={"texts": ["fine", "\u200b\ufeff"]})
    assert r.status_code == 422 and r.json()["field"] == "texts.1", r.text


def test_a_jsonl_file_may_leave_a_label_out_of_its_first_record_but_not_name_a_task_no_record_has(engine):
    """JSONL leaves a missing label out of its record; a first record without one refused the whole file as if
    the column did not exist. A task that no record names is still a typo, and refused."""
    records = [{"text": "one"}, {"text": "two", "bias": "left"}, {"text": "three", "bias": "right"}]
    data = "\n".join(json.dumps(r) for r in records).encode()
    assert run_import(engine, data, filename="d.jsonl").imported == 3
    with session_scope(engine) as s:
        labels = {smp.text: smp.labels for smp in s.scalars(select(Sample))}
    assert labels == {"one": {}, "two": {"bias": "left"}, "three": {"bias": "right"}}
    with pytest.raises(ValidationFailed) as err:
        run_import(engine, data, filename="d.jsonl", dataset="e", tasks=["bias", "stance"])
    assert err.value.field == "task" and "'stance' not found in any record" in err.value.message
    assert count(engine) == 3, "nothing of the refused file was written"
    with pytest.raises(ValidationFailed, match="column 'bias' not found"):  # a CSV header still says it at once
        run_import(engine, b"text,stance\none,x\n", dataset="f")
