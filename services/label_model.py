"""Label-model flags worth trusting: which run scored a variant, and when a new run may replace those scores.

Every finished run scores the dataset's pending variants (services/run_execution.py), and the review queue
sorts and flags by those scores. A weak run (one epoch, val macro-F1 0.2) flags almost everything, so a run
replaces a variant's existing scores only when its val macro-F1 is better than that of the run that scored
it. A person can still choose any finished run or ensemble: `POST /datasets/{name}/label-model` queues a
`label_scores` job that rescores every pending variant with it, whatever its val macro-F1.

Each score records its scorer in `scores.label_model`: run id, kind (single or ensemble), name, val macro-F1,
whether a person chose it, and the per-task probabilities (from which the card shows the predicted labels).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from db import queue
from db import training_runs as db_runs
from db.models import OPEN_JOB_STATUSES, Dataset, Job, Origin, ReviewStatus, Sample, TrainingRun, User
from db.session import readonly_engine, session_scope

ProgressFn = Callable[[dict[str, Any]], None]
FinishFn = Callable[[Session, dict[str, Any]], None]


def scorer_of(run: TrainingRun, *, chosen: bool = False, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a score says about the model behind it (`metrics`: the run's, when it is not finished yet): its
    val macro-F1, and per task and class the probability below which a variant of the class is flagged
    (`flag_below`: services.variant_scoring.label_scores)."""
    val = ((run.metrics if metrics is None else metrics) or {}).get("val") or {}
    return {
        "run_id": run.id,
        "kind": run.kind,
        "name": run.name,
        "val_macro_f1": val.get("overall_macro_f1"),
        "flag_below": class_thresholds(val),
        "chosen": chosen,
    }


def class_thresholds(val: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per task, each class's `p10` on the val split (trainer.metrics: the probability 9 in 10 of the class's val
    texts get more of), for the classes with at least MIN_VAL_TEXTS val texts. A run recorded before `p10`
    was has none: its flags are the model's other label, as they were."""
    from services.variant_scoring import MIN_VAL_TEXTS

    out: dict[str, dict[str, float]] = {}
    for task, metrics in (val.get("tasks") or {}).items():
        per_class = (metrics or {}).get("per_class") or {}
        below = {
            label: round(float(c["p10"]), 6)
            for label, c in per_class.items()
            if isinstance(c, dict) and (c.get("support") or 0) >= MIN_VAL_TEXTS and c.get("p10") is not None
        }
        if below:
            out[task] = below
    return out


def replaces(current: dict[str, Any] | None, new_f1: float | None) -> bool:
    """Whether a run with val macro-F1 `new_f1` may overwrite a variant's label-model score `current`."""
    if not current:
        return True  # nothing to protect
    old_f1 = current.get("val_macro_f1")
    if old_f1 is None:
        return new_f1 is not None  # a score of unknown quality gives way to a measured one
    return new_f1 is not None and new_f1 > old_f1


def automatic_rule(
    scorer: dict[str, Any], tasks: Collection[str] | None = None
) -> Callable[[dict[str, Any] | None], bool]:
    """Whether a finished run's score replaces `current`: a better val macro-F1, or the same run's own earlier
    score (an attempt that failed after writing some batches, retried, whatever its val macro-F1 now). The
    exception covers only what this run wrote: another run's score stays unless this one is better, and
    db.training_runs.apply_consistency_scores decides on the row as locked, so a score another run wrote after
    this one read the row is judged, not overwritten."""
    f1, run_id = scorer.get("val_macro_f1"), scorer.get("run_id")
    covered = set(tasks) if tasks is not None else None

    def rule(current: dict[str, Any] | None) -> bool:
        own = run_id is not None and current is not None and current.get("run_id") == run_id
        if own or not current:
            return True
        if current.get("chosen") and not current.get("pinned"):  # a person's rescoring stands until they choose again
            return False
        if covered is not None and not set(current.get("probs") or {}) <= covered:
            # a run of fewer tasks: its macro-F1 averages other tasks, and its score would drop a task's check
            return False
        return replaces(current, f1)

    return rule


def consistency_from_probs(
    tasks: list[Any],
    variants: list[db_runs.PendingVariant],
    probs: dict[str, np.ndarray],
    predicted: dict[str, np.ndarray] | None = None,
    flag_below: dict[str, dict[str, float]] | None = None,
) -> list[db_runs.ConsistencyScore]:
    """Per variant: p(intended label) per task; consistency = the minimum over tasks; flag = in some task the
    variant looks less like its intended class than 9 in 10 of the class's val texts (`flag_below`: scorer_of's;
    where unknown, the model gives another label: `predicted`, the label index per task under the model's
    decision rule, default the argmax). services.variant_scoring.label_scores does the arithmetic."""
    from services.variant_scoring import label_scores

    labels = [v.labels for v in variants]
    scores = label_scores(tasks, probs, labels, predicted=predicted, flag_below=flag_below) if variants else []
    return [
        db_runs.ConsistencyScore(
            variant.id, variant.text, score.consistency, score.flag, score.probs, score.unheeded, score.flagged
        )
        for variant, score in zip(variants, scores, strict=True)
    ]


