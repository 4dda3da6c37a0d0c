"""Near-duplicate detection by character n-grams: Jaccard similarity and containment against a reference set.

Texts are normalised (core.textnorm) and their character n-grams hashed into binary vectors of N_FEATURES
buckets (a polynomial rolling hash over the code points, mixed by splitmix64's finaliser: the whole batch in a
few numpy operations, and the same hash the anchors of core/near_duplicates.py are made of); a batch of queries
meets every reference in one sparse matrix product. Two measures, because they catch different copies:
- Jaccard (shared / union) is high when two texts are nearly the same text;
- containment (shared / the smaller text's n-grams, the overlap coefficient) is high when one text lies inside
  the other: a retweet or quote of a test tweet, a test text with a sentence added. Jaccard misses those (a
  one-word variant of "RT @user: <test tweet>" scores ~0.66). Containment counts only when the smaller text has
  at least MIN_CONTAINED n-grams: a short stock phrase ("Happy New Year!") inside a long post is no leak.
Used by the augmentation leak guard (workers.augment.filters) and by the importer's near-duplicate groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.textnorm import normalize_text

MIN_CONTAINED = 25  # n-grams of the smaller text (about 30 characters at n=5) for containment to count
# Pairs sharing fewer n-grams than this are never near-duplicates worth reporting (≥ 0.8 of a text of at least
# 10 n-grams); dropping them before any arithmetic keeps a product with millions of incidental overlaps
# (" the ", "https") cheap. Shorter texts are left to the exact-duplicate hash.
MIN_SHARED = 8


@dataclass
class Matches:
    """Per query row: the best Jaccard and its reference, the best containment and its reference (-1: none);
    and a reference with the same words (core.textnorm.same_words_key: only case, spacing, punctuation or
    symbols differ), -1 where none or not asked: the short texts n-grams leave to exact matches."""

    jaccard: np.ndarray
    jaccard_ref: np.ndarray
    containment: np.ndarray
    containment_ref: np.ndarray
    same_words_ref: np.ndarray | None = None

    def same_words(self, i: int) -> int:
        """Row i's reference with the same words, or -1."""
        return -1 if self.same_words_ref is None else int(self.same_words_ref[i])


N_FEATURES = 2**20  # buckets of the hashed n-grams
PRIME = np.uint64(1_000_003)


def mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: the polynomial hash's bits spread over all 64 (numpy wraps uint64 on overflow)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        mixed: np.ndarray = h ^ (h >> np.uint64(31))
        return mixed


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of arange(starts[i], starts[i] + lengths[i])."""
    total = int(lengths.sum())
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)


@dataclass
class CodePoints:
    """The normalised texts' code points, concatenated (uint64, for the rolling hash), and where each starts."""

    codes: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, texts: Sequence[str]) -> CodePoints:
        normalised = [normalize_text(t) for t in texts]
        lengths = np.fromiter((len(t) for t in normalised), dtype=np.int64, count=len(normalised))
        codes = np.frombuffer("".join(normalised).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        return cls(codes, np.cumsum(lengths) - lengths, lengths)

    def rolling(self, n: int, h: np.ndarray | None = None, done: int = 0) -> np.ndarray:
        """The polynomial hash (not yet mixed) of every n consecutive code points, across text boundaries too;
        `h`, where given, holds that of the first `done` < n of them, to continue from."""
        m = max(len(self.codes) - n + 1, 0)
        out = np.zeros(m, dtype=np.uint64) if h is None else h[:m]
        with np.errstate(over="ignore"):
            for k in range(done, n):
                out = out * PRIME + self.codes[k : k + m]
        return out

    def grams(self, raw: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Each text's n-grams from rolling(n): CSR (indptr, 32-bit hashes in text order, repeats kept)."""
        per_text = np.maximum(self.lengths - n + 1, 0)
        hashes = (mix64(raw[ranges(self.starts, per_text)]) >> np.uint64(32)).astype(np.uint32)
        return np.r_[0, np.cumsum(per_text)].astype(np.int64), hashes


def distinct_buckets(indptr: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each text's distinct buckets (hash mod N_FEATURES), sorted: the columns of its binary n-gram vector."""
    packed = np.repeat(np.arange(len(indptr) - 1, dtype=np.uint64), np.diff(indptr))
    packed <<= np.uint64(32)
    packed |= hashes & np.uint32(N_FEATURES - 1)
    packed.sort()
    if len(packed):
        packed = packed[np.r_[True, packed[1:] != packed[:-1]]]
    text = (packed >> np.uint64(32)).astype(np.int64)
    buckets = (packed & np.uint64(0xFFFFFFFF)).astype(np.int32)
    return np.searchsorted(text, np.arange(len(indptr))).astype(np.int64), buckets


class NgramIndex:
    """Character n-gram sets of reference texts, compared with batches of queries."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.matrix: Any = None
        self.sizes: np.ndarray = np.zeros(0)

    def vectors(self, texts: Sequence[str]) -> tuple[Any, np.ndarray]:
        """Binary n-gram vectors (CSR, float32, one row a text) and each text's number of distinct buckets."""
        from scipy.sparse import csr_matrix

        points = CodePoints.of(texts)
        indptr, buckets = distinct_buckets(*points.grams(points.rolling(self.n), self.n))
        data = np.ones(len(buckets), dtype=np.float32)
        matrix = csr_matrix((data, buckets, indptr), shape=(len(indptr) - 1, N_FEATURES))
        return matrix, np.diff(indptr).astype(np.float64)

    def fit(self, texts: Sequence[str]) -> NgramIndex:
        if texts:
            matrix, self.sizes = self.vectors(texts)
            self.matrix = matrix.T.tocsr()  # features × references: one sparse product per batch
        return self

    def pairs(self, queries: Any, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every (query row, reference, Jaccard, containment) that shares at least MIN_SHARED n-grams."""
        if self.matrix is None or queries.shape[0] == 0:
            empty = np.zeros(0)
            return empty.astype(int), empty.astype(int), empty, empty
        shared = (queries @ self.matrix).tocsr()  # queries × references: shared n-gram counts
        keep = shared.data >= MIN_SHARED
        rows = np.repeat(np.arange(shared.shape[0]), np.diff(shared.indptr))[keep]
        refs = shared.indices[keep]
        jaccard, containment = _scores(shared.data[keep].astype(np.float64), sizes[rows], self.sizes[refs])
        return rows, refs, jaccard, containment

    def best(self, queries: Any, sizes: np.ndarray) -> Matches:
        return best_per_row(queries.shape[0], *self.pairs(queries, sizes))

    def max_jaccard(self, queries: Any, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query row: the highest Jaccard similarity with any reference, and which reference."""
        found = self.best(queries, sizes)
        return found.jaccard, found.jaccard_ref


def _scores(inter: np.ndarray, a_sizes: np.ndarray, b_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    jaccard = inter / np.maximum(a_sizes + b_sizes - inter, 1)
    smaller = np.minimum(a_sizes, b_sizes)
    containment = np.where(smaller >= MIN_CONTAINED, inter / np.maximum(smaller, 1), 0.0)
    return jaccard, containment


def pair_scores(
    a: Any,
    a_sizes: np.ndarray,
    a_rows: np.ndarray,
    b: Any,
    b_sizes: np.ndarray,
    b_rows: np.ndarray,
    min_shared: int = MIN_SHARED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jaccard and containment of row a_rows[i] of `a` with row b_rows[i] of `b`, and whether the pair shares
    at least `min_shared` n-grams (fewer: an incidental overlap, never reported)."""
    if not len(a_rows):
        empty = np.zeros(0)
        return empty, empty, empty.astype(bool)
    inter = np.asarray(a[a_rows].multiply(b[b_rows]).sum(axis=1), dtype=np.float64).ravel()
    jaccard, containment = _scores(inter, a_sizes[a_rows], b_sizes[b_rows])
    return jaccard, containment, inter >= min_shared


def best_per_row(
    n_rows: int, rows: np.ndarray, refs: np.ndarray, jaccard: np.ndarray, containment: np.ndarray
) -> Matches:
    """Per row: its best Jaccard and containment among the given (row, reference) pairs, and which reference."""
    out = Matches(np.zeros(n_rows), np.full(n_rows, -1), np.zeros(n_rows), np.full(n_rows, -1))
    for score, best, where in (
        (jaccard, out.jaccard, out.jaccard_ref),
        (containment, out.containment, out.containment_ref),
    ):
        if score.size == 0:
            continue
        # Sort by (row, score, -reference) and take each row's last entry: its maximum, the first reference
        # among equals, without a Python loop.
        order = np.lexsort((-np.asarray(refs), score, rows))
        last = np.r_[rows[order][1:] != rows[order][:-1], True]
        top = order[last]
        keep = score[top] > 0
        best[rows[top][keep]] = score[top][keep]
        where[rows[top][keep]] = refs[top][keep]
    return out


def pairwise_jaccard(a: Any, a_sizes: np.ndarray, b: Any, b_sizes: np.ndarray) -> np.ndarray:
    """Jaccard similarity of row i of `a` with row i of `b` (same shapes)."""
    inter = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    union = a_sizes + b_sizes - inter
    jaccard: np.ndarray = np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)
    return jaccard
