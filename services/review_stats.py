"""Agreement between annotators and review progress per class.

Agreement is measured on what annotators decide about a variant: keep it (approve or edit) or drop it
(reject). Cohen's kappa compares each pair of annotators on the variants both decided; Krippendorff's alpha
(nominal) covers everyone at once and tolerates missing ratings. Both are reported overall, per augmentation
method and per class, because a method or a class that annotators disagree on is where the guidelines need
work.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, defaultdict
from itertools import combinations
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score
from sqlalchemy import func, literal_column, select, true
from sqlalchemy.orm import Session

from db.augmentation import plan_queued
from db.chunks import chunked
from db.datasets import waiting_per_class
from db.models import AugmentationPlan, Dataset, Origin, Review, ReviewStatus, Sample, SampleLabel, User
from services.votes import APPROVING, replay

Units = dict[int, dict[int, int]]  # sample id → {user id → 1 keep / 0 drop}


def cohen_kappa(a: list[int], b: list[int]) -> float | None:
    """Kappa of two raters over the same items; None where it is undefined: no items, or chance agreement is
    total (both raters gave one and the same answer throughout)."""
    labels = sorted(set(a) | set(b))
    if len(labels) < 2:
        return None
    return float(cohen_kappa_score(a, b, labels=labels))


def krippendorff_alpha(units: Units) -> float | None:
    """Nominal alpha over all annotators; None when undefined (no unit rated twice, or one value only)."""
    import krippendorff

    rated = [u for u in units.values() if len(u) >= 2]
    if not rated:
        return None
    users = sorted({user for u in rated for user in u})
    index = {user: i for i, user in enumerate(users)}
    data = np.full((len(users), len(rated)), np.nan)
    for j, unit in enumerate(rated):
        for user, value in unit.items():
            data[index[user], j] = value
    if len({v for u in rated for v in u.values()}) < 2:
        return None  # everyone always gave the same answer: expected disagreement is zero
    alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal", value_domain=[0, 1]))
    return None if math.isnan(alpha) else alpha


def agreement_summary(units: Units, names: dict[int, str]) -> dict[str, Any]:
    pairs: dict[tuple[int, int], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    agree = total_pairs = 0
    for unit in units.values():
        for u, v in combinations(sorted(unit), 2):
            pairs[(u, v)][0].append(unit[u])
            pairs[(u, v)][1].append(unit[v])
            agree += unit[u] == unit[v]
            total_pairs += 1
    return {
        "units": len(units),
        "units_multi": sum(1 for u in units.values() if len(u) >= 2),
        "ratings": sum(len(u) for u in units.values()),
        "percent_agreement": agree / total_pairs if total_pairs else None,
        "alpha": krippendorff_alpha(units),
        "pairs": [
            {
                "a": names.get(u, str(u)),
                "b": names.get(v, str(v)),
                "n": len(xs),
                "agreement": sum(1 for x, y in zip(xs, ys, strict=True) if x == y) / len(xs),
                "kappa": cohen_kappa(xs, ys),
            }
            for (u, v), (xs, ys) in sorted(pairs.items())
        ],
    }


def agreement(session: Session, dataset: Dataset) -> dict[str, Any]:
    """Kappa per annotator pair and alpha overall, per method and per task × class."""
    rows = session.execute(
        select(Review.sample_id, Review.user_id, Review.decision, Sample.method)
        .join(Sample, Sample.id == Review.sample_id)
        .where(Sample.dataset_id == dataset.id, Review.automatic.is_(False))  # people's agreement only
        .order_by(Review.id)
    ).tuples()
    trails: dict[int, list[tuple[int, str]]] = {}
    method_of: dict[int, str] = {}
    for sample_id, user_id, decision, method in rows:
        trails.setdefault(sample_id, []).append((user_id, decision))
        method_of[sample_id] = method or "unknown"
    # The votes standing, as the status counts them (services.votes.replay): a user's latest, an undo withdrawing
    # it, and an edit withdrawing the votes cast on the text before it (they judged another text); counting
    # those too, the overall figures disagreed with each annotator's and with the statuses.
    units: Units = {}
    for sample_id, trail in trails.items():
        if votes := replay(trail):
            units[sample_id] = {user: 1 if decision in APPROVING else 0 for user, decision in votes.items()}
    names = (
        dict(
            session.execute(select(User.id, User.name).where(User.id.in_({u for unit in units.values() for u in unit})))
            .tuples()
            .all()
        )
        if units
        else {}
    )
    by_method: dict[str, Units] = defaultdict(dict)
    for sample_id, unit in units.items():
        by_method[method_of[sample_id]][sample_id] = unit
    by_class: dict[str, dict[str, Units]] = defaultdict(lambda: defaultdict(dict))
    reviewed = sorted(units)
    for chunk in chunked(reviewed):  # by primary key: only the reviewed variants' labels
        label_rows = session.execute(
            select(SampleLabel.sample_id, SampleLabel.task, SampleLabel.label).where(SampleLabel.sample_id.in_(chunk))
        ).tuples()
        for sample_id, task, label in label_rows:
            by_class[task][label][sample_id] = units[sample_id]
    return {
        "dataset": dataset.name,
        "decision_scale": "keep (approve or edit) vs drop (reject); each annotator's latest decision",
        "annotators": sorted(names.values()),
        "overall": agreement_summary(units, names),
        "by_method": {m: agreement_summary(u, names) for m, u in sorted(by_method.items())},
        "by_class": {
            task: {label: agreement_summary(u, names) for label, u in sorted(labels.items())}
            for task, labels in sorted(by_class.items())
        },
    }


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def latest_plan(session: Session, dataset: Dataset) -> AugmentationPlan | None:
    """The dataset's latest queued augmentation plan (one with jobs), whose goals the progress and the classes'
    needs read. A preview is stored too, with no jobs: it queued nothing, and it moved every member's progress
    bars ("0 / 314 approved · 314 to go" on a dataset with no plan queued) and the "most useful first" order."""
    return session.scalar(
        select(AugmentationPlan)
        .where(AugmentationPlan.dataset_id == dataset.id, plan_queued())
        .order_by(AugmentationPlan.id.desc())
        .limit(1)
    )


def plan_goal(entry: dict[str, Any]) -> int | None:
    """A plan's class entry's goal: the size it wants the class to reach with approved variants; None for a task
    it does not balance. Plans stored before the goal: their target, unless the class's task was not balanced
    (their target then was its size at the time, pending variants counted, owed by no one)."""
    if "goal" in entry:
        return _int(entry["goal"])
    return None if entry.get("balanced") is False else _int(entry.get("target"))


def plan_targets(plan: dict[str, Any] | None) -> dict[tuple[str, str], dict[str, int | None]]:
    """Per task × class goals of an augmentation plan, read defensively (workers/augment/planner.py owns it).

    The planner writes {"classes": [{"task", "label", "target", "goal", "deficit", "planned", ...}]}: `target`
    is the class size it generates toward (train originals + kept variants, pending ones too), `goal` the size it
    wants the class to reach with approved variants (None: a task the plan does not balance; plans stored before
    it: the target), `deficit` the variants that were missing. Also accepted: {"targets": [{"task", "label",
    "target"}]} and {"targets": {task: {label: n or {"target": n}}}}.
    """
    out: dict[tuple[str, str], dict[str, int | None]] = {}
    plan = plan or {}
    items = plan.get("classes") if isinstance(plan.get("classes"), list) else plan.get("targets")
    if isinstance(items, dict):
        items = [
            {"task": task, "label": label, **(value if isinstance(value, dict) else {"target": value})}
            for task, labels in items.items()
            if isinstance(labels, dict)
            for label, value in labels.items()
        ]
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and _int(item.get("target")) is not None:
            out[(str(item.get("task")), str(item.get("label")))] = {
                "target": _int(item["target"]),
                "goal": plan_goal(item),
                "needed": _int(item.get("deficit")),
                "planned": _int(item.get("planned")),
            }
    return out


def per_class(session: Session, dataset: Dataset, *where: Any) -> dict[tuple[str, str], int]:
    """(task, label) → how many of the dataset's samples matching `where` carry that label."""
    rows = session.execute(
        select(SampleLabel.task, SampleLabel.label, func.count())
        .join(Sample, Sample.id == SampleLabel.sample_id)
        .where(Sample.dataset_id == dataset.id, *where)
        .group_by(SampleLabel.task, SampleLabel.label)
    ).tuples()
    return {(task, label): n for task, label, n in rows}


