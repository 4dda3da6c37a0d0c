"""`augloop predict`: a finished run's or ensemble's labels and probabilities for a file of texts."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from augloop.console import console, engine, err_console, fail
from core.inputs import MAX_ID


def predict_file(
    model_id: Annotated[
        int, typer.Argument(help="A finished run's or ensemble's id (augloop runs list)", min=1, max=MAX_ID)
    ],
    input_path: Annotated[
        Path,
        typer.Argument(metavar="INPUT", help="The texts: .csv/.tsv (a column), .jsonl (a field), .txt (a line each)"),
    ],
    output_arg: Annotated[
        str,
        typer.Option("--output", "-o", metavar="FILE", help="File to write (.jsonl or .csv); - for standard output"),
    ] = "-",
    text_col: Annotated[str, typer.Option(help="The CSV column or JSONL field holding the text")] = "text",
    id_col: Annotated[
        str | None, typer.Option(help="A CSV column or JSONL field carried to the output beside each prediction")
    ] = None,
    format: Annotated[
        str | None, typer.Option(help="jsonl or csv (default: by the output's name, jsonl on standard output)")
    ] = None,
) -> None:
    """Predict every text of a file with a finished run, TF-IDF member or ensemble: a label per task (the model's
    decision rule, as the API's predict answers) and a probability per class, in requests of
    AUGLOOP_TRAINER_PREDICT_MAX_TEXTS texts, with a progress bar. The output is written whole or not at all."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from core.settings import get_settings
    from db.session import session_scope
    from services.datasets import checked_output_path
    from services.prediction_files import WRITE_FORMATS, predict_rows, read_texts, write_predictions

    if not input_path.is_file():
        fail(f"{input_path} is not a file")
    to_stdout = output_arg == "-"
    if not to_stdout and not output_arg:
        fail("--output names no file; give a path, or - for standard output")
    output = None if to_stdout else Path(output_arg)
    fmt = format or ("csv" if output is not None and output.suffix.lower() == ".csv" else "jsonl")
    if fmt not in WRITE_FORMATS:
        fail(f"--format must be one of {', '.join(WRITE_FORMATS)}; got {fmt!r}")
    if output is not None and output.suffix.lower() not in (".csv", ".jsonl", ".ndjson") and format is None:
        fail(f"cannot tell the output's format from {output.name}: name a .jsonl or .csv file, or give --format")
    if output is not None:
        output = checked_output_path(output, "the predictions")
        if output == input_path.resolve():
            fail("--output is the input file: write the predictions elsewhere")
    if to_stdout and sys.stdout is None:
        fail("standard output is closed; give -o a file")

    rows = read_texts(input_path, text_col, id_col)
    settings = get_settings()
    columns = (TextColumn("predicting", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar, session_scope(engine()) as session:
        task = bar.add_task("texts", total=len(rows))
        predicted = predict_rows(session, model_id, rows, settings, None, lambda done: bar.update(task, completed=done))
        if output is None:
            written = write_predictions(sys.stdout, fmt, predicted, with_ids=id_col is not None)
        else:  # into a temporary file beside it, renamed over it once every row is written
            output.parent.mkdir(parents=True, exist_ok=True)  # the data directory's exports/, made on first use
            fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                    written = write_predictions(out, fmt, predicted, with_ids=id_col is not None)
                with contextlib.suppress(FileNotFoundError):  # a file replaced keeps its bits (a team's 0644)
                    os.chmod(tmp_name, stat.S_IMODE(output.stat().st_mode) & 0o777)
                os.replace(tmp_name, output)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
    where = "standard output" if output is None else str(output)
    (err_console if output is None else console).print(
        f"predicted {written:,} texts with model {model_id}; wrote them to {where}", highlight=False
    )
