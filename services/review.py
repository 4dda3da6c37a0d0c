"""Review decisions: one at a time with optimistic locking, or in bulk with set-based writes.

A decision is an append-only `reviews` row (the audit trail); the variant's status follows from each user's
latest vote on its current text:
- k = 1 reviews required (the common case): the latest decision decides. A second reviewer who disagrees
  overrules the first, visibly in the trail; the variant never falls back to pending on a 1–1 split.
- k ≥ 2: a side wins once it holds a majority of k (k // 2 + 1 votes) and more votes than the other side; k = 2
  needs both to agree, and a split waits for a third.
- An edit changes the text, so it withdraws the votes cast on the old text: the editor's edit is the one vote
  on the new text, and with k ≥ 2 the others must vote again.
- Changing k re-evaluates every variant under the new k, in one transaction (`reevaluate`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any
from typing import cast as typing_cast

from sqlalchemy import ColumnElement, and_, case, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from core.errors import ConflictError, NotFoundError, PermissionDenied, TooLargeError, ValidationFailed
from core.textnorm import content_hash, written_text_problem
from db import training_runs as db_runs
from db.chunks import chunked
from db.datasets import reviews_required_now
from db.models import (
    REVIEWABLE_ORIGINS,
    Dataset,
    Decision,
    Origin,
    RejectReason,
    Review,
    ReviewStatus,
    Role,
    Sample,
    User,
    utcnow,
)
from db.review_access import conditions, not_voted_by
from db.review_assignments import leased_to, others_leasing
from db.review_filter import SORTS, QueueFilter
from db.reviews import (
    APPROVING,
    QueuePage,
    cast,
    get_sample,
    pending_only,
    pending_variant_condition,
    review_queue,
    sample_family,
    sample_state,
    vote_counts,
    votes_and_editors,
)
from db.session import affected_rows
from services import leak_guard
from services.access import Need, check_dataset_id, is_admin
from services.variant_scoring import text_changed_values
from workers.augment.catalog import METHODS as AUGMENT_METHODS


def own_submission(sample: Sample, user: User) -> bool:
    """A text this non-admin sent through POST /augment, or a variant of one: another member approves it, or it
    would train with no one's review but its author's. Its author may still reject it. (A variant is a
    paraphrase of their text: approved by its submitter alone, the variants of a submission someone else had to
    rewrite trained once the rewrite was approved, an attacker's find of 12-06.)"""

    def theirs(text: Sample | None) -> bool:
        return text is not None and text.origin == Origin.submitted and text.created_by == user.id

    return not is_admin(user) and (theirs(sample) or (sample.parent_id is not None and theirs(sample.parent)))


def not_own_submission(user: User) -> ColumnElement[bool]:
    """SQL for `not own_submission(sample, user)` (a sample with no recorded author is no one's)."""
    parent = aliased(Sample)
    return and_(
        or_(Sample.origin != Origin.submitted, Sample.created_by.is_(None), Sample.created_by != user.id),
        ~exists().where(parent.id == Sample.parent_id, parent.origin == Origin.submitted, parent.created_by == user.id),
    )


def status_from_votes(votes: dict[int, str], reviews_required: int) -> str:
    """The status {user id → latest vote} (most recent last) gives under k reviews required."""
    if not votes:
        return ReviewStatus.pending.value
    if reviews_required == 1:
        latest = next(reversed(votes.values()))
        return (ReviewStatus.approved if latest in APPROVING else ReviewStatus.rejected).value
    approve, reject = vote_counts(votes)
    majority = reviews_required // 2 + 1
    if approve >= majority and approve > reject:
        return ReviewStatus.approved.value
    if reject >= majority and reject > approve:
        return ReviewStatus.rejected.value
    return ReviewStatus.pending.value


# What the automatic step decided at creation (auto-approval, the label model's rejection), in place of people.
AUTO_DECIDED = (ReviewStatus.approved.value, ReviewStatus.rejected.value)


def status_of(
    votes: dict[int, str],
    reviews_required: int,
    auto_decision: str | None,
    edited: bool = False,
    editor: int | None = None,
) -> str:
    """A variant's status from people's votes under k reviews required, and what the automatic step decided
    (Sample.auto_decision) on the text it generated. The automatic decision stood in for the k reviews: it
    holds until a person votes; then a majority of k decides as for any variant, and short of one:
    - a person's rejection decides alone (it takes the text out of training, as a rule's approval put it in);
    - approvals alone keep an auto-approval (agreeing with it), and send an auto-rejection back to people
      (overturning the rule takes k's majority, as approving any variant does);
    - a split waits for a further review.
    An undo of the last vote returns the rule's decision. A text a person rewrote (`edited`) is no longer what
    the rule judged: its votes decide under k alone. (Counted as one of k, until 12-06, one person agreeing
    with an auto-approval at k = 2 sent it back to pending, out of training, and one disagreeing decided
    nothing.) An audited variant ("audit") is people's, under k.

    A text a non-admin wrote (`editor`: their edit stands and `edited`) is approved only with the approval of
    someone else: it is their text, put into the dataset, and waits for review as a submitted text does (with
    k = 1 their edit alone trained, until 12-06: an annotator could add any text with labels of their choosing).
    With k = 1 the latest decision of anyone but the writer decides (the writer's rejection counts); under k ≥ 2
    a majority already holds another approval."""
    if edited and editor is not None and reviews_required == 1:
        # k = 1, the latest decision wins: the latest of anyone but the writer (their rejection counts, their
        # approval never decides: it overturned a third person's rejection of the text another had approved)
        others = {user_id: vote for user_id, vote in votes.items() if user_id != editor or vote not in APPROVING}
        return status_from_votes(others, 1)
    decided = status_from_votes(votes, reviews_required)
    if auto_decision not in AUTO_DECIDED or edited:
        return decided
    if not votes:
        return str(auto_decision)
    if decided != ReviewStatus.pending.value:
        return decided
    approve, reject = vote_counts(votes)
    if reject and not approve:
        return ReviewStatus.rejected.value
    if approve and not reject and auto_decision == ReviewStatus.approved.value:
        return ReviewStatus.approved.value
    return ReviewStatus.pending.value


def editors_to_review(session: Session, editors: dict[int, int | None]) -> dict[int, int]:
    """sample id → its editor (db.reviews.votes_and_editors), for the texts a non-admin wrote: another member's
    approval trains those (status_of). An admin's edit is trusted as an admin's import is."""
    users = {user_id for user_id in editors.values() if user_id is not None}
    if not users:
        return {}
    admins = set(session.scalars(select(User.id).where(User.id.in_(users), User.role == Role.admin)))
    return {sample_id: user for sample_id, user in editors.items() if user is not None and user not in admins}


@dataclass
class Standing:
    """The samples' standing votes (sample id → user id → decision: `review_count` counts them), for the texts a
    non-admin wrote their writer (editors_to_review), for a non-admin's submission and its variants its author
    (submitters): what status_of reads, through `counting`."""

    votes: dict[int, dict[int, str]]
    editors: dict[int, int]
    authors: dict[int, int]

    def counting(self, sample_id: int, votes: dict[int, str] | None = None) -> dict[int, str]:
        """The votes that decide the sample's status (`votes`, or its standing ones): not its author's approval."""
        return counted(self.votes.get(sample_id, {}) if votes is None else votes, self.authors.get(sample_id))


def standing_votes(session: Session, sample_ids: list[int]) -> Standing:
    standing = votes_and_editors(session, sample_ids)
    return Standing(
        {sample_id: v for sample_id, (v, _editor) in standing.items()},
        editors_to_review(session, {sample_id: editor for sample_id, (_v, editor) in standing.items()}),
        submitters(session, list(standing)),
    )


def submitters(session: Session, sample_ids: list[int]) -> dict[int, int]:
    """sample id → the non-admin who submitted it, or the text it is a variant of (own_submission's author)."""
    parent = aliased(Sample)
    found: dict[int, int] = {}
    for chunk in chunked(sample_ids):
        rows = session.execute(
            select(Sample.id, Sample.origin, Sample.created_by, parent.origin, parent.created_by)
            .outerjoin(parent, parent.id == Sample.parent_id)
            .where(Sample.id.in_(chunk), or_(Sample.origin == Origin.submitted, parent.origin == Origin.submitted))
        ).tuples()
        for sample_id, origin, by, parent_origin, parent_by in rows:
            author = by if origin == Origin.submitted else parent_by if parent_origin == Origin.submitted else None
            if author is not None:
                found[sample_id] = author
    if not found:
        return {}
    admins = set(session.scalars(select(User.id).where(User.id.in_(set(found.values())), User.role == Role.admin)))
    return {sample_id: author for sample_id, author in found.items() if author not in admins}


def counted(votes: dict[int, str], author: int | None) -> dict[int, str]:
    """The votes that decide a variant's status: not its submitter's approval of their own text (or of its
    variant). The doors refuse that approval (403), but one cast before they did, or while its author was an
    admin (judged by the role they hold now), counted at every re-evaluation: the text trained with no one's
    approval but its author's (an attacker's find). Their rejection counts."""
    if author is None or votes.get(author) not in APPROVING:
        return votes
    return {user_id: vote for user_id, vote in votes.items() if user_id != author}


def rewritten_by_a_person(sample: Sample, text: str | None = None) -> bool:
    """Whether the variant's text, or `text` when a decision writes one over it, is not the one generated (before
    the first edit, `generated_text` is empty: the text is the generated one; Sample.as_generated)."""
    if text is None:
        return not sample.as_generated
    return text != (sample.text if sample.generated_text is None else sample.generated_text)


def _check_decision(
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
    decision, reason, text = _check_decision(decision, reason, text, max_chars=max_chars, before=sample.text)
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
    duplicate = session.scalar(
        select(Sample.id).where(
            Sample.dataset_id == sample.dataset_id, Sample.content_hash == digest, Sample.id != sample.id
        )
    )
    if duplicate is not None:
        raise ConflictError(f"{action} duplicates sample {duplicate}", field="text", extra={"duplicate_of": duplicate})
    values: dict[str, Any] = {"text": text, "content_hash": digest}
    if text != sample.text:
        # A near-copy of a val/test text is refused before anyone reviews it: one approval trains it (leak_guard).
        closest = leak_guard.closest(session, session.get_one(Dataset, sample.dataset_id), [text])[0]
        if closest.leak is not None:
            raise ValidationFailed(
                f"{action} is {closest.leak.describe()}", field="text", extra={"leak_of": closest.leak.sample_id}
            )
        # The scores as last committed, the row held until commit: a label-model scorer writes them without a
        # new version, so the row read when the request began may hold older ones, which would then be kept as
        # the generated text's (what auto-approval learns from). A scorer after this refuses the new text.
        session.refresh(sample, with_for_update=True)
        values.update(text_changed_values(session, sample, text, closest))
    return values


def status_values(
    session: Session, sample: Sample, votes: dict[int, str], text: str | None = None, editor: int | None = None
) -> dict[str, Any]:
    """What a sample's row gets when its votes become `votes` (and its text `text`, if it changes; `editor`: the
    non-admin who wrote it, editors_to_review): the status they give under its dataset's rule, their count, and
    the next version."""
    k = reviews_required_now(session, sample.dataset_id)
    counting = counted(votes, submitters(session, [sample.id]).get(sample.id))
    return {
        "review_status": status_of(counting, k, sample.auto_decision, rewritten_by_a_person(sample, text), editor),
        "review_count": len(votes),
        "version": Sample.version + 1,
        "updated_at": utcnow(),
    }


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
    return _votes_of_others_only(session, sample.id, seen, sample.version, user.id)


def _votes_of_others_only(session: Session, sample_id: int, seen: int, now: int, user_id: int) -> bool:
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
    return ConflictError(
        f"sample {sample.id} changed since you saw it (version {seen}, now {current['version']}): {who}",
        field="version",
        extra={"current": current},
    )


def reevaluate(session: Session, dataset: Dataset, only: Collection[int] | None = None) -> dict[str, int]:
    """Recompute every reviewed variant's status (or those of `only` among them) under the dataset's current
    reviews_required and its voters' current roles, in the caller's transaction; returns how many moved, by
    transition ("approved→pending": 12, ...). Raising k from 1 to 3 sends single-vote approvals back to pending,
    so they leave training until two more people agree."""
    reviewed_here = select(Sample.id).where(
        Sample.dataset_id == dataset.id, Sample.origin.in_(REVIEWABLE_ORIGINS), Sample.review_count > 0
    )
    if only is None:
        reviewed = list(session.scalars(reviewed_here.order_by(Sample.id)))
    else:
        reviewed = sorted(
            sample_id
            for chunk in chunked(sorted(set(only)))
            for sample_id in session.scalars(reviewed_here.where(Sample.id.in_(chunk)))
        )
    changes: dict[str, int] = {}
    now = utcnow()
    for chunk in chunked(reviewed):
        current = {
            sample_id: (status, auto, not as_generated)
            for sample_id, status, auto, as_generated in session.execute(
                select(Sample.id, Sample.review_status, Sample.auto_decision, Sample.as_generated)
                .where(Sample.id.in_(chunk))
                .with_for_update()
            ).tuples()
        }
        standing = standing_votes(session, chunk)
        moved: dict[str, list[int]] = {}
        for sample_id, (status, auto, edited) in current.items():
            votes = standing.counting(sample_id)
            new = status_of(votes, dataset.reviews_required, auto, edited, standing.editors.get(sample_id))
            if new != status:
                moved.setdefault(new, []).append(sample_id)
                changes[f"{status}→{new}"] = changes.get(f"{status}→{new}", 0) + 1
        for status, ids in moved.items():
            session.execute(
                update(Sample)
                .where(Sample.id.in_(ids))
                .values(review_status=status, version=Sample.version + 1, updated_at=now)
                .execution_options(synchronize_session=False)
            )
    session.flush()
    session.expire_all()
    return changes


def reevaluate_for_role(session: Session, user: User) -> dict[str, dict[str, int]]:
    """After `user`'s role changed, in the caller's transaction: the statuses that read it, recomputed. An admin's
    approval of their own submission and an admin's edit count as an admin's import does; judged by the role
    held now (counted, editors_to_review, submitters), so a demoted admin's self-approved text goes back to
    pending and stops training at once (it trained on until something else re-evaluated it: an attacker's
    find), and a new admin's edits count as theirs. Reads the variants they edited or submitted, and
    the variants of their submissions (a role weighs nowhere else: a vote on another's text counts whoever casts
    it); returns dataset name → transitions (reevaluate)."""
    edited = select(Review.sample_id).where(Review.user_id == user.id, Review.decision == Decision.edit)
    submitted = select(Sample.id).where(Sample.origin == Origin.submitted, Sample.created_by == user.id)
    rows = session.execute(
        select(Sample.dataset_id, Sample.id).where(
            or_(Sample.id.in_(edited), Sample.id.in_(submitted), Sample.parent_id.in_(submitted))
        )
    ).tuples()
    touched: dict[int, set[int]] = {}
    for dataset_id, sample_id in rows:
        touched.setdefault(dataset_id, set()).add(sample_id)
    moved: dict[str, dict[str, int]] = {}
    for dataset_id, sample_ids in sorted(touched.items()):
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None and (changes := reevaluate(session, dataset, only=sample_ids)):
            moved[dataset.name] = changes
    return moved


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
    decision, reason, _ = _check_decision(decision, reason, None, bulk=True)
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
                    and _votes_of_others_only(session, r[0], seen[r[0]], r[1], user.id)
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
    if sort not in SORTS:
        raise ValidationFailed(f"sort must be one of {', '.join(SORTS)}; got {sort!r}", field="sort")
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
        viewer_id=viewer.id,
        needs=needs,
    )
    from services.review_undo import with_undoable  # it builds on this module

    ids = [s.id for s in result.items]
    result.votes = with_undoable(session, result.votes, ids, viewer)
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


def dataset_agreement(session: Session, dataset_name: str, user: User | None) -> dict[str, Any]:
    from services.datasets import dataset_named
    from services.review_stats import agreement

    return agreement(session, dataset_named(session, dataset_name, user))


def dataset_progress(session: Session, dataset_name: str, user: User | None) -> dict[str, Any]:
    from services.datasets import dataset_named
    from services.review_stats import review_progress

    return review_progress(session, dataset_named(session, dataset_name, user))
