"""Training jobs across worker shutdowns and processes: SIGTERM makes a worker checkpoint its training run and hand
the job back to the queue (the attempt given back); the next worker resumes the run from the checkpoint. A run
asking for two processes is trained by torchrun's processes, launched by the worker that claimed it."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from db.models import Job, JobStatus, TrainingRun
from db.session import session_scope
from tests.test_queue import _spawn_worker
from tests.trainer_fixtures import small_csv, tiny_encoder, tiny_keys  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


def _import(engine: Any, name: str, n_train: int) -> Any:
    from db.datasets import get_dataset
    from services.importing import ImportSpec, import_file

    with session_scope(engine) as s:
        import_file(
            s,
            small_csv(n_train=n_train, n_val=24, n_test=24),
            ImportSpec(dataset=name, tasks=["bias", "message"]),
            filename=f"{name}.csv",
        )
    with session_scope(engine) as s:
        return get_dataset(s, name)


def _queue_run(engine: Any, dataset: Any, encoder: str, epochs: int, **overrides: Any) -> tuple[int, int]:
    from db import queue
    from services.training import create_training_runs, default_config

    keys = tiny_keys(encoder, epochs=epochs, patience=0, grad_accum=1, warmup_ratio=0.0, rdrop_alpha=0.0)
    config = default_config({**keys, **overrides})
    with session_scope(engine) as s:
        (run,) = create_training_runs(s, s.merge(dataset), config, [7])
        job = queue.enqueue(
            s, "train", {"run_id": run.id, "dataset": dataset.name}, progress_total=epochs, max_attempts=2
        )
        run.job_id = job.id
        return run.id, job.id


def _job(engine: Any, job_id: int) -> Job:
    with session_scope(engine) as s:
        job = s.get_one(Job, job_id)
        s.expunge(job)
    return job


def _wait_mid_run(engine: Any, job_id: int, worker: Any, epochs: int) -> None:
    """Until the worker's run has done an epoch and has at least three to go (the worker is killed on failure)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = _job(engine, job_id)
        if job.status == JobStatus.running and 1 <= job.progress_done < epochs - 3:
            return
        assert job.status in (JobStatus.queued, JobStatus.running), job.last_error
        time.sleep(0.05)
    worker.kill()
    pytest.fail(worker.communicate()[0][-3000:])


def test_sigterm_checkpoints_the_run_and_the_next_worker_resumes_it(
    any_settings, any_engine, tiny_encoder: str
) -> None:
    from services.run_execution import checkpoint_dir
    from trainer.checkpoint import CHECKPOINT_FILE

    settings, engine = any_settings, any_engine

    epochs = 12
    dataset = _import(engine, "small", 160)
    run_id, job_id = _queue_run(engine, dataset, tiny_encoder, epochs)
    # a short lease: the heartbeat (every third of it) reports the epochs done while the test watches
    worker = _spawn_worker(settings, lease=1.5, burst=False, kinds="train")
    _wait_mid_run(engine, job_id, worker, epochs)  # one epoch done, more to go: ask the worker to stop
    worker.send_signal(signal.SIGTERM)
    out = worker.communicate(timeout=120)[0]
    assert worker.returncode == 0, out[-3000:]  # it stopped by itself, at a step boundary
    assert "1 handed back" in out

    stopped = _job(engine, job_id)
    assert stopped.status == JobStatus.queued and stopped.worker_id is None
    assert stopped.attempts == 0  # the interrupted attempt is given back: a redeploy costs no attempt
    assert "resumes from the checkpoint at step" in (stopped.last_error or "")
    assert (checkpoint_dir(run_id) / CHECKPOINT_FILE).is_file()
    with session_scope(engine) as s:
        run = s.get_one(TrainingRun, run_id)
        assert run.status == JobStatus.queued and not run.metrics

    rescuer = _spawn_worker(settings, burst=True, kinds="train")
    out = rescuer.communicate(timeout=300)[0]
    assert rescuer.returncode == 0, out[-3000:]
    done = _job(engine, job_id)
    assert done.status == JobStatus.succeeded and done.attempts == 1, (done.status, done.last_error)
    resumed_from = int(done.progress_info["resumed_from_step"])
    assert resumed_from >= 20  # 160 texts / 8: at least epoch 1's 20 steps were not trained again
    with session_scope(engine) as s:
        run = s.get_one(TrainingRun, run_id)
        assert run.status == JobStatus.succeeded and [e["epoch"] for e in run.curve] == list(range(1, epochs + 1))
        assert run.metrics["resumed_from_step"] == resumed_from and run.metrics["plan"]["steps_done"] == epochs * 20
    assert not checkpoint_dir(run_id).exists()  # the finished run's checkpoint is gone


