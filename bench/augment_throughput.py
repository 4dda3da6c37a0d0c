"""Augmentation throughput: augloop's augmenters vs nlpaug's batched `augment(list)`, same texts, same device.

Models have real sizes and random weights (speed depends on the architecture, not on the weights):
  MLM: bert-base (12 layers × 768) with mBERT's vocabulary size, 119,547 (a WordPiece vocabulary trained on
       the example data, filled up with WordNet lemmas); nlpaug ContextualWordEmbsAug(substitute, aug_p
       0.15) vs MaskedLMAugmenter (aug_p 0.15, top-k 20). `mlm_fraction_of_bare_forward`: the share of the
       augmenter's time spent in the bare model forward (encoder + vocabulary head at the masked positions)
       on its own batches, timed inside the same run; the rest is tokenising, choosing words, sampling and
       splicing.
  Back-translation: opus-mt-size Marian (6+6 layers × 512, vocabulary 58,101) en→de→en, greedy both ways, the
       same generation budget (no EOS from random weights: every text runs to it); nlpaug BackTranslationAug
       (batch 32) vs BackTranslationAugmenter (length-bucketed batches under a token budget).
  WordNet: nlpaug SynonymAug (aug_p 0.3) vs WordNetAugmenter (aug_p 0.3), caches warmed on other texts.
Texts: a seeded sample of the example dataset's train split (real lengths: tweets and long Facebook posts).
Also: the quality filters' speed vs a pure-Python n-gram-set comparison, and variants/s kept after filtering.
Targets (CPU): MLM ≥ 3× nlpaug, back-translation ≥ 1.5×, WordNet ≥ 1×, MLM ≥ 60% of the bare forward.

    .venv/bin/python bench/augment_throughput.py [--quick] [--threads 2] [--device cpu|cuda] [--models DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

from bench_env import offline_cpu

ROOT = offline_cpu()  # before torch: offline hubs, passive OpenMP (see bench_env.py)
warnings.filterwarnings("ignore")

EXAMPLE_CSV = ROOT / "examples" / "political_social_media.csv"
RESULTS = ROOT / "bench" / "results" / "augment_throughput.json"
MBERT_VOCAB = 119_547
OPUS_VOCAB = 58_101


def metric(name: str, value: float, unit: str, *, target: float | None = None, **extra: Any) -> dict[str, Any]:
    """One record of bench/results/augment_throughput.json."""
    return {"metric": name, "value": value, "target": target, "unit": unit, **extra}


def load_rows() -> list[dict[str, str]]:
    with EXAMPLE_CSV.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def build_mbert_size(out: Path) -> Path:
    """bert-base with a 119,547-entry WordPiece vocabulary: trained pieces, WordNet lemmas, then fillers."""
    if (out / "model.safetensors").is_file():
        return out
    import pydoc_data.topics

    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
    corpus = [r["text"] for r in load_rows()] + list(pydoc_data.topics.topics.values())
    wp = BertWordPieceTokenizer(lowercase=False)
    wp.train_from_iterator(
        corpus,
        vocab_size=30_000,
        min_frequency=2,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    )
    vocab = list(wp.get_vocab().items())
    tokens = [t for t, _ in sorted(vocab, key=lambda kv: kv[1])]
    seen = set(tokens)
    from workers.augment.models import ModelUnavailable
    from workers.augment.wordnet import load_wordnet
    from workers.augment.wordnet_data import nltk_data_dir

    try:
        lemmas = sorted(load_wordnet(nltk_data_dir()).all_lemma_names())
    except (ModelUnavailable, LookupError, OSError) as err:  # no WordNet: a GPU machine without nltk-data
        print(
            f"  (WordNet unavailable, {err.__class__.__name__}: the vocabulary is filled with placeholders "
            "instead of lemmas; the model's size and cost are the same)",
            flush=True,
        )
        lemmas = []
    for lemma in lemmas:
        if len(tokens) >= MBERT_VOCAB:
            break
        if lemma.isalpha() and lemma not in seen:
            tokens.append(lemma)
            seen.add(lemma)
    tokens += [f"[unused{i}]" for i in range(MBERT_VOCAB - len(tokens))]
    (out / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=False, model_max_length=512).save_pretrained(out)
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=MBERT_VOCAB)).save_pretrained(out)
    return out


def build_opus_size(out: Path) -> tuple[Path, Path]:
    if (out / "de-en" / "model.safetensors").is_file():
        return out / "en-de", out / "de-en"
    from tests.tiny_models import build_tiny_marian_pair

    return build_tiny_marian_pair(
        out, spm_vocab=8000, d_model=512, layers=6, heads=8, ffn=2048, total_vocab=OPUS_VOCAB, max_pairs=8000
    )


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def alternate(ours, theirs, rounds: int) -> tuple[float, float, list[float], list[float]]:  # type: ignore[no-untyped-def]
    """ours, theirs, ours, theirs, …: the best time of each arm. On a shared CPU the load drifts within
    seconds; interleaving and keeping each arm's least-disturbed run compares like with like."""
    t_ours: list[float] = []
    t_theirs: list[float] = []
    for _ in range(rounds):
        t_ours.append(ours())
        t_theirs.append(theirs())
    return min(t_ours), min(t_theirs), t_ours, t_theirs


