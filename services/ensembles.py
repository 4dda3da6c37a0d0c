"""Ensembles: finished runs of one dataset (transformer seeds or encoders, the TF-IDF member) combined from
their saved val/test probabilities by weights fitted on val, temperature-scaled, with a decision rule fitted on
val (trainer.ensemble). No model is loaded: this is numpy over the saved predictions, fast enough for a request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import ValidationFailed
from core.names import check_display_name
from db import training_runs as db_runs
from db.models import Dataset, JobStatus, TrainingRun, User, utcnow
from db.session import discard_unless_committed, session_scope
from services.access import Need, visible_run
from services.prediction import check_saved_model
from services.run_snapshots import snapshot_digest
from services.training import runs_root
from trainer.ensemble import build_ensemble
from trainer.examples import read_predictions

MEMBER_KINDS = ("single", "tfidf")
NAME_MAX = 200  # the width of training_runs.name (db/models.py TrainingRun.name)


def default_name(ids: list[int]) -> str:
    """The name of an ensemble not given one: `ensemble of 3, 4, 7`, or as many ids as fit the name's column,
    then `… (32 runs)`."""
    full = f"ensemble of {', '.join(map(str, ids))}"
    if len(full) <= NAME_MAX:
        return full
    shown: list[str] = []
    for i in ids:
        if len(f"ensemble of {', '.join([*shown, str(i)])}, … ({len(ids)} runs)") > NAME_MAX:
            break
        shown.append(str(i))
    return f"ensemble of {', '.join(shown)}, … ({len(ids)} runs)"


def member_group(run: TrainingRun, digest: str | None = None) -> str:
    """Runs that differ by their seed only are one group: they share one weight (trainer.ensemble). Runs of one
    configuration trained on other training sets (a variant approved, texts imported between them) are not
    seeds of one run: each set its own group."""
    config = {k: v for k, v in (run.config or {}).items() if k != "seed"}
    return f"{run.kind}:{json.dumps(config, sort_keys=True, default=str)}" + (f"@{digest}" if digest else "")


def training_set_digests(runs: list[TrainingRun]) -> dict[int, str]:
    """Each run's training-set digest (stored when it finished; a run recorded before that is read once)."""
    try:
        return {r.id: snapshot_digest(r) for r in runs}
    except FileNotFoundError:
        raise ValidationFailed(
            "a member's training snapshot file is gone (its run directory was removed); choose other runs",
            field="run_ids",
        ) from None


def set_digests(runs: list[TrainingRun], digests: dict[int, str]) -> dict[int, str]:
    """The digests that name the training set a run was given: a run that drew `max_train_samples` trained on its
    own subset of it (seeds of one configuration draw different ones), so its digest tells nothing of the set."""
    return {r.id: digests[r.id] for r in runs if not (r.config or {}).get("max_train_samples")}


def left_out_by_design(run: TrainingRun) -> str | None:
    """What a run's config leaves out of the training view on purpose, in words (an impact report's arms:
    `originals` every augmentation method's variants, `without:<m>` method m's); None: nothing."""
    config = run.config or {}
    if config.get("variants") == "none":
        return "every variant"
    excluded = sorted(config.get("exclude_methods") or [])
    return f"the {', '.join(excluded)} variants" if excluded else None


def ensemble_warnings(
    run_ids: list[int],
    digests: dict[int, str],
    texts_scored: dict[str, Any],
    left_out: dict[int, str | None] | None = None,
) -> list[str]:
    """What a reader of the ensemble's figures must know: members trained on other training sets (of those
    `digests` names), members scored on more val/test texts than the ensemble (the split changed between their
    runs). Members whose configs leave out other variants (`left_out`, left_out_by_design: an impact report's
    arms) trained on other sets by design: said so, rather than blamed on approvals or imports between runs."""
    warnings = []
    sets: dict[str, list[int]] = {}
    views: dict[str | None, list[int]] = {}  # what each member left out → the members
    for i in run_ids:
        if i in digests:
            sets.setdefault(digests[i], []).append(i)
            views.setdefault((left_out or {}).get(i), []).append(i)
    if len(sets) > 1:
        designed = "; ".join(
            f"{', '.join(f'#{i}' for i in ids)} " + (f"without {what}" if what else "with every approved variant")
            for what, ids in views.items()
        )
        if len(views) > 1 and all(len({digests[i] for i in ids}) == 1 for ids in views.values()):
            warnings.append(
                f"the members trained on {len(sets)} different training sets by design ({designed}): they "
                "are not seeds of one run and their figures are not the same data's (each set has its own weight)"
            )
        else:
            shown = "; ".join(", ".join(f"#{i}" for i in ids) for ids in sets.values())
            warnings.append(
                f"the members trained on {len(sets)} different training sets ({shown}): variants were approved or "
                "texts imported between their runs, so they are not seeds of one run and their figures are not "
                "the same data's (each set has its own weight)"
                + (f"; some also leave variants out by design ({designed})" if len(views) > 1 else "")
            )
    for split, counted in (texts_scored or {}).items():
        if counted["scored"] < counted["most_of_a_member"]:
            warnings.append(
                f"the ensemble is scored on the {counted['scored']} {split} texts its members share; a member was "
                f"scored on {counted['most_of_a_member']} (the dataset's {split} split changed between their "
                "runs): the members' figures are not comparable with the ensemble's"
            )
    return warnings


