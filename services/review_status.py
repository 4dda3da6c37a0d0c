"""Who approved what: a variant's review status, as it follows from the votes on its current text.

A decision is an append-only `reviews` row (the audit trail); the variant's status follows from each user's
latest vote on its current text:
- k = 1 reviews required (the common case): the latest decision decides. A second reviewer who disagrees
  overrules the first, visibly in the trail; the variant never falls back to pending on a 1–1 split.
- k ≥ 2: a side wins once it holds a majority of k (k // 2 + 1 votes) and more votes than the other side; k = 2
  needs both to agree, and a split waits for a third.
- An edit changes the text, so it withdraws the votes cast on the old text: the editor's edit is the one vote
  on the new text, and with k ≥ 2 the others must vote again.
- Changing k re-evaluates every variant under the new k, in one transaction (`reevaluate`); changing a user's
  role re-evaluates the variants whose status reads it (`reevaluate_for_role`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from db.chunks import chunked
from db.datasets import reviews_required_now
from db.models import REVIEWABLE_ORIGINS, Dataset, Decision, Origin, Review, ReviewStatus, Role, Sample, User, utcnow
from services.access import is_admin
from services.votes import APPROVING, vote_counts, votes_and_editors


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


def admins_among(session: Session, users: set[int]) -> set[int]:
    """Which of `users` are admins now. Read under a share lock of their rows (Postgres): a role change under way
    is waited for and read as it ends, and one that starts waits for this transaction (a decision whose status
    read an admin being demoted committed after the demotion's recomputation had looked, and the demoted admin's
    edit trained: a reviewer's find). The status rules read roles only here."""
    if not users:
        return set()
    rows = session.execute(select(User.id, User.role).where(User.id.in_(users)).with_for_update(read=True))
    return {user_id for user_id, role in rows.tuples() if role == Role.admin}


def editors_to_review(session: Session, editors: dict[int, int | None]) -> dict[int, int]:
    """sample id → its editor (services.votes.votes_and_editors), for the texts a non-admin wrote: another member's
    approval trains those (status_of). An admin's edit is trusted as an admin's import is."""
    users = {user_id for user_id in editors.values() if user_id is not None}
    if not users:
        return {}
    admins = admins_among(session, users)
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
    admins = admins_among(session, set(found.values()))
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
