"""Which way of combining an ensemble's members does val support? An offline comparison on the probabilities the
quality study stored (`bench/results/quality_loop_members.json.gz`: every run's val and test probabilities), in
seconds, without training anything.

Each rule is fitted on one half of val and scored on the other (overall macro-F1, the mean over tasks), over
repeated random 2-fold splits of val: the rule to keep is chosen on val only. Test is printed beside it for the
record, never used to choose. The rules (trainer/ensemble.py fit_ensemble does the fitting; temperatures are
always fitted):

- `groups_weighted` (the product's rule): a weight per group of members (the transformer seeds one group, the
  TF-IDF member another) minimising val log-loss;
- `groups_equal`: the two groups weighted equally;
- `members_equal`: every member weighted equally;
- `members_weighted`: a weight per member minimising val log-loss;
- `transformers_only`: the seeds without the TF-IDF member;

each with the prior correction (`prior`) or the argmax (`none`).

Last, a ceiling no rule can pass: the two groups' weight per task chosen **on test** (a grid of 21 weights, the
member temperatures fitted on val, the argmax), the best test macro-F1 a weighting of the two groups reaches.
It is not a result (test chooses it); it says whether a better combining rule could close a gap at all, or only
a stronger member.

    .venv/bin/python bench/ensemble_rules.py            # 20 repeats: ~1 min
    .venv/bin/python bench/ensemble_rules.py --quick    # 3 repeats
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from dataclasses import dataclass
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()

import numpy as np  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

from trainer.decision import decide, fit_rules  # noqa: E402
from trainer.ensemble import aligned_dumps, combine, fit_ensemble, fit_temperature  # noqa: E402
from trainer.examples import TaskSpec  # noqa: E402

RESULTS = ROOT / "bench" / "results"
RULES = ("groups_weighted", "groups_equal", "members_equal", "members_weighted", "transformers_only")
PRODUCT_RULE = ("groups_weighted", "prior")


def overall_macro_f1(probs: dict[str, np.ndarray], gold: np.ndarray, tasks: list[TaskSpec], rules: Any) -> float:
    labels = decide(probs, rules)
    return float(
        np.mean(
            [
                f1_score(gold[:, j], labels[t.name], average="macro", labels=range(len(t.labels)), zero_division=0)
                for j, t in enumerate(tasks)
            ]
        )
    )


@dataclass(frozen=True)
class Loop:
    """A quality study's loop as its members file holds it: each run's val and test probabilities, aligned."""

    kinds: list[str]  # per member: "transformer" (a seed) or "tfidf"
    val: list[dict[str, np.ndarray]]
    val_gold: np.ndarray
    test_ids: list[int]
    test: list[dict[str, np.ndarray]]
    test_gold: np.ndarray
    tasks: list[TaskSpec]

    @property
    def seeds(self) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == "transformer"]


def read_loop(runs: list[dict[str, Any]]) -> Loop:
    """The loop's runs (`json.load(members)[arm]`), aligned by sample id."""
    _ids, val, val_gold = aligned_dumps([r["val"] for r in runs])
    test_ids, test, test_gold = aligned_dumps([r["test"] for r in runs])
    first = runs[0]["val"]["tasks"]
    kinds = ["tfidf" if r["kind"] == "tfidf" else "transformer" for r in runs]
    tasks = [TaskSpec(name=name, labels=first[name]["labels"]) for name in first]
    return Loop(kinds, val, val_gold, test_ids, test, test_gold, tasks)


def write_results(name: str, results: list[dict[str, Any]], quick: bool) -> str:
    """`bench/results/<name>.json` (`.quick.json` for a --quick run, which git ignores); its path to print."""
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return str(path.relative_to(ROOT))


def rows(member_probs: list[dict[str, np.ndarray]], idx: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{t: p[t][idx] for t in p} for p in member_probs]


def fit(
    rule: str,
    decision: str,
    probs: list[dict[str, np.ndarray]],
    gold: np.ndarray,
    tasks: list[TaskSpec],
    kinds: list[str],
) -> tuple[dict[str, Any], list[int]]:
    """The fitted parameters of `rule` and the members (indices) it combines."""
    chosen = [i for i, k in enumerate(kinds) if rule != "transformers_only" or k != "tfidf"]
    members = [f"m{i}" for i in chosen]
    picked = [probs[i] for i in chosen]
    by_kind = ["tfidf" if kinds[i] == "tfidf" else "transformer" for i in chosen]
    groups = members if rule.startswith("members") else by_kind
    weighted = rule in ("groups_weighted", "members_weighted", "transformers_only")
    params = fit_ensemble(
        picked,
        gold,
        tasks,
        members,
        groups,
        weighted=weighted or rule == "groups_equal",
        temperature=True,
        decision=decision,
    )
    if rule == "groups_equal":  # member temperatures as fitted; each group half the weight; then refit the rest
        n_groups = len(set(groups))
        for t in tasks:
            params["task_weights"][t.name] = {
                m: 1.0 / n_groups / groups.count(g) for m, g in zip(members, groups, strict=True)
            }
        params["temperatures"] = {t.name: 1.0 for t in tasks}
        mixed = combine(picked, params)
        params["temperatures"] = {t.name: fit_temperature(mixed[t.name], gold[:, j]) for j, t in enumerate(tasks)}
        params["decision"] = fit_rules(combine(picked, params), gold, tasks, decision)
    return params, chosen


