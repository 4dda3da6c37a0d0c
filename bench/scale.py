"""Scale: an import of a million rows, an augment job over a million-row dataset, the leak guard at a million
references (issue 17). Each measurement runs in a process of its own, whose peak RSS is the figure.

- import: 1,000,000 synthetic posts (bench/synthetic.py: example-like text, 1% retweets/quotes, three tasks, no
  split column, so augloop draws a 90/5/5 split and keeps near-duplicate groups together), through
  services.importing.import_path (what `augloop import` and import jobs run), into SQLite and into Postgres (a
  throwaway cluster as the tests start it: tests/pg_server.py, fsync off). Wall time, peak RSS of the importing
  process (target ≤ 2 GB), and on SQLite how long the switch held the write lock;
- augment job: 2,000 train posts × 2 WordNet variants, queued as the API queues it and run by an in-process
  worker, over the SQLite dataset just imported (1,000,000 rows, 100,000 val/test): peak RSS and kept variants
  per second of the job's wall time (reading, indexing val/test, generating, filtering, inserting);
- leak guard: ReferenceIndex.best (anchors, lookups, exact scores of the candidates) for 5,000 candidates
  (one-word variants of unseen posts, and 100 retweets of references that it must find), at 10k, 100k and 1M
  references: µs per candidate (target at 1M ≤ 3× at 10k), beside the exact sparse product at 10k and 100k.

- DDP: the same run (a tiny random BERT, 800 example posts, two tasks, 4 epochs) trained by one process at
  batch 16 and by two gloo processes at batch 8 each (trainer/distributed.py under torchrun): the largest gap
  between their per-epoch training losses, and their final val macro-F1; without dropout (the arithmetic:
  the curves must agree to rounding) and with it (each rank draws its own dropout masks, so the runs differ
  as two runs with different masks do).

    .venv/bin/python bench/scale.py            # ~15 min on 2 shared cores; writes bench/results/scale.json
    .venv/bin/python bench/scale.py --quick    # 10k rows on SQLite, 1k and 20k references: a minute, writes nothing
    .venv/bin/python bench/scale.py --only ddp # the DDP comparison alone (~2 min), merged into scale.json
    .venv/bin/python bench/scale.py --only leak # the leak guard at 10k/100k/1M references alone (~5 min), merged
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
RESULTS = ROOT / "bench" / "results" / "scale.json"
TASKS = ["bias", "message", "audience"]
FRACTIONS = (0.9, 0.05, 0.05)
RSS_TARGET_MB = 2048


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# Children: one measurement each, printing one JSON line --------------------------------------------------------


def child_import(task: dict[str, Any]) -> dict[str, Any]:
    from db.session import get_engine
    from services.importing import ImportSpec, import_path

    engine = get_engine(task["db"])
    started = time.monotonic()
    phases: dict[str, float] = {}

    def progress(phase: str, done: int, total: int, rows: int) -> None:
        phases.setdefault(phase, time.monotonic() - started)

    result = import_path(
        engine,
        Path(task["file"]),
        ImportSpec(dataset="scale", tasks=TASKS, split_fractions=FRACTIONS),
        progress=progress,
    )
    seconds = time.monotonic() - started
    return {
        "seconds": round(seconds, 1),
        "phases": {k: round(v, 1) for k, v in phases.items()},
        "switch_seconds": round(seconds - phases["writing"], 1),
        "imported": result.imported,
        "near_duplicate_groups": result.split_info.get("near_duplicates_kept_together"),
        "split_counts": result.split_counts,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_augment(task: dict[str, Any]) -> dict[str, Any]:
    from sqlalchemy import func, select

    from core.settings import get_settings
    from db.models import Job, Sample
    from db.session import get_engine, session_scope
    from services.augmentation import AugmentRequest, enqueue_request
    from services.datasets import dataset_named
    from workers.main import Worker

    engine = get_engine(task["db"])
    with session_scope(engine) as s:
        dataset = dataset_named(s, "scale", None)
        ids = list(
            s.scalars(
                select(Sample.id)
                .where(Sample.dataset_id == dataset.id, Sample.split == "train")
                .order_by(Sample.id)
                .limit(task["sources"])
            )
        )
        references = s.scalar(
            select(func.count())
            .select_from(Sample)
            .where(Sample.dataset_id == dataset.id, Sample.split.in_(["val", "test"]))
        )
        rows = s.scalar(select(func.count()).select_from(Sample).where(Sample.dataset_id == dataset.id))
        job_id = enqueue_request(
            s, dataset, AugmentRequest(methods=["wordnet"], n_per_text=2, seed=1, sample_ids=ids), get_settings(), None
        ).id
    started = time.monotonic()
    stats = Worker(engine, kinds=["augment"], poll_seconds=0.05, lease_seconds=120).run(burst=True)
    seconds = time.monotonic() - started
    with session_scope(engine) as s:
        job = s.get_one(Job, job_id)
        result, status, error = job.result or {}, job.status, job.last_error
    if stats.succeeded != 1:
        raise RuntimeError(f"augment job {status}: {error}")
    return {
        "seconds": round(seconds, 1),
        "kept": result["kept"],
        "dropped": result["dropped"],
        "kept_per_s": round(result["kept"] / seconds, 1),
        "dataset_rows": rows,
        "references": references,
        "peak_rss_mb": peak_rss_mb(),
    }


def _one_word_changed(text: str, rng: random.Random) -> str:
    words = text.split()
    words[rng.randrange(len(words))] = "tremendous"
    return " ".join(words)


def child_leak(task: dict[str, Any]) -> dict[str, Any]:
    from itertools import islice

    from synthetic import posts

    from core.near_duplicates import ReferenceIndex
    from core.ngrams import NgramIndex, pair_scores

    n_refs, n_candidates = task["refs"], task["candidates"]
    rng = random.Random(7)
    refs = list(posts(n_refs, seed=1))
    planted = rng.sample(range(n_refs), 100)
    candidates = [_one_word_changed(p, rng) for p in islice(posts(n_candidates - 100, seed=2), n_candidates - 100)]
    candidates += [_one_word_changed(f"RT @someone: {refs[i]}", rng) for i in planted]
    started = time.monotonic()
    index = ReferenceIndex(0.7).fit(refs)
    build = time.monotonic() - started
    ngrams = NgramIndex(5)
    batches = [candidates[i : i + 320] for i in range(0, len(candidates), 320)]  # a job's batch of candidates
    vectors = [ngrams.vectors(b) for b in batches]
    found, took, cpu = [], 0.0, 0.0
    for batch, (vec, sizes) in zip(batches, vectors, strict=True):
        t, c = time.monotonic(), time.process_time()
        matches = index.best(batch, vec, sizes)
        took += time.monotonic() - t
        cpu += time.process_time() - c
        found.extend(matches.containment.tolist())
    # The planted retweets that are leaks by the exact measure (a word changed in a short post can take it
    # under the threshold), and how many of them the guard drops (naming that reference, or another that
    # holds the same text: the synthetic references include retweets of each other).
    vec, sizes = ngrams.vectors(candidates[-100:])
    ref_vec, ref_sizes = ngrams.vectors([refs[i] for i in planted])
    rows = list(range(100))
    _, containment, _ = pair_scores(vec, sizes, rows, ref_vec, ref_sizes, rows)
    leaks = [k for k in rows if containment[k] >= 0.7]
    hits = sum(1 for k in leaks if found[n_candidates - 100 + k] >= containment[k] - 1e-9)
    out = {
        "refs": n_refs,
        "build_seconds": round(build, 1),
        "us_per_candidate": round(took / n_candidates * 1e6, 1),
        "cpu_us_per_candidate": round(cpu / n_candidates * 1e6, 1),
        "planted_leaks": len(leaks),
        "planted_found": hits,
        "peak_rss_mb": peak_rss_mb(),
    }
    if task.get("exact"):
        exact = NgramIndex(5).fit(refs)
        t = time.monotonic()
        for vec, sizes in vectors:
            exact.best(vec, sizes)
        out["exact_us_per_candidate"] = round((time.monotonic() - t) / n_candidates * 1e6, 1)
    return out


def child_ddp(task: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="augloop-ddp-") as folder:  # its encoder and job files go with it
        return ddp_in(Path(folder), task)


def ddp_in(tmp: Path, task: dict[str, Any]) -> dict[str, Any]:
    import csv

    from tests.tiny_models import EXAMPLE_CSV, build_tiny_bert_mlm
    from trainer.config import TrainConfig
    from trainer.distributed import PROGRESS_FILE, launch_command, write_request
    from trainer.examples import Example, SplitData, TaskSpec
    from trainer.train import train_model

    encoder = str(build_tiny_bert_mlm(tmp / "encoder"))
    if not task["dropout"]:  # no random masks: one process and two must agree to rounding
        config_path = tmp / "encoder" / "config.json"
        encoder_config = json.loads(config_path.read_text())
        encoder_config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        config_path.write_text(json.dumps(encoder_config))
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tasks = [
        TaskSpec("bias", sorted({r["bias"] for r in rows})),
        TaskSpec("message", sorted({r["message"] for r in rows})),
    ]

    def examples(split: str, n: int) -> list[Example]:
        chosen = [r for r in rows if r["split"] == split][:n]
        return [
            Example(r["text"], {"bias": r["bias"], "message": r["message"]}, i, r["id"]) for i, r in enumerate(chosen)
        ]

    data = SplitData(tasks, examples("train", task["train"]), examples("val", 200), examples("test", 200), "ddp")
    base = {
        "encoder": encoder,
        "epochs": task.get("epochs", 4),
        "max_length": 64,
        "head_hidden": 64,
        "grad_accum": 1,
        "lr": 3e-3,
        "warmup_ratio": 0.1,
        "patience": 0,
        "rdrop_alpha": 0.0,
        "eval_batch_size": 64,
        **({} if task["dropout"] else {"head_dropout": 0.0}),
    }
    started = time.monotonic()
    one = train_model(TrainConfig.from_dict({**base, "batch_size": 16, "num_threads": 2}), data)
    one_seconds = time.monotonic() - started
    job = tmp / "job"
    write_request(job, TrainConfig.from_dict({**base, "batch_size": 8, "nproc": 2}).to_dict(), data)
    started = time.monotonic()
    done = subprocess.run(launch_command(job, 2), capture_output=True, text=True, check=False, timeout=900)
    two_seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-3000:])
    events = [json.loads(line) for line in (job / PROGRESS_FILE).read_text().splitlines()]
    two = [e for e in events if e["event"] == "epoch"]
    gaps = [abs(a["train_loss"] - b["train_loss"]) for a, b in zip(one.curve, two, strict=True)]
    return {
        "single_loss": [round(e["train_loss"], 4) for e in one.curve],
        "ddp_loss": [round(e["train_loss"], 4) for e in two],
        "max_loss_gap": round(max(gaps), 4),
        "max_relative_loss_gap": round(max(g / a["train_loss"] for g, a in zip(gaps, one.curve, strict=True)), 4),
        "single_val_macro_f1": round(one.curve[-1]["val_macro_f1"], 4),
        "ddp_val_macro_f1": round(two[-1]["val_macro_f1"], 4),
        "single_seconds": round(one_seconds, 1),
        "ddp_seconds_with_startup": round(two_seconds, 1),
    }


CHILDREN = {"import": child_import, "augment": child_augment, "leak": child_leak, "ddp": child_ddp}
DDP_TRAIN_TEXTS = 800


def ddp_records(env: dict[str, str], quick: bool = False) -> list[dict[str, Any]]:
    """Two processes against one, without dropout (they must agree to rounding) and with it; `quick`: the first
    alone, on a quarter of the texts (the quick run's minute)."""
    if quick:
        exact = run_child({"task": "ddp", "train": DDP_TRAIN_TEXTS // 4, "dropout": False, "epochs": 2}, env)
        gap = record(
            "ddp_2proc_no_dropout_train_loss_max_relative_gap_vs_single", exact["max_relative_loss_gap"], 1e-3, "×"
        )
        return [gap]
    exact = run_child({"task": "ddp", "train": DDP_TRAIN_TEXTS, "dropout": False}, env)
    ddp = run_child({"task": "ddp", "train": DDP_TRAIN_TEXTS, "dropout": True}, env)
    return [
        record("ddp_2proc_no_dropout_train_loss_max_relative_gap_vs_single", exact["max_relative_loss_gap"], 1e-3, "×"),
        record(
            "ddp_2proc_no_dropout_final_val_macro_f1_gap",
            round(abs(exact["ddp_val_macro_f1"] - exact["single_val_macro_f1"]), 4),
            None,
            "F1",
        ),
        record("ddp_2proc_train_loss_max_gap_vs_single", ddp["max_loss_gap"], None, "loss"),
        record("ddp_2proc_train_loss_max_relative_gap_vs_single", ddp["max_relative_loss_gap"], None, "×"),
        record("ddp_2proc_final_val_macro_f1", ddp["ddp_val_macro_f1"], None, "F1", None),
        record("ddp_single_process_final_val_macro_f1", ddp["single_val_macro_f1"], None, "F1", None),
        record("ddp_2proc_seconds_with_startup", ddp["ddp_seconds_with_startup"], None, "s"),
        record("ddp_single_process_seconds", ddp["single_seconds"], None, "s"),
    ]


def leak_records(leak: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per reference count: the guard's cost per candidate (wall and CPU time), its index, what it found; then
    how its cost grows from the fewest references to the most (CPU time: on a shared machine the wall clock
    also counts the other jobs)."""
    out: list[dict[str, Any]] = []
    for result in leak:
        n = f"{result['refs'] // 1000}k" if result["refs"] < 1_000_000 else "1m"
        out.append(record(f"leak_guard_us_per_candidate_{n}", result["us_per_candidate"], None, "µs"))
        if "cpu_us_per_candidate" in result:
            out.append(record(f"leak_guard_cpu_us_per_candidate_{n}", result["cpu_us_per_candidate"], None, "µs"))
        out.append(record(f"leak_guard_index_build_seconds_{n}", result["build_seconds"], None, "s"))
        out.append(record(f"leak_guard_index_peak_rss_mb_{n}", result["peak_rss_mb"], None, "MB"))
        found, planted = result["planted_found"], result["planted_leaks"]
        out.append(record(f"leak_guard_planted_leaks_found_{n}", found, planted, f"of {planted}", False))
        if "exact_us_per_candidate" in result:
            out.append(record(f"exact_guard_us_per_candidate_{n}", result["exact_us_per_candidate"], None, "µs"))
    key = "cpu_us_per_candidate" if all("cpu_us_per_candidate" in r for r in leak) else "us_per_candidate"
    out.append(record("leak_guard_cost_largest_over_smallest", round(leak[-1][key] / leak[0][key], 2), 3.0, "×"))
    wall = round(leak[-1]["us_per_candidate"] / leak[0]["us_per_candidate"], 2)
    out.append(record("leak_guard_wall_cost_largest_over_smallest", wall, None, "×"))
    return out


def merge_into(path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The committed records with `new` in place of same-named ones, before the headline (the last record)."""
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    names = {r["metric"] for r in new}
    kept = [r for r in old if r["metric"] not in names]
    return [*kept[:-1], *new, *kept[-1:]] if kept else new


def run_child(task: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one measurement in a fresh process; its JSON line back."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(task)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{task['task']} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {task['task']}: {result}", flush=True)
    return result


# The run ---------------------------------------------------------------------------------------------------------


def record(
    metric: str, value: float, target: float | None, unit: str, lower_is_better: bool | None = True
) -> dict[str, Any]:
    out: dict[str, Any] = {"metric": metric, "value": value, "target": target, "unit": unit}
    if lower_is_better is not None:
        out["lower_is_better"] = lower_is_better
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k rows on SQLite, 1k/20k references (a minute)")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", choices=["ddp", "leak"], help="one measurement, merged into the committed results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        task = json.loads(args.child)
        print(json.dumps(CHILDREN[task["task"]](task)))
        return
    bench_env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if args.only:
        load_before = os.getloadavg()[0]
        if args.only == "ddp":
            new = ddp_records(bench_env)
        else:
            new = leak_records(
                [
                    run_child({"task": "leak", "refs": n, "candidates": 5_000, "exact": n <= 100_000}, bench_env)
                    for n in (10_000, 100_000, 1_000_000)
                ]
            )
        new.append(record(f"{args.only}_load_average_1m_before", round(load_before, 2), None, "", None))
        new.append(record(f"{args.only}_load_average_1m_after", round(os.getloadavg()[0], 2), None, "", None))
        for r in new:
            print(f"{r['metric']}  {r['value']} {r['unit']}" + (f"  (target {r['target']})" if r["target"] else ""))
        args.out.write_text(
            json.dumps(merge_into(args.out, new), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        print(f"merged into {args.out} ({platform.node()})")
        return

    rows = args.rows or (10_000 if args.quick else 1_000_000)
    ref_sizes = (1_000, 20_000) if args.quick else (10_000, 100_000, 1_000_000)
    sources = 50 if args.quick else 2_000
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="augloop-scale-"))
    try:
        measure(args, bench_env, rows, ref_sizes, sources, load_before, tmp)
    finally:  # each run left its synthetic CSV and databases (40 MB quick, gigabytes in full) behind
        shutil.rmtree(tmp, ignore_errors=True)


def measure(
    args: argparse.Namespace,
    bench_env: dict[str, str],
    rows: int,
    ref_sizes: tuple[int, ...],
    sources: int,
    load_before: float,
    tmp: Path,
) -> None:
    from synthetic import write_csv

    print(f"{rows:,} synthetic rows → {tmp}", flush=True)
    started = time.monotonic()
    csv_path = write_csv(tmp / "synthetic.csv", rows)
    print(f"  written in {time.monotonic() - started:.0f} s ({csv_path.stat().st_size / 1e6:.0f} MB)", flush=True)
    records: list[dict[str, Any]] = []

    sqlite_url = f"sqlite:///{tmp / 'scale.db'}"
    env = {
        "AUGLOOP_DATA_DIR": str(tmp),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    sqlite = run_child({"task": "import", "db": sqlite_url, "file": str(csv_path)}, env)

    from tests.pg_server import PostgresServer, pg_bin

    postgres = None
    if args.quick:  # a minute: the Postgres server's start and a second import are the full run's
        print("  postgres: not in a quick run", flush=True)
    elif pg_bin() is not None:
        server = PostgresServer().start()
        try:
            postgres = run_child({"task": "import", "db": server.create_database("scale"), "file": str(csv_path)}, env)
        finally:
            server.stop()
    else:
        print("  postgres: server binaries not installed (make system-deps); skipped", flush=True)

    augment = run_child({"task": "augment", "db": sqlite_url, "sources": sources}, env)
    candidates = 2_000 if args.quick else 5_000
    leak = [
        run_child({"task": "leak", "refs": n, "candidates": candidates, "exact": n <= 100_000}, env) for n in ref_sizes
    ]
    ddp = ddp_records(bench_env, args.quick)
    load_after = os.getloadavg()[0]

    label = f"{rows // 1000}k" if rows < 1_000_000 else f"{rows // 1_000_000}m"
    records += [
        record(f"import_sqlite_{label}_seconds", sqlite["seconds"], None, "s"),
        record(f"import_sqlite_{label}_switch_seconds", sqlite["switch_seconds"], None, "s"),
    ]
    if postgres:
        records += [
            record(f"import_postgres_{label}_seconds", postgres["seconds"], None, "s"),
            record(f"import_postgres_{label}_peak_rss_mb", postgres["peak_rss_mb"], RSS_TARGET_MB, "MB"),
        ]
    records += [
        record("near_duplicate_groups_kept_together", sqlite["near_duplicate_groups"], None, "groups", None),
        record("augment_job_peak_rss_mb", augment["peak_rss_mb"], RSS_TARGET_MB, "MB"),
        record("augment_job_kept_variants_per_s", augment["kept_per_s"], None, "variants/s", False),
        record("augment_job_dataset_rows", augment["dataset_rows"], None, "rows", None),
        record("augment_job_val_test_references", augment["references"], None, "texts", None),
    ]
    records += leak_records(leak)
    records += ddp
    records += [
        record("load_average_1m_before", round(load_before, 2), None, "", None),
        record("load_average_1m_after", round(load_after, 2), None, "", None),
        record("cpu_count", os.cpu_count() or 0, None, "cores", None),
        record(f"import_sqlite_{label}_peak_rss_mb", sqlite["peak_rss_mb"], RSS_TARGET_MB, "MB"),  # headline
    ]
    width = max(len(r["metric"]) for r in records)
    for r in records:
        target = f"  (target {r['target']})" if r["target"] is not None else ""
        print(f"{r['metric']:<{width}}  {r['value']} {r['unit']}{target}")
    if not args.quick and args.rows is None:
        args.out.write_text(json.dumps(records, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"written to {args.out} ({platform.node()})")


if __name__ == "__main__":
    main()
