"""The review queue: variants filtered, sorted and paginated for annotators, and a variant's family.

Every query here is shaped for the indexes in db/models.py (`ix_samples_queue*`, `ix_samples_parent_id`,
`ix_sample_labels_task_label`, `ix_reviews_sample_id`): a page of 50 walks one index in the page's order and
stops, and the total is counted only `count_ahead` rows past the page, because an exact count of a 200k-row
queue costs more than the page itself and no annotator needs "183,412" instead of "300+" (exact per-class
numbers are in db/review_stats.py; bulk decisions count exactly). No index was added for this: see
`access_path`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

from core.errors import NotFoundError, ValidationFailed
from db.chunks import chunked
from db.models import (
    REVIEWABLE_ORIGINS,
    Dataset,
    Decision,
    Review,
    ReviewStatus,
    Sample,
    SampleLabel,
    User,
)

SORTS = (
    "age",
    "-age",
    "family",
    "similarity",
    "-similarity",
    "label_consistency",
    "-label_consistency",
    "semantic_similarity",
    "-semantic_similarity",
    "expected_value",
    "-expected_value",
)
# A class no longer short of variants still orders its variants by novelty × preservation.
NEED_FLOOR = 0.01
APPROVING = (Decision.approve.value, Decision.edit.value)


@dataclass(frozen=True)
class QueueFilter:
    """What an annotator narrowed the queue to. Empty tuples and None mean "any"."""

    statuses: tuple[str, ...] = (ReviewStatus.pending.value,)
    origins: tuple[str, ...] = REVIEWABLE_ORIGINS
    task: str | None = None
    label: str | None = None
    methods: tuple[str, ...] = ()
    min_similarity: float | None = None
    max_similarity: float | None = None
    min_consistency: float | None = None
    max_consistency: float | None = None
    min_semantic: float | None = None
    max_semantic: float | None = None
    search: str | None = None
    flagged: bool | None = None  # the label-consistency model predicts another label
    parent_id: int | None = None
    job_id: int | None = None
    not_reviewed_by: int | None = None  # user id: hide what this user already voted on (k > 1)

    def validated(self, dataset: Dataset) -> QueueFilter:
        bad = set(self.statuses) - {s.value for s in ReviewStatus}
        if bad or not self.statuses:
            raise ValidationFailed(
                f"status must be some of {', '.join(ReviewStatus)}; got {sorted(bad) or 'none'}",
                field="status",
            )
        bad = set(self.origins) - set(REVIEWABLE_ORIGINS)
        if bad or not self.origins:
            raise ValidationFailed(
                f"origin must be some of {', '.join(REVIEWABLE_ORIGINS)}; got {sorted(bad) or 'none'}",
                field="origin",
            )
        if self.task is not None and self.task not in dataset.task_names():
            raise ValidationFailed(
                f"unknown task {self.task!r}; the dataset has {', '.join(dataset.task_names())}", field="task"
            )
        if self.label is not None:
            known = (
                dataset.labels_of(self.task)
                if self.task
                else [lab for t in dataset.tasks for lab in t["labels"]]
            )
            if self.label not in known:
                raise ValidationFailed(
                    f"unknown label {self.label!r}" + (f" for task {self.task!r}" if self.task else ""),
                    field="label",
                )
        for name, lo, hi in (
            ("similarity", self.min_similarity, self.max_similarity),
            ("consistency", self.min_consistency, self.max_consistency),
            ("semantic_similarity", self.min_semantic, self.max_semantic),
        ):
            for bound in (lo, hi):
                if bound is not None and not 0.0 <= bound <= 1.0:
                    raise ValidationFailed(
                        f"{name} bounds must lie in [0, 1]; got {bound}", field=f"min_{name}"
                    )
            if lo is not None and hi is not None and lo > hi:
                raise ValidationFailed(f"min_{name} {lo} exceeds max_{name} {hi}", field=f"min_{name}")
        search = (self.search or "").strip() or None
        if search is not None and len(search) > 200:
            raise ValidationFailed("search text is limited to 200 characters", field="q")
        return replace(self, search=search)


@dataclass
class QueuePage:
    items: list[Sample]
    total: int
    total_capped: bool  # True: there are at least `total` matches
    page: int
    page_size: int
    families: list[dict[str, Any]] = field(default_factory=list)
    votes: dict[int, dict[str, Any]] = field(default_factory=dict)


# A label filter drives the query (SQLite walks ix_sample_labels_task_label, then sorts the matches) when the
# label has at most this many rows; a commoner label is checked row by row while walking the sort's index.
SELECTIVE_LABEL_ROWS = 10_000
PROBE_ROWS = 2_000  # rows of an ordered walk sampled to tell dense row-by-row checks from sparse ones


def _noindex(column: Any) -> Any:
    """`+column`: SQLite may not use an index for this term, so it keeps the index we chose for the order."""
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def _origins(session: Session, dataset: Dataset, wanted: tuple[str, ...]) -> tuple[list[str], bool]:
    """The wanted origins that have rows, and whether they leave out any that has: only then does the origin
    narrow anything (originals have no review status, so the status test already excludes them)."""
    present = [
        o
        for o in REVIEWABLE_ORIGINS
        if session.scalar(
            select(Sample.id).where(Sample.dataset_id == dataset.id, Sample.origin == o).limit(1)
        )
        is not None
    ]
    chosen = [o for o in present if o in wanted]
    return chosen or list(wanted[:1]), set(chosen) != set(present)


def _label_rows(session: Session, f: QueueFilter) -> int | None:
    """How many sample_labels rows the label filter matches, counted no further than the threshold."""
    if f.task is None or f.label is None:
        return None
    capped = select(SampleLabel.sample_id).where(SampleLabel.task == f.task, SampleLabel.label == f.label)
    return session.scalar(select(func.count()).select_from(capped.limit(SELECTIVE_LABEL_ROWS + 1).subquery()))


def not_voted_by(session: Session, user_id: int) -> ColumnElement[bool]:
    """The variant has no review by this user. Reviews are looked up by sample (a handful per variant): SQLite
    would otherwise pick ix_reviews_user_id and scan all of a prolific annotator's reviews for every row."""
    voter = _noindex(Review.user_id) if session.get_bind().dialect.name == "sqlite" else Review.user_id
    return ~exists().where(Review.sample_id == Sample.id, voter == user_id)


