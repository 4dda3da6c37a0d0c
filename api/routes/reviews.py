"""Review: the queue, a variant's family, decisions (single and bulk), agreement and progress."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import FiniteFloat

from api.deps import MAX_ID, CurrentUser, ResourceId, SessionDep, SettingsDep
from api.json_body import StrictJSONRoute
from api.review_schemas import (
    BulkDecisionCreate,
    BulkDecisionResult,
    DecisionCreate,
    QueueFilterBody,
    QueueItem,
    ReviewQueue,
    SampleFamily,
    SampleRead,
    UndoCreate,
)
from db.models import REVIEWABLE_ORIGINS
from services import review, review_bulk, review_cards, review_undo
from services.review_bulk import BulkSelection
from services.review_filter import SORTS

router = APIRouter(tags=["reviews"], route_class=StrictJSONRoute)


def _split(raw: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (raw or "").split(",") if p.strip())


def filter_from_body(body: QueueFilterBody):  # type: ignore[no-untyped-def]
    return review.queue_filter(
        origins=tuple(body.origin or REVIEWABLE_ORIGINS),
        task=body.task,
        label=body.label,
        methods=tuple(body.method or ()),
        min_similarity=body.min_similarity,
        max_similarity=body.max_similarity,
        min_consistency=body.min_consistency,
        max_consistency=body.max_consistency,
        min_semantic=body.min_semantic_similarity,
        max_semantic=body.max_semantic_similarity,
        search=body.q,
        flagged=body.flagged,
        job_id=body.job_id,
    )


@router.get("/datasets/{name}/review-queue", response_model=ReviewQueue)
def queue(
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    status: Annotated[str, Query(description="pending, approved, rejected (comma-separated)")] = "pending",
    origin: Annotated[str, Query(description="augmented, pseudo_label, submitted")] = ",".join(REVIEWABLE_ORIGINS),
    task: str | None = None,
    label: Annotated[str | None, Query(description="Variants carrying this label (of `task` when given)")] = None,
    method: Annotated[str | None, Query(description="Augmentation methods (comma-separated)")] = None,
    min_similarity: FiniteFloat | None = None,
    max_similarity: FiniteFloat | None = None,
    min_consistency: FiniteFloat | None = None,
    max_consistency: FiniteFloat | None = None,
    min_semantic_similarity: Annotated[
        FiniteFloat | None, Query(description="Sentence-encoder cosine with the source, at least")
    ] = None,
    max_semantic_similarity: FiniteFloat | None = None,
    q: Annotated[str | None, Query(description="Free-text search in the variant text")] = None,
    flagged: Annotated[bool | None, Query(description="Only (or no) variants the label model flags")] = None,
    parent_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    job_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    unreviewed: Annotated[
        bool | None,
        Query(description="Hide variants you voted on; default: when the dataset needs more than one review"),
    ] = None,
    sort: Annotated[
        str,
        Query(
            description=", ".join(SORTS) + ". -expected_value: most useful first (the class's need × novelty × "
            "predicted label preservation)"
        ),
    ] = "age",
    page: Annotated[int, Query(ge=1, le=MAX_ID // 200)] = 1,  # page × page_size within the database's integers
    page_size: Annotated[int | None, Query(ge=1, le=200)] = None,
) -> dict[str, Any]:
    """Variants to review, filtered and sorted, one page at a time, with the source text of each family."""
    f = review.queue_filter(
        statuses=_split(status),
        origins=_split(origin),
        task=task or None,
        label=label or None,
        methods=_split(method),
        min_similarity=min_similarity,
        max_similarity=max_similarity,
        min_consistency=min_consistency,
        max_consistency=max_consistency,
        min_semantic=min_semantic_similarity,
        max_semantic=max_semantic_similarity,
        search=q,
        flagged=flagged,
        parent_id=parent_id,
        job_id=job_id,
    )
    view = review.queue_page(
        session,
        name,
        user,
        f,
        unreviewed=unreviewed,
        sort=sort,
        page=page,
        page_size=page_size or settings.review_page_size,
        count_ahead=settings.review_count_ahead,
    )
    result = view.page
    stored = review_cards.stored_reviews(session, [s.id for s in result.items])
    submitters = review_cards.submitters(session, result.items)
    items = [
        {
            **SampleRead.model_validate(s).model_dump(),
            "votes": result.votes.get(s.id, {}),
            "last_review": stored.get(s.id),
            "submitted_by": submitters.get(s.id),
        }
        for s in result.items
    ]
    return {
        "items": items,
        "families": result.families,
        "total": result.total,
        "total_capped": result.total_capped,
        "page": result.page,
        "page_size": result.page_size,
        "reviews_required": view.dataset.reviews_required,
        "not_reviewed_by_me": view.not_reviewed_by_me,
    }


@router.get("/samples/{sample_id}", response_model=SampleFamily)
def sample(sample_id: ResourceId, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """A sample with its family (source and every variant of it) and its review history."""
    return review.family(session, sample_id, user)


@router.post(
    "/samples/{sample_id}/decision",
    response_model=QueueItem,
    responses={409: {"description": "Stale version (body: detail, current) or duplicate edited text"}},
)
def decision(
    sample_id: ResourceId, body: DecisionCreate, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> dict[str, Any]:
    """Approve, reject (with a reason) or edit-then-approve a variant, at the version you saw; answers with
    the variant as stored, the votes on it and the review just recorded."""
    return card_fields(
        review_cards.decide_card(
            session,
            sample_id,
            user,
            body.decision,
            body.version,
            reason=body.reason.value if body.reason else None,
            text=body.text,
            note=body.note,
            max_chars=settings.max_text_chars,
        )
    )


def card_fields(card: dict[str, Any]) -> dict[str, Any]:
    return {
        **SampleRead.model_validate(card["sample"]).model_dump(),
        "votes": card["votes"],
        "last_review": card["last_review"],
        "submitted_by": card.get("submitted_by"),
    }


@router.post(
    "/samples/{sample_id}/undo",
    response_model=QueueItem,
    responses={409: {"description": "Nothing of yours to undo, someone else decided since, or a stale version"}},
)
def undo(sample_id: ResourceId, body: UndoCreate, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Withdraw your latest vote on a variant (recorded as an `undo` review); its status follows the votes
    that remain. Refused with 409 and the current state once someone else has decided it since."""
    return card_fields(review_cards.undo_card(session, sample_id, user, body.version))


