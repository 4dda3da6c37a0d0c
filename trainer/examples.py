"""What the trainer trains on: tasks with their label sets, labelled examples, the three splits.

No torch here: the app reads these types (and the saved predictions) without loading the ML stack."""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from trainer.errors import TrainerError

T = TypeVar("T")

IGNORE = -100  # the label index of "this sample has no label for this task": the head does not train on it


@dataclass
class TaskSpec:
    name: str
    labels: list[str]


@dataclass
class Example:
    text: str
    labels: dict[str, str]  # task → label; a task may be missing
    sample_id: int | None = None
    content_hash: str | None = None
    difficulty: float | None = None  # curriculum: 0 easy … 1 hard; None falls back to length
    # the text it was made from (a variant's source sample id): an original and its variants are one family,
    # of which `variant_sampling="one_per_source"` draws one per epoch; None: a family of its own
    source_id: int | None = None


@dataclass
class SplitData:
    tasks: list[TaskSpec]
    train: list[Example]
    val: list[Example]
    test: list[Example]
    dataset: str = ""
    # Sample ids the data's reader kept out of train, by reason (e.g. reviewed texts close to a val/test text):
    # reported with the run, never trained on.
    left_out: dict[str, list[int]] = field(default_factory=dict)

    def snapshot(self) -> list[list[Any]]:
        """What the run trained on, to compare and reproduce runs: [sample_id, content_hash] per example."""
        return [[e.sample_id, e.content_hash] for e in self.train]


def require_val_labels(data: SplitData) -> None:
    """Refuse data with a task no val example labels: early stopping, the checkpoint kept and the decision rule
    read val, and without it the run trained on blind (a val macro-F1 of 0.0 at every epoch, the task still
    counted in the test figure). The app refuses such a request before (services.training); this is the
    trainer's own guard, for its callers as a library."""
    unlabelled = [t.name for t in data.tasks if not any(e.labels.get(t.name) in set(t.labels) for e in data.val)]
    if unlabelled:
        raise TrainerError(
            f"no labelled validation example for task(s) {unlabelled}: the trainer chooses on val (early "
            "stopping, the epoch kept, the decision rule); label val texts for them, or leave them out",
            field="data.val",
        )


def read_predictions(path: Path) -> dict[str, Any]:
    """A prediction dump a run saved (trainer.metrics.prediction_dump)."""
    dump: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return dump


def split_to_dict(data: SplitData) -> dict[str, Any]:
    """Plain JSON for a trainer in another process (trainer/distributed.py)."""

    def rows(examples: list[Example]) -> list[list[Any]]:
        return [[e.text, e.labels, e.sample_id, e.content_hash, e.difficulty, e.source_id] for e in examples]

    return {
        "tasks": [[t.name, t.labels] for t in data.tasks],
        "train": rows(data.train),
        "val": rows(data.val),
        "test": rows(data.test),
        "dataset": data.dataset,
    }


def split_from_dict(raw: dict[str, Any]) -> SplitData:
    def examples(rows: list[list[Any]]) -> list[Example]:
        return [
            Example(text, dict(labels), sample_id, content_hash, difficulty, source_id)
            for text, labels, sample_id, content_hash, difficulty, source_id in rows
        ]

    return SplitData(
        [TaskSpec(name, list(labels)) for name, labels in raw["tasks"]],
        examples(raw["train"]),
        examples(raw["val"]),
        examples(raw["test"]),
        raw.get("dataset", ""),
    )


def require_classes_in_subsample(tasks: list[TaskSpec], examples: list[Example], n: int) -> None:
    """A run's `max_train_samples` draw must still hold two classes of every task: the request was checked on
    the whole training view, and a draw of 1 or 3 texts trained (and "succeeded") on one class per task."""
    for task in tasks:
        held = {e.labels[task.name] for e in examples if e.labels.get(task.name) is not None}
        if len(held) < 2:
            raise TrainerError(
                f"max_train_samples {n} drew {len(examples)} training text(s) holding "
                f"{'no labelled text' if not held else 'only the class ' + repr(next(iter(held)))} of task "
                f"{task.name!r}: a classifier needs two classes; draw more texts",
                field="config.max_train_samples",
            )


TWO_CLASSES_NEEDED = "a classifier needs two classes; label more texts, or leave the task out (config.tasks)"


def fewer_than_two(labels: Collection[str]) -> str | None:
    """What a task's training labels hold when they are fewer than two classes ("only the class 'a'"), else None:
    the request (services.training) and the trainer say it alike."""
    held = sorted(set(labels))
    if len(held) >= 2:
        return None
    return f"only the class {held[0]!r}" if held else "no labelled text"


def require_two_classes(tasks: list[TaskSpec], examples: list[Example]) -> None:
    """Every task of the run's final training view holds two classes: the request counts originals and approved
    texts, and a view without some of them (`exclude_methods`, texts the leak guard leaves out) trained one class
    of a task and "succeeded"."""
    for task in tasks:
        what = fewer_than_two([e.labels[task.name] for e in examples if e.labels.get(task.name) is not None])
        if what is not None:
            raise TrainerError(
                f"task {task.name!r} has {what} among the {len(examples)} training text(s) of this run's view: "
                + TWO_CLASSES_NEEDED,
                field="config.tasks",
            )


def subsample(examples: list[T], n: int | None, seed: int) -> list[T]:
    """`n` of the examples (all when n is None or not smaller), drawn by `seed`, in their order: a run's
    `max_train_samples` (and the training estimate, which counts what the run will see)."""
    if n is None or n >= len(examples):
        return examples
    picked = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in picked]
