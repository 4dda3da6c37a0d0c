"""Review decisions one at a time, with optimistic locking, and the review queue as the doors ask for it.

A decision is an append-only `reviews` row (the audit trail); the status it leaves follows the k-review rules
(services.review_status). Bulk decisions, with set-based writes: services.review_bulk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.errors import ConflictError, PermissionDenied, TooLargeError, ValidationFailed
from core.textnorm import content_hash, written_text_problem
from db import training_runs as db_runs
from db.models import (
    REVIEWABLE_ORIGINS,
    Dataset,
    Decision,
    Origin,
    RejectReason,
    Review,
    ReviewStatus,
    Sample,
    User,
    utcnow,
)
from db.review_filter import QueueFilter
from db.reviews import QueuePage, get_sample, review_queue, sample_family, sample_state
from db.session import affected_rows
from services import leak_guard
from services.access import Need, check_dataset_id
from services.review_filter import check_sort, checked_filter
from services.review_status import (
    editors_to_review,
    own_submission,
    status_values,
)
from services.variant_scoring import text_changed_values
from services.votes import APPROVING, cast, votes_and_editors, votes_on
from workers.augment.catalog import METHODS as AUGMENT_METHODS


def check_decision(
    decision: str,
    reason: str | None,
    text: str | None,
    *,
    bulk: bool = False,
    max_chars: int = 20_000,
    before: str | None = None,
) -> tuple[str, str | None, str | None]:
    allowed = [Decision.approve.value, Decision.reject.value] if bulk else [d.value for d in Decision]
    if decision not in allowed:
        raise ValidationFailed(f"decision must be one of {', '.join(allowed)}; got {decision!r}", field="decision")
    if decision == Decision.reject:
        if reason not in RejectReason.__members__:
            raise ValidationFailed(
                f"a rejection needs a reason, one of {', '.join(RejectReason)}; got {reason!r}",
                field="reason",
            )
    elif reason is not None:
        raise ValidationFailed("a reason goes with decision 'reject' only", field="reason")
    if decision == Decision.edit:
        text = (text or "").strip()
        if not text:
            raise ValidationFailed("an edit needs the new text", field="text")
        if problem := written_text_problem(text, before):  # what the text held may stay (written_text_problem)
            raise ValidationFailed(f"the edited text {problem}", field="text")
        if len(text) > max_chars:
            raise TooLargeError(f"text exceeds {max_chars} characters", field="text")
    elif text is not None:
        raise ValidationFailed("text goes with decision 'edit' only", field="text")
    return decision, reason, text


def decide(
    session: Session,
    sample_id: int,
    user: User,
    decision: str,
    version: int,
    *,
    reason: str | None = None,
    text: str | None = None,
    note: str | None = None,
    max_chars: int = 20_000,
) -> Sample:
    """Record one user's decision on a variant they saw at `version`; a stale version raises ConflictError."""
    sample = visible_sample(session, sample_id, user)
    if decision == Decision.edit and text is not None and text.strip() == sample.text.strip():
        # Nothing rewritten (the editor sent the text back, a trailing space at most): an approval of the text,
        # which withdraws no one's vote as an edit would.
        decision, text = Decision.approve.value, None
    if decision == Decision.edit and sample.version != version:
        # a stale edit is told so first: its text was checked against the text someone else wrote since (a 422
        # for a character that text no longer holds, a 413) before the 409 that says why
        raise _stale(session, sample, version, user)
    decision, reason, text = check_decision(decision, reason, text, max_chars=max_chars, before=sample.text)
    if sample.origin == Origin.original:
        raise ValidationFailed(f"sample {sample_id} is an original; only variants are reviewed", field="sample_id")
    if decision in APPROVING and own_submission(sample, user):
        raise PermissionDenied(
            f"sample {sample_id} is a text you submitted, or a variant of one: another member of the project "
            "approves or edits it (you may reject it)",
            field="sample_id",
        )
    seen = version
    for attempt in range(3):
        try:
            return _decide_once(session, sample, user, decision, seen, reason=reason, text=text, note=note)
        except _LostTheRace as lost:
            # Another vote committed between our read and our write: with k ≥ 2 and the variant still pending,
            # an approval or rejection counts beside theirs, as it would have a moment later (one change is none).
            if decision not in (Decision.approve, Decision.reject) or attempt == 2:
                raise lost.conflict from None
            session.refresh(sample)
    raise AssertionError("unreachable")


