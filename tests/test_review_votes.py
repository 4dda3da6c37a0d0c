"""Vote counting: the queue's approve/reject counts (services.votes.votes_on) and the k-review status
(services.review_status.status_from_votes) read the same latest votes the same way."""

from __future__ import annotations

import pytest

from services.review_status import status_from_votes
from services.votes import vote_counts
from tests.review_fixtures import review_data  # noqa: F401


def test_an_edit_keeps_the_variant_so_it_counts_as_approving() -> None:
    assert vote_counts({}) == (0, 0)
    assert vote_counts({1: "approve", 2: "edit", 3: "reject"}) == (2, 1)
    assert vote_counts({1: "reject", 2: "reject"}) == (0, 2)


@pytest.mark.parametrize(
    ("votes", "k", "status"),
    [
        ({1: "edit"}, 1, "approved"),
        ({1: "reject"}, 1, "rejected"),
        ({1: "approve"}, 2, "pending"),  # a majority of 2 is 2
        ({1: "approve", 2: "reject"}, 2, "pending"),  # a split waits for a third vote
        ({1: "approve", 2: "reject", 3: "edit"}, 2, "approved"),
        ({1: "reject", 2: "reject", 3: "edit"}, 3, "rejected"),
    ],
)
def test_status_follows_the_counts(votes: dict[int, str], k: int, status: str) -> None:
    assert status_from_votes(votes, k) == status


def test_the_queue_asks_exactly_those_without_a_standing_vote(engine, review_data) -> None:  # type: ignore[no-untyped-def]
    """db.review_access.standing_vote (who the queue, bulk and work shares leave out) agrees with replay (the
    votes the status counts) over random decision trails that the API allows: an undo withdraws the user's
    latest decision, only while no one else has decided since; an automatic decision is no one's vote."""
    import random

    from sqlalchemy import delete, select

    from db.auth import automatic_reviewer
    from db.models import UNDO, Review, Sample, User
    from db.review_access import standing_vote
    from db.session import session_scope
    from services.votes import replay
    from tests.review_fixtures import issue_token

    for name in ("u1", "u2", "u3"):
        issue_token(engine, name)
    rng = random.Random(7)
    variant = review_data.variants[review_data.sources[0]][0]
    with session_scope(engine) as s:
        people = list(s.scalars(select(User.id).where(User.name.in_(("u1", "u2", "u3")))))
        auto = automatic_reviewer(s).id
    for _ in range(150):
        trail: list[tuple[int, str, bool]] = []
        for _ in range(rng.randint(1, 8)):
            user = rng.choice([*people, auto])
            if user == auto:
                trail.append((auto, rng.choice(["approve", "reject"]), True))
                continue
            mine = [i for i, (u, _, a) in enumerate(trail) if u == user]
            others_since = mine and any(u != user and not a for u, _, a in trail[mine[-1] + 1 :])
            if mine and trail[mine[-1]][1] != UNDO and not others_since and rng.random() < 0.35:
                trail.append((user, UNDO, False))
            else:
                trail.append((user, rng.choice(["approve", "reject", "edit"]), False))
        with session_scope(engine) as s:
            s.execute(delete(Review).where(Review.sample_id == variant))
            s.add_all(
                Review(
                    sample_id=variant, user_id=u, decision=d, automatic=a, text_before="", text_after="", version_seen=1
                )
                for u, d, a in trail
            )
        expected = replay([(u, d) for u, d, a in trail if not a])
        with session_scope(engine) as s:
            standing = {
                u
                for u in people
                if s.scalar(select(Sample.id).where(Sample.id == variant, standing_vote(u, Sample.id)))
            }
        assert standing == set(expected), trail
