"""A dataset's label sets after its import: renaming a class, or merging it into another (`PARTISAN` into
`partisan`, `1.0` into `1`). An import's warnings name such labels; before this the only fix was deleting the
dataset, with its reviews and runs, and importing again.

Every sample's label moves with the class (originals, variants, submitted texts and pseudo-labels alike), so do
a protected term seeded for it and the plans' goals for it (a merged class's goal goes). What stays as it was: the
runs trained before (their models hold the label set they learnt, and predict with it), the review history.
The label-model scores of the dataset's pending variants are withdrawn: they are the probabilities of the old
classes, so their flags no longer say whether a variant keeps its label (score again with a run trained after).
An admin's act, as an import is: it changes the labels of trusted originals.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError, ValidationFailed
from core.names import label_name_problem
from core.textnorm import unstorable
from db import training_runs as db_runs
from db.chunks import chunked
from db.datasets import lock_dataset
from db.models import OPEN_JOB_STATUSES, Dataset, Job, Origin, ProtectedTerm, Sample, SampleLabel, User
from db.session import affected_rows
from services.access import Need
from services.datasets import dataset_named
from services.import_reading import declared_label, label_key
from services.variant_settings import locked_settings, store

# Jobs that write samples with their labels (a class renamed under them would come back under its old name), and
# those that write label-model scores, the probabilities of the classes they read
SAMPLE_WRITERS = ("import", "augment", "pseudo_label", "train", "lr_select", "label_scores")


def rename_label(session: Session, name: str, task: str, label: str, to: str, user: User | None) -> dict[str, Any]:
    """Rename class `label` of `task` to `to`, or merge it into `to` when the task has that class already (its
    samples take `to`; the class leaves the label set, and the classes after it move up one place). In the
    caller's transaction. Returns what changed."""
    dataset = dataset_named(session, name, user, Need.admin)
    if not lock_dataset(session, dataset.id):
        raise NotFoundError(f"dataset {name!r} not found", field="name")
    session.refresh(dataset)
    if task not in dataset.task_names():
        raise ValidationFailed(f"unknown task {task!r} (tasks: {', '.join(dataset.task_names())})", field="task")
    labels = dataset.labels_of(task)
    if label not in labels:  # read as an import reads a label (` bar`, an NFD `café`, `1.0` for `1`)
        read = [x for x in labels if declared_label(x) == declared_label(label)]
        if len(read) > 1:  # a set stored before labels were read so (`1` beside `1.0`): name one as it is
            shown = ", ".join(repr(x) for x in read)
            raise ValidationFailed(f"{label!r} reads as each of the classes {shown}: name one as it is", field="label")
        label = read[0] if read else label
    if label not in labels:
        raise ValidationFailed(f"task {task!r} has no class {label!r} (classes: {', '.join(labels)})", field="label")
    to = declared_label(to)
    if not to:  # an import reads a blank cell as no label: such a class would vanish on the next round trip
        raise ValidationFailed("to: a class name cannot be blank", field="to")
    if problem := unstorable(to) or label_name_problem(to):
        raise ValidationFailed(f"to: {to[:60]!r} {problem}", field="to")
    if to == label:
        raise ValidationFailed(f"{label!r} is already the class's name", field="to")
    busy = list(
        session.scalars(
            select(Job.id).where(
                Job.dataset_id == dataset.id, Job.kind.in_(SAMPLE_WRITERS), Job.status.in_(OPEN_JOB_STATUSES)
            )
        )
    )
    if busy:
        raise ConflictError(
            f"jobs {', '.join(f'#{i}' for i in busy[:10])} of the dataset write samples with their labels or the "
            "label model's scores: rename a class once they have ended (or cancel them)",
            field="name",
            extra={"job_ids": busy},
        )
    # a class the task has that an import would read as `to` (`1.0` for `1`): merged into, under its own name
    same = next((x for x in labels if x != label and label_key(x) == label_key(to)), None)
    merged = same is not None
    if same is not None:
        to = same
    order = [x for x in labels if x != label] if merged else [to if x == label else x for x in labels]
    dataset.tasks = [{**t, "labels": order} if t["name"] == task else t for t in dataset.tasks]
    of_dataset = select(Sample.id).where(Sample.dataset_id == dataset.id).scalar_subquery()
    # A card shown with the old class is stale: a vote on it (its version) is refused, not stored for `to`. The
    # reviewable samples only (originals have no cards), locked in id order first, as bulk decisions lock them
    # (Postgres: one UPDATE locks in its plan's order, which could cross a bulk decision's and deadlock).
    carded = list(
        session.scalars(
            select(Sample.id)
            .where(
                Sample.id.in_(
                    select(SampleLabel.sample_id).where(
                        SampleLabel.task == task, SampleLabel.label == label, SampleLabel.sample_id.in_(of_dataset)
                    )
                ),
                Sample.origin != Origin.original,
            )
            .order_by(Sample.id)
            .with_for_update()
        )
    )
    for chunk in chunked(carded):
        session.execute(
            update(Sample)
            .where(Sample.id.in_(chunk))
            .values(version=Sample.version + 1)
            .execution_options(synchronize_session=False)
        )
    moved = affected_rows(
        session.execute(
            update(SampleLabel)
            .where(SampleLabel.task == task, SampleLabel.label == label, SampleLabel.sample_id.in_(of_dataset))
            .values(label=to)
            .execution_options(synchronize_session=False)
        )
    )
    session.execute(
        update(ProtectedTerm)
        .where(ProtectedTerm.dataset_id == dataset.id, ProtectedTerm.task == task, ProtectedTerm.label == label)
        .values(label=to)
        .execution_options(synchronize_session=False)
    )
    _rename_in_plans(session, dataset, task, label, to, merged)
    withdrawn = db_runs.drop_label_model_scores(session, dataset.id)  # the old classes' probabilities
    # a label model pinned for new variants learnt the old classes too: unpinned (the latest run that learnt the
    # classes as they are now scores them: services.variant_scoring.label_model_for)
    pinned = locked_settings(session, dataset)
    unpinned = None
    if pinned.label_model_id is not None and _learnt_other_classes(session, pinned.label_model_id, dataset):
        unpinned = pinned.label_model_id
        store(session, dataset, pinned.model_copy(update={"label_model_id": None}))
    session.flush()
    return {
        "dataset": dataset.name,
        "task": task,
        "label": label,
        "to": to,
        "merged": merged,
        "labels": order,
        "samples_relabelled": moved,
        "label_model_scores_withdrawn": withdrawn,
        "label_model_unpinned": unpinned,
    }


