"""The training loop: epochs of length-grouped batches, validation each epoch, early stopping, test once.

`train_model` takes the data (already read from the database) and a config, and touches no database: the
callers (the CLI, the `train` job) read the data in a short transaction, then train with none open.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import set_seed

from trainer.config import TrainConfig
from trainer.data import Encoded, TrainBatches, encode, pad_batch, subsample
from trainer.examples import SplitData
from trainer.losses import MultiTaskLoss, inverse_frequency_weights, smoothing_vector
from trainer.metrics import evaluate_probs
from trainer.model import MultiTaskModel, build_model
from trainer.optim import build_optimizer, warmup_linear_schedule
from trainer.predict import amp_dtype, autocast, available_cpus, predict_encoded, resolve_device

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
    extra: dict[str, Any] = field(default_factory=dict)


def set_cpu_threads(config: TrainConfig, device: torch.device) -> int:
    """On CPU, intra-op threads = the cores this process may use (or the configured number): more threads
    than cores only adds contention, and torch's default ignores CPU affinity limits (containers)."""
    if device.type != "cpu":
        return torch.get_num_threads()
    threads = config.num_threads or available_cpus()
    torch.set_num_threads(threads)
    return threads


def prediction_dump(encoded: Encoded, probs: dict[str, np.ndarray], data: SplitData) -> dict[str, Any]:
    gold = encoded.labels.numpy()
    return {
        "sample_ids": list(encoded.sample_ids),
        "tasks": {
            t.name: {
                "labels": t.labels,
                "gold": gold[:, j].tolist(),
                "probs": np.round(probs[t.name], 6).tolist(),
            }
            for j, t in enumerate(data.tasks)
        },
    }


def build_loss(config: TrainConfig, data: SplitData, train: Encoded) -> MultiTaskLoss:
    smoothing = {
        t.name: smoothing_vector(t, config.label_smoothing, config.class_label_smoothing.get(t.name))
        for t in data.tasks
    }
    weights = (
        {
            t.name: inverse_frequency_weights(train.labels[:, j], len(t.labels))
            for j, t in enumerate(data.tasks)
        }
        if config.class_weights
        else None
    )
    return MultiTaskLoss(
        data.tasks,
        gamma=config.focal_gamma,
        smoothing=smoothing,
        class_weights=weights,
        task_weights=config.task_weights,
        rdrop_alpha=config.rdrop_alpha,
    )


@dataclass
class Stepper:
    """One training batch at a time: forward (both R-Drop passes), loss, backward; every `grad_accum`
    batches, clipping, an optimizer step and a scheduler step. Shared by the loop and the benchmark."""

    model: MultiTaskModel
    loss_fn: MultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Any
    config: TrainConfig
    encoded: Encoded
    pad_id: int
    device: torch.device
    dtype: torch.dtype | None

    @classmethod
    def build(
        cls,
        config: TrainConfig,
        model: MultiTaskModel,
        data: SplitData,
        train: Encoded,
        batches: TrainBatches,
        pad_id: int,
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> Stepper:
        loss_fn = build_loss(config, data, train).to(device)
        optimizer = build_optimizer(
            model,
            lr=config.lr,
            head_lr=config.head_lr,
            decay=config.llrd_decay,
            weight_decay=config.weight_decay,
            device=device,
        )
        total_steps = math.ceil(batches.max_batches_per_epoch() / config.grad_accum) * config.epochs
        scheduler = warmup_linear_schedule(optimizer, total_steps, config.warmup_ratio)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        optimizer.zero_grad(set_to_none=True)
        return cls(model, loss_fn, optimizer, scheduler, scaler, config, train, pad_id, device, dtype)

    def batch(self, idx: list[int], *, step: bool) -> tuple[float, dict[str, float]]:
        config, model = self.config, self.model
        fixed_width = None if config.group_by_length else config.max_length
        batch = pad_batch([self.encoded.input_ids[i] for i in idx], self.pad_id, fixed_width)
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        labels = self.encoded.labels[idx].to(self.device)
        with autocast(self.device, self.dtype):
            if config.rdrop_alpha > 0:
                # Two dropout passes as one doubled batch: the same cost, better kernel use.
                both = model(torch.cat([ids, ids]), torch.cat([mask, mask]))
                first = {k: v[: len(idx)] for k, v in both.items()}
                second = {k: v[len(idx) :] for k, v in both.items()}
                loss, parts = self.loss_fn(first, labels, second)
            else:
                loss, parts = self.loss_fn(model(ids, mask), labels)
        scaled = loss / config.grad_accum
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if step:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), parts


@dataclass
class Prepared:
    """A model, its tokenised splits, the epoch batcher and the stepper: everything before the first epoch."""

    data: SplitData
    model: MultiTaskModel
    tokenizer: Any
    pad_id: int
    train: Encoded
    val: Encoded
    test: Encoded
    batches: TrainBatches
    stepper: Stepper
    device: torch.device
    dtype: torch.dtype | None
    threads: int


