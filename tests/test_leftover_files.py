"""Files under the data directory that no row owns any more: what a deletion cut short, a worker killed between a
commit and a file's removal, or a move before a commit that never came leaves behind, found by the workers' sweep
(services/leftover_files.py); the exports a dataset keeps; job errors that name no server path."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from db import queue
from db import training_runs as db_runs
from db.models import Dataset, Job, JobStatus, TrainingRun
from db.session import session_scope
from tests.test_export_jobs import dataset, export_job, exports  # noqa: F401 - the `dataset` fixture

HOUR_AGO = time.time() - 2 * 3600


def aged(path: Path) -> Path:
    """As if written two hours ago (past the sweep's grace)."""
    os.utime(path, (HOUR_AGO, HOUR_AGO))
    return path


def folder_with_file(path: Path, name: str = "model.bin") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text("weights")
    return aged(path)


def new_run(engine, name: str, status: str) -> int:
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == name))
        return db_runs.create_run(s, ds, {"seed": 0}, status=status).id


def test_the_sweep_deletes_what_no_row_owns_and_keeps_the_rest(settings, engine, dataset) -> None:
    from services.leftover_files import sweep_leftovers

    runs = settings.data_dir.resolve() / "runs"
    succeeded = new_run(engine, dataset, JobStatus.succeeded)
    failed = new_run(engine, dataset, JobStatus.failed)
    running = new_run(engine, dataset, JobStatus.running)
    gone = 10_000  # a run whose row went with its dataset, its files left by a deletion cut short
    keep = [
        folder_with_file(runs / str(succeeded)),  # a run's artifacts
        folder_with_file(runs / f"{running}.checkpoint"),  # resumed by its next attempt
        folder_with_file(runs / f"{running}.partial-0123abcd"),
        folder_with_file(runs / "notes"),  # not a name augloop writes
    ]
    leftover = [
        folder_with_file(runs / f"{succeeded}.checkpoint"),  # killed between the success and the removal
        folder_with_file(runs / str(failed)),  # moved into place, then its record never committed
        folder_with_file(runs / f"{failed}.partial-0123abcd"),
        folder_with_file(runs / str(gone)),
        folder_with_file(runs / f"{gone}.checkpoint"),
    ]
    fresh = folder_with_file(runs / "10001")
    os.utime(fresh)  # just written: perhaps a row not committed yet

    exported = settings.data_dir.resolve() / "exports"
    exported.mkdir(parents=True, exist_ok=True)
    with session_scope(engine) as s:
        ds_id = s.scalar(select(Dataset.id).where(Dataset.name == dataset))
        done = queue.enqueue(s, "export", {"dataset": dataset}, dataset_id=ds_id)
        done.status = JobStatus.succeeded
        broken = queue.enqueue(s, "export", {"dataset": dataset}, dataset_id=ds_id)
        broken.status = JobStatus.failed
        waiting = queue.enqueue(s, "export", {"dataset": dataset}, dataset_id=ds_id)
        ids = done.id, broken.id, waiting.id

    def write(name: str) -> Path:
        path = exported / name
        path.write_text("id,text\n")
        return aged(path)

    keep += [write(f"job{ids[0]}.csv"), write(f"job{ids[2]}.csv.0123456789ab.part"), write("mine.csv")]
    leftover += [
        write(f"job{ids[1]}.csv"),  # published, then its completion never committed: the job failed
        write(f"job{ids[1]}.jsonl.0123456789ab.part"),
        write("job999999.csv"),  # its job went with its dataset
        write("job999999.csv.0123456789ab.part"),
    ]

    assert sweep_leftovers(engine) == len(leftover)
    assert [p for p in leftover if p.exists()] == []
    assert all(p.exists() for p in [*keep, fresh])
    assert sweep_leftovers(engine) == 0