def _learnt_other_classes(session: Session, model_id: int, dataset: Dataset) -> bool:
    """Whether the model learnt classes the dataset no longer has as they are (or cannot be read any more)."""
    from core.errors import DomainError
    from services.prediction import label_set_problem, model_spec

    try:
        return label_set_problem(model_spec(session, model_id, None), dataset) is not None
    except DomainError:  # gone or unreadable: a pin that cannot score
        return True


def _rename_in_plans(session: Session, dataset: Dataset, task: str, label: str, to: str, merged: bool) -> None:
    """The plans' class goals follow the class: review progress, plan progress and the expected-value sort read
    the latest plan's targets by class name (a renamed class had none, a merged one's stayed as a class still
    owed variants). A merged class's goal goes (the class it joined keeps its own)."""
    from db.augmentation import list_plans

    for row in list_plans(session, dataset, limit=1_000_000):
        entries = (row.plan or {}).get("classes")
        if not isinstance(entries, list):
            continue
        moved = []
        for entry in entries:
            if isinstance(entry, dict) and entry.get("task") == task and entry.get("label") == label:
                if merged:
                    continue
                entry = {**entry, "label": to}
            moved.append(entry)
        combinations = [
            {**c, "labels": {**c["labels"], task: to}}
            if isinstance(c, dict) and isinstance(c.get("labels"), dict) and c["labels"].get(task) == label
            else c
            for c in (row.plan.get("combinations") or [])
        ]
        if moved != entries or combinations != (row.plan.get("combinations") or []):
            row.plan = {
                **row.plan,
                "classes": moved,
                **({"combinations": combinations} if "combinations" in row.plan else {}),
            }
