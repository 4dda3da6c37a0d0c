"""Turning an augmentation request or a plan into queued jobs (shared by the API and the CLI).

Everything is validated here, before anything is enqueued, so that a bad request gets a 422 (or exit code 2)
naming the field instead of a job that fails later. All writes go through the caller's session (it commits).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import (
    ConflictError,
    NotFoundError,
    PermissionDenied,
    QuotaExceeded,
    TooLargeError,
    ValidationFailed,
)
from core.settings import Settings, get_settings
from core.textnorm import content_hash, text_problem, written_text_problem
from db import queue
from db.augmentation import (
    SourceRow,
    counted_variants,
    create_plan,
    labels_of,
    list_plans,
    train_label_rows,
    variant_counts,
    variants_per_source,
)
from db.chunks import chunked
from db.datasets import lock_dataset
from db.models import (
    OPEN_JOB_STATUSES,
    AugmentationPlan,
    Dataset,
    Job,
    Origin,
    ReviewStatus,
    Sample,
    SampleLabel,
    Split,
    User,
)
from db.projects import jobs_in_flight, take_quota_turn
from services import leak_guard
from services.access import Need, is_admin, shown_provenance
from services.import_reading import declared_label
from services.protected_terms import ensure_seeded
from services.review_stats import plan_goal
from workers.augment.base import derive_seed
from workers.augment.catalog import validate_request
from workers.augment.params import FilterParams, MethodParams  # noqa: F401 - the API's request schema
from workers.augment.planner import PlanTarget, SourceSample, make_plan

JOB_KIND = "augment"
MAX_VARIANTS_PER_JOB = 50_000  # one job writes its variants in one transaction: keep that bounded
# Every job reads the dataset's val/test and training texts into its filters' indexes first (0.4 s on 5,000
# texts): a plan of 924 one-variant jobs cost 20 times the worker time of one job, past what the project's
# candidate cap means to allow (an attacker's find)
MIN_JOB_SIZE = 100
MAX_N_PER_TEXT = 50  # variants per source text and method in one request (the API's bound, the CLI's too)
MAX_MULTIPLIER = 1000  # a class grows to at most this many times its originals
SEED_LIMIT = 2**31  # the seed column is a 32-bit integer on Postgres


def load_sources(session: Session, dataset: Dataset, sample_ids: Sequence[int]) -> list[SourceRow]:
    """The given samples as augmentation sources. Only train-split originals and submitted texts not rejected
    in review qualify: augmenting a val/test text would leak it into training, and augmenting a variant
    compounds its drift. (A submitted text's variants train only once the text itself is approved.)"""
    ids = list(dict.fromkeys(sample_ids))
    rows: dict[int, tuple[str, str, str, int, str | None]] = {}
    for chunk in chunked(ids):
        for sid, text, split, origin, ds, status in session.execute(
            select(Sample.id, Sample.text, Sample.split, Sample.origin, Sample.dataset_id, Sample.review_status).where(
                Sample.id.in_(chunk)
            )
        ):
            rows[sid] = (text, split, origin, ds, status)
    missing = [sid for sid in ids if sid not in rows or rows[sid][3] != dataset.id]
    if missing:
        raise NotFoundError(f"sample(s) {missing[:10]} not found in dataset {dataset.name!r}", field="sample_ids")
    wrong = [sid for sid in ids if not _augmentable(rows[sid][1], rows[sid][2], rows[sid][4])]
    if wrong:
        raise ValidationFailed(
            f"sample(s) {wrong[:10]} are not train-split originals or submitted texts: only those are "
            "augmented (val/test texts would leak into training; a rejected text does not train)",
            field="sample_ids",
        )
    labels = labels_of(session, ids)
    return [SourceRow(sid, rows[sid][0], rows[sid][1], labels[sid]) for sid in ids]


def _augmentable(split: str, origin: str, status: str | None) -> bool:
    if split != Split.train:
        return False
    return origin == Origin.original or (origin == Origin.submitted and status != ReviewStatus.rejected)


def submit_texts(
    session: Session, dataset: Dataset, items: Sequence[tuple[str, dict[str, str]]], created_by: int | None
) -> list[int]:
    """Sample ids for free texts sent to POST /augment. An existing train original, or a submitted text not
    rejected, with the same normalised text (and labels) is reused; a new text is stored as a *submitted*
    train sample, pending review like a variant and recording who sent it: whoever sends it, only an admin's
    import creates trusted originals, and only reviewed text trains. A new text that is a near-duplicate of a
    val/test text is refused (services/leak_guard.py): approved, it would leak that text into training."""
    tasks = {t["name"]: list(t["labels"]) for t in dataset.tasks}
    # a label as an import reads it (stripped, NFC, 1.0 as 1) → the label set's own spelling
    spelled = {task: {declared_label(name): name for name in reversed(names)} for task, names in tasks.items()}
    hashes = [content_hash(text) for text, _ in items]
    existing: dict[str, tuple[int, str, str, str | None]] = {}
    for chunk in chunked(hashes):
        for sid, digest, split, origin, status in session.execute(
            select(Sample.id, Sample.content_hash, Sample.split, Sample.origin, Sample.review_status).where(
                Sample.dataset_id == dataset.id, Sample.content_hash.in_(chunk)
            )
        ):
            existing[digest] = (sid, split, origin, status)
    ids: list[int | str] = []  # a sample id, or the digest of a text new to the dataset (stored below)
    fresh: dict[str, int] = {}  # digest of each text new to the dataset -> its first position
    found_labels = labels_of(session, [e[0] for e in existing.values()])
    max_chars = get_settings().max_text_chars
    for i, ((text, labels), digest) in enumerate(zip(items, hashes, strict=True)):
        if problem := text_problem(text):
            raise ValidationFailed(f"texts[{i}] {problem}", field=f"texts.{i}.text")
        if len(text) > max_chars:
            raise ValidationFailed(
                f"texts[{i}] is {len(text)} characters; the maximum is {max_chars}", field=f"texts.{i}.text"
            )
        for task, label in labels.items():
            if task not in tasks:
                raise ValidationFailed(
                    f"texts[{i}]: unknown task {task!r} (tasks: {list(tasks)})", field=f"texts.{i}.labels"
                )
            if (own := spelled[task].get(declared_label(label))) is None:
                raise ValidationFailed(
                    f"texts[{i}]: unknown label {label!r} for task {task!r} (labels: {tasks[task]})",
                    field=f"texts.{i}.labels",
                )
            labels[task] = own  # the same key: the dict keeps its size while it is read
        if digest in fresh:
            first = items[fresh[digest]][1]
            if any(first.get(t) != y for t, y in labels.items()):  # as for a stored text: each label given agrees
                raise ConflictError(
                    f"texts[{i}] repeats texts[{fresh[digest]}] with other labels ({labels} vs {first})",
                    field=f"texts.{i}.labels",
                )
            ids.append(digest)
            continue
        if digest in existing:
            sid, split, origin, status = existing[digest]
            if not _augmentable(split, origin, status):
                raise ValidationFailed(
                    f"texts[{i}] is already sample {sid} ({origin}{', ' + status if status else ''}, split "
                    f"{split}): only train-split originals and submitted texts not rejected are augmented",
                    field=f"texts.{i}.text",
                )
            stored = found_labels.get(sid, {})
            clash = {t: (stored.get(t), y) for t, y in labels.items() if stored.get(t) != y}
            if clash:
                raise ConflictError(
                    f"texts[{i}] is already sample {sid} with other labels "
                    f"({', '.join(f'{t}: {a!r} vs {b!r}' for t, (a, b) in clash.items())})",
                    field=f"texts.{i}.labels",
                )
            ids.append(sid)
            continue
        if not labels:
            raise ValidationFailed(
                f"texts[{i}] is new to the dataset and has no labels: a variant copies its "
                "source's labels, so give at least one",
                field=f"texts.{i}.labels",
            )
        if problem := written_text_problem(text):  # a text already in the dataset (imported) is taken as it is
            raise ValidationFailed(f"texts[{i}] {problem}", field=f"texts.{i}.text")
        fresh[digest] = i
        ids.append(digest)
    # Checked in one batch once every text is known valid, before any row is written.
    positions = list(fresh.values())
    for i, leak in zip(positions, leak_guard.leaks(session, dataset, [items[i][0] for i in positions]), strict=True):
        if leak is not None:
            raise ValidationFailed(
                f"texts[{i}] is {leak.describe()}", field=f"texts.{i}.text", extra={"leak_of": leak.sample_id}
            )
    created: dict[str, int] = {}
    for digest, i in fresh.items():
        text, labels = items[i]
        sample = Sample(
            dataset_id=dataset.id,
            text=text,
            split=Split.train,
            origin=Origin.submitted,
            content_hash=digest,
            review_status=ReviewStatus.pending,
            created_by=created_by,
        )
        sample.labels_rows = [SampleLabel(task=t, label=y) for t, y in labels.items()]
        session.add(sample)
        session.flush()
        created[digest] = sample.id
    return [created[x] if isinstance(x, str) else x for x in ids]


@dataclass
class AugmentRequest:
    """`params` and `filters` take the shapes of MethodParams and FilterParams (the API's schema of them), as
    JSON: validate_request checks them here, against the dataset's language too, for the API and the CLI."""

    methods: list[str]
    n_per_text: int = 3
    seed: int = 0
    sample_ids: list[int] | None = None
    texts: list[tuple[str, dict[str, str]]] | None = None
    params: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    priority: int = 0


def _check_seed(seed: int) -> None:
    if not 0 <= seed < SEED_LIMIT:
        raise ValidationFailed(f"seed must be in [0, {SEED_LIMIT}); got {seed}", field="seed")


def job_params(
    dataset: Dataset,
    items: list[dict[str, int]],
    checked: dict[str, Any],
    seed: int,
    plan_id: int | None = None,
) -> dict[str, Any]:
    return {
        "dataset": dataset.name,
        "language": checked["language"],
        "items": items,
        "methods": checked["methods"],
        "seed": seed,
        "params": checked["params"],
        "filters": checked["filters"],
        "plan_id": plan_id,
    }


def hold_label_sets(session: Session, dataset: Dataset) -> Dataset:
    """Hold the dataset's row until the caller commits, then read its label sets afresh: a request that stores
    labels or goals by class name takes turns with a rename of a class (services/label_sets.py holds the row
    too), so it never stores a class renamed meanwhile, and the rename, after it, finds its job. Postgres; SQLite
    has one writer at a time anyway."""
    held = session.get(Dataset, dataset.id, populate_existing=True) if lock_dataset(session, dataset.id) else None
    if held is None:
        raise NotFoundError(f"dataset {dataset.name!r} not found (deleted meanwhile)", field="name")
    return held


def enqueue_request(
    session: Session, dataset: Dataset, request: AugmentRequest, settings: Settings, user_id: int | None
) -> Job:
    """One job that produces n_per_text variants per source text and method."""
    checked = validate_request(request.methods, dataset.language, request.params, request.filters, settings)
    _check_seed(request.seed)
    if not 1 <= request.n_per_text <= MAX_N_PER_TEXT:  # the CLI queued 0 or -5, which the worker then failed
        raise ValidationFailed(
            f"n_per_text must be from 1 to {MAX_N_PER_TEXT}; got {request.n_per_text}", field="n_per_text"
        )
    if (request.texts is None) == (request.sample_ids is None):
        raise ValidationFailed("give either texts or sample_ids", field="texts")
    if request.sample_ids is not None:
        if not request.sample_ids:
            raise ValidationFailed("sample_ids is empty", field="sample_ids")
        ids = [s.sample_id for s in load_sources(session, dataset, request.sample_ids)]
    else:
        if not request.texts:
            raise ValidationFailed("texts is empty", field="texts")
        dataset = hold_label_sets(session, dataset)  # the texts' labels are stored by class name
        ids = list(dict.fromkeys(submit_texts(session, dataset, request.texts, user_id)))
    total = len(ids) * request.n_per_text * len(checked["methods"])
    if total > MAX_VARIANTS_PER_JOB:
        raise TooLargeError(
            f"{total} candidates in one request (sources × n_per_text × methods); the limit is "
            f"{MAX_VARIANTS_PER_JOB}: split the request or use an augmentation plan",
            field="texts",
        )
    items = [{"sample_id": sid, "n": request.n_per_text} for sid in ids]
    ensure_seeded(session, dataset)
    return queue.enqueue(
        session,
        JOB_KIND,
        job_params(dataset, items, checked, request.seed),
        priority=request.priority,
        dataset_id=dataset.id,
        created_by=user_id,
        progress_total=total,
    )


MAX_MIN_COUNT = 10_000_000  # a class's target count; the per-project candidate cap bounds the work anyway


@dataclass
class PlanRequest:
    methods: list[str]
    min_fraction_of_largest: float = 0.4  # every class up to this share of its task's largest class
    max_multiplier: float = 10.0  # … but no class beyond this multiple of its own originals
    per_source_cap: int = 5
    min_count: int | None = None  # … and at least this many ("bring every rare class up to N"), as capped
    tasks: list[str] | None = None
    count_pending: bool = True
    job_size: int = 2000
    seed: int = 0
    params: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None
    enqueue: bool = False

    @property
    def target(self) -> PlanTarget:
        return PlanTarget(self.min_fraction_of_largest, self.max_multiplier, self.min_count)

    def as_params(self) -> dict[str, Any]:
        return {
            "methods": self.methods,
            "target": {
                "min_fraction_of_largest": self.target.min_fraction_of_largest,
                "max_multiplier": self.target.max_multiplier,
                "min_count": self.target.min_count,
            },
            "per_source_cap": self.per_source_cap,
            "tasks": self.tasks,
            "count_pending": self.count_pending,
            "job_size": self.job_size,
            "seed": self.seed,
            "params": self.params or {},
            "filters": self.filters or {},
            "enqueue": self.enqueue,
        }


def build_plan(
    session: Session, dataset: Dataset, request: PlanRequest, settings: Settings
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(plan, validated method parameters) for the dataset as it is now; nothing is written."""
    checked = validate_request(request.methods, dataset.language, request.params, request.filters, settings)
    _check_seed(request.seed)
    names = dataset.task_names()
    unknown = [t for t in request.tasks or [] if t not in names]
    if unknown:
        raise ValidationFailed(f"unknown task(s) {unknown}; the dataset's tasks: {names}", field="tasks")
    if request.tasks and len(set(request.tasks)) < len(request.tasks):  # stored as given, a task listed twice
        twice = sorted({t for t in request.tasks if request.tasks.count(t) > 1})
        raise ValidationFailed(f"tasks names {twice} more than once; name each task once", field="tasks")
    if not 0 < request.target.min_fraction_of_largest <= 1:
        raise ValidationFailed("min_fraction_of_largest must be in (0, 1]", field="target.min_fraction_of_largest")
    if not 1 <= request.target.max_multiplier <= MAX_MULTIPLIER:  # NaN too
        raise ValidationFailed(f"max_multiplier must be in [1, {MAX_MULTIPLIER}]", field="target.max_multiplier")
    if request.min_count is not None and not 1 <= request.min_count <= MAX_MIN_COUNT:
        raise ValidationFailed(f"min_count must be in [1, {MAX_MIN_COUNT:,}]", field="target.min_count")
    if not 1 <= request.per_source_cap <= 1000:
        raise ValidationFailed("per_source_cap must be in [1, 1000]", field="per_source_cap")
    if not MIN_JOB_SIZE <= request.job_size <= MAX_VARIANTS_PER_JOB:
        raise ValidationFailed(f"job_size must be in [{MIN_JOB_SIZE}, {MAX_VARIANTS_PER_JOB}]", field="job_size")
    held = variants_per_source(session, dataset)  # a source's variants from earlier plans count against its cap
    sources = [SourceSample(sid, labels, held.get(sid, 0)) for sid, labels in train_label_rows(session, dataset)]
    variants: dict[str, Counter[str]] = counted_variants(variant_counts(session, dataset), request.count_pending)
    plan = make_plan(
        [(t["name"], list(t["labels"])) for t in dataset.tasks],
        sources,
        variants,
        target=request.target,
        methods=checked["methods"],
        per_source_cap=request.per_source_cap,
        balance_tasks=request.tasks,
        job_size=request.job_size,
        seed=request.seed,
    )
    return plan, checked


def plan_jobs_seed(session: Session, dataset: Dataset, row: AugmentationPlan, seed: int) -> int:
    """The seed a plan's jobs draw with: the request's for the dataset's first enqueued plan, then one derived from
    it and the number of plans enqueued before (committed ones, whatever their ids). Variants are drawn per source
    and variant index from the seed, and a plan that tops up an earlier one picks many of the same sources: with
    the same seed it would redraw the earlier variants, every one of them then dropped as a duplicate. The caller
    holds the dataset's row (lock_dataset), so of two plans enqueued at once the second one counts the first."""
    earlier = session.scalars(
        select(AugmentationPlan.job_ids).where(AugmentationPlan.dataset_id == dataset.id, AugmentationPlan.id != row.id)
    )
    enqueued_before = sum(1 for job_ids in earlier if job_ids)
    return seed if enqueued_before == 0 else derive_seed(seed, "plan", enqueued_before) % SEED_LIMIT


def create_and_enqueue_plan(
    session: Session, dataset: Dataset, request: PlanRequest, settings: Settings, user_id: int | None
) -> AugmentationPlan:
    """Store the plan; with `enqueue`, also one job per chunk of its work (the jobs' ids go into the plan)."""
    tasks = [dict(t) for t in dataset.tasks]
    plan, checked = build_plan(session, dataset, request, settings)  # validates the request first
    # Two plans enqueued at once take turns from here to their commits: the first one seeds the dataset's
    # protected terms and the second one finds them; the second one's seed counts the first plan. A rename of a
    # class takes turns too: the plan's goals name the classes, so a plan built before a rename committed is
    # built again under the lock (the common case builds without holding the row).
    dataset = hold_label_sets(session, dataset)
    if dataset.tasks != tasks:
        plan, checked = build_plan(session, dataset, request, settings)
    if request.enqueue and (waiting := unfinished_plan_jobs(session, dataset)):
        # A plan counts the variants stored, not those its predecessor's jobs still owe: enqueued again (a
        # client retrying after a lost answer), it would generate the whole gap twice.
        shown = ", ".join(map(str, waiting[:10])) + (", …" if len(waiting) > 10 else "")
        raise ConflictError(
            f"an earlier plan's jobs for this dataset are still queued or running ({shown}): wait for them, "
            "or cancel them, then plan again",
            field="enqueue",
            extra={"job_ids": waiting},
        )
    jobs = plan.pop("jobs")
    plan["jobs"] = [{k: v for k, v in job.items() if k != "items"} for job in jobs]
    row = create_plan(session, dataset, request.as_params(), plan, user_id)
    if request.enqueue:
        ensure_seeded(session, dataset)
        seed = plan_jobs_seed(session, dataset, row, request.seed)
        ids = []
        for job in jobs:
            method_checked = {
                **checked,
                "methods": [job["method"]],
                "params": {job["method"]: checked["params"][job["method"]]},
            }
            enqueued = queue.enqueue(
                session,
                JOB_KIND,
                job_params(dataset, job["items"], method_checked, seed, plan_id=row.id),
                dataset_id=dataset.id,
                created_by=user_id,
                progress_total=job["variants"],
            )
            ids.append(enqueued.id)
        row.job_ids = ids
        row.plan = {**plan, "jobs": [{**j, "job_id": i, "seed": seed} for j, i in zip(plan["jobs"], ids, strict=True)]}
        session.flush()
    return row


def check_augment_capacity(session: Session, dataset: Dataset, user: User | None, field: str) -> None:
    """Called once a request's jobs are queued (flushed, not committed): for non-admins, the candidates the
    project's unfinished augment jobs still owe, these included, stay within AUGLOOP_MAX_AUGMENT_CANDIDATES_PER_PROJECT.
    Past it, 429, and the caller's transaction rolls the request back."""
    if is_admin(user):
        return
    cap = get_settings().max_augment_candidates_per_project
    take_quota_turn(session, dataset.project_id)  # the sum then includes what a request at once committed
    owed = jobs_in_flight(session, dataset.project_id, [JOB_KIND], "work_left")
    if owed > cap:
        raise QuotaExceeded(
            f"this request would make the project's queued and running augment jobs owe {owed:,} candidates; at "
            f"most {cap:,} at once (AUGLOOP_MAX_AUGMENT_CANDIDATES_PER_PROJECT): ask for fewer, or wait for "
            "some jobs to finish",
            field=field,
            extra={"in_flight": owed, "limit": cap},
        )


def unfinished_plan_jobs(session: Session, dataset: Dataset) -> list[int]:
    """Ids of the dataset's queued or running augment jobs that a plan enqueued (read from the plans' job ids:
    the jobs' own params hold every source they augment)."""
    planned = [
        i
        for ids in session.scalars(select(AugmentationPlan.job_ids).where(AugmentationPlan.dataset_id == dataset.id))
        if ids
        for i in ids
    ]
    unfinished: list[int] = []
    for chunk in chunked(sorted(set(planned))):
        unfinished += session.scalars(select(Job.id).where(Job.id.in_(chunk), Job.status.in_(OPEN_JOB_STATUSES)))
    return sorted(unfinished)


# Requests ------------------------------------------------------------------------------------------


def request_variants(
    session: Session, dataset_name: str, request: AugmentRequest, settings: Settings, user: User | None
) -> Job:
    """The project's leads (None: the operator). The queue is shared by every project, so a lead may put their
    job behind others (priority < 0) but only an admin ahead of them (priority > 0)."""
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, user, Need.lead, field="dataset")
    if request.priority > 0 and not is_admin(user):
        raise PermissionDenied(
            "priority above 0 puts a job ahead of every project's jobs: an admin's to give", field="priority"
        )
    job = enqueue_request(session, dataset, request, settings, user.id if user else None)  # validates first
    check_workers_can_run(session, dataset, request.methods, settings, user)  # the caller rolls the job back
    check_augment_capacity(session, dataset, user, "n_per_text")
    return job


def plan_view(row: AugmentationPlan, dataset: Dataset, progress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": row.id,
        "dataset": dataset.name,
        "params": row.params,
        "plan": row.plan,
        "job_ids": list(row.job_ids or []),
        "created_at": row.created_at,
        "progress": progress,
    }


def make_plan_for(
    session: Session, dataset_name: str, request: PlanRequest, settings: Settings, user: User | None
) -> dict[str, Any]:
    """The project's leads (None: the operator)."""
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, user, Need.lead)
    row = create_and_enqueue_plan(session, dataset, request, settings, user.id if user else None)
    if row.job_ids:  # validated; the caller rolls the plan and its jobs back
        check_workers_can_run(session, dataset, request.methods, settings, user)
    if request.enqueue:
        check_augment_capacity(session, dataset, user, "target")
    return plan_view(row, dataset)


