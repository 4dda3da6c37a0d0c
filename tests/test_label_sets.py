"""A dataset's classes after its import: renaming one, or merging it into another. An import only warns of labels
that differ in case or look like missing values; before this, the only fix was deleting the dataset (its
reviews and runs with it) and importing again."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from core.errors import ConflictError, ValidationFailed
from db.models import Dataset, ProtectedTerm, Sample, SampleLabel
from db.session import session_scope
from services.importing import ImportSpec, import_file
from tests.cli_process import cli_env, run_augloop
from tests.trainer_fixtures import tiny_encoder  # noqa: F401 (fixture)

ROWS = [
    ("Vote them out in November", "PARTISAN", "attack"),
    ("Our bill passed the committee today", "neutral", "policy"),
    ("They lied to you again", "partisan", "attack"),
    ("Proud of our volunteers this weekend", "partisan", "mobilization"),
    ("The hearing starts at ten", "neutral", "information"),
    ("Shameful vote by the other side", "PARTISAN", "attack"),
]


def _import(engine: Any) -> None:
    data = "text,bias,message\n" + "".join(f"{t},{b},{m}\n" for t, b, m in ROWS)
    with session_scope(engine) as s:
        import_file(s, data.encode(), ImportSpec(dataset="d", tasks=["bias", "message"], split_seed=3))


def _labels(engine: Any, task: str) -> dict[str, str]:
    with session_scope(engine) as s:
        rows = s.execute(
            select(Sample.text, SampleLabel.label).join(SampleLabel).where(SampleLabel.task == task)
        ).tuples()
        return dict(rows.all())


def test_a_class_is_merged_into_another_and_renamed_with_every_samples_label(any_engine) -> None:
    from services.label_sets import rename_label
    from tests.review_fixtures import add_variant

    _import(any_engine)
    with session_scope(any_engine) as s:
        parent = s.scalar(select(Sample.id).where(Sample.text == ROWS[0][0]))
        variant = add_variant(s, parent, "Vote them all out in November")
        scored = s.get_one(Sample, variant)
        scored.scores = {"similarity": 0.8, "label_model": {"run_id": 7, "probs": {"bias": {"PARTISAN": 0.9}}}}
        scored.label_flag = True
        ds = s.scalar(select(Dataset))
        s.add(ProtectedTerm(dataset_id=ds.id, term="vote", origin="seeded", task="bias", label="PARTISAN"))
        assert ds.labels_of("bias") == ["PARTISAN", "neutral", "partisan"]
    with session_scope(any_engine) as s:
        done = rename_label(s, "d", "bias", "PARTISAN", " partisan ", None)
    assert done["merged"] and done["to"] == "partisan" and done["labels"] == ["neutral", "partisan"]
    assert done["samples_relabelled"] == 3 and done["label_model_scores_withdrawn"] == 1  # two originals, a variant
    bias = _labels(any_engine, "bias")
    assert set(bias.values()) == {"neutral", "partisan"} and bias["Vote them all out in November"] == "partisan"
    with session_scope(any_engine) as s:
        assert s.scalar(select(Dataset)).labels_of("bias") == ["neutral", "partisan"]
        assert s.scalar(select(ProtectedTerm.label)) == "partisan"
        v = s.get_one(Sample, variant)
        assert v.scores == {"similarity": 0.8} and v.label_flag is None  # the old classes' probabilities
    # a plain rename keeps the class's place (its id) in the label set
    from db.augmentation import create_plan

    goals = [("bias", "partisan", 6), ("message", "information", 3), ("message", "attack", 4)]
    combos = [{"labels": {"bias": "partisan", "message": "information"}, "variants": 2}]
    with session_scope(any_engine) as s:
        create_plan(
            s,
            s.scalar(select(Dataset)),
            {},
            {"classes": [{"task": t, "label": x, "target": n} for t, x, n in goals], "combinations": combos},
            None,
        )
    with session_scope(any_engine) as s:
        done = rename_label(s, "d", "message", "information", "info", None)
    assert not done["merged"] and done["labels"] == ["attack", "info", "mobilization", "policy"]
    assert _labels(any_engine, "message")["The hearing starts at ten"] == "info"
    # the plan's goals follow the class (review progress reads them by name); a merged class's goal goes
    with session_scope(any_engine) as s:
        rename_label(s, "d", "message", "attack", "info", None)
    from db.models import AugmentationPlan

    with session_scope(any_engine) as s:
        plan = s.scalar(select(AugmentationPlan)).plan
    assert [(c["task"], c["label"], c["target"]) for c in plan["classes"]] == [
        ("bias", "partisan", 6),
        ("message", "info", 3),
    ]
    assert plan["combinations"][0]["labels"] == {"bias": "partisan", "message": "info"}
    # what the class balance and an export read
    from services.datasets import class_balance

    with session_scope(any_engine) as s:
        balance = class_balance(s, "d", None)
    assert "PARTISAN" not in str(balance) and "information" not in str(balance)


@pytest.mark.parametrize(
    ("task", "label", "to", "field", "said"),
    [
        ("stance", "a", "b", "task", "unknown task 'stance'"),
        ("bias", "Partisan", "x", "label", "has no class 'Partisan'"),
        ("bias", "neutral", " neutral", "to", "already the class's name"),
        ("bias", "neutral", "bad\u202ename", "to", "control or format character"),
        # blank once stripped: a class `""`, which an export writes as an empty cell and an import reads as none
        ("bias", "neutral", " \u3000\t", "to", "cannot be blank"),
        ("bias", "neutral", "\u00a0", "to", "cannot be blank"),
    ],
)
def test_a_rename_that_names_nothing_is_refused_and_changes_nothing(engine, task, label, to, field, said) -> None:
    from services.label_sets import rename_label

    _import(engine)
    before = _labels(engine, "bias")
    with session_scope(engine) as s, pytest.raises(ValidationFailed) as err:
        rename_label(s, "d", task, label, to, None)
    assert err.value.field == field and said in err.value.message
    assert _labels(engine, "bias") == before


def test_the_class_renamed_is_read_as_an_import_reads_a_label(engine) -> None:
    """`label` was matched as typed: ` neutral`, or `café` typed with a combining accent, was "no class" beside
    a list that showed it."""
    from services.label_sets import rename_label

    _import(engine)
    with session_scope(engine) as s:
        assert rename_label(s, "d", "bias", " neutral ", "objective", None)["label"] == "neutral"
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset))
        ds.tasks = [{"name": "bias", "labels": ["PARTISAN", "objective", "partisan", "caf\u00e9"]}, ds.tasks[1]]
    with session_scope(engine) as s:
        done = rename_label(s, "d", "bias", "cafe\u0301", "coffee", None)
    assert done["label"] == "caf\u00e9" and done["labels"] == ["PARTISAN", "objective", "partisan", "coffee"]
    assert set(_labels(engine, "bias").values()) == {"PARTISAN", "objective", "partisan"}
    with session_scope(engine) as s:  # a set stored before 1.0 read as 1: `1.00` names neither for sure
        ds = s.scalar(select(Dataset))
        ds.tasks = [{"name": "bias", "labels": ["1", "1.0", "partisan"]}, ds.tasks[1]]
    with session_scope(engine) as s, pytest.raises(ValidationFailed) as err:
        rename_label(s, "d", "bias", "1.00", "one", None)
    assert err.value.field == "label" and "reads as each of the classes '1', '1.0'" in err.value.message


def test_a_card_shown_with_the_old_class_is_stale_after_a_rename(annotator, engine) -> None:
    """A vote at the version read before a merge approved the variant under the class it joined, which its
    reviewer never saw: the relabelled samples' versions move on (409), the others' stay."""
    from services.label_sets import rename_label
    from tests.review_fixtures import add_variant

    _import(engine)
    with session_scope(engine) as s:
        parents = dict(s.execute(select(Sample.text, Sample.id).where(Sample.split == "train")).tuples().all())
        sources = {bias: parents[text] for text, bias, _ in ROWS if text in parents}
        moved = add_variant(s, sources["PARTISAN"], "Vote every one of them out in November")
        kept = add_variant(s, sources["neutral"], "The committee passed our bill today")
    with session_scope(engine) as s:
        rename_label(s, "d", "bias", "PARTISAN", "partisan", None)
    r = annotator.post(f"/api/v1/samples/{moved}/decision", json={"decision": "approve", "version": 1})
    assert r.status_code == 409, r.text
    r = annotator.post(f"/api/v1/samples/{kept}/decision", json={"decision": "approve", "version": 1})
    assert r.status_code == 200, r.text
    with session_scope(engine) as s:  # originals have no cards: not locked, not rewritten
        assert s.get_one(Sample, sources["PARTISAN"]).version == 1


@pytest.mark.parametrize("kind", ["augment", "train"])
def test_a_rename_waits_for_the_jobs_that_write_samples_or_scores(engine, kind) -> None:
    """An augment job queued with a class's old name would store variants under it after the rename; a run
    training meanwhile would score the pending variants with the old classes' probabilities."""
    from db import queue
    from services.label_sets import rename_label

    _import(engine)
    with session_scope(engine) as s:
        job = queue.enqueue(s, kind, {"dataset": "d"}, dataset_id=s.scalar(select(Dataset.id))).id
    with session_scope(engine) as s, pytest.raises(ConflictError) as err:
        rename_label(s, "d", "bias", "PARTISAN", "partisan", None)
    assert err.value.extra["job_ids"] == [job] and f"#{job}" in err.value.message


