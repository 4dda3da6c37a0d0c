"""The review queue's free-text search (`q`): a trigram index finds the rows (FTS5 on SQLite, pg_trgm on Postgres),
and the results are exactly those of a plain LIKE '%q%' (SQLite) or ILIKE '%q%' (Postgres) over every row."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from services.review_filter import checked_filter
from tests.review_fixtures import add_variant, make_dataset

# Case and Unicode variants: SQLite's LIKE folds ASCII letters only, FTS5's trigram index all of Unicode, so
# the index finds more than LIKE keeps for some of these; Postgres' ILIKE folds them all.
TEXTS = [
    "Café au lait with the senator",
    "CAFÉ AU LAIT WITH THE SENATOR",
    "cafe au lait, no accent",
    "Straße closed for the parade",
    "STRASSE CLOSED",
    "naïve voters and NAÏVE pundits",
    "İstanbul office opens",
    "istanbul trip",
    "Σίσυφος και ΣΊΣΥΦΟΣ",
    "emoji 🙂 rally 🙂",
    '100% of "quoted" votes_counted',
    "1000 votes counted",
    "Vote today",
    "VOTE TODAY!",
    "vOtE tOdAy?",
    "TAXES",
    "a syntax error",
    "a yellow hell",  # holds every trigram of "hello", not in sequence
    "Hello there",
]
QUERIES = [
    "café",
    "CAFÉ",
    "Café",
    "caf",
    "afé",
    "é",
    "É",
    "straße",
    "STRASSE",
    "ss",
    "ß",
    "naïve",
    "NAÏVE",
    "ï",
    "İstanbul",
    "istanbul",
    "σίσυφος",
    "ΣΊΣΥΦΟΣ",
    "🙂",
    "🙂 r",
    '"quoted"',
    '"',
    "%",
    "100%",
    "_",
    "votes_c",
    "vote",
    "VOTE",
    "vote today",
    "vo",
    "v",
    "tax",
    "TAX",
    "x e",
    "zzq",
    "a/b",
    "1000",
    "hello",
]


def seed_texts(engine: Any) -> dict[str, Any]:
    from db.models import Sample
    from db.session import session_scope

    with session_scope(engine) as s:
        sources = make_dataset(s, "search")
        for i, body in enumerate(TEXTS):
            # Written directly: the importer's duplicate check folds case, and these differ only in case.
            s.add(
                Sample(
                    dataset_id=s.get_one(Sample, sources[0]).dataset_id,
                    text=body,
                    split="train",
                    origin="augmented",
                    content_hash=f"search-{i}",
                    parent_id=sources[i % len(sources)],
                    method="wordnet",
                    review_status="pending",
                )
            )
    return {"engine": engine, "dataset": "search"}


@pytest.fixture
def search_db(any_engine) -> dict[str, Any]:
    return seed_texts(any_engine)


@pytest.fixture
def sqlite_search_db(engine) -> dict[str, Any]:
    return seed_texts(engine)


def like_reference(session: Session, query: str) -> list[int]:
    """Variant ids whose text matches '%query%' by the database's own LIKE (SQLite) or ILIKE (Postgres)."""
    operator = "LIKE" if session.get_bind().dialect.name == "sqlite" else "ILIKE"
    pattern = "%" + query.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"
    sql = f"SELECT id FROM samples WHERE origin = 'augmented' AND text {operator} :p ESCAPE '/' ORDER BY id"
    return list(session.scalars(text(sql), {"p": pattern}))


def searched(session: Session, dataset: Any, query: str) -> list[int]:
    from db.review_filter import QueueFilter
    from db.reviews import review_queue

    every_status = ("pending", "approved", "rejected")
    f = checked_filter(QueueFilter(search=query, statuses=every_status), dataset)
    page = review_queue(session, dataset, f, sort="age", page_size=100)
    return [s.id for s in page.items]


@pytest.mark.parametrize("path", ["index-driven", "checked-row-by-row"])
def test_search_returns_exactly_what_like_returns(search_db, monkeypatch, path) -> None:
    from db import review_access
    from db.datasets import get_dataset

    if path == "checked-row-by-row":  # as for a word too common for the index to pay
        monkeypatch.setattr(review_access, "SELECTIVE_TEXT_ROWS", 0)
    with Session(bind=search_db["engine"]) as s:
        dataset = get_dataset(s, search_db["dataset"])
        found = {q: searched(s, dataset, q) for q in QUERIES}
        assert found == {q: like_reference(s, q) for q in QUERIES}
    assert len(found["vote"]) == 6 and found["%"] == found["100%"] != []  # case folds; wildcards are literal


def test_the_sqlite_trigram_index_finds_more_than_like_keeps(sqlite_search_db) -> None:
    """Why LIKE still decides on SQLite: FTS5 folds É to é, LIKE does not (nor did it before the index); and
    the index knows which trigrams a text holds, not in which order."""
    from db.text_search import candidate_ids

    with Session(bind=sqlite_search_db["engine"]) as s:
        for query in ("CAFÉ", "hello"):
            assert set(like_reference(s, query)) < set(s.scalars(candidate_ids(query))), query


