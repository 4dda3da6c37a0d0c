"""What each seed of a quality study did within its run, read from the curves the study stored: no training.

From `bench/results/quality_loop_detail.json` (or `--detail`), for the loop's seeds:

- weight averaging, paired within the run: in how many epochs the moving average of the weights beat the plain
  weights on val (`val_macro_f1` against `plain_val_macro_f1` in each curve), by how much on average, and at each
  seed's best epoch;
- the greedy soup (trainer/soup.py), where the runs made one: which epochs joined, and by how much each candidate
  soup's val macro-F1 differed from the best epoch's alone;
- each seed's best epoch, epochs trained, optimizer steps and test macro-F1;
- early stopping at the planned patience (trainer/plan.py, rule 7: 40% of the planned epochs, at least 3),
  replayed on each seed's curve: the epoch it would stop at, whether that keeps its best epoch, and the share of
  its training time it saves. The epochs before the stop are the same steps at the same learning rates, so the
  replay is exact up to the machine's pace. A full run also replays every committed version of the study's
  detail file (git history), the runs made before the rule existed.

    .venv/bin/python bench/run_curves.py                 # seconds; bench/results/run_curves(_detail).json
    .venv/bin/python bench/run_curves.py --quick         # this study only, no git history; *.quick.json
    .venv/bin/python bench/run_curves.py --detail bench/results/quality_loop_detail.loop.6x9min.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()

from trainer.plan import planned_patience  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DETAIL = "bench/results/quality_loop_detail.json"


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


def patience_replay(run: dict[str, Any]) -> dict[str, Any] | None:
    """A seed's run as the planned patience would have stopped it: None for a run whose record lacks its plan's
    epochs or its per-epoch times, or that set its own patience."""
    curve, plan = run.get("curve") or [], run.get("plan") or {}
    epochs = plan.get("epochs")
    if not curve or epochs is None or any("train_seconds" not in e or "val_macro_f1" not in e for e in curve):
        return None
    patience = planned_patience(float(epochs))
    best, best_epoch, stale, stop = float("-inf"), 0, 0, len(curve)
    for entry in curve:  # the loop's own rule (trainer/train.py): a stop only while steps remain
        if entry["val_macro_f1"] > best + 1e-9:
            best, best_epoch, stale = entry["val_macro_f1"], entry["epoch"], 0
        else:
            stale += 1
        if stale >= patience and entry["epoch"] < len(curve):
            stop = entry["epoch"]
            break
    seconds = [e["train_seconds"] for e in curve]
    return {
        "seed": run.get("seed"),
        "planned_epochs": round(float(epochs), 2),
        "patience": patience,
        "epochs": len(curve),
        "best_epoch": run.get("best_epoch"),
        "stops_at": stop,
        "keeps_best_epoch": best_epoch == run.get("best_epoch"),
        "training_saved": round(sum(seconds[stop:]) / sum(seconds), 4) if sum(seconds) > 0 else 0.0,
    }


def loop_seeds(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """The loop's seed runs of a study's detail (its arms `loop`, and `loop_originals` in an ablation)."""
    runs = detail.get("runs") or {}
    return [r for arm, rs in runs.items() if arm.startswith("loop") for r in rs if r.get("kind", "single") == "single"]


def committed_details() -> list[tuple[str, dict[str, Any]]]:
    """(commit, detail) of each committed version of the study's detail file, newest first (git)."""

    def git(*args: str) -> bytes | None:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None

    if git("rev-parse", "--is-shallow-repository") == b"true\n":
        print("warning: a shallow clone holds only the latest commits' studies (git fetch --unshallow for all)")
    found = []
    for commit in (git("log", "--diff-filter=AM", "--format=%h", "--", DETAIL) or b"").decode().split():
        raw = git("show", f"{commit}:{DETAIL}")
        if raw is not None:
            found.append((commit, json.loads(raw)))
    return found


