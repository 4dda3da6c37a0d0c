"""Synthetic posts at any scale, for bench/scale.py.

Each post walks a word-bigram chain learnt from the example dataset's 5,000 posts (so its n-grams look like
the example's), with half of its words swapped for made-up words from a 300,000-word vocabulary (a corpus of a
million posts has that many word types; the example alone would repeat its phrases far more than real text
does), a hashtag or a t.co link in half of them, and 1% near-copies of an earlier post (a retweet, or a quote
with a comment): the near-duplicates the importer must keep in one split. Labels: three tasks shaped like the
example's (one rare class in ten). Deterministic under a seed.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "political_social_media.csv"
SYLLABLES = [
    "ba",
    "ce",
    "di",
    "fo",
    "gu",
    "ha",
    "je",
    "ki",
    "lo",
    "mu",
    "na",
    "pe",
    "ri",
    "so",
    "tu",
    "va",
    "we",
    "xi",
    "yo",
    "za",
    "an",
    "er",
    "in",
    "on",
    "ur",
    "st",
    "tr",
    "pl",
    "ch",
    "sh",
]
TASKS = {
    "bias": (["neutral", "partisan"], [3, 1]),
    "message": (
        ["policy", "personal", "support", "information", "attack", "media", "constituency", "mobilization", "other"],
        [30, 15, 15, 12, 8, 8, 5, 4, 3],
    ),
    "audience": (["national", "constituency"], [3, 1]),
}


def posts(n: int, seed: int = 0) -> Iterator[str]:
    rng = random.Random(seed)
    with EXAMPLE.open(encoding="utf-8", newline="") as fh:
        corpus = [row["text"].split() for row in csv.DictReader(fh)]
    starts = [words[0] for words in corpus if words]
    following: dict[str, list[str]] = {}
    for words in corpus:
        for a, b in pairwise(words):
            following.setdefault(a, []).append(b)
    vocab = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))) for _ in range(300_000)]
    recent: list[str] = []
    for i in range(n):
        if recent and rng.random() < 0.01:
            source = rng.choice(recent)
            post = (
                f"RT @user{rng.randrange(10**6)}: {source}"
                if rng.random() < 0.5
                else f'"{source}" Proud to stand with my colleagues on this.'
            )
        else:
            words = [rng.choice(starts)]
            length = rng.randint(6, 30)
            while len(words) < length:
                nxt = following.get(words[-1])
                words.append(rng.choice(nxt) if nxt and rng.random() < 0.5 else rng.choice(vocab))
            if rng.random() < 0.5:
                tag = f"#{rng.choice(vocab)}" if rng.random() < 0.5 else f"https://t.co/{rng.getrandbits(40):010x}"
                words.insert(rng.randrange(len(words)), tag)
            post = " ".join(words)
        if len(recent) < 10_000:
            recent.append(post)
        else:
            recent[i % 10_000] = post
        yield post


def write_csv(path: Path, n: int, seed: int = 0) -> Path:
    """n posts with an id and the three tasks' labels, no split column (augloop draws the split)."""
    rng = random.Random(seed + 1)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", *TASKS])
        for i, post in enumerate(posts(n, seed)):
            writer.writerow([f"s{i}", post, *(rng.choices(labels, weights)[0] for labels, weights in TASKS.values())])
    return path
