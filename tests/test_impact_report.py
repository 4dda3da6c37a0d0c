"""Impact reports: the trainer's data-selection options, the arms and their snapshots, the report computed
once through a worker, the paired bootstrap on hand-made predictions, failures, and the API's errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from services.run_snapshots import snapshot_pairs
from tests.trainer_fixtures import add_variant, import_small, tiny_encoder, tiny_keys  # noqa: F401 (fixture)


def fast(encoder: str, **extra: Any) -> dict[str, Any]:
    return tiny_keys(encoder, epochs=1, grad_accum=1, lr=1e-3, rdrop_alpha=0.0, **extra)


def drain(engine: Any) -> Any:
    from workers.main import Worker

    return Worker(engine, kinds=["train"], poll_seconds=0.05, lease_seconds=30).run(burst=True)


def variant(engine: Any, name: str, method: str, text: str, status: str = "approved") -> int:
    from db.models import Sample
    from db.session import session_scope

    sample_id = add_variant(engine, name, "train", status, text)
    with session_scope(engine) as s:
        s.execute(update(Sample).where(Sample.id == sample_id).values(method=method))
    return sample_id


def dataset_with_variants(engine: Any) -> tuple[str, dict[str, list[int]]]:
    name = import_small(engine, n_train=24, n_val=8, n_test=12, n_unlabelled=0)
    ids = {
        "wordnet": [variant(engine, name, "wordnet", f"a wordnet variant number {i} on taxes") for i in range(2)],
        "backtranslation": [
            variant(engine, name, "backtranslation", f"a back-translated variant {i} on votes") for i in range(2)
        ],
        "pending": [variant(engine, name, "wordnet", "a pending variant that never trains", "pending")],
    }
    return name, ids


def train_originals(engine: Any, name: str) -> set[int]:
    from db.datasets import get_dataset
    from db.models import Origin, Sample
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = get_dataset(s, name)
        return set(
            s.scalars(
                select(Sample.id).where(
                    Sample.dataset_id == ds.id, Sample.origin == Origin.original, Sample.split == "train"
                )
            )
        )


# Data selection ------------------------------------------------------------------------------------


def test_config_validates_variant_options() -> None:
    from trainer.config import TrainConfig
    from trainer.errors import TrainerError

    assert TrainConfig().variants == "approved" and TrainConfig().exclude_methods == []
    with pytest.raises(TrainerError) as err:
        TrainConfig.from_dict({"variants": "pending"})
    assert err.value.field == "config.variants"
    with pytest.raises(TrainerError) as err:
        TrainConfig.from_dict({"exclude_methods": "wordnet"})
    assert err.value.field == "config.exclude_methods"
    stored = TrainConfig.from_dict({"variants": "none", "exclude_methods": ["wordnet"]}).to_dict()
    assert stored["variants"] == "none" and stored["exclude_methods"] == ["wordnet"]


def test_load_split_data_honours_variants_and_exclusions(engine) -> None:
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.training_data import load_split_data

    name, ids = dataset_with_variants(engine)
    originals = train_originals(engine, name)
    with session_scope(engine) as s:
        ds = get_dataset(s, name)
        every = {sid for sid, _ in load_split_data(s, ds).snapshot()}
        none = {sid for sid, _ in load_split_data(s, ds, variants="none").snapshot()}
        no_wordnet = {sid for sid, _ in load_split_data(s, ds, exclude_methods=["wordnet"]).snapshot()}
    assert every == originals | set(ids["wordnet"]) | set(ids["backtranslation"])
    assert none == originals
    assert no_wordnet == originals | set(ids["backtranslation"])


def reviewed_sample(engine: Any, name: str, origin: str, text: str, status: str, **fields: Any) -> int:
    """A non-original train text of `origin` (a submitted text, a pseudo-label, a variant), labelled as the
    dataset's first train original is."""
    from core.textnorm import content_hash
    from db.datasets import get_dataset
    from db.models import Sample, SampleLabel
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = get_dataset(s, name)
        first = s.scalars(
            select(Sample).where(Sample.dataset_id == ds.id, Sample.split == "train").order_by(Sample.id)
        ).first()
        sample = Sample(
            dataset_id=ds.id,
            text=text,
            split="train",
            origin=origin,
            content_hash=content_hash(text),
            review_status=status,
            **fields,
        )
        sample.labels_rows = [SampleLabel(task=t, label=v) for t, v in first.labels.items()]
        s.add(sample)
        s.flush()
        return sample.id


