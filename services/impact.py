"""Augmentation impact reports: does training on the approved variants help, which class, by how much?

Arms, each trained once per seed through the ordinary `train` job: `originals` (variants="none"),
`all_approved` (originals + every approved variant) and `without:<method>` (all approved variants except
that augmenter's). When the last run ends the report is computed from the test predictions the runs saved:

* per task and class (and the task's macro-F1): F1 mean ± sd across seeds, per arm;
* delta vs. `originals` with a paired bootstrap 95% CI over test examples: each draw resamples the test
  indices once and scores every arm and seed on the same resample; a draw's statistic is the per-seed F1
  averaged over seeds (arm) minus the same for the baseline. Averaging F1 over seeds (rather than averaging
  probabilities into one ensemble) keeps the point delta equal to the difference of the reported means, so the
  CI is about the quantity shown next to it;
* contribution of a method = `all_approved` − `without:<method>`, with the same bootstrap;
* with `classical` (the default), each arm also trains the TF-IDF member on the arm's own training view
  (`tfidf:<arm>` in run_ids), and the report adds the arm `ensemble:<arm>`: the arm's seeds and its TF-IDF
  member combined as the product combines them (services.ensembles: weights, temperatures and decision rule
  fitted on val). Its delta is against `ensemble:originals`: does augmentation help the model one would ship?
  Every arm is scored on the labels its models predict (their decision rules), not on the raw argmax.

Settling is idempotent: `settle` may run after every run of the report ends (in the worker) and on reads;
db.impact_reports.finish_report lets only the first outcome land.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import ConflictError, NotFoundError, ValidationFailed
from db import impact_reports as db_reports
from db import queue
from db.models import OPEN_JOB_STATUSES, Dataset, ImpactReport, Job, JobStatus, Origin, User
from db.session import readonly_engine, session_scope
from services.access import Need, check_dataset_id, is_admin, shown_provenance
from services.compute_bounds import check_capacity, check_config
from services.ensembles import member_group
from trainer.bootstrap import CONFIDENCE, DRAWS, paired_bootstrap, seed_mean_scores
from trainer.config import TrainConfig
from trainer.ensemble import build_ensemble
from trainer.errors import TrainerError
from trainer.examples import IGNORE, read_predictions

log = logging.getLogger("augloop.impact")

BASELINE = "originals"
ALL = "all_approved"
WITHOUT = "without:"
CLASSICAL = "tfidf:"  # run_ids key of an arm's TF-IDF member
ENSEMBLE = "ensemble:"  # a derived arm: the arm's seeds + its TF-IDF member
DEFAULT_SEEDS = [42, 43, 44]


def baseline_of(arm: str) -> str:
    return ENSEMBLE + BASELINE if arm.startswith(ENSEMBLE) else BASELINE


# sample_kinds' kinds of the texts the originals arm trains: originals (""), approved submitted texts and
# pseudo-labels (their origins); every other kind is an augmentation method's variant
UNAUGMENTED_KINDS = ["", Origin.submitted.value, Origin.pseudo_label.value]


def arm_overrides(methods: list[str], augmentation: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each arm's data: `originals` is the training view without any augmented variant (`augmentation`: every
    method with approved variants; default `methods`), so approved pseudo-labels and approved submitted texts,
    which are no augmentation, train in every arm and the deltas measure augmentation alone (with `variants:
    none` the baseline left them out and `all_approved` credited them to augmentation); `all_approved` is the
    whole view; `without:<m>` the view less method m's variants, for each of `methods`."""
    augmentation = sorted(set(augmentation if augmentation is not None else methods))
    arms: dict[str, dict[str, Any]] = {
        BASELINE: {"variants": "approved", "exclude_methods": augmentation},
        ALL: {"variants": "approved", "exclude_methods": []},
    }
    for method in methods:
        arms[WITHOUT + method] = {"variants": "approved", "exclude_methods": [method]}
    return arms


