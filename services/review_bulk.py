"""Bulk review decisions: one decision on every pending variant of a selection (ids, a family or a queue
filter), counted first, then applied with set-based writes, a chunk of ids per statement. Each vote's status
follows the k-review rules (services.review_status); one decision at a time: services.review.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from typing import cast as typing_cast

from sqlalchemy import ColumnElement, case, insert, or_, select, update
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError, TooLargeError, ValidationFailed
from db.chunks import chunked
from db.datasets import reviews_required_now
from db.models import REVIEWABLE_ORIGINS, Dataset, Decision, Origin, Review, ReviewStatus, Sample, User, utcnow
from db.review_access import conditions, not_voted_by
from db.review_assignments import leased_to, others_leasing
from db.review_filter import QueueFilter
from db.reviews import pending_variant_condition
from services.access import is_admin
from services.review import check_decision, votes_of_others_only
from services.review_filter import pending_only
from services.review_status import not_own_submission, standing_votes, status_of
from services.votes import APPROVING, cast


@dataclass
class BulkSelection:
    """Exactly one of: explicit ids, a whole family (all pending variants of a source), or a queue filter."""

    sample_ids: list[int] | None = None
    parent_id: int | None = None
    filter: QueueFilter | None = None
    # With ids or a family: each variant's version as the reviewer saw it; the vote goes to those unchanged only.
    versions: dict[int, int] | None = None

    def check(self) -> None:
        given = [name for name in ("sample_ids", "parent_id", "filter") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValidationFailed("give exactly one of sample_ids, parent_id or filter", field="sample_ids")
        if self.versions is not None and self.filter is not None:
            raise ValidationFailed(
                "versions go with sample_ids or parent_id; a filter's variants are confirmed by expected_count",
                field="versions",
            )


def selection_guards(
    dataset: Dataset, user: User, selection: BulkSelection, decision: str, *, leases: bool = True
) -> list[ColumnElement[bool]]:
    """The conditions on a bulk decision's targets beyond the selection itself (bulk_targets): checked again
    on the rows once locked (bulk_decide), since an edit, or a colleague's claim, may land in between."""
    mine = [] if decision not in APPROVING or is_admin(user) else [not_own_submission(user)]
    if decision in APPROVING and selection.versions is None:  # a person's text, approved by one who read it
        mine.append(typing_cast("ColumnElement[bool]", Sample.as_generated))  # the hybrid's SQL side
        mine.append(Sample.origin != Origin.submitted)  # a lead's submission, swept in by a colleague's filter
    if leases and dataset.distribute_work:
        k = dataset.reviews_required
        missing = case((Sample.review_count < k, k - Sample.review_count), else_=1)
        now = utcnow()  # one's own lease makes it one's own to decide, whoever else holds one
        mine.append(or_(leased_to(user.id, now), others_leasing(user.id, now, with_work_left=True) < missing))
    return mine


def bulk_targets(
    session: Session, dataset: Dataset, user: User, selection: BulkSelection, decision: str, *, leases: bool = True
) -> list[int]:
    """Ids of the pending variants a bulk decision would add this user's vote to (never one they voted on, nor,
    to approve or edit, a text they submitted themselves). An approval passes over a text a person wrote
    (rewritten, or submitted) unless the selection names the version the approver saw (`versions`: the cards on
    their page): an approval by filter swept in, unseen, an annotator's rewritten text waiting for another
    member's approval, and a lead's submission sent after a colleague had counted (attackers' finds). Where the
    dataset shares out its work, a variant whose missing reviews other members hold leases for (and have yet to
    give: a holder who voted, or whose token ran out, has no work left on it) is theirs, as it is to a claim,
    unless one holds a lease on it oneself (`leases`; False: counted as if not, to say how many were passed
    over): a filter's bulk rejection decided a colleague's whole share under their open page (an attacker's
    find)."""
    selection.check()
    mine = selection_guards(dataset, user, selection, decision, leases=leases)
    if selection.filter is not None:
        try:
            where = conditions(session, dataset, pending_only(dataset, selection.filter, user.id))
        except ValidationFailed as err:  # the filter is the body's `filter` here, not the queue's query
            raise ValidationFailed(err.message, field=f"filter.{err.field}" if err.field else "filter") from None
        return list(session.scalars(select(Sample.id).where(*where, *mine).order_by(Sample.id)))
    base = [pending_variant_condition(dataset), *mine]
    not_voted = not_voted_by(user.id)
    if selection.parent_id is not None:
        parent = session.get(Sample, selection.parent_id)  # missing, or another dataset's: the same answer
        if parent is None or parent.dataset_id != dataset.id:
            raise NotFoundError(f"sample {selection.parent_id} not found in this dataset", field="parent_id")
        return list(
            session.scalars(
                select(Sample.id).where(*base, Sample.parent_id == selection.parent_id, not_voted).order_by(Sample.id)
            )
        )
    ids = sorted(set(selection.sample_ids or []))
    found: list[int] = []
    for chunk in chunked(ids):
        found.extend(session.scalars(select(Sample.id).where(*base, Sample.id.in_(chunk), not_voted)))
    return sorted(found)


