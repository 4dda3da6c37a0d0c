"""Ensembles: average the members' probabilities per task (optionally weighted by val macro-F1), then fit one
temperature per task on val.

Members are combined from the val/test probabilities each run saved, aligned by sample id, so building an
ensemble needs no model in memory. Temperature scaling divides log-probabilities by T and renormalises: it
leaves every argmax (hence F1) unchanged and only calibrates confidence, which the pseudo-label threshold and
the label-consistency scores rely on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from trainer.errors import TrainerError
from trainer.examples import IGNORE, TaskSpec
from trainer.metrics import evaluate_probs

_EPS = 1e-12


def check_same_tasks(task_lists: list[list[TaskSpec]]) -> None:
    first = [(t.name, list(t.labels)) for t in task_lists[0]]
    for other in task_lists[1:]:
        if [(t.name, list(t.labels)) for t in other] != first:
            raise TrainerError(
                "ensemble members must have the same tasks and label sets", field="run_ids"
            )


def average_probs(
    outputs: list[dict[str, np.ndarray]], weights: list[float] | None = None
) -> dict[str, np.ndarray]:
    w = np.asarray(weights if weights is not None else [1.0] * len(outputs), dtype=np.float64)
    if len(w) != len(outputs) or (w < 0).any() or w.sum() <= 0:
        raise TrainerError("ensemble weights must be ≥ 0, one per member, not all 0", field="weights")
    w = w / w.sum()
    return {
        task: sum(wk * np.asarray(out[task], dtype=np.float64) for wk, out in zip(w, outputs, strict=True))
        for task in outputs[0]
    }


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, gold: np.ndarray) -> float | None:
    keep = gold != IGNORE
    if not keep.any():
        return None
    return float(-np.log(np.clip(probs[keep, gold[keep]], _EPS, 1.0)).mean())


def ece(probs: np.ndarray, gold: np.ndarray, bins: int = 15) -> float | None:
    """Expected calibration error of the top-class confidence."""
    keep = gold != IGNORE
    if not keep.any():
        return None
    p, y = probs[keep], gold[keep]
    conf, correct = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs(conf[inside].mean() - correct[inside].mean())
    return float(total)


def fit_temperature(probs: np.ndarray, gold: np.ndarray) -> float:
    """The T in [0.05, 20] minimising val NLL of softmax(log p / T); 1.0 when there is nothing to fit on."""
    keep = gold != IGNORE
    if not keep.any():
        return 1.0
    p, y = probs[keep], gold[keep]
    result = minimize_scalar(
        lambda log_t: nll(apply_temperature(p, float(np.exp(log_t))), y),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))


def member_weights(val_f1: list[float | None], weighted: bool) -> list[float]:
    if not weighted:
        return [1.0] * len(val_f1)
    return [max(float(f or 0.0), 1e-6) for f in val_f1]


def _aligned(dumps: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, np.ndarray]], np.ndarray]:
    """The samples every member predicted (first member's order), each member's probs, the gold labels."""
    common = set(dumps[0]["sample_ids"])
    for d in dumps[1:]:
        common &= set(d["sample_ids"])
    ids = [i for i in dumps[0]["sample_ids"] if i in common]
    tasks = list(dumps[0]["tasks"])
    member_probs = []
    for d in dumps:
        pos = {sid: k for k, sid in enumerate(d["sample_ids"])}
        rows = [pos[i] for i in ids]
        member_probs.append(
            {
                t: np.asarray(d["tasks"][t]["probs"], dtype=np.float64).reshape(
                    -1, len(d["tasks"][t]["labels"])
                )[rows]
                for t in tasks
            }
        )
    first_pos = {sid: k for k, sid in enumerate(dumps[0]["sample_ids"])}
    gold = np.array(
        [[dumps[0]["tasks"][t]["gold"][first_pos[i]] for t in tasks] for i in ids], dtype=np.int64
    ).reshape(len(ids), len(tasks))
    return ids, member_probs, gold


def build_ensemble(members: list[dict[str, Any]], *, weighted: bool, temperature: bool) -> dict[str, Any]:
    """`members`: [{"id", "val_macro_f1", "predictions": {"val": dump, "test": dump}}, ...] (finished)."""
    if len(members) < 2:
        raise TrainerError("an ensemble needs at least two runs", field="run_ids")
    task_lists = [
        [TaskSpec(name, list(v["labels"])) for name, v in m["predictions"]["val"]["tasks"].items()]
        for m in members
    ]
    check_same_tasks(task_lists)
    tasks = task_lists[0]
    weights = member_weights([m.get("val_macro_f1") for m in members], weighted)
    out: dict[str, Any] = {
        "weights": {str(m["id"]): w / sum(weights) for m, w in zip(members, weights, strict=True)}
    }
    predictions: dict[str, Any] = {}
    temperatures = {t.name: 1.0 for t in tasks}
    calibration: dict[str, dict[str, float | None]] = {t.name: {} for t in tasks}
    for split in ("val", "test"):
        dumps = [m["predictions"][split] for m in members]
        if not dumps[0]["sample_ids"]:
            out[split] = None
            continue
        ids, member_probs, gold = _aligned(dumps)
        if not ids:
            raise TrainerError(
                f"the runs share no {split} samples (trained on different datasets?)", field="run_ids"
            )
        mean = average_probs(member_probs, weights)
        if split == "val" and temperature:
            temperatures = {t.name: fit_temperature(mean[t.name], gold[:, j]) for j, t in enumerate(tasks)}
        scaled = {t.name: apply_temperature(mean[t.name], temperatures[t.name]) for t in tasks}
        for j, t in enumerate(tasks):
            calibration[t.name].update(
                {
                    f"{split}_nll_before": nll(mean[t.name], gold[:, j]),
                    f"{split}_nll_after": nll(scaled[t.name], gold[:, j]),
                    f"{split}_ece_before": ece(mean[t.name], gold[:, j]),
                    f"{split}_ece_after": ece(scaled[t.name], gold[:, j]),
                }
            )
        out[split] = evaluate_probs(scaled, gold, tasks)
        predictions[split] = {
            "sample_ids": ids,
            "tasks": {
                t.name: {
                    "labels": t.labels,
                    "gold": gold[:, j].tolist(),
                    "probs": np.round(scaled[t.name], 6).tolist(),
                }
                for j, t in enumerate(tasks)
            },
        }
    out["temperatures"] = temperatures
    out["calibration"] = calibration
    out["predictions"] = predictions
    return out
