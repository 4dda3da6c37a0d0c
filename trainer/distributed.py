"""A distributed (DDP) training run: the entry point that torchrun starts once per process, and the launch.

    python -m torch.distributed.run --standalone --nproc-per-node N -m trainer.distributed --job-dir DIR

The job directory holds what the launcher prepared and what the processes report back:

    request.json     the config and the examples (trainer.examples.split_to_dict), written by the launcher
    progress.jsonl   rank 0's progress events, one JSON object a line (appended and flushed as they happen)
    stop             created by the launcher to ask the run to checkpoint and stop at its next optimizer step
                     (with --watch-pid, the launcher's death asks the same: the processes checkpoint, stop and
                     remove the job directory, whose request holds every training text, instead of training on
                     for no one)
    artifacts/       rank 0's saved run (trainer.train.save_artifacts), when the run finishes

Each process exits 0 when the run finished or stopped on request (progress.jsonl then ends with a `stopped`
event: checkpointed), BAD_INPUT_EXIT when the trainer refused the config or data (the `error` event says why).
torchrun itself exits 1 when any process failed, so the launcher reads the outcome from the events. One process
per GPU (NCCL) when the config asks for CUDA and GPUs are visible; otherwise CPU processes on the gloo backend,
each with its share of the cores. Rank 0 alone writes progress, the checkpoint and the artifacts.

The trainer stands alone: this module imports nothing of the app, and works the same under an operator's own
torchrun across several nodes (README: distributed training) as under the worker's single-node launch.
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import fcntl
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REQUEST_FILE = "request.json"
PROGRESS_FILE = "progress.jsonl"
STOP_FILE = "stop"
ARTIFACTS_DIR = "artifacts"
# Rank 0 holds an exclusive lock on this file for as long as it lives (the system drops it with the process,
# even on SIGKILL): the worker waits on it after torchrun ended, so that a retry never trains beside the ranks
# of the attempt before (torchrun killed leaves them running until they see it gone).
RANK0_LOCK = "rank0.lock"
BAD_INPUT_EXIT = 3


def write_request(job_dir: Path, config: dict[str, Any], data: Any) -> None:
    from trainer.examples import split_to_dict

    job_dir.mkdir(parents=True, exist_ok=True)
    tmp = job_dir / f".{REQUEST_FILE}.tmp"
    tmp.write_text(json.dumps({"config": config, "data": split_to_dict(data)}), encoding="utf-8")
    tmp.replace(job_dir / REQUEST_FILE)


def launch_command(
    job_dir: Path, nproc: int, checkpoint_dir: Path | None = None, watch_pid: int | None = None
) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`, the same interpreter) on this node: `nproc` processes
    and a local rendezvous on a free port; `watch_pid`: the launcher, whose end (even by SIGKILL) stops them."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",
        "-m",
        "trainer.distributed",
        "--job-dir",
        str(job_dir),
    ]
    if checkpoint_dir is not None:
        command += ["--checkpoint-dir", str(checkpoint_dir)]
    if watch_pid is not None:
        command += ["--watch-pid", str(watch_pid)]
    return command


def _state_and_start(pid: int) -> tuple[str, str] | None:
    """Process `pid`'s state and start time (fields 3 and 22 of /proc/<pid>/stat), where /proc tells."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