def skipped_ids(session: Session, dataset: Dataset, user: User, named: list[int], targets: list[int]) -> dict[str, int]:
    """Why ids a bulk decision named are not among its targets, counted by reason: the decision by ids answered
    only how many it applied, where the same decision one by one says why not (an original, a text of one's
    own, one decided already)."""
    rest = sorted(set(named) - set(targets))
    reasons: dict[str, int] = {}
    seen: set[int] = set()
    admin = is_admin(user)
    for chunk in chunked(rest):
        rows = session.execute(
            select(
                Sample.id,
                Sample.origin,
                Sample.review_status,
                not_voted_by(user.id),
                not_own_submission(user),
                Sample.as_generated,
            ).where(Sample.dataset_id == dataset.id, Sample.id.in_(chunk))
        ).all()
        for sample_id, origin, status, not_voted, not_own, as_generated in rows:
            seen.add(sample_id)
            if origin not in REVIEWABLE_ORIGINS:
                why = "not_a_variant"  # an original: it has no review
            elif status != ReviewStatus.pending:
                why = "decided"
            elif not not_voted:
                why = "voted_already"
            elif not not_own and not admin:  # an admin may approve their own
                why = "own_submission"
            elif not as_generated:
                why = "rewritten"  # a person's text: approved one by one, or with the version seen (`versions`)
            elif origin == Origin.submitted:
                why = "submitted"  # likewise
            else:
                why = "changed"  # between the selection and this count
            reasons[why] = reasons.get(why, 0) + 1
    if len(seen) < len(rest):
        reasons["not_in_dataset"] = len(rest) - len(seen)
    return reasons


