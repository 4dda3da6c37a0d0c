"""Queue edge cases (issue 12, point 5): writes only under the lease, cancellation survives a lost worker, the
database's clock for leases, and a training job that lost its lease stops writing at once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update

from db import queue
from db.models import Job, JobStatus, TrainingRun
from db.session import session_scope
from tests.trainer_fixtures import small_csv, tiny_encoder, tiny_keys  # noqa: F401


def _enqueue(engine: Any, kind: str = "probe") -> int:
    with session_scope(engine) as s:
        return queue.enqueue(s, kind, {}).id


def _job(engine: Any, job_id: int) -> Job:
    with session_scope(engine) as s:
        job = s.get_one(Job, job_id)
        s.expunge(job)
        return job


@pytest.mark.postgres
def test_a_worker_that_lost_its_lease_cannot_overwrite_the_new_claim(pg_settings) -> None:
    """The old worker reports a failure while, between its read and its write, another worker takes the job
    over (Postgres runs them concurrently; SQLite serialises writers)."""
    from db.session import get_engine

    engine = get_engine(pg_settings.resolved_database_url)
    job_id = _enqueue(engine)
    assert queue.claim(engine, "old", lease_seconds=0.05).id == job_id
    time.sleep(0.1)
    state = {"fired": False}

    def take_over(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not state["fired"] and statement.lstrip().upper().startswith("UPDATE JOBS"):
            state["fired"] = True
            state["claimed"] = queue.claim(engine, "new", lease_seconds=60)  # another connection, committed

    event.listen(engine, "before_cursor_execute", take_over)
    try:
        with pytest.raises(queue.LeaseLost), session_scope(engine) as s:
            queue.fail(s, job_id, "old", "boom")
    finally:
        event.remove(engine, "before_cursor_execute", take_over)
    assert state["claimed"] is not None and state["claimed"].id == job_id
    job = _job(engine, job_id)
    assert (job.status, job.worker_id, job.attempts) == (JobStatus.running, "new", 2), (
        "the old worker's failure overwrote the new worker's claim"
    )


def test_a_cancelled_job_whose_worker_died_is_cancelled_not_run_again(any_engine) -> None:
    job_id = _enqueue(any_engine)
    assert queue.claim(any_engine, "dying", lease_seconds=0.05).id == job_id
    with session_scope(any_engine) as s:
        assert queue.request_cancel(s, job_id).status == JobStatus.running  # asked; the worker never heard
    time.sleep(0.1)
    assert queue.claim(any_engine, "other") is None, "the cancelled job was handed to another worker"
    job = _job(any_engine, job_id)
    assert job.status == JobStatus.cancelled and job.finished_at is not None and "cancelled" in job.last_error


def test_leases_follow_the_database_clock_not_the_hosts(any_engine, monkeypatch) -> None:
    """A worker whose host clock runs an hour behind must not hold a lease that ends an hour early (or, ahead,
    one that never ends): run_after and lease_until come from the database server."""
    import db.models

    skewed = datetime.now(UTC) - timedelta(hours=1)
    monkeypatch.setattr(db.models, "utcnow", lambda: skewed)
    monkeypatch.setattr(queue, "utcnow", lambda: skewed, raising=False)  # where the queue read the host clock
    monkeypatch.setattr(queue, "datetime", _SkewedDatetime(skewed), raising=False)
    job_id = _enqueue(any_engine)
    claimed = queue.claim(any_engine, "w", lease_seconds=60)
    assert claimed is not None and claimed.id == job_id, "a job enqueued by a skewed host must be runnable now"
    real_now = datetime.now(UTC)
    assert abs((claimed.lease_until - real_now).total_seconds() - 60) < 10, claimed.lease_until
    assert abs((_job(any_engine, job_id).run_after - real_now).total_seconds()) < 10


def test_a_burst_worker_reads_when_retries_are_due_by_the_database_clock(any_engine, monkeypatch) -> None:
    """`augloop worker --burst` waits for a retry due within 30 s rather than exiting: it compared the retry's
    `run_after` (the database's clock) with its host's clock, so a host an hour behind exited with a retry due in
    5 s left for no one, and one an hour ahead kept polling for a retry due in ten minutes."""
    import db.models
    import workers.main
    from workers.main import Worker

    def host_clock(offset: timedelta) -> None:
        skewed = lambda: datetime.now(UTC) + offset  # noqa: E731
        monkeypatch.setattr(db.models, "utcnow", skewed)
        monkeypatch.setattr(workers.main, "utcnow", skewed, raising=False)  # where it read the host's clock

    job_id = _enqueue(any_engine, "export")
    worker = Worker(any_engine, kinds=["export"])

    def due_in(delay: timedelta) -> None:
        with session_scope(any_engine) as s:
            s.execute(update(Job).where(Job.id == job_id).values(run_after=queue.db_now(s) + delay))

    due_in(timedelta(seconds=5))
    host_clock(-timedelta(hours=1))
    assert worker._next_due_within(30), "a retry due in 5 s: the burst worker waits for it"
    due_in(timedelta(minutes=10))
    host_clock(timedelta(hours=1))
    assert not worker._next_due_within(30), "a retry due in ten minutes: the burst worker exits"


def test_a_write_lock_held_past_a_lease_does_not_hand_a_live_workers_job_to_another(engine) -> None:
    """On SQLite nothing renews a lease while another transaction holds the write lock (an import's switch of
    millions of rows, a large deletion): the next claim found the live worker's lease run out and ran its job a
    second time. A transaction that held the lock gives that time back to the running leases as it commits."""
    from db.models import Project

    job_id = _enqueue(engine)
    assert queue.claim(engine, "alive", lease_seconds=1.0).id == job_id
    before = _job(engine, job_id).lease_until
    with session_scope(engine) as s:  # a long writing transaction: the heartbeat could not have renewed
        s.execute(update(Project).values(name=Project.name))
        time.sleep(2.5)
    after = _job(engine, job_id).lease_until
    assert (after - before).total_seconds() >= 2.5, (before, after)
    assert queue.claim(engine, "other") is None, "the live worker's job was handed to another"
    assert _job(engine, job_id).worker_id == "alive" and _job(engine, job_id).attempts == 1
    with session_scope(engine) as s:  # a short one leaves the leases alone
        s.execute(update(Project).values(name=Project.name))
    assert _job(engine, job_id).lease_until == after
    time.sleep(max(0.0, (after - datetime.now(UTC)).total_seconds()) + 0.2)
    assert queue.claim(engine, "other").id == job_id, "a worker that is gone is still found, that much later"


def test_a_write_lock_whose_holder_dies_does_not_hand_a_live_workers_job_to_another(engine, monkeypatch) -> None:
    """A transaction that held SQLite's write lock past a lease and was killed (or rolled back) gives no time
    back: the claim that waited for the lock swept the live worker's expired lease before its heartbeat came
    back, ran its job a second time and, on the last attempt, failed it as "worker lost". A claim that waited
    long for the lock now leaves the leases for a few seconds, time for the heartbeats to come back."""
    import sqlite3

    from sqlalchemy.engine import make_url

    import db.session

    monkeypatch.setattr(db.session, "_write_lock_blocked_at", None, raising=False)
    job_id = _enqueue(engine)
    assert queue.claim(engine, "alive", lease_seconds=1.0).id == job_id
    _enqueue(engine)  # another job, for the waiting claim to take
    killed = sqlite3.connect(make_url(str(engine.url)).database, isolation_level=None)
    killed.execute("BEGIN IMMEDIATE")  # a writer holding the lock, then gone without a commit
    claimed: list[Any] = []
    waiting = threading.Thread(target=lambda: claimed.append(queue.claim(engine, "other", lease_seconds=1.0)))
    waiting.start()
    time.sleep(2.5)  # past the live worker's lease
    killed.rollback()
    killed.close()
    waiting.join(30)
    assert claimed and claimed[0] is not None and claimed[0].id != job_id
    queue.heartbeat(engine, job_id, "alive", lease_seconds=1.0)  # back within a second of the lock's release
    assert _job(engine, job_id).worker_id == "alive" and _job(engine, job_id).attempts == 1
    # a worker that is gone is still found, once the sweep's pause is over
    monkeypatch.setattr(db.session, "_write_lock_blocked_at", None, raising=False)
    time.sleep(1.2)
    assert queue.claim(engine, "third").id == job_id


def test_lock_time_is_given_back_once_whatever_savepoints_or_rollbacks_came_before(engine) -> None:
    """A savepoint released inside a long transaction is not its commit (the time was counted twice, or the
    rest of it never); a transaction rolled back leaves no start time for the next one to count."""
    from db.models import Project

    job_id = _enqueue(engine)
    assert queue.claim(engine, "alive", lease_seconds=60).id == job_id

    def lease() -> datetime:
        return _job(engine, job_id).lease_until

    start = lease()
    with session_scope(engine) as s:
        s.execute(update(Project).values(name=Project.name))
        time.sleep(2.2)
        for _ in range(2):
            with s.begin_nested():
                s.execute(update(Project).values(name=Project.name))
    given = (lease() - start).total_seconds()
    assert 2.2 <= given < 3.5, given
    start = lease()
    with session_scope(engine) as s:
        with s.begin_nested():
            s.execute(update(Project).values(name=Project.name))
        time.sleep(2.2)
    assert (lease() - start).total_seconds() >= 2.2, "the time after a savepoint was not given back"
    start = lease()
    with session_scope(engine) as s:
        s.execute(update(Project).values(name=Project.name))
        s.rollback()
        time.sleep(2.2)
        s.begin()
    assert lease() == start, "a rolled-back transaction's start was counted by the next commit"


class _SkewedDatetime:
    """Stands in for the datetime class in db.queue: now() returns the skewed host time."""

    def __init__(self, value: datetime) -> None:
        self.value = value

    def now(self, tz: Any = None) -> datetime:
        return self.value

    def __getattr__(self, name: str) -> Any:
        return getattr(datetime, name)


@pytest.mark.slow
def test_a_training_job_that_lost_its_lease_stops_writing_at_once(settings, engine, tiny_encoder: str) -> None:
    """The job is taken from the worker after its first epoch; its heartbeat would notice only ~20 s later. No
    further epoch, no artifact, no outcome and no checkpoint of the stale worker may reach the database or the
    run's folders (its next epoch's checkpoint, written before the epoch's lease-checked record, overwrote the new
    owner's)."""
    from services.importing import ImportSpec, import_file
    from services.training import checkpoint_dir, create_training_runs, default_config, runs_root
    from workers.main import Worker

    with session_scope(engine) as s:
        result = import_file(
            s,
            small_csv(n_train=160, n_val=24, n_test=24),
            ImportSpec(dataset="small", tasks=["bias", "message"]),
            filename="small.csv",
        )
        from db.datasets import get_dataset

        dataset = get_dataset(s, result.dataset)
        (run,) = create_training_runs(
            s,
            dataset,
            default_config(
                tiny_keys(tiny_encoder, epochs=8, patience=0, grad_accum=1, warmup_ratio=0.0, rdrop_alpha=0.0)
            ),
            [3],
        )
        job = queue.enqueue(s, "train", {"run_id": run.id, "dataset": "small"}, progress_total=8, max_attempts=2)
        run.job_id = job.id
        run_id, job_id = run.id, job.id
    worker = Worker(engine, kinds=["train"], lease_seconds=60, poll_seconds=0.05)
    thread = threading.Thread(target=lambda: worker.run(max_jobs=1), daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    stolen_at = None
    while time.monotonic() < deadline and stolen_at is None:
        with session_scope(engine) as s:
            curve = s.scalar(select(TrainingRun.curve).where(TrainingRun.id == run_id)) or []
            if curve:
                s.execute(update(Job).where(Job.id == job_id).values(worker_id="thief"))
                stolen_at = len(curve)
        time.sleep(0.01)
    assert stolen_at is not None, "the run never recorded an epoch"
    checkpoints = {p: p.stat().st_mtime_ns for p in checkpoint_dir(run_id).rglob("*") if p.is_file()}
    assert checkpoints, "the first epoch left no checkpoint"
    thread.join(120)
    assert not thread.is_alive()
    after = {p: p.stat().st_mtime_ns for p in checkpoint_dir(run_id).rglob("*") if p.is_file()}
    assert after == checkpoints, "the stale worker wrote the new owner's checkpoint"
    with session_scope(engine) as s:
        run = s.get_one(TrainingRun, run_id)
        assert len(run.curve) == stolen_at, f"{len(run.curve) - stolen_at} epoch(s) written after the lease was lost"
        assert run.status == JobStatus.running and not run.metrics and run.artifact_dir is None
    assert worker.stats.lost == 1 and worker.stats.succeeded == 0
    assert not (runs_root() / str(run_id)).exists(), "the stale worker wrote the run's artifacts"
    assert list(runs_root().glob(f"{run_id}.partial-*")) == [], "the stale worker's staging files were left"


def test_release_hands_the_job_back_at_once_with_its_attempt(any_engine) -> None:
    """A worker shutting down hands its (checkpointed) job back: queued now, the claim's attempt given back, and
    only by the worker that holds it."""
    job_id = _enqueue(any_engine)
    assert queue.claim(any_engine, "stopping", lease_seconds=30).id == job_id
    with session_scope(any_engine) as s, pytest.raises(queue.LeaseLost):
        queue.release(s, job_id, "someone-else", "not mine")
    with session_scope(any_engine) as s:
        queue.release(s, job_id, "stopping", "the worker stopped; resumes from the checkpoint at step 40")
    job = _job(any_engine, job_id)
    assert job.status == JobStatus.queued and job.worker_id is None and job.lease_until is None
    assert job.attempts == 0 and "step 40" in (job.last_error or "")
    again = queue.claim(any_engine, "next", lease_seconds=30)  # due at once: no back-off
    assert again is not None and again.id == job_id and again.attempts == 1


def test_a_failed_heartbeat_is_retried_within_a_second_not_a_third_of_the_lease(engine, monkeypatch) -> None:
    from workers.main import Worker
    from workers.registry import JobContext

    beats: list[float] = []

    def flaky(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        beats.append(time.monotonic())
        if len(beats) == 1:
            raise OSError("the database is restarting")
        return queue.Heartbeat(cancel_requested=False)

    monkeypatch.setattr(queue, "heartbeat", flaky)
    worker = Worker(engine, ["export"], lease_seconds=6)  # a beat every 2 s
    stop = threading.Event()
    beating = threading.Thread(target=worker._heartbeat_loop, args=(JobContext(1, "export", {}, engine, "w", 1), stop))
    started = time.monotonic()
    beating.start()
    time.sleep(3.5)
    stop.set()
    beating.join()
    assert len(beats) == 2, [round(b - started, 1) for b in beats]
    assert 0.8 < beats[1] - beats[0] < 1.4


def test_moving_progress_reaches_the_database_within_seconds_not_a_third_of_the_lease(engine, monkeypatch) -> None:
    """The API read a job's progress only at each lease renewal, 20 s apart at the default 60 s lease: a small job
    read 0 and then its total. While progress moves it is written every PROGRESS_SECONDS; while it stands still
    the lease is renewed as before, a third of the lease apart."""
    from workers.main import PROGRESS_SECONDS, Worker
    from workers.registry import JobContext

    beats: list[tuple[float, int]] = []

    def beat(*_args, done: int = 0, **_kwargs):  # type: ignore[no-untyped-def]
        beats.append((time.monotonic(), done))
        return queue.Heartbeat(cancel_requested=False)

    monkeypatch.setattr(queue, "heartbeat", beat)
    worker = Worker(engine, ["export"], lease_seconds=60)  # renewals 20 s apart
    ctx = JobContext(1, "export", {}, engine, "w", 1)
    stop = threading.Event()
    beating = threading.Thread(target=worker._heartbeat_loop, args=(ctx, stop))
    started = time.monotonic()
    beating.start()
    for done in range(1, 7):  # a batch a second for six seconds
        ctx.report(done=done, total=10)
        time.sleep(1.0)
    time.sleep(PROGRESS_SECONDS + 0.5)  # the last report's beat (the next tick) has gone
    quiet = len(beats)
    time.sleep(2 * PROGRESS_SECONDS + 0.5)  # no progress: no beat (the lease has 20 s)
    stop.set()
    beating.join()
    assert len(beats) == quiet, "a beat without anything new, long before the lease needed one"
    assert 2 <= quiet <= 5, [(round(t - started, 1), d) for t, d in beats]
    assert beats[0][0] - started < PROGRESS_SECONDS + 0.5 and beats[-1][1] == 6