def _sparse(
    session: Session,
    walk: list[ColumnElement[bool]],
    checks: list[ColumnElement[bool]],
    order: list[Any],
) -> bool:
    """Whether fewer than 1% of the first PROBE_ROWS rows of the ordered walk pass the row-by-row checks. Then
    the walk would visit nearly every row at random (a rare word; flagged variants at the end of a descending
    consistency walk; contradictory filters), and one pass in rowid order plus a sort is cheaper."""
    probe = PROBE_ROWS
    walked = select(Sample.id).where(*walk).order_by(*order).limit(probe)
    if (session.scalar(select(func.count()).select_from(walked.subquery())) or 0) < probe:
        return False  # a short range: walking all of it is cheap anyway
    hits = session.scalar(select(func.count()).select_from(Sample).where(Sample.id.in_(walked), *checks))
    return (hits or 0) < max(1, probe // 100)


def expected_value(needs: dict[tuple[str, str], float]) -> ColumnElement[float]:
    """A variant's expected value to training: how much its neediest class still needs variants (0..1, the
    largest over its labels, at least NEED_FLOOR) × its novelty against the training texts (1 − n-gram
    similarity to its source where it was made before novelty was stored) × the label model's predicted
    preservation (its consistency; 1 where no model scored it)."""
    from sqlalchemy import Float, case, literal

    cases = [
        ((SampleLabel.task == task) & (SampleLabel.label == label), literal(max(need, NEED_FLOOR), Float))
        for (task, label), need in sorted(needs.items())
    ]
    need = (
        select(func.max(case(*cases, else_=literal(NEED_FLOOR, Float)) if cases else literal(NEED_FLOOR, Float)))
        .where(SampleLabel.sample_id == Sample.id)
        .correlate(Sample)
        .scalar_subquery()
    )
    novelty = func.coalesce(Sample.novelty, literal(1.0, Float) - Sample.similarity, literal(0.5, Float))
    preservation = func.coalesce(Sample.label_consistency, literal(1.0, Float))
    return func.coalesce(need, literal(NEED_FLOOR, Float)) * novelty * preservation


def access_path(
    session: Session,
    dataset: Dataset,
    f: QueueFilter,
    sort: str = "age",
    needs: dict[tuple[str, str], float] | None = None,
) -> tuple[list[ColumnElement[bool]], list[Any]]:
    """WHERE and ORDER BY for a filter and a sort, shaped so that a page reads one index range and stops.

    SQLite has no per-value statistics, and left alone it prefers an index that narrows the rows (a score
    range) and then sorts tens of thousands of them for every page. We choose instead: a selective driver when
    there is one (a rare label, a family, a job), otherwise the index that yields the sort order, with every
    other predicate checked row by row (`+column` hides its index), unless a probe finds those checks too
    sparse along that order. Postgres plans with statistics: no hints there.
    """
    if sort not in SORTS:  # services.review checks the request's sort first
        raise ValidationFailed(f"sort must be one of {', '.join(SORTS)}; got {sort!r}", field="sort")
    key = sort.lstrip("-")
    origins, narrows = _origins(session, dataset, f.origins)
    hinted = session.get_bind().dialect.name == "sqlite"
    label_rows = _label_rows(session, f) if hinted else None
    single = len(origins) == 1 and len(f.statuses) == 1
    queue_range = {"dataset_id", "origin", "review_status"} if single else set()  # else: walk the primary key
    if f.parent_id is not None or f.job_id is not None:
        driver = "parent_id" if f.parent_id is not None else "job_id"
        usable = {driver}
    elif label_rows is not None and label_rows <= SELECTIVE_LABEL_ROWS:
        driver, usable = "labels", set()
    elif key == "age":
        driver, usable = "queue", queue_range
    elif key == "family":
        driver, usable = "family", {"parent_id"}
    elif key == "expected_value":
        # A product of scores and the class's need, which no index holds: the matches are read and sorted.
        driver, usable = "bounded", queue_range
    else:
        driver, usable = key, {"dataset_id", "review_status", key}
    walk, checks = _terms(session, dataset, f, origins, narrows, hinted, driver, usable)
    if key == "expected_value":
        value = expected_value(needs or {})
        desc = sort.startswith("-")
        return walk + checks, [value.desc(), Sample.id.desc()] if desc else [value, Sample.id]
    order = _order(sort, driver, hinted, usable)
    ordered_walk = driver in ("family", "similarity", "label_consistency", "semantic_similarity")
    if hinted and ordered_walk and checks and _sparse(session, walk, checks, order):
        driver, usable = "bounded", queue_range
        walk, checks = _terms(session, dataset, f, origins, narrows, hinted, driver, usable)
        order = _order(sort, driver, hinted, usable)
    return walk + checks, order


def _terms(
    session: Session,
    dataset: Dataset,
    f: QueueFilter,
    origins: list[str],
    narrows: bool,
    hinted: bool,
    driver: str,
    usable: set[str],
) -> tuple[list[ColumnElement[bool]], list[ColumnElement[bool]]]:
    """(terms the chosen index serves, terms checked row by row) of the filter."""
    walk: list[ColumnElement[bool]] = []
    checks: list[ColumnElement[bool]] = []
    lookups: list[ColumnElement[bool]] = []

    def add(name: str, term: Any) -> None:
        (walk if not hinted or name in usable else checks).append(term)

    def col(name: str) -> Any:
        column = getattr(Sample, name)
        return column if not hinted or name in usable else _noindex(column)

    add("dataset_id", col("dataset_id") == dataset.id)
    if narrows or "origin" in usable:
        # Name the origin only where it narrows the rows or where ix_samples_queue needs it (second column).
        add("origin", col("origin") == origins[0] if len(origins) == 1 else col("origin").in_(origins))
    status = col("review_status")
    add("review_status", status == f.statuses[0] if len(f.statuses) == 1 else status.in_(f.statuses))
    if f.task is not None or f.label is not None:
        match = [SampleLabel.task == f.task] if f.task is not None else []
        if f.label is not None:
            match.append(SampleLabel.label == f.label)
        if driver == "labels":
            walk.append(Sample.id.in_(select(SampleLabel.sample_id).where(*match)))
        else:
            lookups.append(exists().where(SampleLabel.sample_id == Sample.id, *match))
    if f.methods:
        add("method", col("method").in_(f.methods))
    for name, lo, hi in (
        ("similarity", f.min_similarity, f.max_similarity),
        ("label_consistency", f.min_consistency, f.max_consistency),
        ("semantic_similarity", f.min_semantic, f.max_semantic),
    ):
        if lo is not None:
            add(name, col(name) >= lo)
        if hi is not None:
            add(name, col(name) <= hi)
    if f.flagged is not None:
        add("label_flag", col("label_flag").is_(True) if f.flagged else col("label_flag").isnot(True))
    if f.parent_id is not None:
        add("parent_id", col("parent_id") == f.parent_id)
    if f.job_id is not None:
        add("job_id", col("job_id") == f.job_id)
    if f.search:
        # SQLite's LIKE is case-insensitive for ASCII already; ILIKE is Postgres' equivalent.
        checks.append(
            Sample.text.contains(f.search, autoescape=True)
            if hinted
            else Sample.text.icontains(f.search, autoescape=True)
        )
    if f.not_reviewed_by is not None:
        lookups.append(not_voted_by(session, f.not_reviewed_by))
    # SQLite tests the terms in this order: the row's own columns first, then the lookups in other tables.
    return walk, checks + lookups


def _order(sort: str, driver: str, hinted: bool, usable: set[str]) -> list[Any]:
    """ORDER BY: ids break ties. Family order is newest source first, newest variant first: walking
    ix_samples_parent_id backwards meets the variants at once and the originals (no parent) last."""
    key = sort.lstrip("-")
    desc = sort.startswith("-")
    if key == "age":
        return [Sample.id.desc() if desc else Sample.id]
    name = "parent_id" if key == "family" else key
    column = getattr(Sample, name)
    if hinted and name not in usable:
        column = _noindex(column)  # the bounded plan sorts its matches; no index walk for the order
    if key == "family":  # one direction for both keys: a mixed one makes SQLite sort instead of walk
        return [column.desc() if hinted else column.desc().nulls_last(), Sample.id.desc()]
    if hinted:  # SQLite puts NULL first in ascending order, and its indexes are built that way
        return [column.desc(), Sample.id.desc()] if desc else [column, Sample.id]
    # The same order elsewhere: unscored variants first when ascending, last when descending.
    return [column.desc().nulls_last(), Sample.id.desc()] if desc else [column.asc().nulls_first(), Sample.id]


def conditions(session: Session, dataset: Dataset, f: QueueFilter) -> list[ColumnElement[bool]]:
    """The WHERE clause of a filter (bulk decisions use it to find their targets)."""
    return access_path(session, dataset, f)[0]


def review_queue(
    session: Session,
    dataset: Dataset,
    f: QueueFilter,
    *,
    sort: str = "age",
    page: int = 1,
    page_size: int = 50,
    count_ahead: int = 250,
    viewer_id: int | None = None,
    needs: dict[tuple[str, str], float] | None = None,
) -> QueuePage:
    """One page of the queue, the families (source texts) of its variants, and the votes cast on them.
    `needs` (task, label) → 0..1 is what the expected-value sort weighs classes by."""
    if page < 1:
        raise ValidationFailed("page starts at 1", field="page")
    f = f.validated(dataset)
    where, order = access_path(session, dataset, f, sort, needs)
    offset = (page - 1) * page_size
    # Ids first, and `count_ahead` more than the page: one index walk yields the page and a bounded total, and
    # sort carries integers rather than whole rows with their texts and JSON.
    # A text search reads every row it visits: count only one page ahead there.
    lookahead = min(count_ahead, page_size) if f.search else count_ahead
    ids = list(
        session.scalars(
            select(Sample.id).where(*where).order_by(*order).offset(offset).limit(page_size + lookahead)
        )
    )
    capped = len(ids) == page_size + lookahead
    total = offset + len(ids)
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
    result.votes = votes_on(session, ids, viewer_id)
    return result


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
        select(SampleLabel.sample_id, SampleLabel.task, SampleLabel.label).where(
            SampleLabel.sample_id.in_(parent_ids)
        )
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


def latest_votes(session: Session, sample_ids: list[int]) -> dict[int, dict[int, str]]:
    """sample id → {user id → that user's latest decision on the variant's current text}, the most recent vote
    last. A user who changes their mind has one vote; an edit changes the text, so it withdraws every vote cast
    before it (the editor's edit counts as their approval of the new text). Automatic decisions are in the
    audit trail but are no votes: once a person decides, people's votes alone give the status."""
    votes: dict[int, dict[int, str]] = {}
    for chunk in chunked(sample_ids):
        rows = session.execute(
            select(Review.sample_id, Review.user_id, Review.decision)
            .where(Review.sample_id.in_(chunk), Review.automatic.is_(False))
            .order_by(Review.id)
        ).tuples()
        for sample_id, user_id, decision in rows:
            cast(votes.setdefault(sample_id, {}), user_id, decision)
    return votes


def cast(votes: dict[int, str], user_id: int, decision: str) -> dict[int, str]:
    """Add one decision to {user id → vote} (most recent last), in place."""
    if decision == Decision.edit:
        votes.clear()
    votes.pop(user_id, None)
    votes[user_id] = decision
    return votes


def vote_counts(votes: dict[int, str]) -> tuple[int, int]:
    """(approve, reject) over {user id → latest decision}: an edit keeps the variant, so it approves."""
    approve = sum(1 for d in votes.values() if d in APPROVING)
    return approve, len(votes) - approve


def votes_on(session: Session, sample_ids: list[int], viewer_id: int | None) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for sample_id, by_user in latest_votes(session, sample_ids).items():
        approve, reject = vote_counts(by_user)
        out[sample_id] = {
            "approve": approve,
            "reject": reject,
            "mine": by_user.get(viewer_id) if viewer_id is not None else None,
        }
    return out


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
        session.scalars(
            select(Sample).where(Sample.parent_id == root.id).order_by(Sample.id).limit(max_siblings)
        )
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


def pending_only(dataset: Dataset, f: QueueFilter, voter_id: int) -> QueueFilter:
    """Bulk decisions add a vote to pending variants only, and never to one the voter already decided."""
    return replace(f, statuses=(ReviewStatus.pending.value,), not_reviewed_by=voter_id).validated(dataset)


def pending_variant_condition(dataset: Dataset) -> ColumnElement[bool]:
    return and_(
        Sample.dataset_id == dataset.id,
        Sample.origin.in_(REVIEWABLE_ORIGINS),
        Sample.review_status == ReviewStatus.pending,
    )