def test_a_deletion_whose_files_could_not_go_is_finished_by_the_sweep(
    settings,
    engine,
    dataset,
    monkeypatch,
) -> None:
    """The dataset's rows are deleted and committed first, its files after (a folder of a bert-base model takes
    a while): a process killed there, or a file system that refused, left the texts on disk with nothing to name
    them. Reproduced by a deletion that fails after its commit."""
    from core import files
    from db import session as session_mod
    from services import datasets
    from services.leftover_files import sweep_leftovers

    run_id = new_run(engine, dataset, JobStatus.succeeded)
    run_dir = folder_with_file(settings.data_dir.resolve() / "runs" / str(run_id), "snapshot.jsonl")
    job_id = export_job(engine, dataset)
    with session_scope(engine) as s:
        s.get(Job, job_id).status = JobStatus.succeeded
    published = settings.data_dir.resolve() / "exports" / f"job{job_id}.csv"
    published.parent.mkdir(parents=True, exist_ok=True)
    aged(published) if published.write_text("id,text\n1,a secret\n") else None

    def refused(path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(session_mod, "delete_path", refused)
    with session_scope(engine) as s:
        datasets.remove(s, dataset)
    monkeypatch.setattr(session_mod, "delete_path", files.delete_path)
    assert run_dir.exists() and published.exists()  # the rows are gone, the files stayed
    aged(run_dir)
    assert sweep_leftovers(engine) == 2
    assert not run_dir.exists() and not published.exists()


def test_a_dataset_keeps_the_files_of_its_newest_exports(settings, engine, dataset, admin, monkeypatch) -> None:
    """Each export is a copy of the dataset and any member may ask for one: the files of all but the newest
    AUGLOOP_EXPORTS_KEPT_PER_DATASET go as a newer one publishes, and the older one's download says so."""
    from workers.main import Worker

    monkeypatch.setattr(settings, "exports_kept_per_dataset", 2)  # the API's and the worker's settings
    ids = []
    for _ in range(3):
        ids.append(export_job(engine, dataset))
        assert Worker(engine, ["export"]).run(max_jobs=1).succeeded == 1
    assert exports(settings) == [f"job{ids[1]}.csv", f"job{ids[2]}.csv"]
    gone = admin.get(f"/api/v1/jobs/{ids[0]}/artifact")
    assert gone.status_code == 404 and "newest 2 exports" in gone.json()["detail"]
    assert admin.get(f"/api/v1/jobs/{ids[2]}/artifact").status_code == 200


def test_an_export_attempt_leaves_the_files_of_other_attempts_alone_until_it_holds_the_job(
    settings,
    engine,
    dataset,
    monkeypatch,
) -> None:
    """An attempt that stalled past its lease right after its start (a VM paused, a process stopped) deleted
    the file of the attempt that had taken the job over when it woke: the stale files now go only under the
    lease, as the attempt publishes."""
    from services import exporting
    from workers.main import Worker

    job_id = export_job(engine, dataset)
    folder = settings.data_dir.resolve() / "exports"
    folder.mkdir(parents=True, exist_ok=True)
    other = folder / f"job{job_id}.csv.0123456789ab.part"
    other.write_text("id,text\n1,another attempt's rows")
    seen_while_writing = []
    real = exporting._write_part

    def watching(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen_while_writing.append(other.exists())
        return real(*args, **kwargs)

    monkeypatch.setattr(exporting, "_write_part", watching)
    assert Worker(engine, ["export"]).run(max_jobs=1).succeeded == 1
    assert seen_while_writing == [True], "the attempt deleted another's file before it held the job"
    assert exports(settings) == [f"job{job_id}.csv"]


def test_a_job_that_ends_without_succeeding_takes_what_its_attempts_moved_into_place(settings, engine, dataset) -> None:
    """A worker killed after moving its file (an export) or its artifacts (a run) into place, before the
    completion committed: the job ends failed or cancelled, and the file goes with it."""
    job_id = export_job(engine, dataset)
    published = settings.data_dir.resolve() / "exports" / f"job{job_id}.csv"
    published.parent.mkdir(parents=True, exist_ok=True)
    published.write_text("id,text\n")
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == dataset))
        train = queue.enqueue(s, "train", {}, dataset_id=ds.id)
        run = db_runs.create_run(s, ds, {"seed": 0})
        run.job_id = train.id
        train_id, run_id = train.id, run.id
    run_dir = folder_with_file(settings.data_dir.resolve() / "runs" / str(run_id))
    with session_scope(engine) as s:
        queue.request_cancel(s, job_id)
        queue.request_cancel(s, train_id)
    assert not published.exists() and not run_dir.exists()
    with session_scope(engine) as s:
        assert s.get(TrainingRun, run_id).status == JobStatus.cancelled


def test_job_errors_name_no_server_path(settings, engine, dataset, annotator) -> None:
    """An OSError names the file it failed on; members read the job's error, and where the server keeps its
    files is not theirs to know: a path in the data directory is shown relative to it."""
    from workers.main import Worker

    (settings.data_dir / "exports").write_text("not a folder")  # every attempt fails on it
    job_id = export_job(engine, dataset)
    with session_scope(engine) as s:
        s.get(Job, job_id).max_attempts = 1
    Worker(engine, ["export"]).run(max_jobs=1)
    shown = annotator.get(f"/api/v1/jobs/{job_id}").json()
    assert shown["status"] == "failed" and "exports" in shown["last_error"], shown
    assert str(settings.data_dir.resolve()) not in shown["last_error"]
    assert str(Path(settings.data_dir).parent) not in shown["last_error"]


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        (
            "[Errno 28] No space left on device: '{data}/runs/7.partial-1a2b'",
            "[Errno 28] No space left on device: 'runs/7.partial-1a2b'",
        ),
        ("cannot read /etc/augloop/secret.env", "cannot read …/secret.env"),
        ("{data}", "<data directory>"),
        ("see http://vllm:8000/v1/chat, 1/2 of a/b", "see http://vllm:8000/v1/chat, 1/2 of a/b"),
        ("No space left: '/mnt/shared drive/augloop/x.csv'", "No space left: '…/x.csv'"),  # spaces and all
        (
            "label '/r/politics' is not among [] ; POST /v1/chat failed",
            "label '/r/politics' is not among [] ; POST /v1/chat failed",
        ),
        # clusters keep TMPDIR and model caches on shared file systems (an attacker's find: shown whole)
        ("No space left on device: '/scratch/tmp/job12/part.parquet'", "No space left on device: '…/part.parquet'"),
        ("/gpfs/home/alice/hf/hub/models--x/config.json not found", "…/config.json not found"),
        ("cannot open file:///srv/augloop/models/x", "cannot open file://…/x"),
    ],
)
def test_a_message_for_members_keeps_no_absolute_path(settings, message: str, shown: str) -> None:
    from services.access import without_server_paths

    assert without_server_paths(message.format(data=settings.data_dir.resolve())) == shown


