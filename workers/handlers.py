"""Built-in job kinds of the foundation: `export` writes a dataset's training view to a file."""

from __future__ import annotations

from typing import Any

from augloop.settings import get_settings
from db.datasets import get_dataset, parse_include
from db.exporter import write_export
from db.session import session_scope
from workers.registry import JobContext, PermanentJobError, handler


def export_path(dataset: str, job_id: int, fmt: str):  # type: ignore[no-untyped-def]
    return get_settings().data_dir.resolve() / "exports" / f"job{job_id}.{fmt}"


@handler("export")
def run_export(ctx: JobContext) -> dict[str, Any]:
    fmt = ctx.params.get("format", "csv")
    name = ctx.params["dataset"]
    try:
        include = parse_include(ctx.params.get("include", "original,approved"))
    except Exception as err:
        raise PermanentJobError(str(err)) from err
    path = export_path(name, ctx.job_id, fmt)
    with session_scope(ctx.engine) as session:
        dataset = get_dataset(session, name)
        rows = write_export(session, dataset, include, fmt, path)
    ctx.report(done=rows, total=rows, rows=rows)
    return {"path": str(path), "rows": rows, "format": fmt, "dataset": name}
