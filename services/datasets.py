"""Datasets: look-up, settings, deletion, class balance, import and export."""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO

from sqlalchemy import Engine, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from core.errors import NotFoundError, ValidationFailed
from core.files import file_system_now
from core.names import check_display_name, check_language
from core.settings import get_settings
from db import queue
from db.datasets import (
    dataset_stats,
    delete_dataset,
    get_dataset,
    hold_for_a_new_rule,
    list_datasets,
)
from db.models import OPEN_JOB_STATUSES, Dataset, Job, TrainingRun, User
from db.session import (
    delete_when_committed,
    discard_unless_committed,
    readonly_engine,
    session_scope,
    snapshot_engine,
)
from services.access import Need, check_dataset, visible_project_ids
from services.compute_bounds import check_other_capacity
from services.exporting import (
    ExportCount,
    check_format,
    export_job_files,
    export_job_parts,
    is_job_file_name,
    iter_export,
    parse_include,
)
from services.exporting import reimport_command as reimport_command_of
from services.importing import FinishFn, ImportResult, ImportSpec, check_importer, import_path, import_stream

log = logging.getLogger("augloop.datasets")


def dataset_named(
    session: Session, name: str, user: User | None, need: Need = Need.member, *, field: str = "name"
) -> Dataset:
    """The dataset called `name`, when `user` may act on it with `need` (None: the operator at the command
    line); a 404 (missing, or not the user's) names `field`, the request field that held the name."""
    try:
        dataset = get_dataset(session, name)
    except NotFoundError as err:
        raise NotFoundError(err.message, field=field) from None
    return check_dataset(session, dataset, user, need, field=field)


def all_datasets(session: Session, user: User | None) -> list[Dataset]:
    """The datasets of the user's projects (admins: all)."""
    return list_datasets(session, visible_project_ids(session, user))


def update_settings(
    session: Session, name: str, changes: dict[str, Any], user: User | None
) -> tuple[Dataset, dict[str, int]]:
    """Change review settings (reviews required, guidelines, language) or the display name; `changes` holds only
    given keys. A new
    reviews_required (given, even unchanged) re-evaluates every reviewed variant in the same transaction:
    returns the status changes by transition (empty when nothing moved or k was not given)."""
    from services.review_status import reevaluate

    dataset = dataset_named(session, name, user, Need.lead)
    if "language" in changes:
        check_language(changes["language"], field="language")
    if "display_name" in changes:
        changes["display_name"] = check_display_name(changes["display_name"], field="display_name")
    if "reviews_required" in changes:
        # Decisions under way count under the old k: let them end, then re-evaluate what they stored. The k to
        # compare with is the one committed once they have (another lead may have changed it meanwhile).
        k_before = hold_for_a_new_rule(session, dataset.id)
        dataset.reviews_required = k_before
    else:
        k_before = dataset.reviews_required
    for key, value in changes.items():
        setattr(dataset, key, value)
    session.flush()
    # Sent, k re-evaluates every reviewed variant even when unchanged: how variants decided under an older rule
    # (an edit approved by its writer alone before 12-06) come under today's
    moved = reevaluate(session, dataset) if "reviews_required" in changes else {}
    return dataset, moved


def remove(session: Session, name: str) -> None:
    """Delete the dataset with its samples, reviews, jobs and runs, and, once that commits, the files they name
    under the data directory (`dataset_files`)."""
    files = dataset_files(session, get_dataset(session, name))
    delete_dataset(session, name)
    for path in files:
        delete_when_committed(session, path)


def dataset_files(session: Session, dataset: Dataset) -> list[Path]:
    """What a dataset keeps under the data directory: its runs' folders, checkpoints and unfinished attempts
    (training requests hold every training text), its export jobs' files, and its queued imports' uploads."""
    from services.training import attempt_leftovers, runs_root

    paths: list[Path] = []
    for run_id in session.scalars(select(TrainingRun.id).where(TrainingRun.dataset_id == dataset.id)):
        paths += [runs_root() / str(run_id), *attempt_leftovers(run_id)]
    for job_id, kind, params in session.execute(
        select(Job.id, Job.kind, Job.params).where(Job.dataset_id == dataset.id, Job.kind.in_(("export", "import")))
    ):
        if kind == "export":
            # Its published file by name, whether or not it exists yet (an attempt may publish before the
            # deletion commits), and its attempts' files as they are now.
            paths += export_job_files(job_id)
            paths += export_job_parts(job_id)
        elif upload := upload_of(params or {}):
            paths.append(upload)
    return paths  # listed whether or not they exist yet: an attempt may write one before the deletion commits


