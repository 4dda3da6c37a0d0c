"""Data access for augmentation: sources, the filters' reference data, variant inserts, plans.

Functions flush only: the caller owns the transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from augloop.settings import get_settings
from db.errors import ConflictError, NotFoundError, ValidationFailed
from db.models import AugmentationPlan, Dataset, Origin, ReviewStatus, Sample, SampleLabel, Split
from db.textnorm import content_hash


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


def _labels_of(session: Session, sample_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    labels: dict[int, dict[str, str]] = {sid: {} for sid in sample_ids}
    for start in range(0, len(sample_ids), 900):  # stay under SQLite's bound-parameter limit
        chunk = list(sample_ids[start : start + 900])
        for sid, task, label in session.execute(
            select(SampleLabel.sample_id, SampleLabel.task, SampleLabel.label).where(
                SampleLabel.sample_id.in_(chunk)
            )
        ):
            labels[sid][task] = label
    return labels


def load_sources(session: Session, dataset: Dataset, sample_ids: Sequence[int]) -> list[SourceRow]:
    """The given samples as augmentation sources. Only train-split originals qualify: augmenting a val/test
    text would leak it into training, and augmenting a variant compounds its drift."""
    ids = list(dict.fromkeys(sample_ids))
    rows: dict[int, tuple[str, str, str, int]] = {}
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        for sid, text, split, origin, ds in session.execute(
            select(Sample.id, Sample.text, Sample.split, Sample.origin, Sample.dataset_id).where(
                Sample.id.in_(chunk)
            )
        ):
            rows[sid] = (text, split, origin, ds)
    missing = [sid for sid in ids if sid not in rows or rows[sid][3] != dataset.id]
    if missing:
        raise NotFoundError(
            f"sample(s) {missing[:10]} not found in dataset {dataset.name!r}", field="sample_ids"
        )
    wrong = [sid for sid in ids if rows[sid][1] != Split.train or rows[sid][2] != Origin.original]
    if wrong:
        raise ValidationFailed(
            f"sample(s) {wrong[:10]} are not train-split originals: only those are augmented "
            "(val/test texts would leak into training)",
            field="sample_ids",
        )
    labels = _labels_of(session, ids)
    return [SourceRow(sid, rows[sid][0], rows[sid][1], labels[sid]) for sid in ids]


def import_free_texts(
    session: Session, dataset: Dataset, items: Sequence[tuple[str, dict[str, str]]]
) -> list[int]:
    """Sample ids for free texts sent to POST /augment: an existing train original with the same normalised
    text is reused; a new text becomes a train-split original with its labels."""
    tasks = {t["name"]: list(t["labels"]) for t in dataset.tasks}
    hashes = [content_hash(text) for text, _ in items]
    existing: dict[str, tuple[int, str, str]] = {}
    for start in range(0, len(hashes), 900):
        chunk = hashes[start : start + 900]
        for sid, digest, split, origin in session.execute(
            select(Sample.id, Sample.content_hash, Sample.split, Sample.origin).where(
                Sample.dataset_id == dataset.id, Sample.content_hash.in_(chunk)
            )
        ):
            existing[digest] = (sid, split, origin)
    ids: list[int] = []
    created: dict[str, int] = {}
    found_labels = _labels_of(session, [e[0] for e in existing.values()])
    max_chars = get_settings().max_text_chars
    for i, ((text, labels), digest) in enumerate(zip(items, hashes, strict=True)):
        if not text.strip():
            raise ValidationFailed(f"texts[{i}] is empty", field=f"texts.{i}.text")
        if len(text) > max_chars:
            raise ValidationFailed(
                f"texts[{i}] is {len(text)} characters; the maximum is {max_chars}", field=f"texts.{i}.text"
            )
        for task, label in labels.items():
            if task not in tasks:
                raise ValidationFailed(
                    f"texts[{i}]: unknown task {task!r} (tasks: {list(tasks)})", field=f"texts.{i}.labels"
                )
            if label not in tasks[task]:
                raise ValidationFailed(
                    f"texts[{i}]: unknown label {label!r} for task {task!r} (labels: {tasks[task]})",
                    field=f"texts.{i}.labels",
                )
        if digest in created:
            ids.append(created[digest])
            continue
        if digest in existing:
            sid, split, origin = existing[digest]
            if split != Split.train or origin != Origin.original:
                raise ValidationFailed(
                    f"texts[{i}] is already sample {sid} ({origin}, split {split}): only "
                    "train-split originals are augmented",
                    field=f"texts.{i}.text",
                )
            stored = found_labels.get(sid, {})
            clash = {t: (stored.get(t), y) for t, y in labels.items() if stored.get(t) != y}
            if clash:
                raise ConflictError(
                    f"texts[{i}] is already sample {sid} with other labels "
                    f"({', '.join(f'{t}: {a!r} vs {b!r}' for t, (a, b) in clash.items())})",
                    field=f"texts.{i}.labels",
                )
            ids.append(sid)
            continue
        if not labels:
            raise ValidationFailed(
                f"texts[{i}] is new to the dataset and has no labels: a variant copies its "
                "source's labels, so give at least one",
                field=f"texts.{i}.labels",
            )
        sample = Sample(
            dataset_id=dataset.id, text=text, split=Split.train, origin=Origin.original, content_hash=digest
        )
        sample.labels_rows = [SampleLabel(task=t, label=y) for t, y in labels.items()]
        session.add(sample)
        session.flush()
        created[digest] = sample.id
        ids.append(sample.id)
    return ids


def dataset_hashes(session: Session, dataset_id: int) -> set[str]:
    return set(session.scalars(select(Sample.content_hash).where(Sample.dataset_id == dataset_id)))


def reference_texts(session: Session, dataset_id: int) -> list[str]:
    """Val and test texts: what the leakage guard keeps variants away from."""
    return list(
        session.scalars(
            select(Sample.text)
            .where(Sample.dataset_id == dataset_id, Sample.split.in_([Split.val, Split.test]))
            .order_by(Sample.id)
        )
    )


def insert_variants(
    session: Session, dataset_id: int, job_id: int, variants: Sequence[NewVariant]
) -> tuple[list[int], int]:
    """Insert pending variants with their parents' current labels and split. Returns (ids, skipped): a variant
    whose text appeared in the dataset meanwhile, or whose parent was deleted, is skipped, not an error."""
    parents = {v.parent_id for v in variants}
    parent_split = (
        dict(
            session.execute(
                select(Sample.id, Sample.split).where(Sample.id.in_(parents), Sample.dataset_id == dataset_id)
            )
            .tuples()
            .all()
        )
        if parents
        else {}
    )
    labels = _labels_of(session, sorted(parent_split))
    taken = dataset_hashes(session, dataset_id)
    new: list[Sample] = []
    skipped = 0
    for v in variants:
        if v.parent_id not in parent_split or v.content_hash in taken:
            skipped += 1
            continue
        taken.add(v.content_hash)
        sample = Sample(
            dataset_id=dataset_id,
            text=v.text,
            split=parent_split[v.parent_id],
            origin=Origin.augmented,
            content_hash=v.content_hash,
            parent_id=v.parent_id,
            method=v.method,
            method_params=v.method_params,
            model_name=v.model_name,
            seed=v.seed,
            job_id=job_id,
            scores=v.scores,
            similarity=v.similarity,
            review_status=ReviewStatus.pending,
        )
        sample.labels_rows = [SampleLabel(task=t, label=y) for t, y in labels[v.parent_id].items()]
        new.append(sample)
    session.add_all(new)
    session.flush()
    return [s.id for s in new], skipped


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
