"""Augmentation: ad-hoc requests and minority-class plans. Both return at once; the work runs as jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from api.augment_schemas import AugmentCreate, AugmenterStatus, PlanCreate, PlanRead, WorkerRead
from api.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from api.json_body import StrictJSONRoute
from api.schemas import JobRead
from services import augmentation
from services.augmentation import AugmentRequest, PlanRequest

router = APIRouter(tags=["augmentation"], route_class=StrictJSONRoute)


@router.post("/augment", response_model=JobRead, status_code=202)
def augment(body: AugmentCreate, session: SessionDep, settings: SettingsDep, user: CurrentUser):  # type: ignore[no-untyped-def]
    """Generate `n_per_text` variants per text and method; they land as pending variants for review.

    `sample_ids` name train-split originals, or submitted texts not rejected. Free `texts` are first stored as
    submissions (origin `submitted`, train split, with their labels; a variant copies its source's labels and
    points at it, so the source must be a sample): pending review like variants, they and their variants train
    only once another member approves the text (its sender may reject it, not approve it; an admin may). A text
    already in the dataset is reused when it is a train original, or a submitted text not rejected, with the
    same labels, and refused otherwise; a near-copy of a val/test text is refused. The methods must suit the
    dataset's language (422 says why not). The project's leads."""
    request = AugmentRequest(
        methods=body.methods,
        n_per_text=body.n_per_text,
        seed=body.seed,
        sample_ids=body.sample_ids,
        texts=[(t.text.strip(), t.labels) for t in body.texts] if body.texts is not None else None,
        params=body.params.model_dump(exclude_unset=True),
        filters=body.filters.model_dump(exclude_unset=True),
        priority=body.priority,
    )
    return augmentation.request_variants(session, body.dataset, request, settings, user)


@router.post("/datasets/{name}/augmentation-plans", response_model=PlanRead, status_code=201)
def create_plan(name: str, body: PlanCreate, session: SessionDep, settings: SettingsDep, user: CurrentUser) -> dict:
    """Compute (and store) a plan that brings every class to the target: deficits per task × class, the joint
    label combinations that fill them, variants per method; with `enqueue`, also its jobs (their ids are in
    `job_ids`). The project's leads."""
    request = PlanRequest(
        methods=body.methods,
        min_fraction_of_largest=body.target.min_fraction_of_largest,
        max_multiplier=body.target.max_multiplier,
        min_count=body.target.min_count,
        per_source_cap=body.per_source_cap,
        tasks=body.tasks,
        count_pending=body.count_pending,
        job_size=body.job_size,
        seed=body.seed,
        params=body.params.model_dump(exclude_unset=True),
        filters=body.filters.model_dump(exclude_unset=True),
        enqueue=body.enqueue,
    )
    return augmentation.make_plan_for(session, name, request, settings, user)


@router.get("/datasets/{name}/augmentation-plans", response_model=list[PlanRead])
def plans(
    name: str,
    session: SessionDep,
    user: CurrentUser,
    limit: int = Query(20, ge=1, le=200),
    queued: bool = Query(False, description="only the plans that queued jobs (a preview is stored too, with none)"),
) -> list[dict]:
    """Stored plans, newest first, each with the classes' progress now (approved and pending vs target)."""
    return augmentation.plans_with_progress(session, name, user, limit, queued)


@router.get("/datasets/{name}/augmenters", response_model=list[AugmenterStatus])
def augmenters(name: str, session: SessionDep, settings: SettingsDep, user: CurrentUser) -> list[dict]:
    """Which augmentation methods can run for this dataset now: its language must be covered and a live
    worker must be able to load the method's model or data. Every method that cannot run says why and names
    the setting to change."""
    return augmentation.augmenters_for(session, name, settings, user)


@router.get("/workers", response_model=list[WorkerRead])
def workers(session: SessionDep, _admin: AdminUser) -> list[Any]:
    """The worker processes seen within three of their refresh intervals, with the augmenters each can load
    (admins)."""
    return augmentation.live_workers(session)
