"""API → queue → worker → augmenter → filters → pending rows, for every method, with provenance and errors."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import delete, select

from tests.augment_fixtures import example_slice, run_worker, train_ids

pytestmark = pytest.mark.usefixtures("augment_env")


def _job(client, job_id: int) -> dict:  # type: ignore[no-untyped-def]
    r = client.get(f"/api/v1/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def _variants(engine, job_id: int) -> list:  # type: ignore[no-untyped-def]
    from sqlalchemy.orm import Session

    from db.models import Sample

    with Session(engine) as s:
        return list(s.scalars(select(Sample).where(Sample.job_id == job_id).order_by(Sample.id)))


def test_wordnet_job_lands_pending_variants_with_provenance(lead, engine, mini_dataset) -> None:
    from sqlalchemy.orm import Session

    from db.models import Sample

    sources = train_ids(engine, mini_dataset, limit=40)
    r = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "sample_ids": sources, "methods": ["wordnet"], "n_per_text": 2, "seed": 9},
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "augment" and job["status"] == "queued" and job["progress_total"] == 80
    stats = run_worker(engine)
    assert stats.succeeded == 1
    done = _job(lead, job["id"])
    assert done["status"] == "succeeded" and done["progress_done"] == done["progress_total"] == 80
    info = done["progress_info"]
    dropped = info["dropped"]
    assert set(dropped) >= {"identical_to_source", "duplicate", "length_ratio", "leakage", "no_candidate"}
    assert info["kept"] == done["result"]["kept"] > 30
    assert done["result"]["generated"] == 80 - dropped["no_candidate"]
    assert (
        done["result"]["kept"] + sum(v for k, v in dropped.items() if k not in ("no_candidate", "duplicate_at_insert"))
        == done["result"]["generated"]
    )
    variants = _variants(engine, job["id"])
    assert len(variants) == done["result"]["kept"]
    with Session(engine) as s:
        for v in variants:
            parent = s.get(Sample, v.parent_id)
            assert parent.id in sources and parent.split == "train"
            assert v.origin == "augmented" and v.review_status == "pending" and v.split == "train"
            assert v.method == "wordnet" and v.model_name == "wordnet-3.0" and v.seed == 9 and v.job_id == job["id"]
            assert v.method_params["aug_p"] == 0.3 and v.method_params["variant_index"] in (0, 1)
            assert 0 < v.similarity < 1 and v.scores["similarity"] == v.similarity and v.scores["edits"]
            assert v.labels == parent.labels and len(v.labels) == 3
            assert v.text != parent.text


def test_same_job_same_seed_same_variants(lead, engine, mini_dataset) -> None:
    from db.models import Sample
    from db.session import session_scope

    body = {
        "dataset": "mini",
        "sample_ids": train_ids(engine, mini_dataset, limit=25),
        "methods": ["wordnet", "mlm"],
        "n_per_text": 2,
        "seed": 3,
        "params": {"mlm": {"min_prob": 0.0}},
    }
    first = lead.post("/api/v1/augment", json=body).json()["id"]
    run_worker(engine)
    texts = [(v.parent_id, v.method, v.text) for v in _variants(engine, first)]
    assert {m for _, m, _ in texts} == {"wordnet", "mlm"}
    with session_scope(engine) as s:  # forget them (as if rejected and purged), then run the same job again
        s.execute(delete(Sample).where(Sample.job_id == first))
    second = lead.post("/api/v1/augment", json=body).json()["id"]
    run_worker(engine)
    assert [(v.parent_id, v.method, v.text) for v in _variants(engine, second)] == texts
    # The rerun with everything already present keeps nothing: duplicates of the dataset.
    third = lead.post("/api/v1/augment", json=body).json()["id"]
    run_worker(engine)
    result = _job(lead, third)["result"]
    assert result["kept"] == 0 and result["dropped"]["duplicate"] >= len(texts)


def test_mlm_and_backtranslation_through_the_queue(lead, engine, mini_dataset, tiny_mlm_dir) -> None:
    assert lead.app.state.settings.mlm_model == str(tiny_mlm_dir)  # the app validates with the tiny models
    sources = train_ids(engine, mini_dataset, limit=12)
    r = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "sample_ids": sources,
            "methods": ["mlm", "backtranslation"],
            "n_per_text": 2,
            "seed": 1,
            "params": {
                "mlm": {"min_prob": 0.0},
                "backtranslation": {"max_new_tokens": 16, "sample_back": True},
            },
            # Random models produce word salad: relax the length bounds so that some of it reaches review.
            "filters": {"min_length_ratio": 0.05, "max_length_ratio": 20},
        },
    )
    assert r.status_code == 202, r.text
    run_worker(engine)
    job = _job(lead, r.json()["id"])
    assert job["status"] == "succeeded", job["last_error"]
    variants = _variants(engine, job["id"])
    by_method = {m: [v for v in variants if v.method == m] for m in ("mlm", "backtranslation")}
    assert by_method["mlm"] and by_method["backtranslation"]
    assert all(v.model_name == str(tiny_mlm_dir) for v in by_method["mlm"])
    for v in by_method["backtranslation"]:
        assert v.method_params["pivot"] == "de" and v.method_params["max_new_tokens"] == 16
        assert "→" in v.model_name and v.scores["pivot_text"] and v.review_status == "pending"
    assert job["result"]["per_method"]["mlm"]["kept"] == len(by_method["mlm"])


def test_free_texts_wait_for_review_like_variants(lead, annotator, engine, mini_dataset) -> None:
    """Texts sent to POST /augment are submissions, not trusted originals: pending in the review queue, with
    who sent them, kept out of training (with their variants) until another member approves them: their
    author cannot approve or edit them, one by one or in bulk (they may reject them)."""
    from db.datasets import get_dataset, training_samples
    from db.models import Sample, User
    from db.session import session_scope
    from services.augmentation import load_sources

    text = "Proud to vote for the farm bill today: it helps rural families and protects our water."
    labels = {"bias": "neutral", "message": "policy", "audience": "constituency"}
    r = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "texts": [{"text": text, "labels": labels}],
            "methods": ["wordnet"],
            "n_per_text": 3,
        },
    )
    assert r.status_code == 202, r.text
    (item,) = r.json()["params"]["items"]
    with session_scope(engine) as s:
        sample = s.get(Sample, item["sample_id"])
        assert (sample.origin, sample.review_status, sample.split) == ("submitted", "pending", "train")
        assert sample.labels == labels and s.get(User, sample.created_by).name == "lena-lead"
        assert load_sources(s, get_dataset(s, "mini"), [sample.id])[0].text == text
    run_worker(engine)
    variants = _variants(engine, r.json()["id"])
    assert variants and all(v.parent_id == item["sample_id"] and v.labels == labels for v in variants)
    queue = lead.get("/api/v1/datasets/mini/review-queue", params={"origin": "submitted"}).json()
    assert [i["id"] for i in queue["items"]] == [item["sample_id"]], "the submission waits in the review queue"
    # Its card says who submitted it (their labels are what its approver approves); a variant's says nobody.
    assert queue["items"][0]["submitted_by"] == "lena-lead" and queue["items"][0]["labels"] == labels

    def trains() -> set[int]:
        with session_scope(engine) as s:
            return {x.id for x in training_samples(s, get_dataset(s, "mini"))}

    first = variants[0]
    cards = annotator.get("/api/v1/review-cards", params={"ids": f"{item['sample_id']},{first.id}"}).json()
    assert [c["submitted_by"] for c in cards] == ["lena-lead", None]
    # a variant of one's own submission is a paraphrase of one's own text: another member approves it too
    refused = lead.post(f"/api/v1/samples/{first.id}/decision", json={"decision": "approve", "version": first.version})
    assert refused.status_code == 403, refused.text
    annotator.post(f"/api/v1/samples/{first.id}/decision", json={"decision": "approve", "version": first.version})
    assert item["sample_id"] not in trains() and first.id not in trains(), "unreviewed submission trained"
    for decision in ({"decision": "approve"}, {"decision": "edit", "text": text + " Really."}):
        own = lead.post(f"/api/v1/samples/{item['sample_id']}/decision", json={**decision, "version": 1})
        assert own.status_code == 403 and own.json()["field"] == "sample_id", own.text
    for selection in ({"sample_ids": [item["sample_id"]]}, {"filter": {"origin": ["submitted"]}}):
        bulk = lead.post(
            "/api/v1/datasets/mini/bulk-decisions", json={"decision": "approve", "confirm": True, **selection}
        )
        assert bulk.status_code == 200 and bulk.json()["applied"] == 0, bulk.text
        if "sample_ids" in selection:  # named, it is said why not
            assert bulk.json()["skipped"] == {"own_submission": 1}, bulk.text
    assert item["sample_id"] not in trains(), "its author's own approval trained a submission"
    ok = annotator.post(f"/api/v1/samples/{item['sample_id']}/decision", json={"decision": "approve", "version": 1})
    assert ok.status_code == 200 and ok.json()["submitted_by"] == "lena-lead", ok.text
    assert {item["sample_id"], first.id} <= trains()
    # The same text again reuses the sample; other labels for it are a conflict.
    again = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "texts": [{"text": text, "labels": labels}], "methods": ["wordnet"]},
    )
    assert again.json()["params"]["items"][0]["sample_id"] == item["sample_id"]
    clash = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "methods": ["wordnet"],
            "texts": [{"text": text, "labels": {**labels, "bias": "partisan"}}],
        },
    )
    assert clash.status_code == 409 and clash.json()["field"] == "texts.0.labels"


def test_a_cancelled_submission_job_leaves_nothing_to_train(lead, engine, mini_dataset) -> None:
    from db.datasets import get_dataset, training_samples
    from db.session import session_scope

    r = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "methods": ["wordnet"],
            "texts": [
                {"text": f"A brand new post about rural water number {i}", "labels": {"bias": "neutral"}}
                for i in range(5)
            ],
        },
    )
    assert lead.post(f"/api/v1/jobs/{r.json()['id']}/cancel").json()["status"] == "cancelled"
    submitted = {i["sample_id"] for i in r.json()["params"]["items"]}
    with session_scope(engine) as s:
        assert not submitted & {x.id for x in training_samples(s, get_dataset(s, "mini"))}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"methods": ["wordnet"]}, 422, "texts"),  # neither texts nor sample_ids
        ({"methods": ["wordnet"], "sample_ids": [1], "texts": [{"text": "x"}]}, 422, "texts"),  # both
        ({"methods": ["summarize"], "sample_ids": [1]}, 422, "methods"),
        (
            {"methods": ["wordnet"], "texts": [{"text": "new text", "labels": {"bias": "loud"}}]},
            422,
            "texts.0.labels",
        ),
        ({"methods": ["wordnet"], "texts": [{"text": "new text without labels"}]}, 422, "texts.0.labels"),
        # only invisible characters, or a NUL (Postgres refuses it; SQLite would store it)
        (
            {"methods": ["wordnet"], "texts": [{"text": "\u200b\u2060 ", "labels": {"bias": "neutral"}}]},
            422,
            "texts.0.text",
        ),
        ({"methods": ["wordnet"], "texts": [{"text": "a\x00b", "labels": {"bias": "neutral"}}]}, 422, "texts.0.text"),
        # a control character or a bidi override, which a person writing a text has no use for
        ({"methods": ["wordnet"], "texts": [{"text": "a\x07b", "labels": {"bias": "neutral"}}]}, 422, "texts.0.text"),
        ({"methods": ["wordnet"], "texts": [{"text": "a\u202eb", "labels": {"bias": "neutral"}}]}, 422, "texts.0.text"),
        ({"methods": ["mlm"], "sample_ids": [1], "params": {"mlm": {"top_k": -1}}}, 422, "params.mlm.top_k"),
        ({"methods": ["mlm"], "sample_ids": [1], "params": {"wordnet": {}}}, 422, "params"),
        (
            {"methods": ["wordnet"], "sample_ids": [1], "filters": {"leakage_threshold": 2}},
            422,
            "filters.leakage_threshold",
        ),
        ({"methods": ["wordnet"], "sample_ids": [99999]}, 404, "sample_ids"),
        ({"methods": ["wordnet"], "sample_ids": [1], "n_per_text": 0}, 422, "n_per_text"),
        ({"methods": ["wordnet"], "sample_ids": [1], "priority": 1}, 403, "priority"),  # ahead of other projects
    ],
)
def test_bad_requests_are_refused_with_the_field(lead, engine, mini_dataset, body, status, field) -> None:
    from db.models import Job
    from db.session import session_scope

    r = lead.post("/api/v1/augment", json={"dataset": "mini", **body})
    assert r.status_code == status, r.text
    if field:
        assert r.json()["field"] == field
    with session_scope(engine) as s:
        assert s.scalar(select(Job.id)) is None  # nothing enqueued


# What a client can send for a number that is not finite: Python's JSON reader (and so FastAPI's) takes the
# literals NaN, Infinity and -Infinity, and reads 1e309 as Infinity; "NaN" is a string a lax parser takes.
NOT_FINITE = ("NaN", "Infinity", "-Infinity", "1e309", '"NaN"', '"Infinity"')


def _post_with_number(client, path: str, body: dict, literal: str):  # type: ignore[no-untyped-def]
    """POST `body` with its placeholder "X" replaced by the raw JSON text `literal`."""
    text = json.dumps(body).replace('"X"', literal)
    return client.post(path, content=text, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/api/v1/augment",
            {"methods": ["wordnet"], "filters": {"leakage_threshold": "X"}},
            "filters.leakage_threshold",
        ),
        ("/api/v1/augment", {"methods": ["mlm"], "params": {"mlm": {"aug_p": "X"}}}, "params.mlm.aug_p"),
        (
            "/api/v1/augment",
            {"methods": ["wordnet"], "params": {"wordnet": {"aug_p": "X"}}},
            "params.wordnet.aug_p",
        ),
        (
            "/api/v1/datasets/mini/augmentation-plans",
            {"methods": ["wordnet"], "filters": {"leakage_threshold": "X"}},
            "filters.leakage_threshold",
        ),
    ],
)
def test_nan_and_infinity_are_refused_naming_the_field(lead, engine, mini_dataset, path, body, field) -> None:
    """A NaN leakage threshold used to switch the leak filter off (NaN compares false with every bound), and
    a NaN aug_p to crash the worker on every attempt: both are a 422 now, and nothing is queued."""
    from db.models import AugmentationPlan, Job
    from db.session import session_scope

    if path == "/api/v1/augment":
        body = {"dataset": "mini", "sample_ids": train_ids(engine, mini_dataset, limit=2), **body}
    for literal in NOT_FINITE:
        r = _post_with_number(lead, path, body, literal)
        assert r.status_code == 422, (literal, r.text)
        assert r.json()["field"] == field, (literal, r.json())
    with session_scope(engine) as s:
        assert s.scalar(select(Job.id)) is None and s.scalar(select(AugmentationPlan.id)) is None


def test_a_stored_job_with_a_nan_parameter_fails_once_with_the_field(engine, mini_dataset) -> None:
    """A job queued before its parameters were checked for NaN (or written by hand) fails at once, naming the
    parameter, instead of crashing the worker on every attempt."""
    from db import queue
    from db.models import Job
    from db.session import session_scope

    ids = train_ids(engine, mini_dataset, limit=2)
    params = {
        "dataset": "mini",
        "language": "en",
        "items": [{"sample_id": i, "n": 2} for i in ids],
        "methods": ["wordnet"],
        "seed": 0,
        "params": {"wordnet": {"aug_p": float("nan")}},
        "filters": {},
        "plan_id": None,
    }
    with session_scope(engine) as s:
        job_id = queue.enqueue(s, "augment", params, max_attempts=3).id
    stats = run_worker(engine)
    with session_scope(engine) as s:  # read directly: the API cannot serialise the NaN in the job's params
        job = s.get_one(Job, job_id)
        assert stats.failed == 1 and job.status == "failed" and job.attempts == 1
        assert "params.wordnet.aug_p" in (job.last_error or "")
    assert _variants(engine, job_id) == []


def test_val_and_test_samples_are_never_sources(lead, engine, mini_dataset) -> None:
    from db.models import Sample
    from db.session import session_scope

    with session_scope(engine) as s:
        val_id, val_text = s.execute(select(Sample.id, Sample.text).where(Sample.split == "val")).first()
    r = lead.post("/api/v1/augment", json={"dataset": "mini", "sample_ids": [val_id], "methods": ["wordnet"]})
    assert r.status_code == 422 and "train-split originals" in r.json()["detail"]
    r = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "methods": ["wordnet"],
            "texts": [{"text": val_text, "labels": {"bias": "neutral"}}],
        },
    )
    assert r.status_code == 422 and r.json()["field"] == "texts.0.text"


def test_leakage_guard_drops_variants_close_to_test_texts(lead, engine, mini_dataset) -> None:
    from core.textnorm import content_hash
    from db.models import Sample, SampleLabel
    from db.session import session_scope

    base = (
        "Great meeting with farmers and ranchers in the district today to talk about the farm bill, water "
        "rights and rural broadband. Thank you for the warm welcome!"
    )
    with session_scope(engine) as s:
        ds_id = s.scalar(select(Sample.dataset_id).limit(1))
        retweet = "RT " + base  # the same post in the test split, as a retweet
        test = Sample(dataset_id=ds_id, text=retweet, split="test", content_hash=content_hash(retweet))
        train = Sample(dataset_id=ds_id, text=base, split="train", content_hash=content_hash(base))
        for sample in (test, train):
            sample.labels_rows = [SampleLabel(task="bias", label="neutral")]
        s.add_all([test, train])
        s.flush()
        source = train.id
    # One word swapped: the variant is a near-copy of the test text (Jaccard of 5-grams ≈ 0.85).
    one_word = {"wordnet": {"max_words": 1}}
    r = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "sample_ids": [source],
            "methods": ["wordnet"],
            "n_per_text": 5,
            "params": one_word,
        },
    )
    run_worker(engine)
    job = _job(lead, r.json()["id"])
    # Every variant made (each a distinct one-word change: WordNet draws again rather than repeat one) leaks.
    # How many it makes depends on the words it may change (expressions such as "farm bill" stay whole).
    assert job["result"]["generated"] >= 1 and job["result"]["kept"] == 0
    assert job["result"]["dropped"]["leakage"] == job["result"]["generated"]
    assert job["progress_info"]["dropped"]["leakage"] == job["result"]["dropped"]["leakage"]
    relaxed = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "sample_ids": [source],
            "n_per_text": 5,
            "methods": ["wordnet"],
            "params": one_word,
            "filters": {"leakage_threshold": 0.99, "leakage_containment": 0.99},
        },
    )
    run_worker(engine)
    result = _job(lead, relaxed.json()["id"])["result"]
    assert result["dropped"]["leakage"] == 0 and result["kept"] == result["generated"] >= 1


def test_language_decides_methods_with_a_422(admin, lead, engine, mini_dataset, monkeypatch) -> None:
    assert admin.patch("/api/v1/datasets/mini", json={"language": "de"}).status_code == 200
    ids = train_ids(engine, mini_dataset, limit=2)
    r = lead.post("/api/v1/augment", json={"dataset": "mini", "sample_ids": ids, "methods": ["wordnet"]})
    assert r.status_code == 422 and "English only" in r.json()["detail"] and r.json()["field"] == "methods"
    r = lead.post("/api/v1/augment", json={"dataset": "mini", "sample_ids": ids, "methods": ["backtranslation"]})
    assert r.status_code == 422 and "no back-translation route for language 'de'" in r.json()["detail"]
    r = lead.post("/api/v1/datasets/mini/augmentation-plans", json={"methods": ["wordnet"]})
    assert r.status_code == 422


def test_missing_model_fails_the_job_once_with_a_clear_message(
    lead, engine, mini_dataset, monkeypatch, tmp_path
) -> None:
    from core import settings as settings_mod
    from workers.augment.wordnet import WordNetAugmenter

    monkeypatch.setenv("AUGLOOP_MLM_MODEL", str(tmp_path / "mbert-gone"))
    settings_mod.get_settings.cache_clear()
    wordnet_calls: list[int] = []
    real_augment = WordNetAugmenter.augment

    def counted(self, texts, *args, **kwargs):  # type: ignore[no-untyped-def]
        wordnet_calls.append(len(texts))
        return real_augment(self, texts, *args, **kwargs)

    monkeypatch.setattr(WordNetAugmenter, "augment", counted)
    r = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "sample_ids": train_ids(engine, mini_dataset, 3), "methods": ["wordnet", "mlm"]},
    )
    assert r.status_code == 202
    stats = run_worker(engine)
    job = _job(lead, r.json()["id"])
    assert stats.failed == 1 and job["status"] == "failed" and job["attempts"] == 1  # permanent: no retries
    assert "mbert-gone" in job["last_error"] and "AUGLOOP_MLM_MODEL" in job["last_error"]
    assert "Traceback" not in job["last_error"] and _variants(engine, job["id"]) == []
    # It failed before WordNet, listed first, generated anything that the failure would throw away.
    assert wordnet_calls == []


def test_missing_wordnet_corpus_fails_the_job_with_install_hint(
    lead, engine, mini_dataset, monkeypatch, tmp_path
) -> None:
    from core import settings as settings_mod

    monkeypatch.setenv("AUGLOOP_NLTK_DATA", str(tmp_path / "empty"))
    settings_mod.get_settings.cache_clear()
    r = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "sample_ids": train_ids(engine, mini_dataset, 3), "methods": ["wordnet"]},
    )
    run_worker(engine)
    job = _job(lead, r.json()["id"])
    assert job["status"] == "failed" and job["attempts"] == 1
    assert "WordNet corpus not found" in job["last_error"] and "make nltk-data" in job["last_error"]


def test_a_lead_may_lower_a_jobs_priority_and_an_admin_raise_it(admin, lead, engine, mini_dataset) -> None:
    ids = train_ids(engine, mini_dataset, 2)
    for client, priority in ((lead, -5), (admin, 50)):
        r = client.post(
            "/api/v1/augment", json={"dataset": "mini", "methods": ["wordnet"], "sample_ids": ids, "priority": priority}
        )
        assert r.status_code == 202 and r.json()["priority"] == priority, r.text


def test_cancelled_job_writes_nothing(lead, engine, mini_dataset) -> None:
    r = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "methods": ["wordnet"], "sample_ids": train_ids(engine, mini_dataset, 5)},
    )
    assert lead.post(f"/api/v1/jobs/{r.json()['id']}/cancel").json()["status"] == "cancelled"
    run_worker(engine)
    assert _variants(engine, r.json()["id"]) == []


def test_plans_are_computed_stored_enqueued_and_listed(lead, engine, example_dataset) -> None:
    from db.models import Job
    from db.session import session_scope

    dry = lead.post(
        f"/api/v1/datasets/{example_dataset}/augmentation-plans",
        json={
            "target": {"min_fraction_of_largest": 0.4, "max_multiplier": 10},
            "methods": ["wordnet", "mlm"],
            "per_source_cap": 5,
            "params": {"mlm": {"min_prob": 0}},
        },
    )
    assert dry.status_code == 201, dry.text
    plan = dry.json()
    assert plan["job_ids"] == [] and plan["plan"]["total_variants"] == 1579
    classes = {(c["task"], c["label"]): c for c in plan["plan"]["classes"]}
    assert classes["message", "other"] == {
        **classes["message", "other"],
        "original": 99,
        "target": 452,
        "deficit": 353,
        "planned": 353,
        "shortfall": 0,
    }
    assert classes["bias", "partisan"]["target"] == 1181 and classes["bias", "partisan"]["expected"] >= 1181
    assert plan["plan"]["methods"] == {"wordnet": 790, "mlm": 789}
    with session_scope(engine) as s:
        assert s.scalar(select(Job.id)) is None  # a dry run enqueues nothing
    run = lead.post(
        f"/api/v1/datasets/{example_dataset}/augmentation-plans",
        json={"methods": ["wordnet", "mlm"], "enqueue": True, "job_size": 500, "tasks": ["message"]},
    )
    assert run.status_code == 201
    body = run.json()
    assert len(body["job_ids"]) == len(body["plan"]["jobs"]) >= 4
    with session_scope(engine) as s:
        jobs = list(s.scalars(select(Job).where(Job.id.in_(body["job_ids"]))))
        assert sum(j.progress_total for j in jobs) == body["plan"]["total_variants"]
        assert all(j.params["plan_id"] == body["id"] and len(j.params["methods"]) == 1 for j in jobs)
        assert all(sum(i["n"] for i in j.params["items"]) <= 500 for j in jobs)
    listed = lead.get(f"/api/v1/datasets/{example_dataset}/augmentation-plans")
    assert listed.status_code == 200 and [p["id"] for p in listed.json()] == [body["id"], plan["id"]]
    # the queued ones alone, however many previews came after them (the Augment page lists these: five previews
    # hid the queued plan that the review progress still reads)
    for _ in range(3):
        assert lead.post(f"/api/v1/datasets/{example_dataset}/augmentation-plans", json={}).status_code == 201
    queued = lead.get(f"/api/v1/datasets/{example_dataset}/augmentation-plans", params={"queued": "true", "limit": 1})
    assert [p["id"] for p in queued.json()] == [body["id"]]
    progress = {(c["task"], c["label"]): c for c in listed.json()[0]["progress"]}
    assert progress["message", "other"] == {
        **progress["message", "other"],
        "original": 99,
        "approved": 0,
        "pending": 0,
        "remaining": 353,
    }
    bad = lead.post(f"/api/v1/datasets/{example_dataset}/augmentation-plans", json={"tasks": ["tone"]})
    assert bad.status_code == 422 and bad.json()["field"] == "tasks"


def test_a_class_the_plan_does_not_raise_owes_nothing_whatever_waits_for_review(lead, engine, mini_dataset) -> None:
    """With pending variants counted, a plan stored a class it did not raise (its task left out, or above its
    want) with its current size as target: plan progress then said the largest class still needed its pending
    variants ("remaining" 1,969 in a walkthrough), review progress said 0, and "most useful first" ranked such
    variants up. Plans store each class's goal; a class not raised owes nothing."""
    from collections import Counter

    from db.datasets import get_dataset
    from db.models import Sample, SampleLabel
    from db.session import session_scope
    from services.review_stats import class_needs_now, review_progress
    from tests.review_fixtures import add_variant

    with session_scope(engine) as s:
        ds = get_dataset(s, mini_dataset)
        rows = s.execute(
            select(Sample.id, SampleLabel.label)
            .join(SampleLabel)
            .where(Sample.dataset_id == ds.id, Sample.split == "train", SampleLabel.task == "message")
        ).all()
        largest = Counter(label for _, label in rows).most_common(1)[0][0]
        sources = [sid for sid, label in rows if label == largest][:10]
        for k in range(30):
            add_variant(s, sources[k % 10], f"pending variant number {k} of a large class")
        bias = {
            label
            for (label,) in s.execute(
                select(SampleLabel.label).where(SampleLabel.sample_id.in_(sources), SampleLabel.task == "bias")
            )
        }
    r = lead.post(
        f"/api/v1/datasets/{mini_dataset}/augmentation-plans", json={"methods": ["wordnet"], "tasks": ["message"]}
    )
    assert r.status_code == 201, r.text
    progress = {
        (c["task"], c["label"]): c
        for c in lead.get(f"/api/v1/datasets/{mini_dataset}/augmentation-plans").json()[0]["progress"]
    }
    assert progress["message", largest]["pending"] == 30 and progress["message", largest]["remaining"] == 0
    for label in bias:  # a task the plan does not balance: no goal at all (its target: its size then)
        assert progress["bias", label]["goal"] is None and progress["bias", label]["remaining"] == 0
        assert progress["bias", label]["target"] >= 30
    raised = [c for c in r.json()["plan"]["classes"] if c["deficit"]]
    assert raised and all(progress[c["task"], c["label"]]["remaining"] > 0 for c in raised)
    from db.models import AugmentationPlan

    with session_scope(engine) as s:  # as if queued: the review progress reads a queued plan, not a preview
        s.get_one(AugmentationPlan, r.json()["id"]).job_ids = [0]
    with session_scope(engine) as s:
        ds = get_dataset(s, mini_dataset)
        needs = class_needs_now(s, ds)
        shown = review_progress(s, ds)["classes"]
    assert needs["message", largest] == 0 and all(needs["bias", label] == 0 for label in bias)
    assert all(needs[c["task"], c["label"]] > 0 for c in raised)
    assert shown["bias"][next(iter(bias))]["goal"] is None
    # a plan stored before goals were: a task it did not balance owes nothing either (its entries say so)
    with session_scope(engine) as s:
        row = s.get_one(AugmentationPlan, r.json()["id"])
        row.plan = {**row.plan, "classes": [{k: v for k, v in c.items() if k != "goal"} for c in row.plan["classes"]]}
    old = {
        (c["task"], c["label"]): c
        for c in lead.get(f"/api/v1/datasets/{mini_dataset}/augmentation-plans").json()[0]["progress"]
    }
    assert all(old["bias", label]["goal"] is None and old["bias", label]["remaining"] == 0 for label in bias)
    with session_scope(engine) as s:
        assert all(class_needs_now(s, get_dataset(s, mini_dataset))["bias", label] == 0 for label in bias)


