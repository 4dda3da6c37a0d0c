"""Augmentation impact reports: estimate one, start one (train jobs for every arm × seed), list them, read one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import MAX_ID, CurrentUser, EngineDep, ResourceId, SessionDep
from api.json_body import StrictJSONRoute
from api.schemas import JobRead, RequestBody
from api.training_schemas import Seed
from services import impact, impact_estimate
from trainer.config import TrainConfig

router = APIRouter(tags=["impact"], route_class=StrictJSONRoute)

Method = Annotated[str, Field(min_length=1, max_length=100)]


class ImpactReportCreate(RequestBody):
    seeds: list[Seed] = Field(default=[42, 43, 44], min_length=1, max_length=10)
    config: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Overrides of the trainer config shared by every arm: only the keys given",
    )
    methods: list[Method] | None = Field(
        default=None, max_length=20, description="Leave-one-out arms; default: every approved method"
    )
    classical: bool = Field(
        default=True,
        description="Also train the TF-IDF member on each arm's data and report the arm's ensemble "
        "(seeds + member, fitted on val) as the arm ensemble:<arm>",
    )


class ImpactReportRead(BaseModel):
    id: int
    dataset: str
    status: str
    params: dict[str, Any]
    run_ids: dict[str, list[int]]
    progress: dict[str, int]
    result: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None


class ImpactArmEstimate(BaseModel):
    arm: str
    train_examples: int = Field(description="The texts an epoch of the arm's runs trains on")
    epochs: float
    seconds_per_run: float


class ImpactEstimate(BaseModel):
    dataset: str
    config: dict[str, Any] = Field(description="The full config the all_approved arm's runs would get")
    methods: list[str] = Field(description="The methods left out in turn (one without:<method> arm each)")
    seeds: list[int]
    arms: list[ImpactArmEstimate] = Field(description="The arms the report would train, in the order it queues them")
    runs: int = Field(
        description="Every run it would queue: arms × seeds, and one TF-IDF member per arm with classical"
    )
    transformer_runs: int
    classical_runs: int
    seconds_per_run: float = Field(description="The longest arm's run")
    seconds_total: float = Field(description="Every arm's runs one after the other on one worker")
    samples_per_second: float
    tokens_per_text: float
    basis: str = Field(description="Where the rate comes from: a measured run, or the reference CPU rate")
    note: str
    encoder_warning: str | None = None


class ImpactReportCreated(BaseModel):
    report: ImpactReportRead
    jobs: list[JobRead]


def report_request(body: ImpactReportCreate) -> impact.ReportRequest:
    """A report's request as the services take it (its estimate and its start): only the config keys given."""
    overrides = body.config.model_dump(exclude_unset=True)
    return impact.ReportRequest(body.seeds, overrides, body.methods, body.classical)


@router.post("/datasets/{name}/impact-estimates", response_model=ImpactEstimate)
def estimate_report(name: str, body: ImpactReportCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """The arms and runs starting this impact report would queue and about how long they would take on one worker;
    nothing is queued."""
    return impact_estimate.impact_estimate(session, name, report_request(body), user=user)


@router.post("/datasets/{name}/impact-reports", response_model=ImpactReportCreated, status_code=202)
def start_report(name: str, body: ImpactReportCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Queue the trainer on originals only, all approved variants, and each method left out, × seeds (the
    project's leads)."""
    report, jobs = impact.start_report(session, name, report_request(body), user=user)
    return {"report": report, "jobs": jobs}


@router.get("/datasets/{name}/impact-reports", response_model=list[ImpactReportRead])
def list_reports(
    name: str,
    session: SessionDep,
    engine: EngineDep,
    user: CurrentUser,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=MAX_ID),
) -> list[dict[str, Any]]:
    """A dataset's reports, newest first; decided reports settle on read."""
    return impact.list_report_views(session, engine, name, user, limit, offset)


@router.get("/impact-reports/{report_id}", response_model=ImpactReportRead)
def get_report(report_id: ResourceId, session: SessionDep, engine: EngineDep, user: CurrentUser) -> dict[str, Any]:
    """Status, progress (ended runs / all runs) and, once every run has ended, the result."""
    return impact.report_details(session, engine, report_id, user)
