"""`augloop train` in process holds a job per run: a run always ends, whatever happens to the command.

Killed with SIGKILL, the command leaves no run "running" for good: its jobs' leases expire and the queue's
sweep (here `augloop runs list`) ends the runs as failed. A cancellation asked for through the queue (the
API's) stops the run it names; a failure ends the runs the command never reached.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from augloop.cli import app
from db.models import Job, JobStatus, TrainingRun
from db.session import session_scope
from tests.cli_process import REPO_ROOT, cli_env
from tests.trainer_fixtures import import_small, tiny_encoder  # noqa: F401 (fixture)

# Epochs of 80 steps (640 texts, batch 8): long enough that the poller sees the run between two epochs.
LONG = ["--epochs", "6", "--max-length", "32", "--no-classical"]
LONG_SET = {"batch_size": 8, "grad_accum": 1, "head_hidden": 32, "num_threads": 1, "patience": 0}


def _sets(keys: dict[str, Any]) -> list[str]:
    return [arg for key, value in keys.items() for arg in ("--set", f"{key}={value}")]


def _state(engine: Any) -> dict[int, tuple[str, str | None, int, str, str | None]]:
    """run id → (run status, run error, job id, job status, job worker)."""
    with session_scope(engine) as s:
        rows = s.execute(
            select(TrainingRun.id, TrainingRun.status, TrainingRun.error, Job.id, Job.status, Job.worker_id)
            .join(Job, Job.id == TrainingRun.job_id)
            .order_by(TrainingRun.id)
        ).all()
    return {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}


def _wait_for(engine: Any, ready: Any, what: str, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with session_scope(engine) as s:
            if ready(s):
                return
        if process is not None and process.poll() is not None:
            pytest.fail(f"the command ended before {what}: {process.communicate()[0][-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"never saw {what}")


def _spawn(settings: Any, args: list[str], **env: str) -> subprocess.Popen[str]:
    """`python -m augloop <args>` as a user runs it, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "augloop", *args],
        cwd=REPO_ROOT,
        env=cli_env(settings, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _training(s: Any, run_id: int) -> bool:
    run = s.get(TrainingRun, run_id)
    return run is not None and run.status == JobStatus.running and len(run.curve or []) >= 1


@pytest.mark.slow
def test_a_killed_train_command_leaves_no_run_running(settings, engine, tiny_encoder: str) -> None:
    name = import_small(engine, n_train=640, n_val=24, n_test=24, n_unlabelled=0)
    args = ["train", name, "--encoder", tiny_encoder, "--seeds", "7,8", *LONG, *_sets(LONG_SET)]
    child = _spawn(settings, args, AUGLOOP_CLI_JOB_LEASE_SECONDS="1")
    try:
        # the job shows the command's progress (epochs done), as a worker's would
        _wait_for(
            engine,
            lambda s: _training(s, 1) and s.get_one(Job, s.get_one(TrainingRun, 1).job_id).progress_done >= 1,
            "run 1 between epochs, in its job's progress",
            child,
        )
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
    before = _state(engine)
    assert [v[0] for v in before.values()] == [JobStatus.running, JobStatus.queued]
    assert {v[3] for v in before.values()} == {JobStatus.running} and before[1][4].startswith("cli:")

    time.sleep(1.5)  # past the lease: nothing renews it any more
    listed = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["runs", "list", "--dataset", name])
    assert listed.exit_code == 0, listed.output
    after = _state(engine)
    for run_id in (1, 2):  # the run it was training, and the one it never reached
        status, error, _job, job_status, _worker = after[run_id]
        assert (status, job_status) == (JobStatus.failed, JobStatus.failed), after
        assert "stopped (lease expired)" in (error or ""), error
    assert "failed" in listed.output and "running" not in listed.output
    # what the killed attempt kept beside the run (its checkpoint) goes with it
    assert not list((settings.data_dir / "runs").glob("1.*"))


@pytest.mark.slow
def test_sigterm_ends_the_run_and_its_job_as_cancelled_with_exit_143(settings, engine, tiny_encoder: str) -> None:
    from workers.held_jobs import NOT_REACHED

    name = import_small(engine, n_train=640, n_val=24, n_test=24, n_unlabelled=0)
    args = ["train", name, "--encoder", tiny_encoder, "--seeds", "7,8", *LONG, *_sets(LONG_SET)]
    child = _spawn(settings, args)
    try:
        _wait_for(engine, lambda s: _training(s, 1), "run 1 between epochs", child)
        child.send_signal(signal.SIGTERM)
        out = child.communicate(timeout=60)[0]
    finally:
        child.kill()
    assert child.returncode == 128 + signal.SIGTERM, out[-2000:]
    assert "run 1 interrupted" in out and "stopped by SIGTERM" in out, out[-2000:]
    state = _state(engine)
    assert state[1][:2] == (JobStatus.cancelled, "interrupted") and state[1][3] == JobStatus.cancelled
    assert state[2][:2] == (JobStatus.cancelled, NOT_REACHED) and state[2][3] == JobStatus.cancelled
    assert not list((settings.data_dir / "runs").glob("1.*"))  # its checkpoint went with it