def test_a_second_plan_tops_up_with_fresh_variants_instead_of_redrawing_the_first(lead, engine, mini_dataset) -> None:
    """A plan's variants are drawn per source and variant index from the seed: a later plan that picks the same
    sources with the same seed would redraw the earlier plan's variants, and all of them would be dropped as
    duplicates (on the example dataset, re-running `augloop augment run` kept 0 of 244). The first enqueued plan
    of a dataset draws with the request's seed; each later one with a seed derived from it."""
    from db.models import Job, Sample
    from db.session import session_scope

    body = {"methods": ["wordnet"], "enqueue": True, "tasks": ["message"], "per_source_cap": 2}
    first = lead.post("/api/v1/datasets/mini/augmentation-plans", json=body)
    assert first.status_code == 201, first.text
    run_worker(engine)
    second = lead.post("/api/v1/datasets/mini/augmentation-plans", json=body)
    assert second.status_code == 201, second.text
    assert second.json()["job_ids"], "the first plan left classes short: the second one has work"
    run_worker(engine)
    with session_scope(engine) as s:
        first_jobs = list(s.scalars(select(Job).where(Job.id.in_(first.json()["job_ids"]))))
        second_jobs = list(s.scalars(select(Job).where(Job.id.in_(second.json()["job_ids"]))))
        assert {j.params["seed"] for j in first_jobs} == {0}
        assert len({j.params["seed"] for j in second_jobs}) == 1 and second_jobs[0].params["seed"] != 0
        kept = sum(j.result["kept"] for j in second_jobs)
        generated = sum(j.result["generated"] for j in second_jobs)
        duplicates = sum(j.result["dropped"]["duplicate"] for j in second_jobs)
    # Before, every draw repeated the first plan's (kept 0, 12 duplicates of 12 here); a short text with few
    # replaceable words may still repeat a variant by chance.
    assert kept > 0 and duplicates < generated, (kept, duplicates, generated)
    # The second plan counted what each source had from the first against the cap (it asked the same few
    # sources again before): over both plans, no source holds more than 2 variants.
    with session_scope(engine) as s:
        held = Counter(s.scalars(select(Sample.parent_id).where(Sample.parent_id.is_not(None))))
    assert held and max(held.values()) <= 2, held
    stored = lead.get("/api/v1/datasets/mini/augmentation-plans").json()
    assert [p["plan"]["jobs"][0]["seed"] for p in stored] == [second_jobs[0].params["seed"], 0]


