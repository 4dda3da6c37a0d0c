"""Learning-rate selection on val: a few short trials of the planned run at multiples of its planned LR.

The planning rules (trainer/plan.py) scale the recipe's LR to another batch, step count and encoder width;
those rules are approximate, so a run outside the recipe's regime checks the factor on val. Each trial trains
the run's own plan (batch, accumulation, regularisers, warm-up + linear decay) from the same initial weights and
seed, shortened to a share of the run's steps, at `lr_scale` × the LR the rules give for that length; the
trial with the best val macro-F1 wins, and the runs train with its `lr_scale`. The multipliers start at 1, 2
and ½; further trials extend past the best at an edge (×2 or ×½) or, when the best is inside, try the log-midpoint
toward its better neighbour. Ties go to the scale nearest 1.

What it may cost: all trials together take SEARCH_SHARE of the training time of the runs that share them (the
seeds of one request), each run's budget paying an equal part; `auto` runs the search only when the run is
outside the recipe's regime and each trial still gets MIN_TRIAL_STEPS optimizer steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from transformers import set_seed

from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.examples import SplitData
from trainer.model import with_pooling_resolved
from trainer.plan import shortened
from trainer.steps import Stepper, measure_throughput, prepare
from trainer.train import run_loop

SEARCH_SHARE = 0.25
MIN_TRIAL_STEPS = 50
FIRST_SCALES = (1.0, 2.0, 0.5)
MIN_BUDGET_LEFT_MINUTES = 0.5

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class Selection:
    status: str  # "done" or "skipped"
    reason: str
    scale: float = 1.0  # the chosen lr_scale
    lr: float | None = None  # the LR the run's plan gets at that scale (estimated before the run measures)
    trial_steps: int | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    run_plan: dict[str, Any] | None = None
    budget_minutes_after: float | None = None  # each run's budget once it paid its share of the trials

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_trial(trials: list[dict[str, Any]]) -> dict[str, Any]:
    return max(trials, key=lambda t: (round(t["val_macro_f1"], 9), -abs(math.log(t["scale"]))))


def next_scale(trials: list[dict[str, Any]]) -> float | None:
    """The multiplier to try next; None when the search has nothing new to try."""
    tried = sorted(t["scale"] for t in trials)
    for scale in FIRST_SCALES:
        if not any(math.isclose(scale, s) for s in tried):
            return scale
    best: float = best_trial(trials)["scale"]
    if math.isclose(best, tried[-1]):
        return best * 2
    if math.isclose(best, tried[0]):
        return best / 2
    score = {t["scale"]: t["val_macro_f1"] for t in trials}
    i = next(k for k, s in enumerate(tried) if math.isclose(s, best))
    neighbour = tried[i - 1] if score[tried[i - 1]] >= score[tried[i + 1]] else tried[i + 1]
    mid = math.sqrt(best * neighbour)
    if any(math.isclose(mid, s, rel_tol=0.05) for s in tried):
        return None
    return round(mid, 4)


def select_learning_rate(
    config: TrainConfig,
    data: SplitData,
    *,
    n_runs: int = 1,
    progress: ProgressFn | None = None,
    on_trial: Callable[[Selection], None] | None = None,
) -> Selection:
    """Run the trials for `n_runs` runs of `config` (seeds of one request) and choose their `lr_scale`."""
    emit = progress or (lambda _e: None)
    if config.lr is not None:
        return Selection("skipped", "config.lr is set: used as given")
    if config.lr_search == "off":
        return Selection("skipped", "config.lr_search is off")
    started = time.monotonic()
    config, _ = with_pooling_resolved(config)  # the trials pool as the runs will (trainer/model.py)
    run = prepare(config, data)
    emit({"event": "phase", "phase": "measuring throughput"})
    throughput = measure_throughput(run)
    plan = run.plan(throughput)
    budget_left = config.budget_minutes
    if config.lr_search == "auto" and not plan.lr_scaled:
        return Selection(
            "skipped",
            "the run trains in the recipe's regime: its LR stands",
            lr=plan.lr,
            run_plan=plan.to_dict(),
            budget_minutes_after=budget_left,
            seconds=round(time.monotonic() - started, 1),
        )
    trial_steps = min(plan.steps, math.floor(SEARCH_SHARE * n_runs * plan.steps / config.lr_trials))
    if trial_steps < MIN_TRIAL_STEPS:
        if config.lr_search == "auto":
            return Selection(
                "skipped",
                f"the budget does not allow it: {config.lr_trials} trials in {SEARCH_SHARE:.0%} of the training "
                f"time of {n_runs} run(s) get {trial_steps} steps each (< {MIN_TRIAL_STEPS})",
                lr=plan.lr,
                run_plan=plan.to_dict(),
                budget_minutes_after=budget_left,
                seconds=round(time.monotonic() - started, 1),
            )
        trial_steps = min(plan.steps, MIN_TRIAL_STEPS)
    run.model.set_heads(plan.head_layers, config.seed)  # every trial trains the heads the run will have
    initial = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    selection = Selection("running", "", trial_steps=trial_steps, run_plan=plan.to_dict())
    for k in range(config.lr_trials):
        scale = next_scale(selection.trials)
        if scale is None:
            break
        run.model.load_state_dict(initial)
        set_seed(config.seed)  # every trial sees the same dropout masks and batch order
        trial_config = config.with_overrides({"lr_scale": scale})
        trial_plan = shortened(plan, trial_config, trial_steps, run.encoder_width)
        t0 = time.monotonic()

        def trial_event(event: dict[str, Any], k: int = k) -> None:
            if event["event"] in ("batch", "epoch"):
                emit({**event, "event": f"trial_{event['event']}", "trial": k + 1, "trials": config.lr_trials})

        loop = run_loop(run, trial_plan, Stepper.build(run, trial_plan), trial_event)
        selection.trials.append(
            {
                "scale": scale,
                "lr": trial_plan.lr,
                "steps": loop.steps_done,
                "val_macro_f1": loop.best_val_macro_f1,
                "last_val_macro_f1": loop.curve[-1]["val_macro_f1"] if loop.curve else None,
                "seconds": round(time.monotonic() - t0, 1),
                # a trial whose weights stopped being finite numbers (its val macro-F1 is −1 unless an
                # epoch before it was kept): it loses to any trial that trained
                **({"diverged_in_epoch": loop.diverged_in_epoch} if loop.diverged_in_epoch is not None else {}),
            }
        )
        emit({"event": "trial", "trial": k + 1, "trials": config.lr_trials, **selection.trials[-1]})
        if on_trial:
            on_trial(selection)
    chosen = best_trial(selection.trials)
    selection.status, selection.scale = "done", chosen["scale"]
    selection.seconds = round(time.monotonic() - started, 1)
    selection.reason = (
        f"best val macro-F1 {chosen['val_macro_f1']:.4f} at {chosen['scale']:g} × the planned LR "
        f"({len(selection.trials)} trials of {trial_steps} steps)"
    )
    overrides: dict[str, Any] = {"lr_scale": chosen["scale"]}
    if config.budget_minutes is not None:
        # Each run pays its share of the trials but keeps something to train with; never more than it asked for.
        selection.budget_minutes_after = min(
            config.budget_minutes,
            max(MIN_BUDGET_LEFT_MINUTES, round(config.budget_minutes - selection.seconds / 60 / n_runs, 2)),
        )
        overrides["budget_minutes"] = selection.budget_minutes_after
    try:  # what the run will plan, at the throughput measured here (the run measures its own)
        selection.lr = run.plan(throughput, config.with_overrides(overrides)).lr
    except TrainerError:  # the budget left affords too little; the run reports it
        selection.lr = None
    return selection
