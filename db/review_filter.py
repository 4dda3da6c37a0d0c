"""What an annotator may narrow the review queue to, and in which orders it can be read (the query criteria;
services.review_filter checks a request's against its dataset)."""

from __future__ import annotations

from dataclasses import dataclass

from db.models import REVIEWABLE_ORIGINS, ReviewStatus

SORTS = (
    "age",
    "-age",
    "family",
    "similarity",
    "-similarity",
    "label_consistency",
    "-label_consistency",
    "semantic_similarity",
    "-semantic_similarity",
    "expected_value",
    "-expected_value",
)


@dataclass(frozen=True)
class QueueFilter:
    """What an annotator narrowed the queue to. Empty tuples and None mean "any"."""

    statuses: tuple[str, ...] = (ReviewStatus.pending.value,)
    origins: tuple[str, ...] = REVIEWABLE_ORIGINS
    task: str | None = None
    label: str | None = None
    methods: tuple[str, ...] = ()
    min_similarity: float | None = None
    max_similarity: float | None = None
    min_consistency: float | None = None
    max_consistency: float | None = None
    min_semantic: float | None = None
    max_semantic: float | None = None
    search: str | None = None
    flagged: bool | None = None  # the label-consistency model predicts another label
    parent_id: int | None = None
    job_id: int | None = None
    not_reviewed_by: int | None = None  # user id: hide what this user already voted on (k > 1)