def upload_of(params: Any) -> Path | None:
    """The upload an import job reads (in the data directory's imports folder), if it names one (params that are
    not a JSON object, a row of another version or written by hand, name none)."""
    name = params.get("upload") if isinstance(params, dict) else None
    return uploads_folder() / Path(name).name if isinstance(name, str) and name else None


def class_balance(session: Session, name: str, user: User | None) -> dict[str, Any]:
    """dataset_stats, and per task the classes nothing trains on, not even an approved text (the imbalance ratio
    is None then: no ratio is infinite in JSON)."""
    stats = dataset_stats(session, dataset_named(session, name, user))
    for info in stats["tasks"].values():
        info["classes_without_train_text"] = [
            label for label, e in info["labels"].items() if not e["train_with_approved"]
        ]
    return stats


def import_upload(
    session: Session, upload: BinaryIO, spec: ImportSpec, filename: str | None, created_by: int | None = None
) -> ImportResult:
    """Import an uploaded file now, in the request's transaction."""
    return import_stream(session, upload, spec, filename=filename, created_by=created_by)


def queue_import(
    reading: Session, engine: Engine, upload: BinaryIO, spec: ImportSpec, filename: str | None, user_id: int
) -> Job:
    """Keep the upload under <data_dir>/imports and queue an `import` job for it (any size; progress in the
    job); the file goes once the job is done with it. The job is committed here, in a transaction of its own:
    keeping a file of gigabytes takes minutes, and on SQLite a writing transaction holds the database's only write
    lock from its first statement, so the copy happens under `reading` (a read-only session: what /import refuses
    at once is refused before the upload is kept) and the write lock is held for the enqueue alone."""
    from services.importing import check_target

    check_target(reading, spec)
    reading.commit()  # ends the read (on SQLite, a snapshot kept for minutes holds back the WAL's checkpoints)
    folder = uploads_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{uuid.uuid4().hex}{Path(filename or '').suffix.lower()[:16]}"
    try:
        with path.open("wb") as out:
            shutil.copyfileobj(upload, out, 1 << 20)
        with session_scope(engine) as writing:
            discard_unless_committed(writing, path)  # a job that never commits leaves no upload behind
            existing, _labels = check_target(writing, spec)  # again: another import may have created it meanwhile
            # The job names its upload inside the data directory, never by the server's path (job params are shown).
            params = {"upload": path.name, "filename": filename, "spec": dataclasses.asdict(spec)}
            return queue.enqueue(
                writing, "import", params, dataset_id=existing.id if existing else None, created_by=user_id
            )
    except BaseException:
        path.unlink(missing_ok=True)  # a failed copy (a full disk), a refusal, a failed commit: nothing is kept
        raise


def uploads_folder() -> Path:
    return get_settings().data_dir.resolve() / "imports"


UPLOAD_GRACE_SECONDS = 3600


def sweep_orphan_uploads(engine: Engine, grace_seconds: float = UPLOAD_GRACE_SECONDS) -> int:
    """Delete the uploads no open import job names, left untouched for `grace_seconds`: what a server killed
    while it stored an upload (or before its job committed), or a worker killed after an import's end committed
    and before the file went, leaves behind (up to 16 GiB each). An upload still arriving is written to as it
    arrives, and its job commits the moment it is complete: the grace keeps both. "Untouched" is read on the
    file system's clock (a probe file's time), never this host's: a data directory shared by several hosts has
    its server's clock. Returns how many went."""
    folder = uploads_folder()
    if not folder.is_dir():
        return 0
    with Session(bind=readonly_engine(engine)) as session, session.begin():  # no write lock while files go
        open_jobs = session.scalars(select(Job.params).where(Job.kind == "import", Job.status.in_(OPEN_JOB_STATUSES)))
        named = {upload.name for params in open_jobs if (upload := upload_of(params))}
    cutoff = file_system_now(folder) - grace_seconds
    removed = 0
    for path in folder.iterdir():
        try:
            if path.name in named or path.name.startswith(".clock-") or not path.is_file():
                continue
            if path.stat().st_mtime > cutoff:
                continue
            path.unlink()
        except OSError as err:  # gone meanwhile (another sweep, the import's own end), or not ours to delete
            if not isinstance(err, FileNotFoundError):
                log.warning("could not delete the orphan upload %s: %s", path.name, err)
            continue
        removed += 1
    return removed


