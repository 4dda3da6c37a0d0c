"""The training loop: a plan in optimizer steps (trainer/plan.py), epochs of length-grouped batches,
validation each epoch, early stopping, the decision rule fitted on val, test once.

`train_model` takes the data (already read from the database) and a config, and touches no database: the
callers (the CLI, the `train` job) read the data in a short transaction, then train with none open.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import set_seed

from trainer.config import TrainConfig
from trainer.data import Encoded
from trainer.decision import decide, fit_rules
from trainer.errors import TrainerError
from trainer.examples import SplitData
from trainer.metrics import evaluate_probs
from trainer.model import MultiTaskModel
from trainer.plan import Clock, Plan, replanned_steps
from trainer.steps import Prepared, Stepper, measure_throughput, prepare

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    model: MultiTaskModel
    tokenizer: Any
    config: TrainConfig
    curve: list[dict[str, Any]]
    best_epoch: int
    metrics: dict[str, Any]  # {"val": ..., "test": ...} at the best epoch
    predictions: dict[str, dict[str, Any]]  # split → {"sample_ids", "tasks": {task: {labels, gold, probs}}}
    snapshot: list[list[Any]]
    seconds: float
    stopped_early: bool = False
    plan: Plan | None = None
    decision: dict[str, Any] | None = None  # the decision rule per task (trainer.decision), None: argmax
    extra: dict[str, Any] = field(default_factory=dict)


def prediction_dump(
    encoded: Encoded, probs: dict[str, np.ndarray], data: SplitData, labels: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Per task: label names, gold ids, probabilities, and `pred`, the label ids the model predicts (its
    decision rule's; the argmax without one)."""
    gold = encoded.labels.numpy()
    return {
        "sample_ids": list(encoded.sample_ids),
        "tasks": {
            t.name: {
                "labels": t.labels,
                "gold": gold[:, j].tolist(),
                "probs": np.round(probs[t.name], 6).tolist(),
                "pred": np.asarray(labels[t.name], dtype=np.int64).tolist(),
            }
            for j, t in enumerate(data.tasks)
        },
    }


@dataclass
class LoopOutcome:
    curve: list[dict[str, Any]]
    best_epoch: int
    best_val_macro_f1: float
    best_state: dict[str, torch.Tensor] | None
    steps_done: int
    planned_steps: int
    stopped_early: bool
    stopped_at_deadline: bool
    seconds: float


def run_loop(run: Prepared, plan: Plan, stepper: Stepper, emit: ProgressFn) -> LoopOutcome:
    """Epochs of batches until the plan's steps are made (a budgeted run re-plans them after each epoch),
    validation after each epoch and at the stop, the best epoch's weights kept, early stopping on val."""
    model, data, batches = run.model, run.data, run.batches
    clock = Clock()
    total, steps_done, eval_seconds = plan.steps, 0, 0.0
    deadline = plan.deadline_seconds
    curve: list[dict[str, Any]] = []
    best_f1, best_epoch, best_state, stale = -1.0, 0, None, 0
    stopped_early = at_deadline = False
    epoch = 0
    while steps_done < total and epoch < (plan.epoch_cap if plan.budget_seconds else plan.max_epochs):
        model.train()
        epoch_batches = batches.epoch(epoch)
        t0, cpu0 = time.monotonic(), time.process_time()
        seen, loss_sum, task_sums = 0, 0.0, {t.name: 0.0 for t in data.tasks}
        for b, idx in enumerate(epoch_batches):
            step = (b + 1) % plan.grad_accum == 0 or b + 1 == len(epoch_batches)
            loss, parts = stepper.batch(idx, step=step)
            seen += len(idx)
            loss_sum += loss * len(idx)
            for name, value in parts.items():
                task_sums[name] += value * len(idx)
            emit({"event": "batch", "epoch": epoch + 1, "batch": b + 1, "batches": len(epoch_batches),
                  "loss": loss})
            if step:
                steps_done += 1
                if deadline is not None and clock.elapsed() > deadline:
                    at_deadline = True
                    break
                if steps_done >= total:
                    break
        train_seconds = time.monotonic() - t0
        # CPU time of this process: on a shared machine, less sensitive than wall time to other jobs' load.
        train_cpu_seconds = time.process_time() - cpu0
        e0 = time.monotonic()
        val_probs = run.predict(run.val)
        eval_seconds += time.monotonic() - e0
        val_metrics = evaluate_probs(val_probs, run.val.labels.numpy(), data.tasks)
        val_f1 = val_metrics["overall_macro_f1"] or 0.0
        epoch += 1
        entry = {
            "epoch": epoch,
            "train_loss": loss_sum / max(seen, 1),
            "task_loss": {k: v / max(seen, 1) for k, v in task_sums.items()},
            "val_macro_f1": val_f1,
            "val_task_macro_f1": {k: m["macro_f1"] for k, m in val_metrics["tasks"].items()},
            "lr": max(stepper.scheduler.get_last_lr()),
            "steps": steps_done,
            "train_samples": seen,
            "train_seconds": round(train_seconds, 3),
            "train_cpu_seconds": round(train_cpu_seconds, 3),
            "samples_per_s": round(seen / train_seconds, 3) if train_seconds > 0 else None,
        }
        if val_f1 > best_f1 + 1e-9:
            best_f1, best_epoch, stale = val_f1, epoch, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            stale += 1
        if plan.budget_seconds is not None and not at_deadline and steps_done < total:
            replanned = replanned_steps(
                plan, steps_done=steps_done, epochs_done=epoch, seconds_used=clock.elapsed(),
                eval_seconds=eval_seconds,
            )
            if replanned != total:
                total = replanned
                if total > steps_done:
                    stepper.retarget(total, steps_done)
        entry["planned_steps"] = total
        curve.append(entry)
        emit({"event": "epoch", **entry, "best_epoch": best_epoch, "best_val_macro_f1": best_f1})
        if at_deadline:
            break
        if plan.patience and stale >= plan.patience and steps_done < total:
            stopped_early = True
            break
    return LoopOutcome(curve, best_epoch, best_f1, best_state, steps_done, total, stopped_early, at_deadline,
                       clock.elapsed())


