"""Imports that do not fit in memory (issue 17, point 3): files read and validated in chunks, staged in temporary
tables, then switched in at once: all rows or none at any size; import jobs with their progress; exports
streamed in bounded memory."""

from __future__ import annotations

import csv
import io
import json
import random
import sqlite3
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from core.errors import ValidationFailed
from db.models import Dataset, Job, Sample, SampleLabel
from db.session import session_scope
from services.importing import ImportSpec, import_path

LABELS = ["neutral", "partisan"]
SYLLABLES = ["ba", "ce", "di", "fo", "gu", "ha", "je", "ki", "lo", "mu", "na", "pe", "ri", "so", "tu", "va"]


def posts(n: int, seed: int = 0) -> list[str]:
    """n distinct made-up posts of 6 to 14 words from a 20,000-word vocabulary (no two near-duplicates)."""
    rng = random.Random(seed)
    vocab = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(20_000)]
    return [f"{i} " + " ".join(rng.choices(vocab, k=rng.randint(6, 14))) for i in range(n)]


def write_csv(path: Path, rows: int, *, bad_line: int | None = None, split: bool = True, seed: int = 0) -> Path:
    """`rows` data rows (the header is line 1); line `bad_line` names a split that does not exist."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "bias", "split"] if split else ["id", "text", "bias"])
        for i, post in enumerate(posts(rows, seed)):
            line = i + 2
            row = [f"r{i}", post, LABELS[i % 7 == 0]]
            if split:
                row.append("holdout" if line == bad_line else ("train", "val", "test")[i % 10 // 8 + (i % 10 == 9)])
            writer.writerow(row)
    return path


def counts(engine) -> tuple[int, int, int]:
    with session_scope(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(Dataset)) or 0,
            s.scalar(select(func.count()).select_from(Sample)) or 0,
            s.scalar(select(func.count()).select_from(SampleLabel)) or 0,
        )


def no_staging_left(engine) -> bool:
    """No connection holds a staging table any more (SQLite: the pooled one the import used; Postgres: any)."""
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            names = conn.exec_driver_sql("SELECT name FROM sqlite_temp_master WHERE type = 'table'").scalars().all()
        else:
            names = (
                conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname LIKE :temp"), {"temp": "pg_temp%"})
                .scalars()
                .all()
            )
    return not any(n.startswith("import_") for n in names)


@pytest.mark.slow
def test_a_bad_row_at_line_900000_leaves_nothing(engine, tmp_path) -> None:
    path = write_csv(tmp_path / "big.csv", 900_000, bad_line=900_000)
    with pytest.raises(ValidationFailed) as err:
        import_path(engine, path, ImportSpec(dataset="big", tasks=["bias"]))
    assert err.value.extra["line"] == 900_000 and "unknown split 'holdout'" in err.value.message
    assert counts(engine) == (0, 0, 0)
    assert no_staging_left(engine)


def test_a_bad_last_row_leaves_nothing_and_a_good_file_imports_whole(any_engine, tmp_path) -> None:
    bad = write_csv(tmp_path / "bad.csv", 25_000, bad_line=25_001)
    with pytest.raises(ValidationFailed, match="line 25001: unknown split"):
        import_path(any_engine, bad, ImportSpec(dataset="d", tasks=["bias"]))
    assert counts(any_engine) == (0, 0, 0) and no_staging_left(any_engine)

    good = write_csv(tmp_path / "good.csv", 25_000)
    result = import_path(any_engine, good, ImportSpec(dataset="d", tasks=["bias"]))
    assert result.imported == 25_000 and result.split_counts == {"train": 20_000, "val": 2_500, "test": 2_500}
    assert counts(any_engine) == (1, 25_000, 25_000) and no_staging_left(any_engine)
    # Again, on top: every row is now a duplicate of a stored sample, and nothing is added.
    again = import_path(any_engine, good, ImportSpec(dataset="d", tasks=["bias"]))
    assert again.imported == 0 and again.duplicates_skipped == 25_000
    assert again.duplicates[0] == {
        "line": 2,
        "duplicate_of_sample": again.duplicates[0]["duplicate_of_sample"],
        "origin": "original",
        "review_status": None,
    }
    assert again.duplicates_of_reviewed_samples == 0
    assert len(again.as_dict()["duplicates"]) == 1000 and counts(any_engine) == (1, 25_000, 25_000)


def test_staging_leaves_the_sqlite_write_lock_free(engine, settings, tmp_path) -> None:
    """While a file is read and staged, other connections write at once: only the switch takes the lock."""
    path = write_csv(tmp_path / "f.csv", 30_000)
    waits = []

    def write_meanwhile(phase: str, done: int, total: int, rows: int) -> None:
        if phase == "reading":
            other = sqlite3.connect(settings.data_dir / "augloop.db", timeout=5, isolation_level=None)
            started = time.monotonic()
            other.execute("BEGIN IMMEDIATE")
            other.execute(
                "INSERT INTO users (name, role, created_at) VALUES (?, 'annotator', '2026-01-01')", (f"user-{rows}",)
            )
            other.execute("COMMIT")
            waits.append(time.monotonic() - started)
            other.close()

    import_path(engine, path, ImportSpec(dataset="d", tasks=["bias"]), progress=write_meanwhile)
    assert len(waits) == 3 and max(waits) < 1, waits
    assert counts(engine)[1] == 30_000


def test_progress_goes_through_reading_near_duplicates_and_writing(engine, tmp_path) -> None:
    path = write_csv(tmp_path / "f.csv", 35_000, split=False)
    seen: list[tuple[str, int, int, int]] = []
    result = import_path(
        engine,
        path,
        ImportSpec(dataset="d", tasks=["bias"]),
        progress=lambda **p: seen.append((p["phase"], p["done"], p["total"], p["rows"])),
    )
    reading = [s for s in seen if s[0] == "reading"]
    assert len(reading) == 4, "one report per chunk of 10,000 rows"
    assert [r[1] for r in reading] == sorted(r[1] for r in reading) and reading[-1][1] == path.stat().st_size
    assert [r[3] for r in reading] == [10_000, 20_000, 30_000, 35_000]
    phases = [p for i, (p, *_) in enumerate(seen) if i == 0 or seen[i - 1][0] != p]
    assert phases == ["reading", "near-duplicate candidates", "near-duplicates", "writing"]
    # The search for candidates and their check move as they go (a 300,000-row file spent a minute and more at
    # 0, then 13 s in a search that showed nothing), each to its end
    for phase in ("near-duplicate candidates", "near-duplicates"):
        steps = [(done, total) for p, done, total, _ in seen if p == phase]
        assert len(steps) >= 2 and steps[-1][0] == steps[-1][1] > 0, (phase, steps)
        assert [d for d, _ in steps[1:]] == sorted(d for d, _ in steps[1:]), (phase, steps)
    assert seen[-1] == ("writing", 35_000, 35_000, 35_000) and result.imported == 35_000
    assert result.split_info["source"] == "stratified"

    # A second file into the dataset: its rows against the dataset's, a chunk at a time
    seen.clear()
    more = write_csv(tmp_path / "g.csv", 25_000, split=False, seed=1)  # new texts (the dataset's are skipped)
    import_path(
        engine,
        more,
        ImportSpec(dataset="d", tasks=["bias"]),
        progress=lambda **p: seen.append((p["phase"], p["done"], p["total"], p["rows"])),
    )
    existing = [done for p, done, _, _ in seen if p == "near-duplicates of the dataset"]
    assert existing[0] == 0 and existing[-1] == 25_000 and existing == sorted(existing) and len(existing) >= 3


def test_jsonl_and_parquet_stream_in_chunks(engine, tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = posts(23_000)
    jsonl = tmp_path / "f.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "bias": LABELS[i % 2]}) for i, t in enumerate(texts)) + "\n")
    assert import_path(engine, jsonl, ImportSpec(dataset="j", tasks=["bias"])).imported == 23_000
    parquet = tmp_path / "f.parquet"
    pq.write_table(
        pa.table({"text": texts, "bias": [LABELS[i % 2] for i in range(len(texts))]}), parquet, row_group_size=4_000
    )
    assert import_path(engine, parquet, ImportSpec(dataset="p", tasks=["bias"])).imported == 23_000
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": [*texts[:12_000], "   "], "bias": ["neutral"] * 12_001}), bad)
    with pytest.raises(ValidationFailed, match="line 12002: missing text"):
        import_path(engine, bad, ImportSpec(dataset="b", tasks=["bias"]))
    assert counts(engine)[0] == 2


def test_a_line_split_across_read_chunks_keeps_its_crlf_and_its_line_number(engine, monkeypatch) -> None:
    from services import import_reading
    from services.importing import import_stream

    monkeypatch.setattr(import_reading, "READ_BYTES", 7)  # every line ends up cut across chunks
    data = 'text,bias\r\n"multi\r\nline, quoted",neutral\r\nsecond,partisan\r\nbad \xe9,\r\n'.encode()
    with session_scope(engine) as s:
        result = import_stream(s, io.BytesIO(data), ImportSpec(dataset="c", tasks=["bias"]), filename="c.csv")
    assert result.imported == 3
    with session_scope(engine) as s:
        assert set(s.scalars(select(Sample.text))) == {"multi\r\nline, quoted", "second", "bad é"}
    broken = b"text,bias\nok,neutral\nfine,neutral\nbad \xe9\xff bytes,neutral\n"
    with (
        pytest.raises(ValidationFailed, match="line 4: invalid UTF-8 \\(byte 0xe9 at offset 38\\)"),
        session_scope(engine) as s,
    ):
        import_stream(s, io.BytesIO(broken), ImportSpec(dataset="e", tasks=["bias"]), filename="e.csv")


def test_an_import_job_reports_its_progress_and_its_result(admin, engine, tmp_path, settings) -> None:
    from workers.main import Worker

    path = write_csv(tmp_path / "job.csv", 12_000)
    r = admin.post(
        "/api/v1/datasets/jobbed/imports", files={"file": ("job.csv", path.read_bytes())}, data={"task": ["bias"]}
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "import" and job["status"] == "queued"
    uploads = list((settings.data_dir / "imports").iterdir())
    assert len(uploads) == 1 and uploads[0].stat().st_size == path.stat().st_size

    assert Worker(engine, kinds=["import"], poll_seconds=0.05, lease_seconds=30).run(burst=True).succeeded == 1
    done = admin.get(f"/api/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded", done
    assert done["result"]["imported"] == 12_000 and done["result"]["split_counts"]["train"] == 9_600
    assert done["progress_info"]["phase"] == "writing" and done["progress_info"]["rows"] == 12_000
    assert not uploads[0].exists(), "the upload is removed once imported"
    assert admin.get("/api/v1/datasets/jobbed/stats").json()["samples"] == 12_000

    bad = write_csv(tmp_path / "bad.csv", 12_000, bad_line=11_000)
    r = admin.post(
        "/api/v1/datasets/other/imports", files={"file": ("bad.csv", bad.read_bytes())}, data={"task": ["bias"]}
    )
    Worker(engine, kinds=["import"], poll_seconds=0.05, lease_seconds=30).run(burst=True)
    failed = admin.get(f"/api/v1/jobs/{r.json()['id']}").json()
    assert failed["status"] == "failed" and failed["attempts"] == 1, "a bad row is not retried"
    assert "line 11000: unknown split 'holdout'" in failed["last_error"]
    assert admin.get("/api/v1/datasets/other").status_code == 404
    assert list((settings.data_dir / "imports").iterdir()) == []


def test_two_queued_imports_into_one_new_dataset_both_land(
    admin, engine, tmp_path, settings, monkeypatch, caplog
) -> None:
    """Two files queued at once into a dataset that does not exist yet: the second to switch finds the dataset
    the first created while it read. Nothing of it was written; the job goes back to the queue (not failed, as a
    bad row is) and its retry adds its rows to the dataset."""
    import services.importing as importing
    from workers.main import Worker

    first = write_csv(tmp_path / "a.csv", 40).read_bytes()
    second = "id,text,bias,split\n" + "".join(f"b{i},second file post {i},{LABELS[i % 2]},train\n" for i in range(30))
    jobs = []
    for name, data in (("a.csv", first), ("b.csv", second.encode())):
        r = admin.post("/api/v1/datasets/twin/imports", data={"task": "bias"}, files={"file": (name, data)})
        assert r.status_code == 202 and r.json()["dataset_id"] is None, r.text
        jobs.append(r.json()["id"])

    real_plan_split = importing._Staged.plan_split
    interleaved = []

    def the_other_import_switches_meanwhile(self):  # type: ignore[no-untyped-def]
        if not interleaved:  # the first job, between its checks and its switch: the second runs to its end
            interleaved.append(0)
            interleaved[0] = Worker(engine, kinds=["import"], poll_seconds=0.05).run(burst=True, max_jobs=1).succeeded
        return real_plan_split(self)

    monkeypatch.setattr(importing._Staged, "plan_split", the_other_import_switches_meanwhile)
    stats = Worker(engine, kinds=["import"], poll_seconds=0.05).run(burst=True)  # waits out the retry's backoff
    assert interleaved == [1] and (stats.retried, stats.failed, stats.succeeded) == (1, 0, 1)
    done = admin.get(f"/api/v1/jobs/{jobs[0]}").json()
    assert done["status"] == "succeeded" and done["attempts"] == 2 and done["result"]["imported"] == 40, done
    assert "'twin' was created while the file was being imported; nothing was imported" in caplog.text
    assert admin.get("/api/v1/datasets/twin/stats").json()["samples"] == 70
    assert list((settings.data_dir / "imports").iterdir()) == []


def test_an_import_jobs_upload_goes_with_its_commit_and_the_job_names_the_new_dataset(
    admin, engine, tmp_path, settings, monkeypatch
) -> None:
    """A worker killed the moment the import's switch commits leaves no upload behind (it may be 16 GiB): the
    upload's deletion is part of that commit. The job names the dataset it created, so that deleting the dataset
    finds the job."""
    import services.datasets as dataset_service
    from db import queue
    from db.models import Job
    from workers.handlers import run_import
    from workers.registry import JobContext, job_params

    class Killed(BaseException):
        pass

    real_import_path = dataset_service.import_path

    def then_killed(*args, **kwargs):  # type: ignore[no-untyped-def]
        real_import_path(*args, **kwargs)
        raise Killed

    data = write_csv(tmp_path / "f.csv", 50).read_bytes()
    r = admin.post("/api/v1/datasets/fresh/imports", data={"task": "bias"}, files={"file": ("f.csv", data)})
    assert r.status_code == 202 and r.json()["dataset_id"] is None, r.text
    claimed = queue.claim(engine, "w", ["import"])
    assert claimed is not None and claimed.id == r.json()["id"]
    ctx = JobContext(claimed.id, "import", job_params(claimed.params), engine, "w", attempt=1)
    monkeypatch.setattr(dataset_service, "import_path", then_killed)
    with pytest.raises(Killed):
        run_import(ctx)
    assert list((settings.data_dir / "imports").iterdir()) == [], "the upload outlived its import's commit"
    with session_scope(engine) as s:
        job = s.get(Job, claimed.id)
        assert job.status == "succeeded"
        assert job.dataset_id == s.scalar(select(Dataset.id).where(Dataset.name == "fresh"))


def test_a_worker_deletes_the_uploads_no_open_import_names(admin, engine, tmp_path, settings) -> None:
    """A server killed while it stores an upload, or before its job commits, leaves a file (up to 16 GiB) that
    nothing else deletes. A worker that runs imports deletes such files, once untouched for an hour, when it
    starts (and hourly); an upload a queued import names is kept however old, and one still arriving is kept."""
    import os

    from workers.main import Worker

    imports = settings.data_dir / "imports"
    data = write_csv(tmp_path / "f.csv", 30).read_bytes()
    r = admin.post("/api/v1/datasets/later/imports", data={"task": "bias"}, files={"file": ("f.csv", data)})
    assert r.status_code == 202, r.text
    [named] = list(imports.iterdir())
    hours_ago = time.time() - 2 * 3600
    orphan, arriving = imports / "0c0ffee0.csv", imports / "0decaf00.csv"
    orphan.write_bytes(b"id,text\n1,half an upl")
    arriving.write_bytes(b"id,text\n1,still arriv")
    for path in (named, orphan):
        os.utime(path, (hours_ago, hours_ago))
    Worker(engine, kinds=["import"], poll_seconds=0.05).run(burst=True)
    assert admin.get(f"/api/v1/jobs/{r.json()['id']}").json()["status"] == "succeeded"  # its upload was kept
    assert sorted(p.name for p in imports.iterdir()) == [arriving.name]


@pytest.mark.parametrize("when", ["before it runs", "while it reads the file", "tokens revoked"])
def test_a_queued_import_of_an_admin_demoted_since_writes_no_originals(admin, engine, settings, monkeypatch, when):
    """Originals train unreviewed, so only an admin's import makes them; an upload queued by an admin who was
    demoted before a worker ran it (or while it read the file) landed as originals all the same. Now the job
    fails at once, naming why, keeps no upload and writes nothing; a later admin's import still lands."""
    from db.models import Sample, User
    from services import importing
    from workers.main import Worker

    data = b"text,bias,split\nunreviewed one,a,train\nunreviewed two,b,train\n"
    r = admin.post("/api/v1/datasets/queued/imports", data={"task": "bias"}, files={"file": ("f.csv", data)})
    assert r.status_code == 202, r.text

    def demote() -> None:
        with session_scope(engine) as s:
            s.scalars(select(User).where(User.role == "admin")).one().role = "annotator"

    if when == "before it runs":
        demote()
    elif when == "tokens revoked":  # how an operator removes a user (users are never deleted)
        from services.tokens import revoke

        with session_scope(engine) as s:
            revoke(s, user_name=s.scalars(select(User.name).where(User.role == "admin")).one())
    else:
        read = importing._Staged.read

        def demoted_meanwhile(self, *args):  # type: ignore[no-untyped-def]
            read(self, *args)
            demote()

        monkeypatch.setattr(importing._Staged, "read", demoted_meanwhile)
    Worker(engine, kinds=["import"], poll_seconds=0.05).run(burst=True)
    with session_scope(engine) as s:
        assert s.scalars(select(Sample.text)).all() == []
        job = s.get(Job, r.json()["id"])
        assert job.status == "failed" and job.attempts == 1, (job.status, job.attempts)
        why = "holds no active token any more" if when == "tokens revoked" else "is no longer an admin (annotator)"
        assert why in job.last_error and "nothing was imported" in job.last_error, job.last_error
    assert list((settings.data_dir / "imports").iterdir()) == []