def train_originals_per_class(session: Session, dataset: Dataset) -> dict[tuple[str, str], int]:
    """(task, label) → the dataset's train originals with that label. On Postgres each original's labels are a
    probe of pk_sample_labels: joined, the planner hashed the originals against every label row of the database
    (615,000 at 200,000 variants: 40-250 ms of each count of the classes' needs, against 11-18 ms)."""
    if session.get_bind().dialect.name != "postgresql":
        return per_class(session, dataset, Sample.origin == Origin.original, Sample.split == "train")
    labels = (
        select(SampleLabel.task, SampleLabel.label)
        .where(SampleLabel.sample_id == Sample.id)
        .offset(literal_column("0"))  # not flattened into a join: a probe per original
        .lateral()
    )
    rows = session.execute(
        select(labels.c.task, labels.c.label, func.count())
        .select_from(Sample)
        .join(labels, true())
        .where(Sample.dataset_id == dataset.id, Sample.origin == Origin.original, Sample.split == "train")
        .group_by(labels.c.task, labels.c.label)
    ).tuples()
    return {(task, label): n for task, label, n in rows}


def review_progress(session: Session, dataset: Dataset) -> dict[str, Any]:
    """Per task × class: variants pending / approved / rejected, train originals, the latest plan's goals."""
    counts = (
        session.execute(
            select(SampleLabel.task, SampleLabel.label, Sample.review_status, func.count())
            .join(Sample, Sample.id == SampleLabel.sample_id)
            .where(Sample.dataset_id == dataset.id, Sample.origin != Origin.original)
            .group_by(SampleLabel.task, SampleLabel.label, Sample.review_status)
        )
        .tuples()
        .all()
    )
    train = train_originals_per_class(session, dataset)
    methods = (
        session.execute(
            select(Sample.method, Sample.review_status, func.count())
            .where(Sample.dataset_id == dataset.id, Sample.origin != Origin.original)
            .group_by(Sample.method, Sample.review_status)
        )
        .tuples()
        .all()
    )
    plan = latest_plan(session, dataset)
    targets = plan_targets(plan.plan if plan else None)
    classes: dict[str, dict[str, dict[str, Any]]] = {
        t["name"]: {label: {"pending": 0, "approved": 0, "rejected": 0} for label in t["labels"]} for t in dataset.tasks
    }
    for task, label, status, n in counts:
        entry = classes.setdefault(task, {}).setdefault(label, {"pending": 0, "approved": 0, "rejected": 0})
        if status in entry:
            entry[status] += n
    for task, labels in classes.items():
        for label, entry in labels.items():
            entry["reviewed"] = entry["approved"] + entry["rejected"]
            entry["train_originals"] = train.get((task, label), 0)
            goal = targets.get((task, label), {})
            entry["target"] = goal.get("target")  # the class size the plan generated toward
            entry["goal"] = goal.get("goal")  # the size it wants with approved variants (None: a class not raised)
            entry["needed"] = goal.get("needed")  # variants the plan found missing: approved counts against it
            entry["planned"] = goal.get("planned")
    by_method: dict[str, dict[str, int]] = defaultdict(lambda: {"pending": 0, "approved": 0, "rejected": 0})
    for method, status, n in methods:
        if status in by_method[method or "unknown"]:
            by_method[method or "unknown"][status] += n
    totals = {s: sum(m[s] for m in by_method.values()) for s in ("pending", "approved", "rejected")}
    return {
        "dataset": dataset.name,
        "plan_id": plan.id if plan else None,
        "totals": totals,
        "by_method": dict(by_method),
        "classes": classes,
        "reviews_required": dataset.reviews_required,
    }


