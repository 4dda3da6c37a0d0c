"""The training loop: a plan in optimizer steps (trainer/plan.py), epochs of length-grouped batches,
validation each epoch, early stopping, the decision rule fitted on val, test once.

`train_model` takes the data (already read from the database) and a config, and touches no database: the
callers (the CLI, the `train` job) read the data in a short transaction, then train with none open.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import set_seed

from trainer import checkpoint, soup
from trainer.checkpoint import Checkpointer, LoopState, restore
from trainer.config import ZERO_WEIGHTS, TrainConfig
from trainer.decision import decide, fit_rules
from trainer.errors import TrainerError, TrainingStopped, artifacts_written
from trainer.examples import SplitData, require_val_labels
from trainer.group import SINGLE, Group, wrap_ddp
from trainer.metrics import evaluate_probs, prediction_dump
from trainer.model import MultiTaskModel, with_pooling_resolved
from trainer.plan import Clock, Plan, Throughput, replanned_steps
from trainer.predict import precision_name, precision_reason, usable_max_length
from trainer.soup import Ingredient
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

    @property
    def precision(self) -> str:
        """What the run trained and evaluated in (fp32, bf16, fp16): what its saved model serves in."""
        return str(self.metrics.get("precision", "fp32"))


@dataclass
class LoopControl:
    """How a run is checkpointed, stopped and coordinated (all optional: a plain run needs none of it).

    `checkpoint_dir`: where the loop saves its state after every epoch (and every `every_steps` optimizer
    steps); a checkpoint found there for the same config and data is resumed. `should_stop`: asked at every
    optimizer step; when it says yes the loop checkpoints and raises TrainingStopped (a worker shutting down).
    `group`: the processes of a distributed run (trainer/group.py). `before_save`: called right before each
    checkpoint is written (every epoch's, every `every_steps`' and the stop's), on the writing rank only; it
    raises to keep the checkpoint unwritten, its exception ending the loop (a worker whose job was taken over by
    another: the checkpoint directory is the new owner's). Only for a single-process run: the other ranks of a
    distributed one would wait for the writer."""

    checkpoint_dir: Path | None = None
    every_steps: int | None = None
    should_stop: Callable[[], bool] = lambda: False
    group: Group = SINGLE
    before_save: Callable[[], None] = lambda: None


@dataclass
class LoopOutcome:
    curve: list[dict[str, Any]]
    best_epoch: int
    best_val_macro_f1: float
    steps_done: int
    planned_steps: int
    stopped_early: bool
    stopped_at_deadline: bool
    seconds: float
    resumed_from_step: int | None = None
    diverged_in_epoch: int | None = None  # the epoch whose weights were no longer finite (training stopped there)
    ingredients: list[Ingredient] = field(default_factory=list)  # the best epochs' weights, best first (the soup's)

    @property
    def best_state(self) -> dict[str, torch.Tensor] | None:
        """The best epoch's weights (on the CPU), None when no epoch was validated."""
        return self.ingredients[0].state if self.ingredients else None


def finite_weights(model: torch.nn.Module) -> bool:
    """Whether every weight is a finite number. A NaN or infinite weight never recovers (fp16's overflowing
    steps are skipped by the gradient scaler and never reach the weights): the run has diverged."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def diverged_error(epoch: int) -> TrainerError:
    """What a run that diverged before any epoch it could keep fails with, saying what to change."""
    return TrainerError(
        f"training diverged in epoch {epoch}: the model's weights are no longer finite numbers, and no earlier "
        "epoch was kept; lower the learning rate (config.lr or config.lr_scale) or the weight decay",
        field="config.lr",
    )


def run_loop(
    run: Prepared,
    plan: Plan,
    stepper: Stepper,
    emit: ProgressFn,
    *,
    control: LoopControl | None = None,
    saver: Checkpointer | None = None,
    resume: checkpoint.Checkpoint | None = None,
) -> LoopOutcome:
    """Epochs of batches until the plan's steps are made (a budgeted run re-plans them after each epoch),
    validation after each epoch and at the stop, the best epoch's weights kept, early stopping on val.
    With `resume`, the loop continues from the checkpoint's epoch, batch and step."""
    control = control or LoopControl()
    group = control.group
    model, data, batches = run.model, run.data, run.batches
    resumed_from_step = resume.loop.steps_done if resume else None
    st = replace(resume.loop, curve=list(resume.loop.curve)) if resume else LoopState(total=plan.steps)
    if resume and not group.is_main:  # the epoch's sums so far are rank 0's to carry
        st.seen, st.loss_sum, st.task_sums = 0, 0.0, dict.fromkeys(st.task_sums, 0.0)
    ingredients = list(resume.ingredients) if resume and group.is_main else []
    if resume is not None:  # the loop holds them from here: an epoch pushed out of them is freed
        resume.ingredients = []
    clock = Clock()
    clock.started -= st.seconds_used  # a resumed budget's clock continues where the attempt stopped
    deadline = plan.deadline_seconds
    at_deadline = False
    while (
        st.stopped is None
        and st.steps_done < st.total
        and st.epoch < (plan.epoch_cap if plan.budget_seconds else plan.max_epochs)
    ):
        stepper.model.train()
        epoch_batches = batches.epoch(st.epoch)
        t0, cpu0 = time.monotonic() - st.epoch_seconds, time.process_time() - st.epoch_cpu_seconds
        if st.batch == 0:
            st.seen, st.loss_sum, st.task_sums = 0, 0.0, {t.name: 0.0 for t in data.tasks}
        for b in range(st.batch, len(epoch_batches)):
            idx = epoch_batches[b]
            step = (b + 1) % plan.grad_accum == 0 or b + 1 == len(epoch_batches)
            if group.distributed:
                part, active = group.shard(idx)
                # this rank's part of the global batch's loss: the ranks' parts add up to it
                loss, parts = stepper.batch(part, step=step, whole=idx, world=group.world, active=active)
            else:
                part, active = idx, True
                loss, parts = stepper.batch(idx, step=step)
            if active:
                st.seen += len(part)
                st.loss_sum += loss * len(idx)
                for name, value in parts.items():
                    st.task_sums[name] += value * len(idx)
            emit(
                {
                    "event": "batch",
                    "epoch": st.epoch + 1,
                    "batch": b + 1,
                    "batches": len(epoch_batches),
                    "loss": loss * group.world,
                }
            )  # rank 0's part × the ranks: an estimate of the batch's loss
            if not step:
                continue
            st.steps_done += 1
            st.batch = b + 1
            late = deadline is not None and clock.elapsed() > deadline and group.is_main
            late, stop = group.flags(late, control.should_stop())  # every rank stops at the same step
            if stop and st.steps_done < st.total:  # (at the last step, finishing beats stopping)
                st.epoch_seconds, st.epoch_cpu_seconds = time.monotonic() - t0, time.process_time() - cpu0
                st.seconds_used = clock.elapsed()
                saved = saver is not None and saver.save(st, ingredients)
                raise TrainingStopped(st.steps_done, saved=saved)
            if late:
                at_deadline = True
                break
            if st.steps_done >= st.total:
                break
            if saver is not None and saver.due(st.steps_done) and b + 1 < len(epoch_batches):
                st.epoch_seconds, st.epoch_cpu_seconds = time.monotonic() - t0, time.process_time() - cpu0
                st.seconds_used = clock.elapsed()
                saver.save(st, ingredients)
        train_seconds = time.monotonic() - t0
        # CPU time of this process: on a shared machine, less sensitive than wall time to other jobs' load.
        train_cpu_seconds = time.process_time() - cpu0
        seen, loss_sum, *task_values = group.sum([st.seen, st.loss_sum, *st.task_sums.values()])
        task_sums = dict(zip(st.task_sums, task_values, strict=True))
        # Diverged for good: stop here, keeping the best epoch so far (the caller fails a run that has none).
        # Asked of every rank at once (the weights are the same on all), so every rank stops alike.
        (diverged,) = group.flags(not finite_weights(model))
        if diverged:
            st.stopped = "diverged"
            break
        verdict: dict[str, Any] | None = None
        if group.is_main:
            e0 = time.monotonic()
            val_probs = run.predict(run.val, stepper.evaluated)
            val_metrics = evaluate_probs(val_probs, run.val.labels.numpy(), data.tasks)
            verdict = {
                "val_f1": val_metrics["overall_macro_f1"] or 0.0,
                "val_tasks": {k: m["macro_f1"] for k, m in val_metrics["tasks"].items()},
            }
            if stepper.average is not None and not at_deadline:  # what the averaging changed, in the curve
                plain = evaluate_probs(run.predict(run.val), run.val.labels.numpy(), data.tasks)
                verdict["plain_val_f1"] = plain["overall_macro_f1"] or 0.0
            st.eval_seconds += time.monotonic() - e0
            verdict.update(elapsed=clock.elapsed(), eval_seconds=st.eval_seconds)
        verdict = group.broadcast(verdict)  # rank 0 decides: every rank keeps the same best epoch and stop
        assert verdict is not None
        val_f1 = verdict["val_f1"]
        st.epoch += 1
        st.batch, st.epoch_seconds, st.epoch_cpu_seconds = 0, 0.0, 0.0
        entry = {
            "epoch": st.epoch,
            "train_loss": loss_sum / max(seen, 1),
            "task_loss": {k: v / max(seen, 1) for k, v in task_sums.items()},
            "val_macro_f1": val_f1,
            "val_task_macro_f1": verdict["val_tasks"],
            **({"plain_val_macro_f1": verdict["plain_val_f1"]} if "plain_val_f1" in verdict else {}),
            "lr": max(stepper.scheduler.get_last_lr()),
            "steps": st.steps_done,
            "train_samples": int(seen),
            "train_seconds": round(train_seconds, 3),
            "train_cpu_seconds": round(train_cpu_seconds, 3),
            "samples_per_s": round(seen / train_seconds, 3) if train_seconds > 0 else None,
        }
        if val_f1 > st.best_f1 + 1e-9:
            st.best_f1, st.best_epoch, st.stale = val_f1, st.epoch, 0
        else:
            st.stale += 1
        if group.is_main and soup.qualifies(ingredients, val_f1, plan.soup_size):
            weights = {k: v.detach().to("cpu", copy=True) for k, v in stepper.evaluated.state_dict().items()}
            ingredients = soup.kept(ingredients, Ingredient(st.epoch, val_f1, weights), plan.soup_size)
        if plan.budget_seconds is not None and not at_deadline and st.steps_done < st.total:
            replanned = replanned_steps(
                plan,
                steps_done=st.steps_done,
                epochs_done=st.epoch,
                seconds_used=verdict["elapsed"],
                eval_seconds=verdict["eval_seconds"],
            )
            if replanned != st.total:
                st.total = replanned
                if st.total > st.steps_done:
                    stepper.retarget(st.total, st.steps_done)
        entry["planned_steps"] = st.total
        st.curve.append(entry)
        st.seconds_used = clock.elapsed()
        if at_deadline:
            st.stopped = "deadline"
        elif plan.patience and st.stale >= plan.patience and st.steps_done < st.total:
            st.stopped = "early"
        if saver is not None:  # before the epoch is reported: a failure while reporting it loses nothing
            saver.save(st, ingredients)
        emit({"event": "epoch", **entry, "best_epoch": st.best_epoch, "best_val_macro_f1": st.best_f1})
    return LoopOutcome(
        st.curve,
        st.best_epoch,
        st.best_f1,
        st.steps_done,
        st.total,
        st.stopped == "early",
        st.stopped == "deadline",
        clock.elapsed(),
        resumed_from_step=resumed_from_step,
        diverged_in_epoch=st.epoch + 1 if st.stopped == "diverged" else None,
        ingredients=ingredients,
    )


def train_model(
    config: TrainConfig, data: SplitData, *, progress: ProgressFn | None = None, control: LoopControl | None = None
) -> TrainResult:
    """Plan (measuring the throughput when there is a budget), train on data.train, select the epoch by mean
    val macro-F1, fit the decision rule on val, evaluate on data.test once."""
    result = train_process(config, data, progress=progress, control=control)
    assert result is not None  # one process: it is rank 0
    return result


def train_process(
    config: TrainConfig,
    data: SplitData,
    *,
    progress: ProgressFn | None = None,
    control: LoopControl | None = None,
    device: torch.device | None = None,
) -> TrainResult | None:
    """One process's part of a run: the whole run alone, or (DDP, trainer/distributed.py) one rank of it;
    rank 0 alone reports progress, evaluates and returns the result, the other ranks return None."""
    started = time.monotonic()
    control = control or LoopControl()
    group = control.group
    unknown = sorted(set(config.task_weights) - {t.name for t in data.tasks})
    if unknown:
        raise TrainerError(f"config.task_weights names unknown task(s) {unknown}", field="config.task_weights")
    if not any(config.task_weights.get(t.name, 1.0) > 0 for t in data.tasks):
        raise TrainerError(ZERO_WEIGHTS, field="config.task_weights")
    require_val_labels(data)
    config, pooling_reason = with_pooling_resolved(config)
    fp = checkpoint.fingerprint(config, data)
    resume, why_not = checkpoint.load(control.checkpoint_dir, fp)
    if group.distributed:
        # Each process read its own request and checkpoint (across nodes, each node's copy): processes that
        # differ waited on each other's collectives until the group's timeout, or trained silently apart.
        seen = group.gather((fp, resume.loop.steps_done if resume else None))
        if any(s != seen[0] for s in seen):
            raise TrainerError(
                "the processes disagree on the run (config and data fingerprint, checkpoint step, per process: "
                f"{[(f[:12], step) for f, step in seen]}): every node must read the same request and the same "
                "checkpoint directory",
                field="config.nproc",
            )
    run = prepare(config, data, device)
    throughput = None
    if config.budget_minutes is not None and config.fixed_epochs is None:
        if resume is not None and resume.loop.throughput is not None:
            throughput = Throughput(**resume.loop.throughput)  # the same plan as the interrupted attempt's
        else:
            measured = measure_throughput(run)
            # every rank measures whole global batches; the processes share each one
            throughput = group.broadcast(
                replace(measured, seconds_per_sample=measured.seconds_per_sample / group.world)
            )
    plan = run.plan(throughput)
    first = [pooling_reason] if pooling_reason else []
    plan = replace(plan, reasons=[*first, precision_reason(config.amp, run.device), *plan.reasons])
    set_seed(config.seed)  # the measurement drew dropout masks: start from the same state as an unmeasured run
    stepper = Stepper.build(run, plan)
    if group.distributed:
        stepper.model = wrap_ddp(run.model, run.device)
        torch.manual_seed(config.seed + group.rank)  # each rank its own dropout masks, as one process draws
    emit = (progress or (lambda _event: None)) if group.is_main else (lambda _event: None)
    if why_not:
        emit({"event": "phase", "phase": why_not})
    precision = precision_name(run.dtype)
    if resume is not None and resume.loop.precision not in (None, precision):
        emit(
            {
                "event": "phase",
                "phase": f"resuming in {precision}: the interrupted attempt trained in {resume.loop.precision} "
                "(amp auto on another kind of CPU or GPU)",
            }
        )
    if resume is not None:
        restore(resume, run, stepper, group)
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
            "processes": group.world,
            "threads": run.threads,
            "amp": str(run.dtype),
            **(
                {
                    "resumed_from_step": resume.loop.steps_done,
                    "resumed_at_epoch": resume.loop.epoch + 1,
                    "curve": resume.loop.curve,
                }
                if resume
                else {}
            ),
        }
    )
    saver = Checkpointer(
        control.checkpoint_dir,
        control.group,
        stepper,
        run.model,
        fp,
        throughput,
        control.every_steps or config.checkpoint_every_steps,
        precision=precision,
        before_save=control.before_save,
        emit=emit,
    )
    loop = run_loop(run, plan, stepper, emit, control=control, saver=saver, resume=resume)
    if loop.diverged_in_epoch is not None and loop.best_epoch == 0:  # the same on every rank
        raise diverged_error(loop.diverged_in_epoch)
    if not group.is_main:
        return None
    tasks = run.data.tasks
    val_gold, test_gold = run.val.labels.numpy(), run.test.labels.numpy()
    soup_report: dict[str, Any] | None = None
    best_epoch_dumps: dict[str, dict[str, Any]] = {}
    if len(loop.ingredients) > 1 and len(run.val):  # (without val, nothing could tell a soup from its epochs)
        soup_report, best_epoch_dumps, val_probs, test_probs = make_soup(run, loop.ingredients, emit)
    else:
        if loop.best_state is not None:
            run.model.load_state_dict(loop.best_state)
        val_probs, test_probs = run.predict(run.val), run.predict(run.test)
    rules = fit_rules(val_probs, val_gold, tasks, config.decision)
    test_labels = decide(test_probs, rules)
    metrics: dict[str, Any] = {
        "val": evaluate_probs(val_probs, val_gold, tasks),
        "test": evaluate_probs(test_probs, test_gold, tasks, test_labels) if len(run.test) else None,
        "test_argmax": evaluate_probs(test_probs, test_gold, tasks) if len(run.test) and rules else None,
        "decision": rules,
        "plan": {
            **plan.to_dict(),
            "steps_done": loop.steps_done,
            "planned_steps_final": loop.planned_steps,
            "training_seconds": round(loop.seconds, 1),
        },
        "best_epoch": loop.best_epoch,
        "epochs_run": len(loop.curve),
        "stopped_early": loop.stopped_early,
        "stopped_at_deadline": loop.stopped_at_deadline,
        "train_samples": len(run.train),
        "device": str(run.device),
        "processes": group.world,
        "amp": str(run.dtype) if run.dtype else None,
        "precision": precision,
        "threads": run.threads,
    }
    if soup_report is not None:
        metrics["soup"] = soup_report
    if loop.resumed_from_step is not None:
        metrics["resumed_from_step"] = loop.resumed_from_step
    if why_not:  # a checkpoint found and not resumed: said while training, and kept with the run after it
        metrics["checkpoint_discarded"] = why_not
    if saver.failures:  # checkpoints the file system refused: the run went on without them
        metrics["checkpoint_failures"] = saver.failures
    if loop.diverged_in_epoch is not None:  # stopped there, keeping the best epoch before it
        metrics["diverged_in_epoch"] = loop.diverged_in_epoch
    result = TrainResult(
        model=run.model,
        tokenizer=run.tokenizer,
        config=config,
        curve=loop.curve,
        best_epoch=loop.best_epoch,
        metrics=metrics,
        predictions={
            "val": prediction_dump(
                run.val.sample_ids, run.data.tasks, run.val.labels.numpy(), val_probs, decide(val_probs, rules)
            ),
            "test": prediction_dump(
                run.test.sample_ids, run.data.tasks, run.test.labels.numpy(), test_probs, test_labels
            ),
            **best_epoch_dumps,
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


def make_soup(
    run: Prepared, ingredients: list[Ingredient], emit: ProgressFn
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Load the greedy soup of the kept epochs into the run's model (trainer/soup.py). Returns what it did, with
    the best epoch alone beside it (val and test macro-F1 of both with argmax labels: the run's own test figures
    follow with its decision rule), the best epoch's prediction dumps (`val_best_epoch`, `test_best_epoch`: what
    the soup is compared with), and the val and test probabilities of the weights kept."""
    tasks, val_gold, test_gold = run.data.tasks, run.val.labels.numpy(), run.test.labels.numpy()
    emit({"event": "phase", "phase": f"greedy soup of the best {len(ingredients)} epochs"})

    def macro_f1(probs: dict[str, np.ndarray], gold: np.ndarray) -> float | None:
        return evaluate_probs(probs, gold, tasks)["overall_macro_f1"] if len(gold) else None

    run.model.load_state_dict(ingredients[0].state)
    alone = {"val": run.predict(run.val), "test": run.predict(run.test)}
    dumps = {
        f"{split}_best_epoch": prediction_dump(
            encoded.sample_ids, tasks, encoded.labels.numpy(), alone[split], decide(alone[split], None)
        )
        for split, encoded in (("val", run.val), ("test", run.test))
    }
    scored: dict[int, dict[str, np.ndarray]] = {}  # the val probabilities of each candidate soup, by its weights

    def score(weights: soup.State) -> float:
        run.model.load_state_dict(weights)
        scored[id(weights)] = run.predict(run.val)
        return macro_f1(scored[id(weights)], val_gold) or 0.0

    weights, report = soup.greedy_soup(ingredients, score, baseline=macro_f1(alone["val"], val_gold) or 0.0)
    run.model.load_state_dict(weights)
    report["best_epoch_test_macro_f1"] = macro_f1(alone["test"], test_gold)
    if len(report["epochs"]) == 1:  # nothing joined: the best epoch's own weights, already scored
        val_probs, test_probs = alone["val"], alone["test"]
    else:  # greedy_soup returns the very weights it scored: their val probabilities are known
        val_probs, test_probs = scored[id(weights)], run.predict(run.test)
        report["test_macro_f1"] = macro_f1(test_probs, test_gold)
    report["summary"] = soup.describe(report)
    return report, dumps, val_probs, test_probs


def save_artifacts(result: TrainResult, out_dir: Path) -> Path:
    """model/ (encoder, heads, tokenizer), config.yaml, metrics.json (+ curve), predictions, snapshot."""
    out_dir = Path(out_dir)
    # the length it trained and serves at: the config's, or the encoder's limit where that is lower (the config
    # keeps what was asked; the plan's reasons say it was cut)
    served = usable_max_length(result.model.encoder, result.tokenizer, result.config.max_length)
    with artifacts_written():  # a full disk fails the run saying what could not be written
        out_dir.mkdir(parents=True, exist_ok=True)
        result.model.save(out_dir / "model", result.tokenizer, served, result.precision)
        result.config.save(out_dir / "config.yaml")
        (out_dir / "metrics.json").write_text(
            json.dumps({**result.metrics, "curve": result.curve}, indent=2), encoding="utf-8"
        )
        for split, dump in result.predictions.items():
            (out_dir / f"predictions_{split}.json").write_text(json.dumps(dump), encoding="utf-8")
        (out_dir / "snapshot.json").write_text(json.dumps(result.snapshot), encoding="utf-8")
        (out_dir / "model" / "decision.json").write_text(json.dumps(result.decision), encoding="utf-8")
    return out_dir


def load_result(out_dir: Path, config: TrainConfig) -> TrainResult:
    """A run saved by save_artifacts, read back (a distributed run's rank 0 saved it in another process)."""
    from trainer.model import load_model

    out_dir = Path(out_dir)
    model, tokenizer, _meta = load_model(out_dir / "model")
    saved = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))
    curve = saved.pop("curve")
    return TrainResult(
        model=model,
        tokenizer=tokenizer,
        config=config,
        curve=curve,
        best_epoch=int(saved["best_epoch"]),
        metrics=saved,
        predictions={
            split: json.loads((out_dir / f"predictions_{split}.json").read_text(encoding="utf-8"))
            for split in ("val", "test")
        },
        snapshot=json.loads((out_dir / "snapshot.json").read_text(encoding="utf-8")),
        seconds=float(saved.get("seconds", 0.0)),
        stopped_early=bool(saved.get("stopped_early")),
        decision=json.loads((out_dir / "model" / "decision.json").read_text(encoding="utf-8")),
    )
