"""Leases of pending variants to annotators (review_assignments): data access only; the rules are in
services/review_assignments.py. Functions flush; the caller owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session

from db.auth import has_active_token
from db.locks import REVIEW_CLAIM, hold_until_commit
from db.models import ReviewAssignment, Sample
from db.review_access import standing_vote
from db.session import affected_rows


def take_claim_turn(session: Session, dataset_id: int) -> None:
    """Wait for the dataset's other work-share claims to end, and hold up those that start, until the transaction
    ends. Locking the variants (FOR UPDATE SKIP LOCKED) is not enough on its own: a claim whose statement began
    before another's commit reads that claim's leases as absent once its locks are gone, and hands the same
    variants out again. Under the lock, each claim's statements read the leases every earlier claim committed.
    SQLite has one writer at a time anyway."""
    hold_until_commit(session, REVIEW_CLAIM, dataset_id)


def purge(session: Session, dataset_id: int, now: datetime) -> int:
    """Drop the dataset's expired leases, those whose holder has voted since (their work there is done), and
    those whose holder holds no active token any more (their last one ran out: they cannot renew or release
    it, and it would stay hidden from the others until the lease ended)."""
    done = affected_rows(
        session.execute(
            delete(ReviewAssignment)
            .where(
                ReviewAssignment.dataset_id == dataset_id,
                (ReviewAssignment.leased_until < now)
                | standing_vote(ReviewAssignment.user_id, ReviewAssignment.sample_id)
                | ~has_active_token(ReviewAssignment.user_id, now),
            )
            .execution_options(synchronize_session=False)
        )
    )
    return done or 0


def renew(session: Session, dataset_id: int, user_id: int, now: datetime, until: datetime) -> int:
    """Extend the user's live leases in the dataset; returns how many."""
    renewed = affected_rows(
        session.execute(
            update(ReviewAssignment)
            .where(
                ReviewAssignment.dataset_id == dataset_id,
                ReviewAssignment.user_id == user_id,
                ReviewAssignment.leased_until >= now,
            )
            .values(leased_until=until)
            .execution_options(synchronize_session=False)
        )
    )
    return renewed or 0


def leased_ids(session: Session, dataset_id: int, user_id: int, now: datetime) -> list[int]:
    return list(
        session.scalars(
            select(ReviewAssignment.sample_id).where(
                ReviewAssignment.dataset_id == dataset_id,
                ReviewAssignment.user_id == user_id,
                ReviewAssignment.leased_until >= now,
            )
        )
    )


def others_leasing(user_id: int, now: datetime, *, with_work_left: bool = False) -> Any:
    """How many other annotators hold a live lease on the row's sample (a correlated scalar subquery); with
    `with_work_left`, only those with work left on it: no vote on it yet and an active token (a lease whose holder
    has voted lives on until the next claim purges it, renewed while their page is open: counted, it kept a
    variant from others' bulk decisions for as long as that page stayed open)."""
    held = [
        ReviewAssignment.sample_id == Sample.id,
        ReviewAssignment.user_id != user_id,
        ReviewAssignment.leased_until >= now,
    ]
    if with_work_left:
        held += [
            ~standing_vote(ReviewAssignment.user_id, ReviewAssignment.sample_id),
            has_active_token(ReviewAssignment.user_id, now),
        ]
    return select(func.count()).where(*held).scalar_subquery()


def leased_to(user_id: int, now: datetime) -> Any:
    """Whether the user holds a live lease on the row's sample (a correlated EXISTS)."""
    return exists(
        select(ReviewAssignment.id).where(
            ReviewAssignment.sample_id == Sample.id,
            ReviewAssignment.user_id == user_id,
            ReviewAssignment.leased_until >= now,
        )
    )


def claim_candidates(
    session: Session,
    where: list[ColumnElement[bool]],
    order: list[Any],
    user_id: int,
    reviews_required: int,
    now: datetime,
    exclude: list[int],
    limit: int,
) -> list[int]:
    """Ids of up to `limit` variants matching `where` that still need a reviewer: other annotators' live leases
    fall short of the votes still missing, and of one for a variant whose votes are in but split (a tie at an
    even k waits for one more review, which only a lease can bring under work sharing). Rows another
    transaction is claiming are skipped (Postgres; SQLite serialises writers)."""
    missing = case((Sample.review_count < reviews_required, reviews_required - Sample.review_count), else_=1)
    query = (
        select(Sample.id)
        .where(*where, others_leasing(user_id, now) < missing)
        .order_by(*order)
        .limit(limit)
        .with_for_update(skip_locked=True, of=Sample)
    )
    if exclude:
        query = query.where(Sample.id.not_in(exclude))
    return list(session.scalars(query))


def add_leases(
    session: Session, dataset_id: int, user_id: int, sample_ids: list[int], now: datetime, until: datetime
) -> None:
    if sample_ids:
        session.execute(
            insert(ReviewAssignment),
            [
                {
                    "dataset_id": dataset_id,
                    "sample_id": sample_id,
                    "user_id": user_id,
                    "leased_until": until,
                    "created_at": now,
                }
                for sample_id in sample_ids
            ],
        )


def release(
    session: Session,
    dataset_id: int,
    user_id: int,
    sample_ids: list[int] | None = None,
    *,
    keep: list[int] | None = None,
) -> int:
    """Delete the user's leases in the dataset: those on `sample_ids` (None: all of them), less those on `keep`.
    Returns how many."""
    query = delete(ReviewAssignment).where(
        ReviewAssignment.dataset_id == dataset_id, ReviewAssignment.user_id == user_id
    )
    if sample_ids is not None:
        query = query.where(ReviewAssignment.sample_id.in_(sample_ids))
    if keep:
        query = query.where(ReviewAssignment.sample_id.not_in(keep))
    return affected_rows(session.execute(query.execution_options(synchronize_session=False))) or 0


def release_everywhere(session: Session, user_id: int) -> int:
    """Delete the user's leases in every dataset; returns how many."""
    query = delete(ReviewAssignment).where(ReviewAssignment.user_id == user_id)
    return affected_rows(session.execute(query.execution_options(synchronize_session=False))) or 0


def datasets_leased_to(session: Session, user_id: int) -> list[int]:
    """Ids of the datasets where the user holds leases (live or expired)."""
    return list(
        session.scalars(
            select(ReviewAssignment.dataset_id)
            .where(ReviewAssignment.user_id == user_id)
            .distinct()
            .order_by(ReviewAssignment.dataset_id)
        )
    )


def lease_counts(session: Session, dataset_id: int, now: datetime) -> dict[int, int]:
    """user id → live leases in the dataset."""
    return dict(
        session.execute(
            select(ReviewAssignment.user_id, func.count())
            .where(ReviewAssignment.dataset_id == dataset_id, ReviewAssignment.leased_until >= now)
            .group_by(ReviewAssignment.user_id)
        )
        .tuples()
        .all()
    )
