"""Distributed (DDP) training: two gloo processes launched by torchrun follow the loss curve of one process with
the same global batch; sharding keeps every text of every global batch exactly once."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.trainer_fixtures import fast_config, synthetic_split, tiny_encoder  # noqa: F401 (fixture)
from trainer.config import TrainConfig
from trainer.distributed import ARTIFACTS_DIR, PROGRESS_FILE, launch_command, write_request
from trainer.errors import TrainerError
from trainer.group import Group
from trainer.train import train_model


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 9])
@pytest.mark.parametrize("world", [2, 3])
def test_shards_split_each_global_batch_once_in_order(size: int, world: int) -> None:
    batch = list(range(100, 100 + size))
    parts = [Group(rank, world).shard(batch) for rank in range(world)]
    assert [i for part, active in parts if active for i in part] == batch  # contiguous: length buckets stay
    assert all(len(part) >= 1 for part, _ in parts)  # every rank runs a backward pass
    assert max(len(p) for p, a in parts if a) - min(len(p) for p, a in parts if a) <= 1


def test_slices_losses_add_up_to_the_global_batch_loss() -> None:
    """Class weights, a task with missing labels, R-Drop: normalised over the global batch, the slices' losses
    sum to the loss of the whole batch (each slice's own mean would not)."""
    import torch

    from trainer.examples import IGNORE, TaskSpec
    from trainer.losses import MultiTaskLoss

    torch.manual_seed(0)
    tasks = [TaskSpec("a", ["x", "y", "z"]), TaskSpec("b", ["p", "q"])]
    labels = torch.tensor([[0, 1], [0, IGNORE], [2, 0], [0, IGNORE], [1, 1]])
    first = {"a": torch.randn(5, 3), "b": torch.randn(5, 2)}
    second = {"a": torch.randn(5, 3), "b": torch.randn(5, 2)}
    loss_fn = MultiTaskLoss(
        tasks,
        gamma=2.0,
        smoothing={"a": torch.full((3,), 0.05), "b": torch.zeros(2)},
        class_weights={"a": torch.tensor([0.5, 2.0, 1.5]), "b": torch.tensor([1.0, 3.0])},
        task_weights={"b": 0.5},
        rdrop_alpha=1.0,
    )
    whole, _ = loss_fn(first, labels, second)
    norms = loss_fn.denominators(labels)
    total = 0.0
    for part in ([0, 1, 2], [3, 4]):
        sliced, _ = loss_fn(
            {k: v[part] for k, v in first.items()}, labels[part], {k: v[part] for k, v in second.items()}, norms
        )
        total += float(sliced)
    assert total == pytest.approx(float(whole), rel=1e-6)


def test_config_takes_cuda_n_and_nproc() -> None:
    assert TrainConfig.from_dict({"device": "cuda:3"}).device == "cuda:3"
    assert TrainConfig.from_dict({"nproc": 4, "batch_size": 6}).global_batch == 24
    for bad, field in (
        ({"device": "gpu0"}, "config.device"),
        ({"nproc": 0}, "config.nproc"),
        ({"device": "cuda:1", "nproc": 2}, "config.nproc"),
    ):
        with pytest.raises(TrainerError) as err:
            TrainConfig.from_dict(bad)
        assert err.value.field == field


@pytest.fixture(scope="module")
def no_dropout_encoder(tiny_encoder: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny encoder without dropout: with no random masks, one process and two must agree to rounding."""
    out = tmp_path_factory.mktemp("tiny_bert_no_dropout") / "encoder"
    shutil.copytree(tiny_encoder, out)
    config = json.loads((out / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(config))
    return str(out)


# fp32: one process and two agree to rounding. bf16 (what amp auto takes on a CPU with native bf16) rounds a
# slice of 4 otherwise than the batch of 8 it belongs to: the same run, to bf16's precision.
TOLERANCE = {"off": {"loss": 1e-4, "f1": 1e-6}, "bf16": {"loss": 1e-2, "f1": 0.1}}


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_two_gloo_processes_follow_one_process_with_the_same_global_batch(
    no_dropout_encoder: str, tmp_path: Path, amp: str
) -> None:
    data = synthetic_split(n_train=45)  # 45 texts: the last global batch of 8 splits unevenly (3 + 2)
    # class weights on (the default): the slices' losses are normalised over the global batch
    same: dict[str, Any] = {"epochs": 3, "head_dropout": 0.0, "grad_accum": 2, "amp": amp}
    tol = TOLERANCE[amp]
    one = train_model(fast_config(no_dropout_encoder, batch_size=8, **same), data)

    job = tmp_path / "job"
    write_request(job, fast_config(no_dropout_encoder, batch_size=4, nproc=2, **same).to_dict(), data)
    done = subprocess.run(launch_command(job, 2), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    events: list[dict[str, Any]] = [json.loads(line) for line in (job / PROGRESS_FILE).read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    assert start["processes"] == 2 and start["plan"]["effective_batch"] == one.plan.effective_batch  # type: ignore[union-attr]
    assert start["plan"]["lr"] == pytest.approx(one.plan.lr) and start["steps"] == one.plan.steps  # type: ignore[union-attr]
    curve = [e for e in events if e["event"] == "epoch"]
    assert [e["train_samples"] for e in curve] == [45, 45, 45]  # every text once per epoch, over both ranks
    losses = [e["train_loss"] for e in curve]
    np.testing.assert_allclose(losses, [e["train_loss"] for e in one.curve], rtol=tol["loss"])
    np.testing.assert_allclose([e["lr"] for e in curve], [e["lr"] for e in one.curve], rtol=1e-9)
    f1s = [e["val_macro_f1"] for e in curve]
    np.testing.assert_allclose(f1s, [e["val_macro_f1"] for e in one.curve], atol=tol["f1"])
    metrics = json.loads((job / ARTIFACTS_DIR / "metrics.json").read_text())  # rank 0 saved the run
    assert metrics["processes"] == 2
    assert metrics["test"]["overall_macro_f1"] == pytest.approx(one.metrics["test"]["overall_macro_f1"], abs=tol["f1"])
    precision = {"off": "fp32", "bf16": "bf16"}[amp]
    assert metrics["precision"] == one.metrics["precision"] == precision
    model_meta = json.loads((job / ARTIFACTS_DIR / "model" / "model.json").read_text())
    assert model_meta["precision"] == precision  # the saved model serves as its run evaluated


def test_a_failed_distributed_run_names_the_exception_not_the_processes_output() -> None:
    """The job's error (members read it) names the ranks' exception; their tracebacks stay in the worker's log."""
    from services.distributed_training import last_exception

    output = (
        "[rank1]: Traceback (most recent call last):\n"
        '[rank1]:   File "/srv/augloop/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py", line 1\n'
        "[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
        "E1203 17:00:00 torch/distributed/elastic/multiprocessing/api.py:869] failed (exitcode: 1)\n"
    )
    assert last_exception(output) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert last_exception("Killed\n") == "see the worker's log"


def test_the_worker_log_keeps_the_stack_of_a_rank_that_crashed_in_native_code() -> None:
    """A rank's native crash (faulthandler's report) followed by torchrun's long report: the operator's excerpt
    keeps the crashed rank's Python stack, which the last 3,000 characters alone had lost."""
    from services.distributed_training import log_excerpt

    modules = ", ".join(f"sklearn.module_{i}" for i in range(400))
    output = (
        "[rank1]: Fatal Python error: Aborted\n"
        "[rank1]: Current thread 0x00007f (most recent call first):\n"
        '[rank1]:   File "/srv/augloop/trainer/distributed.py", line 212 in main\n'
        f"[rank1]: Extension modules: numpy.core._multiarray_umath, {modules} (total: 401)\n"
        + "W1204 torch/distributed/elastic/multiprocessing/api.py:1028] Sending process 25428 closing signal\n" * 60
        + "E1204 failed (exitcode: -6) local_rank: 1 (pid: 25429)\n"
    )
    excerpt = log_excerpt(output)
    assert 'trainer/distributed.py", line 212 in main' in excerpt
    assert "sklearn.module_399" not in excerpt, "the list of extension modules is left out"
    assert excerpt.endswith("E1204 failed (exitcode: -6) local_rank: 1 (pid: 25429)\n")
    assert log_excerpt("short output\n") == "short output\n"


def test_a_launcher_reaped_while_a_rank_looks_at_it_counts_as_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ranks watch their launcher: one that ends and is reaped between the signal that finds it and the read
    of its /proc entry is gone (it counted as alive, and the rank kept training for no one, its request on disk)."""
    import sys

    from trainer import distributed

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        watched = distributed.Watched(child.pid)
        assert watched.started is not None and watched.alive()
        read = distributed._state_and_start

        def reaped_meanwhile(pid: int) -> Any:
            child.kill()
            child.wait()  # the launcher's parent reaps it: /proc/<pid> is gone
            return read(pid)

        monkeypatch.setattr(distributed, "_state_and_start", reaped_meanwhile)
        assert not watched.alive()
    finally:
        child.kill()
        child.wait()


def _two_nodes(jobs: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    """Two torchrun "nodes" on this machine, one process each, node i reading jobs[i] (its own copy of the
    request, as each node of a cluster has its own disk)."""
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                f"--node-rank={i}",
                "--nproc-per-node=1",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "--max-restarts=0",
                "-m",
                "trainer.distributed",
                "--job-dir",
                str(job),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i, job in enumerate(jobs)
    ]
    out = []
    for node in nodes:
        try:
            stdout, _ = node.communicate(timeout=180)  # the group's timeout is 30 minutes: a hang fails here
        except subprocess.TimeoutExpired:
            for other in nodes:
                other.kill()
            raise AssertionError("a node still waits for the other: the processes hung") from None
        out.append(subprocess.CompletedProcess(node.args, node.returncode, stdout, ""))
    return out


def _events(job: Path) -> list[dict[str, Any]]:
    path = job / PROGRESS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_nodes_that_read_different_requests_are_refused_on_every_node_not_left_waiting(
    tiny_encoder: str, tmp_path: Path
) -> None:
    """Node 1 reading other examples (45 against 53 texts) left both waiting in mismatched collectives until the
    group's 30-minute timeout (texts of the same count trained apart, silently); a request node 1 refused (another
    nproc) left node 0 in its rendezvous, and its progress file empty."""
    config = fast_config(tiny_encoder, batch_size=4, nproc=2, epochs=1).to_dict()
    jobs = [tmp_path / "node0", tmp_path / "node1"]
    write_request(jobs[0], config, synthetic_split(n_train=45))
    write_request(jobs[1], config, synthetic_split(n_train=53))
    for done in _two_nodes(jobs):
        assert done.returncode != 0, done.stdout[-2000:]
    error = next(e for e in _events(jobs[0]) if e["event"] == "error")
    assert "the processes disagree on the run" in error["message"], error

    for job in jobs:
        shutil.rmtree(job)
    write_request(jobs[0], config, synthetic_split(n_train=45))
    write_request(jobs[1], {**config, "nproc": 3}, synthetic_split(n_train=45))
    for done in _two_nodes(jobs):
        assert done.returncode != 0, done.stdout[-2000:]
    error = next(e for e in _events(jobs[0]) if e["event"] == "error")
    assert error["message"] == "process 1 refused the run: config.nproc is 3 but torchrun started 2 processes"
    assert error["field"] == "config.nproc"

    for job in jobs:  # node 1's copy cut short (a sync that had not finished): it crashed alone, node 0 waited
        shutil.rmtree(job)
        write_request(job, config, synthetic_split(n_train=45))
    request = jobs[1] / "request.json"
    request.write_bytes(request.read_bytes()[:100])
    for done in _two_nodes(jobs):
        assert done.returncode != 0, done.stdout[-2000:]
    error = next(e for e in _events(jobs[0]) if e["event"] == "error")
    assert error["message"].startswith("process 1 refused the run: request.json cannot be read on this node"), error


def test_a_stop_an_earlier_run_left_is_not_read_where_an_operator_runs_it(tmp_path: Path) -> None:
    """Rerunning the same command after a stop resumed, and stopped again one step later: the earlier `stop`
    file was still there. Under the worker, any `stop` counts (it may ask before the processes start)."""
    import os
    import time

    from trainer.distributed import _stop_asked

    stop = tmp_path / "stop"
    assert not _stop_asked(stop, None) and not _stop_asked(stop, time.time())
    stop.touch()
    os.utime(stop, (time.time() - 60, time.time() - 60))  # left by the earlier run
    assert _stop_asked(stop, None)  # the worker's launch
    assert not _stop_asked(stop, time.time() - 1)  # an operator's: made before this run started
    stop.touch()  # asked now
    assert _stop_asked(stop, time.time() - 1)


def test_the_failed_process_torchrun_names_is_the_error_not_the_peers_it_took_down() -> None:
    """A full disk on rank 0 read "Connection closed by peer" (rank 1's consequence, last in the output)."""
    from services.distributed_training import last_exception

    output = (
        "[rank0]: Traceback (most recent call last):\n"
        "[rank0]: OSError: [Errno 28] No space left on device\n"
        "[rank1]: RuntimeError: [../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:21912\n"
        + "W1207 torch/distributed/elastic/multiprocessing/api.py] Sending process 1 closing signal SIGTERM\n"
        * 40
        + "Root Cause (first observed failure):\n[0]:\n  time      : 2026-12-07_03:00:00\n  host      : node\n"
        "  rank      : 0 (local_rank: 0)\n  exitcode  : 1 (pid: 42)\n"
    )
    assert last_exception(output) == "OSError: [Errno 28] No space left on device"


def test_a_run_whose_rank_0_cannot_save_its_model_fails_saying_so_without_the_servers_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0's ArtifactWriteError crashed the process, and the job's error was torchrun's first exception line,
    the chained OSError naming the server's path (a reviewer's find): the launcher hears it as an event."""
    import json
    import sys

    import services.distributed_training as launcher
    from tests.trainer_fixtures import synthetic_split as split
    from trainer.distributed import PROGRESS_FILE
    from trainer.errors import ArtifactWriteError

    job_dir = tmp_path / "job"
    event = json.dumps({"event": "artifact_error", "reason": "No space left on device (ENOSPC)"})
    rank0 = (
        f"import sys; open({str(job_dir / PROGRESS_FILE)!r}, 'a').write({event!r} + '\\n'); "
        "print(\"OSError: [Errno 28] No space left on device: '/srv/augloop/jobs/7/artifacts/model.safetensors'\"); "
        "sys.exit(1)"
    )
    monkeypatch.setattr(launcher, "launch_command", lambda *args, **kwargs: [sys.executable, "-c", rank0])
    config = TrainConfig.from_dict({"encoder": "unused", "nproc": 2, "device": "cpu"})
    with pytest.raises(ArtifactWriteError) as err:
        launcher.train_distributed(
            config, split(), job_dir=job_dir, checkpoint_dir=None, progress=lambda e: None, should_stop=lambda: False
        )
    assert err.value.reason == "No space left on device (ENOSPC)" and "/srv" not in err.value.message


def test_a_cancellation_reaches_processes_that_report_nothing_and_a_stop_they_ignore_ends_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung process (a stuck GPU, node or network) sends no event: the job's cancellation, read only with an
    event, never came, and a stop (read by the processes in a collective) was never answered."""
    import sys
    import time

    import services.distributed_training as launcher
    from tests.trainer_fixtures import synthetic_split as split

    silent = [sys.executable, "-c", "import time; time.sleep(120)"]
    monkeypatch.setattr(launcher, "launch_command", lambda *args, **kwargs: silent)
    monkeypatch.setattr(launcher, "QUIET_SECONDS", 0.5)
    config = TrainConfig.from_dict({"encoder": "unused", "nproc": 2, "device": "cpu"})

    class Cancelled(Exception):
        pass

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "waiting":
            raise Cancelled  # as the job's callback raises once the job was cancelled

    began = time.monotonic()
    with pytest.raises(Cancelled):
        launcher.train_distributed(
            config, split(), job_dir=tmp_path / "a", checkpoint_dir=None, progress=progress, should_stop=lambda: False
        )
    assert time.monotonic() - began < 30
    monkeypatch.setattr(launcher, "STOP_WAIT_SECONDS", 1.0)
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="did not stop within"):
        launcher.train_distributed(
            config,
            split(),
            job_dir=tmp_path / "b",
            checkpoint_dir=None,
            progress=lambda e: None,
            should_stop=lambda: True,
        )
    assert time.monotonic() - began < 30
