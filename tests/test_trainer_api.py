"""Training through the API and a worker: runs, curve, metrics, consistency scores, predict, ensembles,
pseudo-labels; and the errors a client gets for bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.trainer_fixtures import add_variant, import_small, tiny_encoder, tiny_keys  # noqa: F401 (fixture)


def fast(encoder: str, **extra: Any) -> dict[str, Any]:
    return tiny_keys(encoder, epochs=2, grad_accum=1, lr=1e-3, rdrop_alpha=0.5, **extra)


def drain(engine: Any, kinds: list[str]) -> Any:
    from workers.main import Worker

    return Worker(engine, kinds=kinds, poll_seconds=0.05, lease_seconds=30).run(burst=True)


def test_training_run_through_api_and_worker(lead, engine, tiny_encoder: str) -> None:
    from sqlalchemy import func

    from db.models import Job, Origin, Sample
    from db.session import session_scope

    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=5)
    pending = add_variant(engine, name, "train", "pending", "a pending variant about the budget vote today")
    rejected = add_variant(engine, name, "train", "rejected", "a rejected variant about the budget")

    created = lead.post(
        "/api/v1/training-runs",
        json={"dataset": name, "seeds": [1, 2], "name": "tiny", "config": fast(tiny_encoder)},
    )
    assert created.status_code == 202, created.text
    body = created.json()
    assert [j["kind"] for j in body["jobs"]] == ["train", "train"]
    assert [r["status"] for r in body["runs"]] == ["queued", "queued"]
    assert [r["config"]["seed"] for r in body["runs"]] == [1, 2]
    run_ids = [r["id"] for r in body["runs"]]

    stats = drain(engine, ["train"])
    assert stats.succeeded == 2, stats

    run = lead.get(f"/api/v1/training-runs/{run_ids[0]}").json()
    assert run["status"] == "succeeded" and run["epochs_done"] == 2 and len(run["curve"]) == 2
    assert {"train_loss", "val_macro_f1", "val_task_macro_f1"} <= set(run["curve"][0])
    assert run["progress"]["done"] == 2 and run["progress"]["status"] == "succeeded"
    test = run["metrics"]["test"]
    assert set(test["tasks"]) == {"bias", "message"}
    assert set(test["tasks"]["bias"]["per_class"]) == {"neutral", "partisan"}
    assert len(test["tasks"]["message"]["confusion"]["matrix"]) == 9
    assert test["overall_macro_f1"] == pytest.approx(
        (test["tasks"]["bias"]["macro_f1"] + test["tasks"]["message"]["macro_f1"]) / 2
    )
    assert run["snapshot_size"] == 40  # labelled train originals; no pending/rejected variant, no val/test
    snapshot = lead.get(f"/api/v1/training-runs/{run_ids[0]}/snapshot").json()["snapshot"]
    assert pending not in {sid for sid, _ in snapshot} and rejected not in {sid for sid, _ in snapshot}
    listed = lead.get("/api/v1/training-runs", params={"dataset": name}).json()
    assert sorted(r["id"] for r in listed) == sorted(run_ids) and listed[0]["test_macro_f1"] is not None

    # The pending variant was scored by the first run, and again by the second only if its val macro-F1 is
    # better (services/label_model.py); the rejected variant was not scored.
    f1 = [lead.get(f"/api/v1/training-runs/{i}").json()["val_macro_f1"] for i in run_ids]
    scorer = run_ids[1] if f1[1] > f1[0] else run_ids[0]
    with session_scope(engine) as s:
        variant = s.get_one(Sample, pending)
        consistency, flag, scores, labels = (
            variant.label_consistency,
            variant.label_flag,
            variant.scores,
            variant.labels,
        )
        assert s.get_one(Sample, rejected).label_consistency is None
    assert scores["label_model"]["run_id"] == scorer and isinstance(flag, bool)
    assert scores["label_model"]["val_macro_f1"] == f1[run_ids.index(scorer)]
    predicted = lead.post(
        f"/api/v1/models/{scorer}/predict",
        json={"texts": ["a pending variant about the budget vote today"]},
    )
    assert predicted.status_code == 200, predicted.text
    probs = predicted.json()["probabilities"][0]
    assert consistency == pytest.approx(min(probs[t][labels[t]] for t in ("bias", "message")), abs=1e-4)
    # A task flags where the intended class's probability is below what 9 in 10 of its val texts get (the
    # scorer's p10, for classes with 5 or more val texts); elsewhere another label flags, as before.
    from services.label_model import class_thresholds

    below = class_thresholds(lead.get(f"/api/v1/training-runs/{scorer}").json()["metrics"]["val"])
    assert scores["label_model"]["flag_below"] == below
    given = predicted.json()["labels"][0]

    def flags(t: str) -> bool:
        threshold = below.get(t, {}).get(labels[t])
        return given[t] != labels[t] if threshold is None else probs[t][labels[t]] < threshold

    assert flag == any(flags(t) for t in ("bias", "message"))
    assert scores["label_model"].get("unheeded", {}) == {
        t: given[t] for t in ("bias", "message") if given[t] != labels[t] and not flags(t)
    }

    # An ensemble whose commit fails is not stored, and leaves no folder for the row that takes its id next.
    from services.training import runs_root
    from tests.test_acknowledged_writes import failing_commits

    folders = set(runs_root().iterdir())
    with failing_commits(engine):
        lost = lead.post("/api/v1/ensembles", json={"run_ids": run_ids})
    assert lost.status_code == 503 and set(runs_root().iterdir()) == folders

    # An ensemble of the two seeds: a run row of kind ensemble with metrics, and it predicts.
    ens = lead.post("/api/v1/ensembles", json={"run_ids": run_ids, "weighted": True, "temperature": True})
    assert ens.status_code == 201, ens.text
    ens_body = ens.json()
    assert ens_body["kind"] == "ensemble" and ens_body["member_ids"] == run_ids
    # A member sees where the artifacts are inside the data directory, not where the server keeps it.
    assert ens_body["artifact_dir"] == f"runs/{ens_body['id']}"
    assert (runs_root() / str(ens_body["id"]) / "predictions_test.json").is_file()
    assert set(ens_body["config"]["temperatures"]) == {"bias", "message"}
    assert ens_body["metrics"]["test"]["overall_macro_f1"] is not None
    out = lead.post(f"/api/v1/models/{ens_body['id']}/predict", json={"texts": ["one", "two texts"]}).json()
    assert out["kind"] == "ensemble" and len(out["probabilities"]) == 2
    assert sum(out["probabilities"][0]["message"].values()) == pytest.approx(1.0, abs=1e-4)

    # Pseudo-labels: the 5 unlabelled train texts become pending pseudo_label children; originals stay.
    job = lead.post(f"/api/v1/datasets/{name}/pseudo-labels", json={"model_id": ens_body["id"], "threshold": 0.0001})
    assert job.status_code == 202, job.text
    assert drain(engine, ["pseudo_label"]).succeeded == 1
    assert lead.get(f"/api/v1/jobs/{job.json()['id']}").json()["result"]["created"] == 5
    with session_scope(engine) as s:
        children = list(s.scalars(select(Sample).where(Sample.origin == Origin.pseudo_label)))
        assert len(children) == 5
        for child in children:
            parent = s.get_one(Sample, child.parent_id)
            assert parent.origin == Origin.original and parent.labels == {} and parent.text == child.text
            assert child.review_status == "pending" and child.split == "train"
            assert set(child.labels) == {"bias", "message"} and child.method == "pseudo_label"
    # Nothing left to label: said at the request (a job labelling nothing was queued), and nothing is queued
    again = lead.post(f"/api/v1/datasets/{name}/pseudo-labels", json={"model_id": run_ids[0], "threshold": 0.0001})
    assert again.status_code == 422 and "no unlabelled train text left" in again.json()["detail"], again.text
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.kind == "pseudo_label")) == 1


def test_a_run_that_cannot_load_its_encoder_fails_at_once(lead, engine, tmp_path) -> None:
    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    body = {"dataset": name, "config": fast(str(tmp_path / "no-such-encoder"))}
    run_id = lead.post("/api/v1/training-runs", json=body).json()["runs"][0]["id"]
    stats = drain(engine, ["train"])
    assert stats.failed == 1 and stats.retried == 0
    run = lead.get(f"/api/v1/training-runs/{run_id}").json()
    assert run["status"] == "failed" and "cannot load encoder" in run["error"]


def test_a_training_job_whose_checkpoints_cannot_be_written_trains_on_and_says_so(
    lead, engine, tiny_encoder: str
) -> None:
    """A checkpoint directory that cannot be made (here a file stands in its place; a read-only or full disk does
    the same) failed the job on every attempt with "FileExistsError": the run is fine without a checkpoint."""
    from services.training import checkpoint_dir

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    run_id = lead.post("/api/v1/training-runs", json={"dataset": name, "config": fast(tiny_encoder)}).json()["runs"][0][
        "id"
    ]
    blocked = checkpoint_dir(run_id)
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("not a directory")
    stats = drain(engine, ["train"])
    assert stats.succeeded == 1 and stats.retried == 0, stats
    run = lead.get(f"/api/v1/training-runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["epochs_done"] == 2 and run["metrics"]["checkpoint_failures"] == 2
    assert run["progress"]["checkpoint_failures"] == 2
    assert run["progress"]["checkpoint_error"].startswith("the checkpoint at step 4 could not be written: File exists")
    # the finished job's phase says how it ended (it kept "scoring pending variants", what it was doing last)
    assert run["progress"]["phase"] == f"done: val macro-F1 {run['val_macro_f1']:.3f}", run["progress"]
    assert str(blocked) not in run["progress"]["checkpoint_error"]  # the server's path is not the project's


def test_a_training_job_that_cannot_save_its_model_fails_saying_so(
    lead, engine, tiny_encoder: str, monkeypatch
) -> None:
    import errno

    from trainer.model import MultiTaskModel

    def full_disk(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MultiTaskModel, "save", full_disk)
    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    run_id = lead.post("/api/v1/training-runs", json={"dataset": name, "config": fast(tiny_encoder)}).json()["runs"][0][
        "id"
    ]
    stats = drain(engine, ["train"])
    assert stats.failed == 1, stats
    run = lead.get(f"/api/v1/training-runs/{run_id}").json()
    assert run["status"] == "failed"
    assert run["error"] == (
        "ArtifactWriteError: the trained model and its results could not be saved: No space left on device "
        "(ENOSPC); free space in the data directory (or make it writable) and train again"
    )


def test_bad_requests_get_clear_errors(lead, client, engine) -> None:
    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    cases = [
        ("/api/v1/training-runs", {"dataset": "nope"}, 404, "dataset"),
        ("/api/v1/training-runs", {"dataset": name, "config": {"pooling": "max"}}, 422, "config.pooling"),
        ("/api/v1/training-runs", {"dataset": name, "config": {"tasks": ["sentiment"]}}, 422, "config.tasks"),
        (
            "/api/v1/training-runs",
            {"dataset": name, "config": {"learning_rate": 1}},
            422,
            "config.learning_rate",
        ),
        (
            "/api/v1/training-runs",
            {"dataset": name, "config": {"task_weights": {"x": 1}}},
            422,
            "config.task_weights",
        ),
        (
            "/api/v1/training-runs",
            {"dataset": name, "config": {"class_label_smoothing": {"message": {"rant": 0.2}}}},
            422,
            "config.class_label_smoothing",
        ),
        ("/api/v1/training-runs", {"dataset": name, "seeds": [1, 1]}, 422, "seeds"),
        # the seeds won, config.seed went unread
        ("/api/v1/training-runs", {"dataset": name, "config": {"seed": 5}, "seeds": [1, 2]}, 422, "config.seed"),
        # every task the run trains at weight 0 (one left out weighs 1): it learnt nothing, and finished
        (
            "/api/v1/training-runs",
            {"dataset": name, "config": {"task_weights": {"bias": 0, "message": 0}}},
            422,
            "config.task_weights",
        ),
        # Found by running them: each was accepted, then failed in the worker or trained a model no ensemble
        # could use
        ("/api/v1/training-runs", {"dataset": name, "config": {"tasks": ["bias", "bias"]}}, 422, "config.tasks"),
        (
            "/api/v1/training-runs",
            {"dataset": name, "config": {"tasks": ["bias"], "task_weights": {"message": 2}}},
            422,
            "config.task_weights",
        ),
        (
            "/api/v1/training-runs",
            {"dataset": name, "config": {"tasks": ["bias"], "class_label_smoothing": {"message": {"attack": 0.1}}}},
            422,
            "config.class_label_smoothing",
        ),
        ("/api/v1/training-runs", {"dataset": name, "config": {"focal_gamma": 1e308}}, 422, "config.focal_gamma"),
        ("/api/v1/training-runs", {"dataset": name, "config": {"rdrop_alpha": 1e308}}, 422, "config.rdrop_alpha"),
        ("/api/v1/ensembles", {"run_ids": [1]}, 422, "run_ids"),
        ("/api/v1/ensembles", {"run_ids": [998, 999]}, 404, "run_ids"),
        ("/api/v1/models/999/predict", {"texts": ["x"]}, 404, "model_id"),
        ("/api/v1/models/1/predict", {"texts": []}, 422, "texts"),
        ("/api/v1/datasets/nope/pseudo-labels", {"model_id": 1}, 404, "name"),
        (f"/api/v1/datasets/{name}/pseudo-labels", {"model_id": 1, "threshold": 2}, 422, "threshold"),
    ]
    for path, payload, status, field in cases:
        r = lead.post(path, json=payload)
        assert r.status_code == status, (path, payload, r.text)
        assert r.json()["field"] == field, (path, payload, r.json())
    # A lone surrogate (JSON's "\ud800") reached the tokenizer: a 500
    raw = json.dumps({"texts": ["fine", "a lone \ud800 surrogate"]})
    r = lead.post("/api/v1/models/1/predict", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "texts" and "(at 1)" in r.json()["detail"], r.text
    queued = lead.post("/api/v1/training-runs", json={"dataset": name}).json()["runs"][0]["id"]
    r = lead.post(f"/api/v1/models/{queued}/predict", json={"texts": ["x"]})
    assert r.status_code == 422 and "queued" in r.json()["detail"]
    r = lead.post(f"/api/v1/models/{queued}/predict", json={"texts": ["x"] * 1000})
    assert r.status_code == 413
    assert client.get("/api/v1/training-runs").status_code == 401


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309", '"NaN"'])
def test_nan_and_infinity_in_a_config_are_refused_naming_the_key(lead, engine, literal: str) -> None:
    """Python's JSON reader (FastAPI's) takes NaN, Infinity and 1e309; the config refuses them, for a training
    run and an impact report alike, and nothing is queued."""
    from db.models import Job, TrainingRun
    from db.session import session_scope

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    for path, key in (
        ("/api/v1/training-runs", "lr"),
        ("/api/v1/training-runs", "label_smoothing"),
        (f"/api/v1/datasets/{name}/impact-reports", "lr"),
        (f"/api/v1/datasets/{name}/impact-reports", "label_smoothing"),
    ):
        body = {"config": {key: "X"}, **({"dataset": name} if path.endswith("training-runs") else {})}
        text = json.dumps(body).replace('"X"', literal)
        r = lead.post(path, content=text, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (path, key, r.text)
        assert r.json()["field"] == f"config.{key}", (path, key, r.json())
    with session_scope(engine) as s:
        assert s.scalar(select(Job.id)) is None and s.scalar(select(TrainingRun.id)) is None


def test_a_cancelled_training_job_marks_its_run_cancelled(lead, engine, tiny_encoder: str) -> None:
    from db import queue
    from workers.registry import JobCancelled, JobContext
    from workers.train_jobs import run_train

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    run_id = lead.post("/api/v1/training-runs", json={"dataset": name, "config": fast(tiny_encoder)}).json()["runs"][0][
        "id"
    ]
    job = queue.claim(engine, "w-test", ["train"])
    assert job is not None
    ctx = JobContext(job_id=job.id, kind="train", params=job.params, engine=engine, worker_id="w-test", attempt=1)
    ctx.cancelled.set()  # what the heartbeat does once the API asked to cancel
    with pytest.raises(JobCancelled):
        run_train(ctx)
    run = lead.get(f"/api/v1/training-runs/{run_id}").json()
    assert run["status"] == "cancelled" and run["finished_at"] is not None


def _finished_runs(engine: Any, dataset: str, n: int, first_id: int) -> list[int]:
    """Finished runs with saved val/test predictions (no training), their ids from `first_id` on."""
    import numpy as np

    from db import training_runs as db_runs
    from db.datasets import get_dataset
    from db.models import JobStatus, Sample, TrainingRun, utcnow
    from db.session import session_scope
    from services.prediction import SAVED_MODEL_FILES
    from services.training import runs_root

    rng = np.random.default_rng(0)
    with session_scope(engine) as s:
        ds = get_dataset(s, dataset)
        s.add(TrainingRun(id=first_id - 1, dataset_id=ds.id, name="spacer", kind="single", status="failed"))
        s.flush()
        ids = []
        for k in range(n):
            run = db_runs.create_run(s, ds, {"encoder": "x", "seed": k}, name=f"r{k}", status=JobStatus.succeeded)
            out = runs_root() / str(run.id)
            out.mkdir(parents=True)
            for split in ("val", "test"):
                sids = list(s.scalars(select(Sample.id).where(Sample.dataset_id == ds.id, Sample.split == split)))
                tasks = {}
                for t in ds.tasks:
                    probs = rng.dirichlet(np.ones(len(t["labels"])), size=len(sids))
                    gold = rng.integers(0, len(t["labels"]), len(sids)).tolist()
                    tasks[t["name"]] = {"labels": t["labels"], "gold": gold, "probs": probs.round(6).tolist()}
                    tasks[t["name"]]["pred"] = probs.argmax(1).tolist()
                (out / f"predictions_{split}.json").write_text(json.dumps({"sample_ids": sids, "tasks": tasks}))
            for wanted in SAVED_MODEL_FILES["single"]:  # the files a saved model has (these runs never predict)
                (out / "model" / wanted[0]).parent.mkdir(parents=True, exist_ok=True)
                (out / "model" / wanted[0]).touch()
            run.artifact_dir, run.snapshot_digest, run.finished_at = str(out), "same", utcnow()
            ids.append(run.id)
    return ids


def test_an_ensembles_name_fits_its_column(lead, engine) -> None:
    """The default name lists the members' ids while they fit 200 characters; a longer given name is a 422."""
    from core.errors import ValidationFailed
    from db.session import session_scope
    from services.ensembles import create_ensemble

    import_small(engine)
    ids = _finished_runs(engine, "small", 32, first_id=10_000_000)
    assert len(f"ensemble of {', '.join(map(str, ids))}") > 200
    ens = lead.post("/api/v1/ensembles", json={"run_ids": ids})
    assert ens.status_code == 201, ens.text
    name = ens.json()["name"]
    assert len(name) <= 200 and name.startswith(f"ensemble of {ids[0]}, {ids[1]}, ") and name.endswith("(32 runs)")
    few = lead.post("/api/v1/ensembles", json={"run_ids": ids[:2]}).json()["name"]
    assert few == f"ensemble of {ids[0]}, {ids[1]}"
    # the CLI's --name reaches the service unbounded by the API's schema
    with session_scope(engine) as s, pytest.raises(ValidationFailed) as err:
        create_ensemble(s, ids[:2], name="x" * 201, user=None)
    assert err.value.field == "name"