def ensemble_members(session: Session, run_ids: list[int], user: User | None = None) -> list[TrainingRun]:
    """Finished single runs of one dataset; a lead of its project combines them (None: the operator)."""
    ids = list(dict.fromkeys(run_ids))
    if len(ids) < 2:
        raise ValidationFailed("give at least two distinct run ids", field="run_ids")
    runs = [visible_run(session, i, user, Need.lead, field="run_ids") for i in ids]
    for run in runs:
        if run.kind not in MEMBER_KINDS:
            raise ValidationFailed(f"run {run.id} is an ensemble; combine single runs", field="run_ids")
        if run.status != JobStatus.succeeded:
            raise ValidationFailed(f"run {run.id} is {run.status}; only finished runs combine", field="run_ids")
        if not run.artifact_dir:  # finished, but its files were never recorded ("run 1 is succeeded" said nothing)
            raise ValidationFailed(f"run {run.id} has no saved model to combine", field="run_ids")
    if len({r.dataset_id for r in runs}) != 1:
        raise ValidationFailed("ensemble members must be runs of the same dataset", field="run_ids")
    for run in runs:  # an ensemble of a model that cannot load would be refused by every prediction
        check_saved_model(run, run.id, field_name="run_ids")
    return runs


def member_inputs(runs: list[TrainingRun], digests: dict[int, str] | None = None) -> list[dict[str, Any]]:
    members = []
    for run in runs:
        root = Path(run.artifact_dir or "")
        try:
            preds = {s: read_predictions(root / f"predictions_{s}.json") for s in ("val", "test")}
        except FileNotFoundError:
            raise ValidationFailed(f"the saved predictions of run {run.id} are missing", field="run_ids") from None
        digest = (digests or {}).get(run.id)
        members.append({"id": run.id, "group": member_group(run, digest), "predictions": preds})
    return members


@dataclass(frozen=True)
class EnsembleOptions:
    """How members combine: per-task weights (else equal), temperatures, and the decision rule, all fitted on val;
    the ensemble's name (default: its members' ids)."""

    weighted: bool = True
    temperature: bool = True
    decision: str = "prior"
    name: str = ""


@dataclass(frozen=True)
class FittedEnsemble:
    """An ensemble fitted on its members' saved predictions, not stored yet (`store_ensemble`)."""

    run_ids: list[int]
    options: EnsembleOptions
    combined: dict[str, Any]
    digests: dict[int, str]  # each member's training-set digest


def fit_ensemble(session: Session, run_ids: list[int], options: EnsembleOptions, user: User | None) -> FittedEnsemble:
    """Check the members (finished runs of one dataset the user leads) and fit their combination: reads only
    (the members' prediction files, then numpy), so the API runs it without holding the write lock (seconds for
    32 members of 10,000 val texts each, every other write waiting behind it on SQLite)."""
    if len(options.name) > NAME_MAX:
        raise ValidationFailed(f"name: at most {NAME_MAX} characters; got {len(options.name)}", field="name")
    if options.name:  # printable, as a display name (U+202E would reverse a line in every list)
        check_display_name(options.name, field="name")
    runs = ensemble_members(session, run_ids, user)
    digests = training_set_digests(runs)  # read only: store_ensemble records those not stored yet
    combined = build_ensemble(
        member_inputs(runs, set_digests(runs, digests)),
        weighted=options.weighted,
        temperature=options.temperature,
        decision=options.decision,
    )
    return FittedEnsemble([r.id for r in runs], options, combined, digests)


