"""A greedy soup of a run's best epochs: one model whose weights average the epochs that help on val.

A run keeps the weights of its best `soup_size` epochs by val macro-F1 (the "ingredients"; each the weights it
validated, the moving average where the run keeps one). At the end, following Wortsman et al. 2022 ("Model soups",
the greedy soup), the ingredients are taken in order of val macro-F1 and each is added to the soup only when the
soup's val macro-F1 with it in is not lower than without it. The soup starts as the best epoch alone, so on val it
is never worse than the best epoch; what it does on test is what the quality study measures, paired with the best
epoch alone (`metrics["soup"]`). Epochs of one run lie in one basin of the loss, so their average is a model of
its own (the idea of stochastic weight averaging), and one model is what the predictor serves: no cost at
prediction time, K + 1 evaluation passes at the end of training (K − 1 candidates on val, the best epoch alone on
val and test), K copies of the weights in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

State = dict[str, torch.Tensor]


@dataclass
class Ingredient:
    epoch: int
    val_f1: float
    state: State  # on the CPU


def kept(ingredients: list[Ingredient], new: Ingredient, size: int) -> list[Ingredient]:
    """The best `size` of the ingredients and `new`, best first (a tie goes to the earlier epoch)."""
    ranked = sorted([*ingredients, new], key=lambda i: (-i.val_f1, i.epoch))
    return ranked[:size]


def qualifies(ingredients: list[Ingredient], val_f1: float, size: int) -> bool:
    """Whether an epoch with `val_f1` would be kept (so that its weights are copied only then)."""
    return len(ingredients) < size or val_f1 > min(i.val_f1 for i in ingredients) + 1e-9


def average(states: list[State]) -> State:
    """The mean of floating-point weights (accumulated in float32 or wider); other tensors from the first."""
    out: State = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            acc = first.to(torch.promote_types(first.dtype, torch.float32), copy=True)
            for s in states[1:]:
                acc += s[key]
            out[key] = (acc / len(states)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def greedy_soup(
    ingredients: list[Ingredient], score: Callable[[State], float], baseline: float | None = None
) -> tuple[State, dict[str, Any]]:
    """The soup's weights and what was tried: `score(weights)` is val macro-F1 (called once per candidate);
    `baseline`, the best epoch's val macro-F1 scored again now (its value during training otherwise), so that a
    candidate is compared with what the same scoring gives the best epoch alone."""
    if not ingredients:
        raise ValueError("a soup needs at least one ingredient")
    ordered = sorted(ingredients, key=lambda i: (-i.val_f1, i.epoch))
    soup, best = [ordered[0]], ordered[0].val_f1 if baseline is None else baseline
    state = ordered[0].state
    tried: list[dict[str, Any]] = []
    for candidate in ordered[1:]:
        mixed = average([i.state for i in (*soup, candidate)])
        value = score(mixed)
        added = value >= best
        tried.append(
            {
                "epoch": candidate.epoch,
                "val_macro_f1": candidate.val_f1,
                "soup_val_macro_f1": value,
                "added": added,
            }
        )
        if added:
            soup.append(candidate)
            state, best = mixed, value  # the weights scored: the caller may keep what it computed for them
    report = {
        "epochs": [i.epoch for i in soup],
        "val_macro_f1": best,
        "best_epoch": ordered[0].epoch,
        "best_epoch_val_macro_f1": ordered[0].val_f1 if baseline is None else baseline,
        "candidates": tried,
    }
    return state, report


def describe(soup: dict[str, Any]) -> str:
    """What a run's soup did, beside its best epoch alone, in one line (`metrics.soup.summary`: the CLI and the
    Training page show it)."""
    epochs = soup["epochs"]

    def scores(val: float, test: float | None) -> str:
        return f"val {val:.4f}" + (f", test {test:.4f}" if test is not None else "")

    alone = scores(soup["best_epoch_val_macro_f1"], soup.get("best_epoch_test_macro_f1"))
    if len(epochs) == 1:
        tried = ", ".join(str(c["epoch"]) for c in soup["candidates"])
        return (
            f"weights: the best epoch's ({epochs[0]}: {alone}, argmax); no soup with epoch(s) {tried} scored as "
            "well on val"
        )
    return (
        f"weights: greedy soup of epochs {', '.join(map(str, epochs))} "
        f"({scores(soup['val_macro_f1'], soup.get('test_macro_f1'))}, argmax); best epoch {soup['best_epoch']} "
        f"alone: {alone}"
    )
