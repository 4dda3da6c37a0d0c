"""`augloop worker --gpu N` and `--gpus all`: the GPU a pinned worker sees, and clear errors on a machine (or a
CUDA_VISIBLE_DEVICES) without the GPU asked for."""

from __future__ import annotations

import subprocess

import pytest
import typer

from augloop.gpu_workers import pinned_devices
from tests.cli_process import run_augloop
from tests.tiny_models import REPO_ROOT


def test_pinning_picks_the_nth_of_the_gpus_visible_now() -> None:
    assert pinned_devices(1, None) == "1"
    assert pinned_devices(0, "") == "0"
    assert pinned_devices(1, "4,6, 7") == "6"  # the second GPU this process may use, by its real index
    with pytest.raises(typer.Exit):
        pinned_devices(3, "4,6")
    with pytest.raises(typer.Exit):
        pinned_devices(-1, None)


def _worker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_augloop("worker", *args, env=env)


def test_gpu_options_fail_clearly_without_a_gpu(settings) -> None:
    import os

    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {
        **os.environ,
        "AUGLOOP_DATABASE_URL": settings.resolved_database_url,
        "AUGLOOP_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": str(REPO_ROOT),
    }
    every = _worker("--gpus", "all", env=env)
    assert every.returncode == 2 and "no GPU is visible" in every.stderr
    one = _worker("--gpu", "0", "--burst", env=env)
    assert one.returncode == 2 and "--gpu 0" in one.stderr
    wrong = _worker("--gpus", "2", env=env)
    assert wrong.returncode == 2 and "--gpus takes 'all'" in wrong.stderr
