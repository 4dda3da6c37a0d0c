"""Decision rules fitted on val (prior correction for macro-F1), ensemble weights fitted on val (a weak member
gets ~0, seeds share a weight), and the TF-IDF member trained, saved and loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.decision import ALPHAS, decide, fit_prior_correction, fit_rules
from trainer.ensemble import build_ensemble, fit_group_weights
from trainer.examples import IGNORE, TaskSpec
from trainer.metrics import f1_per_class


def skewed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class task where class 2 is rare (10%) and the model under-rates it: its probability is shrunk."""
    rng = np.random.default_rng(seed)
    gold = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    logits = rng.normal(0, 1, size=(n, 3))
    logits[np.arange(n), gold] += 2.0
    logits[:, 2] -= 1.5  # the frequent classes win most close calls
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, gold


def test_prior_correction_fitted_on_val_raises_macro_f1_on_test() -> None:
    val_p, val_y = skewed(600, 0)
    test_p, test_y = skewed(600, 1)
    rule = fit_prior_correction(val_p, val_y)
    assert rule["alpha"] > 0 and rule["val_macro_f1_after"] > rule["val_macro_f1_before"]
    # kept because it also helps out of fold (α chosen on four folds of val, the fifth predicted with it)
    assert rule["cv_macro_f1_after"] > rule["cv_macro_f1_before"] and rule["alpha"] == rule["alpha_on_val"]
    assert rule["cv_macro_f1_after"] - rule["cv_macro_f1_before"] > rule["cv_gain_se"] > 0  # beyond its noise
    before = f1_per_class(test_y, test_p.argmax(1), 3)[1]
    after = f1_per_class(test_y, decide({"t": test_p}, {"t": rule})["t"], 3)[1]
    assert after > before + 0.02  # the rare class is predicted where it should be
    assert (decide({"t": test_p}, {"t": rule})["t"] == 2).sum() > (test_p.argmax(1) == 2).sum()


def test_a_held_out_gain_within_its_own_noise_keeps_the_argmax() -> None:
    """60 val texts of the same skewed model: α 0.6 fits val, and the out-of-fold labels even score higher than
    the argmax, but by less than one standard error of that difference: the rule is not kept, the argmax is."""
    probs, gold = skewed(60, 10)
    rule = fit_prior_correction(probs, gold)
    gain = rule["cv_macro_f1_after"] - rule["cv_macro_f1_before"]
    assert rule["alpha_on_val"] > 0 and 0 < gain < rule["cv_gain_se"]
    assert rule["alpha"] == 0.0 and rule["val_macro_f1_after"] == rule["val_macro_f1_before"]
    assert np.array_equal(decide({"t": probs}, {"t": rule})["t"], probs.argmax(1))


def test_prior_correction_stays_at_argmax_when_argmax_is_best_and_ignores_missing_labels() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]] * 10)
    gold = np.array([0, 1, 0, 1] * 10)
    rule = fit_prior_correction(probs, gold)
    # every α near 0 is already perfect: the tie goes to 0 exactly
    assert rule["alpha"] == 0.0 and rule["val_macro_f1_after"] == 1.0
    assert np.array_equal(decide({"t": probs}, {"t": rule})["t"], probs.argmax(1))
    nothing = fit_prior_correction(probs, np.full(40, IGNORE))
    assert nothing["alpha"] == 0.0 and nothing["val_macro_f1_before"] is None
    assert 0.0 in ALPHAS and ALPHAS.min() < 0 < ALPHAS.max()
    assert fit_rules({"t": probs}, gold[:, None], [TaskSpec("t", ["a", "b"])], "none") is None


def test_a_class_absent_from_val_neither_counts_for_nor_against_the_rule() -> None:
    """Val holds classes 0 and 1 of three; the model predicts class 2 for four class-0 texts. The rule is
    scored on the classes val holds: a predicted class 2 costs class 0's recall, not an extra 0 in the mean
    (which would teach α never to predict a class that test may hold). A val of one class fits nothing."""
    probs = np.array([[0.8, 0.1, 0.1]] * 10 + [[0.1, 0.8, 0.1]] * 10 + [[0.3, 0.3, 0.4]] * 4)
    gold = np.array([0] * 10 + [1] * 10 + [0] * 4)
    rule = fit_prior_correction(probs, gold)
    f1_0, f1_1 = 2 * 10 / (14 + 10), 1.0  # class 0: 10 of 14 found, nothing wrongly called 0
    assert rule["val_macro_f1_before"] == pytest.approx((f1_0 + f1_1) / 2)
    single = fit_prior_correction(probs[:10], gold[:10])
    assert single["alpha"] == 0.0 and single["val_macro_f1_before"] is None