def test_a_name_an_import_reads_as_a_class_the_task_has_merges_into_it(engine) -> None:
    """Renaming `2.0` to `1` beside a class `1.0` made two classes that every later import read as one."""
    from services.label_sets import rename_label

    data = "text,score\nfirst,1.0\nsecond,2.0\nthird,1.0\n"
    with session_scope(engine) as s:
        import_file(s, data.encode(), ImportSpec(dataset="n", tasks=["score"], label_order={"score": ["1.0", "2.0"]}))
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset).where(Dataset.name == "n"))
        ds.tasks = [{"name": "score", "labels": ["1.0", "2.0"]}]  # stored before whole decimals were read as 1
        s.execute(SampleLabel.__table__.update().values(label="2.0").where(SampleLabel.label == "2"))
        s.execute(SampleLabel.__table__.update().values(label="1.0").where(SampleLabel.label == "1"))
    with session_scope(engine) as s:
        done = rename_label(s, "n", "score", "2.0", "1", None)
    assert done["merged"] and done["to"] == "1.0" and done["labels"] == ["1.0"]
    assert set(_labels(engine, "score").values()) == {"1.0"}


def test_renaming_is_an_admins_and_answers_what_changed(admin, lead, engine) -> None:
    _import(engine)
    body = {"task": "bias", "label": "PARTISAN", "to": "partisan"}
    assert lead.post("/api/v1/datasets/d/label-renames", json=body).status_code in (403, 404)
    r = admin.post("/api/v1/datasets/d/label-renames", json=body)
    assert r.status_code == 200 and r.json()["merged"] and r.json()["labels"] == ["neutral", "partisan"], r.text
    r = admin.post("/api/v1/datasets/d/label-renames", json={**body, "label": "nope"})
    assert r.status_code == 422 and r.json()["field"] == "label"
    assert admin.get("/api/v1/datasets/d").json()["tasks"][0]["labels"] == ["neutral", "partisan"]


