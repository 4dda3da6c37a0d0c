"""Files under the data directory that no row owns any more, found and deleted by the workers' hourly sweep.

Every file augloop writes is named by the row it belongs to, and goes with that row: a dataset's deletion deletes
its runs' folders and its exports once it commits (services/datasets.py), a job's end deletes what its attempts
left. Those deletions happen after the commit, in the process that made it, so a process killed in between (a
deploy in the seconds a dataset's run folders take to go), or a deletion the file system refused, left the files
for good, with nothing left to name them. A worker killed after a run's success committed and before its
checkpoint went, or after a file was moved into place and before its job's completion committed (the job then
failed), did the same. The sweep reads the names on disk, then the rows, and deletes:

- `runs/<id>`: the run (or ensemble) `<id>` is gone, or failed or was cancelled (its artifacts were never
  recorded; a run that ends so never runs again);
- `runs/<id>.checkpoint`, `runs/<id>.partial-*`: the run is gone or has ended (nothing resumes it);
- `exports/job<id>.<format>`: the job is gone or did not succeed, or its file is no longer one of the newest
  `AUGLOOP_EXPORTS_KEPT_PER_DATASET` of its dataset (services/exporting.py prunes them as each export publishes);
- `exports/job<id>.<format>.<attempt>.part`: the job is gone or has ended.

Only what has been left untouched for `grace_seconds` (on the file system's clock) is a candidate: a row whose
insert rolled back can give its id to the next one (SQLite's AUTOINCREMENT counter rolls back with it), and a file
just written may belong to a row not committed yet. Run and job ids are otherwise never handed out again."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from core.files import delete_path, file_system_now
from core.settings import get_settings
from db.chunks import chunked
from db.models import OPEN_JOB_STATUSES, Job, JobStatus, TrainingRun
from db.session import readonly_engine
from services.exporting import FORMATS, exports_folder, pruned_exports
from services.training import runs_root

log = logging.getLogger("augloop.leftover_files")

LEFTOVER_GRACE_SECONDS = 3600

# Ids as the database holds them (64-bit): a longer run of digits is no row's, and not augloop's to delete.
_ID = r"([1-9]\d{0,17})"
_RUN_DIR = re.compile(_ID)
_RUN_ASIDE = re.compile(rf"{_ID}\.(?:checkpoint|partial-.+)")
_EXPORT = re.compile(rf"job{_ID}\.(?:{'|'.join(FORMATS)})")
_EXPORT_PART = re.compile(rf"job{_ID}\.(?:{'|'.join(FORMATS)})\..+\.part")


@dataclass
class _Candidates:
    run_dirs: dict[Path, int] = field(default_factory=dict)
    run_asides: dict[Path, int] = field(default_factory=dict)
    exports: dict[Path, int] = field(default_factory=dict)
    export_parts: dict[Path, int] = field(default_factory=dict)


def _untouched(folder: Path, patterns: list[tuple[re.Pattern[str], dict[Path, int]]], cutoff: float) -> None:
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        for pattern, found in patterns:
            match = pattern.fullmatch(path.name)
            if match is None:
                continue
            try:
                if path.lstat().st_mtime <= cutoff:
                    found[path] = int(match.group(1))
            except OSError:  # gone meanwhile
                pass
            break


def leftovers(session: Session, grace_seconds: float = LEFTOVER_GRACE_SECONDS) -> list[Path]:
    """The files and folders under runs/ and exports/ that no row owns any more (see the module's doc)."""
    found = _Candidates()
    cutoff = file_system_now(get_settings().data_dir) - grace_seconds
    _untouched(runs_root(), [(_RUN_DIR, found.run_dirs), (_RUN_ASIDE, found.run_asides)], cutoff)
    _untouched(exports_folder(), [(_EXPORT, found.exports), (_EXPORT_PART, found.export_parts)], cutoff)
    # The rows are read after the names: a row committed before the listing is seen.
    runs: dict[int, str] = {}
    for ids in chunked(sorted({*found.run_dirs.values(), *found.run_asides.values()})):  # every run folder's
        runs.update(
            session.execute(select(TrainingRun.id, TrainingRun.status).where(TrainingRun.id.in_(ids))).tuples().all()
        )
    jobs: dict[int, str] = {}
    for ids in chunked(sorted({*found.exports.values(), *found.export_parts.values()})):
        jobs.update(session.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).tuples().all())
    pruned = {path.resolve() for path in pruned_exports(session, list(found.exports.values()))}
    ended = (JobStatus.failed, JobStatus.cancelled)
    out = [path for path, rid in found.run_dirs.items() if rid not in runs or runs[rid] in ended]
    out += [path for path, rid in found.run_asides.items() if runs.get(rid) not in OPEN_JOB_STATUSES]
    out += [
        path for path, jid in found.exports.items() if jobs.get(jid) != JobStatus.succeeded or path.resolve() in pruned
    ]
    out += [path for path, jid in found.export_parts.items() if jobs.get(jid) not in OPEN_JOB_STATUSES]
    return sorted(out)


def sweep_leftovers(engine: Engine, grace_seconds: float = LEFTOVER_GRACE_SECONDS) -> int:
    """Delete `leftovers`; returns how many went. Reads without the write lock; a deletion that fails is logged
    and tried again at the next sweep."""
    if not get_settings().data_dir.is_dir():
        return 0
    with Session(bind=readonly_engine(engine)) as session, session.begin():
        paths = leftovers(session, grace_seconds)
    removed = 0
    for path in paths:
        try:
            delete_path(path)
        except OSError as err:
            log.warning("could not delete the leftover %s: %s", path, err)
            continue
        removed += 1
    if removed:
        log.info("deleted %d leftover file(s) or folder(s) under runs/ and exports/ that no row owns", removed)
    return removed