def sqlite_plan(session: Session, dataset: Any, query: str, sort: str) -> list[str]:
    from db.models import Sample
    from db.review_access import access_path
    from db.review_filter import QueueFilter

    where, order = access_path(session, dataset, checked_filter(QueueFilter(search=query), dataset), sort)
    statement = select(Sample.id).where(*where).order_by(*order).limit(300)
    sql = str(statement.compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
    return [row[3] for row in session.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]


@pytest.mark.parametrize("sort", ["age", "family", "-similarity"])
def test_a_search_reads_the_trigram_index_not_every_row(sqlite_search_db, sort) -> None:
    """SQLite: the page's query starts from the FTS5 table and fetches its matches by id; no scan of samples."""
    from db.datasets import get_dataset

    with Session(bind=sqlite_search_db["engine"]) as s:
        dataset = get_dataset(s, sqlite_search_db["dataset"])
        plan = sqlite_plan(s, dataset, "senator", sort)
        assert any(step.startswith("SCAN samples_text_fts VIRTUAL TABLE") for step in plan), plan
        assert any("samples USING INTEGER PRIMARY KEY" in step for step in plan), plan
        assert not any(step.startswith("SCAN samples ") or step == "SCAN samples" for step in plan), plan
        short = sqlite_plan(s, dataset, "se", sort)  # no trigram in two characters: LIKE, on the sort's walk
        assert not any("samples_text_fts" in step for step in short), short


@pytest.mark.postgres
def test_postgres_serves_the_search_from_the_trigram_index(pg_settings) -> None:
    """The queue's ILIKE (with its ESCAPE clause) can use ix_samples_text_trgm; with a few rows the planner
    prefers a scan, so scans are switched off to see that the index applies at all."""
    from db.models import Sample
    from db.session import get_engine
    from db.text_search import contains_text

    engine = get_engine(pg_settings.resolved_database_url)
    with Session(bind=engine) as s:
        s.execute(text("SET LOCAL enable_seqscan = off"))
        for query in ("senator", "se"):
            compiled = select(Sample.id).where(contains_text("postgresql", query)).compile(engine)
            plan = "\n".join(s.connection().exec_driver_sql("EXPLAIN " + str(compiled), compiled.params).scalars())
            assert "ix_samples_text_trgm" in plan, plan


def test_the_index_follows_inserts_edits_and_deletes(search_db) -> None:
    from db.auth import get_or_create_user
    from db.datasets import get_dataset
    from db.models import Sample
    from db.session import session_scope
    from services.review import decide
    from tests.conftest import join_project

    def member(s, name):  # type: ignore[no-untyped-def]
        user = get_or_create_user(s, name, "annotator")
        join_project(s, name)  # the search dataset is in the default project
        return user

    engine = search_db["engine"]
    with session_scope(engine) as s:
        dataset = get_dataset(s, search_db["dataset"])
        (target,) = searched(s, dataset, "1000 votes")
        decide(s, target, member(s, "ed"), "edit", 1, text="A thousand ballots counted")
        gone = s.scalar(select(Sample.id).where(Sample.text == "a syntax error"))
        s.delete(s.get_one(Sample, gone))
    with Session(bind=engine) as s:
        dataset = get_dataset(s, search_db["dataset"])
        assert searched(s, dataset, "1000 votes") == []
        assert searched(s, dataset, "thousand ballots") == [target]
        assert searched(s, dataset, "syntax") == []
        assert searched(s, dataset, "tax") == like_reference(s, "tax") != []


def test_upgrading_an_existing_database_indexes_its_texts(tmp_path) -> None:
    """Migration 0006 on a SQLite database that already holds samples: they are searchable at once; and it
    downgrades cleanly."""
    from alembic import command

    from db.datasets import get_dataset
    from db.session import make_engine, session_scope
    from tests.test_migrations import migrate as migrate_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")

    def migrate(step: Any, revision: str) -> None:
        migrate_engine(engine, step, revision)

    def foreign_keys_on() -> bool:  # the pooled connection that migrated is handed out again
        with engine.connect() as conn:
            return bool(conn.exec_driver_sql("PRAGMA foreign_keys").scalar())

    def fts_tables() -> set[str]:
        with engine.connect() as conn:
            return set(conn.scalars(text("SELECT name FROM sqlite_master WHERE name LIKE 'samples_text_fts%'")))

    # The rows are written with today's models (at head), then the schema goes back to before 0006: a
    # database that holds samples but no text index, which is what upgrading an existing database meets.
    migrate(command.upgrade, "head")
    with session_scope(engine) as s:
        sources = make_dataset(s, "old")
        variant = add_variant(s, sources[2], "Join us at the big rally on Saturday!")
    migrate(command.downgrade, "0005")
    assert fts_tables() == set() and foreign_keys_on()
    migrate(command.upgrade, "head")
    assert foreign_keys_on()
    with Session(bind=engine) as s:
        assert searched(s, get_dataset(s, "old"), "BIG RALLY") == [variant]
    # A later migration that rebuilds `samples` (0009's downgrade) must leave the index following the texts.
    migrate(command.downgrade, "0008")
    migrate(command.upgrade, "head")
    with session_scope(engine) as s:
        s.execute(
            text("UPDATE samples SET text = 'Meet us at the town hall on Sunday' WHERE id = :id"), {"id": variant}
        )
    with Session(bind=engine) as s:
        dataset = get_dataset(s, "old")
        assert searched(s, dataset, "TOWN HALL") == [variant] and searched(s, dataset, "BIG RALLY") == []
    migrate(command.downgrade, "0005")
    assert fts_tables() == set()
    engine.dispose()
