"""A database-backed job queue for SQLite and Postgres.

Claiming is `SELECT ... FOR UPDATE SKIP LOCKED` on Postgres and one conditional UPDATE on SQLite (where writers
are serialised anyway). A claimed job carries a lease that the worker's heartbeat renews; a job whose lease
expired is re-queued (or failed, past max_attempts; or cancelled, when cancellation was asked), so a dead
worker's job is finished by another. Every write a worker makes to its job (progress, completion, failure) is
conditional on still holding the lease. Leases and run-after times are read from the database's clock, never a
host's: workers on hosts whose clocks disagree still agree on when a lease ends.
Functions that take a Session only flush: the caller owns the transaction, so enqueueing inside a request's
transaction enqueues nothing when that request rolls back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, event, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction

from core.errors import ConflictError, NotFoundError
from core.settings import get_settings
from db.models import Job, JobStatus
from db.session import WRITE_LOCK_SINCE, affected_rows, write_lock_blocked_within

log = logging.getLogger("augloop.queue")

TERMINAL = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}


class LeaseLost(Exception):
    """The worker no longer owns the job (its lease expired and another worker may have it)."""


class CancelRequested(Exception):
    """The job's cancellation was asked for before its output could commit (`complete(..., cancellable=True)`):
    the caller's transaction must roll back, output and all."""


# What a job kind needs done when one of its jobs ends without succeeding (failed past retrying, cancelled, lost
# with no attempts left, cancelled before it ran): fn(session, job_ids, status, error, now), run in the same
# transaction as the job's status. The train kind ends its training runs there, the import kind deletes its
# upload (services/jobs.py). A hook may find its work done already by the handler: it acts on what is left. A hook
# that raises (a job row it cannot read) is logged and its savepoint rolled back: it cannot stop every claim, every
# re-queue and every cancellation of the queue; a database error still ends the caller's transaction.
EndHook = Callable[[Session, list[int], str, str, datetime], None]
END_HOOKS: dict[str, EndHook] = {}


def on_job_end(kind: str) -> Callable[[EndHook], EndHook]:
    def register(fn: EndHook) -> EndHook:
        END_HOOKS[kind] = fn
        return fn

    return register


def _ended(session: Session, jobs: list[tuple[int, str]], status: str, error: str, now: datetime) -> None:
    by_kind: dict[str, list[int]] = {}
    for job_id, kind in jobs:
        by_kind.setdefault(kind, []).append(job_id)
    for kind, ids in by_kind.items():
        hook = END_HOOKS.get(kind)
        if hook is None:
            continue
        try:
            with session.begin_nested():
                hook(session, ids, status, error, now)
        except DBAPIError:
            raise
        except Exception:  # one kind's bad job must not stop the queue for every kind
            log.exception("the end hook of %s jobs %s failed; the jobs end %s without it", kind, ids, status)


def db_now(session: Session) -> datetime:
    """The database server's current time (UTC): the one clock every host of a deployment shares."""
    if session.get_bind().dialect.name == "postgresql":
        value: datetime = session.scalar(text("SELECT clock_timestamp()"))
    else:  # SQLite's clock is the host's, but there is only one host writing the file
        raw = session.scalar(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))
        value = datetime.fromisoformat(raw).replace(tzinfo=UTC)
    return value.astimezone(UTC)


def enqueue(
    session: Session,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    priority: int = 0,
    max_attempts: int | None = None,
    dataset_id: int | None = None,
    created_by: int | None = None,
    progress_total: int = 0,
    held_by: str | None = None,
    lease_seconds: float | None = None,
) -> Job:
    """A queued job; with `held_by`, one already claimed by that process (its first attempt, leased for
    `lease_seconds`): work a process does itself (the CLI's in-process training) that must still end, through
    the kind's end hook, when the process dies without a word (its lease expires like a worker's)."""
    now = db_now(session)
    job = Job(
        kind=kind,
        params=params or {},
        priority=priority,
        max_attempts=max_attempts or get_settings().job_max_attempts,
        dataset_id=dataset_id,
        created_by=created_by,
        status=JobStatus.queued,
        run_after=now,
        progress_total=progress_total,
        progress_info={},
    )
    if held_by is not None:
        job.status = JobStatus.running
        job.worker_id = held_by
        job.attempts = 1
        job.started_at = now
        job.lease_until = now + timedelta(seconds=lease_seconds or get_settings().job_lease_seconds)
    session.add(job)
    session.flush()
    return job


