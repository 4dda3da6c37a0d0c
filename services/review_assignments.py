"""Work shared out: with the dataset setting `distribute_work`, each annotator who asks for work gets their own
pending variants, leased for `lease_minutes` and renewed while they work.

A variant goes to as many annotators at once as it still needs votes (k = reviews_required minus the votes it
has), so with k > 1 it keeps being handed out until k different people have voted, and never to someone who
already voted on it. A lease ends when its holder votes, when they release their work (signing out), or when it
is not renewed in time: an annotator who leaves frees their share for the others within `lease_minutes`.

What one annotator holds in a dataset is the batch they were last handed (at most `size`, itself at most
MAX_BATCH): asking for work under a filter gives back their leases there that the batch does not show. And it
ends, in every dataset they may no longer review, when they lose access: taken out of the project
(services/projects.py), their role changed (`release_where_barred`), or their last active token revoked
(`release_everywhere`); none of them could release it themselves any more.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import NotFoundError, PermissionDenied, ValidationFailed
from db import review_assignments as leases
from db.models import Dataset, Sample, User, utcnow
from db.review_access import access_path
from db.review_filter import QueueFilter
from db.reviews import QueuePage, families_of
from services.access import Need, check_dataset, is_admin
from services.datasets import dataset_named
from services.review_filter import check_sort, pending_only
from services.review_status import not_own_submission, own_submission
from services.review_undo import with_undoable
from services.votes import votes_on

MAX_BATCH = 200


def _distributing(session: Session, dataset_name: str, user: User) -> Dataset:
    dataset = dataset_named(session, dataset_name, user)
    if not dataset.distribute_work:
        raise ValidationFailed(
            f"dataset {dataset.name!r} does not share out work: a lead of its project (or an admin) turns on "
            "distribute_work (Datasets → Review settings, or PATCH /api/v1/datasets/{name})",
            field="name",
        )
    return dataset


def next_batch(
    session: Session, dataset_name: str, user: User, f: QueueFilter, *, sort: str = "age", size: int = 50
) -> tuple[QueuePage, Dataset, Any]:
    """The user's leased pending variants matching the filter, topped up to `size` with new leases and renewed.
    Returns the page, the dataset and the leases' end.

    The batch returned is exactly what the user holds in the dataset afterwards: their leases that it does not
    show (under another filter, past `size`, or on variants that are no longer pending) are given back, for the
    others to take. Before, those stayed, renewed by every call and never counted against `size`, so that by
    changing the filter one annotator could lease every pending variant. In the review UI:
    - the same filter again ("Next batch", or a reload) keeps what is still pending and undecided of the last
      batch and tops it up with new variants; nothing the user was shown is taken away;
    - a new filter gives back the previous batch's leases outside it and leases under the new one;
      what the previous filter showed is no longer on screen, so nothing the user sees is lost;
    - two tabs of the same user with different filters take turns: each tab's request gives back the other's
      leases (its cards may still be decided, but they can be handed to someone else meanwhile).
    """
    dataset = _distributing(session, dataset_name, user)
    check_sort(sort)
    if not 1 <= size <= MAX_BATCH:
        raise ValidationFailed(f"size must lie in [1, {MAX_BATCH}]; got {size}", field="size")
    leases.take_claim_turn(session, dataset.id)
    now = utcnow()
    until = now + timedelta(minutes=dataset.lease_minutes)
    leases.purge(session, dataset.id, now)
    leases.renew(session, dataset.id, user.id, now, until)
    mine = leases.leased_ids(session, dataset.id, user.id, now)
    pending = pending_only(dataset, f, user.id)
    needs = None
    if sort.lstrip("-") == "expected_value":
        from services.review_stats import class_needs

        needs = class_needs(session, dataset)
    where, order = access_path(session, dataset, pending, sort, needs)
    if not is_admin(user):  # a text one submitted, or its variants: one may only reject them, and a lease on
        # them held them from the members who may approve them (for as long as one kept asking)
        where = [*where, not_own_submission(user)]
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
    if set(mine).union(held).difference(ids):  # held but not shown: another filter's, past `size`, decided
        leases.release(session, dataset.id, user.id, keep=ids)
    by_id = {s.id: s for s in session.scalars(select(Sample).where(Sample.id.in_(ids)))} if ids else {}
    items = [by_id[i] for i in ids]
    page = QueuePage(items=items, total=len(items), total_capped=False, page=1, page_size=size)
    page.families = families_of(session, items)
    page.votes = with_undoable(session, votes_on(session, ids, user.id), ids, user)
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


def release_everywhere(session: Session, user: User) -> int:
    """Give back every variant leased to the user, in every dataset: they can no longer sign in to release
    their work (their last active token was revoked), and it would stay hidden from the others until it
    expired (up to a day)."""
    return leases.release_everywhere(session, user.id)


def release_where_barred(session: Session, user: User) -> int:
    """Give back the user's leases in the datasets they may no longer review (their role changed: a demoted
    admin who is not a member of a dataset's project gets its 404 now, and could neither renew nor release what
    they hold there). Access is asked as the assignments endpoint asks it (services.access.check_dataset with
    Need.member). Returns how many leases were given back."""
    released = 0
    for dataset_id in leases.datasets_leased_to(session, user.id):
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            continue
        try:
            check_dataset(session, dataset, user, Need.member)
        except (NotFoundError, PermissionDenied):
            released += leases.release(session, dataset_id, user.id)
    return released


def lease_again(session: Session, sample: Sample, user: User) -> None:
    """After an undo the variant is the user's to decide again: lease it back to them (not a text they submitted,
    or its variant: never leased to its submitter, it would be held from the members who may approve it)."""
    dataset = session.get_one(Dataset, sample.dataset_id)
    if not dataset.distribute_work or own_submission(sample, user):
        return
    now = utcnow()
    leases.release(session, dataset.id, user.id, [sample.id])
    leases.add_leases(session, dataset.id, user.id, [sample.id], now, now + timedelta(minutes=dataset.lease_minutes))


def leases_by_user(session: Session, dataset: Dataset) -> dict[int, int]:
    return leases.lease_counts(session, dataset.id, utcnow())
