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
