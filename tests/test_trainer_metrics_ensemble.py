"""Metrics by hand; ensemble combination, alignment by sample id, temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.ensemble import apply_temperature, build_ensemble, combine, fit_temperature, nll
from trainer.errors import TrainerError
from trainer.examples import IGNORE, TaskSpec
from trainer.metrics import evaluate_probs, task_metrics


def test_task_metrics_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 2, IGNORE])
    y_pred = np.array([0, 1, 1, 1, 0, 2])
    m = task_metrics(y_true, y_pred, ["a", "b", "c"])
    # a: P 1/2 R 1/2 F 1/2; b: P 2/3 R 1 F 0.8; c: P 0 R 0 F 0
    assert m["n"] == 5 and m["accuracy"] == pytest.approx(3 / 5)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["confusion"]["matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["classes_without_support"] == []


def test_task_metrics_name_the_classes_no_gold_label_holds() -> None:
    """A class absent from the split and never predicted is out of macro-F1; one predicted counts as F1 0: both
    are named, so that a report can say what its macro-F1 leaves out."""
    m = task_metrics(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 3]), ["a", "b", "c", "d"])
    assert m["classes_without_support"] == ["c", "d"]
    assert m["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)  # a, b and the predicted d; not c
    assert task_metrics(np.array([IGNORE]), np.array([0]), ["a", "b"])["classes_without_support"] == ["a", "b"]


def test_each_class_records_what_9_in_10_of_its_texts_get() -> None:
    """`p10`: the 10th percentile of the probability the model gives a class on the texts that have it (what a
    variant's label-model flag compares with); None for a class without such a text, absent without probs."""
    y_true = np.array([0] * 10 + [1] * 3 + [IGNORE])
    probs = np.array([[0.95 - 0.05 * i, 0.05 + 0.05 * i, 0.0] for i in range(10)] + [[0.5, 0.4, 0.1]] * 4)
    m = task_metrics(y_true, probs.argmax(axis=1), ["a", "b", "c"], probs)
    assert m["per_class"]["a"]["p10"] == pytest.approx(float(np.quantile(0.95 - 0.05 * np.arange(10), 0.1)))
    assert m["per_class"]["b"]["p10"] == pytest.approx(0.4) and m["per_class"]["c"]["p10"] is None
    assert "p10" not in task_metrics(y_true, probs.argmax(axis=1), ["a", "b", "c"])["per_class"]["a"]


def test_overall_is_mean_of_task_macro_f1() -> None:
    tasks = [TaskSpec("x", ["a", "b"]), TaskSpec("y", ["p", "q"])]
    probs = {"x": np.array([[0.9, 0.1], [0.2, 0.8]]), "y": np.array([[0.6, 0.4], [0.7, 0.3]])}
    gold = np.array([[0, 0], [1, 1]])
    out = evaluate_probs(probs, gold, tasks)
    assert out["tasks"]["x"]["macro_f1"] == 1.0
    y_f1 = out["tasks"]["y"]["macro_f1"]  # predicts p twice: F1(p) = 2/3, F1(q) = 0
    assert y_f1 == pytest.approx(1 / 3)
    assert out["overall_macro_f1"] == pytest.approx((1.0 + 1 / 3) / 2)


def test_combine_weights_per_task_by_hand() -> None:
    a = {"t": np.array([[0.8, 0.2]]), "u": np.array([[0.8, 0.2]])}
    b = {"t": np.array([[0.2, 0.8]]), "u": np.array([[0.2, 0.8]])}
    params = {
        "members": ["1", "2"],
        "task_weights": {"t": {"1": 0.5, "2": 0.5}, "u": {"1": 0.75, "2": 0.25}},
        "temperatures": {},
    }
    out = combine([a, b], params)
    assert np.allclose(out["t"], [[0.5, 0.5]]) and np.allclose(out["u"], [[0.65, 0.35]])
    # an ensemble saved before per-task weights: one weight per member for every task
    old = combine([a, b], {"members": ["1", "2"], "weights": {"1": 0.75, "2": 0.25}, "temperatures": {"t": 1.0}})
    assert np.allclose(old["t"], [[0.65, 0.35]]) and np.allclose(old["u"], [[0.65, 0.35]])


def test_temperature_scaling_recovers_the_overconfidence() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(4000, 3))
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    gold = np.array([rng.choice(3, p=p) for p in true_p])
    overconfident = np.exp(2.5 * logits) / np.exp(2.5 * logits).sum(1, keepdims=True)
    t = fit_temperature(overconfident, gold)
    assert t == pytest.approx(2.5, rel=0.1)
    scaled = apply_temperature(overconfident, t)
    assert nll(scaled, gold) < nll(overconfident, gold)
    assert (scaled.argmax(1) == overconfident.argmax(1)).all()  # calibration never changes a prediction
    assert np.allclose(scaled.sum(1), 1.0)
    assert fit_temperature(overconfident, np.full(4000, IGNORE)) == 1.0


