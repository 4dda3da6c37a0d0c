"""LLRD parameter groups and the schedule against hand computations; the config's defaults and validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.trainer_fixtures import tiny_encoder  # noqa: F401 (fixture)
from trainer.config import TrainConfig, parse_set_option
from trainer.errors import TrainerError
from trainer.examples import TaskSpec
from trainer.model import build_model
from trainer.optim import build_optimizer, llrd_param_groups, warmup_linear_schedule


def test_llrd_groups_by_hand(tiny_encoder: str) -> None:
    model, _tok = build_model(
        tiny_encoder,
        [TaskSpec("a", ["x", "y"]), TaskSpec("b", ["p", "q", "r"])],
        pooling="last4_mean",
        head_layers=3,
        head_hidden=16,
        head_dropout=0.25,
    )
    lr, decay = 1e-3, 0.5
    groups = llrd_param_groups(model, lr=lr, head_lr=5e-3, decay=decay, weight_decay=0.03)
    by_name = {name: g for g in groups for name in g["names"]}
    # The tiny encoder has 2 layers: embeddings lr·d², layer 0 lr·d, layer 1 (top) lr, pooler lr.
    expected = {
        "embeddings.word_embeddings.weight": lr * decay**2,
        "encoder.layer.0.attention.self.query.weight": lr * decay,
        "encoder.layer.1.output.dense.weight": lr,
        "pooler.dense.weight": lr,
    }
    for name, rate in expected.items():
        assert by_name[name]["lr"] == pytest.approx(rate), name
        assert by_name[name]["weight_decay"] == 0.03
    for name in (
        "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.self.query.bias",
        "encoder.layer.1.output.LayerNorm.weight",
    ):
        assert by_name[name]["weight_decay"] == 0.0, name
    assert by_name["heads.a.1.weight"]["lr"] == 5e-3 and by_name["heads.a.1.weight"]["weight_decay"] == 0.03
    assert by_name["heads.b.7.bias"]["weight_decay"] == 0.0
    # Every trainable parameter is in exactly one group.
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters() if p.requires_grad)
    optimizer = build_optimizer(model, lr=lr, head_lr=None, decay=decay, weight_decay=0.03, device=torch.device("cpu"))
    head_group = next(g for g in optimizer.param_groups if g["group"] == "heads")
    assert head_group["lr"] == lr  # head_lr None: heads learn at the top rate


def test_warmup_then_linear_decay() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = warmup_linear_schedule(opt, total_steps=10, warmup_ratio=0.2)  # 2 warm-up steps
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates == pytest.approx([0.0, 1 / 2, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])


def test_config_defaults_follow_the_recipe() -> None:
    c = TrainConfig()
    # pooling auto: the recipe's last4_mean for mBERT (tests/test_trainer_train.py); the head's depth is planned
    assert (c.encoder, c.pooling, c.head_layers, c.head_hidden, c.head_dropout) == (
        "bert-base-multilingual-cased",
        "auto",
        None,
        768,
        0.25,
    )
    assert (c.weight_decay, c.batch_size, c.max_length, c.epochs) == (0.03, 12, 320, 20)
    # the keys a run's length decides are planned (tests/test_trainer_plan.py: a GPU run gets the recipe, patience 8)
    assert (c.lr, c.grad_accum, c.rdrop_alpha, c.llrd_decay, c.budget_minutes, c.patience) == (None,) * 6
    assert c.group_by_length and c.focal_gamma > 0 and c.decision == "prior" and c.lr_search == "auto"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"pooling": "max"}, "config.pooling"),
        ({"lr": 0}, "config.lr"),
        ({"batch_size": 0}, "config.batch_size"),
        ({"head_dropout": 1.5}, "config.head_dropout"),
        ({"tasks": []}, "config.tasks"),
        ({"oversample": "yes"}, "config.oversample"),
        ({"class_label_smoothing": {"message": {"other": 0.9}}}, "config.class_label_smoothing"),
        ({"no_such_key": 1}, "config.no_such_key"),
        ({"max_grad_norm": 0}, "config.max_grad_norm"),  # clipped every gradient to 0: a run that learned nothing
        ({"encoder": "x" * 4097}, "config.encoder"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(TrainerError) as err:
        TrainConfig.from_dict(overrides)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        *(({"lr": value}, "config.lr") for value in (math.nan, math.inf, -math.inf, "NaN", "1e309", ".inf")),
        *(({"label_smoothing": value}, "config.label_smoothing") for value in (math.nan, "nan", math.inf)),
        ({"head_lr": math.nan}, "config.head_lr"),
        ({"focal_gamma": math.inf}, "config.focal_gamma"),
        ({"task_weights": {"message": math.nan}}, "config.task_weights"),
        ({"class_label_smoothing": {"message": {"other": math.nan}}}, "config.class_label_smoothing"),
    ],
)
def test_config_refuses_nan_and_infinity_naming_the_key(overrides: dict, field: str) -> None:
    with pytest.raises(TrainerError) as err:
        TrainConfig.from_dict(overrides)
    assert err.value.field == field and field in err.value.message


def test_config_file_with_nan_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nan.yaml").write_text("lr: .nan\n")  # YAML's own NaN
    with pytest.raises(TrainerError) as err:
        TrainConfig.load(tmp_path / "nan.yaml")
    assert err.value.field == "config.lr"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"epochs": True}, "config.epochs"),
        ({"lr": False}, "config.lr"),
        ({"head_layers": True}, "config.head_layers"),
        ({"task_weights": {"message": True}}, "config.task_weights"),
        ({"class_label_smoothing": {"message": {"other": True}}}, "config.class_label_smoothing"),
    ],
)
def test_config_refuses_a_flag_where_a_number_belongs(overrides: dict, field: str) -> None:
    """bool is an int to pydantic's lax mode: `epochs: true` trained one epoch. Flags stay flags."""
    with pytest.raises(TrainerError) as err:
        TrainConfig.from_dict(overrides)
    assert err.value.field == field and "not " in err.value.message
    assert TrainConfig.from_dict({"oversample": True, "epochs": "5"}).epochs == 5