SCORING_PAGE = 2048  # pending variants predicted at a time
SCORE_WRITE_BATCH = 500  # scores written per transaction


def write_scores(
    engine: Engine,
    run_id: int,
    scores: list[db_runs.ConsistencyScore],
    *,
    scorer: dict[str, Any] | None,
    replace_if: Callable[[dict[str, Any] | None], bool] | None,
    guard: Callable[[Session], None] = lambda _s: None,
    keep_replaced: bool = False,
    on_written: Callable[[int], None] | None = None,
) -> int:
    """Write scores in set-based batches, each its own short transaction under `guard` (a job's lease): the
    rows a batch writes are locked (the write lock, on SQLite) for milliseconds, never across the whole
    scoring. Scores written before a failure stay, tagged with their run (and, with `keep_replaced`, holding
    the score each replaced, for its writer's end to give back); a retry overwrites them. `on_written(n)`:
    called once each batch has committed, with how many it wrote."""
    written, batch = 0, SCORE_WRITE_BATCH
    for start in range(0, len(scores), batch):
        with session_scope(engine) as session:
            guard(session)
            n = db_runs.apply_consistency_scores(
                session,
                run_id,
                scores[start : start + batch],
                scorer=scorer,
                replace_if=replace_if,
                keep_replaced=keep_replaced,
            )
        written += n
        if on_written is not None:
            on_written(n)
    return written


def score_pending(
    engine: Engine,
    dataset_id: int,
    score_page: Callable[[list[db_runs.PendingVariant], ProgressFn], list[db_runs.ConsistencyScore]],
    write: Callable[[list[db_runs.ConsistencyScore]], int],
    emit: ProgressFn,
) -> tuple[int, int]:
    """Score the dataset's pending variants a page at a time (memory holds one page) and write each page's
    scores before the next is predicted (`write`: write_scores under the job's lease), so a long scoring shows
    its progress and an attempt that dies keeps what it wrote. `score_page(page, progress)` predicts one page,
    reporting {"done", "total"} within it. Returns (written, scored): a score is not written where the variant
    was decided or edited meanwhile, or a better model's score stands."""
    reading = readonly_engine(engine)
    with session_scope(reading) as session:
        total = db_runs.count_pending_variants(session, dataset_id)
    written = done = last_id = 0
    while True:
        with session_scope(reading) as session:
            page = db_runs.pending_variants(session, dataset_id, after_id=last_id, limit=SCORING_PAGE)
        if not page:
            return written, done

        def page_progress(event: dict[str, Any], offset: int = done) -> None:
            emit({**event, "done": offset + event["done"], "total": max(total, offset + event["total"])})

        written += write(score_page(page, page_progress))
        done += len(page)
        last_id = page[-1].id


# A person's choice ---------------------------------------------------------------------------------


def choose_label_model(session: Session, dataset_name: str, model_id: int, user: User | None) -> Job:
    """Queue a `label_scores` job: rescore every pending variant with run or ensemble `model_id`. A dataset with
    none is told so, not handed a job that loads the model to score nothing (it succeeded at 0 of 0, and a
    choice recorded nowhere: new variants are scored by the model variant-settings names)."""
    from services.prediction import queue_model_job

    job = queue_model_job(session, "label_scores", dataset_name, model_id, user)
    if job.dataset_id is not None and not db_runs.count_pending_variants(session, job.dataset_id):
        raise ValidationFailed(
            f"dataset {dataset_name!r} has no pending variants to rescore; to choose the model that scores new "
            "variants, set label_model_id in the dataset's variant settings (PATCH /datasets/{name}/variant-settings)",
            field="dataset",
        )
    return job