def import_queued(
    engine: Engine,
    params: dict[str, Any],
    *,
    created_by: int | None,
    report: Callable[..., None],
    finish: FinishFn,
    job_id: int | None = None,
) -> dict[str, Any]:
    """The `import` job's work: the uploaded file imported in transactions of its own (import_path); the job
    completes inside the switch. Progress: KiB read of the file (a Postgres integer holds 2 TB of them), then
    the phase. The upload goes once the switch commits (a worker killed the moment after leaves none); when the
    job ends otherwise (rejected, cancelled, failed past retrying, lost), by the import kind's end hook
    (services/jobs.py). The job `job_id` then names the dataset it imported into (a new one too): deleting the
    dataset finds it."""
    path = upload_of(params) or Path(params["path"])
    raw = params["spec"]
    spec = ImportSpec(**{**raw, "split_fractions": tuple(raw["split_fractions"])})
    if not path.is_file():
        raise NotFoundError(f"the uploaded file of this import is gone ({path.name})", field="file")
    with session_scope(readonly_engine(engine)) as session:  # before reading up to 16 GiB; the switch checks again
        check_importer(session, created_by)

    def progress(phase: str, done: int, total: int, rows: int) -> None:
        report(
            done=done // 1024 if phase == "reading" else done,
            total=total // 1024 if phase == "reading" else total,
            phase=phase,
            rows=rows,
            unit="KiB" if phase == "reading" else "rows",
        )

    def switched(session: Session, result: dict[str, Any]) -> None:
        finish(session, result)
        if job_id is not None:
            dataset_id = select(Dataset.id).where(Dataset.name == result["dataset"]).scalar_subquery()
            session.execute(update(Job).where(Job.id == job_id).values(dataset_id=dataset_id))
        delete_when_committed(session, path)

    result = import_path(
        engine, path, spec, filename=params.get("filename"), created_by=created_by, progress=progress, finish=switched
    )
    return result.as_dict()


# An export up to this size is spooled in memory, a larger one to an unnamed temporary file (TMPDIR): each
# download in progress holds at most this much memory beside one batch of rows.
EXPORT_SPOOL_MEMORY = 4 * 1024 * 1024


@dataclass
class Export:
    spool: Callable[[], IO[bytes]]
    filename: str
    media_type: str


def export_stream(session: Session, engine: Engine, name: str, fmt: str, include: str, user: User | None) -> Export:
    """The training view (or the chosen origins and statuses) as a CSV or JSONL download. The request is checked
    now; `spool()` then reads the rows in one read-only snapshot of their own (the request's session ends when
    the route returns) into a temporary file, closes the snapshot and returns the file at its start, so that a
    client that reads slowly, or not at all, holds a file rather than the database: streamed straight from the
    snapshot, a stalled download kept its read transaction open as long as it lasted (SQLite's WAL could not be
    checkpointed and grew meanwhile; Postgres held a transaction open). Memory holds one batch of rows and at
    most EXPORT_SPOOL_MEMORY of the file, whatever the dataset's size; the caller closes the file (which deletes
    it). A HEAD request, which wants the headers alone, never calls `spool`."""
    dataset = dataset_named(session, name, user)
    chosen = parse_include(include)
    check_format(fmt)
    dataset_id = dataset.id

    def spool() -> IO[bytes]:
        out = tempfile.SpooledTemporaryFile(max_size=EXPORT_SPOOL_MEMORY)  # noqa: SIM115 (the caller closes it)
        try:
            with session_scope(snapshot_engine(engine)) as reading:
                current = reading.get(Dataset, dataset_id)
                if current is None:  # deleted since the check: before the first byte, so said (it sent no rows)
                    raise NotFoundError(f"dataset {name!r} not found", field="name")
                for chunk in iter_export(reading, current, chosen, fmt):
                    out.write(chunk.encode())
            out.seek(0)
        except BaseException:
            out.close()
            raise
        return out

    media = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return Export(spool, f"{dataset.name}.{fmt}".replace('"', ""), media)