def report_methods(
    session: Session, dataset: Dataset, seeds: list[int], methods: list[str] | None
) -> tuple[list[str], list[str]]:
    """(the methods left out in turn, every method with approved variants) of a report on `dataset`, or the
    422 its creation gives: no seed, no approved variant, no test split, a method unknown or given twice."""
    if not seeds:
        raise ValidationFailed("give at least one seed", field="seeds")
    available = db_reports.approved_methods(session, dataset)
    if not available:
        raise ValidationFailed(
            f"dataset {dataset.name!r} has no approved variants: there is nothing to measure", field="dataset"
        )
    if not db_reports.has_test_split(session, dataset):
        raise ValidationFailed(
            f"dataset {dataset.name!r} has no test-split originals: the report compares arms on them",
            field="dataset",
        )
    chosen = available if methods is None else list(methods)
    unknown = [m for m in chosen if m not in available]
    if unknown or len(set(chosen)) != len(chosen):
        raise ValidationFailed(
            f"methods must be distinct and among the approved variants' methods {available}; got {chosen}",
            field="methods",
        )
    return chosen, available


def create_impact_report(
    session: Session,
    dataset: Dataset,
    config: TrainConfig,
    *,
    seeds: list[int] | None = None,
    methods: list[str] | None = None,
    created_by: int | None = None,
    classical: bool = True,
) -> tuple[ImpactReport, list[Job]]:
    """Store the report and queue one `train` job per arm × seed (through the ordinary run-creation path), and
    with `classical` one TF-IDF member per arm. Every arm's runs share one LR selection (on the originals arm's
    data) when it applies, and with a budget that selection plans one length for them all (`fixed_epochs`): each
    arm selecting its own LR, and each run planning its length at the pace it measured, made two arms trained on
    the same data differ by a "significant" 5 points (a user's find: 239 steps at LR 5e-05 against 310 at
    4.49e-05); the arms now differ in their data alone.

    `config` is shared by every arm; each arm then sets its own `variants`/`exclude_methods` and each run its
    `seed` (start_report refuses a request that gives them).
    """
    from services.training import create_training_runs, queue_runs

    seeds = list(DEFAULT_SEEDS if seeds is None else seeds)
    chosen, available = report_methods(session, dataset, seeds, methods)
    params = {
        "seeds": seeds,
        "methods": chosen,
        "augmentation_methods": available,  # what the baseline leaves out (training_sets checks it)
        "config": config.to_dict(),
        "classical": classical,
    }
    report = db_reports.create_report(session, dataset, params, created_by)
    run_ids: dict[str, list[int]] = {}
    every_run = []
    for arm, overrides in arm_overrides(chosen, available).items():  # the originals arm first: its data selects
        arm_config = config.with_overrides(overrides)
        runs = create_training_runs(
            session,
            dataset,
            arm_config,
            seeds,
            name=f"impact {report.id} {arm}",
            created_by=created_by,
            classical=classical,
        )
        run_ids[arm] = [r.id for r in runs if r.kind == "single"]
        if classical:
            run_ids[CLASSICAL + arm] = [r.id for r in runs if r.kind == "tfidf"]
        every_run += runs
    # A failed attempt that will be retried leaves its run queued (workers/train_jobs.py), so the report waits for
    # the retry; a worker lost past its last attempt fails the run (db/queue.py).
    jobs = queue_runs(
        session,
        dataset,
        every_run,
        config,
        created_by=created_by,
        payload={"impact_report_id": report.id},
        fix_length=True,
    )
    report.run_ids = run_ids
    session.flush()
    return report, jobs


def progress(report: ImpactReport, runs: dict[int, Any]) -> dict[str, int]:
    ids = [i for ids in (report.run_ids or {}).values() for i in ids]
    done = sum(1 for i in ids if i in runs and runs[i].status in queue.TERMINAL)
    return {"done": done, "total": len(ids)}


def decided(report: ImpactReport, runs: dict[int, Any]) -> bool:
    """Whether `settle` would end the open report now: every run ended, one ended without succeeding, or one
    was deleted. A cheap read-only check, so that reads write only when there is something to settle."""
    done = progress(report, runs)
    broken = any(r.status in queue.TERMINAL and r.status != JobStatus.succeeded for r in runs.values())
    return bool(done["total"]) and (broken or len(runs) < done["total"] or done["done"] == done["total"])


