"""A worker plugin for the queue tests: job kind "probe" records each execution as a file, optionally sleeping.

Loaded by worker processes through AUGLOOP_WORKER_PLUGINS='["tests.queue_probe"]'.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from workers.registry import JobContext, handler


@handler("probe")
def probe(ctx: JobContext) -> dict:
    record_dir = Path(ctx.params["record_dir"])
    marker = record_dir / f"{ctx.job_id}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    marker.write_text("started")
    steps = int(ctx.params.get("steps", 1))
    for step in range(steps):
        time.sleep(float(ctx.params.get("sleep", 0)) / steps)
        ctx.report(done=step + 1, total=steps)
    if ctx.params.get("database_url"):  # a database the job itself reads fails under it (a real driver error)
        from sqlalchemy import create_engine, text

        with create_engine(ctx.params["database_url"]).connect() as connection:
            if ctx.params.get("database_sql"):
                connection.execute(text(ctx.params["database_sql"]))
    if ctx.params.get("fail_times", 0) >= ctx.attempt:
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    marker.write_text("finished")
    return {"pid": os.getpid()}
