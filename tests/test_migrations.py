"""Data migrations: what an existing database holds reads the same after an upgrade."""

from __future__ import annotations

from typing import Any

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