def test_runs_of_other_training_sets_are_no_seeds_of_one_and_the_ensemble_says_so(lead, engine) -> None:
    """`train --seeds` loads each seed's data as it starts: a variant approved meanwhile put seeds of two training
    sets into one group (one shared weight, as seeds of one run) and only `config.same_snapshot` said so, read
    by nothing. Each training set is its own group, and the ensemble's warnings say it (API, CLI, page)."""
    from db.models import TrainingRun
    from db.session import session_scope

    import_small(engine)
    ids = _finished_runs(engine, "small", 3, first_id=30_000_000)
    same = lead.post("/api/v1/ensembles", json={"run_ids": ids}).json()
    assert len(set(same["config"]["groups"].values())) == 1 and same["metrics"]["warnings"] == []
    with session_scope(engine) as s:
        s.get_one(TrainingRun, ids[2]).snapshot_digest = "another training set"
    mixed = lead.post("/api/v1/ensembles", json={"run_ids": ids}).json()
    groups = mixed["config"]["groups"]
    assert groups[str(ids[0])] == groups[str(ids[1])] != groups[str(ids[2])]
    [warning] = mixed["metrics"]["warnings"]
    assert "2 different training sets" in warning and f"#{ids[0]}, #{ids[1]}; #{ids[2]}" in warning
    assert mixed["config"]["same_snapshot"] is False
    # seeds that drew max_train_samples each trained on their own subset: their digests differ by design, and
    # they are still seeds of one configuration (one weight), with nothing to warn of
    with session_scope(engine) as s:
        for k, i in enumerate(ids):
            run = s.get_one(TrainingRun, i)
            run.config = {**run.config, "max_train_samples": 20}
            run.snapshot_digest = f"its own draw {k}"
    drawn = lead.post("/api/v1/ensembles", json={"run_ids": ids}).json()
    assert len(set(drawn["config"]["groups"].values())) == 1 and drawn["metrics"]["warnings"] == []


