"""Training runs and the model-in-the-loop writes: label-consistency scores and pseudo-label samples.

Functions only flush; the caller owns the transaction (and holds none while a model trains or predicts).

Pseudo-labels are new sample rows, never a relabelled original: the unlabelled text stays as imported (origin
`original`, no labels) and a child row (`origin='pseudo_label'`, `parent_id` = the unlabelled sample,
`review_status='pending'`, split `train`) carries the model's labels into the review queue. The child's text
equals its parent's, so its `content_hash` is derived from the parent's (sha256 of "pseudo_label:" + parent
hash) instead of the text: the (dataset, content_hash) uniqueness then still holds, and it guarantees at most
one pseudo-label per unlabelled text. Only train-split texts are pseudo-labelled (val/test never train).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, exists, func, select, update
from sqlalchemy.orm import Session, aliased

from core.errors import NotFoundError
from db.augmentation import labels_of
from db.chunks import chunked
from db.models import (
    OPEN_JOB_STATUSES,
    Dataset,
    Job,
    JobStatus,
    Origin,
    ReviewStatus,
    Sample,
    SampleLabel,
    Split,
    TrainingRun,
    utcnow,
)

RUN_KINDS = ("single", "tfidf", "ensemble")


def get_run(session: Session, run_id: int, *, field: str = "run_id") -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise NotFoundError(f"training run {run_id} not found", field=field)
    return run


def list_runs(
    session: Session,
    dataset: Dataset | None = None,
    kind: str | None = None,
    statuses: Sequence[str] = (),
    limit: int = 100,
    offset: int = 0,
    project_ids: set[int] | None = None,
) -> list[TrainingRun]:
    query = select(TrainingRun)
    if project_ids is not None:
        query = query.where(TrainingRun.dataset_id.in_(select(Dataset.id).where(Dataset.project_id.in_(project_ids))))
    if dataset is not None:
        query = query.where(TrainingRun.dataset_id == dataset.id)
    if kind:
        query = query.where(TrainingRun.kind == kind)
    if statuses:
        query = query.where(TrainingRun.status.in_(statuses))
    return list(session.scalars(query.order_by(TrainingRun.id.desc()).limit(limit).offset(offset)))


def finished_runs_newest_first(session: Session, dataset_id: int, limit: int = 50) -> list[TrainingRun]:
    """The dataset's finished runs and ensembles, the most recently finished first (the candidates to score its
    new variants)."""
    return list(
        session.scalars(
            select(TrainingRun)
            .where(TrainingRun.dataset_id == dataset_id, TrainingRun.status == JobStatus.succeeded)
            .order_by(TrainingRun.finished_at.desc(), TrainingRun.id.desc())
            .limit(limit)
        )
    )


def create_run(
    session: Session,
    dataset: Dataset,
    config: dict[str, Any],
    *,
    name: str = "",
    kind: str = "single",
    member_ids: list[int] | None = None,
    created_by: int | None = None,
    status: str = JobStatus.queued,
) -> TrainingRun:
    run = TrainingRun(
        dataset_id=dataset.id,
        name=name,
        kind=kind,
        status=status,
        config=config,
        member_ids=member_ids or [],
        snapshot=[],
        curve=[],
        metrics={},
        created_by=created_by,
    )
    session.add(run)
    session.flush()
    return run


def mark_running(session: Session, run_id: int, job_id: int | None) -> TrainingRun:
    run = get_run(session, run_id)
    run.status = JobStatus.running
    run.job_id = job_id if job_id is not None else run.job_id
    run.error = None
    run.curve = []
    session.flush()
    return run


def record_epoch(session: Session, run_id: int, entry: dict[str, Any]) -> None:
    run = get_run(session, run_id)
    run.curve = [*run.curve, entry]  # a new list: JSON columns do not track in-place changes
    session.flush()


def restore_curve(session: Session, run_id: int, curve: list[dict[str, Any]]) -> None:
    """A resumed run's epochs so far (from its checkpoint), in place of what this attempt recorded."""
    run = get_run(session, run_id)
    run.curve = list(curve)
    session.flush()