def race(method: str, run_ours, nlpaug, texts: list[str], rounds: int, digits: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Our augmenter's runs (`run_ours` returns its seconds) alternated with nlpaug's on the same texts;
    prints every run and returns the best time of each."""
    t_ours, t_nl, all_ours, all_nl = alternate(run_ours, lambda: timed(lambda: nlpaug.augment(texts))[1], rounds)
    print(
        f"  {method} runs: ours {[round(t, digits) for t in all_ours]} s, nlpaug {[round(t, digits) for t in all_nl]} s"
    )
    return t_ours, t_nl


def rates(
    texts: list[str], out: list[list], t_ours: float, t_nl: float, hashes: set[str], refs: list[str]
) -> tuple[dict[str, float], float]:
    """Variants per second (ours, nlpaug's), ours kept by the filter per second of both; the filter's time."""
    kept, t_filter = kept_after_filter(texts, out, hashes, refs)
    produced = sum(len(v) for v in out)
    return {
        "ours": produced / t_ours,
        "nlpaug": len(texts) / t_nl,
        "kept": kept / (t_ours + t_filter),
    }, t_filter


def kept_after_filter(texts: list[str], variants: list[list], hashes: set[str], refs: list[str]) -> tuple[int, float]:
    from workers.augment.filters import CandidateFilter
    from workers.augment.params import FilterParams

    filt = CandidateFilter(hashes, refs, FilterParams())
    pairs = [(texts[v.source_index], v.text) for vs in variants for v in vs]
    verdicts, seconds = timed(lambda: filt.check(pairs))
    return sum(v.keep for v in verdicts), seconds


def bench_mlm(args, texts, hashes, refs, models: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import nlpaug.augmenter.word as naw
    import torch

    from core.settings import Settings
    from workers.augment.masked_lm import MaskedLMAugmenter
    from workers.augment.models import load_masked_lm
    from workers.augment.params import MaskedLMParams

    path = build_mbert_size(models / "mbert-size")
    settings = Settings(augment_device=args.device)
    ours = MaskedLMAugmenter(load_masked_lm(str(path), settings), batch_tokens=args.batch_tokens)
    # Random weights spread probability thinly: no floor, or nothing would qualify. 512 tokens, as nlpaug.
    params = MaskedLMParams(aug_p=0.15, top_k=20, min_prob=0.0, max_length=512)
    counts = [1] * len(texts)
    ours.augment(texts[:1], [1], seed=1, language="en", params=params)  # warm-up
    # The model's share of the augmenter's own time, measured inside the same run (a separate "bare" run
    # drifts with the load of a shared CPU): the vocabulary-head forward on each batch, timed as it happens.
    forward = ours.masked_logits
    in_model = [0.0]

    def timed_forward(batch):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        logits = forward(batch)
        if ours.device.type == "cuda":
            torch.cuda.synchronize()
        in_model[0] += time.perf_counter() - start
        return logits

    ours.masked_logits = timed_forward
    runs: list[tuple[float, float, list]] = []  # (seconds, model share, variants)

    def run_ours() -> float:
        in_model[0] = 0.0
        out, seconds = timed(lambda: ours.augment(texts, counts, seed=0, language="en", params=params))
        runs.append((seconds, in_model[0] / seconds, out))
        return seconds

    nl = naw.ContextualWordEmbsAug(
        model_path=str(path),
        model_type="bert",
        action="substitute",
        aug_p=0.15,
        top_k=20,
        device=args.device,
        batch_size=32,
    )
    nl.augment(texts[:1])  # warm-up
    t_ours, t_nl = race("mlm", run_ours, nl, texts, 1, 1)  # nlpaug takes ~20× longer here: one round
    _, share, out = min(runs, key=lambda r: r[0])
    ours.masked_logits = forward
    batches = ours.prepare(texts, counts, seed=0, language="en", params=params)
    rows = sum(len(b.rows) for b in batches)

    def bare() -> None:
        for b in batches:
            forward(b)
            if ours.device.type == "cuda":
                torch.cuda.synchronize()

    t_bare = min(timed(bare)[1], timed(bare)[1])
    speeds, _t_filter = rates(texts, out, t_ours, t_nl, hashes, refs)
    return {
        **speeds,
        "share": share,
        "bare": rows / t_bare,
        "words_changed": sum(len(v.edits) for vs in out for v in vs) / sum(len(v) for v in out),
        "batches": len(batches),
    }


def bench_bt(args, texts, hashes, refs, models: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import nlpaug.augmenter.word as naw

    from core.settings import Settings
    from workers.augment.back_translation import BackTranslationAugmenter
    from workers.augment.models import load_seq2seq
    from workers.augment.params import BackTranslationParams

    fwd, bwd = build_opus_size(models / "opus-size")
    settings = Settings(augment_device=args.device)
    ours = BackTranslationAugmenter(
        [{"source": "en", "pivot": "de", "forward": str(fwd), "backward": str(bwd)}],
        lambda name: load_seq2seq(name, settings),
        batch_tokens=args.batch_tokens,
    )
    # Greedy both ways and the same budget as nlpaug's max_length (which counts the decoder start token).
    params = BackTranslationParams(
        decoding="beam",
        num_beams=1,
        max_new_tokens=args.bt_tokens - 1,
        length_factor=10.0,
        max_source_tokens=512,
    )
    counts = [1] * len(texts)
    ours.augment(texts[:1], [1], seed=1, language="en", params=params)  # warm-up
    nl = naw.BackTranslationAug(
        from_model_name=str(fwd),
        to_model_name=str(bwd),
        device=args.device,
        batch_size=32,
        max_length=args.bt_tokens,
    )
    nl.augment(texts[:1])
    outputs: list[list] = []

    def run_ours() -> float:
        out, seconds = timed(lambda: ours.augment(texts, counts, seed=0, language="en", params=params))
        outputs.append(out)
        return seconds

    t_ours, t_nl = race("backtranslation", run_ours, nl, texts, args.rounds, 1)
    return rates(texts, outputs[0], t_ours, t_nl, hashes, refs)[0]


def bench_wordnet(args, texts, warm, hashes, refs) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import nlpaug.augmenter.word as naw
    import nltk

    from workers.augment.wordnet import WordNetAugmenter
    from workers.augment.wordnet_data import nltk_data_dir

    root = nltk_data_dir()
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))  # nlpaug reads WordNet and the tagger through NLTK's search path
    ours = WordNetAugmenter(root)
    nl = naw.SynonymAug(aug_src="wordnet", aug_p=0.3)
    ours.augment(warm, [1] * len(warm), seed=1, language="en")  # both warm up on other texts
    nl.augment(warm)
    outputs: list[list] = []

    def run_ours() -> float:
        ours._synonyms.clear()  # every run starts from the warm-up's cache, not from the previous run's
        ours.augment(warm, [1] * len(warm), seed=1, language="en")
        out, seconds = timed(lambda: ours.augment(texts, [1] * len(texts), seed=0, language="en"))
        outputs.append(out)
        return seconds

    t_ours, t_nl = race("wordnet", run_ours, nl, texts, args.rounds, 2)
    out = outputs[0]
    speeds, t_filter = rates(texts, out, t_ours, t_nl, hashes, refs)
    pairs = [(texts[v.source_index], v.text) for vs in out for v in vs]
    return {
        **speeds,
        "filter": len(pairs) / t_filter,
        "filter_python": python_filter_rate(pairs[: max(50, len(pairs) // 10)], refs),
    }


def python_filter_rate(pairs: list[tuple[str, str]], refs: list[str]) -> float:
    """The same leakage check written plainly: n-gram sets, compared with every val/test text."""
    from core.textnorm import normalize_text

    def grams(text: str) -> set[str]:
        t = normalize_text(text)
        return {t[i : i + 5] for i in range(len(t) - 4)}

    ref_sets = [grams(r) for r in refs]

    def run() -> None:
        for source, text in pairs:
            g = grams(text)
            s = grams(source)
            _ = len(g & s) / max(1, len(g | s))
            _ = max(len(g & r) / max(1, len(g | r)) for r in ref_sets)

    _, seconds = timed(run)
    return len(pairs) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few texts (< 1 minute once the models are built)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--models",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "augloop-bench-models",
        help="where the random real-size models are built once and reused",
    )
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--bt-tokens", type=int, default=48, help="generation budget per leg (nlpaug max_length)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each arm (best one counts)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # 4.57.6 warns of a "Mistral regex" on any saved tokenizer
    rows = load_rows()
    train = [r["text"] for r in rows if r["split"] == "train"]
    refs = [r["text"] for r in rows if r["split"] != "train"]
    from core.textnorm import content_hash

    hashes = {content_hash(r["text"]) for r in rows}
    sample = random.Random(0).sample(train, len(train))
    n_mlm, n_bt, n_wn = (4, 4, 300) if args.quick else (256, 64, 2000)
    if args.quick:
        args.bt_tokens = min(args.bt_tokens, 16)
        args.rounds = 1
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    print(f"device {args.device}, {args.threads} torch threads, load average {load_before:.2f}", flush=True)
    wn = bench_wordnet(args, sample[:n_wn], sample[-300:], hashes, refs)
    print(f"wordnet: ours {wn['ours']:.0f}/s, nlpaug {wn['nlpaug']:.0f}/s", flush=True)
    bt = bench_bt(args, sample[:n_bt], hashes, refs, args.models)
    print(f"backtranslation: ours {bt['ours']:.2f}/s, nlpaug {bt['nlpaug']:.2f}/s", flush=True)
    mlm = bench_mlm(args, sample[:n_mlm], hashes, refs, args.models)
    print(
        f"mlm: ours {mlm['ours']:.2f}/s, nlpaug {mlm['nlpaug']:.2f}/s, "
        f"model forward {mlm['share']:.0%} of the augmenter's time "
        f"(bare forward alone {mlm['bare']:.2f} rows/s, {mlm['batches']} batches), "
        f"{mlm['words_changed']:.1f} words changed per variant",
        flush=True,
    )
    load_after = os.getloadavg()[0]
    results = [
        metric("mlm_speedup_vs_nlpaug", round(mlm["ours"] / mlm["nlpaug"], 2), "x", target=3),
        metric("backtranslation_speedup_vs_nlpaug", round(bt["ours"] / bt["nlpaug"], 2), "x", target=1.5),
        metric("wordnet_speedup_vs_nlpaug", round(wn["ours"] / wn["nlpaug"], 2), "x", target=1.0),
        metric("mlm_fraction_of_bare_forward", round(mlm["share"], 3), "fraction", target=0.6),
        metric("mlm_bare_forward_rows_per_s", round(mlm["bare"], 2), "rows/s"),
    ]
    for method, rates, digits in (("mlm", mlm, 2), ("backtranslation", bt, 2), ("wordnet", wn, 1)):
        results += [
            metric(f"{method}_variants_per_s", round(rates["ours"], digits), "variants/s"),
            metric(f"{method}_nlpaug_variants_per_s", round(rates["nlpaug"], digits), "variants/s"),
            metric(f"{method}_kept_after_filter_per_s", round(rates["kept"], digits), "variants/s"),
        ]
    results += [
        metric("filter_candidates_per_s", round(wn["filter"], 1), "candidates/s"),
        metric("filter_speedup_vs_python_sets", round(wn["filter"] / wn["filter_python"], 1), "x"),
        metric("torch_threads", args.threads, "threads"),
        metric(
            "cpu_load_average_during_run",
            round((load_before + load_after) / 2, 2),
            "load",
            lower_is_better=True,
        ),
    ]
    for r in results[4:]:
        print(f"  {r['metric']}: {r['value']} {r['unit']}")
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"({time.perf_counter() - started:.0f} s; {args.device}, {args.threads} threads, load average "
        f"{load_before:.2f} → {load_after:.2f}{'; --quick: results not written' if args.quick else ''})"
    )
    print(
        " · ".join(
            f"{r['metric']} {r['value']}{r['unit'] if r['unit'] == 'x' else ''} (target {r['target']})"
            for r in results[:4]
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
