"""How a task's class imbalance reads, in the CLI's tables and on the Datasets page alike."""

from __future__ import annotations

from typing import Any


def imbalance_shown(info: dict[str, Any], *, with_approved: bool = False) -> str | None:
    """A task's imbalance (largest / smallest train class) from its class balance (services.datasets.
    class_balance, or the API's JSON of it), of the train originals, or `with_approved` of the originals and the
    approved texts: `12.3×`; `∞` when some class has no such text at all while another has (the ratio is
    infinite, and JSON has no infinity); None when there is no ratio to show (no class has such text)."""
    ratio = info.get("imbalance_ratio_with_approved" if with_approved else "imbalance_ratio")
    if ratio:
        return f"{ratio:.1f}×"
    key = "train_with_approved" if with_approved else "train_original"
    counts = [e.get(key, 0) for e in info["labels"].values()]
    return "∞" if any(counts) and not all(counts) else None


def imbalance_change(info: dict[str, Any]) -> float | None:
    """How much the approved texts moved a task's imbalance, as the two ratios read (`imbalance_shown`, one
    decimal each): 2.4× → 1.7× is -0.7, which the unrounded ratios (2.44 → 1.69) made -0.8. None when either ratio
    is not a number (none, or ∞) or the shown ratios are the same."""
    before, after = info.get("imbalance_ratio"), info.get("imbalance_ratio_with_approved")
    if not before or not after:
        return None
    change = round(round(after, 1) - round(before, 1), 1)
    return change or None
