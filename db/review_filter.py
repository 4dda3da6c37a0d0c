"""What an annotator may narrow the review queue to, and in which orders it can be read."""

from __future__ import annotations

from dataclasses import dataclass, replace

from core.errors import ValidationFailed
from db.models import REVIEWABLE_ORIGINS, Dataset, ReviewStatus

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

    def validated(self, dataset: Dataset) -> QueueFilter:
        bad = set(self.statuses) - {s.value for s in ReviewStatus}
        if bad or not self.statuses:
            raise ValidationFailed(
                f"status must be some of {', '.join(ReviewStatus)}; got {sorted(bad) or 'none'}",
                field="status",
            )
        bad = set(self.origins) - set(REVIEWABLE_ORIGINS)
        if bad or not self.origins:
            raise ValidationFailed(
                f"origin must be some of {', '.join(REVIEWABLE_ORIGINS)}; got {sorted(bad) or 'none'}",
                field="origin",
            )
        if self.task is not None and self.task not in dataset.task_names():
            raise ValidationFailed(
                f"unknown task {self.task!r}; the dataset has {', '.join(dataset.task_names())}", field="task"
            )
        if self.label is not None:
            known = dataset.labels_of(self.task) if self.task else [lab for t in dataset.tasks for lab in t["labels"]]
            if self.label not in known:
                raise ValidationFailed(
                    f"unknown label {self.label!r}" + (f" for task {self.task!r}" if self.task else ""),
                    field="label",
                )
        for name, lo, hi in (
            ("similarity", self.min_similarity, self.max_similarity),
            ("consistency", self.min_consistency, self.max_consistency),
            ("semantic_similarity", self.min_semantic, self.max_semantic),
        ):
            for bound in (lo, hi):
                if bound is not None and not 0.0 <= bound <= 1.0:
                    raise ValidationFailed(f"{name} bounds must lie in [0, 1]; got {bound}", field=f"min_{name}")
            if lo is not None and hi is not None and lo > hi:
                raise ValidationFailed(f"min_{name} {lo} exceeds max_{name} {hi}", field=f"min_{name}")
        search = (self.search or "").strip() or None
        if search is not None and len(search) > 200:
            raise ValidationFailed("search text is limited to 200 characters", field="q")
        return replace(self, search=search)
