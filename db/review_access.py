"""How the review queue's rows are found: the WHERE and ORDER BY of a filter and a sort, shaped for SQLite.

A page of 50 should read one index in the page's order and stop. SQLite has no per-value statistics, and left
alone it prefers an index that narrows the rows (a score range) and then sorts tens of thousands of them for
every page: with the plain WHERE clause and the indexes of migration 0006, a sweep of 3,906 filter × sort ×
page combinations over 200,000 variants had a p95 of 158 ms and pages of up to 1.1 s. So we choose the path:

- a selective driver when there is one (a family, a job, a search with few trigram matches, a rare label),
  whose rows are then sorted;
- otherwise the index that yields the sort order, a (dataset, status) range of `ix_samples_queue` (age),
  `_family`, `_similarity` or `_consistency` (`_flagged` for flagged variants), every other predicate checked
  row by row (`+column` hides its index from the planner);
- unless a probe finds those checks too sparse along that order: then one pass over the status's rows in id
  order, and a sort.

Postgres plans with statistics: no hints there. Its order indexes (migration 0016) hold NULLs first and the id,
so that `_order`'s NULL order and tie-break are an index walk there too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, exists, func, literal, literal_column, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

from db import text_search
from db.models import REVIEWABLE_ORIGINS, UNDO, Dataset, Decision, Review, Sample, SampleLabel
from db.review_filter import SORTS, QueueFilter

# A label or a search drives the query (its index gives the matching ids, which are then sorted) when it matches
# at most this many rows; a commoner one is checked row by row while walking the sort's index.
SELECTIVE_LABEL_ROWS = 10_000
SELECTIVE_TEXT_ROWS = 10_000
PROBE_ROWS = 2_000  # rows of an ordered walk sampled to tell dense row-by-row checks from sparse ones


def _noindex(column: Any) -> Any:
    """`+column`: SQLite may not use an index for this term, so it keeps the index we chose for the order."""
    return UnaryExpression(column, operator=operators.custom_op("+"), type_=column.type)


def _one_of(column: Any, values: tuple[str, ...]) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = column == values[0] if len(values) == 1 else column.in_(values)
    return condition


def _next_or_previous_is(review: Any, decision: str, *, after: bool) -> ColumnElement[bool]:
    """The same user's next (`after`) or previous review of the same sample has `decision`."""
    other, between = aliased(Review), aliased(Review)
    if after:
        order = [other.id > review.id, between.id > review.id, between.id < other.id]
    else:
        order = [other.id < review.id, between.id < review.id, between.id > other.id]
    something_between = exists().where(
        between.sample_id == review.sample_id, between.user_id == review.user_id, order[1], order[2]
    )
    return (
        exists()
        .where(
            other.sample_id == review.sample_id,
            other.user_id == review.user_id,
            other.decision == decision,
            order[0],
            ~something_between.correlate_except(between),  # SQLAlchemy correlates only one query up by itself
        )
        .correlate_except(other)
    )


def _withdrawn_edit(review: Any) -> ColumnElement[bool]:
    """An edit its author undid next: the text and the votes before it are back, as if it had not been."""
    return and_(review.decision == Decision.edit, _next_or_previous_is(review, UNDO, after=True))


def _undo_of_an_edit(review: Any) -> ColumnElement[bool]:
    return and_(review.decision == UNDO, _next_or_previous_is(review, Decision.edit, after=False))


def standing_vote(user_column: Any, sample_column: Any) -> ColumnElement[bool]:
    """The user has a vote on the sample's current text, by the rule services.votes.replay applies to the trails the
    API allows (an undo only while no one else has decided since): their latest review, leaving out an edit they
    undid and that undo, is not an undo, and no one else's edit has come after it, but one its author undid.
    Automatic decisions are no one's vote. One probe of ix_reviews_sample_id_user_id per variant; the others run
    only where the user has a review."""
    later, edit = aliased(Review), aliased(Review)
    return exists().where(
        Review.sample_id == sample_column,
        Review.user_id == user_column,
        Review.automatic.is_(False),
        Review.decision != UNDO,
        ~_withdrawn_edit(Review),
        ~probe_exists(
            later,
            later.sample_id == Review.sample_id,
            later.user_id == Review.user_id,
            later.id > Review.id,
            ~_withdrawn_edit(later),
            ~_undo_of_an_edit(later),
        ),
        ~probe_exists(
            edit,
            edit.sample_id == Review.sample_id,
            edit.id > Review.id,
            edit.user_id != Review.user_id,
            edit.automatic.is_(False),
            edit.decision == Decision.edit,
            ~_withdrawn_edit(edit),
        ),
    )