# A job queued again shows no progress of the attempt that ended: a lost augment job read "queued, 1535 of 9531
# done, 860 kept" until a worker took it up, and its next attempt showed them until its first heartbeat.
NO_PROGRESS: dict[str, Any] = {"progress_done": 0, "progress_info": {}}


def _back_in_queue(now: datetime) -> dict[str, Any]:
    """A job's row once no worker holds it and it may be claimed at once."""
    return {
        "status": JobStatus.queued,
        "worker_id": None,
        "lease_until": None,
        "run_after": now,
        "updated_at": now,
        **NO_PROGRESS,
    }


# A writing transaction on SQLite that held the write lock at least this long gives the time back to the leases
# of running jobs (below): well under the heartbeat's interval (a third of a lease), so no renewal is lost.
LOCK_HELD_GIVE_BACK_SECONDS = 2.0
# After this process waited long for the write lock (SQLite), no expired lease is swept for this long
LOCK_BLOCKED_SWEEP_PAUSE_SECONDS = 5.0


@event.listens_for(Session, "after_begin")
def _note_write_lock(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    if connection.dialect.name == "sqlite" and not transaction.nested:  # a savepoint is not a new lock
        session.info[WRITE_LOCK_SINCE] = connection.info.get(WRITE_LOCK_SINCE)


@event.listens_for(Session, "after_transaction_end")
def _forget_write_lock(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction ended (a rollback too): its lock time goes with it
        session.info.pop(WRITE_LOCK_SINCE, None)


@event.listens_for(Session, "before_commit")
def _give_lock_time_back_to_leases(session: Session) -> None:
    """On SQLite a writing transaction holds the database's only write lock from BEGIN IMMEDIATE to its commit, and
    no worker can renew its lease meanwhile (a heartbeat is a write). One that held it longer than a lease (the
    switch of an import of millions of rows, a large dataset's deletion) let the next claim, which took the lock
    first, find live workers' leases run out and hand their jobs to others: a training attempt lost, run twice,
    and at worst failed as "worker lost" with its worker alive. Before such a transaction commits, every running
    job's lease is extended by the time the lock was held (a dead worker is found that much later)."""
    if session.in_nested_transaction():  # a savepoint released: the lock is held until the outer commit
        return
    since = session.info.pop(WRITE_LOCK_SINCE, None)
    if since is None:
        return
    held = time.monotonic() - since
    if held < LOCK_HELD_GIVE_BACK_SECONDS:
        return
    running = session.execute(
        select(Job.id, Job.lease_until).where(Job.status == JobStatus.running, Job.lease_until.is_not(None))
    ).all()
    for job_id, until in running:
        if until is None:  # the query leaves none out; for the type checker
            continue
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.lease_until == until)
            .values(lease_until=until + timedelta(seconds=held))
            .execution_options(synchronize_session=False)
        )
    if running:
        log.info("gave %.0f s of held write lock back to %d running job lease(s)", held, len(running))


def requeue_expired(session: Session, now: datetime | None = None) -> int:
    """Hand jobs whose worker stopped heart-beating back to the queue; cancel those whose cancellation was asked
    (their worker can no longer stop them); fail those out of attempts. Each kind's end hook runs for the jobs
    ended here."""
    if session.get_bind().dialect.name == "sqlite" and write_lock_blocked_within(LOCK_BLOCKED_SWEEP_PAUSE_SECONDS):
        # Another connection held the write lock a while ago and no worker could renew its lease meanwhile. A
        # writer that commits gives that time back to the leases (below); one killed or rolled back gives
        # nothing back, and sweeping now would hand live workers' jobs to others. Their heartbeats come back
        # within seconds of the lock's release (HEARTBEAT_RETRY_SECONDS): the sweep waits for them.
        return 0
    now = now or db_now(session)
    expired = and_(Job.status == JobStatus.running, Job.lease_until < now)
    ended = 0
    for condition, status, error, why in (
        (
            Job.cancel_requested.is_(True),
            JobStatus.cancelled,
            "cancelled: the worker running it stopped (lease expired) before it could stop the job",
            "cancelled: the worker running it stopped (lease expired) before it could stop the job",
        ),
        (
            Job.attempts >= Job.max_attempts,
            JobStatus.failed,
            "worker lost (lease expired) and no attempts left",
            "the worker running it stopped (lease expired) and no attempts were left",
        ),
    ):
        rows = [
            (row[0], row[1])
            for row in session.execute(
                update(Job)
                .where(expired, condition)
                .values(
                    status=status, finished_at=now, updated_at=now, worker_id=None, lease_until=None, last_error=error
                )
                .returning(Job.id, Job.kind)
                .execution_options(synchronize_session=False)
            )
        ]
        _ended(session, rows, status, why, now)
        ended += len(rows)
    requeued = affected_rows(
        session.execute(
            update(Job)
            .where(expired)
            .values(**_back_in_queue(now), last_error="worker lost (lease expired); re-queued")
            .execution_options(synchronize_session=False)
        )
    )
    return ended + (requeued or 0)


