"""Near-duplicates at scale: winnowed anchors, a prefix filter by document frequency, exact scores.

Comparing every text with every reference (core/ngrams.py NgramIndex: one sparse product per batch) costs
candidates × references, and common n-grams (" the ", "https") make that product nearly dense at millions of
references. Here each text is reduced to a few *anchors*, and only pairs that share enough of them are scored,
exactly:

- Anchors are winnowed k-grams (Schleimer, Wilkerson & Aiken 2003, the fingerprints of MOSS): the smallest
  k-gram hash in every window of WINDOW consecutive k-grams of the normalised text, k = n + ANCHOR_EXTRA
  characters. They depend on the text around them only, so two texts that share a passage of WINDOW + k − 1
  characters share an anchor wherever it sits: a retweet, a quote inside a longer post, a text with a word
  changed. About 2 / (WINDOW + 1) of the positions give one, and 8-character grams are rare enough that the
  texts holding one stay few (5-grams such as "tion " are in every other text).
- Prefix filter (Chaudhuri et al. 2006; Bayardo et al. 2007): if at least s of a text's |A| anchors are in the
  other text, any |A| − s + h of them contain h that are; so each text probes only its |A| − s + HITS *rarest*
  anchors (held by the fewest texts), whose posting lists are short, and a pair must meet HITS of them.
  Jaccard ≥ j and containment ≥ c both put at least min(j, c) of the smaller text's n-grams in the other, and
  the smaller text is the one that probes: the references' prefixes are indexed for references that sit inside
  a query, a query's prefix probes every reference's anchors for queries that sit inside one. Survivors must
  share s anchors in all (Anchors.overlap), then the exact Jaccard and containment (hashed n-gram sets, as
  NgramIndex computes them) decide: nothing is reported on its anchors alone.
- A bound before the exact scores (the leak guard, ReferenceIndex.gram_bound): each reference keeps a 1,024-bit
  mask of its n-grams, and a pair whose masks cannot share enough n-grams to reach the threshold is dropped
  without reading the reference. At a million references a short text meets hundreds of others through a
  common phrase (its few anchors ask for one or two shared); the bound leaves about one pair in twenty.

Anchors are not n-grams: a shared passage loses the anchors of the windows that straddle its ends, so s is
taken with a relative SLACK and an absolute MARGIN below the n-gram threshold. What may still be missed: a pair
whose shared n-grams are scattered in pieces shorter than WINDOW + k − 1 characters (a short text whose n-grams
all turn up, one by one, somewhere in a post a hundred times longer: containment by accident rather than by
copy), and a query whose probed anchors are each held by more than MAX_POSTINGS texts (pure boilerplate), which
is compared with the first MAX_POSTINGS of them. Measured on the example dataset (tests/test_near_duplicates.py)
and at 10k, 100k and 1M references (bench/scale.py). MinHash LSH (datasketch) was measured first and set aside:
README "Scale" says why.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from core.ngrams import (
    MIN_CONTAINED,
    MIN_SHARED,
    CodePoints,
    Matches,
    NgramIndex,
    best_per_row,
    distinct_buckets,
    pair_scores,
)
from core.ngrams import mix64 as _mix
from core.ngrams import ranges as _ranges
from core.textnorm import same_words_key

ANCHOR_EXTRA = 3  # anchor grams are n + 3 characters long (8 for the default 5-grams)
WINDOW = 8  # grams per winnowing window
# The anchors a qualifying pair is required to share: ⌈(threshold − SLACK)·|A|⌉ − MARGIN of the smaller text's.
# A shared passage loses about (WINDOW + ANCHOR_EXTRA − 1) · 2 / (WINDOW + 1) ≈ 2 anchors at its two ends.
# Chosen on the example dataset's tweets, their retweets, quotes, truncations, word swaps and excerpts (every
# pair the exact guard flags found, except containment by accident, above), at the lowest cost that did so.
SLACK = 0.1
MARGIN = 3
HITS = 3  # prefix anchors a candidate pair must meet: 1 is the classic prefix filter; 3 probes two anchors
# further and leaves ~4× fewer pairs to score, at the same recall on those pairs
MAX_POSTINGS = 64  # texts read per probed anchor
# Pairs scored per text: those meeting the most probed anchors. A file of a million templated texts ("Thanks
# for your order #1234") makes every text a near-duplicate of every other; a group needs only a few links per
# member to be found whole, and this bounds the scoring at MAX_PARTNERS per text.
MAX_PARTNERS = 8
GRAM_MASK_BITS = 1024  # per reference: a mask of its n-grams that bounds a pair's scores (ReferenceIndex)
_MASK32 = np.uint64(0xFFFFFFFF)
_CLIP = 65_535  # anchor counts in uint16 (a text of 300,000 characters)


def anchor_length(n: int) -> int:
    """Characters per anchor gram when texts are compared by n-grams."""
    return n + ANCHOR_EXTRA


def _sliding_min(values: np.ndarray, window: int) -> np.ndarray:
    """The minimum of every run of `window` consecutive values, in O(n) (van Herk / Gil-Werman): within blocks
    of `window`, a window's minimum is that of the suffix of its first block and the prefix of the next."""
    size = len(values)
    padded = np.concatenate([values, np.full(-size % window, np.iinfo(values.dtype).max, values.dtype)])
    blocks = padded.reshape(-1, window)
    prefix = np.minimum.accumulate(blocks, axis=1).ravel()
    suffix = np.minimum.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].ravel()
    return np.minimum(suffix[: size - window + 1], prefix[window - 1 : size])