def settle(engine: Engine, report_id: int) -> str:
    """Compute (or fail) the report once all its runs have ended; returns the report's status."""
    with session_scope(engine) as session:
        report = db_reports.get_report(session, report_id)
        if report.status not in OPEN_JOB_STATUSES:
            return report.status
        runs = db_reports.report_runs(session, report)
        arms = {arm: [runs[i] for i in ids if i in runs] for arm, ids in (report.run_ids or {}).items()}
        ended = [(arm, r) for arm, rs in arms.items() for r in rs if r.status in queue.TERMINAL]
        broken = [(arm, r) for arm, r in ended if r.status != JobStatus.succeeded]
        total = sum(len(ids) for ids in (report.run_ids or {}).values())
        missing = total - sum(len(rs) for rs in arms.values())
        if broken or missing:
            if missing:
                error = f"{missing} run(s) of the report were deleted"
            else:
                arm, run = broken[0]
                error = f"run {run.id} ({arm}, seed {run.config.get('seed')}) {run.status}: {run.error or ''}"
            if db_reports.finish_report(session, report_id, JobStatus.failed, {"error": error.strip()}):
                stop_open_runs(session, [r for rs in arms.values() for r in rs])
            return JobStatus.failed
        if len(ended) < total:
            if ended or any(r.status == JobStatus.running for rs in arms.values() for r in rs):
                db_reports.mark_running(session, report_id)
            return JobStatus.running
        members = {arm: [(r.id, r.kind, r.artifact_dir or "", member_group(r)) for r in rs] for arm, rs in arms.items()}
        snapshots = {arm: [(r.id, r.snapshot_path, r.snapshot) for r in rs] for arm, rs in arms.items()}
        report_params = dict(report.params or {})
        seeds = list(report.params.get("seeds") or [])
        config = report.params.get("config") or {}
        decision = config.get("decision", "prior")
    try:  # numpy over saved predictions, with no transaction open
        result = compute_result(arm_dumps(members, decision), seeds)
        result["training_sets"] = (
            {"checked": False, "reason": "max_train_samples draws each seed's own subset"}
            if config.get("max_train_samples")
            else training_sets(engine, snapshots, report_params.get("augmentation_methods"))
        )
        status = JobStatus.succeeded
    except (OSError, ValueError, KeyError, TrainerError) as err:
        # A missing file is named by its run folder, not its server path (the report is shown to members).
        cause = (
            f"{type(err).__name__}: {Path(err.filename).parent.name}/{Path(err.filename).name}"
            if isinstance(err, OSError) and err.filename
            else f"{type(err).__name__}: {err}"
        )
        result, status = ({"error": f"cannot compute the report: {cause}"}, JobStatus.failed)
    with session_scope(engine) as session:
        db_reports.finish_report(session, report_id, status, result)
        return db_reports.get_report(session, report_id).status


def _snapshot_ids(path: str | None, rows: list[Any] | None) -> np.ndarray:
    """A run's training sample ids, sorted and distinct (an array: a million ids cost 8 MB, not a set's 60)."""
    if path is None:  # a run recorded before snapshots were files
        return np.unique(np.array([int(pair[0]) for pair in rows or []], dtype=np.int64))
    import pyarrow.parquet as pq

    return np.unique(pq.read_table(path, columns=["sample_id"]).column(0).to_numpy().astype(np.int64))


def training_sets(
    engine: Engine, snapshots: dict[str, list[tuple[int, str | None, Any]]], augmentation: list[str] | None = None
) -> dict[str, Any]:
    """Whether each arm trained on what it says: `all_approved`'s first seed's samples, less the variants of the
    method the arm leaves out, or for `originals` less every augmented variant (`augmentation`: the methods the
    report found, its arm's exclusions, so a method approved later lands in that arm and is a difference; None,
    a report made before 2026-12-07: its baseline trained on originals alone). Each arm reads the
    dataset when its own run starts, so a variant approved or rejected (or a text imported) while the report's
    runs wait for a worker lands in some arms and not others, and a method's contribution then mixes in that
    change. Each run
    says how many samples it trained on and how many differ from what its arm should hold (`differs`); the
    report says `consistent` when none does. A check that cannot be made (a snapshot file gone) says why and
    leaves the report as it is."""
    try:
        return _training_sets(engine, snapshots, augmentation)
    except (OSError, ValueError, KeyError, IndexError) as err:
        log.warning("could not compare the impact report's training sets: %s", err)
        return {"checked": False, "reason": f"the runs' training snapshots could not be read ({type(err).__name__})"}


