"""Scoring before review: semantic similarity (a real sentence encoder), WordNet's synonyms in context, novelty,
the label model at creation with automatic rejection, and protected terms through the API and the CLI."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from tests.augment_fixtures import run_worker, train_ids
from tests.tiny_models import example_texts

SOURCE = "We passed the farm bill today to help rural families across the state."
CLOSE = "We approved the farm bill today to aid rural households across the state."
FAR = "Quilts, kites and lemonade: the county fair opens at noon with music for all."


# -- the sentence encoder ---------------------------------------------------------------------------------


def test_semantic_similarity_sees_meaning_and_is_batch_independent(sentence_encoder) -> None:
    sims = sentence_encoder.similarities([(SOURCE, CLOSE), (SOURCE, FAR), (SOURCE, SOURCE)])
    assert sims[0] > 0.8 and sims[1] < 0.3 and sims[2] == pytest.approx(1.0, abs=1e-5)
    vectors = sentence_encoder.embed(example_texts(40))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # A text's embedding does not depend on what it was batched (and padded) with.
    sentence_encoder._cache.clear()
    alone = sentence_encoder.embed([example_texts(40)[7]])[0]
    assert np.allclose(alone, vectors[7], atol=1e-5)


def test_the_semantic_filter_drops_meaning_changes_and_reuses_known_scores(sentence_encoder) -> None:
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams

    params = FilterParams(min_semantic_similarity=0.6, max_length_ratio=3.0, min_length_ratio=0.1)
    f = CandidateFilter(set(), [], params, training_texts=[SOURCE, "Another training text."], encoder=sentence_encoder)
    before = sentence_encoder.forwards
    verdicts = f.check([(SOURCE, CLOSE), (SOURCE, FAR), (SOURCE, FAR + " Really.")], [None, None, 0.95])
    assert [v.reason for v in verdicts] == [None, "low_semantic_similarity", None]
    assert verdicts[2].semantic_similarity == 0.95  # known from the augmenter: not encoded again
    assert sentence_encoder.forwards - before <= 3  # the source and two candidates, once each
    assert f.counts()["low_semantic_similarity"] == 1 and f.kept == 2
    assert verdicts[0].semantic_similarity > 0.8
    # Novelty: 1 − the closest training text (the source is one) — a one-word change adds little.
    assert 0 < verdicts[0].novelty < verdicts[2].novelty
    again = f.check([(SOURCE, FAR)])  # dropped for meaning earlier: judged afresh, not as a duplicate
    assert again[0].reason == "low_semantic_similarity"


def test_the_encoders_cache_never_drops_what_a_call_reads(tiny_mlm_dir, monkeypatch) -> None:
    """A long-lived worker's cache is full: the sources of a call, cached long ago, are read after the call's
    new candidates went in, and a cache trimmed before reading lost them (KeyError)."""
    from core.settings import Settings
    from workers.augment import encoder as encoder_module
    from workers.augment.models import get_sentence_encoder

    encoder = get_sentence_encoder(Settings(_env_file=None, similarity_model=str(tiny_mlm_dir), augment_device="cpu"))
    monkeypatch.setattr(encoder_module, "_CACHE_LIMIT", 4)
    texts = example_texts(6)
    encoder._cache.clear()
    encoder.embed(texts[:2])  # the sources: the oldest entries
    pairs = [(texts[0], texts[2]), (texts[1], texts[3]), (texts[0], texts[4]), (texts[1], texts[5])]
    sims = encoder.similarities(pairs)
    assert len(encoder._cache) == 4
    encoder._cache.clear()
    assert sims == pytest.approx(encoder.similarities(pairs), abs=1e-5)  # the same cosines from a cold cache


def test_the_same_text_from_two_sources_is_kept_beside_the_one_it_fits(sentence_encoder) -> None:
    """Two sources can yield the same text (a retweet, a stock phrase): dropped for its meaning beside one
    source, it is still kept beside the other, once; and a copy of a text kept is a duplicate, in order."""
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams

    params = FilterParams(min_semantic_similarity=0.6, max_length_ratio=3.0, min_length_ratio=0.1)
    f = CandidateFilter(set(), [], params, encoder=sentence_encoder)
    verdicts = f.check([(FAR, CLOSE), (SOURCE, CLOSE), (SOURCE + " Today.", CLOSE)])
    assert [v.reason for v in verdicts] == ["low_semantic_similarity", None, "duplicate"]
    assert f.kept == 1 and f.counts()["duplicate"] == 1
    assert f.check([(SOURCE, CLOSE)])[0].reason == "duplicate"  # kept in an earlier call: the job holds it


def test_wordnet_in_context_keeps_meaning_better_than_the_dictionary_alone(augment_nltk_dir, sentence_encoder) -> None:
    from workers.augment.params import WordNetParams
    from workers.augment.wordnet import WordNetAugmenter

    augmenter = WordNetAugmenter(augment_nltk_dir, encoder=lambda: sentence_encoder)
    texts = example_texts(160)[100:160]
    auto = augmenter.augment(texts, [2] * len(texts), seed=4, language="en")  # CPU: "auto" means off
    assert all(v.params["context"] == "off" and not v.details for vs in auto for v in vs)
    on = augmenter.augment(texts, [2] * len(texts), seed=4, language="en", params=WordNetParams(context="encoder"))
    pairs_off = [(t, v.text) for t, vs in zip(texts, auto, strict=True) for v in vs]
    pairs_on = [(t, v.text) for t, vs in zip(texts, on, strict=True) for v in vs]
    off_sim = sentence_encoder.similarities(pairs_off)
    on_sim = sentence_encoder.similarities(pairs_on)
    assert on_sim.mean() > off_sim.mean()
    for (_, _text), sim, v in zip(pairs_on, on_sim, [v for vs in on for v in vs], strict=True):
        assert v.params["context"] == "encoder" and v.params["context_model"] == sentence_encoder.name
        if v.details:  # it chose among several draws: the cosine it recorded is the variant's own
            assert v.details["semantic_similarity"] == pytest.approx(sim, abs=1e-3)
            assert v.details["alternatives"] >= 2


def test_auto_context_needs_no_encoder_and_an_explicit_one_must_load(augment_nltk_dir) -> None:
    from workers.augment.models import ModelUnavailable
    from workers.augment.params import WordNetParams
    from workers.augment.wordnet import WordNetAugmenter

    def broken():  # type: ignore[no-untyped-def]
        raise ModelUnavailable("cannot load encoder model 'x' — set AUGLOOP_SIMILARITY_MODEL")

    gpu_like = WordNetAugmenter(augment_nltk_dir, encoder=broken, context_by_default=True)
    out = gpu_like.augment([SOURCE], [2], seed=1, language="en")
    assert out[0] and out[0][0].params["context"] == "off"
    with pytest.raises(ModelUnavailable, match="AUGLOOP_SIMILARITY_MODEL"):
        gpu_like.augment([SOURCE], [2], seed=1, language="en", params=WordNetParams(context="encoder"))


# -- the augment job: similarity, novelty, the label model at creation --------------------------------------

pytestmark = pytest.mark.usefixtures("augment_env")


def _job(lead, engine, body: dict[str, Any]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = lead.post("/api/v1/augment", json={"dataset": "mini", **body})
    assert r.status_code == 202, r.text
    run_worker(engine)
    for _ in range(100):
        job = lead.get(f"/api/v1/jobs/{r.json()['id']}").json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not end")


def test_every_kept_variant_gets_semantic_similarity_and_novelty(lead, engine, mini_dataset, tiny_mlm_dir) -> None:
    from db.models import Sample
    from db.session import session_scope

    job = _job(lead, engine, {"sample_ids": train_ids(engine, "mini", limit=30), "methods": ["wordnet"]})
    assert job["status"] == "succeeded", job["last_error"]
    # The project's members read the result: the encoder's directory by its last part, not the server's layout.
    assert job["result"]["semantic_similarity"] == {"model": f"…/{tiny_mlm_dir.name}", "unavailable": None}
    assert job["result"]["label_model_id"] is None  # no run has finished for this dataset
    with session_scope(engine) as s:
        variants = s.query(Sample).filter(Sample.origin == "augmented").all()
        assert variants
        for v in variants:
            assert -1 <= v.semantic_similarity <= 1 and v.scores["semantic_similarity"] == v.semantic_similarity
            assert 0 <= v.novelty <= 1 - v.similarity + 1e-6 and v.label_consistency is None
    page = lead.get("/api/v1/datasets/mini/review-queue", params={"sort": "-semantic_similarity"}).json()
    values = [i["semantic_similarity"] for i in page["items"]]
    assert values == sorted(values, reverse=True) and all("novelty" in i for i in page["items"])


def test_a_semantic_filter_without_an_encoder_fails_the_job_naming_the_setting(
    lead, engine, mini_dataset, monkeypatch
) -> None:
    from core import settings as settings_mod
    from workers.augment.models import clear_cache

    monkeypatch.setenv("AUGLOOP_SIMILARITY_MODEL", "/nonexistent/encoder")
    settings_mod.get_settings.cache_clear()
    clear_cache()
    ids = train_ids(engine, "mini", limit=5)
    failed = _job(
        lead, engine, {"sample_ids": ids, "methods": ["wordnet"], "filters": {"min_semantic_similarity": 0.5}}
    )
    assert failed["status"] == "failed" and failed["attempts"] == 1
    assert "AUGLOOP_SIMILARITY_MODEL" in failed["last_error"]
    # Without the filter the job runs, and says why its variants have no semantic similarity.
    done = _job(lead, engine, {"sample_ids": ids, "methods": ["wordnet"]})
    assert done["status"] == "succeeded"
    assert "AUGLOOP_SIMILARITY_MODEL" in done["result"]["semantic_similarity"]["unavailable"]
    clear_cache()


def _train_run(lead, engine, encoder: str) -> int:  # type: ignore[no-untyped-def]
    from workers.main import Worker

    config = {
        "encoder": encoder,
        "epochs": 1,
        "max_length": 32,
        "batch_size": 16,
        "grad_accum": 1,
        "head_hidden": 32,
        "lr": 1e-3,
        "num_threads": 1,
        "rdrop_alpha": 0.0,
    }
    r = lead.post("/api/v1/training-runs", json={"dataset": "mini", "seeds": [1], "config": config})
    assert r.status_code == 202, r.text
    stats = Worker(engine, kinds=["train"], poll_seconds=0.05, lease_seconds=60).run(burst=True)
    assert stats.succeeded == 1, stats
    return int(r.json()["runs"][0]["id"])


def test_a_finished_model_scores_new_variants_and_may_reject_confident_label_changes(
    lead, annotator, admin, engine, mini_dataset, tiny_mlm_dir, monkeypatch
) -> None:
    from sqlalchemy import select

    from db.models import Review, Sample, TrainingRun, User
    from db.session import session_scope
    from services.label_model import class_thresholds
    from services.prediction import load_predictor, model_spec
    from services.variant_scoring import label_scores

    run_id = _train_run(lead, engine, str(tiny_mlm_dir))
    settings = admin.patch(
        "/api/v1/datasets/mini/variant-settings",
        json={"auto_reject_label_changed": True, "label_change_confidence": 0.5},
    )
    assert settings.status_code == 200, settings.text
    assert settings.json()["label_model_in_use"] == run_id and settings.json()["auto_reject_label_changed"]
    assert annotator.patch("/api/v1/datasets/mini/variant-settings", json={}).status_code == 403
    bad = admin.patch("/api/v1/datasets/mini/variant-settings", json={"label_change_confidence": 0.2})
    assert bad.status_code == 422 and bad.json()["field"].endswith("label_change_confidence")

    job = _job(
        lead, engine, {"sample_ids": train_ids(engine, "mini", limit=40), "methods": ["wordnet"], "n_per_text": 2}
    )
    assert job["status"] == "succeeded", job["last_error"]
    result = job["result"]
    assert result["label_model_id"] == run_id
    with session_scope(engine) as s:
        predictor = load_predictor(model_spec(s, run_id, None))
    with session_scope(engine) as s:
        variants = s.scalars(select(Sample).where(Sample.origin == "augmented").order_by(Sample.id)).all()
        assert variants and all(
            v.label_consistency is not None and v.scores["label_model"]["run_id"] == run_id for v in variants
        )
        # The scorer is recorded as a finished run's is, so that only a better run replaces these scores.
        trained = s.get_one(TrainingRun, run_id).metrics["val"]["overall_macro_f1"]
        assert all(
            v.scores["label_model"]["val_macro_f1"] == trained and v.scores["label_model"]["kind"] == "single"
            for v in variants
        )
        # The same model, asked independently: which variants it is confident change a label.
        probs = predictor.predict_proba([v.text for v in variants])
        # (the labels it gives are its decision rule's, as for every prediction of a run)
        # (a class flags below what 9 in 10 of its val texts get: the run's val p10 per class)
        below = class_thresholds(s.get_one(TrainingRun, run_id).metrics["val"])
        assert below, "the run records its val texts' p10 for the classes with 5 or more of them"
        expected = label_scores(
            predictor.tasks,
            probs,
            [v.labels for v in variants],
            confidence=0.5,
            predicted=predictor.decide(probs),
            flag_below=below,
        )
        changed = {v.id for v, e in zip(variants, expected, strict=True) if e.changed}
        assert changed, "the random tiny model disagrees with some labels"
        rejected = {v.id for v in variants if v.review_status == "rejected"}
        assert rejected == changed and result["automatic"]["rejected"] == len(changed)
        for v, e in zip(variants, expected, strict=True):
            assert v.label_consistency == pytest.approx(e.consistency, abs=1e-4)
            assert v.label_flag == e.flag and (v.auto_decision == "rejected") == bool(e.changed)
            assert v.scores["label_model"].get("unheeded", {}) == e.unheeded
            assert v.scores["label_model"]["flag_below"] == below
            assert v.scores["label_model"]["flagged"] == e.flagged
        # Another label where the variant scores its class as 9 in 10 of the class's val texts do is no flag (and
        # never a rejection): the tiny model says another label for many.
        unheeded_only = [v for v, e in zip(variants, expected, strict=True) if e.unheeded and not e.flag]
        assert unheeded_only and all(v.label_flag is False and v.auto_decision is None for v in unheeded_only)
        for v in unheeded_only:
            for task in v.scores["label_model"]["unheeded"]:
                intended = v.labels[task]
                assert v.scores["label_model"]["probs"][task][intended] >= below[task][intended] - 1e-6
        reviews = s.execute(select(Review, User.name).join(User, User.id == Review.user_id)).all()
        assert {r.sample_id for r, _ in reviews} == changed
        assert all(
            name == "auto" and r.automatic and r.decision == "reject" and r.reason == "label changed (model)"
            for r, name in reviews
        )
        assert all(v.review_count == 0 for v in variants)  # an automatic decision is no vote
        one = next(iter(changed))
    family = lead.get(f"/api/v1/samples/{one}").json()
    assert family["reviews"][0]["user"] == "auto" and family["reviews"][0]["automatic"] is True
    # A person who disagrees decides: their vote alone gives the status.
    current = family["sample"]["version"]
    r = lead.post(f"/api/v1/samples/{one}/decision", json={"decision": "approve", "version": current})
    assert r.status_code == 200 and r.json()["review_status"] == "approved" and r.json()["review_count"] == 1

    # Switched off while a job runs (it read the setting on when it began): no variant of it is rejected.
    import services.variant_generation as generation

    real_score_labels = generation._score_labels

    def switched_off_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        off = admin.patch("/api/v1/datasets/mini/variant-settings", json={"auto_reject_label_changed": False})
        assert off.status_code == 200, off.text
        return real_score_labels(*args, **kwargs)

    monkeypatch.setattr(generation, "_score_labels", switched_off_meanwhile)
    job = _job(
        lead,
        engine,
        {"sample_ids": train_ids(engine, "mini", limit=40), "methods": ["wordnet"], "n_per_text": 2, "seed": 9},
    )
    assert job["status"] == "succeeded", job["last_error"]
    assert job["result"]["flagged"] > 0 and job["result"]["automatic"]["rejected"] == 0, job["result"]


def test_the_reviewer_auto_cannot_hold_a_token(admin) -> None:
    r = admin.post("/api/v1/tokens", json={"name": "auto", "role": "annotator"})
    assert r.status_code == 422 and r.json()["field"] == "name"


# -- protected terms ----------------------------------------------------------------------------------------


def test_protected_terms_are_seeded_on_first_augmentation_and_edited_by_admins(
    lead, annotator, admin, engine, mini_dataset, monkeypatch
) -> None:
    from db.models import Sample
    from db.session import session_scope

    empty = lead.get("/api/v1/datasets/mini/protected-terms").json()
    assert empty["terms"] == [] and empty["seeded_at"] is None
    job = _job(lead, engine, {"sample_ids": train_ids(engine, "mini", limit=60), "methods": ["wordnet"]})
    seeded = lead.get("/api/v1/datasets/mini/protected-terms").json()
    assert seeded["seeded_at"] and seeded["terms"]
    assert all(t["origin"] == "seeded" and t["task"] and t["score"] > 0 for t in seeded["terms"])
    terms = {t["term"] for t in seeded["terms"]}
    assert job["status"] == "succeeded"
    with session_scope(engine) as s:
        changed = {
            e["from"].lower() for v in s.query(Sample).filter(Sample.origin == "augmented") for e in v.scores["edits"]
        }
    assert changed and not changed & terms  # no variant replaced a topic word

    assert annotator.post("/api/v1/datasets/mini/protected-terms", json={"add": ["x"]}).status_code == 403
    bad = admin.post("/api/v1/datasets/mini/protected-terms", json={"add": ["fine", "no#tag"]})
    assert bad.status_code == 422 and bad.json()["field"] == "add.1"
    some = min(terms)
    edited = admin.post(
        "/api/v1/datasets/mini/protected-terms", json={"add": ["Health Care", "veterans"], "remove": [some]}
    ).json()
    now = {t["term"]: t for t in edited["terms"]}
    assert some not in now and now["health care"]["origin"] == "manual"
    # at the cap, a swap (one removed, one added) fits, as does adding a term held already
    import services.protected_terms as protected_terms

    with monkeypatch.context() as patch:
        patch.setattr(protected_terms, "MAX_TERMS", len(now))
        swapped = admin.post("/api/v1/datasets/mini/protected-terms", json={"add": ["ballots"], "remove": ["veterans"]})
        assert swapped.status_code == 200, swapped.text
        assert admin.post("/api/v1/datasets/mini/protected-terms", json={"add": ["ballots"]}).status_code == 200
        full = admin.post("/api/v1/datasets/mini/protected-terms", json={"add": ["turnout"]})
        assert full.status_code == 422 and full.json()["field"] == "add"
    reseeded = admin.post("/api/v1/datasets/mini/protected-terms/seed", json={"per_class": 1}).json()
    again = {t["term"]: t for t in reseeded["terms"]}
    assert again["health care"]["origin"] == "manual"  # hand-added terms outlive a new seeding
    classes = [(t["task"], t["label"]) for t in again.values() if t["origin"] == "seeded"]
    assert classes and len(classes) == len(set(classes))  # one per class now


def test_the_terms_command(settings, engine, mini_dataset) -> None:
    from typer.testing import CliRunner

    from augloop.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["terms", "seed", "mini", "--per-class", "3"]).exit_code == 0
    added = runner.invoke(app, ["terms", "add", "mini", "abortion", "health care"])
    assert added.exit_code == 0 and "abortion" in added.output
    removed = runner.invoke(app, ["terms", "remove", "mini", "abortion"])
    assert removed.exit_code == 0 and "abortion" not in removed.output
    bad = runner.invoke(app, ["terms", "add", "mini", "#hashtag"])
    assert bad.exit_code == 2 and "not a term" in bad.output
    assert runner.invoke(app, ["terms", "list", "nope"]).exit_code == 2


def test_seeding_reads_a_fixed_sample_of_a_large_dataset(engine, mini_dataset, monkeypatch) -> None:
    """Seeding runs in the first augmentation request; on a dataset of a million texts it reads a sample of
    SEED_SAMPLE train originals (the same sample each time for the same dataset), not every text."""
    from db.models import Dataset
    from db.session import session_scope
    from services import protected_terms

    seen: list[int] = []
    real = protected_terms.class_terms

    def spy(texts, labels, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(len(texts))
        assert len(labels) == len(texts)
        return real(texts, labels, *args, **kwargs)

    monkeypatch.setattr(protected_terms, "class_terms", spy)
    monkeypatch.setattr(protected_terms, "SEED_SAMPLE", 120)
    runs = []
    for _ in range(2):
        with session_scope(engine) as s:
            dataset = s.query(Dataset).filter_by(name=mini_dataset).one()
            runs.append(sorted(t["term"] for t in protected_terms.seed(s, dataset, per_class=5)["terms"]))
    assert seen == [120, 120]
    assert runs[0] == runs[1]
