"""The worker loop: claim a job, run its handler with a heartbeat, record the outcome; repeat.

SIGTERM/SIGINT finish the current job and exit; a training job instead checkpoints at its next optimizer step
and goes back to the queue (JobReleased), to be resumed by the next worker. `burst=True` drains the queue and returns.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from core.settings import get_settings
from db import queue, worker_presence
from db.models import Job, JobStatus
from db.session import session_scope
from services import jobs as _job_hooks  # noqa: F401 - the queue's end hooks (a lost train job ends its run)
from services.access import without_server_paths
from services.datasets import sweep_orphan_uploads
from services.failures import failure_text
from services.leftover_files import sweep_leftovers
from workers.registry import (
    JobCancelled,
    JobContext,
    JobDeclined,
    JobReleased,
    PermanentJobError,
    job_params,
    load_handlers,
    with_companions,
)

log = logging.getLogger("augloop.worker")

PROGRESS_SECONDS = 2.0  # while a job's progress moves, it reaches the database at most this often
HEARTBEAT_RETRY_SECONDS = 1.0  # after a failed beat (the database briefly unreachable), the next comes this soon


def new_worker_id() -> str:
    """An opaque id: it is shown on every job the worker holds, to every member of the job's project, so it
    names no host and no process (those are in the worker's row of the `workers` table, which admins read)."""
    return f"w-{uuid.uuid4().hex[:12]}"


SWEEP_SECONDS = 3600  # between housekeeping sweeps (each keeps what was touched within its own grace, an hour)


@dataclass
class WorkerStats:
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    lost: int = 0
    released: int = 0  # handed back unfinished at a shutdown (a training run, from its checkpoint)
    declined: int = 0  # handed over to another worker that can run them (an augmenter this one cannot load)
    job_ids: list[int] = field(default_factory=list)


class Worker:
    def __init__(
        self,
        engine: Engine,
        kinds: list[str] | None = None,
        worker_id: str | None = None,
        lease_seconds: float | None = None,
        poll_seconds: float | None = None,
    ) -> None:
        settings = get_settings()
        self.engine = engine
        self.handlers = dict(load_handlers(settings.worker_plugins))  # its own: the registry is shared
        unknown = [k for k in kinds or [] if k not in self.handlers]
        if unknown:
            raise ValueError(f"unknown job kind(s) {unknown}; known: {sorted(self.handlers)}")
        self.kinds = with_companions(kinds or sorted(self.handlers))
        self.worker_id = worker_id or new_worker_id()
        self.lease_seconds = lease_seconds or settings.job_lease_seconds
        self.poll_seconds = poll_seconds if poll_seconds is not None else settings.worker_poll_seconds
        self.stop_requested = threading.Event()
        self.stats = WorkerStats()
        self._next_sweep = 0.0  # monotonic time; 0: at the first turn of the loop
        self._declined: dict[int, float] = {}  # job id -> monotonic time until which others take it

    def install_signal_handlers(self) -> None:
        def on_signal(signum, _frame):  # type: ignore[no-untyped-def]
            log.info("signal %s: finishing the current job (a training run: checkpointing it), then exiting", signum)
            self.stop_requested.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, on_signal)  # a closed terminal: as gracefully as a redeploy

    def run(self, burst: bool = False, max_jobs: int | None = None, announce: bool = False) -> WorkerStats:
        """Run jobs until stopped (or, with `burst`, until the queue is drained). With `announce`, the worker
        publishes itself and the augmenters it can load in the `workers` table while it runs."""
        log.info("worker %s started; kinds: %s", self.worker_id, ", ".join(self.kinds))
        presence = Presence(self) if announce else None
        if presence:
            presence.start()
        try:
            return self._loop(burst, max_jobs)
        finally:
            if presence:
                presence.stop()

    def _loop(self, burst: bool, max_jobs: int | None) -> WorkerStats:
        while not self.stop_requested.is_set():
            self._sweep_when_due()
            try:
                job = queue.claim(self.engine, self.worker_id, self.kinds, self.lease_seconds, self._left_to_others())
            except DBAPIError as err:  # database restarting or unreachable: wait and reconnect
                log.warning("claim failed (%s); retrying", str(err).splitlines()[0])
                self.stop_requested.wait(self.poll_seconds)
                continue
            except Exception:  # a bug met while claiming (a job's end hook): log it, try again later
                log.exception("claim failed; retrying")
                self.stop_requested.wait(max(self.poll_seconds, 1.0))
                continue
            if job is None:
                if burst and not self._jobs_pending_soon():
                    break
                self.stop_requested.wait(self.poll_seconds)
                continue
            self.run_job(job)
            if max_jobs is not None and len(self.stats.job_ids) >= max_jobs:
                break
        return self.stats

    def _sweep_when_due(self) -> None:
        """Housekeeping when the worker starts, then once an hour: the files under runs/ and exports/ that no row
        owns any more (services/leftover_files.py), and, in a worker that runs imports, the uploads no open import
        job names. A failure is logged; the jobs go on."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_SECONDS
        sweeps = [("leftover files", sweep_leftovers)]
        if "import" in self.kinds:
            sweeps.append(("orphan uploads", sweep_orphan_uploads))
        for what, sweep in sweeps:
            try:
                removed = sweep(self.engine)
            except Exception:  # housekeeping must not stop the jobs
                log.exception("sweeping %s failed", what)
                continue
            if removed:
                log.info("deleted %d %s", removed, what)

    def _left_to_others(self) -> list[int]:
        """The jobs this worker handed over (JobDeclined) and leaves to others until it checks again what it can
        load."""
        now = time.monotonic()
        self._declined = {job_id: until for job_id, until in self._declined.items() if until > now}
        return list(self._declined)

    def _jobs_pending_soon(self) -> bool:
        """In burst mode, wait for retries that are due within a few seconds rather than exiting early."""
        try:
            return self._next_due_within(30)
        except DBAPIError:
            return True

    def _next_due_within(self, seconds: float) -> bool:
        queued = [Job.status == JobStatus.queued, Job.kind.in_(self.kinds)]
        if skipped := self._left_to_others():  # jobs handed over to other workers are theirs to wait for
            queued.append(Job.id.not_in(skipped))
        with session_scope(self.engine) as s:
            soonest = s.scalar(select(func.min(Job.run_after)).where(*queued))
            now = queue.db_now(s)  # run_after is the database's clock (queue.enqueue, retries): so is "now"
            # only a job with attempts left goes back to the queue when its lease expires (one out of them, such
            # as the one-attempt jobs `augloop train` holds for its in-process runs, fails then): no need to wait
            running = s.scalar(
                select(func.count()).where(
                    Job.status == JobStatus.running, Job.kind.in_(self.kinds), Job.attempts < Job.max_attempts
                )
            )
        if soonest is not None:
            if soonest.tzinfo is None:
                soonest = soonest.replace(tzinfo=UTC)
            return (soonest - now).total_seconds() < seconds
        # A running job of another worker may be re-queued when its lease expires: keep draining until then.
        return bool(running)

    def run_job(self, job: Job) -> None:
        self.stats.job_ids.append(job.id)
        beat_stop = threading.Event()
        beat: threading.Thread | None = None  # started once the job's context stands

        def stop_beat() -> None:
            beat_stop.set()
            if beat is not None:
                beat.join()

        log.info("job %s (%s) attempt %s started", job.id, job.kind, job.attempts)
        started = time.monotonic()
        ctx: JobContext | None = None
        try:
            # Inside the try: params that are not a JSON object fail this job, never the worker.
            ctx = JobContext(
                job_id=job.id,
                kind=job.kind,
                params=job_params(job.params),
                engine=self.engine,
                worker_id=self.worker_id,
                attempt=job.attempts,
                max_attempts=job.max_attempts,
                dataset_id=job.dataset_id,
                created_by=job.created_by,
                outages=job.outages,
                max_outages=get_settings().job_max_outages,
                total=job.progress_total,
                stopping=self.stop_requested,
            )
            beat = threading.Thread(target=self._heartbeat_loop, args=(ctx, beat_stop), daemon=True)
            beat.start()
            result = self.handlers[job.kind](ctx) or {}
            if not ctx.completed:
                self._retrying_db(lambda: self._complete(ctx, result))
            stop_beat()
            self.stats.succeeded += 1
            log.info("job %s succeeded in %.1fs", job.id, time.monotonic() - started)
        except JobCancelled:
            stop_beat()
            try:
                self._retrying_db(lambda: self._in_transaction(queue.mark_cancelled, job.id, self.worker_id))
            except queue.LeaseLost as err:  # an outage past the lease: the sweep ends it cancelled, not this worker
                self.stats.lost += 1
                log.warning("job %s: %s", job.id, err)
                return
            self.stats.cancelled += 1
            log.info("job %s cancelled", job.id)
        except JobReleased as err:
            stop_beat()
            note = str(err)
            try:
                status = self._retrying_db(lambda: self._in_transaction(queue.release, job.id, self.worker_id, note))
            except queue.LeaseLost:
                self.stats.lost += 1
                return
            if status == JobStatus.cancelled:  # asked while it was held
                self.stats.cancelled += 1
                log.info("job %s cancelled", job.id)
                return
            if isinstance(err, JobDeclined):
                self._declined[job.id] = time.monotonic() + get_settings().worker_capabilities_seconds
                self.stats.declined += 1
            else:
                self.stats.released += 1
            log.info("job %s handed back to the queue: %s", job.id, err)
        except queue.LeaseLost as err:
            stop_beat()
            self.stats.lost += 1
            log.warning("job %s: %s", job.id, err)
        except Exception as err:  # noqa: BLE001 - a handler failure is recorded on the job, never crashes the worker
            stop_beat()
            permanent = isinstance(err, PermanentJobError)
            # The job shows its error to the project's members: the exception, not a traceback through the
            # server's paths; the traceback goes to the worker's log, for the operator.
            # Its paths too: an OSError names the file it failed on, and where the server keeps its files is not
            # the members' to know (services/access.without_server_paths); nor are the driver's words of a
            # database error, which name the database's host and port (services/failures.failure_text).
            message = without_server_paths(str(err)) if permanent else failure_text(err)
            # A database outage (a restart, a failover, a lock held past the busy timeout) is not the job's
            # failure: it is retried without spending an attempt, a few times at most (AUGLOOP_JOB_MAX_OUTAGES).
            outage = not permanent and ctx is not None and ctx.outage(err)
            if outage and ctx is not None:
                message += (
                    f"; a database outage: retried without spending an attempt ({ctx.outages + 1} of {ctx.max_outages})"
                )
            if not permanent:
                log.error("job %s (%s) raised:\n%s", job.id, job.kind, traceback.format_exc(limit=12))
            try:
                status = self._retrying_db(
                    lambda: self._in_transaction(
                        queue.fail, job.id, self.worker_id, message, retry=not permanent, outage=outage
                    )
                )
            except queue.LeaseLost:
                self.stats.lost += 1
                return
            if status == JobStatus.failed:
                self.stats.failed += 1
            elif status == JobStatus.cancelled:  # asked while it ran: it ends cancelled, its error kept
                self.stats.cancelled += 1
            else:
                self.stats.retried += 1
            log.warning("job %s failed (%s): %s", job.id, status, str(err)[:500])

    def _complete(self, ctx: JobContext, result: dict) -> None:
        with session_scope(self.engine) as s:
            queue.complete(s, ctx.job_id, self.worker_id, result, progress=ctx.snapshot())

    def _in_transaction(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        with session_scope(self.engine) as s:
            return fn(s, *args, **kwargs)

    def _retrying_db(self, write):  # type: ignore[no-untyped-def]
        """Record a job's outcome through a database restart: retry transient errors for up to one lease
        (after that the lease is gone and the job belongs to whoever re-claims it)."""
        deadline = time.monotonic() + self.lease_seconds
        delay = 0.2
        while True:
            try:
                return write()
            except DBAPIError as err:
                if time.monotonic() > deadline:
                    raise queue.LeaseLost(f"could not record the outcome before the lease ran out: {err}") from err
                log.warning("recording the job outcome failed (%s); retrying", str(err).splitlines()[0])
                time.sleep(delay)
                delay = min(delay * 2, 5)

    def _heartbeat_loop(self, ctx: JobContext, stop: threading.Event) -> None:
        """Renew the lease every third of it, and sooner (every PROGRESS_SECONDS) while the job's progress moves:
        the API read a job's progress only at each renewal, 20 s apart at the default lease, so a small job read
        0 and then its total, and a cancellation waited as long to be seen."""
        interval = max(self.lease_seconds / 3, 0.05)
        tick = min(interval, PROGRESS_SECONDS)
        sent: tuple[int, int, dict[str, Any]] | None = None
        beaten = time.monotonic()
        wait = tick
        while not stop.wait(wait):
            wait = tick
            progress = ctx.snapshot()
            if progress == sent and time.monotonic() - beaten < interval - tick / 2:
                continue  # nothing new to say, and the lease has time left
            try:
                ctx.renew_lease(self.lease_seconds)
            except Exception as err:  # noqa: BLE001 - database briefly unreachable: keep trying until the lease runs out
                log.warning("heartbeat for job %s failed: %s", ctx.job_id, err)
                wait = min(HEARTBEAT_RETRY_SECONDS, interval)  # not a third of the lease more: it may be the last
                continue
            sent, beaten = progress, time.monotonic()
            if ctx.lease_lost.is_set():
                return


class Presence:
    """A thread that keeps the worker's row in `workers` fresh: the job kinds it takes and, for augmentation,
    which augmenters it can load (workers.augment.availability), checked again every
    AUGLOOP_WORKER_CAPABILITIES_SECONDS: the API refuses requests for a method no live worker can load, so a
    model put into the cache or an endpoint back up must show. The row goes when the worker stops."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.interval = max(get_settings().worker_presence_seconds, 0.05)
        self.recheck = max(get_settings().worker_capabilities_seconds, self.interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="worker-presence", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            with session_scope(self.worker.engine) as s:
                worker_presence.remove(s, self.worker.worker_id)
        except DBAPIError as err:
            log.warning("could not remove worker %s from the workers table: %s", self.worker.worker_id, err)

    def _announce(self) -> None:
        from workers.augment.availability import capabilities

        caps = capabilities() if "augment" in self.worker.kinds else {}
        with session_scope(self.worker.engine) as s:
            worker_presence.announce(
                s,
                self.worker.worker_id,
                hostname=socket.gethostname(),
                pid=os.getpid(),
                kinds=self.worker.kinds,
                capabilities=caps,
                refresh_seconds=self.interval,
            )
            worker_presence.forget_stale(s)

    def _loop(self) -> None:
        announced_at: float | None = None  # when the capabilities were last checked and written
        while not self._stop.is_set():
            try:
                if announced_at is None or time.monotonic() - announced_at >= self.recheck:
                    self._announce()
                    announced_at = time.monotonic()
                else:
                    with session_scope(self.worker.engine) as s:
                        touched = worker_presence.touch(s, self.worker.worker_id)
                    if not touched:  # removed as stale after a long pause: announce again at once
                        announced_at = None
                        continue
            except Exception as err:  # noqa: BLE001 - the database is restarting: try again next interval
                log.warning("worker presence update failed: %s", str(err).splitlines()[0] if str(err) else err)
            self._stop.wait(self.interval)
