"""Dataset queries: lookup, class balance statistics, and the training view (originals + approved variants)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from core.errors import NotFoundError
from db.chunks import chunked
from db.locks import REVIEW_RULE, hold_until_commit
from db.models import Dataset, Origin, ReviewStatus, Sample, SampleLabel


def get_dataset(session: Session, name: str) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        raise NotFoundError(f"dataset {name!r} not found", field="name")
    return dataset


def lock_dataset(session: Session, dataset_id: int) -> bool:
    """Hold the dataset's row until the transaction ends, so that two transactions that each count something of
    the dataset and then add to it take turns (Postgres; SQLite has one writer anyway). FOR NO KEY UPDATE: it does
    not wait for, or hold up, the transactions that only add rows pointing at the dataset (an import, a job's
    variants), whose foreign keys take a key-share lock. False: the dataset is gone (deleted while this waited)."""
    found = session.execute(select(Dataset.id).where(Dataset.id == dataset_id).with_for_update(key_share=True))
    return found.first() is not None


def reviews_required_now(session: Session, dataset_id: int) -> int:
    """The dataset's reviews_required as last committed, after taking the shared form of the dataset's review
    rule lock until the transaction ends: a decision that counts votes under k and a change of k
    (`hold_for_a_new_rule`) take turns, so neither stores a status under a rule the other replaced. Decisions
    share the lock: they do not wait for each other. SQLite has one writer at a time anyway."""
    return _reviews_required_under(session, dataset_id, shared=True)


def hold_for_a_new_rule(session: Session, dataset_id: int) -> int:
    """Take the dataset's review rule lock exclusively until the transaction ends: waits for the decisions under
    way (`reviews_required_now`) to end and holds up those that start. Returns reviews_required as last committed,
    read once the lock is held."""
    return _reviews_required_under(session, dataset_id, shared=False)


def _reviews_required_under(session: Session, dataset_id: int, *, shared: bool) -> int:
    # Advisory, not the dataset's row: a row lock FOR UPDATE would also wait for every insert pointing at the
    # dataset (their foreign keys take a key-share lock), and a work-share claim that locks variants and then
    # inserts its leases would deadlock with a re-evaluation.
    hold_until_commit(session, REVIEW_RULE, dataset_id, shared=shared)
    return session.execute(select(Dataset.reviews_required).where(Dataset.id == dataset_id)).scalar_one()


def locked_variant_settings(session: Session, dataset_id: int) -> dict[str, Any] | None:
    """The dataset's variant settings as last committed, its row held as lock_dataset holds it."""
    raw: dict[str, Any] | None = session.scalar(
        select(Dataset.variant_settings).where(Dataset.id == dataset_id).with_for_update(key_share=True)
    )
    return raw


def list_datasets(session: Session, project_ids: set[int] | None = None) -> list[Dataset]:
    """All datasets, or those of the given projects."""
    query = select(Dataset).order_by(Dataset.name)
    if project_ids is not None:
        query = query.where(Dataset.project_id.in_(project_ids))
    return list(session.scalars(query))


def delete_dataset(session: Session, name: str) -> None:
    dataset = get_dataset(session, name)
    session.execute(delete(Dataset).where(Dataset.id == dataset.id))
    session.flush()


def _status_key(origin: str, status: str | None) -> str:
    return "original" if origin == Origin.original else f"{origin}:{status}"


