"""The database-backed queue on SQLite and on a real Postgres server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from sqlalchemy import select

from db import queue
from db.models import Job, JobStatus
from db.session import session_scope
from tests.conftest import REPO_ROOT


def enqueue(engine, kind="probe", **params) -> int:
    with session_scope(engine) as s:
        return queue.enqueue(s, kind, params).id


def job(engine, job_id: int) -> Job:
    with session_scope(engine) as s:
        return s.get(Job, job_id)


def test_claim_order_priority_then_age(any_engine):
    with session_scope(any_engine) as s:
        low = queue.enqueue(s, "probe", {}).id
        high = queue.enqueue(s, "probe", {}, priority=5).id
        other_kind = queue.enqueue(s, "other", {}, priority=9).id
    assert queue.claim(any_engine, "w1", ["probe"]).id == high
    assert queue.claim(any_engine, "w1", ["probe"]).id == low
    assert queue.claim(any_engine, "w1", ["probe"]) is None
    claimed = queue.claim(any_engine, "w2")
    assert claimed.id == other_kind and claimed.status == JobStatus.running and claimed.attempts == 1


def test_enqueue_rolls_back_with_the_callers_transaction(any_engine):
    with pytest.raises(RuntimeError), session_scope(any_engine) as s:
        queue.enqueue(s, "probe", {})
        raise RuntimeError("request failed after enqueueing")
    with session_scope(any_engine) as s:
        assert s.scalars(select(Job)).all() == []


def test_failure_retries_with_backoff_then_fails_keeping_the_error(any_engine, monkeypatch):
    job_id = enqueue(any_engine)
    for attempt in (1, 2, 3):
        claimed = queue.claim(any_engine, "w")
        assert claimed is not None and claimed.id == job_id and claimed.attempts == attempt
        with session_scope(any_engine) as s:
            status = queue.fail(s, job_id, "w", f"boom {attempt}")
        assert status == (JobStatus.failed if attempt == 3 else JobStatus.queued)
    final = job(any_engine, job_id)
    assert final.status == JobStatus.failed and final.last_error == "boom 3" and final.finished_at is not None


def test_backoff_delays_the_retry(any_engine, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setattr(get_settings(), "job_retry_base_seconds", 60.0)
    job_id = enqueue(any_engine)
    queue.claim(any_engine, "w")
    with session_scope(any_engine) as s:
        queue.fail(s, job_id, "w", "transient")
    assert queue.claim(any_engine, "w") is None  # not before run_after
    assert (job(any_engine, job_id).run_after - job(any_engine, job_id).updated_at).total_seconds() >= 59


def test_a_handed_back_job_is_skipped_by_its_worker_and_a_cancel_asked_while_held_ends_it(any_engine):
    """A worker that hands a job over (another worker can run it) skips it at its next claims and takes the
    next one; another worker takes it, its attempt given back. A cancellation asked while a worker held the job
    ends it at its release: queued again, it read "queued" until a worker took it up only to stop."""
    first, second = enqueue(any_engine), enqueue(any_engine)
    assert queue.claim(any_engine, "w1", ["probe"]).id == first
    with session_scope(any_engine) as s:
        assert queue.release(s, first, "w1", "handed over") == JobStatus.queued
    assert job(any_engine, first).attempts == 0 and job(any_engine, first).status == JobStatus.queued
    assert queue.claim(any_engine, "w1", ["probe"], skip=[first]).id == second
    assert queue.claim(any_engine, "w1", ["probe"], skip=[first]) is None
    taken = queue.claim(any_engine, "w2", ["probe"])
    assert taken.id == first and taken.attempts == 1
    with session_scope(any_engine) as s:
        assert queue.request_cancel(s, first).status == JobStatus.running  # asked to stop at its next beat
    with session_scope(any_engine) as s:
        assert queue.release(s, first, "w2", "shutting down") == JobStatus.cancelled
    assert job(any_engine, first).status == JobStatus.cancelled and job(any_engine, first).finished_at is not None


def test_a_job_that_fails_after_its_cancellation_was_asked_ends_cancelled(any_engine, monkeypatch):
    """A run cancelled while its encoder loaded ended "failed" when the load failed; with attempts left it went
    back to the queue, to load the encoder again only to stop. It ends cancelled, the error kept for the
    operator, its attempts or not."""
    told: list[tuple[str, str]] = []  # what the kind's end hook (a run's end, for a train job) is told
    monkeypatch.setitem(queue.END_HOOKS, "probe", lambda _s, _ids, status, error, _now: told.append((status, error)))
    with session_scope(any_engine) as s:
        retried = queue.enqueue(s, "probe", {}, max_attempts=3).id
        last = queue.enqueue(s, "probe", {}, max_attempts=1).id
    for job_id in (retried, last):
        assert queue.claim(any_engine, "w", ["probe"]).id == job_id
        with session_scope(any_engine) as s:
            assert queue.request_cancel(s, job_id).status == JobStatus.running
        with session_scope(any_engine) as s:
            assert queue.fail(s, job_id, "w", "OSError: the hub did not answer") == JobStatus.cancelled
        ended = job(any_engine, job_id)
        assert ended.status == JobStatus.cancelled and ended.finished_at is not None
        assert ended.last_error == "OSError: the hub did not answer"
        assert told.pop() == ("cancelled", "cancelled while it ran; it had failed: OSError: the hub did not answer")
    assert queue.claim(any_engine, "w", ["probe"]) is None
    # not asked: a failure with attempts left is retried as before
    other = enqueue(any_engine)
    queue.claim(any_engine, "w", ["probe"])
    with session_scope(any_engine) as s:
        assert queue.fail(s, other, "w", "boom") == JobStatus.queued


def test_expired_lease_is_requeued_and_the_old_worker_cannot_complete(any_engine):
    job_id = enqueue(any_engine)
    assert queue.claim(any_engine, "dead-worker", lease_seconds=2).id == job_id
    assert queue.claim(any_engine, "w2") is None  # lease still valid
    time.sleep(2.1)
    again = queue.claim(any_engine, "w2")
    assert again.id == job_id and again.attempts == 2 and again.worker_id == "w2"
    with pytest.raises(queue.LeaseLost), session_scope(any_engine) as s:
        queue.complete(s, job_id, "dead-worker", {})
    with pytest.raises(queue.LeaseLost):
        queue.heartbeat(any_engine, job_id, "dead-worker")
    with session_scope(any_engine) as s:
        queue.complete(s, job_id, "w2", {"ok": True})
    assert job(any_engine, job_id).status == JobStatus.succeeded


def test_a_job_queued_again_shows_no_progress_of_the_attempt_that_ended(any_engine, monkeypatch):
    """A lost augment job read "queued, 1535 of 9531 done, 860 kept" until a worker took it up, and its next
    attempt showed them until its first heartbeat; so did a failed attempt's retry and a job handed back."""
    from core.settings import get_settings

    monkeypatch.setattr(get_settings(), "job_retry_base_seconds", 0.0)
    job_id = enqueue(any_engine)

    def worked(worker: str, lease: float = 30) -> None:
        assert queue.claim(any_engine, worker, lease_seconds=lease).id == job_id
        queue.heartbeat(any_engine, job_id, worker, lease_seconds=lease, done=1535, total=9531, info={"kept": 860})

    def shown() -> tuple:
        row = job(any_engine, job_id)
        return row.status, row.progress_done, row.progress_total, row.progress_info

    worked("dead-worker", lease=1)
    time.sleep(1.1)
    with session_scope(any_engine) as s:
        queue.requeue_expired(s)
    assert shown() == (JobStatus.queued, 0, 9531, {})
    worked("w2")
    with session_scope(any_engine) as s:
        queue.fail(s, job_id, "w2", "transient")  # retried
    assert shown() == (JobStatus.queued, 0, 9531, {})
    worked("w3")
    with session_scope(any_engine) as s:
        queue.release(s, job_id, "w3", "handed back at shutdown")
    assert shown() == (JobStatus.queued, 0, 9531, {})
    worked("w4")
    with session_scope(any_engine) as s:
        queue.fail(s, job_id, "w4", "the last attempt")  # a failed job keeps where it stopped
    assert shown() == (JobStatus.failed, 1535, 9531, {"kept": 860})


