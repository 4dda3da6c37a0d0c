"""Serving trained models: a run or an ensemble loaded for prediction (cached per process), pseudo-labelling.

Reads happen in a short read-only transaction, prediction with none open, writes in one final transaction.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import ServerBusy, TooLargeError, ValidationFailed
from core.settings import Settings, get_settings
from core.textnorm import normalize_text
from db import queue
from db import training_runs as db_runs
from db.datasets import get_dataset
from db.models import Dataset, Job, JobStatus, TrainingRun, User
from db.session import readonly_engine, session_scope
from services.access import Need, visible_run
from services.compute_bounds import check_other_capacity

ProgressFn = Callable[[dict[str, Any]], None]
FinishFn = Callable[[Session, dict[str, Any]], None]

# Models for prediction (a run or an ensemble) -----------------------------------------------------


@dataclass
class ModelSpec:
    id: int
    kind: str  # single | tfidf | ensemble
    dataset_id: int
    model_dirs: list[str]
    member_kinds: list[str] = field(default_factory=list)  # per model dir: single | tfidf
    ensemble: dict[str, Any] = field(default_factory=dict)  # an ensemble's fitted parameters (its config)
    finished_at: str = ""

    @property
    def cache_key(self) -> str:
        return f"{self.id}@{self.finished_at}:{'|'.join(self.model_dirs)}"


# What loading a saved model reads (trainer/model.py load_model, trainer/classical.py ClassicalPredictor): a
# damaged folder was answered 500 ("could not read or write a file"), naming neither the run nor the file.
# Each entry: the file, or the files of which one must be there (save_pretrained writes one weights format).
SAVED_MODEL_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "single": (
        ("model.json",),
        ("heads.safetensors",),
        ("encoder/config.json",),
        ("encoder/model.safetensors", "encoder/pytorch_model.bin"),
        ("encoder/tokenizer_config.json",),
    ),
    "tfidf": (("model.json",), ("model.joblib",)),
}


def _lacking(folder: Path, kind: str) -> str | None:
    """The first file a saved model of `kind` in `folder` lacks (the first of its alternatives), or None."""
    for wanted in SAVED_MODEL_FILES.get(kind, (("model.json",),)):
        if not any((folder / name).exists() for name in wanted):
            return wanted[0]
    return None


def check_saved_model(member: TrainingRun, model_id: int, *, field_name: str) -> None:
    """Refuse a run whose saved model lacks a file (its directory removed or cut short): it could not predict.
    `model_id` is the model asked for (an ensemble, or the run itself)."""
    lacking = _lacking(Path(member.artifact_dir or "") / "model", member.kind)
    if lacking is not None:  # a file name, never the server's path
        which = f"run {member.id}" + (f" (a member of ensemble {model_id})" if member.id != model_id else "")
        missing = "is missing" if lacking == "model.json" else f"is incomplete (no {lacking})"
        raise ValidationFailed(f"the saved model of {which} {missing}: train it again", field=field_name)


def model_spec(session: Session, model_id: int, user: User | None, *, field_name: str = "model_id") -> ModelSpec:
    """What loads run or ensemble `model_id`, when `user` may see it (None: a job, authorized when queued)."""
    run = visible_run(session, model_id, user, field=field_name)
    if run.status != JobStatus.succeeded:
        raise ValidationFailed(f"run {model_id} is {run.status}; only finished runs predict", field=field_name)
    if run.kind == "ensemble":
        members = [db_runs.get_run(session, int(m), field=field_name) for m in run.member_ids]
        params = dict(run.config)
        params.setdefault("members", [str(m.id) for m in members])  # ensembles saved before it was recorded
    else:
        members, params = [run], {}
    dirs = [str(Path(m.artifact_dir or "") / "model") for m in members]
    for member in members:
        check_saved_model(member, model_id, field_name=field_name)
    return ModelSpec(
        run.id,
        run.kind,
        run.dataset_id,
        dirs,
        [m.kind for m in members],
        params,
        run.finished_at.isoformat() if run.finished_at else "",
    )


def load_predictor(spec: ModelSpec) -> Any:
    """A RunPredictor or EnsemblePredictor for `spec`, loaded once per process (an LRU cache)."""
    # The ML stack loads on first use: the API serves everything else without importing torch.
    from trainer.classical import ClassicalPredictor
    from trainer.predict import EnsemblePredictor, RunPredictor, cached_predictor

    settings = get_settings()

    def build() -> Any:
        if settings.trainer_threads > 0:
            import torch

            torch.set_num_threads(settings.trainer_threads)
        members = [
            ClassicalPredictor(Path(d)) if kind == "tfidf" else RunPredictor(Path(d))
            for d, kind in zip(spec.model_dirs, spec.member_kinds, strict=True)
        ]
        if spec.kind == "ensemble":
            return EnsemblePredictor(members, spec.ensemble)
        return members[0]

    try:
        return cached_predictor(spec.cache_key, build, capacity=settings.trainer_model_cache)
    # A damaged file the check above cannot see: the trainer's own error, or the reader's (garbage weights are a
    # SafetensorError, a broken decision.json a JSONDecodeError, a model.json without tasks a KeyError): each a
    # 500 before. Their messages name server paths: the log has them.
    except Exception as err:
        logging.getLogger(__name__).warning("model %s cannot load: %s", spec.id, err, exc_info=True)
        raise ValidationFailed(
            f"the saved model of run {spec.id} cannot be loaded (a damaged file): train it again", field="model_id"
        ) from None


_turns: dict[int, threading.BoundedSemaphore] = {}
_turns_lock = threading.Lock()
PREDICTION_WAIT_SECONDS = 10.0


@contextmanager
def _prediction_turn(concurrency: int) -> Iterator[None]:
    """One of `concurrency` predictions computing at once in this process: predictions run a model on the API's
    own CPU (256 texts of 20,000 characters through a TF-IDF member take 10 s), and any member may ask for one,
    so without a bound a few members' requests slowed every request of the API. Past it a request waits its turn
    up to PREDICTION_WAIT_SECONDS, then is answered 503 with Retry-After."""
    with _turns_lock:
        turns = _turns.setdefault(concurrency, threading.BoundedSemaphore(concurrency))
    if not turns.acquire(timeout=PREDICTION_WAIT_SECONDS):
        raise ServerBusy(
            f"the server is computing {concurrency} predictions already (AUGLOOP_TRAINER_PREDICT_CONCURRENCY);"
            " retry in a few seconds",
            field="texts",
        )
    try:
        yield
    finally:
        turns.release()


def check_texts(texts: list[str], settings: Settings) -> None:
    """Each text one a model can read: not blank, valid Unicode, at most `max_text_chars` (its index named)."""
    for i, text in enumerate(texts):
        if not normalize_text(text):  # blank, or only zero-width and format characters (an import's empty text)
            raise ValidationFailed(f"texts[{i}] is empty", field=f"texts.{i}")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate ("\ud800" in JSON): the tokenizer raised, a 500
                raise ValidationFailed(f"texts[{i}] is not valid Unicode text", field=f"texts.{i}") from None
        if len(text) > settings.max_text_chars:
            raise TooLargeError(f"texts[{i}] exceeds {settings.max_text_chars} characters", field=f"texts.{i}")


def predict(session: Session, model_id: int, texts: list[str], settings: Settings, user: User | None) -> dict[str, Any]:
    """Per-task labels and probabilities for texts. Ends the caller's transaction before the model runs."""
    from trainer.predict import probs_to_json

    if len(texts) > settings.trainer_predict_max_texts:
        raise TooLargeError(f"at most {settings.trainer_predict_max_texts} texts per request", field="texts")
    check_texts(texts, settings)
    spec = model_spec(session, model_id, user)
    session.commit()  # no transaction may stay open while a model runs
    predictor = load_predictor(spec)  # outside the turn: a load waits for other loads only (cached_predictor)
    with _prediction_turn(settings.trainer_predict_concurrency):
        probs = predictor.predict_proba(texts)
        tasks = predictor.tasks
        decided = predictor.decide(probs)
    labels = [{t.name: t.labels[int(decided[t.name][i])] for t in tasks} for i in range(len(texts))]
    return {
        "model_id": model_id,
        "kind": spec.kind,
        "tasks": [{"name": t.name, "labels": t.labels} for t in tasks],
        "labels": labels,
        "probabilities": probs_to_json(tasks, probs),
    }


