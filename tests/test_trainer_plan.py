"""The planning rule (trainer/plan.py): steps, LR and warm-up scaling, accumulation, which regularisers a short
budget keeps, re-planning a budgeted run; and the settings a GPU run gets (the seed recipe, unchanged)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from tests.trainer_fixtures import fast_config, synthetic_split, tiny_encoder  # noqa: F401
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.plan import (
    BUDGET_USE,
    ENOUGH_UPDATES,
    RECIPE,
    Throughput,
    plan_run,
    planned_patience,
    replanned_steps,
    search_wanted,
)

# The recipe's own setting: ~7,000 texts (584 batches of 12), mBERT (hidden 768).
RECIPE_DATA = {"n_train": 7000, "batches_per_epoch": 584, "encoder_width": 768}
# An H200-class GPU on mBERT at length 320 with AMP: ~300 samples/s one pass; a val pass of 900 texts in ~2 s.
GPU = Throughput(seconds_per_sample=1 / 300, eval_seconds=2.0)
# This 2-core CPU on all-MiniLM-L6-v2 at length 64: ~25 samples/s one pass; 500 val texts in ~8 s.
CPU_MINILM = Throughput(seconds_per_sample=1 / 25, eval_seconds=8.0)


def test_a_gpu_run_gets_the_seed_recipe() -> None:
    """The defaults, on a GPU, with or without a budget that affords the recipe: 20 epochs of batch 12 × 4
    at LR 2.5e-5, warm-up 10%, R-Drop, LLRD 0.9, patience 8, and no LR selection (the recipe's LR stands)."""
    config = TrainConfig()  # mBERT, max length 320
    for budget in (None, 180):
        plan = plan_run(
            config.with_overrides({"budget_minutes": budget}), **RECIPE_DATA, throughput=GPU if budget else None
        )
        assert (plan.batch_size, plan.grad_accum, plan.effective_batch) == (12, 4, 48)
        assert plan.lr == pytest.approx(2.5e-5) and plan.head_lr == plan.lr
        assert (plan.rdrop_alpha, plan.llrd_decay, plan.patience) == (1.0, 0.9, 8)
        assert plan.head_layers == 3  # the recipe's MLP heads
        assert plan.ema_decay == 0.0 and plan.soup_size == 1  # the recipe keeps its best epoch's own weights
        assert plan.steps == 20 * math.ceil(584 / 4) == 2920 and plan.epochs == 20
        assert plan.warmup_steps == 292
        assert not plan.lr_scaled  # so `lr_search: auto` runs no trials
    assert plan.estimated_seconds is not None and plan.estimated_seconds < 180 * 60 * BUDGET_USE


def test_a_short_cpu_budget_drops_the_regularisers_and_takes_more_smaller_updates() -> None:
    """all-MiniLM-L6-v2 on this CPU, 15 minutes, 4,000 originals + 1,400 variants: under 4 epochs fit."""
    config = TrainConfig(encoder="minilm", max_length=64, budget_minutes=15)
    plan = plan_run(config, n_train=5400, batches_per_epoch=450, encoder_width=384, throughput=CPU_MINILM)
    # with R-Drop the budget would buy 1.9 epochs, without 3.8: both < 10, so neither R-Drop nor LLRD
    assert plan.rdrop_alpha == 0.0 and plan.llrd_decay == 1.0
    assert plan.head_layers == 1 and any(r.startswith("heads: linear") for r in plan.reasons)
    # each epoch validates twice (the weights' moving average and the plain weights, below), and twice at the end
    epochs = (15 * 60 * BUDGET_USE - 2 * 8) / (5400 / 25 + 2 * 8)
    assert plan.epochs == pytest.approx(epochs, abs=1 / 450)
    assert plan.grad_accum == 1 and plan.steps == math.floor(epochs * 450) == 1627  # ≥ 1,000 only without accum
    # √(12/48) for the smaller batch, ×2 for half the recipe encoder's width; enough steps: no step factor
    assert plan.lr == pytest.approx(2.5e-5 * 0.5 * 2.0) and plan.lr_scaled
    assert plan.warmup_steps == round(0.1 * plan.steps)
    # no soup unless asked for; asked for, its passes at the end (3 candidates on val, the best epoch alone on val
    # and test) come out of the budget
    assert plan.soup_size == 1
    souped = plan_run(
        config.with_overrides({"soup_size": 4}),
        n_train=5400,
        batches_per_epoch=450,
        encoder_width=384,
        throughput=CPU_MINILM,
    )
    assert souped.soup_size == 4
    assert souped.steps == math.floor((15 * 60 * BUDGET_USE - (2 + 5) * 8) / (5400 / 25 + 2 * 8) * 450) == 1549
    assert plan.estimated_seconds <= 15 * 60 * BUDGET_USE + 1
    assert any("R-Drop off" in r for r in plan.reasons)
    # its weights are validated and kept as their moving average over half an epoch (225 of 450 steps)
    assert plan.ema_decay == pytest.approx(1 - 1 / 225) and any("weights averaged" in r for r in plan.reasons)
    assert (
        plan_run(
            config.with_overrides({"ema_decay": 0}),
            n_train=5400,
            batches_per_epoch=450,
            encoder_width=384,
            throughput=CPU_MINILM,
        ).ema_decay
        == 0.0
    )  # set in the config: as given
    tiny = plan_run(TrainConfig(epochs=3), n_train=60, batches_per_epoch=5, encoder_width=384)
    assert tiny.ema_decay == pytest.approx(1 - 1 / 10), "a tiny epoch still averages over 10 steps"


def test_patience_is_the_recipes_share_of_the_planned_epochs() -> None:
    """The recipe waits 8 of its 20 epochs; a budgeted CPU run planned for 12.5 epochs waited 8 as well, so a
    run whose val peaked at epoch 5 (each seed of the quality study's tenth run) trained to the end of its budget.
    It waits 40% of the epochs it is planned for, rounded, at least 3; a patience the config sets stands."""
    minilm = TrainConfig(encoder="minilm", max_length=64)
    data = {"n_train": 4032, "batches_per_epoch": 336, "encoder_width": 384}
    # the tenth run's measured pace (75 samples/s one pass, a val pass in 2.3 s): 12.3 minutes afford 12.5 epochs
    pace = Throughput(seconds_per_sample=0.013263, eval_seconds=2.2966)
    budgeted = plan_run(minilm.with_overrides({"budget_minutes": 12.3}), **data, throughput=pace)
    assert 12 < budgeted.epochs < 13 and budgeted.patience == 5
    assert any(r.startswith("patience 5: 40% of 12.") for r in budgeted.reasons)
    assert plan_run(minilm.with_overrides({"epochs": 20}), **data).patience == 8  # the recipe's length: its 8
    assert plan_run(minilm.with_overrides({"epochs": 30}), **data).patience == 12
    assert plan_run(minilm.with_overrides({"epochs": 4}), **data).patience == 3  # at least 3
    # rounded half up: 8.75 epochs wait 4, 16.25 wait 7
    assert [planned_patience(e) for e in (1, 7.4, 8.75, 12.52, 16.25, 20)] == [3, 3, 4, 5, 7, 8]
    for given in (0, 2, 9):
        plan = plan_run(minilm.with_overrides({"budget_minutes": 12.3, "patience": given}), **data, throughput=pace)
        assert plan.patience == given and not any(r.startswith("patience") for r in plan.reasons)


def test_accumulation_shrinks_until_the_run_makes_enough_updates() -> None:
    # 6 epochs of 584 batches: 3,504 batches → accum 4 gives 876 steps (< 1,000), accum 3 gives 1,168
    plan = plan_run(TrainConfig(epochs=6), **RECIPE_DATA)
    assert plan.grad_accum == 3 and plan.steps == 6 * math.ceil(584 / 3) >= ENOUGH_UPDATES
    # the run: 4 epochs of ~2,600 texts: even accumulation 1 gives only 868 steps
    small = plan_run(TrainConfig(epochs=4), n_train=2600, batches_per_epoch=217, encoder_width=768)
    assert small.grad_accum == 1 and small.steps == 868
    # fewer steps than ENOUGH_UPDATES: each moves further (√(1000/868)), at the √ batch rule
    assert small.lr == pytest.approx(2.5e-5 * math.sqrt(12 / 48) * math.sqrt(1000 / 868))
    # a set accumulation is used as given
    assert (
        plan_run(TrainConfig(epochs=4, grad_accum=4), n_train=2600, batches_per_epoch=217, encoder_width=768).steps
        == 4 * 55
    )


def test_lr_rules_are_capped_and_a_given_lr_is_used_as_given() -> None:
    tiny = plan_run(TrainConfig(epochs=1), n_train=120, batches_per_epoch=10, encoder_width=64)
    # 10 steps: the step factor stops at 2; width 64 would say ×12: capped at ×4
    assert tiny.lr == pytest.approx(2.5e-5 * math.sqrt(12 / 48) * 2 * 4)
    large = plan_run(TrainConfig(), n_train=7000, batches_per_epoch=584, encoder_width=1024)
    assert large.lr == pytest.approx(2.5e-5 * 768 / 1024) and large.lr_scaled
    scaled = plan_run(TrainConfig(lr_scale=2.0), **RECIPE_DATA)
    assert scaled.lr == pytest.approx(5e-5) and not scaled.lr_scaled  # LR selection's factor, not a rule
    given = plan_run(TrainConfig(epochs=1, lr=3e-4, lr_scale=7.0), n_train=120, batches_per_epoch=10, encoder_width=64)
    assert given.lr == 3e-4 and not given.lr_scaled and not search_wanted(TrainConfig(lr=3e-4))
    assert search_wanted(TrainConfig()) and not search_wanted(TrainConfig(lr_search="off"))
    # factors that cancel (√(12/48) × width 2) still mark the run as outside the recipe's regime
    cancel = plan_run(TrainConfig(epochs=20, grad_accum=1), n_train=7000, batches_per_epoch=584, encoder_width=384)
    assert cancel.lr == pytest.approx(RECIPE.lr) and cancel.lr_scaled


def test_regularisers_are_kept_exactly_when_the_budget_affords_ten_epochs_with_them() -> None:
    def plan(seconds: float, **extra: object) -> object:
        return plan_run(
            TrainConfig(budget_minutes=seconds / 60 / BUDGET_USE, **extra),
            n_train=1000,
            batches_per_epoch=84,
            encoder_width=768,
            throughput=Throughput(seconds_per_sample=0.01, eval_seconds=1.0),
        )

    # an R-Drop epoch costs 1000 × 0.01 × 2 + 1 (val) = 21 s; ten need 10 × 21 + 2 = 212 s of 95% of the budget
    # (a long run makes no soup: nothing is reserved for one)
    long, short = plan(213), plan(205)
    assert (long.rdrop_alpha, long.llrd_decay) == (1.0, 0.9) and long.epochs >= 10
    # without R-Drop 205 s buy 18 epochs: long enough for LLRD (free), not for R-Drop (it would halve them)
    assert (short.rdrop_alpha, short.llrd_decay) == (0.0, 0.9) and short.epochs > 10
    very_short = plan(95)  # 8.4 epochs even without R-Drop: neither
    assert (very_short.rdrop_alpha, very_short.llrd_decay) == (0.0, 1.0)
    forced = plan(205, rdrop_alpha=1.0, llrd_decay=0.8)
    assert (forced.rdrop_alpha, forced.llrd_decay) == (1.0, 0.8) and forced.epochs < 10
    assert plan_run(TrainConfig(epochs=8), **RECIPE_DATA).rdrop_alpha == 0.0  # 8 epochs: short even on a GPU


def test_the_head_is_the_recipes_mlp_in_a_long_run_and_linear_in_a_short_one_unless_set() -> None:
    """Like LLRD, by the epochs the run as planned trains: 10 or more keep the recipe's 3-layer heads."""
    assert plan_run(TrainConfig(epochs=10), **RECIPE_DATA).head_layers == 3
    assert plan_run(TrainConfig(epochs=9), **RECIPE_DATA).head_layers == 1
    for layers in (1, 2, 4):
        assert plan_run(TrainConfig(epochs=3, head_layers=layers), **RECIPE_DATA).head_layers == layers
        assert plan_run(TrainConfig(epochs=20, head_layers=layers), **RECIPE_DATA).head_layers == layers


def test_a_budget_that_affords_almost_nothing_is_refused_naming_the_key() -> None:
    with pytest.raises(TrainerError) as err:
        plan_run(
            TrainConfig(budget_minutes=0.05),
            n_train=5400,
            batches_per_epoch=450,
            encoder_width=384,
            throughput=CPU_MINILM,
        )
    assert err.value.field == "config.budget_minutes"
    with pytest.raises(ValueError):
        plan_run(TrainConfig(budget_minutes=5), **RECIPE_DATA)  # a budget needs a measured throughput


def test_a_budgeted_run_replans_its_steps_from_the_time_its_epochs_really_took() -> None:
    config = TrainConfig(budget_minutes=10, epochs=20)
    plan = plan_run(
        config,
        n_train=1200,
        batches_per_epoch=100,
        encoder_width=768,
        throughput=Throughput(seconds_per_sample=0.1, eval_seconds=5.0),
    )
    assert plan.grad_accum == 1 and plan.steps_per_epoch == 100
    # the first epoch ran twice as slowly as measured: the rest shrinks to what the budget still holds
    slow = replanned_steps(plan, steps_done=100, epochs_done=1, seconds_used=245.0, eval_seconds=5.0)
    per_step = 2.4
    assert slow < plan.steps and (slow - 100) * per_step + 5 * math.ceil((slow - 100) / 100) <= 600 * BUDGET_USE - 245
    # twice as fast: more steps, never more than `epochs` epochs
    fast = replanned_steps(plan, steps_done=100, epochs_done=1, seconds_used=65.0, eval_seconds=5.0)
    assert plan.steps < fast <= 20 * 100
    # out of time: no further step
    assert replanned_steps(plan, steps_done=100, epochs_done=1, seconds_used=600.0, eval_seconds=5.0) == 100
    # a soup's passes at the end stay reserved: 4 ingredients cost 5 passes of 2.5 s (the epoch's 5 s of
    # validation held two, the plain weights' and their average's), as if the budget were 12.5 s shorter
    assert plan.soup_size == 1 and plan.evals_per_epoch == 2 and plan.budget_seconds is not None
    souped = replace(plan, soup_size=4)
    shorter = replace(plan, budget_seconds=plan.budget_seconds - 12.5 / BUDGET_USE)
    for used in (150.0, 245.0, 400.0):
        with_soup = replanned_steps(souped, steps_done=100, epochs_done=1, seconds_used=used, eval_seconds=5.0)
        assert with_soup == replanned_steps(shorter, steps_done=100, epochs_done=1, seconds_used=used, eval_seconds=5.0)
        assert with_soup < replanned_steps(plan, steps_done=100, epochs_done=1, seconds_used=used, eval_seconds=5.0)
    unbudgeted = plan_run(TrainConfig(epochs=3), **RECIPE_DATA)
    assert (
        replanned_steps(unbudgeted, steps_done=10, epochs_done=1, seconds_used=1e6, eval_seconds=1) == unbudgeted.steps
    )


def test_throughput_is_timed_on_batches_spread_over_the_epochs_sizes() -> None:
    """A batch's cost is not proportional to its size; timed on the first few batches, of whatever sizes they
    happened to have, two seeds of one request measured 7.5 and 10.7 epochs in the same budget. The batches
    timed are spread over the epoch's range of sizes, so their mean cost × the number of batches is the epoch's,
    whatever the cost's shape."""
    import random

    from trainer.steps import spread_by_size

    rng = random.Random(0)
    batches = [list(range(rng.randint(1, 64))) for _ in range(300)]
    chosen = spread_by_size(batches, len, 8)
    assert len(chosen) == 8 and all(b in batches for b in chosen)
    sizes = sorted(len(b) for b in batches)
    assert min(map(len, chosen)) <= sizes[len(sizes) // 10] and max(map(len, chosen)) >= sizes[-len(sizes) // 10]
    for cost in (lambda n: 0.5 + n, lambda n: 0.5 + n * n):  # a fixed overhead per batch; attention's square
        estimate = len(batches) * sum(cost(len(b)) for b in chosen) / len(chosen)
        assert estimate == pytest.approx(sum(cost(len(b)) for b in batches), rel=0.05)
        first = len(batches) * sum(cost(len(b)) for b in batches[:7]) / 7  # what the first seven batches said
        assert abs(first / sum(cost(len(b)) for b in batches) - 1) > 0.05
    assert spread_by_size(batches[:3], len, 8) == sorted(batches[:3], key=len)


def test_a_budget_pays_for_its_optimizer_steps_and_the_accumulation_it_plans_with() -> None:
    """An optimizer step (clipping, AdamW over every weight) comes once per `grad_accum` batches: the start-up
    measurement left it out, and read training 6.6% faster than it ran at accumulation 3 and 20.4% at 1, which
    rule 2 gives short runs (bench/plan_pace.py). A plan pays for the steps of the accumulation it chooses: its
    estimate fits the budget and it affords fewer epochs the dearer a step (a throughput with no step timed, as
    in the tests above and in runs recorded before, plans as it did)."""
    config = TrainConfig(encoder="minilm", max_length=64, budget_minutes=6)
    data = {"n_train": 4032, "batches_per_epoch": 336, "encoder_width": 384}
    pace = Throughput(seconds_per_sample=0.0163, eval_seconds=2.8)
    before = plan_run(config, **data, throughput=pace)
    plan = plan_run(config, **data, throughput=Throughput(0.0163, 2.8, step_seconds=0.045, average_seconds=0.015))
    assert plan.grad_accum == 1 and before.grad_accum == 1  # a short run: every batch an update
    assert plan.ema_decay > 0 and plan.epochs < before.epochs
    # samples, 336 steps each with an update of the average, two validation passes (the average's, the weights')
    per_epoch = 4032 * 0.0163 + 336 * (0.045 + 0.015) + 2 * 2.8
    assert plan.epochs == pytest.approx((6 * 60 * BUDGET_USE - 2 * 2.8) / per_epoch, abs=1 / 336)
    assert plan.estimated_seconds is not None and plan.estimated_seconds <= 6 * 60 * BUDGET_USE + 1
    assert plan.estimated_seconds == pytest.approx(
        plan.steps * 12 * 0.0163 + plan.steps * 0.06 + (math.ceil(plan.epochs) * 2 + 1) * 2.8, abs=0.06
    )
    # a longer budget: the accumulation the plan pays for is the one it keeps
    for minutes in (12, 17, 25, 40):
        long = plan_run(
            config.with_overrides({"budget_minutes": minutes}), **data, throughput=Throughput(0.0163, 2.8, 0.045)
        )
        assert long.estimated_seconds is not None and long.estimated_seconds <= minutes * 60 * BUDGET_USE + 1


def test_when_accumulations_choose_each_other_the_smallest_is_planned_and_paid_for() -> None:
    """A smaller accumulation's dearer steps can turn R-Drop off, and the passes R-Drop no longer takes buy the
    epochs that raise the accumulation again (7 minutes here: accumulation 1 plans 10.3 epochs without R-Drop,
    enough for 2; accumulation 2 affords R-Drop, whose fewer epochs call for 1). The plan takes the smallest and
    pays for it, and its reasons say what it trains."""
    config = TrainConfig(encoder="minilm", max_length=64, budget_minutes=7)
    pace = Throughput(0.01, 1.0, step_seconds=0.02)
    plan = plan_run(config, n_train=1800, batches_per_epoch=150, encoder_width=384, throughput=pace)
    assert plan.grad_accum == 1
    assert any(r.endswith("the smallest of the accumulations that choose each other") for r in plan.reasons)
    rdrop = next(r for r in plan.reasons if r.startswith("R-Drop"))
    kept = float(rdrop.split("affords ")[1].split(" epochs")[0])
    assert (kept >= 10) == (plan.rdrop_alpha > 0) == rdrop.startswith("R-Drop kept"), rdrop
    assert plan.estimated_seconds is not None and plan.estimated_seconds <= 7 * 60 * BUDGET_USE + 1


def test_the_throughput_measurement_times_an_optimizer_step_and_leaves_the_weights_as_they_were(
    tiny_encoder: str,
) -> None:
    import torch

    from trainer.steps import measure_throughput, prepare

    run = prepare(fast_config(tiny_encoder, budget_minutes=1), synthetic_split(48, 24, 12))
    weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
    measured = measure_throughput(run)
    assert measured.step_seconds > 0 and measured.average_seconds > 0 and measured.seconds_per_sample > 0
    assert all(torch.equal(weights[k], v) for k, v in run.model.state_dict().items())
    assert all(p.grad is None for p in run.model.parameters())
    # gradients that are not finite (an fp16 overflow in the calibration) never reach a weight
    from trainer.steps import timed_optimizer_step

    for p in run.model.parameters():
        p.grad = torch.full_like(p, float("nan"))
    timed_optimizer_step(run)
    assert all(torch.equal(weights[k], v) for k, v in run.model.state_dict().items())


def test_a_fixed_length_is_planned_at_any_pace_and_never_replanned() -> None:
    """`fixed_epochs` (an impact report's arms: one length for every run, planned once by the report's LR
    selection): the same steps whatever pace the run measures, budget or not, at most `epochs`, with no budget to
    re-plan against; the regularisers follow that length as they follow a budget's."""
    config = TrainConfig(encoder="minilm", max_length=64, budget_minutes=15, fixed_epochs=2.5)
    plans = [
        plan_run(config, n_train=5400, batches_per_epoch=450, encoder_width=384, throughput=pace)
        for pace in (CPU_MINILM, replace(CPU_MINILM, seconds_per_sample=1 / 100), None)
    ]
    assert {p.steps for p in plans} == {math.floor(2.5 * math.ceil(450 / plans[0].grad_accum))}
    assert {p.epochs for p in plans} == {2.5} and {p.budget_seconds for p in plans} == {None}
    assert plans[0].rdrop_alpha == 0.0 and plans[0].head_layers == 1  # a short run's recipe
    assert any("the length given" in r for r in plans[0].reasons)
    assert replanned_steps(plans[0], steps_done=100, epochs_done=1, seconds_used=9999.0, eval_seconds=8.0) == (
        plans[0].steps
    )
    capped = plan_run(config.with_overrides({"epochs": 2}), n_train=5400, batches_per_epoch=450, encoder_width=384)
    assert capped.epochs == 2
