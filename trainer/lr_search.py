"""Learning-rate selection on val: a few short trials of the planned run at multiples of its planned LR.

The planning rules (trainer/plan.py) scale the recipe's LR to another batch, step count and encoder width;
those rules are approximate, so a run outside the recipe's regime checks the factor on val. Each trial trains
the run's own plan (batch, accumulation, regularisers, warm-up + linear decay) from the same initial weights and
seed, shortened to a share of the run's steps, at a multiple of the LR the rules give for that length (which
holds the config's own `lr_scale`); the trial with the best val macro-F1 wins, and the runs train with the
config's `lr_scale` times its multiple. The multipliers start at 1, 2
and ½; further trials extend past the best at an edge (×2 or ×½) or, when the best is inside, try the log-midpoint
toward its better neighbour. Ties go to the scale nearest 1.

What it may cost: all trials together take SEARCH_SHARE of the training time of the runs that share them (the
seeds of one request), each run's budget paying an equal part; `auto` runs the search only when the run is
outside the recipe's regime and each trial still gets MIN_TRIAL_STEPS optimizer steps.

One recipe per request: the keys the config leaves to the plan that shape the recipe rather than its length
(RECIPE_KEYS: accumulation, R-Drop, layer-wise decay, the heads, weight averaging) are decided here once, from
the throughput measured here and the budget each run will have left once it paid its share of the trials (the
trials of that same recipe: `after_trials`), and every run of the request trains them (`Selection.recipe`, in
its config). Each run still plans its own length from the pace it measures. Without this, a budget near a
planning threshold (trainer/plan.py, rule 1) gave the seeds of one request different recipes from a ±20% start-up
measurement (bench/quality_loop.py, 8th run: seed 0 linear heads and averaging, seeds 1 and 2 the MLP heads and
layer-wise decay), while the ensemble weighs them as one configuration and the trials had tuned the LR for one of
them only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from transformers import set_seed

from trainer.config import LR_SCALE_MAX, TrainConfig
from trainer.errors import TrainerError
from trainer.examples import SplitData
from trainer.model import with_pooling_resolved
from trainer.plan import RDROP_COST, Plan, Throughput, shortened
from trainer.predict import available_cpus
from trainer.steps import Prepared, Stepper, measure_throughput, prepare
from trainer.train import LoopControl, run_loop

SEARCH_SHARE = 0.25
MIN_TRIAL_STEPS = 50
FIRST_SCALES = (1.0, 2.0, 0.5)
MIN_BUDGET_LEFT_MINUTES = 0.5
RECIPE_KEYS = ("grad_accum", "rdrop_alpha", "llrd_decay", "head_layers", "ema_decay")

ProgressFn = Callable[[dict[str, Any]], None]


@dataclass
class Selection:
    status: str  # "done" or "skipped"
    reason: str
    scale: float = 1.0  # the runs' lr_scale: the config's own times the multiplier the trials chose
    lr: float | None = None  # the LR the run's plan gets at that scale (estimated before the run measures)
    trial_steps: int | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    run_plan: dict[str, Any] | None = None
    budget_minutes_after: float | None = None  # each run's budget once it paid its share of the trials
    recipe: dict[str, Any] = field(default_factory=dict)  # RECIPE_KEYS the config left unset, as planned here
    recipe_reason: str = ""
    # with fix_length: every run's length, planned here for the budget each keeps (the runs do not plan their own)
    fixed_epochs: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def overrides(self) -> dict[str, Any]:
        """What every run of the request trains with: the chosen scale, the recipe planned once for all of them,
        and (with a budget) what is left of its budget."""
        chosen: dict[str, Any] = {"lr_scale": self.scale, **self.recipe}
        if self.status == "done":  # decided: a run's config, used again, trains this scale, not a search on top of it
            chosen["lr_search"] = "off"
        if self.budget_minutes_after is not None:
            chosen["budget_minutes"] = self.budget_minutes_after
        if self.fixed_epochs is not None:
            chosen["fixed_epochs"] = self.fixed_epochs
        return chosen


def shared_recipe(config: TrainConfig, plan: Plan, n_runs: int) -> tuple[dict[str, Any], str]:
    """The recipe keys `config` leaves to the plan, as `plan` decided them, and the sentence that says so."""
    recipe = {key: getattr(plan, key) for key in RECIPE_KEYS if getattr(config, key) is None}
    if not recipe:
        return recipe, ""
    return recipe, (
        f"one recipe for the request's {n_runs} run(s), planned for {plan.epochs:.1f} epochs at the pace measured "
        f"here: " + ", ".join(f"{key} {value:.4g}" for key, value in recipe.items())
    )


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


def runs_pace(run: Prepared, config: TrainConfig, measured: Throughput) -> Throughput:
    """The pace each process of the request's runs plans with, from `measured` (this one process timing whole
    global batches): a distributed run's processes share each batch (as trainer/train.py plans it), and on a
    CPU each has the node's cores ÷ nproc threads (trainer/distributed.py), so there it is measured again with
    that many."""
    if config.nproc > 1 and run.device.type == "cpu" and config.num_threads is None:
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, available_cpus() // config.nproc))
        try:
            measured = measure_throughput(run)
        finally:
            torch.set_num_threads(threads)
    # each process steps the optimizer (and the average) over every weight: that cost is not shared
    return replace(measured, seconds_per_sample=measured.seconds_per_sample / config.nproc)


def trials_cost(plan: Plan, throughput: Throughput, trials: int, trial_steps: int) -> float:
    """Seconds the trials of `plan`'s recipe take at this process's pace: their steps and validation passes."""
    per_step = plan.effective_batch * throughput.seconds_per_sample * (RDROP_COST if plan.rdrop_alpha > 0 else 1.0)
    per_step += throughput.step_cost(averaged=plan.ema_decay > 0)
    evals = (math.ceil(trial_steps / plan.steps_per_epoch) + 1) * plan.evals_per_epoch
    return trials * (trial_steps * per_step + evals * throughput.eval_seconds)


def recipe_of(plan: Plan) -> tuple[Any, ...]:
    return tuple(getattr(plan, key) for key in RECIPE_KEYS)


def after_trials(
    run: Prepared,
    config: TrainConfig,
    pace: Throughput,
    throughput: Throughput,
    trial_steps: int,
    n_runs: int,
    spent_seconds: float,
) -> tuple[Plan, str]:
    """The plan of each run (at the runs' `pace`) once it has paid its share of the selection: the seconds
    already spent (loading, measuring) and the trials of that plan's own recipe at this process's `throughput`;
    and a sentence when the recipe had to be pinned (below; "" otherwise). Without a budget, or when the rest
    affords no run (the run reports that itself): the plan of the whole budget.

    The trials' cost depends on the recipe they train (its accumulation sets the samples of a step, R-Drop
    doubles them), and the recipe on the budget the trials leave, so the answer is a recipe whose own trials
    leave a budget that plans that same recipe, found from the whole budget's by pricing each recipe's trials in
    turn (bench/quality_loop.py, 11th run: priced with a cheaper recipe's trials, the long-run recipe was planned
    at 10.35 epochs, and its own trials left each seed 14.3 minutes, 9.2 epochs at the same pace). Near a
    threshold of the rules there may be none: accumulation 3's trials leave a budget that plans accumulation 2,
    whose cheaper trials leave enough for 3 (or the long-run recipe's and the short one's, likewise). Then the
    recipe among those whose trials cost least is pinned and trained over what its trials leave."""
    whole = run.plan(pace)
    if config.budget_minutes is None:
        return whole, ""
    budget = config.budget_minutes

    def trials_of(plan: Plan) -> float:
        return trials_cost(plan, throughput, config.lr_trials, min(trial_steps, plan.steps))

    def rest(plan: Plan, pinned: dict[str, Any] | None = None) -> Plan | None:
        left = max(MIN_BUDGET_LEFT_MINUTES, budget - (spent_seconds + trials_of(plan)) / 60 / n_runs)
        try:
            return run.plan(pace, config.with_overrides({"budget_minutes": left, **(pinned or {})}))
        except TrainerError:
            return None

    priced: list[Plan] = []  # each recipe met, in turn, as planned for the budget the one before it left
    plan = whole
    while True:
        following = rest(plan)
        if following is None:
            return whole, ""
        if recipe_of(following) == recipe_of(plan):
            return following, ""  # its own trials leave a budget that plans it
        priced.append(plan)
        met = [recipe_of(p) for p in priced]
        if recipe_of(following) in met:
            cycle = priced[met.index(recipe_of(following)) :]
            break
        plan = following
    cheapest = min(cycle, key=trials_of)
    unset = {key: getattr(cheapest, key) for key in RECIPE_KEYS if getattr(config, key) is None}
    chosen = rest(cheapest, unset)
    if chosen is None:
        return whole, ""
    others = "; ".join(
        ", ".join(f"{key} {getattr(p, key):.4g}" for key in unset if getattr(p, key) != unset[key])
        for p in cycle
        if recipe_of(p) != recipe_of(cheapest)
    )
    why = (
        f"pinned: its trials leave enough for {others}, whose own trials leave too little (no recipe's own trials "
        "leave a budget that plans it); the one whose trials cost least is kept"
    )
    return replace(chosen, reasons=[*chosen.reasons, why]), why


def select_learning_rate(
    config: TrainConfig,
    data: SplitData,
    *,
    n_runs: int = 1,
    progress: ProgressFn | None = None,
    on_trial: Callable[[Selection], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    fix_length: bool = False,
) -> Selection:
    """Run the trials for `n_runs` runs of `config` (seeds of one request) and choose their `lr_scale`.
    `should_stop` is asked at every optimizer step of a trial: when it says yes, TrainingStopped (nothing is
    saved; a worker shutting down gives the selection back to the queue, which runs it again). With
    `fix_length` (an impact report's runs, whose arms must differ in their data alone) the budget's length is
    planned here once, at the pace measured here, for every run (`fixed_epochs`), even where no trial runs: a
    run planning its own at the pace it measures trained longer when the machine was idler (an arm trained 310
    steps, another on the same data 239, and the report showed their difference as an effect)."""
    emit = progress or (lambda _e: None)
    stop = should_stop or (lambda: False)
    fix = fix_length and config.budget_minutes is not None
    given = (
        "config.lr is set: used as given"
        if config.lr is not None
        else "config.lr_search is off"
        if config.lr_search == "off"
        else None
    )
    if given and not fix:
        return Selection("skipped", given, scale=config.lr_scale)
    started = time.monotonic()
    config, _ = with_pooling_resolved(config)  # the trials pool as the runs will (trainer/model.py)
    run = prepare(config, data)
    emit({"event": "phase", "phase": "measuring throughput"})
    throughput = measure_throughput(run)  # this process: what the trials' steps cost
    pace = runs_pace(run, config, throughput)  # each process of the runs
    plan = run.plan(throughput)  # the trials' steps are a share of the steps this process would make
    runs_plan = run.plan(pace)
    budget_left = config.budget_minutes

    def fixed(selection: Selection) -> Selection:
        """With `fix`: the length every run trains, as the selection's choices and the budget each run keeps
        plan it at the runs' pace: its steps over the steps of an epoch, unrounded (rounded to 4 places, 10
        planned steps came back 9). A budget left too short for that plan fails the selection, as one too short
        for any fails it: without a length, each run planned its own at its own pace (a reviewer's find)."""
        if fix:
            plan = run.plan(pace, config.with_overrides(selection.overrides()))
            selection.fixed_epochs = plan.steps / plan.steps_per_epoch
        return selection

    def skipped(reason: str) -> Selection:
        recipe, why = shared_recipe(config, runs_plan, n_runs)
        return fixed(
            Selection(
                "skipped",
                reason,
                scale=config.lr_scale,  # a factor the config sets stands
                lr=runs_plan.lr,
                run_plan=runs_plan.to_dict(),
                budget_minutes_after=budget_left,
                recipe=recipe,
                recipe_reason=why,
                seconds=round(time.monotonic() - started, 1),
            )
        )

    if given:
        return skipped(given)
    if config.lr_search == "auto" and not runs_plan.lr_scaled:
        return skipped("the run trains in the recipe's regime: its LR stands")
    # what limits the trials: a budget the config sets, else the runs' own length (epochs × steps)
    limit = "the budget does not allow it" if config.budget_minutes else "the runs are too short for it"
    trial_steps = min(plan.steps, math.floor(SEARCH_SHARE * n_runs * plan.steps / config.lr_trials))
    if trial_steps < MIN_TRIAL_STEPS:
        if config.lr_search == "auto":
            return skipped(
                f"{limit}: {config.lr_trials} trials in {SEARCH_SHARE:.0%} of the training "
                f"time of {n_runs} run(s) get {trial_steps} steps each (< {MIN_TRIAL_STEPS})"
            )
        trial_steps = min(plan.steps, MIN_TRIAL_STEPS)
    # the recipe the runs will train (and the trials tune the LR for): planned for what each run's budget keeps
    plan, pinned = after_trials(run, config, pace, throughput, trial_steps, n_runs, time.monotonic() - started)
    if config.lr_search == "auto" and plan.steps < MIN_TRIAL_STEPS:
        return skipped(
            f"{limit}: once the trials are paid for, each run is left {plan.steps} steps (< {MIN_TRIAL_STEPS})"
        )
    trial_steps = min(trial_steps, plan.steps)
    run.model.set_heads(plan.head_layers, config.seed)  # every trial trains the heads the run will have
    initial = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    recipe, why = shared_recipe(config, plan, n_runs)
    if pinned and why:
        why = f"{why} ({pinned})"
    selection = Selection(
        "running", "", trial_steps=trial_steps, run_plan=plan.to_dict(), recipe=recipe, recipe_reason=why
    )
    for k in range(config.lr_trials):
        scale = next_scale(selection.trials)
        if scale is None:
            break
        run.model.load_state_dict(initial)
        set_seed(config.seed)  # every trial sees the same dropout masks and batch order
        # a trial's scale multiplies the planned LR, which holds the config's own lr_scale (within its bound)
        trial_config = config.with_overrides({"lr_scale": min(LR_SCALE_MAX, config.lr_scale * scale)})
        trial_plan = shortened(plan, trial_config, trial_steps, run.encoder_width)
        t0 = time.monotonic()

        def trial_event(event: dict[str, Any], k: int = k) -> None:
            if event["event"] in ("batch", "epoch"):
                emit({**event, "event": f"trial_{event['event']}", "trial": k + 1, "trials": config.lr_trials})

        loop = run_loop(
            run, trial_plan, Stepper.build(run, trial_plan), trial_event, control=LoopControl(should_stop=stop)
        )
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
    selection.status, selection.scale = "done", min(LR_SCALE_MAX, config.lr_scale * chosen["scale"])
    selection.seconds = round(time.monotonic() - started, 1)
    selection.reason = (
        f"best val macro-F1 {chosen['val_macro_f1']:.4f} at {chosen['scale']:g} × the planned LR "
        f"({len(selection.trials)} trials of {trial_steps} steps)"
    )
    if config.budget_minutes is not None:
        # Each run pays its share of the trials but keeps something to train with; never more than it asked for.
        selection.budget_minutes_after = min(
            config.budget_minutes,
            max(MIN_BUDGET_LEFT_MINUTES, round(config.budget_minutes - selection.seconds / 60 / n_runs, 2)),
        )
    fixed(selection)
    try:  # what the run will plan, at the throughput measured here (the run measures its own)
        selection.lr = run.plan(pace, config.with_overrides(selection.overrides())).lr
    except TrainerError:  # the budget left affords too little; the run reports it (with fix, fixed() raised first)
        selection.lr = None
    return selection
