"""services/leak_guard.py: the per-process val/test index is reused while a dataset's val/test rows stay the
same, rebuilt when they change, and bounded in what it keeps."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import ConflictError
from db.session import session_scope
from tests.review_fixtures import make_dataset
from tests.trainer_fixtures import tiny_encoder  # noqa: F401 (fixture)

TEST_TEXT = "Senator Grassley voted against the farm bill that would have helped rural families across Iowa."


def _add(session: Any, dataset_id: int, split: str, text: str) -> int:
    from core.textnorm import content_hash
    from db.models import Sample

    sample = Sample(dataset_id=dataset_id, text=text, split=split, origin="original", content_hash=content_hash(text))
    session.add(sample)
    session.flush()
    return sample.id


def test_the_index_is_reused_rebuilt_when_val_test_change_and_bounded(any_engine, monkeypatch) -> None:
    from db.datasets import get_dataset

    engine = any_engine
    from services import leak_guard

    builds: list[int] = []
    real = leak_guard._Guard

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, session: Any, dataset_id: int) -> None:
            builds.append(dataset_id)
            super().__init__(session, dataset_id)

    monkeypatch.setattr(leak_guard, "_Guard", Counting)
    monkeypatch.setattr(leak_guard, "_cache", type(leak_guard._cache)())
    near = TEST_TEXT.replace("families", "households")
    with session_scope(engine) as s:
        make_dataset(s, "one")
        make_dataset(s, "two")
        one, two = get_dataset(s, "one"), get_dataset(s, "two")
        test_id = _add(s, one.id, "test", TEST_TEXT)
        _add(s, two.id, "val", "Happy birthday to my wonderful wife, the love of my life.")
    with session_scope(engine) as s:
        one = get_dataset(s, "one")
        leak = leak_guard.leaks(s, one, [near, "Join us at the rally on Saturday!"])
        assert leak[0] is not None and (leak[0].sample_id, leak[0].split) == (test_id, "test") and leak[1] is None
        assert leak_guard.leaks(s, one, [near])[0] is not None
        assert builds == [one.id], "the second check reused the index"
        # Another dataset's test texts are not this one's.
        two = get_dataset(s, "two")
        assert leak_guard.leaks(s, two, [near]) == [None]
        assert builds == [one.id, two.id]
    with session_scope(engine) as s:
        two = get_dataset(s, "two")
        val_id = _add(s, two.id, "val", TEST_TEXT)
    with session_scope(engine) as s:
        found = leak_guard.leaks(s, get_dataset(s, "two"), [near])[0]
        assert found is not None and (found.sample_id, found.split) == (val_id, "val"), "rebuilt after the change"
        assert len(leak_guard._cache) == 2
        # Past the bound on bytes kept, the least recently used index goes; the one in use stays.
        monkeypatch.setattr(leak_guard, "CACHED_BYTES", 1)
        leak_guard.leaks(s, get_dataset(s, "one"), [near])
        assert [key[1] for key in leak_guard._cache] == [get_dataset(s, "one").id]


def test_a_person_cannot_write_a_short_test_text_again_with_other_punctuation(engine) -> None:
    """The doors (an edit, a text sent to augment) refuse the same words as a val/test text, saying so."""
    from db.datasets import get_dataset
    from services import leak_guard

    with session_scope(engine) as s:
        make_dataset(s, "short")
        test_id = _add(s, get_dataset(s, "short").id, "test", "Vote today!")
    with session_scope(engine) as s:
        leak, other = leak_guard.leaks(s, get_dataset(s, "short"), ["vote today.", "Vote tomorrow."])
    assert leak is not None and (leak.sample_id, leak.split, leak.same_words) == (test_id, "test", True)
    assert "the same words as test sample" in leak.describe() and other is None


@pytest.mark.parametrize("between", [" / ", "-", "_", ", "])
def test_a_long_test_text_with_punctuation_between_its_words_is_a_leak(engine, between) -> None:
    """Past 200 characters a text had no same-words key, and a test text with its spaces written " / " (or
    "-", "_", ", ") scored 0 on both n-gram measures: an edit or a submission stored it, and it trained (the
    trainer's tokenizer splits on the punctuation and reads the test text's words in order)."""
    from db.datasets import get_dataset
    from services import leak_guard

    long_test = (
        "The committee heard testimony today from farmers across the state about the drought and the water rights "
        "bill, and I asked the secretary why the relief money promised last spring has still not reached the "
        "families who need it most."
    )
    assert len(long_test) > 200
    with session_scope(engine) as s:
        make_dataset(s, "long")
        test_id = _add(s, get_dataset(s, "long").id, "test", long_test)
    disguised = long_test.replace(" ", between)
    half = " ".join(w if i % 2 else w + "-" for i, w in enumerate(long_test.split(" ")))  # half the spaces
    with session_scope(engine) as s:
        found = leak_guard.leaks(s, get_dataset(s, "long"), [disguised, half, "An unrelated post about schools."])
    assert [(f.sample_id, f.same_words) if f else None for f in found] == [(test_id, True), (test_id, True), None]


def test_val_test_and_training_texts_are_read_by_seeks_along_the_split_index(engine) -> None:
    """What the leak guard and the augmenter read, a batch at a time after the last id, and the leak guard's
    freshness key (the largest id per split, asked at every check), each walk ix_samples_split_id from where they
    start: no scan of a dataset's rows and no sort of what is left of them per batch, which made reading a
    million val/test texts take about 40 s, and a check count every val/test row."""
    from sqlalchemy import event

    from db.augmentation import reference_last_ids, reference_rows, training_rows
    from db.datasets import get_dataset

    with session_scope(engine) as s:
        make_dataset(s, "plans")
        dataset_id = get_dataset(s, "plans").id
        val = [_add(s, dataset_id, "val", f"val text number {i} about the farm bill") for i in range(7)]
        test = [_add(s, dataset_id, "test", f"test text number {i} about the budget") for i in range(5)]
    statements: list[tuple[str, Any]] = []

    def keep(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        with session_scope(engine) as s:
            rows = list(reference_rows(s, dataset_id, batch=3))
            last = reference_last_ids(s, dataset_id)
            trained = list(training_rows(s, dataset_id, batch=3))
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert [row[0] for row in rows] == sorted(val) + sorted(test) and {row[1] for row in rows} == {"val", "test"}
    assert last == (max(val), max(test))
    # the freshness key names its splits in the SQL: as a parameter, Postgres' generic plan for the statement (run
    # at every check, so prepared) guessed a third of the rows and walked the primary key back through every
    # variant newer than the val/test texts (108 ms of each review page at 200,000 variants)
    freshness = next(statement for statement, _ in statements if "max(samples.id)" in statement)
    assert "samples.split = 'val'" in freshness and "samples.split = 'test'" in freshness, freshness
    assert trained and all(sample_id not in val + test for sample_id, _ in trained)
    assert len(statements) >= 8, "several batches per split were read"
    with engine.connect() as conn:
        for statement, parameters in statements:
            plan = [row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
            steps = [step for step in plan if "samples" in step]
            assert steps and all("USING" in step and "ix_samples_split_id" in step for step in steps), (statement, plan)
            assert not any("TEMP B-TREE" in step or step.startswith("SCAN samples") for step in plan), plan


@pytest.mark.parametrize("overlap", [False, True], ids=["apart", "overlapping"])
def test_two_imports_into_one_dataset_take_turns_and_the_guard_sees_both(any_engine, monkeypatch, overlap) -> None:
    """An import's val/test rows become visible in the order their ids were given (the freshness key is the
    largest val and test id): a second import into the dataset waits until the first commits. Without it, on
    Postgres, the second could commit first, a check in between would keep an index keyed on its larger ids, and
    the first import's test texts would stay out of the guard once it committed. The second also reports the
    first's rows as duplicates rather than failing on their content hashes."""
    import threading
    import time

    from sqlalchemy.orm import Session

    from db import import_staging
    from db.datasets import get_dataset
    from db.session import readonly_engine
    from services import leak_guard
    from services.importing import ImportSpec, import_file

    engine = any_engine
    monkeypatch.setattr(leak_guard, "_cache", type(leak_guard._cache)())
    first_text = "The first import brings a test post about rural broadband grants for farming towns in Ohio."
    second_text = "The second import brings a test post about veterans' clinics and their waiting lists in Texas."

    def csv_of(*rows: tuple[str, str]) -> bytes:
        return ("text,label,split\n" + "".join(f'"{t}",a,{split}\n' for t, split in rows)).encode()

    spec = ImportSpec(dataset="turns", tasks=["label"])
    with session_scope(engine) as s:
        import_file(s, csv_of(("a train post to start with", "train"), ("a val post", "val")), spec, filename="0.csv")

    real, inserted, release = import_staging.insert_samples, threading.Event(), threading.Event()
    order: list[str] = []

    def insert_samples(conn: Any, dataset_id: int, created_by: Any, now: Any) -> int:
        n = real(conn, dataset_id, created_by, now)
        order.append(threading.current_thread().name)
        if threading.current_thread().name == "first":
            inserted.set()
            assert release.wait(30), "the test released the first import"
        return n

    monkeypatch.setattr(import_staging, "insert_samples", insert_samples)
    results: dict[str, Any] = {}

    def run(name: str, data: bytes) -> None:
        try:
            with session_scope(engine) as s:
                results[name] = import_file(s, data, spec, filename=f"{name}.csv")
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            results[name] = exc

    shared = [("a train post both files hold", "train")] if overlap else []
    first = threading.Thread(target=run, name="first", args=("first", csv_of(*shared, (first_text, "test"))))
    second = threading.Thread(target=run, name="second", args=("second", csv_of(*shared, (second_text, "test"))))
    first.start()
    assert inserted.wait(30), "the first import reached its insert"
    second.start()
    second.join(2)  # without turns, the second import commits here
    with Session(bind=readonly_engine(engine)) as s:  # a check meanwhile, as an editor's would be
        assert leak_guard.leaks(s, get_dataset(s, "turns"), [first_text]) == [None], "the first is not committed"
    time.sleep(0.5)
    release.set()
    first.join(30)
    second.join(30)
    assert order == ["first", "second"], "the second import inserted only after the first committed"
    assert results["second"].imported == 1 and bool(results["second"].duplicates) == overlap, results
    with Session(bind=readonly_engine(engine)) as s:
        found = leak_guard.leaks(s, get_dataset(s, "turns"), [first_text + " Indeed.", second_text + " Indeed."])
    assert all(leak is not None and leak.split == "test" for leak in found), found