def test_expired_lease_without_attempts_left_fails(any_engine):
    with session_scope(any_engine) as s:
        job_id = queue.enqueue(s, "probe", {}, max_attempts=1).id
    queue.claim(any_engine, "w", lease_seconds=0.1)
    time.sleep(0.2)
    assert queue.claim(any_engine, "w") is None
    failed = job(any_engine, job_id)
    assert failed.status == JobStatus.failed and "lease expired" in failed.last_error


def test_cancel_queued_and_running(any_engine, tmp_path):
    from workers.main import Worker

    queued_id = enqueue(any_engine, record_dir=str(tmp_path))
    with session_scope(any_engine) as s:
        queue.request_cancel(s, queued_id)
    assert job(any_engine, queued_id).status == JobStatus.cancelled
    with pytest.raises(Exception, match="already cancelled"), session_scope(any_engine) as s:
        queue.request_cancel(s, queued_id)

    import tests.queue_probe  # noqa: F401  (registers the probe kind in this process)

    running_id = enqueue(any_engine, record_dir=str(tmp_path), sleep=3, steps=30)
    worker = Worker(any_engine, ["probe"], lease_seconds=0.3)
    import threading

    t = threading.Thread(target=worker.run, kwargs={"burst": True})
    t.start()
    deadline = time.monotonic() + 10
    while job(any_engine, running_id).status != JobStatus.running and time.monotonic() < deadline:
        time.sleep(0.05)
    with session_scope(any_engine) as s:
        queue.request_cancel(s, running_id)
    t.join(20)
    assert job(any_engine, running_id).status == JobStatus.cancelled
    assert worker.stats.cancelled == 1


