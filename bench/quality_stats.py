"""Statistics and outputs of the quality study (bench/quality_loop.py): the paired bootstrap of overall
macro-F1 over test examples (trainer.bootstrap), per-arm summaries, the result records and the per-class chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trainer.bootstrap import paired_bootstrap
from trainer.metrics import f1_per_class

TASKS = ["bias", "message"]


Preds = dict[str, np.ndarray]  # task → predicted class per test example


def overall_scores(gold: np.ndarray, pred: np.ndarray, sizes: list[int], idx: np.ndarray) -> np.ndarray:
    """(draws, 1): overall macro-F1 (the mean of the tasks' macro-F1s) of (n, tasks) predictions per resample."""
    per_task = [f1_per_class(gold[idx, j], pred[idx, j], k)[1] for j, k in enumerate(sizes)]
    return np.mean(per_task, axis=0)[:, None]


def aligned_preds(dump: dict[str, Any], ids: list[int], rule: bool = True) -> dict[str, np.ndarray]:
    """The labels a model predicts for the test examples `ids`: its decision rule's (`pred` in the dump), or
    with `rule=False` the most probable ones."""
    pos = {sid: k for k, sid in enumerate(dump["sample_ids"])}
    rows = [pos[i] for i in ids]
    out = {}
    for t in TASKS:
        entry = dump["tasks"][t]
        if rule and "pred" in entry:
            out[t] = np.asarray(entry["pred"])[rows]
        else:
            out[t] = np.asarray(entry["probs"]).reshape(len(pos), -1)[rows].argmax(1)
    return out


def overall_delta(a: list[Preds], b: list[Preds], gold: Preds, sizes: dict[str, int], n_boot: int) -> dict[str, float]:
    """Delta (a − b) in points of overall macro-F1; each arm is the mean over its members (seeds)."""

    def by_task(p: Preds) -> np.ndarray:
        return np.stack([p[t] for t in TASKS], axis=1)

    boot = paired_bootstrap(
        by_task(gold),
        [by_task(p) for p in a],
        [by_task(p) for p in b],
        [sizes[t] for t in TASKS],
        n_boot,
        score=overall_scores,
    )
    points = {key: 100 * boot[key][0] for key in ("delta", "low", "high")}
    return {
        "delta": round(float(points["delta"]), 2),
        "ci95_low": round(float(points["low"]), 2),
        "ci95_high": round(float(points["high"]), 2),
        "p_le_0": round(float((boot["samples"][:, 0] <= 0).mean()), 4),
    }


def summarize(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sd over seeds of overall and per-task macro-F1, and mean per-class F1."""

    def ms(values: list[float]) -> dict[str, float]:
        return {
            "mean": round(100 * float(np.mean(values)), 2),
            "sd": round(100 * float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 2),
        }

    out: dict[str, Any] = {"overall": ms([m["overall_macro_f1"] for m in metrics]), "tasks": {}, "per_class": {}}
    for t in TASKS:
        out["tasks"][t] = ms([m["tasks"][t]["macro_f1"] for m in metrics])
        out["per_class"][t] = {
            c: round(100 * float(np.mean([m["tasks"][t]["per_class"][c]["f1"] for m in metrics])), 2)
            for c in metrics[0]["tasks"][t]["per_class"]
        }
    return out


def class_floor(arm: dict[str, Any], task: str) -> dict[str, Any]:
    """The arm's weakest class of `task` (mean test F1 in points over the arm's members)."""
    per_class = arm["per_class"][task]
    worst = min(per_class, key=per_class.get)
    return {"task": task, "class": worst, "f1": per_class[worst]}


def aligned_gold(dump: dict[str, Any], ids: list[int], task: str) -> list[int]:
    pos = {sid: k for k, sid in enumerate(dump["sample_ids"])}
    return [dump["tasks"][task]["gold"][pos[i]] for i in ids]


def chart(detail: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = ["tfidf", "plain", "loop_originals", "loop", "loop_seeds", "full_loop_originals", "full_loop"]
    arms = [a for a in candidates if a in detail["arms"]]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [2, 9]})
    for ax, task in zip(axes, TASKS, strict=True):
        classes = list(detail["arms"]["loop"]["per_class"][task])
        x, width = np.arange(len(classes)), 0.8 / len(arms)
        for i, arm in enumerate(arms):
            ax.bar(
                x + (i - len(arms) / 2 + 0.5) * width,
                [detail["arms"][arm]["per_class"][task][c] for c in classes],
                width,
                label=arm,
            )
        ax.set_xticks(x, classes, rotation=30, ha="right")
        ax.set_title(f"{task} (test per-class F1)")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("F1 (points, mean over seeds)")
    axes[1].legend(ncols=len(arms), fontsize=8, loc="upper right")
    axes[1].axhline(25, color="grey", lw=0.8, ls="--")  # the target floor for every message class
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


HEADLINES = {  # delta → target, printed and recorded last (the study's, or its ablation's)
    "loop_minus_loop_originals": 3,  # issue 15: what the approved variants add to the recipe
    "full_loop_minus_plain": 8,  # issue 16
    "full_loop_minus_tfidf": 3,  # issue 16
}


def records(detail: dict[str, Any]) -> list[dict[str, Any]]:
    d, a = detail["deltas"], detail["arms"]
    out = [
        {"metric": f"{name}_macro_f1", "value": d[name]["delta"], "target": None, "unit": "points"}
        for name in d
        if name not in HEADLINES
    ]
    for arm in a:
        out.append({"metric": f"{arm}_macro_f1", "value": a[arm]["overall"]["mean"], "target": None, "unit": "points"})
        out += [
            {"metric": f"{arm}_{t}_macro_f1", "value": a[arm]["tasks"][t]["mean"], "target": None, "unit": "points"}
            for t in TASKS
        ]
    floor = detail["message_class_floor"]
    out.append(
        {
            "metric": "full_loop_min_message_class_f1",
            "value": floor["f1"],
            "target": 25,
            "unit": "points",
            "class": floor["class"],
        }
    )
    study = "plain" in a  # the whole study has a time target; its ablation alone does not
    minutes = round(detail["seconds"] / 60, 1)
    out.append({"metric": "minutes", "value": minutes, "target": 90 if study else None, "unit": "min"})
    out += [  # the headlines, last
        {"metric": f"{name}_macro_f1", "value": d[name]["delta"], "target": target, "unit": "points"}
        for name, target in HEADLINES.items()
        if name in d
    ]
    return out
