"""Agreement (kappa, alpha) against hand-computed values, and per-class review progress with plan targets."""

from __future__ import annotations

import pytest

from tests.review_fixtures import carol, review_data  # noqa: F401
from tests.test_review_api import decide


def test_kappa_and_alpha_match_hand_computation(admin, annotator, carol, engine, app, review_data) -> None:
    """Keep=1 / drop=0 by three annotators on five variants.

          u1 u2 u3 u4 u5
      A:   1  1  0  1  0      (A = bob, u2 is an edit: it counts as keep)
      B:   1  0  0  1  1      (B = carol)
      C:   1  1  0  .  .      (C = dave)

    kappa(A,B): p_o = 3/5; both say 1 three times in five, p_e = .6·.6 + .4·.4 = .52;
                kappa = (.6 - .52) / (1 - .52) = 1/6.
    kappa(A,C): identical on u1..u3 → 1.   kappa(B,C): p_o = 2/3, p_e = 1/3·2/3 + 2/3·1/3 = 4/9 → 0.4.
    alpha (nominal): coincidences o11 = 3 (u1: 6 pairs × 1/2) + 1 (u2) + 2 (u4) = 6, o00 = 3, o01 = o10 = 2,
                n = 13, n1 = 8, n0 = 5; D_o = 4/13, D_e = 2·8·5 / (13·12) = 20/39;
                alpha = 1 - (4/13)/(20/39) = 0.4.
    """
    from fastapi.testclient import TestClient

    from tests.review_fixtures import issue_token

    admin.patch("/api/v1/datasets/rev", json={"reviews_required": 3})
    units = review_data.variants[review_data.sources[0]] + review_data.variants[review_data.sources[1]][:2]
    a = ["keep", "edit", "drop", "keep", "drop"]
    b = ["keep", "drop", "drop", "keep", "keep"]
    c = ["keep", "keep", "drop"]
    with TestClient(app, headers={"Authorization": f"Bearer {issue_token(engine, 'dave')}"}) as dave:
        for client, votes in ((annotator, a), (carol, b), (dave, c)):
            for unit, vote in zip(units, votes, strict=False):
                extra = (
                    {"reason": "meaning_changed"}
                    if vote == "drop"
                    else {"text": f"edited text of {unit}"}
                    if vote == "edit"
                    else {}
                )
                decision = {"keep": "approve", "drop": "reject", "edit": "edit"}[vote]
                assert decide(client, unit, decision, **extra).status_code == 200
    body = annotator.get("/api/v1/datasets/rev/agreement").json()
    overall = body["overall"]
    assert overall["units"] == 5 and overall["units_multi"] == 5 and overall["ratings"] == 13
    assert overall["alpha"] == pytest.approx(0.4)
    pairs = {(p["a"], p["b"]): p for p in overall["pairs"]}
    assert pairs[("bob-annotator", "carol")]["kappa"] == pytest.approx(1 / 6)
    assert pairs[("bob-annotator", "carol")]["n"] == 5 and pairs[("bob-annotator", "carol")]["agreement"] == 0.6
    assert pairs[("bob-annotator", "dave")]["kappa"] == pytest.approx(1.0)
    assert pairs[("carol", "dave")]["kappa"] == pytest.approx(0.4)
    # Percent agreement over all pairs within units: u1 3/3, u2 1/3, u3 3/3, u4 1/1, u5 0/1 → 8/11.
    assert overall["percent_agreement"] == pytest.approx(8 / 11)
    # Per method: u1 and u4 are back-translations (j=0 of their source), rated keep by everyone but C's gap.
    bt = body["by_method"]["backtranslation"]
    assert bt["units"] == 2 and bt["alpha"] is None  # a single value seen: alpha is undefined, not 1
    assert bt["pairs"][0]["kappa"] is None
    # Per class: the two sources differ in bias (partisan: u1..u3, neutral: u4, u5).
    partisan = body["by_class"]["bias"]["partisan"]
    assert partisan["units"] == 3
    assert {(p["a"], p["b"]): p["kappa"] for p in partisan["pairs"]}[("bob-annotator", "dave")] == 1.0
    assert body["by_class"]["message"]["constituency"]["units"] == 2
    assert set(body["annotators"]) == {"bob-annotator", "carol", "dave"}