def dataset_stats(session: Session, dataset: Dataset) -> dict[str, Any]:
    """Counts per task × label × split × (origin, review status), and the imbalance ratio per task."""
    rows = session.execute(
        select(SampleLabel.task, SampleLabel.label, Sample.split, Sample.origin, Sample.review_status, func.count())
        .join(Sample, Sample.id == SampleLabel.sample_id)
        .where(Sample.dataset_id == dataset.id)
        .group_by(SampleLabel.task, SampleLabel.label, Sample.split, Sample.origin, Sample.review_status)
    ).all()
    totals = session.execute(
        select(Sample.split, Sample.origin, Sample.review_status, func.count())
        .where(Sample.dataset_id == dataset.id)
        .group_by(Sample.split, Sample.origin, Sample.review_status)
    ).all()
    tasks: dict[str, Any] = {}
    for task in dataset.tasks:
        name = task["name"]
        tasks[name] = {
            "labels": {
                label: {
                    "by_split": {"train": 0, "val": 0, "test": 0},
                    "by_origin": defaultdict(int),
                    "train_original": 0,
                    "train_with_approved": 0,
                }
                for label in task["labels"]
            },
            "missing_label": 0,
        }
    for task, label, split, origin, status, n in rows:
        entry = tasks.get(task, {}).get("labels", {}).get(label)
        if entry is None:
            continue
        if origin == Origin.original:
            entry["by_split"][split] += n
        entry["by_origin"][_status_key(origin, status)] += n
        if split == "train" and origin == Origin.original:
            entry["train_original"] += n
        if split == "train" and (origin == Origin.original or status == ReviewStatus.approved):
            entry["train_with_approved"] += n
    # Approved variants of a submitted text still under review do not train yet (_in_view): not counted.
    for (task, label), n in waiting_per_class(session, dataset, Sample.split == "train").items():
        entry = tasks.get(task, {}).get("labels", {}).get(label)
        if entry is not None:
            entry["train_with_approved"] -= n
    originals = sum(n for _s, origin, _st, n in totals if origin == Origin.original)
    for task in dataset.tasks:
        name = task["name"]
        labelled = sum(
            e["by_split"]["train"] + e["by_split"]["val"] + e["by_split"]["test"]
            for e in tasks[name]["labels"].values()
        )
        tasks[name]["missing_label"] = originals - labelled
        for key in ("train_original", "train_with_approved"):
            counts = [e[key] for e in tasks[name]["labels"].values()]
            ratio = (max(counts) / min(counts)) if counts and min(counts) > 0 else None
            tasks[name]["imbalance_ratio" if key == "train_original" else "imbalance_ratio_with_approved"] = ratio
        for e in tasks[name]["labels"].values():
            e["by_origin"] = dict(e["by_origin"])
    split_totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for split, origin, status, n in totals:
        split_totals[split][_status_key(origin, status)] += n
    return {
        "dataset": dataset.name,
        "language": dataset.language,
        "tasks": tasks,
        "totals": {split: dict(v) for split, v in split_totals.items()},
        "samples": sum(n for *_x, n in totals),
    }


def unreviewed_submission(source: type[Sample]) -> ColumnElement[bool]:
    """`source` (an aliased Sample) is a submitted text not approved yet: its variants' labels are the
    submitter's until a reviewer has seen them, so an approved one of them does not count as approved."""
    return (source.origin == Origin.submitted) & (source.review_status != ReviewStatus.approved)


def waiting_per_class(session: Session, dataset: Dataset, *where: Any) -> dict[tuple[str, str], int]:
    """(task, label) → approved variants (and pseudo-labels) of `where` whose source is a submitted text under
    review: what a count of approved samples must leave out to count what trains. Read from the sources (a
    seek in ix_samples_queue; a dataset's submitted texts under review are few) to their variants (one in
    ix_samples_queue_family), not per approved sample."""
    source = aliased(Sample)
    rows = session.execute(
        select(SampleLabel.task, SampleLabel.label, func.count())
        .select_from(source)
        .join(Sample, Sample.parent_id == source.id)
        .join(SampleLabel, SampleLabel.sample_id == Sample.id)
        .where(
            source.dataset_id == dataset.id,
            unreviewed_submission(source),
            Sample.dataset_id == dataset.id,
            Sample.review_status == ReviewStatus.approved,
            *where,
        )
        .group_by(SampleLabel.task, SampleLabel.label)
    ).tuples()
    return {(task, label): n for task, label, n in rows}


