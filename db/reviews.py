"""The review queue: variants filtered, sorted and paginated for annotators, and a variant's family.

A page reads the ids of one index walk chosen by db/review_access.py and stops: the total is counted only
`count_ahead` rows past the page, because an exact count of a 200k-row queue costs more than the page itself
and no annotator needs "183,412" instead of "300+" (exact per-class numbers are in services/review_stats.py;
bulk decisions count exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session, aliased

from core.errors import NotFoundError
from db.chunks import chunked
from db.models import REVIEWABLE_ORIGINS, UNDO, Dataset, Review, ReviewStatus, Sample, SampleLabel, User
from db.review_access import access_path
from db.review_filter import QueueFilter

USEFUL_CHUNK = 128  # rows of the first read of `most_useful_first`'s walk (at least the page); each next twice as many


@dataclass
class QueuePage:
    items: list[Sample]
    total: int
    total_capped: bool  # True: there are at least `total` matches
    page: int
    page_size: int
    families: list[dict[str, Any]] = field(default_factory=list)
    votes: dict[int, dict[str, Any]] = field(default_factory=dict)


def review_queue(
    session: Session,
    dataset: Dataset,
    f: QueueFilter,
    *,
    sort: str = "age",
    page: int = 1,
    page_size: int = 50,
    count_ahead: int = 250,
    needs: dict[tuple[str, str], float] | None = None,
) -> QueuePage:
    """One page of the queue and the families (source texts) of its variants (its `votes` are left to the
    caller: services.votes.votes_on).
    `needs` (task, label) → 0..1 is what the expected-value sort weighs classes by. `f`, `sort` and `page` are
    checked (services.review_filter; a page from 1)."""
    where, order = access_path(session, dataset, f, sort, needs)
    offset = (page - 1) * page_size
    # Ids first, and `count_ahead` more than the page: one index walk yields the page and a bounded total, and
    # sort carries integers rather than whole rows with their texts and JSON.
    # A search checked row by row (a word too common for its index to drive) reads each visited row's text:
    # count only one page ahead there.
    lookahead = min(count_ahead, page_size) if f.search else count_ahead
    if sort == "-expected_value" and len(f.statuses) == 1:
        # The walk ranks the page's rows only: ranking the `lookahead` too set its stop at the 300th value of a
        # first page instead of the 50th, several times the rows. The total counts as far as the other sorts'.
        reach = offset + page_size + lookahead
        ranked, matched, complete = most_useful_first(session, where, needs or {}, offset + page_size)
        if matched < reach and not complete:  # it stopped before it had matched as many rows
            bounded = select(Sample.id).where(*where).limit(reach).subquery()
            matched = session.scalar(select(func.count()).select_from(bounded)) or 0
        ids = ranked[offset:]
        found = max(len(ids), min(matched, reach) - offset)  # rows from the page's first on, `lookahead` at most
    else:
        ids = list(
            session.scalars(
                select(Sample.id).where(*where).order_by(*order).offset(offset).limit(page_size + lookahead)
            )
        )
        found = len(ids)
    capped = found == page_size + lookahead
    total = offset + found
    if not ids and offset > 0:  # past the end: how far does the queue reach?
        total = (
            session.scalar(
                select(func.count()).select_from(select(Sample.id).where(*where).limit(offset + 1).subquery())
            )
            or 0
        )
    ids = ids[:page_size]
    by_id = {s.id: s for s in session.scalars(select(Sample).where(Sample.id.in_(ids)))} if ids else {}
    items = [by_id[i] for i in ids]
    result = QueuePage(items=items, total=total, total_capped=capped, page=page, page_size=page_size)
    result.families = families_of(session, items)
    return result


def most_useful_first(
    session: Session, where: list[ColumnElement[bool]], needs: dict[tuple[str, str], float], want: int
) -> tuple[list[int], int, bool]:
    """The first `want` ids of the queue by expected value, best first (ties: the newest), exactly as ORDER BY
    expected_value DESC, id DESC gives them, without reading every row: a threshold top-k. The rows are walked
    best first by usefulness (novelty × preservation: ix_samples_queue_usefulness), each row's value computed
    from its labels' needs, and the walk stops once the largest need × the usefulness reached cannot beat the
    `want`-th value held. On a queue whose neediest classes hold good variants that is a few thousand rows of
    160,000; at worst (nothing needs variants more than another) it reads them all, as the sort did. One
    statement a read: each row's need comes with it, and a read starts where the last one stopped (it read the
    rows' labels in chunks of ids, and each read sorted the rows before it again with OFFSET: 39 statements
    and 0.4-1.2 s for a page with a label filter on Postgres at 200,000 variants).

    Returns the ids, how many rows matching `where` the walk read, and whether those are all of them."""
    import heapq

    from db.review_access import NEED_FLOOR, class_need, usefulness

    floor_needs = {key: max(need, NEED_FLOOR) for key, need in needs.items()}
    top_need = max([NEED_FLOOR, *floor_needs.values()])
    score = usefulness()
    best: list[tuple[float, int]] = []  # a min-heap of the `want` best (value, id)
    seen: set[int] = set()  # on Postgres each chunk reads a new snapshot: a row rescored meanwhile may come twice
    chunk = max(want, USEFUL_CHUNK)
    last: tuple[float, int] | None = None  # (score, id) of the last row read: the next chunk starts after it
    least: float | None = None  # the usefulness below which no row can enter the page (once it is full)
    complete = False
    while True:
        walk = select(
            Sample.id, Sample.novelty, Sample.similarity, Sample.label_consistency, score, class_need(floor_needs)
        ).where(*where)
        if last is not None:
            # after the last row in the walk's order (not OFFSET: each chunk read and sorted the rows before it
            # again); the first term is the index's range
            walk = walk.where(score <= last[0], or_(score < last[0], Sample.id < last[1]))
        if least is not None:
            # the index range ends where the bound below stops the walk: a read ends there rather than after
            # `chunk` rows (the chunks doubled past it: 3,584 rows read where about 1,500 decide a first page)
            walk = walk.where(score >= least)
        rows = session.execute(walk.order_by(score.desc(), Sample.id.desc()).limit(chunk)).all()
        for sample_id, novelty, similarity, consistency, _, need in rows:
            if sample_id in seen:
                continue
            seen.add(sample_id)
            # as expected_value() computes it, factor by factor, so that ties and last bits agree
            novel = novelty if novelty is not None else (1.0 - similarity if similarity is not None else 0.5)
            value = (
                (need if need is not None else NEED_FLOOR) * novel * (consistency if consistency is not None else 1.0)
            )
            if len(best) < want:
                heapq.heappush(best, (value, sample_id))
            elif (value, sample_id) > best[0]:
                heapq.heapreplace(best, (value, sample_id))
        if len(rows) < chunk:
            complete = least is None  # the whole queue was read (else: the part whose rows can still enter)
            break
        last = (rows[-1][4], rows[-1][0])
        reached = last[0] if last[0] is not None else 0.0
        # the most a later row can be worth (a score below 0, which none is today, is worth most at the floor)
        bound = max(top_need * reached, NEED_FLOOR * reached)
        if len(best) == want and bound + abs(bound) * 1e-9 < best[0][0]:
            break  # no row further on can enter the page
        if len(best) == want and best[0][0] > 0:
            # a row worth less than the `want`-th value held cannot enter: top_need × its usefulness is its most
            # (a margin far above the rounding of the products)
            least = best[0][0] / top_need * (1 - 1e-6)
        chunk *= 2
    return [sample_id for _, sample_id in sorted(best, reverse=True)], len(seen), complete


def families_of(session: Session, variants: list[Sample]) -> list[dict[str, Any]]:
    """The source texts of some variants, in first-appearance order, with how many variants still wait."""
    parent_ids = list(dict.fromkeys(s.parent_id for s in variants if s.parent_id is not None))
    if not parent_ids:
        return []
    parents = {
        row.id: row
        for row in session.execute(
            select(Sample.id, Sample.text, Sample.split, Sample.external_id, Sample.origin).where(
                Sample.id.in_(parent_ids)
            )
        )
    }
    labels: dict[int, dict[str, str]] = {}
    for sample_id, task, label in session.execute(
        select(SampleLabel.sample_id, SampleLabel.task, SampleLabel.label).where(SampleLabel.sample_id.in_(parent_ids))
    ).tuples():
        labels.setdefault(sample_id, {})[task] = label
    pending = dict(
        session.execute(
            select(Sample.parent_id, func.count())
            .where(Sample.parent_id.in_(parent_ids), Sample.review_status == ReviewStatus.pending)
            .group_by(Sample.parent_id)
        )
        .tuples()
        .all()
    )
    return [
        {
            "id": pid,
            "text": parents[pid].text,
            "labels": labels.get(pid, {}),
            "split": parents[pid].split,
            "external_id": parents[pid].external_id,
            "origin": parents[pid].origin,
            "pending_variants": pending.get(pid, 0),
        }
        for pid in parent_ids
        if pid in parents
    ]


def people_trails(session: Session, sample_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    """sample id → people's decisions on the variant [(user id, decision), ...], oldest first, for the variants
    with any (an automatic decision is audited, but it is no one's vote): what services.votes replays."""
    trails: dict[int, list[tuple[int, str]]] = {}
    for chunk in chunked(sample_ids):
        rows = session.execute(
            select(Review.sample_id, Review.user_id, Review.decision)
            .where(Review.sample_id.in_(chunk), Review.automatic.is_(False))
            .order_by(Review.id)
        ).tuples()
        for sample_id, user_id, decision in rows:
            trails.setdefault(sample_id, []).append((user_id, decision))
    return trails


def review_trails(session: Session, sample_ids: list[int]) -> dict[int, list[tuple[int, int, str, bool]]]:
    """sample id → its reviews [(review id, user id, decision, automatic), ...], oldest first (the variants
    with any review)."""
    trails: dict[int, list[tuple[int, int, str, bool]]] = {}
    for chunk in chunked(sample_ids):
        rows = session.execute(
            select(Review.sample_id, Review.id, Review.user_id, Review.decision, Review.automatic)
            .where(Review.sample_id.in_(chunk))
            .order_by(Review.id)
        ).tuples()
        for sample_id, review_id, user_id, decision, automatic in rows:
            trails.setdefault(sample_id, []).append((review_id, user_id, decision, bool(automatic)))
    return trails


def get_sample(session: Session, sample_id: int) -> Sample:
    sample = session.get(Sample, sample_id)
    if sample is None:
        raise NotFoundError(f"sample {sample_id} not found", field="sample_id")
    return sample


def review_history(session: Session, sample_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Review, User.name)
        .join(User, User.id == Review.user_id)
        .where(Review.sample_id == sample_id)
        .order_by(Review.id)
    ).tuples()
    return [
        {
            "id": r.id,
            "sample_id": r.sample_id,
            "user": name,
            "decision": r.decision,
            "reason": r.reason,
            "note": r.note,
            "text_before": r.text_before,
            "text_after": r.text_after,
            "version_seen": r.version_seen,
            "automatic": r.automatic,
            "created_at": r.created_at,
        }
        for r, name in rows
    ]