def _dump(ids: list[int], probs: list[list[float]], gold: list[int]) -> dict:
    return {"sample_ids": ids, "tasks": {"t": {"labels": ["a", "b"], "gold": gold, "probs": probs}}}


def test_build_ensemble_aligns_members_by_sample_id() -> None:
    m1 = {
        "id": 1,
        "val_macro_f1": 0.6,
        "predictions": {
            "val": _dump([10, 11, 12], [[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]], [0, 1, 1]),
            "test": _dump([20, 21], [[0.6, 0.4], [0.4, 0.6]], [0, 1]),
        },
    }
    m2 = {
        "id": 2,
        "val_macro_f1": 0.2,
        "predictions": {  # same samples, another order
            "val": _dump([12, 10, 11], [[0.5, 0.5], [0.7, 0.3], [0.8, 0.2]], [1, 0, 1]),
            "test": _dump([21, 20], [[0.1, 0.9], [0.4, 0.6]], [1, 0]),
        },
    }
    out = build_ensemble([m1, m2], weighted=False, temperature=False, decision="none")
    assert out["weights"] == {"1": pytest.approx(0.5), "2": pytest.approx(0.5)}
    val = out["predictions"]["val"]
    assert val["sample_ids"] == [10, 11, 12]
    assert np.allclose(val["tasks"]["t"]["probs"], [[0.8, 0.2], [0.6, 0.4], [0.4, 0.6]])
    test = out["predictions"]["test"]["tasks"]["t"]["probs"]
    assert np.allclose(test, [[0.5, 0.5], [0.25, 0.75]])
    assert out["predictions"]["test"]["tasks"]["t"]["pred"] == [0, 1]
    assert out["test"]["tasks"]["t"]["macro_f1"] == 1.0
    unweighted = build_ensemble([m1, m2], weighted=False, temperature=True)
    assert unweighted["weights"] == {"1": 0.5, "2": 0.5}
    assert unweighted["temperatures"]["t"] != 1.0
    with pytest.raises(TrainerError):
        build_ensemble([m1], weighted=False, temperature=False)
    assert out["texts_scored"] == {
        "val": {"scored": 3, "most_of_a_member": 3},
        "test": {"scored": 2, "most_of_a_member": 2},
    }
    # A member trained after an import added a test text: the ensemble scores the two shared texts, and says so
    # (its figure sat beside the member's, scored on three, with no word).
    m3 = {
        **m2,
        "id": 3,
        "predictions": {
            **m2["predictions"],
            "test": _dump([21, 20, 22], [[0.1, 0.9], [0.4, 0.6], [0.5, 0.5]], [1, 0, 0]),
        },
    }
    shrunk = build_ensemble([m1, m3], weighted=False, temperature=False, decision="none")
    assert shrunk["texts_scored"]["test"] == {"scored": 2, "most_of_a_member": 3}


def test_a_member_with_non_finite_probabilities_is_refused_naming_it() -> None:
    """A diverged run's NaN would make every row of the mix NaN (NaN × 0 is NaN), predict the first label
    everywhere and store NaN metrics: the ensemble refuses it and says which run."""
    good = {
        "id": 1,
        "predictions": {
            "val": _dump([10, 11], [[0.9, 0.1], [0.4, 0.6]], [0, 1]),
            "test": _dump([20], [[0.6, 0.4]], [0]),
        },
    }
    diverged = {
        "id": 7,
        "predictions": {
            "val": _dump([10, 11], [[0.5, 0.5], [0.5, 0.5]], [0, 1]),
            "test": _dump([20], [[float("nan"), float("nan")]], [0]),
        },
    }
    with pytest.raises(TrainerError, match="run 7's test probabilities") as err:
        build_ensemble([good, diverged], weighted=True, temperature=True)
    assert err.value.field == "run_ids"


def test_members_may_list_their_tasks_in_any_order_but_not_their_labels() -> None:
    """A run trained with tasks [message, bias] and one with the default order predict the same things: they
    were refused as members of one ensemble, with a message saying their tasks differ."""
    from trainer.ensemble import check_same_tasks
    from trainer.errors import TrainerError
    from trainer.examples import TaskSpec

    bias, message = TaskSpec("bias", ["neutral", "partisan"]), TaskSpec("message", ["policy", "attack"])
    check_same_tasks([[bias, message], [message, bias]])
    with pytest.raises(TrainerError, match="same tasks and label sets"):
        check_same_tasks([[bias, message], [TaskSpec("bias", ["partisan", "neutral"]), message]])
    with pytest.raises(TrainerError):
        check_same_tasks([[bias, message], [bias]])
