"""Through the API and a worker: learning-rate selection as a queued job (every trial recorded with the runs,
the chosen scale in their configs), the TF-IDF member in an ensemble, decision rules applied to predictions;
and LR selection in the trainer alone, on the tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.trainer_fixtures import fast_config, import_small, synthetic_split, tiny_encoder, tiny_keys  # noqa: F401


def fast(encoder: str, **extra: Any) -> dict[str, Any]:
    return tiny_keys(encoder, epochs=2, **extra)


def drain(engine: Any) -> Any:
    from workers.main import Worker

    return Worker(engine, kinds=["train"], poll_seconds=0.05, lease_seconds=30).run(burst=True)


def test_lr_selection_records_every_trial_and_picks_the_best_on_val(tiny_encoder: str) -> None:
    from trainer.lr_search import select_learning_rate

    data = synthetic_split(48, 24, 12)
    config = fast_config(tiny_encoder, lr=None, grad_accum=None, epochs=2, lr_search="on", lr_trials=4)
    events: list[dict[str, Any]] = []
    seen: list[int] = []
    selection = select_learning_rate(
        config, data, n_runs=2, progress=events.append, on_trial=lambda s: seen.append(len(s.trials))
    )
    assert selection.status == "done" and seen == [1, 2, 3, 4]
    scales = [t["scale"] for t in selection.trials]
    assert scales[:3] == [1.0, 2.0, 0.5] and len(set(scales)) == 4
    best = max(selection.trials, key=lambda t: t["val_macro_f1"])
    assert selection.scale == best["scale"]
    # each trial trains the run's plan at its scale × the LR the rules give for the trial's length
    base = selection.trials[0]["lr"]
    for trial in selection.trials:
        assert trial["lr"] == pytest.approx(base * trial["scale"]) and trial["steps"] == selection.trial_steps
    assert [e["trial"] for e in events if e["event"] == "trial"] == [1, 2, 3, 4]
    # a given LR needs no selection; `auto` skips a run too short for informative trials
    assert select_learning_rate(config.with_overrides({"lr": 1e-3}), data).status == "skipped"
    auto = select_learning_rate(config.with_overrides({"lr_search": "auto"}), data, n_runs=1)
    # without a budget it is the runs' length that leaves the trials too few steps, and it says so (it blamed
    # "the budget" that no one had set)
    assert auto.status == "skipped" and auto.reason.startswith("the runs are too short for it: ") and auto.trials == []
    budgeted = select_learning_rate(config.with_overrides({"lr_search": "auto", "budget_minutes": 0.01}), data)
    assert budgeted.status == "skipped" and budgeted.reason.startswith("the budget does not allow it: ")


def test_an_lr_scale_the_config_sets_is_kept_and_the_trials_multiply_it(tiny_encoder: str) -> None:
    """`--set lr_scale=3` trains at 3 × the planned LR: a skipped selection keeps it (it came back as 1.0, the
    runs trained at a third of the LR asked for), and the trials multiply it."""
    from trainer.lr_search import select_learning_rate

    data = synthetic_split(48, 24, 12)
    config = fast_config(tiny_encoder, lr=None, grad_accum=None, epochs=2, lr_search="on", lr_trials=3)
    plain = select_learning_rate(config, data)
    tripled = select_learning_rate(config.with_overrides({"lr_scale": 3.0}), data)
    assert [t["lr"] for t in tripled.trials] == pytest.approx([3 * t["lr"] for t in plain.trials])
    chosen = max(tripled.trials, key=lambda t: (t["val_macro_f1"], -abs(np.log(t["scale"]))))
    assert tripled.scale == pytest.approx(3.0 * chosen["scale"])
    assert tripled.overrides()["lr_scale"] == pytest.approx(3.0 * chosen["scale"])
    skipped = select_learning_rate(config.with_overrides({"lr_scale": 3.0, "lr_search": "auto"}), data)
    assert skipped.status == "skipped" and skipped.overrides()["lr_scale"] == 3.0
    # decided: a run's config used again trains that scale, no search multiplying it once more
    assert tripled.overrides()["lr_search"] == "off" and "lr_search" not in skipped.overrides()
    # multiplying stays within lr_scale's bound (60 x 2 was refused after the trials had run)
    high = select_learning_rate(config.with_overrides({"lr_scale": 60.0}), data)
    assert high.status == "done" and max(t["lr"] for t in high.trials) == pytest.approx(100 * plain.trials[0]["lr"])


def test_lr_trials_never_leave_a_run_more_budget_than_it_asked_for(tiny_encoder: str) -> None:
    """The trials' time comes out of each run's budget, leaving it at least half a minute; but a budget of
    0.25 minutes came back as 0.5 (`augloop train --budget-minutes 0.25` trained for 0.5 minutes)."""
    from trainer.lr_search import select_learning_rate

    config = fast_config(tiny_encoder, lr=None, grad_accum=None, lr_search="on", lr_trials=3, budget_minutes=0.25)
    selection = select_learning_rate(config, synthetic_split(48, 24, 12), n_runs=1)
    assert selection.status == "done" and selection.budget_minutes_after is not None
    assert 0 < selection.budget_minutes_after <= 0.25


def test_lr_selection_as_a_queued_job_then_the_seeds_train_with_its_choice(lead, engine, tiny_encoder: str) -> None:
    name = import_small(engine, n_train=40, n_val=24, n_test=16, n_unlabelled=0)
    created = lead.post(
        "/api/v1/training-runs",
        json={"dataset": name, "seeds": [1, 2], "config": fast(tiny_encoder, lr_search="on", lr_trials=3)},
    )
    assert created.status_code == 202, created.text
    body = created.json()
    assert [j["kind"] for j in body["jobs"]] == ["lr_select"]
    run_ids = [r["id"] for r in body["runs"]]
    assert all(r["lr_selection"]["status"] == "queued" for r in body["runs"])

    stats = drain(engine)  # a training worker takes the lr_select job too, then the train jobs it queued
    assert stats.succeeded == 3, stats
    runs = [lead.get(f"/api/v1/training-runs/{i}").json() for i in run_ids]
    selection = runs[0]["lr_selection_detail"]
    assert selection["status"] == "done" and len(selection["trials"]) == 3
    assert {t["scale"] for t in selection["trials"]} == {1.0, 2.0, 0.5}
    assert all(t["val_macro_f1"] is not None and t["steps"] > 0 for t in selection["trials"])
    assert runs[1]["lr_selection_detail"]["trials"] == selection["trials"]  # recorded with every seed
    assert runs[0]["lr_selection"]["scale"] == selection["scale"]
    for run in runs:
        assert run["status"] == "succeeded" and run["config"]["lr_scale"] == selection["scale"]
        assert run["job_id"] != body["jobs"][0]["id"]  # now their own train job
        plan = run["metrics"]["plan"]
        # the run's plan applies the chosen scale to the LR the rules give
        assert plan["lr"] == pytest.approx(
            selection["trials"][0]["lr"] / 1.0 * selection["scale"] * plan_ratio(plan, selection["trial_steps"])
        )
    jobs = lead.get("/api/v1/jobs", params={"kind": "lr_select"}).json()["items"]
    assert jobs[0]["status"] == "succeeded" and jobs[0]["result"]["scale"] == selection["scale"]
    assert jobs[0]["progress_done"] == jobs[0]["progress_total"] == 3
    assert jobs[0]["progress_info"]["phase"].startswith("done: best val macro-F1")


def test_a_skipped_lr_selection_job_reads_done_and_says_why(lead, engine, tiny_encoder: str) -> None:
    """A selection that skips its trials (here `auto` on a run too short for informative ones) succeeded showing
    0 of lr_trials done, its phase still "measuring throughput"."""
    from workers.main import Worker

    name = import_small(engine, n_train=40, n_val=24, n_test=16, n_unlabelled=0)
    config = {**fast(tiny_encoder, lr_search="auto", lr_trials=3), "lr": None}
    body = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [1], "config": config}).json()
    assert [j["kind"] for j in body["jobs"]] == ["lr_select"]
    stats = Worker(engine, kinds=["lr_select"], poll_seconds=0.05, lease_seconds=30).run(burst=True)
    assert stats.succeeded == 1, stats
    job = lead.get(f"/api/v1/jobs/{body['jobs'][0]['id']}").json()
    assert job["status"] == "succeeded" and job["result"]["status"] == "skipped"
    assert job["progress_done"] == job["progress_total"] == 3
    assert job["progress_info"]["lr_selection"] == "skipped"
    assert job["progress_info"]["phase"] == f"skipped: {job['result']['reason']}"


def test_a_worker_shutting_down_gives_an_lr_selection_back_to_the_queue(lead, engine, tiny_encoder: str) -> None:
    """SIGTERM during the trials: the selection stops at the next optimizer step and its job goes back to the
    queue with its attempt (it ran every trial to the end first: 15 minutes for 3 seeds of 20, past compose's
    grace period, then a SIGKILL cost an attempt); the next worker selects and trains."""
    from db.models import Job
    from db.session import session_scope
    from workers.main import Worker

    name = import_small(engine, n_train=40, n_val=24, n_test=16, n_unlabelled=0)
    created = lead.post(
        "/api/v1/training-runs",
        json={"dataset": name, "seeds": [1], "config": fast(tiny_encoder, lr_search="on", lr_trials=3)},
    ).json()
    ((job,), (run_id,)) = created["jobs"], [r["id"] for r in created["runs"]]
    worker = Worker(engine, kinds=["train"], poll_seconds=0.05, lease_seconds=30)
    original = worker.stop_requested.is_set
    seen: list[int] = []

    def shutting_down() -> bool:  # SIGTERM arrives once the trials have begun
        seen.append(1)
        if len(seen) == 3:
            worker.stop_requested.set()
        return original()

    worker.stop_requested.is_set = shutting_down  # type: ignore[method-assign]
    worker.run(burst=True)
    with session_scope(engine) as s:
        held = s.get_one(Job, job["id"])
        assert (held.status, held.attempts) == ("queued", 0), (held.status, held.attempts, held.last_error)
    run = lead.get(f"/api/v1/training-runs/{run_id}").json()
    assert run["status"] == "queued" and "stopped in learning-rate selection" in (run["error"] or ""), run
    stats = drain(engine)
    assert stats.succeeded == 2, stats
    run = lead.get(f"/api/v1/training-runs/{run_id}").json()
    assert run["status"] == "succeeded" and len(run["lr_selection_detail"]["trials"]) == 3


def test_an_lr_selection_ends_with_its_job(lead, engine, tiny_encoder: str) -> None:
    """A run whose LR-selection job was cancelled, or failed, no longer shows a selection queued or running."""
    name = import_small(engine, n_train=40, n_val=24, n_test=16, n_unlabelled=0)

    def queue_runs(encoder: str) -> tuple[int, list[int]]:
        created = lead.post(
            "/api/v1/training-runs",
            json={"dataset": name, "seeds": [1], "config": fast(encoder, lr_search="on", lr_trials=3)},
        )
        assert created.status_code == 202, created.text
        return created.json()["jobs"][0]["id"], [r["id"] for r in created.json()["runs"]]

    job_id, (cancelled,) = queue_runs(tiny_encoder)
    assert lead.post(f"/api/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    run = lead.get(f"/api/v1/training-runs/{cancelled}").json()
    assert (run["status"], run["lr_selection"]["status"]) == ("cancelled", "cancelled")
    broken = tiny_encoder + "-missing"
    job_id, (failed,) = queue_runs(broken)
    drain(engine)
    run = lead.get(f"/api/v1/training-runs/{failed}").json()
    assert (run["status"], run["lr_selection"]["status"]) == ("failed", "failed"), run["lr_selection"]


def plan_ratio(plan: dict[str, Any], trial_steps: int) -> float:
    """The step factor of the run's plan over the trial's (trainer.plan.step_factor)."""
    from trainer.plan import step_factor

    return step_factor(plan["steps"]) / step_factor(trial_steps)


def test_a_cancelled_lr_selection_cancels_the_runs_waiting_for_it(lead, engine, tiny_encoder: str) -> None:
    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    body = lead.post(
        "/api/v1/training-runs", json={"dataset": name, "seeds": [1, 2], "config": fast(tiny_encoder)}
    ).json()
    (job,) = body["jobs"]
    assert lead.post(f"/api/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    statuses = [lead.get(f"/api/v1/training-runs/{r['id']}").json()["status"] for r in body["runs"]]
    assert statuses == ["cancelled", "cancelled"]


def test_tfidf_member_in_an_ensemble_and_decision_rules_in_predictions(lead, engine, tiny_encoder: str) -> None:
    name = import_small(engine, n_train=40, n_val=24, n_test=16, n_unlabelled=0)
    created = lead.post(
        "/api/v1/training-runs",
        json={"dataset": name, "seeds": [1], "classical": True, "config": fast(tiny_encoder, lr=1e-3)},
    ).json()
    assert [j["kind"] for j in created["jobs"]] == ["train", "train"]
    transformer_id, member_id = [r["id"] for r in created["runs"]]
    assert drain(engine).succeeded == 2
    member = lead.get(f"/api/v1/training-runs/{member_id}").json()
    assert member["kind"] == "tfidf" and member["status"] == "succeeded" and member["encoder"] == "tfidf_logreg"
    assert member["snapshot_size"] == 40 and set(member["metrics"]["chosen_c"]) == {"bias", "message"}
    member_job = lead.get(f"/api/v1/jobs/{created['jobs'][1]['id']}").json()  # its C search showed fold by fold
    assert member_job["progress_info"]["folds_done"] == member_job["progress_info"]["folds"] >= 2
    listed = lead.get("/api/v1/training-runs", params={"kind": "tfidf"}).json()
    assert [r["id"] for r in listed] == [member_id]

    # Each run stored its training-set digest when it finished: the ensemble request compares those instead of
    # reading and sorting every member's snapshot (seconds per million pairs). A run recorded before the digest
    # was stored (none) is digested in the request, once.
    from db.models import TrainingRun
    from db.session import session_scope
    from services.run_snapshots import pairs_digest, snapshot_pairs

    with session_scope(engine) as s:
        transformer, tfidf = s.get_one(TrainingRun, transformer_id), s.get_one(TrainingRun, member_id)
        assert transformer.snapshot_digest == pairs_digest(snapshot_pairs(transformer))
        assert tfidf.snapshot_digest == transformer.snapshot_digest  # both trained on the same 40 texts
        stored, snapshot_file = transformer.snapshot_digest, Path(transformer.snapshot_path or "")
        tfidf.snapshot_digest = None
    snapshot_file.rename(snapshot_file.with_suffix(".away"))  # the request must not need it

    ens = lead.post("/api/v1/ensembles", json={"run_ids": [transformer_id, member_id]})
    assert ens.status_code == 201, ens.text
    ens_body = ens.json()
    config = ens_body["config"]
    assert config["kinds"] == {str(transformer_id): "single", str(member_id): "tfidf"}
    assert config["same_snapshot"] is True
    with session_scope(engine) as s:
        assert s.get_one(TrainingRun, member_id).snapshot_digest == stored
    snapshot_file.with_suffix(".away").rename(snapshot_file)
    for task in ("bias", "message"):
        weights = config["task_weights"][task]
        assert sum(weights.values()) == pytest.approx(1.0) and all(w >= 0 for w in weights.values())
        assert set(config["decision"][task]) >= {"alpha", "log_prior"}
    assert ens_body["metrics"]["test"]["overall_macro_f1"] is not None

    # Predictions: the probabilities combined as fitted, the labels from the stored decision rule.
    texts = ["vote for me today", "read the new report on health care", "thank you veterans"]
    for model_id, rules in ((ens_body["id"], config["decision"]), (member_id, member["metrics"]["decision"])):
        out = lead.post(f"/api/v1/models/{model_id}/predict", json={"texts": texts})
        assert out.status_code == 200, out.text
        got = out.json()
        for i, labels in enumerate(got["labels"]):
            for task in ("bias", "message"):
                names = list(got["probabilities"][i][task])
                probs = np.array([got["probabilities"][i][task][n] for n in names])
                rule = rules[task]
                score = np.log(np.clip(probs, 1e-12, 1)) - rule["alpha"] * np.array(rule["log_prior"])
                assert labels[task] == names[int(score.argmax())]

    # A damaged saved model names its run (a member, not the ensemble) and the file, never the server's path:
    # a missing model.joblib or heads.safetensors was a 500 "could not read or write a file".
    with session_scope(engine) as s:
        folders = {r: Path(s.get_one(TrainingRun, r).artifact_dir or "") / "model" for r in (transformer_id, member_id)}
    for run_id, model_id, name, which in (
        (member_id, ens_body["id"], "model.joblib", f"run {member_id} (a member of ensemble {ens_body['id']})"),
        (transformer_id, transformer_id, "heads.safetensors", f"run {transformer_id}"),
        (transformer_id, transformer_id, "encoder/config.json", f"run {transformer_id}"),
        (transformer_id, transformer_id, "encoder/model.safetensors", f"run {transformer_id}"),
        (transformer_id, transformer_id, "encoder/tokenizer_config.json", f"run {transformer_id}"),
    ):
        saved = folders[run_id] / name
        saved.rename(saved.with_name("away"))
        out = lead.post(f"/api/v1/models/{model_id}/predict", json={"texts": texts})
        saved.with_name("away").rename(saved)
        assert out.status_code == 422 and out.json()["field"] == "model_id", out.text
        assert out.json()["detail"] == f"the saved model of {which} is incomplete (no {name}): train it again"
    assert lead.post(f"/api/v1/models/{ens_body['id']}/predict", json={"texts": texts}).status_code == 200
    # A file there but damaged: a 422 naming the run, not the server's path to it (garbage weights, a decision
    # rule that is not JSON, a model.json without its tasks were 500s)
    from trainer.predict import clear_cache

    for name, damage in (
        ("encoder/config.json", b"{not json"),
        ("heads.safetensors", b"garbage"),
        ("decision.json", b"{not json"),
        ("model.json", b"{}"),
    ):
        damaged = folders[transformer_id] / name
        if not damaged.exists():
            continue
        kept = damaged.read_bytes()
        damaged.write_bytes(damage)
        clear_cache()  # the model loaded above stays cached: the damage is seen when it loads again
        out = lead.post(f"/api/v1/models/{transformer_id}/predict", json={"texts": texts})
        damaged.write_bytes(kept)
        assert out.status_code == 422 and str(folders[transformer_id]) not in out.text, (name, out.text)
        assert (
            out.json()["detail"]
            == f"the saved model of run {transformer_id} cannot be loaded (a damaged file): train it again"
        ), name
    clear_cache()


def test_a_run_saves_its_decision_rule_and_serving_applies_it(tmp_path: Path, tiny_encoder: str) -> None:
    from trainer.decision import decide
    from trainer.predict import RunPredictor
    from trainer.train import save_artifacts, train_model

    data = synthetic_split(36, 12, 12)
    result = train_model(fast_config(tiny_encoder, epochs=1), data)
    assert set(result.decision) == {"color", "size"} and result.metrics["decision"] == result.decision
    test_dump = result.predictions["test"]["tasks"]["size"]
    assert test_dump["pred"] == decide({"size": np.asarray(test_dump["probs"])}, result.decision)["size"].tolist()
    save_artifacts(result, tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "model" / "decision.json").read_text())
    assert stored == json.loads(json.dumps(result.decision))
    # a rule that leans hard toward "huge" changes what serving predicts, exactly as the rule says
    stored["size"] = {"alpha": 2.0, "log_prior": [0.0, 0.0, -50.0]}
    (tmp_path / "run" / "model" / "decision.json").write_text(json.dumps(stored))
    predictor = RunPredictor(tmp_path / "run" / "model")
    probs = predictor.predict_proba([e.text for e in data.test])
    assert predictor.decide(probs)["size"].tolist() == [2] * len(data.test)
    assert predictor.decide(probs)["color"].tolist() == decide(probs, stored)["color"].tolist()


def test_a_budget_too_short_to_train_is_refused_when_asked_not_after_lr_trials(lead, engine, tmp_path) -> None:
    from db.models import Job, TrainingRun
    from db.session import session_scope

    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "hidden_size": 384}))
    body = {"dataset": name, "config": {"encoder": str(encoder), "budget_minutes": 0.0001}}
    for route in ("/api/v1/training-estimates", "/api/v1/training-runs"):
        r = lead.post(route, json=body)
        assert (r.status_code, r.json()["field"]) == (422, "config.budget_minutes"), (route, r.text)
    # an impact report's arms too (they failed one by one in the worker)
    r = lead.post(f"/api/v1/datasets/{name}/impact-reports", json={"seeds": [1], "config": body["config"]})
    assert (r.status_code, r.json()["field"]) == (422, "config.budget_minutes"), r.text
    with session_scope(engine) as s:
        assert s.query(Job).count() == 0 and s.query(TrainingRun).count() == 0


def finished_run(  # type: ignore[no-untyped-def]
    engine, dataset: str, config: dict[str, Any], samples_per_s: float, metrics: dict[str, Any] | None = None
) -> None:
    """A finished single run of `dataset` that trained at `samples_per_s` (what an estimate measures from)."""
    from db.datasets import get_dataset
    from db.models import TrainingRun
    from db.session import session_scope

    with session_scope(engine) as s:
        s.add(
            TrainingRun(
                dataset_id=get_dataset(s, dataset).id,
                name="finished",
                kind="single",
                status="succeeded",
                config=config,
                curve=[{"samples_per_s": samples_per_s}],
                metrics=metrics or {},
            )
        )


def test_the_estimate_reads_a_ddp_runs_rate_per_process(lead, engine, tmp_path) -> None:
    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    encoder = str(tmp_path / "encoder")
    finished_run(engine, name, {"encoder": encoder, "nproc": 4, "max_length": 320, "rdrop_alpha": 0.0}, 400.0)
    rates = {}
    for nproc in (1, 4):
        config = {"encoder": encoder, "nproc": nproc, "rdrop_alpha": 0.0}
        r = lead.post("/api/v1/training-estimates", json={"dataset": name, "config": config})
        assert r.status_code == 200, r.text
        rates[nproc] = r.json()["samples_per_second"]
    # 4 processes together trained 400 texts/s: 100 each (scaled by the texts' lengths, the same for both)
    assert rates[4] == pytest.approx(4 * rates[1]) and rates[1] == pytest.approx(100.0, rel=0.05)
    # A run that averages its weights validates twice an epoch (the average, the plain weights): one pass more.
    epoch = {}
    for decay in (0.0, 0.9):
        config = {"encoder": encoder, "rdrop_alpha": 0.0, "ema_decay": decay}
        r = lead.post("/api/v1/training-estimates", json={"dataset": name, "config": config})
        assert r.status_code == 200, r.text
        epoch[decay] = r.json()["seconds_per_epoch"]
    assert epoch[0.9] > epoch[0.0]


def test_the_estimate_reads_a_run_in_the_precision_asked_for(lead, engine, tmp_path) -> None:
    """bf16 autocast trains 1.3× faster than fp32 on a CPU that has it: an estimate for `amp: off` is not read
    from a bf16 run, nor one for `bf16` from an fp32 run; `auto` (resolved by the worker's machine) reads the
    newest run, as does any request when a run recorded no precision (before 8b0da98)."""
    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    encoder = str(tmp_path / "encoder")
    keys = {"encoder": encoder, "max_length": 320, "rdrop_alpha": 0.0}
    finished_run(engine, name, keys, 100.0, {"precision": "fp32"})
    finished_run(engine, name, keys, 130.0, {"precision": "bf16"})  # the newest

    def rate(amp: str) -> float:
        config = {"encoder": encoder, "rdrop_alpha": 0.0, "amp": amp}
        r = lead.post("/api/v1/training-estimates", json={"dataset": name, "config": config})
        assert r.status_code == 200, r.text
        return float(r.json()["samples_per_second"])

    assert rate("off") == pytest.approx(100.0, rel=0.05) and rate("bf16") == pytest.approx(130.0, rel=0.05)
    assert rate("auto") == pytest.approx(130.0, rel=0.05)
    finished_run(engine, name, keys, 90.0)  # no precision recorded: the newest for every request
    assert rate("off") == pytest.approx(90.0, rel=0.05) == rate("bf16")


def test_the_estimate_reads_this_encoders_run_behind_many_of_another(any_engine, tmp_path) -> None:
    """The newest 50 finished runs were read and then sorted by encoder: fifty runs of another encoder since hid
    this encoder's measured rate, and the estimate fell back to the reference rate (SQLite and Postgres: the
    encoder is read from the runs' JSON config in the query)."""
    from db.session import session_scope
    from services.training_estimate import measured_rate

    name = import_small(any_engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    mine, other = str(tmp_path / "mine"), str(tmp_path / "other")
    finished_run(any_engine, name, {"encoder": mine, "max_length": 256, "rdrop_alpha": 0.0}, 77.0)
    for _ in range(50):
        finished_run(any_engine, name, {"encoder": other, "max_length": 320, "rdrop_alpha": 0.0}, 500.0)
    with session_scope(any_engine) as s:
        measured = measured_rate(s, mine)
        assert measured is not None and measured[:2] == (pytest.approx(77.0), 256), measured
        assert measured_rate(s, str(tmp_path / "never-trained")) is None


def test_the_estimate_reads_no_other_projects_runs_nor_the_workers_paths(lead, engine, tmp_path) -> None:
    """A lead's estimate is measured from their own projects' runs: another team's run (its id, its rate, its
    settings) is not theirs to learn of; and the encoder's config.json is named, not its path on disk."""
    from db.datasets import get_dataset
    from db.models import Project
    from db.session import session_scope

    mine = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    theirs = import_small(engine, name="theirs", n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "hidden_size": 384}))
    with session_scope(engine) as s:
        other = Project(name="other-team", display_name="Other team")
        s.add(other)
        s.flush()
        get_dataset(s, theirs).project_id = other.id
    finished_run(engine, theirs, {"encoder": str(encoder), "max_length": 320, "rdrop_alpha": 0.0}, 777.0)
    config = {"encoder": str(encoder), "rdrop_alpha": 0.0}
    r = lead.post("/api/v1/training-estimates", json={"dataset": mine, "config": config})
    assert r.status_code == 200, r.text
    assert "run #" not in r.json()["basis"] and "scaled to 6 × 384 (its config.json)" in r.json()["basis"]
    assert str(tmp_path) not in r.json()["basis"]


