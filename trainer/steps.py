"""Everything before a run's first optimizer step, and the step itself: the model and its tokenised splits
(`prepare`), the throughput a budget plans with (`measure_throughput`), one batch forward and backward with the
optimizer step every `grad_accum` batches (`Stepper`). The loop that drives them is trainer/train.py."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from transformers import set_seed

from trainer.config import TrainConfig
from trainer.data import Encoded, TrainBatches, encode, pad_batch
from trainer.examples import SplitData, require_classes_in_subsample, require_two_classes, subsample
from trainer.losses import MultiTaskLoss, inverse_frequency_weights, smoothing_vector
from trainer.model import MultiTaskModel, build_model
from trainer.optim import build_optimizer, warmup_linear_schedule
from trainer.plan import FORWARD_SHARE, RECIPE, Plan, Throughput, plan_run
from trainer.predict import (
    amp_dtype,
    autocast,
    available_cpus,
    encoder_max_length,
    pad_token_id,
    predict_encoded,
    resolve_device,
)

CALIBRATION_BATCHES = 8  # batches timed (after one untimed) to measure the throughput a budget plans with


def set_cpu_threads(config: TrainConfig, device: torch.device) -> int:
    """On CPU, intra-op threads = the cores this process may use (or the configured number): more threads
    than cores only adds contention, and torch's default ignores CPU affinity limits (containers)."""
    if device.type != "cpu":
        return torch.get_num_threads()
    threads = config.num_threads or available_cpus()
    torch.set_num_threads(threads)
    return threads


