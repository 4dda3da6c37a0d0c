"""Compute within bounds (issue 13): a non-admin cannot queue runs of any size, any number of seeds, past the
project's cap on training jobs in flight, or with an encoder read from anywhere on a worker's disk; and no
error tells what exists there. Nothing trains here: queueing is what is bounded."""

from __future__ import annotations

import pytest

from services.compute_bounds import CONFIG_LIMITS, ENCODER_RULE, MAX_SEEDS

RUNS = "/api/v1/training-runs"


def body(**config) -> dict:
    return {"dataset": "psm", "config": {"lr_search": "off", **config}}


@pytest.mark.parametrize("key", sorted(CONFIG_LIMITS))
def test_every_bounded_config_key_is_refused_past_its_ceiling(lead, example_dataset, key) -> None:
    ceiling = CONFIG_LIMITS[key]
    too_much = ceiling * 2 if key == "budget_minutes" else int(ceiling) + 1
    r = lead.post(RUNS, json=body(**{key: too_much}))
    assert r.status_code == 422, r.text
    assert r.json()["field"] == f"config.{key}"
    assert lead.post("/api/v1/training-estimates", json=body(**{key: too_much})).status_code == 422


def test_checkpoints_every_few_steps_are_for_admins(lead, admin, example_dataset) -> None:
    from services.compute_bounds import MIN_CHECKPOINT_EVERY_STEPS

    often = body(checkpoint_every_steps=1)
    r = lead.post(RUNS, json=often)
    assert r.status_code == 422 and r.json()["field"] == "config.checkpoint_every_steps", r.text
    assert lead.post(RUNS, json=body(checkpoint_every_steps=MIN_CHECKPOINT_EVERY_STEPS)).status_code == 202
    assert admin.post(RUNS, json=often).status_code == 202


@pytest.mark.parametrize(("key", "value"), [("weight_decay", 1e6), ("task_weights", {"bias": 1e30})])
def test_values_that_make_training_diverge_are_refused_for_everyone(admin, example_dataset, key, value) -> None:
    r = admin.post(RUNS, json=body(**{key: value}))
    assert r.status_code == 422 and r.json()["field"].startswith(f"config.{key}"), r.text


def test_the_outsiders_attempt_is_refused_and_an_admin_is_not_bound(lead, admin, example_dataset) -> None:
    huge = {"epochs": 10**9, "head_hidden": 10**9, "head_layers": 10**9, "batch_size": 10**9}
    r = lead.post(RUNS, json=body(**huge))
    assert r.status_code == 422 and r.json()["field"].startswith("config.")
    seeds = lead.post(RUNS, json={**body(), "seeds": list(range(MAX_SEEDS + 1))})
    assert seeds.status_code == 422 and seeds.json()["field"] == "seeds"
    assert lead.post(RUNS, json={**body(), "seeds": list(range(MAX_SEEDS))}).status_code == 202
    assert admin.post(RUNS, json={**body(epochs=200), "seeds": list(range(16))}).status_code == 202


def test_a_projects_training_jobs_in_flight_are_capped(lead, admin, example_dataset, monkeypatch) -> None:
    from core.settings import get_settings

    monkeypatch.setenv("AUGLOOP_MAX_TRAINING_JOBS_PER_PROJECT", "3")
    get_settings.cache_clear()
    assert lead.post(RUNS, json={**body(), "seeds": [1, 2]}).status_code == 202
    over = lead.post(RUNS, json={**body(), "seeds": [3, 4]})
    assert over.status_code == 429, over.text
    assert over.json()["field"] == "seeds" and over.json()["limit"] == 3 and over.json()["in_flight"] == 4
    assert len(lead.get(RUNS).json()) == 2, "the refused request left runs behind"
    assert lead.post(RUNS, json={**body(), "seeds": [3]}).status_code == 202  # within the cap
    assert lead.post(RUNS, json={**body(), "seeds": [4]}).status_code == 429
    # a job that ended (here: cancelled) no longer counts
    job_id = next(r["job_id"] for r in lead.get(RUNS).json() if r["seed"] == 1)
    assert lead.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    assert lead.post(RUNS, json={**body(), "seeds": [4]}).status_code == 202
    assert admin.post(RUNS, json={**body(), "seeds": [5, 6]}).status_code == 202  # admins are not capped
    get_settings.cache_clear()