def test_a_database_error_reaches_the_job_without_the_drivers_words(engine, tmp_path, caplog, monkeypatch):
    """Project members read a job's error: a database failure says what happened, not the driver's message
    (it names the database's host, port and user); the worker's log keeps that for the operator."""
    import tests.queue_probe  # noqa: F401  (registers the probe kind in this process)
    from core.settings import get_settings
    from workers.main import Worker

    monkeypatch.setattr(get_settings(), "job_retry_base_seconds", 60.0)  # the burst does not wait for the retry

    url = "postgresql+psycopg://augloop_reader@127.0.0.1:9/secret_db?connect_timeout=2"
    with session_scope(engine) as s:
        job_id = queue.enqueue(s, "probe", {"record_dir": str(tmp_path), "database_url": url}, max_attempts=1).id
    with caplog.at_level("ERROR", logger="augloop.worker"):
        Worker(engine, ["probe"], lease_seconds=30, poll_seconds=0.05).run(burst=True)
    failed = job(engine, job_id)
    # an unreachable database is an outage: its attempt is given back (test_a_database_outage_…, below)
    assert failed.status == JobStatus.queued and (failed.attempts, failed.outages) == (0, 1)
    assert failed.last_error.startswith("OperationalError: the database was busy or unreachable")
    for secret in ("127.0.0.1", "9", "augloop_reader", "secret_db", "psycopg"):
        assert secret not in failed.last_error.replace("OperationalError", "")
    assert "127.0.0.1" in caplog.text  # the operator's log has it


