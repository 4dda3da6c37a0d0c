"""Which augmenters can run: each worker publishes what it can load; the API and the UI say which methods run
and, for every one that cannot, why and which setting to change."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.usefixtures("augment_env")


def test_model_status_local_cached_offline_and_downloadable(tmp_path, tiny_mlm_dir, monkeypatch) -> None:
    from workers.augment.availability import model_status

    assert model_status(str(tiny_mlm_dir), "AUGLOOP_MLM_MODEL")["state"] == "ready"
    gone = model_status(str(tmp_path / "nope"), "AUGLOOP_MLM_MODEL")
    assert gone["state"] == "unavailable" and "does not exist" in gone["reason"]
    assert gone["setting"] == "AUGLOOP_MLM_MODEL"
    (tmp_path / "empty").mkdir()
    assert "config.json" in model_status(str(tmp_path / "empty"), "X")["reason"]

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache
    offline = model_status("bert-base-multilingual-cased", "AUGLOOP_MLM_MODEL")
    assert offline["state"] == "unavailable"
    assert "HF_HUB_OFFLINE" in offline["reason"] and "AUGLOOP_MLM_MODEL" in offline["reason"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    online = model_status("bert-base-multilingual-cased", "AUGLOOP_MLM_MODEL")
    assert online["state"] == "download" and "first job" in online["note"]


def test_missing_wordnet_names_the_setting(tmp_path, monkeypatch) -> None:
    from core.settings import Settings
    from workers.augment.availability import method_status

    status = method_status("wordnet", Settings(nltk_data=tmp_path))
    assert status["state"] == "unavailable" and status["setting"] == "AUGLOOP_NLTK_DATA"
    assert "make nltk-data" in status["reason"]


def test_language_and_missing_workers_decide_before_models() -> None:
    from core.settings import get_settings
    from workers.augment.availability import for_dataset

    ready = {m: {"state": "ready", "model": m} for m in ("wordnet", "mlm", "backtranslation")}
    by_method = {s["method"]: s for s in for_dataset("fr", [ready], get_settings())}
    assert by_method["wordnet"]["state"] == "unavailable" and "English only" in by_method["wordnet"]["reason"]
    assert by_method["backtranslation"]["setting"] == "AUGLOOP_BT_ROUTES"
    nobody = for_dataset("en", [], get_settings())
    assert {s["state"] for s in nobody} == {"no_worker"} and not any(s["available"] for s in nobody)
    assert "augloop worker" in nobody[0]["reason"]


def _wait(predicate, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_a_running_worker_publishes_its_augmenters(
    admin, annotator, settings, engine, example_dataset, tmp_path
) -> None:
    import os

    from sqlalchemy import func, select

    from db.models import Job, Sample
    from db.session import session_scope

    with session_scope(engine) as s:
        source = s.scalar(select(Sample.id).where(Sample.split == "train").order_by(Sample.id))

    def augment(method: str) -> Any:
        body = {"dataset": example_dataset, "methods": [method], "sample_ids": [source], "n_per_text": 1}
        return admin.post("/api/v1/augment", json=body)

    def jobs() -> int:
        with session_scope(engine) as s:
            return int(s.scalar(select(func.count()).select_from(Job)) or 0)

    def augmenters() -> dict:
        r = annotator.get(f"/api/v1/datasets/{example_dataset}/augmenters")
        assert r.status_code == 200, r.text
        return {s["method"]: s for s in r.json()}

    assert {s["state"] for s in augmenters().values()} == {"no_worker"}
    # The worker's back-translation legs are hub models missing from an empty cache, with the hub offline.
    env = {
        **os.environ,
        "AUGLOOP_DATABASE_URL": settings.resolved_database_url,
        "AUGLOOP_DATA_DIR": str(settings.data_dir),
        "AUGLOOP_WORKER_PRESENCE_SECONDS": "0.2",
        "AUGLOOP_WORKER_POLL_SECONDS": "0.2",
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "AUGLOOP_BT_ROUTES": json.dumps(
            [
                {
                    "source": "en",
                    "pivot": "de",
                    "forward": "Helsinki-NLP/opus-mt-en-de",
                    "backward": "Helsinki-NLP/opus-mt-de-en",
                }
            ]
        ),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "augloop", "worker"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen = _wait(lambda: (s := augmenters())["wordnet"]["state"] != "no_worker" and s)
        assert seen["wordnet"]["state"] == "ready" and seen["wordnet"]["available"]
        # Where the worker keeps its data is the operator's to know: a member reads the folder's last part.
        whole = {s["method"]: s for s in admin.get(f"/api/v1/datasets/{example_dataset}/augmenters").json()}
        assert whole["wordnet"]["note"].startswith("/")
        assert seen["wordnet"]["note"] == "…/" + whole["wordnet"]["note"].rsplit("/", 1)[1]
        assert seen["mlm"]["state"] == "ready" and seen["mlm"]["workers_ready"] == 1
        bt = seen["backtranslation"]
        assert bt["state"] == "unavailable" and not bt["available"] and bt["setting"] == "AUGLOOP_BT_ROUTES"
        assert "Helsinki-NLP/opus-mt-en-de" in bt["reason"] and "HF_HUB_OFFLINE" in bt["reason"]
        # A job no live worker can run is refused at the door, saying why and what to set (it failed on every
        # attempt, minutes later); a plan that would queue such jobs too. Nothing is queued.
        before = jobs()
        refused = augment("backtranslation")
        assert refused.status_code == 409 and refused.json()["field"] == "methods", refused.text
        assert "no running worker can load backtranslation" in refused.json()["detail"]
        assert "AUGLOOP_BT_ROUTES" in refused.json()["detail"] and "HF_HUB_OFFLINE" in refused.json()["detail"]
        plan = {"methods": ["backtranslation"], "target": {"min_fraction_of_largest": 0.5}, "enqueue": True}
        planned = admin.post(f"/api/v1/datasets/{example_dataset}/augmentation-plans", json=plan)
        assert planned.status_code == 409 and planned.json()["field"] == "methods", planned.text
        assert jobs() == before
        preview = admin.post(f"/api/v1/datasets/{example_dataset}/augmentation-plans", json={**plan, "enqueue": False})
        assert preview.status_code == 201, "a plan that queues nothing is still computed"
        listed = admin.get("/api/v1/workers").json()
        assert [w["pid"] for w in listed] == [worker.pid] and "augment" in listed[0]["kinds"]
        assert annotator.get("/api/v1/workers").status_code == 403
    finally:
        worker.send_signal(signal.SIGTERM)
        out = worker.communicate(timeout=60)[0]
    assert worker.returncode == 0, out[-2000:]
    assert {s["state"] for s in augmenters().values()} == {"no_worker"}, "a stopped worker leaves its row"
    assert admin.get("/api/v1/workers").json() == []
    # With no worker running, the job waits in the queue for one (whose settings may differ).
    assert augment("backtranslation").status_code == 202 and jobs() == before + 1


def test_a_worker_checks_again_what_it_can_load(engine, settings, example_dataset, monkeypatch) -> None:
    """The API refuses a method no live worker can load, so what a worker can load must not be what it could
    at its start: a paraphrase endpoint down then, a model put into the cache since. It checks again every
    AUGLOOP_WORKER_CAPABILITIES_SECONDS, and the refusal ends."""
    import workers.augment.availability as availability
    from core.errors import ConflictError
    from db.models import Dataset
    from db.session import session_scope
    from services.augmentation import check_workers_can_run
    from workers.main import Presence, Worker

    monkeypatch.setattr(settings, "worker_presence_seconds", 0.05)
    monkeypatch.setattr(settings, "worker_capabilities_seconds", 0.3)
    down = {"state": "unavailable", "reason": "the endpoint did not answer", "setting": "AUGLOOP_PARAPHRASE_API_URL"}
    answers = iter([{"wordnet": down}] * 2)
    monkeypatch.setattr(availability, "capabilities", lambda *a, **k: next(answers, {"wordnet": {"state": "ready"}}))

    def refused() -> bool:
        with session_scope(engine) as s:
            dataset = s.query(Dataset).filter_by(name=example_dataset).one()
            try:
                check_workers_can_run(s, dataset, ["wordnet"], settings, None)
            except ConflictError as err:
                assert "the endpoint did not answer (setting: AUGLOOP_PARAPHRASE_API_URL)" in err.message
                return True
        return False

    presence = Presence(Worker(engine, kinds=["augment"]))
    presence.start()
    try:
        assert _wait(refused), "a worker that cannot load the method: refused"
        assert _wait(lambda: not refused()), "checked again, it can: accepted"
    finally:
        presence.stop()


def test_a_worker_without_a_route_for_the_language_cannot_back_translate() -> None:
    from core.settings import get_settings
    from workers.augment.availability import for_dataset

    worker = {
        "backtranslation": {
            "state": "ready",
            "routes": [{"source": "de", "pivot": "en", "state": "ready", "model": "a → b"}],
        }
    }
    (bt,) = [s for s in for_dataset("en", [worker], get_settings()) if s["method"] == "backtranslation"]
    assert bt["state"] == "unavailable" and bt["setting"] == "AUGLOOP_BT_ROUTES" and "'en'" in bt["reason"]


def test_each_worker_is_judged_live_by_its_own_refresh_interval(engine) -> None:
    from datetime import timedelta

    from db.models import WorkerPresence, utcnow
    from db.session import session_scope
    from db.worker_presence import announce, forget_stale, live_workers

    with session_scope(engine) as s:
        for worker_id, every in (("slow", 600.0), ("fast", 1.0), ("dead", 1.0)):
            announce(s, worker_id, hostname="h", pid=1, kinds=["augment"], capabilities={}, refresh_seconds=every)
    with session_scope(engine) as s:
        s.get_one(WorkerPresence, "slow").last_seen_at = utcnow() - timedelta(seconds=100)
        s.get_one(WorkerPresence, "fast").last_seen_at = utcnow() - timedelta(seconds=100)
        s.get_one(WorkerPresence, "dead").last_seen_at = utcnow() - timedelta(days=2)
    with session_scope(engine) as s:
        assert [w.id for w in live_workers(s)] == ["slow"]
        assert forget_stale(s) == 1
    with session_scope(engine) as s:
        assert sorted(w.id for w in s.query(WorkerPresence)) == ["fast", "slow"]


def test_worker_liveness_follows_the_database_clock_not_the_hosts(any_engine, monkeypatch) -> None:
    """A worker on a host whose clock runs a minute behind the API's was shown dead while it worked (its
    `last_seen_at` a minute old as the API's host read it: past three 15 s intervals), and the API refused its
    augmenters; one whose host ran days ahead deleted live workers' rows as stale. Every time is the database's,
    as for leases."""
    from datetime import UTC, datetime, timedelta

    import db.models
    from db import worker_presence
    from db.session import session_scope

    def host_clock(offset: timedelta) -> None:
        skewed = lambda: datetime.now(UTC) + offset  # noqa: E731
        monkeypatch.setattr(db.models, "utcnow", skewed)
        monkeypatch.setattr(worker_presence, "utcnow", skewed, raising=False)  # where it read the host's clock

    host_clock(-timedelta(minutes=1))  # the worker's host
    with session_scope(any_engine) as s:
        worker_presence.announce(
            s, "behind", hostname="gpu", pid=1, kinds=["augment"], capabilities={}, refresh_seconds=15
        )
    with session_scope(any_engine) as s:
        assert worker_presence.touch(s, "behind")
    host_clock(timedelta(0))  # the API's host
    with session_scope(any_engine) as s:
        assert [w.id for w in worker_presence.live_workers(s)] == ["behind"], "a working worker shown dead"
    host_clock(timedelta(days=2))  # another worker's host, sweeping stale rows
    with session_scope(any_engine) as s:
        assert worker_presence.forget_stale(s) == 0, "a live worker's row deleted as a day stale"


def test_a_worker_whose_route_loads_can_back_translate(tiny_marian_dirs) -> None:
    """The route's source language and its models' origin are two things: the models' `source` ("local
    directory") overwrote the language, so a loadable route read as "no route from 'en'"."""
    from core.settings import Settings, get_settings
    from tests.augment_fixtures import bt_routes
    from workers.augment.availability import for_dataset, method_status

    status = method_status("backtranslation", Settings(bt_routes=bt_routes(*tiny_marian_dirs)))
    assert status["state"] == "ready" and status["routes"][0]["source"] == "en"
    (bt,) = [
        s for s in for_dataset("en", [{"backtranslation": status}], get_settings()) if s["method"] == "backtranslation"
    ]
    assert bt["state"] == "ready" and bt["available"] and bt["note"] == "local directory"