# class_needs per database and dataset, kept while nothing it counts can have changed (see _needs_stamp), and
# at most NEEDS_SECONDS: on Postgres a transaction holding smaller review ids may commit after one holding
# larger ones, which the stamp cannot see. A few datasets.
_NEEDS: OrderedDict[tuple[str, int], tuple[tuple[Any, ...], float, dict[tuple[str, str], float]]] = OrderedDict()
_NEEDS_KEPT = 16
NEEDS_SECONDS = 30.0
_NEEDS_LOCK = threading.Lock()


def _needs_stamp(session: Session, dataset: Dataset) -> tuple[Any, ...]:
    """What class_needs' counts depend on, read in three index seeks: a variant's status changes only with a
    review row (people's, the automatic ones, an undo) or with the dataset's k (a re-evaluation); originals and
    variants come as new samples; targets with a new plan."""
    return (
        dataset.reviews_required,
        session.scalar(select(func.max(Review.id))),
        session.scalar(select(func.max(Sample.id))),
        session.scalar(select(func.max(AugmentationPlan.id)).where(AugmentationPlan.dataset_id == dataset.id)),
    )


def class_needs(session: Session, dataset: Dataset) -> dict[tuple[str, str], float]:
    """class_needs_now, counted again only when something it counts may have changed (each page of "most
    useful first" asks)."""
    key = (str(session.get_bind().engine.url), dataset.id)
    stamp = _needs_stamp(session, dataset)
    now = time.monotonic()
    with _NEEDS_LOCK:
        kept = _NEEDS.get(key)
        if kept is not None and kept[0] == stamp and now - kept[1] < NEEDS_SECONDS:
            _NEEDS.move_to_end(key)
            return dict(kept[2])
    needs = class_needs_now(session, dataset)
    with _NEEDS_LOCK:
        _NEEDS[key] = (stamp, now, needs)
        _NEEDS.move_to_end(key)
        while len(_NEEDS) > _NEEDS_KEPT:
            _NEEDS.popitem(last=False)
    return dict(needs)