def test_the_tfidf_member_draws_max_train_samples_as_its_first_seed(lead, engine, tiny_encoder: str) -> None:
    """The member was given tasks, variants and exclusions but not `max_train_samples`: its seeds trained on 12
    texts, it on all 40, and their ensemble said nothing. It draws as the first seed does, the same texts."""
    name = import_small(engine, n_train=40, n_val=12, n_test=12, n_unlabelled=0)
    config = tiny_keys(tiny_encoder, epochs=1, grad_accum=1, lr=1e-3, max_train_samples=12)
    r = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [3], "config": config, "classical": True})
    assert r.status_code == 202, r.text
    seed_run, member = (run["id"] for run in r.json()["runs"])
    assert r.json()["runs"][1]["config"]["max_train_samples"] == 12
    stats = drain(engine, ["train"])
    assert stats.succeeded == 2, stats
    snapshots = [lead.get(f"/api/v1/training-runs/{i}/snapshot").json() for i in (seed_run, member)]
    assert [s["size"] for s in snapshots] == [12, 12], snapshots
    assert sorted(map(tuple, snapshots[1]["snapshot"])) == sorted(map(tuple, snapshots[0]["snapshot"]))
    assert lead.get(f"/api/v1/training-runs/{member}").json()["metrics"]["train_samples"] == 12