def finish_run(
    session: Session,
    run_id: int,
    *,
    metrics: dict[str, Any],
    curve: list[Any],
    snapshot_path: str,
    snapshot_size: int,
    snapshot_digest: str | None = None,
    artifact_dir: str,
) -> TrainingRun:
    run = get_run(session, run_id)
    run.status = JobStatus.succeeded
    run.metrics = metrics
    run.curve = curve
    run.snapshot = []
    run.snapshot_path = snapshot_path
    run.snapshot_size = snapshot_size
    run.snapshot_digest = snapshot_digest
    run.artifact_dir = artifact_dir
    run.error = None
    run.finished_at = utcnow()
    session.flush()
    return run


def end_run(session: Session, run_id: int, status: str, error: str | None = None) -> None:
    """Record a failed or cancelled run, or (status queued) one whose job will be retried."""
    session.execute(
        update(TrainingRun)
        .where(TrainingRun.id == run_id)
        .values(status=status, error=error, finished_at=None if status == JobStatus.queued else utcnow())
        .execution_options(synchronize_session=False)
    )


def runs_of_jobs(session: Session, job_ids: list[int]) -> list[TrainingRun]:
    return list(session.scalars(select(TrainingRun).where(TrainingRun.job_id.in_(job_ids))))


def end_runs_of_jobs(session: Session, job_ids: list[int], status: str, error: str, now: datetime) -> list[int]:
    """End the still-open runs of these jobs; returns their ids."""
    return list(
        session.scalars(
            update(TrainingRun)
            .where(TrainingRun.job_id.in_(job_ids), TrainingRun.status.in_(OPEN_JOB_STATUSES))
            .values(status=status, finished_at=now, error=error)
            .returning(TrainingRun.id)
            .execution_options(synchronize_session=False)
        )
    )


# Label-consistency scores -------------------------------------------------------------------------


# A run's label-model scores are written in batches ahead of its record: where one replaced another model's
# score, that score is kept inside the new entry under this key, with its consistency and flag, until the run is
# recorded (keep_replaced_scores drops it then); a run that ends unfinished gives it back (withdraw_scores).
REPLACED = "replaced"


def _replaced_entry(
    run_id: int, entry: dict[str, Any] | None, consistency: float | None, flag: bool | None, job_id: int | None = None
) -> dict[str, Any] | None:
    """What a new score of `run_id` keeps of the `label_model` entry it replaces: the entry with its consistency
    and flag; a score of the same writer (a retried attempt) carries over what that one kept. A rescoring job
    (`job_id`: a person's choice of a finished model) is its own writer: its model's earlier score (automatic,
    or another choice of it) is kept like any other."""
    if not entry:
        return None
    if entry.get("run_id") == run_id and entry.get("job_id") == job_id:
        kept: dict[str, Any] | None = entry.get(REPLACED)
        return kept
    # the whole entry, with what it replaced in turn: another run not recorded yet (runs score in parallel, as a
    # request's seeds do on several workers) may end unfinished too, and then the score before it comes back
    return {**entry, "label_consistency": consistency, "label_flag": flag}


def _tagged_rows(session: Session, run_ids: list[int]) -> list[Any]:
    """(id, scores) of the samples whose label-model entry these runs wrote, in their datasets, locked until the
    caller's write (another scorer's write waits, and is judged on what this one leaves)."""
    datasets = select(TrainingRun.dataset_id).where(TrainingRun.id.in_(run_ids))
    return _rows_tagged(session, "run_id", run_ids, datasets)


def _job_rows(session: Session, job_ids: list[int]) -> list[Any]:
    """(id, scores) of the samples whose label-model entry these rescoring jobs wrote, in their datasets, locked
    until the caller's write (as _tagged_rows)."""
    return _rows_tagged(session, "job_id", job_ids, select(Job.dataset_id).where(Job.id.in_(job_ids)))


def _rows_tagged(session: Session, key: str, ids: list[int], datasets: Any) -> list[Any]:
    """(id, scores) of the samples of `datasets` whose label-model entry has `key` in `ids`, locked."""
    tagged = Sample.scores["label_model"][key].as_integer()
    return list(
        session.execute(
            select(Sample.id, Sample.scores)
            .where(Sample.dataset_id.in_(datasets), Sample.scores.is_not(None), tagged.in_(ids))
            .order_by(Sample.id)
            .with_for_update()
        ).all()
    )