@pytest.mark.postgres
def test_an_import_into_a_dataset_deleted_while_it_waited_for_its_turn_says_so(pg_settings, monkeypatch) -> None:
    """The dataset is deleted (and committed) after the import read it and before its turn came: the import
    answers a conflict naming the dataset, not a foreign-key error, and nothing is imported."""
    from sqlalchemy import func, select

    from db.datasets import delete_dataset
    from db.models import Sample
    from db.session import get_engine
    from services import importing
    from services.importing import ImportSpec, import_file

    engine = get_engine(pg_settings.resolved_database_url)
    spec = ImportSpec(dataset="gone", tasks=["label"])
    with session_scope(engine) as s:
        import_file(s, b"text,label,split\na first post,a,train\n", spec, filename="0.csv")
    real = importing.lock_dataset

    def deleted_first(session: Any, dataset_id: int) -> bool:
        with session_scope(engine) as other:
            delete_dataset(other, "gone")
        return real(session, dataset_id)

    monkeypatch.setattr(importing, "lock_dataset", deleted_first)
    with (
        pytest.raises(ConflictError, match="'gone' was deleted while the file was being imported") as err,
        session_scope(engine) as s,
    ):
        import_file(s, b"text,label,split\na second post,a,test\n", spec, filename="1.csv")
    assert err.value.field == "name"
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(Sample)) == 0