def create_ensemble(
    session: Session,
    run_ids: list[int],
    *,
    weighted: bool = True,
    temperature: bool = True,
    decision: str = "prior",
    name: str = "",
    user: User | None,
) -> TrainingRun:
    """Combine finished runs of one dataset (transformer runs and TF-IDF members alike); the project's leads
    (None: the operator). In one session: the CLI's; the API fits first, then stores in a short transaction."""
    options = EnsembleOptions(weighted, temperature, decision, name)
    return store_ensemble(session, fit_ensemble(session, run_ids, options, user), user=user)


def create_ensemble_briefly(
    reading: Session, engine: Engine, run_ids: list[int], options: EnsembleOptions, user: User | None
) -> dict[str, Any]:
    """The API's ensemble: fitted under `reading` (a read-only session: on SQLite no write lock while the members'
    files are read and combined), then stored in a short transaction of its own, committed here. Returns the
    ensemble as `training.ensemble_details` shows it, read again through `reading`."""
    from services.training import ensemble_details

    fitted = fit_ensemble(reading, run_ids, options, user)
    reading.commit()  # ends the read: the stored ensemble is read back in a new one
    with session_scope(engine) as writing:
        run_id = store_ensemble(writing, fitted, user=user).id
    return ensemble_details(reading, reading.get_one(TrainingRun, run_id), user)


def store_ensemble(session: Session, fitted: FittedEnsemble, *, user: User | None) -> TrainingRun:
    """Record a fitted ensemble and write its files, its members checked again (one may have been deleted, or
    the user's role changed, since the fit)."""
    created_by = user.id if user else None
    runs = ensemble_members(session, fitted.run_ids, user)
    ids, combined = [r.id for r in runs], fitted.combined
    weighted, temperature, name = fitted.options.weighted, fitted.options.temperature, fitted.options.name
    dataset = session.get_one(Dataset, runs[0].dataset_id)
    digests = {r.id: fitted.digests.get(r.id) or snapshot_digest(r) for r in runs}  # a digest never changes
    for r in runs:  # stored when the run finished; a run recorded before that is digested once, and keeps it
        r.snapshot_digest = digests[r.id]
    config = {
        "members": [str(i) for i in ids],
        "weighted": weighted,
        "temperature": temperature,
        "weights": combined["weights"],
        "task_weights": combined["task_weights"],
        "member_temperatures": combined["member_temperatures"],
        "temperatures": combined["temperatures"],
        "decision": combined["decision"],
        "groups": combined["groups"],
        "kinds": {str(r.id): r.kind for r in runs},
        "encoders": {str(r.id): r.config.get("encoder") or r.config.get("model") for r in runs},
        "same_snapshot": len({r.snapshot_digest for r in runs}) == 1,
    }
    run = db_runs.create_run(
        session,
        dataset,
        config,
        name=name or default_name(ids),
        kind="ensemble",
        member_ids=ids,
        created_by=created_by,
        status=JobStatus.succeeded,
    )
    out_dir = runs_root() / str(run.id)
    if not out_dir.exists():  # never another's: a folder the id's row left behind stays as it is
        discard_unless_committed(session, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, dump in combined["predictions"].items():
        (out_dir / f"predictions_{split}.json").write_text(json.dumps(dump), encoding="utf-8")
    member_scores = {
        str(r.id): {
            "kind": r.kind,
            "val": (r.metrics.get("val") or {}).get("overall_macro_f1"),
            "test": (r.metrics.get("test") or {}).get("overall_macro_f1"),
        }
        for r in runs
    }
    run.metrics = {
        "val": combined["val"],
        "test": combined["test"],
        "test_argmax": combined.get("test_argmax"),
        "decision": combined["decision"],
        "calibration": combined["calibration"],
        "members": member_scores,
        "texts_scored": combined["texts_scored"],
        "warnings": ensemble_warnings(
            ids, set_digests(runs, digests), combined["texts_scored"], {r.id: left_out_by_design(r) for r in runs}
        ),
    }
    (out_dir / "metrics.json").write_text(json.dumps({**run.metrics, "config": config}, indent=2), encoding="utf-8")
    run.artifact_dir = str(out_dir)
    run.finished_at = utcnow()
    session.flush()
    return run