def test_ensemble_weights_fitted_on_val_drop_a_useless_member_and_seeds_share_one() -> None:
    rng = np.random.default_rng(0)
    n = 400
    gold = rng.choice(3, size=n)

    def member(noise: float, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        logits = r.normal(0, noise, size=(n, 3))
        logits[np.arange(n), gold] += 1.5
        return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)

    good = member(1.0, 1)
    useless = np.random.default_rng(2).dirichlet(np.ones(3), size=n)
    w = fit_group_weights([good, useless], gold)
    assert w.sum() == pytest.approx(1.0) and w[1] < 0.1

    def dump(probs: np.ndarray, ids: range) -> dict:
        return {
            "sample_ids": list(ids),
            "tasks": {
                "t": {"labels": ["a", "b", "c"], "gold": gold[: len(ids)].tolist(), "probs": probs[: len(ids)].tolist()}
            },
        }

    seeds = [member(1.0, s) for s in (3, 4)]
    members = [
        {
            "id": 1,
            "group": "transformer",
            "predictions": {"val": dump(seeds[0], range(n)), "test": dump(seeds[0], range(50))},
        },
        {
            "id": 2,
            "group": "transformer",
            "predictions": {"val": dump(seeds[1], range(n)), "test": dump(seeds[1], range(50))},
        },
        {"id": 3, "group": "tfidf", "predictions": {"val": dump(useless, range(n)), "test": dump(useless, range(50))}},
    ]
    out = build_ensemble(members, weighted=True, temperature=True)
    weights = out["task_weights"]["t"]
    assert weights["1"] == pytest.approx(weights["2"]) and weights["3"] < 0.1
    assert sum(weights.values()) == pytest.approx(1.0)
    assert set(out["member_temperatures"]) == {"1", "2", "3"} and out["decision"]["t"]["alpha"] is not None
    test = out["predictions"]["test"]["tasks"]["t"]
    assert test["pred"] == decide({"t": np.asarray(test["probs"])}, out["decision"])["t"].tolist()


def test_the_tfidf_member_trains_saves_and_predicts_the_same(tmp_path: Path) -> None:
    from tests.trainer_fixtures import synthetic_split
    from trainer.classical import ClassicalConfig, ClassicalPredictor, save_classical, train_classical

    data = synthetic_split(60, 24, 24)
    result = train_classical(ClassicalConfig(c_grid=[1.0, 4.0]), data)
    assert result.metrics["val"]["tasks"]["color"]["macro_f1"] == 1.0  # the colour is a word of the text
    assert set(result.chosen_c) == {"color", "size"} and set(result.chosen_c.values()) <= {1.0, 4.0}
    assert result.predictions["test"]["sample_ids"] == [e.sample_id for e in data.test]
    save_classical(result, tmp_path / "run")
    loaded = ClassicalPredictor(tmp_path / "run" / "model")
    probs = loaded.predict_proba([e.text for e in data.test])
    saved = np.asarray(result.predictions["test"]["tasks"]["size"]["probs"])
    assert np.allclose(probs["size"], saved, atol=1e-6)
    assert loaded.decide(probs)["size"].tolist() == result.predictions["test"]["tasks"]["size"]["pred"]