def test_the_bound_is_on_the_memory_an_index_holds_not_on_its_number_of_texts(engine, monkeypatch) -> None:
    """An index holds its texts' anchors, posting lists and masks: about 0.7 kB a text of 100 characters and
    5.6 kB at 1,000 (20 kB texts are accepted). A bound on the number of texts kept would let a few long-text
    datasets hold gigabytes; the bound is on bytes."""
    import random

    from db.datasets import get_dataset
    from services import leak_guard

    monkeypatch.setattr(leak_guard, "_cache", type(leak_guard._cache)())
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]

    def text(chars: int) -> str:
        return " ".join(rng.choice(words) for _ in range(chars // 6))

    with session_scope(engine) as s:
        for name, chars in (("long", 3000), ("short", 150), ("short2", 150)):
            make_dataset(s, name)
            dataset_id = get_dataset(s, name).id
            for i in range(20):
                _add(s, dataset_id, "val" if i % 2 else "test", text(chars))
    with session_scope(engine) as s:
        for name in ("long", "short"):
            leak_guard.leaks(s, get_dataset(s, name), [TEST_TEXT])
        long_guard, short_guard = leak_guard._cache.values()
        assert len(long_guard.ids) == len(short_guard.ids) == 20
        assert long_guard.nbytes > 5 * short_guard.nbytes > 0
        # Room for two short-text indexes beside the one in use, not for the long one.
        monkeypatch.setattr(leak_guard, "CACHED_BYTES", 2 * short_guard.nbytes)
        leak_guard.leaks(s, get_dataset(s, "short2"), [TEST_TEXT])
        assert [key[1] for key in leak_guard._cache] == [get_dataset(s, n).id for n in ("short", "short2")]


def test_a_build_holds_up_no_check_on_another_dataset_and_is_done_once(engine, monkeypatch) -> None:
    """Building an index takes seconds (2 s at 100,000 val/test texts): meanwhile a check on another dataset's
    index goes ahead, and a second check on the same dataset waits for that build instead of making its own.
    (Read-only sessions: on SQLite a writing session holds the database's write lock from its first statement.)"""
    import threading

    from sqlalchemy.orm import Session

    from db.datasets import get_dataset
    from db.models import Dataset
    from db.session import readonly_engine
    from services import leak_guard

    with session_scope(engine) as s:
        make_dataset(s, "one")
        make_dataset(s, "two")
        one_id, two_id = get_dataset(s, "one").id, get_dataset(s, "two").id
        test_id = _add(s, one_id, "test", TEST_TEXT)
        val_id = _add(s, two_id, "val", TEST_TEXT)
    building, release = threading.Event(), threading.Event()
    builds: list[int] = []
    real = leak_guard._Guard

    class Slow(real):  # type: ignore[misc, valid-type]
        def __init__(self, session: Any, dataset_id: int) -> None:
            builds.append(dataset_id)
            if dataset_id == one_id:
                building.set()
                assert release.wait(30)
            super().__init__(session, dataset_id)

    monkeypatch.setattr(leak_guard, "_Guard", Slow)
    monkeypatch.setattr(leak_guard, "_cache", type(leak_guard._cache)())
    reader = readonly_engine(engine)
    found: dict[str, Any] = {}

    def check(name: str, dataset_id: int) -> None:
        with Session(reader) as s:
            found[name] = leak_guard.leaks(s, s.get_one(Dataset, dataset_id), [TEST_TEXT])[0]

    slow = threading.Thread(target=check, args=("one", one_id))
    again = threading.Thread(target=check, args=("one again", one_id))
    other = threading.Thread(target=check, args=("two", two_id))
    try:
        slow.start()
        assert building.wait(30)
        again.start()
        other.start()
        other.join(10)
        assert not other.is_alive(), "the check on another dataset waited for this build"
        assert found["two"] is not None and found["two"].sample_id == val_id
        assert "one again" not in found
    finally:
        release.set()
        slow.join(30)
        again.join(30)
    assert found["one"] is not None and found["one again"] is not None and found["one"].sample_id == test_id
    assert sorted(builds) == sorted([one_id, two_id]), "one build per dataset"


def test_a_dataset_deleted_and_made_again_under_its_name_gets_a_new_index(any_engine, monkeypatch) -> None:
    """On SQLite the new dataset takes the deleted one's id, and its first test text the deleted one's sample id:
    the same number of val/test rows and the same largest id. Only the dataset's creation time tells the two
    apart; the index of the deleted one's test texts must not answer for the new one."""
    from db.datasets import delete_dataset, get_dataset
    from services import leak_guard

    monkeypatch.setattr(leak_guard, "_cache", type(leak_guard._cache)())
    other = "Happy birthday to my wonderful wife, the love of my life, and the best mother our kids could have."
    near, near_other = TEST_TEXT.replace("families", "households"), other.replace("wonderful", "amazing")
    with session_scope(any_engine) as s:
        make_dataset(s, "one")
        first = _add(s, get_dataset(s, "one").id, "test", TEST_TEXT)
    with session_scope(any_engine) as s:
        found = leak_guard.leaks(s, get_dataset(s, "one"), [near, near_other])
        assert found[0] is not None and found[0].sample_id == first and found[1] is None
        delete_dataset(s, "one")
    with session_scope(any_engine) as s:
        make_dataset(s, "one")
        second = _add(s, get_dataset(s, "one").id, "test", other)
    with session_scope(any_engine) as s:
        found = leak_guard.leaks(s, get_dataset(s, "one"), [near, near_other])
        assert found[0] is None and found[1] is not None and found[1].sample_id == second


def test_a_build_that_fails_half_way_leaves_nothing_behind(engine, monkeypatch) -> None:
    """A build that fails (the database goes away mid-read, memory runs out) keeps no index and no build lock:
    the next check builds again and answers."""
    import pytest

    from core.near_duplicates import ReferenceIndex
    from db.datasets import get_dataset
    from services import leak_guard

    monkeypatch.setattr(leak_guard, "_cache", type(leak_guard._cache)())
    with session_scope(engine) as s:
        make_dataset(s, "one")
        test_id = _add(s, get_dataset(s, "one").id, "test", TEST_TEXT)
    real_add = ReferenceIndex.add

    def failing_add(self: ReferenceIndex, texts: Any) -> None:
        real_add(self, texts)
        raise MemoryError("half-way")

    monkeypatch.setattr(ReferenceIndex, "add", failing_add)
    near = TEST_TEXT.replace("families", "households")
    with session_scope(engine) as s, pytest.raises(MemoryError):
        leak_guard.leaks(s, get_dataset(s, "one"), [near])
    assert not leak_guard._cache and not leak_guard._building
    monkeypatch.setattr(ReferenceIndex, "add", real_add)
    with session_scope(engine) as s:
        found = leak_guard.leaks(s, get_dataset(s, "one"), [near])[0]
    assert found is not None and found.sample_id == test_id


def test_a_reviewed_text_close_to_a_test_text_never_trains(lead, engine, tiny_encoder: str) -> None:
    """The doors check a text when it is written; training checks again against val/test as they are now (a
    later import, a job run with looser thresholds): such a text is left out and reported with the run."""
    from sqlalchemy import select

    from db.models import Sample
    from tests.test_trainer_api import drain, fast
    from tests.trainer_fixtures import add_variant, import_small

    name = import_small(engine, n_train=30, n_val=12, n_test=12, n_unlabelled=0)
    with session_scope(engine) as s:
        test_text = s.scalars(select(Sample.text).where(Sample.split == "test").order_by(Sample.id)).first()
    leaky = add_variant(engine, name, "train", "approved", f"RT @someone: {test_text} so true")
    kept = add_variant(engine, name, "train", "approved", "an approved variant about the county fair and its pies")
    r = lead.post("/api/v1/training-runs", json={"dataset": name, "seeds": [1], "config": fast(tiny_encoder)})
    assert r.status_code == 202, r.text
    run_id = r.json()["runs"][0]["id"]
    assert drain(engine, ["train"]).succeeded == 1
    run = lead.get(f"/api/v1/training-runs/{run_id}").json()
    assert run["metrics"]["left_out"] == {"near_val_test": [leaky]}
    assert run["snapshot_size"] == 31, "30 originals and the variant that is no leak"
    pairs = lead.get(f"/api/v1/training-runs/{run_id}/snapshot").json()["snapshot"]
    snapshot = {sample_id for sample_id, _hash in pairs}
    assert kept in snapshot and leaky not in snapshot
    job = lead.get("/api/v1/jobs", params={"kind": "train"}).json()["items"][0]
    assert job["result"]["left_out"] == {"near_val_test": 1}
    assert job["result"]["artifact_dir"] == f"runs/{run_id}", "a member sees no server path in a job either"


def test_an_export_of_the_training_view_leaves_out_what_training_leaves_out(lead, engine, tmp_path) -> None:
    """An engineer who trains outside augloop on the exported training view must not train on a test text:
    the approved near-copy of one is left out and counted (API stream, export job, CLI); a pending one, which
    never trains, stays in the views that ask for it, flagged in `near_val_test`."""
    import csv
    import io
    import json

    from sqlalchemy import select

    from db.models import Sample
    from services.datasets import export_to
    from tests.trainer_fixtures import add_variant, import_small

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    with session_scope(engine) as s:
        test_text = s.scalars(select(Sample.text).where(Sample.split == "test").order_by(Sample.id)).first()
    leaky = add_variant(engine, name, "train", "approved", f"RT @someone: {test_text} so true")
    kept = add_variant(engine, name, "train", "approved", "an approved variant about the county fair and its pies")
    pending = add_variant(engine, name, "train", "pending", f"{test_text} !!")

    r = lead.get(f"/api/v1/datasets/{name}/export", params={"format": "jsonl"})
    assert r.status_code == 200, r.text
    rows = {row["id"]: row for row in map(json.loads, r.text.splitlines())}
    assert leaky not in rows and rows[kept]["near_val_test"] is False
    assert len(rows) == 10 + 4 + 4 + 1 and all(rows[i]["near_val_test"] is None for i in rows if i != kept)

    r = lead.get(f"/api/v1/datasets/{name}/export", params={"include": "pending,approved"})
    flagged = {int(row["id"]): row["near_val_test"] for row in csv.DictReader(io.StringIO(r.text))}
    assert flagged == {kept: "False", pending: "True"}

    with session_scope(engine) as s:
        count = export_to(s, name, "csv", "original,approved", tmp_path / "out.csv")
    assert (count.rows, count.left_out_near_val_test) == (19, 1)
    assert str(leaky) not in {row["id"] for row in csv.DictReader((tmp_path / "out.csv").open())}

    from workers.main import Worker

    job_id = lead.post(f"/api/v1/datasets/{name}/exports", json={"format": "csv"}).json()["id"]
    Worker(engine, ["export"]).run(burst=True)
    result = lead.get(f"/api/v1/jobs/{job_id}").json()["result"]
    assert (result["rows"], result["left_out_near_val_test"]) == (19, 1)


def test_augloop_export_warns_of_what_it_left_out(lead, engine, settings, tmp_path) -> None:
    from sqlalchemy import select

    from db.models import Sample
    from tests.cli_process import cli_env, run_augloop
    from tests.trainer_fixtures import add_variant, import_small

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    with session_scope(engine) as s:
        test_text = s.scalars(select(Sample.text).where(Sample.split == "test").order_by(Sample.id)).first()
    add_variant(engine, name, "train", "approved", f"RT @someone: {test_text} so true")
    r = run_augloop("export", name, "-o", str(tmp_path / "out.csv"), env=cli_env(settings))
    assert r.returncode == 0, r.stderr
    assert "wrote 18 rows" in r.stdout and "left out 1 approved rows" in " ".join(r.stderr.split())


def test_reading_the_review_queue_builds_the_index_in_the_background_without_the_write_lock(
    engine, annotator, monkeypatch
) -> None:
    """An edit is checked against val/test inside a writing request, and on SQLite that request holds the write
    lock while the index builds (42 s at a million val/test texts; every other writer waits). Reading the queue,
    which comes before an edit, builds it in the background through a read-only session: writers go on
    meanwhile, a second read starts no second build, and the edit finds the index ready."""
    import sqlite3
    import threading

    from db.datasets import get_dataset
    from services import leak_guard
    from tests.review_fixtures import add_variant

    with session_scope(engine) as s:
        sources = make_dataset(s, "rev")
        dataset_id = get_dataset(s, "rev").id
        test_id = _add(s, dataset_id, "test", TEST_TEXT)
        _add(s, dataset_id, "val", "Happy birthday to my wonderful wife, the love of my life.")
        variant = add_variant(s, sources[0], "Proud to stand with the farmers of Ames at the county fair today.")
    building, release = threading.Event(), threading.Event()
    builds: list[str] = []
    real = leak_guard._Guard

    class Held(real):  # type: ignore[misc, valid-type]
        def __init__(self, session: Any, dataset_id: int) -> None:
            builds.append(threading.current_thread().name)
            building.set()
            assert release.wait(30)
            super().__init__(session, dataset_id)

    monkeypatch.setattr(leak_guard, "_Guard", Held)
    monkeypatch.setattr(leak_guard, "_cache", type(leak_guard._cache)())
    try:
        assert annotator.get("/api/v1/datasets/rev/review-queue").status_code == 200
        assert building.wait(30), "reading the queue started no build"
        writer = sqlite3.connect(engine.url.database, timeout=0.5, isolation_level=None)
        try:
            writer.execute("BEGIN IMMEDIATE")  # fails after 0.5 s if the build held the write lock
            writer.execute("ROLLBACK")
        finally:
            writer.close()
        assert annotator.get("/api/v1/datasets/rev/review-queue").status_code == 200
    finally:
        release.set()
    assert leak_guard.settle(30)
    assert builds == ["leak-guard-warm"]
    version = annotator.get(f"/api/v1/samples/{variant}").json()["sample"]["version"]
    r = annotator.post(
        f"/api/v1/samples/{variant}/decision",
        json={"decision": "edit", "version": version, "text": TEST_TEXT.replace("families", "households")},
    )
    assert r.status_code == 422 and r.json()["leak_of"] == test_id, r.text
    assert builds == ["leak-guard-warm"], "the edit built the index again"
    assert annotator.get("/api/v1/datasets/rev/review-queue").status_code == 200
    assert leak_guard.settle(30) and builds == ["leak-guard-warm"], "a kept index is not built again"


def test_background_builds_go_one_at_a_time_and_push_out_no_index_in_use(engine, monkeypatch) -> None:
    """Queue reads are far more frequent than edits: a read must not make the index an editor uses the least
    recently used one, a background build goes beside the index in use and never pushes it out, one runs at a
    time per process, and a build that began before an import never replaces the index built after it."""
    import threading

    from sqlalchemy.orm import Session

    from db.datasets import get_dataset
    from db.models import Dataset
    from db.session import readonly_engine
    from services import leak_guard

    names = ("one", "two", "three", "four")
    with session_scope(engine) as s:
        ids = {}
        for name in names:
            make_dataset(s, name)
            ids[name] = get_dataset(s, name).id
            _add(s, ids[name], "test", f"{TEST_TEXT} ({name})")
    monkeypatch.setattr(leak_guard, "_cache", type(leak_guard._cache)())
    monkeypatch.setattr(leak_guard, "CACHED_DATASETS", 2)
    reader = readonly_engine(engine)

    def check(name: str) -> None:
        with Session(reader) as s:
            leak_guard.leaks(s, s.get_one(Dataset, ids[name]), ["Join us at the rally on Saturday!"])

    def warm(name: str) -> bool:
        with Session(reader) as s:
            return leak_guard.warm_soon(s, s.get_one(Dataset, ids[name]))

    def kept() -> list[str]:
        by_id = {v: k for k, v in ids.items()}
        return [by_id[key[1]] for key in leak_guard._cache]

    check("one")
    check("two")  # in use now: the most recently used
    assert not warm("one"), "kept already: nothing to build"
    assert kept() == ["one", "two"], "a read reordered the kept indexes"
    assert warm("three") and leak_guard.settle(30)
    assert kept() == ["three", "two"], "beside the index in use, pushing out the older one"

    building, release = threading.Event(), threading.Event()
    real = leak_guard._Guard

    class Held(real):  # type: ignore[misc, valid-type]
        def __init__(self, session: Any, dataset_id: int) -> None:
            building.set()
            assert release.wait(30)
            super().__init__(session, dataset_id)

    monkeypatch.setattr(leak_guard, "_Guard", Held)
    try:
        assert warm("four") and building.wait(30)
        assert not warm("one"), "a second background build while one runs"
    finally:
        release.set()
    assert leak_guard.settle(30) and kept() == ["four", "two"]

    # An index built from the val/test rows as they were before an import does not replace the one after it.
    monkeypatch.setattr(leak_guard, "_Guard", real)
    with Session(reader) as s:
        old_key = leak_guard._key(s, s.get_one(Dataset, ids["two"]))
        old = real(s, ids["two"])
    with session_scope(engine) as s:
        _add(s, ids["two"], "val", "Happy birthday to my wonderful wife, the love of my life.")
    check("two")
    new_key = next(k for k in leak_guard._cache if k[1] == ids["two"])
    assert new_key != old_key and leak_guard._cached(old_key, old) is None
    assert leak_guard._cache[new_key] is not old and old_key not in leak_guard._cache


def test_a_background_build_too_big_to_keep_beside_the_index_in_use_takes_its_place_or_is_not_repeated(
    monkeypatch,
) -> None:
    """A million val/test texts weigh more than the bytes kept beside the index in use: such a build becomes the
    one in use when the displaced one still fits beside it; when neither fits, it is not kept, and that dataset
    is not warmed again (each try would cost a whole build) until its val/test rows change."""
    from types import SimpleNamespace

    from services import leak_guard

    monkeypatch.setattr(leak_guard, "CACHED_BYTES", 100)
    monkeypatch.setattr(leak_guard, "CACHED_DATASETS", 4)
    monkeypatch.setattr(leak_guard, "_unkept", type(leak_guard._unkept)())
    small_a, small_b, big, big2 = [(("k", n), SimpleNamespace(nbytes=b)) for n, b in enumerate((10, 10, 500, 500))]
    assert leak_guard._placed([small_a], small_b) == [small_b, small_a], "fits beside the one in use"
    assert leak_guard._placed([small_a, small_b], big) == [small_a, small_b, big], "in use, the others beside it"
    assert leak_guard._placed([big], big2) == [big] and big2[0] in leak_guard._unkept
    assert leak_guard._placed([], big) == [big]


def test_an_edited_variants_generated_text_near_a_test_text_is_left_blank(lead, engine) -> None:
    """The reviewer replaced the augmenter's text, a near-copy of a test text, with one of their own: the row
    is exported (its text is no leak) but its generated_text is not, in any view and format."""
    import csv
    import io
    import json

    from sqlalchemy import select

    from db.models import Sample
    from tests.trainer_fixtures import add_variant, import_small

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    with session_scope(engine) as s:
        test_text = s.scalars(select(Sample.text).where(Sample.split == "test").order_by(Sample.id)).first()
    edited = add_variant(engine, name, "train", "approved", "an approved variant about the county fair and its pies")
    fine = add_variant(engine, name, "train", "approved", "a second variant about the harvest and the tractors")
    with session_scope(engine) as s:
        s.get(Sample, edited).generated_text = f"RT @someone: {test_text} so true"
        s.get(Sample, fine).generated_text = "the augmenter's text about the harvest, nowhere near val or test"

    r = lead.get(f"/api/v1/datasets/{name}/export", params={"format": "jsonl"})
    rows = {row["id"]: row for row in map(json.loads, r.text.splitlines())}
    assert rows[edited]["generated_text"] is None and rows[edited]["near_val_test"] is False
    assert rows[fine]["generated_text"].startswith("the augmenter's text")
    r = lead.get(f"/api/v1/datasets/{name}/export", params={"include": "approved"})
    exported = {int(row["id"]): row["generated_text"] for row in csv.DictReader(io.StringIO(r.text))}
    assert exported[edited] == "" and test_text not in r.text


def test_a_jsonl_export_is_one_line_per_record_whatever_the_texts_hold(lead, engine) -> None:
    """U+2028, U+2029 and U+0085 are legal raw in a JSON string, but str.splitlines (and other line readers)
    end a line there: the export escapes them, and each line still parses to the exact text."""
    import json

    from tests.trainer_fixtures import add_variant, import_small

    name = import_small(engine, n_train=10, n_val=4, n_test=4, n_unlabelled=0)
    text = "first part\u2028second part\u2029third \u0085 fourth\x0b\x1c end"
    variant = add_variant(engine, name, "train", "approved", text)
    r = lead.get(f"/api/v1/datasets/{name}/export", params={"format": "jsonl", "include": "original,approved"})
    assert r.status_code == 200, r.text
    lines = r.text.splitlines()
    assert len(lines) == len(r.text.split("\n")) - 1 == 10 + 4 + 4 + 1
    rows = {row["id"]: row for row in map(json.loads, lines)}
    assert rows[variant]["text"] == text
