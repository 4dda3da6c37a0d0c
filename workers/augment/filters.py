"""Quality filters a candidate passes before it reaches review, with a drop count per filter.

In order (a candidate is counted once, by the first filter it fails):
- `empty`: nothing left after normalisation;
- `identical_to_source`: the same normalised text (NFKC, case-folded, whitespace collapsed) as its source;
- `duplicate`: the normalised hash of any sample of the dataset (any split, originals and earlier variants) or
  of a candidate already kept in this job;
- `length_ratio`: characters(variant) / characters(source) outside [min, max];
- `leakage`: a near-duplicate of a val or test text — Jaccard similarity of character n-gram sets at or above
  `leakage_threshold`, or containment (one text's n-grams found in the other, core/ngrams.py) at or above
  `leakage_containment`. Variants inherit their source's split (train), so a variant close to a test text
  would leak it into training;
- `low_similarity`: Jaccard with its own source below `min_similarity` (off by default).

Similarity uses binary hashed character n-grams (core/ngrams.py) and sparse matrix products: the val/test
matrix is built once per job, and a batch of candidates is compared against all of it in one product, which
`bench/augment_throughput.py` measures against a pure-Python set comparison.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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


class CandidateFilter:
    """Holds the dataset's hashes and the val/test index for one job; `check` judges a batch of candidates."""

    def __init__(
        self, dataset_hashes: set[str], reference_texts: Sequence[str], params: FilterParams
    ) -> None:
        self.params = params
        self.hashes = set(dataset_hashes)
        self.index = NgramIndex(params.leakage_ngram).fit(reference_texts)
        self.dropped: Counter[str] = Counter({name: 0 for name in FILTER_NAMES})
        self.kept = 0

    def check(self, pairs: Sequence[tuple[str, str]]) -> list[Verdict]:
        """`pairs` are (source text, candidate text). Kept candidates' hashes join the seen set at once, so a
        later duplicate in the same job is dropped."""
        if not pairs:
            return []
        sources = [s for s, _ in pairs]
        texts = [c for _, c in pairs]
        cand_vec, cand_sizes = self.index.vectors(texts)
        src_vec, src_sizes = self.index.vectors(sources)
        similarity = pairwise_jaccard(cand_vec, cand_sizes, src_vec, src_sizes)
        leaks = self.index.best(cand_vec, cand_sizes)
        verdicts = []
        p = self.params
        for i, (source, text) in enumerate(pairs):
            digest = content_hash(text)
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
            elif digest in self.hashes:
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
