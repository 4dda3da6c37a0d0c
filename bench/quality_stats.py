"""Statistics and outputs of the quality study (bench/quality_loop.py): fast macro-F1, the paired bootstrap
over test examples, per-arm summaries, the result records and the per-class chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TASKS = ["bias", "message"]


def macro_f1(gold: np.ndarray, pred: np.ndarray, k: int) -> float:
    """trainer.metrics' macro-F1 (over classes in gold or predictions), vectorised for the bootstrap."""
    cm = np.bincount(gold * k + pred, minlength=k * k).reshape(k, k)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    present = (support + predicted) > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(k), where=present)
    return float(f1[present].mean())


Preds = dict[str, np.ndarray]  # task → predicted class per test example


def overall(preds: Preds, gold: Preds, sizes: dict[str, int], idx: Any) -> float:
    return float(np.mean([macro_f1(gold[t][idx], preds[t][idx], sizes[t]) for t in TASKS]))


def aligned_preds(dump: dict[str, Any], ids: list[int]) -> dict[str, np.ndarray]:
    pos = {sid: k for k, sid in enumerate(dump["sample_ids"])}
    rows = [pos[i] for i in ids]
    return {t: np.asarray(dump["tasks"][t]["probs"]).reshape(len(pos), -1)[rows].argmax(1) for t in TASKS}


def paired_bootstrap(a: list[Preds], b: list[Preds], gold: Preds,
                     sizes: dict[str, int], n_boot: int) -> dict[str, float]:
    """Delta (a − b) in points of overall macro-F1; each arm is the mean over its members (seeds)."""
    n = len(gold[TASKS[0]])

    def delta(idx: Any) -> float:
        return 100 * (np.mean([overall(p, gold, sizes, idx) for p in a])
                      - np.mean([overall(p, gold, sizes, idx) for p in b]))

    rng = np.random.default_rng(0)
    boots = np.array([delta(rng.integers(0, n, n)) for _ in range(n_boot)])
    return {"delta": round(delta(slice(None)), 2), "ci95_low": round(float(np.percentile(boots, 2.5)), 2),
            "ci95_high": round(float(np.percentile(boots, 97.5)), 2),
            "p_le_0": round(float((boots <= 0).mean()), 4)}


def summarize(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sd over seeds of overall and per-task macro-F1, and mean per-class F1."""
    def ms(values: list[float]) -> dict[str, float]:
        return {"mean": round(100 * float(np.mean(values)), 2),
                "sd": round(100 * float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, 2)}

    out: dict[str, Any] = {"overall": ms([m["overall_macro_f1"] for m in metrics]), "tasks": {},
                           "per_class": {}}
    for t in TASKS:
        out["tasks"][t] = ms([m["tasks"][t]["macro_f1"] for m in metrics])
        out["per_class"][t] = {
            c: round(100 * float(np.mean([m["tasks"][t]["per_class"][c]["f1"] for m in metrics])), 2)
            for c in metrics[0]["tasks"][t]["per_class"]
        }
    return out


def aligned_gold(dump: dict[str, Any], ids: list[int], task: str) -> list[int]:
    pos = {sid: k for k, sid in enumerate(dump["sample_ids"])}
    return [dump["tasks"][task]["gold"][pos[i]] for i in ids]


def chart(detail: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = ["tfidf", "plain", "recipe", "augmented", "ensemble"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [2, 9]})
    for ax, task in zip(axes, TASKS, strict=True):
        classes = list(detail["arms"]["plain"]["per_class"][task])
        x, width = np.arange(len(classes)), 0.8 / len(arms)
        for i, arm in enumerate(arms):
            ax.bar(x + (i - len(arms) / 2 + 0.5) * width,
                   [detail["arms"][arm]["per_class"][task][c] for c in classes], width, label=arm)
        ax.set_xticks(x, classes, rotation=30, ha="right")
        ax.set_title(f"{task} (test per-class F1)")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("F1 (points, mean over seeds)")
    axes[1].legend(ncols=5, fontsize=8, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def records(detail: dict[str, Any]) -> list[dict[str, Any]]:
    d, a = detail["deltas"], detail["arms"]
    out = [{"metric": f"{name}_macro_f1", "value": d[name]["delta"], "target": target, "unit": "points"}
           for name, target in (("ensemble_minus_tfidf", 0), ("ensemble_minus_tfidf_full_train", None),
                                ("augmented_minus_recipe", None), ("recipe_minus_plain", None))]
    for arm in ("tfidf", "tfidf_full_train", "plain", "recipe", "augmented", "ensemble"):
        out.append({"metric": f"{arm}_macro_f1", "value": a[arm]["overall"]["mean"], "target": None,
                    "unit": "points"})
        out += [{"metric": f"{arm}_{t}_macro_f1", "value": a[arm]["tasks"][t]["mean"], "target": None,
                 "unit": "points"} for t in TASKS]
    out.append({"metric": "ensemble_minus_plain_macro_f1", "value": d["ensemble_minus_plain"]["delta"],
                "target": 5, "unit": "points"})  # the headline, last
    return out
