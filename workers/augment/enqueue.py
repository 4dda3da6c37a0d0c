"""Turning an augmentation request or a plan into queued jobs (shared by the API and the CLI).

Everything is validated here, before anything is enqueued, so that a bad request gets a 422 (or exit code 2)
naming the field instead of a job that fails later. All writes go through the caller's session (it commits).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from augloop.settings import Settings
from db import queue
from db.augmentation import (
    counted_variants,
    create_plan,
    import_free_texts,
    load_sources,
    train_label_rows,
    variant_counts,
)
from db.errors import TooLargeError, ValidationFailed
from db.models import AugmentationPlan, Dataset, Job
from workers.augment.catalog import validate_request
from workers.augment.planner import PlanTarget, SourceSample, make_plan

JOB_KIND = "augment"
MAX_VARIANTS_PER_JOB = 50_000  # one job writes its variants in one transaction: keep that bounded
SEED_LIMIT = 2**31  # the seed column is a 32-bit integer on Postgres


@dataclass
class AugmentRequest:
    methods: list[str]
    n_per_text: int = 3
    seed: int = 0
    sample_ids: list[int] | None = None
    texts: list[tuple[str, dict[str, str]]] | None = None
    params: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    priority: int = 0


def _check_seed(seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise ValidationFailed(f"seed must be in [0, {SEED_LIMIT}); got {seed}", field="seed")


def job_params(
    dataset: Dataset,
    items: list[dict[str, int]],
    checked: dict[str, Any],
    seed: int,
    plan_id: int | None = None,
) -> dict[str, Any]:
    return {
        "dataset": dataset.name,
        "language": checked["language"],
        "items": items,
        "methods": checked["methods"],
        "seed": seed,
        "params": checked["params"],
        "filters": checked["filters"],
        "plan_id": plan_id,
    }


def enqueue_request(
    session: Session, dataset: Dataset, request: AugmentRequest, settings: Settings, user_id: int | None
) -> Job:
    """One job that produces n_per_text variants per source text and method."""
    checked = validate_request(request.methods, dataset.language, request.params, request.filters, settings)
    _check_seed(request.seed)
    if (request.texts is None) == (request.sample_ids is None):
        raise ValidationFailed("give either texts or sample_ids", field="texts")
    if request.sample_ids is not None:
        if not request.sample_ids:
            raise ValidationFailed("sample_ids is empty", field="sample_ids")
        ids = [s.sample_id for s in load_sources(session, dataset, request.sample_ids)]
    else:
        if not request.texts:
            raise ValidationFailed("texts is empty", field="texts")
        ids = list(dict.fromkeys(import_free_texts(session, dataset, request.texts)))
    total = len(ids) * request.n_per_text * len(checked["methods"])
    if total > MAX_VARIANTS_PER_JOB:
        raise TooLargeError(
            f"{total} candidates in one request (sources × n_per_text × methods); the limit is "
            f"{MAX_VARIANTS_PER_JOB}: split the request or use an augmentation plan",
            field="texts",
        )
    items = [{"sample_id": sid, "n": request.n_per_text} for sid in ids]
    return queue.enqueue(
        session,
        JOB_KIND,
        job_params(dataset, items, checked, request.seed),
        priority=request.priority,
        dataset_id=dataset.id,
        created_by=user_id,
        progress_total=total,
    )


@dataclass
class PlanRequest:
    methods: list[str]
    target: PlanTarget
    per_source_cap: int = 5
    tasks: list[str] | None = None
    count_pending: bool = True
    job_size: int = 2000
    seed: int = 0
    params: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    enqueue: bool = False

    def as_params(self) -> dict[str, Any]:
        return {
            "methods": self.methods,
            "target": {
                "min_fraction_of_largest": self.target.min_fraction_of_largest,
                "max_multiplier": self.target.max_multiplier,
            },
            "per_source_cap": self.per_source_cap,
            "tasks": self.tasks,
            "count_pending": self.count_pending,
            "job_size": self.job_size,
            "seed": self.seed,
            "params": self.params or {},
            "filters": self.filters or {},
            "enqueue": self.enqueue,
        }


def build_plan(
    session: Session, dataset: Dataset, request: PlanRequest, settings: Settings
) -> tuple[dict, dict]:
    """(plan, validated method parameters) for the dataset as it is now; nothing is written."""
    checked = validate_request(request.methods, dataset.language, request.params, request.filters, settings)
    _check_seed(request.seed)
    names = dataset.task_names()
    unknown = [t for t in request.tasks or [] if t not in names]
    if unknown:
        raise ValidationFailed(f"unknown task(s) {unknown}; the dataset's tasks: {names}", field="tasks")
    if not 0 < request.target.min_fraction_of_largest <= 1:
        raise ValidationFailed(
            "min_fraction_of_largest must be in (0, 1]", field="target.min_fraction_of_largest"
        )
    if request.target.max_multiplier < 1:
        raise ValidationFailed("max_multiplier must be at least 1", field="target.max_multiplier")
    if not 1 <= request.per_source_cap <= 1000:
        raise ValidationFailed("per_source_cap must be in [1, 1000]", field="per_source_cap")
    if not 1 <= request.job_size <= MAX_VARIANTS_PER_JOB:
        raise ValidationFailed(f"job_size must be in [1, {MAX_VARIANTS_PER_JOB}]", field="job_size")
    sources = [SourceSample(sid, labels) for sid, labels in train_label_rows(session, dataset)]
    variants: dict[str, Counter[str]] = counted_variants(
        variant_counts(session, dataset), request.count_pending
    )
    plan = make_plan(
        [(t["name"], list(t["labels"])) for t in dataset.tasks],
        sources,
        variants,
        target=request.target,
        methods=checked["methods"],
        per_source_cap=request.per_source_cap,
        balance_tasks=request.tasks,
        job_size=request.job_size,
        seed=request.seed,
    )
    return plan, checked


def create_and_enqueue_plan(
    session: Session, dataset: Dataset, request: PlanRequest, settings: Settings, user_id: int | None
) -> AugmentationPlan:
    """Store the plan; with `enqueue`, also one job per chunk of its work (the jobs' ids go into the plan)."""
    plan, checked = build_plan(session, dataset, request, settings)
    jobs = plan.pop("jobs")
    plan["jobs"] = [{k: v for k, v in job.items() if k != "items"} for job in jobs]
    row = create_plan(session, dataset, request.as_params(), plan, user_id)
    if request.enqueue:
        ids = []
        for job in jobs:
            method_checked = {
                **checked,
                "methods": [job["method"]],
                "params": {job["method"]: checked["params"][job["method"]]},
            }
            enqueued = queue.enqueue(
                session,
                JOB_KIND,
                job_params(dataset, job["items"], method_checked, request.seed, plan_id=row.id),
                dataset_id=dataset.id,
                created_by=user_id,
                progress_total=job["variants"],
            )
            ids.append(enqueued.id)
        row.job_ids = ids
        row.plan = {**plan, "jobs": [{**j, "job_id": i} for j, i in zip(plan["jobs"], ids, strict=True)]}
        session.flush()
    return row
