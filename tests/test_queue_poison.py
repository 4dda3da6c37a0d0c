"""The queue and its workers facing a job they cannot run: params that are not a JSON object (a row of another
version, written by hand), params missing a key, an end hook that raises. One such job fails with an error that
says why; it never stops the queue for the other jobs, of its kind or any other."""

from __future__ import annotations

import time

from sqlalchemy import update

from db import queue
from db.models import Job, JobStatus
from db.session import session_scope


def job(engine, job_id: int) -> Job:
    with session_scope(engine) as s:
        return s.get(Job, job_id)


def poisoned(engine, kind: str, params, **kw) -> int:
    """A queued job whose params column holds `params` as stored (not necessarily a JSON object)."""
    with session_scope(engine) as s:
        job_id = queue.enqueue(s, kind, {}, **kw).id
        s.execute(update(Job).where(Job.id == job_id).values(params=params))
    return job_id


def test_an_import_job_whose_params_are_not_an_object_stops_no_claim_and_no_cancel(engine) -> None:
    import services.jobs  # noqa: F401 - the import kind's end hook reads the job's params

    lost = poisoned(engine, "import", ["legacy"], max_attempts=1)
    assert queue.claim(engine, "dead-worker", ["import"], lease_seconds=0.1).id == lost
    time.sleep(0.2)
    with session_scope(engine) as s:
        other = queue.enqueue(s, "export", {"dataset": "x"}).id
    taken = queue.claim(engine, "exporter", ["export"])  # ends the lost import job on its way (requeue_expired)
    assert taken is not None and taken.id == other
    assert job(engine, lost).status == JobStatus.failed

    queued = poisoned(engine, "import", "not an object")
    with session_scope(engine) as s:
        queue.request_cancel(s, queued)
    assert job(engine, queued).status == JobStatus.cancelled


def test_an_end_hook_that_raises_is_logged_and_the_queue_goes_on(engine, monkeypatch, caplog) -> None:
    """Its savepoint rolls back (what it wrote goes); the job still ends, and the claim still takes the next job."""

    def broken(session, job_ids, status, error, now) -> None:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(last_error="written by the hook"))
        raise RuntimeError("a hook's bug")

    monkeypatch.setitem(queue.END_HOOKS, "fragile", broken)
    with session_scope(engine) as s:
        fragile = queue.enqueue(s, "fragile", {}, max_attempts=1).id
    queue.claim(engine, "dead-worker", ["fragile"], lease_seconds=0.1)
    time.sleep(0.2)
    with session_scope(engine) as s:
        nxt = queue.enqueue(s, "probe", {}).id
    with caplog.at_level("ERROR", logger="augloop.queue"):
        assert queue.claim(engine, "w", ["probe"]).id == nxt
    ended = job(engine, fragile)
    assert ended.status == JobStatus.failed and "lease expired" in ended.last_error
    assert "a hook's bug" in caplog.text


def test_a_job_whose_params_are_not_an_object_fails_at_once_and_the_worker_goes_on(engine) -> None:
    from workers.main import Worker

    bad = poisoned(engine, "export", ["legacy", "list"])
    text = poisoned(engine, "export", "a string")
    with session_scope(engine) as s:
        after = queue.enqueue(s, "export", {"dataset": "missing"}, max_attempts=1).id
    stats = Worker(engine, ["export"], poll_seconds=0.05).run(burst=True)
    assert stats.job_ids == [bad, text, after]
    for job_id, what in ((bad, "an array"), (text, "a string")):
        failed = job(engine, job_id)
        assert failed.status == JobStatus.failed and failed.attempts == 1, "no retry: the same params fail again"
        assert failed.last_error == f"the job's params must be a JSON object, not {what}"
    assert job(engine, after).status == JobStatus.failed and "missing" in job(engine, after).last_error


def test_params_without_a_key_the_handler_needs_fail_at_once_naming_it(engine) -> None:
    from workers.main import Worker

    with session_scope(engine) as s:
        export = queue.enqueue(s, "export", {"format": "csv"}).id
        train = queue.enqueue(s, "train", {"seed": 1}).id
    Worker(engine, ["export", "train"], poll_seconds=0.05).run(burst=True)
    for job_id, key in ((export, "dataset"), (train, "run_id")):
        failed = job(engine, job_id)
        assert failed.status == JobStatus.failed and failed.attempts == 1, failed.last_error
        assert failed.last_error == f"the job's params lack {key!r}"


def test_a_claim_that_raises_is_logged_and_the_worker_claims_again(engine, monkeypatch, caplog) -> None:
    from workers.main import Worker

    with session_scope(engine) as s:
        job_id = queue.enqueue(s, "export", {"dataset": "missing"}, max_attempts=1).id
    real_claim, calls = queue.claim, []

    def claim_once_broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug met while claiming")
        return real_claim(*args, **kwargs)

    monkeypatch.setattr(queue, "claim", claim_once_broken)
    with caplog.at_level("ERROR", logger="augloop.worker"):
        stats = Worker(engine, ["export"], poll_seconds=0.05).run(burst=True)
    assert stats.job_ids == [job_id] and job(engine, job_id).status == JobStatus.failed
    assert "a bug met while claiming" in caplog.text


def test_a_cancel_that_cannot_be_recorded_within_the_lease_leaves_the_worker_running(engine, monkeypatch) -> None:
    """A job cancelled while the database is out for longer than a lease: recording the cancel gave up with
    LeaseLost, which the cancel branch did not catch, and the worker process died (its queue stopped until a
    restart). Now it counts the job lost (the sweep ends it cancelled) and goes on to the next job."""
    from sqlalchemy.exc import OperationalError

    from workers.main import Worker
    from workers.registry import JobCancelled

    with session_scope(engine) as s:
        cancelled = queue.enqueue(s, "export", {"dataset": "x"}).id
        nxt = queue.enqueue(s, "export", {"dataset": "y"}).id
    worker = Worker(engine, ["export"], lease_seconds=0.3, poll_seconds=0.05)
    seen: list[int] = []

    def handler(ctx):  # type: ignore[no-untyped-def]
        seen.append(ctx.job_id)
        if ctx.job_id == cancelled:
            with session_scope(engine) as s:  # a member's cancel, which the handler then sees
                queue.request_cancel(s, cancelled)
            raise JobCancelled("cancelled by a member")
        return {"ok": True}

    def out(*_args, **_kw):  # type: ignore[no-untyped-def]
        raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))

    worker.handlers = {**worker.handlers, "export": handler}  # this worker's own: the registry stays as it is
    monkeypatch.setattr(queue, "mark_cancelled", out)
    stats = worker.run(burst=True)
    assert seen == [cancelled, nxt] and stats.lost == 1 and stats.succeeded == 1
    assert job(engine, nxt).status == JobStatus.succeeded
    assert job(engine, cancelled).status == JobStatus.cancelled  # the sweep ended it, as the member asked