def test_a_config_file_with_yes_for_a_number_is_refused(tmp_path: Path) -> None:
    (tmp_path / "yes.yaml").write_text("epochs: yes\n")  # YAML 1.1's true
    with pytest.raises(TrainerError) as err:
        TrainConfig.load(tmp_path / "yes.yaml")
    assert err.value.field == "config.epochs"


def test_config_yaml_round_trip_and_coercion(tmp_path: Path) -> None:
    c = TrainConfig.from_dict(
        {
            "lr": "3e-5",
            "epochs": 4.0,
            "class_label_smoothing": {"message": {"other": 0.2}},
            "tasks": ["bias", "message"],
        }
    )
    assert c.lr == 3e-5 and c.epochs == 4 and isinstance(c.epochs, int)
    c.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == c
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(TrainerError):
        TrainConfig.load(tmp_path / "bad.yaml")


def test_set_option_parsing() -> None:
    assert parse_set_option(["epochs=3", "oversample=true", "tasks=[bias, message]", "head_lr=null"]) == {
        "epochs": 3,
        "oversample": True,
        "tasks": ["bias", "message"],
        "head_lr": None,
    }
    with pytest.raises(TrainerError):
        parse_set_option(["epochs"])


def test_yaml_on_and_off_switch_what_they_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """YAML reads `off` and `on` as booleans: `lr_search: off` in a config file (or `--set lr_search=off`, as the
    README documents it) was refused with "Input should be 'auto', 'on' or 'off'". The API's JSON stays strict."""
    (tmp_path / "c.yaml").write_text("lr_search: off\namp: off\n")
    loaded = TrainConfig.load(tmp_path / "c.yaml")
    assert (loaded.lr_search, loaded.amp) == ("off", "off")
    assert TrainConfig.from_dict(parse_set_option(["lr_search=on"])).lr_search == "on"
    with pytest.raises(TrainerError, match="amp"):  # amp has no "on": which precision would that be?
        TrainConfig.from_dict(parse_set_option(["amp=on"]))
    with pytest.raises(TrainerError, match="lr_search"):  # JSON (the API) is taken as it is: false is no switch
        TrainConfig.from_dict({"lr_search": False})


def test_a_device_the_machine_lacks_is_a_config_error_naming_the_key() -> None:
    """A plain RuntimeError was retried as if the machine might change, and named no field."""
    import torch

    from trainer.errors import TrainerError
    from trainer.predict import resolve_device

    missing = f"cuda:{torch.cuda.device_count() + 7}"
    with pytest.raises(TrainerError) as err:
        resolve_device(missing)
    assert err.value.field == "config.device" and missing in err.value.message
