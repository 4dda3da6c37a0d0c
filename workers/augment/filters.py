"""Quality filters a candidate passes before it reaches review, with a drop count per filter.

In order (a candidate is counted once, by the first filter it fails):
- `empty`: nothing left after normalisation;
- `identical_to_source`: the same normalised text (NFKC, case-folded, whitespace collapsed) as its source;
- `duplicate`: the normalised hash of any sample of the dataset (any split, originals and earlier variants) or
  of a candidate already kept in this job. The dataset's hashes are not loaded: each batch's hashes are looked up
  in the database (`known_hashes`, one IN-list query per batch), so memory grows with the job, not the dataset;
- `length_ratio`: characters(variant) / characters(source) outside [min, max];
- `leakage`: a near-duplicate of a val or test text — Jaccard similarity of character n-gram sets at or above
  `leakage_threshold`, or containment (one text's n-grams found in the other, core/ngrams.py) at or above
  `leakage_containment`. Variants inherit their source's split (train), so a variant close to a test text
  would leak it into training;
- `low_similarity`: Jaccard with its own source below `min_similarity` (off by default).

Similarity uses binary hashed character n-grams (core/ngrams.py). The leak guard does not compare a candidate
with every val/test text: core/near_duplicates.py indexes their anchors once per job and scores each candidate
exactly against the few references that share enough of its anchors, so its cost per candidate does not grow
with the number of references (bench/scale.py measures it at 10k, 100k and 1M). `leakage` and `containment`
are the best scores among those references: 0 where no val/test text shares a passage with the candidate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.near_duplicates import ReferenceIndex
from core.ngrams import NgramIndex, pairwise_jaccard
from core.textnorm import content_hash, normalize_text
from workers.augment.params import FilterParams

FILTER_NAMES = ("empty", "identical_to_source", "duplicate", "length_ratio", "leakage", "low_similarity")


@dataclass
class Verdict:
    keep: bool
    reason: str | None
    content_hash: str
    scores: dict[str, Any] = field(default_factory=dict)

    @property
    def similarity(self) -> float | None:
        return self.scores.get("similarity")


KnownHashes = Callable[[Sequence[str]], set[str]]  # which of these content hashes the dataset holds


class CandidateFilter:
    """The val/test index and the hashes kept so far for one job; `check` judges a batch of candidates.

    `known_hashes` answers which of a batch's hashes the dataset already holds (or is a fixed set of them);
    `reference_texts` are the val/test texts, read once (a stream from the database will do)."""

    def __init__(
        self, known_hashes: KnownHashes | set[str], reference_texts: Iterable[str], params: FilterParams
    ) -> None:
        self.params = params
        self.known = (lambda batch, held=known_hashes: {h for h in batch if h in held}) if isinstance(
            known_hashes, set | frozenset) else known_hashes
        self.hashes: set[str] = set()  # kept by this job
        self.vectors = NgramIndex(params.leakage_ngram)
        self.index = ReferenceIndex(min(params.leakage_threshold, params.leakage_containment),
                                    n=params.leakage_ngram).fit(reference_texts)
        self.dropped: Counter[str] = Counter({name: 0 for name in FILTER_NAMES})
        self.kept = 0

    def check(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        """`pairs` are (source text, candidate text). Kept candidates' hashes join the seen set at once, so a
        later duplicate in the same job is dropped."""
        if not pairs:
            return []
        sources = [s for s, _ in pairs]
        texts = [c for _, c in pairs]
        cand_vec, cand_sizes = self.vectors.vectors(texts)
        src_vec, src_sizes = self.vectors.vectors(sources)
        similarity = pairwise_jaccard(cand_vec, cand_sizes, src_vec, src_sizes)
        leaks = self.index.best(texts, cand_vec, cand_sizes)
        digests = [content_hash(text) for text in texts]
        in_dataset = self.known(sorted(set(digests)))
        verdicts = []
        p = self.params
        for i, (source, text) in enumerate(pairs):
            digest = digests[i]
            norm_len = len(normalize_text(text))
            ratio = norm_len / max(1, len(normalize_text(source)))
            scores = {
                "similarity": round(float(similarity[i]), 4),
                "length_ratio": round(ratio, 4),
                "leakage": round(float(leaks.jaccard[i]), 4),
                "containment": round(float(leaks.containment[i]), 4),
            }
            if norm_len == 0:
                reason: str | None = "empty"
            elif digest == content_hash(source):
                reason = "identical_to_source"
            elif digest in self.hashes or digest in in_dataset:
                reason = "duplicate"
            elif not p.min_length_ratio <= ratio <= p.max_length_ratio:
                reason = "length_ratio"
            elif leaks.jaccard[i] >= p.leakage_threshold:
                reason = "leakage"
                scores["leakage_ref"] = int(leaks.jaccard_ref[i])
            elif leaks.containment[i] >= p.leakage_containment:
                reason = "leakage"
                scores["leakage_ref"] = int(leaks.containment_ref[i])
            elif similarity[i] < p.min_similarity:
                reason = "low_similarity"
            else:
                reason = None
            if reason is None:
                self.hashes.add(digest)
                self.kept += 1
            else:
                self.dropped[reason] += 1
            verdicts.append(Verdict(keep=reason is None, reason=reason, content_hash=digest, scores=scores))
        return verdicts

    def counts(self) -> dict[str, int]:
        return dict(self.dropped)
