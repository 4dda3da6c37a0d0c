"""What does a label-model flag mean? Flags of trained and weak models on texts whose truth is known.

A pending variant is flagged when, in some task, the label model doubts its intended class. Until 2026-12-07 that
was "the model gives another label" (`other_label`). Tried that day and dropped: counting another label only where
the model finds at least half of the intended class's val texts (`recall_gate`). The product now flags where the
intended class's probability is below what 9 in 10 of the class's val texts get (`p10`: trainer.metrics records
it, services/variant_scoring.py compares), a calibrated test whose false flags stay near 1 in 10 per task whatever
the model. This script measures the three, offline and in seconds (and the test at the 5th and 20th percentile):

- candidates stand in for variants of the rare classes (those under 0.4 × their task's largest train class: the
  planner's default target), from the test split: *kept* is a test text with a rare class among its labels,
  intended as labelled (a variant that keeps its labels); *changed* is a test text whose label in one task is not
  rare, intended as a rare class of that task drawn at random (a variant whose label the augmenter changed);
- the models: the quality study's trained runs (`bench/results/quality_loop_members.json.gz`: each seed's val and
  test probabilities, the transformer runs and the TF-IDF member), and weak ones, a TF-IDF + logistic regression
  fitted without class weights on 100 or 400 train texts (a model that rarely says a rare class, as a
  one-epoch transformer does: trainer/baselines.py's features);
- per model and rule: the share of kept candidates flagged (false flags), of changed ones flagged (caught), and
  the flag's precision at equal numbers of each (caught / (caught + false)). The thresholds and recalls are read
  from each model's val probabilities (by the argmax: these runs' val dumps hold no decision rule).

    .venv/bin/python bench/label_flags.py            # every model (~15 s)
    .venv/bin/python bench/label_flags.py --quick    # the first transformer run and one weak model
"""

import argparse
import csv
import gzip
import json
import random
import time
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()

import numpy as np  # noqa: E402

from services.label_model import class_thresholds  # noqa: E402
from services.variant_scoring import MIN_VAL_TEXTS, label_scores  # noqa: E402
from trainer.baselines import fit_tfidf_features  # noqa: E402
from trainer.ensemble import aligned_dumps  # noqa: E402
from trainer.examples import TaskSpec  # noqa: E402
from trainer.metrics import evaluate_probs  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MEMBERS = RESULTS / "quality_loop_members.json.gz"
EXAMPLE = ROOT / "examples" / "political_social_media.csv"
TASKS = ("bias", "message")  # the tasks the quality study trained
RARE_SHARE = 0.4  # a class under this share of its task's largest train class is rare (the planner's default)
RECALL_GATE = 0.5  # the dropped rule: another label counted where the model found half the class's val texts
RULES = ("other_label", "recall_gate", "p10", "p05", "p20")


def rare_classes(rows: list[dict[str, str]], tasks: list[TaskSpec]) -> dict[str, set[str]]:
    out = {}
    for task in tasks:
        counts = {
            label: sum(1 for r in rows if r["split"] == "train" and r[task.name] == label) for label in task.labels
        }
        out[task.name] = {label for label, n in counts.items() if n < RARE_SHARE * max(counts.values())}
    return out


def candidates(
    gold: np.ndarray, tasks: list[TaskSpec], rare: dict[str, set[str]], seed: int
) -> tuple[list[int], list[dict[str, str]], list[int], list[dict[str, str]]]:
    """(kept rows, their intended labels, changed rows, theirs) over test texts whose gold is (N, tasks)."""
    rng = random.Random(seed)
    kept, kept_labels, changed, changed_labels = [], [], [], []
    for i, row in enumerate(gold):
        labels = {t.name: t.labels[int(row[j])] for j, t in enumerate(tasks)}
        if any(labels[t] in rare[t] for t in labels):
            kept.append(i)
            kept_labels.append(labels)
        options = [t.name for t in tasks if labels[t.name] not in rare[t.name] and rare[t.name]]
        if options:
            task = rng.choice(options)
            changed.append(i)
            changed_labels.append({**labels, task: rng.choice(sorted(rare[task]))})
    return kept, kept_labels, changed, changed_labels