def test_the_servers_model_and_nltk_folders_are_shortened_wherever_they_are_mounted(settings, monkeypatch) -> None:
    """A models directory at /models (a common mount point, not one of the usual top folders) was shown whole to
    annotators in a run's encoder and in errors quoting it; the NLTK data folder likewise, set or by default."""
    import sys

    from core.settings import get_settings
    from services.access import shown_provenance, without_server_paths

    monkeypatch.setenv("AUGLOOP_MODELS_DIR", "/models")
    monkeypatch.setenv("AUGLOOP_NLTK_DATA", "/scratch/nltk")
    get_settings.cache_clear()
    assert shown_provenance("/models/acme-internal/xlmr-tuned") == "…/xlmr-tuned"
    said = "cannot load '/scratch/nltk/corpora/wordnet' for /models/acme/mlm"
    assert without_server_paths(said) == "cannot load '…/wordnet' for …/mlm"
    assert without_server_paths("label /modelsx/y stays") == "label /modelsx/y stays"  # another folder's name
    assert shown_provenance("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    # unset: WordNet is read from <sys.prefix>/nltk_data (workers/augment/wordnet_data.py), wherever that is
    monkeypatch.delenv("AUGLOOP_NLTK_DATA")
    monkeypatch.setattr(sys, "prefix", "/pyenv/3.12")
    get_settings.cache_clear()
    assert without_server_paths("missing /pyenv/3.12/nltk_data/corpora/wordnet") == "missing …/wordnet"


def test_the_processs_temporary_and_cache_folders_are_shortened_wherever_they_are(settings, monkeypatch) -> None:
    """TMPDIR and the Hugging Face cache may sit anywhere (/fast/tmp, /hf); errors naming files under them
    reached members whole."""
    import tempfile

    from services.access import without_server_paths

    monkeypatch.setenv("HF_HOME", "/hf")
    monkeypatch.setattr(tempfile, "tempdir", "/fast/tmp")
    said = "cannot write /fast/tmp/x1/shard.bin nor '/hf/hub/models--acme--secret/config.json'"
    assert without_server_paths(said) == "cannot write …/shard.bin nor '…/config.json'"
    assert without_server_paths("label /hfx/y and /fastest stay") == "label /hfx/y and /fastest stay"


def test_an_export_is_served_when_the_exports_folder_is_a_link(settings, engine, dataset, admin, tmp_path) -> None:
    """exports/ on another disk, linked from the data directory (as runs/ may be): its files were refused as
    outside the data directory once the link was followed."""
    from workers.main import Worker

    elsewhere = tmp_path / "big-disk" / "exports"
    elsewhere.mkdir(parents=True)
    (settings.data_dir.resolve() / "exports").symlink_to(elsewhere)
    job_id = export_job(engine, dataset)
    assert Worker(engine, ["export"]).run(max_jobs=1).succeeded == 1
    served = admin.get(f"/api/v1/jobs/{job_id}/artifact")
    assert served.status_code == 200 and served.text.startswith("id,external_id,text")


def test_the_sweep_reads_any_number_of_folders_and_passes_over_names_no_row_can_have(settings, engine) -> None:
    """Every old run folder is a candidate, so the ids grow with the deployment's history: one IN-list of them
    broke on a SQLite built with 999 variables, every hour, and nothing was ever swept again; a folder named by
    a number past 64 bits raised OverflowError the same way."""
    import sqlite3

    from sqlalchemy import event

    from services.leftover_files import sweep_leftovers

    def at_most_999(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    event.listen(engine, "connect", at_most_999)
    engine.dispose()
    runs = settings.data_dir.resolve() / "runs"
    for run_id in range(1, 1_201):
        folder_with_file(runs / str(run_id))
    odd = folder_with_file(runs / ("9" * 25))
    try:
        assert sweep_leftovers(engine) == 1_200
    finally:
        event.remove(engine, "connect", at_most_999)
        engine.dispose()
    assert odd.exists() and sorted(p.name for p in runs.iterdir()) == [odd.name]