def test_a_plan_is_not_enqueued_twice_while_the_first_ones_jobs_are_unfinished(lead, engine, mini_dataset) -> None:
    """A client that lost the first answer and sends the plan again would have the whole gap generated twice:
    the planner counts stored variants, not those queued jobs still owe."""
    body = {"methods": ["wordnet"], "enqueue": True, "tasks": ["message"], "per_source_cap": 2}
    first = lead.post("/api/v1/datasets/mini/augmentation-plans", json=body)
    assert first.status_code == 201, first.text
    again = lead.post("/api/v1/datasets/mini/augmentation-plans", json=body)
    assert again.status_code == 409 and again.json()["field"] == "enqueue", again.text
    assert again.json()["job_ids"] == first.json()["job_ids"]
    assert len(lead.get("/api/v1/datasets/mini/augmentation-plans").json()) == 1, "the refused plan was stored"
    preview = lead.post("/api/v1/datasets/mini/augmentation-plans", json={**body, "enqueue": False})
    assert preview.status_code == 201, "a plan not enqueued owes nothing"
    for job_id in first.json()["job_ids"]:
        lead.post(f"/api/v1/jobs/{job_id}/cancel")
    assert lead.post("/api/v1/datasets/mini/augmentation-plans", json=body).status_code == 201