def thresholds_at(val: dict[str, np.ndarray], gold: np.ndarray, tasks: list[TaskSpec], q: float) -> dict:
    """Per task and class (with MIN_VAL_TEXTS val texts or more): the q-quantile of its val texts' probability."""
    out: dict[str, dict[str, float]] = {}
    for j, task in enumerate(tasks):
        for k, label in enumerate(task.labels):
            own = val[task.name][gold[:, j] == k, k]
            if len(own) >= MIN_VAL_TEXTS:
                out.setdefault(task.name, {})[label] = float(np.quantile(own, q))
    return out


def recall_gated(
    tasks: list[TaskSpec], probs: dict[str, np.ndarray], labels: list[dict[str, str]], recall: dict[str, dict]
) -> list[bool]:
    """The dropped rule: another label flags where the model's val recall of the intended class is ≥ 0.5."""
    out = []
    for i, wanted in enumerate(labels):
        flag = False
        for t in tasks:
            k = t.labels.index(wanted[t.name])
            known = recall.get(t.name, {}).get(wanted[t.name])
            if int(np.argmax(probs[t.name][i])) != k and (known is None or known >= RECALL_GATE):
                flag = True
        out.append(flag)
    return out


def flag_rates(
    tasks: list[TaskSpec],
    val: dict[str, np.ndarray],
    val_gold: np.ndarray,
    test: dict[str, np.ndarray],
    test_gold: np.ndarray,
    rare: dict[str, set[str]],
) -> dict[str, Any]:
    """Per rule: false-flag share, caught share and precision at equal prevalence; and the val macro-F1."""
    measured = evaluate_probs(val, val_gold, tasks)
    recall = {
        t: {c: m["recall"] for c, m in measured["tasks"][t]["per_class"].items() if m["support"]}
        for t in measured["tasks"]
    }
    below = class_thresholds(measured)  # what the product records (p10), read as the product reads it
    assert below == rounded(thresholds_at(val, val_gold, tasks, 0.1)), "the product's p10 is the 10% quantile"
    kept, kept_labels, changed, changed_labels = candidates(test_gold, tasks, rare, seed=0)
    out: dict[str, Any] = {
        "val_macro_f1": round(float(measured["overall_macro_f1"]), 4),
        "kept": len(kept),
        "changed": len(changed),
    }
    for rule in RULES:
        shares = []
        for rows, labels in ((kept, kept_labels), (changed, changed_labels)):
            probs = {t: p[rows] for t, p in test.items()}
            if rule == "recall_gate":
                flags = recall_gated(tasks, probs, labels, recall)
            else:
                given = {"other_label": None, "p10": below}.get(rule)
                if rule in ("p05", "p20"):
                    given = thresholds_at(val, val_gold, tasks, int(rule[1:]) / 100)
                flags = [bool(s.flag) for s in label_scores(tasks, probs, labels, flag_below=given)]
            shares.append(float(np.mean(flags)))
        false, caught = shares
        out[rule] = {
            "false_flags": round(false, 4),
            "caught": round(caught, 4),
            "precision": round(caught / (caught + false), 4) if caught + false else None,
        }
    return out