def _member_tasks(spec: ModelSpec) -> list[list[dict[str, Any]]] | None:
    """Each member's learnt tasks, read from its model.json (a few hundred bytes); None when one cannot be read."""
    import json

    out = []
    for folder in spec.model_dirs:
        try:
            tasks = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8")).get("tasks") or []
            out.append([task for task in tasks if isinstance(task, dict)])
        except (OSError, ValueError, AttributeError, TypeError):
            return None
    return out


UNREADABLE = "its saved model cannot be read: train it again"


def label_set_problem(spec: ModelSpec, dataset: Dataset) -> str | None:
    """Why the model's classes are not the dataset's (a class renamed or merged since it trained), or None. Its
    probabilities name the classes it learnt: read as the dataset's, they flag and reject variants for a class
    that is gone, and label texts with it."""
    members = _member_tasks(spec)
    if members is None:
        return UNREADABLE
    for tasks in members:
        for task in tasks:
            # in order: a run learns the dataset's label set in its order, which a rename keeps (two classes
            # swapped by renames leave the same set in another order, and the meanings reversed)
            name, learnt = task.get("name"), list(task.get("labels") or [])
            if name in dataset.task_names() and learnt != dataset.labels_of(name):
                return (
                    f"it learnt task {name!r} as the classes {', '.join(learnt)}, and the dataset's are now "
                    f"{', '.join(dataset.labels_of(name))} (renamed or merged since): train a new run"
                )
    return None