def test_the_cli_renames_and_exits_2_on_a_class_the_task_lacks(settings, engine) -> None:
    _import(engine)
    env = cli_env(settings)
    r = run_augloop("labels", "rename", "d", "PARTISAN", "partisan", "--task", "bias", env=env)
    assert r.returncode == 0 and "'PARTISAN' merged into 'partisan' on 2 samples" in r.stdout, r.stderr
    r = run_augloop("labels", "rename", "d", "PARTISAN", "partisan", "--task", "bias", env=env)
    assert r.returncode == 2 and "has no class 'PARTISAN'" in r.stderr


def test_a_model_that_learnt_the_old_classes_labels_nothing_after_a_rename(admin, lead, engine, tiny_encoder) -> None:
    """A run trained before a class was renamed or merged kept scoring new variants (the latest finished run),
    could be chosen as the label model or pinned, and pseudo-labelled: its probabilities name classes that are
    gone, so it flagged and auto-rejected variants for them. Each door now refuses it (422, saying why); the
    latest run that learnt the classes as they are scores new variants; a pin goes with the rename."""
    from services.variant_scoring import label_model_for
    from tests.test_trainer_api import drain, fast
    from tests.trainer_fixtures import import_small

    name = import_small(engine, n_train=30, n_val=12, n_test=12, n_unlabelled=3)
    r = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [1], "config": fast(tiny_encoder)})
    assert r.status_code == 202, r.text
    drain(engine, ["train"])
    old_runs = [run["id"] for run in r.json()["runs"]]
    assert (
        lead.patch(f"/api/v1/datasets/{name}/variant-settings", json={"label_model_id": old_runs[0]}).status_code == 200
    )
    renamed = admin.post(
        f"/api/v1/datasets/{name}/label-renames", json={"task": "bias", "label": "partisan", "to": "slanted"}
    )
    assert renamed.status_code == 200 and renamed.json()["label_model_unpinned"] == old_runs[0], renamed.text
    for path, body, field in (
        (f"/api/v1/datasets/{name}/label-model", {"model_id": old_runs[-1]}, "model_id"),
        (f"/api/v1/datasets/{name}/pseudo-labels", {"model_id": old_runs[0], "threshold": 0.5}, "model_id"),
    ):
        r = lead.post(path, json=body)
        assert r.status_code == 422 and r.json()["field"] == field and "renamed or merged" in r.json()["detail"], r.text
    r = lead.patch(f"/api/v1/datasets/{name}/variant-settings", json={"label_model_id": old_runs[0]})
    assert r.status_code == 422 and r.json()["field"] == "label_model_id", r.text
    with session_scope(engine) as s:
        assert label_model_for(s, s.scalar(select(Dataset).where(Dataset.name == name))) is None
    # a run trained after the rename scores new variants again
    r = lead.post(
        "/api/v1/training-runs",
        json={"dataset": name, "seeds": [2], "config": fast(tiny_encoder), "classical": False},
    )
    drain(engine, ["train"])
    with session_scope(engine) as s:
        found = label_model_for(s, s.scalar(select(Dataset).where(Dataset.name == name)))
    assert found is not None and found.id == r.json()["runs"][0]["id"]


