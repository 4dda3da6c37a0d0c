"""`augloop train / ensemble / runs` in-process on a tiny encoder, and their exit codes on bad input."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from augloop.cli import app
from tests.trainer_fixtures import import_small, tiny_encoder  # noqa: F401 (fixture)

FAST = [
    "--epochs",
    "2",
    "--max-length",
    "32",
    "--set",
    "batch_size=8",
    "--set",
    "grad_accum=1",
    "--set",
    "head_hidden=32",
    "--set",
    "lr=1e-3",
    "--set",
    "num_threads=1",
]


def test_train_seeds_then_ensemble_and_show(engine, tiny_encoder: str) -> None:
    name = import_small(engine, n_train=30, n_val=12, n_test=12, n_unlabelled=0)
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(
        app, ["train", name, "--encoder", tiny_encoder, "--seeds", "7,8", *FAST, "--set", "soup_size=2"]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "run 1 test: overall macro-F1" in out and "run 2 test" in out
    assert "partisan" in out and "mobilization" in out  # per-class rows of both tasks
    # the TF-IDF member (run 3) trains on the same data, then joins the ensemble with weights fitted on val
    assert "run 3 (TF-IDF member) finished" in out and "run 3 test" in out
    assert "ensemble 4 of runs [1, 2, 3] (weights fitted on val" in out and "ensemble 4 test" in out
    assert "run 3 (tfidf, weight" in out and "decision bias " in out and "message " in out

    from db.models import Job, TrainingRun
    from db.session import session_scope

    with session_scope(engine) as s:  # the member's job ended 1 of 1 done, not 0 of 1
        member_job = s.get_one(Job, s.get_one(TrainingRun, 3).job_id)
        assert (member_job.progress_done, member_job.progress_total) == (1, 1)
    listed = runner.invoke(app, ["runs", "list", "--dataset", name])
    assert listed.exit_code == 0 and "ensemble" in listed.output and "succeeded" in listed.output
    narrow = CliRunner(env={"COLUMNS": "60"}).invoke(app, ["runs", "list", "--dataset", name])
    assert "…" not in narrow.output  # a narrow terminal or a pipe folds a cell rather than cutting it
    as_rows = json.loads(runner.invoke(app, ["runs", "list", "--dataset", name, "--json"]).output)
    assert [r["id"] for r in as_rows] == [4, 3, 2, 1] and as_rows[0]["kind"] == "ensemble"
    shown = runner.invoke(app, ["runs", "show", "1"])
    assert shown.exit_code == 0 and "confusion" in shown.output and "epoch 2" in shown.output
    assert "plan: 8 of 8 steps made, batch 8 × 1" in shown.output  # 30 texts / 8 → 4 steps × 2 epochs
    # two epochs: the run ended with a soup of both, or kept its best epoch's weights, and says which
    as_json = runner.invoke(app, ["runs", "show", "1", "--json"])
    assert as_json.exit_code == 0
    summary = json.loads(as_json.output)["metrics"]["soup"]["summary"]
    assert summary.startswith("weights: ") and summary in shown.output and summary in out


def test_the_decision_rule_printed_says_what_was_kept_and_why_not() -> None:
    """A kept α shows its held-out gain; a rule val fitted but cross-validation did not confirm shows as the argmax
    with the gain it lacked (within its standard error, or none); a run stored before the gate shows its α."""
    from augloop.cli_runs import rule_text

    base = {"log_prior": [0.0, 0.0], "val_macro_f1_before": 0.5, "cv_macro_f1_before": 0.5}
    kept = {**base, "alpha": -0.8, "alpha_on_val": -0.8, "cv_macro_f1_after": 0.53, "cv_gain_se": 0.011}
    assert rule_text("bias", kept) == "bias α=-0.8 (held out +3.0 ± 1.1)"
    noisy = {**base, "alpha": 0.0, "alpha_on_val": -1.0, "cv_macro_f1_after": 0.512, "cv_gain_se": 0.015}
    assert rule_text("bias", noisy) == "bias argmax (α=-1 on val, held out +1.2 ± 1.5: within its noise)"
    worse = {**base, "alpha": 0.0, "alpha_on_val": 0.4, "cv_macro_f1_after": 0.49, "cv_gain_se": None}
    assert rule_text("message", worse) == "message argmax (α=0.4 on val, held out -1.0: no gain)"
    assert rule_text("bias", {**base, "alpha": 0.0, "alpha_on_val": 0.0, "cv_macro_f1_after": 0.5}) == "bias argmax"
    assert rule_text("bias", {"alpha": 0.3, "log_prior": [0.0, 0.0]}) == "bias α=0.3"  # stored before the gate


def test_bad_input_exits_with_code_2(engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    runner = CliRunner(env={"COLUMNS": "200"})
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("encoder: caf\xe9\n".encode("latin-1"))
    twice = tmp_path / "twice.yaml"
    twice.write_text("epochs: 1\nepochs: 2\n")  # trained 2 epochs in silence
    for args, message in [
        (["train", "nope"], "not found"),
        (["train", name, "--config", str(latin1)], "not UTF-8 text"),
        (["train", name, "--config", str(twice)], "the key 'epochs' is given twice"),
        (["train", name, "--seeds", "1,,2"], "--seeds"),  # a typo, not two seeds
        (["train", name, "--seeds", " "], "--seeds"),
        (["train", name, "--seeds", ""], "--seeds"),  # an unset shell variable: trained the default seed
        (["train", name, "--queue", "--set", "epochs=abc", "--set", "epochs=3"], "--set epochs is given twice"),
        # the seeds won and config.seed went unread
        (["train", name, "--queue", "--seeds", "7", "--set", "seed=5"], "config.seed (5) and seeds [7]"),
        (["train", name, "--seeds", "7", "--set", "seed=5"], "config.seed (5) and seeds [7]"),
        (["report", "impact", name, "--seeds", "1,,2"], "--seeds"),
        (["runs", "list", "--limit", "9223372036854775808"], "less than or equal to 9223372036854775807"),
        (
            ["augment", "run", name, "--no-plan", "--sample-id", "9223372036854775808"],
            "less than or equal to 9223372036854775807",
        ),
        # a flag and a --set of the same key: the flag won, and the --set's bad value went unread
        (["train", name, "--epochs", "1", "--set", "epochs=abc"], "--epochs and --set epochs=… both give epochs"),
        (["train", name, "--max-length", "32", "--set", "max_length=64"], "give it once"),
        # every task trained at weight 0: the run learnt nothing and was stored as a finished run
        (["train", name, "--queue", "--set", "task_weights={bias: 0, message: 0}"], "would learn nothing"),
        (["train", name, "--set", "tasks=[bias]", "--set", "task_weights={bias: 0}"], "would learn nothing"),
        # ids past 64 bits, named ("a number is out of range: Python int too large to convert to SQLite INTEGER")
        (["ensemble", "1", "9223372036854775808"], "run ids go from 1 to 9223372036854775807"),
        (["runs", "show", "9223372036854775808"], "less than or equal to 9223372036854775807"),
        (["token", "revoke", "9223372036854775808"], "less than or equal to 9223372036854775807"),
        (["report", "show", "9223372036854775808"], "less than or equal to 9223372036854775807"),
        (["train", name, "--set", "pooling=max"], "config.pooling"),
        (["train", name, "--set", "epochs"], "key=value"),
        (["train", name, "--seeds", "a,b"], "--seeds"),
        (["train", name, "--config", str(tmp_path / "missing.yaml")], "config file not found"),
        # a folder read "config file not found", though it is there
        (["train", name, "--config", str(tmp_path)], "names a folder, not a YAML file"),
        (["train", name, "--encoder", str(tmp_path / "no-model"), "--epochs", "1"], "cannot load encoder"),
        (["ensemble", "1"], "at least two"),
        (["ensemble", "x", "y"], "integers"),
        (["runs", "show", "42"], "not found"),
        (["train", name, "--set", "lr=nan"], "config.lr"),
        # past 2**63 SQLite cannot store it: the run was queued, or failed with an OverflowError
        (["train", name, "--epochs", "99999999999999999999", "--queue"], "config.epochs"),
        (["train", name, "--set", "patience=9223372036854775807"], "config.patience"),
        (["train", name, "--set", "lr=1e309"], "config.lr"),
        (["train", name, "--set", "label_smoothing=.inf"], "config.label_smoothing"),
        (["train", name, "--set", "label_smoothing=-.inf"], "config.label_smoothing"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)


def test_a_budget_too_short_to_train_is_refused_before_a_run_is_recorded(engine, tiny_encoder: str) -> None:
    """In-process, the budget was checked only once the run had been recorded: exit 2, and a failed run in
    `runs list` that nothing had trained (a queued request was refused before any)."""
    from sqlalchemy import func, select

    from db.models import TrainingRun
    from db.session import session_scope

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["train", name, "--encoder", tiny_encoder, "--budget-minutes", "0.0001"]
    )
    assert result.exit_code == 2 and "budget_minutes" in result.output, result.output
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(TrainingRun)) == 0


def test_queue_enqueues_the_lr_selection_or_a_train_job_per_seed(engine, settings, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import func, select

    from db.models import Job, TrainingRun
    from db.session import session_scope

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    runner = CliRunner(env={"COLUMNS": "200"})
    # The default plans the LR: the seeds share one lr_select job (it queues their train jobs when done);
    # the TF-IDF member needs no LR and gets its train job at once.
    result = runner.invoke(app, ["train", name, "--seeds", "1,2", "--queue", "--budget-minutes", "5"])
    assert result.exit_code == 0, result.output
    with session_scope(engine) as s:
        (select_job,) = s.scalars(select(Job).where(Job.kind == "lr_select"))
        (member_job,) = s.scalars(select(Job).where(Job.kind == "train"))
        runs = list(s.scalars(select(TrainingRun).order_by(TrainingRun.id)))
        assert [r.kind for r in runs] == ["single", "single", "tfidf"]
        assert [r.job_id for r in runs] == [select_job.id, select_job.id, member_job.id]
        assert select_job.params["run_ids"] == [runs[0].id, runs[1].id]
        assert member_job.params["run_id"] == runs[2].id
        assert runs[0].config["budget_minutes"] == 5 and runs[0].lr_selection["status"] == "queued"
        assert all(r.status == "queued" for r in runs)
        first = runs[0].id
    # A queued run has no metrics yet: `runs show` says so, not "0 training samples" and "no labelled samples".
    shown = runner.invoke(app, ["runs", "show", str(first)])
    assert shown.exit_code == 0, shown.output
    assert "queued" in shown.output and "val and test metrics: once the run has finished" in shown.output
    assert "no labelled samples" not in shown.output and "0 training samples" not in shown.output
    # A learning rate given: nothing to select, a train job per seed.
    result = runner.invoke(app, ["train", name, "--seeds", "3,4", "--queue", "--no-classical", "--set", "lr=3e-5"])
    assert result.exit_code == 0, result.output
    with session_scope(engine) as s:
        runs = list(s.scalars(select(TrainingRun).where(TrainingRun.id > 3)))
        jobs = {j.id: j for j in s.scalars(select(Job).where(Job.kind == "train", Job.id > member_job.id))}
        assert len(runs) == 2 and sorted(r.job_id for r in runs) == sorted(jobs)
        assert {j.params["run_id"] for j in jobs.values()} == {r.id for r in runs}
    # queued with a directory this machine lacks: a worker elsewhere may have it, so queued and said
    result = runner.invoke(app, ["train", name, "--queue", "--no-classical", "--encoder", "/nonexistent/enc"])
    assert result.exit_code == 0, result.output
    assert "the encoder '/nonexistent/enc' is no directory on this machine" in " ".join(result.output.split())
    # nor a folder here that the worker refuses (no config.json, no weights): said with what it lacks, not queued
    # in silence (only a missing folder was said)
    (tmp_path / "bert-new").mkdir()
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    for folder, lacks in (
        ("bert-new", "a directory without config.json"),
        ("config-only", "a directory without weights"),
    ):
        result = runner.invoke(app, ["train", name, "--queue", "--no-classical", "--encoder", str(tmp_path / folder)])
        assert result.exit_code == 0, result.output
        said = " ".join(result.output.split())
        assert f"the encoder '{tmp_path / folder}' is {lacks}" in said and "on this machine" in said, said
    # in this process: it loads the encoder, so one it cannot find exits 2 before any run is recorded (a failed
    # run and a cancelled TF-IDF member were left behind)
    with session_scope(engine) as s:
        recorded = s.scalar(select(func.count()).select_from(TrainingRun))
    # nor a folder without config.json (transformers read an empty ".../bert-new" as BERT from its name: a failed
    # run was recorded) or without weights
    folders = [str(tmp_path / "bert-new"), str(tmp_path / "config-only")]
    for missing in ("/nonexistent/enc", "no-such-org/no-such-encoder", *folders):
        result = runner.invoke(app, ["train", name, "--encoder", missing])
        assert result.exit_code == 2 and f"cannot load encoder {missing!r}" in result.output, result.output
    # one message in a terminal too, not the trainer's log line above it (Python's last-resort handler wrote it)
    from tests.cli_process import cli_env, run_augloop

    r = run_augloop("train", name, "--encoder", "/nonexistent/enc", env=cli_env(settings), timeout=120)
    assert r.returncode == 2 and "cannot load encoder" in r.stderr and "no such directory" not in r.stderr, r.stderr
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # as here: on a GPU host "cuda" is there
    for device in ("cuda", "cuda:999"):  # nor a device this machine lacks (a failed run was left behind)
        result = runner.invoke(app, ["train", name, "--set", f"device={device}"])
        assert result.exit_code == 2 and f"config.device is {device!r}" in result.output, result.output
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(TrainingRun)) == recorded


def test_train_and_runs_show_say_what_was_left_out_of_train(engine, tiny_encoder: str) -> None:
    """A reviewed text close to a test text is left out of training (services.training_data): the operator is
    told when the run finishes and by `runs show`, not only by a progress line that the bar then erases."""
    from sqlalchemy import select

    from augloop.cli_runs import rule_text
    from db.models import Sample, TrainingRun
    from db.session import session_scope
    from tests.trainer_fixtures import add_variant

    name = import_small(engine, n_train=30, n_val=12, n_test=12, n_unlabelled=0)
    with session_scope(engine) as s:
        test_text = s.scalars(select(Sample.text).where(Sample.split == "test").order_by(Sample.id)).first()
    leaky = add_variant(engine, name, "train", "approved", f"RT @someone: {test_text} so true")
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(
        app, ["train", name, "--encoder", tiny_encoder, "--seeds", "7", "--no-classical", "--epochs", "1", *FAST[2:]]
    )
    assert result.exit_code == 0, result.output
    line = f"left out of train: 1 reviewed texts, near-duplicates of val/test texts (e.g. sample {leaky})"
    assert line in result.output
    shown = runner.invoke(app, ["runs", "show", "1"])
    assert shown.exit_code == 0 and line in shown.output, shown.output
    # the decision rule the test metrics apply, per task (README: "The CLI prints each task's rule"); a single
    # run's was printed for ensembles only
    with session_scope(engine) as s:
        rules = s.get(TrainingRun, 1).metrics["decision"]
    said = "decision: " + ", ".join(rule_text(task, rule) for task, rule in rules.items())
    assert set(rules) == {"bias", "message"} and said in result.output and said in shown.output
    # a failed run has no metrics: said so, not "no labelled samples" as if the data lacked them
    with session_scope(engine) as s:
        failed = s.get(TrainingRun, 1)
        failed.status, failed.metrics, failed.error = "failed", {}, "cannot load encoder"
    shown = runner.invoke(app, ["runs", "show", "1"])
    assert "val and test metrics: none, the run failed" in shown.output and "no labelled" not in shown.output


def test_train_in_process_says_the_recipe_its_seeds_share(engine, tiny_encoder: str) -> None:
    """The LR selection decides the recipe once for the request's seeds: `train` and `runs show` say which."""
    name = import_small(engine, n_train=30, n_val=12, n_test=12, n_unlabelled=0)
    runner = CliRunner(env={"COLUMNS": "200"})
    args = ["train", name, "--encoder", tiny_encoder, "--seeds", "1,2", "--no-classical", "--epochs", "2"]
    keys = ("max_length=32", "batch_size=8", "head_hidden=32", "num_threads=1", "lr_search=on", "lr_trials=2")
    result = runner.invoke(app, [*args, *(a for key in keys for a in ("--set", key))])  # LR and recipe planned
    assert result.exit_code == 0, result.output
    line = "one recipe for the request's 2 run(s)"
    assert line in result.output and "grad_accum 1" in result.output  # 30 texts: accumulation drops to 1
    for run_id in ("1", "2"):
        shown = runner.invoke(app, ["runs", "show", run_id])
        assert shown.exit_code == 0 and line in shown.output and "batch 8 × 1" in shown.output