def test_a_two_process_run_is_launched_by_the_worker_and_recorded_by_rank_0(
    settings, engine, tiny_encoder: str
) -> None:
    from services.prediction import model_spec
    from trainer.predict import RunPredictor
    from workers.main import Worker

    dataset = _import(engine, "small", 48)
    run_id, job_id = _queue_run(engine, dataset, tiny_encoder, 2, nproc=2, batch_size=4)
    stats = Worker(engine, ["train"], lease_seconds=30, poll_seconds=0.1).run(burst=True)
    job = _job(engine, job_id)
    assert stats.succeeded == 1, job.last_error
    assert job.progress_info["processes"] == 2 and job.progress_done == 2
    with session_scope(engine) as s:
        run = s.get_one(TrainingRun, run_id)
        assert run.status == JobStatus.succeeded and [e["epoch"] for e in run.curve] == [1, 2]
        assert run.metrics["processes"] == 2 and run.metrics["plan"]["effective_batch"] == 8
        assert [e["train_samples"] for e in run.curve] == [48, 48]
        spec = model_spec(s, run_id, None)
    probabilities = RunPredictor(spec.model_dirs[0], device="cpu").predict_proba(["a budget vote"])
    assert set(probabilities) == {"bias", "message"}


def _processes_watching(pid: int) -> list[int]:
    """The training processes (torchrun's ranks) launched to watch process `pid`."""
    from pathlib import Path

    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        watching = f"--watch-pid\x00{pid}\x00".encode() in cmdline + b"\x00"
        if watching and b"trainer.distributed" in cmdline and b"torch.distributed.run" not in cmdline:
            found.append(int(entry.name))  # a rank (torchrun's own process names the same arguments)
    return found