def test_an_outage_gives_its_attempt_back_a_few_times(any_engine, monkeypatch) -> None:
    """A failure the caller judged a database outage is retried without spending an attempt, backing off,
    until the job has given back AUGLOOP_JOB_MAX_OUTAGES; after that it counts like any failure."""
    from core.settings import get_settings

    monkeypatch.setattr(get_settings(), "job_max_outages", 2)
    monkeypatch.setattr(get_settings(), "job_retry_base_seconds", 0.0)
    with session_scope(any_engine) as s:
        job_id = queue.enqueue(s, "probe", {}, max_attempts=1).id
    # no backoff configured, an outage still waits a little: retried at once, it would meet the same outage
    queue.claim(any_engine, "w")
    with session_scope(any_engine) as s:
        queue.fail(s, job_id, "w", "restarting", outage=True)
    waited = job(any_engine, job_id)
    assert (waited.run_after - waited.updated_at).total_seconds() >= queue.OUTAGE_BACKOFF_SECONDS
    assert queue.claim(any_engine, "w") is None
    with session_scope(any_engine) as s:  # the test does not wait: the job is due now, its first outage undone
        s.get_one(Job, job_id).run_after, s.get_one(Job, job_id).outages = waited.updated_at, 0
    monkeypatch.setattr(queue, "OUTAGE_BACKOFF_SECONDS", 0.0)
    for outages in (1, 2):
        assert queue.claim(any_engine, "w").attempts == 1
        with session_scope(any_engine) as s:
            assert queue.fail(s, job_id, "w", "restarting", outage=True) == JobStatus.queued
        back = job(any_engine, job_id)
        assert (back.attempts, back.outages, back.last_error) == (0, outages, "restarting")
    assert queue.claim(any_engine, "w").attempts == 1
    with session_scope(any_engine) as s:
        assert queue.fail(s, job_id, "w", "restarting again", outage=True) == JobStatus.failed
    assert (job(any_engine, job_id).attempts, job(any_engine, job_id).outages) == (1, 2)
    # a failure that is no outage spends its attempt at once; a permanent one is not retried at all
    with session_scope(any_engine) as s:
        other = queue.enqueue(s, "probe", {}, max_attempts=2).id
    queue.claim(any_engine, "w")
    with session_scope(any_engine) as s:
        assert queue.fail(s, other, "w", "a bug", outage=False) == JobStatus.queued
    assert (job(any_engine, other).attempts, job(any_engine, other).outages) == (1, 0)
    queue.claim(any_engine, "w")
    with session_scope(any_engine) as s:
        assert queue.fail(s, other, "w", "refused", retry=False, outage=True) == JobStatus.failed


def test_a_database_outage_does_not_spend_a_jobs_attempt(engine, tmp_path, monkeypatch) -> None:
    """A database restart under a running job failed its attempt: a train job (2 attempts) that met two restarts
    failed for good. The worker gives an outage's attempt back (a restart, a failover, a lock held past the busy
    timeout), says so on the job, and a job a command holds, or a statement that fails every time, still fails."""
    import sqlite3

    import tests.queue_probe  # noqa: F401  (registers the probe kind in this process)
    from core.settings import get_settings
    from workers.main import Worker
    from workers.registry import JobContext

    monkeypatch.setattr(get_settings(), "job_retry_base_seconds", 60.0)  # the burst does not wait for retries
    unreachable = "postgresql+psycopg://augloop@127.0.0.1:9/db?connect_timeout=2"
    broken = f"sqlite:///{tmp_path / 'other.db'}"
    with session_scope(engine) as s:
        restart = queue.enqueue(s, "probe", {"record_dir": str(tmp_path), "database_url": unreachable}, max_attempts=1)
        statement = queue.enqueue(
            s,
            "probe",
            {"record_dir": str(tmp_path), "database_url": broken, "database_sql": "SELECT * FROM no_such_table"},
            max_attempts=1,
        )
        ids = restart.id, statement.id
    Worker(engine, ["probe"], lease_seconds=30, poll_seconds=0.05).run(burst=True)
    retried, failed = job(engine, ids[0]), job(engine, ids[1])
    assert retried.status == JobStatus.queued and (retried.attempts, retried.outages) == (0, 1)
    assert retried.last_error.endswith("a database outage: retried without spending an attempt (1 of 5)")
    assert failed.status == JobStatus.failed and failed.outages == 0
    assert "failed a statement" in failed.last_error

    # the handlers' own decision (a train job ends its run as failed or leaves it queued) is the worker's
    from sqlalchemy.exc import OperationalError

    outage = OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked"))
    statement_error = OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table: x"))
    last = JobContext(job_id=1, kind="train", params={}, engine=engine, worker_id="w", attempt=2, max_attempts=2)
    assert not last.will_retry(outage), "a job a command holds gives no attempt back"
    last.max_outages = get_settings().job_max_outages
    assert last.will_retry(outage) and not last.will_retry(statement_error)
    last.outages = last.max_outages
    assert not last.will_retry(outage), "its outages used up, an outage spends the last attempt"
    monkeypatch.setattr(get_settings(), "job_max_outages", 0)
    with session_scope(engine) as s:
        gone = queue.enqueue(s, "probe", {"record_dir": str(tmp_path), "database_url": unreachable}, max_attempts=1).id
    Worker(engine, ["probe"], lease_seconds=30, poll_seconds=0.05).run(burst=True)
    assert job(engine, gone).status == JobStatus.failed, "AUGLOOP_JOB_MAX_OUTAGES=0: an outage spends attempts"


