"""Load: 50 concurrent clients for 60 s against the real API process on loopback, on SQLite and on Postgres.

Each client mixes what people and scripts do at once: review decisions (read a page of the queue, decide one
variant with the version it showed), queue reads (the review queue with a filter, the jobs list) and augment
requests (POST /augment: 202 with a job). Reported per backend: requests/s, p50/p99 latency per route, status
counts; then the audit: every decision a client got a 2xx for is in the database exactly once (one review row
for that sample, user and version), and no response was a 5xx.

    .venv/bin/python bench/load.py            # 50 clients × 60 s per backend; writes bench/results/load.json
    .venv/bin/python bench/load.py --quick    # 8 clients × 5 s per backend, 5,000 variants; load.quick.json
Loopback only; every loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "load.json"
DATASET = "psm"
MAX_REQUESTS_PER_CLIENT = 100_000


def _seed_module():
    spec = importlib.util.spec_from_file_location("review_latency", ROOT / "bench" / "review_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def seed_backend(url: str, n_variants: int, n_users: int) -> dict[str, Any]:
    """The example dataset + pending variants (the review benchmark's seeding), and one token per client user."""
    os.environ["AUGLOOP_DATABASE_URL"] = url
    from core.settings import get_settings

    get_settings.cache_clear()
    from sqlalchemy import select, text

    from db.auth import create_token
    from db.models import DEFAULT_PROJECT, Sample
    from db.session import dispose_all, get_engine, session_scope
    from services.projects import add_member

    engine = get_engine(url)
    _seed_module().seed(engine, n_variants, random.Random(11))
    if engine.dialect.name == "postgresql":  # the seeding wrote explicit ids: move the sequence past them
        with engine.begin() as conn:
            conn.execute(text("SELECT setval(pg_get_serial_sequence('samples', 'id'), (SELECT max(id) FROM samples))"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))  # what autovacuum does after a bulk load, before the planner guesses
    with session_scope(engine) as s:
        tokens = [create_token(s, f"load-user-{i}", "annotator").token for i in range(n_users)]
        # leads of the project the dataset is in (the default one): they review, and they may start augmentation,
        # which annotators may not (as annotators, every augment request of the mix was a 403 since)
        for i in range(n_users):
            add_member(s, DEFAULT_PROJECT, f"load-user-{i}", "lead")
        originals = list(s.scalars(select(Sample.id).where(Sample.origin == "original", Sample.split == "train")))
    dispose_all()
    return {"tokens": tokens, "originals": originals}


def start_api(url: str, data_dir: str, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "AUGLOOP_DATABASE_URL": url,
        "AUGLOOP_DATA_DIR": data_dir,
        "AUGLOOP_AUTH_FAILURES_PER_MINUTE": "1000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "augloop", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the API did not start")


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: Counter[tuple[str, int]] = Counter()
        self.decisions: list[tuple[int, int, str, str]] = []  # (sample, version seen, token index, decision)
        self.errors: Counter[str] = Counter()

    def add(self, route: str, started: float, response: httpx.Response) -> None:
        self.latency[route].append((time.perf_counter() - started) * 1000)
        self.status[(route, response.status_code)] += 1


async def client_loop(
    i: int, base: str, token: str, originals: list[int], deadline: float, rec: Recorder, rng: random.Random
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    queue_url = f"/api/v1/datasets/{DATASET}/review-queue"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
        for _ in range(MAX_REQUESTS_PER_CLIENT):
            if time.perf_counter() >= deadline:
                return
            op = rng.choices(["decide", "read", "augment"], [0.5, 0.3, 0.2])[0]
            try:
                if op == "decide":
                    t0 = time.perf_counter()
                    page = await http.get(
                        queue_url,
                        params={
                            "status": "pending",
                            "page": rng.randint(1, 20),
                            "sort": rng.choice(["family", "age", "-similarity"]),
                        },
                    )
                    rec.add("GET review-queue", t0, page)
                    items = page.json().get("items", []) if page.status_code == 200 else []
                    if not items:
                        continue
                    item = rng.choice(items)
                    decision = rng.choice(["approve", "approve", "reject"])
                    body = {"decision": decision, "version": item["version"]}
                    if decision == "reject":
                        body["reason"] = rng.choice(["meaning_changed", "ungrammatical", "other"])
                    t0 = time.perf_counter()
                    r = await http.post(f"/api/v1/samples/{item['id']}/decision", json=body)
                    rec.add("POST decision", t0, r)
                    if 200 <= r.status_code < 300:
                        rec.decisions.append((item["id"], item["version"], token, decision))
                elif op == "read":
                    t0 = time.perf_counter()
                    if rng.random() < 0.5:
                        r = await http.get("/api/v1/jobs", params={"limit": 20})
                        rec.add("GET jobs", t0, r)
                    else:
                        r = await http.get(
                            queue_url,
                            params={
                                "status": "pending",
                                "task": "message",
                                "label": rng.choice(["attack", "other", "mobilization", "media"]),
                            },
                        )
                        rec.add("GET review-queue (class)", t0, r)
                else:
                    t0 = time.perf_counter()
                    r = await http.post(
                        "/api/v1/augment",
                        json={
                            "dataset": DATASET,
                            "sample_ids": rng.sample(originals, 2),
                            "methods": ["wordnet"],
                            "n_per_text": 2,
                            "seed": rng.randint(0, 10**6),
                        },
                    )
                    rec.add("POST augment", t0, r)
            except httpx.HTTPError as err:
                rec.errors[type(err).__name__] += 1


def audit(url: str, rec: Recorder, tokens: list[str]) -> dict[str, int]:
    """Each 2xx decision must stand in the reviews table exactly once (sample, user, version seen)."""
    from sqlalchemy import create_engine, func, select

    from db.auth import hash_token
    from db.models import APIToken, Review

    engine = create_engine(url)
    with engine.connect() as conn:
        user_of = dict(conn.execute(select(APIToken.token_hash, APIToken.user_id)).all())
        rows = Counter(
            (s, u, v)
            for s, u, v, n in conn.execute(
                select(Review.sample_id, Review.user_id, Review.version_seen, func.count()).group_by(
                    Review.sample_id, Review.user_id, Review.version_seen
                )
            ).all()
            for _ in range(n)
        )
    engine.dispose()
    lost = duplicated = 0
    for sample_id, version, token, _decision in rec.decisions:
        n = rows.get((sample_id, user_of[hash_token(token)], version), 0)
        lost += n == 0
        duplicated += n > 1
    return {"acknowledged_decisions": len(rec.decisions), "lost_decisions": lost, "duplicated_decisions": duplicated}


def run_backend(name: str, url: str, data_dir: str, clients: int, seconds: float, variants: int) -> dict[str, Any]:
    from tests.pg_server import free_port

    seeded = seed_backend(url, variants, clients)
    port = free_port()
    api = start_api(url, data_dir, port)
    rec = Recorder()
    try:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def all_clients() -> None:
            await asyncio.gather(
                *(
                    client_loop(
                        i,
                        f"http://127.0.0.1:{port}",
                        seeded["tokens"][i],
                        seeded["originals"],
                        deadline,
                        rec,
                        random.Random(i),
                    )
                    for i in range(clients)
                )
            )

        asyncio.run(all_clients())
        elapsed = time.perf_counter() - started
    finally:
        api.terminate()
        api.wait(30)
    total = sum(rec.status.values())
    five_xx = sum(n for (_route, code), n in rec.status.items() if code >= 500)
    routes = {
        route: {
            "requests": len(ms),
            "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(statistics.quantiles(ms, n=100)[-1], 1) if len(ms) > 1 else round(ms[0], 1),
        }
        for route, ms in sorted(rec.latency.items())
    }
    result = {
        "backend": name,
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": total,
        "requests_per_s": round(total / elapsed, 1),
        "http_5xx": five_xx,
        "transport_errors": dict(rec.errors),
        "status": {f"{route} {code}": n for (route, code), n in sorted(rec.status.items())},
        "routes": routes,
        **audit(url, rec, seeded["tokens"]),
    }
    print(
        f"\n{name}: {total} requests in {elapsed:.0f} s = {result['requests_per_s']} req/s; "
        f"5xx {five_xx}; decisions acknowledged {result['acknowledged_decisions']}, lost "
        f"{result['lost_decisions']}, duplicated {result['duplicated_decisions']}"
    )
    for route, r in routes.items():
        print(f"  {route:28s} {r['requests']:6d} req  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--variants", type=int)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    clients = args.clients or (8 if args.quick else 50)
    seconds = args.seconds or (5 if args.quick else 60)
    args.variants = args.variants or (5_000 if args.quick else 20_000)
    results = []
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        os.environ["AUGLOOP_DATA_DIR"] = tmp
        if "sqlite" in args.backends:
            results.append(run_backend("sqlite", f"sqlite:///{tmp}/load.db", tmp, clients, seconds, args.variants))
        if "postgres" in args.backends:
            from tests.pg_server import PostgresServer

            server = PostgresServer().start()
            try:
                url = server.create_database("load")
                results.append(run_backend("postgres", url, tmp, clients, seconds, args.variants))
            finally:
                server.stop()
    metrics: list[dict[str, Any]] = [
        {
            "metric": "lost_decisions",
            "value": sum(r["lost_decisions"] + r["duplicated_decisions"] for r in results),
            "target": 0,
            "unit": "decisions",
            "lower_is_better": True,
        },
        {
            "metric": "http_5xx",
            "value": sum(r["http_5xx"] for r in results),
            "target": 0,
            "unit": "responses",
            "lower_is_better": True,
        },
    ]
    for r in results:
        metrics.append(
            {"metric": f"{r['backend']}_requests_per_s", "value": r["requests_per_s"], "target": None, "unit": "req/s"}
        )
        for route, v in r["routes"].items():
            key = route.lower().replace(" ", "_").replace("(", "").replace(")", "").replace("-", "_")
            metrics.append(
                {
                    "metric": f"{r['backend']}_{key}_p50_ms",
                    "value": v["p50_ms"],
                    "target": None,
                    "unit": "ms",
                    "lower_is_better": True,
                }
            )
            metrics.append(
                {
                    "metric": f"{r['backend']}_{key}_p99_ms",
                    "value": v["p99_ms"],
                    "target": None,
                    "unit": "ms",
                    "lower_is_better": True,
                }
            )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".quick" if args.quick else ""  # never over the committed figures
    RESULTS.with_name(f"load{suffix}.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (RESULTS.parent / f"load_detail{suffix}.json").write_text(
        json.dumps(
            {
                "clients": clients,
                "seconds": seconds,
                "variants": args.variants,
                "load_average_at_end": os.getloadavg(),
                "backends": results,
            },
            indent=2,
        )
        + "\n"
    )
    acknowledged = sum(r["acknowledged_decisions"] for r in results)
    rates = ", ".join(f"{r['backend']} {r['requests_per_s']} req/s" for r in results)
    print(
        f"\nload: {rates}; "
        f"{acknowledged} acknowledged decisions, lost or duplicated: {metrics[0]['value']}; 5xx: {metrics[1]['value']}"
    )


if __name__ == "__main__":
    main()
