"""The leak guard at the doors people use (services/leak_guard.py): what an edit, an undo or a submitted text
pays for its check against a dataset's val/test texts, at 100,000 and 1,000,000 of them, on SQLite.

Per size, in one fresh SQLite database (synthetic posts from bench/synthetic.py as val/test originals):
- the first check: the freshness key, reading every val/test text and building the index, one check;
- a check after it (median of 50, each a new one-word variant of a val/test text), and the freshness key it asks
  first (the largest val id and test id, one index seek each) timed apart;
- reading the val/test texts as a build does (db/augmentation.reference_rows), timed apart;
- side by side, what these two cost before migration 0011 (the same database with its index dropped, the
  statements as they were): the key as a count of the val/test rows with their largest id, and reading the
  val/test texts with one query for both splits (each batch sorted what was left of them); median of 50, one read;
- the bytes the kept index holds per val/test text (what bounds the per-process cache);
- what another writer waits meanwhile (the longest of its small write transactions, back to back on a second
  connection): while the first check builds inside a writing session, as an edit's would with a cold index, and
  while the build runs in the background after a read of the review queue (services/leak_guard.warm_soon, a
  read-only session); then the first check of a writing session after that background build;
- that each planted near-copy was found (the check is exact on what the anchors propose).

And the same guard in an export (services/exporting.py): the training view of 100,000 val/test originals and
200,000 approved variants (50 of them planted near-copies of val/test texts) written as CSV, side by side with the
guard and with it switched off (alternately, the best of two each): what leaving out the near-copies costs an
export, and that all 50 are left out.

    .venv/bin/python bench/leak_guard_doors.py           # 100k and 1M, the export (~15 min); writes the JSON
    .venv/bin/python bench/leak_guard_doors.py --quick   # 10k (export: 10k + 20k), under a minute; writes nothing
    .venv/bin/python bench/leak_guard_doors.py --only export   # the export alone (~2 min), merged into the JSON
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

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


def before_0011(session: object, dataset_id: int) -> tuple[list[float], float]:
    """The freshness key and the read of the val/test texts as they were before migration 0011, in this database
    with the index 0011 made dropped again: milliseconds of 50 keys, and the seconds of one read (by 5,000 after
    the last id, as db/augmentation.reference_rows reads). Called last: the database is thrown away after."""
    from sqlalchemy import func, select, text

    from db.augmentation import _rows_by_id
    from db.models import Sample

    session.execute(text("DROP INDEX ix_samples_split_id"))  # type: ignore[attr-defined]

    where = (Sample.dataset_id == dataset_id, Sample.split.in_(["val", "test"]))
    keys = []
    for _ in range(CHECKS):
        t0 = time.perf_counter()
        session.execute(select(func.count(), func.max(Sample.id)).where(*where)).one()  # type: ignore[attr-defined]
        keys.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    sum(1 for _ in _rows_by_id(session, 5000, (Sample.id, Sample.split, Sample.text), *where))  # type: ignore[arg-type]
    return keys, time.perf_counter() - t0


def longest_write_wait(db_file: str, during: threading.Thread) -> float:
    """Small write transactions on a second connection, back to back while `during` runs (at least one): the
    seconds of the longest, which is how long that thread kept other writers out."""
    waits: list[float] = []
    conn = sqlite3.connect(db_file, timeout=600, isolation_level=None)
    try:
        while during.is_alive() or not waits:
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE datasets SET display_name = display_name WHERE name = 'doors'")
            conn.execute("COMMIT")
            waits.append(time.perf_counter() - t0)
            time.sleep(0.02)
    finally:
        conn.close()
    return max(waits)


def measure(n: int) -> dict[str, float]:
    from sqlalchemy.orm import Session

    from core.settings import get_settings
    from db.augmentation import reference_rows
    from db.datasets import get_dataset
    from db.session import get_engine, readonly_engine, session_scope
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
        cold: dict[str, Any] = {}

        def first_check() -> None:  # as an edit's with no index kept: inside a writing session
            with session_scope(engine) as w:
                dataset = get_dataset(w, "doors")  # the first statement: the write lock from here
                started.set()
                t0 = time.perf_counter()
                cold["first"] = leak_guard.closest(w, dataset, [copies[0][1]])[0]
                cold["seconds"] = time.perf_counter() - t0

        started = threading.Event()
        building = threading.Thread(target=first_check)
        building.start()
        started.wait()
        cold_wait = longest_write_wait(f"{tmp}/bench.db", building)
        building.join()
        first, first_s = cold["first"], cold["seconds"]
        with session_scope(engine) as s:
            dataset = get_dataset(s, "doors")
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
            t0 = time.perf_counter()
            read = sum(1 for _ in reference_rows(s, dataset.id))  # how a build reads them now
            assert read == texts, (read, texts)
            read_s = time.perf_counter() - t0
        # A read of the review queue starts the build in the background; a writer meanwhile, then the first edit.
        leak_guard._cache.clear()
        with Session(readonly_engine(engine)) as r:
            t0 = time.perf_counter()
            assert leak_guard.warm_soon(r, get_dataset(r, "doors"))
        settled = threading.Thread(target=leak_guard.settle)
        settled.start()
        warm_wait = longest_write_wait(f"{tmp}/bench.db", settled)
        settled.join()
        warm_s = time.perf_counter() - t0
        with session_scope(engine) as s:
            dataset = get_dataset(s, "doors")
            t0 = time.perf_counter()
            after_warm = leak_guard.closest(s, dataset, [copies[1][1]])[0]
            after_warm_ms = (time.perf_counter() - t0) * 1000
            assert after_warm.leak is not None and after_warm.leak.sample_id == copies[1][0]
            before_keys, before_read = before_0011(s, dataset.id)
        leak_guard._cache.clear()
        engine.dispose()
    return {
        "texts": texts,
        "seed_seconds": round(seeded, 1),
        "first_check_seconds": round(first_s, 2),
        "writer_wait_cold_seconds": round(cold_wait, 2),
        "background_build_seconds": round(warm_s, 2),
        "writer_wait_background_ms": round(warm_wait * 1000, 1),
        "first_check_after_background_ms": round(after_warm_ms, 2),
        "check_ms": round(statistics.median(checks), 2),
        "key_ms": round(statistics.median(counts), 3),
        "key_before_ms": round(statistics.median(before_keys), 2),
        "read_seconds": round(read_s, 1),
        "read_seconds_before": round(before_read, 1),
        "bytes_per_text": round(guard.nbytes / texts),
        "found": found,
        "planted": len(copies),
    }


def measure_export(n: int, variants: int) -> dict[str, float]:
    """Seconds to export the training view with the leak guard (its index built once before) and without it,
    and how many planted near-copies it left out."""
    from sqlalchemy import insert
    from synthetic import posts

    from core.settings import get_settings
    from core.textnorm import content_hash
    from db.datasets import get_dataset
    from db.models import Sample
    from db.session import get_engine, session_scope
    from services import exporting, leak_guard

    with tempfile.TemporaryDirectory(prefix="leak-export-") as tmp:
        os.environ["AUGLOOP_DATA_DIR"] = tmp
        os.environ["AUGLOOP_DATABASE_URL"] = f"sqlite:///{tmp}/bench.db"
        get_settings.cache_clear()
        engine = get_engine(get_settings().resolved_database_url)
        seed(engine, n)
        planted = [text for _id, text in near_copies(engine, CHECKS)]
        texts = [f"{t} (variant)" for t in posts(variants - len(planted), seed=29)] + planted
        with session_scope(engine) as s:
            dataset = get_dataset(s, "doors")
            rows = [
                {
                    "dataset_id": dataset.id,
                    "text": text,
                    "split": "train",
                    "origin": "augmented",
                    "review_status": "approved",
                    "content_hash": content_hash(text),
                }
                for text in dict.fromkeys(texts)
            ]
            for i in range(0, len(rows), 20_000):
                s.execute(insert(Sample), rows[i : i + 20_000])
        timings = {}
        real = leak_guard.leaks
        unguarded = lambda session, dataset, texts: [None] * len(texts)  # noqa: E731
        # Alternately, twice each (the best of two): the first export of a fresh database also warms its pages.
        for label in ("with_guard", "without_guard", "with_guard", "without_guard"):
            leak_guard.leaks = real if label == "with_guard" else unguarded  # type: ignore[assignment]
            with session_scope(engine) as s:
                dataset = get_dataset(s, "doors")
                leak_guard.closest(s, dataset, ["warm the index"])  # built once per process, as in the API
                t0 = time.perf_counter()
                count = exporting.write_export(s, dataset, {"original", "approved"}, "csv", Path(tmp) / "out.csv")
                seconds = time.perf_counter() - t0
            if label not in timings or seconds < timings[label][0]:
                timings[label] = (seconds, count)
            if label == "with_guard":
                with (Path(tmp) / "out.csv").open(encoding="utf-8", newline="") as fh:
                    written = {row["text"] for row in csv.DictReader(fh)}
                planted_out = sum(text not in written for text in planted)
        leak_guard.leaks = real
        leak_guard._cache.clear()
        engine.dispose()
    (guarded, kept), (plain, _all) = timings["with_guard"], timings["without_guard"]
    return {
        "rows": _all.rows,
        "variants": len(rows),
        "with_guard_seconds": round(guarded, 1),
        "without_guard_seconds": round(plain, 1),
        "left_out": kept.left_out_near_val_test,  # the planted ones, and any synthetic variant close to a post
        "planted_left_out": planted_out,
        "planted": len(planted),
    }


def door_records(quick: bool) -> tuple[list[dict[str, object]], dict[str, float]]:
    records: list[dict[str, object]] = []
    r: dict[str, float] = {}
    for n in [10_000] if quick else [100_000, 1_000_000]:
        r = measure(n)
        tag = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}m"
        print(
            f"{r['texts']:,} val/test texts (seeded in {r['seed_seconds']} s): first check (build) "
            f"{r['first_check_seconds']} s, another writer waited {r['writer_wait_cold_seconds']} s meanwhile; "
            f"built in the background after a queue read in {r['background_build_seconds']} s, another writer "
            f"waited at most {r['writer_wait_background_ms']} ms meanwhile, and the first check after it took "
            f"{r['first_check_after_background_ms']} ms; a check after {r['check_ms']} ms, of which the freshness key "
            f"{r['key_ms']} ms (before 0011: a count, {r['key_before_ms']} ms); reading the val/test texts "
            f"{r['read_seconds']} s (before 0011: {r['read_seconds_before']} s); {r['bytes_per_text']} bytes a text; "
            "near-copies found "
            f"{r['found']}/{r['planted']}",
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
                "metric": f"writer_wait_during_first_check_seconds_{tag}",
                "value": r["writer_wait_cold_seconds"],
                "target": None,
                "unit": "s",
                "lower_is_better": True,
            },
            {
                "metric": f"writer_wait_during_background_build_ms_{tag}",
                "value": r["writer_wait_background_ms"],
                "target": None,
                "unit": "ms",
                "lower_is_better": True,
            },
            {
                "metric": f"first_check_after_background_build_ms_{tag}",
                "value": r["first_check_after_background_ms"],
                "target": CHECK_TARGET_MS,
                "unit": "ms",
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
                "metric": f"freshness_key_ms_{tag}",
                "value": r["key_ms"],
                "target": None,
                "unit": "ms",
                "lower_is_better": True,
            },
            {
                "metric": f"freshness_key_before_0011_ms_{tag}",
                "value": r["key_before_ms"],
                "target": None,
                "unit": "ms",
                "lower_is_better": True,
            },
            {
                "metric": f"read_val_test_seconds_{tag}",
                "value": r["read_seconds"],
                "target": None,
                "unit": "s",
                "lower_is_better": True,
            },
            {
                "metric": f"read_val_test_before_0011_seconds_{tag}",
                "value": r["read_seconds_before"],
                "target": None,
                "unit": "s",
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
    return records, r


def export_records(quick: bool) -> tuple[list[dict[str, object]], dict[str, float], float]:
    e = measure_export(10_000, 20_000) if quick else measure_export(100_000, 200_000)
    cost = round(e["with_guard_seconds"] / e["without_guard_seconds"], 2)
    print(
        f"export of {e['rows']:,} rows ({e['variants']:,} approved variants): {e['with_guard_seconds']} s with the "
        f"leak guard, {e['without_guard_seconds']} s without ({cost}×); planted near-copies left out "
        f"{e['planted_left_out']}/{e['planted']} ({e['left_out']} left out in all)",
        flush=True,
    )
    records: list[dict[str, object]] = [
        {
            "metric": "export_seconds_with_guard",
            "value": e["with_guard_seconds"],
            "target": None,
            "unit": "s",
            "lower_is_better": True,
        },
        {
            "metric": "export_seconds_without_guard",
            "value": e["without_guard_seconds"],
            "target": None,
            "unit": "s",
            "lower_is_better": True,
        },
        {"metric": "export_guard_cost", "value": cost, "target": None, "unit": "×", "lower_is_better": True},
        {
            "metric": "export_near_copies_left_out",
            "value": e["planted_left_out"],
            "target": e["planted"],
            "unit": f"of {e['planted']}",
        },
        {"metric": "export_load_average_1m", "value": round(os.getloadavg()[0], 2), "target": None, "unit": ""},
    ]
    return records, e, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k val/test texts, under a minute; writes nothing")
    parser.add_argument("--only", choices=["export"], help="the export alone (~2 min), merged into the results")
    args = parser.parse_args()
    exported, e, cost = export_records(args.quick)
    export_ok = e["planted_left_out"] == e["planted"]
    if args.only == "export":
        committed = json.loads(RESULTS.read_text(encoding="utf-8"))
        kept = [r for r in committed if not str(r["metric"]).startswith("export_")]
        if not args.quick:
            RESULTS.write_text(json.dumps(kept + exported, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"merged into {RESULTS.relative_to(ROOT)}")
        print(
            f"export with the leak guard: {e['planted_left_out']}/{e['planted']} planted near-copies left out, "
            f"at {cost}× the export without it · {'PASS' if export_ok else 'FAIL'}"
        )
        return
    records, r = door_records(args.quick)
    if not args.quick:
        RESULTS.write_text(json.dumps(records + exported, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    ok = r["check_ms"] <= CHECK_TARGET_MS and r["found"] == r["planted"] and export_ok
    print(
        f"leak-guard check at the door, {r['texts']:,} val/test texts: {r['check_ms']} ms a check "
        f"(target ≤ {CHECK_TARGET_MS}), first check with the build {r['first_check_seconds']} s; exports leave out "
        f"{e['planted_left_out']}/{e['planted']} planted near-copies at {cost}× · {'PASS' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