def withdraw_scores(session: Session, run_ids: list[int]) -> int:
    """Remove the label-model scores these runs wrote (consistency, flag and the `label_model` entry, other keys
    of `scores` kept) from the samples of their datasets, giving back the score each replaced (another model's,
    with its consistency and flag); returns how many samples changed."""
    if not run_ids:
        return 0
    return _give_back(session, _tagged_rows(session, run_ids), set(run_ids), set())


def withdraw_job_scores(session: Session, job_ids: list[int]) -> int:
    """withdraw_scores for the scores these rescoring jobs wrote (tagged with the job: their model's own earlier
    scores, automatic or chosen before, are not theirs), giving back the score each replaced."""
    if not job_ids:
        return 0
    return _give_back(session, _job_rows(session, job_ids), set(), set(job_ids))


def _give_back(session: Session, rows: list[Any], withdrawn_runs: set[int], withdrawn_jobs: set[int]) -> int:
    if not rows:
        return 0
    chains = {sid: list(_chain(held["label_model"])) for sid, held in rows}
    named = {entry.get("run_id") for chain in chains.values() for entry in chain} - {None}
    by_jobs = {entry.get("job_id") for chain in chains.values() for entry in chain} - {None}
    unfinished = (JobStatus.failed, JobStatus.cancelled)
    ended_runs = withdrawn_runs | set(
        session.scalars(select(TrainingRun.id).where(TrainingRun.id.in_(named), TrainingRun.status.in_(unfinished)))
    )
    ended_jobs = withdrawn_jobs | set(
        session.scalars(select(Job.id).where(Job.id.in_(by_jobs), Job.status.in_(unfinished)))
    )

    def ended(entry: dict[str, Any]) -> bool:
        # a rescoring job's score stands or goes with its job (its model is a finished run), a run's with its run
        job_id = entry.get("job_id")
        return job_id in ended_jobs if job_id is not None else entry.get("run_id") in ended_runs

    params = []
    for sid, held in rows:
        kept = {k: v for k, v in held.items() if k != "label_model"}
        # the first score down the chain whose writer did not end unfinished (recorded, or still running)
        before: dict[str, Any] = dict(next((e for e in chains[sid] if not ended(e)), {}))
        consistency, flag = before.pop("label_consistency", None), before.pop("label_flag", None)
        if before:
            kept["label_model"] = before
        params.append({"sid": sid, "kept": kept, "consistency": consistency, "flag": flag})
    return _set_label_model_columns(session, params)


def _set_label_model_columns(session: Session, params: list[dict[str, Any]]) -> int:
    """One executemany: each {sid, kept (the whole scores), consistency, flag}; returns the rows written."""
    table = cast("Table", Sample.__table__)
    statement = (
        update(table)
        .where(table.c.id == bindparam("sid"))
        .values(
            label_consistency=bindparam("consistency"),
            label_flag=bindparam("flag"),
            scores=bindparam("kept", type_=table.c.scores.type),
        )
    )
    return (session.connection().execute(statement, params).rowcount or 0) if params else 0


def drop_label_model_scores(session: Session, dataset_id: int) -> int:
    """Every label-model score of the dataset's samples (with their consistency and flag) goes, whichever run
    wrote it; the other keys of `scores` stay. Returns how many samples held one."""
    scored = session.execute(
        select(Sample.id, Sample.scores).where(
            Sample.dataset_id == dataset_id, Sample.scores["label_model"]["run_id"].as_integer().is_not(None)
        )
    ).all()
    _set_label_model_columns(
        session,
        [
            {
                "sid": sid,
                "kept": {k: v for k, v in held.items() if k != "label_model"},
                "consistency": None,
                "flag": None,
            }
            for sid, held in scored
        ],
    )
    return len(scored)


