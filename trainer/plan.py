"""Planning a run in optimizer steps: how long it trains, at which effective batch and learning rate, and which
regularisers it keeps, from the data size, the epochs or time budget, and the measured throughput.

The reference is the seed recipe (trainer/config.py): mBERT (hidden 768), batch 12 × accumulation 4 (effective
48), LR 2.5e-5, warm-up over 10% of the steps, R-Drop (α 1), layer-wise LR decay 0.9, up to 20 epochs with
patience 8, on a GPU, on ~7k texts: about 2,900 optimizer steps. A run that affords that much training gets
exactly the recipe. A run that does not (a CPU, a budget of minutes, a small dataset) is planned by these rules,
each applied only to the keys the config leaves unset (None); a key set in the config is used as given:

1. **Regularisers and the deep head** are for long runs (at least LONG_RUN_EPOCHS epochs): they fight
   overfitting late in a long run, while a short run underfits. R-Drop is kept when the run affords
   LONG_RUN_EPOCHS epochs *with it* (it feeds every batch twice, halving the epochs a budget buys; in a short
   run that second pass is better spent on more updates). Layer-wise LR decay costs no time, so it is kept when
   the run as planned trains LONG_RUN_EPOCHS epochs; in a shorter one its near-frozen lower layers would barely
   learn at all. The recipe's 3-layer MLP heads (dropout 0.25 between layers) likewise: a long run; a short one
   gets one linear layer per task, as plain fine-tuning has, which passes on what the encoder knows from the
   first step instead of first training two random hidden layers through dropout (bench/quality_loop.py, MiniLM
   with its own mean pooling: a loop seed's test macro-F1 48.4 against 46.6 with the MLP and last-4 pooling).
2. **Accumulation.** The recipe's 4, lowered (down to 1) while the run would make fewer than ENOUGH_UPDATES
   optimizer steps: a small dataset or a short budget gets more, smaller updates instead of a handful of big ones.
3. **Learning rate.** lr = 2.5e-5 × √(effective batch / 48) (the square-root scaling rule for Adam)
   × min(2, √(ENOUGH_UPDATES / steps)) when fewer steps remain (fewer updates must each move further)
   × 768 / encoder width, within [0.5, 4] (smaller encoders take larger rates: ELECTRA's published rates are
   3e-4 small, 1e-4 base, 5e-5 large) × `lr_scale` (what learning-rate selection chose on val; 1 without it).
   These rules are approximate: when they move the LR away from the recipe's own, LR selection
   (trainer/lr_search.py) checks the factor on val.
4. **Warm-up** covers `warmup_ratio` (the recipe's 10%) of the planned steps.
5. **Weight averaging.** A short run (under LONG_RUN_EPOCHS epochs) is validated, selected and kept as the
   exponential moving average of its weights over EMA_HORIZON_EPOCHS of an epoch's optimizer steps (decay
   1 − 1/horizon; until that many steps are made, the mean of the weights so far): its raised LR leaves the last
   weights noisy, and on the example dataset its val macro-F1 peaks early and then wanders by a point from
   epoch to epoch (bench/quality_loop.py). The epoch's curve keeps the plain weights' val macro-F1 beside the
   average's. A long run keeps its own weights, as the recipe does.
6. **Length.** Without a budget: `epochs` epochs. With `budget_minutes`: the epochs the budget affords at the
   throughput measured on batches spread over the epoch's sizes (`measure_throughput`), and its optimizer steps
   at the cost of one timed there (clipping and AdamW over every weight, once per `grad_accum` batches: the
   smaller the accumulation, the more an epoch pays for them, so the plan pays for the accumulation rule 2
   chooses; a short run's update of its weights' average after each step too), at most `epochs`; the
   validation pass after each epoch is part of the budget (bench/plan_pace.py: planned against real pace within
   3.2% at accumulation 1 to 3, against 7 to 20% too fast without them).
   The loop re-plans its remaining steps after each epoch from the time the epochs really took, and stops at
   DEADLINE_SLACK × the budget whatever happens. With `fixed_epochs`: that length, whatever the pace, with no
   deadline and no re-plan (an impact report's runs, planned once for the budget by the report's LR selection:
   each arm trains as long, and a machine slower than the selection measured makes them longer).

7. **Patience.** Early stopping reads val only (`patience` epochs without a better val macro-F1), as in the
   recipe, whose 8 are PATIENCE_SHARE of its 20 epochs. A run planned for fewer epochs waits the same share of
   them (rounded), at least MIN_PATIENCE: a budgeted CPU run of 12.5 epochs waits 5, not 8, so a run whose val
   peaked at epoch 5 stops at 10 instead of training to the end of its budget (bench/run_curves.py replays every
   committed study's curves: the stop kept each seed's best epoch).

The seeds of one request train one recipe (rules 1, 2 and 5), decided once by their LR selection
(trainer/lr_search.py); each plans its own length (rules 6 and 7) at the pace it measures.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from trainer.config import TrainConfig
from trainer.errors import TrainerError


@dataclass(frozen=True)
class Recipe:
    batch_size: int = 12
    grad_accum: int = 4
    lr: float = 2.5e-5
    width: int = 768
    rdrop_alpha: float = 1.0
    llrd_decay: float = 0.9
    head_layers: int = 3

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum


RECIPE = Recipe()
ENOUGH_UPDATES = 1000  # optimizer steps a run should make before accumulation may grow
LONG_RUN_EPOCHS = 10  # a run of at least this many epochs keeps R-Drop and LLRD
MAX_STEP_FACTOR = 2.0  # the most a short run's LR is raised for having few steps
WIDTH_FACTOR_RANGE = (0.5, 4.0)
RDROP_COST = 2.0  # an R-Drop step feeds its batch twice
BUDGET_USE = 0.95  # of the budget planned for steps and evaluations; the rest absorbs noise
DEADLINE_SLACK = 1.15  # the loop stops at this multiple of the budget, even mid-epoch
MIN_BUDGET_STEPS = 10  # a budget that affords fewer optimizer steps is refused
FORWARD_SHARE = 1 / 3  # an evaluation pass costs about a third of a training pass (no backward)
EMA_HORIZON_EPOCHS = 0.5  # a short run's weights are averaged over this share of an epoch's optimizer steps
EMA_MIN_HORIZON = 10  # optimizer steps: a tiny epoch still averages over a few
PATIENCE_SHARE = 0.4  # of the planned epochs without a better val macro-F1 before stopping: the recipe's 8 of 20
MIN_PATIENCE = 3


@dataclass(frozen=True)
class Throughput:
    """What training batches cost, measured before the run (trainer.steps.measure_throughput) or, in tests, given."""

    seconds_per_sample: float  # one forward + backward pass of one training sample, at the data's lengths
    eval_seconds: float  # one validation pass
    # one optimizer step (gradient clipping and AdamW over every weight), whatever the batch: what makes an
    # update cost more per sample the smaller the accumulation (0: not measured, as in runs recorded before it)
    step_seconds: float = 0.0
    average_seconds: float = 0.0  # one update of the weights' moving average, after each step of a run that keeps one

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in asdict(self).items()}

    def step_cost(self, averaged: bool) -> float:
        """What an optimizer step costs beside its batches: the step, and the average's update in a run that
        keeps one."""
        return self.step_seconds + (self.average_seconds if averaged else 0.0)


@dataclass(frozen=True)
class Plan:
    steps: int  # optimizer steps the run makes
    steps_per_epoch: int
    max_epochs: int  # epochs the loop may start (the last one may stop at `steps`)
    epoch_cap: int  # config.epochs: a re-planned budgeted run never trains longer
    batch_size: int
    grad_accum: int
    lr: float
    head_lr: float
    warmup_steps: int
    rdrop_alpha: float
    llrd_decay: float
    head_layers: int  # layers of each task's head (the model's heads are shaped to it before training)
    patience: int
    lr_scaled: bool  # a planning rule applied to the LR: outside the recipe's regime (LR selection may check it)
    ema_decay: float = 0.0  # the weights' moving average validated and kept (0: the weights themselves)
    soup_size: int = 1  # the best epochs kept for the greedy soup at the end (1: the best epoch alone)
    budget_seconds: float | None = None
    estimated_seconds: float | None = None  # steps + evaluations at the measured throughput
    throughput: dict[str, float] | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    @property
    def epochs(self) -> float:
        return self.steps / self.steps_per_epoch

    @property
    def evals_per_epoch(self) -> int:
        return evals_per_epoch(self.ema_decay > 0)

    @property
    def deadline_seconds(self) -> float | None:
        return self.budget_seconds * DEADLINE_SLACK if self.budget_seconds is not None else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(effective_batch=self.effective_batch, epochs=round(self.epochs, 3))
        return out


def evals_per_epoch(averaged: bool) -> int:
    """Validation passes at each epoch's end: a run that averages its weights also validates the plain ones
    (the curve shows both)."""
    return 2 if averaged else 1


def soup_passes(size: int) -> int:
    """Evaluation passes a soup of `size` ingredients costs at the end: one on val per candidate added to it,
    and the best epoch alone on val and test (what the soup is compared with)."""
    return size + 1 if size > 1 else 0


def planned_patience(epochs: float) -> int:
    """Epochs without a better val macro-F1 a run of `epochs` epochs waits before it stops (rule 7)."""
    return max(MIN_PATIENCE, math.floor(PATIENCE_SHARE * epochs + 0.5))


def width_factor(width: int) -> float:
    low, high = WIDTH_FACTOR_RANGE
    return min(high, max(low, RECIPE.width / max(1, width)))


def step_factor(steps: int) -> float:
    return min(MAX_STEP_FACTOR, math.sqrt(ENOUGH_UPDATES / steps)) if steps < ENOUGH_UPDATES else 1.0


def planned_lr(config: TrainConfig, effective_batch: int, steps: int, width: int) -> tuple[float, bool]:
    """The LR the rules give (times config.lr_scale), and whether any rule applied (the run is outside the
    recipe's regime, where its LR was tuned, even when the factors happen to cancel out)."""
    if config.lr is not None:
        return config.lr, False
    factors = (math.sqrt(effective_batch / RECIPE.effective_batch), step_factor(steps), width_factor(width))
    return RECIPE.lr * math.prod(factors) * config.lr_scale, any(abs(f - 1.0) > 1e-9 for f in factors)


def plan_run(
    config: TrainConfig,
    *,
    n_train: int,
    batches_per_epoch: int,
    encoder_width: int,
    throughput: Throughput | None = None,
) -> Plan:
    """The plan of one run. `n_train`: samples per epoch (after oversampling); `batches_per_epoch`: micro-batches
    of `config.batch_size`; `throughput` is needed when the config has a budget."""
    fixed = config.fixed_epochs  # the length given: no budget is planned, nor re-planned at the run's pace
    budget = config.budget_minutes * 60 if config.budget_minutes is not None and fixed is None else None
    if budget is not None and throughput is None:
        raise ValueError("a budgeted plan needs the measured throughput")
    reasons: list[str] = []

    def affordable_epochs(rdrop: bool, accum: int, evals: int = 1, soup: int = 1) -> float:
        if fixed is not None:
            return min(float(config.epochs), fixed)
        if budget is None or throughput is None:
            return float(config.epochs)
        per_epoch = n_train * throughput.seconds_per_sample * (RDROP_COST if rdrop else 1.0)
        # its optimizer steps, each with an update of the weights' average in a run that validates it (evals 2)
        per_epoch += math.ceil(batches_per_epoch / accum) * throughput.step_cost(averaged=evals > 1)
        # `evals` validation passes per epoch, one more at a stop mid-epoch and one after reloading the best epoch,
        # and a soup's (one per candidate, the best epoch alone on val and test)
        spare = budget * BUDGET_USE - (2 + soup_passes(soup)) * throughput.eval_seconds
        return max(0.0, spare / (per_epoch + evals * throughput.eval_seconds))

    def accumulation(epochs: float) -> int:
        """Rule 2: the recipe's accumulation, lowered while the run would make fewer than ENOUGH_UPDATES steps."""
        if config.grad_accum is not None:
            return config.grad_accum
        accum, micro_batches = RECIPE.grad_accum, epochs * batches_per_epoch
        while accum > 1 and micro_batches / accum < ENOUGH_UPDATES:
            accum -= 1
        return accum

    def length(accum: int) -> tuple[float, float, bool, int, int]:
        """What a budget affords when each optimizer step takes `accum` micro-batches: R-Drop (α), the epochs,
        whether the weights are averaged, the validation passes per epoch, the soup's size."""
        if config.rdrop_alpha is None:
            rdrop = RECIPE.rdrop_alpha if min(config.epochs, affordable_epochs(True, accum)) >= LONG_RUN_EPOCHS else 0.0
        else:
            rdrop = config.rdrop_alpha
        epochs = min(float(config.epochs), affordable_epochs(rdrop > 0, accum))
        averaged = config.ema_decay > 0 if config.ema_decay is not None else epochs < LONG_RUN_EPOCHS
        evals = evals_per_epoch(averaged)
        # off unless asked for: in the quality study it never beat a seed's best epoch on val (README, rule 6)
        soup = config.soup_size or 1
        if averaged or soup > 1:
            epochs = min(float(config.epochs), affordable_epochs(rdrop > 0, accum, evals=evals, soup=soup))
        return rdrop, epochs, averaged, evals, soup

    # The steps' cost depends on the accumulation and the accumulation on the epochs the budget affords: from the
    # recipe's, until they agree (a measured step cost of 0 agrees at once). They may not: a smaller accumulation
    # can turn R-Drop off, whose saved passes buy the epochs that raise the accumulation again. Then the smallest
    # accumulation met is planned, and paid for: the most updates, within the budget.
    accum = config.grad_accum or RECIPE.grad_accum
    met: list[int] = []
    while accum not in met:
        met.append(accum)
        rdrop, epochs, averaged, evals, soup = length(accum)
        accum = accumulation(epochs)
    if accum != met[-1]:  # a cycle: no accumulation pays for the epochs that choose it
        accum = min(met[met.index(accum) :])
        rdrop, epochs, averaged, evals, soup = length(accum)
    if config.rdrop_alpha is None:
        with_rdrop = min(config.epochs, affordable_epochs(True, accum))
        reasons.append(
            f"R-Drop {'kept' if rdrop else 'off'}: the run affords {with_rdrop:.1f} epochs with it "
            f"({'≥' if rdrop else '<'} {LONG_RUN_EPOCHS})"
        )
    if budget is not None:
        reasons.append(f"{epochs:.2f} epochs: what {config.budget_minutes:g} min afford (at most {config.epochs})")
    elif fixed is not None:
        reasons.append(f"{epochs:.2f} epochs: the length given (fixed_epochs, at most {config.epochs}), at any pace")
    long_run = epochs >= LONG_RUN_EPOCHS
    if config.llrd_decay is None:
        llrd = RECIPE.llrd_decay if long_run else 1.0
        reasons.append(f"layer-wise LR decay {'kept' if long_run else 'off'} ({epochs:.1f} epochs)")
    else:
        llrd = config.llrd_decay
    if config.head_layers is None:
        head_layers = RECIPE.head_layers if long_run else 1
        reasons.append(
            f"heads: {f'the recipe’s {head_layers}-layer MLP' if long_run else 'linear'} ({epochs:.1f} epochs)"
        )
    else:
        head_layers = config.head_layers

    micro_batches = epochs * batches_per_epoch
    if config.grad_accum is None:
        reasons.append(
            f"accumulation {accum}: {micro_batches / accum:.0f} optimizer steps "
            f"({'≥' if micro_batches / accum >= ENOUGH_UPDATES else '<'} {ENOUGH_UPDATES})"
            + ("" if accumulation(epochs) == accum else "; the smallest of the accumulations that choose each other")
        )
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    steps = math.floor(epochs * steps_per_epoch + 1e-9)
    if config.ema_decay is None:
        horizon = max(EMA_MIN_HORIZON, EMA_HORIZON_EPOCHS * steps_per_epoch)
        ema = 1 - 1 / horizon if averaged else 0.0
        reasons.append(
            f"weights averaged (EMA {ema:.4f}: over {horizon:.0f} steps, {EMA_HORIZON_EPOCHS:g} epoch) "
            f"({epochs:.1f} epochs)"
            if averaged
            else f"weight averaging off ({epochs:.1f} epochs)"
        )
    else:
        ema = config.ema_decay
    if config.patience is None:
        patience = planned_patience(epochs)
        reasons.append(
            f"patience {patience}: {PATIENCE_SHARE:.0%} of {epochs:.1f} epochs, rounded (the recipe's 8 of 20; "
            f"at least {MIN_PATIENCE})"
        )
    else:
        patience = config.patience
    # refused only where the budget is what limits the run: a run its `epochs` bound (a small dataset, one
    # epoch) makes the same steps at any budget, and a generous budget was refused for "affording" them
    if budget is not None and steps < MIN_BUDGET_STEPS and epochs < config.epochs - 1e-9:
        raise TrainerError(
            f"config.budget_minutes: {config.budget_minutes:g} min afford {steps} optimizer steps at the "
            f"measured throughput; give at least {MIN_BUDGET_STEPS} steps' worth",
            field="config.budget_minutes",
        )
    steps = max(1, steps)
    lr, scaled = planned_lr(config, config.batch_size * accum, steps, encoder_width)
    if config.lr is None:
        reasons.append(
            f"LR {lr:.3g}: recipe {RECIPE.lr:g} × √({config.batch_size * accum}/{RECIPE.effective_batch}) "
            f"× step factor {step_factor(steps):.2f} × width factor {width_factor(encoder_width):.2f} "
            f"× lr_scale {config.lr_scale:g}"
        )
    estimated = None
    if throughput is not None:
        cost = RDROP_COST if rdrop > 0 else 1.0
        samples = steps * config.batch_size * accum
        passes = math.ceil(epochs) * evals + 1 + soup_passes(soup)
        estimated = (
            samples * throughput.seconds_per_sample * cost
            + steps * throughput.step_cost(averaged=ema > 0)
            + passes * throughput.eval_seconds
        )
    return Plan(
        **_over_steps(config, steps, steps_per_epoch, lr, scaled),
        steps_per_epoch=steps_per_epoch,
        epoch_cap=config.epochs,
        batch_size=config.batch_size,
        grad_accum=accum,
        rdrop_alpha=rdrop,
        llrd_decay=llrd,
        head_layers=head_layers,
        ema_decay=ema,
        soup_size=soup,
        patience=patience,
        budget_seconds=budget,
        estimated_seconds=round(estimated, 1) if estimated is not None else None,
        throughput=throughput.to_dict() if throughput is not None else None,
        reasons=reasons,
    )


def _over_steps(config: TrainConfig, steps: int, steps_per_epoch: int, lr: float, scaled: bool) -> dict[str, Any]:
    """What follows from the number of optimizer steps: the epochs they span, the LR (the heads' too), the warm-up."""
    return {
        "steps": steps,
        "max_epochs": max(1, math.ceil(steps / steps_per_epoch - 1e-9)),
        "lr": lr,
        "head_lr": config.head_lr if config.head_lr is not None else lr,
        "warmup_steps": round(config.warmup_ratio * steps),
        "lr_scaled": scaled,
    }


def shortened(plan: Plan, config: TrainConfig, steps: int, encoder_width: int) -> Plan:
    """The same plan (batch, accumulation, regularisers) over fewer steps, its LR re-planned for them: what an
    LR-selection trial trains."""
    lr, scaled = planned_lr(config, plan.effective_batch, steps, encoder_width)
    return replace(
        plan,
        **_over_steps(config, steps, plan.steps_per_epoch, lr, scaled),
        budget_seconds=None,
        estimated_seconds=None,
        patience=0,
        soup_size=1,  # a trial is compared by its own weights
        reasons=[*plan.reasons, f"LR-selection trial: {steps} steps"],
    )


def replanned_steps(plan: Plan, *, steps_done: int, epochs_done: int, seconds_used: float, eval_seconds: float) -> int:
    """After an epoch of a budgeted run: the total steps that end the run within the budget at the pace the run
    has really had (its steps and its validation passes so far), at most `epoch_cap` epochs. Equal to
    `steps_done` when no further step fits: the run stops."""
    if plan.budget_seconds is None or steps_done == 0 or epochs_done == 0:
        return plan.steps
    per_step = max(1e-9, seconds_used - eval_seconds) / steps_done
    per_eval = eval_seconds / epochs_done
    soup_seconds = soup_passes(plan.soup_size) * per_eval / plan.evals_per_epoch  # the soup's passes at the end
    left = plan.budget_seconds * BUDGET_USE - seconds_used - soup_seconds

    def cost(more: int) -> float:  # the steps, and a validation pass at each epoch end and at the stop
        evals = math.ceil((steps_done + more) / plan.steps_per_epoch - 1e-9) - epochs_done if more else 0
        return more * per_step + max(1, evals) * per_eval * (more > 0)

    low, high = 0, max(0, plan.epoch_cap * plan.steps_per_epoch - steps_done)
    while low < high:  # the most steps whose cost fits what is left (cost grows with the steps)
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid) <= left else (low, mid - 1)
    return steps_done + low


def search_wanted(config: TrainConfig) -> bool:
    """Whether a request should queue LR selection at all (trainer/lr_search.py; it may still skip once it has
    measured the run it would tune)."""
    return config.lr is None and config.lr_search != "off"


class Clock:
    """Wall time since the run's training began (the budget's clock)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started