def replay_rows(studies: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for label, detail in studies:
        for run in loop_seeds(detail):
            replay = patience_replay(run)
            if replay is not None and (run.get("config") or {}).get("patience") in (None, 8):
                rows.append({"study": label, **replay})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detail", type=Path, default=RESULTS / "quality_loop_detail.json")
    parser.add_argument(
        "--quick", action="store_true", help="this study only, without the git history; writes *.quick.json"
    )
    parser.add_argument("--history", action="store_true", help="(the default of a full run; kept for old commands)")
    args = parser.parse_args()
    if not args.detail.is_file():
        raise SystemExit(f"no study detail at {args.detail}: run bench/quality_loop.py first")
    rows: list[dict[str, Any]] = seed_rows(json.loads(args.detail.read_text(encoding="utf-8")))
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
    detail = json.loads(args.detail.read_text(encoding="utf-8"))
    here = replay_rows([(args.detail.name, detail)])
    for r in here:
        print(
            f"seed {r['seed']}: planned {r['planned_epochs']} epochs → patience {r['patience']}: stops at epoch "
            f"{r['stops_at']} of {r['epochs']} (best {r['best_epoch']}, "
            f"{'kept' if r['keeps_best_epoch'] else 'LOST'}), {100 * r['training_saved']:.0f}% of its training saved"
        )
    saved = sum(r["training_saved"] for r in here) / len(here) if here else 0.0
    results += [
        {
            "metric": "planned_patience_keeps_best_epoch",
            "value": sum(r["keeps_best_epoch"] for r in here),
            "target": len(here),
            "unit": "seeds",
            "of": len(here),
        },
        {"metric": "planned_patience_training_saved", "value": round(100 * saved, 1), "target": None, "unit": "%"},
    ]
    if not args.quick:  # a quick run wrote the committed figures without their history rows
        past = replay_rows(committed_details())
        studies = sorted({r["study"] for r in past})
        kept = sum(r["keeps_best_epoch"] for r in past)
        past_saved = sum(r["training_saved"] for r in past) / len(past) if past else 0.0
        for r in past:
            if not r["keeps_best_epoch"]:
                print(f"  {r['study']} seed {r['seed']}: stops at {r['stops_at']}, best epoch {r['best_epoch']} lost")
        print(
            f"history: {len(studies)} committed studies, {len(past)} seed runs: the planned patience keeps the best "
            f"epoch in {kept}, saving {100 * past_saved:.1f}% of their training on average"
        )
        results += [
            {
                "metric": "planned_patience_keeps_best_epoch_history",
                "value": kept,
                "target": len(past),
                "unit": "seeds",
                "of": len(past),
                "studies": len(studies),
            },
            {
                "metric": "planned_patience_training_saved_history",
                "value": round(100 * past_saved, 1),
                "target": None,
                "unit": "%",
            },
        ]
        rows = [*rows, *({"replay": r} for r in past)]
    rows = [*rows, *({"replay": r} for r in here)]
    # a study's suffix (quality_loop_detail.loop.6x9min.json → .loop.6x9min) names its figures
    suffix = args.detail.name.removeprefix("quality_loop_detail").removesuffix(".json")
    suffix += ".quick" if args.quick else ""  # never over the committed figures
    out, per_seed = RESULTS / f"run_curves{suffix}.json", RESULTS / f"run_curves_detail{suffix}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    per_seed.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(f"soup: {joined} of {len(candidates)} candidate epochs joined; {out.name}, per seed {per_seed.name}")
    print(
        f"weight averaging, paired within the run: better on val in {wins} of {len(gains)} epochs, {mean:+.2f} points"
    )
    kept_here = sum(r["keeps_best_epoch"] for r in here)
    print(
        f"planned patience: {kept_here} of {len(here)} seeds keep their best epoch, {100 * saved:.1f}% of the "
        f"training saved"
    )


if __name__ == "__main__":
    main()