def check_label_sets(spec: ModelSpec, dataset: Dataset, field_name: str = "model_id") -> None:
    if (problem := label_set_problem(spec, dataset)) is not None:
        raise ValidationFailed(f"run {spec.id}: {problem}", field=field_name)


def check_every_task(spec: ModelSpec, dataset: Dataset, field_name: str = "model_id") -> None:
    """Refuse a model that learnt fewer tasks than the dataset has (a run of `config.tasks: [bias]`) for
    pseudo-labels: each text gets one pseudo-label, which labelled only the model's tasks, and the others could
    then never be pseudo-labelled for it."""
    members = _member_tasks(spec)
    if members is None:
        raise ValidationFailed(f"run {spec.id}: {UNREADABLE}", field=field_name)
    learnt = set.intersection(*({str(task.get("name")) for task in tasks} for tasks in members)) if members else set()
    lacking = [name for name in dataset.task_names() if name not in learnt]
    if lacking:
        raise ValidationFailed(
            f"run {spec.id} was not trained on task(s) {', '.join(map(repr, lacking))} of dataset "
            f"{dataset.name!r}: a text is pseudo-labelled once, for every task, and its labels for those could "
            "never be added; pseudo-label with a run trained on every task",
            field=field_name,
        )


def dataset_and_model(
    session: Session,
    dataset_name: str,
    model_id: int,
    user: User | None,
    need: Need = Need.lead,
    *,
    every_task: bool = False,
) -> tuple[Dataset, ModelSpec]:
    """A dataset `user` may act on (`need`; None: a job, authorized when queued) and a finished run or ensemble
    trained on it: what labelling or scoring the dataset's texts with a model starts from. `every_task`: the
    model must have learnt every task of the dataset (pseudo-labels, check_every_task)."""
    from services.datasets import dataset_named

    dataset = (
        dataset_named(session, dataset_name, user, need) if user is not None else get_dataset(session, dataset_name)
    )
    spec = model_spec(session, model_id, user)
    if spec.dataset_id != dataset.id:
        raise ValidationFailed(f"run {model_id} was trained on another dataset", field="model_id")
    check_label_sets(spec, dataset)  # its labels must be the dataset's: pseudo-labels, scores of the queue
    if every_task:
        check_every_task(spec, dataset)
    return dataset, spec


