"""Data access for augmentation: labels of sources, the filters' reference data, variant inserts, plans.

Functions flush only: the caller owns the transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, bindparam, case, delete, func, select, update
from sqlalchemy import insert as sa_insert
from sqlalchemy.orm import Session, aliased

from db.chunks import chunked
from db.models import (
    AugmentationPlan,
    Dataset,
    Origin,
    Review,
    ReviewStatus,
    Sample,
    SampleLabel,
    Split,
    utcnow,
)
from db.session import insert_for

REFERENCE_SPLITS = (Split.val.value, Split.test.value)  # what the leak guard keeps training away from


@dataclass
class SourceRow:
    sample_id: int
    text: str
    split: str
    labels: dict[str, str]


@dataclass
class NewVariant:
    parent_id: int
    text: str
    content_hash: str
    method: str
    method_params: dict[str, Any]
    model_name: str | None
    seed: int
    similarity: float | None
    scores: dict[str, Any] = field(default_factory=dict)
    semantic_similarity: float | None = None
    novelty: float | None = None
    label_consistency: float | None = None
    label_flag: bool | None = None


@dataclass
class AutomaticDecision:
    """What the automatic step did to a variant: `outcome` "approved" or "rejected" (a status and an automatic
    review row), or "audit" (stays pending, marked, no review row)."""

    sample_id: int
    outcome: str
    reason: str | None = None
    note: str | None = None


def labels_of(session: Session, sample_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    labels: dict[int, dict[str, str]] = {sid: {} for sid in sample_ids}
    for chunk in chunked(sample_ids):
        for sid, task, label in session.execute(
            select(SampleLabel.sample_id, SampleLabel.task, SampleLabel.label).where(SampleLabel.sample_id.in_(chunk))
        ):
            labels[sid][task] = label
    return labels


def existing_hashes(session: Session, dataset_id: int, digests: Sequence[str]) -> set[str]:
    """Which of these content hashes the dataset holds: one indexed IN-list query per 900 (the unique index on
    (dataset_id, content_hash) answers it), instead of every hash of the dataset in memory."""
    found: set[str] = set()
    for chunk in chunked(list(digests)):
        found.update(
            session.scalars(
                select(Sample.content_hash).where(Sample.dataset_id == dataset_id, Sample.content_hash.in_(chunk))
            )
        )
    return found


def training_rows(session: Session, dataset_id: int, batch: int = 5000) -> Iterator[tuple[int, str]]:
    """What a trainer would learn from now: train-split originals and approved variants (novelty's reference),
    as (id, text) in id order, read `batch` at a time."""
    return _rows_by_id(
        session,
        batch,
        (Sample.id, Sample.text),
        Sample.dataset_id == dataset_id,
        Sample.split == Split.train,
        (Sample.origin == Origin.original) | (Sample.review_status == ReviewStatus.approved),
    )


def reference_rows(session: Session, dataset_id: int, batch: int = 5000) -> Iterator[tuple[int, str, str]]:
    """Val and test samples as (id, split, text), val first then test, each in id order, read `batch` at a time:
    what the leakage guard keeps variants and written texts away from. One split at a time, so that each batch is
    a seek along ix_samples_split_id; with both splits in one query every batch sorted what was left of them
    (a million val/test texts took 54 s to read on SQLite, now 8 s: bench/leak_guard_doors.py)."""
    for split in REFERENCE_SPLITS:
        where = (Sample.dataset_id == dataset_id, Sample.split == split)
        yield from _rows_by_id(session, batch, (Sample.id, Sample.split, Sample.text), *where)


def reference_last_ids(session: Session, dataset_id: int) -> tuple[int | None, ...]:
    """The largest val id and the largest test id of the dataset (None where a split is empty), one index seek
    each. Val/test rows are only ever added (an import), never moved, edited or deleted but with their dataset,
    and ids grow in the order rows become visible (imports into one dataset take turns: services/importing.py),
    so these change exactly when the val/test texts do."""
    # The split written into the SQL (a constant of this module's): Postgres' generic plan (psycopg prepares a
    # statement run often, and the plan then no longer knows which split it reads: a third of the rows, it
    # guessed) took max(id) as a backward walk of the primary key, filtering the split, through every variant
    # newer than the val/test texts (108 ms of each review page at 200,000 variants)
    last = [
        select(func.max(Sample.id))
        .where(Sample.dataset_id == dataset_id, Sample.split == bindparam(None, split, literal_execute=True))
        .scalar_subquery()
        for split in REFERENCE_SPLITS
    ]
    return tuple(session.execute(select(*last)).one())


def train_original_rows(session: Session, dataset_id: int, batch: int = 5000) -> Iterator[tuple[int, str]]:
    """Train-split originals as (id, text), in id order, read `batch` at a time: what a new val/test text must
    not be close to (variants are kept from val/test when a run starts)."""
    where = (Sample.dataset_id == dataset_id, Sample.split == Split.train, Sample.origin == Origin.original)
    return _rows_by_id(session, batch, (Sample.id, Sample.text), *where)


def reference_texts(session: Session, dataset_id: int, batch: int = 5000) -> Iterator[str]:
    """Val and test texts, in id order, read `batch` at a time."""
    return (text for _id, _split, text in reference_rows(session, dataset_id, batch))


def _rows_by_id(session: Session, batch: int, columns: tuple[Any, ...], *where: Any) -> Iterator[Any]:
    """Rows of `columns` (the id first) matching `where`, in id order, `batch` at a time."""
    last_id = 0
    while True:
        rows = (
            session.execute(select(*columns).where(*where, Sample.id > last_id).order_by(Sample.id).limit(batch))
            .tuples()
            .all()
        )
        if not rows:
            return
        yield from rows
        last_id = rows[-1][0]


def texts_by_id(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """The current text of each of these samples that still exists."""
    found: dict[int, str] = {}
    for chunk in chunked(sorted(set(ids))):
        found.update(session.execute(select(Sample.id, Sample.text).where(Sample.id.in_(chunk))).tuples().all())
    return found


def texts_in_order(session: Session, ids: Sequence[int]) -> list[str]:
    """The current text of each of these samples, in their order; "" for one deleted since (nothing to be close
    to): what an index that keeps no texts reads back (core.near_duplicates.ReferenceIndex texts_of)."""
    found = texts_by_id(session, ids)
    return [found.get(i, "") for i in ids]


def insert_variants(
    session: Session, dataset_id: int, job_id: int, variants: Sequence[NewVariant], created_by: int | None = None
) -> tuple[list[int], int]:
    """Insert pending variants with their parents' current labels and split. Returns (ids, skipped): a variant
    whose text is in the dataset already (stored meanwhile by another job, even one committing concurrently:
    the unique index decides, with ON CONFLICT DO NOTHING), or whose parent was deleted, is skipped, not an
    error."""
    parent_split: dict[int, str] = {}
    for chunk in chunked(sorted({v.parent_id for v in variants})):
        parent_split.update(
            session.execute(
                select(Sample.id, Sample.split).where(Sample.id.in_(chunk), Sample.dataset_id == dataset_id)
            )
            .tuples()
            .all()
        )
    labels = labels_of(session, sorted(parent_split))
    rows: dict[str, dict[str, Any]] = {}
    for v in variants:
        if v.parent_id in parent_split and v.content_hash not in rows:
            rows[v.content_hash] = {
                "dataset_id": dataset_id,
                "text": v.text,
                "split": parent_split[v.parent_id],
                "origin": Origin.augmented,
                "content_hash": v.content_hash,
                "parent_id": v.parent_id,
                "method": v.method,
                "method_params": v.method_params,
                "model_name": v.model_name,
                "seed": v.seed,
                "job_id": job_id,
                "scores": v.scores,
                "similarity": v.similarity,
                "semantic_similarity": v.semantic_similarity,
                "novelty": v.novelty,
                "label_consistency": v.label_consistency,
                "label_flag": v.label_flag,
                "review_status": ReviewStatus.pending,
                "created_by": created_by,
            }
    if not rows:
        return [], len(variants)
    statement = (
        insert_for(session)(Sample)
        .on_conflict_do_nothing(index_elements=[Sample.dataset_id, Sample.content_hash])
        .returning(Sample.id, Sample.content_hash)
    )
    inserted = {digest: sid for sid, digest in session.execute(statement, list(rows.values())).tuples()}
    label_rows = [
        {"sample_id": sid, "task": task, "label": label}
        for digest, sid in inserted.items()
        for task, label in labels[rows[digest]["parent_id"]].items()
    ]
    if label_rows:
        session.execute(sa_insert(SampleLabel), label_rows)
    session.flush()
    ids = [inserted[v.content_hash] for v in variants if v.content_hash in inserted]
    return list(dict.fromkeys(ids)), len(variants) - len(inserted)


def delete_inserted(session: Session, dataset_id: int, job_id: int, hashes: Sequence[str]) -> list[int]:
    """Delete what job `job_id` stored in the dataset under the given hashes (in its own, uncommitted
    transaction); their ids."""
    ids = sorted(inserted_ids(session, dataset_id, job_id, hashes).values())
    for chunk in chunked(ids):
        session.execute(delete(Sample).where(Sample.id.in_(chunk)).execution_options(synchronize_session=False))
    return ids


def inserted_ids(session: Session, dataset_id: int, job_id: int, hashes: Sequence[str]) -> dict[str, int]:
    """content hash → sample id, for the given hashes that job `job_id` stored in the dataset."""
    found: dict[str, int] = {}
    for chunk in chunked(list(hashes)):
        found.update(
            {
                digest: sid
                for sid, digest in session.execute(
                    select(Sample.id, Sample.content_hash).where(
                        Sample.dataset_id == dataset_id, Sample.job_id == job_id, Sample.content_hash.in_(chunk)
                    )
                ).tuples()
            }
        )
    return found


def record_automatic_decisions(session: Session, reviewer_id: int, decisions: Sequence[AutomaticDecision]) -> None:
    """Apply automatic outcomes to pending variants nobody voted on yet: the status moves (approved, rejected)
    with an automatic review row signed by `reviewer_id`, or the variant is marked for audit. A variant a
    person decided meanwhile keeps that decision (the update matches pending rows without votes only)."""
    now = utcnow()
    by_outcome: dict[str, list[AutomaticDecision]] = {}
    for d in decisions:
        by_outcome.setdefault(d.outcome, []).append(d)
    for outcome, group in by_outcome.items():
        for chunk in chunked(group):
            ids = [d.sample_id for d in chunk]
            rows = dict(
                session.execute(
                    select(Sample.id, Sample.version)
                    .where(Sample.id.in_(ids), Sample.review_status == ReviewStatus.pending, Sample.review_count == 0)
                    .with_for_update()
                )
                .tuples()
                .all()
            )
            if not rows:
                continue
            # An audit mark leaves the row as it was otherwise: a changed updated_at beside the other pending
            # variants' (created and updated together) told the people auditing which ones the rule would approve.
            values: dict[str, Any] = {"auto_decision": outcome, "updated_at": Sample.updated_at}  # (not onupdate's)
            if outcome != "audit":
                values.update(review_status=outcome, version=Sample.version + 1, updated_at=now)
            session.execute(
                update(Sample)
                .where(Sample.id.in_(list(rows)))
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if outcome == "audit":
                continue
            texts = texts_by_id(session, list(rows))
            session.execute(
                sa_insert(Review),
                [
                    {
                        "sample_id": d.sample_id,
                        "user_id": reviewer_id,
                        "decision": "approve" if outcome == "approved" else "reject",
                        "reason": d.reason,
                        "note": d.note,
                        "text_before": texts[d.sample_id],
                        "text_after": texts[d.sample_id],
                        "version_seen": rows[d.sample_id],
                        "automatic": True,
                        "created_at": now,
                    }
                    for d in chunk
                    if d.sample_id in rows
                ],
            )
    session.flush()


def train_original_ids(session: Session, dataset_id: int) -> list[int]:
    """The ids of the dataset's train-split originals, in id order."""
    return list(
        session.scalars(
            select(Sample.id)
            .where(Sample.dataset_id == dataset_id, Sample.split == Split.train, Sample.origin == Origin.original)
            .order_by(Sample.id)
        )
    )


def train_label_rows(session: Session, dataset: Dataset) -> list[tuple[int, dict[str, str]]]:
    """(sample id, labels) of every train-split original: the planner's sources."""
    labels: dict[int, dict[str, str]] = {}
    for sid, task, label in session.execute(
        select(Sample.id, SampleLabel.task, SampleLabel.label)
        .join(SampleLabel, SampleLabel.sample_id == Sample.id)
        .where(Sample.dataset_id == dataset.id, Sample.split == Split.train, Sample.origin == Origin.original)
    ):
        labels.setdefault(sid, {})[task] = label
    return sorted(labels.items())


def variants_per_source(session: Session, dataset: Dataset) -> dict[int, int]:
    """Per source (sample id): how many variants it has, whatever their review."""
    rows = session.execute(
        select(Sample.parent_id, func.count())
        .where(Sample.dataset_id == dataset.id, Sample.parent_id.is_not(None))
        .group_by(Sample.parent_id)
    )
    return {int(parent): int(n) for parent, n in rows if parent is not None}


def variant_counts(session: Session, dataset: Dataset) -> dict[str, dict[str, dict[str, int]]]:
    """Train-split variants per task → label → review status, as far as training goes: an approved variant of
    a submitted text still under review counts as pending (its labels are the submitter's until someone has
    seen them), any of a rejected submission as rejected (it never trains); a plan counted them as approved."""
    parent = aliased(Sample)
    submitted = parent.origin == Origin.submitted
    counted = case(
        (submitted & (parent.review_status == ReviewStatus.rejected), ReviewStatus.rejected.value),
        (
            submitted
            & (parent.review_status != ReviewStatus.approved)
            & (Sample.review_status == ReviewStatus.approved),
            ReviewStatus.pending.value,
        ),
        else_=Sample.review_status,
    )
    out: dict[str, dict[str, dict[str, int]]] = {}
    for task, label, status, n in session.execute(
        select(SampleLabel.task, SampleLabel.label, counted, func.count())
        .join(Sample, Sample.id == SampleLabel.sample_id)
        .outerjoin(parent, parent.id == Sample.parent_id)
        .where(Sample.dataset_id == dataset.id, Sample.split == Split.train, Sample.origin != Origin.original)
        .group_by(SampleLabel.task, SampleLabel.label, counted)
    ):
        out.setdefault(task, {}).setdefault(label, {})[status or "none"] = n
    return out


def counted_variants(counts: dict[str, dict[str, dict[str, int]]], include_pending: bool) -> dict[str, Counter[str]]:
    statuses = {ReviewStatus.approved, ReviewStatus.pending} if include_pending else {ReviewStatus.approved}
    return {
        task: Counter({label: sum(n for s, n in by.items() if s in statuses) for label, by in labels.items()})
        for task, labels in counts.items()
    }


def create_plan(
    session: Session, dataset: Dataset, params: dict[str, Any], plan: dict[str, Any], created_by: int | None
) -> AugmentationPlan:
    row = AugmentationPlan(dataset_id=dataset.id, params=params, plan=plan, job_ids=[], created_by=created_by)
    session.add(row)
    session.flush()
    return row


def plan_queued() -> ColumnElement[bool]:
    """A plan that queued jobs; a preview is stored too, with none."""
    return func.json_array_length(AugmentationPlan.job_ids) > 0


def list_plans(session: Session, dataset: Dataset, limit: int = 50, queued: bool = False) -> list[AugmentationPlan]:
    """The dataset's plans, newest first; `queued`: only those that queued jobs."""
    return list(
        session.scalars(
            select(AugmentationPlan)
            .where(AugmentationPlan.dataset_id == dataset.id, *([plan_queued()] if queued else []))
            .order_by(AugmentationPlan.id.desc())
            .limit(limit)
        )
    )
