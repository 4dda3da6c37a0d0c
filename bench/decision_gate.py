"""When should a decision rule be kept? The prior correction's gate compared on every quality study in git history.

trainer/decision.py fits a prior correction per task on val and keeps it only when 5-fold cross-validation within
val shows a gain: by default a gain larger than one standard error of that gain (`MIN_GAIN_SE`). This script
refits, offline and in seconds, the rules of every committed run of `bench/quality_loop.py` (the
`quality_loop_members.json.gz` of each commit that changed it, and the working tree's if it differs) under three
gates, and scores each on test:

- `argmax`: never a rule;
- `any_gain`: kept on any positive out-of-fold gain (the gate until 2026-12-04);
- `one_se`: kept when the gain exceeds one standard error (the product's gate).

Per run, the fits are the full loop (the seeds + the TF-IDF member, weights and temperatures as the product fits
them), the seeds ensembled, and each seed alone (as a one-member ensemble: temperature-scaled). Test is read here
to report what each gate did; it is also what showed, over the five runs of 2026-12-04, that the old gate was too
loose (the fits share each run's val and test texts: five runs' evidence, not 25 fits'). The gate's one
standard error is not tuned on it: it is the usual line between a difference and its noise.

    .venv/bin/python bench/decision_gate.py            # every committed run (~10 s)
    .venv/bin/python bench/decision_gate.py --quick    # the latest run only
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import time
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()

import numpy as np  # noqa: E402
from ensemble_rules import overall_macro_f1, read_loop  # noqa: E402

from trainer.decision import fit_prior_correction  # noqa: E402
from trainer.ensemble import combine, fit_ensemble  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MEMBERS = "bench/results/quality_loop_members.json.gz"
GATES = {"argmax": None, "any_gain": 0.0, "one_se": 1.0}


def git(*args: str) -> bytes | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def committed_runs(quick: bool) -> list[tuple[str, bytes]]:
    """(label, gzip bytes) of each committed members file, newest first; the working tree's first if it differs."""
    if git("rev-parse", "--is-shallow-repository") == b"true\n":
        print("warning: a shallow clone holds only the latest commits' runs (git fetch --unshallow for all)")
    commits = (git("log", "--diff-filter=AM", "--format=%h", "--", MEMBERS) or b"").decode().split()
    found = [(commit, raw) for commit in commits if (raw := git("show", f"{commit}:{MEMBERS}")) is not None]
    here = (ROOT / MEMBERS).read_bytes() if (ROOT / MEMBERS).exists() else None
    if here is not None and (not found or here != found[0][1]):
        found.insert(0, ("working tree", here))
    return found[:1] if quick else found


def gate_effects(raw: bytes) -> list[dict[str, Any]]:
    """Per fit (full loop, seeds, each seed): each gate's test macro-F1 and the α it kept per task."""
    loop = read_loop(json.loads(gzip.decompress(raw))["loop"])
    kinds, tasks, seeds = loop.kinds, loop.tasks, loop.seeds
    val, val_gold, test, test_gold = loop.val, loop.val_gold, loop.test, loop.test_gold
    fits = {"full loop": list(range(len(kinds))), "seeds": seeds} | {f"seed {n}": [i] for n, i in enumerate(seeds)}
    out = []
    for name, idx in fits.items():
        params = fit_ensemble(
            [val[i] for i in idx],
            val_gold,
            tasks,
            [f"m{i}" for i in idx],
            [kinds[i] for i in idx],
            weighted=True,
            temperature=True,
            decision="none",
        )
        mixed_val, mixed_test = combine([val[i] for i in idx], params), combine([test[i] for i in idx], params)
        row: dict[str, Any] = {"fit": name}
        for gate, min_se in GATES.items():
            rules = (
                None
                if min_se is None
                else {
                    t.name: fit_prior_correction(mixed_val[t.name], val_gold[:, j], min_gain_se=min_se)
                    for j, t in enumerate(tasks)
                }
            )
            row[gate] = 100 * overall_macro_f1(mixed_test, test_gold, tasks, rules)
            row[f"{gate}_alpha"] = {t.name: (rules or {}).get(t.name, {}).get("alpha", 0.0) for t in tasks}
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the latest run only")
    args = parser.parse_args()
    started = time.monotonic()
    rows = []
    runs = committed_runs(args.quick)
    if not runs:
        raise SystemExit(f"no quality study to read: {MEMBERS} is neither in git history nor in the working tree")
    for label, raw in runs:
        for row in gate_effects(raw):
            row["run"] = label
            rows.append(row)
            print(
                f"{label:12s} {row['fit']:9s} argmax {row['argmax']:5.2f}  "
                + "  ".join(
                    f"{g} {row[g] - row['argmax']:+.2f} (α {', '.join(f'{a:g}' for a in row[f'{g}_alpha'].values())})"
                    for g in ("any_gain", "one_se")
                ),
                flush=True,
            )
    results: list[dict[str, Any]] = [{"metric": "fits", "value": len(rows), "target": None, "unit": "fits"}]
    summary = {}
    for gate in ("any_gain", "one_se"):
        effects = np.array([r[gate] - r["argmax"] for r in rows])
        kept = sum(any(a != 0 for a in r[f"{gate}_alpha"].values()) for r in rows)
        summary[gate] = (kept, effects)
        results += [
            {"metric": f"{gate}_rules_kept", "value": kept, "target": None, "unit": "fits"},
            {
                "metric": f"{gate}_mean_test_effect",
                "value": round(float(effects.mean()), 3),
                "target": None,
                "unit": "points",
            },
            {
                "metric": f"{gate}_worst_test_effect",
                "value": round(float(effects.min()), 2),
                "target": None,
                "unit": "points",
            },
            {
                "metric": f"{gate}_best_test_effect",
                "value": round(float(effects.max()), 2),
                "target": None,
                "unit": "points",
            },
        ]
    suffix = ".quick" if args.quick else ""
    (RESULTS / f"decision_gate{suffix}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        f"{len(rows)} fits in {time.monotonic() - started:.0f} s; results in bench/results/decision_gate{suffix}.json"
    )
    print(
        "test macro-F1 change over the argmax, kept / mean / worst / best: "
        + "; ".join(
            f"{g} {k}/{len(rows)} {e.mean():+.2f} {e.min():+.2f} {e.max():+.2f}" for g, (k, e) in summary.items()
        )
    )


if __name__ == "__main__":
    main()
