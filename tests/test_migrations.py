"""Data migrations: what an existing database holds reads the same after an upgrade."""

from __future__ import annotations

from typing import Any

import pytest

from db.models import TrainingRun
from db.session import session_scope


def migrate(engine: Any, step: Any, revision: str) -> None:
    """Run an Alembic command (`command.upgrade`, `command.downgrade`) on `engine` to `revision`."""
    from db.migrate import alembic_config

    cfg = alembic_config()
    with engine.connect() as connection:
        cfg.attributes["connection"] = connection
        step(cfg, revision)
        connection.commit()


def test_runs_stored_before_variant_sampling_keep_training_on_every_variant(tmp_path) -> None:
    """Migration 0012: a transformer run stored without `variant_sampling` was created to train on every
    approved variant (`all`); it must not read as today's default. TF-IDF runs get no such key."""
    from alembic import command

    from db.datasets import get_dataset
    from db.session import make_engine
    from services.importing import ImportSpec, import_file
    from trainer.config import TrainConfig

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, command.upgrade, "head")
    with session_scope(engine) as s:
        import_file(s, b"text,bias\nWe passed the farm bill,partisan\n", ImportSpec(dataset="old", tasks=["bias"]))
    with session_scope(engine) as s:
        dataset = get_dataset(s, "old").id
    migrate(engine, command.downgrade, "0011")
    with session_scope(engine) as s:
        old = TrainingRun(dataset_id=dataset, kind="single", config={"encoder": "x", "epochs": 3})
        chosen = TrainingRun(dataset_id=dataset, kind="single", config={"variant_sampling": "one_per_source"})
        tfidf = TrainingRun(dataset_id=dataset, kind="tfidf", config={"c": 1.0})
        s.add_all([old, chosen, tfidf])
        s.flush()
        ids = old.id, chosen.id, tfidf.id
    migrate(engine, command.upgrade, "head")
    with session_scope(engine) as s:
        configs = [s.get_one(TrainingRun, run_id).config for run_id in ids]
    assert configs == [
        {"encoder": "x", "epochs": 3, "variant_sampling": "all"},
        {"variant_sampling": "one_per_source"},
        {"c": 1.0},
    ]
    assert TrainConfig.from_dict(configs[0]).variant_sampling == "all"
    engine.dispose()


def _old_database_with_a_variant(tmp_path: Any) -> tuple[Any, int]:
    """A SQLite database at head holding an imported dataset and one pending variant (its id returned)."""
    from alembic import command

    from db.session import make_engine
    from services.importing import ImportSpec, import_file
    from tests.trainer_fixtures import add_variant

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, command.upgrade, "head")
    with session_scope(engine) as s:
        import_file(s, b"text,bias,split\nWe passed the farm bill,partisan,train\n", ImportSpec("old", ["bias"]))
    return engine, add_variant(engine, "old", "train", "pending", "We approved the farm bill")


def test_automatic_decisions_stay_automatic_through_a_downgrade_and_back(tmp_path) -> None:
    """Migration 0009 added `reviews.automatic` false for every row: a database taken below it and back turned the
    automatic reviewer's approvals into a person's votes towards the dataset's k reviews."""
    from alembic import command

    from db.augmentation import AutomaticDecision, record_automatic_decisions
    from db.auth import automatic_reviewer
    from db.models import Review
    from services.votes import latest_votes

    engine, variant = _old_database_with_a_variant(tmp_path)
    with session_scope(engine) as s:
        record_automatic_decisions(s, automatic_reviewer(s).id, [AutomaticDecision(variant, "approved")])
    migrate(engine, command.downgrade, "0008")
    migrate(engine, command.upgrade, "head")
    with session_scope(engine) as s:
        assert [r.automatic for r in s.query(Review).filter_by(sample_id=variant)] == [True]
        assert latest_votes(s, [variant]) == {}  # no person voted
    engine.dispose()


def test_an_upgrade_passes_over_references_broken_before_it(tmp_path) -> None:
    """A row already pointing at a missing one (written with foreign keys off: a restored backup, a tool) is not
    the migration's doing: the upgrade that rebuilds its table (0013) must not fail on it. It did at random (the
    rebuilt table numbered its foreign keys in another order), and every start after failed the same way."""
    import sqlite3

    from alembic import command
    from sqlalchemy import text

    engine, variant = _old_database_with_a_variant(tmp_path)
    for _ in range(4):  # each rebuild draws the order anew
        migrate(engine, command.downgrade, "0012")
        engine.dispose()
        raw = sqlite3.connect(tmp_path / "old.db")
        raw.execute("UPDATE samples SET created_by = 999 WHERE id = ?", (variant,))
        raw.commit()
        raw.close()
        migrate(engine, command.upgrade, "head")
        with engine.connect() as c:
            assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0017"
            broken = [tuple(row[:3]) for row in c.execute(text("PRAGMA foreign_key_check")).all()]
            assert broken == [("samples", variant, "users")]  # left as it was, for its owner to repair
    engine.dispose()


def test_a_second_process_waits_for_the_one_migrating(tmp_path) -> None:
    """`augloop serve` and `augloop worker` started together on an old database both migrate on first use: the
    second planned the same steps and died on the first's work ("duplicate column name"). It now waits for the
    lock the first holds, then finds the database at head."""
    import threading

    from alembic import command
    from filelock import FileLock
    from sqlalchemy import text

    from db.migrate import upgrade_to_head
    from db.session import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, command.upgrade, "0011")
    held = FileLock(f"{tmp_path / 'old.db'}.migrate-lock")  # another process migrating, as far as this one sees
    held.acquire()
    done = threading.Event()
    failed: list[BaseException] = []

    def second() -> None:
        try:
            upgrade_to_head(engine)
        except BaseException as e:  # noqa: BLE001 - reported below
            failed.append(e)
        done.set()

    threading.Thread(target=second, daemon=True).start()
    assert not done.wait(1.5), "the second migrator went ahead while another held the lock"
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0011"
    held.release()
    assert done.wait(60) and not failed, failed
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0017"
    engine.dispose()


@pytest.mark.postgres
def test_on_postgres_a_second_migrator_waits_for_the_advisory_lock(pg_settings) -> None:
    """The same on Postgres (outside docker compose's one-shot `migrate` service): a process that starts while
    another migrates waits for it."""
    import threading

    from db.migrate import MIGRATION_LOCK_KEY, upgrade_to_head
    from db.session import make_engine

    engine = make_engine(pg_settings.resolved_database_url)
    upgrade_to_head(engine)
    done = threading.Event()
    with engine.connect() as other:
        other.exec_driver_sql(f"SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})")
        threading.Thread(target=lambda: (upgrade_to_head(engine), done.set()), daemon=True).start()
        assert not done.wait(1.5), "the second migrator went ahead while another held the lock"
        other.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
        assert done.wait(60)
    engine.dispose()
