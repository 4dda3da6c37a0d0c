"""Data access for augmentation: labels of sources, the filters' reference data, variant inserts, plans.

Functions flush only: the caller owns the transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.chunks import chunked
from db.models import AugmentationPlan, Dataset, Origin, ReviewStatus, Sample, SampleLabel, Split


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


def labels_of(session: Session, sample_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    labels: dict[int, dict[str, str]] = {sid: {} for sid in sample_ids}
    for chunk in chunked(sample_ids):
        for sid, task, label in session.execute(
            select(SampleLabel.sample_id, SampleLabel.task, SampleLabel.label).where(
                SampleLabel.sample_id.in_(chunk)
            )
        ):
            labels[sid][task] = label
    return labels


def existing_hashes(session: Session, dataset_id: int, digests: Sequence[str]) -> set[str]:
    """Which of these content hashes the dataset holds: one indexed IN-list query per 900 (the unique index on
    (dataset_id, content_hash) answers it), instead of every hash of the dataset in memory."""
    found: set[str] = set()
    for chunk in chunked(list(digests)):
        found.update(session.scalars(
            select(Sample.content_hash).where(Sample.dataset_id == dataset_id, Sample.content_hash.in_(chunk))
        ))
    return found


def reference_texts(session: Session, dataset_id: int, batch: int = 5000) -> Iterator[str]:
    """Val and test texts, in id order, read `batch` at a time: what the leakage guard keeps variants away
    from."""
    last_id = 0
    while True:
        rows = session.execute(
            select(Sample.id, Sample.text)
            .where(Sample.dataset_id == dataset_id, Sample.split.in_([Split.val, Split.test]), Sample.id > last_id)
            .order_by(Sample.id)
            .limit(batch)
        ).tuples().all()
        if not rows:
            return
        yield from (text for _id, text in rows)
        last_id = rows[-1][0]


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
                "dataset_id": dataset_id, "text": v.text, "split": parent_split[v.parent_id],
                "origin": Origin.augmented, "content_hash": v.content_hash, "parent_id": v.parent_id,
                "method": v.method, "method_params": v.method_params, "model_name": v.model_name,
                "seed": v.seed, "job_id": job_id, "scores": v.scores, "similarity": v.similarity,
                "review_status": ReviewStatus.pending, "created_by": created_by,
            }
    if not rows:
        return [], len(variants)
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(Sample)
        .on_conflict_do_nothing(index_elements=[Sample.dataset_id, Sample.content_hash])
        .returning(Sample.id, Sample.content_hash)
    )
    inserted = dict(
        (digest, sid) for sid, digest in session.execute(statement, list(rows.values())).tuples()
    )
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


def variant_counts(session: Session, dataset: Dataset) -> dict[str, dict[str, dict[str, int]]]:
    """Train-split variants per task → label → review status."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for task, label, status, n in session.execute(
        select(SampleLabel.task, SampleLabel.label, Sample.review_status, func.count())
        .join(Sample, Sample.id == SampleLabel.sample_id)
        .where(Sample.dataset_id == dataset.id, Sample.split == Split.train, Sample.origin != Origin.original)
        .group_by(SampleLabel.task, SampleLabel.label, Sample.review_status)
    ):
        out.setdefault(task, {}).setdefault(label, {})[status or "none"] = n
    return out


def counted_variants(
    counts: dict[str, dict[str, dict[str, int]]], include_pending: bool
) -> dict[str, Counter[str]]:
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


def list_plans(session: Session, dataset: Dataset, limit: int = 50) -> list[AugmentationPlan]:
    return list(
        session.scalars(
            select(AugmentationPlan)
            .where(AugmentationPlan.dataset_id == dataset.id)
            .order_by(AugmentationPlan.id.desc())
            .limit(limit)
        )
    )
