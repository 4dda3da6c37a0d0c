"""A distributed training run launched by the worker that claimed it: torchrun starts `config.nproc` processes
of trainer/distributed.py on this node (one per GPU, or gloo CPU processes), and this module relays rank 0's
progress to the job while they train.

The processes get their examples from a file written here (the trainer reads no database) and report through
progress.jsonl, which is tailed every POLL_SECONDS: each event goes to the same progress callback as an
in-process run's, so the job's progress, its lease and its cancellation work as for one process. A stop request
(the worker's SIGTERM) becomes the `stop` file: the processes checkpoint at their next optimizer step and exit.
Cancellation or a lost lease ends the processes at once (torchrun is told to stop them).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.config import TrainConfig
from trainer.distributed import (
    ARTIFACTS_DIR,
    PROGRESS_FILE,
    RANK0_LOCK,
    STOP_FILE,
    launch_command,
    write_request,
)
from trainer.errors import ArtifactWriteError, TrainerError, TrainingStopped
from trainer.examples import SplitData
from trainer.train import TrainResult, load_result

logger = logging.getLogger("augloop.distributed")
RANK_PREFIX = re.compile(r"^\[(?:default)?rank\d+\]:\s*")  # torchrun's prefix on a process's lines
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)(: .*)?$")

POLL_SECONDS = 0.5
KILL_GRACE_SECONDS = 30
QUIET_SECONDS = 2.0  # without an event this long, the job's cancellation and lease are read all the same
# After a stop was asked, the processes checkpoint at their next optimizer step and exit; one that has not
# answered by then is hung (a stuck GPU, node or network: the `stop` file is read in a collective) and is ended
STOP_WAIT_SECONDS = 300
LOG_FILE = "torchrun.log"
RELAYED_BY_LAUNCHER = {"stopped", "error", "saved", "artifact_error"}  # outcomes read here, not progress for the job


def check_devices(config: TrainConfig) -> None:
    """A run on GPUs needs `nproc` of them visible to this worker (after CUDA_VISIBLE_DEVICES, `--gpu`)."""
    import torch

    if config.device == "cpu":
        return
    if not torch.cuda.is_available():
        if config.device == "cuda":
            raise RuntimeError("config.device is 'cuda' but no CUDA device is available to this worker")
        return  # auto: CPU processes on the gloo backend
    visible = torch.cuda.device_count()
    if config.nproc > visible:
        raise TrainerError(
            f"config.nproc: the run asks for {config.nproc} GPUs, and the worker that took it sees {visible} "
            "(a worker pinned with --gpu sees one; run multi-GPU jobs on an unpinned worker)",
            field="config.nproc",
        )


def train_distributed(
    config: TrainConfig,
    data: SplitData,
    *,
    job_dir: Path,
    checkpoint_dir: Path | None,
    progress: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
) -> tuple[TrainResult, Path]:
    """Train with `config.nproc` processes; returns the result and the directory rank 0 saved it in."""
    check_devices(config)
    write_request(job_dir, config.to_dict(), data)
    (job_dir / PROGRESS_FILE).touch()
    with (job_dir / LOG_FILE).open("wb") as log:
        # A session of its own: a terminal's Ctrl-C reaches the worker, which decides how the processes stop.
        proc = subprocess.Popen(
            # The processes watch this one: killed, even by SIGKILL, it leaves no run training for no one.
            launch_command(job_dir, config.nproc, checkpoint_dir, watch_pid=os.getpid()),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ},
        )
        outcome: dict[str, Any] = {}
        heard = time.monotonic()
        stop_asked: float | None = None
        try:
            with (job_dir / PROGRESS_FILE).open(encoding="utf-8") as events:
                while True:
                    finished = proc.poll() is not None
                    for line in _complete_lines(events):
                        event = json.loads(line)
                        heard = time.monotonic()
                        if event["event"] in RELAYED_BY_LAUNCHER:
                            outcome[event["event"]] = event
                        else:
                            progress(event)  # raises when the job was cancelled or its lease lost
                    if finished:
                        break
                    if time.monotonic() - heard >= QUIET_SECONDS:
                        # no event (a long validation, a hung process): a cancellation was read only with the
                        # next event, and the lease, renewed meanwhile, showed the job alive
                        progress({"event": "waiting"})
                        heard = time.monotonic()
                    if should_stop() and stop_asked is None:
                        (job_dir / STOP_FILE).touch()
                        stop_asked = time.monotonic()
                    if stop_asked is not None and time.monotonic() - stop_asked > STOP_WAIT_SECONDS:
                        raise RuntimeError(
                            f"the distributed training processes did not stop within {STOP_WAIT_SECONDS} s of the "
                            "stop request (a process hung?): ended; the run resumes from its last checkpoint"
                        )
                    time.sleep(POLL_SECONDS)
        except BaseException:
            _kill(proc)
            _await_ranks(job_dir)
            raise
    _await_ranks(job_dir)
    code = proc.returncode  # torchrun's: 1 when any process failed, whatever its own status
    if code == 0 and "saved" in outcome:
        return load_result(job_dir / ARTIFACTS_DIR, config), job_dir / ARTIFACTS_DIR
    if code == 0 and "stopped" in outcome:
        raise TrainingStopped(int(outcome["stopped"]["steps_done"]), saved=bool(outcome["stopped"]["saved"]))
    if "error" in outcome:  # the trainer refused the config or data (BAD_INPUT_EXIT)
        raise TrainerError(outcome["error"]["message"], field=outcome["error"].get("field"))
    if "artifact_error" in outcome:  # rank 0 trained, and could not write the run's model and results
        raise ArtifactWriteError(outcome["artifact_error"]["reason"])
    output = (job_dir / LOG_FILE).read_bytes().decode("utf-8", "replace")
    # Their output (tracebacks through the server's files) is the operator's: the worker's log. The job's
    # error, which the project's members read, names the exception.
    logger.error(
        "the distributed training processes exited with status %s; their output ends:\n%s", code, log_excerpt(output)
    )
    raise RuntimeError(f"the distributed training processes exited with status {code}: {last_exception(output)}")


def log_excerpt(output: str, limit: int = 3000) -> str:
    """What the worker's log keeps of the processes' output: its end, and before it the Python stack a rank
    left when it crashed in native code (faulthandler's "Fatal Python error" report, without its long list of
    extension modules), which torchrun's own report after it would otherwise push out of the excerpt."""
    end = output[-limit:]
    crash = output.rfind("Fatal Python error")
    if crash < 0 or crash >= len(output) - limit:
        return end
    report = output[crash : crash + limit]
    report = "\n".join(line for line in report.splitlines() if "Extension modules:" not in line)
    return f"{report}\n[...]\n{end}"


