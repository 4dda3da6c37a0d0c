"""The same application on the real Postgres server: schema, import and stats through the API."""

from __future__ import annotations

import pytest

from db.review_filter import SORTS

pytestmark = pytest.mark.postgres


def test_migrations_match_the_models_on_postgres(pg_settings):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.migrate import include_name
    from db.models import Base
    from db.session import get_engine

    with get_engine(pg_settings.resolved_database_url).connect() as conn:
        assert (
            compare_metadata(MigrationContext.configure(conn, opts={"include_name": include_name}), Base.metadata) == []
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
