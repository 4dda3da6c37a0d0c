"""The queue's access paths (db/review_access.py `access_path`) change how SQLite finds rows, never which rows or
in what order: every filter × sort, walked page by page, equals a plain Python filter-and-sort of the data."""

from __future__ import annotations

import random
from typing import Any

import pytest

from db.review_filter import SORTS  # every sort the queue offers, walked in turn
from services.review_filter import checked_filter
from tests.review_fixtures import add_variant, make_dataset

FILTERS: list[dict[str, Any]] = [
    {},
    {"task": "message", "label": "attack"},
    {"label": "neutral"},
    {"task": "bias"},
    {"methods": ("wordnet",)},
    {"methods": ("wordnet", "mlm")},
    {"min_similarity": 0.4, "max_similarity": 0.7},
    {"min_consistency": 0.5},
    {"flagged": True},
    {"flagged": False},
    {"search": "tax"},
    {"search": "zzq"},
    {"search": "VARIANT"},
    {"search": "variant 7 "},
    {"search": "tax", "statuses": ("approved",)},
    {"search": "ta"},  # under three characters: no trigram, LIKE alone
    {"search": "7"},
    {"search": "health", "task": "bias", "label": "neutral"},
    {"statuses": ("approved",)},
    {"statuses": ("pending", "rejected")},
    {"origins": ("pseudo_label",)},
    {"origins": ("augmented",), "flagged": True},
    {"task": "bias", "label": "partisan", "min_consistency": 0.3},
    {"not_reviewed_by": "USER"},
    {"min_semantic": 0.3, "max_semantic": 0.8},
    {"min_semantic": 0.5, "task": "message", "label": "attack"},
]

# What the expected-value sort weighs classes by (services.review_stats.class_needs computes them from the data).
NEEDS = {("message", "attack"): 0.6, ("message", "policy"): 0.0, ("bias", "neutral"): 0.25}


@pytest.fixture
def queue_db(any_engine) -> dict[str, Any]:
    """150 variants with random scores (some missing), statuses, flags, methods and origins."""
    from db.auth import get_or_create_user
    from db.models import Review, Sample
    from db.session import session_scope

    rng = random.Random(3)
    with session_scope(any_engine) as s:
        user = get_or_create_user(s, "someone", "annotator")
        sources = make_dataset(s, "paths")
        for i in range(150):
            vid = add_variant(
                s,
                rng.choice(sources),
                f"variant {i} " + rng.choice(["on tax", "about health", "zzq", "plain"]),
                method=rng.choice(["wordnet", "mlm", "backtranslation"]),
                similarity=rng.choice([None, round(rng.random(), 2)]),
                consistency=rng.choice([None, round(rng.random(), 2), 0.5]),
                origin=rng.choice(["augmented"] * 5 + ["pseudo_label"]),
                flag=rng.random() < 0.3,
                semantic=rng.choice([None, round(rng.random(), 2)]),
                novelty=rng.choice([None, round(rng.random(), 2), 0.25]),
            )
            v = s.get(Sample, vid)
            v.review_status = rng.choice(["pending"] * 3 + ["approved", "rejected"])
            if rng.random() < 0.2:
                s.add(
                    Review(
                        sample_id=vid,
                        user_id=user.id,
                        decision="approve",
                        text_before="",
                        text_after="",
                        version_seen=1,
                    )
                )
    return {"dataset": "paths", "user_id": user.id, "engine": any_engine}