def class_needs_now(session: Session, dataset: Dataset) -> dict[tuple[str, str], float]:
    """How much each task × class still needs variants, 0..1: (target − train originals − approved variants)
    / target. The target is the latest augmentation plan's; without a plan, the planner's default rule (40%
    of the task's largest class, at most 10× the class's own originals: workers/augment/planner.py).

    Asked at every page of "most useful first": it counts the approved variants and the train originals per
    class only (two ranges of the queue and split indexes), not the whole progress panel, which counts every
    pending variant too (0.65 s at 200,000 variants against this one's few tens of ms)."""
    from workers.augment.planner import PlanTarget

    approved = per_class(
        session, dataset, Sample.origin != Origin.original, Sample.review_status == ReviewStatus.approved
    )
    for key, n in waiting_per_class(session, dataset).items():  # they do not train until their source does
        approved[key] = approved.get(key, 0) - n
    originals = train_originals_per_class(session, dataset)
    plan = latest_plan(session, dataset)
    targets = plan_targets(plan.plan if plan else None)
    classes: dict[str, list[str]] = {t["name"]: list(t["labels"]) for t in dataset.tasks}
    for task, label in [*approved, *originals]:
        if label not in classes.setdefault(task, []):
            classes[task].append(label)
    default = PlanTarget()
    out: dict[tuple[str, str], float] = {}
    for task, labels in classes.items():
        have = {label: originals.get((task, label), 0) + approved.get((task, label), 0) for label in labels}
        largest = max(have.values(), default=0)
        for label in labels:
            planned = targets.get((task, label))
            if planned is not None and planned["goal"] is None:  # a task the plan does not balance: no need
                out[(task, label)] = 0.0
                continue
            target = planned["goal"] if planned is not None else None
            if target is None:
                target = min(
                    math.ceil(default.min_fraction_of_largest * largest),
                    math.floor(default.max_multiplier * originals.get((task, label), 0)),
                )
            out[(task, label)] = max(0.0, target - have[label]) / target if target > 0 else 0.0
    return out