def test_a_projects_augment_candidates_in_flight_are_capped(lead, admin, engine, mini_dataset, monkeypatch) -> None:
    """The queue is shared by every project: one lead's requests cannot put millions of candidates ahead of
    everyone else's."""
    from core.settings import get_settings

    monkeypatch.setenv("AUGLOOP_MAX_AUGMENT_CANDIDATES_PER_PROJECT", "100")
    get_settings.cache_clear()
    sources = train_ids(engine, mini_dataset, limit=20)
    ask = {"dataset": "mini", "sample_ids": sources, "methods": ["wordnet"], "n_per_text": 3}
    first = lead.post("/api/v1/augment", json=ask)
    assert first.status_code == 202, first.text
    over = lead.post("/api/v1/augment", json=ask)
    assert over.status_code == 429 and over.json()["field"] == "n_per_text", over.text
    assert (over.json()["in_flight"], over.json()["limit"]) == (120, 100)
    assert lead.get("/api/v1/jobs", params={"kind": "augment"}).json()["total"] == 1, "the refused job was queued"
    plan = lead.post(
        "/api/v1/datasets/mini/augmentation-plans", json={"methods": ["wordnet"], "enqueue": True, "tasks": ["message"]}
    )
    assert plan.status_code == 429 and plan.json()["field"] == "target", plan.text
    assert admin.post("/api/v1/augment", json=ask).status_code == 202, "an admin is not bound"
    lead.post(f"/api/v1/jobs/{first.json()['id']}/cancel")
    run_worker(engine)  # the admin's job ends: nothing is owed any more
    assert lead.post("/api/v1/augment", json=ask).status_code == 202


