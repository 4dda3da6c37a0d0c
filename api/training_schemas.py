"""Request and response bodies of the training endpoints (runs, ensembles, predictions, pseudo-labels)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from api.schemas import JobRead, RequestBody, TaskDef
from core.inputs import MAX_ID
from trainer.config import TrainConfig

# Ids beyond a signed 64-bit integer cannot exist; refusing them here keeps them from reaching the database.
RowId = Annotated[int, Field(ge=1, le=MAX_ID)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class TrainingRunCreate(RequestBody):
    dataset: str = Field(min_length=1, max_length=200)
    config: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Overrides of the trainer config: only the keys given, e.g. "
        '{"encoder": "xlm-roberta-base", "budget_minutes": 20}; the others keep their defaults (keys left '
        "unset that the plan decides, such as lr and grad_accum, are planned for the run's length)",
    )
    seeds: list[Seed] = Field(
        default_factory=list,
        max_length=16,
        description="One run per seed (a seed ensemble); empty: one run with config.seed",
    )
    name: str = Field(default="", max_length=150)
    classical: bool = Field(
        default=False,
        description="Also train the TF-IDF + class-balanced logistic-regression member (a run of kind tfidf) "
        "on the same training view, to combine with the seeds in an ensemble",
    )


class TrainingRunSummary(BaseModel):
    id: int
    dataset: str
    name: str
    kind: str
    status: str
    job_id: int | None
    member_ids: list[int]
    encoder: str | None
    seed: int | None
    variants: str | None = Field(
        default=None, description="approved (originals + approved variants) or none (originals only)"
    )
    budget_minutes: float | None = Field(default=None, description="The run's training budget, if any")
    impact_arm: dict[str, Any] | None = Field(
        default=None,
        description="The impact report and arm that trained this run ({report_id, arm}: originals, all_approved, "
        "without:<method>, tfidf:<arm>); null for a run of one's own",
    )
    lr_selection: dict[str, Any] | None = Field(
        default=None,
        description="Learning-rate selection: status, reason, chosen scale and LR, the budget each run kept, and "
        "the recipe (accumulation, R-Drop, layer-wise decay, heads, weight averaging) planned once for every run "
        "of the request",
    )
    val_macro_f1: float | None
    test_macro_f1: float | None
    best_epoch: int | None
    epochs_done: int
    progress: dict[str, Any] | None = Field(description="The job's live counters: epoch, loss, val_macro_f1...")
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class TrainingRunRead(TrainingRunSummary):
    config: dict[str, Any]
    curve: list[dict[str, Any]]
    metrics: dict[str, Any] = Field(
        description="val and test: per task macro-F1, per-class P/R/F1, confusion (test under the decision "
        "rule; test_argmax without it); decision: the rule per task; plan: the run's steps, batch, LR, "
        "regularisers and why"
    )
    lr_selection_detail: dict[str, Any] | None = Field(
        default=None, description="Learning-rate selection in full: every trial (scale, LR, steps, val macro-F1)"
    )
    snapshot_size: int
    artifact_dir: str | None


class TrainingRunsCreated(BaseModel):
    runs: list[TrainingRunRead]
    jobs: list[JobRead]


class EnsembleCreate(RequestBody):
    run_ids: list[RowId] = Field(
        min_length=2, max_length=32, description="Finished runs of one dataset: transformer runs, TF-IDF members"
    )
    weighted: bool = Field(
        default=True,
        description="Fit per-task weights on val (minimum NLL; seeds of one configuration share a weight); "
        "false: equal weights",
    )
    temperature: bool = Field(default=True, description="Fit temperatures per task on val")
    decision: Literal["prior", "none"] = Field(
        default="prior", description="Fit a prior-correction decision rule per task on val for macro-F1"
    )
    name: str = Field(default="", max_length=150)


class PredictRequest(RequestBody):
    texts: list[str] = Field(min_length=1, description="At most AUGLOOP_TRAINER_PREDICT_MAX_TEXTS texts")


class PredictResponse(BaseModel):
    model_id: int
    kind: str
    tasks: list[TaskDef]
    labels: list[dict[str, str]] = Field(
        description="Per text: the model's label per task (its decision rule's; the most probable without one)"
    )
    probabilities: list[dict[str, dict[str, float]]] = Field(description="Per text: task → label → probability")


class PseudoLabelCreate(RequestBody):
    model_id: RowId = Field(description="A finished run or ensemble of this dataset")
    threshold: float = Field(
        default=0.9, gt=0, le=1, description="Minimum over tasks of the top probability for a text to be kept"
    )


class TrainingEstimate(BaseModel):
    dataset: str
    config: dict[str, Any] = Field(description="The full config each run would get (defaults filled in)")
    runs: int
    train_examples: int = Field(
        description="The texts an epoch trains on: train originals plus the variants this config trains on "
        "(with variant_sampling one_per_source, one text of each original's family)"
    )
    train_texts: int = Field(
        description="Every text the run would train on, at most (its train_samples may be fewer: texts close to "
        "a val/test text are left out when it starts); an epoch shows train_examples of them"
    )
    eval_examples: int = Field(description="Val and test originals, evaluated each epoch and at the end")
    pending_to_score: int = Field(description="Pending variants the finished run scores for the review queue")
    tokens_per_text: float
    samples_per_second: float = Field(description="Training texts per second, one pass (R-Drop feeds each twice)")
    plan: dict[str, Any] = Field(description="The trainer's plan at that rate: steps, accumulation, LR, R-Drop, why")
    epochs: float = Field(description="Epochs the plan affords (the config's epochs, or fewer within a budget)")
    seconds_per_epoch: float
    seconds_per_run: float
    seconds_total: float = Field(description="All runs one after the other on one worker")
    basis: str = Field(description="Where the rate comes from: a measured run, or the reference CPU rate")
    note: str
    encoder_warning: str | None = Field(
        default=None,
        description="Why a worker here could not load the encoder (a hub id not cached while HF_HUB_OFFLINE=1, a "
        "folder without a model); null when nothing is known against it",
    )
