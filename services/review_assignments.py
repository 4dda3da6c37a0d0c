"""Work shared out: with the dataset setting `distribute_work`, each annotator who asks for work gets their own
pending variants, leased for `lease_minutes` and renewed while they work.

A variant goes to as many annotators at once as it still needs votes (k = reviews_required minus the votes it
has), so with k > 1 it keeps being handed out until k different people have voted, and never to someone who
already voted on it. A lease ends when its holder votes, when they release their work (signing out), or when it
is not renewed in time: an annotator who leaves frees their share for the others within `lease_minutes`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from db import review_assignments as leases
from db.models import Dataset, ReviewStatus, Sample, User, utcnow
from db.review_access import access_path
from db.review_filter import SORTS, QueueFilter
from db.reviews import QueuePage, families_of, votes_on
from services.datasets import dataset_named

MAX_BATCH = 200


def _distributing(session: Session, dataset_name: str, user: User) -> Dataset:
    dataset = dataset_named(session, dataset_name, user)
    if not dataset.distribute_work:
        raise ValidationFailed(
            f"dataset {dataset.name!r} does not share out work (an admin turns on distribute_work)",
            field="name",
        )
    return dataset


def next_batch(
    session: Session, dataset_name: str, user: User, f: QueueFilter, *, sort: str = "age", size: int = 50
) -> tuple[QueuePage, Dataset, Any]:
    """The user's leased pending variants matching the filter, topped up to `size` with new leases; every
    live lease of theirs in the dataset is renewed. Returns the page, the dataset and the leases' end."""
    dataset = _distributing(session, dataset_name, user)
    if sort not in SORTS:
        raise ValidationFailed(f"sort must be one of {', '.join(SORTS)}; got {sort!r}", field="sort")
    if not 1 <= size <= MAX_BATCH:
        raise ValidationFailed(f"size must lie in [1, {MAX_BATCH}]; got {size}", field="size")
    leases.take_claim_turn(session, dataset.id)
    now = utcnow()
    until = now + timedelta(minutes=dataset.lease_minutes)
    leases.purge(session, dataset.id, now)
    leases.renew(session, dataset.id, user.id, now, until)
    mine = leases.leased_ids(session, dataset.id, user.id, now)
    pending = replace(f, statuses=(ReviewStatus.pending.value,), not_reviewed_by=user.id).validated(dataset)
    needs = None
    if sort.lstrip("-") == "expected_value":
        from services.review_stats import class_needs

        needs = class_needs(session, dataset)
    where, order = access_path(session, dataset, pending, sort, needs)
    held = list(session.scalars(select(Sample.id).where(*where, Sample.id.in_(mine)))) if mine else []
    if len(held) < size:
        fresh = leases.claim_candidates(
            session, where, order, user.id, dataset.reviews_required, now, mine, size - len(held)
        )
        leases.add_leases(session, dataset.id, user.id, fresh, now, until)
        held.extend(fresh)
    session.flush()
    ids = list(session.scalars(select(Sample.id).where(Sample.id.in_(held)).order_by(*order))) if held else []
    ids = ids[:size]
    by_id = {s.id: s for s in session.scalars(select(Sample).where(Sample.id.in_(ids)))} if ids else {}
    items = [by_id[i] for i in ids]
    page = QueuePage(items=items, total=len(items), total_capped=False, page=1, page_size=size)
    page.families = families_of(session, items)
    page.votes = votes_on(session, ids, user.id)
    return page, dataset, until


def renew_mine(session: Session, dataset_name: str, user: User) -> dict[str, Any]:
    """Keep the user's leases alive (the review page calls this while the annotator works)."""
    dataset = _distributing(session, dataset_name, user)
    now = utcnow()
    until = now + timedelta(minutes=dataset.lease_minutes)
    return {"renewed": leases.renew(session, dataset.id, user.id, now, until), "leased_until": until}


def release_mine(session: Session, dataset_name: str, user: User) -> dict[str, Any]:
    """Give back every variant leased to the user in the dataset (they stop reviewing)."""
    dataset = dataset_named(session, dataset_name, user)
    return {"released": leases.release(session, dataset.id, user.id)}


def lease_again(session: Session, sample: Sample, user: User) -> None:
    """After an undo the variant is the user's to decide again: lease it back to them."""
    dataset = session.get_one(Dataset, sample.dataset_id)
    if not dataset.distribute_work:
        return
    now = utcnow()
    leases.release(session, dataset.id, user.id, [sample.id])
    leases.add_leases(session, dataset.id, user.id, [sample.id], now, now + timedelta(minutes=dataset.lease_minutes))


def leases_by_user(session: Session, dataset: Dataset) -> dict[int, int]:
    return leases.lease_counts(session, dataset.id, utcnow())
