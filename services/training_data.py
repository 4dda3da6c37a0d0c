"""The examples a run trains and is measured on, read from the database.

Train is the training view (train-split originals + approved variants and pseudo-labels, db.datasets.
training_samples); val and test are originals only, so nothing of them reaches training. Nor does a near-copy
of them: every reviewed text of the view (a variant, a pseudo-label, a submitted text) is checked against the
val/test texts as they are now, with the leak guard's default thresholds (services/leak_guard.py), and one that
comes close is left out and reported with the run (`left_out`). The doors check when a text is written, but a
later import can add the test text it comes close to, and a job may have been run with looser thresholds.
"""

from __future__ import annotations

from typing import Any

from core.errors import ValidationFailed
from db.datasets import samples_for_view, training_samples
from services import leak_guard
from trainer.examples import Example, SplitData, TaskSpec


def load_split_data(
    session: Any,
    dataset: Any,
    tasks: list[str] | None = None,
    *,
    variants: str = "approved",
    exclude_methods: list[str] | None = None,
) -> SplitData:
    """Read the training view and the val/test originals; samples without any chosen task are dropped.

    `variants="none"` trains on the originals only and `exclude_methods` leaves out the approved variants of
    those augmentation methods: the arms of an impact report (originals only, leave one method out).
    """
    known = dataset.task_names()
    chosen = tasks or known
    unknown = [t for t in chosen if t not in known]
    if unknown:
        raise ValidationFailed(f"dataset {dataset.name!r} has tasks {known}; unknown: {unknown}", field="config.tasks")
    specs = [TaskSpec(t, dataset.labels_of(t)) for t in chosen]

    def convert(samples: Any) -> list[Example]:
        out = []
        for s in samples:
            labels = {t: label for t, label in s.labels.items() if t in chosen}
            if not labels:  # unlabelled texts wait for pseudo-labelling; they train nothing
                continue
            difficulty = 1.0 - s.label_consistency if s.label_consistency is not None else None
            out.append(Example(s.text, labels, s.id, s.content_hash, difficulty, s.parent_id))
        return out

    excluded = set(exclude_methods or [])
    view = [
        s
        for s in training_samples(session, dataset)
        if s.origin == "original" or (variants != "none" and s.method not in excluded)
    ]
    leaks = near_val_test(session, dataset, [s for s in view if s.origin != "original"])
    train = convert(s for s in view if s.id not in leaks)
    val = convert(samples_for_view(session, dataset, {"original"}, splits={"val"}))
    test = convert(samples_for_view(session, dataset, {"original"}, splits={"test"}))
    if not train:
        raise ValidationFailed(f"dataset {dataset.name!r} has no labelled training samples", field="dataset")
    no_val = [t for t in chosen if not any(t in e.labels for e in val)]
    if no_val:
        raise ValidationFailed(
            f"dataset {dataset.name!r} has no labelled validation samples (split 'val') for task(s) {no_val}",
            field="dataset",
        )
    left_out = {"near_val_test": sorted(leaks)} if leaks else {}
    return SplitData(specs, train, val, test, dataset.name, left_out)


def left_out_line(left_out: dict[str, list[int]]) -> str:
    """What a run's `left_out` (SplitData.left_out, the run's metrics) says, in a line for people."""
    reasons = {"near_val_test": "near-duplicates of val/test texts"}
    return "left out of train: " + "; ".join(
        f"{len(ids)} reviewed texts, {reasons.get(reason, reason)} (e.g. sample {ids[0]})"
        for reason, ids in left_out.items()
    )


def near_val_test(session: Any, dataset: Any, samples: list[Any]) -> set[int]:
    """The ids of `samples` whose text is a near-duplicate of one of the dataset's val/test texts."""
    leaks = leak_guard.leaks(session, dataset, [s.text for s in samples])
    return {s.id for s, leak in zip(samples, leaks, strict=True) if leak is not None}