def plans_with_progress(
    session: Session, dataset_name: str, user: User | None, limit: int = 20, queued: bool = False
) -> list[dict[str, Any]]:
    """Stored plans, newest first, each with the classes' progress now (approved and pending vs target);
    `queued`: only those that queued jobs (previews are stored too)."""
    from db.datasets import dataset_stats
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, user)
    counts = variant_counts(session, dataset)
    stats = dataset_stats(session, dataset)["tasks"]
    out = []
    for row in list_plans(session, dataset, limit, queued):
        progress = []
        for entry in (row.plan or {}).get("classes", []):
            task, label = entry["task"], entry["label"]
            by_status = counts.get(task, {}).get(label, {})
            original = stats.get(task, {}).get("labels", {}).get(label, {}).get("train_original", 0)
            approved = by_status.get("approved", 0)
            goal = plan_goal(entry)
            progress.append(
                {
                    "task": task,
                    "label": label,
                    "target": entry["target"],  # what it generated toward (pending variants counted)
                    "goal": goal,  # what it wants the class to reach with approved ones (None: not raised)
                    "original": original,
                    "approved": approved,
                    "pending": by_status.get("pending", 0),
                    "rejected": by_status.get("rejected", 0),
                    "with_approved": original + approved,
                    "remaining": 0 if goal is None else max(0, goal - original - approved),
                }
            )
        out.append(plan_view(row, dataset, progress))
    return out


