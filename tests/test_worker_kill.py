"""SIGKILL a worker in the middle of real job kinds, on SQLite and on the real Postgres server: the job is
finished by another worker once its lease expires, with nothing duplicated and nothing half-written.

The generic queue contract (any handler) is tested with a probe job in test_queue.py; these tests check that
the augmentation and training handlers honour it: the killed attempt must leave no variant and no stale
epoch, and the second attempt must produce exactly one set of outputs.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from db.models import Job, JobStatus, Sample, TrainingRun
from db.session import session_scope
from tests.augment_fixtures import example_slice
from tests.test_queue import _spawn_worker
from tests.trainer_fixtures import small_csv, tiny_encoder, tiny_keys  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("augment_env")]

LEASE = 2.0  # seconds: the rescuer may claim the orphaned job this long after the kill


def _import(engine: Any, name: str, data: bytes, tasks: list[str]) -> Any:
    from db.datasets import get_dataset
    from services.importing import ImportSpec, import_file

    with session_scope(engine) as s:
        import_file(s, data, ImportSpec(dataset=name, tasks=tasks), filename=f"{name}.csv")
    with session_scope(engine) as s:
        return get_dataset(s, name)


def _kill_when(engine: Any, job_id: int, worker: Any, ready: Any, what: str) -> Job:
    """SIGKILL `worker` as soon as `ready(job)` holds for the running job; returns the job as it was."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with session_scope(engine) as s:
            job = s.get_one(Job, job_id)
            s.expunge(job)
        if job.status == JobStatus.running and ready(job):
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            return job
        if job.status != JobStatus.queued and job.status != JobStatus.running:
            break
        time.sleep(0.02)
    worker.kill()
    pytest.fail(f"never caught the job {what} (status {job.status}): {worker.communicate()[0][-3000:]}")


def _rescue(settings: Any, engine: Any, job_id: int, kinds: str) -> Job:
    with session_scope(engine) as s:
        assert s.get_one(Job, job_id).status == JobStatus.running  # orphaned: the lease has not expired yet
    rescuer = _spawn_worker(settings, lease=LEASE, kinds=kinds)
    out = rescuer.communicate(timeout=300)[0]
    assert rescuer.returncode == 0, out[-3000:]
    with session_scope(engine) as s:
        job = s.get_one(Job, job_id)
        s.expunge(job)
    assert job.status == JobStatus.succeeded and job.attempts == 2, (job.status, job.error, out[-3000:])
    return job


def test_worker_killed_mid_augmentation_job(any_settings, any_engine) -> None:
    from core.settings import get_settings
    from services.augmentation import AugmentRequest, enqueue_request

    dataset = _import(any_engine, "mini", example_slice(300), ["bias", "message"])
    with session_scope(any_engine) as s:
        sources = list(s.scalars(select(Sample.id).where(Sample.dataset_id == dataset.id, Sample.split == "train")))
        job = enqueue_request(
            s,
            dataset,
            AugmentRequest(methods=["wordnet", "mlm"], n_per_text=4, seed=3, sample_ids=sources),
            get_settings(),
            None,
        )
        job_id, total = job.id, job.progress_total
    victim = _spawn_worker(any_settings, lease=LEASE, burst=False, kinds="augment")
    # Killed after it has generated (and reported) some candidates, before it has stored any.
    seen = _kill_when(any_engine, job_id, victim, lambda j: 0 < j.progress_done < total, "mid-generation")
    assert 0 < seen.progress_done < total
    with session_scope(any_engine) as s:
        assert s.scalar(select(func.count()).where(Sample.origin == "augmented")) == 0, "half-written output"

    done = _rescue(any_settings, any_engine, job_id, "augment")
    assert done.progress_done == done.progress_total == total
    with session_scope(any_engine) as s:
        variants = s.execute(
            select(Sample.parent_id, Sample.text, Sample.method, Sample.job_id, Sample.review_status).where(
                Sample.origin == "augmented"
            )
        ).all()
    assert len(variants) == done.result["kept"] > 100
    assert {(v.job_id, v.review_status) for v in variants} == {(job_id, "pending")}
    assert {v.method for v in variants} <= {"wordnet", "mlm"}
    duplicated = [key for key, n in Counter((v.parent_id, v.text) for v in variants).items() if n > 1]
    assert duplicated == [], "a variant was stored twice"


def test_worker_killed_mid_training_job(any_settings, any_engine, tiny_encoder: str) -> None:
    from db import queue
    from services.prediction import model_spec
    from services.training import create_training_runs, default_config
    from trainer.predict import RunPredictor

    # Epochs long enough (80 steps of batch 8) that the poller, even on a loaded CI machine, sees the job between
    # its first and its last epoch: with 20 steps an epoch the run once finished before it was looked at.
    epochs, n_train, batch = 6, 640, 8
    dataset = _import(any_engine, "small", small_csv(n_train=n_train, n_val=24, n_test=24), ["bias", "message"])
    config = default_config(
        tiny_keys(
            tiny_encoder, epochs=epochs, batch_size=batch, patience=0, grad_accum=1, warmup_ratio=0.0, rdrop_alpha=0.0
        )
    )
    with session_scope(any_engine) as s:
        (run,) = create_training_runs(s, s.merge(dataset), config, [7])
        job = queue.enqueue(s, "train", {"run_id": run.id, "dataset": "small"}, progress_total=epochs, max_attempts=2)
        run.job_id = job.id
        run_id, job_id = run.id, job.id
    victim = _spawn_worker(any_settings, lease=LEASE, burst=False, kinds="train")
    seen = _kill_when(any_engine, job_id, victim, lambda j: 1 <= j.progress_done < epochs - 1, "mid-training")
    with session_scope(any_engine) as s:
        killed = s.get_one(TrainingRun, run_id)
        assert killed.status == JobStatus.running and 1 <= len(killed.curve) < epochs and not killed.metrics
    assert seen.progress_done >= 1

    _rescue(any_settings, any_engine, job_id, "train")
    with session_scope(any_engine) as s:
        run = s.get_one(TrainingRun, run_id)
        # Resumed from the killed attempt's last epoch checkpoint: one curve of `epochs` epochs, not the killed
        # attempt's epochs plus these, and the epochs before the checkpoint were not trained again.
        assert run.status == JobStatus.succeeded and [e["epoch"] for e in run.curve] == list(range(1, epochs + 1))
        assert run.metrics["resumed_from_step"] >= seen.progress_done * (n_train // batch)
        assert run.metrics["test"]["overall_macro_f1"] is not None and run.error is None
        spec = model_spec(s, run_id, None)
    probabilities = RunPredictor(Path(spec.model_dirs[0]), device="cpu").predict_proba(["a budget vote"])
    assert set(probabilities) == {"bias", "message"} and probabilities["bias"].shape == (1, 2)