def test_job_progress_is_visible_while_running(lead, engine, mini_dataset) -> None:
    """The handler reports per batch; the heartbeat writes it: after the run the final counters are stored."""
    r = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "methods": ["wordnet"],
            "n_per_text": 1,
            "sample_ids": train_ids(engine, mini_dataset, limit=130),
        },
    )
    run_worker(engine)
    job = _job(lead, r.json()["id"])
    assert job["progress_done"] == 130 and json.dumps(job["progress_info"]).count("dropped") == 1


def test_a_submitted_near_copy_of_a_test_text_is_refused_and_nothing_is_stored(lead, engine, mini_dataset) -> None:
    from sqlalchemy import func
    from sqlalchemy.orm import Session

    from db.models import Sample

    with Session(engine) as s:
        test_text, test_id = s.execute(
            select(Sample.text, Sample.id).where(Sample.split == "test", func.length(Sample.text) > 60).limit(1)
        ).one()
        rows = s.scalar(select(func.count()).select_from(Sample))
    r = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "methods": ["wordnet"],
            "texts": [
                {"text": "A brand new post about rural water and the county budget", "labels": {"bias": "neutral"}},
                {"text": test_text + " Please share.", "labels": {"bias": "neutral"}},
            ],
        },
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "texts.1.text" and r.json()["leak_of"] == test_id
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Sample)) == rows, "the first, valid text was not kept"