def test_every_arm_trains_the_approved_texts_that_are_no_augmentation(engine) -> None:
    """Approved pseudo-labels and approved submitted texts are no augmentation: the `originals` arm (variants:
    none) left them out and `all_approved` held them, so every delta against originals credited them to
    augmentation; `without:wordnet`, with WordNet the only method, was not the originals arm again. And a method
    whose only approved variants cannot train (their source a submitted text still under review) was measured,
    every arm the same, Δ 0 by construction (an attacker's finds)."""
    from db import impact_reports as db_reports
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.impact import arm_overrides
    from services.training_data import load_split_data

    name = import_small(engine, n_train=24, n_val=8, n_test=12, n_unlabelled=0)
    wordnet = variant(engine, name, "wordnet", "a wordnet variant on taxes and votes")
    extra = {
        reviewed_sample(engine, name, "pseudo_label", "a pseudo-labelled text on the senate", "approved"),
        reviewed_sample(engine, name, "submitted", "a submitted text another member approved", "approved"),
    }
    waiting = reviewed_sample(engine, name, "submitted", "a submitted text still under review", "pending")
    reviewed_sample(engine, name, "augmented", "its mlm variant, approved", "approved", parent_id=waiting, method="mlm")
    originals = train_originals(engine, name)
    with session_scope(engine) as s:
        ds = get_dataset(s, name)
        methods = db_reports.approved_methods(s, ds)
        arms = {
            arm: {sid for sid, _ in load_split_data(s, ds, **overrides).snapshot()}
            for arm, overrides in arm_overrides(methods).items()
        }
    assert methods == ["wordnet"]  # mlm's only approved variant waits for its source's review
    assert arms["originals"] == originals | extra == arms["without:wordnet"]
    assert arms["all_approved"] == originals | extra | {wordnet}


def test_the_training_set_check_sees_a_method_approved_after_the_report_was_made(engine) -> None:
    """The originals arm leaves out the methods the report found when it was made; a variant of another method
    approved while the runs waited landed in that arm, and the check (expecting every kind but those methods)
    said `consistent`. It expects no augmented variant at all; a report made before 2026-12-07 (no
    `augmentation_methods`) trained on originals alone and is checked as such (a reviewer's find)."""
    from db import impact_reports as db_reports
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.impact import arm_overrides, training_sets
    from services.training_data import load_split_data

    name, _ids = dataset_with_variants(engine)
    with session_scope(engine) as s:
        available = db_reports.approved_methods(s, get_dataset(s, name))
    arms = arm_overrides(available, available)  # as create_impact_report stores them
    late = variant(engine, name, "mlm", "an mlm variant approved while the runs waited")
    with session_scope(engine) as s:
        ds = get_dataset(s, name)
        snapshots = {
            arm: [(i, None, load_split_data(s, ds, **overrides).snapshot())]
            for i, (arm, overrides) in enumerate(arms.items())
        }
    assert late in {sid for sid, *_ in snapshots["originals"][0][2]}
    checked = training_sets(engine, snapshots, available)
    assert checked["consistent"] is False and "originals (run 0: 1)" in checked["warning"], checked
    # an old report's originals arm held originals alone: the same snapshots differ by every variant in it
    old = training_sets(engine, snapshots, None)
    assert old["arms"]["originals"][0]["differs"] == 1 and old["consistent"] is False, old


# Statistics ----------------------------------------------------------------------------------------


def test_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    from trainer.metrics import f1_per_class

    rng = np.random.default_rng(3)
    gold, pred = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    f1, macro = f1_per_class(gold[None, :], pred[None, :], 3)
    assert f1[0] == pytest.approx(f1_score(gold, pred, labels=[0, 1, 2], average=None))
    assert macro[0] == pytest.approx(f1_score(gold, pred, average="macro"))


def test_paired_bootstrap_on_a_hand_made_example() -> None:
    from trainer.bootstrap import paired_bootstrap, seed_mean_scores

    gold = np.array([0] * 60 + [1] * 40)
    base = gold.copy()
    base[:15] = 1  # 15 class-0 texts wrong
    base[60:75] = 0  # 15 class-1 texts wrong
    better = gold.copy()
    better[:3] = 1
    better[60:63] = 0
    known = seed_mean_scores(gold, [better], 2, None)[0] - seed_mean_scores(gold, [base], 2, None)[0]
    boot = paired_bootstrap(gold, [better, better], [base, base], 2, draws=500)
    assert boot["delta"] == pytest.approx(known)
    assert np.all(boot["low"] <= known) and np.all(known <= boot["high"])
    assert np.all(boot["low"] > 0)  # 24 more right out of 100: clearly better, on every class and macro
    same = paired_bootstrap(gold, [base, better], [base, better], 2, draws=200)
    assert np.all(same["delta"] == 0) and np.all(same["low"] <= 0) and np.all(same["high"] >= 0)


