"""Two quality studies' loops side by side, paired on the same test texts: what a change of the loop's shape did.

Reads two members files written by bench/quality_loop.py (every run's val and test probabilities), fits each
loop's ensembles exactly as the product does (trainer/ensemble.py fit_ensemble: temperatures, group weights and
the decision rule, all on val), and compares the seeds ensembled and the full loop (seeds + TF-IDF member) on
test with a paired bootstrap (bench/quality_stats.py overall_delta). Nothing trains; seconds.

    .venv/bin/python bench/loop_compare.py            # the 6 x 9 min loop against the main study's 3 x 18 min
    .venv/bin/python bench/loop_compare.py --quick    # 200 bootstrap draws
    .venv/bin/python bench/loop_compare.py --base A.json.gz --other B.json.gz
    .venv/bin/python bench/loop_compare.py --soup     # the main study's loop: its soups − its seeds' best epochs

`--soup` compares, in one study, the loop as it ran (each seed ending with the greedy soup of its best epochs,
trainer/soup.py) with the same seeds' best epochs alone (saved beside the soups; the members file's arm
`loop_best_epoch`), each ensemble fitted on val as the product fits it; results in loop_compare.soup.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()

from ensemble_rules import read_loop  # noqa: E402
from quality_stats import TASKS, overall_delta  # noqa: E402

from trainer.decision import decide  # noqa: E402
from trainer.ensemble import combine, fit_ensemble  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def loop_labels(
    path: Path, arm: str = "loop"
) -> tuple[list[int], dict[str, Any], dict[str, int], dict[str, dict[str, Any]], int]:
    """Test ids, gold per task, class counts, and per ensemble (seeds, full) its test labels; the seed count."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        arms = json.load(fh)
    if arm not in arms:
        raise SystemExit(f"{path.name} has no arm {arm!r} (it has {sorted(arms)})")
    runs = arms[arm]
    loop = read_loop(runs)
    kinds, tasks, seeds = loop.kinds, loop.tasks, loop.seeds
    val, val_gold, test, test_gold = loop.val, loop.val_gold, loop.test, loop.test_gold
    labels = {}
    for name, idx in {"seeds": seeds, "full_loop": list(range(len(runs)))}.items():
        members = [f"m{i}" for i in idx]
        params = fit_ensemble(
            [val[i] for i in idx],
            val_gold,
            tasks,
            members,
            [kinds[i] for i in idx],
            weighted=True,
            temperature=True,
            decision="prior",
        )
        labels[name] = decide(combine([test[i] for i in idx], params), params["decision"])
    gold = {t.name: test_gold[:, j] for j, t in enumerate(tasks)}
    return loop.test_ids, gold, {t.name: len(t.labels) for t in tasks}, labels, len(seeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, default=RESULTS / "quality_loop_members.json.gz")
    parser.add_argument("--other", type=Path, default=RESULTS / "quality_loop_members.loop.6x9min.json.gz")
    parser.add_argument("--quick", action="store_true", help="200 bootstrap draws instead of 1,000")
    parser.add_argument(
        "--soup", action="store_true", help="in --base's study: the loop's soups − its seeds' best epochs alone"
    )
    args = parser.parse_args()
    base_arm, other_arm = ("loop_best_epoch", "loop") if args.soup else ("loop", "loop")
    if args.soup:
        args.other = args.base
    for path in (args.base, args.other):
        if not path.is_file():
            raise SystemExit(f"no members file at {path}: run bench/quality_loop.py first")
    base_ids, gold, sizes, base, base_seeds = loop_labels(args.base, base_arm)
    other_ids, other_gold, _sizes, other, other_seeds = loop_labels(args.other, other_arm)
    if base_ids != other_ids or any((gold[t] != other_gold[t]).any() for t in TASKS):
        raise SystemExit("the two studies were not scored on the same test texts")
    results = []
    for name in ("seeds", "full_loop"):
        delta = overall_delta([other[name]], [base[name]], gold, sizes, 200 if args.quick else 1000)
        what = (
            "soups − best epochs"
            if args.soup
            else f"{other_seeds} seeds ({args.other.name}) − {base_seeds} seeds ({args.base.name})"
        )
        print(f"{name}: {what}: {delta['delta']:+.2f} [95% CI {delta['ci95_low']:+.2f}, {delta['ci95_high']:+.2f}]")
        results.append(
            {"metric": f"{name}_other_minus_base", "value": delta["delta"], "target": None, "unit": "points", **delta}
        )
    suffix = (".soup" if args.soup else "") + (".quick" if args.quick else "")
    (RESULTS / f"loop_compare{suffix}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.soup:
        print(f"full loop, soups − best epochs: {results[-1]['value']:+.2f} points")
    else:
        print(f"full loop, {other_seeds} seeds − {base_seeds} seeds: {results[-1]['value']:+.2f} points")


if __name__ == "__main__":
    main()