def _chain(entry: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """A label-model entry, then each it replaced, newest first (the first is the withdrawn run's own: its
    consistency and flag are the row's columns, not in the entry)."""
    while entry:
        yield entry
        entry = entry.get(REPLACED)


def keep_replaced_scores(session: Session, run_id: int) -> int:
    """Once the run is recorded its scores stand: drop the scores they replaced, kept for a withdrawal."""
    return _drop_replaced(session, _tagged_rows(session, [run_id]))


def keep_job_replaced_scores(session: Session, job_id: int) -> int:
    """keep_replaced_scores for a rescoring job that succeeds (in the transaction of its completion)."""
    return _drop_replaced(session, _job_rows(session, [job_id]))


def _drop_replaced(session: Session, tagged: list[Any]) -> int:
    rows = [(sid, held) for sid, held in tagged if REPLACED in held["label_model"]]
    if not rows:
        return 0
    table = cast("Table", Sample.__table__)
    statement = (
        update(table).where(table.c.id == bindparam("sid")).values(scores=bindparam("kept", type_=table.c.scores.type))
    )
    params = [
        {
            "sid": sid,
            "kept": {
                **held,
                "label_model": {k: v for k, v in held["label_model"].items() if k != REPLACED},
            },
        }
        for sid, held in rows
    ]
    return session.connection().execute(statement, params).rowcount or 0


@dataclass
class PendingVariant:
    id: int
    text: str
    labels: dict[str, str]


def count_pending_variants(session: Session, dataset_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Sample).where(*_pending(dataset_id))) or 0


def _pending(dataset_id: int) -> tuple[Any, ...]:
    return (
        Sample.dataset_id == dataset_id,
        Sample.origin != Origin.original,
        Sample.review_status == ReviewStatus.pending,
    )


def pending_variants(
    session: Session, dataset_id: int, *, after_id: int = 0, limit: int | None = None
) -> list[PendingVariant]:
    """Pending variants (and pseudo-labels, submissions) in id order after `after_id`: a page of them."""
    query = select(Sample.id, Sample.text).where(*_pending(dataset_id), Sample.id > after_id)
    rows = session.execute(query.order_by(Sample.id).limit(limit)).tuples().all()
    labels = labels_of(session, [sid for sid, _t in rows])
    return [PendingVariant(sid, text, labels[sid]) for sid, text in rows]


@dataclass
class ConsistencyScore:
    sample_id: int
    text: str  # the text that was scored
    consistency: float | None
    flag: bool | None
    probs: dict[str, dict[str, float]]
    unheeded: dict[str, str] = field(default_factory=dict)  # task → another label, given without a flag
    flagged: list[str] = field(default_factory=list)  # the tasks that flag


def apply_consistency_scores(
    session: Session,
    run_id: int,
    scores: list[ConsistencyScore],
    *,
    scorer: dict[str, Any] | None = None,
    replace_if: Callable[[dict[str, Any] | None], bool] | None = None,
    keep_replaced: bool = False,
) -> int:
    """Write scores to variants still pending with the text that was scored (an edit since then made the score
    stale; a vote did not); other keys of `scores` (similarity details...) are kept. `scorer` describes the
    model (stored beside the probabilities); `replace_if(current label_model entry or None)` says whether a
    variant's existing score may be replaced; `keep_replaced`: a run not yet recorded keeps the score it replaces
    inside its own (REPLACED), for withdraw_scores to give back. Returns how many variants were written.

    The rows are locked (FOR UPDATE, in id order; SQLite's BEGIN IMMEDIATE already holds the write lock) from
    the read of their current scores to the write, so two scorers finishing together decide one after the
    other, each on what the other committed: a better score is never overwritten by one that read the row
    before it was written. Set-based: one locking SELECT per chunk of ids and one executemany UPDATE, so a
    caller that commits batch by batch holds the locks for milliseconds at a time."""
    current: dict[int, dict[str, Any] | None] = {}
    replaced: dict[int, dict[str, Any] | None] = {}
    for chunk in chunked(sorted({score.sample_id for score in scores})):
        for sid, held, consistency, flag in session.execute(
            select(Sample.id, Sample.scores, Sample.label_consistency, Sample.label_flag)
            .where(Sample.id.in_(chunk), Sample.review_status == ReviewStatus.pending)
            .order_by(Sample.id)
            .with_for_update()
        ):
            current[sid] = held
            if keep_replaced:
                replaced[sid] = _replaced_entry(
                    run_id, (held or {}).get("label_model"), consistency, flag, (scorer or {}).get("job_id")
                )
    rows = [
        {
            "sid": score.sample_id,
            "scored_text": score.text,
            "consistency": score.consistency,
            "flag": score.flag,
            "merged": {
                **(current[score.sample_id] or {}),
                "label_model": {
                    "run_id": run_id,
                    **(scorer or {}),
                    "probs": score.probs,
                    "flagged": score.flagged,
                    **({"unheeded": score.unheeded} if score.unheeded else {}),
                    **({REPLACED: kept} if (kept := replaced.get(score.sample_id)) else {}),
                },
            },
        }
        for score in scores
        if score.sample_id in current
        and (replace_if is None or replace_if((current[score.sample_id] or {}).get("label_model")))
    ]
    if not rows:
        return 0
    table = cast("Table", Sample.__table__)  # declared as a FromClause; a mapped class over one table
    statement = (
        update(table)
        .where(
            table.c.id == bindparam("sid"),
            table.c.text == bindparam("scored_text"),
            table.c.review_status == ReviewStatus.pending.value,
        )
        .values(
            label_consistency=bindparam("consistency"),
            label_flag=bindparam("flag"),
            scores=bindparam("merged", type_=table.c.scores.type),
        )
    )
    return session.connection().execute(statement, rows).rowcount or 0