def test_a_text_repeated_in_one_request_with_other_labels_is_a_conflict(lead, engine, mini_dataset) -> None:
    from sqlalchemy import func
    from sqlalchemy.orm import Session

    from db.models import Sample

    with Session(engine) as s:
        rows = s.scalar(select(func.count()).select_from(Sample))
    text = "A brand new post about rural water and the county budget"
    r = lead.post(
        "/api/v1/augment",
        json={
            "dataset": "mini",
            "methods": ["wordnet"],
            "texts": [{"text": text, "labels": {"bias": "neutral"}}, {"text": text, "labels": {"bias": "partisan"}}],
        },
    )
    assert r.status_code == 409, r.text
    assert r.json()["field"] == "texts.1.labels"
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(Sample)) == rows
    same = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "methods": ["wordnet"], "texts": [{"text": text, "labels": {"bias": "neutral"}}] * 2},
    )
    assert same.status_code == 202, same.text
    assert len(same.json()["params"]["items"]) == 1


def _plan_at_once():  # type: ignore[no-untyped-def]
    from services.augmentation import PlanRequest

    return PlanRequest(methods=["wordnet"], tasks=["message"], per_source_cap=2, enqueue=True)


def _while_a_first_plan_is_open(pg_settings, other) -> None:  # type: ignore[no-untyped-def]
    """Import 300 example rows on Postgres, enqueue a first plan in a transaction left open, run
    `other(session, dataset)` in another thread and transaction, and check that it waits for the plan to commit,
    then completes without an error."""
    import threading

    from sqlalchemy.orm import Session

    from db.datasets import get_dataset
    from db.session import get_engine, session_scope
    from services.augmentation import create_and_enqueue_plan
    from services.importing import ImportSpec, import_file

    engine = get_engine(pg_settings.resolved_database_url)
    with session_scope(engine) as s:
        import_file(s, example_slice(300), ImportSpec(dataset="mini", tasks=["bias", "message"]), filename="m.csv")
    first = Session(engine)
    create_and_enqueue_plan(first, get_dataset(first, "mini"), _plan_at_once(), pg_settings, None)
    failures: list[Exception] = []

    def run_other() -> None:
        try:
            with session_scope(engine) as s:
                other(s, get_dataset(s, "mini"))
        except Exception as err:  # noqa: BLE001 (reported below, in the test thread)
            failures.append(err)

    thread = threading.Thread(target=run_other)
    thread.start()
    thread.join(timeout=1.5)
    assert thread.is_alive(), "it did not wait for the first plan's transaction"
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert not thread.is_alive() and not failures, failures


