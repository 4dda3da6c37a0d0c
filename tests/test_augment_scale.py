"""Augment jobs flat in memory (issue 17, point 4): a job asks the database about its candidates' hashes batch
by batch instead of loading every hash of the dataset, and its val/test texts stream into the leak index."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from db.session import session_scope
from tests.augment_fixtures import run_worker, train_ids


def test_existing_hashes_answers_in_chunks_of_the_in_list_limit(any_engine) -> None:
    from core.textnorm import content_hash
    from db.augmentation import existing_hashes
    from db.models import Dataset, Sample

    with session_scope(any_engine) as s:
        ids = [
            s.execute(
                insert(Dataset)
                .values(name=n, display_name=n, project_id=1, tasks=[], split_info={})
                .returning(Dataset.id)
            ).scalar_one()
            for n in ("a", "b")
        ]
        s.execute(
            insert(Sample),
            [
                {
                    "dataset_id": ids[i % 2],
                    "text": f"t{i}",
                    "split": "train",
                    "content_hash": content_hash(f"t{i}"),
                    "review_count": 0,
                    "version": 1,
                }
                for i in range(2_500)
            ],
        )
    asked = [content_hash(f"t{i}") for i in range(0, 3_000, 1)]  # 2,500 stored (half in each), 500 never
    with session_scope(any_engine) as s:
        found = existing_hashes(s, ids[0], asked)
    assert found == {content_hash(f"t{i}") for i in range(0, 2_500, 2)}


@pytest.mark.usefixtures("augment_env")
def test_an_augment_job_asks_for_its_batches_hashes_only(lead, engine, mini_dataset, monkeypatch) -> None:
    import services.variant_generation as generation

    batches: list[int] = []
    real = generation.existing_hashes

    def spy(session, dataset_id, digests):  # type: ignore[no-untyped-def]
        batches.append(len(digests))
        return real(session, dataset_id, digests)

    monkeypatch.setattr(generation, "existing_hashes", spy)
    sources = train_ids(engine, mini_dataset, limit=100)
    r = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "sample_ids": sources, "methods": ["wordnet"], "n_per_text": 2, "seed": 4},
    )
    assert r.status_code == 202, r.text
    assert run_worker(engine).succeeded == 1
    result = lead.get(f"/api/v1/jobs/{r.json()['id']}").json()["result"]
    assert result["kept"] > 50
    # One question per augmenter call (64 sources × 2 variants at most), never the dataset's 300 hashes at once.
    assert len(batches) == 2 and all(0 < n <= 128 for n in batches), batches
    # Candidates identical to a stored sample of the dataset are still dropped as duplicates.
    again = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "sample_ids": sources, "methods": ["wordnet"], "n_per_text": 2, "seed": 4},
    )
    assert run_worker(engine).succeeded == 1
    repeat = lead.get(f"/api/v1/jobs/{again.json()['id']}").json()["result"]
    assert repeat["kept"] == 0 and repeat["dropped"]["duplicate"] >= result["kept"]
