"""`python -m augloop ...` in a child process, as a user runs it: for the CLI tests and docs/screenshots.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_augloop(
    *args: str, env: dict[str, str], timeout: float | None = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI from the repository root with `env`, its output captured as text; the exit code is the
    caller's to check."""
    return subprocess.run(
        [sys.executable, "-m", "augloop", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


def cli_env(settings: Any, **more: str) -> dict[str, str]:
    """The environment of a CLI run on the test's database and data directory, 160 columns wide."""
    return {
        **os.environ,
        "AUGLOOP_DATABASE_URL": settings.resolved_database_url,
        "AUGLOOP_DATA_DIR": str(settings.data_dir),
        "COLUMNS": "160",
        **more,
    }
