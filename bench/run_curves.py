"""What each seed of a quality study did within its run, read from the curves the study stored: no training.

From `bench/results/quality_loop_detail.json` (or `--detail`), for the loop's seeds:

- weight averaging, paired within the run: in how many epochs the moving average of the weights beat the plain
  weights on val (`val_macro_f1` against `plain_val_macro_f1` in each curve), by how much on average, and at each
  seed's best epoch;
- the greedy soup (trainer/soup.py), where the runs made one: which epochs joined, and by how much each candidate
  soup's val macro-F1 differed from the best epoch's alone;
- each seed's best epoch, epochs trained, optimizer steps and test macro-F1.

    .venv/bin/python bench/run_curves.py                 # seconds; bench/results/run_curves(_detail).json
    .venv/bin/python bench/run_curves.py --quick         # the same (there is nothing to shorten)
    .venv/bin/python bench/run_curves.py --detail bench/results/quality_loop_detail.loop.6x9min.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def seed_rows(detail: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in detail["runs"]["loop"]:
        if run["kind"] != "single":
            continue
        curve = run["curve"]
        paired = [100 * (e["val_macro_f1"] - e["plain_val_macro_f1"]) for e in curve if "plain_val_macro_f1" in e]
        best = next(e for e in curve if e["epoch"] == run["best_epoch"])
        soup = run.get("soup")
        rows.append(
            {
                "seed": run["seed"],
                "best_epoch": run["best_epoch"],
                "epochs": len(curve),
                "steps": run["plan"].get("steps_done"),
                "test_macro_f1": round(100 * run["test_macro_f1"], 2),
                "averaging_gains": [round(g, 2) for g in paired],
                "averaging_gain_at_best": (
                    round(100 * (best["val_macro_f1"] - best["plain_val_macro_f1"]), 2)
                    if "plain_val_macro_f1" in best
                    else None
                ),
                "soup_epochs": soup["epochs"] if soup else None,
                "soup_minus_best_epoch_val": (
                    [
                        round(100 * (c["soup_val_macro_f1"] - soup["best_epoch_val_macro_f1"]), 2)
                        for c in soup["candidates"]
                    ]
                    if soup
                    else None
                ),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detail", type=Path, default=RESULTS / "quality_loop_detail.json")
    parser.add_argument("--quick", action="store_true", help="the same figures (reading a file takes no time)")
    args = parser.parse_args()
    if not args.detail.is_file():
        raise SystemExit(f"no study detail at {args.detail}: run bench/quality_loop.py first")
    rows = seed_rows(json.loads(args.detail.read_text(encoding="utf-8")))
    if not rows:
        raise SystemExit(f"{args.detail.name} holds no seed of the loop")
    for r in rows:
        soup = (
            f"; soup of epochs {r['soup_epochs']}, candidates − best epoch on val {r['soup_minus_best_epoch_val']}"
            if r["soup_epochs"]
            else ""
        )
        at_best = r["averaging_gain_at_best"]
        averaging = (
            f"averaging at the best epoch {at_best:+.2f}" if at_best is not None else "no weight averaging (a long run)"
        )
        print(
            f"seed {r['seed']}: best epoch {r['best_epoch']} of {r['epochs']}, {r['steps']} steps, test "
            f"{r['test_macro_f1']:.2f}; {averaging}{soup}"
        )
    gains = [g for r in rows for g in r["averaging_gains"]]
    wins = sum(g > 0 for g in gains)
    mean = sum(gains) / len(gains) if gains else 0.0
    candidates = [d for r in rows for d in r["soup_minus_best_epoch_val"] or []]
    joined = sum(len(r["soup_epochs"]) - 1 for r in rows if r["soup_epochs"])
    results = [
        {"metric": "averaging_epochs_better_on_val", "value": wins, "target": None, "unit": "epochs", "of": len(gains)},
        {"metric": "averaging_mean_val_gain", "value": round(mean, 2), "target": None, "unit": "points"},
        {"metric": "soup_candidates_joined", "value": joined, "target": None, "unit": "epochs", "of": len(candidates)},
    ]
    # a study's suffix (quality_loop_detail.loop.6x9min.json → .loop.6x9min) names its figures
    suffix = args.detail.name.removeprefix("quality_loop_detail").removesuffix(".json")
    out, per_seed = RESULTS / f"run_curves{suffix}.json", RESULTS / f"run_curves_detail{suffix}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    per_seed.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"soup: {joined} of {len(candidates)} candidate epochs joined; {out.name}, per seed {per_seed.name}")
    print(
        f"weight averaging, paired within the run: better on val in {wins} of {len(gains)} epochs, {mean:+.2f} points"
    )


if __name__ == "__main__":
    main()
