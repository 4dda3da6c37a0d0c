"""`augloop report impact --wait` while a worker runs the jobs, `augloop report show`, and bad input."""

from __future__ import annotations

import threading

from typer.testing import CliRunner

from augloop.cli import app
from tests.test_impact_report import dataset_with_variants
from tests.trainer_fixtures import tiny_encoder  # noqa: F401 (fixture)

FAST = ["epochs=1", "max_length=32", "batch_size=8", "grad_accum=1", "head_hidden=32", "num_threads=1"]


def test_report_impact_waits_for_a_worker_then_prints(engine, tiny_encoder: str) -> None:
    from workers.main import Worker

    name, _ = dataset_with_variants(engine)
    worker = Worker(engine, kinds=["train"], poll_seconds=0.05, lease_seconds=30)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        args = ["report", "impact", name, "--seeds", "3,4", "--methods", "wordnet", "--wait", "--poll", "0.1"]
        for item in [f"encoder={tiny_encoder}", *FAST]:
            args += ["--set", item]
        result = CliRunner(env={"COLUMNS": "200"}).invoke(app, args)
    finally:
        worker.stop_requested.set()
        thread.join(timeout=60)
    assert result.exit_code == 0, result.output
    out = result.output
    # FAST leaves the LR to the plan: every arm's seeds share one lr_select job (the training worker takes those
    # too), which queues their train jobs; the TF-IDF members get theirs at once
    assert "queued 4 jobs (originals, tfidf:originals, all_approved, tfidf:all_approved, without:wordnet" in out
    assert "impact report 1: succeeded (9/9 runs ended)" in out
    assert "partisan" in out and "all_approved" in out and "contribution" in out
    assert "ensemble:all_approved" in out

    shown = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["report", "show", "1"])
    assert shown.exit_code == 0 and "succeeded (9/9 runs ended)" in shown.output
    assert "dataset changed while" not in shown.output  # nothing changed between the arms

    # A report whose arms trained on data that changed between them says so (services/impact.training_sets).
    from db.models import ImpactReport
    from db.session import session_scope

    with session_scope(engine) as s:
        report = s.get_one(ImpactReport, 1)
        sets = {**report.result["training_sets"], "consistent": False, "warning": "the dataset changed while [x]"}
        report.result = {**report.result, "training_sets": sets}
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["report", "show", "1"])
    assert "the dataset changed while [x]" in shown.output


def test_report_cli_bad_input(engine) -> None:
    name, _ = dataset_with_variants(engine)
    runner = CliRunner()
    for args in (
        ["report", "impact", "nope"],
        ["report", "impact", name, "--seeds", "a,b"],
        ["report", "impact", name, "--seeds", "1,1"],
        ["report", "impact", name, "--methods", "nope"],
        ["report", "impact", name, "--set", "variants=all"],
        ["report", "impact", name, "--set", "lr=nan"],
        ["report", "impact", name, "--set", "label_smoothing=.inf"],
        ["report", "show", "99"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "error" in result.output


def test_a_seed_out_of_range_is_named_as_given(engine) -> None:
    """`--seeds -1` is refused naming the seeds, in `report impact` and in `train` alike: it named `config.seed`, a
    key nobody gave."""
    name, _ = dataset_with_variants(engine)
    runner = CliRunner()
    for args in (
        ["report", "impact", name, "--seeds", "1,-1"],
        ["report", "impact", name, "--seeds", "4294967296"],
        ["train", name, "--seeds", "-1", "--queue"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "seeds must be from 0 to 4294967295" in result.output, result.output
        assert "config.seed" not in result.output
    from db.models import ImpactReport, TrainingRun
    from db.session import session_scope

    with session_scope(engine) as s:  # nothing half-written
        assert s.query(ImpactReport).count() == 0 and s.query(TrainingRun).count() == 0
