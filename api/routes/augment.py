"""Augmentation: ad-hoc requests and minority-class plans. Both return at once; the work runs as jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from api.augment_schemas import AugmentCreate, AugmenterStatus, PlanCreate, PlanRead, WorkerRead
from api.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from api.schemas import JobRead
from db.augmentation import list_plans, variant_counts
from db.datasets import dataset_stats, get_dataset
from db.errors import NotFoundError
from db.models import AugmentationPlan, Dataset
from workers.augment.enqueue import AugmentRequest, PlanRequest, create_and_enqueue_plan, enqueue_request
from workers.augment.planner import PlanTarget

router = APIRouter(tags=["augmentation"])


@router.post("/augment", response_model=JobRead, status_code=202)
def augment(body: AugmentCreate, session: SessionDep, settings: SettingsDep, user: CurrentUser):  # type: ignore[no-untyped-def]
    """Generate `n_per_text` variants per text and method; they land as pending variants for review.

    `sample_ids` name train-split originals. Free `texts` are first stored as train-split originals with their
    labels (a variant copies its source's labels and points at it, so the source must be a sample); a text
    already in the dataset is reused when it is a train original with the same labels, and refused otherwise.
    The methods must suit the dataset's language (422 says why not)."""
    try:
        dataset = get_dataset(session, body.dataset)
    except NotFoundError as err:
        raise NotFoundError(err.message, field="dataset") from None
    request = AugmentRequest(
        methods=body.methods,
        n_per_text=body.n_per_text,
        seed=body.seed,
        sample_ids=body.sample_ids,
        texts=[(t.text.strip(), t.labels) for t in body.texts] if body.texts is not None else None,
        params=body.params,
        filters=body.filters,
        priority=body.priority,
    )
    return enqueue_request(session, dataset, request, settings, user.id)


def _plan_read(row: AugmentationPlan, dataset: Dataset, progress: list[dict[str, Any]] | None = None) -> dict:
    return {
        "id": row.id,
        "dataset": dataset.name,
        "params": row.params,
        "plan": row.plan,
        "job_ids": list(row.job_ids or []),
        "created_at": row.created_at,
        "progress": progress,
    }


@router.post("/datasets/{name}/augmentation-plans", response_model=PlanRead, status_code=201)
def create_plan(
    name: str, body: PlanCreate, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> dict:
    """Compute (and store) a plan that brings every class to the target: deficits per task × class, the joint
    label combinations that fill them, variants per method; with `enqueue`, also its jobs (their ids are in
    `job_ids`)."""
    dataset = get_dataset(session, name)
    request = PlanRequest(
        methods=body.methods,
        target=PlanTarget(**body.target.model_dump()),
        per_source_cap=body.per_source_cap,
        tasks=body.tasks,
        count_pending=body.count_pending,
        job_size=body.job_size,
        seed=body.seed,
        params=body.params,
        filters=body.filters,
        enqueue=body.enqueue,
    )
    return _plan_read(create_and_enqueue_plan(session, dataset, request, settings, user.id), dataset)


@router.get("/datasets/{name}/augmentation-plans", response_model=list[PlanRead])
def plans(
    name: str, session: SessionDep, _user: CurrentUser, limit: int = Query(20, ge=1, le=200)
) -> list[dict]:
    """Stored plans, newest first, each with the classes' progress now (approved and pending vs target)."""
    dataset = get_dataset(session, name)
    counts = variant_counts(session, dataset)
    stats = dataset_stats(session, dataset)["tasks"]
    out = []
    for row in list_plans(session, dataset, limit):
        progress = []
        for entry in (row.plan or {}).get("classes", []):
            task, label = entry["task"], entry["label"]
            by_status = counts.get(task, {}).get(label, {})
            original = stats.get(task, {}).get("labels", {}).get(label, {}).get("train_original", 0)
            approved = by_status.get("approved", 0)
            progress.append(
                {
                    "task": task,
                    "label": label,
                    "target": entry["target"],
                    "original": original,
                    "approved": approved,
                    "pending": by_status.get("pending", 0),
                    "rejected": by_status.get("rejected", 0),
                    "with_approved": original + approved,
                    "remaining": max(0, entry["target"] - original - approved),
                }
            )
        out.append(_plan_read(row, dataset, progress))
    return out


def _live_workers(session: Any) -> list[Any]:
    from db.worker_presence import live_workers

    return live_workers(session)


@router.get("/datasets/{name}/augmenters", response_model=list[AugmenterStatus])
def augmenters(name: str, session: SessionDep, settings: SettingsDep, _user: CurrentUser) -> list[dict]:
    """Which augmentation methods can run for this dataset now: its language must be covered and a live
    worker must be able to load the method's model or data. Every method that cannot run says why and names
    the setting to change."""
    from workers.augment.availability import for_dataset

    dataset = get_dataset(session, name)
    caps = [w.capabilities for w in _live_workers(session) if "augment" in (w.kinds or [])]
    return for_dataset(dataset.language, caps, settings)


@router.get("/workers", response_model=list[WorkerRead])
def workers(session: SessionDep, _admin: AdminUser) -> list[Any]:
    """The worker processes seen within three of their refresh intervals, with the augmenters each can load."""
    return _live_workers(session)