def test_pseudo_labels_need_a_model_of_every_task_of_the_dataset(lead, engine) -> None:
    """A run of `config.tasks: [bias]` pseudo-labelled every unlabelled text with bias only: a text gets one
    pseudo-label, so its `message` could then never be pseudo-labelled. Such a model is refused, naming the task;
    one of every task (an ensemble of them too) is queued."""
    from db.datasets import get_dataset
    from db.models import Job, TrainingRun
    from db.session import session_scope

    import_small(engine, n_unlabelled=3)
    ids = _finished_runs(engine, "small", 2, first_id=40_000_000)
    with session_scope(engine) as s:
        tasks = [{"name": t["name"], "labels": t["labels"]} for t in get_dataset(s, "small").tasks]
        for run_id, learnt in zip(ids, (tasks[:1], tasks), strict=True):
            folder = Path(s.get_one(TrainingRun, run_id).artifact_dir or "") / "model"
            (folder / "model.json").write_text(json.dumps({"tasks": learnt}), encoding="utf-8")
    r = lead.post("/api/v1/datasets/small/pseudo-labels", json={"model_id": ids[0], "threshold": 0.5})
    assert r.status_code == 422 and r.json()["field"] == "model_id", r.text
    assert f"run {ids[0]} was not trained on task(s) 'message'" in r.json()["detail"], r.text
    with session_scope(engine) as s:
        assert s.query(Job).filter(Job.kind == "pseudo_label").count() == 0
    r = lead.post("/api/v1/datasets/small/pseudo-labels", json={"model_id": ids[1], "threshold": 0.5})
    assert r.status_code == 202, r.text


