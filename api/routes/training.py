"""Training: start runs (one job per seed), follow them, combine them into ensembles, predict, pseudo-label
(the API side of the trainer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import MAX_ID, CurrentUser, EngineDep, HeadRequest, ResourceId, SessionDep, SettingsDep
from api.downloads import headers_only
from api.json_body import StrictJSONRoute
from api.schemas import ErrorRead, JobRead
from api.training_schemas import (
    EnsembleCreate,
    PredictRequest,
    PredictResponse,
    PseudoLabelCreate,
    TrainingEstimate,
    TrainingRunCreate,
    TrainingRunRead,
    TrainingRunsCreated,
    TrainingRunSummary,
)
from db.models import Job
from services import ensembles, prediction, training, training_estimate

router = APIRouter(tags=["training"], route_class=StrictJSONRoute)


@router.post("/training-runs", response_model=TrainingRunsCreated, status_code=202)
def start_training(body: TrainingRunCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Queue a training run per seed, their LR selection first (the project's leads); follow with GET
    /training-runs/{id}."""
    overrides = body.config.model_dump(exclude_unset=True)  # the keys given; the deployment's defaults fill in
    runs, jobs = training.start_training(
        session,
        body.dataset,
        overrides,
        body.seeds,
        name=body.name,
        user=user,
        classical=body.classical,
    )
    by_id = {job.id: job for job in jobs}
    return {
        "runs": [
            training.run_details(run, training.run_summary(run, body.dataset, by_id.get(run.job_id or -1), user), user)
            for run in runs
        ],
        "jobs": jobs,
    }


@router.post("/training-estimates", response_model=TrainingEstimate)
def estimate_training(body: TrainingRunCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """What starting these runs would train with (the full config with its defaults), on how many texts, and
    about how long it would take; nothing is queued."""
    return training_estimate.training_plan(
        session, body.dataset, body.config.model_dump(exclude_unset=True), body.seeds, user
    )


@router.get("/training-runs", response_model=list[TrainingRunSummary])
def list_training_runs(
    session: SessionDep,
    user: CurrentUser,
    dataset: str | None = None,
    kind: str | None = Query(None, pattern="^(single|tfidf|ensemble)$"),
    status: str | None = None,
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> list[dict[str, Any]]:
    """Runs and ensembles, newest first, with their headline scores and live progress."""
    return training.list_training_runs(
        session, dataset=dataset, kind=kind, status=status, limit=limit, offset=offset, user=user
    )


@router.get("/training-runs/{run_id}", response_model=TrainingRunRead)
def get_training_run(run_id: ResourceId, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """A run: config, status, progress, per-epoch curve, val/test metrics per task and class, confusions."""
    return training.training_run(session, run_id, user)


@router.get(
    "/training-runs/{run_id}/snapshot",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/json": {}},
            "description": '{"run_id", "size", "snapshot": [[sample_id, content_hash], ...]}',
        },
        409: {"model": ErrorRead, "description": "The run has not succeeded (queued, running, failed, cancelled)"},
    },
)
def get_snapshot(run_id: ResourceId, session: SessionDep, user: CurrentUser, head: HeadRequest) -> StreamingResponse:
    """The [sample_id, content_hash] pairs the run trained on (to compare or reproduce runs), streamed from the
    run's snapshot file; 409 until the run has succeeded."""
    chunks = training.run_snapshot(session, run_id, user)
    if head:
        return headers_only("application/json")
    return StreamingResponse(chunks, media_type="application/json")


@router.post("/ensembles", response_model=TrainingRunRead, status_code=201)
def create_ensemble(body: EnsembleCreate, session: SessionDep, engine: EngineDep, user: CurrentUser) -> dict[str, Any]:
    """Combine finished runs (transformer seeds, TF-IDF members): weights, temperatures, decision rule on val.
    The project's leads."""
    options = ensembles.EnsembleOptions(body.weighted, body.temperature, body.decision, body.name)
    return ensembles.create_ensemble_briefly(session, engine, body.run_ids, options, user)


@router.post("/models/{model_id}/predict", response_model=PredictResponse)
def predict(
    model_id: ResourceId, body: PredictRequest, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> dict[str, Any]:
    """Per-task probabilities for texts from a finished run or ensemble."""
    return prediction.predict(session, model_id, body.texts, settings, user)


@router.post("/datasets/{name}/pseudo-labels", response_model=JobRead, status_code=202)
def pseudo_labels(name: str, body: PseudoLabelCreate, session: SessionDep, user: CurrentUser) -> Job:
    """Label the dataset's unlabelled train texts with a model; confident ones enter the review queue (the
    project's leads)."""
    return prediction.queue_pseudo_labels(session, name, body.model_id, body.threshold, user)