def test_an_import_job_that_ends_without_succeeding_leaves_no_upload(admin, engine, tmp_path, settings, monkeypatch):
    """Cancelled before it ran, cancelled while it runs, or failed on its last attempt: no upload stays behind
    (each may be gigabytes); while attempts are left, the upload waits for the retry."""
    import services.datasets as dataset_service
    from core.settings import get_settings
    from db.models import Job
    from workers.main import Worker

    data = write_csv(tmp_path / "f.csv", 50).read_bytes()
    imports = settings.data_dir / "imports"

    def queued(name: str, max_attempts: int | None = None) -> int:
        r = admin.post(f"/api/v1/datasets/{name}/imports", data={"task": "bias"}, files={"file": ("f.csv", data)})
        assert r.status_code == 202, r.text
        assert len(list(imports.iterdir())) == 1
        if max_attempts is not None:
            with session_scope(engine) as s:
                s.get(Job, r.json()["id"]).max_attempts = max_attempts
        return r.json()["id"]

    def work() -> None:
        Worker(engine, kinds=["import"], poll_seconds=0.05, lease_seconds=0.6).run(burst=True)

    job = queued("before")
    assert admin.post(f"/api/v1/jobs/{job}/cancel").json()["status"] == "cancelled"
    assert list(imports.iterdir()) == []

    def cancelled_meanwhile(engine_, path, spec, *, progress, **_kw):
        assert admin.post(f"/api/v1/jobs/{job}/cancel").status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the heartbeat brings the cancellation; the next report raises it
            progress(phase="reading", done=1024, total=4096, rows=0)
            time.sleep(0.05)
        raise AssertionError("the cancellation never reached the job")

    job = queued("during")
    monkeypatch.setattr(dataset_service, "import_path", cancelled_meanwhile)
    work()
    assert admin.get(f"/api/v1/jobs/{job}").json()["status"] == "cancelled"
    assert list(imports.iterdir()) == []

    def broken(*_args, **_kw):
        raise OSError("No space left on device")

    monkeypatch.setattr(dataset_service, "import_path", broken)
    monkeypatch.setenv("AUGLOOP_JOB_RETRY_BASE_SECONDS", "3600")
    get_settings.cache_clear()
    job = queued("retried", max_attempts=2)
    work()
    assert admin.get(f"/api/v1/jobs/{job}").json()["status"] == "queued"
    assert len(list(imports.iterdir())) == 1, "the retry needs its upload"
    with session_scope(engine) as s:
        s.get(Job, job).max_attempts = 1
        s.get(Job, job).run_after = s.get(Job, job).created_at
    work()
    ended = admin.get(f"/api/v1/jobs/{job}").json()
    assert ended["status"] == "failed" and "No space left" in ended["last_error"]
    assert list(imports.iterdir()) == []