def test_ceiling(
    val_probs: list[dict[str, np.ndarray]],
    val_gold: np.ndarray,
    test_probs: list[dict[str, np.ndarray]],
    test_gold: np.ndarray,
    tasks: list[TaskSpec],
    kinds: list[str],
) -> tuple[float, dict[str, float]]:
    """The best overall test macro-F1 (points) of the two groups mixed with a weight per task chosen on test, and
    those weights (the TF-IDF group's share): member temperatures fitted on val as the product's rule fits them,
    the argmax."""
    params, chosen = fit("groups_weighted", "none", val_probs, val_gold, tasks, kinds)
    members = [params["members"][k] for k in range(len(chosen))]
    tfidf = [m for m, i in zip(members, chosen, strict=True) if kinds[i] == "tfidf"]
    seeds = [m for m in members if m not in tfidf]
    picked = [test_probs[i] for i in chosen]
    best: dict[str, tuple[float, float]] = {}
    for w in np.linspace(0.0, 1.0, 21):
        for t in tasks:
            params["task_weights"][t.name] = {
                **{m: (1 - w) / len(seeds) for m in seeds},
                **{m: (w / len(tfidf) if tfidf else 0.0) for m in tfidf},
            }
        mixed = combine(picked, params)
        for j, t in enumerate(tasks):
            score = f1_score(
                test_gold[:, j],
                mixed[t.name].argmax(axis=1),
                average="macro",
                labels=range(len(t.labels)),
                zero_division=0,
            )
            if t.name not in best or score > best[t.name][0]:
                best[t.name] = (float(score), round(float(w), 2))
    return float(np.mean([s for s, _w in best.values()])) * 100, {t: w for t, (_s, w) in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 20")
    parser.add_argument("--members", default=str(RESULTS / "quality_loop_members.json.gz"))
    parser.add_argument("--arm", default="loop", help="the study's arm whose runs are the members")
    args = parser.parse_args()
    started = time.monotonic()
    with gzip.open(args.members, "rt", encoding="utf-8") as fh:
        runs = json.load(fh)[args.arm]
    loop = read_loop(runs)
    kinds, tasks = loop.kinds, loop.tasks
    val_probs, val_gold, test_probs, test_gold = loop.val, loop.val_gold, loop.test, loop.test_gold
    repeats = 3 if args.quick else 20
    rng = np.random.default_rng(0)
    n = len(val_gold)
    splits = []
    for _ in range(repeats):
        perm = rng.permutation(n)
        splits += [(perm[: n // 2], perm[n // 2 :]), (perm[n // 2 :], perm[: n // 2])]
    results: list[dict[str, Any]] = []
    table: dict[tuple[str, str], tuple[float, float, float]] = {}
    for rule in RULES:
        for decision in ("prior", "none"):
            scores = []
            for fit_rows, score_rows in splits:
                params, chosen = fit(rule, decision, rows(val_probs, fit_rows), val_gold[fit_rows], tasks, kinds)
                mixed = combine([rows(val_probs, score_rows)[i] for i in chosen], params)
                scores.append(overall_macro_f1(mixed, val_gold[score_rows], tasks, params["decision"]))
            params, chosen = fit(rule, decision, val_probs, val_gold, tasks, kinds)
            test = overall_macro_f1(
                combine([test_probs[i] for i in chosen], params), test_gold, tasks, params["decision"]
            )
            mean, sem = float(np.mean(scores)) * 100, float(np.std(scores) / np.sqrt(len(scores))) * 100
            table[(rule, decision)] = (mean, sem, test * 100)
            print(
                f"{rule:18s} {decision:5s}  val (2-fold CV) {mean:5.2f} ± {sem:.2f}   test {test * 100:5.2f}",
                flush=True,
            )
            results.append(
                {
                    "metric": f"{rule}_{decision}_val_cv_macro_f1",
                    "value": round(mean, 2),
                    "target": None,
                    "unit": "points",
                    "sem": round(sem, 2),  # the standard error over the fits (they share val's texts: a floor)
                }
            )
            results.append(
                {
                    "metric": f"{rule}_{decision}_test_macro_f1",
                    "value": round(test * 100, 2),
                    "target": None,
                    "unit": "points",
                }
            )
    best = max(table, key=lambda k: table[k][0])
    product = table[PRODUCT_RULE]
    margin = product[0] - table[best][0]
    results.append(
        {
            "metric": "product_rule_minus_best_on_val",
            "value": round(margin, 2),
            "target": 0,
            "unit": "points",
            "best": "_".join(best),
        }
    )
    ceiling, ceiling_weights = test_ceiling(val_probs, val_gold, test_probs, test_gold, tasks, kinds)
    results.append(
        {
            "metric": "oracle_groups_weight_test_ceiling",
            "value": round(ceiling, 2),
            "target": None,
            "unit": "points",
            "tfidf_weight": ceiling_weights,  # per task, chosen on test: a ceiling, not a result
        }
    )
    print(f"ceiling: the groups' weight per task chosen on test {ceiling:.2f} (tfidf weight {ceiling_weights})")
    path = write_results("ensemble_rules", results, args.quick)
    print(f"{len(splits)} fits per rule in {time.monotonic() - started:.0f} s; results in {path}")
    print(
        f"best on val: {' + '.join(best)} {table[best][0]:.2f}; the product's rule {product[0]:.2f} ± {product[1]:.2f} "
        f"({margin:+.2f}); test {product[2]:.2f} (not used to choose); "
        f"no weighting of the two groups passes {ceiling:.2f} on test"
    )


if __name__ == "__main__":
    main()
