"""Request and response bodies (separate from the SQLAlchemy models)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from core.inputs import InputModel
from core.textnorm import unstorable


def _unstorable_at(value: Any, path: str = "") -> tuple[str, str] | None:
    """Where in a decoded JSON value a string (or a key) holds what no database stores (a NUL, a lone surrogate:
    core.textnorm.unstorable), and what: ("", why) for the value itself, (".k" or ".0", why) below it; None when
    none does. Nested request bodies check themselves; other models (a trainer config, augmenter parameters) are
    looked into."""
    if isinstance(value, str):
        return (path, problem) if (problem := unstorable(value)) else None
    if isinstance(value, RequestBody):
        return None
    if isinstance(value, BaseModel):
        value = value.__dict__
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and (problem := unstorable(key)):
                return path, f"a key {problem}"
            if (found := _unstorable_at(item, f"{path}.{key}")) is not None:
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            if (found := _unstorable_at(item, f"{path}.{i}")) is not None:
                return found
    return None


class RequestBody(InputModel):
    """Every request body: an unknown key is a mistake to report, not to drop, no NaN or ±Infinity (Python's JSON
    reader accepts `NaN`, `Infinity` and `1e309`; a NaN compares false with every bound), and no NUL character in
    any string, however deep, nor a lone surrogate (no text in augloop may hold either, core.textnorm.unstorable)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if (found := _unstorable_at(value)) is not None:
            where, problem = found
            raise ValueError(f"{problem}{f' (at {where[1:]})' if where else ''}")
        return value


class TaskDef(BaseModel):
    name: str
    labels: list[str]


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    display_name: str
    project: str = Field(
        validation_alias=AliasChoices("project_name", "project"), description="The project the dataset belongs to"
    )
    language: str
    tasks: list[TaskDef]
    split_info: dict[str, Any]
    reviews_required: int
    guidelines: str
    distribute_work: bool = Field(description="Pending variants are leased to annotators who ask for work")
    lease_minutes: int = Field(description="How long a lease lasts without activity")
    created_at: datetime


class DatasetUpdated(DatasetRead):
    status_changes: dict[str, int] = Field(
        default_factory=dict,
        description="A new reviews_required re-evaluates every reviewed variant: how many moved, by transition "
        '(e.g. "approved→pending": 12). Empty when reviews_required did not change.',
    )


class DatasetUpdate(RequestBody):
    reviews_required: int | None = Field(default=None, ge=1, le=15)
    guidelines: str | None = Field(default=None, max_length=100_000)
    language: str | None = Field(default=None, min_length=2, max_length=16)
    display_name: str | None = Field(default=None, min_length=1, max_length=200, description="Its name for people")
    distribute_work: bool | None = None
    lease_minutes: int | None = Field(default=None, ge=1, le=24 * 60)


class LabelRename(RequestBody):
    task: str = Field(min_length=1, max_length=100)
    label: str = Field(min_length=1, max_length=100, description="The class as the dataset names it")
    to: str = Field(
        min_length=1,
        max_length=100,
        description="Its new name; a class the task has already: the two are merged under it",
    )


class LabelRenamed(BaseModel):
    dataset: str
    task: str
    label: str
    to: str
    merged: bool = Field(description="`to` was a class of the task already: `label` was merged into it")
    labels: list[str] = Field(description="The task's label set now, in its order (the classes' ids)")
    samples_relabelled: int
    label_model_scores_withdrawn: int = Field(
        description="Pending variants whose label-model scores (the old classes' probabilities) were withdrawn"
    )
    label_model_unpinned: int | None = Field(
        default=None, description="The run pinned to score new variants, unpinned: it learnt the old classes"
    )


class ImportResultRead(BaseModel):
    dataset: str
    created_dataset: bool
    imported: int
    duplicates_skipped: int
    duplicates: list[dict[str, Any]]
    split_counts: dict[str, int]
    split_info: dict[str, Any]
    near_duplicate_groups_across_splits: int = Field(
        description="Groups of near-duplicate rows (character 5-gram Jaccard or containment ≥ 0.8) whose members "
        "the file's split column puts in different splits: a leak of val/test into train. A split augloop draws "
        "keeps each group in one split."
    )
    near_duplicates_across_splits: list[dict[str, Any]] = Field(description="The first 1,000: lines and splits")
    duplicates_of_reviewed_samples: int = Field(
        description="Of the duplicates skipped, rows whose text the dataset holds as a variant, submitted text or "
        "pseudo-label (not an original): not imported; that sample's review decides whether the text trains"
    )
    near_existing_across_splits_count: int = Field(
        description="New rows near a text the dataset already holds on the other side of the train/eval line "
        "(a train row near a val/test text, or a val/test row near a train original)"
    )
    near_existing_across_splits: list[dict[str, Any]] = Field(
        description="The first 1,000: line, split, near_sample, near_split, and moved (a drawn split that took "
        "near_split)"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="What to look at before training: a task with no labelled val or test text, classes no val or "
        "test text has, labels that look like missing values (NA, null, …) or differ only in case or spacing",
    )


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    params: dict[str, Any]
    status: str
    priority: int
    attempts: int
    max_attempts: int
    outages: int = Field(
        default=0,
        description="Attempts given back to database outages (a restart, a failover): retried without counting",
    )
    progress_done: int
    progress_total: int
    progress_info: dict[str, Any]
    result: dict[str, Any] | None
    last_error: str | None
    cancel_requested: bool
    dataset_id: int | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_after: datetime
    lease_until: datetime | None = Field(
        default=None, description="While running: until when its worker holds it (renewed at each heartbeat)"
    )

    worker_silent: bool = Field(
        default=False,
        description="Running, but its worker stopped renewing the lease (killed, its machine gone), by the "
        "database's clock: re-queued, or ended on its last attempt, when a worker or the CLI next looks for work",
    )


class JobList(BaseModel):
    items: list[JobRead]
    total: int


class ExportJobCreate(RequestBody):
    format: Literal["csv", "jsonl"] = "csv"
    include: str = "original,approved"


class TokenCreate(RequestBody):
    name: str = Field(min_length=1, max_length=120)
    role: Literal["annotator", "admin"]
    expires_in_days: float | None = Field(default=None, ge=1 / 1440, le=3650, description="At least a minute (1/1440)")


class TokenIssued(BaseModel):
    id: int
    name: str
    role: str
    token: str = Field(description="Shown once; only its hash is stored")
    expires_at: datetime | None


class TokenRead(BaseModel):
    id: int
    name: str
    role: str
    prefix: str
    state: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Recorded at most once a minute per token")


class UserRoleUpdate(RequestBody):
    role: Literal["annotator", "admin"]


class UserRead(BaseModel):
    id: int
    name: str
    role: str


class UserRoleChanged(UserRead):
    status_changes: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description='Per dataset, how many variants moved, by transition (e.g. {"psm": {"approved→pending": 3}}): '
        "the statuses that read the user's role (their own approval of a text they submitted, their edits) are "
        "recomputed with the change. Empty when none moved or the role did not change.",
    )


class ErrorRead(BaseModel):
    """Every error response: a message, and the field (or file) at fault where there is one."""

    detail: str
    field: str | None = None
    line: int | None = Field(default=None, description="Import errors: the line of the file at fault")
    errors: list[dict[str, Any]] | None = Field(default=None, description="422: every validation problem")
