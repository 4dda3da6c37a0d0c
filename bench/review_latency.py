"""Review latency on a big queue: the page call the UI makes, and a bulk approval of 5,000 variants.

Seeds the example dataset's 5,000 originals plus 200,000 variants (20,000 with --quick) into a SQLite file
with Core executemany, then calls the real app in-process (FastAPI TestClient, real token, real SQL):

- review page: GET /datasets/{name}/review-queue, 50 per page, 200 calls as the Review page makes them: a
  filter drawn at random (status, task × label, method, score ranges, free-text search, flagged; one of the
  sorts), its first page, then next pages or a jump to any page within the total: p50 / p95;
- bulk approve: POST /datasets/{name}/bulk-decisions with 5,000 selected ids, confirmed; and a filter-based
  one.

Then the reads around a decision (my latest decision and its card, a decision and its undo, 20 of each) and
the panels the Review page refreshes (review progress, annotators, agreement; each read 3 times, a decision
before each so that no cache answers): p50 / p95 (max for the panels).

Targets: p95 <= 100 ms, bulk <= 5 s. Writes bench/results/review_latency.json.
    .venv/bin/python bench/review_latency.py [--quick] [--variants N] [--calls N] [--slowest N]

`--backend postgres` runs the same on a throwaway PostgreSQL cluster (tests/pg_server.py's: initdb in a
temporary folder, fsync off, stopped and removed at the end, on error too) and writes
bench/results/review_latency.postgres.json. After the seeding it runs VACUUM (ANALYZE), as autovacuum does after a bulk
load (`--no-analyze`: plans from a table the planner has no statistics for).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "review_latency.json"
RESULT_FILES = {"sqlite": RESULTS, "postgres": RESULTS.with_name("review_latency.postgres.json")}
EXAMPLE = ROOT / "examples" / "political_social_media.csv"
DATASET = "psm"
METHODS = [
    ("backtranslation", "Helsinki-NLP/opus-mt-en-de", {"pivot": "de"}),
    ("mlm", "bert-base-multilingual-cased", {"aug_p": 0.15}),
    ("wordnet", None, {"aug_p": 0.2}),
]
SWAPS = ["great", "strong", "new", "local", "important", "proud", "today", "people", "work", "vote"]


def seed(engine: Any, n_variants: int, rng: random.Random) -> dict[str, Any]:
    """Originals through the importer; variants, their labels and some reviews through Core executemany."""
    from sqlalchemy import insert, select

    from core.textnorm import content_hash
    from db.auth import create_token
    from db.models import DEFAULT_PROJECT, Review, Sample, SampleLabel, User, utcnow
    from db.session import session_scope
    from services.importing import ImportSpec, import_file
    from services.projects import add_member

    with session_scope(engine) as s:
        import_file(
            s,
            EXAMPLE.read_bytes(),
            ImportSpec(dataset=DATASET, tasks=["bias", "message", "audience"]),
            filename=EXAMPLE.name,
        )
        token = create_token(s, "bench-annotator", "annotator").token
        other = create_token(s, "bench-other", "annotator").user.id
        for name in ("bench-annotator", "bench-other"):  # annotators of the dataset's (default) project
            add_member(s, DEFAULT_PROJECT, name, "annotator")
    with engine.begin() as conn:
        parents = conn.execute(select(Sample.id, Sample.dataset_id, Sample.text).where(Sample.split == "train")).all()
        labels: dict[int, list[tuple[str, str]]] = {}
        for sid, task, label in conn.execute(select(SampleLabel.sample_id, SampleLabel.task, SampleLabel.label)):
            labels.setdefault(sid, []).append((task, label))
        next_id = (conn.execute(select(Sample.id).order_by(Sample.id.desc()).limit(1)).scalar() or 0) + 1
        now = utcnow()
        batch = 20_000
        for start in range(0, n_variants, batch):
            samples: list[dict[str, Any]] = []
            label_rows: list[dict[str, Any]] = []
            reviews: list[dict[str, Any]] = []
            for i in range(start, min(start + batch, n_variants)):
                pid, ds_id, ptext = parents[i % len(parents)]
                words = ptext.split()
                if words:
                    words[rng.randrange(len(words))] = rng.choice(SWAPS)
                text = " ".join(words) + f" #{i}"
                method, model, params = METHODS[i % 3]
                consistency = rng.random()
                status = rng.choices(["pending", "approved", "rejected"], [0.8, 0.12, 0.08])[0]
                sid = next_id + i
                samples.append(
                    {
                        "id": sid,
                        "dataset_id": ds_id,
                        "text": text,
                        "split": "train",
                        "origin": "augmented",
                        "content_hash": content_hash(text),
                        "parent_id": pid,
                        "method": method,
                        "method_params": params,
                        "model_name": model,
                        "seed": i % 5,
                        "generated_text": text,
                        "scores": {"similarity": 0.0, "label_consistency": consistency},
                        "similarity": round(rng.uniform(0.3, 1.0), 4),
                        "label_consistency": round(consistency, 4),
                        # what an augment job stores since issue 15, read by the meaning and most-useful sorts
                        "semantic_similarity": round(rng.uniform(0.5, 1.0), 4),
                        "novelty": round(rng.uniform(0.0, 1.0), 4),
                        "label_flag": consistency < 0.2,
                        "review_status": status,
                        "review_count": 0 if status == "pending" else 1,
                        "version": 1 if status == "pending" else 2,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                label_rows.extend({"sample_id": sid, "task": t, "label": lab} for t, lab in labels.get(pid, []))
                if status != "pending":
                    reviews.append(
                        {
                            "sample_id": sid,
                            "user_id": other,
                            "decision": {"approved": "approve", "rejected": "reject"}[status],
                            "reason": "other" if status == "rejected" else None,
                            "text_before": text,
                            "text_after": text,
                            "version_seen": 1,
                            "created_at": now,
                        }
                    )
            conn.execute(insert(Sample), samples)
            conn.execute(insert(SampleLabel), label_rows)
            if reviews:
                conn.execute(insert(Review), reviews)
        names = {u: i for i, u in conn.execute(select(User.id, User.name)).all()}
    return {"token": token, "users": names}


def random_filter(rng: random.Random) -> dict[str, Any]:
    """A filter the Review page sends: one status; the default sort (family) or another; zero to two narrowing
    filters, label the commonest (annotators work class by class), search and flagged the rarest."""
    params: dict[str, Any] = {
        "page_size": 50,
        "status": rng.choices(["pending", "approved", "rejected"], [0.85, 0.1, 0.05])[0],
        # every sort the Review page offers (review_ui/app_pages/review.py), the default (family) the commonest
        "sort": rng.choices(
            [
                "family",
                "-expected_value",
                "age",
                "-age",
                "similarity",
                "-similarity",
                "label_consistency",
                "-label_consistency",
                "-semantic_similarity",
                "semantic_similarity",
            ],
            [0.3, 0.15, 0.15, 0.05, 0.05, 0.1, 0.05, 0.05, 0.05, 0.05],
        )[0],
    }
    kinds = ["label", "method", "similarity", "consistency", "search", "flagged"]
    for kind in rng.choices(kinds, [0.4, 0.2, 0.1, 0.1, 0.1, 0.1], k=rng.choices([0, 1, 2], [0.35, 0.45, 0.2])[0]):
        if kind == "label":
            params.update(
                rng.choice(
                    [
                        {
                            "task": "message",
                            "label": rng.choice(["attack", "other", "mobilization", "media", "policy"]),
                        },
                        {"task": "bias", "label": "partisan"},
                        {"task": "audience", "label": "constituency"},
                    ]
                )
            )
        elif kind == "method":
            params["method"] = rng.choice(["backtranslation", "mlm", "wordnet", "mlm,wordnet"])
        elif kind == "similarity":
            lo = round(rng.uniform(0.3, 0.8), 2)
            params.update(min_similarity=lo, max_similarity=round(min(1.0, lo + 0.2), 2))
        elif kind == "consistency":
            params["min_consistency"] = round(rng.uniform(0.0, 0.9), 2)
        elif kind == "search":
            params["q"] = rng.choice(["health", "vote", "Obama", "veterans", "tax", "zzqx"])
        else:
            params["flagged"] = "true"
    return params


def filter_kind(params: dict[str, Any]) -> str:
    """The narrowing filters of a page call, by name ("none" for a status alone)."""
    names = {
        "q": "search",
        "task": "label",
        "method": "method",
        "min_similarity": "similarity",
        "min_consistency": "consistency",
        "flagged": "flagged",
    }
    return "+".join(sorted(name for key, name in names.items() if key in params)) or "none"


def quantiles(times: list[float], method: Literal["inclusive", "exclusive"] = "inclusive") -> tuple[float, float]:
    """p50 and p95 of some timings (inclusive: a p95 of a few calls is not beyond their slowest)."""
    if len(times) < 2:
        return times[0], times[0]
    return statistics.median(times), statistics.quantiles(times, n=20, method=method)[-1]


def measure_pages(client: Any, calls: int, rng: random.Random, log: list[Any] | None = None) -> list[float]:
    """Annotator sessions: a filter, its first page, then more pages forward or a jump within the total."""
    url = f"/api/v1/datasets/{DATASET}/review-queue"
    client.get(url)  # warm the connection pool and the page cache
    times: list[float] = []
    while len(times) < calls:
        params = random_filter(rng)
        page, last = 1, 1
        for _ in range(rng.choice([1, 1, 2, 3, 5])):
            t0 = time.perf_counter()
            r = client.get(url, params={**params, "page": page})
            times.append((time.perf_counter() - t0) * 1000)
            if log is not None:
                log.append((times[-1], {**params, "page": page}))
            if r.status_code != 200:
                raise SystemExit(f"queue call failed {r.status_code}: {r.text} ({params})")
            body = r.json()
            last = max(1, -(-body["total"] // 50))
            page = min(last, page + 1) if rng.random() < 0.8 else rng.randint(1, last)  # next, or jump
            if len(times) >= calls:
                break
    return times


def timing(metric: str, ms: float) -> dict[str, Any]:
    """A result entry for a timing in milliseconds, with no target."""
    return {"metric": metric, "value": round(ms, 1), "target": None, "unit": "ms", "lower_is_better": True}


def timed(fn: Any) -> tuple[float, Any]:
    """The seconds `fn` took and its answer; a response that is not a success stops the benchmark (a 403 or 404
    timed as if it were the page measures nothing: the load benchmark's augment requests were 403s unseen)."""
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    if getattr(out, "status_code", 200) >= 300:
        raise SystemExit(f"{out.request.method} {out.request.url.path} answered {out.status_code}: {out.text[:300]}")
    return seconds, out


def reads_around_decisions(client: Any, pending: list[dict[str, Any]], rounds: int) -> dict[str, list[float]]:
    """A decision, the card of it, my latest decision (what U asks after a reload) and the undo, `rounds` times:
    the milliseconds of each kind of call."""
    out: dict[str, list[float]] = {"decide": [], "review_cards": [], "my_latest_decision": [], "undo": []}
    for item in pending[:rounds]:
        ms, _ = timed(
            lambda item=item: client.post(
                f"/api/v1/samples/{item['id']}/decision", json={"decision": "approve", "version": item["version"]}
            )
        )
        out["decide"].append(ms * 1000)
        ms, cards = timed(lambda item=item: client.get("/api/v1/review-cards", params={"ids": str(item["id"])}))
        out["review_cards"].append(ms * 1000)
        ms, latest = timed(lambda: client.get(f"/api/v1/datasets/{DATASET}/my-latest-decision"))
        out["my_latest_decision"].append(ms * 1000)
        if latest.json()["sample_id"] != item["id"]:
            raise SystemExit(f"my latest decision is {latest.json()}, not {item['id']}")
        ms, _ = timed(
            lambda item=item, cards=cards: client.post(
                f"/api/v1/samples/{item['id']}/undo", json={"version": cards.json()[0]["version"]}
            )
        )
        out["undo"].append(ms * 1000)
    return out


def panels(client: Any, pending: list[dict[str, Any]], rounds: int) -> dict[str, list[float]]:
    """The Review page's panels, each read after a decision (the progress counts are kept until a review
    changes them): the milliseconds of each."""
    out: dict[str, list[float]] = {"review_progress": [], "annotators": [], "agreement": [], "stats": []}
    for item in pending[:rounds]:
        timed(
            lambda item=item: client.post(
                f"/api/v1/samples/{item['id']}/decision", json={"decision": "approve", "version": item["version"]}
            )
        )
        for kind, path in (
            ("review_progress", "review-progress"),
            ("annotators", "annotators"),
            ("agreement", "agreement"),
            ("stats", "stats"),
        ):
            ms, _ = timed(lambda path=path: client.get(f"/api/v1/datasets/{DATASET}/{path}"))
            out[kind].append(ms * 1000)
    return out


def measure(url: str, n_variants: int, calls: int, args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Seed the database at `url`, time the calls; the result entries and the summary line."""
    rng = random.Random(7)
    from fastapi.testclient import TestClient
    from sqlalchemy import text

    from api.main import create_app
    from core.settings import get_settings
    from db.session import get_engine

    os.environ["AUGLOOP_DATABASE_URL"] = url
    get_settings.cache_clear()
    settings = get_settings()
    engine = get_engine(settings.resolved_database_url)
    seed_s, seeded = timed(lambda: seed(engine, n_variants, rng))
    print(f"seeded 5,000 originals + {n_variants:,} variants in {seed_s:.1f} s", flush=True)
    if engine.dialect.name == "postgresql":  # the seeding wrote explicit ids: move the sequence past them
        with engine.begin() as conn:
            conn.execute(text("SELECT setval(pg_get_serial_sequence('samples', 'id'), (SELECT max(id) FROM samples))"))
        if not args.no_analyze:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                # what autovacuum does after a bulk load (since Postgres 13 inserts start it too): the statistics,
                # and the visibility map that lets an index-only scan (a page's count) skip the table
                conn.execute(text("VACUUM (ANALYZE)"))
    app = create_app(settings, engine)
    with TestClient(app, headers={"Authorization": f"Bearer {seeded['token']}"}) as client:
        load = os.getloadavg()[0]
        log: list[Any] = []
        times = measure_pages(client, calls, rng, log)
        p50, p95 = quantiles(times, "exclusive")  # as the committed figures were computed
        print(
            f"review page ({calls} calls, 50/page, random filters and pages): "
            f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, "
            f"max {max(times):.1f} ms",
            flush=True,
        )
        for ms, params in sorted(log, key=lambda x: -x[0])[: args.slowest]:
            print(f"  {ms:6.1f} ms  {params}")
        by_sort: dict[str, list[float]] = {}
        by_kind: dict[str, list[float]] = {}
        for ms, params in log:
            by_sort.setdefault(params["sort"], []).append(ms)
            for kind in filter_kind(params).split("+"):
                by_kind.setdefault(kind, []).append(ms)
        for label, groups in (("sort", by_sort), ("filter", by_kind)):
            for name, group in sorted(groups.items()):
                g50, g95 = quantiles(group)
                print(
                    f"  {label} {name:>20}: {len(group):3} calls, p50 {g50:6.1f} ms, p95 {g95:6.1f} ms, "
                    f"max {max(group):6.1f} ms"
                )
        useful = by_sort.get("-expected_value") or [0.0]
        pending = client.get(
            f"/api/v1/datasets/{DATASET}/review-queue", params={"page_size": 200, "sort": "-similarity"}
        ).json()
        family_s, _ = timed(lambda: client.get(f"/api/v1/samples/{pending['items'][0]['id']}"))
        progress_s, _ = timed(lambda: client.get(f"/api/v1/datasets/{DATASET}/review-progress"))
        ids = [
            i
            for page in range(1, 26)
            for i in (
                item["id"]
                for item in client.get(
                    f"/api/v1/datasets/{DATASET}/review-queue",
                    params={"page": page, "page_size": 200, "sort": "-age"},
                ).json()["items"]
            )
        ][:5000]
        bulk_s, res = timed(
            lambda: client.post(
                f"/api/v1/datasets/{DATASET}/bulk-decisions",
                json={
                    "decision": "approve",
                    "sample_ids": ids,
                    "confirm": True,
                    "expected_count": len(ids),
                },
            )
        )
        assert res.status_code == 200 and res.json()["applied"] == len(ids), res.text
        print(f"bulk approve of {len(ids):,} selected variants: {bulk_s:.2f} s", flush=True)
        flt = {"task": "message", "label": "policy", "method": ["wordnet"]}
        count_s, preview = timed(
            lambda: client.post(
                f"/api/v1/datasets/{DATASET}/bulk-decisions",
                json={"decision": "reject", "reason": "other", "filter": flt},
            )
        )
        matched = preview.json()["matched"]
        filter_s, res = timed(
            lambda: client.post(
                f"/api/v1/datasets/{DATASET}/bulk-decisions",
                json={
                    "decision": "reject",
                    "reason": "other",
                    "filter": flt,
                    "confirm": True,
                    "expected_count": matched,
                },
            )
        )
        assert res.status_code == 200, res.text
        print(
            f"bulk reject of everything matching a filter ({matched:,}): count {count_s * 1000:.0f} ms, "
            f"apply {filter_s:.2f} s",
            flush=True,
        )
        agree_s, _ = timed(lambda: client.get(f"/api/v1/datasets/{DATASET}/agreement"))
        print(
            f"family view {family_s * 1000:.0f} ms, progress {progress_s * 1000:.0f} ms, "
            f"agreement {agree_s * 1000:.0f} ms",
            flush=True,
        )
        # after the bulk decisions: the annotator's history holds thousands of votes
        fresh = client.get(f"/api/v1/datasets/{DATASET}/review-queue", params={"page_size": 200, "sort": "age"}).json()[
            "items"
        ]
        around = reads_around_decisions(client, fresh[:20], 20)
        panel = panels(client, fresh[20:23], 3)
        for kind, group in {**around, **panel}.items():
            g50, g95 = quantiles(group)
            print(f"  {kind:>20}: {len(group):3} calls, p50 {g50:6.1f} ms, p95 {g95:6.1f} ms, max {max(group):6.1f} ms")
    engine.dispose()
    from db.session import dispose_all

    dispose_all()

    results = [
        {
            "metric": "review_page_p95_ms",
            "value": round(p95, 1),
            "target": 100,
            "unit": "ms",
            "lower_is_better": True,
        },
        {
            "metric": "review_page_p50_ms",
            "value": round(p50, 1),
            "target": None,
            "unit": "ms",
            "lower_is_better": True,
        },
        {
            "metric": "bulk_approve_5000_s",
            "value": round(bulk_s, 2),
            "target": 5,
            "unit": "s",
            "lower_is_better": True,
        },
        {
            "metric": "bulk_filter_reject_s",
            "value": round(filter_s, 2),
            "target": None,
            "unit": "s",
            "lower_is_better": True,
            "count": matched,
        },
        {**timing("most_useful_first_page_max_ms", max(useful)), "calls": len(useful)},
        timing("bulk_filter_count_ms", count_s * 1000),
        timing("family_view_ms", family_s * 1000),
        timing("agreement_ms", agree_s * 1000),
        timing("review_progress_ms", progress_s * 1000),
    ]
    for label, groups in (("sort", by_sort), ("filter", by_kind)):
        for name, group in sorted(groups.items()):
            g50, g95 = quantiles(group)
            key = name.lstrip("-") + ("_desc" if name.startswith("-") else "")
            results.append({**timing(f"review_page_{label}_{key}_p50_ms", g50), "calls": len(group)})
            results.append({**timing(f"review_page_{label}_{key}_p95_ms", g95), "calls": len(group)})
    for kind, group in around.items():
        g50, g95 = quantiles(group)
        results.append({**timing(f"{kind}_p50_ms", g50), "calls": len(group)})
        results.append({**timing(f"{kind}_p95_ms", g95), "calls": len(group)})
    for kind, group in panel.items():
        results.append({**timing(f"{kind}_after_a_decision_max_ms", max(group)), "calls": len(group)})
    results += [
        {"metric": "variants_seeded", "value": n_variants, "target": None, "unit": "variants"},
        # This is a shared 2-core machine: the load when the timings ran says how much of it we had.
        {"metric": "load_average_1m", "value": round(load, 2), "target": None, "unit": "runnable processes"},
    ]
    ok = p95 <= 100 and bulk_s <= 5
    summary = (
        f"review page p95 {p95:.1f} ms (target 100) · bulk approve 5,000 {bulk_s:.2f} s (target 5) · "
        f"{n_variants:,} variants · load {load:.1f} · {'PASS' if ok else 'MISS'}"
    )
    return results, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 variants, 100 calls (under a minute)")
    parser.add_argument("--variants", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--slowest", type=int, default=0, help="Print the N slowest page calls")
    parser.add_argument("--backend", choices=sorted(RESULT_FILES), default="sqlite")
    parser.add_argument("--no-analyze", action="store_true", help="Postgres: no ANALYZE after the seeding")
    args = parser.parse_args()
    n_variants = args.variants or (20_000 if args.quick else 200_000)
    calls = args.calls or (100 if args.quick else 200)

    with tempfile.TemporaryDirectory(prefix="review-bench-") as tmp:
        os.environ["AUGLOOP_DATA_DIR"] = tmp
        if args.backend == "sqlite":
            results, summary = measure(f"sqlite:///{tmp}/bench.db", n_variants, calls, args)
        else:
            from tests.pg_server import PostgresServer

            server = PostgresServer()
            try:
                server.start()
                results, summary = measure(server.create_database("review_bench"), n_variants, calls, args)
            finally:
                server.stop()
    if not args.quick and args.variants is None and not args.no_analyze:
        out = RESULT_FILES[args.backend]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
    print(f"{args.backend}: {summary}")


if __name__ == "__main__":
    main()