class Watched:
    """The launcher, watched by its processes: it runs while its pid does, is not a zombie and (where /proc
    tells) started when the one we were launched by did, so a pid reused by another process does not count."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        seen = _state_and_start(pid)
        self.started = seen[1] if seen else None

    def _signalled(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process of that id: it exists
            pass
        return True

    def alive(self) -> bool:
        if not self._signalled():
            return False
        seen = _state_and_start(self.pid)
        if seen is None:  # no /proc here, or the process was reaped since the signal found it
            return self._signalled()
        state, started = seen
        return state not in ("Z", "X") and self.started in (None, started)


def _device_and_backend(config: Any, local_rank: int) -> tuple[Any, str]:
    """The process's device and the group's backend; without a config (this node's request was refused), as
    `device: auto` would have them, so that the process still joins the group and tells the others why."""
    import torch

    device_asked = "auto" if config is None else config.device
    wants_cuda = device_asked in ("auto", "cuda") and torch.cuda.is_available()
    if device_asked.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"config.device is {device_asked!r} but no CUDA device is available")
    if wants_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"process {local_rank} has no GPU: this node sees {torch.cuda.device_count()}")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), "nccl"
    return torch.device("cpu"), "gloo"


class Reporter:
    """Rank 0's progress events, appended to progress.jsonl and flushed at once (the launcher tails it)."""

    def __init__(self, path: Path) -> None:
        self.fh = path.open("a", encoding="utf-8")

    def __call__(self, event: dict[str, Any]) -> None:
        self.fh.write(json.dumps(event, default=str) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _abandoned(job_dir: Path, rank: int, watched: Watched | None) -> None:
    """Rank 0 removes the job directory when its launcher is gone: no one reads it (the next attempt resumes
    from the checkpoint), and its request holds every training text."""
    if rank == 0 and watched is not None and not watched.alive():
        import shutil

        shutil.rmtree(job_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.distributed", description=__doc__.split("\n")[0])
    parser.add_argument("--job-dir", required=True, type=Path)
    parser.add_argument("--checkpoint-dir", type=Path, default=None)
    parser.add_argument("--watch-pid", type=int, default=None, help="stop (checkpointed) when this process ends")
    # torchrun, which started this process, read first (before the seconds of torch's imports): killed with the
    # worker alive, it leaves its processes to the system (a parent of 1: it is gone already)
    launcher_pid = os.getppid()
    started = time.time()  # a `stop` file older than this is an earlier run's, where no launcher watches (below)
    args = parser.parse_args(argv)
    if launcher_pid == 1:
        return 1
    launcher = Watched(launcher_pid)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:  # first too: the worker's wait for the ranks (services/distributed_training.py) starts at once
        held = (args.job_dir / RANK0_LOCK).open("a")  # held until the process ends: the system drops the lock then
        fcntl.flock(held, fcntl.LOCK_EX)
    faulthandler.enable()  # a rank that crashes in native code (gloo, NCCL) leaves its Python stack in the log

    import torch.distributed as dist

    from trainer.config import TrainConfig
    from trainer.errors import ArtifactWriteError, TrainerError, TrainingStopped
    from trainer.examples import split_from_dict
    from trainer.group import Group
    from trainer.predict import available_cpus
    from trainer.train import LoopControl, save_artifacts, train_process

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    job_dir: Path = args.job_dir
    watched = Watched(args.watch_pid) if args.watch_pid is not None else None
    report = Reporter(job_dir / PROGRESS_FILE) if rank == 0 else None
    try:
        refusal: TrainerError | None = None
        config = None
        try:
            request = json.loads((job_dir / REQUEST_FILE).read_text(encoding="utf-8"))
            config = TrainConfig.from_dict(request["config"])
            if config.nproc != world:
                raise TrainerError(
                    f"config.nproc is {config.nproc} but torchrun started {world} processes", field="config.nproc"
                )
            data = split_from_dict(request["data"])
        except TrainerError as err:
            refusal = err
        except (OSError, ValueError, KeyError, TypeError) as err:  # this node's copy missing, cut short, damaged
            refusal = TrainerError(f"{REQUEST_FILE} cannot be read on this node: {type(err).__name__}: {err}")
        device, backend = _device_and_backend(config, local_rank)
        if config is not None and device.type == "cpu" and config.num_threads is None:  # the node's cores
            config = config.with_overrides({"num_threads": max(1, available_cpus() // local_world)})
        if world > 1:
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
        group = Group(rank, world, str(device) if device.type == "cuda" else "cpu")
        # A refusal on any node reaches every process: rank 0 reports it, and none waits for the others until
        # the group's timeout (a node whose request said another nproc left node 0 in its rendezvous, unsaid).
        refusals = group.gather(None if refusal is None else (refusal.message, refusal.field))
        refused = next(((r, said) for r, said in enumerate(refusals) if said is not None), None)
        if refused is not None:
            by, (message, field) = refused
            raise TrainerError(message if by == rank else f"process {by} refused the run: {message}", field=field)
        assert config is not None
        stop_file = job_dir / STOP_FILE
        # Under the worker (it watches the launcher), any `stop` counts: it may ask before the processes start.
        # Run by an operator, a `stop` left by an earlier run's stop does not: rerunning the same command
        # resumed, and stopped again after one step.
        stop_since = None if watched is not None else started

        def should_stop() -> bool:  # asked at every optimizer step; the ranks agree on the step (group.flags)
            return (
                _stop_asked(stop_file, stop_since)
                or (watched is not None and not watched.alive())
                or not launcher.alive()
            )

        control = LoopControl(checkpoint_dir=args.checkpoint_dir, should_stop=should_stop, group=group)
        result = train_process(config, data, progress=report, control=control, device=device)
        if result is not None:
            save_artifacts(result, job_dir / ARTIFACTS_DIR)
            assert report is not None
            report({"event": "saved", "artifacts": str(job_dir / ARTIFACTS_DIR)})
        _abandoned(job_dir, rank, watched)  # before the barrier: see the stopped case below
        if world > 1:
            dist.barrier()
        return 0
    except TrainingStopped as stopped:
        if report:
            report({"event": "stopped", "steps_done": stopped.steps_done, "saved": stopped.saved})
        # Rank 0 removes an abandoned job directory before the barrier: after it the other ranks tear the group
        # down, which can abort rank 0 before it has (the killed worker's request, every training text, stayed
        # behind once in CI).
        _abandoned(job_dir, rank, watched)
        if dist.is_initialized():
            # The ranks stop at the same step, but rank 0 then saves the checkpoint: a rank that tore the group
            # down meanwhile made gloo abort the other one now and then (SIGABRT, "terminate called without an
            # active exception"), and torchrun reported the stop as a failure.
            dist.barrier()
        return 0  # not a failure: torchrun must not report the run as failed
    except TrainerError as err:
        if report:
            report({"event": "error", "message": err.message, "field": err.field})
        return BAD_INPUT_EXIT
    except ArtifactWriteError as err:  # said to the launcher: torchrun's output names the file's server path
        if report:
            report({"event": "artifact_error", "reason": err.reason})
        return 1
    finally:
        if report:
            report.close()
        if dist.is_initialized():
            # The model (DDP, whose reducer holds the group) may still be alive in the frames of a stopped run's
            # traceback: freed first, while the group stands, rather than at the interpreter's teardown.
            gc.collect()
            dist.destroy_process_group()


def _stop_asked(stop_file: Path, since: float | None) -> bool:
    """Whether `stop_file` exists, and was made at `since` or later when given."""
    try:
        made = stop_file.stat().st_mtime
    except FileNotFoundError:
        return False
    return since is None or made >= since


def _exit_now(code: int) -> None:
    """End this process without the interpreter's teardown. Everything the run writes is closed by now and the
    group destroyed; what teardown would still do is destroy the native objects left (gloo's threads and the
    tensors they hold), and that, racing those threads, aborts a rank now and then (SIGABRT, "terminate called
    without an active exception"): torchrun then reports a finished or stopped run as failed."""
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit_now(main())  # an exception main() does not handle still ends the process the ordinary way
