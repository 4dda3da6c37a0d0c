"""The quality study's data (bench/quality_loop.py): the example dataset imported into a temporary SQLite
database through the product, the planner's WordNet variants made by the worker and approved in bulk by a bot
user (each review row is noted "auto-approved by bench/quality_loop.py"; a human reviews them in the product)."""

from __future__ import annotations

import csv
import io
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench_env import ROOT
from quality_stats import TASKS

EXAMPLE_CSV = ROOT / "examples" / "political_social_media.csv"
NOTE = "auto-approved by bench/quality_loop.py"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stratified(rows: list[dict[str, str]], n: int, rng: random.Random) -> list[dict[str, str]]:
    """About `n` of the rows, stratified by `message`: each class keeps its share, and at least 2."""
    by_class: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_class[r["message"]].append(r)
    picked = []
    for members in by_class.values():
        rng.shuffle(members)
        picked.extend(members[: max(2, round(n * len(members) / len(rows)))])
    return picked


def study_csv(train_subset: int | None, eval_subset: int | None, seed: int = 0) -> bytes:
    """The example CSV restricted to a stratified (by message) seeded subset; the file's own split is kept."""
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    rng = random.Random(seed)
    keep = []
    sizes = {"train": train_subset, "val": eval_subset, "test": eval_subset}
    for split, n in sizes.items():
        split_rows = [r for r in rows if r["split"] == split]
        keep += split_rows if n is None or n >= len(split_rows) else stratified(split_rows, n, rng)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(keep)
    return out.getvalue().encode("utf-8")


def setup_database(tmp: Path, train_subset: int | None, eval_subset: int | None) -> Any:
    os.environ["AUGLOOP_DATA_DIR"] = str(tmp)
    os.environ["AUGLOOP_DATABASE_URL"] = f"sqlite:///{tmp / 'quality.db'}"
    os.environ.setdefault("AUGLOOP_NLTK_DATA", str(Path(sys.prefix) / "nltk_data"))
    from core.settings import get_settings
    from db.session import get_engine, session_scope
    from services.importing import ImportSpec, import_file

    get_settings.cache_clear()
    engine = get_engine()
    with session_scope(engine) as s:
        result = import_file(
            s,
            study_csv(train_subset, eval_subset),
            ImportSpec(dataset="quality", tasks=TASKS),
            filename=EXAMPLE_CSV.name,
        )
    log(f"imported {result.imported} texts, splits {result.split_counts}")
    return engine


def load_data(engine: Any) -> Any:
    from db.datasets import get_dataset
    from db.session import session_scope
    from services.training_data import load_split_data

    with session_scope(engine) as s:
        return load_split_data(s, get_dataset(s, "quality"), TASKS)


def augment_and_approve(engine: Any) -> dict[str, Any]:
    """Plan (minority classes), run the augment jobs with the worker, approve every kept variant in bulk."""
    from sqlalchemy import select, update

    from core.settings import get_settings
    from db.auth import get_or_create_user
    from db.datasets import get_dataset
    from db.models import Job, Review, Sample
    from db.session import session_scope
    from services.augmentation import PlanRequest, create_and_enqueue_plan
    from services.review_bulk import BulkSelection, bulk_decide
    from workers.main import Worker

    started = time.monotonic()
    with session_scope(engine) as s:
        dataset = get_dataset(s, "quality")
        request = PlanRequest(methods=["wordnet"], tasks=TASKS, enqueue=True, seed=0)
        plan = create_and_enqueue_plan(s, dataset, request, get_settings(), None)
        plan_summary = {k: v for k, v in plan.plan.items() if k != "jobs"}
        job_ids = list(plan.job_ids or [])
    log(f"plan: {len(job_ids)} augment job(s); running the worker (burst)")
    Worker(engine).run(burst=True)
    with session_scope(engine) as s:
        jobs = [s.get_one(Job, j) for j in job_ids]
        failed = [(j.id, j.status, j.error) for j in jobs if j.status != "succeeded"]
        if failed:
            raise SystemExit(f"augment job(s) did not succeed: {failed}")
        job_results = [j.result for j in jobs]
        dataset = get_dataset(s, "quality")
        bot = get_or_create_user(s, "quality-loop-bot", "admin")
        pending = list(
            s.scalars(
                select(Sample.id).where(
                    Sample.dataset_id == dataset.id, Sample.parent_id.is_not(None), Sample.review_status == "pending"
                )
            )
        )
        decided = bulk_decide(
            s, dataset, bot, "approve", BulkSelection(sample_ids=pending), confirm=True, expected_count=len(pending)
        )
        s.execute(update(Review).where(Review.user_id == bot.id).values(note=NOTE))
    out = {
        "plan": plan_summary,
        "jobs": job_results,
        "approved": decided["statuses"].get("approved", 0),
        "seconds": round(time.monotonic() - started, 1),
    }
    log(f"augmentation: {decided['applied']} variants kept by the filters and {NOTE} ({out['seconds']} s)")
    return out