def prepare(config: TrainConfig, data: SplitData) -> Prepared:
    """Seed, subsample, load the encoder and build the heads, tokenise once, set up the optimiser."""
    device = resolve_device(config.device)
    threads = set_cpu_threads(config, device)
    dtype = amp_dtype(config.amp, device)
    set_seed(config.seed)  # random, numpy, torch (every device)
    data = SplitData(
        data.tasks,
        subsample(data.train, config.max_train_samples, config.seed),
        data.val,
        data.test,
        data.dataset,
    )
    model, tokenizer = build_model(
        config.encoder,
        data.tasks,
        pooling=config.pooling,
        head_layers=config.head_layers,
        head_hidden=config.head_hidden,
        head_dropout=config.head_dropout,
    )
    model.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train = encode(tokenizer, data.train, data.tasks, config.max_length)
    val = encode(tokenizer, data.val, data.tasks, config.max_length)
    test = encode(tokenizer, data.test, data.tasks, config.max_length)
    batches = TrainBatches(
        train,
        data.train,
        batch_size=config.batch_size,
        group_by_length=config.group_by_length,
        seed=config.seed,
        oversample=config.oversample,
        oversample_power=config.oversample_power,
        oversample_max=config.oversample_max,
        curriculum=config.curriculum,
        curriculum_start=config.curriculum_start,
        curriculum_epochs=config.curriculum_epochs,
    )
    stepper = Stepper.build(config, model, data, train, batches, pad_id, device, dtype)
    return Prepared(
        data, model, tokenizer, pad_id, train, val, test, batches, stepper, device, dtype, threads
    )


def train_model(config: TrainConfig, data: SplitData, *, progress: ProgressFn | None = None) -> TrainResult:
    """Train on data.train, select the epoch by mean val macro-F1, evaluate on data.test once."""
    started = time.monotonic()
    unknown = sorted(set(config.task_weights) - {t.name for t in data.tasks})
    if unknown:
        from trainer.errors import TrainerError

        raise TrainerError(
            f"config.task_weights names unknown task(s) {unknown}", field="config.task_weights"
        )
    run = prepare(config, data)
    model, tokenizer, pad_id, stepper = run.model, run.tokenizer, run.pad_id, run.stepper
    train, val, test, batches, data = run.train, run.val, run.test, run.batches, run.data
    device, dtype, threads = run.device, run.dtype, run.threads
    emit = progress or (lambda _event: None)
    emit(
        {
            "event": "start",
            "epochs": config.epochs,
            "train_samples": len(train),
            "val_samples": len(val),
            "test_samples": len(test),
            "device": str(device),
            "threads": threads,
            "amp": str(dtype),
        }
    )

    curve: list[dict[str, Any]] = []
    best_f1, best_epoch, best_state, stale = -1.0, 0, None, 0
    stopped_early = False
    for epoch in range(config.epochs):
        model.train()
        epoch_batches = batches.epoch(epoch)
        t0, cpu0 = time.monotonic(), time.process_time()
        seen, loss_sum, task_sums = 0, 0.0, {t.name: 0.0 for t in data.tasks}
        for b, idx in enumerate(epoch_batches):
            loss, parts = stepper.batch(
                idx, step=(b + 1) % config.grad_accum == 0 or b + 1 == len(epoch_batches)
            )
            seen += len(idx)
            loss_sum += loss * len(idx)
            for name, value in parts.items():
                task_sums[name] += value * len(idx)
            emit(
                {
                    "event": "batch",
                    "epoch": epoch + 1,
                    "batch": b + 1,
                    "batches": len(epoch_batches),
                    "loss": loss,
                }
            )
        train_seconds = time.monotonic() - t0
        # CPU time of this process: on a shared machine, less sensitive than wall time to other jobs' load.
        train_cpu_seconds = time.process_time() - cpu0
        val_probs = predict_encoded(
            model, val, pad_id, batch_size=config.eval_batch_size, device=device, dtype=dtype
        )
        val_metrics = evaluate_probs(val_probs, val.labels.numpy(), data.tasks)
        val_f1 = val_metrics["overall_macro_f1"] or 0.0
        entry = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "task_loss": {k: v / max(seen, 1) for k, v in task_sums.items()},
            "val_macro_f1": val_f1,
            "val_task_macro_f1": {k: m["macro_f1"] for k, m in val_metrics["tasks"].items()},
            "lr": max(stepper.scheduler.get_last_lr()),
            "train_samples": seen,
            "train_seconds": round(train_seconds, 3),
            "train_cpu_seconds": round(train_cpu_seconds, 3),
            "samples_per_s": round(seen / train_seconds, 3) if train_seconds > 0 else None,
        }
        curve.append(entry)
        if val_f1 > best_f1 + 1e-9:
            best_f1, best_epoch, stale = val_f1, epoch + 1, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            stale += 1
        emit({"event": "epoch", **entry, "best_epoch": best_epoch, "best_val_macro_f1": best_f1})
        if config.patience and stale >= config.patience and epoch + 1 < config.epochs:
            stopped_early = True
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    val_probs = predict_encoded(
        model, val, pad_id, batch_size=config.eval_batch_size, device=device, dtype=dtype
    )
    test_probs = predict_encoded(
        model, test, pad_id, batch_size=config.eval_batch_size, device=device, dtype=dtype
    )
    metrics = {
        "val": evaluate_probs(val_probs, val.labels.numpy(), data.tasks),
        "test": evaluate_probs(test_probs, test.labels.numpy(), data.tasks) if len(test) else None,
        "best_epoch": best_epoch,
        "epochs_run": len(curve),
        "stopped_early": stopped_early,
        "train_samples": len(train),
        "device": str(device),
        "amp": str(dtype) if dtype else None,
        "threads": threads,
    }
    result = TrainResult(
        model=model,
        tokenizer=tokenizer,
        config=config,
        curve=curve,
        best_epoch=best_epoch,
        metrics=metrics,
        predictions={
            "val": prediction_dump(val, val_probs, data),
            "test": prediction_dump(test, test_probs, data),
        },
        snapshot=data.snapshot(),
        seconds=time.monotonic() - started,
        stopped_early=stopped_early,
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
    return out_dir
