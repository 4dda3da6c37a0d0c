"""Deleting files and folders, and the file system's own clock: what every layer that keeps files needs."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any


def _unless_gone(function: Any, name: str, exc_info: Any) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):  # gone meanwhile (another sweep): not an error
        raise exc_info[1]


def delete_path(path: Path) -> None:
    """Delete a file or a folder (a link itself, never what it points to); one already gone is no error, one
    that cannot go raises OSError (a folder may then be left in part)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=_unless_gone)
    else:
        path.unlink(missing_ok=True)


def file_system_now(folder: Path) -> float:
    """The file system's clock, read from a probe file's time: a data directory shared by several hosts has its
    server's clock, not this host's. A sweep's "untouched for an hour" is read on it."""
    probe = folder / f".clock-{uuid.uuid4().hex}"
    probe.touch()
    try:
        return probe.stat().st_mtime
    finally:
        probe.unlink(missing_ok=True)
