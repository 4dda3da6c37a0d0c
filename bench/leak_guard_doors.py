"""The leak guard at the doors people use (services/leak_guard.py): what an edit, an undo or a submitted text
pays for its check against a dataset's val/test texts, at 100,000 and 1,000,000 of them, on SQLite.

Per size, in one fresh SQLite database (synthetic posts from bench/synthetic.py as val/test originals):
- the first check: the freshness count, reading every val/test text and building the index, one check;
- a check after it (median of 50, each a new one-word variant of a val/test text): the freshness count (the
  val/test rows' number and largest id, asked at every check) and the check itself, also timed apart;
- the bytes the kept index holds per val/test text (what bounds the per-process cache);
- that each planted near-copy was found (the check is exact on what the anchors propose).

    .venv/bin/python bench/leak_guard_doors.py           # 100k and 1M (~4 min); writes the JSON
    .venv/bin/python bench/leak_guard_doors.py --quick   # 10k, under a minute; writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
RESULTS = ROOT / "bench" / "results" / "leak_guard_doors.json"
CHECKS = 50
CHECK_TARGET_MS = 100  # a check is one step of a decision the review page shows within 500 ms


def seed(engine: object, n: int) -> None:
    from sqlalchemy import insert
    from synthetic import posts

    from core.textnorm import content_hash
    from db.models import Dataset, Sample
    from db.session import session_scope

    with session_scope(engine) as s:  # type: ignore[arg-type]
        ds = Dataset(name="doors", display_name="doors", project_id=1, language="en", tasks=[])
        s.add(ds)
        s.flush()
        rows, seen = [], set()
        for i, text in enumerate(posts(n, seed=11)):
            digest = content_hash(text)
            if digest in seen:
                continue
            seen.add(digest)
            rows.append(
                {
                    "dataset_id": ds.id,
                    "text": text,
                    "split": "val" if i % 2 else "test",
                    "origin": "original",
                    "content_hash": digest,
                }
            )
            if len(rows) == 20_000:
                s.execute(insert(Sample), rows)
                rows = []
        if rows:
            s.execute(insert(Sample), rows)


def near_copies(engine: object, k: int) -> list[tuple[int, str]]:
    """k val/test texts of 60+ characters with their last word changed: what a careless edit looks like."""
    from sqlalchemy import func, select

    from db.models import Sample
    from db.session import session_scope

    with session_scope(engine) as s:  # type: ignore[arg-type]
        rows = s.execute(
            select(Sample.id, Sample.text).where(func.length(Sample.text) > 60).order_by(Sample.id).limit(k * 97)
        ).all()
    picked = rows[::97][:k]
    return [(sid, text.rsplit(" ", 1)[0] + " indeed") for sid, text in picked]


def measure(n: int) -> dict[str, float]:
    from core.settings import get_settings
    from db.datasets import get_dataset
    from db.session import get_engine, session_scope
    from services import leak_guard

    with tempfile.TemporaryDirectory(prefix="leak-doors-") as tmp:
        os.environ["AUGLOOP_DATA_DIR"] = tmp
        os.environ["AUGLOOP_DATABASE_URL"] = f"sqlite:///{tmp}/bench.db"
        get_settings.cache_clear()
        engine = get_engine(get_settings().resolved_database_url)
        started = time.perf_counter()
        seed(engine, n)
        seeded = time.perf_counter() - started
        copies = near_copies(engine, CHECKS + 1)
        with session_scope(engine) as s:
            dataset = get_dataset(s, "doors")
            t0 = time.perf_counter()
            first = leak_guard.closest(s, dataset, [copies[0][1]])[0]
            first_s = time.perf_counter() - t0
            checks, counts, found = [], [], int(first.leak is not None and first.leak.sample_id == copies[0][0])
            for sample_id, text in copies[1:]:
                t0 = time.perf_counter()
                result = leak_guard.closest(s, dataset, [text])[0]
                checks.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                leak_guard._key(s, dataset)
                counts.append((time.perf_counter() - t0) * 1000)
                found += int(result.leak is not None and result.leak.sample_id == sample_id)
            guard = next(iter(leak_guard._cache.values()))
            texts = len(guard.ids)
        leak_guard._cache.clear()
        engine.dispose()
    return {
        "texts": texts,
        "seed_seconds": round(seeded, 1),
        "first_check_seconds": round(first_s, 2),
        "check_ms": round(statistics.median(checks), 2),
        "count_ms": round(statistics.median(counts), 2),
        "bytes_per_text": round(guard.nbytes / texts),
        "found": found,
        "planted": len(copies),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k val/test texts, under a minute; writes nothing")
    args = parser.parse_args()
    sizes = [10_000] if args.quick else [100_000, 1_000_000]
    records: list[dict[str, object]] = []
    for n in sizes:
        r = measure(n)
        tag = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}m"
        print(
            f"{r['texts']:,} val/test texts (seeded in {r['seed_seconds']} s): first check (build) "
            f"{r['first_check_seconds']} s; a check after {r['check_ms']} ms, of which the freshness count "
            f"{r['count_ms']} ms; {r['bytes_per_text']} bytes a text; near-copies found {r['found']}/{r['planted']}",
            flush=True,
        )
        records += [
            {
                "metric": f"first_check_seconds_{tag}",
                "value": r["first_check_seconds"],
                "target": None,
                "unit": "s",
                "lower_is_better": True,
            },
            {
                "metric": f"check_ms_{tag}",
                "value": r["check_ms"],
                "target": CHECK_TARGET_MS,
                "unit": "ms",
                "lower_is_better": True,
            },
            {
                "metric": f"freshness_count_ms_{tag}",
                "value": r["count_ms"],
                "target": None,
                "unit": "ms",
                "lower_is_better": True,
            },
            {
                "metric": f"index_bytes_per_text_{tag}",
                "value": r["bytes_per_text"],
                "target": None,
                "unit": "B",
                "lower_is_better": True,
            },
            {
                "metric": f"near_copies_found_{tag}",
                "value": r["found"],
                "target": r["planted"],
                "unit": f"of {r['planted']}",
            },
        ]
    records.append({"metric": "load_average_1m", "value": round(os.getloadavg()[0], 2), "target": None, "unit": ""})
    if not args.quick:
        RESULTS.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    verdict = "PASS" if r["check_ms"] <= CHECK_TARGET_MS and r["found"] == r["planted"] else "FAIL"
    print(
        f"leak-guard check at the door, {r['texts']:,} val/test texts: {r['check_ms']} ms a check "
        f"(target ≤ {CHECK_TARGET_MS}), first check with the build {r['first_check_seconds']} s · {verdict}"
    )


if __name__ == "__main__":
    main()
