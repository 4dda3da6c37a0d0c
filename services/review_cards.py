"""What a review card needs from one request: the decision (or undo) applied, then the variant as stored, with
the votes on it and its latest review, so the card can show exactly what was recorded (e.g. the reason)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Origin, Sample, User
from db.reviews import latest_reviews
from services import review, review_assignments
from services.review_undo import undo_decision, with_undoable
from services.votes import votes_on


def votes_for(session: Session, sample_ids: list[int], viewer: User) -> dict[int, dict[str, Any]]:
    """sample id → the votes on it, the viewer's own, and whether the viewer's undo would be taken."""
    return with_undoable(session, votes_on(session, sample_ids, viewer.id), sample_ids, viewer)


def stored_reviews(session: Session, sample_ids: list[int]) -> dict[int, dict[str, Any]]:
    """sample id → its latest review (who, decision, reason, when)."""
    return latest_reviews(session, sample_ids)


def submitters(session: Session, samples: list[Sample]) -> dict[int, str]:
    """sample id → the name of the member who submitted it, for the submitted texts among `samples` (sent to
    POST /augment: pending review, their labels the submitter's until someone has seen them). Who imported an
    original or started the job of a variant is not said; a submitter whose account is gone is left out."""
    wanted = {s.id: s.created_by for s in samples if s.origin == Origin.submitted and s.created_by is not None}
    if not wanted:
        return {}
    found = session.execute(select(User.id, User.name).where(User.id.in_(set(wanted.values())))).tuples().all()
    names = dict(found)
    return {sid: names[uid] for sid, uid in wanted.items() if uid in names}


def card(session: Session, sample: Sample, viewer: User) -> dict[str, Any]:
    """The sample with the votes on it (the viewer's own among them), its latest stored review and, for a
    submitted text, who submitted it."""
    return {
        "sample": sample,
        "votes": votes_for(session, [sample.id], viewer)[sample.id],
        "last_review": latest_reviews(session, [sample.id]).get(sample.id),
        "submitted_by": submitters(session, [sample]).get(sample.id),
    }


def decide_card(
    session: Session, sample_id: int, user: User, decision: str, version: int, **options: Any
) -> dict[str, Any]:
    return card(session, review.decide(session, sample_id, user, decision, version, **options), user)


def undo_card(session: Session, sample_id: int, user: User, version: int) -> dict[str, Any]:
    sample = undo_decision(session, sample_id, user, version)
    review_assignments.lease_again(session, sample, user)
    return card(session, sample, user)


def cards_of(session: Session, sample_ids: list[int], viewer: User) -> list[dict[str, Any]]:
    """Several variants as cards, in the order asked; ids that are not variants (or not the viewer's to see)
    are left out."""
    from sqlalchemy import select

    from db.models import Dataset, Origin
    from services.access import visible_project_ids

    query = select(Sample).where(Sample.id.in_(sample_ids), Sample.origin != Origin.original)
    projects = visible_project_ids(session, viewer)
    if projects is not None:  # another project's variants are not found, like missing ones
        query = query.where(Sample.dataset_id.in_(select(Dataset.id).where(Dataset.project_id.in_(projects))))
    found = {s.id: s for s in session.scalars(query)}
    ids = [i for i in dict.fromkeys(sample_ids) if i in found]
    votes = votes_for(session, ids, viewer)
    stored = latest_reviews(session, ids)
    by = submitters(session, [found[i] for i in ids])
    return [
        {"sample": found[i], "votes": votes[i], "last_review": stored.get(i), "submitted_by": by.get(i)} for i in ids
    ]