def test_runs_show_names_the_classes_a_split_lacks(engine, tiny_encoder: str) -> None:
    """A test split without a rare class scores a macro-F1 that leaves the class out (scikit-learn's average over
    the classes present): `train` and `runs show` name the classes no test text holds, per task, and the JSON
    carries them; a task whose test split holds every class gets no such line."""
    import csv
    import io

    from tests.trainer_fixtures import small_csv

    name = import_small(engine, n_train=30, n_val=12, n_test=12, n_unlabelled=0)
    rows = [r for r in csv.DictReader(io.StringIO(small_csv(30, 12, 12, 0).decode())) if r["split"] == "test"]
    labels = {"bias": ["neutral", "partisan"], "message": []}
    runner = CliRunner(env={"COLUMNS": "400"})
    result = runner.invoke(
        app, ["train", name, "--encoder", tiny_encoder, "--seeds", "7", "--no-classical", "--epochs", "1", *FAST[2:]]
    )
    assert result.exit_code == 0, result.output
    as_json = json.loads(runner.invoke(app, ["runs", "show", "1", "--json"]).output)
    tasks = as_json["metrics"]["test"]["tasks"]
    labels["message"] = list(tasks["message"]["per_class"])
    assert sorted(tasks["bias"]["per_class"]) == labels["bias"]
    for task, names in labels.items():
        held = {r[task] for r in rows}
        assert tasks[task]["classes_without_support"] == [c for c in names if c not in held]
    missing = tasks["message"]["classes_without_support"]
    assert missing and not tasks["bias"]["classes_without_support"]  # 12 test texts lack some of 9 classes
    shown = runner.invoke(app, ["runs", "show", "1"])
    for out in (result.output, shown.output):
        flat = " ".join(out.split())
        assert f"message: no text of this split is labelled {missing[0]!r}" in flat, out
        assert f"({len(missing)} of 9 classes): its macro-F1 cannot tell" in flat
        assert "bias: no text" not in flat


def test_runs_print_their_names_as_text_not_markup(engine, tiny_encoder: str) -> None:
    """A run's name is a lead's text (the API takes it): `runs list` and `runs show` print it as it is, where
    rich read "[/]" as a closing tag and failed the command, and "[link=…]" as a link in the operator's terminal."""
    from db.session import session_scope
    from services.training import start_training

    name = import_small(engine, n_train=30, n_val=12, n_test=12, n_unlabelled=0)
    with session_scope(engine) as s:
        runs, _jobs = start_training(
            s, name, {"encoder": tiny_encoder, "epochs": 1}, [7], name="[/] [link=https://x.example]y[/link]", user=None
        )
        run_id = runs[0].id
    runner = CliRunner(env={"COLUMNS": "250"})
    listed = runner.invoke(app, ["runs", "list", "--dataset", name])
    assert listed.exit_code == 0, listed.output
    assert "[/] [link=https://x.example]y[/link]" in listed.output
    shown = runner.invoke(app, ["runs", "show", str(run_id)])
    assert shown.exit_code == 0, shown.output
    assert "[/] [link=https://x.example]y[/link]" in shown.output