def test_a_class_no_test_text_holds_is_shown_unmeasured_not_unchanged(capsys) -> None:
    """A class the test split lacks scored 0.0 ± 0.0 with Δ +0.0 [+0.0, +0.0] in every door: "augmentation
    did nothing" for a class nothing measured. Its rows carry support 0; the CLI, the page's tables and its
    chart say "no test text" or leave it out."""
    from augloop.cli_report import print_report
    from review_ui.charts import impact_deltas
    from review_ui.impact_tables import NO_TEST_TEXT, contributions, table
    from services.impact import compute_result

    gold = [0, 0, 1, 1, 0, 1]  # class 2 ("rare") has no test text
    base, better = [0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 0, 2]

    def dump(pred: list[int]) -> dict[str, Any]:
        return {
            "sample_ids": list(range(6)),
            "tasks": {"t": {"labels": ["a", "b", "rare"], "gold": gold, "pred": pred}},
        }

    arms = {"originals": [dump(base)], "all_approved": [dump(better)], "without:wordnet": [dump(base)]}
    result = compute_result(arms, [1], draws=50)
    support = {(r["class"], r["arm"]): r["support"] for r in result["rows"]}
    assert support[("a", "originals")] == 3 and support[("rare", "all_approved")] == 0
    assert support[("macro", "originals")] == 6
    frame = table(result)
    rare = frame[frame["class"] == "rare"]
    assert set(rare["F1 (mean ± sd)"]) == {NO_TEST_TEXT} and set(rare["Δ vs originals [95% CI]"]) == {NO_TEST_TEXT}
    assert NO_TEST_TEXT not in set(frame[frame["class"] == "a"]["F1 (mean ± sd)"])
    shown = contributions(result)
    assert set(shown[shown["class"] == "rare"]["all approved − without [95% CI]"]) == {NO_TEST_TEXT}
    assert not any("rare" in str(label) for label in impact_deltas(result).index)
    print_report({"id": 1, "status": "succeeded", "progress": {"done": 3, "total": 3}, "result": result})
    out = capsys.readouterr().out
    rare_lines = [line for line in out.splitlines() if "rare" in line]
    assert rare_lines and all("no test text" in line and "+0.0" not in line for line in rare_lines), out
    assert "ensemble arms" not in out  # a report without ensemble arms does not mention them


# Through the API and a worker ----------------------------------------------------------------------


def test_impact_report_through_api_and_worker(lead, engine, tiny_encoder: str) -> None:
    from db.models import ImpactReport, TrainingRun
    from db.session import session_scope
    from services.impact import settle

    name, ids = dataset_with_variants(engine)
    created = lead.post(f"/api/v1/datasets/{name}/impact-reports", json={"seeds": [1, 2], "config": fast(tiny_encoder)})
    assert created.status_code == 202, created.text
    body = created.json()
    report = body["report"]
    # 4 arms × 2 seeds, and (classical, the default) a TF-IDF member per arm
    assert report["status"] == "queued" and report["progress"] == {"done": 0, "total": 12}
    assert report["params"]["methods"] == ["backtranslation", "wordnet"] and report["params"]["classical"]
    data_arms = ["originals", "all_approved", "without:backtranslation", "without:wordnet"]
    assert set(report["run_ids"]) == {*data_arms, *(f"tfidf:{a}" for a in data_arms)}
    assert [j["kind"] for j in body["jobs"]] == ["train"] * 12

    from workers.main import Worker

    one = Worker(engine, kinds=["train"], poll_seconds=0.05, lease_seconds=30).run(burst=True, max_jobs=1)
    assert one.succeeded == 1
    partial = lead.get(f"/api/v1/impact-reports/{report['id']}").json()
    assert partial["status"] == "running" and partial["progress"] == {"done": 1, "total": 12}
    assert partial["result"] is None
    stats = drain(engine)
    assert stats.succeeded == 11, stats

    got = lead.get(f"/api/v1/impact-reports/{report['id']}").json()
    assert got["status"] == "succeeded" and got["progress"] == {"done": 12, "total": 12}
    originals = train_originals(engine, name)
    expected = {
        "originals": originals,
        "all_approved": originals | set(ids["wordnet"]) | set(ids["backtranslation"]),
        "without:wordnet": originals | set(ids["backtranslation"]),
        "without:backtranslation": originals | set(ids["wordnet"]),
    }
    with session_scope(engine) as s:
        for arm, run_ids in got["run_ids"].items():
            for run_id in run_ids:
                run = s.get_one(TrainingRun, run_id)
                assert run.kind == ("tfidf" if arm.startswith("tfidf:") else "single")
                # the TF-IDF member trains on its arm's own training view
                assert {sid for sid, _ in snapshot_pairs(run)} == expected[arm.removeprefix("tfidf:")], arm
        finished_at = s.get_one(ImpactReport, report["id"]).finished_at

    result = got["result"]
    ensemble_arms = [f"ensemble:{a}" for a in data_arms]
    assert result["arms"][0] == "originals" and result["seeds"] == [1, 2]
    assert sorted(result["arms"]) == sorted([*data_arms, *ensemble_arms])
    assert set(result["tasks"]) == {"bias", "message"}
    bias = result["tasks"]["bias"]
    assert set(bias["classes"]) == {"neutral", "partisan", "macro"}
    for arm in data_arms:
        entry = bias["classes"]["macro"][arm]
        assert len(entry["per_seed"]) == 2 and entry["mean"] == pytest.approx(np.mean(entry["per_seed"]))
        if arm == "originals":
            assert entry["delta"] is None
        else:
            base = bias["classes"]["macro"]["originals"]["mean"]
            assert entry["baseline"] == "originals" and entry["delta"] == pytest.approx(entry["mean"] - base)
            assert entry["ci"][0] <= entry["delta"] <= entry["ci"][1]
    # An arm's ensemble (its seeds + its TF-IDF member, one model) is compared with the originals' ensemble.
    for arm in ensemble_arms:
        entry = bias["classes"]["macro"][arm]
        assert len(entry["per_seed"]) == 1
        if arm == "ensemble:originals":
            assert entry["delta"] is None
        else:
            base = bias["classes"]["macro"]["ensemble:originals"]["mean"]
            assert entry["baseline"] == "ensemble:originals"
            assert entry["delta"] == pytest.approx(entry["mean"] - base)
    # The per-seed F1s are the runs' own test macro-F1s (the report recomputes them from the predictions, with
    # the labels the models predict under their decision rules).
    with session_scope(engine) as s:
        run = s.get_one(TrainingRun, got["run_ids"]["originals"][0])
        assert bias["classes"]["macro"]["originals"]["per_seed"][0] == pytest.approx(
            run.metrics["test"]["tasks"]["bias"]["macro_f1"]
        )
    contribution = bias["contributions"]["macro"]["wordnet"]
    all_mean = bias["classes"]["macro"]["all_approved"]["mean"]
    assert contribution["delta"] == pytest.approx(all_mean - bias["classes"]["macro"]["without:wordnet"]["mean"])
    assert "ensemble:wordnet" in bias["contributions"]["macro"]
    classes = sum(len(t["classes"]) for t in result["tasks"].values())  # each task's labels + macro
    assert len(result["rows"]) == 8 * classes and classes == 3 + len(result["tasks"]["message"]["support"]) + 1

    assert result["training_sets"]["consistent"] is True and result["training_sets"]["checked"] is True
    assert {r["differs"] for runs in result["training_sets"]["arms"].values() for r in runs} == {0}
    # a spread where two seeds measured one; an arm's ensemble is one model: no "± 0.0" (a user read it as one)
    from review_ui.impact_tables import table

    shown = table(result)
    shown = shown[shown["test texts"] > 0]
    ensembles = shown["arm"].str.startswith("ensemble:")
    assert all("±" in t for t in shown[~ensembles]["F1 (mean ± sd)"])
    assert not any("±" in t for t in shown[ensembles]["F1 (mean ± sd)"])
    assert bias["classes"]["macro"]["ensemble:originals"]["sd"] is None

    # Settling again (a late or concurrent finisher) changes nothing.
    assert settle(engine, report["id"]) == "succeeded"
    with session_scope(engine) as s:
        assert s.get_one(ImpactReport, report["id"]).finished_at == finished_at
    listed = lead.get(f"/api/v1/datasets/{name}/impact-reports").json()
    assert [r["id"] for r in listed] == [report["id"]]


