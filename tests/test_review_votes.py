"""Vote counting: the queue's approve/reject counts (db.reviews.votes_on) and the k-review status
(services.review.status_from_votes) read the same latest votes the same way."""

from __future__ import annotations

import pytest

from db.reviews import vote_counts
from services.review import status_from_votes


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