def test_a_learning_rate_selection_counts_the_runs_it_will_queue(lead, example_dataset, monkeypatch) -> None:
    """A selection is one job that queues a training job per seed when it ends: counted as one job, three
    requests of 5 seeds each passed a cap of 3 and became 15 training jobs in flight."""
    from core.settings import get_settings

    monkeypatch.setenv("AUGLOOP_MAX_TRAINING_JOBS_PER_PROJECT", "3")
    get_settings.cache_clear()
    selected = {**body(), "config": {"lr_search": "on"}}
    over = lead.post(RUNS, json={**selected, "seeds": [1, 2, 3, 4]})
    assert over.status_code == 429, over.text
    assert over.json()["in_flight"] == 4 and over.json()["field"] == "seeds"
    assert lead.post(RUNS, json={**selected, "seeds": [1, 2, 3]}).status_code == 202
    assert lead.post(RUNS, json={**selected, "seeds": [4]}).status_code == 429
    get_settings.cache_clear()


def test_tfidf_members_do_not_count_against_the_training_cap(lead, example_dataset, monkeypatch) -> None:
    """A TF-IDF member trains in seconds on a CPU: counted as a run, an impact report of six arms and 3 seeds
    with their members (24 runs) filled the default cap on its own."""
    from core.settings import get_settings

    monkeypatch.setenv("AUGLOOP_MAX_TRAINING_JOBS_PER_PROJECT", "3")
    get_settings.cache_clear()
    r = lead.post(RUNS, json={**body(), "seeds": [1, 2, 3], "classical": True})
    assert r.status_code == 202, r.text
    assert sorted(run["kind"] for run in r.json()["runs"]) == ["single", "single", "single", "tfidf"]
    get_settings.cache_clear()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tasks", [f"task{i}" for i in range(1025)]),
        ("exclude_methods", [f"m{i}" for i in range(65)]),
        ("exclude_methods", ["m" * 65]),
        ("task_weights", {f"task{i}": 1.0 for i in range(1025)}),
    ],
)
def test_lists_and_maps_in_a_config_are_bounded(lead, example_dataset, key, value) -> None:
    """The body is validated before anything is looked up, on any dataset name (48,000 task names held the API's
    event loop for 25 s in a quadratic duplicate check, for a user of no project), and a 10 MB exclude_methods
    list was stored once per seed."""
    for dataset in ("psm", "no-such-dataset"):
        r = lead.post(RUNS, json={**body(**{key: value}), "dataset": dataset})
        assert r.status_code == 422 and r.json()["field"].startswith(f"config.{key}"), r.text[:300]


def test_a_projects_exports_and_model_jobs_in_flight_are_capped(annotator, admin, example_dataset, monkeypatch):
    """Any member may queue an export: 300 of them went ahead of every other project's jobs, each writing a file
    of the dataset. Exports, pseudo-labelling and label-model scoring jobs share a cap per project."""
    from core.settings import get_settings

    monkeypatch.setenv("AUGLOOP_MAX_OTHER_JOBS_PER_PROJECT", "2")
    get_settings.cache_clear()
    exports = f"/api/v1/datasets/{example_dataset}/exports"
    assert [annotator.post(exports, json={"format": "csv"}).status_code for _ in range(2)] == [202, 202]
    over = annotator.post(exports, json={"format": "jsonl"})
    assert over.status_code == 429, over.text
    assert over.json()["limit"] == 2 and over.json()["in_flight"] == 3
    jobs = admin.get("/api/v1/jobs", params={"kind": "export"}).json()["items"]
    assert len(jobs) == 2, "the refused request left a job behind"
    assert admin.post(f"/api/v1/jobs/{jobs[0]['id']}/cancel").status_code == 200  # an ended job no longer counts
    assert annotator.post(exports, json={"format": "jsonl"}).status_code == 202
    assert admin.post(exports, json={"format": "csv"}).status_code == 202  # admins are not capped
    get_settings.cache_clear()


def test_encoders_come_from_the_hub_or_the_models_directory(lead, admin, example_dataset, settings, tmp_path) -> None:
    models = settings.resolved_models_dir
    inside = tmp_path / "my-encoder"  # tmp_path lies under pytest's base directory, the tests' models dir
    assert inside.resolve().is_relative_to(models)
    escape = tmp_path / "escape"
    escape.symlink_to("/etc")
    for ok in ("bert-base-multilingual-cased", "FacebookAI/xlm-roberta-base", str(inside)):
        assert lead.post(RUNS, json=body(encoder=ok)).status_code == 202, ok
    refused = {}
    for bad in (
        "/root/.ssh",
        "/no/such/directory",
        "/etc",
        str(escape),
        f"{inside}/../../..",
        "../x",
        "./x",
        "~/models",
        "org/../x",
        "a/b/c",
        ".ssh",
    ):
        r = lead.post(RUNS, json=body(encoder=bad))
        assert r.status_code == 422, bad
        refused[bad] = r.json()
    # the answer is the same whether the path exists (/etc, /root/.ssh) or not: it names the rule, not the disk
    assert all(v == {"detail": ENCODER_RULE, "field": "config.encoder"} for v in refused.values()), refused
    # the estimate reads an encoder's config.json: refused before it looks
    assert lead.post("/api/v1/training-estimates", json=body(encoder="/etc")).status_code == 422
    assert admin.post(RUNS, json=body(encoder="/opt/models/custom")).status_code == 202  # admins are not bound


