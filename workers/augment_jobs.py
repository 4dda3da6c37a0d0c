"""Job kind `augment`: generate, filter and store variants (services.variant_generation does the work)."""

from __future__ import annotations

from typing import Any

from core.errors import DomainError
from core.settings import get_settings
from db.session import session_scope
from services.augmentation import worker_to_hand_over_to
from services.variant_generation import BadJobParams, generate_variants
from workers.augment.models import ModelUnavailable
from workers.registry import JobContext, JobDeclined, PermanentJobError, handler


@handler("augment")
def run_augment(ctx: JobContext) -> dict[str, Any]:
    hand_over_if_another_can(ctx)
    try:
        return generate_variants(
            ctx.engine,
            ctx.job_id,
            ctx.params,
            report=ctx.report,
            finish=lambda session, result: ctx.complete_in(session, result),
            created_by=ctx.created_by,
        )
    except DomainError as err:  # dataset or samples gone, method no longer valid: a retry cannot help
        raise PermanentJobError(err.message) from err
    except (BadJobParams, ModelUnavailable) as err:
        raise PermanentJobError(str(err)) from err


def hand_over_if_another_can(ctx: JobContext) -> None:
    """Hand the job back to the queue (its attempt given back) when this worker cannot load one of its methods
    and another live worker can (services.augmentation.worker_to_hand_over_to)."""
    methods = ctx.params.get("methods")
    if not isinstance(methods, list):
        return  # the job's own validation says what is wrong with it
    with session_scope(ctx.engine) as session:
        missing = worker_to_hand_over_to(session, ctx.dataset_id, methods, ctx.worker_id, get_settings())
    if missing:
        raise JobDeclined(
            f"handed over: this worker cannot load {', '.join(missing)}; another running worker can "
            "(the attempt is not counted)"
        )