def test_agreement_without_reviews_is_empty_not_an_error(annotator, review_data) -> None:
    body = annotator.get("/api/v1/datasets/rev/agreement").json()
    assert body["overall"]["units"] == 0 and body["overall"]["alpha"] is None and body["overall"]["pairs"] == []


def test_a_previewed_plan_moves_no_progress_bar(annotator, engine, review_data) -> None:
    """The Augment page's preview stores its plan (no jobs): the progress read it as "the plan", and every
    member's bars said "0 / 314 approved · 314 to go" for a plan nobody queued."""
    from db.models import AugmentationPlan, Dataset
    from db.session import session_scope

    def preview(target: int) -> None:
        with session_scope(engine) as s:
            ds = s.query(Dataset).filter_by(name="rev").one()
            entry = {"task": "message", "label": "attack", "target": target, "goal": target, "planned": target}
            s.add(AugmentationPlan(dataset_id=ds.id, plan={"classes": [entry]}, job_ids=[]))

    def attack() -> tuple[int | None, int | None]:
        body = annotator.get("/api/v1/datasets/rev/review-progress").json()
        return body["plan_id"], body["classes"]["message"]["attack"]["goal"]

    preview(40)
    assert attack() == (None, None)  # the page then says "No augmentation plan yet"
    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        entry = {"task": "message", "label": "attack", "target": 6, "goal": 6, "planned": 5}
        queued = AugmentationPlan(dataset_id=ds.id, plan={"classes": [entry]}, job_ids=[7])
        s.add(queued)
        s.flush()
        queued_id = queued.id
    preview(300)
    assert attack() == (queued_id, 6)


def test_progress_per_class_against_the_plan(annotator, engine, review_data) -> None:
    from db.models import AugmentationPlan, Dataset
    from db.session import session_scope

    with session_scope(engine) as s:
        ds = s.query(Dataset).filter_by(name="rev").one()
        s.add(
            AugmentationPlan(
                dataset_id=ds.id, plan={"targets": [{"task": "message", "label": "attack", "target": 40}]}, job_ids=[1]
            )
        )
        s.add(
            AugmentationPlan(
                dataset_id=ds.id,
                job_ids=[2],  # queued: the progress reads the latest plan that queued jobs, not a preview
                plan={
                    "classes": [  # the planner's format; the latest plan wins
                        {
                            "task": "message",
                            "label": "attack",
                            "original": 1,
                            "current": 1,
                            "target": 5,
                            "deficit": 4,
                            "planned": 4,
                        },
                        {"task": "bias", "label": "partisan", "target": 2},
                        {"task": "message", "label": "media", "target": "lots"},
                    ]
                },
            )
        )  # junk is ignored
    attack = review_data.variants[review_data.sources[3]]
    decide(annotator, attack[0], "approve")
    decide(annotator, attack[1], "reject", reason="label_changed")
    body = annotator.get("/api/v1/datasets/rev/review-progress").json()
    entry = body["classes"]["message"]["attack"]
    assert entry == {
        "pending": 1,
        "approved": 1,
        "rejected": 1,
        "reviewed": 2,
        "train_originals": 1,
        "target": 5,
        "goal": 5,  # a plan stored before goals: its target (the class was raised)
        "needed": 4,
        "planned": 4,
    }
    partisan = body["classes"]["bias"]["partisan"]
    assert (partisan["approved"], partisan["train_originals"], partisan["target"], partisan["needed"]) == (
        1,
        2,
        2,
        None,
    )
    assert body["classes"]["message"]["media"]["target"] is None
    assert body["classes"]["message"]["personal"]["pending"] == 4  # 3 variants + the hostile one
    assert body["totals"] == {"pending": 17, "approved": 1, "rejected": 1}
    assert body["by_method"]["backtranslation"]["approved"] == 1

    # "Most useful first" weighs each class by its need, counted on its own at every page: the same need the
    # panel's numbers give (the plan's target where it has one, else the planner's default rule).
    import math

    from services.review_stats import class_needs

    with session_scope(engine) as s:
        needs = class_needs(s, s.query(Dataset).filter_by(name="rev").one())
    for task, labels in body["classes"].items():
        have = {label: e["train_originals"] + e["approved"] for label, e in labels.items()}
        for label, e in labels.items():
            target = (
                e["target"]
                if e["target"] is not None
                else min(math.ceil(0.4 * max(have.values())), math.floor(10 * e["train_originals"]))
            )
            assert needs[(task, label)] == (max(0.0, target - have[label]) / target if target > 0 else 0.0)
    assert needs[("message", "attack")] == (5 - 2) / 5
    # Kept between pages, counted again once a decision may have changed it
    decide(annotator, attack[2], "approve")
    with session_scope(engine) as s:
        assert class_needs(s, s.query(Dataset).filter_by(name="rev").one())[("message", "attack")] == (5 - 3) / 5


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (
            {"targets": {"message": {"attack": 7, "other": {"target": 3, "deficit": 2}}}},
            {("message", "attack"): 7, ("message", "other"): 3},
        ),
        ({"targets": [{"task": "bias", "label": "partisan", "target": 9.0}]}, {("bias", "partisan"): 9}),
        ({"classes": [{"task": "bias", "label": "partisan", "target": True}]}, {}),
        ({"targets": "nonsense"}, {}),
        ({"classes": "nonsense"}, {}),
        ({}, {}),
        (None, {}),
    ],
)
def test_plan_targets_reads_defensively(plan, expected) -> None:
    from services.review_stats import plan_targets

    assert {k: v["target"] for k, v in plan_targets(plan).items()} == expected


