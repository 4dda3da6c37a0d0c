"""A review-queue filter and sort as a request gives them, checked against the dataset before any query reads
them (db.review_filter holds the criteria, db.review_access turns them into SQL)."""

from __future__ import annotations

from dataclasses import replace

from core.errors import ValidationFailed
from db.models import REVIEWABLE_ORIGINS, Dataset, ReviewStatus
from db.review_filter import SORTS, QueueFilter

MAX_SEARCH = 200


def check_sort(sort: str) -> None:
    if sort not in SORTS:
        raise ValidationFailed(f"sort must be one of {', '.join(SORTS)}; got {sort!r}", field="sort")


def checked_filter(f: QueueFilter, dataset: Dataset) -> QueueFilter:
    """`f` with its search text trimmed, or ValidationFailed naming the request's field: a status, origin, task or
    label the dataset does not have, a bound outside [0, 1], a minimum above its maximum, a search over
    MAX_SEARCH characters."""
    bad = set(f.statuses) - {s.value for s in ReviewStatus}
    if bad or not f.statuses:
        raise ValidationFailed(
            f"status must be some of {', '.join(ReviewStatus)}; got {sorted(bad) or 'none'}",
            field="status",
        )
    bad = set(f.origins) - set(REVIEWABLE_ORIGINS)
    if bad or not f.origins:
        raise ValidationFailed(
            f"origin must be some of {', '.join(REVIEWABLE_ORIGINS)}; got {sorted(bad) or 'none'}",
            field="origin",
        )
    if f.task is not None and f.task not in dataset.task_names():
        raise ValidationFailed(
            f"unknown task {f.task!r}; the dataset has {', '.join(dataset.task_names())}", field="task"
        )
    if f.label is not None:
        known = dataset.labels_of(f.task) if f.task else [lab for t in dataset.tasks for lab in t["labels"]]
        if f.label not in known:
            raise ValidationFailed(
                f"unknown label {f.label!r}" + (f" for task {f.task!r}" if f.task else ""),
                field="label",
            )
    for name, lo, hi in (
        ("similarity", f.min_similarity, f.max_similarity),
        ("consistency", f.min_consistency, f.max_consistency),
        ("semantic_similarity", f.min_semantic, f.max_semantic),
    ):
        for bound in (lo, hi):
            if bound is not None and not 0.0 <= bound <= 1.0:
                raise ValidationFailed(f"{name} bounds must lie in [0, 1]; got {bound}", field=f"min_{name}")
        if lo is not None and hi is not None and lo > hi:
            raise ValidationFailed(f"min_{name} {lo} exceeds max_{name} {hi}", field=f"min_{name}")
    search = (f.search or "").strip() or None
    if search is not None and len(search) > MAX_SEARCH:
        raise ValidationFailed(f"search text is limited to {MAX_SEARCH} characters", field="q")
    return replace(f, search=search)


def pending_only(dataset: Dataset, f: QueueFilter, voter_id: int) -> QueueFilter:
    """Bulk decisions and shared-out work add a vote to pending variants only, and never to one the voter
    already decided."""
    return checked_filter(replace(f, statuses=(ReviewStatus.pending.value,), not_reviewed_by=voter_id), dataset)
