"""The same application on the real Postgres server: schema, import and stats through the API."""

from __future__ import annotations

import pytest

from db.review_filter import SORTS

pytestmark = pytest.mark.postgres


def test_migrations_match_the_models_on_postgres(pg_settings):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.migrate import comparison_hooks
    from db.models import Base
    from db.session import get_engine

    with get_engine(pg_settings.resolved_database_url).connect() as conn:
        assert (
            compare_metadata(MigrationContext.configure(conn, opts=comparison_hooks(conn.dialect.name)), Base.metadata)
            == []
        )


def test_import_and_stats_over_http_on_postgres(pg_settings, tmp_path):
    from fastapi.testclient import TestClient

    from api.main import create_app
    from db.auth import create_token
    from db.session import get_engine, session_scope
    from tests.conftest import EXAMPLE_CSV

    engine = get_engine(pg_settings.resolved_database_url)
    with session_scope(engine) as s:
        token = create_token(s, "pg-admin", "admin").token
    with TestClient(create_app(pg_settings, engine), headers={"Authorization": f"Bearer {token}"}) as c:
        bad = c.post(
            "/api/v1/datasets/psm/import",
            files={"file": ("x.csv", b"text,bias\nok,neutral\nbad \xff,x\n")},
            data={"task": ["bias"]},
        )
        assert bad.status_code == 422 and bad.json()["line"] == 3
        assert c.get("/api/v1/datasets").json() == []
        r = c.post(
            "/api/v1/datasets/psm/import",
            files={"file": ("psm.csv", EXAMPLE_CSV.read_bytes())},
            data={"task": ["bias", "message"]},
        )
        assert r.status_code == 201 and r.json()["imported"] == 5000
        stats = c.get("/api/v1/datasets/psm/stats").json()
        assert stats["tasks"]["bias"]["labels"]["partisan"]["by_split"] == {"train": 1049, "val": 131, "test": 131}


def test_the_queue_order_indexes_the_comparison_leaves_alone_have_migration_0016s_shape(pg_settings):
    """db/migrate.comparison_hooks leaves these names out of the schema comparison on Postgres (the models state
    them as SQLite has them): what guards them there is this, a lost NULL order or id read from the database."""
    from sqlalchemy import text

    from db.migrate import POSTGRES_ORDER_INDEXES
    from db.session import get_engine

    with get_engine(pg_settings.resolved_database_url).connect() as conn:
        shapes = dict(
            conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'samples'")).tuples().all()
        )
    for name in POSTGRES_ORDER_INDEXES:
        assert "(dataset_id, review_status, " in shapes[name] and " NULLS FIRST, id)" in shapes[name], shapes[name]
    assert "WHERE (label_flag IS TRUE)" in shapes["ix_samples_queue_flagged"]
    assert not [name for name in shapes if name.endswith("_new")], shapes


@pytest.mark.parametrize(
    "sort",  # the score and family sorts (age is the id; expected value is computed, db/reviews.most_useful_first)
    [s for s in SORTS if s.lstrip("-") not in ("age", "expected_value")],
)
def test_the_queue_orders_are_index_walks_on_postgres(pg_settings, sort):
    """Postgres' B-tree indexes hold NULLs last ascending: without migration 0016's NULLS FIRST indexes every
    page of these sorts read and sorted the whole status (p95 592 ms a page at 200,000 variants)."""
    from sqlalchemy import select, text

    from db.models import Sample
    from db.review_access import _order
    from db.session import get_engine

    query = (
        select(Sample.id)
        .where(Sample.dataset_id == 1, Sample.review_status == "pending")
        .order_by(*_order(sort, False, set()))
        .limit(300)
    )
    engine = get_engine(pg_settings.resolved_database_url)
    with engine.connect() as conn:
        conn.execute(text("SET enable_sort = off"))  # a sort is then chosen only where no index yields the order
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        plan = "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN {sql}")))
    assert "Sort" not in plan and "ix_samples_queue_" in plan, plan