def expected_ids(session: Any, f: Any, sort: str) -> list[int]:
    from sqlalchemy import select

    from db.models import Review, Sample

    reviewed = (
        set(session.scalars(select(Review.sample_id).where(Review.user_id == f.not_reviewed_by)))
        if f.not_reviewed_by is not None
        else set()
    )
    rows = []
    for v in session.scalars(select(Sample).where(Sample.origin != "original")).unique():
        labels = v.labels
        ok = (
            v.review_status in f.statuses
            and v.origin in f.origins
            and (f.task is None or (f.task in labels and (f.label is None or labels[f.task] == f.label)))
            and (f.label is None or f.task is not None or f.label in labels.values())
            and (not f.methods or v.method in f.methods)
            and (f.min_similarity is None or (v.similarity is not None and v.similarity >= f.min_similarity))
            and (f.max_similarity is None or (v.similarity is not None and v.similarity <= f.max_similarity))
            and (
                f.min_consistency is None
                or (v.label_consistency is not None and v.label_consistency >= f.min_consistency)
            )
            and (
                f.min_semantic is None
                or (v.semantic_similarity is not None and v.semantic_similarity >= f.min_semantic)
            )
            and (
                f.max_semantic is None
                or (v.semantic_similarity is not None and v.semantic_similarity <= f.max_semantic)
            )
            and (f.flagged is None or bool(v.label_flag) == f.flagged)
            and (f.search is None or f.search.strip().lower() in v.text.lower())
            and v.id not in reviewed
        )
        if ok:
            rows.append(v)
    key = sort.lstrip("-")
    if key == "age":
        rows.sort(key=lambda v: v.id)
    elif key == "family":
        # Newest source first (no source last), each family's newest variant first.
        return [v.id for v in sorted(rows, key=lambda v: (v.parent_id is None, -(v.parent_id or 0), -v.id))]
    elif key == "expected_value":
        rows.sort(key=lambda v: (expected_value(v), v.id))
    else:
        # Unscored first when ascending (SQLite's NULL order, asked of Postgres); descending is the reverse.
        rows.sort(key=lambda v: (getattr(v, key) is not None, getattr(v, key) or 0.0, v.id))
    ids = [v.id for v in rows]
    return ids[::-1] if sort.startswith("-") else ids


def expected_value(v: Any) -> float:
    """The sort's definition, in Python: the neediest class × novelty × predicted label preservation."""
    from db.review_access import NEED_FLOOR

    need = max((max(NEEDS.get((t, y), NEED_FLOOR), NEED_FLOOR) for t, y in v.labels.items()), default=NEED_FLOOR)
    novelty = v.novelty if v.novelty is not None else (1.0 - v.similarity if v.similarity is not None else 0.5)
    preservation = v.label_consistency if v.label_consistency is not None else 1.0
    return need * novelty * preservation


@pytest.mark.slow
@pytest.mark.parametrize(
    ("selective", "probe_rows"),
    [(True, 2000), (False, 2000), (False, 12)],
    ids=["label-and-text-driven", "label-and-text-checked", "sparse-probed"],
)
def test_every_access_path_returns_the_reference_rows(queue_db, monkeypatch, selective, probe_rows) -> None:
    """On SQLite (hinted access paths) and on Postgres (its own planner): the same rows, in the same order."""
    from sqlalchemy.orm import Session

    from db import review_access

    if not selective:  # every label and every search is checked row by row
        monkeypatch.setattr(review_access, "SELECTIVE_LABEL_ROWS", 0)
        monkeypatch.setattr(review_access, "SELECTIVE_TEXT_ROWS", 0)
    monkeypatch.setattr(review_access, "PROBE_ROWS", probe_rows)  # 12: small data looks sparse to the probe
    verdicts: list[bool] = []
    probe = review_access._sparse
    monkeypatch.setattr(review_access, "_sparse", lambda *a: verdicts.append(probe(*a)) or verdicts[-1])
    with Session(bind=queue_db["engine"], expire_on_commit=False) as db_session:
        walk_every_path(db_session, queue_db)
    if queue_db["engine"].dialect.name == "sqlite":  # both plans ran where the probe decides
        assert (True in verdicts) == (probe_rows == 12) and False in verdicts


