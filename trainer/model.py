"""A shared transformer encoder with one head (linear or MLP) per task; saved and loaded with `save_pretrained`.

Layout of a saved model directory:
    encoder/          the encoder and its tokenizer (save_pretrained; loads with AutoModel/AutoTokenizer)
    heads.safetensors the heads' weights
    model.json        tasks and label sets, pooling, head shape, max length: everything needed to rebuild
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from core.encoders import directory_problem, load_errors
from trainer.config import TrainConfig
from trainer.examples import TaskSpec

log = logging.getLogger(__name__)
if TYPE_CHECKING:
    from transformers import PreTrainedModel


class TaskHead(nn.Sequential):
    """`layers` linear layers (width `hidden`, GELU, dropout before each) ending in the task's classes."""

    def __init__(self, in_dim: int, n_classes: int, layers: int, hidden: int, dropout: float) -> None:
        modules: list[nn.Module] = []
        width = in_dim
        for _ in range(layers - 1):
            modules += [nn.Dropout(dropout), nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        modules += [nn.Dropout(dropout), nn.Linear(width, n_classes)]
        super().__init__(*modules)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens only: padding must not change the representation (dynamic vs fixed padding)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


_MODULE_DICT = nn.ModuleDict()


def head_key(task: str) -> str:
    """The key of a task's head among the model's modules: its name, unless torch refuses that as a module name
    (a dot, or an attribute of the dict such as `type`, `train`, `values`, `to`), which gets `~` and the name's
    UTF-8 in hex. A name starting with `~` is encoded too, so no two tasks share a key. Deterministic: saved
    heads load under the same keys."""
    if task and "." not in task and not task.startswith("~") and not hasattr(_MODULE_DICT, task):
        return task
    return "~" + task.encode("utf-8").hex()


def saved_head_keys(state: dict[str, torch.Tensor], tasks: list[TaskSpec]) -> dict[str, torch.Tensor]:
    """Saved heads under today's keys: a model saved under a task's plain name where head_key now encodes it (a
    task named `~x` before the keys were encoded; a name that a later torch made an attribute of its ModuleDict)."""
    renamed = {t.name: head_key(t.name) for t in tasks if head_key(t.name) != t.name}
    out = {}
    for key, tensor in state.items():
        first, _, rest = key.partition(".")
        out[f"{renamed.get(first, first)}.{rest}" if rest else key] = tensor
    return out


class MultiTaskModel(nn.Module):
    def __init__(
        self,
        encoder: PreTrainedModel,
        tasks: list[TaskSpec],
        *,
        pooling: str = "last4_mean",
        head_layers: int = 3,
        head_hidden: int = 768,
        head_dropout: float = 0.25,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = tasks
        self.pooling = pooling
        self.head_shape = {
            "head_layers": head_layers,
            "head_hidden": head_hidden,
            "head_dropout": head_dropout,
        }
        dim = int(encoder.config.hidden_size)
        self.heads = nn.ModuleDict(
            {head_key(t.name): TaskHead(dim, len(t.labels), head_layers, head_hidden, head_dropout) for t in tasks}
        )

    def set_heads(self, layers: int, seed: int) -> None:
        """Give every task a fresh head of `layers` layers (a run's plan decides how deep, after the model is
        built), drawn from `seed` alone; nothing changes when the heads already have that many."""
        if layers == self.head_shape["head_layers"]:
            return
        device = next(self.heads.parameters()).device
        dim = int(self.encoder.config.hidden_size)
        hidden, dropout = int(self.head_shape["head_hidden"]), float(self.head_shape["head_dropout"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            heads = {head_key(t.name): TaskHead(dim, len(t.labels), layers, hidden, dropout) for t in self.tasks}
        self.heads = nn.ModuleDict(heads).to(device)
        self.head_shape["head_layers"] = layers

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        want_layers = self.pooling == "last4_mean"
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=want_layers,
            return_dict=True,
        )
        if self.pooling == "cls":
            first_token: torch.Tensor = out.last_hidden_state[:, 0]
            return first_token
        if self.pooling == "mean":
            return masked_mean(out.last_hidden_state, attention_mask)
        # Mean of the last four layers (fewer when the encoder is shallower), then a masked mean over tokens.
        layers = torch.stack(out.hidden_states[-4:], dim=0).mean(dim=0)
        return masked_mean(layers, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = self.pool(input_ids, attention_mask)
        return {t.name: self.heads[head_key(t.name)](pooled) for t in self.tasks}

    # Persistence -------------------------------------------------------------------------------

    def meta(self, max_length: int, precision: str = "fp32") -> dict[str, Any]:
        return {
            "tasks": [{"name": t.name, "labels": t.labels} for t in self.tasks],
            "pooling": self.pooling,
            "max_length": max_length,
            "precision": precision,  # what the run evaluated in (fp32, bf16, fp16): it serves in the same
            **self.head_shape,
        }

    def save(self, out_dir: Path, tokenizer: Any, max_length: int, precision: str = "fp32") -> None:
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(out_dir / "encoder")
        tokenizer.save_pretrained(out_dir / "encoder")
        heads = {k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}
        save_file(heads, str(out_dir / "heads.safetensors"))
        (out_dir / "model.json").write_text(json.dumps(self.meta(max_length, precision), indent=2), encoding="utf-8")


def _load_failure(name_or_path: str) -> Any:
    """One message for every cause (a missing path, a directory without a model, a file, the hub unreachable): the
    error is stored on the run and shown to its project, and must not tell what exists on this disk. The cause
    goes to this process's log, for whoever runs the worker."""
    from trainer.errors import TrainerError

    return TrainerError(
        f"cannot load encoder {name_or_path!r}: not a model directory this machine may read, "
        "nor a model on the hub (or the hub is unreachable); a local model is named by its directory's "
        "absolute path",
        field="config.encoder",
    )


def _no_directory(name_or_path: str) -> bool:
    """Whether `name_or_path` is a local path (or an existing folder) that holds no model (core.encoders.
    directory_problem): an empty folder's model type was guessed from its name (its tokenizer then raised an
    AttributeError that was retried as a crash), and a folder without weights failed only when the model loaded,
    after `augloop train` had recorded its runs. Refused by one message whatever the cause (_load_failure)."""
    problem = directory_problem(name_or_path)
    if problem is not None:  # the worker's log (INFO); a command's own error says it, and a second line said it again
        log.info("encoder %r: %s", name_or_path, problem)
    return problem is not None


def check_encoder_found(name_or_path: str | Path) -> None:
    """Raise load_encoder's TrainerError when the encoder's config cannot be read here (no such directory, one
    without config.json or weights, no model in it, not on the hub or the hub unreachable): a command that trains
    in its own process asks before it records any run (`augloop train` left a failed run and a cancelled TF-IDF
    member behind for a typo)."""
    from transformers import AutoConfig

    name_or_path = str(name_or_path)
    if _no_directory(name_or_path):
        raise _load_failure(name_or_path)
    try:
        AutoConfig.from_pretrained(name_or_path)
    except load_errors() as err:
        log.warning("encoder %r cannot load: %s", name_or_path, str(err)[:400])
        raise _load_failure(name_or_path) from err


def load_encoder(name_or_path: str | Path) -> tuple[PreTrainedModel, Any]:
    """The encoder and its tokenizer, by hub name or local directory (one path for real and tiny models)."""
    from transformers import AutoModel, AutoTokenizer

    name_or_path = str(name_or_path)  # a Path works too
    failure = _load_failure(name_or_path)
    if _no_directory(name_or_path):
        raise failure
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        encoder = AutoModel.from_pretrained(name_or_path)
    # not a directory, not on the hub, hub unreachable, not an encoder, a directory without the tokenizer's files
    # (BertTokenizer is given no vocabulary file), damaged weights: otherwise retried as a crash (core.encoders)
    except load_errors() as err:
        said = str(err)  # transformers lists every model type it knows (5 KB) for a folder without config.json
        log.warning("encoder %r cannot load: %s", name_or_path, said if len(said) <= 400 else said[:400] + " …")
        raise failure from err
    check_encoder(name_or_path, encoder, tokenizer)
    return encoder, tokenizer


def check_encoder(name: str, encoder: Any, tokenizer: Any) -> None:
    """Refuse, before a step is trained, a model the trainer cannot fine-tune (core.encoders.encoder_problem)."""
    from core.encoders import encoder_problem
    from trainer.errors import TrainerError

    if (problem := encoder_problem(encoder, tokenizer)) is not None:
        raise TrainerError(f"encoder {name!r}: {problem}", field="config.encoder")


# A sentence-transformers checkpoint names its modules in modules.json; its pooling module's config says how it
# was trained to pool. Of its modes, the trainer has mean and cls.
_ST_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
RECIPE_POOLING = "last4_mean"


def resolve_pooling(pooling: str, encoder_name: str) -> str:
    """`auto`: the pooling the encoder's checkpoint was trained with, where it declares one (a
    sentence-transformers model: mean for all-MiniLM-L6-v2, cls for others), else the recipe's last4_mean, made
    for an encoder pretrained as a masked LM (mBERT, XLM-R), whose layers were never trained to be pooled. Any
    other value is used as given."""
    if pooling != "auto":
        return pooling
    config = _sentence_pooling_config(encoder_name)
    chosen = [mode for key, mode in _ST_POOLING_MODES.items() if config.get(key)]
    if len(chosen) == 1:
        return chosen[0]
    return RECIPE_POOLING


def with_pooling_resolved(config: TrainConfig) -> tuple[TrainConfig, str | None]:
    """The config with `auto` pooling replaced by what it resolves to on this machine, and the reason to record
    with the run's plan (None when the pooling was set). A run resolves once, before anything else: its
    checkpoints, saved config and model then name the pooling it trained with, and a resumed run that would
    resolve otherwise (a worker without the hub, where a hub id's sentence-transformers files are missing)
    does not resume into another pooling."""
    if config.pooling != "auto":
        return config, None
    resolved = resolve_pooling("auto", config.encoder)
    why = (
        "the encoder's own (its sentence-transformers pooling config)"
        if resolved != RECIPE_POOLING
        else "the recipe's (the encoder declares no pooling of its own)"
    )
    return config.model_copy(update={"pooling": resolved}), f"pooling {resolved}: {why}"


def _sentence_pooling_config(encoder_name: str) -> dict[str, Any]:
    """The pooling config of a sentence-transformers checkpoint (a directory, or a hub id through the hub's
    cache); {} for any other encoder or when it cannot be read."""
    from transformers.utils.hub import cached_file

    def read(filename: str) -> Any:
        try:
            path = cached_file(
                encoder_name,
                filename,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
        except (OSError, ValueError) as err:  # not a directory, hub unreachable or refusing
            log.debug("encoder %r: no %s (%s)", encoder_name, filename, err)
            return None
        if path is None:
            return None
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    modules = read("modules.json")
    if not isinstance(modules, list):
        return {}
    for module in modules:
        if isinstance(module, dict) and str(module.get("type", "")).endswith("models.Pooling"):
            found = read(f"{module.get('path', '1_Pooling')}/config.json")
            return found if isinstance(found, dict) else {}
    return {}


def build_model(
    encoder_name: str,
    tasks: list[TaskSpec],
    *,
    pooling: str,
    head_layers: int,
    head_hidden: int,
    head_dropout: float,
) -> tuple[MultiTaskModel, Any]:
    """The encoder with fresh heads; `pooling` may be `auto` (resolve_pooling: the model keeps what it chose)."""
    encoder, tokenizer = load_encoder(encoder_name)
    model = MultiTaskModel(
        encoder,
        tasks,
        pooling=resolve_pooling(pooling, encoder_name),
        head_layers=head_layers,
        head_hidden=head_hidden,
        head_dropout=head_dropout,
    )
    return model, tokenizer


def load_model(model_dir: Path) -> tuple[MultiTaskModel, Any, dict[str, Any]]:
    """Rebuild a saved model: same encoder weights, same heads, same tokenizer → the same predictions."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    tasks = [TaskSpec(t["name"], list(t["labels"])) for t in meta["tasks"]]
    model, tokenizer = build_model(
        str(model_dir / "encoder"),
        tasks,
        pooling=meta["pooling"],
        head_layers=meta["head_layers"],
        head_hidden=meta["head_hidden"],
        head_dropout=meta["head_dropout"],
    )
    model.heads.load_state_dict(saved_head_keys(load_file(str(model_dir / "heads.safetensors")), model.tasks))
    model.eval()
    return model, tokenizer, meta