# Pseudo-labels ------------------------------------------------------------------------------------


def pseudo_label_hash(parent_hash: str) -> str:
    return hashlib.sha256(f"pseudo_label:{parent_hash}".encode()).hexdigest()


@dataclass
class UnlabelledText:
    id: int
    text: str
    content_hash: str


def unlabelled_texts(session: Session, dataset_id: int, limit: int | None = None) -> list[UnlabelledText]:
    """Train-split originals without any label that have no pseudo-label child yet (whatever its status)."""
    child = aliased(Sample)
    query = (
        select(Sample.id, Sample.text, Sample.content_hash)
        .where(
            Sample.dataset_id == dataset_id,
            Sample.origin == Origin.original,
            Sample.split == Split.train,
            ~exists().where(SampleLabel.sample_id == Sample.id),
            ~exists().where(child.parent_id == Sample.id, child.origin == Origin.pseudo_label),
        )
        .order_by(Sample.id)
    )
    if limit:
        query = query.limit(limit)
    return [UnlabelledText(*row) for row in session.execute(query).tuples()]


@dataclass
class PseudoLabel:
    parent_id: int
    parent_hash: str
    text: str
    labels: dict[str, str]
    confidence: float
    probs: dict[str, dict[str, float]]


def add_pseudo_labels(
    session: Session,
    dataset: Dataset,
    items: list[PseudoLabel],
    *,
    model_id: int,
    model_name: str,
    threshold: float,
    job_id: int | None,
    created_by: int | None = None,
) -> int:
    """Insert pending pseudo-label samples (labels of the dataset's tasks); a text labelled meanwhile (by a
    concurrent job) is skipped."""
    hashes = [pseudo_label_hash(i.parent_hash) for i in items]
    taken: set[str] = set()
    for chunk in chunked(hashes):
        taken.update(
            session.scalars(
                select(Sample.content_hash).where(Sample.dataset_id == dataset.id, Sample.content_hash.in_(chunk))
            )
        )
    created = 0
    for item, digest in zip(items, hashes, strict=True):
        if digest in taken:
            continue
        sample = Sample(
            dataset_id=dataset.id,
            text=item.text,
            split=Split.train,
            origin=Origin.pseudo_label,
            content_hash=digest,
            parent_id=item.parent_id,
            method="pseudo_label",
            method_params={"model_id": model_id, "threshold": threshold},
            model_name=model_name,
            job_id=job_id,
            created_by=created_by,
            scores={"label_model": {"run_id": model_id, "probs": item.probs}},
            label_consistency=item.confidence,
            label_flag=False,
            review_status=ReviewStatus.pending,
        )
        sample.labels_rows = [SampleLabel(task=t, label=v) for t, v in item.labels.items()]
        session.add(sample)
        created += 1
    session.flush()
    return created
