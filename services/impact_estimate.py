"""Before an impact report starts: the arms it would train, how many runs, and about how long on one worker.

The request is the report's own (services.impact.start_report's seeds, config overrides, methods, classical) and is
checked by the same code, so it gets the same 422s; the arms are services.impact.arm_overrides'. Each arm's time
is the training estimate's (services.training_estimate.training_plan) for the arm's own view (its `variants` and
`exclude_methods`): an arm with more texts takes longer. With `budget_minutes` every arm trains the length the
report's one LR selection plans on the originals arm's data (`fixed_epochs`, services.impact.create_impact_report),
so each other arm is estimated at the originals arm's epochs, at its own size; each run pays its share of the
selection's trials out of its budget. The TF-IDF members (seconds each) count among the runs, not in the time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from db.models import User
from services import impact
from services.training import check_classical_trainable
from services.training_estimate import training_plan


def impact_estimate(
    session: Session, dataset_name: str, request: impact.ReportRequest, *, user: User | None
) -> dict[str, Any]:
    """What starting this impact report would train (its arms and runs) and about how long it would take on one
    worker; nothing is queued (the project's members may ask, as for a training estimate)."""
    from services.datasets import dataset_named

    seeds, config_overrides, classical = request.seeds, request.config_overrides, request.classical

    dataset = dataset_named(session, dataset_name, user)
    config = impact.report_config(config_overrides, seeds, user)
    chosen, available = impact.report_methods(session, dataset, seeds, request.methods)
    arms: list[dict[str, Any]] = []
    plans: dict[str, dict[str, Any]] = {}
    fixed: dict[str, Any] = {}  # with a budget: the originals arm's length, every arm's (it comes first)
    for arm, overrides in impact.arm_overrides(chosen, available).items():
        plan = training_plan(session, dataset.name, {**config_overrides, **overrides, **fixed}, seeds, user)
        if classical:
            check_classical_trainable(session, dataset, config.with_overrides(overrides))
        if config.budget_minutes is not None and not fixed:
            fixed = {"fixed_epochs": plan["epochs"], "budget_minutes": None}  # the length, not the budget
        plans[arm] = plan
        arms.append(
            {
                "arm": arm,
                "train_examples": plan["train_examples"],
                "epochs": plan["epochs"],
                "seconds_per_run": plan["seconds_per_run"],
            }
        )
    longest = max(arms, key=lambda a: a["seconds_per_run"])
    transformer_runs = len(arms) * len(seeds)
    classical_runs = len(arms) if classical else 0
    shown = plans[impact.ALL]  # the config, rate and basis as the whole training view has them
    return {
        "dataset": dataset.name,
        "config": shown["config"],
        "methods": chosen,
        "seeds": seeds,
        "arms": arms,
        "runs": transformer_runs + classical_runs,
        "transformer_runs": transformer_runs,
        "classical_runs": classical_runs,
        "seconds_per_run": longest["seconds_per_run"],
        "seconds_total": round(sum(a["seconds_per_run"] for a in arms) * len(seeds), 1),
        "samples_per_second": shown["samples_per_second"],
        "tokens_per_text": shown["tokens_per_text"],
        "basis": shown["basis"],
        "note": (
            "each arm estimated on its own training view, the longest arm's run as the time per run"
            + (
                "; with a budget every arm trains the epochs the originals arm's budget affords (one LR selection"
                " plans one length), and each run pays its share of the selection's trials out of its budget"
                if config.budget_minutes is not None
                else ""
            )
            + "; the TF-IDF members (seconds each) are not in the time; a run may stop early (patience); runs"
            " queued together share the workers"
        ),
        "encoder_warning": shown["encoder_warning"],
    }