def queue_export(session: Session, name: str, fmt: str, include: str, user: User) -> Job:
    dataset = dataset_named(session, name, user)
    parse_include(include)
    job = queue.enqueue(
        session,
        "export",
        {"dataset": dataset.name, "format": fmt, "include": include},
        dataset_id=dataset.id,
        created_by=user.id,
    )
    check_other_capacity(session, dataset, user)
    return job


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def checked_output_path(path: Path, noun: str = "the export") -> Path:
    """The file an operator's command (`augloop export -o`, `augloop predict -o`) may write for `path`, through
    its links; refused (422, field `output`) where it is a device, a pipe or a socket, a directory, augloop's
    database or a file of its data directory outside `exports/`, or in a folder that does not exist. `noun`
    names what is written, in the messages."""
    # Through a link, the file it points at is written (the link stays); the file is replaced by a rename, so
    # a device, a pipe or a socket would be replaced too (as root, /dev/full or /dev/stdout): refused.
    try:
        target = path.resolve()
    except (RuntimeError, OSError) as err:  # a link that points at itself (Python 3.11's RuntimeError)
        raise ValidationFailed(f"{path} cannot be followed: {err}", field="output") from None
    try:  # what the path names, through its links: /dev/stdout on a pipe resolves to /proc/N/fd/pipe:[M], a name
        mode: int | None = path.stat().st_mode  # that exists nowhere, and the check below did not see the pipe
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise ValidationFailed(
            f"{path} is not a regular file (a device, a pipe or a socket): {noun} replaces the file it writes;"
            " give a file name, or -o - for the standard output",
            field="output",
        )
    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    # by the files themselves, not their spelling: a case-insensitive file system or a bind mount spells one
    # folder two ways
    inside_data_dir = target.is_relative_to(data_dir) or any(_same_file(folder, data_dir) for folder in target.parents)
    # augloop's own files are not an export's to replace: `-o var/augloop.db` turned the database into a CSV
    # (exit 0), and a run's model or a queued upload went the same way.
    if inside_data_dir and not target.is_relative_to(data_dir / "exports"):
        raise ValidationFailed(
            f"{path} is inside augloop's data directory ({data_dir}: its database, runs and uploads); write "
            f"{noun} elsewhere, or under {data_dir / 'exports'}",
            field="output",
        )
    if target.parent == data_dir / "exports" and is_job_file_name(target.name):
        raise ValidationFailed(
            f"{target.name} is the name of an export job's file there (deleted with its job, or once its dataset"
            f" keeps newer exports); give {noun} another name",
            field="output",
        )
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        database = Path(url.database).resolve()
        files = [database, *(database.with_name(database.name + end) for end in ("-wal", "-shm", "-journal"))]
        if target in files or any(_same_file(target, f) for f in files):
            raise ValidationFailed(f"{path} is augloop's database; give {noun} another name", field="output")
    if not target.parent.is_dir() and not inside_data_dir:  # a mistyped folder is a mistake to say, not to create
        link = f" (where the link {path} points)" if target.parent != path.absolute().parent else ""
        raise ValidationFailed(f"{target.parent} is not a directory{link}; create it first", field="output")
    if target.is_dir():
        raise ValidationFailed(f"{path} is a directory; give a file name", field="output")
    if target.exists() and not target.is_file():
        raise ValidationFailed(
            f"{path} is not a regular file (a device, a pipe or a socket): {noun} replaces the file it writes;"
            " give a file name, or -o - for the standard output",
            field="output",
        )
    return target


def export_to(
    session: Session,
    name: str,
    fmt: str,
    include: str,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
) -> ExportCount:
    """Write the chosen view to `path` (atomically); returns the rows written and left out (near-duplicates of
    val/test texts, services.exporting), and reports `progress(read, total)` as it goes. The operator's (CLI)."""
    from services.exporting import write_export

    chosen = parse_include(include)
    target = checked_output_path(path)
    _remove_stale_parts(target)
    # the operator's own file: a model's whole path, as the database holds it
    return write_export(session, dataset_named(session, name, None), chosen, fmt, target, progress, whole_paths=True)


def reimport_command(session: Session, name: str, file: str) -> tuple[str, list[str]]:
    """The `augloop import` command that recreates dataset `name`'s tasks, label sets and language from its export
    `file` (services.exporting.reimport_command). The operator's (CLI)."""
    return reimport_command_of(dataset_named(session, name, None), file)


STALE_PART_SECONDS = 3600  # an export writing its part rewrites it every few seconds


def _remove_stale_parts(target: Path) -> None:
    """An export killed mid-write (kill -9, a power cut) leaves its part (`<name>.<random>.part`, a copy of the
    dataset so far) beside the file it was writing; the next export to that file removes those untouched for
    an hour (another process writing the same file meanwhile keeps its own)."""
    pattern = re.compile(re.escape(target.name) + r"\.[0-9a-f]{12}\.part")
    cutoff = time.time() - STALE_PART_SECONDS  # the operator's own folder: this host's clock
    for part in target.parent.glob(f"{glob.escape(target.name)}.*.part"):
        try:
            if pattern.fullmatch(part.name) and part.is_file() and part.stat().st_mtime < cutoff:
                part.unlink()
        except OSError as err:  # gone meanwhile, or not ours to delete
            log.warning("could not remove the stale export part %s: %s", part, err)


def export_to_text(session: Session, name: str, fmt: str, include: str, out: TextIO) -> ExportCount:
    """Write the chosen view to a text stream (the CLI's `-o -`: standard output, for a pipe); returns the rows
    written and left out. The operator's (CLI)."""
    chosen = parse_include(include)
    count = ExportCount()
    for chunk in iter_export(session, dataset_named(session, name, None), chosen, fmt, count, whole_paths=True):
        out.write(chunk)
    out.flush()
    return count