def train_model(config: TrainConfig, data: SplitData, *, progress: ProgressFn | None = None) -> TrainResult:
    """Plan (measuring the throughput when there is a budget), train on data.train, select the epoch by mean
    val macro-F1, fit the decision rule on val, evaluate on data.test once."""
    started = time.monotonic()
    unknown = sorted(set(config.task_weights) - {t.name for t in data.tasks})
    if unknown:
        raise TrainerError(
            f"config.task_weights names unknown task(s) {unknown}", field="config.task_weights"
        )
    run = prepare(config, data)
    throughput = measure_throughput(run) if config.budget_minutes is not None else None
    plan = run.plan(throughput)
    set_seed(config.seed)  # the measurement drew dropout masks: start from the same state as an unmeasured run
    stepper = Stepper.build(run, plan)
    emit = progress or (lambda _event: None)
    emit(
        {
            "event": "start",
            "epochs": plan.max_epochs,
            "steps": plan.steps,
            "plan": plan.to_dict(),
            "train_samples": len(run.train),
            "val_samples": len(run.val),
            "test_samples": len(run.test),
            "device": str(run.device),
            "threads": run.threads,
            "amp": str(run.dtype),
        }
    )
    loop = run_loop(run, plan, stepper, emit)
    if loop.best_state is not None:
        run.model.load_state_dict(loop.best_state)
    val_probs, test_probs = run.predict(run.val), run.predict(run.test)
    tasks = run.data.tasks
    val_gold, test_gold = run.val.labels.numpy(), run.test.labels.numpy()
    rules = fit_rules(val_probs, val_gold, tasks, config.decision)
    test_labels = decide(test_probs, rules)
    metrics: dict[str, Any] = {
        "val": evaluate_probs(val_probs, val_gold, tasks),
        "test": evaluate_probs(test_probs, test_gold, tasks, test_labels) if len(run.test) else None,
        "test_argmax": evaluate_probs(test_probs, test_gold, tasks) if len(run.test) and rules else None,
        "decision": rules,
        "plan": {**plan.to_dict(), "steps_done": loop.steps_done, "planned_steps_final": loop.planned_steps,
                 "training_seconds": round(loop.seconds, 1)},
        "best_epoch": loop.best_epoch,
        "epochs_run": len(loop.curve),
        "stopped_early": loop.stopped_early,
        "stopped_at_deadline": loop.stopped_at_deadline,
        "train_samples": len(run.train),
        "device": str(run.device),
        "amp": str(run.dtype) if run.dtype else None,
        "threads": run.threads,
    }
    result = TrainResult(
        model=run.model,
        tokenizer=run.tokenizer,
        config=config,
        curve=loop.curve,
        best_epoch=loop.best_epoch,
        metrics=metrics,
        predictions={
            "val": prediction_dump(run.val, val_probs, run.data, decide(val_probs, rules)),
            "test": prediction_dump(run.test, test_probs, run.data, test_labels),
        },
        snapshot=run.data.snapshot(),
        seconds=time.monotonic() - started,
        stopped_early=loop.stopped_early,
        plan=plan,
        decision=rules,
    )
    metrics["seconds"] = round(result.seconds, 2)
    emit({"event": "done", "metrics": metrics})
    return result


def save_artifacts(result: TrainResult, out_dir: Path) -> Path:
    """model/ (encoder, heads, tokenizer), config.yaml, metrics.json (+ curve), predictions, snapshot."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.model.save(out_dir / "model", result.tokenizer, result.config.max_length)
    result.config.save(out_dir / "config.yaml")
    (out_dir / "metrics.json").write_text(
        json.dumps({**result.metrics, "curve": result.curve}, indent=2), encoding="utf-8"
    )
    for split, dump in result.predictions.items():
        (out_dir / f"predictions_{split}.json").write_text(json.dumps(dump), encoding="utf-8")
    (out_dir / "snapshot.json").write_text(json.dumps(result.snapshot), encoding="utf-8")
    (out_dir / "model" / "decision.json").write_text(json.dumps(result.decision), encoding="utf-8")
    return out_dir