def test_a_cancelled_job_stops_its_run_and_the_command_goes_on(
    settings, engine, tiny_encoder: str, monkeypatch
) -> None:
    from core import settings as settings_mod
    from db import queue

    monkeypatch.setenv("AUGLOOP_CLI_JOB_LEASE_SECONDS", "0.6")  # a beat every 0.2 s: the cancel is seen at once
    settings_mod.get_settings.cache_clear()
    name = import_small(engine, n_train=640, n_val=24, n_test=24, n_unlabelled=0)

    def cancel_run_1() -> None:
        _wait_for(engine, lambda s: _training(s, 1), "run 1 between epochs")
        with session_scope(engine) as s:
            queue.request_cancel(s, s.get_one(TrainingRun, 1).job_id)

    canceller = threading.Thread(target=cancel_run_1)
    canceller.start()
    args = ["train", name, "--encoder", tiny_encoder, "--seeds", "7,8", "--epochs", "2", *LONG[2:], *_sets(LONG_SET)]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, args)
    canceller.join()
    assert result.exit_code == 1, result.output  # one run of two did not finish
    assert "run 1 cancelled" in result.output and "run 2 finished" in result.output
    state = _state(engine)
    assert state[1][0] == state[1][3] == JobStatus.cancelled
    assert state[2][0] == state[2][3] == JobStatus.succeeded
    assert not list((settings.data_dir / "runs").glob("1.*"))  # no checkpoint left of the cancelled run


def test_a_failed_run_ends_the_runs_the_command_never_reached(engine, tmp_path) -> None:
    from transformers import BertConfig

    from workers.held_jobs import NOT_REACHED

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    # a directory with a model's config and a weights file that is no model: the command's early check reads the
    # config and sees the file, and passes it (a missing directory, or one without config or weights, is refused
    # before any run is recorded: test_trainer_cli.py); loading the model fails
    broken = tmp_path / "broken-weights"
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    result = CliRunner().invoke(app, ["train", name, "--encoder", str(broken), "--seeds", "1,2"])
    assert result.exit_code == 2 and "cannot load encoder" in result.output, result.output
    state = _state(engine)
    # the seeds' learning-rate selection failed, and ended both seeds and their jobs
    for run_id in (1, 2):
        assert (state[run_id][0], state[run_id][3]) == (JobStatus.failed, JobStatus.failed), state
        assert "learning-rate selection: cannot load encoder" in (state[run_id][1] or "")
    with session_scope(engine) as s:  # and the selection shows as ended, not still under way
        assert {(s.get_one(TrainingRun, r).lr_selection or {}).get("status") for r in (1, 2)} == {"failed"}
    # the TF-IDF member, never reached: cancelled, saying why
    assert (state[3][0], state[3][3]) == (JobStatus.cancelled, JobStatus.cancelled), state
    assert state[3][1] == NOT_REACHED


def test_a_burst_worker_does_not_wait_for_a_job_another_process_holds_out_of_attempts(engine) -> None:
    """A job held by `augloop train` (one attempt) is never handed back to the queue: `worker --burst` exits
    when the queue is drained instead of polling until that command's training ends."""
    from db import queue
    from workers.main import Worker

    with session_scope(engine) as s:
        held = queue.enqueue(s, "train", {"run_id": 0}, max_attempts=1, held_by="cli:elsewhere", lease_seconds=600)
        held_id = held.id
    worker = Worker(engine, ["train"], poll_seconds=0.05)
    done = threading.Thread(target=worker.run, kwargs={"burst": True}, daemon=True)
    done.start()
    done.join(timeout=20)
    assert not done.is_alive(), "the burst worker waited for a job no one will ever hand back"
    worker.stop_requested.set()
    with session_scope(engine) as s:
        assert s.get_one(Job, held_id).status == JobStatus.running  # still the command's


def test_a_cancel_reaches_a_run_the_command_holds_within_seconds_at_the_default_lease(engine) -> None:
    """`POST /jobs/{id}/cancel` stops an in-process run "at its next training step": the command learned of it
    only when it renewed the lease, every third of AUGLOOP_CLI_JOB_LEASE_SECONDS (100 s at the default), and a
    small run trained ten more epochs meanwhile. While the run's progress moves its job is beaten every
    PROGRESS_SECONDS, as a worker's is."""
    from db import queue
    from workers.held_jobs import HeldJobs
    from workers.main import PROGRESS_SECONDS
    from workers.registry import JobCancelled

    with session_scope(engine) as s:
        job_id = queue.enqueue(s, "train", {"run_id": 1}, max_attempts=1, held_by="cli:test", lease_seconds=300).id
    with HeldJobs(engine, "cli:test", {1: (job_id, 1000)}, lease_seconds=300) as held:
        ctx = held.context(1)
        with session_scope(engine) as s:
            queue.request_cancel(s, job_id)
        asked = time.monotonic()
        step = 0
        while time.monotonic() - asked < 30:
            step += 1
            try:
                ctx.report(done=step)  # a training step: the progress moves, and a cancel seen stops the run
            except JobCancelled:
                break
            time.sleep(0.05)
        seen = time.monotonic() - asked
        held.finished(1)  # no run row to end here
    assert ctx.cancelled.is_set() and seen < PROGRESS_SECONDS * 3, seen
