"""A person's rescoring of the review queue (a `label_scores` job) stands whole or not at all: one that is
cancelled, fails past retrying or is lost with no attempts left gives every variant back the score it had
(its consistency, flag and scorer: the label-model summary names the model the variants carry); one that
succeeds leaves them all with the chosen model's; its progress counts the scores committed. SQLite and
Postgres; the model is a stand-in (the job's bookkeeping is under test, not the predictions)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.trainer_fixtures import add_variant, import_small

OLD_RUN = 7001  # the automatic scorer the queue carries before the person's choice
EARLIER_CHOICE = 7002  # a person's earlier choice, on the last variant


class StandIn:
    """A model that calls every variant partisan (probability 0.9)."""

    def __init__(self) -> None:
        self.tasks = [SimpleNamespace(name="bias", labels=["neutral", "partisan"])]

    def predict_proba(self, texts: list[str], on_batch: Any = None) -> dict[str, np.ndarray]:
        if on_batch is not None:
            on_batch(len(texts), len(texts))  # all predicted before any is written
        return {"bias": np.tile([0.1, 0.9], (len(texts), 1))}

    def decide(self, probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {task: p.argmax(axis=1) for task, p in probs.items()}


def _queue_with_old_scores(engine: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, int, list[int]]:
    """Five pending variants, four scored by OLD_RUN and the last by EARLIER_CHOICE (flag on the even ones),
    and a finished run to choose."""
    import services.label_model as label_model
    import services.prediction as prediction
    from db.datasets import get_dataset
    from db.models import JobStatus, Sample, TrainingRun
    from db.session import session_scope

    name = import_small(engine, n_train=8, n_val=4, n_test=4, n_unlabelled=0)
    ids = [add_variant(engine, name, "train", "pending", f"pending variant number {i} on the vote") for i in range(5)]
    with session_scope(engine) as s:
        dataset = get_dataset(s, name)
        chosen = TrainingRun(dataset_id=dataset.id, name="chosen", status=JobStatus.succeeded, metrics={})
        s.add(chosen)
        s.flush()
        model_id = chosen.id
        for i, sid in enumerate(ids):
            row = s.get_one(Sample, sid)
            entry = {"run_id": OLD_RUN, "chosen": False, "val_macro_f1": 0.5, "probs": {"bias": {"neutral": 0.5}}}
            if i == 4:
                entry = {**entry, "run_id": EARLIER_CHOICE, "chosen": True}
            row.scores = {"similarity": 0.8, "label_model": entry}
            row.label_consistency, row.label_flag = 0.25 + i / 100, i % 2 == 0
    monkeypatch.setattr(prediction, "dataset_and_model", lambda s, n, m, u, *a, **k: (get_dataset(s, n), None))
    monkeypatch.setattr(prediction, "load_predictor", lambda spec: StandIn())
    monkeypatch.setattr(label_model, "SCORING_PAGE", 2)  # three pages and transactions: 2, 2 and 1 variants
    monkeypatch.setattr(label_model, "SCORE_WRITE_BATCH", 2)
    return name, model_id, ids


def _state(engine: Any, ids: list[int]) -> list[tuple[Any, ...]]:
    from db.models import Sample
    from db.session import session_scope

    with session_scope(engine) as s:
        rows = [s.get_one(Sample, sid) for sid in ids]
        return [(r.scores, r.label_consistency, r.label_flag) for r in rows]


def _enqueue(engine: Any, name: str, model_id: int, attempts: int = 1) -> int:
    from db import queue
    from db.datasets import get_dataset
    from db.session import session_scope

    with session_scope(engine) as s:
        dataset = get_dataset(s, name)
        job = queue.enqueue(
            s, "label_scores", {"dataset": name, "model_id": model_id}, dataset_id=dataset.id, max_attempts=attempts
        )
        s.flush()
        return job.id


def _summary(engine: Any, name: str) -> dict[str, Any]:
    from db.session import session_scope
    from services.label_model import label_model_summary

    with session_scope(engine) as s:
        return label_model_summary(s, name, None)


def _after_batches(monkeypatch: pytest.MonkeyPatch, n: int, then: Any) -> None:
    """Call `then()` once n batches have committed, as the next page is predicted (outside any transaction)."""
    real = StandIn.predict_proba
    calls = []

    def counting(self: StandIn, texts: list[str], on_batch: Any = None) -> dict[str, np.ndarray]:
        calls.append(1)
        if len(calls) == n + 1:
            then()
        return real(self, texts, on_batch)

    monkeypatch.setattr(StandIn, "predict_proba", counting)


@pytest.mark.parametrize("ending", ["failed", "cancelled", "lost"])
def test_a_rescoring_that_does_not_succeed_gives_every_score_back(any_engine, monkeypatch, ending) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from db import queue
    from db.models import Job
    from db.session import session_scope
    from services.label_model import execute_rescoring
    from tests.test_trainer_api import drain

    name, model_id, ids = _queue_with_old_scores(any_engine, monkeypatch)
    before = _state(any_engine, ids)
    job_id = _enqueue(any_engine, name, model_id)

    if ending == "failed":  # its last attempt fails after two of its three batches committed

        def boom() -> None:
            raise RuntimeError("the database went away mid-rescoring")

        _after_batches(monkeypatch, 2, boom)
        assert drain(any_engine, ["label_scores"]).failed == 1
    elif ending == "cancelled":  # asked after one batch: the attempt goes on, its completion finds the request

        def cancel() -> None:
            with session_scope(any_engine) as s:
                queue.request_cancel(s, job_id)

        _after_batches(monkeypatch, 1, cancel)
        assert drain(any_engine, ["label_scores"]).cancelled == 1
    else:  # the worker dies after two batches; its lease runs out with no attempt left
        job = queue.claim(any_engine, "dead-worker", ["label_scores"])
        assert job is not None and job.id == job_id

        class Killed(Exception):
            pass

        def die() -> None:
            raise Killed

        _after_batches(monkeypatch, 2, die)
        with pytest.raises(Killed):
            execute_rescoring(any_engine, name, model_id, job_id=job_id, worker_id="dead-worker")
        with session_scope(any_engine) as s:
            past = queue.db_now(s) - timedelta(seconds=5)
            s.execute(update(Job).where(Job.id == job_id).values(lease_until=past))
        with session_scope(any_engine) as s:
            queue.requeue_expired(s)

    with session_scope(any_engine) as s:
        assert s.get_one(Job, job_id).status == ending.replace("lost", "failed")
    # every variant has the scores it had: none half-rescored, none left with the chosen run's scores
    assert _state(any_engine, ids) == before
    summary = _summary(any_engine, name)
    got = {(x["run_id"], x["chosen"], x["pending"], x["flagged"]) for x in summary["scorers"]}
    assert got == {(OLD_RUN, False, 4, 2), (EARLIER_CHOICE, True, 1, 1)} and summary["rescoring"] == []


def test_a_rescoring_that_succeeds_after_a_failed_attempt_leaves_every_variant_rescored(
    any_engine, monkeypatch
) -> None:
    """The first attempt fails after one batch, the second rewrites everything: the chosen model's scores stand
    on all five, with nothing kept to give back; the job's progress is the scores it committed."""
    from sqlalchemy import update

    from db import queue
    from db.models import Job
    from db.session import session_scope
    from tests.test_trainer_api import drain

    name, model_id, ids = _queue_with_old_scores(any_engine, monkeypatch)
    job_id = _enqueue(any_engine, name, model_id, attempts=2)
    monkeypatch.setenv("AUGLOOP_JOB_RETRY_BASE_SECONDS", "3600")  # the retry waits: the queue between attempts
    from core.settings import get_settings

    get_settings.cache_clear()
    failures = []

    def once() -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("a transient failure")

    _after_batches(monkeypatch, 1, once)
    rescoring = _summary(any_engine, name)["rescoring"]
    assert [(x["job_id"], x["model_id"], x["status"]) for x in rescoring] == [(job_id, model_id, "queued")]
    drain(any_engine, ["label_scores"])
    # between its attempts the queue is mixed, and GET says why: the choice is still under way
    summary = _summary(any_engine, name)
    assert {(x["run_id"], x["pending"]) for x in summary["scorers"]} == {
        (model_id, 2),
        (OLD_RUN, 2),
        (EARLIER_CHOICE, 1),
    }
    assert [x["job_id"] for x in summary["rescoring"]] == [job_id]
    with session_scope(any_engine) as s:
        job = s.get_one(Job, job_id)
        assert job.status == "queued"  # its retry waits out a back-off, cut short here
        s.execute(update(Job).where(Job.id == job_id).values(run_after=queue.db_now(s)))
    drain(any_engine, ["label_scores"])
    get_settings.cache_clear()
    with session_scope(any_engine) as s:
        job = s.get_one(Job, job_id)
        assert (job.status, job.attempts, job.result["scored"]) == ("succeeded", 2, 5)
        assert job.progress_done == job.progress_total == 5
    for scores, consistency, flag in _state(any_engine, ids):
        entry = scores["label_model"]
        assert (entry["run_id"], entry["chosen"], entry["job_id"]) == (model_id, True, job_id)
        assert "replaced" not in entry and scores["similarity"] == 0.8
        assert (round(consistency, 6), flag) == (0.9, False)
    summary = _summary(any_engine, name)
    assert [(x["run_id"], x["chosen"], x["pending"]) for x in summary["scorers"]] == [(model_id, True, 5)]
    assert summary["rescoring"] == []


def test_rescoring_progress_counts_committed_writes(any_engine, monkeypatch) -> None:
    """Progress said 'done' for each variant predicted (960 'scored' when 500 were written): it counts the
    scores committed, batch by batch."""
    from services.label_model import execute_rescoring

    name, model_id, ids = _queue_with_old_scores(any_engine, monkeypatch)
    seen: list[tuple[int, int]] = []

    def committed() -> int:
        return len([s for s, _c, _f in _state(any_engine, ids) if s["label_model"]["run_id"] == model_id])

    def progress(event: dict[str, Any]) -> None:  # called outside the write transactions
        seen.append((event["done"], committed()))

    result = execute_rescoring(any_engine, name, model_id, progress=progress)
    assert result["scored"] == 5 and seen[-1] == (5, 5)
    assert all(done == written for done, written in seen), seen  # never a prediction counted as a write
    assert {done for done, _w in seen} == {0, 2, 4, 5}  # each batch's commit reported
