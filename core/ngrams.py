"""Near-duplicate detection by character n-grams: Jaccard similarity and containment against a reference set.

Texts are normalised (core.textnorm) and hashed into binary character n-gram vectors (scikit-learn's
HashingVectorizer, 2^20 buckets); a batch of queries meets every reference in one sparse matrix product. Two
measures, because they catch different copies:
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
    """Per query row: the best Jaccard and its reference, the best containment and its reference (-1: none)."""

    jaccard: np.ndarray
    jaccard_ref: np.ndarray
    containment: np.ndarray
    containment_ref: np.ndarray


class NgramIndex:
    """Character n-gram sets of reference texts, compared with batches of queries."""

    def __init__(self, n: int) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n = n
        self.vectorizer = HashingVectorizer(
            analyzer="char",
            ngram_range=(n, n),
            n_features=2**20,
            alternate_sign=False,
            norm=None,
            binary=True,
            lowercase=False,
            preprocessor=normalize_text,
            dtype=np.float32,
        )
        self.matrix: Any = None
        self.sizes: np.ndarray = np.zeros(0)

    def vectors(self, texts: Sequence[str]) -> tuple[Any, np.ndarray]:
        matrix = self.vectorizer.transform(list(texts)).tocsr()
        return matrix, np.asarray(matrix.sum(axis=1)).ravel()

    def fit(self, texts: Sequence[str]) -> NgramIndex:
        if texts:
            matrix, self.sizes = self.vectors(texts)
            self.matrix = matrix.T.tocsr()  # features × references: one sparse product per batch
        return self

    def pairs(self, queries: Any, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every (query row, reference, Jaccard, containment) that shares at least one n-gram."""
        if self.matrix is None or queries.shape[0] == 0:
            empty = np.zeros(0)
            return empty.astype(int), empty.astype(int), empty, empty
        shared = (queries @ self.matrix).tocsr()  # queries × references: shared n-gram counts
        keep = shared.data >= MIN_SHARED
        rows = np.repeat(np.arange(shared.shape[0]), np.diff(shared.indptr))[keep]
        refs = shared.indices[keep]
        inter = shared.data[keep].astype(np.float64)
        jaccard = inter / (sizes[rows] + self.sizes[refs] - inter)
        smaller = np.minimum(sizes[rows], self.sizes[refs])
        containment = np.where(smaller >= MIN_CONTAINED, inter / np.maximum(smaller, 1), 0.0)
        return rows, refs, jaccard, containment

    def best(self, queries: Any, sizes: np.ndarray) -> Matches:
        n_rows = queries.shape[0]
        out = Matches(np.zeros(n_rows), np.full(n_rows, -1), np.zeros(n_rows), np.full(n_rows, -1))
        rows, refs, jaccard, containment = self.pairs(queries, sizes)
        for score, best, where in ((jaccard, out.jaccard, out.jaccard_ref),
                                   (containment, out.containment, out.containment_ref)):
            if score.size == 0:
                continue
            # Sort by (row, score) and take each row's last entry: its maximum, without a Python loop.
            order = np.lexsort((score, rows))
            last = np.r_[rows[order][1:] != rows[order][:-1], True]
            top = order[last]
            keep = score[top] > 0
            best[rows[top][keep]] = score[top][keep]
            where[rows[top][keep]] = refs[top][keep]
        return out

    def max_jaccard(self, queries: Any, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per query row: the highest Jaccard similarity with any reference, and which reference."""
        found = self.best(queries, sizes)
        return found.jaccard, found.jaccard_ref


def pairwise_jaccard(a: Any, a_sizes: np.ndarray, b: Any, b_sizes: np.ndarray) -> np.ndarray:
    """Jaccard similarity of row i of `a` with row i of `b` (same shapes)."""
    inter = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    union = a_sizes + b_sizes - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def near_duplicate_groups(
    texts: Sequence[str],
    *,
    n: int = 5,
    jaccard: float = 0.8,
    containment: float = 0.8,
    max_df: int = 100,
    chunk: int = 5000,
) -> list[list[int]]:
    """Groups (indices into `texts`, each sorted, groups in order of their first member) of texts linked by
    Jaccard ≥ `jaccard` or containment ≥ `containment`, transitively: a retweet chain is one group. Singletons
    are left out. Only texts of at least MIN_CONTAINED n-grams link: short ones ("Thank you!") differ by a word
    or a digit without one copying the other, and exact copies are the content hash's job.

    All pairs are compared without a quadratic product over the common n-grams (" the ", "https", which make
    one dense and say nothing about copying): candidates come from the n-grams found in at most `max_df` texts.
    Both measures imply that the smaller text S shares all but a (1 − threshold) share of its n-grams, so it
    shares at least rare(S) − (1 − threshold)·|S| of its rare ones: pairs below that bound cannot qualify
    (no false negatives), and exact Jaccard and containment are computed for the few that remain."""
    matrix, sizes = NgramIndex(n).vectors(texts)
    by_feature = matrix.tocsc()
    df = np.diff(by_feature.indptr)
    rare = by_feature[:, np.flatnonzero((df >= 2) & (df <= max_df))].tocsr()
    rare_t = rare.T.tocsr()
    n_rare = np.diff(rare.indptr)
    slack = 1.0 - min(jaccard, containment)
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(texts), chunk):
        shared = (rare[start : start + chunk] @ rare_t).tocoo()
        a, b, x = shared.row + start, shared.col, shared.data
        upper = b > a
        a, b, x = a[upper], b[upper], x[upper]
        small = np.where(sizes[a] <= sizes[b], a, b)
        possible = x >= np.maximum(1, n_rare[small] - slack * sizes[small])
        a, b = a[possible], b[possible]
        if a.size == 0:
            continue
        inter = np.asarray(matrix[a].multiply(matrix[b]).sum(axis=1)).ravel()
        jac = inter / (sizes[a] + sizes[b] - inter)
        smaller = np.minimum(sizes[a], sizes[b])
        # Short texts link nothing: "text number 1" ~ "text number 12" would chain a whole file into one group.
        linked = (smaller >= MIN_CONTAINED) & ((jac >= jaccard) | (inter / np.maximum(smaller, 1) >= containment))
        for i, j in zip(a[linked], b[linked], strict=True):
            ri, rj = root(int(i)), root(int(j))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(root(i), []).append(i)
    return [members for _, members in sorted(groups.items()) if len(members) > 1]