def text_anchors(
    texts: Sequence[str], n: int = 5 + ANCHOR_EXTRA, window: int = WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """Each text's anchors as CSR arrays (indptr int64, anchors uint32 — the upper half of a 64-bit hash —
    sorted and unique per text), computed over the normalised text (core.textnorm) for the whole batch at once.
    A text shorter than `window` n-grams keeps its smallest n-gram; one shorter than n characters has none."""
    return _hashed(texts, n, window)[0]


def _hashed(
    texts: Sequence[str], n: int, window: int, grams: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """text_anchors' CSR arrays and, when `grams` > 0, every `grams`-character gram of each text (CSR: indptr,
    uint32 hashes in text order, repeats kept, as core.ngrams hashes them): both out of one rolling hash,
    `grams` ≤ n."""
    points = CodePoints.of(texts)
    lengths, starts = points.lengths, points.starts
    ends = starts + lengths
    n_grams = np.maximum(lengths - n + 1, 0)
    no_grams = (np.zeros(len(texts) + 1, dtype=np.int64), np.zeros(0, dtype=np.uint32))
    gram_csr, h, done = no_grams, None, 0
    if grams:
        h = points.rolling(grams)
        gram_csr, done = points.grams(h, grams), grams
    if len(points.codes) < n or not n_grams.any():
        return no_grams, gram_csr
    h = points.rolling(n, h, done)
    h = _mix(h)
    owner = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)[: len(h)]  # text of each n-gram start
    picked_text: list[np.ndarray] = []
    picked_hash: list[np.ndarray] = []
    if len(h) >= window:
        # Winnow: each window of `window` n-grams that lies inside one text keeps its smallest hash.
        first = np.flatnonzero(np.arange(len(h) - window + 1) + window + n - 1 <= ends[owner[: len(h) - window + 1]])
        picked_text.append(owner[first])
        picked_hash.append(_sliding_min(h, window)[first])
    short = np.flatnonzero((n_grams > 0) & (n_grams < window))
    if short.size:  # texts with too few n-grams for one window: their smallest n-gram
        grams_at = np.concatenate([np.arange(s, s + g) for s, g in zip(starts[short], n_grams[short], strict=True)])
        segment = np.r_[0, np.cumsum(n_grams[short])[:-1]]
        picked_text.append(short)
        picked_hash.append(np.minimum.reduceat(h[grams_at], segment))
    keys = _pack(np.concatenate(picked_text), np.concatenate(picked_hash) >> np.uint64(32))
    keys.sort()
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    doc = (keys >> np.uint64(32)).astype(np.int64)
    indptr = np.searchsorted(doc, np.arange(len(texts) + 1))
    return (indptr.astype(np.int64), (keys & _MASK32).astype(np.uint32)), gram_csr


def _pack(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """high << 32 | low as uint64, built in place: one array of the result's size (tens of millions of
    postings at a million references), no temporaries."""
    packed = high.astype(np.uint64)
    packed <<= np.uint64(32)
    packed |= low.astype(np.uint32, copy=False)
    return packed


def _halves(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The high and low 32 bits of packed uint64 values, as uint32 views (no copy) where the machine is
    little-endian."""
    if sys.byteorder == "little":
        words = packed.view(np.uint32).reshape(-1, 2)
        return words[:, 1], words[:, 0]
    return (packed >> np.uint64(32)).astype(np.uint32), (packed & _MASK32).astype(np.uint32)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique of a 1-d array by one sort (numpy ≥ 2.3's np.unique hashes unsorted integers: ten times
    slower on these packed pairs)."""
    values = np.sort(values)
    unique: np.ndarray = values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values
    return unique


def _unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (packed >> np.uint64(32)).astype(np.int64), (packed & _MASK32).astype(np.int64)


@dataclass
class Anchors:
    """The anchors of a collection of texts: text i holds anchors[indptr[i] : indptr[i + 1]], sorted."""

    indptr: np.ndarray
    anchors: np.ndarray

    @classmethod
    def of(cls, texts: Sequence[str], n: int, window: int) -> Anchors:
        return cls(*text_anchors(texts, n, window))

    @classmethod
    def concat(cls, parts: Sequence[Anchors]) -> Anchors:
        offsets = np.cumsum([0, *(len(p.anchors) for p in parts)])
        indptr = np.concatenate(
            [np.zeros(1, np.int64), *(p.indptr[1:] + o for p, o in zip(parts, offsets, strict=False))]
        )
        return cls(indptr, np.concatenate([np.zeros(0, np.uint32), *(p.anchors for p in parts)]))

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @cached_property
    def sizes(self) -> np.ndarray:  # read per candidate pair: computed once, not per read (a million texts)
        return np.diff(self.indptr).astype(np.int32)

    def rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The text of each anchor of texts start..stop."""
        stop = len(self) if stop is None else stop
        return np.repeat(np.arange(start, stop, dtype=np.int32), np.diff(self.indptr[start : stop + 1]))

    def overlap(self, a: np.ndarray, other: Anchors, b: np.ndarray) -> np.ndarray:
        """|anchors of self's text a[i] ∩ anchors of other's text b[i]|, for every i."""
        out = np.zeros(len(a), dtype=np.int64)
        for start in range(0, len(a), 50_000):  # bounded working memory
            pa, pb = a[start : start + 50_000], b[start : start + 50_000]
            la, lb = self.sizes[pa], other.sizes[pb]
            pair_a = np.repeat(np.arange(len(pa)), la)
            ka = _pack(pair_a, self.anchors[_ranges(self.indptr[pa], la)])
            kb = _pack(np.repeat(np.arange(len(pb)), lb), other.anchors[_ranges(other.indptr[pb], lb)])
            # kb is sorted: pairs in order, each text's anchors sorted
            at = np.minimum(np.searchsorted(kb, ka), max(len(kb) - 1, 0))
            found = kb[at] == ka if len(kb) else np.zeros(len(ka), bool)
            out[start : start + len(pa)] = np.bincount(pair_a[found], minlength=len(pa))
        return out


@dataclass
class Postings:
    """anchor → the texts that hold it: sorted unique `keys`, `starts` into `docs` (one more than keys)."""

    keys: np.ndarray
    starts: np.ndarray
    docs: np.ndarray

    @classmethod
    def of(cls, texts: Anchors) -> Postings:
        """The posting lists of every anchor of `texts`."""
        return cls.build(texts.anchors, texts.rows())

    @classmethod
    def build(cls, anchors: np.ndarray, docs: np.ndarray) -> Postings:
        """`docs`: the document of each anchor."""
        packed = _pack(anchors, docs)
        packed.sort()  # in place: one 8-byte array is the whole working set
        high, low = _halves(packed)
        sorted_anchors, sorted_docs = high.copy(), low.astype(np.int32)
        del packed, high, low
        first = (
            np.flatnonzero(np.r_[True, sorted_anchors[1:] != sorted_anchors[:-1]])
            if len(sorted_docs)
            else np.zeros(0, dtype=np.int64)
        )
        return cls(sorted_anchors[first], np.r_[first, len(sorted_docs)].astype(np.int64), sorted_docs)

    def lookup(self, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(key index, document frequency) of each anchor; frequency 0 where no text holds it."""
        if not len(self.keys):
            return np.zeros(len(anchors), dtype=np.int64), np.zeros(len(anchors), dtype=np.int64)
        # Searched in sorted order: numpy's binary search narrows each search by the last, and the probes walk
        # the keys forwards instead of jumping over millions of them (6× faster at a million references).
        order = np.argsort(anchors, kind="stable")
        at = np.empty(len(anchors), dtype=np.int64)
        at[order] = np.minimum(np.searchsorted(self.keys, anchors[order]), len(self.keys) - 1)
        df = np.where(self.keys[at] == anchors, self.starts[at + 1] - self.starts[at], 0)
        return at, df

    def sublists(self, packed: np.ndarray) -> Postings:
        """Posting lists of a subset of the (key, document) pairs, packed key index << 32 | document (sorted
        in place: the caller hands the array over), indexed like these (by key index): one lookup here serves
        both."""
        packed.sort()
        high, low = _halves(packed)
        starts = np.searchsorted(np.ascontiguousarray(high), np.arange(len(self.keys) + 1)).astype(np.int64)
        return Postings(self.keys, starts, low.astype(np.int32))

    def expand(self, rows: np.ndarray, at: np.ndarray, cap: int = MAX_POSTINGS) -> tuple[np.ndarray, np.ndarray]:
        """(row, text) for the first `cap` texts of key `at[i]`, for every i."""
        counts = np.minimum(self.starts[at + 1] - self.starts[at], cap)
        return np.repeat(rows, counts), self.docs[_ranges(self.starts[at], counts)]  # int32: half the traffic


def least_shared(sizes: np.ndarray, threshold: float) -> np.ndarray:
    """The anchors a text of |A| anchors shares with any text it qualifies with, as the smaller text of the
    pair: max(1, ⌈(threshold − SLACK)·|A|⌉ − MARGIN)."""
    shared: np.ndarray = np.maximum(1, np.ceil((threshold - SLACK) * sizes).astype(np.int64) - MARGIN)
    return shared


def required_hits(sizes: np.ndarray, threshold: float) -> np.ndarray:
    """Of the prefix of a text of |A| anchors, at least this many are in any text it qualifies with: at most
    |A| − s of its anchors are not (pigeonhole)."""
    hits: np.ndarray = np.minimum(least_shared(sizes, threshold), HITS)
    return hits


def prefix_mask(indptr: np.ndarray, df: np.ndarray, anchors: np.ndarray, threshold: float) -> np.ndarray:
    """Which anchors (CSR order) belong to their text's prefix: the |A| − s + HITS with the lowest frequency
    (ties by anchor value), s = least_shared(|A|); a qualifying pair meets required_hits() of them."""
    sizes = np.diff(indptr)
    row = np.repeat(np.arange(len(sizes)), sizes)
    order = np.lexsort((anchors, df, row))  # by text, then rarest first
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(indptr[:-1] - indptr[0], sizes)
    in_prefix: np.ndarray = rank < (sizes - least_shared(sizes, threshold) + HITS)[row]
    return in_prefix


def document_prefixes(postings: Postings, sizes: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(document, key index) of every document's prefix anchors (prefix_mask's, by the posting lists), sorted by
    document. A posting's frequency is its list's length, so one sort of packed (document, log2 frequency, key
    index) orders every document's anchors rarest first without a search per anchor: the same prefix filter,
    its order within a power of two by anchor value (any fixed order keeps the filter exact)."""
    counts = np.diff(postings.starts)
    if not len(counts):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rarity = np.minimum(np.log2(counts).astype(np.uint64), np.uint64(31))
    packed = np.repeat((rarity << np.uint64(32)) | np.arange(len(counts), dtype=np.uint64), counts)
    for start in range(0, len(packed), 1 << 22):  # in slices: no second array of the postings' size
        shifted = postings.docs[start : start + (1 << 22)].astype(np.uint64)
        shifted <<= np.uint64(37)  # 2^27 documents at most
        packed[start : start + (1 << 22)] |= shifted
    packed.sort()
    # int32 and views throughout: at a million references these arrays hold tens of millions of postings.
    high, low = _halves(packed)
    keys = low.astype(np.int32)
    docs = high >> np.uint32(5)
    del packed, high, low
    first = np.r_[0, np.cumsum(sizes)][:-1].astype(np.int32)
    rank = np.arange(len(docs), dtype=np.int32)
    rank -= first[docs]
    keep = rank < (sizes - least_shared(sizes, threshold) + HITS).astype(np.int32)[docs]
    return docs[keep].astype(np.int32), keys[keep]


def _pairs_with_hits(
    rows: np.ndarray,
    docs: np.ndarray,
    needed_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
    top: int = MAX_PARTNERS,
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (row, doc) pairs found at least needed_of(row, doc) times; per row, the `top` found most
    often (ties: lowest doc). One plain sort of the packed pairs counts them (a stable argsort of the same
    array is ten times slower, and this is the step whose input grows with the posting lists)."""
    packed = np.sort(_pack(rows, docs))
    if not len(packed):
        empty = np.zeros(0, np.int64)
        return empty, empty
    first = np.flatnonzero(np.r_[True, packed[1:] != packed[:-1]])
    hits = np.diff(np.r_[first, len(packed)])
    row, doc = _unpack(packed[first])
    keep = hits >= needed_of(row, doc)
    row, doc, hits = row[keep], doc[keep], hits[keep]
    by_row = np.lexsort((doc, -hits, row))
    rank = np.arange(len(by_row)) - np.searchsorted(row[by_row], row[by_row])
    chosen = np.sort(by_row[rank < top])
    return row[chosen], doc[chosen]


def _word_keys(texts: Sequence[str]) -> np.ndarray:
    """Each text's same-words key (core.textnorm.same_words_key), -1 for a text without letters or digits. Every
    text has one, whatever its length: a short text's few n-grams never reach the near-duplicate measures
    (core.ngrams.MIN_SHARED), and a long one's n-grams move far with punctuation put between its words (a test
    text with its spaces written " / " or "-" scored 0 on both measures, and trained)."""
    return np.fromiter(
        (-1 if (k := same_words_key(t)) is None else k for t in texts),
        dtype=np.int64,
        count=len(texts),
    )


class ReferenceIndex:
    """Anchors of reference texts (val/test), built in chunks; `best` scores a batch of queries against the few
    references that can qualify. `threshold`: the lowest of the Jaccard and containment thresholds in use.

    Besides the anchors, each reference keeps a GRAM_MASK_BITS-bit mask of its n-gram buckets (a one-hash
    Bloom filter: 128 bytes a text) and their number. The pairs the anchors propose are bounded with them before
    any text is read: the query's buckets whose bit is set in the reference's mask are at least the buckets the
    two share, which bounds Jaccard and containment from above (gram_bound). Short texts make this matter: a text of six
    anchors qualifies on one shared anchor (least_shared), so at a million references it meets hundreds of
    others through a common phrase; the bound leaves about one pair in twenty to be scored exactly."""

    def __init__(
        self,
        threshold: float,
        n: int = 5,
        window: int = WINDOW,
        texts_of: Callable[[np.ndarray], Sequence[str]] | None = None,
    ) -> None:
        """`texts_of(positions)`, where given, returns the texts of the references at these positions (in the
        order added): the index then keeps none of them, and reads only the few its candidates need (a
        million training texts stay in the database, not in the job's memory)."""
        self.threshold = threshold
        self.n = n
        self.window = window
        self.ngrams = NgramIndex(n)
        self.texts: list[str] = []
        self.count = 0
        self.texts_of = texts_of or (lambda positions: [self.texts[i] for i in positions])
        self._keep_texts = texts_of is None
        self._parts: list[Anchors] = []
        self._masks: list[np.ndarray] = []
        self._sizes: list[np.ndarray] = []
        self.anchors = Anchors(np.zeros(1, np.int64), np.zeros(0, np.uint32))
        self.postings = Postings.build(np.zeros(0, np.uint32), np.zeros(0, np.int32))
        self.prefixes = self.postings
        self.least_shared = np.zeros(0, np.uint16)
        self.required_hits = np.zeros(0, np.uint8)
        self.room = np.zeros(0, np.uint16)
        self.masks = np.zeros((0, GRAM_MASK_BITS // 8), np.uint8)
        self.sizes = np.zeros(0, np.int32)  # distinct n-gram buckets: the exact measure's size of each text
        # The references' same-words keys (core.textnorm.same_words_key), sorted, and whose each is: 12 bytes a
        # text, for the short texts whose few n-grams the measures above never score.
        self._keys: list[np.ndarray] = []
        self.word_keys = np.zeros(0, np.int64)
        self.word_refs = np.zeros(0, np.int32)

    def add(self, texts: Sequence[str]) -> None:
        anchors, grams = _hashed(texts, anchor_length(self.n), self.window, grams=self.n)
        self._parts.append(Anchors(*anchors))
        indptr, buckets = distinct_buckets(*grams)
        self._masks.append(GramMasks.of(indptr, buckets).masks)
        self._sizes.append(np.diff(indptr).astype(np.int32))
        self._keys.append(_word_keys(texts))
        self.count += len(texts)
        if self._keep_texts:
            self.texts.extend(texts)

    def fit(self, texts: Iterable[str], chunk: int = 10_000) -> ReferenceIndex:
        """Index `texts`, read once, `chunk` at a time."""
        stream = iter(texts)
        while batch := list(islice(stream, chunk)):
            self.add(batch)
        return self.finish()

    def finish(self) -> ReferenceIndex:
        """Build the posting lists of every anchor and of the references' prefixes."""
        # Texts added after an earlier finish() join those already indexed, as the masks and counts below do.
        self.anchors = Anchors.concat([self.anchors, *self._parts])
        self.masks = np.concatenate([self.masks, *self._masks])
        before = np.full(len(self.sizes), -1, np.int64)  # the keys of the texts an earlier finish() indexed
        before[self.word_refs] = self.word_keys
        self.sizes = np.concatenate([self.sizes, *self._sizes])
        keys = np.concatenate([before, *self._keys])
        self._parts, self._masks, self._sizes, self._keys = [], [], [], []
        held = np.flatnonzero(keys >= 0)  # -1: a text with no letter or digit
        order = held[np.argsort(keys[held], kind="stable")]  # equal keys: the first reference first
        self.word_keys, self.word_refs = keys[order], order.astype(np.int32)
        self.postings = Postings.of(self.anchors)
        docs, keys = document_prefixes(self.postings, self.anchors.sizes, self.threshold)
        packed = _pack(keys, docs)
        del docs, keys  # the peak of the build is here: nothing held twice
        self.prefixes = self.postings.sublists(packed)
        # Per reference, once: read for every pair the anchors propose.
        # Narrow types (clipped at 65,535 anchors, where the comparisons below clip alike): the gathers over
        # every proposed pair then read 3 MB instead of 12 at a million references.
        self.least_shared = np.minimum(least_shared(self.anchors.sizes, self.threshold), _CLIP).astype(np.uint16)
        self.required_hits = required_hits(self.anchors.sizes, self.threshold).astype(np.uint8)
        self.room = np.minimum(self.anchors.sizes, _CLIP).astype(np.uint16)
        return self

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        """Bytes the index's arrays hold once finished (the texts it keeps, where it keeps them, not counted):
        it grows with the texts' length, about 0.7 kB a text of 100 characters and 5.6 kB at 1,000."""
        arrays = (
            self.anchors.indptr,
            self.anchors.anchors,
            self.anchors.sizes,
            self.postings.keys,
            self.postings.starts,
            self.postings.docs,
            self.prefixes.starts,
            self.prefixes.docs,
            self.least_shared,
            self.required_hits,
            self.room,
            self.masks,
            self.sizes,
            self.word_keys,
            self.word_refs,
        )
        return sum(int(a.nbytes) for a in arrays)

    def same_words(self, texts: Sequence[str]) -> np.ndarray:
        """Per query: the first reference with the same words (core.textnorm.same_words_key), -1 where none."""
        keys = _word_keys(texts)
        if not len(self.word_keys):
            return np.full(len(texts), -1, np.int64)
        at = np.searchsorted(self.word_keys, keys)
        found = (at < len(self.word_keys)) & (keys >= 0)
        found[found] = self.word_keys[at[found]] == keys[found]
        return np.where(found, self.word_refs[np.minimum(at, len(self.word_refs) - 1)], -1).astype(np.int64)

    def candidates(self, texts: Sequence[str], vectors: Any) -> tuple[np.ndarray, np.ndarray]:
        """(query row, reference) pairs that may qualify, each once. `vectors`: the queries' n-gram vectors
        (NgramIndex.vectors, CSR)."""
        query = Anchors(*_hashed(texts, anchor_length(self.n), self.window)[0])
        counts, rows, t = query.sizes, query.rows(), self.threshold
        at, df = self.postings.lookup(query.anchors)
        # The query is the smaller text: its prefix against every reference's anchors. Anchors no reference
        # holds sort first and use up prefix places: a query mostly made of new text probes nothing.
        probe = prefix_mask(query.indptr, df, query.anchors, t) & (df > 0)
        q, r = self.postings.expand(rows[probe], at[probe])
        keep = self.room[r] >= np.minimum(least_shared(counts, t), _CLIP)[q]  # the reference has room for them
        hits_of_query = required_hits(counts, t)
        inside = _pairs_with_hits(q[keep], r[keep], lambda row, _doc: hits_of_query[row])
        # The reference is the smaller text: every query anchor against the references' prefixes (the same
        # key indices: one lookup).
        # Only where a reference holds the anchor: `at` is a key index there (with no anchor among the
        # references there are no keys, and starts[at + 1] would be out of range).
        held = df > 0
        held[held] = self.prefixes.starts[at[held] + 1] > self.prefixes.starts[at[held]]
        q, r = self.prefixes.expand(rows[held], at[held])
        keep = np.minimum(counts, _CLIP)[q] >= self.least_shared[r]
        around = _pairs_with_hits(q[keep], r[keep], lambda _row, doc: self.required_hits[doc])
        q, r = _unpack(_sorted_unique(_pack(np.r_[inside[0], around[0]], np.r_[inside[1], around[1]])))
        keep = self.gram_bound(q, r, vectors.indptr, vectors.indices) >= t
        q, r = q[keep], r[keep]
        # Whichever is smaller, a qualifying pair shares least_shared(smaller) anchors in all.
        keep = query.overlap(q, self.anchors, r) >= least_shared(np.minimum(counts[q], self.anchors.sizes[r]), t)
        return q[keep], r[keep]

    def gram_bound(self, q: np.ndarray, r: np.ndarray, indptr: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """An upper bound of max(Jaccard, containment) of each pair (query q[i], reference r[i]) as
        core.ngrams scores it, from the queries' buckets (CSR `indptr`, `buckets`: NgramIndex.vectors) and the
        reference's mask and size.

        The buckets two texts share are at most U, the query's buckets whose bit (bucket mod GRAM_MASK_BITS) is
        set in the reference's mask. U is bounded first by the bits the two masks share plus the query's
        buckets that share a bit with another of its own (buckets − bits set: one AND and popcount a pair),
        then, for the pairs that pass, counted bucket by bucket. With the sizes a and b (distinct buckets, as
        the exact measure counts them) and u = min(U, a, b): Jaccard ≤ u / (a + b − u), containment (counted
        where the smaller text has MIN_CONTAINED n-grams) ≤ u / min(a, b), and a pair sharing fewer than
        MIN_SHARED is not reported. Bits are a function of buckets, so the bound holds for any text."""
        a = np.diff(indptr).astype(np.int64)
        query = GramMasks.of(indptr, buckets)
        both = np.bitwise_count(query.masks[q].view(np.uint64) & self.masks[r].view(np.uint64))
        shared = both.sum(axis=1, dtype=np.int64) + (a - query.bits_set)[q]
        bound = self._bound(shared, a[q], r)
        close = np.flatnonzero(bound >= self.threshold)
        per_pair = a[q[close]]
        pair = np.repeat(np.arange(len(close)), per_pair)
        bit = buckets[_ranges(indptr[q[close]], per_pair)] & (GRAM_MASK_BITS - 1)
        byte = self.masks[r[close]][pair, bit >> 3]  # one gather of the pairs' masks, then local reads
        present = (byte >> (7 - (bit & 7)).astype(np.uint8)) & np.uint8(1)
        shared = np.bincount(pair, weights=present, minlength=len(close)).astype(np.int64)
        bound[close] = self._bound(shared, a[q[close]], r[close])
        return bound

    def _bound(self, shared: np.ndarray, a: np.ndarray, r: np.ndarray) -> np.ndarray:
        b = self.sizes[r].astype(np.int64)
        smaller = np.minimum(a, b)
        u = np.minimum(shared, smaller)
        jaccard = u / np.maximum(a + b - u, 1)
        containment = np.where(smaller >= MIN_CONTAINED, u / np.maximum(smaller, 1), 0.0)
        bound: np.ndarray = np.where(u >= MIN_SHARED, np.maximum(jaccard, containment), 0.0)
        return bound

    def best(self, texts: Sequence[str], vectors: object, sizes: np.ndarray) -> Matches:
        """Per query: the best Jaccard and containment over its candidate references, and which reference
        (-1: none). `vectors`/`sizes` are the queries' n-gram vectors (NgramIndex.vectors of the same n)."""
        rows, refs = self.candidates(texts, vectors) if self.count else (np.zeros(0, int), np.zeros(0, int))
        if not len(rows):
            found = best_per_row(len(texts), rows, refs, np.zeros(0), np.zeros(0))
        else:
            unique_refs, ref_rows = np.unique(refs, return_inverse=True)
            ref_vectors, ref_sizes = self.ngrams.vectors(list(self.texts_of(unique_refs)))
            jaccard, containment, keep = pair_scores(vectors, sizes, rows, ref_vectors, ref_sizes, ref_rows)
            found = best_per_row(len(texts), rows[keep], refs[keep], jaccard[keep], containment[keep])
        found.same_words_ref = self.same_words(texts)
        return found


@dataclass
class GramMasks:
    """Per text: a GRAM_MASK_BITS-bit mask of its n-gram buckets (packed bytes, one row a text) and how many
    bits are set."""

    masks: np.ndarray
    bits_set: np.ndarray

    @classmethod
    def of(cls, indptr: np.ndarray, buckets: np.ndarray) -> GramMasks:
        bits = np.zeros((len(indptr) - 1, GRAM_MASK_BITS), dtype=bool)
        bits[np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), buckets & (GRAM_MASK_BITS - 1)] = True
        return cls(np.packbits(bits, axis=1), bits.sum(axis=1, dtype=np.int32))


class NearDuplicateFinder:
    """Groups of near-duplicate texts within one collection, fed in chunks (the importer streams its file)."""

    def __init__(self, *, n: int = 5, jaccard: float = 0.8, containment: float = 0.8, window: int = WINDOW):
        self.n = n
        self.window = window
        self.jaccard = jaccard
        self.containment = containment
        self.count = 0
        self._parts: list[Anchors] = []
        self._keys: list[np.ndarray] = []  # same-words keys (_word_keys), as the leak guard checks short texts

    def add(self, texts: Sequence[str]) -> None:
        self._parts.append(Anchors.of(texts, anchor_length(self.n), self.window))
        self._keys.append(_word_keys(texts))
        self.count += len(texts)

    def _same_words_pairs(self) -> np.ndarray:
        """Packed (a, b), a < b: each text with the same words as an earlier one (core.textnorm.same_words_key),
        linked to the first of them. "Vote today!" and "vote today!!" are a
        leak to the leak guard, but too short for the n-gram measures: a drawn split must not cut them."""
        keys = np.concatenate([np.zeros(0, np.int64), *self._keys])
        self._keys = []
        held = np.flatnonzero(keys >= 0)
        order = held[np.argsort(keys[held], kind="stable")]  # equal keys: the first text first
        if len(order) < 2:
            return np.zeros(0, np.uint64)
        ordered = keys[order]
        starts = np.r_[True, ordered[1:] != ordered[:-1]]
        first = order[np.flatnonzero(starts)[np.cumsum(starts) - 1]]
        later = order != first
        return _pack(first[later], order[later])

    def candidate_pairs(
        self, block: int = 250_000, progress: Callable[[int, int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) with a < b, each once: pairs whose smaller text's prefix meets the other's anchors and that
        share enough anchors in all. Probes `block` prefix anchors at a time, whole texts each time: the working
        memory stays near that of the anchors. `progress(probed, total)`: prefix anchors, after each block."""
        found = Anchors.concat(self._parts)
        self._parts = []
        sizes, t = found.sizes, min(self.jaccard, self.containment)
        postings = Postings.of(found)
        docs, keys = document_prefixes(postings, sizes, t)
        probe = np.diff(postings.starts)[keys] > 1  # held by the text alone: nothing to find
        docs, keys = docs[probe], keys[probe]
        pairs: list[np.ndarray] = []
        start = 0
        if progress is not None:
            progress(0, len(docs))
        while start < len(docs):
            stop = min(start + block, len(docs))
            stop = len(docs) if stop == len(docs) else int(np.searchsorted(docs, docs[stop], "left"))
            stop = stop if stop > start else int(np.searchsorted(docs, docs[start], "right"))
            a, b = postings.expand(docs[start:stop], keys[start:stop])
            keep = (a != b) & (sizes[b] >= least_shared(sizes[a], t))
            a, b = _pairs_with_hits(a[keep], b[keep], lambda row, _doc: required_hits(sizes[row], t))
            pairs.append(_sorted_unique(_pack(np.minimum(a, b), np.maximum(a, b))))
            start = stop
            if progress is not None:
                progress(stop, len(docs))
        a, b = _unpack(_sorted_unique(np.concatenate([np.zeros(0, np.uint64), *pairs])))
        keep = found.overlap(a, found, b) >= least_shared(np.minimum(sizes[a], sizes[b]), t)
        return a[keep], b[keep]

    def groups(
        self,
        texts_of: Callable[[np.ndarray], Sequence[str]],
        batch: int = 100_000,
        progress: Callable[[int, int], None] | None = None,
        searching: Callable[[int, int], None] | None = None,
    ) -> list[list[int]]:
        """Groups (indices in the order added, each sorted; groups in order of their first member) linked by
        Jaccard ≥ `jaccard` or containment ≥ `containment`, or by the same words (a short text; see
        _same_words_pairs), transitively; singletons left out. Only texts of at least MIN_CONTAINED n-grams link
        by the measures: short ones ("Thank you!") differ by a word without one copying the other.
        `texts_of(ids)` returns the texts of sorted ids. `searching(probed, total)` follows the search for
        candidate pairs, `progress(checked, total)` their check."""
        same_words = self._same_words_pairs()
        a, b = self.candidate_pairs(progress=searching)
        if progress is not None:
            progress(0, len(a))
        linked: list[np.ndarray] = [same_words]
        ngrams = NgramIndex(self.n)
        for start in range(0, len(a), batch):
            pa, pb = a[start : start + batch], b[start : start + batch]
            ids, inverse = np.unique(np.r_[pa, pb], return_inverse=True)
            vectors, sizes = ngrams.vectors(list(texts_of(ids)))
            left, right = inverse[: len(pa)], inverse[len(pa) :]
            jaccard, containment, _ = pair_scores(vectors, sizes, left, vectors, sizes, right, min_shared=1)
            smaller = np.minimum(sizes[left], sizes[right])
            link = (smaller >= MIN_CONTAINED) & ((jaccard >= self.jaccard) | (containment >= self.containment))
            linked.append(_pack(pa[link], pb[link]))
            if progress is not None:
                progress(start + len(pa), len(a))
        ea, eb = _unpack(np.concatenate([np.zeros(0, np.uint64), *linked]))
        if not len(ea):
            return []
        graph = coo_matrix((np.ones(len(ea), dtype=np.int8), (ea, eb)), shape=(self.count, self.count))
        _, label = connected_components(graph, directed=False)
        by_label: dict[int, list[int]] = {}
        for i in np.unique(np.r_[ea, eb]).tolist():
            by_label.setdefault(int(label[i]), []).append(i)
        return sorted(by_label.values(), key=lambda g: g[0])


def near_duplicate_groups(
    texts: Sequence[str], *, n: int = 5, jaccard: float = 0.8, containment: float = 0.8
) -> list[list[int]]:
    """NearDuplicateFinder over texts held in memory."""
    finder = NearDuplicateFinder(n=n, jaccard=jaccard, containment=containment)
    for start in range(0, len(texts), 10_000):
        finder.add(texts[start : start + 10_000])
    return finder.groups(lambda ids: [texts[i] for i in ids])
