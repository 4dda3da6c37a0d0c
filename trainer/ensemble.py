"""Ensembles: members' probabilities combined per task by weights fitted on val, temperature-scaled, and read
through a decision rule fitted on val.

Members are combined from the val/test probabilities each run saved, aligned by sample id, so building an
ensemble needs no model in memory, and any run that saved them can join: transformer seeds, other encoders, the
TF-IDF member (trainer/classical.py). With `weighted`, per task:

1. each member is temperature-scaled on val, so that members compare on calibrated probabilities (a
   class-balanced logistic regression and a focal-loss transformer are confident in different ways);
2. members of one group (the seeds of one configuration) share their group's weight equally, and the groups'
   weights are those minimising the mixture's val negative log-likelihood on the simplex: a few numbers, fitted
   on smooth NLL rather than on a jagged val F1, so a weak member's weight goes to ~0 instead of being assumed;
3. the mixture gets one more temperature (step 1 and 2 do not make it calibrated by themselves);
4. the decision rule (trainer/decision.py) is fitted on the mixture's val probabilities.

Unweighted, every member counts the same and only steps 3 and 4 apply. Temperature scaling divides
log-probabilities by T and renormalises: it leaves every argmax unchanged and only calibrates confidence, which
the weights, the pseudo-label threshold and the label-consistency scores rely on.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from trainer.decision import decide, fit_rules
from trainer.errors import TrainerError
from trainer.examples import IGNORE, TaskSpec
from trainer.metrics import evaluate_probs, prediction_dump

_EPS = 1e-12


def check_same_tasks(task_lists: list[list[TaskSpec]]) -> None:
    """The members predict the same tasks, each with its labels in the same order (probabilities are columns by
    label); the tasks' own order does not matter: everything downstream reads them by name."""
    first = sorted((t.name, list(t.labels)) for t in task_lists[0])
    for other in task_lists[1:]:
        if sorted((t.name, list(t.labels)) for t in other) != first:
            raise TrainerError("ensemble members must have the same tasks and label sets", field="run_ids")


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    calibrated: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return calibrated


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
    for lo, hi in itertools.pairwise(edges):
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


def aligned_dumps(dumps: list[dict[str, Any]]) -> tuple[list[int], list[dict[str, np.ndarray]], np.ndarray]:
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
                t: np.asarray(d["tasks"][t]["probs"], dtype=np.float64).reshape(-1, len(d["tasks"][t]["labels"]))[rows]
                for t in tasks
            }
        )
    first_pos = {sid: k for k, sid in enumerate(dumps[0]["sample_ids"])}
    gold = np.array([[dumps[0]["tasks"][t]["gold"][first_pos[i]] for t in tasks] for i in ids], dtype=np.int64).reshape(
        len(ids), len(tasks)
    )
    return ids, member_probs, gold


def fit_group_weights(group_probs: list[np.ndarray], gold: np.ndarray) -> np.ndarray:
    """Weights on the simplex minimising val NLL of Σ w_g p_g (convex in w); equal when nothing is labelled."""
    n_groups = len(group_probs)
    keep = gold != IGNORE
    if n_groups == 1 or not keep.any():
        return np.full(n_groups, 1.0 / n_groups)
    picked = np.stack([p[keep, gold[keep]] for p in group_probs], axis=1)  # (n, groups): p_g(gold)

    def loss(z: np.ndarray) -> tuple[float, np.ndarray]:
        w = np.exp(z - z.max())
        w /= w.sum()
        mix = np.clip(picked @ w, _EPS, None)
        grad_w = -(picked / mix[:, None]).mean(axis=0)
        return float(-np.log(mix).mean()), w * (grad_w - w @ grad_w)  # chain rule through the softmax

    result = minimize(loss, np.zeros(n_groups), jac=True, method="L-BFGS-B")
    w = np.exp(result.x - result.x.max())
    weights: np.ndarray = w / w.sum()
    return weights