def sample_family(session: Session, sample_id: int, max_siblings: int = 500) -> dict[str, Any]:
    """A sample with its source (parent) and every variant of that source, and its review history."""
    sample = get_sample(session, sample_id)
    parent = session.get(Sample, sample.parent_id) if sample.parent_id is not None else None
    root = parent or sample
    siblings = list(
        session.scalars(select(Sample).where(Sample.parent_id == root.id).order_by(Sample.id).limit(max_siblings))
    )
    return {
        "sample": sample,
        "parent": parent,
        "variants": siblings,
        "reviews": review_history(session, sample.id),
    }


def sample_state(session: Session, sample: Sample) -> dict[str, Any]:
    """What a stale decision is told: the variant as it is now and who decided it last (JSON-ready)."""
    session.refresh(sample)
    history = review_history(session, sample.id)
    last = history[-1] if history else None
    return {
        "id": sample.id,
        "text": sample.text,
        "generated_text": sample.generated_text,
        "review_status": sample.review_status,
        "review_count": sample.review_count,
        "version": sample.version,
        "last_review": None
        if last is None
        else {
            "user": last["user"],
            "decision": last["decision"],
            "reason": last["reason"],
            "created_at": last["created_at"].isoformat(),
        },
    }


def pending_variant_condition(dataset: Dataset) -> ColumnElement[bool]:
    return and_(
        Sample.dataset_id == dataset.id,
        Sample.origin.in_(REVIEWABLE_ORIGINS),
        Sample.review_status == ReviewStatus.pending,
    )


