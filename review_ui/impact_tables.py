"""The impact report's tables as the Impact page shows them: numbers as text, so that the ± and the CI read as
written, and a class no test text holds said to be unmeasured; and the estimate of a report before it starts."""

from __future__ import annotations

from typing import Any

import pandas as pd

from review_ui.render import duration, plain, quantity

LONG_SECONDS = 3600  # a report longer than this on one worker gets a warning that suggests a budget per run


def estimate_headline(estimate: dict[str, Any]) -> str:
    """The estimate's headline (markdown): the time per run and for every run on one worker, the runs and arms."""
    arms, seeds = len(estimate["arms"]), len(estimate["seeds"])
    members = estimate["classical_runs"]
    return (
        f"Estimated time: about **{duration(estimate['seconds_per_run'])}** per run, "
        f"**{duration(estimate['seconds_total'])}** for {quantity(estimate['transformer_runs'], 'run')} "
        f"({quantity(arms, 'arm')} × {quantity(seeds, 'seed')}) on one worker"
        + (f", then {quantity(members, 'TF-IDF member')} (seconds each)" if members else "")
    )


def estimate_details(estimate: dict[str, Any]) -> str:
    """The estimate's caption (plain text): each arm's texts per epoch and time per run, the rate and its basis."""

    def arm_line(a: dict[str, Any]) -> str:
        texts, epochs = f"{a['train_examples']:,}", f"{a['epochs']:g}"
        return (
            f"{a['arm']}: {quantity(texts, 'text')} per epoch × {quantity(epochs, 'epoch')}, "
            f"{duration(a['seconds_per_run'])} per run"
        )

    arms = "; ".join(arm_line(a) for a in estimate["arms"])
    return plain(
        f"{arms}. About {estimate['samples_per_second']:.1f} texts/s ({estimate['tokens_per_text']:.0f} tokens per "
        f"text). Basis: {estimate['basis']}; {estimate['note']}."
    )


def ci_text(entry: dict[str, Any]) -> str:
    if entry.get("delta") is None:
        return "—"
    low, high = entry["ci"]
    return f"{entry['delta'] * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}]"


NO_TEST_TEXT = "no test text"  # a class the test split lacks: its F1 and Δ say nothing of augmentation


def f1_text(entry: dict[str, Any]) -> str:
    """F1 ×100, with its sd over seeds where two or more measured one ("81.5 ± 0.0" read as a spread measured)."""
    sd = entry.get("sd")
    spread = sd is not None and len(entry.get("per_seed") or []) > 1
    return f"{entry['mean'] * 100:.1f}" + (f" ± {sd * 100:.1f}" if spread else "")


def table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per arm × task × class; numbers as text so that the ± and the CI read as written."""
    return pd.DataFrame(
        [
            {
                "task": row["task"],
                "class": row["class"],
                "test texts": row.get("support"),
                "arm": row["arm"],
                "F1 (mean ± sd)": NO_TEST_TEXT if row.get("support") == 0 else f1_text(row),
                "Δ vs originals [95% CI]": NO_TEST_TEXT if row.get("support") == 0 else ci_text(row),
            }
            for row in result.get("rows", [])
        ]
    )


def contributions(result: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "task": task,
                "class": name,
                "method": method,
                "all approved − without [95% CI]": NO_TEST_TEXT
                if (info.get("support") or {}).get(name) == 0
                else ci_text(entry),
            }
            for task, info in result.get("tasks", {}).items()
            for name, methods in (info.get("contributions") or {}).items()
            for method, entry in methods.items()
        ]
    )