def test_an_import_job_refuses_at_once_what_an_import_refuses_and_keeps_nothing(admin, tmp_path, settings) -> None:
    data = write_csv(tmp_path / "f.csv", 50).read_bytes()
    cases = [
        ("newds", {"task": "bias", "project": "nope"}, 404, "project"),
        ("newds", {"task": "bias", "display_name": "x" * 5000}, 422, "display_name"),
        ("newds", {"task": ""}, 422, "task"),
        ("Bad Name!", {"task": "bias"}, 422, "name"),
    ]
    for name, form, status, field in cases:
        for route in ("import", "imports"):
            r = admin.post(f"/api/v1/datasets/{name}/{route}", data=form, files={"file": ("f.csv", data)})
            assert (r.status_code, r.json()["field"]) == (status, field), (route, form, r.text)
    assert not (settings.data_dir / "imports").exists() or list((settings.data_dir / "imports").iterdir()) == []

    # Into an existing dataset: it stays in its project; naming another is an error, not a silent choice.
    assert admin.post("/api/v1/projects", json={"name": "other"}).status_code == 201
    assert admin.post("/api/v1/datasets/kept/import", data={"task": "bias"}, files={"file": ("f.csv", data)}).is_success
    r = admin.post(
        "/api/v1/datasets/kept/imports", data={"task": "bias", "project": "other"}, files={"file": ("f.csv", data)}
    )
    assert (r.status_code, r.json()["field"]) == (422, "project")
    job = admin.post("/api/v1/datasets/kept/imports", data={"task": "bias"}, files={"file": ("f.csv", data)}).json()
    assert str(settings.data_dir) not in json.dumps(job["params"]), "the job does not show the server's paths"