def test_the_estimate_does_not_tell_a_lead_which_folders_exist(lead, example_dataset, tmp_path, monkeypatch) -> None:
    """A hub id (`org/name`) is a folder name too: read relative to the API's working directory, the estimate's
    basis said "scaled to 7 × 123 (its config.json)" where such a folder exists, "assumed bert-base size" where
    not. For a non-admin it is the same answer either way."""
    probe = tmp_path / "cwdprobe" / "secret"
    probe.mkdir(parents=True)
    (probe / "config.json").write_text('{"num_hidden_layers": 7, "hidden_size": 123}', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    answers = []
    for encoder in ("cwdprobe/secret", "cwdprobe/absent"):
        r = lead.post("/api/v1/training-estimates", json=body(encoder=encoder))
        assert r.status_code == 200, r.text
        answers.append(r.json()["basis"].replace(encoder, "X"))
    assert answers[0] == answers[1] and "7 × 123" not in answers[0]


def test_the_servers_default_encoder_is_a_leads_to_train_with(lead, example_dataset, monkeypatch) -> None:
    """`augloop demo` points AUGLOOP_TRAINER_DEFAULT_ENCODER at a directory outside the models directory: the
    operator's choice is every member's default, so a lead may train with it (and with nothing else there)."""
    from core.settings import get_settings

    chosen = "/srv/encoders/minilm"
    monkeypatch.setenv("AUGLOOP_TRAINER_DEFAULT_ENCODER", chosen)
    get_settings.cache_clear()
    assert lead.post("/api/v1/training-estimates", json=body(encoder=chosen)).status_code == 200
    assert lead.post(RUNS, json=body(encoder=chosen)).status_code == 202
    assert lead.post(RUNS, json=body(encoder="/srv/encoders/other")).status_code == 422


def test_the_estimate_shows_members_the_default_encoder_as_runs_do(lead, annotator, example_dataset, monkeypatch):
    """The operator's default encoder, a folder of the server's, is shown to members by its last part in a run;
    the estimate (any member may ask) answered it whole (an attacker's find)."""
    from core.settings import get_settings

    monkeypatch.setenv("AUGLOOP_TRAINER_DEFAULT_ENCODER", "/srv/acme/models/secret-enc")
    get_settings.cache_clear()
    for who in (lead, annotator):
        r = who.post("/api/v1/training-estimates", json={"dataset": example_dataset})
        assert r.status_code == 200, r.text
        assert r.json()["config"]["encoder"] == "…/secret-enc" and "/srv/acme" not in r.text, r.json()["config"]


def test_a_workers_encoder_error_does_not_tell_what_exists(tmp_path, caplog) -> None:
    import logging

    from trainer.errors import TrainerError
    from trainer.model import check_encoder_found, load_encoder

    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "a-file").write_text("secret", encoding="utf-8")
    # A folder without config.json: transformers guessed the model type from its name, "bert-new" as BERT (it
    # passed `augloop train`'s check, which then recorded a failed run) and "empty" as MPT (an AttributeError,
    # retried as a crash); a config without weights passed that check too.
    (tmp_path / "bert-new").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    names = ("missing", "not-a-model", "a-file", "bert-new", "empty", "config-only")
    messages = []
    caplog.set_level(logging.INFO, logger="trainer.model")
    for path in (tmp_path / name for name in names):
        for check in (load_encoder, check_encoder_found):
            with pytest.raises(TrainerError) as err:
                check(path)
            messages.append(err.value.message.replace(str(path), "PATH"))
    assert len(set(messages)) == 1, messages
    assert "exist" not in messages[0] and "config.json" not in messages[0]
    # the cause at INFO, for the worker's log: `augloop train` printed a WARNING above its own one-line error
    told = [r.getMessage() for r in caplog.records if r.name == "trainer.model"]
    assert not [r for r in caplog.records if r.name == "trainer.model" and r.levelno >= logging.WARNING], told
    for name in names[3:]:
        assert any(str(tmp_path / name) in said for said in told), (name, told)