def latest_reviews(session: Session, sample_ids: list[int]) -> dict[int, dict[str, Any]]:
    """sample id → its latest review (who, decision, reason, when): what a decided card shows as stored."""
    out: dict[int, dict[str, Any]] = {}
    for chunk in chunked(sample_ids):
        newest = (
            select(func.max(Review.id)).where(Review.sample_id.in_(chunk)).group_by(Review.sample_id)
        ).scalar_subquery()
        rows = session.execute(
            select(Review.id, Review.sample_id, User.name, Review.decision, Review.reason, Review.created_at)
            .join(User, User.id == Review.user_id)
            .where(Review.id.in_(newest))
        ).tuples()
        for review_id, sample_id, name, decision, reason, created_at in rows:
            out[sample_id] = {
                "id": review_id,
                "user": name,
                "decision": decision,
                "reason": reason,
                "created_at": created_at,
            }
    return out


def latest_votes_of(
    session: Session, dataset: Dataset, user_id: int, before: int | None, limit: int
) -> list[tuple[int, int]]:
    """[(variant id, the user's latest vote on it), ...], newest first, at most `limit`, older than review
    `before` (None: from the newest). The user's latest vote on a variant skips their undos (which
    services/review_undo.withdrawal reads); a variant is left out when a later review there, not an undo, is
    automatic or another user's last review on it (the candidates of services/review_undo.
    latest_standing_decision, which says why). A walk of the user's reviews newest first (ix_reviews_user_id,
    with the id since migration 0017) that stops after `limit` candidates, each review checked by probes of its
    variant's reviews:
    it grouped the user's whole history by variant for every call (p95 314 ms at 200,000 variants on Postgres)."""
    from db.review_access import probe_exists

    later, since, after = aliased(Review), aliased(Review), aliased(Review)
    query = (
        select(Review.sample_id, Review.id)
        .join(Sample, Sample.id == Review.sample_id)
        .where(
            Review.user_id == user_id,
            Review.automatic.is_(False),
            Review.decision != UNDO,
            Sample.dataset_id == dataset.id,
            # their latest vote there
            ~probe_exists(
                later,
                later.sample_id == Review.sample_id,
                later.user_id == Review.user_id,
                later.id > Review.id,
                later.automatic.is_(False),
                later.decision != UNDO,
            ),
            ~probe_exists(
                since,
                since.sample_id == Review.sample_id,
                since.id > Review.id,
                since.decision != UNDO,
                or_(
                    since.automatic.is_(True),
                    and_(
                        since.user_id != user_id,
                        ~probe_exists(
                            after,
                            after.sample_id == since.sample_id,
                            after.user_id == since.user_id,
                            after.id > since.id,
                        ),
                    ),
                ),
            ),
        )
    )
    if before is not None:
        query = query.where(Review.id < before)
    return list(session.execute(query.order_by(Review.user_id, Review.id.desc()).limit(limit)).tuples())