def voter_with_a_history_statistics_miss(pg_settings):
    """The bench's seeding at 2,000 variants, ANALYZE, then 1,500 votes by its annotator: what the planner sees
    after a bulk decision, before autovacuum's ANALYZE (the voter has no reviews in its statistics)."""
    import random

    from sqlalchemy import insert, select, text

    from bench.review_latency import seed
    from db.models import Review, Sample
    from db.session import get_engine

    engine = get_engine(pg_settings.resolved_database_url)
    users = seed(engine, 2_000, random.Random(7))["users"]
    voter = users["bench-annotator"]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))  # the voter has no review yet
    with engine.begin() as conn:
        pending = conn.scalars(select(Sample.id).where(Sample.review_status == "pending").limit(1_500)).all()
        conn.execute(
            insert(Review),
            [
                {
                    "sample_id": i,
                    "user_id": voter,
                    "decision": "approve",
                    "text_before": "",
                    "text_after": "",
                    "version_seen": 1,
                }
                for i in pending
            ],
        )
    return engine, voter


def test_a_vote_check_probes_the_variants_reviews_whatever_the_statistics(pg_settings):
    """The bulk count after a 5,000-vote bulk approval, before autovacuum's ANALYZE: the planner took the voter
    for one without reviews and joined their whole history with itself (2.9 s to count 1,045 variants of a
    filter at 20,000 variants; SQLite 27 ms). Every check on the later reviews of a vote is a probe of the
    variant's reviews (ix_reviews_sample_id_user_id), not a walk of the voter's history."""
    import re

    from sqlalchemy import select, text

    from db.models import Sample
    from db.review_access import not_voted_by

    engine, voter = voter_with_a_history_statistics_miss(pg_settings)
    query = select(Sample.id).where(Sample.review_status == "pending", not_voted_by(voter))
    with engine.connect() as conn:
        sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
        plan = [row[0] for row in conn.execute(text(f"EXPLAIN {sql}"))]
        assert (
            len(conn.execute(query).all())
            == len(conn.scalars(select(Sample.id).where(Sample.review_status == "pending")).all()) - 1_500
        )
    # each scan of a later review (reviews_N) is an index probe by the variant
    scans = [i for i, line in enumerate(plan) if re.search(r"Scan .*on reviews reviews_\d", line)]
    assert scans, "\n".join(plan)
    for i in scans:
        assert "ix_reviews_sample_id_user_id" in plan[i] and "sample_id = " in plan[i + 1], "\n".join(plan)


def test_my_latest_decision_walks_the_users_newest_reviews_and_stops(pg_settings):
    """ "My latest decision" grouped the user's whole history by variant on every call (p95 314 ms at 200,000
    variants): it walks their reviews newest first (ix_reviews_user_id with the id, migration 0017) and stops after a
    batch, whatever the statistics."""
    from sqlalchemy import event, text
    from sqlalchemy.orm import Session

    from db.models import User
    from services.review_undo import latest_standing_decision

    engine, voter = voter_with_a_history_statistics_miss(pg_settings)
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, *args) -> None:
        statements.append((statement, parameters))

    with Session(engine) as s:
        newest = s.execute(
            text("SELECT sample_id FROM reviews WHERE user_id = :u ORDER BY id DESC LIMIT 1"), {"u": voter}
        )
        expected = newest.scalar()
        event.listen(engine, "before_cursor_execute", record)
        try:
            assert latest_standing_decision(s, "psm", s.get_one(User, voter)) == expected
        finally:
            event.remove(engine, "before_cursor_execute", record)
        history = [(sql, p) for sql, p in statements if "reviews.user_id = " in sql]
        assert history, statements
        for sql, params in history:
            raw = s.connection().connection.driver_connection
            with raw.cursor() as cur:
                cur.execute("EXPLAIN " + sql, params)
                plan = "\n".join(row[0] for row in cur.fetchall())
            assert "Index Scan Backward using ix_reviews_user_id on" in plan and "Aggregate" not in plan, plan
