"""Faults against real processes on loopback: a Postgres restart under four workers, the API killed mid-import,
a worker killed mid-import-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from db import queue
from db.models import Dataset, Job, JobStatus, Sample
from db.session import session_scope
from tests.conftest import REPO_ROOT
from tests.pg_server import free_port
from tests.test_queue import _spawn_worker


@pytest.mark.postgres
@pytest.mark.slow
def test_workers_survive_a_postgres_restart_and_run_every_job_once(pg_settings, postgres_server, tmp_path):
    from db.session import get_engine

    engine = get_engine(pg_settings.resolved_database_url)
    record = tmp_path / "runs"
    record.mkdir()
    with session_scope(engine) as s:
        ids = [queue.enqueue(s, "probe", {"record_dir": str(record), "sleep": 0.05}).id for _ in range(150)]
    workers = [_spawn_worker(pg_settings) for _ in range(4)]
    deadline = time.monotonic() + 60
    while len(list(record.iterdir())) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    postgres_server.restart()
    engine.dispose()
    outputs = [w.communicate(timeout=240)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    finished = Counter(int(p.name.split(".")[0]) for p in record.iterdir() if p.read_text() == "finished")
    assert sorted(finished) == sorted(ids) and set(finished.values()) == {1}, "every job finished exactly once"
    with session_scope(engine) as s:
        assert set(s.scalars(select(Job.status))) == {JobStatus.succeeded}
    assert any("retrying" in out or "failed" in out for out in outputs), "the restart was noticed"


def start_api(settings, **extra_env: str) -> tuple[subprocess.Popen, str]:
    """`augloop serve` on a free loopback port, once it answers /healthz."""
    port = free_port()
    env = {
        **os.environ,
        "AUGLOOP_DATABASE_URL": settings.resolved_database_url,
        "AUGLOOP_DATA_DIR": str(settings.data_dir),
        **extra_env,
    }
    api = subprocess.Popen(
        [sys.executable, "-m", "augloop", "serve", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return api, base
        except httpx.HTTPError:
            time.sleep(0.2)
    api.kill()
    raise RuntimeError("the API did not start")


def _big_csv(rows: int) -> bytes:
    from tests.test_import_streaming import posts

    lines = ["text,label"] + [f"{text},{'a' if i % 7 else 'b'}" for i, text in enumerate(posts(rows))]
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.slow
def test_api_killed_mid_import_leaves_all_or_nothing(settings, engine, admin_token):
    api, base = start_api(settings)
    try:
        data = _big_csv(150_000)
        outcome: dict = {}

        def post() -> None:
            try:
                outcome["response"] = httpx.post(
                    f"{base}/api/v1/datasets/big/import",
                    files={"file": ("big.csv", data)},
                    data={"task": ["label"]},
                    headers={"Authorization": f"Bearer {admin_token}"},
                    timeout=300,
                )
            except httpx.HTTPError as err:
                outcome["error"] = err

        wal = settings.data_dir / "augloop.db-wal"
        baseline = wal.stat().st_size if wal.exists() else 0
        t = threading.Thread(target=post)
        t.start()
        # The rows are staged in temporary tables (no WAL); the WAL grows once the switch moves them into
        # `samples`, in the one transaction that makes them visible: kill there, mid-write.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (wal.stat().st_size if wal.exists() else 0) < baseline + 1_000_000:
            time.sleep(0.01)
        spilled = (wal.stat().st_size if wal.exists() else 0) - baseline
        api.send_signal(signal.SIGKILL)
        api.wait(10)
        t.join(30)
    finally:
        if api.poll() is None:
            api.kill()
    with session_scope(engine) as s:
        datasets = s.scalar(select(func.count()).select_from(Dataset))
        samples = s.scalar(select(func.count()).select_from(Sample))
    assert spilled >= 1_000_000, "the kill came before the import started writing"
    assert "error" in outcome, "the import finished before the kill: the test did not exercise a crash"
    assert (datasets, samples) == (0, 0), "a killed import left a partial dataset"


@pytest.mark.slow
def test_worker_killed_mid_import_job_leaves_nothing_and_the_retry_imports_all(settings, engine, admin_token):
    """An import job's worker is SIGKILLed while it stages the file: nothing is visible, no staging is left (its
    temporary tables died with its connection), and the next worker imports the whole file from the start."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.test_queue import _spawn_worker

    rows = 300_000
    with TestClient(create_app(settings, engine), headers={"Authorization": f"Bearer {admin_token}"}) as client:
        r = client.post(
            "/api/v1/datasets/big/imports", files={"file": ("big.csv", _big_csv(rows))}, data={"task": ["label"]}
        )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    worker = _spawn_worker(settings, lease=2, kinds="import")
    deadline = time.monotonic() + 120
    staged = None
    while time.monotonic() < deadline:
        with session_scope(engine) as s:
            job = s.get_one(Job, job_id)
            if (
                job.status == JobStatus.running
                and job.progress_info.get("phase") == "reading"
                and job.progress_info.get("rows", 0) >= 20_000
            ):
                staged = job.progress_info["rows"]
                break
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    assert staged is not None and staged < rows, "the kill came mid-reading"
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Dataset)) == 0
        assert s.scalar(select(func.count()).select_from(Sample)) == 0
    rescuer = _spawn_worker(settings, lease=2, kinds="import")
    output = rescuer.communicate(timeout=600)[0]
    assert rescuer.returncode == 0, output
    with session_scope(engine) as s:
        job = s.get_one(Job, job_id)
        assert job.status == JobStatus.succeeded and job.attempts == 2, (job.status, job.last_error)
        assert job.result["imported"] == rows
        assert s.scalar(select(func.count()).select_from(Sample)) == rows
    assert not any((settings.data_dir / "imports").iterdir()), "the upload is removed once imported"


@pytest.mark.slow
def test_many_concurrent_writers_on_sqlite_neither_starve_nor_fail(settings, engine, admin_token, example_dataset):
    """More concurrent writing requests than the server has threads: all answered, none after a busy timeout."""
    import asyncio

    # A stall waits out the 30 s busy timeout; 20 s leaves room for a second test process on the same cores.
    api, base = start_api(settings, AUGLOOP_SQLITE_BUSY_TIMEOUT_MS="30000")
    try:

        async def burst() -> list[int]:
            async with httpx.AsyncClient(
                base_url=base, timeout=60, headers={"Authorization": f"Bearer {admin_token}"}
            ) as http:

                async def one(i: int) -> int:
                    r = await http.post(f"/api/v1/datasets/{example_dataset}/exports", json={"format": "csv"})
                    return r.status_code

                return await asyncio.gather(*(one(i) for i in range(120)))

        started = time.monotonic()
        codes = asyncio.run(burst())
        elapsed = time.monotonic() - started
    finally:
        api.terminate()
        api.wait(30)
    assert codes == [202] * 120
    assert elapsed < 20, f"writers waited {elapsed:.1f} s: a busy-timeout stall"
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 120
