"""The greedy soup of a run's best epochs (trainer/soup.py): what it keeps, what it adds, and the model it serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.trainer_fixtures import fast_config, synthetic_split, tiny_encoder  # noqa: F401 (fixture)
from trainer import checkpoint
from trainer.checkpoint import Checkpoint, LoopState
from trainer.metrics import evaluate_probs
from trainer.predict import RunPredictor
from trainer.soup import Ingredient, average, describe, greedy_soup, kept, qualifies
from trainer.train import save_artifacts, train_model


def state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2,), value), "steps": torch.tensor([7])}


def test_the_best_epochs_are_kept_best_first_and_a_worse_one_is_not_copied() -> None:
    ingredients: list[Ingredient] = []
    for epoch, f1 in enumerate([0.40, 0.55, 0.50, 0.55, 0.30, 0.60], start=1):
        if qualifies(ingredients, f1, 3):
            ingredients = kept(ingredients, Ingredient(epoch, f1, state(epoch)), 3)
    # ties go to the earlier epoch; the 0.30 of epoch 5 never qualified once three better ones were kept
    assert [(i.epoch, i.val_f1) for i in ingredients] == [(6, 0.60), (2, 0.55), (4, 0.55)]
    assert not qualifies(ingredients, 0.55, 3) and qualifies(ingredients, 0.56, 3)


def test_the_soup_adds_an_epoch_only_when_val_does_not_fall() -> None:
    ingredients = [Ingredient(3, 0.60, state(3.0)), Ingredient(5, 0.58, state(5.0)), Ingredient(1, 0.50, state(1.0))]

    scored: list[int] = []

    def score(weights: dict[str, torch.Tensor]) -> float:  # val peaks where the weight is 4
        scored.append(id(weights))
        return 0.62 - 0.01 * abs(float(weights["w"][0]) - 4.0)

    weights, report = greedy_soup(ingredients, score)
    # {3, 5} averages to 4 (val 0.62 ≥ 0.60): added; {3, 5, 1} to 3 (0.61 < 0.62): not
    assert report["epochs"] == [3, 5] and report["val_macro_f1"] == pytest.approx(0.62)
    assert [c["added"] for c in report["candidates"]] == [True, False]
    assert torch.equal(weights["w"], torch.full((2,), 4.0)) and torch.equal(weights["steps"], torch.tensor([7]))
    assert id(weights) == scored[0]  # the very weights scored: what the caller computed for them stays valid
    assert report["best_epoch"] == 3 and report["best_epoch_val_macro_f1"] == 0.60
    alone, nothing_helps = greedy_soup(ingredients, lambda _w: 0.0)
    assert nothing_helps["epochs"] == [3] and alone is ingredients[0].state  # the best epoch's own weights
    # the best epoch scored again (0.63, e.g. on a GPU that does not reproduce its numbers bit for bit) is what a
    # candidate must match, not the figure from training
    _weights, rescored = greedy_soup(ingredients, score, baseline=0.63)
    assert rescored["epochs"] == [3] and rescored["best_epoch_val_macro_f1"] == 0.63


def test_half_precision_weights_are_averaged_without_overflow() -> None:
    big = {"w": torch.full((3,), 60000.0, dtype=torch.float16)}
    mean = average([big, big])
    assert mean["w"].dtype == torch.float16 and torch.isfinite(mean["w"]).all()
    assert float(mean["w"][0]) == 60000.0


def test_the_soup_is_described_by_its_epochs_and_the_best_epoch_alone() -> None:
    soup = {
        "epochs": [3, 5],
        "val_macro_f1": 0.5231,
        "best_epoch": 3,
        "best_epoch_val_macro_f1": 0.5195,
        "best_epoch_test_macro_f1": 0.4847,
        "candidates": [{"epoch": 5, "added": True}, {"epoch": 4, "added": False}],
    }
    assert describe({**soup, "test_macro_f1": 0.4903}) == (
        "weights: greedy soup of epochs 3, 5 (val 0.5231, test 0.4903, argmax); best epoch 3 alone: val 0.5195, "
        "test 0.4847"
    )
    alone = {**soup, "epochs": [3], "val_macro_f1": 0.5195}
    assert describe(alone) == (
        "weights: the best epoch's (3: val 0.5195, test 0.4847, argmax); no soup with epoch(s) 5, 4 scored as well "
        "on val"
    )


@pytest.fixture(scope="module")
def souped(tiny_encoder: str) -> Any:
    config = fast_config(tiny_encoder, epochs=5, soup_size=3)
    return train_model(config, synthetic_split())


def test_a_run_serves_its_soup_and_reports_it_beside_the_best_epoch(souped: Any, tmp_path: Path) -> None:
    soup = souped.metrics["soup"]
    by_epoch = {e["epoch"]: e["val_macro_f1"] for e in souped.curve}
    # the best epoch scored again before the soup: on a CPU, what it scored in training
    assert soup["best_epoch"] == souped.best_epoch
    assert soup["best_epoch_val_macro_f1"] == pytest.approx(by_epoch[souped.best_epoch], abs=1e-9)
    # the three best epochs by val were the ingredients: the best, and two candidates tried in order
    ranked = sorted(by_epoch, key=lambda e: (-by_epoch[e], e))[:3]
    assert [soup["best_epoch"], *[c["epoch"] for c in soup["candidates"]]] == ranked
    assert soup["epochs"][0] == souped.best_epoch and set(soup["epochs"]) <= set(ranked)
    assert soup["summary"] == describe(soup)
    # the best epoch alone, saved beside the soup's predictions: what the soup is compared with
    test_ids = souped.predictions["test"]["sample_ids"]
    assert souped.predictions["test_best_epoch"]["sample_ids"] == test_ids
    alone = souped.predictions["test_best_epoch"]["tasks"]
    gold = np.array([alone[t]["gold"] for t in alone]).T
    probs = {t: np.asarray(alone[t]["probs"]) for t in alone}
    assert evaluate_probs(probs, gold, synthetic_split().tasks)["overall_macro_f1"] == pytest.approx(
        soup["best_epoch_test_macro_f1"]
    )
    # the model the run keeps (and its saved predictions) is the soup: val as the soup scored it, test (argmax)
    # as the summary says
    assert souped.metrics["val"]["overall_macro_f1"] == pytest.approx(soup["val_macro_f1"], abs=1e-9)
    test_argmax = souped.metrics["test_argmax"] or souped.metrics["test"]
    if len(soup["epochs"]) > 1:
        assert test_argmax["overall_macro_f1"] == pytest.approx(soup["test_macro_f1"], abs=1e-9)
    else:
        assert test_argmax["overall_macro_f1"] == pytest.approx(soup["best_epoch_test_macro_f1"], abs=1e-9)
    out = save_artifacts(souped, tmp_path / "run")
    assert (out / "predictions_val_best_epoch.json").is_file() and (out / "predictions_test_best_epoch.json").is_file()
    data = synthetic_split()
    reloaded = RunPredictor(out / "model", device="cpu").predict_proba([e.text for e in data.val])
    gold = np.array([[t.labels.index(e.labels[t.name]) for t in data.tasks] for e in data.val])
    assert evaluate_probs(reloaded, gold, data.tasks)["overall_macro_f1"] == pytest.approx(soup["val_macro_f1"])


def test_a_soup_of_one_is_the_best_epoch_as_before(tiny_encoder: str) -> None:
    result = train_model(fast_config(tiny_encoder, epochs=3, soup_size=1), synthetic_split())
    assert "soup" not in result.metrics
    best = next(e for e in result.curve if e["epoch"] == result.best_epoch)
    assert result.metrics["val"]["overall_macro_f1"] == pytest.approx(best["val_macro_f1"], abs=1e-9)


def test_a_checkpoint_keeps_the_ingredients_and_an_older_one_its_best_epoch(tmp_path: Path) -> None:
    loop = LoopState(epoch=4, best_f1=0.6, best_epoch=3)
    ingredients = [Ingredient(3, 0.6, state(3.0)), Ingredient(4, 0.5, state(4.0))]
    ckpt = Checkpoint("fp", loop, state(9.0), {}, None, [], None, ingredients)
    checkpoint.save(tmp_path, ckpt)
    loaded, why_not = checkpoint.load(tmp_path, "fp")
    assert why_not is None and loaded is not None
    assert [(i.epoch, i.val_f1) for i in loaded.ingredients] == [(3, 0.6), (4, 0.5)]
    assert torch.equal(loaded.ingredients[1].state["w"], state(4.0)["w"])
    raw = torch.load(tmp_path / checkpoint.CHECKPOINT_FILE, weights_only=False)
    del raw["ingredients"]  # as a checkpoint written before the soup (and before the digests)
    torch.save(raw, tmp_path / checkpoint.CHECKPOINT_FILE)
    (tmp_path / checkpoint.DIGEST_FILE).unlink()
    older, _ = checkpoint.load(tmp_path, "fp")
    assert older is not None and [(i.epoch, i.val_f1) for i in older.ingredients] == [(3, 0.6)]