def probe_exists(review: Any, *where: ColumnElement[bool]) -> ColumnElement[bool]:
    """EXISTS (a review of the sample that ...), checked per row by an index probe of the sample's reviews.
    Postgres turns a plain EXISTS into a join, planned from statistics: after a bulk decision, before
    autovacuum's ANALYZE, it took the voter for one without reviews and joined their whole history with itself
    (25,000,000 row pairs for a 5,000-vote history: 2.9 s to count 1,045 variants of a filter). OFFSET 0 keeps
    the subquery a probe there (the planner does not flatten a subquery with an OFFSET); SQLite runs it as one
    anyway."""
    return select(review.id).where(*where).correlate_except(review).offset(literal_column("0")).exists()


def not_voted_by(user_id: int) -> ColumnElement[bool]:
    """The variant has no standing vote by this user (see `standing_vote`): it is theirs to decide."""
    return ~standing_vote(user_id, Sample.id)


def _origins(session: Session, dataset: Dataset, wanted: tuple[str, ...]) -> tuple[list[str], bool]:
    """The wanted origins that have rows, and whether they leave out any that has: only then does the origin
    narrow anything (originals have no review status, so the status test already excludes them)."""
    present = [
        o
        for o in REVIEWABLE_ORIGINS
        if session.scalar(select(Sample.id).where(Sample.dataset_id == dataset.id, Sample.origin == o).limit(1))
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


def _text_rows(session: Session, f: QueueFilter) -> int | None:
    """How many samples the search's trigram index yields, counted no further than the threshold."""
    if not f.search or not text_search.indexed("sqlite", f.search):
        return None
    return text_search.count_candidates(session, f.search, SELECTIVE_TEXT_ROWS + 1)


def _sparse(
    session: Session,
    walk: list[ColumnElement[bool]],
    checks: list[ColumnElement[bool]],
    order: list[Any],
) -> bool:
    """Whether fewer than 1% of the first PROBE_ROWS rows of the ordered walk pass the row-by-row checks. Then
    the walk would visit nearly every row at random (a narrow score range; a common word with a common class;
    contradictory filters), and one pass in id order plus a sort is cheaper."""
    probe = PROBE_ROWS
    walked = select(Sample.id).where(*walk).order_by(*order).limit(probe)
    if (session.scalar(select(func.count()).select_from(walked.subquery())) or 0) < probe:
        return False  # a short range: walking all of it is cheap anyway
    hits = session.scalar(select(func.count()).select_from(Sample).where(Sample.id.in_(walked), *checks))
    return (hits or 0) < max(1, probe // 100)


# A class no longer short of variants still orders its variants by novelty × preservation.
NEED_FLOOR = 0.01


def usefulness() -> ColumnElement[float]:
    """Novelty × predicted label preservation: the expected value without the class's need, and the expression
    of ix_samples_queue_usefulness (migration 0014). Its constants are written into the SQL, not bound, so the
    database can match the expression to its index."""
    novelty = func.coalesce(Sample.novelty, literal_column("1.0") - Sample.similarity, literal_column("0.5"))
    return novelty * func.coalesce(Sample.label_consistency, literal_column("1.0"))


def class_need(needs: dict[tuple[str, str], float]) -> ColumnElement[float]:
    """How much a variant's neediest class still needs variants: the largest of its labels' needs, each at least
    NEED_FLOOR (NULL where it has no label)."""
    cases = [
        ((SampleLabel.task == task) & (SampleLabel.label == label), literal(max(need, NEED_FLOOR), Float))
        for (task, label), need in sorted(needs.items())
    ]
    return (
        select(func.max(case(*cases, else_=literal(NEED_FLOOR, Float)) if cases else literal(NEED_FLOOR, Float)))
        .where(SampleLabel.sample_id == Sample.id)
        .correlate(Sample)
        .scalar_subquery()
    )


def expected_value(needs: dict[tuple[str, str], float]) -> ColumnElement[float]:
    """A variant's expected value to training: how much its neediest class still needs variants (0..1, the
    largest over its labels, at least NEED_FLOOR) × its novelty against the training texts (1 − n-gram
    similarity to its source where it was made before novelty was stored) × the label model's predicted
    preservation (its consistency; 1 where no model scored it): the need × `usefulness`."""
    return func.coalesce(class_need(needs), literal(NEED_FLOOR, Float)) * usefulness()


def access_path(
    session: Session,
    dataset: Dataset,
    f: QueueFilter,
    sort: str = "age",
    needs: dict[tuple[str, str], float] | None = None,
) -> tuple[list[ColumnElement[bool]], list[Any]]:
    """WHERE and ORDER BY for a validated filter and a sort (see the module's note). `needs` (task, label) →
    0..1 is what the expected-value sort weighs classes by."""
    if sort not in SORTS:  # services.review_filter.check_sort checks the request's sort first
        raise ValueError(f"sort must be one of {', '.join(SORTS)}; got {sort!r}")
    key = sort.lstrip("-")
    origins, narrows = _origins(session, dataset, f.origins)
    hinted = session.get_bind().dialect.name == "sqlite"
    # One origin and one status: the age walk (and the one-pass fallback) is a range of ix_samples_queue, in id
    # order; otherwise it walks the primary key. The family walk is a range of ix_samples_queue_family for one
    # status; otherwise it walks ix_samples_parent_id. The score walks take the status range(s).
    single = len(origins) == 1 and len(f.statuses) == 1
    queue_range = {"dataset_id", "origin", "review_status"} if single else set()
    family_range = {"dataset_id", "review_status"} if len(f.statuses) == 1 else set()
    text_rows = _text_rows(session, f) if hinted else None
    label_rows = _label_rows(session, f) if hinted else None
    if f.parent_id is not None or f.job_id is not None:
        driver = "parent_id" if f.parent_id is not None else "job_id"
        usable = {driver}
    elif text_rows is not None and text_rows <= SELECTIVE_TEXT_ROWS:
        driver, usable = "text", set()
    elif label_rows is not None and label_rows <= SELECTIVE_LABEL_ROWS:
        driver, usable = "labels", set()
    elif key == "label_consistency" and f.flagged:
        # ix_samples_queue_flagged: along ix_samples_queue_consistency the flagged variants lie at the low end.
        driver, usable = "flagged", {"dataset_id", "review_status", "label_flag", key}
    elif key == "age":
        driver, usable = "queue", queue_range
    elif key == "family":
        driver, usable = "family", family_range | {"parent_id"}
    elif key == "expected_value":
        # A product of the class's need and the usefulness of ix_samples_queue_usefulness (dataset, status,
        # score): db/reviews.most_useful_first walks that index best first; the origins are checked row by row.
        driver, usable = "bounded", family_range
        if not hinted and (_label_rows(session, f) or 0) > SELECTIVE_LABEL_ROWS:
            driver = "useful"  # Postgres: a common label is probed row by row along the walk (see _terms)
    else:
        driver, usable = key, {"dataset_id", "review_status", key}
    walk, checks = _terms(session, dataset, f, origins, narrows, hinted, driver, usable)
    if key == "expected_value":
        value = expected_value(needs or {})
        desc = sort.startswith("-")
        return walk + checks, [value.desc(), Sample.id.desc()] if desc else [value, Sample.id]
    order = _order(sort, hinted, usable)
    ordered_walk = driver in ("family", "similarity", "label_consistency", "semantic_similarity", "flagged")
    if hinted and ordered_walk and checks and _sparse(session, walk, checks, order):
        driver, usable = "bounded", queue_range
        walk, checks = _terms(session, dataset, f, origins, narrows, hinted, driver, usable)
        order = _order(sort, hinted, usable)
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
        add("origin", _one_of(col("origin"), tuple(origins)))
    add("review_status", _one_of(col("review_status"), f.statuses))
    if f.task is not None or f.label is not None:
        match = [SampleLabel.task == f.task] if f.task is not None else []
        if f.label is not None:
            match.append(SampleLabel.label == f.label)
        if driver == "labels":
            walk.append(Sample.id.in_(select(SampleLabel.sample_id).where(*match)))
        elif driver == "useful":
            # Postgres, most useful first with a common label: a probe of each walked row's labels. As a join
            # its plan hung on the rows the planner expected in a read's score range: workers that each walked
            # the index (40 ms to start on 2 cores), or a hash join of the label's every row with the range,
            # sorted (95 ms a read). A rare label stays a join, which the planner drives from its index.
            lookups.append(
                select(SampleLabel.sample_id)
                .where(SampleLabel.sample_id == Sample.id, *match)
                .offset(literal_column("0"))
                .exists()
            )
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
        if driver == "text":
            walk.append(Sample.id.in_(text_search.candidate_ids(f.search)))
        checks.append(text_search.contains_text(session.get_bind().dialect.name, f.search))
    if f.not_reviewed_by is not None:
        lookups.append(not_voted_by(f.not_reviewed_by))
    # SQLite tests the terms in this order: the row's own columns first, then the lookups in other tables.
    return walk, checks + lookups


def _order(sort: str, hinted: bool, usable: set[str]) -> list[Any]:
    """ORDER BY, ids breaking ties. Unscored variants come first when ascending and last when descending
    (SQLite's own NULL order, asked of Postgres too). Family order is newest source first, newest variant first:
    one direction for both keys, so that a backward walk of ix_samples_queue_family yields it."""
    key = sort.lstrip("-")
    descending = sort.startswith("-")
    if key == "age":
        return [Sample.id.desc() if descending else Sample.id.asc()]
    name = "parent_id" if key == "family" else key
    column = getattr(Sample, name)
    if hinted and name not in usable:
        column = _noindex(column)  # a driver's matches are sorted: no index walk for the order
    if descending or key == "family":
        return [column.desc().nulls_last(), Sample.id.desc()]
    return [column.asc().nulls_first(), Sample.id.asc()]


def conditions(session: Session, dataset: Dataset, f: QueueFilter) -> list[ColumnElement[bool]]:
    """The WHERE clause of a validated filter (bulk decisions use it to find their targets)."""
    return access_path(session, dataset, f)[0]