def combine(member_probs: list[dict[str, np.ndarray]], params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Apply fitted ensemble parameters to members' probabilities (the same order as `params["members"]`):
    member temperatures, per-task member weights, the mixture's temperature. Shared with the predictor."""
    out = {}
    for task in member_probs[0]:
        # ensembles saved before per-task weights hold one weight per member for every task
        weights = (params.get("task_weights") or {}).get(task) or params["weights"]
        temps = params.get("member_temperatures") or {}
        mix = np.sum(
            [
                float(weights[m]) * apply_temperature(probs[task], float((temps.get(m) or {}).get(task, 1.0)))
                for m, probs in zip(params["members"], member_probs, strict=True)
            ],
            axis=0,
        )
        out[task] = apply_temperature(mix, float(params["temperatures"].get(task, 1.0)))
    return out


def fit_ensemble(
    member_probs: list[dict[str, np.ndarray]],
    gold: np.ndarray,
    tasks: list[TaskSpec],
    members: list[str],
    groups: list[str],
    *,
    weighted: bool,
    temperature: bool,
    decision: str,
) -> dict[str, Any]:
    """The ensemble's parameters, fitted on val (see the module's docstring)."""
    params: dict[str, Any] = {
        "members": members,
        "task_weights": {},
        "member_temperatures": {m: {} for m in members},
        "temperatures": {},
    }
    group_names = list(dict.fromkeys(groups))
    for j, t in enumerate(tasks):
        y = gold[:, j]
        if weighted:
            for m, probs in zip(members, member_probs, strict=True):
                params["member_temperatures"][m][t.name] = fit_temperature(probs[t.name], y) if temperature else 1.0
            scaled = [
                apply_temperature(p[t.name], params["member_temperatures"][m][t.name])
                for m, p in zip(members, member_probs, strict=True)
            ]
            group_means = [
                np.mean([s for s, g in zip(scaled, groups, strict=True) if g == name], axis=0) for name in group_names
            ]
            group_w = dict(zip(group_names, fit_group_weights(group_means, y), strict=True))
            size = {name: groups.count(name) for name in group_names}
            params["task_weights"][t.name] = {
                m: float(group_w[g] / size[g]) for m, g in zip(members, groups, strict=True)
            }
        else:
            params["task_weights"][t.name] = {m: 1.0 / len(members) for m in members}
        params["temperatures"][t.name] = 1.0
    mixed = combine(member_probs, params)
    if temperature:
        params["temperatures"] = {t.name: fit_temperature(mixed[t.name], gold[:, j]) for j, t in enumerate(tasks)}
    params["decision"] = fit_rules(combine(member_probs, params), gold, tasks, decision)
    return params


def build_ensemble(
    members: list[dict[str, Any]], *, weighted: bool, temperature: bool, decision: str = "prior"
) -> dict[str, Any]:
    """`members`: [{"id", "group" (optional; seeds of one configuration share one), "predictions": {"val": dump,
    "test": dump}}, ...] (finished runs). Returns the fitted parameters, val/test metrics (test with the decision
    rule), calibration before/after temperature, and the ensemble's prediction dumps."""
    if len(members) < 2:
        raise TrainerError("an ensemble needs at least two runs", field="run_ids")
    task_lists = [
        [TaskSpec(name, list(v["labels"])) for name, v in m["predictions"]["val"]["tasks"].items()] for m in members
    ]
    check_same_tasks(task_lists)
    for m in members:  # a diverged run's NaN would spoil every row of the mix, whatever its weight
        for split in ("val", "test"):
            for t, entry in m["predictions"][split]["tasks"].items():
                if not np.isfinite(np.asarray(entry["probs"], dtype=np.float64)).all():
                    raise TrainerError(
                        f"run {m['id']}'s {split} probabilities for task {t!r} are not finite numbers (a run that "
                        "diverged): leave it out of the ensemble",
                        field="run_ids",
                    )
    tasks = task_lists[0]
    names = [str(m["id"]) for m in members]
    groups = [str(m.get("group") or m["id"]) for m in members]
    val_ids, val_probs, val_gold = aligned_dumps([m["predictions"]["val"] for m in members])
    if not val_ids:
        raise TrainerError("the runs share no val samples (trained on different datasets?)", field="run_ids")
    params = fit_ensemble(
        val_probs, val_gold, tasks, names, groups, weighted=weighted, temperature=temperature, decision=decision
    )
    out: dict[str, Any] = {
        **params,
        "weights": {m: float(np.mean([params["task_weights"][t.name][m] for t in tasks])) for m in names},
        "groups": dict(zip(names, groups, strict=True)),
    }
    predictions: dict[str, Any] = {}
    # Members trained before and after an import added val/test texts are scored on the texts they share only:
    # their own figures count more texts than the ensemble's, which must say so beside them.
    out["texts_scored"] = {}
    calibration: dict[str, dict[str, float | None]] = {t.name: {} for t in tasks}
    unscaled = {**params, "temperatures": {t.name: 1.0 for t in tasks}}
    for split in ("val", "test"):
        dumps = [m["predictions"][split] for m in members]
        if not dumps[0]["sample_ids"]:
            out[split] = None
            continue
        ids, member_probs, gold = (val_ids, val_probs, val_gold) if split == "val" else aligned_dumps(dumps)
        if not ids:
            raise TrainerError(f"the runs share no {split} samples (trained on different datasets?)", field="run_ids")
        out["texts_scored"][split] = {"scored": len(ids), "most_of_a_member": max(len(d["sample_ids"]) for d in dumps)}
        raw, scaled = combine(member_probs, unscaled), combine(member_probs, params)
        for j, t in enumerate(tasks):
            calibration[t.name].update(
                {
                    f"{split}_nll_before": nll(raw[t.name], gold[:, j]),
                    f"{split}_nll_after": nll(scaled[t.name], gold[:, j]),
                    f"{split}_ece_before": ece(raw[t.name], gold[:, j]),
                    f"{split}_ece_after": ece(scaled[t.name], gold[:, j]),
                }
            )
        labels = decide(scaled, params["decision"])
        # val is scored without the rule (the rule was fitted on it); test with it, as the model predicts
        out[split] = evaluate_probs(scaled, gold, tasks, labels if split == "test" else None)
        if split == "test" and params["decision"]:
            out["test_argmax"] = evaluate_probs(scaled, gold, tasks)
        predictions[split] = prediction_dump(ids, tasks, gold, scaled, labels)
    out["calibration"] = calibration
    out["predictions"] = predictions
    return out
