"""AdamW with layer-wise learning-rate decay (LLRD) and transformers' warmup + linear-decay schedule.

LLRD: the heads and the encoder's top layer learn at `lr`; each layer below gets another factor `decay`, and
the embeddings get the smallest rate: lower layers hold general language knowledge that a small dataset should
barely move. Biases and LayerNorm weights get no weight decay (the usual AdamW practice).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|block|blocks|h)\.(\d+)\.")
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight")


def encoder_depth(encoder: nn.Module) -> int:
    return int(getattr(encoder.config, "num_hidden_layers", 0) or getattr(encoder.config, "n_layers", 0) or 0)


def layer_of(param_name: str, n_layers: int) -> int:
    """0 for embeddings, i + 1 for transformer layer i, n_layers + 1 for what is above (pooler, norms)."""
    if "embeddings" in param_name or "embed_tokens" in param_name or "wte" in param_name or "wpe" in param_name:
        return 0
    match = _LAYER.search(param_name)
    if match:
        return int(match.group(1)) + 1
    return n_layers + 1


def llrd_param_groups(
    model: nn.Module, *, lr: float, head_lr: float | None, decay: float, weight_decay: float
) -> list[dict[str, Any]]:
    """One group per (depth, decay or not): encoder depth d gets lr · decay^max(0, n_layers − d).

    Depth 0 is the embeddings, 1..n_layers the transformer layers, n_layers + 1 the pooler and final norms.
    """
    encoder: nn.Module = model.encoder  # type: ignore[assignment]
    n_layers = encoder_depth(encoder)
    groups: dict[tuple[str, int, bool], dict[str, Any]] = {}

    def add(kind: str, depth: int, name: str, param: nn.Parameter, rate: float) -> None:
        no_decay = any(name.endswith(s) for s in _NO_DECAY)
        key = (kind, depth, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "lr": rate,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "group": f"{kind}{depth if kind == 'encoder' else ''}{'/no_decay' if no_decay else ''}",
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)

    for name, param in encoder.named_parameters():
        if param.requires_grad:
            depth = layer_of(name, n_layers)
            add("encoder", depth, name, param, lr * decay ** max(0, n_layers - depth))
    for name, param in model.named_parameters():
        if param.requires_grad and not name.startswith("encoder."):
            add("heads", 0, name, param, head_lr if head_lr is not None else lr)
    return list(groups.values())


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    head_lr: float | None,
    decay: float,
    weight_decay: float,
    device: torch.device,
) -> torch.optim.AdamW:
    groups = llrd_param_groups(model, lr=lr, head_lr=head_lr, decay=decay, weight_decay=weight_decay)
    # `names` is ours (for inspection and tests); AdamW keeps unknown keys of a group untouched.
    return torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cuda", "cpu"))


def warmup_linear_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_ratio: float | None = None,
    *,
    warmup_steps: int | None = None,
    steps_done: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' schedule: linear warm-up from 0 over `warmup_steps` (or `warmup_ratio` of the steps), then
    linear decay to 0 at `total_steps`. `steps_done` > 0 re-aims a running schedule: the rates continue from
    that step toward the new end (the optimizer's groups keep their `initial_lr` from the first schedule)."""
    total = max(1, total_steps)
    warmup = warmup_steps if warmup_steps is not None else round(total * (warmup_ratio or 0.0))
    schedule: torch.optim.lr_scheduler.LambdaLR = get_linear_schedule_with_warmup(
        optimizer, warmup, total, last_epoch=steps_done - 1
    )
    return schedule