def _training_sets(
    engine: Engine, snapshots: dict[str, list[tuple[int, str | None, Any]]], augmentation: list[str] | None
) -> dict[str, Any]:
    reference_id, path, rows = snapshots[ALL][0]
    reference = _snapshot_ids(path, rows)
    with session_scope(readonly_engine(engine)) as session:
        kinds = db_reports.sample_kinds(session, reference.tolist())
    kind_of = np.array([kinds.get(int(i), "?") or "" for i in reference], dtype=object)  # "": an original
    out: dict[str, Any] = {"checked": True, "reference_run": reference_id, "arms": {}}
    for arm, runs in snapshots.items():
        data_arm = arm.removeprefix(CLASSICAL)
        if data_arm == BASELINE and augmentation is None:  # a report made before 2026-12-07: originals alone
            expected = reference[kind_of == ""]
        elif data_arm == BASELINE:  # no augmented variant, whatever its method: one approved late is a difference
            expected = reference[np.isin(kind_of, UNAUGMENTED_KINDS)]
        elif data_arm.startswith(WITHOUT):
            expected = reference[kind_of != data_arm.removeprefix(WITHOUT)]
        else:
            expected = reference
        out["arms"][arm] = []
        for run_id, run_path, run_rows in runs:
            ids = reference if run_id == reference_id else _snapshot_ids(run_path, run_rows)
            differs = len(np.setxor1d(ids, expected, assume_unique=True))
            out["arms"][arm].append({"run_id": run_id, "samples": len(ids), "differs": differs})
    off = [
        f"{arm} (run {r['run_id']}: {r['differs']})" for arm, runs in out["arms"].items() for r in runs if r["differs"]
    ]
    out["consistent"] = not off
    if off:
        out["warning"] = (
            "the dataset changed while the report's runs waited (variants decided, texts imported): these runs'"
            f" training sets differ from what their arm should hold by that many samples: {', '.join(off)}; the"
            " deltas and contributions mix that change in"
        )
    return out


def arm_dumps(members: dict[str, list[tuple[int, str, str, str]]], decision: str) -> dict[str, list[dict[str, Any]]]:
    """Test prediction dumps per arm: each data arm's seeds, and per arm with a TF-IDF member the derived
    `ensemble:<arm>` (its seeds and member combined on val, one dump)."""
    dumps: dict[str, list[dict[str, Any]]] = {}
    for arm, runs in members.items():
        if arm.startswith(CLASSICAL):
            continue
        dumps[arm] = [read_predictions(Path(d) / "predictions_test.json") for _i, _k, d, _g in runs]
    for arm in list(dumps):
        classical = members.get(CLASSICAL + arm) or []
        if not classical:
            continue
        inputs = [
            {
                "id": run_id,
                "group": group,
                "predictions": {s: read_predictions(Path(d) / f"predictions_{s}.json") for s in ("val", "test")},
            }
            for run_id, _kind, d, group in [*members[arm], *classical]
        ]
        combined = build_ensemble(inputs, weighted=True, temperature=True, decision=decision)
        dumps[ENSEMBLE + arm] = [combined["predictions"]["test"]]
    return dumps


def mark_report_running(engine: Engine, report_id: int) -> None:
    with session_scope(engine) as session:
        db_reports.mark_running(session, report_id)


def stop_open_runs(session: Session, runs: list[Any]) -> None:
    """A failed report needs no more training: cancel its queued runs now, ask running ones to stop."""
    from db import training_runs as db_runs
    from services.jobs import cancel_job

    for run in runs:
        if run.status in queue.TERMINAL or run.job_id is None:
            continue
        try:
            job = cancel_job(session, run.job_id, None)
        except (ConflictError, NotFoundError):
            continue
        if job.status == JobStatus.cancelled:  # it never started: no handler will record the run's end
            db_runs.end_run(session, run.id, JobStatus.cancelled, "cancelled: the impact report failed")


def report_view(session: Session, report: ImpactReport, dataset_name: str, user: User | None) -> dict[str, Any]:
    """A report as `user` reads it: its config's model directories of the server's by their last part for the
    project's members, as a run's (services.training.run_details)."""
    params = report.params or {}
    return {
        "id": report.id,
        "dataset": dataset_name,
        "status": report.status,
        "params": params if is_admin(user) else shown_provenance(params),
        "run_ids": report.run_ids or {},
        "progress": progress(report, db_reports.report_runs(session, report)),
        "result": report.result,
        "created_at": report.created_at,
        "finished_at": report.finished_at,
    }


