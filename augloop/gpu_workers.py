"""Workers and GPUs: `augloop worker --gpu N` pins a worker (and the processes it starts) to one GPU through
CUDA_VISIBLE_DEVICES; `--gpus all` starts one pinned worker per visible GPU and waits for them.

A pinned worker sees one GPU, as `cuda` (or `cuda:0`): it runs single-GPU jobs. A distributed run asking for
N GPUs (config.nproc) needs a worker that sees them, i.e. one started without --gpu.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from augloop.console import fail


def pinned_devices(gpu: int, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES that leaves GPU `gpu` of those visible now (all of them when unset)."""
    if gpu < 0:
        fail(f"--gpu takes a GPU index (0, 1, …); got {gpu}")
    if visible is None or not visible.strip():
        return str(gpu)
    ids = [part.strip() for part in visible.split(",") if part.strip()]
    if gpu >= len(ids):
        fail(f"--gpu {gpu}: CUDA_VISIBLE_DEVICES={visible} leaves {len(ids)} GPU(s) visible (0–{len(ids) - 1})")
    return ids[gpu]


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pin(gpu: int) -> None:
    """Pin this process, before anything touches CUDA, to one GPU; fail when it is not there."""
    os.environ["CUDA_VISIBLE_DEVICES"] = pinned_devices(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible_gpus() < 1:
        fail(
            f"--gpu {gpu}: no such GPU is visible (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']}, "
            "CUDA available: no)"
        )


def run_one_per_gpu(worker_args: list[str]) -> int:
    """One `augloop worker --gpu i` per visible GPU, with the same options; SIGTERM/SIGINT reach all of them
    (each checkpoints its training job); the exit status is the worst of theirs."""
    count = visible_gpus()
    if count == 0:
        fail(
            "--gpus all: no GPU is visible (CUDA is not available on this machine); run `augloop worker` "
            "without --gpus to work on the CPU"
        )
    children = [
        subprocess.Popen([sys.executable, "-m", "augloop", "worker", "--gpu", str(i), *worker_args])
        for i in range(count)
    ]

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)
    return max(child.wait() for child in children)