def rounded(thresholds: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {t: {c: round(v, 6) for c, v in by.items()} for t, by in thresholds.items()}


def trained_models(tasks: list[TaskSpec], quick: bool) -> list[tuple[str, Any]]:
    """(name, (val probs, val gold, test probs, test gold)) of the quality study's runs."""
    members = json.loads(gzip.decompress(MEMBERS.read_bytes()))
    out = []
    for arm, runs in members.items():
        for k, run in enumerate(runs):
            _ids, [val], val_gold = aligned_dumps([run["val"]])
            _ids, [test], test_gold = aligned_dumps([run["test"]])
            labels = {t: run["val"]["tasks"][t]["labels"] for t in run["val"]["tasks"]}
            assert all(labels[t.name] == t.labels for t in tasks), labels
            out.append((f"{arm} {run['kind']} #{k}", (val, val_gold, test, test_gold)))
            if quick:
                return out
    return out


def weak_model(
    rows: list[dict[str, str]], tasks: list[TaskSpec], size: int, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """TF-IDF + logistic regression without class weights on `size` train texts: val and test probs, gold."""
    from sklearn.linear_model import LogisticRegression

    train = random.Random(seed).sample([r for r in rows if r["split"] == "train"], size)
    split = {s: [r for r in rows if r["split"] == s] for s in ("val", "test")}
    gold = {s: np.array([[t.labels.index(r[t.name]) for t in tasks] for r in split[s]]) for s in split}
    probs: dict[str, dict[str, np.ndarray]] = {"val": {}, "test": {}}
    texts = [r["text"] for r in train]
    features = fit_tfidf_features(texts)
    x = features.transform(texts)
    for task in tasks:
        y = np.array([task.labels.index(r[task.name]) for r in train])
        model = LogisticRegression(C=4.0, max_iter=3000, random_state=seed).fit(x, y)
        for s in split:
            p = np.zeros((len(split[s]), len(task.labels)))
            p[:, model.classes_] = model.predict_proba(features.transform([r["text"] for r in split[s]]))
            probs[s][task.name] = p
    return probs["val"], gold["val"], probs["test"], gold["test"]


def mean_of(rows: list[dict[str, Any]], gate: str, key: str) -> float:
    values = [r[gate][key] for r in rows if r[gate][key] is not None]
    return round(float(np.mean(values)), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one trained run and one weak model")
    args = parser.parse_args()
    started = time.monotonic()
    with EXAMPLE.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tasks = [TaskSpec(t, sorted({r[t] for r in rows})) for t in TASKS]
    rare = rare_classes(rows, tasks)
    print(f"rare classes: {rare}")
    groups: dict[str, list[dict[str, Any]]] = {"trained": [], "weak": []}
    for name, (val, val_gold, test, test_gold) in trained_models(tasks, args.quick):
        groups["trained"].append({"model": name, **flag_rates(tasks, val, val_gold, test, test_gold, rare)})
    for size in (100,) if args.quick else (100, 400):
        for seed in (0,) if args.quick else (0, 1, 2):
            data = weak_model(rows, tasks, size, seed)
            groups["weak"].append({"model": f"tfidf unweighted {size} seed {seed}", **flag_rates(tasks, *data, rare)})
    for group, found in groups.items():
        for r in found:
            said = f"val macro-F1 {r['val_macro_f1']:.3f} · kept {r['kept']} changed {r['changed']}"
            print(f"{group:8} {r['model']:32} {said}")
            for rule in RULES:
                print(
                    f"           {rule:12} false {r[rule]['false_flags']:.3f} caught {r[rule]['caught']:.3f}"
                    f" precision {r[rule]['precision']}"
                )
    results = []
    for group, found in groups.items():
        for rule in RULES:
            for key, unit in (("false_flags", "fraction"), ("caught", "fraction"), ("precision", "fraction")):
                results.append(
                    {
                        "metric": f"{group}_{rule}_{key}",
                        "value": mean_of(found, rule, key),
                        "target": None,
                        "unit": unit,
                        **({"lower_is_better": True} if key == "false_flags" else {}),
                    }
                )
        # what the product's rule is for: a flag that means more than the model's other label did
        results.append(
            {
                "metric": f"{group}_p10_precision_gain",
                "value": round(mean_of(found, "p10", "precision") - mean_of(found, "other_label", "precision"), 4),
                "target": 0.0,
                "unit": "fraction",
            }
        )
    suffix = ".quick" if args.quick else ""
    (RESULTS / f"label_flags{suffix}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (RESULTS / f"label_flags_detail{suffix}.json").write_text(
        json.dumps({"rare": {t: sorted(c) for t, c in rare.items()}, **groups}, indent=2) + "\n", encoding="utf-8"
    )
    print(f"{time.monotonic() - started:.0f} s; results in bench/results/label_flags{suffix}.json")
    for group, found in groups.items():
        before, now = (
            {key: mean_of(found, rule, key) for key in ("precision", "false_flags", "caught")}
            for rule in ("other_label", "p10")
        )
        print(
            f"{group}: flag precision {before['precision']:.3f} (another label) → {now['precision']:.3f} (below p10);"
            f" false flags {before['false_flags']:.3f} → {now['false_flags']:.3f},"
            f" caught {before['caught']:.3f} → {now['caught']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