def test_failure_text_names_the_kind_of_database_trouble(tmp_path) -> None:
    import sqlite3

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError

    from services.failures import failure_text

    path = tmp_path / "ro.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x INTEGER UNIQUE)").connection.commit()
    shown = []
    for statement, url in (
        ("INSERT INTO t VALUES (1)", f"sqlite:///file:{path}?mode=ro&uri=true"),
        ("INSERT INTO t VALUES (1), (1)", f"sqlite:///{path}"),
    ):
        with pytest.raises(DBAPIError) as raised, create_engine(url).begin() as connection:
            connection.execute(text(statement))
        shown.append(failure_text(raised.value))
    assert shown[0] == (
        "OperationalError: the database is read-only for the worker (the log of the process that ran it has the "
        "driver's message)"
    )
    assert shown[1].startswith("IntegrityError: the database refused a write") and "INSERT" not in shown[1]
    assert failure_text(OSError(2, "No such file", "/srv/secret/models/x")) == "FileNotFoundError: [Errno 2] " + (
        "No such file: '…/x'"
    )
    # The driver's own error (an import's COPY goes to the driver), an error raised from one, and a session that
    # reports a failed flush again: none shows the statement or the driver's words.
    try:
        sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("INSERT INTO t VALUES (2)")
    except sqlite3.Error as raw:
        assert failure_text(raw).startswith("OperationalError: the database is read-only")
        try:
            raise RuntimeError(f"import failed: {raw}") from raw
        except RuntimeError as wrapped:
            assert failure_text(wrapped).startswith("RuntimeError: the database is read-only")
    from sqlalchemy import Integer
    from sqlalchemy.orm import DeclarativeBase, Session, mapped_column

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = "t"
        rowid = mapped_column("rowid", Integer, primary_key=True)
        x = mapped_column(Integer)

    with Session(create_engine(f"sqlite:///{path}")) as session:
        session.add_all([Row(x=7), Row(x=7)])
        with pytest.raises(DBAPIError):
            session.flush()
        with pytest.raises(Exception) as again:
            session.execute(text("SELECT 1"))
    assert type(again.value).__name__ == "PendingRollbackError" and "INSERT" in str(again.value)
    assert failure_text(again.value) == (
        "PendingRollbackError: the database failed a statement (the log of the process that ran it has the "
        "driver's message)"
    )
    # Which trouble: SQLite's statement errors fail the same way every time; Postgres' SQLSTATE tells a lost
    # server from a deadlock; an error raised `from None` stands alone.
    with pytest.raises(DBAPIError) as missing, create_engine(f"sqlite:///{path}").begin() as connection:
        connection.execute(text("SELECT * FROM no_such_table"))
    assert failure_text(missing.value).startswith("OperationalError: the database failed a statement")
    import psycopg.errors

    assert "a deadlock or a serialization failure" in failure_text(psycopg.errors.SerializationFailure("x"))
    assert "busy or unreachable" in failure_text(psycopg.errors.AdminShutdown("terminating connection"))
    # short of memory or connections, a system or I/O error, a session ended for idling: the server's trouble,
    # not the statement's; a missing table is the statement's, a full disk the operator's
    from services.failures import database_outage

    for passing in ("OutOfMemory", "IoError", "IdleInTransactionSessionTimeout", "TooManyConnections"):
        error = getattr(psycopg.errors, passing)("x")
        assert "busy or unreachable" in failure_text(error) and database_outage(error), passing
    assert "failed a statement" in failure_text(psycopg.errors.UndefinedTable("x"))
    assert "disk is full" in failure_text(psycopg.errors.DiskFull("x"))
    assert not any(database_outage(getattr(psycopg.errors, n)("x")) for n in ("UndefinedTable", "DiskFull"))
    # SQLite's "disk I/O error" (a file size limit, a failing disk) read "busy or unreachable" and was retried
    # as an outage: it is the disk's, and said so
    from sqlalchemy.exc import OperationalError as SAOperationalError

    io_error = SAOperationalError("COMMIT", {}, sqlite3.OperationalError("disk I/O error"))
    assert "disk failed a read or write" in failure_text(io_error) and not database_outage(io_error)
    assert database_outage(psycopg.errors.SerializationFailure("x")) and not database_outage(missing.value)
    try:
        try:
            raise missing.value
        except DBAPIError:
            raise ValueError("the file names no task called 'x'") from None
    except ValueError as alone:
        assert failure_text(alone) == "ValueError: the file names no task called 'x'"