def bulk_decide(
    session: Session,
    dataset: Dataset,
    user: User,
    decision: str,
    selection: BulkSelection,
    *,
    reason: str | None = None,
    confirm: bool = False,
    expected_count: int | None = None,
    max_items: int = 50_000,
) -> dict[str, Any]:
    """Count (confirm=False) or apply one decision to every target; set-based, a chunk of ids per statement."""
    decision, reason, _ = check_decision(decision, reason, None, bulk=True)
    targets = bulk_targets(session, dataset, user, selection, decision)
    result: dict[str, Any] = {
        "decision": decision,
        "matched": len(targets),
        "applied": 0,
        "confirmed": confirm,
        "statuses": {},
        "changed": [],
        "skipped": {},
    }
    # what the decision would take were it not for the leases others hold (the same when work is not shared)
    unleased = (
        bulk_targets(session, dataset, user, selection, decision, leases=False) if dataset.distribute_work else targets
    )
    if selection.sample_ids is not None and selection.filter is None and selection.parent_id is None:
        result["skipped"] = skipped_ids(session, dataset, user, list(selection.sample_ids), unleased)
    if held := len(set(unleased) - set(targets)):
        result["skipped"]["leased_to_others"] = held
    if not confirm:
        return result
    if expected_count is not None and expected_count != len(targets):
        raise ConflictError(
            f"the selection now holds {len(targets)} pending variants, not {expected_count}"
            + (" (others' leases moved meanwhile: the work is shared out)" if dataset.distribute_work else "")
            + "; review the count and confirm again",
            field="expected_count",
            extra={"matched": len(targets)},
        )
    if len(targets) > max_items:
        raise TooLargeError(
            f"{len(targets)} variants exceed the bulk limit of {max_items}; narrow the filter", field="filter"
        )
    statuses: dict[str, int] = {}
    k = reviews_required_now(session, dataset.id)
    guards = selection_guards(dataset, user, selection, decision)
    for chunk in chunked(targets):
        # FOR UPDATE pins these rows on Postgres until commit; SQLite holds the write lock (BEGIN IMMEDIATE).
        locked = (
            session.execute(
                select(Sample.id, Sample.version, Sample.text, Sample.auto_decision, Sample.as_generated)
                .where(Sample.id.in_(chunk), Sample.review_status == ReviewStatus.pending)
                .with_for_update()
            )
            .tuples()
            .all()
        )
        # what the targets' guards pass now that the rows are held: a text rewritten, or a share leased, between
        # reading the targets and locking them is no longer this decision's (Postgres: read committed)
        allowed = (
            set(session.scalars(select(Sample.id).where(Sample.id.in_([r[0] for r in locked]), *guards)))
            if guards and locked
            else {r[0] for r in locked}
        )
        result["changed"] += [r[0] for r in locked if r[0] not in allowed]
        rows = [r for r in locked if r[0] in allowed]
        if (seen := selection.versions) is not None:
            decided = set(chunk) - {r[0] for r in locked}  # no longer pending since the targets were read
            # a variant others only voted on since (still pending, its text as seen) is no change (decide)
            judged = {
                r[0]
                for r in rows
                if seen.get(r[0]) == r[1]
                or (
                    decision in (Decision.approve, Decision.reject)
                    and r[0] in seen
                    and votes_of_others_only(session, r[0], seen[r[0]], r[1], user.id)
                )
            }
            result["changed"] += [*decided, *(r[0] for r in rows if r[0] not in judged)]
            rows = [r for r in rows if r[0] in judged]
        standing = standing_votes(session, [r[0] for r in rows])
        votes = standing.votes
        # A vote of this user's committed since the targets were read (their single decision in another request,
        # on a variant k ≥ 2 keeps pending): a bulk decision never replaces one's standing vote.
        if voted := [r[0] for r in rows if user.id in votes.get(r[0], {})]:
            result["skipped"]["voted_already"] = result["skipped"].get("voted_already", 0) + len(voted)
            rows = [r for r in rows if user.id not in votes.get(r[0], {})]
        now = utcnow()  # after the lock wait: the audit trail's order is the order decisions took effect
        groups: dict[tuple[str, int], list[int]] = {}
        for sample_id, _version, _text, auto, as_generated in rows:
            now_cast = cast(votes.get(sample_id, {}), user.id, decision)
            deciding = standing.counting(sample_id, now_cast)
            status = status_of(deciding, k, auto, not as_generated, standing.editors.get(sample_id))
            groups.setdefault((status, len(now_cast)), []).append(sample_id)
        for (status, count), ids in groups.items():
            session.execute(
                update(Sample)
                .where(Sample.id.in_(ids))
                .values(review_status=status, review_count=count, version=Sample.version + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            statuses[status] = statuses.get(status, 0) + len(ids)
        if rows:
            session.execute(
                insert(Review),
                [
                    {
                        "sample_id": sample_id,
                        "user_id": user.id,
                        "decision": decision,
                        "reason": reason,
                        "note": None,
                        "text_before": text,
                        "text_after": text,
                        "version_seen": version,
                        "created_at": now,
                    }
                    for sample_id, version, text, _auto, _as_generated in rows
                ],
            )
        result["applied"] += len(rows)
    session.flush()
    session.expire_all()  # the identity map holds pre-update copies of some of these rows
    result["statuses"] = statuses
    result["changed"].sort()
    return result


def bulk_decide_in(
    session: Session,
    dataset_name: str,
    user: User,
    decision: str,
    selection: BulkSelection,
    **options: Any,
) -> dict[str, Any]:
    from services.datasets import dataset_named

    return bulk_decide(session, dataset_named(session, dataset_name, user), user, decision, selection, **options)
