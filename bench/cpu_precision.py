"""Training on a CPU in bf16 autocast against fp32: speed and the model it gives, side by side.

`amp: auto` trains, evaluates and serves in bf16 on a CPU that computes bf16 natively (AVX512-BF16 or
AMX-BF16, read from /proc/cpuinfo; trainer.predict.cpu_native_bf16) and in fp32 elsewhere. This script shows
why, on the machine it runs on, in three parts (the encoder is the pretrained all-MiniLM-L6-v2 when its package
is installed, else a random BERT of its shape; the example dataset's tasks bias and message; 2 torch threads):

1. training steps: the configuration a short CPU run is planned with (batch 12 × accumulation 2, linear heads,
   no R-Drop, no layer-wise decay, max length 64), the same weights at the start and the same texts in both
   arms, interleaved one optimizer step at a time (A-B, B-A, ...) so that other load hits both alike;
2. prediction: the 500 val texts, interleaved, three passes per arm (the first untimed);
3. a whole run (full run only): `train_model` with the product's defaults, 3 epochs of the 4,000 train
   originals, the same seed, once in each precision: wall-clock time, val macro-F1 per epoch, test macro-F1.
   (--quick: 48 texts per arm in part 1, 100 in part 2, a 1-epoch run of 200 texts in part 3, 100 val and test.)

Targets: bf16 at least 1.1× faster in training and whole-run time, and its val macro-F1 within one point of
fp32's (it must not buy speed with quality). On a CPU without native bf16 the same script shows bf16 slower,
which is why `auto` keeps fp32 there. Writes bench/results/cpu_precision.json (not with --quick).

    .venv/bin/python bench/cpu_precision.py [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()  # before torch: offline hubs, passive OpenMP (see bench_env.py)

EXAMPLE_CSV = ROOT / "examples" / "political_social_media.csv"
RESULTS = ROOT / "bench" / "results" / "cpu_precision.json"
TASKS = ("bias", "message")
ARMS = ("off", "bf16")  # TrainConfig.amp
LABEL = {"off": "fp32", "bf16": "bf16"}


def load_splits() -> tuple[list, dict[str, list]]:
    from trainer.examples import Example, TaskSpec

    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tasks = [TaskSpec(t, sorted({r[t] for r in rows if r[t]})) for t in TASKS]
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    for i, r in enumerate(rows):
        splits[r["split"]].append(Example(r["text"], {t: r[t] for t in TASKS if r[t]}, i, None))
    return tasks, splits


def short_run_config(encoder: str, amp: str, **extra: Any) -> Any:
    from trainer.config import TrainConfig

    return TrainConfig(
        encoder=encoder,
        max_length=64,
        batch_size=12,
        grad_accum=2,
        rdrop_alpha=0.0,
        llrd_decay=1.0,
        head_layers=1,
        lr=1e-4,
        num_threads=2,
        patience=0,
        seed=42,
        amp=amp,
        device="cpu",
        **extra,
    )


def training_steps(encoder: str, tasks: list, texts: list) -> dict[str, float]:
    """Samples per second of forward + backward + optimizer steps, per arm, interleaved per optimizer step."""
    from trainer.examples import SplitData
    from trainer.steps import Stepper, prepare

    data = SplitData(tasks, texts, texts[:1], [], "political_social_media")
    arms = {}
    for amp in ARMS:
        run = prepare(short_run_config(encoder, amp, epochs=1), data)
        stepper = Stepper.build(run, run.plan())
        run.model.train()
        batches = run.batches.epoch(0)
        accum = stepper.plan.grad_accum
        stepper.batch(batches[0], step=False)  # untimed warm-up: start-up costs belong to neither arm
        stepper.optimizer.zero_grad(set_to_none=True)
        arms[amp] = (stepper, [batches[k : k + accum] for k in range(0, len(batches), accum)])
    seconds = dict.fromkeys(ARMS, 0.0)
    samples = dict.fromkeys(ARMS, 0)
    n_groups = len(arms["off"][1])
    for k in range(n_groups):
        for amp in ARMS if k % 2 == 0 else ARMS[::-1]:
            stepper, groups = arms[amp]
            start = time.monotonic()
            for b, idx in enumerate(groups[k]):
                stepper.batch(idx, step=b + 1 == len(groups[k]))
            seconds[amp] += time.monotonic() - start
            samples[amp] += sum(len(idx) for idx in groups[k])
        if (k + 1) % 10 == 0 or k + 1 == n_groups:
            print(f"  training steps {k + 1}/{n_groups}", flush=True)
    return {amp: samples[amp] / seconds[amp] for amp in ARMS}


def prediction(encoder: str, tasks: list, texts: list[str]) -> dict[str, float]:
    """Texts per second of predict_texts over `texts`, per precision, interleaved, the first pass untimed."""
    import torch

    from trainer.model import build_model
    from trainer.predict import amp_dtype, predict_texts

    model, tokenizer = build_model(encoder, tasks, pooling="mean", head_layers=1, head_hidden=256, head_dropout=0.1)
    seconds = dict.fromkeys(ARMS, 0.0)
    for rep in range(3):
        for amp in ARMS if rep % 2 == 0 else ARMS[::-1]:
            start = time.monotonic()
            predict_texts(model, tokenizer, texts, max_length=64, dtype=amp_dtype(amp, torch.device("cpu")))
            if rep > 0:
                seconds[amp] += time.monotonic() - start
    return {amp: 2 * len(texts) / seconds[amp] for amp in ARMS}


def whole_run(encoder: str, tasks: list, splits: dict[str, list], quick: bool) -> dict[str, dict[str, Any]]:
    from trainer.config import TrainConfig
    from trainer.examples import SplitData
    from trainer.train import train_model

    train = splits["train"][:200] if quick else splits["train"]
    val, test = (splits["val"][:100], splits["test"][:100]) if quick else (splits["val"], splits["test"])
    data = SplitData(tasks, train, val, test, "political_social_media")
    out = {}
    for amp in ARMS:
        config = TrainConfig(
            encoder=encoder, epochs=1 if quick else 3, max_length=64, num_threads=2, seed=0, amp=amp, device="cpu"
        )
        start = time.monotonic()
        result = train_model(config, data)
        seconds = time.monotonic() - start
        out[amp] = {
            "seconds": round(seconds, 1),
            "train_samples_per_s": [round(e["samples_per_s"], 2) for e in result.curve],
            "val_macro_f1_per_epoch": [round(e["val_macro_f1"], 4) for e in result.curve],
            "best_epoch": result.best_epoch,
            "val_macro_f1": result.metrics["val"]["overall_macro_f1"],
            "test_macro_f1": result.metrics["test"]["overall_macro_f1"],
            "test_macro_f1_argmax": (result.metrics.get("test_argmax") or result.metrics["test"])["overall_macro_f1"],
            "plan_precision": next(r for r in (result.plan.reasons if result.plan else []) if r.startswith("prec")),
        }
        print(
            f"  whole run {LABEL[amp]}: {seconds:.0f} s, val macro-F1 per epoch {out[amp]['val_macro_f1_per_epoch']},"
            f" test {out[amp]['test_macro_f1']:.4f}",
            flush=True,
        )
    return out


def row(
    metric: str, value: float, target: float | None, unit: str, *, note: str = "", lower: bool = False, digits: int = 2
) -> dict[str, Any]:
    """One line of the results file."""
    out: dict[str, Any] = {"metric": metric, "value": round(value, digits), "target": target, "unit": unit}
    if lower:
        out["lower_is_better"] = True
    if note:
        out["note"] = note
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="48 texts per arm (training), 100 (prediction), a 1-epoch run of 200"
    )
    args = parser.parse_args()

    import torch

    from trainer.predict import cpu_native_bf16

    torch.set_num_threads(2)
    tasks, splits = load_splits()
    rng = random.Random(42)
    n = 48 if args.quick else 480
    subset = [splits["train"][i] for i in sorted(rng.sample(range(len(splits["train"])), n))]
    native = cpu_native_bf16()
    with tempfile.TemporaryDirectory() as tmp:
        from train_throughput import encoder_path

        encoder, encoder_label = encoder_path(Path(tmp))
        print(f"encoder: {encoder_label}; native bf16 on this CPU: {native}; 2 threads", flush=True)
        steps = training_steps(encoder, tasks, subset)
        print("  training steps: " + ", ".join(f"{LABEL[a]} {v:.1f} samples/s" for a, v in steps.items()), flush=True)
        val_texts = [e.text for e in splits["val"]][: 100 if args.quick else None]
        pred = prediction(encoder, tasks, val_texts)
        print("  prediction: " + ", ".join(f"{LABEL[a]} {v:.1f} texts/s" for a, v in pred.items()), flush=True)
        runs = whole_run(encoder, tasks, splits, args.quick)
    fp32, bf16 = runs["off"], runs["bf16"]
    note = f"{encoder_label}; native bf16: {native}; 2 threads"
    results = [
        row(
            "train_speedup_bf16_vs_fp32",
            steps["bf16"] / steps["off"],
            1.1,
            "x",
            note=f"{n} texts per arm, short-run config, interleaved; {note}",
        ),
        row("train_samples_per_s_fp32", steps["off"], None, "samples/s"),
        row("train_samples_per_s_bf16", steps["bf16"], None, "samples/s"),
        row(
            "predict_speedup_bf16_vs_fp32",
            pred["bf16"] / pred["off"],
            1.1,
            "x",
            note=f"{len(val_texts)} val texts, 2 timed passes per arm",
        ),
        row("predict_texts_per_s_fp32", pred["off"], None, "texts/s", digits=1),
        row("predict_texts_per_s_bf16", pred["bf16"], None, "texts/s", digits=1),
        row("run_seconds_fp32", fp32["seconds"], None, "s", lower=True, digits=1),
        row("run_seconds_bf16", bf16["seconds"], None, "s", lower=True, digits=1),
        row(
            "run_speedup_bf16_vs_fp32",
            fp32["seconds"] / bf16["seconds"],
            1.1,
            "x",
            note="train_model, product defaults, 3 epochs of the 4,000 train originals, seed 0",
        ),
        row("val_macro_f1_fp32", fp32["val_macro_f1"], None, "macro-F1", digits=4),
        row("val_macro_f1_bf16", bf16["val_macro_f1"], None, "macro-F1", digits=4),
        row(
            "val_macro_f1_bf16_minus_fp32",
            bf16["val_macro_f1"] - fp32["val_macro_f1"],
            -0.01,
            "macro-F1",
            digits=4,
            note="one seed each: within a point is within a seed's noise",
        ),
        row(
            "test_macro_f1_bf16_minus_fp32",
            bf16["test_macro_f1"] - fp32["test_macro_f1"],
            None,
            "macro-F1",
            digits=4,
            note="with each run's own decision rule",
        ),
    ]
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        detail = RESULTS.with_name("cpu_precision_detail.json")
        detail.write_text(json.dumps({"native_bf16": native, "encoder": encoder_label, "runs": runs}, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    print(
        f"bf16 autocast vs fp32 on this CPU (native bf16: {'yes' if native else 'no'}): training "
        f"{steps['bf16'] / steps['off']:.2f}x, prediction {pred['bf16'] / pred['off']:.2f}x, whole run "
        f"{fp32['seconds'] / bf16['seconds']:.2f}x ({bf16['seconds']:.0f} vs {fp32['seconds']:.0f} s); val macro-F1 "
        f"{bf16['val_macro_f1']:.4f} vs {fp32['val_macro_f1']:.4f}, test {bf16['test_macro_f1']:.4f} vs "
        f"{fp32['test_macro_f1']:.4f}"
    )


if __name__ == "__main__":
    main()