def build_loss(
    config: TrainConfig, data: SplitData, train: Encoded, rdrop_alpha: float, counted: list[int] | None = None
) -> MultiTaskLoss:
    """`counted`: the rows class weights count (TrainBatches.representatives; None: all)."""
    smoothing = {
        t.name: smoothing_vector(t, config.label_smoothing, config.class_label_smoothing.get(t.name))
        for t in data.tasks
    }
    weights = (
        {
            t.name: inverse_frequency_weights(labels[:, j], len(t.labels))
            for labels in [train.labels if counted is None else train.labels[counted]]
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
        rdrop_alpha=rdrop_alpha,
    )


@dataclass
class Prepared:
    """A model, its tokenised splits and the epoch batcher: everything before the plan and the first step."""

    config: TrainConfig
    data: SplitData
    model: MultiTaskModel
    tokenizer: Any
    pad_id: int
    train: Encoded
    val: Encoded
    test: Encoded
    batches: TrainBatches
    device: torch.device
    dtype: torch.dtype | None
    threads: int
    # why `config` differs from the run's own (a max_length the encoder cannot take): a line of the plan's reasons
    reasons: tuple[str, ...] = ()

    @property
    def encoder_width(self) -> int:
        return int(self.model.encoder.config.hidden_size)

    def plan(self, throughput: Throughput | None = None, config: TrainConfig | None = None) -> Plan:
        """The plan of the single-process run with the same global batch (a DDP run's is that run's)."""
        config = config or self.config
        if config.nproc > 1:
            config = config.model_copy(update={"batch_size": config.global_batch, "nproc": 1})
        plan = plan_run(
            config,
            n_train=self.batches.samples_per_epoch(),
            batches_per_epoch=self.batches.max_batches_per_epoch(),
            encoder_width=self.encoder_width,
            throughput=throughput,
        )
        return replace(plan, reasons=[*self.reasons, *plan.reasons]) if self.reasons else plan

    def predict(self, encoded: Encoded, model: MultiTaskModel | None = None) -> dict[str, np.ndarray]:
        """`model`'s probabilities (the run's model by default; the loop passes its weights' average)."""
        return predict_encoded(
            self.model if model is None else model,
            encoded,
            self.pad_id,
            batch_size=self.config.eval_batch_size,
            device=self.device,
            dtype=self.dtype,
        )


def moving_average(model: MultiTaskModel, decay: float) -> AveragedModel:
    """A copy of `model` whose weights follow the exponential moving average of its weights (updated after each
    optimizer step, `Stepper.batch`). Until `n` updates reach the horizon 1/(1 − decay) the average is the plain
    mean of the weights so far (the n-th update weighs 1/(n + 1)), then the EMA takes over: an early average
    neither drags the first, random head weights along for a whole horizon nor has a shorter one than planned."""

    Tensors = list[torch.Tensor] | tuple[torch.Tensor, ...]

    def ema(averaged: Tensors, current: Tensors, n: torch.Tensor | int) -> None:
        weight = max(1 - decay, 1 / (float(n) + 1))
        torch._foreach_lerp_(averaged, current, weight)

    return AveragedModel(model, multi_avg_fn=ema, use_buffers=False)


@dataclass
class Stepper:
    """One training batch at a time: forward (both R-Drop passes), loss, backward; every `grad_accum`
    batches, clipping, an optimizer step and a scheduler step, then the weights' moving average (when the plan
    keeps one). Shared by the loop and the benchmark."""

    model: Any  # the MultiTaskModel, or its DistributedDataParallel wrapper
    loss_fn: MultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Any
    plan: Plan
    config: TrainConfig
    encoded: Encoded
    pad_id: int
    device: torch.device
    dtype: torch.dtype | None
    average: AveragedModel | None = None  # the weights' moving average (plan.ema_decay > 0)

    @property
    def unwrapped(self) -> MultiTaskModel:
        """The model itself, inside its DistributedDataParallel wrapper where it has one."""
        return cast(MultiTaskModel, getattr(self.model, "module", self.model))

    @property
    def evaluated(self) -> MultiTaskModel:
        """The weights a run validates and keeps: their moving average, or the model's own."""
        return cast(MultiTaskModel, self.average.module) if self.average is not None else self.unwrapped

    @classmethod
    def build(cls, run: Prepared, plan: Plan) -> Stepper:
        """The stepper of `plan`; first the model's heads get the plan's depth (fresh heads, drawn from the seed,
        when it differs from what the model was built with)."""
        config, model = run.config, run.model
        run.model.set_heads(plan.head_layers, config.seed)
        loss_fn = build_loss(config, run.data, run.train, plan.rdrop_alpha, run.batches.representatives()).to(
            run.device
        )
        optimizer = build_optimizer(
            model,
            lr=plan.lr,
            head_lr=plan.head_lr,
            decay=plan.llrd_decay,
            weight_decay=config.weight_decay,
            device=run.device,
        )
        scheduler = warmup_linear_schedule(optimizer, plan.steps, warmup_steps=plan.warmup_steps)
        scaler = torch.amp.GradScaler("cuda") if run.dtype == torch.float16 else None
        optimizer.zero_grad(set_to_none=True)
        return cls(
            model,
            loss_fn,
            optimizer,
            scheduler,
            scaler,
            plan,
            config,
            run.train,
            run.pad_id,
            run.device,
            run.dtype,
            moving_average(model, plan.ema_decay) if plan.ema_decay > 0 else None,
        )

    def retarget(self, total_steps: int, steps_done: int) -> None:
        """The same warm-up, its linear decay re-aimed to end at `total_steps` (a re-planned budgeted run)."""
        self.scheduler = warmup_linear_schedule(
            self.optimizer, total_steps, warmup_steps=self.plan.warmup_steps, steps_done=steps_done
        )

    def batch(
        self, idx: list[int], *, step: bool, whole: list[int] | None = None, world: int = 1, active: bool = True
    ) -> tuple[float, dict[str, float]]:
        """One micro-batch. A distributed process passes its slice as `idx`, the global batch as `whole`: its
        loss is then its part of the global batch's loss (normalised over `whole`, trainer/losses.py), scaled
        by `world` against DDP's gradient average; `active` False: a stand-in text, counted for nothing."""
        config, model = self.config, self.model
        denominators = self.loss_fn.denominators(self.encoded.labels[whole]) if whole is not None else None
        scale = (world if active else 0.0) if whole is not None else 1.0
        # DDP: reduce gradients once per optimizer step, not after every accumulated micro-batch
        sync = nullcontext() if step or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            loss, parts = self._forward_backward(idx, scale, denominators)
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
            if self.average is not None:
                self.average.update_parameters(self.unwrapped)
        return loss, parts

    def _forward_backward(
        self, idx: list[int], scale: float, denominators: dict[str, float] | None
    ) -> tuple[float, dict[str, float]]:
        config, model, plan = self.config, self.model, self.plan
        fixed_width = None if config.group_by_length else config.max_length
        batch = pad_batch([self.encoded.input_ids[i] for i in idx], self.pad_id, fixed_width)
        ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
        labels = self.encoded.labels[idx].to(self.device)
        with autocast(self.device, self.dtype):
            if plan.rdrop_alpha > 0:
                # Two dropout passes as one doubled batch: the same cost, better kernel use.
                both = model(torch.cat([ids, ids]), torch.cat([mask, mask]))
                first = {k: v[: len(idx)] for k, v in both.items()}
                second = {k: v[len(idx) :] for k, v in both.items()}
                loss, parts = self.loss_fn(first, labels, second, denominators)
            else:
                loss, parts = self.loss_fn(model(ids, mask), labels, denominators=denominators)
        scaled = loss * scale / plan.grad_accum
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return float(loss.detach()), parts


def prepare(config: TrainConfig, data: SplitData, device: torch.device | None = None) -> Prepared:
    """Seed, subsample, load the encoder and build the heads, tokenise once, set up the epoch batcher (of
    global batches: a distributed run's processes each take a slice of every one). `device`: a distributed
    process's own GPU, instead of config.device."""
    device = device or resolve_device(config.device)
    threads = set_cpu_threads(config, device)
    dtype = amp_dtype(config.amp, device)
    set_seed(config.seed)  # random, numpy, torch (every device)
    drawn = subsample(data.train, config.max_train_samples, config.seed)
    if config.max_train_samples is not None and len(drawn) < len(data.train):
        require_classes_in_subsample(data.tasks, drawn, config.max_train_samples)
    require_two_classes(data.tasks, drawn)  # the final view: variants, exclusions and the leak guard applied
    data = SplitData(data.tasks, drawn, data.val, data.test, data.dataset)
    model, tokenizer = build_model(
        config.encoder,
        data.tasks,
        pooling=config.pooling,
        # the plan may shape them otherwise (Stepper.build): a planned head is built as the recipe's meanwhile
        head_layers=config.head_layers or RECIPE.head_layers,
        head_hidden=config.head_hidden,
        head_dropout=config.head_dropout,
    )
    model.to(device)
    config, reasons = within_encoder_limit(config, model, tokenizer)
    pad_id = pad_token_id(tokenizer)
    train = encode(tokenizer, data.train, data.tasks, config.max_length)
    val = encode(tokenizer, data.val, data.tasks, config.max_length)
    test = encode(tokenizer, data.test, data.tasks, config.max_length)
    batches = TrainBatches(
        train,
        data.train,
        batch_size=config.global_batch,
        group_by_length=config.group_by_length,
        seed=config.seed,
        oversample=config.oversample,
        oversample_power=config.oversample_power,
        oversample_max=config.oversample_max,
        curriculum=config.curriculum,
        curriculum_start=config.curriculum_start,
        curriculum_epochs=config.curriculum_epochs,
        one_per_source=config.variant_sampling == "one_per_source",
    )
    return Prepared(config, data, model, tokenizer, pad_id, train, val, test, batches, device, dtype, threads, reasons)


def within_encoder_limit(
    config: TrainConfig, model: MultiTaskModel, tokenizer: Any
) -> tuple[TrainConfig, tuple[str, ...]]:
    """The config with max_length cut to the most tokens the encoder can take (config.max_length goes up to
    4096; a BERT embeds 512 positions), and the reason, for the run's plan. Past the limit a long training text
    would fail the run mid-epoch, and a run of short texts would save a model that fails on every long text."""
    limit = encoder_max_length(model.encoder, tokenizer)
    if limit is None or config.max_length <= limit:
        return config, ()
    why = f"max_length {limit}: the most tokens the encoder can take (config.max_length {config.max_length} is more)"
    return config.model_copy(update={"max_length": limit}), (why,)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spread_by_size(batches: list[list[int]], size: Callable[[list[int]], int], n: int) -> list[list[int]]:
    """`n` of `batches` (all when there are fewer), at the midpoints of n equal shares of their order by `size`:
    their mean cost times the number of batches estimates an epoch's, whatever the cost's shape in size."""
    ordered = sorted(batches, key=size)
    n = min(n, len(ordered))
    return [ordered[math.floor((j + 0.5) * len(ordered) / n)] for j in range(n)]


def measure_throughput(run: Prepared) -> Throughput:
    """Time forward + backward (gradients dropped) on CALIBRATION_BATCHES batches of the
    first epoch spread evenly over its range of padded sizes (a batch's cost is not proportional to its tokens:
    timed on the first few batches, of whatever sizes they happened to have, two seeds of one request measured
    7.5 and 10.7 epochs in the same budget, bench/quality_loop.py's 8th run), after
    one untimed batch (start-up costs), each twice, keeping the faster (a moment in which another process took
    the CPU rarely hits both). An epoch costs its number of batches × their mean time, and its optimizer steps
    (timed_optimizer_step). An evaluation pass is estimated at FORWARD_SHARE of a training pass of its tokens."""
    model, batches = run.model, run.batches.epoch(0)
    width = None if run.config.group_by_length else run.config.max_length
    lengths = run.train.lengths

    def padded(idx: list[int]) -> int:
        return len(idx) * (width or int(lengths[idx].max()))

    chosen = spread_by_size(batches, padded, CALIBRATION_BATCHES)
    model.train()

    def timed(idx: list[int]) -> float:
        batch = pad_batch([run.train.input_ids[i] for i in idx], run.pad_id, width)
        ids, mask = batch["input_ids"].to(run.device), batch["attention_mask"].to(run.device)
        _sync(run.device)
        t0 = time.perf_counter()
        with autocast(run.device, run.dtype):
            out = model(ids, mask)
            surrogate = sum(v.float().logsumexp(dim=-1).mean() for v in out.values())
        surrogate.backward()
        _sync(run.device)
        return time.perf_counter() - t0

    if batches:
        timed(batches[0])  # start-up costs
    seconds = [min(timed(idx), timed(idx)) for idx in chosen]
    step_seconds, average_seconds = timed_optimizer_step(run) if chosen else (0.0, 0.0)
    model.zero_grad(set_to_none=True)
    per_token = sum(seconds) / max(1, sum(padded(idx) for idx in chosen))
    epoch_seconds = len(batches) * sum(seconds) / max(1, len(seconds))
    epoch_samples = sum(len(b) for b in batches)
    order = np.argsort(-run.val.lengths, kind="stable")
    size = run.config.eval_batch_size
    val_tokens = sum(
        len(chunk) * int(run.val.lengths[chunk].max())
        for chunk in (order[s : s + size] for s in range(0, len(order), size))
    )
    return Throughput(
        seconds_per_sample=epoch_seconds / max(1, epoch_samples),
        eval_seconds=per_token * val_tokens * FORWARD_SHARE,
        step_seconds=step_seconds,
        average_seconds=average_seconds,
    )


def timed_optimizer_step(run: Prepared) -> tuple[float, float]:
    """What one optimizer step costs beside its batches: clipping the gradients and an AdamW step over every
    weight, as the Stepper makes them (fused where it is); and one update of the weights' moving average, which
    a short run makes after each step. The optimizer is a throwaway one at learning rate 0 on zeroed gradients
    (their values do not change the cost), which leaves every weight as it is (AdamW's update and its decoupled
    weight decay are both scaled by the rate; a gradient that is not finite cannot reach a weight); the faster
    of two after a first that allocates the state, freed on return, as is the average's copy of the weights
    (the run's own peak is higher: its optimizer's state and its average live together). On the example
    dataset's MiniLM a step and an update cost about as much as 3 training samples: without them the start-up
    measurement read 7 to 20% faster than training ran (bench/plan_pace.py)."""
    model = run.model
    for p in model.parameters():
        if p.grad is not None:
            p.grad.zero_()
    optimizer = build_optimizer(
        model, lr=0.0, head_lr=0.0, decay=1.0, weight_decay=run.config.weight_decay, device=run.device
    )

    def timed(action: Callable[[], Any]) -> float:
        _sync(run.device)
        t0 = time.perf_counter()
        action()
        _sync(run.device)
        return time.perf_counter() - t0

    def step() -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), run.config.max_grad_norm)
        optimizer.step()

    timed(step)  # allocates the optimizer's state
    step_seconds = min(timed(step), timed(step))
    optimizer.state.clear()
    average = moving_average(model, 0.99)
    timed(lambda: average.update_parameters(model))  # the first update copies the weights
    average_seconds = min(
        timed(lambda: average.update_parameters(model)), timed(lambda: average.update_parameters(model))
    )
    return step_seconds, average_seconds