class _LostTheRace(Exception):
    def __init__(self, conflict: ConflictError) -> None:
        self.conflict = conflict


def _decide_once(
    session: Session,
    sample: Sample,
    user: User,
    decision: str,
    version: int,
    *,
    reason: str | None,
    text: str | None,
    note: str | None,
) -> Sample:
    if sample.version != version:
        if not _only_others_votes_since(session, sample, version, user, decision):
            raise _stale(session, sample, version, user)
        version = sample.version  # the text judged is the text now, still waiting: the vote counts beside theirs
    standing, editor = votes_and_editors(session, [sample.id]).get(sample.id, ({}, None))
    votes = cast(standing, user.id, decision)
    if decision == Decision.edit:
        editor = user.id
    values = status_values(
        session,
        sample,
        votes,
        text if decision == Decision.edit else None,
        editors_to_review(session, {sample.id: editor}).get(sample.id),
    )
    text_before = sample.text
    text_after = text_before
    if decision == Decision.edit:
        assert text is not None
        text_after = text
        values.update(rewritten(session, sample, text, action="the edited text"))
        # SET expressions read the row as it was, so the first edit keeps what the augmenter generated.
        values.update(generated_text=func.coalesce(Sample.generated_text, Sample.text))
    return apply_and_record(
        session,
        sample,
        version,
        values,
        {
            "user_id": user.id,
            "decision": decision,
            "reason": reason,
            "note": note,
            "text_before": text_before,
            "text_after": text_after,
        },
        # another request took this version between our read and write
        lambda: _LostTheRace(_stale(session, sample, version, user)),
    )


def rewritten(session: Session, sample: Sample, text: str, *, action: str) -> dict[str, Any]:
    """What a variant's row gets when a person writes `text` over it (an edit, an undo that restores the text
    an edit replaced; `action` names it in errors): the text, its hash and its scores
    (services.variant_scoring.text_changed_values). Refused with 409 when another sample of the dataset has the
    same normalised text, with 422 (naming the sample in `leak_of`) when it is a near-copy of a val/test text.
    A pseudo-label holds its parent's text under a hash of its own (db.training_runs.pseudo_label_hash): written
    back to that text (an undo of its edit), it takes that hash again, not the parent's (which made its undo a
    409 "duplicates sample <parent>" every time)."""
    digest = content_hash(text)
    if sample.origin == Origin.pseudo_label and sample.parent_id is not None:
        parent_hash = session.scalar(select(Sample.content_hash).where(Sample.id == sample.parent_id))
        if parent_hash == digest:
            digest = db_runs.pseudo_label_hash(digest)
    closest = None
    if text != sample.text:
        # A near-copy of a val/test text is refused before anyone reviews it: one approval trains it (leak_guard).
        # Checked before the duplicates, so that an exact copy of a val text is named as the leak it is, not as
        # "duplicates sample N" like a copy of a train text.
        closest = leak_guard.closest(session, session.get_one(Dataset, sample.dataset_id), [text])[0]
        if closest.leak is not None:
            raise ValidationFailed(
                f"{action} is {closest.leak.describe()}", field="text", extra={"leak_of": closest.leak.sample_id}
            )
    duplicate = session.scalar(
        select(Sample.id).where(
            Sample.dataset_id == sample.dataset_id, Sample.content_hash == digest, Sample.id != sample.id
        )
    )
    if duplicate is not None:
        raise ConflictError(f"{action} duplicates sample {duplicate}", field="text", extra={"duplicate_of": duplicate})
    values: dict[str, Any] = {"text": text, "content_hash": digest}
    if closest is not None:
        # The scores as last committed, the row held until commit: a label-model scorer writes them without a
        # new version, so the row read when the request began may hold older ones, which would then be kept as
        # the generated text's (what auto-approval learns from). A scorer after this refuses the new text.
        session.refresh(sample, with_for_update=True)
        values.update(text_changed_values(session, sample, text, closest))
    return values


