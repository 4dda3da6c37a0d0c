"""Label-model scores through real (tiny) training runs on a worker: a run replaces earlier scores only with a
better val macro-F1, a person's choice replaces them anyway; and the training estimate before a run starts."""

from __future__ import annotations

from typing import Any

from tests.test_trainer_api import drain, fast
from tests.trainer_fixtures import add_variant, import_small, tiny_encoder  # noqa: F401 (fixture)


def label_model_of(engine: Any, sample_id: int) -> dict[str, Any]:
    from db.models import Sample
    from db.session import session_scope

    with session_scope(engine) as s:
        return dict(s.get_one(Sample, sample_id).scores["label_model"])


def test_scores_follow_the_better_run_or_a_persons_choice(lead, engine, tiny_encoder: str, monkeypatch) -> None:
    from sqlalchemy import update

    import services.label_model as label_model
    from db.models import Sample
    from db.session import session_scope

    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    variant = add_variant(engine, name, "train", "pending", "a pending variant about the budget vote today")

    def train(seed: int) -> int:
        r = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [seed], "config": fast(tiny_encoder)})
        assert r.status_code == 202, r.text
        assert drain(engine, ["train"]).succeeded == 1
        return r.json()["runs"][0]["id"]

    first = train(1)
    scored = label_model_of(engine, variant)
    run = lead.get(f"/api/v1/training-runs/{first}").json()
    assert scored["run_id"] == first and scored["kind"] == "single" and scored["chosen"] is False
    assert scored["val_macro_f1"] == run["val_macro_f1"] and set(scored["probs"]) == {"bias", "message"}
    summary = lead.get(f"/api/v1/datasets/{name}/label-model").json()
    assert [(s["run_id"], s["pending"], s["chosen"]) for s in summary["scorers"]] == [(first, 1, False)]

    # Pretend the first run was excellent: a second, ordinary run must leave its scores alone.
    with session_scope(engine) as s:
        s.execute(
            update(Sample).where(Sample.id == variant).values(scores={"label_model": {**scored, "val_macro_f1": 0.99}})
        )
    second = train(2)
    assert label_model_of(engine, variant)["run_id"] == first
    job = lead.get("/api/v1/jobs", params={"kind": "train"}).json()["items"][0]
    assert job["result"]["variants_scored"] == 0 and job["result"]["variants_not_rescored"] == 1

    # A person chooses the second run: its scores replace the "better" ones. The job predicts a page at a
    # time and writes each page before the next (a million pending variants are not held at once).
    other = add_variant(engine, name, "train", "pending", "another pending variant about the county fair")
    pages: list[list[int]] = []
    real_write = label_model.write_scores

    def record_page(engine, run_id, scores, **kwargs):  # type: ignore[no-untyped-def]
        pages.append([x.sample_id for x in scores])
        return real_write(engine, run_id, scores, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(label_model, "SCORING_PAGE", 1)
        patched.setattr(label_model, "write_scores", record_page)
        chosen = lead.post(f"/api/v1/datasets/{name}/label-model", json={"model_id": second})
        assert chosen.status_code == 202 and chosen.json()["kind"] == "label_scores"
        assert drain(engine, ["label_scores"]).succeeded == 1
    after = label_model_of(engine, variant)
    assert after["run_id"] == second and after["chosen"] is True
    assert label_model_of(engine, other)["run_id"] == second
    # ... and GET says so: the person's choice, not an automatic rescoring.
    summary = lead.get(f"/api/v1/datasets/{name}/label-model").json()
    assert [(s["run_id"], s["pending"], s["chosen"]) for s in summary["scorers"]] == [(second, 2, True)]
    assert pages == [[variant], [other]]
    job = lead.get(f"/api/v1/jobs/{chosen.json()['id']}").json()
    assert job["result"]["pending"] == job["result"]["scored"] == 2
    assert job["progress_done"] == job["progress_total"] == 2
    # ... and so can an ensemble.
    ensemble = lead.post("/api/v1/ensembles", json={"run_ids": [first, second]}).json()
    lead.post(f"/api/v1/datasets/{name}/label-model", json={"model_id": ensemble["id"]})
    assert drain(engine, ["label_scores"]).succeeded == 1
    after = label_model_of(engine, variant)
    assert after["run_id"] == ensemble["id"] and after["kind"] == "ensemble"
    assert after["val_macro_f1"] == ensemble["val_macro_f1"]

    bad = lead.post(f"/api/v1/datasets/{name}/label-model", json={"model_id": 999_999})
    assert bad.status_code == 404 and bad.json()["field"] == "model_id"

    # The estimate before the next run: measured on the runs above, scaled to the new length.
    estimate = lead.post(
        "/api/v1/training-estimates",
        json={"dataset": name, "seeds": [1, 2], "config": {**fast(tiny_encoder), "max_length": 64}},
    ).json()
    assert estimate["config"]["max_length"] == 64 and estimate["config"]["focal_gamma"] == 2.0
    assert estimate["train_examples"] == 40 and estimate["eval_examples"] == 32 and estimate["runs"] == 2
    assert f"run #{second}" in estimate["basis"] and estimate["seconds_total"] > estimate["seconds_per_run"] > 0

    # With no variant pending there is nothing to rescore: said, and no job that loads the model to score none
    # (it was queued and succeeded at 0 of 0)
    with session_scope(engine) as s:
        s.execute(update(Sample).where(Sample.id.in_([variant, other])).values(review_status="rejected"))
    jobs_before = lead.get("/api/v1/jobs", params={"kind": "label_scores"}).json()["total"]
    nothing = lead.post(f"/api/v1/datasets/{name}/label-model", json={"model_id": second})
    assert nothing.status_code == 422 and nothing.json()["field"] == "dataset"
    assert nothing.json()["detail"].startswith(f"dataset {name!r} has no pending variants to rescore")
    assert lead.get("/api/v1/jobs", params={"kind": "label_scores"}).json()["total"] == jobs_before


def _families_the_trainer_sees(engine: Any, name: str, n: int, seed: int) -> int:
    """The texts of an epoch of a run with max_train_samples n: the trainer's own subsample and families."""
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.training_data import load_split_data
    from trainer.data import families_of
    from trainer.examples import subsample

    with session_scope(engine) as s:
        train = load_split_data(s, get_dataset(s, name)).train
    return len(families_of(subsample(train, n, seed)))


def test_estimate_without_a_measured_run(lead, engine, tmp_path) -> None:
    import json

    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    encoder = tmp_path / "enc"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"num_hidden_layers": 6, "hidden_size": 384}))

    def estimate(**config: Any) -> dict[str, Any]:
        r = lead.post("/api/v1/training-estimates", json={"dataset": name, "config": config})
        assert r.status_code == 200, r.text
        return r.json()

    small = estimate(encoder=str(encoder), epochs=4, max_length=64)
    assert "6 × 384" in small["basis"] and small["config"]["epochs"] == 4
    big = estimate(encoder="bert-base-multilingual-cased", epochs=4, max_length=64)
    assert "assumed bert-base size" in big["basis"] and big["seconds_per_run"] > 4 * small["seconds_per_run"]
    assert estimate(encoder=str(encoder), epochs=8, max_length=64)["seconds_per_run"] > small["seconds_per_run"]
    for k in range(3):  # three approved variants of one original: an epoch shows all, or one of the family
        add_variant(engine, name, "train", "approved", f"a variant of the first original, number {k}")
    every = estimate(encoder=str(encoder), epochs=4, max_length=64, variant_sampling="all")
    assert every["train_examples"] == 43
    drawn = estimate(encoder=str(encoder), epochs=4, max_length=64)  # the default: one text per family
    assert drawn["train_examples"] == 40 and drawn["config"]["variant_sampling"] == "one_per_source"
    assert every["train_texts"] == drawn["train_texts"] == 43  # what the run trains on in all (its train_samples)
    # max_train_samples draws texts before families form, as the trainer does: the estimate counts what it sees
    for n, seed in ((12, 0), (30, 3), (43, 1)):
        counted = estimate(encoder=str(encoder), epochs=4, max_length=64, max_train_samples=n, seed=seed)
        assert counted["train_examples"] == _families_the_trainer_sees(engine, name, n, seed), (n, seed)
    config = {"encoder": str(encoder), "epochs": 4, "max_length": 64, "max_train_samples": 30}
    seeded = lead.post("/api/v1/training-estimates", json={"dataset": name, "config": config, "seeds": [5, 6]})
    assert seeded.json()["train_examples"] == _families_the_trainer_sees(engine, name, 30, 5)  # the first run's
    bad = lead.post("/api/v1/training-estimates", json={"dataset": name, "config": {"epochs": 0}})
    assert bad.status_code == 422 and bad.json()["field"] == "config.epochs"