def settle_decided(session: Session, engine: Engine, reports: list[ImpactReport]) -> bool:
    """Settle the open reports that are decided: all their runs ended, or one failed. The worker that ends a
    run settles its report; if that worker died before it could (or the queue failed the run after losing
    its worker), the next read does. Returns whether any report was settled (the caller then reads again)."""
    stuck = [
        report.id
        for report in reports
        if report.status in OPEN_JOB_STATUSES and decided(report, db_reports.report_runs(session, report))
    ]
    if not stuck:
        return False
    session.commit()  # end the caller's read transaction, so the next read sees the settled report
    for report_id in stuck:
        try:
            settle(engine, report_id)
        except Exception:  # busy database, report gone: show it unsettled; the next read retries
            log.warning("settling impact report %s on read failed", report_id, exc_info=True)
    session.expire_all()
    return True


def report_config(config_overrides: dict[str, Any], seeds: list[int], user: User | None) -> TrainConfig:
    """The config every arm of a report shares (the deployment's defaults under `config_overrides`), or the 422
    its creation gives: seeds repeated, a key the arms set themselves, a config outside the compute bounds."""
    from services.training import check_seeds, default_config

    check_seeds(seeds)
    # What the report sets itself: given, it was dropped without a word (a config.seed 7 trained seeds 1 and 2)
    for key, instead in (
        ("seed", "each arm trains one run per seed of `seeds`" + (f" ({', '.join(map(str, seeds))})" if seeds else "")),
        ("variants", "each arm sets its own (originals only, all approved variants, each method left out)"),
        ("exclude_methods", "each arm sets its own (each method left out in turn; `methods` chooses them)"),
    ):
        if key in config_overrides:
            raise ValidationFailed(f"config.{key}: {instead}; leave it out of the config", field=f"config.{key}")
    config = default_config(config_overrides)
    check_config(config, seeds, user)
    return config


@dataclass(frozen=True)
class ReportRequest:
    """What a report is asked to train: its seeds, the trainer config overrides every arm shares (only the keys
    given), the methods left out in turn (None: every method with approved variants), and with `classical` a
    TF-IDF member per arm. Its start and its estimate (services.impact_estimate) read the same request."""

    seeds: list[int]
    config_overrides: dict[str, Any]
    methods: list[str] | None = None
    classical: bool = True


def start_report(
    session: Session, dataset_name: str, request: ReportRequest, *, user: User | None
) -> tuple[dict[str, Any], list[Job]]:
    """Queue the trainer on originals only, all approved variants, and each method left out, × seeds (and
    the TF-IDF member per arm with `classical`); the project's leads (None: the operator)."""
    from services.datasets import dataset_named
    from services.training import check_budget_affords

    dataset = dataset_named(session, dataset_name, user, Need.lead)
    created_by = user.id if user else None
    seeds, overrides = request.seeds, request.config_overrides
    config = report_config(overrides, seeds, user)
    check_budget_affords(session, dataset_name, config, overrides, seeds, user)  # before any arm trains
    report, jobs = create_impact_report(
        session,
        dataset,
        config,
        seeds=seeds,
        methods=request.methods,
        created_by=created_by,
        classical=request.classical,
    )
    check_capacity(session, dataset, user)
    return report_view(session, report, dataset.name, user), jobs


def list_report_views(
    session: Session, engine: Engine, dataset_name: str, user: User | None, limit: int = 50, offset: int = 0
) -> list[dict[str, Any]]:
    from services.datasets import dataset_named

    dataset = dataset_named(session, dataset_name, user)
    reports = db_reports.list_reports(session, dataset, limit, offset)
    if settle_decided(session, engine, reports):
        reports = db_reports.list_reports(session, dataset, limit, offset)
    return [report_view(session, r, dataset.name, user) for r in reports]