@pytest.mark.postgres
def test_a_plan_enqueued_while_another_is_being_enqueued_waits_and_is_refused(pg_settings) -> None:
    """On Postgres two plan requests really run at once: each counted the plans enqueued before it without seeing
    the other's (not yet committed), so both drew with the request's seed and the second one's variants were
    all duplicates of the first one's. Now the second waits for the first to commit, sees its jobs unfinished
    and is refused: enqueued, it would have generated the whole gap a second time."""
    from core.errors import ConflictError
    from db.models import AugmentationPlan
    from db.session import get_engine, session_scope
    from services.augmentation import create_and_enqueue_plan

    refused: list[ConflictError] = []

    def second(s, dataset) -> None:  # type: ignore[no-untyped-def]
        try:
            create_and_enqueue_plan(s, dataset, _plan_at_once(), pg_settings, None)
        except ConflictError as err:
            refused.append(err)

    _while_a_first_plan_is_open(pg_settings, second)
    with session_scope(get_engine(pg_settings.resolved_database_url)) as s:
        plans = list(s.scalars(select(AugmentationPlan).order_by(AugmentationPlan.id)))
    assert len(plans) == 1 and plans[0].job_ids
    assert len(refused) == 1 and refused[0].field == "enqueue"
    assert refused[0].extra["job_ids"] == plans[0].job_ids


@pytest.mark.postgres
@pytest.mark.parametrize("change", ["setting", "reseed", "edit_terms"])
def test_a_first_plan_and_a_leads_change_at_once_on_postgres_take_turns(pg_settings, change) -> None:
    """A first plan seeds the protected terms and marks the dataset seeded, in its transaction. A lead's change
    made meanwhile waits for it and then builds on it: a setting no longer writes back the settings it read
    before (which unmarked the seeding, so the next plan re-seeded terms the lead had removed), and a re-seed or
    an edit of the terms no longer deadlocks with the plan (each waited on the other: 503) or conflicts (409)."""
    from db.datasets import get_dataset
    from db.models import ProtectedTerm
    from db.session import get_engine, session_scope
    from services import protected_terms
    from services.variant_settings import update_variant_settings, variant_settings

    seeded: set[str] = set()

    def lead(s, dataset) -> None:  # type: ignore[no-untyped-def]
        if change == "setting":
            update_variant_settings(s, dataset, {"auto_reject_label_changed": True})
        elif change == "reseed":
            protected_terms.seed(s, dataset, per_class=3)
        else:
            protected_terms.edit(s, dataset, ["harvest"], ["obama"], None)
        seeded.update(t.term for t in s.scalars(select(ProtectedTerm).where(ProtectedTerm.origin == "seeded")))

    _while_a_first_plan_is_open(pg_settings, lead)
    with session_scope(get_engine(pg_settings.resolved_database_url)) as s:
        dataset = get_dataset(s, "mini")
        settings = variant_settings(dataset)
        terms = {t.term for t in s.scalars(select(ProtectedTerm))}
    assert settings.protected_terms_seeded_at is not None and seeded  # the plan's seeding stands
    if change == "setting":
        assert settings.auto_reject_label_changed is True and terms == seeded
    elif change == "edit_terms":
        assert "harvest" in terms and "obama" not in terms