def test_an_ensemble_of_a_run_whose_model_is_gone_is_refused(lead, engine) -> None:
    """A member whose saved model lost a file (its directory pruned by hand) was combined (201): every prediction,
    pin or pseudo-labelling with the ensemble was then refused. It is refused when the ensemble is made."""
    import shutil

    from db.models import TrainingRun
    from db.session import session_scope

    import_small(engine)
    ids = _finished_runs(engine, "small", 3, first_id=20_000_000)
    with session_scope(engine) as s:
        root = Path(s.get_one(TrainingRun, ids[1]).artifact_dir or "")
    (root / "model" / "heads.safetensors").unlink()
    r = lead.post("/api/v1/ensembles", json={"run_ids": ids})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "run_ids" and f"run {ids[1]} is incomplete" in r.json()["detail"]
    shutil.rmtree(root / "model")
    r = lead.post("/api/v1/ensembles", json={"run_ids": ids[:2]})
    assert r.status_code == 422 and f"the saved model of run {ids[1]} is missing" in r.json()["detail"], r.text
    with session_scope(engine) as s:  # finished with no files recorded: "run … is succeeded" said nothing useful
        s.get_one(TrainingRun, ids[1]).artifact_dir = None
    r = lead.post("/api/v1/ensembles", json={"run_ids": ids[:2]})
    assert r.status_code == 422 and r.json()["detail"] == f"run {ids[1]} has no saved model to combine", r.text
    assert lead.post("/api/v1/ensembles", json={"run_ids": [ids[0], ids[2]]}).status_code == 201
    with session_scope(engine) as s:  # nothing stored by the refusals
        assert s.query(TrainingRun).filter_by(kind="ensemble").count() == 1