def walk_every_path(db_session: Any, queue_db: dict[str, Any]) -> None:
    from db import reviews
    from db.datasets import get_dataset
    from db.review_filter import QueueFilter

    dataset = get_dataset(db_session, queue_db["dataset"])
    for spec in FILTERS:
        f = QueueFilter(**{k: queue_db["user_id"] if v == "USER" else v for k, v in spec.items()})
        f = checked_filter(f, dataset)
        for sort in SORTS:
            want = expected_ids(db_session, f, sort)
            got: list[int] = []
            page = 1
            while True:
                result = reviews.review_queue(
                    db_session, dataset, f, sort=sort, page=page, page_size=7, count_ahead=10, needs=NEEDS
                )
                got.extend(s.id for s in result.items)
                assert result.total <= len(want) and (result.total_capped or result.total == len(want)), (
                    spec,
                    sort,
                    page,
                )
                if len(result.items) < 7:
                    break
                page += 1
            assert got == want, (spec, sort)
    past_end = reviews.review_queue(db_session, dataset, QueueFilter(), page=99, page_size=7)
    assert past_end.items == [] and past_end.total == len(expected_ids(db_session, QueueFilter(), "age"))


@pytest.mark.parametrize(
    ("spec", "sort", "index"),
    [
        ({}, "age", "ix_samples_queue"),
        ({}, "-age", "ix_samples_queue"),
        ({}, "family", "ix_samples_queue_family"),
        ({"statuses": ("rejected",)}, "family", "ix_samples_queue_family"),
        ({}, "-similarity", "ix_samples_queue_similarity"),
        ({"min_similarity": 0.5}, "similarity", "ix_samples_queue_similarity"),
        ({"min_similarity": 0.5}, "label_consistency", "ix_samples_queue_consistency"),
        ({"flagged": True}, "-label_consistency", "ix_samples_queue_flagged"),
        ({"flagged": True, "methods": ("mlm",)}, "label_consistency", "ix_samples_queue_flagged"),
    ],
)
def test_a_page_reads_its_sort_index_in_order(engine, spec, sort, index) -> None:
    """SQLite: without a selective filter, a page walks the index of its order and never sorts the queue."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from db.datasets import get_dataset
    from db.models import Sample
    from db.review_access import access_path
    from db.review_filter import QueueFilter
    from db.session import session_scope

    with session_scope(engine) as s:
        sources = make_dataset(s, "plans")
        add_variant(s, sources[0], "a variant")
    with Session(bind=engine) as s:
        dataset = get_dataset(s, "plans")
        where, order = access_path(s, dataset, checked_filter(QueueFilter(**spec), dataset), sort)
        statement = select(Sample.id).where(*where).order_by(*order).limit(300)
        sql = str(statement.compile(engine, compile_kwargs={"literal_binds": True}))
        plan = [row[3] for row in s.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
    assert plan[0].startswith(f"SEARCH samples USING COVERING INDEX {index} (") or plan[0].startswith(
        f"SEARCH samples USING INDEX {index} ("
    ), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


def test_the_most_useful_first_walk_reads_its_rows_once_in_one_statement_a_read(queue_db, monkeypatch) -> None:
    """A walk of several reads (4 rows, then 8, ...) gives the reference order, ties included, each read one
    statement that starts where the last one stopped: the rows' labels were read by ids in further statements,
    and each read sorted the rows before it again (OFFSET), 39 statements a page on Postgres at 200,000 variants."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from db import reviews
    from db.datasets import get_dataset
    from db.review_filter import QueueFilter

    monkeypatch.setattr(reviews, "USEFUL_CHUNK", 4)
    statements: list[str] = []
    engine = queue_db["engine"]

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        with Session(bind=engine, expire_on_commit=False) as db_session:
            dataset = get_dataset(db_session, queue_db["dataset"])
            for spec in ({}, {"task": "bias", "label": "partisan"}, {"methods": ("wordnet",)}):
                f = checked_filter(QueueFilter(**spec), dataset)
                want = expected_ids(db_session, f, "-expected_value")
                for page in (1, 2, 3):
                    statements.clear()
                    result = reviews.review_queue(
                        db_session,
                        dataset,
                        f,
                        sort="-expected_value",
                        page=page,
                        page_size=3,
                        count_ahead=0,
                        needs=NEEDS,
                    )
                    assert [s.id for s in result.items] == want[(page - 1) * 3 : page * 3], (spec, page)
                    at = [i for i, s in enumerate(statements) if "ORDER BY coalesce(samples.novelty" in s]
                    # the walk's reads follow one another (no read of their rows' labels between them)
                    assert len(at) >= 2 and at == list(range(at[0], at[0] + len(at))), (spec, page, statements)
                    assert "samples.id < " in statements[at[-1]], (spec, page)  # after the last row read
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_most_useful_first_ranks_the_page_and_counts_the_rest(queue_db, monkeypatch) -> None:
    """The walk ranks the page's rows only: ranking the 250 rows the total looks ahead too ran it down to the
    300th value of a first page (several times the rows at 200,000 variants, the slowest pages of the Postgres
    benchmark). The page, its total and whether the total is capped stay the sort's."""
    from sqlalchemy.orm import Session

    from db import reviews
    from db.datasets import get_dataset
    from db.review_filter import QueueFilter

    monkeypatch.setattr(reviews, "USEFUL_CHUNK", 4)
    walks: list[int] = []  # the rows each read of the walk returned

    class Rows:
        def __init__(self, rows: list[Any]) -> None:
            self.rows = rows

        def all(self) -> list[Any]:
            return self.rows

    with Session(bind=queue_db["engine"], expire_on_commit=False) as db_session:
        dataset = get_dataset(db_session, queue_db["dataset"])
        execute = db_session.execute

        def counted(statement: Any, *args: Any, **kwargs: Any) -> Any:
            if "ORDER BY coalesce(samples.novelty" not in str(statement):
                return execute(statement, *args, **kwargs)
            rows = execute(statement, *args, **kwargs).all()
            walks.append(len(rows))
            return Rows(rows)

        monkeypatch.setattr(db_session, "execute", counted)
        for spec, ahead in (({}, 250), ({}, 10), ({"task": "bias", "label": "partisan"}, 250), ({"flagged": True}, 3)):
            f = checked_filter(QueueFilter(**spec), dataset)
            want = expected_ids(db_session, f, "-expected_value")
            for page in (1, 2, 3):
                walks.clear()
                result = reviews.review_queue(
                    db_session,
                    dataset,
                    f,
                    sort="-expected_value",
                    page=page,
                    page_size=5,
                    count_ahead=ahead,
                    needs=NEEDS,
                )
                assert [s.id for s in result.items] == want[(page - 1) * 5 : page * 5], (spec, page)
                reach = page * 5 + ahead
                assert (result.total, result.total_capped) == (min(len(want), reach), len(want) >= reach), (spec, page)
                if spec == {} and ahead == 250 and page == 1:  # the count reaches past the queue, the walk does not
                    assert sum(walks) < len(want), (walks, len(want))


def test_train_originals_per_class_counts_each_original_label_once(queue_db) -> None:
    """The classes' needs count the train originals per class; on Postgres as a probe of each original's labels
    (the join hashed every label row of the database): the same counts as the plain join, on both backends."""
    from sqlalchemy.orm import Session

    from db.datasets import get_dataset
    from db.models import Origin, Sample
    from services.review_stats import per_class, train_originals_per_class
    from tests.review_fixtures import add_original

    with Session(bind=queue_db["engine"], expire_on_commit=False) as db_session:
        dataset = get_dataset(db_session, queue_db["dataset"])
        add_original(db_session, dataset, "a held-out text", {"bias": "neutral", "message": "attack"}, "val", "v1")
        counts = train_originals_per_class(db_session, dataset)
        joined = per_class(db_session, dataset, Sample.origin == Origin.original, Sample.split == "train")
        assert counts == joined and counts, (counts, joined)