def live_workers(session: Session) -> list[Any]:
    """The worker processes seen within three of their refresh intervals, with the augmenters each can load."""
    from db.worker_presence import live_workers as live

    return live(session)


def check_workers_can_run(
    session: Session, dataset: Dataset, methods: list[str], settings: Settings, user: User | None
) -> None:
    """Refuse methods that no live worker can load (every one that takes augment jobs reports it unavailable:
    a model missing with the hub offline, an endpoint that does not answer), saying why and what to set: the
    job would only fail on every attempt. With no live worker at all the job is accepted; it waits in the
    queue until one starts."""
    from workers.augment.availability import UNAVAILABLE, for_dataset

    caps = [w.capabilities for w in live_workers(session) if "augment" in (w.kinds or [])]
    if not caps:
        return
    for entry in for_dataset(dataset.language, caps, settings):
        if entry["method"] in methods and entry["state"] == UNAVAILABLE:
            reason = str(entry.get("reason") or "it reports the method unavailable")
            setting = f" (setting: {entry['setting']})" if entry.get("setting") else ""
            said = f"no running worker can load {entry['method']}: {reason}{setting}"
            raise ConflictError(said if is_admin(user) else shown_provenance(said), field="methods")


def worker_to_hand_over_to(
    session: Session, dataset_id: int | None, methods: Sequence[str], worker_id: str, settings: Settings
) -> list[str] | None:
    """Whether an augment job this worker holds belongs to another: the job's methods this worker cannot load
    (by what it would publish now: workers.augment.availability), when a live augment worker other than it
    reports every one of them loadable for the dataset's language. Workers of one deployment may differ (a GPU
    node with the masked LM cached, a CPU node offline without it); the claim takes jobs by kind only, and the
    job would otherwise fail here for good while another worker could run it. None: the job runs here (and, if
    a method cannot load, fails saying why): every method loads here, or no other worker can do better (so no
    two workers hand a job back and forth: each hands over only what it reports it cannot load, to one that
    reports it can)."""
    from workers.augment.availability import for_dataset, method_status
    from workers.augment.catalog import METHODS

    dataset = session.get(Dataset, dataset_id) if dataset_id is not None else None
    wanted = {m for m in methods if isinstance(m, str) and m in METHODS}  # others: the job's validation says why
    if dataset is None or not wanted:
        return None

    def cannot_load(caps: dict[str, Any]) -> list[str]:
        entries = for_dataset(dataset.language, [caps], settings)
        return [e["method"] for e in entries if e["method"] in wanted and not e["available"]]

    another_can = any(
        other.id != worker_id and "augment" in (other.kinds or []) and not cannot_load(other.capabilities or {})
        for other in live_workers(session)
    )
    if not another_can:  # checked first: a worker alone never probes an endpoint for it
        return None
    return cannot_load({method: method_status(method, settings) for method in sorted(wanted)}) or None