def test_a_dataset_that_cannot_train_is_refused_at_the_request(lead, admin, engine) -> None:
    """A task with one class among the training texts, or no labelled val text: each was queued (202), then
    the transformer run scored a meaningless 1.0 for the one-class task (averaged into the overall figure) or
    failed in the worker, as did the TF-IDF member. Refused at the request, and by the estimate, naming why."""
    from core.errors import ValidationFailed
    from db.datasets import get_dataset
    from db.models import TrainingRun
    from db.session import session_scope
    from services.training_data import load_split_data

    header = "text,bias,one,split\n"
    rows = [f"post {i} about the budget,{'ab'[i % 2]},only,{('train', 'train', 'val')[i % 3]}\n" for i in range(30)]
    r = admin.post(
        "/api/v1/datasets/onecls/import",
        files={"file": ("one.csv", (header + "".join(rows)).encode())},
        data={"task": ["bias", "one"]},
    )
    assert r.status_code == 201, r.text
    for path in ("/api/v1/training-runs", "/api/v1/training-estimates"):
        r = lead.post(path, json={"dataset": "onecls", "classical": True} if "runs" in path else {"dataset": "onecls"})
        assert r.status_code == 422 and r.json()["field"] == "config.tasks", r.text
        assert "task 'one' has only the class 'only'" in r.json()["detail"]
    r = lead.post("/api/v1/training-estimates", json={"dataset": "onecls", "config": {"tasks": ["bias"]}})
    assert r.status_code == 200, r.text
    rows = [f"text number {i},{'ab'[i % 2]},train\n" for i in range(20)]
    r = admin.post(
        "/api/v1/datasets/noval/import",
        files={"file": ("noval.csv", ("text,bias,split\n" + "".join(rows)).encode())},
        data={"task": ["bias"]},
    )
    assert r.status_code == 201, r.text
    r = lead.post("/api/v1/training-runs", json={"dataset": "noval"})
    assert r.status_code == 422 and r.json()["field"] == "dataset" and "no labelled validation" in r.json()["detail"]
    # One task of two without val: it trained blind (early stopping, the LR selection and the decision rule read
    # the other task only), then counted in the test figure. Refused naming it; the other task alone trains.
    rows = [
        f"text number {i},{'ab'[i % 2]},{'' if i % 3 == 2 else 'xy'[i % 2]},{('train', 'train', 'val')[i % 3]}\n"
        for i in range(30)
    ]
    r = admin.post(
        "/api/v1/datasets/halfval/import",
        files={"file": ("halfval.csv", ("text,bias,stance,split\n" + "".join(rows)).encode())},
        data={"task": ["bias", "stance"]},
    )
    assert r.status_code == 201, r.text
    for path in ("/api/v1/training-runs", "/api/v1/training-estimates"):
        r = lead.post(path, json={"dataset": "halfval"})
        assert r.status_code == 422 and r.json()["field"] == "config.tasks", r.text
        assert "no labelled validation text (split 'val') for task(s) ['stance']" in r.json()["detail"]
    r = lead.post("/api/v1/training-estimates", json={"dataset": "halfval", "config": {"tasks": ["bias"]}})
    assert r.status_code == 200, r.text
    # Every class of `stance` once in train: the transformer trains, the TF-IDF member's cross-validation cannot.
    # It was refused only after the transformer runs had spent their budget; now at the request.
    rows = [
        f"text number {i},{'ab'[i % 2]},{f's{i}' if i < 4 else ''},{'train' if i < 20 else 'val'}\n" for i in range(26)
    ]
    rows += [f"val text {i},{'ab'[i % 2]},s{i},val\n" for i in range(4)]
    r = admin.post(
        "/api/v1/datasets/singles/import",
        files={"file": ("singles.csv", ("text,bias,stance,split\n" + "".join(rows)).encode())},
        data={"task": ["bias", "stance"]},
    )
    assert r.status_code == 201, r.text
    r = lead.post("/api/v1/training-runs", json={"dataset": "singles", "classical": True})
    assert r.status_code == 422 and r.json()["field"] == "classical", r.text
    assert "task 'stance': the TF-IDF member's cross-validation needs two train texts of one class" in r.text
    with session_scope(engine) as s:
        assert s.scalar(select(TrainingRun.id)) is None, "nothing was queued"
        # the job reads the view again when it starts (a val label may have gone meanwhile): the same refusal
        with pytest.raises(ValidationFailed, match=r"for task\(s\) \['stance'\]"):
            load_split_data(s, get_dataset(s, "halfval"))
        assert len(load_split_data(s, get_dataset(s, "halfval"), ["bias"]).val) == 10
    # An approved variant gives `stance`'s s0 a second train text: the member's folds then score every text of the
    # view (the originals are too few), so it trains, and the request is not refused.
    add_variant(engine, "singles", "train", "approved", "text number zero, again")
    r = lead.post("/api/v1/training-runs", json={"dataset": "singles", "classical": True})
    assert r.status_code == 202, r.text


