"""Request and response bodies of the augmentation endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from api.deps import MAX_ID
from api.schemas import RequestBody
from services.augmentation import (
    MAX_MULTIPLIER,
    MAX_N_PER_TEXT,
    MAX_VARIANTS_PER_JOB,
    MIN_JOB_SIZE,
    FilterParams,
    MethodParams,
)

SampleId = Annotated[int, Field(ge=1, le=MAX_ID)]


class TextItem(RequestBody):
    text: str = Field(min_length=1, max_length=20_000)
    labels: dict[str, str] = Field(default_factory=dict, description="task → label; copied to every variant")


class AugmentCreate(RequestBody):
    """Give either `texts` or `sample_ids`."""

    dataset: str = Field(min_length=1, max_length=200)
    texts: list[TextItem] | None = Field(default=None, max_length=10_000)
    sample_ids: list[SampleId] | None = Field(default=None, max_length=50_000)
    methods: list[str] = Field(
        default_factory=lambda: ["wordnet"],
        min_length=1,
        max_length=4,
        description="backtranslation, mlm, wordnet, paraphrase",
    )
    n_per_text: int = Field(default=3, ge=1, le=MAX_N_PER_TEXT, description="variants per source text and method")
    seed: int = Field(default=0, ge=0, lt=2**31)
    params: MethodParams = Field(
        default_factory=MethodParams, description='per method, e.g. {"mlm": {"top_k": 10}}; omitted: defaults'
    )
    filters: FilterParams = Field(default_factory=FilterParams, description="what drops a candidate variant")
    priority: int = Field(default=0, ge=-100, le=100)

    # Exactly one of texts and sample_ids: checked in services/augmentation.py, which names the field.


class PlanTargetBody(RequestBody):
    min_fraction_of_largest: float = Field(default=0.4, gt=0, le=1)
    max_multiplier: float = Field(default=10.0, ge=1, le=MAX_MULTIPLIER)
    min_count: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="bring every class up to this many (train originals + variants), within max_multiplier × its"
        " originals; beside min_fraction_of_largest, the larger target counts",
    )


class PlanCreate(RequestBody):
    target: PlanTargetBody = Field(default_factory=PlanTargetBody)
    methods: list[str] = Field(default_factory=lambda: ["wordnet"], min_length=1, max_length=4)
    tasks: list[str] | None = Field(
        default=None,
        min_length=1,  # [] read as "all tasks", which it does not say; leave it out for all
        description="tasks to balance (default: all); every task's classes are still accounted for",
    )
    per_source_cap: int = Field(default=5, ge=1, le=1000, description="at most this many variants per source")
    count_pending: bool = Field(default=True, description="count pending variants as if approved")
    job_size: int = Field(
        default=2000, ge=MIN_JOB_SIZE, le=MAX_VARIANTS_PER_JOB, description="variants per job at most"
    )
    seed: int = Field(default=0, ge=0, lt=2**31)
    params: MethodParams = Field(default_factory=MethodParams)
    filters: FilterParams = Field(default_factory=FilterParams)
    enqueue: bool = Field(default=False, description="also enqueue the jobs (else: a dry run, stored)")


class PlanRead(BaseModel):
    id: int
    dataset: str
    params: dict[str, Any]
    plan: dict[str, Any]
    job_ids: list[int]
    created_at: datetime
    progress: list[dict[str, Any]] | None = Field(
        default=None, description="per task × class now: target, approved and pending variants (GET only)"
    )


class AugmenterStatus(BaseModel):
    method: str
    state: str = Field(description="ready, download (fetched on first use), unavailable, or no_worker")
    available: bool
    workers_ready: int = Field(description="live workers that can run it")
    model: str | None
    reason: str | None = Field(description="why it cannot run, with what to change")
    setting: str | None = Field(description="the setting (environment variable) to change")
    note: str | None


class WorkerRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    hostname: str
    pid: int
    kinds: list[str]
    capabilities: dict[str, Any]
    refresh_seconds: float
    started_at: datetime
    last_seen_at: datetime