def test_the_summary_tells_a_persons_choice_from_an_automatic_rescoring(any_engine) -> None:
    """GET .../label-model groups the pending variants by the run that scored them and by whether a person chose
    it (the JSON paths of the scores, on SQLite and on Postgres)."""
    from sqlalchemy import update

    from db.models import Sample
    from db.session import session_scope
    from services.label_model import label_model_summary

    name = import_small(any_engine, n_train=8, n_val=4, n_test=4, n_unlabelled=0)
    texts = ["a chosen score about the vote", "another chosen score", "an automatic score", "not scored yet"]
    ids = [add_variant(any_engine, name, "train", "pending", text) for text in texts]
    scores = [(99, True, True), (99, True, False), (99, False, True)]
    with session_scope(any_engine) as s:
        for sample_id, (run_id, chosen, flag) in zip(ids, scores, strict=False):
            label_model = {"run_id": run_id, "chosen": chosen, "val_macro_f1": 0.5}
            s.execute(
                update(Sample)
                .where(Sample.id == sample_id)
                .values(scores={"label_model": label_model}, label_flag=flag)
            )
    with session_scope(any_engine) as s:
        summary = label_model_summary(s, name, None)
    got = {(x["run_id"], x.get("chosen")): (x["pending"], x["flagged"]) for x in summary["scorers"]}
    assert got == {(99, True): (2, 1), (99, False): (1, 1), (None, False): (1, 0)}