def claim(
    engine: Engine,
    worker_id: str,
    kinds: list[str] | None = None,
    lease_seconds: float | None = None,
    skip: Collection[int] = (),
) -> Job | None:
    """Atomically take the next runnable job (highest priority, then oldest) and lease it to `worker_id`;
    never one of `skip` (jobs this worker handed over to others)."""
    lease_seconds = lease_seconds or get_settings().job_lease_seconds
    with Session(bind=engine, expire_on_commit=False) as session, session.begin():
        now = db_now(session)
        requeue_expired(session, now)
        runnable = [Job.status == JobStatus.queued, Job.run_after <= now]
        if kinds:
            runnable.append(Job.kind.in_(kinds))
        if skip:
            runnable.append(Job.id.not_in(list(skip)))
        pick = select(Job.id).where(*runnable).order_by(Job.priority.desc(), Job.id).limit(1)
        if engine.dialect.name == "postgresql":
            job_id = session.execute(pick.with_for_update(skip_locked=True)).scalar_one_or_none()
            if job_id is None:
                return None
            condition = Job.id == job_id
        else:
            # SQLite has no row locks (SQLAlchemy drops FOR UPDATE there): one conditional UPDATE under
            # the write lock taken at BEGIN IMMEDIATE, and RETURNING says whether we won.
            condition = and_(Job.id == pick.scalar_subquery(), Job.status == JobStatus.queued)
        claimed = session.execute(
            update(Job)
            .where(condition)
            .values(
                status=JobStatus.running,
                worker_id=worker_id,
                attempts=Job.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
                started_at=now,
                updated_at=now,
            )
            .returning(Job.id)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if claimed is None:
            return None
        return session.get(Job, claimed, populate_existing=True)


@dataclass
class Heartbeat:
    cancel_requested: bool


def heartbeat(
    engine: Engine,
    job_id: int,
    worker_id: str,
    *,
    lease_seconds: float | None = None,
    done: int | None = None,
    total: int | None = None,
    info: dict[str, Any] | None = None,
) -> Heartbeat:
    """Renew the lease and record progress. Raises LeaseLost when the job is no longer ours."""
    lease_seconds = lease_seconds or get_settings().job_lease_seconds
    with Session(bind=engine) as session, session.begin():
        now = db_now(session)
        values: dict[str, Any] = {"lease_until": now + timedelta(seconds=lease_seconds), "updated_at": now}
        if done is not None:
            values["progress_done"] = done
        if total is not None:
            values["progress_total"] = total
        if info is not None:
            values["progress_info"] = info
        cancel_requested = _update_owned(session, job_id, worker_id, values, Job.cancel_requested)
    return Heartbeat(cancel_requested=bool(cancel_requested))


def _owned(job_id: int, worker_id: str):  # type: ignore[no-untyped-def]
    return and_(Job.id == job_id, Job.worker_id == worker_id, Job.status == JobStatus.running)


def _update_owned(
    session: Session, job_id: int, worker_id: str, values: dict[str, Any], returning: Any, *conditions: Any
) -> Any:
    """One conditional UPDATE of the job, made only while `worker_id` holds it (and `conditions` are true):
    the updated row's `returning`. Raises LeaseLost when the job is no longer ours."""
    row = session.execute(
        update(Job)
        .where(_owned(job_id, worker_id), *conditions)
        .values(**values)
        .returning(returning)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        raise LeaseLost(f"job {job_id} is no longer leased to {worker_id}")
    return row[0]


def lease_guard(job_id: int | None, worker_id: str | None) -> Callable[[Session], None]:
    """`hold_lease` for this job, to call in each write transaction; a no-op outside a job (no job or worker:
    the CLI running a step in-process)."""

    def guard(session: Session) -> None:
        if job_id is not None and worker_id is not None:
            hold_lease(session, job_id, worker_id)

    return guard


def hold_lease(session: Session, job_id: int, worker_id: str) -> None:
    """Raise LeaseLost unless `worker_id` still holds the job, and keep the job's row locked (Postgres; SQLite
    holds the write lock anyway) until the caller's transaction ends: a handler calls this in the transaction
    of every write it makes, so a worker whose lease ran out writes nothing more, at once, instead of at its
    next heartbeat."""
    _update_owned(session, job_id, worker_id, {"updated_at": db_now(session)}, Job.id)


def complete(
    session: Session,
    job_id: int,
    worker_id: str,
    result: dict[str, Any] | None = None,
    progress: tuple[int, int, dict[str, Any]] | None = None,
    *,
    cancellable: bool = False,
) -> None:
    """Mark the job succeeded, in the caller's transaction (with the job's output), if we still own it. With
    `cancellable` (the output is in this transaction, not committed yet), a cancellation asked for meanwhile
    wins: CancelRequested. The worker sees a cancellation only at its next heartbeat (a third of the lease), so
    a job shorter than that, or one that ends just after the request, would otherwise succeed although the API
    answered that its cancellation was recorded."""
    now = db_now(session)
    values: dict[str, Any] = {
        "status": JobStatus.succeeded,
        "result": result or {},
        "finished_at": now,
        "updated_at": now,
        "lease_until": None,
        "last_error": None,
    }
    if progress is not None:
        done, total, info = progress
        values.update(progress_done=done, progress_total=total, progress_info=info)
    not_cancelled = [Job.cancel_requested.is_(False)] if cancellable else []
    n = affected_rows(
        session.execute(
            update(Job)
            .where(_owned(job_id, worker_id), *not_cancelled)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    )
    if not n:
        if cancellable and session.scalar(select(Job.cancel_requested).where(_owned(job_id, worker_id))):
            raise CancelRequested(f"job {job_id} was cancelled; its output is discarded")
        raise LeaseLost(f"job {job_id} is no longer leased to {worker_id}; its output is discarded")


OUTAGE_BACKOFF_SECONDS = 2.0  # the least first wait after a database outage (2, 4, 8, 16, 32 s: about a lease)


def fail(session: Session, job_id: int, worker_id: str, error: str, *, retry: bool = True, outage: bool = False) -> str:
    """Record a failure, if we still hold the lease; retry with exponential backoff while attempts remain.
    With `outage` (the caller judged the failure a database outage), the attempt is given back instead, while
    the job has given back fewer than AUGLOOP_JOB_MAX_OUTAGES (counted in `outages`, backing off the same way).
    Returns the new status. One conditional UPDATE: a worker whose lease expired cannot overwrite the claim of
    the worker that took the job over. A job whose cancellation was asked for while it was held ends cancelled
    instead, as at its release: a run cancelled while its encoder loaded ended "failed" when the load failed, and
    with attempts left it went back to the queue, to load it again only to stop."""
    settings = get_settings()
    if _end_cancelled(session, job_id, worker_id, Job.cancel_requested.is_(True), error=error):
        return JobStatus.cancelled
    now = db_now(session)
    row = session.execute(
        select(Job.attempts, Job.outages, Job.attempts < Job.max_attempts).where(_owned(job_id, worker_id))
    ).first()
    if row is None:
        raise LeaseLost(f"job {job_id} is no longer leased to {worker_id}")
    attempts, outages, attempts_left = row
    free = retry and outage and outages < settings.job_max_outages
    retrying = retry and bool(attempts_left)
    if free:  # at least OUTAGE_BACKOFF_SECONDS: with no backoff every outage would be used up in the same one
        base = max(settings.job_retry_base_seconds, OUTAGE_BACKOFF_SECONDS)
        delay = min(base * 2**outages, max(settings.job_retry_max_seconds, base))
    else:
        delay = min(settings.job_retry_base_seconds * 2 ** (attempts - 1), settings.job_retry_max_seconds)
    values: dict[str, Any] = {
        "last_error": error[-8000:],
        "updated_at": now,
        "worker_id": None,
        "lease_until": None,
    }
    if free:
        values.update(
            status=JobStatus.queued,
            run_after=now + timedelta(seconds=delay),
            attempts=Job.attempts - 1,
            outages=Job.outages + 1,
            **NO_PROGRESS,
        )
    elif retrying:
        values.update(status=JobStatus.queued, run_after=now + timedelta(seconds=delay), **NO_PROGRESS)
    else:
        values.update(status=JobStatus.failed, finished_at=now)
    status = str(_update_owned(session, job_id, worker_id, values, Job.status, Job.attempts == attempts))
    if status == JobStatus.failed:
        _ended(session, [(job_id, _kind(session, job_id))], status, error, now)
    return status


def _kind(session: Session, job_id: int) -> str:
    return str(session.scalar(select(Job.kind).where(Job.id == job_id)))


def release(session: Session, job_id: int, worker_id: str, note: str) -> str:
    """Hand a job back to the queue at once, if we still hold it: its worker is shutting down and the job
    saved where it stopped (a training checkpoint), or another worker can run it and this one cannot. The
    claim's attempt is given back: the attempt did not fail, and a job stopped by redeploys should not run out
    of attempts for it. No back-off: any worker may take it up now. A job whose cancellation was asked for
    while it was held ends cancelled instead (queued again, it would read "queued" until a worker took it up
    only to stop). Returns the job's status."""
    if _end_cancelled(session, job_id, worker_id, Job.cancel_requested.is_(True)):
        return JobStatus.cancelled
    now = db_now(session)
    values = {**_back_in_queue(now), "attempts": Job.attempts - 1, "last_error": note[-8000:]}
    _update_owned(session, job_id, worker_id, values, Job.id)
    return JobStatus.queued


def mark_cancelled(session: Session, job_id: int, worker_id: str) -> None:
    """The job stopped at its cancellation, if we still hold it (else whoever does decides its end)."""
    _end_cancelled(session, job_id, worker_id)


def _end_cancelled(session: Session, job_id: int, worker_id: str, *conditions: Any, error: str | None = None) -> bool:
    """End the job as cancelled if we still hold it (and `conditions` are true), running its kind's end hook;
    `error`: what the attempt failed with meanwhile, kept for the operator."""
    now = db_now(session)
    kept = {"last_error": error[-8000:]} if error is not None else {}
    kind = session.execute(
        update(Job)
        .where(_owned(job_id, worker_id), *conditions)
        .values(status=JobStatus.cancelled, finished_at=now, updated_at=now, lease_until=None, **kept)
        .returning(Job.kind)
        .execution_options(synchronize_session=False)
    ).scalar()
    if kind is not None:
        # a run's record says why its attempt failed meanwhile too (`runs show` reads the run, not the job)
        said = "cancelled while it ran" + (f"; it had failed: {error}" if error is not None else "")
        _ended(session, [(job_id, kind)], JobStatus.cancelled, said[-8000:], now)
    return kind is not None


def request_cancel(session: Session, job_id: int) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next heartbeat."""
    # Locked (Postgres; SQLite's writers take turns): a claim or a completion cannot land between the status
    # read here and the write below, which would turn a job already running or done into a cancelled one.
    job = session.get(Job, job_id, populate_existing=True, with_for_update=True)
    if job is None:
        raise NotFoundError(f"job {job_id} not found", field="job_id")
    if job.status in TERMINAL:
        raise ConflictError(f"job {job_id} is already {job.status}")
    now = db_now(session)
    if job.status == JobStatus.queued:
        job.status = JobStatus.cancelled
        job.finished_at = now
        _ended(session, [(job.id, job.kind)], JobStatus.cancelled, "cancelled before it ran", now)
    job.cancel_requested = True
    job.updated_at = now
    session.flush()
    return job


def counts_by_status(session: Session) -> dict[str, int]:
    from sqlalchemy import func

    rows = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return dict(rows)


__all__ = [
    "LeaseLost",
    "claim",
    "complete",
    "counts_by_status",
    "db_now",
    "enqueue",
    "fail",
    "heartbeat",
    "hold_lease",
    "lease_guard",
    "mark_cancelled",
    "on_job_end",
    "release",
    "request_cancel",
    "requeue_expired",
]
