"""Spreadsheet-safe CSV (issue 13): every CSV export prefixes formula-like cells with ' (OWASP), and the
importer keeps a text's leading whitespace, so "\t=1+1" stays text instead of becoming the formula =1+1."""

from __future__ import annotations

import csv
import io
import json

import pytest

HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1+1", "\r=1+1"]
MID_CR = "We must protect Social Security\r=cmd|' /C calc'!A0"  # a lone CR inside a cell


def _import(admin, name: str, texts: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["text", "label", "split"])
    for i, text in enumerate(texts):
        w.writerow([text, "=cmd|' /C calc'!A0" if i == 0 else "b", "train"])
    r = admin.post(
        f"/api/v1/datasets/{name}/import",
        files={"file": ("x.csv", buf.getvalue().encode(), "text/csv")},
        data={"task": "label"},
    )
    assert r.status_code == 201, r.text


def test_the_importer_keeps_leading_whitespace(admin) -> None:
    _import(admin, "hostile", HOSTILE)
    lines = admin.get("/api/v1/datasets/hostile/export", params={"format": "jsonl", "include": "original"})
    texts = {json.loads(line)["text"] for line in lines.text.splitlines()}
    assert "\t=1+1" in texts and "=1+1" not in texts
    assert set(HOSTILE) - {"\r=1+1"} <= texts


def _cells(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("path", ["stream", "job", "cli"])
def test_every_csv_export_is_spreadsheet_safe(admin, engine, settings, tmp_path, path) -> None:
    _import(admin, "hostile", [*HOSTILE, MID_CR])
    if path == "stream":
        body = admin.get("/api/v1/datasets/hostile/export", params={"include": "original"}).text
    elif path == "job":
        from workers.main import Worker

        job = admin.post("/api/v1/datasets/hostile/exports", json={"format": "csv", "include": "original"}).json()
        Worker(engine, kinds=["export"]).run(burst=True)
        body = admin.get(f"/api/v1/jobs/{job['id']}/artifact").text
    else:
        from typer.testing import CliRunner

        from augloop.cli import app

        out = tmp_path / "out.csv"
        result = CliRunner().invoke(app, ["export", "hostile", "--include", "original", "--output", str(out)])
        assert result.exit_code == 0, result.output
        body = out.read_bytes().decode("utf-8")  # as written: no newline translation
    rows = _cells(body)
    dangerous = ("=", "+", "-", "@", "\t", "\r")
    for row in rows:
        for key, value in row.items():
            assert not value.startswith(dangerous), f"{key}={value!r} reaches a spreadsheet as a formula"
    texts = {r["text"] for r in rows}
    assert '\'=HYPERLINK("http://evil.example","x")' in texts and "'\t=1+1" in texts and "'-2+3" in texts
    assert MID_CR in texts, "a cell's CR ended its row"
    assert {r["label"] for r in rows} == {"'=cmd|' /C calc'!A0", "b"}


def test_signed_number_labels_export_as_they_are_and_guarded_cells_are_counted(admin, engine, tmp_path) -> None:
    """Labels -1/0/+1 came out as "'-1" and "'+1" (a re-import made them other classes), and the texts that did
    get a leading ' (an @mention at the start of a tweet) were changed without a word. A signed number is no
    formula; the guarded cells are counted, in the job's result and on the CLI, which points to JSONL."""
    from typer.testing import CliRunner

    from augloop.cli import app
    from workers.main import Worker

    rows = [("@senator thank you for the vote", "+1"), ("no change here", "0"), ("bad bill", "-1"), ("ok", "-0.5")]
    buf = io.StringIO()
    csv.writer(buf).writerows([("text", "stance", "split"), *[(t, s, "train") for t, s in rows]])
    r = admin.post(
        "/api/v1/datasets/signed/import",
        files={"file": ("x.csv", buf.getvalue().encode(), "text/csv")},
        data={"task": "stance"},
    )
    assert r.status_code == 201, r.text
    out = tmp_path / "signed.csv"
    result = CliRunner().invoke(app, ["export", "signed", "--include", "original", "--output", str(out)])
    assert result.exit_code == 0, result.output
    exported = _cells(out.read_bytes().decode("utf-8"))
    assert sorted(r["stance"] for r in exported) == sorted(s for _, s in rows)
    assert "'@senator thank you for the vote" in {r["text"] for r in exported}
    assert "1 cells begin like a spreadsheet formula" in " ".join(result.output.split()), result.output
    assert "export JSONL (-o signed.jsonl)" in " ".join(result.output.split())
    job = admin.post("/api/v1/datasets/signed/exports", json={"format": "csv", "include": "original"}).json()
    Worker(engine, kinds=["export"]).run(burst=True)
    assert admin.get(f"/api/v1/jobs/{job['id']}").json()["result"]["guarded_cells"] == 1
