"""Request and response bodies of the review API (apart from api/schemas.py, which other areas extend)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.deps import MAX_ID
from api.schemas import RequestBody
from db.models import RejectReason
from services.access import shown_provenance
from services.auto_approval import shown_auto_decision


class SampleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: int
    external_id: str | None
    text: str
    generated_text: str | None = Field(description="What the augmenter produced, kept once an annotator edits")
    split: str
    origin: str
    parent_id: int | None
    method: str | None
    method_params: dict[str, Any] | None
    model_name: str | None
    seed: int | None
    job_id: int | None
    scores: dict[str, Any] | None
    similarity: float | None
    semantic_similarity: float | None = Field(default=None, description="Sentence-encoder cosine with the source")
    novelty: float | None = Field(default=None, description="1 − its closest training text's n-gram similarity")
    label_consistency: float | None
    label_flag: bool | None
    auto_decision: str | None = Field(
        default=None,
        description=(
            "What the automatic step did: approved, rejected, or audit (a variant the rule would approve, left to"
            " people; said only once people have decided it, so that it does not prime them)"
        ),
    )
    review_status: str | None
    review_count: int
    version: int = Field(description="Send it back with a decision (optimistic locking)")
    labels: dict[str, str]
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="after")
    def _blind_audit(self) -> SampleRead:
        self.auto_decision = shown_auto_decision(self.auto_decision, self.review_status)
        # Where the server keeps a model is no reader's business: a local model directory by its last part.
        self.model_name = shown_provenance(self.model_name)
        self.method_params = shown_provenance(self.method_params)
        return self


class Votes(BaseModel):
    approve: int = 0
    reject: int = 0
    mine: str | None = Field(default=None, description="Your latest decision on this variant, if any")
    undoable: bool = Field(
        default=False,
        description="Whether POST /samples/{id}/undo would take your vote back now (it stands, and no one else "
        "decided the variant since)",
    )


class LastReview(BaseModel):
    id: int
    user: str
    decision: str = Field(description="approve, reject, edit, or undo (a withdrawn vote)")
    reason: str | None
    created_at: datetime


class QueueItem(SampleRead):
    votes: Votes = Field(default_factory=Votes)
    last_review: LastReview | None = Field(
        default=None, description="The variant's latest review as stored (decision, reason, who)"
    )
    submitted_by: str | None = Field(
        default=None,
        description="A submitted text (origin `submitted`, sent to POST /augment): the name of who submitted it,"
        " whose labels it carries until someone has reviewed it; null for every other origin",
    )


class FamilySource(BaseModel):
    id: int
    text: str
    labels: dict[str, str]
    split: str
    external_id: str | None
    origin: str
    pending_variants: int


class ReviewQueue(BaseModel):
    items: list[QueueItem]
    families: list[FamilySource] = Field(description="The source texts of this page's variants")
    total: int
    total_capped: bool = Field(description="True: at least `total` variants match (counting stopped there)")
    page: int
    page_size: int
    reviews_required: int
    not_reviewed_by_me: bool = Field(description="Whether variants you already voted on were left out")
    reject_reasons: list[str] = Field(default_factory=lambda: [r.value for r in RejectReason])


class ReviewRead(BaseModel):
    id: int
    sample_id: int
    user: str
    decision: str
    reason: str | None
    note: str | None
    text_before: str
    text_after: str
    version_seen: int
    automatic: bool = Field(default=False, description="Signed by the automatic reviewer; never a vote")
    created_at: datetime


class SampleFamily(BaseModel):
    sample: SampleRead
    parent: SampleRead | None
    variants: list[SampleRead] = Field(description="Every variant of the same source, this one included")
    reviews: list[ReviewRead] = Field(description="This sample's decisions, oldest first")


class DecisionCreate(RequestBody):
    decision: Literal["approve", "reject", "edit"]
    version: int = Field(ge=1, description="The version you saw; a stale one gets 409 with the current state")
    reason: RejectReason | None = Field(default=None, description="Required with reject")
    text: str | None = Field(default=None, max_length=100_000, description="Required with edit: the new text")
    note: str | None = Field(default=None, max_length=2_000)


class QueueFilterBody(RequestBody):
    """The queue filter as the UI sends it for 'everything matching'."""

    origin: list[Literal["augmented", "pseudo_label", "submitted"]] | None = None
    task: str | None = None
    label: str | None = None
    method: list[str] | None = None
    min_similarity: float | None = None
    max_similarity: float | None = None
    min_consistency: float | None = None
    max_consistency: float | None = None
    min_semantic_similarity: float | None = None
    max_semantic_similarity: float | None = None
    q: str | None = None
    flagged: bool | None = None
    job_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class BulkDecisionCreate(RequestBody):
    decision: Literal["approve", "reject"]
    reason: RejectReason | None = None
    sample_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(default=None, max_length=200_000)
    parent_id: int | None = Field(
        default=None, ge=1, le=MAX_ID, description="A whole family: every pending variant of this source"
    )
    filter: QueueFilterBody | None = Field(default=None, description="Every pending variant matching this filter")
    confirm: bool = Field(default=False, description="False: only count what would be decided")
    expected_count: int | None = Field(
        default=None, ge=0, description="The count you confirmed; if it changed, 409 and nothing done"
    )
    versions: dict[Annotated[int, Field(ge=1, le=MAX_ID)], Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        default=None,
        max_length=200_000,
        description="With sample_ids or parent_id: each variant's version as you saw it. A variant changed since "
        "(someone edited or decided it) or not listed here is left out and named in `changed`: your vote goes "
        "only to variants as you saw them",
    )


class BulkDecisionResult(BaseModel):
    decision: str
    matched: int = Field(description="Pending variants in the selection that you have not voted on")
    applied: int
    confirmed: bool
    statuses: dict[str, int] = Field(description="How many variants ended in each status")
    changed: list[int] = Field(
        default_factory=list, description="Left out: changed since the version you gave, or not given one"
    )
    skipped: dict[str, int] = Field(
        default_factory=dict,
        description="Variants not decided, counted by reason: by `sample_ids`, the ids named (not_a_variant, "
        "decided, voted_already, own_submission, not_in_dataset, changed); by any selection, voted_already for "
        "those you voted on in another request while this one waited",
    )


class UndoCreate(RequestBody):
    version: int = Field(ge=1, description="The version you hold (from your decision's answer)")


class AssignmentRequest(RequestBody):
    """Ask for your share of the work: your leased variants matching the filter, topped up to `size`."""

    filter: QueueFilterBody = Field(default_factory=QueueFilterBody)
    sort: str = "age"
    size: int = Field(default=50, ge=1, le=200)


class AssignedQueue(ReviewQueue):
    leased_until: datetime = Field(description="When your leases end unless you keep working")


class LeaseRenewal(BaseModel):
    renewed: int
    leased_until: datetime


class LeaseRelease(BaseModel):
    released: int


class AnnotatorRow(BaseModel):
    user: str
    decisions_today: int
    undone_today: int
    active_minutes_today: float
    per_hour: float | None = Field(description="Decisions per hour of active time today (pauses > 5 min left out)")
    last_decision_at: datetime | None
    agreement_with_majority: float | None = Field(
        description="Share of votes matching the majority of the other voters (variants with 2+ votes)"
    )
    compared_with_majority: int
    leased: int = Field(description="Variants leased to this annotator now")


class AnnotatorProgress(BaseModel):
    dataset: str
    day_started_at: datetime
    reviews_required: int
    distribute_work: bool
    annotators: list[AnnotatorRow]


class LabelModelChoice(RequestBody):
    model_id: int = Field(ge=1, le=MAX_ID, description="A finished run or ensemble of this dataset")