def test_two_classes_swapped_by_renames_are_not_the_classes_a_model_learnt(tmp_path) -> None:
    """Three renames (neutral→tmp, partisan→neutral, tmp→partisan) swap two classes: the same set in another
    order, the meanings reversed. Compared as sets, a run trained before read as current and flagged with the
    meanings reversed; the order is the classes' ids, and a rename keeps each class's place."""
    import json

    from services.prediction import ModelSpec, label_set_problem

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"tasks": [{"name": "bias", "labels": ["neutral", "partisan"]}]}))
    spec = ModelSpec(1, "single", 1, [str(folder)])
    same = Dataset(name="d", tasks=[{"name": "bias", "labels": ["neutral", "partisan"]}])
    swapped = Dataset(name="d", tasks=[{"name": "bias", "labels": ["partisan", "neutral"]}])
    assert label_set_problem(spec, same) is None
    assert "renamed or merged since" in (label_set_problem(spec, swapped) or "")


def _race(engine: Any, first: Any, second: Any) -> tuple[Any, Any]:
    """`first(session)` runs and holds its transaction open while `second(session)` starts in a thread (and
    waits for the dataset's row, if it takes it); then `first` commits. Returns what each returned or raised."""
    import threading
    import time

    from sqlalchemy.orm import Session

    out: dict[str, Any] = {}
    with Session(bind=engine, expire_on_commit=False) as holder:
        try:
            out["first"] = first(holder)
        except Exception as e:  # noqa: BLE001 - returned to the test
            out["first"] = e

        def run() -> None:
            try:
                with session_scope(engine) as s:
                    out["second"] = second(s)
            except Exception as e:  # noqa: BLE001 - returned to the test
                out["second"] = e

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(1.5)  # the second has read the dataset and waits for its row (or is done, if it takes none)
        holder.commit()
    thread.join(60)
    assert not thread.is_alive()
    return out["first"], out["second"]


def _stored_within_label_sets(engine: Any) -> None:
    with session_scope(engine) as s:
        ds = s.scalar(select(Dataset))
        for task in ds.task_names():
            stored = set(s.scalars(select(SampleLabel.label).where(SampleLabel.task == task)))
            assert stored <= set(ds.labels_of(task)), (task, stored, ds.labels_of(task))


