"""What a training run writes at scale (issue 17, points 4 and 5): its snapshot as a Parquet file beside its
artifacts, streamed by the API (older runs' snapshots stay readable from the row), and the label-consistency
scores of pending variants, written page by page in set-based batches of their own transactions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from db.session import session_scope
from tests.trainer_fixtures import add_variant, import_small, tiny_encoder, tiny_keys  # noqa: F401 (fixture)


def fast(encoder: str) -> dict[str, Any]:
    return tiny_keys(encoder, epochs=1, grad_accum=1, lr=1e-3, rdrop_alpha=0.0)


def test_a_run_keeps_its_snapshot_in_a_file_and_scores_variants_in_batches(
    lead, engine, tiny_encoder, monkeypatch
) -> None:
    import pyarrow.parquet as pq

    import services.label_model as label_model
    from db import training_runs as db_runs
    from db.models import Sample, TrainingRun
    from workers.main import Worker

    name = import_small(engine, n_train=40, n_val=12, n_test=12, n_unlabelled=0)
    pending = [
        add_variant(engine, name, "train", "pending", f"a pending variant number {i} about the vote") for i in range(5)
    ]
    monkeypatch.setattr(label_model, "SCORING_PAGE", 2)
    monkeypatch.setattr(label_model, "SCORE_WRITE_BATCH", 1)
    writes: list[int] = []
    real = db_runs.apply_consistency_scores

    def one_transaction_each(session, run_id, scores, **kwargs):  # type: ignore[no-untyped-def]
        writes.append(len(scores))
        return real(session, run_id, scores, **kwargs)

    monkeypatch.setattr(db_runs, "apply_consistency_scores", one_transaction_each)
    r = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [3], "config": fast(tiny_encoder)})
    assert r.status_code == 202, r.text
    run_id = r.json()["runs"][0]["id"]
    assert Worker(engine, kinds=["train"], poll_seconds=0.05, lease_seconds=30).run(burst=True).succeeded == 1

    with session_scope(engine) as s:
        run = s.get_one(TrainingRun, run_id)
        assert run.snapshot == [] and run.snapshot_size == 40
        path, artifacts = run.snapshot_path, run.artifact_dir
        expected = sorted(
            s.execute(
                select(Sample.id, Sample.content_hash).where(Sample.origin == "original", Sample.split == "train")
            )
            .tuples()
            .all()
        )
        scored = {
            v.id: v.scores["label_model"]["run_id"] for v in s.scalars(select(Sample).where(Sample.id.in_(pending)))
        }
    assert path == f"{artifacts}/snapshot.parquet"
    table = pq.read_table(path)
    assert table.column_names == ["sample_id", "content_hash"]
    assert sorted(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True)) == expected
    body = lead.get(f"/api/v1/training-runs/{run_id}/snapshot")
    assert body.status_code == 200 and body.headers["content-type"] == "application/json"
    assert body.json()["size"] == 40 and sorted(map(tuple, body.json()["snapshot"])) == expected
    assert lead.get(f"/api/v1/training-runs/{run_id}").json()["snapshot_size"] == 40
    # Five pending variants, pages of two, one score per transaction.
    assert writes == [1, 1, 1, 1, 1] and scored == dict.fromkeys(pending, run_id)
    job = lead.get(f"/api/v1/jobs/{r.json()['jobs'][0]['id']}").json()
    assert job["result"]["variants_scored"] == 5 and job["result"]["train_samples"] == 40


def test_runs_recorded_before_snapshot_files_read_theirs_from_the_row(lead, engine, monkeypatch) -> None:
    import services.run_snapshots as run_snapshots
    from db.datasets import get_dataset
    from db.models import JobStatus, TrainingRun

    name = import_small(engine, n_train=8, n_val=4, n_test=4, n_unlabelled=0)
    with session_scope(engine) as s:
        run = TrainingRun(
            dataset_id=get_dataset(s, name).id,
            status=JobStatus.succeeded,
            config={},
            snapshot=[[i, f"hash{i}"] for i in range(70_000)],
        )
        s.add(run)
        s.flush()
        run_id = run.id
    body = lead.get(f"/api/v1/training-runs/{run_id}/snapshot").json()
    assert body["size"] == 70_000 and body["snapshot"][69_999] == [69_999, "hash69999"]
    assert lead.get(f"/api/v1/training-runs/{run_id}").json()["snapshot_size"] == 70_000
    # HEAD answers as the GET does without reading the snapshot (it read and dropped all of it)
    batches: list[int] = []
    real_batches = run_snapshots.snapshot_batches

    def counted(run: Any) -> Any:
        batches.append(run.id)
        return real_batches(run)

    monkeypatch.setattr(run_snapshots, "snapshot_batches", counted)
    head = lead.head(f"/api/v1/training-runs/{run_id}/snapshot")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "application/json"
    assert batches == [] and "content-length" not in head.headers
    with session_scope(engine) as s:  # a snapshot file that is gone is a 404, not a broken stream
        s.get_one(TrainingRun, run_id).snapshot_path = "/nonexistent/snapshot.parquet"
    missing = lead.get(f"/api/v1/training-runs/{run_id}/snapshot")
    assert missing.status_code == 404 and missing.json()["field"] == "run_id"
    assert lead.head(f"/api/v1/training-runs/{run_id}/snapshot").status_code == 404


def test_only_a_run_that_succeeded_has_a_snapshot(lead, engine) -> None:
    """A queued, running, failed or cancelled run answered 200 with size 0 and [], as though it had trained on
    nothing: the list a run trained on is recorded when it succeeds, and until then the route says so."""
    from db.models import JobStatus, TrainingRun

    name = import_small(engine, n_train=8, n_val=4, n_test=4, n_unlabelled=0)
    queued = lead.post("/api/v1/training-runs", json={"dataset": name}).json()["runs"][0]["id"]
    r = lead.get(f"/api/v1/training-runs/{queued}/snapshot")
    assert r.status_code == 409 and r.json()["field"] == "run_id", r.text
    assert r.json()["detail"] == (
        f"run {queued} is queued: the texts a run trained on are recorded when it succeeds"
    ), r.text
    for status in (JobStatus.running, JobStatus.failed, JobStatus.cancelled, JobStatus.succeeded):
        with session_scope(engine) as s:
            s.get_one(TrainingRun, queued).status = status
        r = lead.get(f"/api/v1/training-runs/{queued}/snapshot")
        if status == JobStatus.succeeded:  # recorded before snapshot files: its (empty) list from the row
            assert r.status_code == 200 and r.json()["run_id"] == queued, r.text
        else:
            assert r.status_code == 409 and f"is {status.value}:" in r.json()["detail"], (status, r.text)


def test_consistency_scores_are_written_set_based_and_skip_stale_texts(any_engine) -> None:
    from sqlalchemy import update

    from db import training_runs as db_runs
    from db.models import Sample

    name = import_small(any_engine, n_train=8, n_val=4, n_test=4, n_unlabelled=0)
    texts = [f"variant {i} of the budget post" for i in range(4)]
    ids = [add_variant(any_engine, name, "train", "pending", text) for text in texts]
    with session_scope(any_engine) as s:
        s.execute(update(Sample).where(Sample.id == ids[0]).values(scores={"similarity": 0.5}, version=3))  # votes
        s.execute(update(Sample).where(Sample.id == ids[1]).values(text="Variant 1 of the budget post"))  # edited
        s.execute(update(Sample).where(Sample.id == ids[2]).values(review_status="approved"))
    probs = {"bias": {"neutral": 0.25, "partisan": 0.75}}
    scores = [db_runs.ConsistencyScore(sid, texts[i], 0.25 * (i + 1), i % 2 == 0, probs) for i, sid in enumerate(ids)]
    with session_scope(any_engine) as s:
        assert db_runs.apply_consistency_scores(s, 7, scores) == 2
    with session_scope(any_engine) as s:
        rows = {v.id: v for v in s.scalars(select(Sample).where(Sample.id.in_(ids)))}
        assert rows[ids[0]].label_consistency == 0.25 and rows[ids[0]].label_flag is True
        assert rows[ids[0]].scores == {"similarity": 0.5, "label_model": {"run_id": 7, "probs": probs, "flagged": []}}
        assert rows[ids[1]].label_consistency is None and rows[ids[2]].label_consistency is None
        assert rows[ids[3]].label_consistency == 1.0 and rows[ids[3]].label_flag is False