def test_an_ensemble_is_fitted_without_holding_the_write_lock(lead, engine, monkeypatch) -> None:
    """Reading 32 members' predictions of 10,000 val texts and fitting them takes seconds: on SQLite the request
    held the only write lock meanwhile, and every other write (decisions, heartbeats) waited. The fit now runs
    under a read-only session, and the ensemble is stored in a short transaction at the end."""
    from services import ensembles
    from tests.review_fixtures import write_meanwhile

    import_small(engine)
    ids = _finished_runs(engine, "small", 2, first_id=20_000_000)
    real_build = ensembles.build_ensemble
    others: list[str] = []
    someone_writes = write_meanwhile(engine, others)

    def build_while_someone_writes(*args, **kwargs):  # type: ignore[no-untyped-def]
        someone_writes()
        return real_build(*args, **kwargs)

    monkeypatch.setattr(ensembles, "build_ensemble", build_while_someone_writes)
    ens = lead.post("/api/v1/ensembles", json={"run_ids": ids})
    assert ens.status_code == 201, ens.text
    assert others == ["wrote"]
    assert ens.json()["member_ids"] == ids and lead.get(f"/api/v1/training-runs/{ens.json()['id']}").status_code == 200


def test_a_runs_name_fits_its_column(admin, engine, tmp_path) -> None:
    """A run is named "<label> seed N" with the encoder as label when none is given: a long directory name made a
    name past the column (a 422 in the driver's words on Postgres, 5,000 characters stored on SQLite)."""
    from core.errors import ValidationFailed
    from db.session import session_scope
    from services.training import start_training

    name = import_small(engine)
    deep = tmp_path / ("d" * 200) / ("e" * 200)
    made = admin.post(
        "/api/v1/training-runs", json={"dataset": name, "seeds": [3], "config": {"encoder": str(deep), "epochs": 1}}
    )
    assert made.status_code == 202, made.text
    run = admin.get(f"/api/v1/training-runs/{made.json()['runs'][0]['id']}").json()
    assert len(run["name"]) <= 200 and run["name"].startswith("…") and run["name"].endswith("e seed 3"), run["name"]
    # the CLI's --name reaches the service unbounded by the API's schema
    with session_scope(engine) as s, pytest.raises(ValidationFailed) as err:
        start_training(s, name, {"epochs": 1}, [1], name="x" * 151, user=None)
    assert err.value.field == "name"
    with session_scope(engine) as s:  # 150, the API's bound, fits with its seed and its TF-IDF member's suffix
        runs, _jobs = start_training(s, name, {"epochs": 1}, [4294967295], name="y" * 150, user=None, classical=True)
        assert [len(r.name) for r in runs] == [150 + len(" seed 4294967295"), 150 + len(" member")]
    # a name is shown in lists and the CLI: printable, as a display name (U+202E reversed the line after it)
    for bad in ("a\u202eb", "x\ny"):
        r = admin.post("/api/v1/training-runs", json={"dataset": name, "seeds": [5], "name": bad})
        assert r.status_code == 422 and r.json()["field"] == "name", r.text
        r = admin.post("/api/v1/ensembles", json={"run_ids": [1, 2], "name": bad})
        assert r.status_code == 422 and r.json()["field"] == "name", r.text