def test_a_run_that_fails_after_scoring_withdraws_its_scores(lead, engine, tiny_encoder: str, monkeypatch) -> None:
    """A run scores the pending variants in batches before it is recorded; one that then fails for good (a full
    disk as it writes its artifacts, a kill on its last attempt) left its scores on the variants and was named
    the dataset's label model, though no model of it was stored: the review queue's order, the flags and
    auto-approval rested on it. Its end withdraws them; a score of another run is kept, and one it had replaced
    (with its consistency and flag) is given back: withdrawing left those variants with no score at all."""
    import services.run_execution as run_execution
    from core.settings import get_settings
    from db.models import Sample
    from db.session import session_scope
    from tests.test_trainer_api import drain, fast
    from tests.trainer_fixtures import add_variant, import_small

    monkeypatch.setenv("AUGLOOP_JOB_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    name = import_small(engine, n_train=40, n_val=16, n_test=16, n_unlabelled=0)
    variant = add_variant(engine, name, "train", "pending", "a pending variant about the budget vote today")
    other = add_variant(engine, name, "train", "pending", "another pending variant on the school board")
    weaker = add_variant(engine, name, "train", "pending", "a third pending variant about the harbour bill")
    before = {"run_id": 998, "probs": {"bias": {"neutral": 0.4, "partisan": 0.6}}}  # of unknown quality: replaced
    with session_scope(engine) as s:
        s.get_one(Sample, other).scores = {"similarity": 0.5, "label_model": {"run_id": 999, "val_macro_f1": 0.99}}
        s.get_one(Sample, variant).scores = {"similarity": 0.7}
        held = s.get_one(Sample, weaker)
        held.scores, held.label_consistency, held.label_flag = {"similarity": 0.6, "label_model": before}, 0.42, True
    written = []

    def disk_full(self, *args: Any, **kwargs: Any) -> None:  # its artifacts cannot be written: the run fails
        written.append(label_model_of(engine, variant).get("run_id"))
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(run_execution._Attempt, "record", disk_full)
        r = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [1], "config": fast(tiny_encoder)})
        assert r.status_code == 202, r.text
        failed = r.json()["runs"][0]["id"]
        drain(engine, ["train"])
    get_settings.cache_clear()
    assert written and set(written) == {failed}, "each attempt had scored the variant before it failed"
    assert lead.get(f"/api/v1/training-runs/{failed}").json()["status"] == "failed"
    with session_scope(engine) as s:
        scored = s.get_one(Sample, variant)
        assert (scored.scores, scored.label_consistency, scored.label_flag) == ({"similarity": 0.7}, None, None)
        assert s.get_one(Sample, other).scores["label_model"]["run_id"] == 999
        back = s.get_one(Sample, weaker)
        assert (back.scores, back.label_consistency, back.label_flag) == (
            {"similarity": 0.6, "label_model": before},
            0.42,
            True,
        )
    scorers = lead.get(f"/api/v1/datasets/{name}/label-model").json()["scorers"]
    assert failed not in [scorer["run_id"] for scorer in scorers], scorers
    # a run that is recorded keeps its scores, without the ones it replaced
    r = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [1], "config": fast(tiny_encoder)})
    drain(engine, ["train"])
    done = r.json()["runs"][0]["id"]
    assert lead.get(f"/api/v1/training-runs/{done}").json()["status"] == "succeeded"
    with session_scope(engine) as s:
        entry = s.get_one(Sample, weaker).scores["label_model"]
    assert entry["run_id"] == done and "replaced" not in entry, entry