def test_the_job_list_cuts_long_params_and_the_job_shows_them_whole(lead, engine, mini_dataset) -> None:
    """An augment job names every source: the list shows the first 100 with their count (a page of 500 jobs
    of 50,000 sources each would be millions of objects); the job itself has them all, and nothing is stored
    cut."""
    sources = train_ids(engine, mini_dataset, limit=150)
    assert len(sources) == 150
    r = lead.post("/api/v1/augment", json={"dataset": "mini", "sample_ids": sources, "methods": ["wordnet"]})
    assert r.status_code == 202, r.text
    listed = lead.get("/api/v1/jobs", params={"kind": "augment"}).json()["items"][0]
    assert listed["id"] == r.json()["id"]
    assert len(listed["params"]["items"]) == 100 and listed["params"]["items_count"] == 150
    whole = _job(lead, r.json()["id"])["params"]
    assert [i["sample_id"] for i in whole["items"]] == [i["sample_id"] for i in r.json()["params"]["items"]]
    assert len(whole["items"]) == 150 and "items_count" not in whole


def test_imported_texts_keep_their_control_characters_and_can_be_augmented(lead, engine) -> None:
    """Real data may hold a bell or a bidi override: an import takes it, and the same text sent to POST /augment
    is that original (only a text new to the dataset is held to what a person may write)."""
    from db.models import Job, Sample
    from db.session import session_scope
    from services.importing import ImportSpec, import_file

    odd = "A post with a bell\x07 and \u202ereversed\u202c words about the farm bill and rural water"
    rows = [odd, *(f"Another ordinary post number {i} about the county budget" for i in range(9))]
    csv_text = "text,bias\n" + "".join(f'"{row}",{"neutral" if i % 2 else "partisan"}\n' for i, row in enumerate(rows))
    with session_scope(engine) as s:
        import_file(s, csv_text.encode(), ImportSpec(dataset="odd", tasks=["bias"]), filename="odd.csv")
        original = s.scalar(select(Sample).where(Sample.text == odd))
        assert original is not None
        original_id, split = original.id, original.split
        if split != "train":
            original.split = "train"
    r = lead.post("/api/v1/augment", json={"dataset": "odd", "texts": [{"text": odd}], "methods": ["wordnet"]})
    assert r.status_code == 202, r.text
    assert [item["sample_id"] for item in r.json()["params"]["items"]] == [original_id]
    with session_scope(engine) as s:
        assert s.scalar(select(Job.id)) is not None


def test_a_submitted_texts_labels_are_read_as_an_import_reads_them(lead, engine, mini_dataset) -> None:
    """An import strips its label cells; POST /augment refused the same label with a space ("partisan ") as
    unknown. Read as an import reads it (stripped, NFC), stored under the label set's own spelling; case is
    kept, so another case is still unknown."""
    from db.models import Sample
    from db.session import session_scope

    text = "A new bridge for the county, paid for without a tax rise: a good day for everyone here."
    labels = {"bias": " neutral ", "message": "policy\u00a0", "audience": "constituency"}
    body = {"dataset": "mini", "texts": [{"text": text, "labels": labels}], "methods": ["wordnet"], "n_per_text": 1}
    r = lead.post("/api/v1/augment", json=body)
    assert r.status_code == 202, r.text
    with session_scope(engine) as s:
        stored = s.get(Sample, r.json()["params"]["items"][0]["sample_id"]).labels
    assert stored == {"bias": "neutral", "message": "policy", "audience": "constituency"}
    other = {**body, "texts": [{"text": text + " Twice.", "labels": {**labels, "bias": "Neutral"}}]}
    r = lead.post("/api/v1/augment", json=other)
    assert r.status_code == 422 and r.json()["field"] == "texts.0.labels" and "'Neutral'" in r.json()["detail"]


def test_a_plan_counts_variants_of_a_submission_under_review_as_waiting(lead, engine, mini_dataset) -> None:
    """Approved variants of a submitted text still under review counted as approved in plans and the planner
    (the class looked met, a new plan made none), though they train only once the text is approved; a rejected
    submission's never train."""
    from db.augmentation import counted_variants, variant_counts
    from db.datasets import get_dataset
    from db.models import Sample
    from db.session import session_scope
    from tests.review_fixtures import add_variant

    text = "We passed the harbour bill tonight and every family on the coast will feel it."
    labels = {"bias": "neutral", "message": "attack", "audience": "constituency"}
    r = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "texts": [{"text": text, "labels": labels}], "methods": ["wordnet"], "n_per_text": 1},
    )
    submission = r.json()["params"]["items"][0]["sample_id"]

    def attack() -> dict[str, int]:
        with session_scope(engine) as s:
            return variant_counts(s, get_dataset(s, "mini"))["message"]["attack"]

    with session_scope(engine) as s:
        ids = [add_variant(s, submission, f"{text} Variant {i}.") for i in range(3)]
        for i in ids:
            s.get_one(Sample, i).review_status = "approved"
        before = variant_counts(s, get_dataset(s, "mini"))
    assert attack().get("approved", 0) == 0 and attack()["pending"] >= 4  # the submission and its 3 variants
    assert counted_variants(before, include_pending=False)["message"]["attack"] == 0
    with session_scope(engine) as s:
        s.get_one(Sample, submission).review_status = "rejected"
    assert attack().get("approved", 0) == 0 and attack()["rejected"] == 4
    with session_scope(engine) as s:
        s.get_one(Sample, submission).review_status = "approved"
    assert attack()["approved"] == 4