def _worker_env(settings, lease: float = 30) -> dict[str, str]:
    return {
        **os.environ,
        "AUGLOOP_DATABASE_URL": settings.resolved_database_url,
        "AUGLOOP_DATA_DIR": str(settings.data_dir),
        "AUGLOOP_WORKER_PLUGINS": '["tests.queue_probe"]',
        "AUGLOOP_JOB_LEASE_SECONDS": str(lease),
        "AUGLOOP_WORKER_POLL_SECONDS": "0.2",
        "PYTHONPATH": str(REPO_ROOT),
    }


def _spawn_worker(settings, lease: float = 30, burst: bool = True, kinds: str = "probe") -> subprocess.Popen:
    args = [sys.executable, "-m", "augloop", "worker", "--kinds", kinds] + (["--burst"] if burst else [])
    return subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        env=_worker_env(settings, lease),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_four_worker_processes_run_200_jobs_exactly_once(any_settings, any_engine, tmp_path):
    record = tmp_path / "runs"
    record.mkdir()
    with session_scope(any_engine) as s:
        ids = [queue.enqueue(s, "probe", {"record_dir": str(record)}).id for _ in range(200)]
    workers = [_spawn_worker(any_settings) for _ in range(4)]
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    runs = Counter(int(p.name.split(".")[0]) for p in record.iterdir())
    assert sorted(runs) == sorted(ids) and set(runs.values()) == {1}, "every job exactly once"
    assert {p.read_text() for p in record.iterdir()} == {"finished"}
    with session_scope(any_engine) as s:
        jobs = s.scalars(select(Job)).all()
        assert {j.status for j in jobs} == {JobStatus.succeeded} and {j.attempts for j in jobs} == {1}
        assert len({j.worker_id for j in jobs}) > 1, "the work was shared between processes"


