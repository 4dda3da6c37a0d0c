"""The minority-class planner: how many variants to generate from which sources, by which method, in
which jobs — and what that does to every task's classes.

Target: every class of every task reaches at least `min_fraction_of_largest` × its task's largest class (and,
when given, at least `min_count`: "bring every rare class up to N"), capped at `max_multiplier` × its own
original count (a class of 3 examples does not become 400 paraphrases of 3 texts). Counts are train-split
originals plus approved (and, by default, pending) variants.

A variant carries all of its source's labels, so one generated for `message=attack` also adds to the source's
`bias` and `audience` classes. The planner therefore allocates variants per *joint label combination*: it
repeatedly gives one variant to the combination whose classes still need the most (summed relative deficits),
preferring, among equals, combinations that add least to classes already at target (a task's majority). It
stops when no combination with spare capacity would reduce any deficit, so the plan's accounting of every task's
classes — including overshoot — is exact.

A source holds at most `per_source_cap` variants over every plan: the variants it has (from earlier plans or
requests, whatever their review) count, so a combination's capacity is its sources' spare room, and within a
combination each variant goes to a source with the fewest. A plan run again draws from the sources earlier plans
used least, not from the same few again (whose candidates the augmenter may have exhausted).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.augment.base import derive_seed

Combo = tuple[str | None, ...]
STEP_SHARE = 1000  # allocate() grants a combination up to 1/STEP_SHARE of its classes' least need at once


@dataclass(frozen=True)
class PlanTarget:
    min_fraction_of_largest: float = 0.4
    max_multiplier: float = 10.0
    min_count: int | None = None  # "bring every rare class up to N": a floor beside the fraction (both capped)


@dataclass(frozen=True)
class SourceSample:
    sample_id: int
    labels: dict[str, str]
    variants: int = 0  # the variants it has already, whatever their review


def spare(source: SourceSample, per_source_cap: int) -> int:
    """How many more variants the plan may ask of `source`."""
    return max(0, per_source_cap - source.variants)


def _targets(
    tasks: list[tuple[str, list[str]]],
    balanced: set[str],
    current: dict[str, Counter[str]],
    original: dict[str, Counter[str]],
    target: PlanTarget,
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int | None]]]:
    """Per task × class: the size the allocation works toward (never below the class's current size), and the
    size the plan wants for it (None: a task the plan does not balance), which may lie below its current size
    when pending variants are counted: a class not raised owes nothing, whatever waits for review."""
    goals: dict[str, dict[str, int]] = {}
    wants: dict[str, dict[str, int | None]] = {}
    for task, labels in tasks:
        largest = max((current[task][y] for y in labels), default=0)
        goals[task], wants[task] = {}, {}
        for y in labels:
            want = None
            if task in balanced:
                wanted = max(math.ceil(target.min_fraction_of_largest * largest), target.min_count or 0)
                want = min(wanted, math.floor(target.max_multiplier * original[task][y]))
            goals[task][y] = max(current[task][y], want or 0)
            wants[task][y] = want
    return goals, wants


def allocate(
    tasks: list[tuple[str, list[str]]],
    capacity: dict[Combo, int],
    current: dict[str, Counter[str]],
    goals: dict[str, dict[str, int]],
) -> dict[Combo, int]:
    """Variants per joint label combination, each at most its `capacity` (its sources' spare room; greedy: see
    the module docstring)."""
    names = [t for t, _ in tasks]
    largest = {t: max(1, max((current[t][y] for y in labels), default=1)) for t, labels in tasks}
    remaining = {t: {y: goals[t][y] - current[t][y] for y in goals[t]} for t in names}
    planned = {t: Counter[str]() for t in names}
    alloc = dict.fromkeys(capacity, 0)
    order = sorted(capacity, key=lambda c: tuple(x or "" for x in c))  # deterministic tie-breaks
    while True:
        best: Combo | None = None
        best_key: tuple[float, float] | None = None
        for combo in order:
            if alloc[combo] >= capacity[combo]:
                continue
            gain = 0.0
            harm = 0.0
            for t, label in zip(names, combo, strict=True):
                if label is None:
                    continue
                need = remaining[t][label]
                if need > 0:
                    gain += need / max(1, goals[t][label])
                else:
                    harm += (current[t][label] + planned[t][label]) / largest[t]
            if gain <= 0:
                continue
            key = (gain - 0.25 * harm, -harm)
            if best_key is None or key > best_key:
                best, best_key = combo, key
        if best is None:
            return alloc
        # One variant at a time, or, where every class the combination raises still needs thousands, a thousandth
        # of the least of those needs at once: a plan of millions of variants took minutes of an API thread, one
        # variant per pass over every combination; a plan whose classes need fewer than 2,000 is unchanged.
        needs = [remaining[t][y] for t, y in zip(names, best, strict=True) if y is not None and remaining[t][y] > 0]
        step = max(1, min(min(needs) // STEP_SHARE, capacity[best] - alloc[best]))
        alloc[best] += step
        for t, label in zip(names, best, strict=True):
            if label is not None:
                remaining[t][label] -= step
                planned[t][label] += step


def spread(
    sources: Sequence[SourceSample], count: int, seed: int, key: object, per_source_cap: int
) -> list[tuple[int, int]]:
    """(sample_id, variants) for `count` variants over `sources`, as even as possible counting the variants each
    has (each to a source with the fewest, none past `per_source_cap`; `count` is within their spare room): the
    ties go to a seeded random subset, so repeated plans do not always favour the lowest ids."""
    ordered = sorted(sources, key=lambda s: s.sample_id)
    random.Random(derive_seed(seed, "spread", key)).shuffle(ordered)
    room = [spare(s, per_source_cap) for s in ordered]
    have = [s.variants for s in ordered]

    def given(level: int) -> list[int]:  # what each gets when every source is filled up to `level`
        return [min(r, max(0, level - h)) for r, h in zip(room, have, strict=True)]

    # the highest level whose filling fits in `count` (a binary search: levels run up to the cap)
    low, high = 0, per_source_cap
    while low < high:
        mid = (low + high + 1) // 2
        if sum(given(mid)) <= count:
            low = mid
        else:
            high = mid - 1
    out = given(low)
    extra = count - sum(out)
    for i in range(len(ordered)):  # the rest, one each, to the sources at that level with room, in seeded order
        if extra <= 0:
            break
        if have[i] + out[i] == low and out[i] < room[i]:
            out[i] += 1
            extra -= 1
    return [(s.sample_id, k) for s, k in zip(ordered, out, strict=True) if k]


def make_plan(
    tasks: list[tuple[str, list[str]]],
    sources: Sequence[SourceSample],
    variants: dict[str, Counter[str]],
    *,
    target: PlanTarget,
    methods: list[str],
    per_source_cap: int,
    balance_tasks: list[str] | None = None,
    job_size: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The whole plan as JSON-ready data; `jobs[i]["items"]` hold the per-source variant counts to enqueue."""
    names = [t for t, _ in tasks]
    balanced = set(balance_tasks or names)
    original = {t: Counter[str]() for t in names}
    by_combo: dict[Combo, list[SourceSample]] = defaultdict(list)
    for s in sources:
        for t in names:
            if t in s.labels:
                original[t][s.labels[t]] += 1
        by_combo[tuple(s.labels.get(t) for t in names)].append(s)
    current = {t: original[t] + variants.get(t, Counter()) for t in names}
    goals, wants = _targets(tasks, balanced, current, original, target)
    capacity = {c: sum(spare(s, per_source_cap) for s in members) for c, members in by_combo.items()}
    alloc = allocate(tasks, capacity, current, goals)

    planned = {t: Counter[str]() for t in names}
    for combo, n in alloc.items():
        for t, label in zip(names, combo, strict=True):
            if label is not None:
                planned[t][label] += n
    classes = []
    for task, labels in tasks:
        for y in labels:
            expected = current[task][y] + planned[task][y]
            classes.append(
                {
                    "task": task,
                    "label": y,
                    "original": original[task][y],
                    "variants": variants.get(task, Counter[str]())[y],
                    "current": current[task][y],
                    "target": goals[task][y],
                    # the size the plan wants (None: a task it does not balance): originals + approved variants
                    # short of it are what the class still needs; its target counts pending variants too
                    "goal": wants[task][y],
                    "deficit": max(0, goals[task][y] - current[task][y]),
                    "planned": planned[task][y],
                    "expected": expected,
                    "shortfall": max(0, goals[task][y] - expected),
                    "balanced": task in balanced,
                }
            )

    # Per source, then per method: the j-th variant of the whole plan goes to methods[j % len(methods)],
    # so the methods share every class evenly.
    per_method: dict[str, list[tuple[int, int]]] = {m: [] for m in methods}
    turn = 0
    combos_out = []
    for combo in sorted(by_combo, key=lambda c: tuple(x or "" for x in c)):
        n = alloc.get(combo, 0)
        asked = spread(by_combo[combo], n, seed, combo, per_source_cap)
        combos_out.append(
            {
                "labels": {t: y for t, y in zip(names, combo, strict=True) if y is not None},
                "sources": len(by_combo[combo]),
                "variants": n,
                # the most asked of one source (not n / sources: a source's earlier variants leave it less room,
                # so the plan asks more of the others)
                "per_source": max((k for _, k in asked), default=0),
            }
        )
        for sample_id, k in asked:
            shares = Counter(methods[(turn + j) % len(methods)] for j in range(k))
            turn += k
            for method, share in shares.items():
                per_method[method].append((sample_id, share))
    jobs = []
    for method in methods:
        chunk: list[dict[str, int]] = []
        size = 0
        for sample_id, k in per_method[method]:
            if chunk and size + k > job_size:
                jobs.append({"method": method, "items": chunk, "variants": size, "sources": len(chunk)})
                chunk, size = [], 0
            chunk.append({"sample_id": sample_id, "n": k})
            size += k
        if chunk:
            jobs.append({"method": method, "items": chunk, "variants": size, "sources": len(chunk)})
    return {
        "target": {
            "min_fraction_of_largest": target.min_fraction_of_largest,
            "max_multiplier": target.max_multiplier,
            "min_count": target.min_count,
        },
        "balanced_tasks": [t for t in names if t in balanced],
        "classes": classes,
        "combinations": [c for c in combos_out if c["variants"]],
        "methods": {m: sum(k for _, k in per_method[m]) for m in methods},
        "total_variants": sum(alloc.values()),
        "sources_used": len({sid for m in methods for sid, _ in per_method[m]}),
        "per_source_cap": per_source_cap,
        # train sources that already hold per_source_cap variants: the plan asks nothing more of them
        "sources_at_cap": sum(1 for s in sources if not spare(s, per_source_cap)),
        "jobs": jobs,
    }