def test_the_tfidf_member_chooses_c_by_cross_validation_on_train_never_on_val(monkeypatch: pytest.MonkeyPatch) -> None:
    """C is chosen on the training view's folds, not on val's few hundred texts, which stay for the ensemble's
    weights and the decision rule: val's labels leave the choice and its scores unchanged. An original and its
    variants are one family for the folds; a text without a task's label is left out of that task's search."""
    import dataclasses
    import warnings

    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import f1_score, make_scorer

    import trainer.classical as classical
    from tests.trainer_fixtures import synthetic_split
    from trainer.classical import ClassicalConfig, train_classical

    base = synthetic_split(60, 24, 24)
    variants = [  # two variants of each of the first ten originals
        dataclasses.replace(e, text=e.text + suffix, sample_id=1000 + 2 * k + n, source_id=e.sample_id)
        for k, e in enumerate(base.train[:10])
        for n, suffix in enumerate((" again", " once more"))
    ]
    unlabelled = [dataclasses.replace(e, labels={"color": e.labels["color"]}) for e in base.train[10:14]]
    data = dataclasses.replace(base, train=[*base.train[:10], *unlabelled, *base.train[14:], *variants])
    seen: dict[str, list[np.ndarray]] = {"families": []}
    real_folds = classical.family_folds

    def spying_folds(labels: np.ndarray, families: np.ndarray, folds: int, seed: int, scored: np.ndarray) -> list:
        seen["families"].append(families)
        seen.setdefault("scored", []).append(scored)
        return real_folds(labels, families, folds, seed, scored)

    monkeypatch.setattr(classical, "family_folds", spying_folds)
    config = ClassicalConfig(c_grid=[0.01, 1.0, 10.0], cv_folds=3, decision="none")
    first = train_classical(config, data, n_jobs=1)

    color_families, size_families = seen["families"]
    assert len(color_families) == 80 and len(size_families) == 76  # size: the four unlabelled texts left out
    ids = [e.sample_id for e in data.train]
    for k, e in enumerate(data.train[-20:]):  # each variant shares its source's family, and no other's
        source = ids.index(e.source_id)
        assert color_families[60 + k] == color_families[source]
        assert list(color_families).count(color_families[source]) == 3

    color_scored = seen["scored"][0]  # the originals: the texts the member is judged like
    assert color_scored.tolist() == [True] * 60 + [False] * 20

    selection = first.metrics["c_selection"]
    assert set(selection) == {"color", "size"}
    assert selection["color"]["folds"] == 3 and set(selection["color"]["cv_macro_f1"]) == {"0.01", "1", "10"}
    # each C's score is the one scikit-learn's own LogisticRegressionCV gives on the same folds, scoring originals
    x = first.models["color"].named_steps["tfidf"].transform([e.text for e in data.train])
    y = np.array([first.tasks[0].labels.index(e.labels["color"]) for e in data.train])
    reference = LogisticRegressionCV(
        Cs=[0.01, 1.0, 10.0],
        cv=real_folds(y, color_families, 3, config.seed, color_scored),
        scoring=make_scorer(lambda gold, pred: f1_score(gold, pred, average="macro", zero_division=0)),
        class_weight="balanced",
        max_iter=3000,
        refit=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        reference.fit(x, y)
    expected = np.asarray(next(iter(reference.scores_.values()))).reshape(3, 3).mean(axis=0)
    recorded = selection["color"]["cv_macro_f1"]
    assert [recorded[c] for c in ("0.01", "1", "10")] == pytest.approx(expected, abs=1e-4)
    assert selection["color"]["cv_macro_f1"]["0.01"] < selection["color"]["cv_macro_f1"]["10"]
    assert first.chosen_c["color"] != 0.01  # a C too weak to separate the colours loses

    relabelled = [
        dataclasses.replace(e, labels={"color": data.val[(k + 1) % len(data.val)].labels["color"], "size": "small"})
        for k, e in enumerate(data.val)
    ]
    second = train_classical(config, dataclasses.replace(data, val=relabelled), n_jobs=1)
    assert second.metrics["c_selection"] == selection and second.chosen_c == first.chosen_c


def test_a_tie_between_cs_goes_to_the_smaller_and_a_search_that_cannot_tell_to_the_default() -> None:
    from trainer.classical import choose_c

    assert choose_c({0.25: 0.0, 1.0: 0.0, 8.0: 0.0}) == 1.0  # every C the same (e.g. every fold scoring 0)
    assert choose_c({0.25: 0.5, 2.0: 0.5, 8.0: 0.4}) == 0.25
    assert choose_c({0.25: 0.6, 1.0: 0.61, 8.0: 0.4}) == 1.0


def test_a_class_held_by_one_family_trains_and_a_cancelled_search_stops() -> None:
    """A fold that fits on one class only (every text of the other in the scored fold) predicts that class
    instead of failing the job; a progress callback that raises (a cancelled job) stops the search there."""
    import dataclasses

    from tests.trainer_fixtures import synthetic_split
    from trainer.classical import ClassicalConfig, train_classical

    base = synthetic_split(40, 12, 12)
    rare = base.train[0]  # the only "red" original, with three variants: one family
    train = [dataclasses.replace(e, labels={**e.labels, "color": "blue"}) for e in base.train[1:]]
    variants = [dataclasses.replace(rare, text=f"{rare.text} {k}", sample_id=900 + k, source_id=1) for k in range(3)]
    data = dataclasses.replace(base, train=[rare, *train, *variants])
    result = train_classical(ClassicalConfig(c_grid=[0.5, 2.0], cv_folds=3), data, n_jobs=1)
    assert result.metrics["c_selection"]["color"]["folds"] == 3 and result.chosen_c["color"] in (0.5, 2.0)

    class Cancelled(Exception):
        pass

    events: list[dict] = []

    def cancelled_after_first_fold(event: dict) -> None:
        events.append(event)
        if event.get("folds_done") == 1:
            raise Cancelled

    with pytest.raises(Cancelled):
        train_classical(ClassicalConfig(cv_folds=3), base, progress=cancelled_after_first_fold, n_jobs=1)
    assert [e.get("folds_done") for e in events] == [1]


def test_a_c_grid_takes_positive_numbers_only() -> None:
    from pydantic import ValidationError

    from trainer.classical import ClassicalConfig

    for bad in ([0.0], [-1.0], [float("nan")]):
        with pytest.raises(ValidationError, match="c_grid"):
            ClassicalConfig(c_grid=bad)


def test_cross_validation_folds_keep_an_original_and_its_variants_together() -> None:
    """A variant scored by a model that trained on its source (or a sibling) would flatter weak regularisation."""
    from trainer.classical import family_folds

    families = np.repeat(np.arange(40), 3)  # 40 originals, each with two variants
    labels = np.repeat(np.arange(40) % 4, 3)
    folds = family_folds(labels, families, 5, seed=7)
    assert len(folds) == 5
    scored = np.concatenate([score for _fit, score in folds])
    assert sorted(scored.tolist()) == list(range(120))  # every text scored exactly once
    for fit, score in folds:
        assert not set(families[fit].tolist()) & set(families[score].tolist())
        assert set(labels[score].tolist()) == {0, 1, 2, 3}  # stratified: every class in every fold
    assert len(family_folds(labels[:6], families[:6], 5, seed=7)) == 2  # two families: two folds


def test_cross_validation_scores_originals_only_and_fits_every_other_familys_variants() -> None:
    """Val and test are real texts: a fold scores the originals it holds, never their near-copies, and still
    fits the variants of every family it does not score. A family whose source is not in the view is fitted
    in every fold."""
    from trainer.classical import family_folds

    families = np.concatenate([np.repeat(np.arange(40), 3), [99, 99]])  # 40 originals with two variants each
    labels = np.concatenate([np.repeat(np.arange(40) % 4, 3), [0, 0]])
    scored = np.concatenate([np.tile([True, False, False], 40), [False, False]])  # the last two: no source here
    folds = family_folds(labels, families, 5, seed=7, scored=scored)
    assert len(folds) == 5
    scored_rows = np.concatenate([score for _fit, score in folds])
    assert sorted(scored_rows.tolist()) == np.flatnonzero(scored).tolist()  # each original once, no variant
    for fit, score in folds:
        held = set(families[score].tolist())
        assert set(families[fit].tolist()) == set(families.tolist()) - held  # all the rest, variants included
        assert len(fit) == len(families) - 3 * len(held)
        assert {120, 121} <= set(fit.tolist())
        assert set(labels[score].tolist()) == {0, 1, 2, 3}
    # few labelled originals, many variants: as many folds as the largest class has originals, scored on them
    few_families, few_labels = np.repeat(np.arange(3), 4), np.repeat([0, 0, 1], 4)
    few = family_folds(few_labels, few_families, 5, 7, np.tile([True, False, False, False], 3))
    assert len(few) == 2 and sorted(np.concatenate([s for _f, s in few]).tolist()) == [0, 4, 8]
    # a mask of one family cannot be cross-validated: every row is scored, as without a mask
    one = np.zeros(len(families), dtype=bool)
    one[0] = True
    assert [s.tolist() for _f, s in family_folds(labels, families, 5, 7, one)] == [
        s.tolist() for _f, s in family_folds(labels, families, 5, 7)
    ]