def execute_rescoring(
    engine: Engine,
    dataset_name: str,
    model_id: int,
    *,
    job_id: int | None = None,
    worker_id: str | None = None,
    progress: ProgressFn | None = None,
    finish: FinishFn | None = None,
) -> dict[str, Any]:
    """Score the dataset's pending variants with a chosen model; its scores replace whatever was there. As a job
    (`job_id`, `worker_id`), each batch is written only while the worker holds the job, and all or nothing
    stands: each score is tagged with the job and keeps the one it replaced, the job's completion drops those
    (keep_job_replaced_scores, in the same transaction), and a job that ends without succeeding (cancelled,
    failed, lost with no attempts left) gives them back (withdraw_rescoring, the kind's end hook). Progress
    counts the scores committed, not the variants predicted."""
    from services.prediction import dataset_and_model, load_predictor

    emit = progress or (lambda _e: None)
    guard = queue.lease_guard(job_id, worker_id)
    with session_scope(readonly_engine(engine)) as session:
        dataset, spec = dataset_and_model(session, dataset_name, model_id, None)
        scorer = scorer_of(db_runs.get_run(session, model_id), chosen=True)
    if job_id is not None:
        scorer["job_id"] = job_id
    predictor = load_predictor(spec)
    committed, total = 0, 0

    def on_predicting(event: dict[str, Any]) -> None:  # prediction says how many there are, not how many are done
        nonlocal total
        total = max(total, int(event.get("total") or 0))
        emit({"event": "scoring", "done": committed, "total": total})

    def on_written(n: int) -> None:
        nonlocal committed
        committed += n
        emit({"event": "written", "done": committed, "total": total})

    def score_page(page: list[db_runs.PendingVariant], emit: ProgressFn) -> list[db_runs.ConsistencyScore]:
        probs = predictor.predict_proba(
            [v.text for v in page], on_batch=lambda d, n: emit({"event": "scoring", "done": d, "total": n})
        )
        return consistency_from_probs(predictor.tasks, page, probs, predictor.decide(probs), scorer["flag_below"])

    def write(scores: list[db_runs.ConsistencyScore]) -> int:
        return write_scores(
            engine,
            model_id,
            scores,
            scorer=scorer,
            replace_if=None,
            guard=guard,
            keep_replaced=job_id is not None,
            on_written=on_written,
        )

    written, seen = score_pending(engine, dataset.id, score_page, write, on_predicting)
    result = {"dataset": dataset_name, "model_id": model_id, "pending": seen, "scored": written}
    with session_scope(engine) as session:
        if job_id is not None:  # the job's scores stand with its completion (rolled back with it, if cancelled)
            guard(session)
            db_runs.keep_job_replaced_scores(session, job_id)
        if finish:
            finish(session, result)
    return result


def withdraw_rescoring(session: Session, job_ids: list[int]) -> int:
    """A rescoring that will not succeed leaves the queue as it found it: the scores its jobs wrote go, each
    variant given back the score (with its consistency, flag and scorer, a person's earlier choice included)
    it had before. Returns how many variants changed."""
    return db_runs.withdraw_job_scores(session, job_ids)


# What scored the queue -----------------------------------------------------------------------------


def label_model_summary(session: Session, dataset_name: str, user: User | None) -> dict[str, Any]:
    """Which runs scored the dataset's pending variants (how many each, flagged how often, and whether a person
    chose the run: a run that scored some variants by itself and others by choice is listed twice), best first;
    and `rescoring`: the person's choices still under way (label_scores jobs queued or running), whose scores
    stand only once the job succeeds (a job that does not gives the scores it replaced back)."""
    from services.datasets import dataset_named

    dataset: Dataset = dataset_named(session, dataset_name, user)
    run_of = Sample.scores["label_model"]["run_id"].as_integer()
    chosen_of = Sample.scores["label_model"]["chosen"].as_boolean()
    rows = session.execute(
        select(run_of, chosen_of, Sample.label_flag, func.count())
        .where(
            Sample.dataset_id == dataset.id,
            Sample.origin != Origin.original,
            Sample.review_status == ReviewStatus.pending,
        )
        .group_by(run_of, chosen_of, Sample.label_flag)
    ).tuples()
    counts: dict[tuple[int | None, bool], dict[str, int]] = {}
    for run_id, chosen, flag, n in rows:
        entry = counts.setdefault((run_id, bool(chosen)), {"pending": 0, "flagged": 0})
        entry["pending"] += n
        entry["flagged"] += n if flag else 0
    run_ids = [i for i, _ in counts if i]
    runs = {r.id: r for r in session.scalars(select(TrainingRun).where(TrainingRun.id.in_(run_ids)))}
    scorers = []
    for (run_id, chosen), entry in counts.items():
        run = runs.get(run_id) if run_id else None
        unknown = {"run_id": run_id, "val_macro_f1": None, "chosen": chosen}  # unscored, or its run deleted
        scorers.append({**(scorer_of(run, chosen=chosen) if run else unknown), **entry})
    scorers.sort(key=lambda s: (s["run_id"] is None, -(s.get("val_macro_f1") or -1)))
    open_jobs = session.scalars(
        select(Job)
        .where(Job.dataset_id == dataset.id, Job.kind == "label_scores", Job.status.in_(OPEN_JOB_STATUSES))
        .order_by(Job.id)
    )
    rescoring = [
        {
            "job_id": job.id,
            "model_id": (job.params or {}).get("model_id"),
            "status": job.status,
            "scored": job.progress_done,
            "pending": job.progress_total,
        }
        for job in open_jobs
    ]
    return {"dataset": dataset.name, "scorers": scorers, "rescoring": rescoring}