def augmenters_for(session: Session, dataset_name: str, settings: Settings, user: User | None) -> list[dict[str, Any]]:
    """Which augmentation methods can run for this dataset now: its language must be covered and a live
    worker must be able to load the method's model or data; the others say why and name the setting."""
    from services.datasets import dataset_named
    from workers.augment.availability import for_dataset

    dataset = dataset_named(session, dataset_name, user)
    caps = [w.capabilities for w in live_workers(session) if "augment" in (w.kinds or [])]
    methods = for_dataset(dataset.language, caps, settings)
    # Where the workers keep their models and data is the operator's to know: a member reads a directory's last part.
    return methods if is_admin(user) else shown_provenance(methods)


def preview_plan(session: Session, dataset_name: str, request: PlanRequest, settings: Settings) -> dict[str, Any]:
    """What a plan would generate now; nothing is stored."""
    from services.datasets import dataset_named

    return build_plan(session, dataset_named(session, dataset_name, None), request, settings)[0]


def train_originals_with(session: Session, dataset_name: str, wanted: dict[str, str]) -> list[int]:
    """Ids of the train-split originals whose labels include every TASK=LABEL of `wanted` (the CLI's)."""
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, None)
    label_sets = {t["name"]: list(t["labels"]) for t in dataset.tasks}
    for task, label in wanted.items():
        if task not in label_sets:
            raise ValidationFailed(f"unknown task {task!r}; the dataset's tasks: {list(label_sets)}", field="where")
        if label not in label_sets[task]:
            raise ValidationFailed(
                f"task {task!r} has no label {label!r}; its labels: {label_sets[task]}", field="where"
            )
    return [
        sid for sid, labels in train_label_rows(session, dataset) if all(labels.get(t) == y for t, y in wanted.items())
    ]
