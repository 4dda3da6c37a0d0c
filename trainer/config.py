"""The training configuration: one pydantic model, stored as YAML with every run.

Outside data (a YAML file, an API body, `--set`) comes in through `from_dict`/`load`, which turn pydantic's
ValidationError into the trainer's own TrainerError naming the key (`config.lr`). Numbers are read leniently
(YAML 1.1 reads `3e-5` as a string and JSON clients send `4.0` for 4) but never NaN or ±Infinity; flags must
be true or false.

Defaults follow the recipe that first reached 63% macro-F1 on a ~7k-text two-task dataset (sentiment +
polarization): mBERT, last-4-layer mean pooling, 3-layer MLP heads, focal loss with label smoothing, R-Drop,
LLRD, AdamW (wd 0.03, LR 2.5e-5), batch 12 × accumulation 4, max length 320, early stopping (patience 8), 20
epochs on a GPU. The keys that depend on how long a run can train (`lr`, `grad_accum`, `rdrop_alpha`,
`llrd_decay`, `head_layers`, `ema_decay`, `patience`) default to None: planned (trainer/plan.py), which gives
exactly the recipe to a run that affords the recipe's training and scales them for a shorter one (a CPU, a
`budget_minutes`). `pooling` defaults to `auto`: an encoder trained with a pooling of its own (a
sentence-transformers checkpoint) keeps it; any other gets the recipe's. A value set is used as given.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from core.inputs import InputModel
from trainer.errors import TrainerError

# Bounds on the lists and maps a request may give (a body may hold 50 MiB): past them nothing real is named, and
# each run stores its config (a request for 5 seeds and the TF-IDF member stored an exclude_methods list 6 times).
MAX_NAMED_TASKS = 1024
# A task left out of task_weights weighs 1; a run whose every task weighs 0 has no loss to learn from (it trained
# to "success" and scored as an untrained model), refused where the tasks are known.
ZERO_WEIGHTS = "config.task_weights gives every task the run trains weight 0: it would learn nothing"
Name = Annotated[str, Field(min_length=1, max_length=1000)]  # a task or label name, as a file's header names it
MethodName = Annotated[str, Field(min_length=1, max_length=64)]  # an augmentation method (workers/augment/catalog)
Smoothing = Annotated[float, Field(ge=0, le=0.5)]


class ConfigModel(InputModel):
    """A configuration that comes from outside data through `from_dict`."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Self:
        """Build from a (partial) mapping; unknown keys are an error naming the key, not silently ignored."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as err:
            raise config_error(err) from None


LR_SCALE_MAX = 100.0  # the most lr_scale may be: a config's, or one the LR selection reaches by multiplying it
SEED_MAX = 2**32 - 1  # numpy's seed range: every seed a run, a member or an import takes


class TrainConfig(ConfigModel):
    """The trainer's configuration; every key has a default (the recipe above)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    # Model
    # hub name or directory (a hub id is at most 96 characters, a path at most PATH_MAX)
    encoder: str = Field(default="bert-base-multilingual-cased", pattern=r"\S", max_length=4096)
    # auto: the encoder's own pooling where its checkpoint declares one (a sentence-transformers model's
    # 1_Pooling/config.json: mean or cls), else the recipe's last4_mean (trainer/model.py resolve_pooling)
    pooling: Literal["auto", "last4_mean", "cls", "mean"] = "auto"
    # layers of each task's head; None: planned (the recipe's 3-layer MLP in a long run, a linear head in a short one)
    head_layers: int | None = Field(default=None, ge=1, le=16)
    head_hidden: int = Field(default=768, ge=1, le=65_536)
    head_dropout: float = Field(default=0.25, ge=0, le=0.95)
    tasks: list[Name] | None = Field(default=None, min_length=1, max_length=MAX_NAMED_TASKS)  # None: every task

    # Data
    max_length: int = Field(default=320, ge=8, le=4096)
    batch_size: int = Field(default=12, ge=1, le=65_536)
    grad_accum: int | None = Field(default=None, ge=1, le=65_536)  # None: planned (the recipe's 4, less in a short run)
    eval_batch_size: int = Field(default=64, ge=1, le=65_536)
    group_by_length: StrictBool = True  # length-grouped batches + dynamic padding; False pads to max_length
    # a seeded subset of the training view (quick runs, demos)
    max_train_samples: int | None = Field(default=None, ge=1, le=10**9)
    oversample: StrictBool = False  # repeat examples of rare classes within an epoch
    # repeat factor = (largest class / example's class) ** power
    oversample_power: float = Field(default=0.5, ge=0)  # 1: rare classes as often as the largest (≤ the cap)
    oversample_max: int = Field(default=4, ge=1, le=10_000)
    curriculum: StrictBool = False  # easy → hard: start with the easiest fraction, grow to all data
    curriculum_start: float = Field(default=0.5, ge=0.01, le=1)
    curriculum_epochs: int = Field(default=3, ge=1, le=10_000)
    variants: Literal["approved", "none"] = "approved"  # variants in the train view; "none": originals only
    # approved variants of these methods stay out
    exclude_methods: list[MethodName] = Field(default_factory=list, max_length=64)
    # "one_per_source": an original and its variants are one family, and each epoch draws one of them
    # (trainer/data.py TrainBatches); "all": every approved variant is an example of every epoch
    variant_sampling: Literal["all", "one_per_source"] = "one_per_source"

    # Loss
    focal_gamma: float = Field(default=2.0, ge=0, le=10)  # beyond ~5 the loss vanishes for most examples
    label_smoothing: Smoothing = 0.05
    class_label_smoothing: dict[Name, Annotated[dict[Name, Smoothing], Field(max_length=100_000)]] = Field(
        default_factory=dict, max_length=MAX_NAMED_TASKS
    )  # task → label → eps
    class_weights: StrictBool = True  # inverse class frequency in the training view
    task_weights: dict[Name, Annotated[float, Field(ge=0, le=100)]] = Field(
        default_factory=dict, max_length=MAX_NAMED_TASKS
    )  # task → weight (1)
    # 0 disables R-Drop (one forward pass instead of two); None: planned (1 in a long run, else 0)
    rdrop_alpha: float | None = Field(default=None, ge=0, le=100)

    # Optimisation
    # None: planned from the recipe's 2.5e-5 (effective batch, steps, encoder width, lr_scale); a value: as given
    lr: float | None = Field(default=None, gt=0, lt=1)
    lr_scale: float = Field(default=1.0, gt=0, le=LR_SCALE_MAX)  # × the planned LR; learning-rate selection sets it
    lr_search: Literal["auto", "on", "off"] = "auto"  # auto: when the plan scaled the LR and the budget allows
    lr_trials: int = Field(default=4, ge=2, le=8)  # trials of LR selection
    # None: the same as lr (the top of the LLRD ladder)
    head_lr: float | None = Field(default=None, gt=0, lt=1)
    # each encoder layer below the top gets lr × decay^depth; None: planned (0.9 in a long run, else 1)
    llrd_decay: float | None = Field(default=None, ge=0.05, le=1)
    # validate, select and keep the exponential moving average of the weights, updated at every optimizer step
    # (avg ← decay · avg + (1 − decay) · weights); 0: the weights themselves; None: planned (a short run averages
    # over half an epoch, a long one keeps its weights)
    ema_decay: float | None = Field(default=None, ge=0, lt=1)
    # N > 1: the best N epochs' weights (by val macro-F1) are kept, and the run ends with their greedy soup, each
    # added to the average only when val macro-F1 does not fall (trainer/soup.py); None or 1: the best epoch's
    # weights alone (off by default: in the quality study it never beat the best epoch on val)
    soup_size: int | None = Field(default=None, ge=1, le=16)
    weight_decay: float = Field(default=0.03, ge=0, le=1)  # AdamW's decoupled decay: past 1 the weights diverge
    warmup_ratio: float = Field(default=0.1, ge=0, le=0.9)
    max_grad_norm: float = Field(default=1.0, gt=0)  # 0 would scale every gradient to 0: a run that learns nothing
    epochs: int = Field(default=20, ge=1, le=10_000)  # at most; a budget may plan fewer
    # wall-clock minutes of training (steps and validation); None: `epochs` epochs, however long they take
    budget_minutes: float | None = Field(default=None, gt=0, le=7 * 24 * 60)
    # The run's length in epochs (a fraction stops within the last), at most `epochs`, whatever a budget would
    # afford at the pace the run measures: an impact report gives each of its runs the length its one LR
    # selection planned for the budget, so that no arm trains longer because the machine was idler then.
    fixed_epochs: float | None = Field(default=None, gt=0, le=10_000)
    # epochs without a better mean val macro-F1 before stopping; 0: never stop early; None: planned, 40% of the
    # epochs the run is planned for, at least 3 (trainer/plan.py, rule 7: the recipe's 20 epochs wait 8)
    patience: int | None = Field(default=None, ge=0, le=10_000)
    # how labels are read from probabilities: "prior" fits a prior correction per task on val for macro-F1
    # (trainer/decision.py); "none": the most probable label
    decision: Literal["prior", "none"] = "prior"

    # Runtime
    seed: int = Field(default=42, ge=0, le=SEED_MAX)
    # "cuda:N" pins one GPU (as the worker sees them: after CUDA_VISIBLE_DEVICES)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d{1,3})?)$")
    # processes of a distributed (DDP) run, one per GPU (or CPU processes on the gloo backend); each trains
    # `batch_size` texts per micro-batch, so the global batch is batch_size × nproc × grad_accum
    nproc: int = Field(default=1, ge=1, le=64)
    # a checkpoint (model, optimizer, schedule, RNG, loop state) after every epoch, and every N optimizer steps
    # when set: a retried or interrupted run resumes from the last one
    checkpoint_every_steps: int | None = Field(default=None, ge=1, le=10**9)
    # auto: on CUDA bf16 where supported, else fp16; on a CPU bf16 where it is native (AVX512-BF16, AMX), else
    # fp32 (trainer.predict.amp_dtype); the same precision trains, evaluates and serves the run
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    num_threads: int | None = Field(default=None, ge=1, le=1024)  # CPU only; None: the cores this process may use

    @field_validator("tasks")
    @classmethod
    def _distinct_tasks(cls, tasks: list[str] | None) -> list[str] | None:
        twice = sorted(t for t, n in Counter(tasks or []).items() if n > 1)  # linear: list.count was quadratic
        if twice:  # a model with two heads for one task, which no ensemble can combine
            raise ValueError(f"tasks must be distinct; named twice: {twice}")
        return tasks

    @field_validator("nproc")
    @classmethod
    def _one_device_per_process(cls, nproc: int, info: ValidationInfo) -> int:
        if nproc > 1 and str(info.data.get("device", "")).startswith("cuda:"):
            raise ValueError("a distributed run (nproc > 1) takes one GPU per process: use device 'cuda' or 'auto'")
        return nproc

    @property
    def global_batch(self) -> int:
        """Texts per micro-batch over all processes (× grad_accum per optimizer step)."""
        return self.batch_size * self.nproc

    # Serialisation -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **overrides})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(read_config_file(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (`epochs: 1` then `epochs: 2` trained 2 epochs
    in silence: which one did the user mean?)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # SafeLoader's own check says so
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML config file's keys (switches named again), or TrainerError naming the file: not YAML, not UTF-8,
    not a mapping, or a value YAML reads but Python cannot hold (`yaml_value_problem`)."""
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as err:
        raise TrainerError(f"{path}: not valid YAML: {err}", field="config") from None
    except UnicodeDecodeError as err:
        raise TrainerError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})", field="config") from None
    except (ValueError, RecursionError) as err:
        raise TrainerError(f"{path}: not valid YAML: {yaml_value_problem(err)}", field="config") from None
    if data is not None and not isinstance(data, dict):
        raise TrainerError(f"{path}: expected a mapping of config keys", field="config")
    return yaml_switches(data or {})


def yaml_value_problem(err: ValueError | RecursionError) -> str:
    """In words, what PyYAML raises besides its own YAMLError (a traceback and exit 1 from the CLI): a value
    nested past Python's recursion limit, an integer of more digits than Python converts
    (sys.get_int_max_str_digits; `epochs: 1000…0`), or a date that is none (`2024-13-45`: its message)."""
    if isinstance(err, RecursionError):
        return "nested too deep"
    if "integer string conversion" in str(err):  # Python's message; the error has no type of its own
        return f"a number of more than {sys.get_int_max_str_digits()} digits"
    return str(err)


# YAML 1.1 reads `off` and `on` as booleans; these keys' values are named switches, so in YAML (a config file,
# `--set`) `lr_search: off` means "off". JSON (the API) says what it means and is taken as it is.
SWITCHES: dict[str, dict[bool, str]] = {"lr_search": {False: "off", True: "on"}, "amp": {False: "off"}}


def yaml_switches(data: dict[str, Any]) -> dict[str, Any]:
    """Config keys read from YAML, with the switches YAML turned into booleans named again."""
    return {
        key: SWITCHES[key].get(value, value) if key in SWITCHES and isinstance(value, bool) else value
        for key, value in data.items()
    }


def config_error(err: ValidationError) -> TrainerError:
    """The first problem, named by its top-level key (`config.class_label_smoothing`, not the label inside)."""
    first = err.errors()[0]
    field = ".".join(["config", *(str(part) for part in first["loc"][:1])])
    why = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return TrainerError(f"{field}: {why}{more}", field=field)


def parse_set_option(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs (CLI --set), values read as YAML: numbers, booleans and lists keep their types."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise TrainerError(f"--set takes key=value; got {item!r}", field="set")
        key, raw = item.split("=", 1)
        if key.strip() in out:  # as a config file's key given twice: the last one won, the first went unread
            raise TrainerError(f"--set {key.strip()} is given twice; give it once", field="set")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
        except (ValueError, RecursionError) as err:  # YAML, but not a value Python can hold: not taken as text
            raise TrainerError(f"--set {key.strip()}: {yaml_value_problem(err)}", field="set") from None
    return yaml_switches(out)


def configured_precision(amp: str) -> str | None:
    """The precision an `amp` setting names (fp32, bf16, fp16); None for `auto`, which the machine decides. Here,
    not beside the dtypes in trainer/predict.py: the API reads it for estimates without importing torch."""
    return None if amp == "auto" else {"off": "fp32"}.get(amp, amp)
