"""Votes: how a variant's decision trail becomes the votes that stand on its current text, and their counts.

A user's latest decision is their vote; an edit changes the text and withdraws the votes cast before it; an undo
withdraws the user's vote, and undoing an edit restores the text with the votes cast on it (`replay`). The
review status reads these counts (services.review_status); the queue's SQL form of "has a vote"
(db.review_access.not_voted_by) follows the same rule.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import UNDO, Decision
from db.reviews import people_trails

APPROVING = (Decision.approve.value, Decision.edit.value)


def replay(trail: list[tuple[int, str]]) -> dict[int, str]:
    """The votes a decision trail [(user id, decision), ...] leaves, most recent last:
    - a user who changes their mind has one vote;
    - an edit changes the text, so it withdraws every vote cast before it (the editor's edit counts as their
      approval of the new text);
    - an undo withdraws the user's vote; undoing an edit restores the text, and with it the votes cast on that
      text before the edit."""
    return replay_edits(trail)[0]


def replay_edits(trail: list[tuple[int, str]]) -> tuple[dict[int, str], int | None]:
    """`replay`'s votes, and who wrote the text they are cast on: the user of the edit that stands (an undo of
    an edit gives the text back to whoever wrote it before, None for the generated text)."""
    votes, _cast_by, editor = replay_reviews([(0, user_id, decision) for user_id, decision in trail])
    return votes, editor


def replay_reviews(trail: list[tuple[int, int, str]]) -> tuple[dict[int, str], dict[int, int], int | None]:
    """`replay_edits` over [(review id, user id, decision), ...], with the review each vote that stands was
    cast in ({user id → review id}: what that user's undo withdraws)."""
    votes: dict[int, str] = {}
    cast_in: dict[int, int] = {}
    editor: int | None = None
    before_edits: list[tuple[int, dict[int, str], dict[int, int], int | None]] = []
    for review_id, user_id, decision in trail:
        if decision == UNDO and votes.get(user_id) == Decision.edit and before_edits and before_edits[-1][0] == user_id:
            _user, votes, cast_in, editor = before_edits.pop()
            continue
        if decision == Decision.edit:
            before_edits.append((user_id, dict(votes), dict(cast_in), editor))
            editor = user_id
        cast(votes, user_id, decision)
        cast_in = {voter: review_id if voter == user_id else cast_in[voter] for voter in votes}
    return votes, cast_in, editor


def cast(votes: dict[int, str], user_id: int, decision: str) -> dict[int, str]:
    """Add one decision to {user id → vote} (most recent last), in place. An undo withdraws the user's vote."""
    if decision == Decision.edit:
        votes.clear()
    votes.pop(user_id, None)
    if decision != UNDO:
        votes[user_id] = decision
    return votes


def vote_counts(votes: dict[int, str]) -> tuple[int, int]:
    """(approve, reject) over {user id → latest decision}: an edit keeps the variant, so it approves."""
    approve = sum(1 for d in votes.values() if d in APPROVING)
    return approve, len(votes) - approve


def latest_votes(session: Session, sample_ids: list[int]) -> dict[int, dict[int, str]]:
    """sample id → {user id → that user's latest decision on the variant's current text}, the most recent vote
    last (see `replay`)."""
    return {sample_id: votes for sample_id, (votes, _author) in votes_and_editors(session, sample_ids).items()}


def votes_and_editors(session: Session, sample_ids: list[int]) -> dict[int, tuple[dict[int, str], int | None]]:
    """sample id → (its votes as `latest_votes` gives them, the user whose edit wrote its current text: None
    where no edit stands), for the variants with any decision (see `replay_edits`)."""
    return {sample_id: replay_edits(trail) for sample_id, trail in people_trails(session, sample_ids).items()}


def votes_on(session: Session, sample_ids: list[int], viewer_id: int | None) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for sample_id, by_user in latest_votes(session, sample_ids).items():
        approve, reject = vote_counts(by_user)
        out[sample_id] = {
            "approve": approve,
            "reject": reject,
            "mine": by_user.get(viewer_id) if viewer_id is not None else None,
        }
    return out