def test_a_worker_that_cannot_load_a_method_hands_the_job_to_one_that_can(
    admin, engine, settings, example_dataset, monkeypatch
) -> None:
    """Workers of one deployment may differ: a GPU node with the model cached, a CPU node offline without it.
    The claim takes jobs by kind, so the CPU node took the job and failed it for good (ModelUnavailable is
    permanent) while the GPU node could have run it. Now it hands the job back, its attempt not counted, leaves
    it to the others, and the worker that can load the method runs it. A worker with no one better to hand it to
    runs it itself (and no two workers hand a job back and forth)."""
    from sqlalchemy import func, select

    import workers.augment.availability as availability
    from db.models import Job, Sample
    from db.session import session_scope
    from db.worker_presence import announce
    from workers.main import Worker

    ready = {"state": "ready", "model": "wordnet-3.0"}
    missing = {"state": "unavailable", "reason": "WordNet is missing", "setting": "AUGLOOP_NLTK_DATA"}

    def publish(worker_id: str, wordnet: dict[str, Any]) -> None:
        with session_scope(engine) as s:
            announce(
                s,
                worker_id,
                hostname="h",
                pid=1,
                kinds=["augment"],
                capabilities={"wordnet": wordnet},
                refresh_seconds=60,
            )

    real_status = availability.method_status
    here: dict[str, Any] = {"wordnet": missing}  # what the worker running a job can load, by its own check
    monkeypatch.setattr(availability, "method_status", lambda method, s: here.get(method) or real_status(method, s))
    with session_scope(engine) as s:
        train = s.execute(select(Sample.id, Sample.text).where(Sample.split == "train").order_by(Sample.id).limit(50))
        sources = [sid for sid, text in train if len(text.split()) >= 15][:2]  # words WordNet can replace

    def queue_job(source: int) -> int:
        body = {"dataset": example_dataset, "methods": ["wordnet"], "sample_ids": [source], "n_per_text": 1}
        r = admin.post("/api/v1/augment", json=body)
        assert r.status_code == 202, r.text
        return int(r.json()["id"])

    def job(job_id: int) -> Job:
        with session_scope(engine) as s:
            row = s.get(Job, job_id)
            assert row is not None
            s.expunge(row)
            return row

    def variants_of(source: int) -> int:
        with session_scope(engine) as s:
            return int(s.scalar(select(func.count()).select_from(Sample).where(Sample.parent_id == source)) or 0)

    publish("w-gpu", ready)
    first = queue_job(sources[0])
    cpu = Worker(engine, kinds=["augment"], worker_id="w-cpu", poll_seconds=0.05)
    stats = cpu.run(burst=True)  # returns: the job it handed over is the others' now, not one to wait for
    assert (stats.declined, stats.failed, stats.succeeded) == (1, 0, 0)
    handed = job(first)
    assert handed.status == "queued" and handed.attempts == 0 and handed.worker_id is None
    assert "cannot load wordnet; another running worker can" in (handed.last_error or "")
    assert "w-gpu" not in (handed.last_error or ""), "a worker's id is not the members' to read"
    again = cpu.run(burst=True)  # the same worker: its counts go on
    assert (again.declined, again.job_ids) == (1, [first]), "it leaves the job to the others until it checks again"
    assert job(first).status == "queued"
    monkeypatch.setattr(settings, "worker_capabilities_seconds", 0.2)
    skipping = Worker(engine, kinds=["augment"], worker_id="w-cpu-3", poll_seconds=0.05)
    assert skipping.run(burst=True).declined == 1
    time.sleep(0.3)  # checked again (and still unable): it takes the job up and hands it over again
    assert skipping.run(burst=True).declined == 2 and job(first).attempts == 0

    here.clear()  # the worker that can load it takes it
    assert Worker(engine, kinds=["augment"], worker_id="w-gpu", poll_seconds=0.05).run(burst=True).succeeded == 1
    assert job(first).status == "succeeded" and job(first).worker_id == "w-gpu" and variants_of(sources[0]) > 0

    # No live worker can do better (the other one now reports WordNet missing too): the job runs where it is,
    # without this worker probing what it can load (a paraphrase endpoint over HTTP) for nothing.
    here["wordnet"] = missing
    second = queue_job(sources[1])
    publish("w-gpu", missing)
    probed: list[str] = []
    monkeypatch.setattr(availability, "method_status", lambda method, s: probed.append(method) or missing)
    alone = Worker(engine, kinds=["augment"], worker_id="w-cpu-2", poll_seconds=0.05).run(burst=True)
    assert (alone.declined, alone.succeeded) == (0, 1)
    assert job(second).status == "succeeded" and job(second).attempts == 1
    assert probed == [], "no other worker can: nothing to probe for"
    # Names that are no method (a job written by hand): left to the job's own validation, never an error here.
    from services.augmentation import worker_to_hand_over_to

    publish("w-gpu", ready)
    with session_scope(engine) as s:
        dataset_id = s.scalar(select(Job.dataset_id).where(Job.id == second))
        assert worker_to_hand_over_to(s, dataset_id, ["nope", 3], "w-cpu", settings) is None  # type: ignore[list-item]
