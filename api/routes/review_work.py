"""Shared review work: leases of pending variants per annotator, progress per annotator, and the label model
that scores the queue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import MAX_ID, CurrentUser, SessionDep
from api.json_body import StrictJSONRoute
from api.review_schemas import (
    AnnotatorProgress,
    AssignedQueue,
    AssignmentRequest,
    LabelModelChoice,
    LeaseRelease,
    LeaseRenewal,
    QueueItem,
    SampleRead,
)
from api.routes.reviews import card_fields, filter_from_body
from api.schemas import JobRead
from db.models import Job
from services import label_model, review_assignments, review_cards
from services.review_work import annotators_of

router = APIRouter(tags=["reviews"], route_class=StrictJSONRoute)


def parse_ids(raw: str) -> list[int]:
    """ "1,2,3" → [1, 2, 3]; anything else is a 422 naming `ids`."""
    from api.deps import DIGITS
    from core.errors import ValidationFailed

    parts = [p.strip() for p in raw.split(",")]
    # ASCII digits, as an id in a path: int() read "+5", "5_087" and full-width or Devanagari digits as 5087
    if not all(DIGITS.fullmatch(p) for p in parts):
        raise ValidationFailed("ids must be positive integers written in digits 0-9, separated by commas", field="ids")
    ids = [int(p) for p in parts]
    if not ids or len(ids) > 200 or any(not 1 <= i <= MAX_ID for i in ids):
        raise ValidationFailed("give 1 to 200 positive sample ids", field="ids")
    return ids


@router.post("/datasets/{name}/assignments", response_model=AssignedQueue)
def next_batch(name: str, body: AssignmentRequest, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Your share of the pending variants (datasets that distribute work): those leased to you that match the
    filter, topped up to `size` with variants nobody else holds; your leases are renewed."""
    page, dataset, until = review_assignments.next_batch(
        session, name, user, filter_from_body(body.filter), sort=body.sort, size=body.size
    )
    stored = review_cards.stored_reviews(session, [s.id for s in page.items])
    submitters = review_cards.submitters(session, page.items)
    return {
        "items": [
            {
                **SampleRead.model_validate(s).model_dump(),
                "votes": page.votes.get(s.id, {}),
                "last_review": stored.get(s.id),
                "submitted_by": submitters.get(s.id),
            }
            for s in page.items
        ],
        "families": page.families,
        "total": page.total,
        "total_capped": False,
        "page": 1,
        "page_size": page.page_size,
        "reviews_required": dataset.reviews_required,
        "not_reviewed_by_me": True,
        "leased_until": until,
    }


@router.get("/review-cards", response_model=list[QueueItem])
def cards(
    session: SessionDep,
    user: CurrentUser,
    ids: Annotated[str, Query(description="Sample ids, comma-separated (at most 200)", max_length=4000)],
) -> list[dict[str, Any]]:
    """Variants as the review cards show them: the sample, the votes on it (yours among them), its latest
    review; ids that are not variants are left out."""
    return [card_fields(card) for card in review_cards.cards_of(session, parse_ids(ids), user)]


@router.post("/datasets/{name}/assignments/renew", response_model=LeaseRenewal)
def renew(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Keep your leases alive while you work."""
    return review_assignments.renew_mine(session, name, user)


@router.delete("/datasets/{name}/assignments", response_model=LeaseRelease)
def release(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Give your leased variants back (you stop reviewing)."""
    return review_assignments.release_mine(session, name, user)


@router.get("/datasets/{name}/annotators", response_model=AnnotatorProgress)
def annotators(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Per annotator: decisions today, rate while active, agreement with the majority, variants leased now."""
    return annotators_of(session, name, user)


@router.get("/datasets/{name}/label-model")
def label_model_summary(name: str, session: SessionDep, user: CurrentUser) -> dict[str, Any]:
    """Which runs or ensembles scored the pending variants (how many each, how many flagged), best first, and
    the rescorings still under way (`rescoring`: their scores stand only once their job succeeds)."""
    return label_model.label_model_summary(session, name, user)


@router.post("/datasets/{name}/label-model", response_model=JobRead, status_code=202)
def choose_label_model(name: str, body: LabelModelChoice, session: SessionDep, user: CurrentUser) -> Job:
    """Rescore every pending variant with the run or ensemble you choose (a `label_scores` job), whatever
    its val macro-F1; automatic rescoring after a run only replaces scores from a worse run. The project's
    leads."""
    return label_model.choose_label_model(session, name, body.model_id, user)