@pytest.mark.postgres
def test_a_rename_and_the_writers_that_read_the_label_sets_take_turns_on_postgres(pg_settings) -> None:
    """On Postgres, an import, a POST /augment with texts or a plan that read the label sets while a rename was
    under way stored rows under the class renamed away (the rename could not see their uncommitted job either):
    each takes the dataset's row and reads the label sets again once it holds it."""
    from db.models import AugmentationPlan, Job
    from db.session import get_engine
    from services import protected_terms
    from services.augmentation import AugmentRequest, PlanRequest, create_and_enqueue_plan, request_variants
    from services.label_sets import rename_label

    engine = get_engine(pg_settings.resolved_database_url)
    _import(engine)
    with session_scope(engine) as s:
        protected_terms.seed(s, s.scalar(select(Dataset)))  # as after the dataset's first augment request

    def rename(fr: str, to: str) -> Any:
        return lambda s: rename_label(s, "d", "bias", fr, to, None)

    # an import of the old name waits for the rename, then is told the labels changed (nothing imported)
    row = b"text,bias,message\nA brand new partisan text,PARTISAN,attack\n"
    _, imported = _race(
        engine,
        rename("PARTISAN", "partisan"),
        lambda s: import_file(s, row, ImportSpec(dataset="d", tasks=["bias", "message"], split="train")),
    )
    assert isinstance(imported, ConflictError) and "given other labels" in imported.message, imported
    _stored_within_label_sets(engine)

    # texts sent with a class renamed meanwhile are refused; a rename after the request finds its job
    def augment(label: str) -> Any:
        texts = [(f"Throw them all out this {label}", {"bias": label, "message": "attack"})]
        return lambda s: request_variants(s, "d", AugmentRequest(methods=["wordnet"], texts=texts), pg_settings, None)

    _, sent = _race(engine, rename("neutral", "objective"), augment("neutral"))
    assert isinstance(sent, ValidationFailed) and "unknown label 'neutral'" in sent.message, sent
    job, renamed = _race(engine, augment("objective"), rename("objective", "factual"))
    assert isinstance(renamed, ConflictError) and renamed.extra["job_ids"] == [job.id], renamed
    _stored_within_label_sets(engine)
    with session_scope(engine) as s:
        s.execute(Job.__table__.update().values(status="cancelled"))

    # a plan built while a class is merged names the classes as they are after it
    plan = PlanRequest(methods=["wordnet"], enqueue=True, min_count=5)
    _, row_or_error = _race(
        engine,
        rename("objective", "partisan"),
        lambda s: create_and_enqueue_plan(s, s.scalar(select(Dataset)), plan, pg_settings, None).id,
    )
    assert isinstance(row_or_error, int), row_or_error
    with session_scope(engine) as s:
        goals = {c["label"] for c in s.get_one(AugmentationPlan, row_or_error).plan["classes"] if c["task"] == "bias"}
        assert goals <= set(s.scalar(select(Dataset)).labels_of("bias")) and "objective" not in goals
    _stored_within_label_sets(engine)


@pytest.mark.postgres
def test_an_export_is_one_snapshot_on_postgres_whatever_commits_meanwhile(pg_settings) -> None:
    """An export reads its rows 2,000 at a time by id, checked 10,000 at a time (leak_guard.CHECK_BATCH): at READ
    COMMITTED, a rename committed between two pages
    wrote the rows before it under the old class and the rows after under the new one (two classes in one
    file). Exports read one snapshot (REPEATABLE READ)."""
    from db.datasets import get_dataset
    from db.session import get_engine, snapshot_engine
    from services.exporting import iter_export, parse_include
    from services.label_sets import rename_label

    engine = get_engine(pg_settings.resolved_database_url)
    rows = "".join(f"text number {i} w{i * 7},{'PARTISAN' if i % 2 else 'neutral'},attack\n" for i in range(24_000))
    with session_scope(engine) as s:
        import_file(s, ("text,bias,message\n" + rows).encode(), ImportSpec(dataset="e", tasks=["bias", "message"]))
    with session_scope(snapshot_engine(engine)) as reading:
        chunks = iter_export(reading, get_dataset(reading, "e"), parse_include("original"), "csv")
        out = [next(chunks)]
        with session_scope(engine) as writing:
            rename_label(writing, "e", "bias", "PARTISAN", "partisan", None)
        out.extend(chunks)
    text = "".join(out)
    assert text.count(",PARTISAN,") == 12_000 and ",partisan," not in text