def test_every_arm_trains_one_lr_for_one_length_whatever_pace_each_run_measures(
    lead, engine, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's find: with a budget each arm selected its own LR and each run planned its length at the pace it
    measured, so two arms trained on the same data (the originals, and all approved but WordNet's when WordNet
    is the only method) trained 239 steps at LR 5e-05 and 310 at 4.49e-05, and the report showed their
    difference as significant. One selection now serves every arm and plans one length for all of them: runs
    that measure different paces train as long, and arms with the same data train the same model."""
    import itertools

    import trainer.lr_search
    import trainer.train
    from db.models import Job, TrainingRun
    from db.session import session_scope
    from trainer.plan import Throughput

    monkeypatch.setattr(trainer.lr_search, "measure_throughput", lambda run: Throughput(0.02, 0.0))
    measured: list[int] = []

    def pace(run: Any) -> Throughput:  # as if the machine sped up and slowed down between the runs
        measured.append(1)
        return next(paces)

    paces = itertools.cycle([Throughput(0.005, 0.0), Throughput(0.08, 0.0)])
    monkeypatch.setattr(trainer.train, "measure_throughput", pace)
    name = import_small(engine, n_train=24, n_val=8, n_test=12, n_unlabelled=0)
    for i in range(2):
        variant(engine, name, "wordnet", f"a wordnet variant number {i} on taxes")
    # lr given: no trials, but the length is planned
    config = tiny_keys(tiny_encoder, epochs=30, grad_accum=1, lr=1e-3, rdrop_alpha=0.0, budget_minutes=0.2)
    body = {"seeds": [5], "config": config, "classical": False}
    created = lead.post(f"/api/v1/datasets/{name}/impact-reports", json=body)
    assert created.status_code == 202, created.text
    assert [j["kind"] for j in created.json()["jobs"]] == ["lr_select"], "one selection for every arm"
    assert drain(engine).succeeded == 4
    report = lead.get(f"/api/v1/impact-reports/{created.json()['report']['id']}").json()
    assert report["status"] == "succeeded", report
    assert measured == [], "a run of the report planned its own length at its own pace"
    with session_scope(engine) as s:
        runs = {arm: s.get_one(TrainingRun, ids[0]) for arm, ids in report["run_ids"].items()}
        (selection,) = s.scalars(select(Job).where(Job.kind == "lr_select")).all()
        assert selection.params["fix_length"] is True
        fixed = {arm: run.config["fixed_epochs"] for arm, run in runs.items()}
        plans = {arm: run.metrics["plan"] for arm, run in runs.items()}
        f1 = {arm: run.metrics["test"]["tasks"]["bias"]["macro_f1"] for arm, run in runs.items()}
    assert len(set(fixed.values())) == 1 and 1 < fixed["originals"] < 30, fixed  # 0.2 min at 0.02 s a sample
    assert {p["lr"] for p in plans.values()} == {1e-3}
    assert any("the length given" in r for r in plans["originals"]["reasons"]), plans["originals"]["reasons"]
    assert len({p["epochs"] for p in plans.values()}) == 1, plans
    assert plans["originals"]["steps"] == plans["without:wordnet"]["steps"]
    assert f1["originals"] == f1["without:wordnet"], "the same data, recipe, length and seed trained another model"
    macro = report["result"]["tasks"]["bias"]["classes"]["macro"]["without:wordnet"]
    assert macro["delta"] == 0 and macro["ci"] == [0, 0], macro


def test_a_report_says_when_its_arms_trained_on_data_that_changed_between_them(lead, engine, tiny_encoder: str) -> None:
    """Each arm reads the dataset when its run starts: a variant approved while the report's runs wait lands in
    some arms and not others, and `all_approved − without:<method>` then mixes that change into the method's
    contribution. The report says so, run by run."""
    from workers.main import Worker

    name, _ids = dataset_with_variants(engine)
    body = {"seeds": [1, 2], "classical": False, "config": fast(tiny_encoder)}
    created = lead.post(f"/api/v1/datasets/{name}/impact-reports", json=body)
    assert created.status_code == 202, created.text
    report = created.json()["report"]
    first_all = report["run_ids"]["all_approved"][0]
    while True:  # the queue's order: originals' seeds, then all_approved's
        Worker(engine, kinds=["train"], poll_seconds=0.05, lease_seconds=30).run(burst=True, max_jobs=1)
        if lead.get(f"/api/v1/training-runs/{first_all}").json()["status"] == "succeeded":
            break
    late = variant(engine, name, "wordnet", "a wordnet variant approved while the report ran")
    assert drain(engine).failed == 0
    got = lead.get(f"/api/v1/impact-reports/{report['id']}").json()
    assert got["status"] == "succeeded", got
    sets = got["result"]["training_sets"]
    assert sets["checked"] and sets["consistent"] is False and sets["reference_run"] == first_all
    differs = {arm: [r["differs"] for r in runs] for arm, runs in sets["arms"].items()}
    assert differs == {
        "originals": [0, 0],
        "all_approved": [0, 1],  # its second seed has the late variant
        "without:backtranslation": [1, 1],
        "without:wordnet": [0, 0],  # leaves wordnet out: the late variant changes nothing there
    }, (differs, late)
    assert "without:backtranslation" in sets["warning"] and "originals" not in sets["warning"]


def test_only_the_first_outcome_lands(engine) -> None:
    from db import impact_reports as db_reports
    from db.datasets import get_dataset
    from db.session import session_scope

    name, _ = dataset_with_variants(engine)
    with session_scope(engine) as s:
        report = db_reports.create_report(s, get_dataset(s, name), {}, None)
        report_id = report.id
    with session_scope(engine) as s:
        assert db_reports.finish_report(s, report_id, "succeeded", {"first": True})
    with session_scope(engine) as s:
        assert not db_reports.finish_report(s, report_id, "failed", {"second": True})
        assert db_reports.get_report(s, report_id).result == {"first": True}


def test_a_failed_run_fails_the_report(lead, engine, tmp_path) -> None:
    name, _ = dataset_with_variants(engine)
    missing = str(tmp_path / "no-such-encoder")
    created = lead.post(
        f"/api/v1/datasets/{name}/impact-reports",
        json={"seeds": [1], "methods": ["wordnet"], "config": fast(missing), "classical": False},
    )
    assert created.status_code == 202, created.text
    report_id = created.json()["report"]["id"]
    stats = drain(engine)
    # The first run fails and fails the report, which cancels the two runs still queued.
    assert stats.failed == 1 and stats.succeeded == 0, stats
    got = lead.get(f"/api/v1/impact-reports/{report_id}").json()
    assert got["status"] == "failed" and got["progress"] == {"done": 3, "total": 3}
    assert "failed" in got["result"]["error"] and "no-such-encoder" in got["result"]["error"]
    run_ids = [i for ids in got["run_ids"].values() for i in ids]
    statuses = [lead.get(f"/api/v1/training-runs/{i}").json()["status"] for i in run_ids]
    assert sorted(statuses) == ["cancelled", "cancelled", "failed"]


def test_api_errors(lead, engine, tiny_encoder: str) -> None:
    name, _ = dataset_with_variants(engine)
    url = f"/api/v1/datasets/{name}/impact-reports"
    assert lead.post("/api/v1/datasets/nope/impact-reports", json={}).status_code == 404
    assert lead.get("/api/v1/datasets/nope/impact-reports").status_code == 404
    assert lead.get("/api/v1/impact-reports/999").status_code == 404
    assert lead.get("/api/v1/impact-reports/0").status_code == 422
    for body, field in (
        ({"methods": ["nope"]}, "methods"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"config": {"no_such_key": 1}}, "config.no_such_key"),
        ({"config": {"variants": "all"}}, "config.variants"),
    ):
        response = lead.post(url, json={"config": {"encoder": tiny_encoder}, **body})
        assert response.status_code == 422, body
        if field:
            assert response.json().get("field") == field, response.json()
    assert lead.post(url, json={"seeds": []}).status_code == 422
    empty = import_small(engine, name="plain", n_train=8, n_val=4, n_test=4, n_unlabelled=0)
    response = lead.post(f"/api/v1/datasets/{empty}/impact-reports", json={})
    assert response.status_code == 422 and response.json()["field"] == "dataset"
    untested = import_small(engine, name="untested", n_train=8, n_val=4, n_test=0, n_unlabelled=0)
    variant(engine, untested, "wordnet", "an approved variant of a dataset without a test split")
    response = lead.post(f"/api/v1/datasets/{untested}/impact-reports", json={})
    assert response.status_code == 422 and "test" in response.json()["detail"]
    assert lead.get(url).json() == []  # nothing half-written by the refused requests


def unsettled_report(lead, engine, tiny_encoder: str, monkeypatch) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """A one-seed WordNet report whose 3 runs finished on a worker that died before settling it."""
    import workers.train_jobs

    name, _ = dataset_with_variants(engine)
    created = lead.post(
        f"/api/v1/datasets/{name}/impact-reports",
        json={"seeds": [1], "methods": ["wordnet"], "config": fast(tiny_encoder), "classical": False},
    )
    report_id = created.json()["report"]["id"]
    monkeypatch.setattr(workers.train_jobs, "_settle_report", lambda engine, report_id: None)
    assert drain(engine).succeeded == 3
    return name, report_id


def test_a_report_left_unsettled_by_a_dead_worker_settles_on_read(lead, engine, tiny_encoder: str, monkeypatch) -> None:
    """The worker ending the last run died before settling: the report must not stay "running" forever."""
    from db.models import ImpactReport
    from db.session import session_scope

    name, report_id = unsettled_report(lead, engine, tiny_encoder, monkeypatch)
    with session_scope(engine) as s:
        assert s.get_one(ImpactReport, report_id).status in ("queued", "running")
    listed = lead.get(f"/api/v1/datasets/{name}/impact-reports").json()
    assert [(r["id"], r["status"]) for r in listed] == [(report_id, "succeeded")]
    assert listed[0]["result"]["arms"] == ["originals", "all_approved", "without:wordnet"]
    got = lead.get(f"/api/v1/impact-reports/{report_id}").json()
    assert got["status"] == "succeeded" and got["result"] == listed[0]["result"]


def test_a_run_that_fails_once_is_retried_and_the_report_completes(
    lead, engine, tiny_encoder: str, monkeypatch
) -> None:
    """A transient failure (out of memory, a lost connection) must not fail the whole report: the run waits
    queued for its retry, and the report settles when the retry ends."""
    import services.run_execution

    real = services.run_execution.train_model
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(services.run_execution, "train_model", flaky)
    name, _ = dataset_with_variants(engine)
    created = lead.post(
        f"/api/v1/datasets/{name}/impact-reports",
        json={"seeds": [1], "methods": ["wordnet"], "config": fast(tiny_encoder), "classical": False},
    )
    report_id = created.json()["report"]["id"]
    stats = drain(engine)
    assert stats.retried == 1 and stats.succeeded == 3, stats
    got = lead.get(f"/api/v1/impact-reports/{report_id}").json()
    assert got["status"] == "succeeded", got["result"]
    first = got["run_ids"]["originals"][0]
    assert lead.get(f"/api/v1/training-runs/{first}").json()["status"] == "succeeded"


def test_a_run_whose_worker_is_lost_on_its_last_attempt_fails_with_its_report(lead, engine, tiny_encoder: str) -> None:
    import time

    from db import queue

    name, _ = dataset_with_variants(engine)
    created = lead.post(
        f"/api/v1/datasets/{name}/impact-reports",
        json={"seeds": [1], "methods": ["wordnet"], "config": fast(tiny_encoder), "classical": False},
    )
    report_id = created.json()["report"]["id"]
    run_id = created.json()["report"]["run_ids"]["originals"][0]
    for _ in range(2):  # two workers take the job in turn and die (no heartbeat): both attempts are spent
        job = queue.claim(engine, "doomed", ["train"], lease_seconds=0.05)
        assert job is not None and job.params["run_id"] == run_id
        time.sleep(0.1)
    assert queue.claim(engine, "other", ["probe"]) is None  # any claim reaps expired leases
    run = lead.get(f"/api/v1/training-runs/{run_id}").json()
    assert run["status"] == "failed" and "lease expired" in run["error"]
    got = lead.get(f"/api/v1/impact-reports/{report_id}").json()
    assert got["status"] == "failed" and str(run_id) in got["result"]["error"]


def test_cancelling_a_queued_run_ends_it_and_the_report(lead, engine, tiny_encoder: str) -> None:
    name, _ = dataset_with_variants(engine)
    created = lead.post(
        f"/api/v1/datasets/{name}/impact-reports",
        json={"seeds": [1], "methods": ["wordnet"], "config": fast(tiny_encoder), "classical": False},
    ).json()
    job_id = created["jobs"][0]["id"]
    assert lead.post(f"/api/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    run_id = created["report"]["run_ids"]["originals"][0]
    assert lead.get(f"/api/v1/training-runs/{run_id}").json()["status"] == "cancelled"
    got = lead.get(f"/api/v1/impact-reports/{created['report']['id']}").json()
    assert got["status"] == "failed" and "cancelled" in got["result"]["error"]
    statuses = {lead.get(f"/api/v1/training-runs/{i}").json()["status"] for ids in got["run_ids"].values() for i in ids}
    assert statuses == {"cancelled"}, "the report's other queued runs were stopped with it"


def test_a_report_whose_predictions_are_gone_fails_naming_no_server_path(
    lead, engine, tiny_encoder: str, monkeypatch
) -> None:
    """A run's saved predictions deleted before its report settles: the report fails, naming the run's file by
    its run folder (members read the report; where the server keeps its files is not theirs to know)."""
    from db.models import ImpactReport, TrainingRun
    from db.session import session_scope
    from services.training import runs_root

    _name, report_id = unsettled_report(lead, engine, tiny_encoder, monkeypatch)
    with session_scope(engine) as s:
        run_id = s.get_one(ImpactReport, report_id).run_ids["originals"][0]
        folder = s.get_one(TrainingRun, run_id).artifact_dir
    (runs_root() / str(run_id) / "predictions_test.json").unlink()
    got = lead.get(f"/api/v1/impact-reports/{report_id}").json()
    assert got["status"] == "failed", got
    assert got["result"]["error"].endswith(f"FileNotFoundError: {run_id}/predictions_test.json")
    assert folder not in str(got) and str(runs_root()) not in str(got)


def test_a_training_set_check_that_cannot_read_a_snapshot_says_so_and_leaves_the_report(engine, tmp_path) -> None:
    from services.impact import training_sets

    gone = str(tmp_path / "runs" / "1" / "snapshot.parquet")
    checked = training_sets(engine, {"all_approved": [(1, gone, None)], "originals": [(2, gone, None)]})
    assert checked == {"checked": False, "reason": "the runs' training snapshots could not be read (FileNotFoundError)"}


# Estimates -----------------------------------------------------------------------------------------


def test_an_impact_estimate_names_the_arms_and_runs_the_report_then_queues(
    lead, annotator, engine, tiny_encoder: str
) -> None:
    """The Impact page said nothing of a report's cost before it started (3 seeds × 4 arms and their TF-IDF members
    at the trainer's 20 epochs: hours on a laptop; a user's find). The estimate answers the members of the project
    (as a training estimate does), with the arms and runs that starting the report then queues, each arm timed
    on its own training view."""
    name, _ = dataset_with_variants(engine)
    body = {"seeds": [1, 2], "config": fast(tiny_encoder, variant_sampling="all")}
    asked = annotator.post(f"/api/v1/datasets/{name}/impact-estimates", json=body)
    assert asked.status_code == 200, asked.text
    estimate = asked.json()
    report = lead.post(f"/api/v1/datasets/{name}/impact-reports", json=body).json()["report"]
    data_arms = [arm for arm in report["run_ids"] if not arm.startswith("tfidf:")]
    assert [a["arm"] for a in estimate["arms"]] == data_arms
    assert estimate["runs"] == report["progress"]["total"] == sum(len(ids) for ids in report["run_ids"].values())
    assert (estimate["runs"], estimate["transformer_runs"], estimate["classical_runs"]) == (12, 8, 4)
    assert estimate["methods"] == report["params"]["methods"] and estimate["seeds"] == [1, 2]
    by_arm = {a["arm"]: a for a in estimate["arms"]}
    # all_approved trains the four approved variants the originals arm leaves out, each method's arm two of them
    assert by_arm["all_approved"]["train_examples"] == by_arm["originals"]["train_examples"] + 4
    assert by_arm["without:wordnet"]["train_examples"] == by_arm["originals"]["train_examples"] + 2
    assert by_arm["all_approved"]["seconds_per_run"] >= by_arm["originals"]["seconds_per_run"]
    assert estimate["seconds_per_run"] == max(a["seconds_per_run"] for a in estimate["arms"])
    total = 2 * sum(a["seconds_per_run"] for a in estimate["arms"])
    assert estimate["seconds_total"] == pytest.approx(total, abs=0.1)
    assert "own training view" in estimate["note"]

    fewer = {**body, "methods": ["wordnet"], "classical": False}
    smaller = lead.post(f"/api/v1/datasets/{name}/impact-estimates", json=fewer).json()
    assert [a["arm"] for a in smaller["arms"]] == ["originals", "all_approved", "without:wordnet"]
    assert (smaller["runs"], smaller["classical_runs"]) == (6, 0)
    created = lead.post(f"/api/v1/datasets/{name}/impact-reports", json=fewer).json()["report"]
    assert smaller["runs"] == created["progress"]["total"]


def test_an_impact_estimate_with_a_budget_gives_every_arm_the_originals_arms_length(
    lead, engine, tiny_encoder: str
) -> None:
    """With budget_minutes one LR selection plans one length for every arm on the originals arm's data: an arm
    with more texts trains as many epochs, for longer."""
    name, _ = dataset_with_variants(engine)
    # a hub encoder no run has measured: the reference CPU rate at bert-base's size, where the budget binds
    config = {"encoder": "bert-base-uncased", "variant_sampling": "all", "max_length": 64, "budget_minutes": 3}
    asked = lead.post(f"/api/v1/datasets/{name}/impact-estimates", json={"seeds": [1], "config": config})
    assert asked.status_code == 200, asked.text
    estimate = asked.json()
    arms = {a["arm"]: a for a in estimate["arms"]}
    assert 1 < arms["originals"]["epochs"] < 20, arms  # what the budget affords, not the configured 20
    for arm in arms.values():  # the originals arm's length, to the step (an arm with more texts: for longer)
        assert arm["epochs"] == pytest.approx(arms["originals"]["epochs"], abs=0.25), arms
    assert arms["all_approved"]["seconds_per_run"] > arms["originals"]["seconds_per_run"]
    assert "originals arm's budget" in estimate["note"]


def test_impact_estimate_errors_are_the_reports(lead, engine, tiny_encoder: str) -> None:
    """The 422s starting the report gives, naming the field; a dataset of a project one is not in does not exist."""
    from db.session import session_scope
    from services import projects
    from tests.conftest import _issue, join_project

    name, _ = dataset_with_variants(engine)
    url = f"/api/v1/datasets/{name}/impact-estimates"
    for body, field in (
        ({"methods": ["nope"]}, "methods"),
        ({"methods": ["wordnet", "wordnet"]}, "methods"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"config": {"seed": 7}}, "config.seed"),
        ({"config": {"variants": "none"}}, "config.variants"),
        ({"config": {"exclude_methods": ["wordnet"]}}, "config.exclude_methods"),
        ({"config": {"tasks": ["nope"]}}, "config.tasks"),
    ):
        sent = {**body, "config": {"encoder": tiny_encoder, **body.get("config", {})}}
        for route in ("impact-estimates", "impact-reports"):
            response = lead.post(f"/api/v1/datasets/{name}/{route}", json=sent)
            assert response.status_code == 422, (route, body, response.text)
            assert response.json().get("field") == field, (route, response.json())
    assert lead.post(url, json={"seeds": []}).status_code == 422
    empty = import_small(engine, name="plain", n_train=8, n_val=4, n_test=4, n_unlabelled=0)
    response = lead.post(f"/api/v1/datasets/{empty}/impact-estimates", json={})
    assert response.status_code == 422 and response.json()["field"] == "dataset", response.json()
    assert "no approved variants" in response.json()["detail"]
    untested = import_small(engine, name="untested", n_train=8, n_val=4, n_test=0, n_unlabelled=0)
    variant(engine, untested, "wordnet", "an approved variant of a dataset without a test split")
    response = lead.post(f"/api/v1/datasets/{untested}/impact-estimates", json={})
    assert response.status_code == 422 and response.json()["field"] == "dataset"
    assert "test" in response.json()["detail"]
    assert lead.post("/api/v1/datasets/nope/impact-estimates", json={}).status_code == 404

    other_lead = _issue(engine, "bea-b", "annotator", project_role=None)
    with session_scope(engine) as s:
        projects.create(s, "team-b")
        join_project(s, "bea-b", "team-b", "lead")
    from fastapi.testclient import TestClient

    with TestClient(lead.app, headers={"Authorization": f"Bearer {other_lead}"}) as other:
        response = other.post(url, json={"config": {"encoder": tiny_encoder}})
    assert response.status_code == 404, response.text
    assert lead.get(f"/api/v1/datasets/{name}/impact-reports").json() == []  # an estimate queues nothing


def test_a_draw_of_one_text_is_refused_before_anything_is_queued(lead, engine, tiny_encoder: str) -> None:
    """`max_train_samples: 1` holds one class of every task: every run failed on the worker (and the report with
    them) after a 202; now the estimate, the report and a training run refuse it, naming the key."""
    name, _ = dataset_with_variants(engine)
    config = {"encoder": tiny_encoder, "max_train_samples": 1}
    for url, body in (
        (f"/api/v1/datasets/{name}/impact-estimates", {"config": config}),
        (f"/api/v1/datasets/{name}/impact-reports", {"config": config}),
        ("/api/v1/training-runs", {"dataset": name, "seeds": [1], "config": config}),
        ("/api/v1/training-estimates", {"dataset": name, "seeds": [1], "config": config}),
    ):
        response = lead.post(url, json=body)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["field"] == "config.max_train_samples", response.json()
        assert "two classes" in response.json()["detail"]
    assert lead.get(f"/api/v1/datasets/{name}/impact-reports").json() == []
    assert lead.get("/api/v1/training-runs").json() == []
    two = lead.post(f"/api/v1/datasets/{name}/impact-estimates", json={"config": {**config, "max_train_samples": 24}})
    assert two.status_code == 200, two.text