@pytest.mark.slow
def test_sigkilled_worker_job_is_finished_by_another_after_lease_expiry(any_settings, any_engine, tmp_path):
    record = tmp_path / "runs"
    record.mkdir()
    job_id = enqueue(any_engine, record_dir=str(record), sleep=4, steps=40)
    victim = _spawn_worker(any_settings, lease=1.5, burst=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = job(any_engine, job_id)
        if current.status == JobStatus.running and current.progress_done >= 2:
            break
        time.sleep(0.1)
    else:
        victim.kill()
        pytest.fail(f"job never started: {victim.communicate()[0]}")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert job(any_engine, job_id).status == JobStatus.running  # orphaned, lease not yet expired
    rescuer = _spawn_worker(any_settings, lease=5)
    out = rescuer.communicate(timeout=120)[0]
    assert rescuer.returncode == 0, out
    done = job(any_engine, job_id)
    assert done.status == JobStatus.succeeded and done.attempts == 2
    assert sorted(p.read_text() for p in record.iterdir()) == ["finished", "started"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_finishes_the_current_job_then_exits(settings, engine, tmp_path, signum):
    """A redeploy (SIGTERM) or a closed terminal (SIGHUP): the job under way finishes, the next stays queued."""
    record = tmp_path / "runs"
    record.mkdir()
    first = enqueue(engine, record_dir=str(record), sleep=2, steps=20)
    second = enqueue(engine, record_dir=str(record))
    w = _spawn_worker(settings, burst=False)
    deadline = time.monotonic() + 60
    while job(engine, first).status != JobStatus.running and time.monotonic() < deadline:
        time.sleep(0.05)
    w.send_signal(signum)
    out = w.communicate(timeout=60)[0]
    assert w.returncode == 0, out
    assert job(engine, first).status == JobStatus.succeeded
    assert job(engine, second).status == JobStatus.queued


def test_handler_failure_is_retried_then_succeeds(settings, engine, tmp_path):
    import tests.queue_probe  # noqa: F401
    from workers.main import Worker

    job_id = enqueue(engine, record_dir=str(tmp_path), fail_times=1)
    stats = Worker(engine, ["probe"]).run(burst=True)
    done = job(engine, job_id)
    assert done.status == JobStatus.succeeded and done.attempts == 2
    assert stats.retried == 1 and stats.succeeded == 1


def test_a_failed_jobs_error_names_the_exception_and_leaves_the_traceback_to_the_log(
    settings, engine, tmp_path, caplog
):
    """Members read a job's error: the exception, not a traceback through the server's files."""
    import tests.queue_probe  # noqa: F401
    from workers.main import Worker

    job_id = enqueue(engine, record_dir=str(tmp_path), fail_times=5)
    with caplog.at_level("ERROR", logger="augloop.worker"):
        Worker(engine, ["probe"]).run(burst=True)
    failed = job(engine, job_id)
    assert failed.status == JobStatus.failed
    assert failed.last_error == f"RuntimeError: planned failure on attempt {failed.attempts}"
    assert "Traceback" in caplog.text and "queue_probe.py" in caplog.text


def test_the_kinds_jobs_are_listed_by_are_the_kinds_workers_run() -> None:
    from services.jobs import JOB_KINDS
    from workers.registry import load_handlers

    workers_run = [kind for kind, fn in load_handlers().items() if fn.__module__.startswith("workers.")]
    assert sorted(JOB_KINDS) == sorted(workers_run)  # (tests register kinds of their own)


def test_a_job_listing_filter_with_an_unknown_value_is_refused(admin) -> None:
    for params, field in (({"status": "bogus"}, "status"), ({"kind": "augment,exprot"}, "kind")):
        r = admin.get("/api/v1/jobs", params=params)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert admin.get("/api/v1/jobs", params={"status": "queued,running", "kind": "export"}).status_code == 200
    # Training runs take the same status values (an unknown one answered an empty list, as if there were none)
    r = admin.get("/api/v1/training-runs", params={"status": "succeded"})
    assert r.status_code == 422 and r.json()["field"] == "status" and "succeeded" in r.json()["detail"], r.text
    assert admin.get("/api/v1/training-runs", params={"status": "queued,succeeded"}).status_code == 200