def apply_and_record(
    session: Session,
    sample: Sample,
    version: int,
    values: dict[str, Any],
    review: dict[str, Any],
    conflict: Callable[[], Exception],
) -> Sample:
    """Write `values` to the sample only while it is still at `version` (else raise `conflict()`), and record
    the decision that did it (`review`: the Review row's fields) in the same transaction."""
    claimed = affected_rows(
        session.execute(
            update(Sample)
            .where(Sample.id == sample.id, Sample.version == version)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    )
    if claimed != 1:
        raise conflict()
    session.add(Review(sample_id=sample.id, version_seen=version, created_at=utcnow(), **review))
    session.flush()
    session.refresh(sample)
    return sample


def _only_others_votes_since(session: Session, sample: Sample, seen: int, user: User, decision: str) -> bool:
    """Whether a vote cast on version `seen` still judges what the sample is now: an approval or rejection, the
    variant still pending, and every version since made by another person's approval or rejection (no edit, no
    undo, no automatic decision, no re-evaluation under a new k, nothing of this user's in another tab). With k
    reviewers two people see one card at once; the second's vote was refused because the first had voted."""
    if decision not in (Decision.approve, Decision.reject) or sample.review_status != ReviewStatus.pending:
        return False
    return votes_of_others_only(session, sample.id, seen, sample.version, user.id)


def votes_of_others_only(session: Session, sample_id: int, seen: int, now: int, user_id: int) -> bool:
    """Whether every version of the sample from `seen` to `now` was made by another person's approval or
    rejection."""
    if not 0 < seen < now:
        return False
    since = session.execute(
        select(Review.user_id, Review.decision, Review.automatic).where(
            Review.sample_id == sample_id, Review.version_seen >= seen
        )
    ).all()
    return len(since) == now - seen and all(
        not automatic and voter != user_id and made in (Decision.approve, Decision.reject)
        for voter, made, automatic in since
    )


def _stale(session: Session, sample: Sample, seen: int, user: User) -> ConflictError:
    current = sample_state(session, sample)
    if seen > current["version"]:  # no reader saw this version: a client's mistake, not a change
        return ConflictError(
            f"sample {sample.id} has no version {seen} (now {current['version']}): send the version you read",
            field="version",
            extra={"current": current},
        )
    last = session.execute(
        select(Review.user_id, Review.version_seen).where(Review.sample_id == sample.id).order_by(Review.id.desc())
    ).first()
    if last is None or last.version_seen + 1 != current["version"]:  # no review made this version (a new k did)
        who = "its review status was re-evaluated"
    elif last.user_id == user.id:
        who = "you decided it since (in another tab or window)"
    else:
        who = "someone else decided first"
    extra: dict[str, Any] = {"current": current}
    if who == "someone else decided first" and not session.get_one(Dataset, sample.dataset_id).distribute_work:
        # Without shared-out work every annotator is shown the same cards in the same order: two at once lose
        # about half their decisions to each other (an annotator's find: 65 of 130), and nothing said why.
        extra["advice"] = (
            "others review this queue at the same time and see the same cards; a lead can share the pending "
            "variants out (Datasets → Review settings), so that each annotator gets their own"
        )
    return ConflictError(
        f"sample {sample.id} changed since you saw it (version {seen}, now {current['version']}): {who}",
        field="version",
        extra=extra,
    )


# The queue, as the doors ask for it ---------------------------------------------------------------


# What a reviewed row's `method` may say: the augmenters' methods, and the pseudo-labels' own.
REVIEWED_METHODS = (*AUGMENT_METHODS, "pseudo_label")


def queue_filter(
    *,
    statuses: tuple[str, ...] = (ReviewStatus.pending.value,),
    origins: tuple[str, ...] = REVIEWABLE_ORIGINS,
    task: str | None = None,
    label: str | None = None,
    methods: tuple[str, ...] = (),
    min_similarity: float | None = None,
    max_similarity: float | None = None,
    min_consistency: float | None = None,
    max_consistency: float | None = None,
    min_semantic: float | None = None,
    max_semantic: float | None = None,
    search: str | None = None,
    flagged: bool | None = None,
    parent_id: int | None = None,
    job_id: int | None = None,
    not_reviewed_by: int | None = None,
) -> QueueFilter:
    """A queue filter from the doors' parameters. A method no variant can have is refused: a typo would show an
    empty queue that looks like an answer."""
    for method in methods:
        if method not in REVIEWED_METHODS:
            raise ValidationFailed(
                f"method must be one of {', '.join(REVIEWED_METHODS)}; got {method!r}", field="method"
            )
    return QueueFilter(
        statuses=statuses or (ReviewStatus.pending.value,),
        origins=origins or REVIEWABLE_ORIGINS,
        task=task or None,
        label=label or None,
        methods=methods,
        min_similarity=min_similarity,
        max_similarity=max_similarity,
        min_consistency=min_consistency,
        max_consistency=max_consistency,
        min_semantic=min_semantic,
        max_semantic=max_semantic,
        search=search,
        flagged=flagged,
        parent_id=parent_id,
        job_id=job_id,
        not_reviewed_by=not_reviewed_by,
    )


@dataclass
class QueueView:
    page: QueuePage
    dataset: Dataset
    not_reviewed_by_me: bool


def queue_page(
    session: Session,
    dataset_name: str,
    viewer: User,
    f: QueueFilter,
    *,
    unreviewed: bool | None,
    sort: str,
    page: int,
    page_size: int,
    count_ahead: int,
) -> QueueView:
    """One page of a dataset's queue for `viewer`. With more than one review required, a pending queue hides
    what the viewer already voted on unless they ask otherwise."""
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, viewer)
    check_sort(sort)
    if page < 1:
        raise ValidationFailed("page starts at 1", field="page")
    f = checked_filter(f, dataset)
    leak_guard.warm_soon(session, dataset)  # an edit checks against val/test: its index is built by then
    if unreviewed is None:
        unreviewed = dataset.reviews_required > 1 and ReviewStatus.pending.value in f.statuses
    f = replace(f, not_reviewed_by=viewer.id if unreviewed else None)
    needs = None
    if sort.lstrip("-") == "expected_value":
        from services.review_stats import class_needs

        needs = class_needs(session, dataset)
    result = review_queue(
        session,
        dataset,
        f,
        sort=sort,
        page=page,
        page_size=page_size,
        count_ahead=count_ahead,
        needs=needs,
    )
    from services.review_undo import with_undoable  # it builds on this module

    ids = [s.id for s in result.items]
    result.votes = with_undoable(session, votes_on(session, ids, viewer.id), ids, viewer)
    return QueueView(result, dataset, unreviewed)


def visible_sample(session: Session, sample_id: int, user: User | None, need: Need = Need.member) -> Sample:
    """A sample of a dataset the user may see; to anyone else it does not exist."""
    sample = get_sample(session, sample_id)
    check_dataset_id(session, sample.dataset_id, user, need, missing=f"sample {sample_id} not found", field="sample_id")
    return sample


def family(session: Session, sample_id: int, user: User | None) -> dict[str, Any]:
    """A sample with its family (source and every variant of it) and its review history."""
    visible_sample(session, sample_id, user)
    return sample_family(session, sample_id)


def dataset_agreement(session: Session, dataset_name: str, user: User | None) -> dict[str, Any]:
    from services.datasets import dataset_named
    from services.review_stats import agreement

    return agreement(session, dataset_named(session, dataset_name, user))


def dataset_progress(session: Session, dataset_name: str, user: User | None) -> dict[str, Any]:
    from services.datasets import dataset_named
    from services.review_stats import review_progress

    return review_progress(session, dataset_named(session, dataset_name, user))
