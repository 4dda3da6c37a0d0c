"""Who may do what, by project membership: the one place the service layer asks.

Users are members of projects, as annotators or leads; admins may do everything. A dataset (and everything in
it: samples, jobs, runs, reports) belongs to one project:
- a member reads it and reviews it (Need.member);
- a lead also changes its settings and guidelines and starts augmentation and training (Need.lead);
- to anyone else it does not exist: the answer is the same 404 a missing dataset gets, so that nobody can probe
  which datasets exist outside their projects.
`user=None` is the operator at the command line (or a job already authorized when it was queued): no check.
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.orm import Session

from core.errors import NotFoundError, PermissionDenied
from core.settings import get_settings
from db import projects as db_projects
from db import training_runs as db_runs
from db.models import Dataset, ProjectRole, Role, TrainingRun, User
from workers.augment.wordnet_data import nltk_data_dir


class Need(StrEnum):
    member = "member"
    lead = "lead"
    admin = "admin"


def is_admin(user: User | None) -> bool:
    return user is None or user.role == Role.admin


def shown_path(path: str | None, user: User | None) -> str | None:
    """A server path as `user` may see it: whole to admins and the operator, relative to the data directory to
    project members (where the server keeps its files is not theirs to know); a path elsewhere, not at all."""
    if path is None or is_admin(user):
        return path
    root = get_settings().data_dir.resolve()
    for candidate in (Path(path), Path(path).resolve()):  # as stored (runs/ may be a link), then as it resolves
        if candidate.is_relative_to(root):
            return str(candidate.relative_to(root))
    return None


# The top folders of a server's file system that a path in an error message starts with: a path under the data
# directory, or under one of these, is the server's; "/r/politics" (a label) or "/v1/chat" (a URL's path) is not.
_SERVER_ROOTS = (
    "bin",
    "boot",
    "data",
    "dev",
    "etc",
    "home",
    "lib",
    "media",
    "mnt",
    "opt",
    "proc",
    "root",
    "run",
    "srv",
    "sys",
    "tmp",
    "usr",
    "var",
    "work",
    "workspace",
    "app",
    "Users",
    "Volumes",
    "private",
    # clusters' shared and node-local file systems, where TMPDIR and model caches live
    "scratch",
    "gpfs",
    "lustre",
    "nfs",
    "beegfs",
    "cephfs",
    "cvmfs",
    "shared",
    "nobackup",
    "local",
)
# The process's own temporary and cache folders, wherever they are (TMPDIR=/fast/tmp, HF_HOME=/hf): a path under
# one is the server's as much as one under the data directory.
_FOLDER_VARIABLES = ("TMPDIR", "HF_HOME", "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "TORCH_HOME", "XDG_CACHE_HOME")
# A quoted path (an OSError quotes its own, spaces and all: "[Errno 28] No space left on device: '/srv/my data/x'"),
# else an unquoted one up to a space: "/" at the start of a word, not inside a URL or a relative path.
_QUOTED_PATH = re.compile(r"""(?P<q>['"])(?P<path>/[^'"\n]*)(?P=q)""")
_BARE_PATH = re.compile(r"(?<![\w.:/~…-])/[^\s'\"]+")  # not after "…": a path already shortened
_FILE_URL = re.compile(r"(?P<scheme>file://)(?P<path>/[^\s'\"]+)")  # file:///srv/x: a path, not a URL's


@functools.lru_cache(maxsize=8)
def _configured_folders(*folders: Path) -> frozenset[str]:
    """The server's other configured folders (models, NLTK data), wherever the operator mounted them (/models,
    /scratch, /nfs), as given and as they resolve (a link): a path under one is the server's as much as one under
    /srv. Once per setting (resolving on every message would touch the disk: slow on NFS)."""
    return frozenset(str(p) for f in folders for p in (f.expanduser().absolute(), f.expanduser().resolve()))


def without_server_paths(message: str) -> str:
    """An error message as project members may read it (a job's, a run's): a path under the data directory
    relative to it, any other path of the server's (under the data directory or a top folder such as /srv,
    /home, /tmp) by its last part only (`…/name`); anything else, a label or a URL's path, as it was. The
    worker's log keeps the whole message and its traceback for the operator."""
    settings = get_settings()
    roots = sorted({str(settings.data_dir.resolve()), str(settings.data_dir.absolute())}, key=len, reverse=True)
    environment = (os.environ.get(name, "") for name in _FOLDER_VARIABLES)
    others = _configured_folders(
        settings.models_dir or settings.data_dir / "models",
        nltk_data_dir(settings),
        Path(tempfile.gettempdir()),
        *(Path(folder) for folder in environment if folder.startswith("/") and folder.rstrip("/")),
    )

    def shown(path: str) -> str:
        for root in roots:
            if path == root:
                return "<data directory>"
            if path.startswith(root + "/"):
                return path[len(root) + 1 :]
        if path.split("/")[1] in _SERVER_ROOTS or any(path == o or path.startswith(o + "/") for o in others):
            return "…/" + PurePosixPath(path).name
        return path

    message = _FILE_URL.sub(lambda m: m["scheme"] + shown(m["path"]), message)
    message = _QUOTED_PATH.sub(lambda m: m["q"] + shown(m["path"]) + m["q"], message)
    return _BARE_PATH.sub(lambda m: shown(m.group(0)), message)


def shown_provenance(value: Any) -> Any:
    """A model's name as provenance shows it (a variant's model, its method's parameters, an augmenter's source):
    a hub id as it is, a directory of the server's by its last part, as in errors (without_server_paths); lists
    and mappings item by item."""
    if isinstance(value, str):
        return without_server_paths(value)
    if isinstance(value, dict):
        return {key: shown_provenance(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shown_provenance(item) for item in value]
    return value


def visible_project_ids(session: Session, user: User | None) -> set[int] | None:
    """The projects whose datasets `user` sees; None: all of them."""
    if is_admin(user):
        return None
    assert user is not None
    return set(db_projects.memberships(session, user.id))


def check_dataset(
    session: Session,
    dataset: Dataset,
    user: User | None,
    need: Need = Need.member,
    *,
    field: str = "name",
    what: str | None = None,
) -> Dataset:
    """`dataset` when `user` may act on it with `need`; else a 404 (not a member: it does not exist for them)
    or a 403 (a member without the role)."""
    if is_admin(user):
        return dataset
    assert user is not None
    role = db_projects.role_in(session, dataset.project_id, user.id)
    if role is None:
        raise NotFoundError(what or f"dataset {dataset.name!r} not found", field=field)
    if need == Need.admin:
        raise PermissionDenied("this needs the admin role", field=field)
    if need == Need.lead and role != ProjectRole.lead:
        raise PermissionDenied(f"this needs the lead role in the dataset's project; you are an {role}", field=field)
    return dataset


def check_dataset_id(
    session: Session, dataset_id: int | None, user: User | None, need: Need = Need.member, *, missing: str, field: str
) -> Dataset | None:
    """The dataset a row (a job, a run, a report, a sample) belongs to, when `user` may act on it with `need`.
    A non-member gets `missing`, the same 404 as a row that does not exist. A row with no dataset (a job that
    imports a new one) is an admin's: others get the 404."""
    dataset = session.get(Dataset, dataset_id) if dataset_id is not None else None
    if dataset is None:
        if is_admin(user):
            return None
        raise NotFoundError(missing, field=field)
    return check_dataset(session, dataset, user, need, field=field, what=missing)


def visible_run(
    session: Session, run_id: int, user: User | None, need: Need = Need.member, *, field: str = "run_id"
) -> TrainingRun:
    """A training run or ensemble of a dataset the user may see (with `need`); to anyone else it does not
    exist."""
    run = db_runs.get_run(session, run_id, field=field)
    check_dataset_id(session, run.dataset_id, user, need, missing=f"training run {run_id} not found", field=field)
    return run
