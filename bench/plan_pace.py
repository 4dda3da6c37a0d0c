"""How fast a budgeted plan thinks training runs, against how fast it runs: the start-up measurement
(trainer.steps.measure_throughput) before and after it timed the optimizer step, at each accumulation a short
CPU run is planned with.

A budget buys the epochs the measured pace affords (trainer/plan.py, rule 6): a pace read too fast plans too
long a run, whose LR, warm-up and recipe (the long-run recipe at 10 epochs, rule 1) are then planned for steps it
will not make; the loop re-plans its length after each epoch, but not the recipe. The measurement times forward
and backward passes over batches spread over the epoch's sizes; an optimizer step (clipping, AdamW over every
weight) comes once per `grad_accum` batches, so it costs more per sample the smaller the accumulation, and
rule 2 lowers the accumulation for short runs.

On the example dataset's train split (4,000 texts; the encoder all-MiniLM-L6-v2 when its package is installed,
else a random BERT of its shape; max length 64, batch 12, linear heads, no R-Drop, 2 threads), for each
accumulation in 1, 2 and 3: measure as a run would, then train one epoch with the Stepper as the loop does
(forward, loss, backward, and every `grad_accum` batches clipping, the optimizer, the scheduler and the update of
the weights' moving average that a short run keeps), timed. The planned pace is the measured seconds per sample
plus, with the step timed, the step's and the average's update's seconds shared by the samples of one step;
the error is planned ÷ real − 1 (negative: the plan reads training as faster than it is). Writes
bench/results/plan_pace.json (not with --quick, which trains a tenth of an epoch).

    .venv/bin/python bench/plan_pace.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()  # before torch: offline hubs, passive OpenMP (see bench_env.py)

RESULTS = ROOT / "bench" / "results" / "plan_pace.json"
ACCUMULATIONS = (1, 2, 3)
TARGET_ERROR = 5.0  # percent, either way


def load_data() -> Any:
    from cpu_precision import load_splits

    from trainer.examples import SplitData

    tasks, splits = load_splits()
    return SplitData(tasks, splits["train"], splits["val"], splits["test"], "political_social_media")


def one_accumulation(encoder: str, data: Any, accum: int, share: float) -> dict[str, Any]:
    from cpu_precision import short_run_config

    from trainer.steps import Stepper, measure_throughput, prepare

    # the configuration a short CPU run is planned with (linear heads, no R-Drop, no layer-wise decay, the
    # weights' moving average updated after each step), in the product's precision, at this accumulation
    config = short_run_config(encoder, "auto", epochs=1).with_overrides({"grad_accum": accum})
    run = prepare(config, data)
    measured = measure_throughput(run)
    stepper = Stepper.build(run, run.plan())
    run.model.train()
    batches = run.batches.epoch(0)
    batches = batches[: max(accum, round(len(batches) * share) // accum * accum)]
    stepper.batch(batches[0], step=False)  # untimed: start-up costs, as the measurement's first batch
    stepper.optimizer.zero_grad(set_to_none=True)
    samples, start = 0, time.perf_counter()
    for k, idx in enumerate(batches):
        stepper.batch(idx, step=(k + 1) % accum == 0)
        samples += len(idx)
    real = (time.perf_counter() - start) / samples
    without = measured.seconds_per_sample
    per_step = measured.step_seconds + (measured.average_seconds if stepper.average is not None else 0.0)
    with_step = without + per_step / (config.batch_size * accum)
    row = {
        "grad_accum": accum,
        "samples": samples,
        "real_seconds_per_sample": round(real, 6),
        "measured_seconds_per_sample": round(without, 6),
        "step_seconds": round(measured.step_seconds, 6),
        "average_seconds": round(measured.average_seconds, 6) if stepper.average is not None else None,
        "planned_without_step": round(without, 6),
        "planned_with_step": round(with_step, 6),
        "error_without_step_pct": round(100 * (without / real - 1), 2),
        "error_with_step_pct": round(100 * (with_step / real - 1), 2),
    }
    print(
        f"accumulation {accum}: real {real * 1000:.2f} ms/sample over {samples} samples; planned "
        f"{without * 1000:.2f} without the step ({row['error_without_step_pct']:+.1f}%), "
        f"{with_step * 1000:.2f} with it ({row['error_with_step_pct']:+.1f}%); "
        f"a step {measured.step_seconds * 1000:.1f} ms, the average's update {measured.average_seconds * 1000:.1f} ms",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tenth of an epoch per accumulation; writes nothing")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    started = time.monotonic()
    from train_throughput import encoder_path

    with tempfile.TemporaryDirectory() as tmp:
        encoder, label = encoder_path(Path(tmp))
        data = load_data()
        rows = [one_accumulation(encoder, data, accum, 0.1 if args.quick else 1.0) for accum in ACCUMULATIONS]
    worst_without = max(abs(r["error_without_step_pct"]) for r in rows)
    worst_with = max(abs(r["error_with_step_pct"]) for r in rows)
    note = f"{label}, max length 64, batch 12, 2 threads, one epoch of the 4,000 train texts per accumulation"
    results: list[dict[str, Any]] = []
    for r in rows:
        for key, metric in (("error_without_step_pct", "without_step"), ("error_with_step_pct", "with_step")):
            results.append(
                {
                    "metric": f"planned_pace_error_{metric}_accum{r['grad_accum']}",
                    "value": r[key],
                    "target": None,
                    "unit": "%",
                    "note": note,
                }
            )
    results += [
        {
            "metric": "planned_pace_worst_error_without_step",
            "value": worst_without,
            "target": TARGET_ERROR,
            "unit": "%",
            "lower_is_better": True,
        },
        {
            "metric": "planned_pace_worst_error_with_step",
            "value": worst_with,
            "target": TARGET_ERROR,
            "unit": "%",
            "lower_is_better": True,
        },
    ]
    if not args.quick:
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        detail = RESULTS.with_name("plan_pace_detail.json")
        detail.write_text(json.dumps({"encoder": label, "rows": rows}, indent=2) + "\n")
    print(f"{time.monotonic() - started:.0f} s" + ("" if args.quick else f"; results in {RESULTS}"))
    print(
        f"planned pace against real, worst over accumulations {ACCUMULATIONS}: {worst_without:.1f}% without the "
        f"optimizer step, {worst_with:.1f}% with it (target ≤ {TARGET_ERROR:g}%)"
    )


if __name__ == "__main__":
    main()