# torchrun's summary names the process that failed first: its exception is the cause, the others' ("Connection
# closed by peer") the consequence
ROOT_CAUSE_RANK = re.compile(r"Root Cause \(first observed failure\):.*?\brank\s*:\s*(\d+)", re.S)


def last_exception(output: str) -> str:
    """The exception of the process torchrun names as the root cause (its first `SomeError: message` line: the
    original of a chain), else the last such line of the processes' output, or a pointer to the log."""
    lines = output.splitlines()
    if cause := ROOT_CAUSE_RANK.search(output):
        own = (f"[rank{cause.group(1)}]:", f"[default{cause.group(1)}]:")
        for line in lines:
            if line.strip().startswith(own) and EXCEPTION_LINE.match(said := RANK_PREFIX.sub("", line.strip())):
                return said[:500]
    for line in reversed(lines):
        line = RANK_PREFIX.sub("", line.strip())
        if EXCEPTION_LINE.match(line):
            return line[:500]
    return "see the worker's log"


def _complete_lines(fh: Any) -> list[str]:
    """The whole lines appended since the last read (a line being written is read next time)."""
    lines: list[str] = []
    while True:
        pos = fh.tell()
        line = fh.readline()
        if not line:
            return lines
        if not line.endswith("\n"):
            fh.seek(pos)
            return lines
        lines.append(line)


def _await_ranks(job_dir: Path) -> None:
    """Once torchrun has ended: wait (at most KILL_GRACE_SECONDS) for its processes to end too. torchrun killed
    (SIGKILL, the OOM killer) leaves them training; they stop, checkpointed, when they see it gone, and a retry
    started before that would train beside them, both writing the run's checkpoint. Rank 0's lock on RANK0_LOCK
    goes with its process; the stop file asks them all."""
    lock = job_dir / RANK0_LOCK
    if not lock.exists():  # rank 0 never started
        return
    (job_dir / STOP_FILE).touch()
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    with lock.open("a") as held:
        while True:
            try:
                fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    logger.error(
                        "the training processes of %s still run %ss after torchrun ended", job_dir, KILL_GRACE_SECONDS
                    )
                    return
                time.sleep(POLL_SECONDS)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """End torchrun and its processes now. torchrun starts each process in a session of its own, so the signal
    goes to torchrun, whose shutdown SIGTERMs them and waits; SIGKILL if it has not ended within the grace."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()