def test_cohen_kappa_agrees_with_scikit_learn() -> None:
    from sklearn.metrics import cohen_kappa_score

    from services.review_stats import cohen_kappa

    a = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
    b = [1, 0, 0, 1, 0, 1, 1, 0, 1, 0]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa([1, 1], [1, 1]) is None


def test_cohen_kappa_when_undefined_or_without_agreement() -> None:
    from services.review_stats import cohen_kappa

    assert cohen_kappa([], []) is None
    assert cohen_kappa([0, 0, 0], [0, 0, 0]) is None  # chance agreement is total
    assert cohen_kappa([1, 1], [0, 0]) == pytest.approx(0.0)  # never agree, but each always says the same
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)


def test_an_approved_variant_of_a_submitted_text_under_review_is_not_counted_as_training(
    annotator, engine, review_data
) -> None:
    """It does not train until its source is approved (its labels are the submitter's): the dataset's counts with
    approved variants and the review queue's "class still needs" counted it as if it did."""
    from core.textnorm import content_hash
    from db.datasets import dataset_stats, get_dataset, training_samples
    from db.models import AugmentationPlan, Sample, SampleLabel
    from db.session import session_scope
    from services.review_stats import class_needs_now
    from tests.review_fixtures import add_variant

    text = "Farm subsidies must be protected for every family farm."
    with session_scope(engine) as s:
        ds = get_dataset(s, "rev")
        source = Sample(
            dataset_id=ds.id,
            text=text,
            split="train",
            origin="submitted",
            content_hash=content_hash(text),
            review_status="pending",
        )
        source.labels_rows = [SampleLabel(task="bias", label="partisan"), SampleLabel(task="message", label="policy")]
        s.add(source)
        s.flush()
        source_id = source.id
        variant = add_variant(s, source_id, "Farm subsidies have to be protected for every family farm.")
        s.add(
            AugmentationPlan(
                dataset_id=ds.id, plan={"classes": [{"task": "message", "label": "policy", "target": 10}]}, job_ids=[1]
            )
        )

    def counted() -> tuple[int, bool, float]:
        with session_scope(engine) as s:
            ds = get_dataset(s, "rev")
            stats = dataset_stats(s, ds)["tasks"]["message"]["labels"]["policy"]["train_with_approved"]
            needs = class_needs_now(s, ds)[("message", "policy")]
            return stats, variant in {x.id for x in training_samples(s, ds)}, needs

    before = counted()
    assert decide(annotator, variant, "approve").json()["review_status"] == "approved"
    assert counted() == before and not before[1] and 0 < before[2] < 1
    assert decide(annotator, source_id, "approve").json()["review_status"] == "approved"
    after = counted()
    assert after[1] and after[0] == before[0] + 2  # the source and its variant
    assert after[2] < before[2]  # the class needs less once they train
