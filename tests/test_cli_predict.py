"""`augloop predict`: a file of texts through a finished run, as the API's predict answers them, written whole or
not at all; a file's mistakes named by row and exit code 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.trainer_fixtures import import_small, tiny_encoder, tiny_keys  # noqa: F401 (fixture)

TEXTS = [
    "Vote for the farm bill tomorrow.",
    '=HYPERLINK("http://x") thanks for coming tonight',  # a formula's start: guarded in CSV, exact in JSONL
    "Proud of our veterans, and of the volunteers who helped them today.",
]


@pytest.fixture
def model(lead, engine, tiny_encoder: str) -> int:
    from workers.main import Worker

    name = import_small(engine, n_train=40, n_val=12, n_test=12, n_unlabelled=0)
    config = tiny_keys(tiny_encoder, epochs=1, grad_accum=1, lr=1e-3)
    r = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [1], "config": config})
    assert r.status_code == 202, r.text
    assert Worker(engine, kinds=["train"], poll_seconds=0.05, lease_seconds=30).run(burst=True).succeeded == 1
    return int(r.json()["runs"][0]["id"])


def run_cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from augloop.cli import app

    return CliRunner().invoke(app, ["predict", *args])


def test_a_file_is_predicted_as_the_api_predicts_it(lead, model: int, tmp_path: Path, monkeypatch, request) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("AUGLOOP_TRAINER_PREDICT_MAX_TEXTS", "2")  # three texts: two requests
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    api = lead.post(f"/api/v1/models/{model}/predict", json={"texts": TEXTS}).json()

    source = tmp_path / "in.csv"
    with source.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["key", "text"])
        for i, text in enumerate(TEXTS):  # the second as an augloop CSV export guards it
            w.writerow([f"k{i}", "'" + text if text.startswith("=") else text])
    out = tmp_path / "out.jsonl"
    result = run_cli(str(model), str(source), "-o", str(out), "--id-col", "key")
    assert result.exit_code == 0, result.output
    assert "predicted 3 texts" in result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["k0", "k1", "k2"]
    assert [r["text"] for r in rows] == TEXTS  # the export's guard taken off: the text as it is
    assert [r["labels"] for r in rows] == api["labels"]
    for got, want in zip(rows, api["probabilities"], strict=True):
        for task, probs in want.items():
            assert got["probabilities"][task] == pytest.approx(probs, abs=1e-5)

    # CSV out: a label per task, a probability per class; the text's formula start guarded for spreadsheets
    lines = tmp_path / "in.txt"
    lines.write_text("\n".join(TEXTS) + "\n\n", encoding="utf-8")
    table = tmp_path / "out.csv"
    assert run_cli(str(model), str(lines), "-o", str(table)).exit_code == 0
    with table.open(newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    tasks = [t["name"] for t in api["tasks"]]
    assert [r["text"] for r in read] == [TEXTS[0], "'" + TEXTS[1], TEXTS[2]]
    assert [{t: r[t] for t in tasks} for r in read] == api["labels"]
    # no -o: JSONL on standard output, for a pipe
    piped = run_cli(str(model), str(lines))
    assert piped.exit_code == 0, piped.output
    assert [json.loads(x)["labels"] for x in piped.stdout.splitlines() if x.startswith("{")] == api["labels"]
    first = api["tasks"][0]
    total = sum(float(read[0][f"p({first['name']}={label})"]) for label in first["labels"])
    assert total == pytest.approx(1.0, abs=1e-4)


def test_a_files_mistakes_exit_2_naming_the_row_and_leave_the_output_as_it_was(
    model: int, tmp_path: Path, settings
) -> None:
    tmp_path = tmp_path / "files"  # beside the settings' data folder
    tmp_path.mkdir()
    out = tmp_path / "out.jsonl"
    out.write_text("kept\n", encoding="utf-8")
    source = tmp_path / "in.csv"
    source.write_text("text,other\nfine text,1\n   ,2\n", encoding="utf-8")
    result = run_cli(str(model), str(source), "-o", str(out))
    assert result.exit_code == 2 and "row 2 (line 3)" in result.output, result.output
    result = run_cli(str(model), str(source), "-o", str(out), "--text-col", "body")
    assert result.exit_code == 2 and "no column 'body'" in result.output and "text, other" in result.output
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": "x" * 20_001}) + "\n", encoding="utf-8")
    result = run_cli(str(model), str(long), "-o", str(out))
    assert result.exit_code == 2 and "line 2" in result.output and "20000 characters" in result.output, result.output
    result = run_cli("999999", str(long), "-o", str(out))
    assert result.exit_code == 2 and "999999" in result.output, result.output
    result = run_cli(str(model), str(source), "-o", str(source))
    assert result.exit_code == 2 and "input file" in result.output
    database = settings.data_dir / "augloop.db"  # augloop's own files are no output (as for an export)
    result = run_cli(str(model), str(source), "-o", str(database), "--format", "csv")
    assert result.exit_code == 2 and "data directory" in result.output and "the predictions" in result.output
    # a row with more fields than the header (an unquoted comma: the text would be cut short), a column named twice,
    # a JSON key given twice: refused (a reviewer's finds), the row named by the line it is on
    for name, content, said in (
        ("comma.csv", "id,text\n1,fine\n\n2,hello, world and more\n", "row 2 (line 4) has 3 fields"),
        ("twice.csv", "id,text,text\n1,first,second\n", "column 'text' more than once"),
        ("twice.jsonl", '{"text": "a", "text": "b"}\n', "key 'text' twice"),
        ("number.jsonl", '{"text": 42}\n', "'text' is not a string"),
    ):
        bad = tmp_path / name
        bad.write_text(content, encoding="utf-8")
        result = run_cli(str(model), str(bad), "-o", str(out))
        assert result.exit_code == 2 and said in result.output, (name, result.output)
    bad.unlink()
    for name in ("comma.csv", "twice.csv", "twice.jsonl"):
        (tmp_path / name).unlink()
    assert out.read_text(encoding="utf-8") == "kept\n", "a failed prediction replaced the output"
    # a file replaced keeps its permission bits (a team's 0644); a line separator in a text stays one JSONL line
    out.chmod(0o644)
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"text": "one\u2028line"}) + "\n", encoding="utf-8")
    assert run_cli(str(model), str(lines), "-o", str(out)).exit_code == 0
    assert (out.stat().st_mode & 0o777) == 0o644
    written = out.read_text(encoding="utf-8")
    assert "\u2028" not in written and len(written.splitlines()) == 1 and json.loads(written)["text"] == "one\u2028line"
    lines.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "long.jsonl", "out.jsonl"], "no .part left"