def report_details(session: Session, engine: Engine, report_id: int, user: User | None) -> dict[str, Any]:
    """Status, progress (ended runs / all runs) and, once every run has ended, the result."""
    report = db_reports.get_report(session, report_id)
    check_dataset_id(
        session, report.dataset_id, user, missing=f"impact report {report_id} not found", field="report_id"
    )
    if settle_decided(session, engine, [report]):
        report = db_reports.get_report(session, report_id)
    dataset = session.get_one(Dataset, report.dataset_id)
    return report_view(session, report, dataset.name, user)


def predicted(dump: dict[str, Any], task: str) -> np.ndarray:
    entry = dump["tasks"][task]
    if "pred" in entry:
        return np.asarray(entry["pred"], dtype=np.int64)
    decided: np.ndarray = np.asarray(entry["probs"]).argmax(axis=1)
    return decided


def compute_result(dumps: dict[str, list[dict[str, Any]]], seeds: list[int], draws: int = DRAWS) -> dict[str, Any]:
    """`dumps[arm]` are the test prediction dumps of the arm's runs (trainer.metrics.prediction_dump); an arm's
    models are scored on the labels they predict (`pred`, their decision rule's; the argmax in older dumps)."""
    reference = dumps[BASELINE][0]
    for arm, members in dumps.items():
        for dump in members:
            if dump["sample_ids"] != reference["sample_ids"]:
                raise ValueError(f"arm {arm!r} was tested on other samples than {BASELINE!r}")
    methods = [a[len(WITHOUT) :] for a in dumps if a.startswith(WITHOUT)]
    prefixes = ["", *([ENSEMBLE] if ENSEMBLE + BASELINE in dumps else [])]
    tasks: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for task, spec in reference["tasks"].items():
        labels = list(spec["labels"])
        gold_all = np.asarray(spec["gold"])
        keep = gold_all != IGNORE
        gold, k = gold_all[keep], len(labels)
        if gold.size == 0:
            continue
        names = [*labels, "macro"]
        support = {label: int((gold == c).sum()) for c, label in enumerate(labels)}
        preds = {arm: [predicted(d, task)[keep] for d in members] for arm, members in dumps.items()}
        per_class: dict[str, dict[str, Any]] = {n: {} for n in names}
        for arm, arm_preds in preds.items():
            per_seed = np.stack([seed_mean_scores(gold, [p], k, None)[0] for p in arm_preds])
            base = baseline_of(arm)
            boot = paired_bootstrap(gold, arm_preds, preds[base], k, draws) if arm != base else None
            for j, name in enumerate(names):
                entry = {
                    "mean": float(per_seed[:, j].mean()),
                    # one seed (an arm's ensemble is one model) measures no spread: None, not 0
                    "sd": float(per_seed[:, j].std(ddof=1)) if len(per_seed) > 1 else None,
                    "per_seed": [float(v) for v in per_seed[:, j]],
                    "delta": float(boot["delta"][j]) if boot else None,
                    "ci": [float(boot["low"][j]), float(boot["high"][j])] if boot else None,
                    "baseline": base if boot else None,
                    # test texts of the class (macro: of the task); 0: its F1 measures no recall, only the
                    # texts predicted into it (0 or nothing), and a Δ says nothing of what augmentation did for it
                    "support": support.get(name, int(gold.size)),
                }
                per_class[name][arm] = entry
                rows.append({"arm": arm, "task": task, "class": name, **entry})
        contributions: dict[str, dict[str, Any]] = {n: {} for n in names}
        for prefix in prefixes:
            for method in methods:
                if prefix + WITHOUT + method not in preds:
                    continue
                boot = paired_bootstrap(gold, preds[prefix + ALL], preds[prefix + WITHOUT + method], k, draws)
                for j, name in enumerate(names):
                    contributions[name][prefix + method] = {
                        "delta": float(boot["delta"][j]),
                        "ci": [float(boot["low"][j]), float(boot["high"][j])],
                    }
        tasks[task] = {
            "n_test": int(gold.size),
            "support": support,
            "classes": per_class,
            "contributions": contributions,
        }
    return {
        "arms": list(dumps),
        "baseline": BASELINE,
        "methods": methods,
        "seeds": seeds,
        "bootstrap": {
            "draws": draws,
            "confidence": CONFIDENCE,
            "statistic": "F1 per seed averaged over seeds; test indices resampled, paired across arms",
        },
        "tasks": tasks,
        "rows": rows,
    }