def test_import_jobs_take_files_past_the_request_limit(admin, engine, tmp_path, monkeypatch) -> None:
    path = write_csv(tmp_path / "f.csv", 2_000)
    app = admin.app
    limit = next(m for m in app.user_middleware if m.cls.__name__ == "BodySizeLimit")
    monkeypatch.setitem(limit.kwargs, "max_bytes", 10_000)
    app.middleware_stack = app.build_middleware_stack()
    assert (
        admin.post(
            "/api/v1/datasets/d/import", files={"file": ("f.csv", path.read_bytes())}, data={"task": ["bias"]}
        ).status_code
        == 413
    )
    r = admin.post("/api/v1/datasets/d/imports", files={"file": ("f.csv", path.read_bytes())}, data={"task": ["bias"]})
    assert r.status_code == 202, r.text


def _export_peak(engine, name: str) -> tuple[int, int]:
    """(bytes exported, peak bytes allocated while exporting) of a CSV export of dataset `name`."""
    from services.datasets import export_stream

    size = 0
    tracemalloc.start()
    try:
        with session_scope(engine) as s:
            out = export_stream(s, engine, name, "csv", "original", None)
        with out.spool() as body:
            while chunk := body.read(65_536):
                size += len(chunk)
        return size, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_streams_in_bounded_memory(admin, engine, tmp_path, monkeypatch) -> None:
    import services.datasets as dataset_service

    # the spool's memory part made small, so that both exports go on to disk (a download holds at most that much)
    monkeypatch.setattr(dataset_service, "EXPORT_SPOOL_MEMORY", 256 * 1024)
    import_path(engine, write_csv(tmp_path / "small.csv", 10_000), ImportSpec(dataset="small", tasks=["bias"]))
    import_path(engine, write_csv(tmp_path / "big.csv", 60_000), ImportSpec(dataset="big", tasks=["bias"]))
    _export_peak(engine, "small")  # compiled statements, caches: once
    small, small_peak = _export_peak(engine, "small")
    big, big_peak = _export_peak(engine, "big")
    assert big > 5 * small and big > 6_000_000
    assert big_peak < 1.5 * small_peak, f"peak {small_peak:,} → {big_peak:,} bytes for {small:,} → {big:,}"
    # Through the API: the same body, and the read happens after the request's session closed.
    body = admin.get("/api/v1/datasets/big/export", params={"include": "original"})
    assert body.status_code == 200 and len(body.text) == big
    rows = list(csv.DictReader(io.StringIO(body.text)))
    assert len(rows) == 60_000 and rows[0]["external_id"] == "r0" and rows[0]["bias"] == "partisan"
    assert admin.get("/api/v1/datasets/nope/export").status_code == 404
    assert admin.get("/api/v1/datasets/big/export", params={"include": "bogus"}).status_code == 422