def test_members_that_leave_variants_out_on_purpose_differ_by_design_not_by_approvals() -> None:
    """An impact report's arms (originals, without:<m>) trained without variants on purpose: combined with the
    lead's runs, the warning blamed variants approved or texts imported between the runs."""
    from services.ensembles import ensemble_warnings

    digests = {1: "all", 2: "all", 3: "no mlm", 4: "none"}
    left_out = {1: None, 2: None, 3: "the mlm variants", 4: "the mlm, wordnet variants"}
    [warning] = ensemble_warnings([1, 2, 3, 4], digests, {}, left_out)
    assert warning.startswith("the members trained on 3 different training sets by design (#1, #2 with every ")
    assert "#3 without the mlm variants; #4 without the mlm, wordnet variants" in warning
    assert "approved or texts imported" not in warning
    # one configuration on two sets is still the approvals' or imports' doing, whatever the others left out
    [warning] = ensemble_warnings([1, 2, 3, 4], {**digests, 2: "later"}, {}, left_out)
    assert "approved or texts imported" in warning and "some also leave variants out by design" in warning


def test_an_ensemble_scored_on_fewer_texts_than_its_members_says_so() -> None:
    from services.ensembles import ensemble_warnings

    scored = {"val": {"scored": 40, "most_of_a_member": 40}, "test": {"scored": 30, "most_of_a_member": 45}}
    [warning] = ensemble_warnings([1, 2], {1: "a", 2: "a"}, scored)
    assert "scored on the 30 test texts its members share; a member was scored on 45" in warning
    assert ensemble_warnings([1, 2], {1: "a", 2: "a"}, {"val": scored["val"]}) == []
