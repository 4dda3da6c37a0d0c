"""The jobs a command holds for work it does in its own process (`augloop train` without --queue).

Each in-process run has a `train` job that the command holds from the start (db.queue.enqueue with `held_by`,
one attempt, leased for AUGLOOP_CLI_JOB_LEASE_SECONDS): a thread here renews every held job's lease, as a
worker's heartbeat does, writes the run's progress on it, and passes a cancellation asked for through the API to
the run. The command ends each job as its run ends; when it stops early (an error, Ctrl-C) it ends the jobs of
the runs it never reached. When the process dies without a word (kill -9, a power cut), nothing renews the
leases: once they expire, the queue's sweep (any worker's next claim, the next `augloop train` or `augloop
runs`) ends job and run as failed. Before, such a run stayed "running" for good, and nothing could end it.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any

from sqlalchemy import Engine

from core.settings import get_settings
from db import queue
from db.models import JobStatus
from services.run_execution import end_held_run
from workers.main import PROGRESS_SECONDS
from workers.registry import JobContext

log = logging.getLogger(__name__)

NOT_REACHED = "not run: the command stopped before it"
RETRY_SECONDS = 1.0  # after a failed renewal (the database busy or briefly unreachable), the next comes this soon
LeaseLost = queue.LeaseLost  # what the command catches when the sweep took a job from it


class HeldJobs:
    """Context manager over the jobs a command holds as `worker_id`: run id → (job id, progress total)."""

    def __init__(
        self, engine: Engine, worker_id: str, jobs: dict[int, tuple[int, int]], lease_seconds: float | None = None
    ):
        self.engine = engine
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds or get_settings().cli_job_lease_seconds
        self._contexts = {
            run_id: JobContext(
                job_id=job_id,
                kind="train",
                params={"run_id": run_id},
                engine=engine,
                worker_id=worker_id,
                attempt=1,
                total=total,
            )
            for run_id, (job_id, total) in jobs.items()
        }
        self._open = set(jobs)  # runs whose job this command has not ended yet
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._renew, name="held-job-leases", daemon=True)

    def __enter__(self) -> HeldJobs:
        self._beat.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._beat.join()
        with self._lock:
            left = sorted(self._open)
        for run_id in left:  # the runs this command never reached
            try:
                self.end(run_id, JobStatus.cancelled, NOT_REACHED)
            except Exception:
                log.exception("could not end the job of run %s", run_id)

    def context(self, run_id: int) -> JobContext:
        """The run's job as a worker's handler sees it: report(), check_cancelled(), complete_in()."""
        return self._contexts[run_id]

    def end(self, run_id: int, status: str, error: str) -> bool:
        """End the run and its job (services.run_execution.end_held_run); False when the queue's sweep had ended
        them already."""
        ctx = self._contexts[run_id]
        ours = end_held_run(self.engine, run_id, ctx.job_id, self.worker_id, status, error)
        self.finished(run_id)  # once that committed: a failure leaves it for __exit__ to try again
        if not ours:
            log.warning("job %s of run %s had been ended by the queue's sweep", ctx.job_id, run_id)
        return ours

    def finished(self, run_id: int) -> None:
        """The run's job has ended (completed with the run, in its last transaction, or ended here)."""
        with self._lock:
            self._open.discard(run_id)

    def _renew(self) -> None:
        """Renew each held job's lease every third of it, and sooner (every PROGRESS_SECONDS) while its run's
        progress moves, as a worker's heartbeat does: renewing only every third of the lease (100 s at the
        default), a cancellation asked through the API reached the run that much later, ten epochs of a small
        run, where the README promises its next training step."""
        interval = max(self.lease_seconds / 3, 0.05)
        tick = min(interval, PROGRESS_SECONDS)
        sent: dict[int, tuple[int, int, dict[str, Any]]] = {}
        beaten: dict[int, float] = {}
        wait = tick
        while not self._stop.wait(wait):
            with self._lock:
                held = [(r, self._contexts[r]) for r in sorted(self._open)]
            failed = False
            for run_id, ctx in held:
                if ctx.completed:  # a run completing now: its job is no longer running, and that is no loss
                    continue
                progress = ctx.snapshot()
                if sent.get(run_id) == progress and time.monotonic() - beaten.get(run_id, 0.0) < interval - tick / 2:
                    continue  # nothing new to say, and the lease has time left
                if self._beat_one(ctx):
                    sent[run_id], beaten[run_id] = progress, time.monotonic()
                else:
                    failed = True
            wait = min(RETRY_SECONDS, tick) if failed else tick

    def _beat_one(self, ctx: JobContext) -> bool:
        """Renew one job's lease with its progress; False when the database could not be reached."""
        try:
            ctx.renew_lease(self.lease_seconds)
        except Exception as err:  # noqa: BLE001 - the database busy or briefly unreachable: retried soon
            log.warning("renewing the lease of job %s failed: %s", ctx.job_id, err)
            return False
        if ctx.completed:  # it completed with its run between the check and the beat: that is no loss
            ctx.lease_lost.clear()
        return True