def queue_model_job(
    session: Session,
    kind: str,
    dataset_name: str,
    model_id: int,
    user: User | None,
    *,
    every_task: bool = False,
    **params: Any,
) -> Job:
    """A job of `kind` that applies run or ensemble `model_id` to the dataset's texts (`params` join its
    payload); the project's leads. `every_task`: as dataset_and_model's."""
    dataset, _spec = dataset_and_model(session, dataset_name, model_id, user, every_task=every_task)
    job = queue.enqueue(
        session,
        kind,
        {"dataset": dataset.name, "model_id": model_id, **params},
        dataset_id=dataset.id,
        created_by=user.id if user else None,
        max_attempts=2,
    )
    check_other_capacity(session, dataset, user)
    return job


def queue_pseudo_labels(session: Session, dataset_name: str, model_id: int, threshold: float, user: User | None) -> Job:
    """A `pseudo_label` job: label the dataset's unlabelled train texts; confident ones wait for review. A
    dataset with none (every train text labelled, or pseudo-labelled already) is told so, not handed a job that
    labels nothing."""
    job = queue_model_job(session, "pseudo_label", dataset_name, model_id, user, every_task=True, threshold=threshold)
    if job.dataset_id is not None and not db_runs.unlabelled_texts(session, job.dataset_id, limit=1):
        raise ValidationFailed(
            f"dataset {dataset_name!r} has no unlabelled train text left to label (every train original has a "
            "label or a pseudo-label already)",
            field="dataset",
        )
    return job


# Pseudo-labels -------------------------------------------------------------------------------------


def execute_pseudo_labels(
    engine: Engine,
    dataset_name: str,
    model_id: int,
    threshold: float,
    *,
    job_id: int | None = None,
    created_by: int | None = None,
    progress: ProgressFn | None = None,
    finish: FinishFn | None = None,
) -> dict[str, Any]:
    """Label the dataset's unlabelled train texts with a run or ensemble; confident ones become pending.

    Each text gets the model's labels (its decision rule's); its confidence = the minimum over tasks of the
    probability of the label it gets: every label must be sure.
    """
    emit = progress or (lambda _e: None)
    with session_scope(readonly_engine(engine)) as session:
        dataset, spec = dataset_and_model(session, dataset_name, model_id, None, every_task=True)
        texts = db_runs.unlabelled_texts(session, dataset.id)
        dataset_id = dataset.id
    from trainer.predict import probs_to_json

    predictor = load_predictor(spec)
    probs = predictor.predict_proba(
        [t.text for t in texts], on_batch=lambda d, n: emit({"event": "predict", "done": d, "total": n})
    )
    as_json = probs_to_json(predictor.tasks, probs) if texts else []
    decided = predictor.decide(probs) if texts else {}
    items = []
    for i, text in enumerate(texts):
        top = {t.name: int(decided[t.name][i]) for t in predictor.tasks}
        confidence = min(float(probs[t.name][i, top[t.name]]) for t in predictor.tasks)
        if confidence >= threshold:
            items.append(
                db_runs.PseudoLabel(
                    text.id,
                    text.content_hash,
                    text.text,
                    {t.name: t.labels[top[t.name]] for t in predictor.tasks},
                    confidence,
                    as_json[i],
                )
            )
    with session_scope(engine) as session:
        dataset = session.get_one(Dataset, dataset_id)
        for item in items:  # a label the task no longer has (its label set changed since the model trained)
            for task, label in item.labels.items():
                if label not in dataset.labels_of(task):
                    raise ValidationFailed(f"label {label!r} is not in task {task!r}", field="labels")
        created = db_runs.add_pseudo_labels(
            session,
            dataset,
            items,
            model_id=model_id,
            model_name=f"augloop-run:{model_id}",
            threshold=threshold,
            job_id=job_id,
            created_by=created_by,
        )
        result = {
            "dataset": dataset_name,
            "model_id": model_id,
            "threshold": threshold,
            "unlabelled": len(texts),
            "above_threshold": len(items),
            "created": created,
        }
        if finish:
            finish(session, result)
    return result
