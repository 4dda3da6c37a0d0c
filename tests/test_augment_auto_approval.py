"""Calibrated auto-approval: the threshold's statistics, the model kept as numbers, switching it on (or being
refused with the numbers), applying it with an audit share, the measured agreement, and the augment job."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from tests.augment_fixtures import run_worker, train_ids


def test_the_lower_bound_is_the_exact_one_sided_clopper_pearson_bound() -> None:
    from scipy.stats import binomtest

    from services.auto_approval import lower_bound

    for k, n in [(95, 100), (30, 30), (1, 40), (180, 190)]:
        exact = binomtest(k, n, alternative="greater").proportion_ci(confidence_level=0.95, method="exact").low
        assert lower_bound(k, n, 0.95) == pytest.approx(exact, abs=1e-9)
    assert lower_bound(0, 10, 0.95) == 0.0 and lower_bound(0, 0, 0.95) == 0.0


def test_the_threshold_is_the_lowest_reached_from_the_strictest_before_a_selection_fails_the_bound() -> None:
    """Fixed-sequence testing: taking the lowest threshold that passed anywhere, past failing ones, picked a bound
    that passed by chance among many tries."""
    from services.auto_approval import choose_threshold, lower_bound

    rng = np.random.default_rng(0)
    scores = np.round(rng.random(400), 2)  # ties on purpose
    approved = (rng.random(400) < 0.6 + 0.4 * scores).astype(int)
    got = choose_threshold(scores, approved, target=0.9, confidence=0.95, min_selected=20)
    walk = None
    for t in sorted(set(scores.tolist()), reverse=True):  # brute force: every threshold, strictest first
        chosen = scores >= t
        n, k = int(chosen.sum()), int(approved[chosen].sum())
        if n < 20 or lower_bound(n, n, 0.95) < 0.9:  # too few to test: even all approved could not pass
            continue
        if lower_bound(k, n, 0.95) < 0.9:
            break
        walk = (t, n, k)
    assert walk is not None and got is not None
    assert (got["threshold"], got["selected"], got["selected_approved"]) == walk
    assert got["lower_bound"] >= 0.9
    assert choose_threshold(scores, approved, target=0.999, confidence=0.95, min_selected=20) is None
    # a lower threshold that passes again past a failing one is not taken
    s = np.array([0.9] * 30 + [0.8] * 10 + [0.7] * 200)
    a = np.array([1] * 30 + [0] * 10 + [1] * 200)
    stopped = choose_threshold(s, a, target=0.9, confidence=0.95, min_selected=20)
    assert stopped is not None and stopped["threshold"] == 0.9 and stopped["selected"] == 30


def test_the_stored_model_scores_like_scikit_learns_pipeline() -> None:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from services.auto_approval import ApprovalModel

    rng = np.random.default_rng(1)
    x = rng.random((300, 5))
    x[rng.random((300, 5)) < 0.2] = np.nan
    x[:, 4] = 1.0  # a constant column
    y = (np.nan_to_num(x[:, 0], nan=0.5) + rng.normal(0, 0.2, 300) > 0.5).astype(int)
    ours = ApprovalModel.fit(x, y)
    theirs = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True),
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=2000, random_state=0),
    ).fit(x, y)
    probe = rng.random((50, 5))
    probe[rng.random((50, 5)) < 0.3] = np.nan
    assert np.allclose(ours.score(probe), theirs.predict_proba(probe)[:, 1], atol=1e-6)
    # Plain numbers: what the dataset's settings store and load again.
    import json

    again = ApprovalModel(json.loads(json.dumps(ours.params)))
    assert np.allclose(again.score(probe), ours.score(probe))


pytestmark = pytest.mark.usefixtures("augment_env")


def _reviewed_variants(engine, n: int, seed: int = 0) -> None:  # type: ignore[no-untyped-def]
    """n variants of mini's sources that a person decided: approved when their meaning held (semantic
    similarity high), with some noise — what the rule must learn."""
    from db.auth import get_or_create_user
    from db.models import Sample
    from db.session import session_scope
    from tests.review_fixtures import add_variant, record_review

    rng = random.Random(seed)
    parents = train_ids(engine, "mini")
    with session_scope(engine) as s:
        person = get_or_create_user(s, "carol", "annotator")
        for i in range(n):
            semantic = rng.random()
            vid = add_variant(
                s,
                rng.choice(parents),
                f"reviewed variant {seed}-{i}",
                similarity=rng.random(),
                consistency=None,
                semantic=semantic,
                novelty=rng.random(),
                flag=None if i % 2 else False,  # as with and without a label model: the rule has seen both
            )
            keep = (semantic > 0.5) != (rng.random() < 0.005)
            record_review(s, vid, person.id, keep)
            v = s.get(Sample, vid)
            # lengths vary as WordNet's do: a rule fitted on one length ratio would decide no other
            v.scores = {**v.scores, "length_ratio": round(rng.uniform(0.9, 1.1), 4)}


def test_switching_on_applying_auditing_and_measuring_agreement(
    lead, annotator, admin, engine, mini_dataset, monkeypatch
) -> None:
    from sqlalchemy import select

    from db.models import Review, Sample
    from db.session import session_scope
    from services.auto_approval import ApprovalModel, VariantFeatures

    _reviewed_variants(engine, 150)
    off = lead.get("/api/v1/datasets/mini/auto-approval").json()
    assert off["enabled"] is False and off["preview"]["ready"] is False and "200" in off["preview"]["reason"]
    refused = admin.put("/api/v1/datasets/mini/auto-approval", json={"enabled": True})
    assert refused.status_code == 409 and refused.json()["field"] == "enabled"
    assert refused.json()["calibration"]["reviewed"] == 150  # the numbers say why it stays off
    assert annotator.put("/api/v1/datasets/mini/auto-approval", json={"enabled": True}).status_code == 403

    _reviewed_variants(engine, 250, seed=1)
    on = admin.put("/api/v1/datasets/mini/auto-approval", json={"enabled": True, "audit_share": 0.25})
    assert on.status_code == 200, on.text
    rule = on.json()["rule"]
    assert on.json()["enabled"] and rule["reviewed"] == 400 and rule["version"] == 1
    assert rule["lower_bound"] >= 0.95 and rule["precision"] >= rule["lower_bound"]
    assert 0.2 < rule["coverage"] < 0.7 and "approval score" in rule["rule"] and "model" not in rule

    # Pending variants made before the rule: apply it.
    rng = random.Random(5)
    from tests.review_fixtures import add_variant

    parents = train_ids(engine, "mini")
    with session_scope(engine) as s:
        for i in range(120):
            vid = add_variant(
                s,
                rng.choice(parents),
                f"pending variant {i}",
                similarity=0.5,
                consistency=None,
                semantic=rng.random(),
                novelty=0.3,
            )
            v = s.get(Sample, vid)
            v.scores = {**v.scores, "length_ratio": 1.0}
    with session_scope(engine) as s:
        changed_at = dict(
            s.execute(select(Sample.id, Sample.updated_at).where(Sample.review_status == "pending")).all()
        )
    applied = admin.post("/api/v1/datasets/mini/auto-approval/apply")
    assert applied.status_code == 200, applied.text
    counts = applied.json()
    with session_scope(engine) as s:
        from db.datasets import get_dataset
        from services.variant_settings import variant_settings

        model = ApprovalModel(variant_settings(get_dataset(s, "mini")).auto_approval["model"])
        pending = s.scalars(select(Sample).where(Sample.text.like("pending variant %"))).all()
        scores = model.score(np.array([VariantFeatures.of(v).row() for v in pending]))
        above = {v.id for v, sc in zip(pending, scores, strict=True) if sc >= rule["threshold"]}
        approved = {v.id for v in pending if v.review_status == "approved"}
        audit = {v.id for v in pending if v.auto_decision == "audit"}
        assert approved | audit == above and not approved & audit
        assert counts == {
            "considered": 120,
            "approved": len(approved),
            "audit": len(audit),
            "outside_scope": 0,
            "below_threshold": 120 - len(above),
        }
        assert 0 < len(audit) < len(above)  # a random share (25%) goes to people
        auto_reviews = s.scalars(select(Review).where(Review.automatic.is_(True))).all()
        assert {r.sample_id for r in auto_reviews} == approved and all(r.decision == "approve" for r in auto_reviews)
        audit_ids = sorted(audit)
    assert admin.post("/api/v1/datasets/mini/auto-approval/apply").json()["considered"] == 120 - len(above)

    # An audit reads like any pending variant to the people deciding it, wherever the API shows it.
    queue = annotator.get("/api/v1/datasets/mini/review-queue", params={"page_size": 200}).json()["items"]
    shown = {item["id"]: item["auto_decision"] for item in queue}
    assert set(audit_ids) <= set(shown) and all(shown[sid] is None for sid in audit_ids)
    cards = annotator.get("/api/v1/review-cards", params={"ids": ",".join(map(str, audit_ids))}).json()
    assert [c["id"] for c in cards] == audit_ids and all(c["auto_decision"] is None for c in cards)
    assert lead.get(f"/api/v1/samples/{audit_ids[0]}").json()["sample"]["auto_decision"] is None
    # nor does its time of change tell it apart (marked for audit, its updated_at moved; the others' did not)
    with session_scope(engine) as s:
        marked = dict(s.execute(select(Sample.id, Sample.updated_at).where(Sample.id.in_(audit_ids))).all())
    assert marked == {sid: changed_at[sid] for sid in audit_ids}

    # People decide the audited variants: the agreement is measured on them.
    for i, sid in enumerate(audit_ids):
        version = lead.get(f"/api/v1/samples/{sid}").json()["sample"]["version"]
        body = (
            {"decision": "approve", "version": version}
            if i
            else {"decision": "reject", "version": version, "reason": "meaning_changed"}
        )
        assert lead.post(f"/api/v1/samples/{sid}/decision", json=body).status_code == 200
    decided = lead.get(f"/api/v1/samples/{audit_ids[0]}").json()["sample"]
    assert decided["review_status"] == "rejected" and decided["auto_decision"] == "audit"  # decided: said again
    measured = lead.get("/api/v1/datasets/mini/auto-approval").json()["agreement"]
    assert measured["audit_decided"] == len(audit_ids) and measured["audit_approved"] == len(audit_ids) - 1
    assert measured["agreement"] == pytest.approx((len(audit_ids) - 1) / len(audit_ids))
    low, high = measured["agreement_ci95"]
    assert low < measured["agreement"] <= high
    assert measured["auto_approved"] == len(approved)

    # New variants from a job meet the rule at creation.
    r = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "methods": ["wordnet"], "sample_ids": train_ids(engine, "mini", limit=30)},
    )
    run_worker(engine)
    for _ in range(100):
        job = lead.get(f"/api/v1/jobs/{r.json()['id']}").json()
        if job["status"] == "succeeded":
            break
        time.sleep(0.05)
    assert job["status"] == "succeeded", job["last_error"]
    with session_scope(engine) as s:
        made = s.scalars(select(Sample).where(Sample.job_id == r.json()["id"])).all()
        scores = model.score(np.array([VariantFeatures.of(v).row() for v in made]))
        expected = sum(1 for sc in scores if sc >= rule["threshold"])
        decided = [v for v in made if v.auto_decision in ("approved", "audit")]
    assert len(decided) == expected
    assert job["result"]["automatic"]["approved"] + job["result"]["automatic"]["audit"] == expected
    assert job["result"]["auto_approval_rule"] == 1

    # Switched off: the rule is kept for the record, nothing more is applied.
    assert admin.put("/api/v1/datasets/mini/auto-approval", json={"enabled": False}).json()["enabled"] is False
    assert admin.post("/api/v1/datasets/mini/auto-approval/apply").status_code == 409

    # Switched off while a job runs (it read the rule on when it began): the job stores its variants for people.
    assert admin.put("/api/v1/datasets/mini/auto-approval", json={"enabled": True}).json()["enabled"] is True
    import services.variant_generation as generation

    real_score_labels = generation._score_labels

    def switched_off_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        assert admin.put("/api/v1/datasets/mini/auto-approval", json={"enabled": False}).status_code == 200
        return real_score_labels(*args, **kwargs)

    monkeypatch.setattr(generation, "_score_labels", switched_off_meanwhile)
    r = lead.post(
        "/api/v1/augment",
        json={"dataset": "mini", "methods": ["wordnet"], "sample_ids": train_ids(engine, "mini", limit=30), "seed": 7},
    )
    run_worker(engine)
    job = lead.get(f"/api/v1/jobs/{r.json()['id']}").json()
    assert job["status"] == "succeeded", job["last_error"]
    assert job["result"]["kept"] > 0 and job["result"]["auto_approval_rule"] is None
    assert job["result"]["automatic"] == {"approved": 0, "audit": 0, "rejected": 0}
    with session_scope(engine) as s:
        made = s.scalars(select(Sample).where(Sample.job_id == r.json()["id"])).all()
        assert made and all(v.auto_decision is None and v.review_status == "pending" for v in made)
