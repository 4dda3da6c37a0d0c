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