def test_the_seeds_of_one_request_train_one_recipe_whatever_pace_each_measures(
    lead, engine, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the 8th quality study the seeds of one request measured 7.5 and 10.7 epochs in the same budget, on
    either side of the planning threshold (10), and trained different recipes (linear heads and averaging, or
    the MLP heads and layer-wise decay) under one ensemble weight, with an LR tuned for one of them. The recipe
    is decided once, by the request's LR selection, from the pace it measured; each seed still plans its own
    length from the pace it measures."""
    import trainer.lr_search
    import trainer.train
    from trainer.plan import Throughput

    slow, quick = Throughput(seconds_per_sample=0.3, eval_seconds=0.0), Throughput(0.1, 0.0)
    monkeypatch.setattr(trainer.lr_search, "measure_throughput", lambda run: slow)
    paces = iter([quick, slow, quick])  # the runs, as if the machine sped up and slowed down between them
    monkeypatch.setattr(trainer.train, "measure_throughput", lambda run: next(paces))
    name = import_small(engine, n_train=40, n_val=24, n_test=16, n_unlabelled=0)
    config = tiny_keys(tiny_encoder, epochs=12, budget_minutes=2, lr_search="on", lr_trials=3)
    created = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [1, 2, 3], "config": config})
    assert created.status_code == 202, created.text
    assert drain(engine).succeeded == 4
    runs = [lead.get(f"/api/v1/training-runs/{r['id']}").json() for r in created.json()["runs"]]
    recipe = runs[0]["lr_selection"]["recipe"]
    # 2 min at the slow pace afford fewer than 10 epochs (minus the trials' share): the short-run recipe
    assert recipe == {"grad_accum": 1, "rdrop_alpha": 0.0, "llrd_decay": 1.0, "head_layers": 1, "ema_decay": 0.9}
    assert "one recipe for the request's 3 run(s)" in runs[0]["lr_selection_detail"]["recipe_reason"]
    planned_epochs = []
    for run in runs:
        assert run["status"] == "succeeded"
        plan = run["metrics"]["plan"]
        assert {k: run["config"][k] for k in recipe} == recipe == {k: plan[k] for k in recipe}
        planned_epochs.append(plan["steps"] / plan["steps_per_epoch"])
    # each run's length is its own: the quick ones planned the cap (12 epochs; unpinned, their recipe would have
    # been the long one), the slow one what 2 minutes buy at its pace
    assert sorted(planned_epochs)[0] < 10 <= sorted(planned_epochs)[-1] == 12


def test_the_request_recipe_is_planned_for_what_each_run_keeps_and_trained_by_the_trials(
    tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe is planned for the budget each run keeps once it has paid its share of the trials (here a
    minute buys 11.9 epochs, the long-run recipe, but the trials' share leaves 0.5 minutes: the short one), the
    trials train that recipe, and a key the config sets is used as given and left out of it."""
    import trainer.lr_search
    from trainer.lr_search import select_learning_rate
    from trainer.plan import Throughput

    monkeypatch.setattr(trainer.lr_search, "measure_throughput", lambda run: Throughput(0.1, 0.0))
    data = synthetic_split(48, 24, 12)  # 6 batches of 8 an epoch
    config = fast_config(
        tiny_encoder, lr=None, grad_accum=None, epochs=40, budget_minutes=1, lr_search="on", lr_trials=3
    )
    assert trainer.lr_search.prepare(config, data).plan(Throughput(0.1, 0.0)).head_layers == 3  # the whole minute
    selection = select_learning_rate(config, data, n_runs=1)
    assert selection.status == "done"
    assert selection.recipe["head_layers"] == 1 and selection.recipe["llrd_decay"] == 1.0
    assert selection.recipe["ema_decay"] > 0
    assert selection.run_plan is not None and selection.run_plan["head_layers"] == 1  # what the trials trained
    assert selection.overrides()["head_layers"] == 1
    given = select_learning_rate(config.with_overrides({"head_layers": 3}), data, n_runs=1)
    assert "head_layers" not in given.recipe and given.run_plan is not None and given.run_plan["head_layers"] == 3
    assert "head_layers" not in given.overrides()


def test_a_distributed_requests_recipe_is_planned_at_each_processs_pace(
    tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The selection times whole global batches in one process; a run of 2 processes shares each batch, so it
    affords twice the epochs (as trainer/train.py plans it): here the long-run recipe, where one process at the
    same pace would get the short one."""
    import trainer.lr_search
    from trainer.lr_search import select_learning_rate
    from trainer.plan import Throughput

    monkeypatch.setattr(trainer.lr_search, "measure_throughput", lambda run: Throughput(0.2, 0.0))
    data = synthetic_split(48, 24, 12)
    config = fast_config(tiny_encoder, lr=None, grad_accum=None, epochs=40, budget_minutes=1.5, lr_search="auto")
    one = select_learning_rate(config, data, n_runs=1)  # 85.5 s at 9.6 s an epoch: 8.9 epochs
    two = select_learning_rate(config.with_overrides({"nproc": 2}), data, n_runs=1)  # 4.8 s an epoch: 17.8
    assert one.status == two.status == "skipped"  # trials of fewer than 50 steps
    assert (one.recipe["head_layers"], one.recipe["llrd_decay"]) == (1, 1.0)
    assert (two.recipe["head_layers"], two.recipe["llrd_decay"]) == (3, 0.9)


class PlannedRun:
    """What after_trials asks of a prepared run: its plan at a pace and config (the example dataset's numbers in
    the 11th quality study: 4,032 samples an epoch in micro-batches of 12, MiniLM's width 384)."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def plan(self, throughput: Any = None, config: Any = None) -> Any:
        from trainer.plan import plan_run

        return plan_run(
            config or self.config, n_train=4032, batches_per_epoch=336, encoder_width=384, throughput=throughput
        )


def test_the_request_recipe_is_one_its_own_trials_leave_the_budget_for() -> None:
    """The 11th quality study: 18 minutes for 3 seeds. Priced with a cheaper recipe's trials (fewer samples per
    optimizer step), the budget left planned 10.35 epochs and so the long-run recipe (MLP heads, layer-wise
    decay); the long recipe's own trials then left each seed 14.3 minutes, 9.2 epochs at the same pace, and the
    seeds trained the long-run recipe for a short run. The recipe chosen is one whose own trials leave a budget
    that plans it."""
    from trainer.config import TrainConfig
    from trainer.lr_search import RECIPE_KEYS, after_trials, trials_cost
    from trainer.plan import Throughput

    pace = Throughput(seconds_per_sample=0.020223, eval_seconds=3.501798)
    config = TrainConfig(budget_minutes=18.0, batch_size=12, max_length=64, lr_search="on", lr_trials=4)
    run = PlannedRun(config)

    def recipe_of(plan: Any) -> tuple[Any, ...]:
        return tuple(getattr(plan, key) for key in RECIPE_KEYS)

    def left_after_own_trials(plan: Any, budget: float) -> float:
        return budget - (20.0 + trials_cost(plan, pace, 4, min(190, plan.steps))) / 60 / 3

    def planned_for(budget: float, **pinned: Any) -> Any:
        return run.plan(pace, config.with_overrides({"budget_minutes": budget, **pinned}))

    plan, pinned = after_trials(run, config, pace, pace, trial_steps=190, n_runs=3, spent_seconds=20.0)  # type: ignore[arg-type]
    assert plan.budget_seconds is not None and pinned == ""
    assert plan.budget_seconds / 60 == pytest.approx(left_after_own_trials(plan, 18.0))
    assert recipe_of(planned_for(left_after_own_trials(plan, 18.0))) == recipe_of(plan)
    assert plan.epochs < 10 and (plan.head_layers, plan.llrd_decay) == (1, 1.0) and plan.ema_decay > 0

    # 17 minutes: accumulation 3's trials leave a budget that plans accumulation 2, whose cheaper trials leave
    # enough for 3: no recipe is planned by what its own trials leave. The one whose trials cost least (2) is
    # pinned, trained over what its own trials leave, and the sentence says so.
    config = config.with_overrides({"budget_minutes": 17.0})
    run = PlannedRun(config)
    plan, pinned = after_trials(run, config, pace, pace, trial_steps=190, n_runs=3, spent_seconds=20.0)  # type: ignore[arg-type]
    assert plan.grad_accum == 2 and "pinned: its trials leave enough for grad_accum 3" in pinned
    assert pinned in plan.reasons
    assert plan.budget_seconds is not None
    assert plan.budget_seconds / 60 == pytest.approx(left_after_own_trials(plan, 17.0))
    three = planned_for(left_after_own_trials(plan, 17.0), grad_accum=None)
    assert three.grad_accum == 3 and planned_for(left_after_own_trials(three, 17.0)).grad_accum == 2


def test_a_fixed_length_is_the_selections_planned_steps_or_the_selection_fails(
    tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An impact report's one length (`fix_length`) trains the steps the selection planned: stored rounded to 4
    places, 40 planned steps (13.3333 epochs of 3) came back as 39 trained (a reviewer's find). A budget too short
    for any length fails the selection, with the budget named, rather than leave each run to plan its own."""
    import trainer.lr_search
    from trainer.errors import TrainerError
    from trainer.lr_search import select_learning_rate
    from trainer.plan import Throughput

    data = synthetic_split(24, 12, 6)  # 3 batches of 8 an epoch
    config = fast_config(tiny_encoder, grad_accum=1, epochs=30, budget_minutes=1)  # lr given: no trials
    run = trainer.lr_search.prepare(config, data)
    steps_seen = set()
    for pace in [0.1 + 0.025 * k for k in range(12)]:
        monkeypatch.setattr(trainer.lr_search, "measure_throughput", lambda run, pace=pace: Throughput(pace, 0.0))
        planned = run.plan(Throughput(pace, 0.0))
        selection = select_learning_rate(config, data, fix_length=True)
        assert selection.fixed_epochs is not None
        again = run.plan(None, config.with_overrides(selection.overrides()))  # as each run plans it: no pace
        assert again.steps == planned.steps, (pace, selection.fixed_epochs, again.steps, planned.steps)
        steps_seen.add(planned.steps % planned.steps_per_epoch)
    assert 1 in steps_seen, steps_seen  # a third of an epoch past the whole ones: what rounding cut
    monkeypatch.setattr(trainer.lr_search, "measure_throughput", lambda run: Throughput(50.0, 0.0))
    with pytest.raises(TrainerError) as refused:  # 1 minute at 50 s a sample: no length to give every arm
        select_learning_rate(config, data, fix_length=True)
    assert refused.value.field == "config.budget_minutes"


def test_a_request_with_a_fixed_length_and_a_budget_is_refused(lead, engine, tmp_path) -> None:
    """`fixed_epochs` trains its length at any pace: with a budget too, the run trained 20 epochs with no time
    limit while it showed its 5 minutes (a reviewer's find). Refused, naming the key, on every route that plans."""
    name = import_small(engine, n_train=24, n_val=8, n_test=8, n_unlabelled=0)
    config = {"encoder": str(tmp_path), "budget_minutes": 5, "fixed_epochs": 20}
    for route in ("/api/v1/training-runs", "/api/v1/training-estimates"):
        r = lead.post(route, json={"dataset": name, "config": config})
        assert (r.status_code, r.json()["field"]) == (422, "config.fixed_epochs"), (route, r.text)
    r = lead.post(f"/api/v1/datasets/{name}/impact-reports", json={"config": config})
    assert r.status_code == 422, r.text  # this dataset has no approved variants either: refused, whichever first
    alone = lead.post(
        "/api/v1/training-estimates", json={"dataset": name, "config": {**config, "budget_minutes": None}}
    )
    assert alone.status_code == 200 and alone.json()["epochs"] == 20, alone.text


def test_the_estimate_reads_this_devices_run_behind_many_on_another(any_engine, tmp_path) -> None:
    """The same hiding as by encoder, by device and precision: fifty newer runs of this encoder on a GPU (or in
    another precision) hid its CPU (fp32) run, and the estimate fell back to the reference rate."""
    from db.session import session_scope
    from services.training_estimate import measured_rate

    name = import_small(any_engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    mine = str(tmp_path / "mine")
    finished_run(any_engine, name, {"encoder": mine, "device": "cpu", "max_length": 256}, 77.0, {"precision": "fp32"})
    for _ in range(50):
        finished_run(any_engine, name, {"encoder": mine, "device": "cuda:0", "max_length": 320}, 900.0)
        bf16 = {"precision": "bf16"}
        finished_run(any_engine, name, {"encoder": mine, "device": "cpu", "max_length": 320}, 120.0, bf16)
    with session_scope(any_engine) as s:
        measured = measured_rate(s, mine, device="cpu", amp="off")
        assert measured is not None and measured[:2] == (pytest.approx(77.0), 256), measured