def test_export_reads_in_its_own_session(engine, tmp_path) -> None:
    """The rows are read after the request's session ended: nothing of it is needed any more."""
    from services.datasets import export_stream

    import_path(engine, write_csv(tmp_path / "f.csv", 1_000), ImportSpec(dataset="x", tasks=["bias"]))
    with session_scope(engine) as s:
        out = export_stream(s, engine, "x", "jsonl", "original", None)
    with out.spool() as body:
        lines = body.read().decode().splitlines()
    assert len(lines) == 1_000 and json.loads(lines[0])["text"].startswith("0 ")
    with engine.connect() as conn:  # and the reading connection went back to the pool idle
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_a_stalled_export_download_holds_no_read_snapshot(
    admin, admin_token, app, engine, settings, tmp_path, monkeypatch
) -> None:
    """A client that stops reading an export (or reads it slowly) kept the export's read transaction open for as
    long as the download lasted: SQLite could not checkpoint its WAL meanwhile, which grew with every write
    (Postgres held a transaction open). The rows are read into a temporary file first, in one snapshot; the
    download holds that file, closed (deleted) when the response ends, here by the client going away."""
    import asyncio
    import tempfile

    import_path(engine, write_csv(tmp_path / "f.csv", 3_000), ImportSpec(dataset="x", tasks=["bias"]))
    spooled: list[Any] = []
    real_spool = tempfile.SpooledTemporaryFile

    def tracked(*args: Any, **kwargs: Any) -> Any:
        spooled.append(real_spool(*args, **kwargs))
        return spooled[-1]

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", tracked)

    def write_then_checkpoint() -> tuple[int, int, int]:
        other = sqlite3.connect(settings.data_dir / "augloop.db", timeout=1, isolation_level=None)
        try:
            other.execute("INSERT INTO users (name, role, created_at) VALUES ('u', 'annotator', '2026-01-01')")
            return other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            other.close()

    async def stalled_download() -> tuple[bytes, tuple[int, int, int]]:
        first: list[bytes] = []
        stalled, gone = asyncio.Event(), asyncio.Event()

        async def receive() -> dict[str, Any]:
            if not hasattr(receive, "asked"):
                receive.asked = True  # type: ignore[attr-defined]
                return {"type": "http.request", "body": b"", "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                first.append(message["body"])
                stalled.set()
                await gone.wait()  # the client reads nothing more, then goes away

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/api/v1/datasets/x/export",
            "raw_path": b"/api/v1/datasets/x/export",
            "query_string": b"include=original",
            "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {admin_token}".encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        download = asyncio.create_task(app(scope, receive, send))
        await asyncio.wait_for(stalled.wait(), timeout=30)
        checkpoint = await asyncio.to_thread(write_then_checkpoint)
        gone.set()
        await asyncio.wait_for(download, timeout=30)
        return first[0], checkpoint

    first, (busy, wal_frames, checkpointed) = asyncio.run(stalled_download())
    assert first.startswith(b"id,external_id,text,"), first[:80]
    assert busy == 0 and wal_frames == checkpointed, "the stalled download kept a read snapshot open"
    assert len(spooled) == 1 and spooled[0].closed


def test_an_export_leaves_the_sqlite_write_lock_free(engine, settings, tmp_path, monkeypatch) -> None:
    """An export job (and `augloop export`) reads a whole view, a million rows taking a minute: meanwhile
    reviewers' decisions and other writers go ahead. It held SQLite's write lock from its first statement."""
    from services import exporting

    import_path(engine, write_csv(tmp_path / "f.csv", 3_000), ImportSpec(dataset="x", tasks=["bias"]))
    waits: list[float] = []
    real_rows = exporting.view_rows

    def rows_then_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        for n, row in enumerate(real_rows(*args, **kwargs)):
            if n == 1_000:  # mid-export, its session open
                other = sqlite3.connect(settings.data_dir / "augloop.db", timeout=0.5, isolation_level=None)
                started = time.monotonic()
                other.execute("BEGIN IMMEDIATE")
                other.execute("INSERT INTO users (name, role, created_at) VALUES ('u', 'annotator', '2026-01-01')")
                other.execute("COMMIT")
                waits.append(time.monotonic() - started)
                other.close()
            yield row

    monkeypatch.setattr(exporting, "view_rows", rows_then_write)
    result = exporting.export_to_file(engine, "x", "csv", "original", job_id=1)
    assert result["rows"] == 3_000 and len(waits) == 1 and waits[0] < 0.5


def test_a_jsonl_key_no_database_stores_is_refused_and_every_job_stays_readable(admin, engine) -> None:
    """A key written `"\\ud800"` (a lone surrogate) reached messages and a job's stored result unescaped: the
    import answered 500, the job's result broke GET /jobs for everyone, and a failure quoting it could not be
    stored, which took the worker process down. Refused, naming its line, at the door and in a job."""
    from core.errors import ValidationFailed
    from services.failures import failure_text
    from workers.main import Worker

    body = b'{"text": "x", "bias": "a", "\\ud800": "train"}\n{"text": "y", "bias": "b", "\\ud800": "test"}\n'
    r = admin.post("/api/v1/datasets/s1/import", files={"file": ("a.jsonl", body)}, data={"task": "bias"})
    assert r.status_code == 422 and "line 1: the key '\\ud800' holds a lone surrogate" in r.json()["detail"], r.text
    job = admin.post("/api/v1/datasets/s1/imports", files={"file": ("a.jsonl", body)}, data={"task": "bias"}).json()
    stats = Worker(engine, kinds=["import"], poll_seconds=0.05, lease_seconds=30).run(burst=True)
    assert stats.failed == 1
    failed = admin.get(f"/api/v1/jobs/{job['id']}").json()
    assert failed["status"] == "failed" and "line 1: the key" in failed["last_error"]
    assert admin.get("/api/v1/jobs").status_code == 200
    # whatever a failure quotes, its text is stored and answered as JSON
    said = failure_text(ValidationFailed("bad \ud800 and \x00 here"))
    assert said.encode("utf-8") and "\x00" not in said and "\\ud800" in said
