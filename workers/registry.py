"""Job kinds → handler functions. Handlers register with @handler("kind")."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

HANDLERS: dict[str, Callable[[JobContext], dict[str, Any] | None]] = {}
# kind → kinds a worker taking it must take too (jobs of those kinds stand before its jobs in a pipeline)
COMPANIONS: dict[str, list[str]] = {}
# Modules whose import registers the built-in kinds (imported lazily: the ML stacks are heavy).
BUILTIN_MODULES = ["workers.handlers", "workers.train_jobs", "workers.augment_jobs"]


class JobCancelled(Exception):
    """Raised inside a handler when the job was cancelled through the API."""


class JobReleased(Exception):
    """Raised by a handler that stopped because its worker is shutting down, after saving where it was (a
    training checkpoint): the job goes back to the queue for any worker to continue (queue.release)."""


class JobDeclined(JobReleased):
    """Raised by a handler whose worker cannot run the job while another live worker can (an augmenter this one
    cannot load): the job goes back to the queue with its attempt given back, and this worker leaves it to the
    others until it checks again what it can load (AUGLOOP_WORKER_CAPABILITIES_SECONDS)."""


class PermanentJobError(Exception):
    """A failure that a retry cannot fix (missing model, bad parameters): fail the job at once."""


class MissingJobParam(PermanentJobError, KeyError):
    """A handler read a key its job's params lack: the same params fail the same way again (still a KeyError, for
    code that asks with one)."""

    def __str__(self) -> str:
        return str(self.args[0])


class JobParams(dict[str, Any]):
    """A job's params as its handler reads them: a missing key fails the job at once, naming the key."""

    def __missing__(self, key: str) -> Any:
        raise MissingJobParam(f"the job's params lack {key!r}")


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def job_params(params: Any) -> JobParams:
    """A stored job's params, which must be a JSON object (None: no params); anything else (a row of another
    version, written by hand) fails the job at once."""
    if params is None:
        return JobParams()
    if not isinstance(params, dict):
        kind = _JSON_TYPES.get(type(params), type(params).__name__)
        raise PermanentJobError(f"the job's params must be a JSON object, not {kind}")
    return JobParams(params)


def handler(kind: str, *, companion_of: str | None = None) -> Callable:
    """Register a job kind. `companion_of`: a worker that takes that kind takes this one too (the `train` jobs
    of a request are queued by its `lr_select` job: a training worker that skipped it would wait forever)."""

    def register(fn: Callable[[JobContext], dict[str, Any] | None]) -> Callable:
        HANDLERS[kind] = fn
        if companion_of:
            COMPANIONS.setdefault(companion_of, []).append(kind)
        return fn

    return register


def with_companions(kinds: list[str]) -> list[str]:
    out = list(kinds)
    for kind in kinds:
        out += [c for c in COMPANIONS.get(kind, []) if c not in out]
    return out


def load_handlers(extra_modules: list[str] | None = None) -> dict[str, Callable]:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for module in extra_modules or []:
        try:
            importlib.import_module(module)
        except ImportError as err:  # the operator's setting: exit 2 naming it, not a traceback
            raise ValueError(f"AUGLOOP_WORKER_PLUGINS: cannot import {module!r}: {err}") from None
    return HANDLERS


@dataclass
class JobContext:
    """What a handler sees: its job's parameters, the engine, and a way to report progress.

    `report()` only records numbers in memory; the worker's heartbeat thread writes them with the lease
    renewal, so reporting is cheap enough to call per batch. `check_cancelled()` raises JobCancelled once the
    API asked for cancellation.
    """

    job_id: int
    kind: str
    params: dict[str, Any]
    engine: Engine
    worker_id: str
    attempt: int
    max_attempts: int = 1
    dataset_id: int | None = None
    created_by: int | None = None
    outages: int = 0  # attempts of this job given back to database outages so far
    max_outages: int = 0  # how many may be (the worker's AUGLOOP_JOB_MAX_OUTAGES; none for a job a command holds)
    done: int = 0
    total: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    cancelled: threading.Event = field(default_factory=threading.Event)
    lease_lost: threading.Event = field(default_factory=threading.Event)
    # set when the worker was asked to stop (SIGTERM): a handler that can save its place stops early
    stopping: threading.Event = field(default_factory=threading.Event)
    completed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def report(self, done: int | None = None, total: int | None = None, **info: Any) -> None:
        with self._lock:
            if done is not None:
                self.done = done
            if total is not None:
                self.total = total
            self.info.update(info)
        self.check_cancelled()

    def snapshot(self) -> tuple[int, int, dict[str, Any]]:
        with self._lock:
            return self.done, self.total, dict(self.info)

    def complete_in(self, session: Any, result: dict[str, Any]) -> None:
        """Mark the job succeeded inside the handler's own write transaction, so that its output and its
        completion commit together (or not at all, when the lease was lost to another worker)."""
        from db import queue

        self.check_cancelled()
        try:
            queue.complete(session, self.job_id, self.worker_id, result, progress=self.snapshot(), cancellable=True)
        except queue.CancelRequested as err:
            self.cancelled.set()
            raise JobCancelled(str(err)) from None
        self.completed = True

    def renew_lease(self, lease_seconds: float) -> None:
        """One heartbeat: renew the job's lease and write its progress; a cancellation asked for sets
        `cancelled`, a job no longer ours `lease_lost`. A database error is the caller's to retry."""
        from db import queue

        done, total, info = self.snapshot()
        try:
            hb = queue.heartbeat(
                self.engine, self.job_id, self.worker_id, lease_seconds=lease_seconds, done=done, total=total, info=info
            )
        except queue.LeaseLost:
            self.lease_lost.set()
            return
        if hb.cancel_requested:
            self.cancelled.set()

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelled(f"job {self.job_id} was cancelled")
        if self.lease_lost.is_set():
            from db.queue import LeaseLost

            raise LeaseLost(f"job {self.job_id} lost its lease")

    @property
    def retries_left(self) -> bool:
        """Whether an ordinary (not permanent) failure of this attempt is retried."""
        return self.attempt < self.max_attempts

    def outage(self, err: BaseException) -> bool:
        """Whether `err` is a database outage (services.failures.database_outage) this job retries without
        spending an attempt: it has not used up its outages."""
        from services.failures import database_outage

        return self.outages < self.max_outages and database_outage(err)

    def will_retry(self, err: BaseException) -> bool:
        """Whether the worker retries this attempt's (not permanent) failure `err`: attempts are left, or it is
        an outage the job may retry without spending one (the worker decides the same way)."""
        return self.retries_left or self.outage(err)
