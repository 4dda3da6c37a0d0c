"""Job kind `augment`: generate, filter and store variants (services.variant_generation does the work)."""

from __future__ import annotations

from typing import Any

from core.errors import DomainError
from services.variant_generation import BadJobParams, generate_variants
from workers.augment.models import ModelUnavailable
from workers.registry import JobContext, PermanentJobError, handler


@handler("augment")
def run_augment(ctx: JobContext) -> dict[str, Any]:
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