def test_sigkill_of_the_worker_stops_its_two_process_run_which_the_next_worker_resumes(
    settings, engine, tiny_encoder: str
) -> None:
    """torchrun's ranks watch the worker that launched them: killed by SIGKILL (no handler runs), it leaves no
    process training for no one, writing the checkpoint that the worker which takes the job over resumes from."""
    from services.training import checkpoint_dir, runs_root
    from trainer.checkpoint import CHECKPOINT_FILE

    epochs = 12
    dataset = _import(engine, "small", 160)
    run_id, job_id = _queue_run(engine, dataset, tiny_encoder, epochs, nproc=2, batch_size=4)
    victim = _spawn_worker(settings, lease=3, burst=False, kinds="train")
    _wait_mid_run(engine, job_id, victim, epochs)
    ranks = _processes_watching(victim.pid)
    assert len(ranks) == 2 and list(runs_root().glob(f"{run_id}.partial-*"))
    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)

    deadline = time.monotonic() + 60
    while _processes_watching(victim.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_watching(victim.pid) == [], "the ranks train on after their worker was killed"
    saved = checkpoint_dir(run_id) / CHECKPOINT_FILE
    assert saved.is_file() and saved.stat().st_mtime >= killed_at, "the ranks checkpoint when they stop"
    left = list(runs_root().glob(f"{run_id}.partial-*"))
    assert left == [], f"the killed attempt's training request stays: {_contents(left[0]) if left else ''}"

    rescuer = _spawn_worker(settings, lease=3, burst=True, kinds="train")
    out = rescuer.communicate(timeout=300)[0]
    assert rescuer.returncode == 0, out[-3000:]
    done = _job(engine, job_id)
    assert done.status == JobStatus.succeeded and done.attempts == 2, (done.status, done.last_error)
    assert int(done.progress_info["resumed_from_step"]) >= 20  # 160 texts / global batch 8: epoch 1's steps
    assert not checkpoint_dir(run_id).exists()


def _contents(job_dir: Any) -> str:
    """What a job directory holds, and the end of torchrun's output in it (why its ranks left it)."""
    from services.distributed_training import LOG_FILE

    try:
        names = sorted(p.name for p in job_dir.iterdir())
        log = job_dir / LOG_FILE
        return f"{names}\n{log.read_text(errors='replace')[-4000:] if log.is_file() else ''}"
    except OSError as err:  # rank 0 removed it meanwhile: late, not never
        return f"(gone since: {err})"


def _launcher_of(pid: int) -> int:
    """The torchrun process a worker `pid` launched."""
    from pathlib import Path

    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"torch.distributed.run" in cmdline and f"--watch-pid\x00{pid}\x00".encode() in cmdline + b"\x00":
            return int(entry.name)
    raise AssertionError(f"no torchrun launched by {pid}")


def test_sigkill_of_torchrun_stops_its_ranks_before_the_worker_retries(settings, engine, tiny_encoder: str) -> None:
    """torchrun killed (the OOM killer, an operator's kill -9) with its worker alive: the ranks watched only the
    worker, so they trained on for no one while the worker's retry started two more beside them, both writing
    the run's checkpoint. They now watch torchrun too, and the worker waits for rank 0 to end before the
    attempt ends."""
    epochs = 12
    dataset = _import(engine, "small", 160)
    _, job_id = _queue_run(engine, dataset, tiny_encoder, epochs, nproc=2, batch_size=4)
    worker = _spawn_worker(settings, lease=3, burst=False, kinds="train")
    try:
        _wait_mid_run(engine, job_id, worker, epochs)
        first = _processes_watching(worker.pid)
        assert len(first) == 2
        signal_at = time.monotonic()
        os.kill(_launcher_of(worker.pid), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while _job(engine, job_id).attempts < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _job(engine, job_id).attempts == 2, _job(engine, job_id).last_error
        alive = set(first) & set(_processes_watching(worker.pid))
        assert not alive, "the first attempt's ranks still train beside the retry"
        assert time.monotonic() - signal_at < 60
    finally:
        worker.kill()
        worker.wait(10)
        deadline = time.monotonic() + 60
        while _processes_watching(worker.pid) and time.monotonic() < deadline:
            time.sleep(0.2)


def test_a_two_process_run_stops_on_request_and_resumes_from_its_checkpoint(tiny_encoder: str, tmp_path) -> None:
    """The stop reaches both ranks at the same step (rank 0 saves), and a new launch resumes with both."""
    from services.distributed_training import train_distributed
    from tests.trainer_fixtures import fast_config, synthetic_split
    from trainer.errors import TrainingStopped

    epochs = 20  # room for the stop to land mid-run however slowly the launcher's poll sees epoch 2 begin
    config = fast_config(tiny_encoder, nproc=2, batch_size=4, epochs=epochs)
    events: list[dict[str, Any]] = []

    def stop_in_epoch_two() -> bool:
        return any(e["event"] == "batch" and e["epoch"] == 2 for e in events)

    with pytest.raises(TrainingStopped) as stopped:
        train_distributed(
            config,
            synthetic_split(),
            job_dir=tmp_path / "first",
            checkpoint_dir=tmp_path / "ckpt",
            progress=events.append,
            should_stop=stop_in_epoch_two,
        )
    assert stopped.value.saved and stopped.value.steps_done > 5  # 36 texts / global batch 8: 5 steps an epoch
    events.clear()
    result, _ = train_distributed(
        config,
        synthetic_split(),
        job_dir=tmp_path / "second",
        checkpoint_dir=tmp_path / "ckpt",
        progress=events.append,
        should_stop=lambda: False,
    )
    start = next(e for e in events if e["event"] == "start")
    assert start["resumed_from_step"] == stopped.value.steps_done
    assert start["resumed_at_epoch"] == (stopped.value.steps_done - 1) // 5 + 1  # its last step's epoch
    assert [e["epoch"] for e in result.curve] == list(range(1, epochs + 1))
    assert result.metrics["plan"]["steps_done"] == epochs * 5
