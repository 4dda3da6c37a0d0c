"""Undo: a reviewer withdraws their own latest vote on a variant, as a new audited `reviews` row.

Nothing is deleted: the `undo` row records who withdrew which review and when, and the variant's status is
recomputed from the votes that remain (services.review_status.status_of). An undo is refused (409 with the
variant's current state) when the reviewer has no vote to withdraw, or when anyone else has decided the variant
since their vote: then it is no longer theirs alone to take back. Undoing an edit restores the text it
replaced.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from core.errors import ConflictError, ValidationFailed
from db.models import UNDO, Decision, Origin, Review, Sample, User
from db.reviews import latest_votes_of, review_trails, sample_state
from services.review import apply_and_record, rewritten
from services.review_status import editors_to_review, status_values
from services.votes import replay_edits, replay_reviews


def _refuse(session: Session, sample: Sample, why: str, field: str | None = "version") -> ConflictError:
    return ConflictError(why, field=field, extra={"current": sample_state(session, sample)})


def undo_decision(session: Session, sample_id: int, user: User, version: int) -> Sample:
    """Withdraw `user`'s latest vote on the variant they last saw at `version`."""
    from services.review import visible_sample

    sample = visible_sample(session, sample_id, user)
    if sample.origin == Origin.original:
        raise ValidationFailed(f"sample {sample_id} is an original; it has no decisions", field="sample_id")
    trail = review_trails(session, [sample.id]).get(sample.id, [])
    withdrawn, refusal = withdrawal(trail, user.id)
    if refusal == DECIDED_SINCE:
        raise _refuse(session, sample, f"someone else decided sample {sample_id} after you; undo refused")
    if withdrawn is None:
        raise _refuse(session, sample, f"you have no decision on sample {sample_id} to undo", field=None)
    latest = session.get_one(Review, withdrawn)
    if version > sample.version:
        raise _refuse(session, sample, f"sample {sample_id} has no version {version} (now {sample.version})")
    if sample.version != version:
        raise _refuse(
            session,
            sample,
            f"sample {sample_id} changed since you saw it (version {version}, now {sample.version})",
        )
    people = [(user_id, decision) for _id, user_id, decision, automatic in trail if not automatic]
    votes, editor = replay_edits([*people, (user.id, UNDO)])
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


LATEST_BATCH = 200


def latest_standing_decision(session: Session, dataset_name: str, user: User) -> int | None:
    """The variant of the dataset on which an undo by `user` would take back their newest vote (what U undoes
    after a reload, or once the card has left the page: the pending view drops decided cards); None: none. The
    rule is `withdrawal`'s, the Undo button's: it read the user's latest act only, and so missed a vote an undone
    edit gave back, and a vote whose later decisions by others were withdrawn since (a reviewer's find).

    The candidates come newest first by the user's latest vote on each, without the variants
    another person (or the automatic step) decided since in a decision that is still their latest act there (no
    undo of such a variant is taken: U pressed again would pick it for ever), LATEST_BATCH a query
    (db/reviews.latest_votes_of), with their trails. The search ends once a standing vote is newer than
    every later candidate's latest vote.
    (It read the user's history 200 reviews at a time with a query per variant: 1.1 s for an annotator of 4,000
    votes that others decided since, on every reload.)"""
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, user)
    best: tuple[int, int] | None = None  # (the standing vote's review id, its variant)
    before: int | None = None
    while True:
        batch = latest_votes_of(session, dataset, user.id, before, LATEST_BATCH)
        if not batch:
            break
        trails = review_trails(session, [sample_id for sample_id, _last in batch])
        for sample_id, _last in batch:
            standing, _why = withdrawal(trails.get(sample_id, []), user.id)
            if standing is not None and (best is None or standing > best[0]):
                best = (standing, sample_id)
        before = batch[-1][1]
        if len(batch) < LATEST_BATCH or (best is not None and best[0] >= before):
            break  # no later candidate's vote can be newer than the one found
    return None if best is None else best[1]


NO_VOTE, DECIDED_SINCE = "no_vote", "decided_since"


def withdrawal(trail: list[tuple[int, int, str, bool]], user_id: int) -> tuple[int | None, str | None]:
    """What `user_id`'s undo would withdraw on a variant with this review trail [(review id, user id, decision,
    automatic)], oldest first: (the review their standing vote was cast in, None), or (None, why not): NO_VOTE,
    none of theirs stands (none cast, or withdrawn); DECIDED_SINCE, someone else decided the variant after it
    (a vote or an edit that still stands, or the automatic reviewer's step: the variant is no longer theirs alone
    to take back). A decision withdrawn since does not count, and a vote an undone edit gave back stands again:
    it is what the next undo takes back."""
    people = [(review_id, voter, decision) for review_id, voter, decision, automatic in trail if not automatic]
    _votes, cast_in, _editor = replay_reviews(people)
    mine = cast_in.get(user_id)
    if mine is None:
        own = [decision for _id, voter, decision in people if voter == user_id]
        return None, DECIDED_SINCE if own and own[-1] != UNDO else NO_VOTE  # cleared by someone's edit since
    standing_since = any(review_id > mine for voter, review_id in cast_in.items() if voter != user_id)
    automatic_since = any(review_id > mine and automatic for review_id, _v, _d, automatic in trail)
    return (None, DECIDED_SINCE) if standing_since or automatic_since else (mine, None)


NO_VOTES: dict[str, Any] = {"approve": 0, "reject": 0, "mine": None}


def with_undoable(
    session: Session, votes: dict[int, dict[str, Any]], sample_ids: list[int], user: User
) -> dict[int, dict[str, Any]]:
    """The votes on each of `sample_ids` (services.votes.votes_on's) with `undoable`: whether an undo by `user` would
    be taken now (the card's Undo button: shown on `mine` alone, it offered an undo the API refused once someone
    else had voted since)."""
    trails = review_trails(session, sample_ids)
    return {
        i: {**votes.get(i, NO_VOTES), "undoable": withdrawal(trails.get(i, []), user.id)[0] is not None}
        for i in sample_ids
    }
