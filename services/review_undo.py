"""Undo: a reviewer withdraws their own latest vote on a variant, as a new audited `reviews` row.

Nothing is deleted: the `undo` row records who withdrew which review and when, and the variant's status is
recomputed from the votes that remain (services.review.status_of). An undo is refused (409 with the
variant's current state) when the reviewer has no vote to withdraw, or when anyone else has decided the variant
since their vote: then it is no longer theirs alone to take back. Undoing an edit restores the text it
replaced.
"""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased

from core.errors import ConflictError, ValidationFailed
from db.models import UNDO, Decision, Origin, Review, Sample, User
from db.reviews import decision_trail, replay_edits, sample_state
from services.review import apply_and_record, editors_to_review, rewritten, status_values


def _refuse(session: Session, sample: Sample, why: str, field: str | None = "version") -> ConflictError:
    return ConflictError(why, field=field, extra={"current": sample_state(session, sample)})


def undo_decision(session: Session, sample_id: int, user: User, version: int) -> Sample:
    """Withdraw `user`'s latest vote on the variant they last saw at `version`."""
    from services.review import visible_sample

    sample = visible_sample(session, sample_id, user)
    if sample.origin == Origin.original:
        raise ValidationFailed(f"sample {sample_id} is an original; it has no decisions", field="sample_id")
    latest = session.scalars(
        select(Review)
        .where(Review.sample_id == sample.id, Review.user_id == user.id)
        .order_by(Review.id.desc())
        .limit(1)
    ).first()
    if latest is None or latest.decision == UNDO:
        raise _refuse(session, sample, f"you have no decision on sample {sample_id} to undo", field=None)
    if _decided_since(session, sample.id, user.id, latest.id):
        raise _refuse(session, sample, f"someone else decided sample {sample_id} after you; undo refused")
    if version > sample.version:
        raise _refuse(session, sample, f"sample {sample_id} has no version {version} (now {sample.version})")
    if sample.version != version:
        raise _refuse(
            session,
            sample,
            f"sample {sample_id} changed since you saw it (version {version}, now {sample.version})",
        )
    votes, editor = replay_edits([*decision_trail(session, sample.id), (user.id, UNDO)])
    text_before = sample.text
    text_after = sample.text
    restores = latest.decision == Decision.edit and latest.text_before != latest.text_after
    if restores:
        text_after = latest.text_before
    values = status_values(
        session, sample, votes, text_after, editors_to_review(session, {sample.id: editor}).get(sample.id)
    )
    if restores:
        values.update(rewritten(session, sample, text_after, action="the text before your edit"))
    return apply_and_record(
        session,
        sample,
        version,
        values,
        {
            "user_id": user.id,
            "decision": UNDO,
            "reason": None,
            "note": f"withdraws review {latest.id} ({latest.decision})",
            "text_before": text_before,
            "text_after": text_after,
        },
        lambda: _refuse(session, sample, f"sample {sample_id} changed while undoing; undo refused"),
    )


def latest_standing_decision(session: Session, dataset_name: str, user: User) -> int | None:
    """The variant of the dataset whose vote `user` cast last and has not withdrawn (what U undoes after a
    reload, or once the card has left the page: the pending view drops decided cards); None: none. One query:
    it read the user's history 200 reviews at a time with a query per variant (1.1 s for an annotator of 4,000
    votes that others decided since, on every reload)."""
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, user)
    later_own, later_other = aliased(Review), aliased(Review)
    query = (
        select(Review.sample_id)
        .join(Sample, Sample.id == Review.sample_id)
        .where(
            Sample.dataset_id == dataset.id,
            Review.user_id == user.id,
            Review.automatic.is_(False),
            Review.decision != UNDO,
            # the user's latest act on this variant: a vote that stands (an undo after it withdrew it)
            ~exists().where(
                later_own.sample_id == Review.sample_id,
                later_own.user_id == user.id,
                later_own.automatic.is_(False),
                later_own.id > Review.id,
            ),
            # and nobody decided it since (an undo would be refused: U pressed again would pick it for ever)
            ~exists().where(
                later_other.sample_id == Review.sample_id,
                later_other.user_id != user.id,
                later_other.id > Review.id,
                later_other.decision != UNDO,
            ),
        )
        .order_by(Review.id.desc())
        .limit(1)
    )
    found = session.scalar(query)
    return None if found is None else int(found)


def _decided_since(session: Session, sample_id: int, user_id: int, review_id: int) -> bool:
    """Whether someone other than `user_id` decided the variant after review `review_id`."""
    return (
        session.scalar(
            select(Review.id)
            .where(
                Review.sample_id == sample_id,
                Review.user_id != user_id,
                Review.id > review_id,
                Review.decision != UNDO,
            )
            .limit(1)
        )
        is not None
    )
