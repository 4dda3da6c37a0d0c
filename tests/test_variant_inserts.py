"""Storing variants when two jobs produce the same text at once (issue 12, point 6): the unique index decides,
the second is counted as a duplicate, and neither job fails."""

from __future__ import annotations

import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.textnorm import content_hash
from db import queue
from db.augmentation import NewVariant, insert_variants
from db.models import Sample, SampleLabel
from db.session import session_scope
from tests.review_fixtures import make_dataset


def _variant(parent: int, text: str) -> NewVariant:
    return NewVariant(
        parent_id=parent,
        text=text,
        content_hash=content_hash(text),
        method="wordnet",
        method_params={},
        model_name=None,
        seed=0,
        similarity=0.9,
        scores={},
    )


def test_two_jobs_storing_the_same_text_concurrently(any_engine) -> None:
    with session_scope(any_engine) as s:
        sources = make_dataset(s, "race")
        dataset_id = s.scalar(select(Sample.dataset_id).where(Sample.id == sources[0]))
        job = queue.enqueue(s, "augment", {}).id
    same = "We must protect Social Security for our elders."
    first = Session(bind=any_engine)
    ids_a, skipped_a = insert_variants(
        first, dataset_id, job, [_variant(sources[0], same), _variant(sources[0], "A text only job A makes.")]
    )
    outcome: dict = {}

    def second_job() -> None:  # its transaction overlaps the first one's: on Postgres it waits on the index
        try:
            with session_scope(any_engine) as s2:
                outcome["result"] = insert_variants(
                    s2, dataset_id, job, [_variant(sources[0], same), _variant(sources[1], "Only B's.")]
                )
        except Exception as err:  # noqa: BLE001 - the test reports it
            outcome["error"] = err

    thread = threading.Thread(target=second_job)
    thread.start()
    thread.join(0.5)  # Postgres: blocked on the uncommitted duplicate; SQLite: waiting for the write lock
    first.commit()
    first.close()
    thread.join(30)
    assert "error" not in outcome, f"the second job failed: {outcome.get('error')!r}"
    ids_b, skipped_b = outcome["result"]
    assert (len(ids_a), skipped_a) == (2, 0) and (len(ids_b), skipped_b) == (1, 1)
    with session_scope(any_engine) as s:
        assert s.scalar(select(func.count()).select_from(Sample).where(Sample.text == same)) == 1
        labels = s.execute(select(SampleLabel.task, SampleLabel.label).where(SampleLabel.sample_id == ids_b[0]))
        assert dict(labels.tuples().all()) == {"bias": "neutral", "message": "constituency"}, "labels of source 2"
