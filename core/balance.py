"""How a task's class imbalance reads, in the CLI's tables and on the Datasets page alike."""

from __future__ import annotations

from typing import Any


def imbalance_shown(info: dict[str, Any]) -> str | None:
    """A task's imbalance (largest / smallest train class, originals) from its class balance
    (services.datasets.class_balance, or the API's JSON of it): `12.3×`; `∞` when some class has no train text
    at all while another has (the ratio is infinite, and JSON has no infinity); None when there is no ratio to
    show (no class has train text)."""
    ratio = info.get("imbalance_ratio")
    if ratio:
        return f"{ratio:.1f}×"
    counts = [e["train_with_approved"] for e in info["labels"].values()]
    return "∞" if any(counts) and not all(counts) else None