def _in_view(dataset: Dataset, include: set[str], splits: set[str] | None) -> list[Any]:
    """WHERE clauses of a view: originals and/or reviewed samples (variants, pseudo-labels, submitted texts) by
    review status. An approved variant of a submitted text counts as approved only once that text is approved
    too: its labels are the submitter's until a reviewer has seen them."""
    conditions = []
    if "original" in include:
        conditions.append(Sample.origin == Origin.original)
    statuses = [s for s in ("approved", "pending", "rejected") if s in include]
    if statuses:
        reviewed = (Sample.origin != Origin.original) & Sample.review_status.in_(statuses)
        if "approved" in statuses:
            source = aliased(Sample)
            unreviewed_source = exists().where(source.id == Sample.parent_id, unreviewed_submission(source))
            reviewed = reviewed & ((Sample.review_status != ReviewStatus.approved) | ~unreviewed_source)
        conditions.append(reviewed)
    where = [Sample.dataset_id == dataset.id, or_(*conditions)]
    if splits:
        where.append(Sample.split.in_(splits))
    return where


def samples_for_view(
    session: Session, dataset: Dataset, include: set[str], splits: set[str] | None = None, batch: int = 2000
) -> Iterator[Sample]:
    """The view's samples (see _in_view) in id order, streamed in batches."""
    query = select(Sample).where(*_in_view(dataset, include, splits))
    last_id = 0
    while True:
        chunk = list(session.scalars(query.where(Sample.id > last_id).order_by(Sample.id).limit(batch)))
        if not chunk:
            return
        yield from chunk
        last_id = chunk[-1].id


def count_view(session: Session, dataset: Dataset, include: set[str]) -> int:
    """How many samples the view (see _in_view) holds."""
    return session.scalar(select(func.count()).select_from(Sample).where(*_in_view(dataset, include, None))) or 0


def view_label_counts(
    session: Session, dataset: Dataset, include: set[str], splits: set[str], exclude_methods: Sequence[str] = ()
) -> list[tuple[str, str, str, int]]:
    """(task, split, label, samples) over the view (see _in_view) in `splits`, less the reviewed samples of
    `exclude_methods` (a run's `exclude_methods`, as services.training_data leaves them out)."""
    where = _in_view(dataset, include, splits)
    if exclude_methods:
        where.append(
            (Sample.origin == Origin.original) | Sample.method.is_(None) | Sample.method.not_in(list(exclude_methods))
        )
    return list(
        session.execute(
            select(SampleLabel.task, Sample.split, SampleLabel.label, func.count())
            .join(SampleLabel, SampleLabel.sample_id == Sample.id)
            .where(*where)
            .group_by(SampleLabel.task, Sample.split, SampleLabel.label)
        ).tuples()
    )


VIEW_COLUMNS = (
    "id",
    "external_id",
    "text",
    "split",
    "origin",
    "review_status",
    "parent_id",
    "method",
    "method_params",
    "model_name",
    "seed",
    "similarity",
    "label_consistency",
    "generated_text",
    "job_id",
)


def view_rows(session: Session, dataset: Dataset, include: set[str], batch: int = 2000) -> Iterator[dict[str, Any]]:
    """The view as plain rows (VIEW_COLUMNS and "labels": {task: label}) in id order, read `batch` at a time
    with their labels: what an export streams, without building an ORM object per sample."""
    columns = [getattr(Sample, name) for name in VIEW_COLUMNS]
    where = _in_view(dataset, include, None)
    last_id = 0
    while True:
        rows = session.execute(
            select(*columns).where(*where, Sample.id > last_id).order_by(Sample.id).limit(batch)
        ).all()
        if not rows:
            return
        labels: dict[int, dict[str, str]] = defaultdict(dict)
        for ids in chunked([row.id for row in rows]):
            for sid, task, label in session.execute(
                select(SampleLabel.sample_id, SampleLabel.task, SampleLabel.label).where(SampleLabel.sample_id.in_(ids))
            ):
                labels[sid][task] = label
        for row in rows:
            yield {**row._asdict(), "labels": labels.get(row.id, {})}
        last_id = rows[-1].id


def training_samples(session: Session, dataset: Dataset) -> list[Sample]:
    """What a trainer may learn from: train-split originals plus approved variants and pseudo-labels."""
    return list(samples_for_view(session, dataset, {"original", "approved"}, splits={"train"}))
