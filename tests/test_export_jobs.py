"""The export job's file: each attempt writes its own, and only the attempt whose completion commits publishes it.
A worker that lost its lease, a cancelled export and an export whose dataset is deleted meanwhile leave no file
(or, for the lost worker, leave the published one as it was)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from db import queue
from db.models import Dataset, Job, JobStatus, Sample
from db.session import session_scope
from services.importing import ImportSpec, import_path
from tests.test_import_streaming import write_csv


@pytest.fixture
def dataset(engine, tmp_path) -> str:
    import_path(engine, write_csv(tmp_path / "f.csv", 1_600), ImportSpec(dataset="x", tasks=["bias"]))
    return "x"


class SlowExport:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.delay = 0.4
        self.chunks = 0  # chunks the slow threads were handed


@pytest.fixture
def slow_export(monkeypatch) -> SlowExport:
    """Export chunks (500 rows) come `delay` seconds apart in threads named slow*; `started` is set at the first,
    `chunks` counts them."""
    from services import exporting

    real = exporting.iter_export
    slow = SlowExport()

    def slowly(*args, **kwargs):  # type: ignore[no-untyped-def]
        for chunk in real(*args, **kwargs):
            if threading.current_thread().name.startswith("slow"):
                slow.started.set()
                slow.chunks += 1
                time.sleep(slow.delay)
            yield chunk

    monkeypatch.setattr(exporting, "iter_export", slowly)
    return slow


def export_job(engine, name: str) -> int:
    with session_scope(engine) as s:
        dataset_id = s.scalar(select(Dataset.id).where(Dataset.name == name))
        return queue.enqueue(s, "export", {"dataset": name}, dataset_id=dataset_id).id


def job(engine, job_id: int) -> Job | None:
    with session_scope(engine) as s:
        return s.get(Job, job_id)


def exports(settings) -> list[str]:
    folder = Path(settings.data_dir) / "exports"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_worker_that_lost_its_lease_leaves_the_published_export_as_it_was(settings, engine, dataset, slow_export):
    from workers.main import Worker

    slow_export.delay = 0.7
    job_id = export_job(engine, dataset)
    late = Worker(engine, ["export"], worker_id="late", lease_seconds=1)
    late._heartbeat_loop = lambda ctx, stop: stop.wait()  # type: ignore[method-assign]  # alive, its beats lost
    thread = threading.Thread(target=late.run, kwargs={"max_jobs": 1}, name="slow-late")
    thread.start()
    assert slow_export.started.wait(10)
    time.sleep(1.2)  # its lease ran out mid-export
    with session_scope(engine) as s:  # and the dataset changed: the two attempts' files differ
        s.execute(update(Sample).where(Sample.id == s.scalar(select(func.min(Sample.id)))).values(text="edited " * 40))
    taker = Worker(engine, ["export"], worker_id="taker", lease_seconds=30)
    assert taker.run(max_jobs=1).succeeded == 1
    published = Path(settings.data_dir) / "exports" / f"job{job_id}.csv"
    served = published.read_bytes()
    assert served.count(b"\n") == 1_601
    thread.join(30)
    assert late.stats.lost == 1 and late.stats.failed == late.stats.retried == 0
    assert published.read_bytes() == served, "the late attempt wrote into the file a succeeded job serves"
    assert exports(settings) == [published.name], "no attempt's temporary file is left"
    assert job(engine, job_id).status == JobStatus.succeeded


def test_a_cancelled_export_stops_and_leaves_no_file(settings, engine, dataset, slow_export):
    from workers.main import Worker

    slow_export.delay = 1.0  # the worker hears of the cancellation within a heartbeat (0.1 s) of it
    job_id = export_job(engine, dataset)
    worker = Worker(engine, ["export"], lease_seconds=0.3)
    thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 1}, name="slow-worker")
    thread.start()
    assert slow_export.started.wait(10)
    with session_scope(engine) as s:
        queue.request_cancel(s, job_id)
    thread.join(30)
    assert worker.stats.cancelled == 1 and job(engine, job_id).status == JobStatus.cancelled
    # Counted in chunks, not seconds (a loaded CI machine is slow to start the worker): the export has four,
    # and the attempt stops between the one it was writing and, at the latest, the next.
    assert slow_export.chunks <= 2, f"it wrote {slow_export.chunks} of 4 chunks: it did not stop at its next chunk"
    assert exports(settings) == []


def test_a_cancellation_its_worker_has_not_heard_of_yet_still_wins_over_the_completion(
    settings, engine, dataset, slow_export
):
    """The worker hears of a cancellation at its next heartbeat, a third of the lease (20 s by default): a job
    that ends sooner succeeded and published its file, although the API had answered that the cancellation was
    recorded. The completion itself now checks."""
    from workers.main import Worker

    slow_export.delay = 0.1
    job_id = export_job(engine, dataset)
    worker = Worker(engine, ["export"], lease_seconds=600)  # no heartbeat before the export ends
    thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 1}, name="slow-worker")
    thread.start()
    assert slow_export.started.wait(10)
    with session_scope(engine) as s:
        assert queue.request_cancel(s, job_id).cancel_requested
    thread.join(30)
    assert worker.stats.cancelled == 1 and worker.stats.succeeded == 0
    assert job(engine, job_id).status == JobStatus.cancelled and exports(settings) == []


def test_an_export_whose_dataset_is_deleted_meanwhile_leaves_no_file(
    settings, engine, dataset, slow_export, monkeypatch
):
    """The deletion lists the job's files before it commits; an attempt that would publish after that listing
    (the deletion of a large dataset takes a while) finds its job gone and publishes nothing."""
    from services import datasets
    from workers.main import Worker

    real_delete = datasets.delete_dataset

    def long_delete(session, name):  # type: ignore[no-untyped-def]
        real_delete(session, name)
        time.sleep(3)  # a large dataset's cascade, under the write lock: the export's last chunk is written meanwhile

    monkeypatch.setattr(datasets, "delete_dataset", long_delete)
    job_id = export_job(engine, dataset)
    worker = Worker(engine, ["export"])
    thread = threading.Thread(target=worker.run, kwargs={"max_jobs": 1}, name="slow-worker")
    thread.start()
    assert slow_export.started.wait(10)
    with session_scope(engine) as s:
        datasets.remove(s, dataset)
    thread.join(30)
    assert job(engine, job_id) is None and worker.stats.lost == 1
    assert exports(settings) == []


def test_an_export_attempt_removes_the_files_of_the_attempts_killed_before_it(settings, engine, dataset):
    """A worker SIGKILLed mid-export leaves its own file of the job's texts; the attempt that takes the job over
    holds it now, so that file is no one's."""
    from workers.main import Worker

    job_id = export_job(engine, dataset)
    folder = settings.data_dir.resolve() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    killed = folder / f"job{job_id}.csv.0123456789ab.part"
    killed.write_text("id,text\n1,half a row")
    other_job = folder / f"job{job_id + 1}.csv.0123456789ab.part"
    other_job.write_text("another job's attempt")
    worker = Worker(engine, ["export"])
    worker.run(max_jobs=1)
    assert worker.stats.succeeded == 1
    assert not killed.exists() and other_job.exists()
    assert (folder / f"job{job_id}.csv").exists()


def test_an_export_cancelled_after_its_worker_was_killed_leaves_no_file(settings, engine, dataset):
    """Its killed attempt's file went only with a later attempt of the same job, or the dataset: a job that
    ends without one (cancelled, failed, lost) kept up to a dataset's size of texts in the data directory."""
    job_id = export_job(engine, dataset)
    assert queue.claim(engine, "killed", ["export"], lease_seconds=0.2).id == job_id
    folder = settings.data_dir.resolve() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    killed = folder / f"job{job_id}.csv.0123456789ab.part"
    killed.write_text("id,text\n1,half a row")
    with session_scope(engine) as s:
        queue.request_cancel(s, job_id)
    time.sleep(0.4)  # the lease runs out; the next claim ends the job
    assert queue.claim(engine, "next", ["export"]) is None
    assert job(engine, job_id).status == JobStatus.cancelled
    assert not killed.exists()