@router.get("/datasets/{name}/my-latest-decision")
def my_latest_decision(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """The variant of the dataset you voted on last and have not withdrawn (`sample_id`, null for none): what
    an undo takes back once its card has left your page."""
    return {"sample_id": review_undo.latest_standing_decision(session, name, user)}


@router.post(
    "/datasets/{name}/bulk-decisions",
    response_model=BulkDecisionResult,
    responses={409: {"description": "expected_count no longer matches"}, 413: {"description": "Too many"}},
)
def bulk_decisions(
    name: str, body: BulkDecisionCreate, session: SessionDep, settings: SettingsDep, user: CurrentUser
) -> dict[str, Any]:
    """Approve or reject selected variants, a whole family, or everything matching a filter.

    Without `confirm` it only counts; with it, it applies your vote to every pending variant of the selection
    that you have not voted on yet.
    """
    selection = BulkSelection(
        sample_ids=body.sample_ids,
        parent_id=body.parent_id,
        filter=filter_from_body(body.filter) if body.filter is not None else None,
        versions=body.versions,
    )
    return review_bulk.bulk_decide_in(
        session,
        name,
        user,
        body.decision,
        selection,
        reason=body.reason.value if body.reason else None,
        confirm=body.confirm,
        expected_count=body.expected_count,
        max_items=settings.review_bulk_max,
    )


@router.get("/datasets/{name}/agreement")
def dataset_agreement(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Cohen's kappa per annotator pair and Krippendorff's alpha, overall, per method and per class."""
    return review.dataset_agreement(session, name, user)


@router.get("/datasets/{name}/review-progress")
def progress(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Per class: variants pending / approved / rejected, and approved against the latest plan's target."""
    return review.dataset_progress(session, name, user)
