"""Built-in job kinds of the foundation: `export` writes a dataset's training view to a file, `import` reads one
into a dataset."""

from __future__ import annotations

from typing import Any

from core.errors import ConcurrentChange, DomainError
from services.datasets import import_queued
from services.exporting import export_to_file
from workers.registry import JobContext, PermanentJobError, handler


@handler("export")
def run_export(ctx: JobContext) -> dict[str, Any]:
    def finish(session: Any, result: dict[str, Any]) -> None:  # the file is published with the completion
        ctx.report(done=result["rows"], total=result["rows"], rows=result["rows"])
        ctx.complete_in(session, result)

    try:
        return export_to_file(
            ctx.engine,
            ctx.params["dataset"],
            ctx.params.get("format", "csv"),
            ctx.params.get("include", "original,approved"),
            ctx.job_id,
            progress=lambda read, total: ctx.report(done=read, total=total),  # stops at a cancellation, a lost lease
            finish=finish,
        )
    except DomainError as err:
        raise PermanentJobError(err.message) from err


@handler("import")
def run_import(ctx: JobContext) -> dict[str, Any]:
    try:
        return import_queued(
            ctx.engine,
            ctx.params,
            created_by=ctx.created_by,
            report=ctx.report,
            finish=ctx.complete_in,
            job_id=ctx.job_id,
        )
    except ConcurrentChange as err:  # another import created or changed the dataset meanwhile: read it again
        raise ImportRetry(err.message) from err
    except DomainError as err:  # a bad row, a deleted dataset: the same file fails the same way again
        raise PermanentJobError(err.message) from err


class ImportRetry(Exception):
    """The import found its dataset created or changed by another one as it switched; nothing was written.
    The job goes back to the queue (it has attempts left) and reads the file against the dataset as it is."""
